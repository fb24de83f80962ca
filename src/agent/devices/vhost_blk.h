#pragma once

#include <optional>
#include <string>

#include "agent/devices/device_manager.h"
#include "agent/devices/qemu_device.h"
#include "agent/spdk/target_rpc.h"

namespace smad::agent {

// Device type virtio_blk (manager "vhost_blk"): a virtio-blk PCI device in a QEMU VM, backed by a
// vhost-user-blk controller of the local target exposing exactly one volume, chosen at creation.
// Handle: "virtio_blk:sma-<physical_id>".
//
// Physical id N is the device "sma-N":
//  - the vhost-blk controller sma-N on the volume's bdev; the target serves it on the Unix socket
//    <sock_path>/sma-N (sock_path must be the vhost app's socket directory, -S);
//  - in QEMU, the chardev sma-N (a client of that socket) and the device vhost-user-blk-pci, id sma-N, on
//    the bus and slot N maps to (params.buses, filled in order).
// Volumes: CreateDevice needs one (InvalidArgument "volume: required for virtio_blk devices"); there is
// no AttachVolume/DetachVolume (supports_attach() is false), and DeleteDevice takes the volume with the
// device (allow_delete_volumes()). The agent's AttachVolume after a create only confirms the exposure
// (nsid 1: the device's one volume).
// QoS: volume level (the volume's bdev) and device level (the controller's bdev, i.e. the crypto bdev
// of an encrypted volume).
// Spec params: {"physical_id": N, "bus": "<bus>", "slot": S, "volume_id": "<uuid>"} (SpecFromHandle:
// physical_id only). Config params: see ParseQemuDeviceConfig.
// Thread safety: as DeviceManager; the state is the immutable config (one QMP connection per call).
class VhostBlkDeviceManager : public DeviceManager {
 public:
  explicit VhostBlkDeviceManager(TargetRpc& rpc) : rpc_(rpc) {}

  const std::string& name() const override { return name_; }
  const std::string& protocol() const override { return protocol_; }
  bool allow_delete_volumes() const override { return true; }
  bool supports_attach() const override { return false; }
  absl::Status Init(const Json& params) override;
  bool OwnsHandle(absl::string_view handle) const override;
  absl::StatusOr<DeviceSpec> SpecFromHandle(absl::string_view handle) const override;
  // InvalidArgument "Unsupported virtual_id value", "Invalid physical_id", "volume: required for
  // virtio_blk devices"; FailedPrecondition when `previous` exposes another volume (a device's volume
  // cannot change).
  absl::StatusOr<DeviceSpec> PlanDevice(const sma::CreateDeviceRequest& request,
                                        const DeviceSpec* previous) const override;
  // Without a volume: InvalidArgument "volume: required for virtio_blk devices".
  absl::StatusOr<Created> CreateDevice(const DeviceSpec& spec, const DeviceSpec* previous) override;
  // The controller on `volume`'s bdev, then the QEMU chardev and device. An existing controller on
  // another bdev: Internal "Failed to create vhost device" (nothing is changed). A QEMU failure undoes
  // what this call created. Unavailable/DeadlineExceeded when the target or QEMU cannot be reached.
  absl::StatusOr<Created> CreateDeviceWithVolume(const DeviceSpec& spec, const DeviceSpec* previous,
                                                 const VolumeExposure* volume) override;
  // Unplugs the QEMU device and waits for QEMU's DEVICE_DELETED (DeadlineExceeded when the guest does not
  // release it within qmp_timeout; nothing else is removed then), removes the chardev, then deletes the
  // controller. Success when already gone.
  absl::Status DeleteDevice(const DeviceSpec& spec) override;
  // Confirms that the device exposes `volume` (sets nsid 1). NotFound "Invalid device handle" when the
  // controller is missing; Unimplemented when it exposes another bdev (volumes are set at creation).
  absl::Status AttachVolume(const DeviceSpec& device, VolumeExposure& volume) override;
  // Unimplemented: a virtio-blk device keeps its volume until it is deleted.
  absl::Status DetachVolume(const DeviceSpec& device, const VolumeExposure& volume) override;
  // Re-creates the controller (on volumes[0]'s bdev) and the QEMU chardev/device when missing. A
  // controller on another bdev is left alone (logged).
  absl::Status Reconcile(const DeviceSpec& spec, std::vector<VolumeExposure>& volumes,
                         const absl::flat_hash_set<std::string>& managed_volume_ids) override;
  // Device level: the controller's bdev (NotFound "No device associated with device_handle could be
  // found" when the controller is missing). Volume level: the volume.
  absl::StatusOr<std::string> QosBdev(const DeviceSpec& device, const VolumeExposure* volume) override;
  // Device-level and volume-level caps.
  sma::GetQosCapabilitiesResponse QosCapabilities() const override;

  static constexpr absl::string_view kHandlePrefix = "virtio_blk:sma-";

 private:
  static std::string Ctrlr(uint32_t physical_id);
  // The controller's bdev name (vhost_get_controllers {name}); nullopt when the controller is absent.
  absl::StatusOr<std::optional<std::string>> ControllerBdev(const std::string& ctrlr) const;
  // Whether the controller's bdev `ctrlr_bdev` is the volume's bdev (names compared after resolving the
  // volume's bdev name, which may be its UUID alias).
  absl::StatusOr<bool> SameBdev(const std::string& ctrlr_bdev, const VolumeExposure& volume) const;
  // The QEMU side: chardev, then the device (query-pci one level below the bridges). On failure removes
  // the chardev if this call added it. Returns QMP's status unchanged.
  absl::Status EnsureQemuDevice(uint32_t physical_id, const PciSlot& slot) const;
  // Unplugs the device (waiting for DEVICE_DELETED) and removes the chardev. QMP's status unchanged.
  absl::Status RemoveQemuDevice(uint32_t physical_id) const;

  TargetRpc& rpc_;
  QemuDeviceConfig config_;  // set by Init, read-only afterwards
  const std::string name_ = "vhost_blk";
  const std::string protocol_ = "virtio_blk";
};

}  // namespace smad::agent
