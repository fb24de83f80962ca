#pragma once

#include <optional>
#include <string>

#include "agent/devices/device_manager.h"
#include "agent/devices/qemu_device.h"
#include "agent/spdk/target_rpc.h"

namespace smad::agent {

// Device type nvme (manager "vfiouser"): an NVMe controller in a QEMU VM, backed by an NVMe-oF subsystem
// of the local target on its vfio-user transport. Volumes become namespaces (UUID and NGUID = the volume
// id). Handle: "nvme:nqn.2016-06.io.spdk:vfiouser-<physical_id>".
//
// Physical id N is the device "vfiouser-N":
//  - the subsystem nqn.2016-06.io.spdk:vfiouser-N (allow_any_host) with a vfio-user listener whose
//    traddr is the socket directory <sock_path>/vfiouser-N;
//  - the QEMU device vfio-user-pci, id vfiouser-N, socket <dir>/cntrl, on the bus and slot N maps to
//    (params.buses, filled in order).
// The socket directory is created when missing and kept when present (the target's live socket is in
// it); only DeleteDevice removes it, and only that exact directory (the path is built from the number,
// never from caller text).
// Spec params: {"physical_id": N, "bus": "<bus>", "slot": S} (SpecFromHandle: physical_id only).
// Config params: see ParseQemuDeviceConfig.
// Thread safety: as DeviceManager; the state is the immutable config (one QMP connection per call).
class VfioUserDeviceManager : public DeviceManager {
 public:
  explicit VfioUserDeviceManager(TargetRpc& rpc) : rpc_(rpc) {}

  const std::string& name() const override { return name_; }
  const std::string& protocol() const override { return protocol_; }
  absl::Status Init(const Json& params) override;
  // Creates the vfio-user transport when the target has none.
  absl::Status PrepareTarget() override;
  bool OwnsHandle(absl::string_view handle) const override;
  absl::StatusOr<DeviceSpec> SpecFromHandle(absl::string_view handle) const override;
  // InvalidArgument "Unsupported virtual_id value" (virtual_id != 0), "Invalid physical_id" (beyond the
  // buses). A previous spec keeps its placement.
  absl::StatusOr<DeviceSpec> PlanDevice(const sma::CreateDeviceRequest& request,
                                        const DeviceSpec* previous) const override;
  // Subsystem, socket directory, listener, then the QEMU device. On failure undoes what this call
  // created (a subsystem that existed before is never deleted). Errors: Internal "Failed to create the
  // NVMe/vfiouser subsystem" / "Failed to add the NVMe/vfiouser listener" / "Failed to create
  // NVMe/vfiouser device" / "Socket path error <dir>: ..."; Unavailable/DeadlineExceeded when the target
  // or QEMU cannot be reached.
  absl::StatusOr<Created> CreateDevice(const DeviceSpec& spec, const DeviceSpec* previous) override;
  // Deletes the subsystem, unplugs the QEMU device (device_del, not waiting for the guest), removes the
  // socket directory. Success when already gone.
  absl::Status DeleteDevice(const DeviceSpec& spec) override;
  absl::Status AttachVolume(const DeviceSpec& device, VolumeExposure& volume) override;
  absl::Status DetachVolume(const DeviceSpec& device, const VolumeExposure& volume) override;
  // Re-creates what is missing: subsystem, directory, listener, namespaces, then the QEMU device.
  absl::Status Reconcile(const DeviceSpec& spec, std::vector<VolumeExposure>& volumes,
                         const absl::flat_hash_set<std::string>& managed_volume_ids) override;
  // Volume-level caps only.
  sma::GetQosCapabilitiesResponse QosCapabilities() const override;

  static constexpr absl::string_view kHandlePrefix = "nvme:nqn.2016-06.io.spdk:vfiouser-";
  static constexpr absl::string_view kNqnPrefix = "nqn.2016-06.io.spdk:";

  // For tests: the socket directory of `physical_id`.
  std::string SocketDirForTest(uint32_t physical_id) const { return SocketDir(physical_id); }

 private:
  static std::string DevId(uint32_t physical_id);
  static std::string Nqn(uint32_t physical_id);
  std::string SocketDir(uint32_t physical_id) const;
  // The subsystem (nvmf_get_subsystems {nqn}); nullopt when absent.
  absl::StatusOr<std::optional<Json>> GetSubsystem(const std::string& nqn) const;
  // Creates the socket directory when missing; `created` says whether this call made it. Internal
  // "Socket path error ..." when the path exists but is not a plain directory, or mkdir fails.
  absl::Status EnsureSocketDir(const std::string& dir, bool& created) const;
  absl::Status RemoveSocketDir(const std::string& dir) const;
  // What EnsureSubsystem found and did.
  struct SubsystemState {
    std::optional<Json> actual;  // the subsystem as the target reported it (nullopt: created by this call)
    bool created_subsystem = false;
    bool created_dir = false;
    bool added_listener = false;
  };
  // The SPDK side: subsystem, socket directory and listener, creating what is missing (`create_first`:
  // try nvmf_create_subsystem before looking). On failure undoes what it created and returns the
  // client-facing status.
  absl::StatusOr<SubsystemState> EnsureSubsystem(uint32_t physical_id, bool create_first);
  // Undoes what `state` says a call created (best effort, logged).
  void UndoSubsystem(uint32_t physical_id, const SubsystemState& state);
  // The QEMU side: query-pci (recursive), device_add when missing. Returns QMP's status unchanged.
  absl::Status EnsureQemuDevice(uint32_t physical_id, const PciSlot& slot) const;
  // query-pci, then device_del when present. Returns QMP's status unchanged.
  absl::Status RemoveQemuDevice(uint32_t physical_id) const;

  TargetRpc& rpc_;
  QemuDeviceConfig config_;  // set by Init, read-only afterwards
  const std::string name_ = "vfiouser";
  const std::string protocol_ = "nvme";
};

}  // namespace smad::agent
