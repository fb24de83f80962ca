#pragma once

#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

#include "agent/devices/device_manager.h"
#include "agent/spdk/target_rpc.h"

namespace smad::agent {

// Device type nvmf_tcp: an NVMe-oF/TCP subsystem on the local target is the "device"; volumes become its
// namespaces (UUID and NGUID = the volume id). Handle: "nvmf-tcp:<subnqn>".
//
// Spec params: {"nqn", "allow_any_host", "hosts": [nqn...], "listeners": [{"adrfam","traddr","trsvcid"}]}.
// A repeated CreateDevice for the same NQN updates the device to the request: hosts become exactly the
// requested set, allow_any_host the requested value, and the requested listener is added (listeners from
// earlier requests stay, as in SPDK's SMA).
// Thread safety: as DeviceManager; no mutable state.
class NvmfTcpDeviceManager : public DeviceManager {
 public:
  explicit NvmfTcpDeviceManager(TargetRpc& rpc) : rpc_(rpc) {}

  const std::string& name() const override { return name_; }
  const std::string& protocol() const override { return protocol_; }
  absl::Status PrepareTarget() override;
  bool OwnsHandle(absl::string_view handle) const override;
  absl::StatusOr<DeviceSpec> SpecFromHandle(absl::string_view handle) const override;
  absl::StatusOr<DeviceSpec> PlanDevice(const sma::CreateDeviceRequest& request,
                                        const DeviceSpec* previous) const override;
  absl::StatusOr<Created> CreateDevice(const DeviceSpec& spec, const DeviceSpec* previous) override;
  absl::Status DeleteDevice(const DeviceSpec& spec) override;
  absl::Status AttachVolume(const DeviceSpec& device, VolumeExposure& volume) override;
  absl::Status DetachVolume(const DeviceSpec& device, const VolumeExposure& volume) override;
  absl::Status BeginReconcile() override;
  void EndReconcile() override;
  absl::Status Reconcile(const DeviceSpec& spec, std::vector<VolumeExposure>& volumes,
                         const absl::flat_hash_set<std::string>& managed_volume_ids) override;
  sma::GetQosCapabilitiesResponse QosCapabilities() const override;

  static constexpr absl::string_view kHandlePrefix = "nvmf-tcp:";

 private:
  // The subsystem as the target reports it (nvmf_get_subsystems {nqn}); nullopt when absent.
  absl::StatusOr<std::optional<Json>> GetSubsystem(const std::string& nqn) const;
  // Creates the subsystem with hosts and listeners; deletes it again if a later step fails.
  absl::Status CreateSubsystem(const Json& params);
  // Brings an existing subsystem (`actual`) to `params`: allow_any_host, hosts, missing listeners.
  absl::Status UpdateSubsystem(const Json& params, const Json& actual);

  TargetRpc& rpc_;
  // During a reconciliation pass: every subsystem by NQN, read once (see BeginReconcile).
  mutable absl::Mutex snapshot_mu_;
  std::optional<absl::flat_hash_map<std::string, Json>> snapshot_ ABSL_GUARDED_BY(snapshot_mu_);
  const std::string name_ = "nvmf_tcp";
  const std::string protocol_ = "nvmf_tcp";
};

}  // namespace smad::agent
