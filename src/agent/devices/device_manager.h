#pragma once

// The device-manager interface: one implementation per device type (nvmf_tcp, vfiouser, vhost_blk, and
// plugins). A manager turns the desired state of one device into target JSON-RPC calls; the agent
// (core/agent.h) owns the desired state, its durability, locking and rollback.

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/spdk/spdk_client.h"
#include "common/status.h"
#include "sma.pb.h"

namespace smad::agent {

// The desired state of one device, as stored durably.
struct DeviceSpec {
  std::string handle;    // the SMA handle, e.g. "nvmf-tcp:nqn.2016-06.io.spdk:cnode0"
  std::string manager;   // the manager's config name
  Json params;           // manager-specific (for nvmf_tcp: nqn, allow_any_host, hosts, listeners)
};

// A volume as a device exposes it.
struct VolumeExposure {
  std::string volume_id;  // canonical lowercase UUID; also the namespace UUID/NGUID the host sees
  std::string bdev_name;  // the bdev to expose: the volume itself (its UUID alias) or a crypto bdev
  // Where the device exposes it (NVMe namespace ID); 0 = not exposed yet / let the target choose.
  // AttachVolume and Reconcile fill it in; smad stores it so a re-created namespace keeps its ID.
  uint32_t nsid = 0;
};

// QoS limits in SPDK's units (bdev_set_qos_limit); 0 = unlimited.
struct QosLimits {
  uint64_t rw_ios_per_sec = 0;
  uint64_t r_mbytes_per_sec = 0;
  uint64_t w_mbytes_per_sec = 0;
  uint64_t rw_mbytes_per_sec = 0;
  bool operator==(const QosLimits&) const = default;
};

// Errors: every method returns gRPC-canonical codes meant for the client (absl codes equal gRPC's):
// InvalidArgument/NotFound naming the field for bad requests, Internal for target failures, Unavailable
// or DeadlineExceeded when the target cannot be reached.
// Thread safety: the agent serialises calls for one handle; calls for different handles may run
// concurrently, so implementations keep no per-call mutable state outside a lock.
class DeviceManager {
 public:
  virtual ~DeviceManager() = default;

  // The manager's name in the config's `devices` list.
  virtual const std::string& name() const = 0;
  // The CreateDeviceRequest oneof member it serves ("nvmf_tcp", "nvme", "virtio_blk").
  virtual const std::string& protocol() const = 0;
  // Whether DeleteDevice may delete a device that still has volumes (vhost_blk).
  virtual bool allow_delete_volumes() const { return false; }
  // Whether AttachVolume/DetachVolume are supported.
  virtual bool supports_attach() const { return true; }

  // Called once at start with the config entry's params (null when absent). InvalidArgument for bad
  // params (fatal at start).
  virtual absl::Status Init(const Json& params) { return absl::OkStatus(); }
  // Prepares the target (e.g. creates a transport). Called at start and after every reconnection to the
  // target, before any other call.
  virtual absl::Status PrepareTarget() { return absl::OkStatus(); }

  // Strict: true only for a well-formed handle of this manager.
  virtual bool OwnsHandle(absl::string_view handle) const = 0;

  // The spec of a device smad has no record of, from its handle alone (DeleteDevice of an unknown handle
  // removes what the target has under it, as SPDK's SMA does). NotFound when the handle says too little.
  virtual absl::StatusOr<DeviceSpec> SpecFromHandle(absl::string_view handle) const {
    return absl::NotFoundError("unknown device");
  }

  // Validates the request's device parameters and returns the desired spec; no target calls.
  // `handle` may be left empty when it is only known after creation (plugins).
  // `previous` is the stored spec for the same handle (nullptr: none), for managers that merge (nvmf_tcp
  // keeps listeners added by earlier requests).
  virtual absl::StatusOr<DeviceSpec> PlanDevice(const sma::CreateDeviceRequest& request,
                                                const DeviceSpec* previous) const = 0;

  // Makes the target hold device `spec` (creates it, or updates an existing one). `previous` is what smad
  // stored before for this handle (nullptr: unknown to smad). Idempotent. On error the target is left as
  // before the call as far as possible, and a device that existed before is never deleted.
  struct Created {
    std::string handle;    // for managers that only learn it here (plugins); else spec.handle
    bool created = false;  // this call created the device (so undoing the request means deleting it)
  };
  virtual absl::StatusOr<Created> CreateDevice(const DeviceSpec& spec, const DeviceSpec* previous) = 0;
  // CreateDevice for a request that may carry a volume: `volume` is the volume to expose (already
  // connected: its bdev exists), nullptr when the request has none. The agent creates devices of known
  // handles through this, then calls AttachVolume for the volume. Managers whose devices cannot exist
  // without their volume override it (vhost_blk builds its controller on the volume's bdev, and its
  // AttachVolume only confirms the exposure); the default ignores `volume` and calls CreateDevice.
  virtual absl::StatusOr<Created> CreateDeviceWithVolume(const DeviceSpec& spec, const DeviceSpec* previous,
                                                         const VolumeExposure* volume) {
    return CreateDevice(spec, previous);
  }
  // Removes the device from the target; success when it is already gone.
  virtual absl::Status DeleteDevice(const DeviceSpec& spec) = 0;
  // Exposes `volume` on the device (using volume.nsid when non-zero) and sets volume.nsid; success when
  // already exposed. NotFound "Volume could not be found" when its bdev does not exist, NotFound "Invalid
  // device handle" when the device does not exist on the target.
  virtual absl::Status AttachVolume(const DeviceSpec& device, VolumeExposure& volume) = 0;
  // Stops exposing `volume`; success when not exposed or when the device is gone.
  virtual absl::Status DetachVolume(const DeviceSpec& device, const VolumeExposure& volume) = 0;

  // Reconciliation passes call BeginReconcile, then Reconcile for each device of this manager, then
  // EndReconcile; no other call runs meanwhile. A manager may read the target's state once in
  // BeginReconcile instead of once per device.
  virtual absl::Status BeginReconcile() { return absl::OkStatus(); }
  virtual void EndReconcile() {}
  // Reads the device on the target and makes it match `spec` exposing exactly `volumes`; exposures of
  // other volumes are removed only when their id is in `managed_volume_ids` (smad never touches what it
  // did not create). Used after crashes and target restarts.
  // Fills in each exposure's nsid.
  virtual absl::Status Reconcile(const DeviceSpec& spec, std::vector<VolumeExposure>& volumes,
                                 const absl::flat_hash_set<std::string>& managed_volume_ids) = 0;

  // The bdev whose QoS limits SetQos changes: for a volume-level request the agent passes the volume
  // (already checked to be attached to this device); for a device-level request (`volume` null) the
  // manager decides (InvalidArgument "Invalid volume ID" when it has no device-level QoS).
  virtual absl::StatusOr<std::string> QosBdev(const DeviceSpec& device, const VolumeExposure* volume) {
    if (volume == nullptr) return absl::InvalidArgumentError("Invalid volume ID");
    return volume->volume_id;
  }
  virtual sma::GetQosCapabilitiesResponse QosCapabilities() const = 0;
};

using DeviceManagerPtr = std::unique_ptr<DeviceManager>;

// The four limits SPDK's bdev QoS supports, as SMA exposes them (rw_iops, rd/wr/rw bandwidth).
sma::GetQosCapabilitiesResponse::QosCapabilities BdevQosCapabilities();

}  // namespace smad::agent
