#include "agent/devices/vhost_blk.h"

#include "absl/strings/str_cat.h"
#include "agent/devices/target_errors.h"
#include "common/uuid.h"
#include "spdlog/spdlog.h"

namespace smad::agent {
namespace {

constexpr char kCreateFailed[] = "Failed to create vhost device";
constexpr char kDeleteFailed[] = "Failed to delete vhost device";
constexpr char kNotImplemented[] = "Method is not implemented by selected device type";
// The longest name appended to sock_path: the controller's socket "sma-4294967295".
constexpr size_t kMaxSocketName = sizeof("sma-4294967295") - 1;
constexpr uint32_t kVolumeNsid = 1;  // a virtio-blk device's one volume

std::string TextField(const Json& object, const char* key) {
  if (!object.is_object()) return std::string();
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

std::string VhostBlkDeviceManager::Ctrlr(uint32_t physical_id) { return absl::StrCat("sma-", physical_id); }

absl::Status VhostBlkDeviceManager::Init(const Json& params) {
  ASSIGN_OR_RETURN(config_, ParseQemuDeviceConfig(params, kMaxSocketName, name_));
  return absl::OkStatus();
}

bool VhostBlkDeviceManager::OwnsHandle(absl::string_view handle) const {
  return ParseHandleNumber(handle, kHandlePrefix).has_value();
}

absl::StatusOr<DeviceSpec> VhostBlkDeviceManager::SpecFromHandle(absl::string_view handle) const {
  return SpecFromNumberedHandle(handle, kHandlePrefix, name_);
}

absl::StatusOr<DeviceSpec> VhostBlkDeviceManager::PlanDevice(const sma::CreateDeviceRequest& request,
                                                             const DeviceSpec* previous) const {
  const sma::virtio_blk::DeviceParameters& p = request.virtio_blk();
  if (p.virtual_id() != 0) return absl::InvalidArgumentError("Unsupported virtual_id value");
  if (!request.has_volume()) return absl::InvalidArgumentError("volume: required for virtio_blk devices");
  auto uuid = Uuid::FromBytes(request.volume().volume_id());
  if (!uuid.ok()) return absl::InvalidArgumentError("Invalid volume ID");
  const std::string volume_id = uuid->ToString();
  ASSIGN_OR_RETURN(PciSlot slot, SlotForDevice(config_.buses, p.physical_id(), previous));
  if (previous != nullptr) {
    auto exposed = SpecString(*previous, "volume_id");
    if (exposed.ok() && *exposed != volume_id) {
      return absl::FailedPreconditionError(absl::StrCat(kCreateFailed, ": ", Ctrlr(p.physical_id()),
                                                        " already exposes volume ", *exposed));
    }
  }
  DeviceSpec spec;
  spec.handle = absl::StrCat(kHandlePrefix, p.physical_id());
  spec.manager = name_;
  spec.params = {{"physical_id", p.physical_id()}, {"bus", slot.bus}, {"slot", slot.slot}, {"volume_id", volume_id}};
  return spec;
}

absl::StatusOr<std::optional<std::string>> VhostBlkDeviceManager::ControllerBdev(const std::string& ctrlr) const {
  auto list = rpc_.Call("vhost_get_controllers", Json{{"name", ctrlr}});
  if (!list.ok()) {
    if (IsAbsentAnswer(list.status())) return std::optional<std::string>();
    return list.status();
  }
  if (list->is_array()) {
    for (const Json& c : *list) {
      if (TextField(c, "ctrlr") != ctrlr) continue;
      std::string bdev;
      auto backend = c.find("backend_specific");
      if (backend != c.end() && backend->is_object()) {
        auto block = backend->find("block");
        if (block != backend->end()) bdev = TextField(*block, "bdev");
      }
      return std::optional<std::string>(std::move(bdev));
    }
  }
  return std::optional<std::string>();
}

absl::StatusOr<bool> VhostBlkDeviceManager::SameBdev(const std::string& ctrlr_bdev, const VolumeExposure& volume) const {
  if (ctrlr_bdev == volume.bdev_name) return true;
  // The volume's bdev is usually named by its UUID alias; the controller reports the bdev's name.
  auto bdevs = rpc_.Call("bdev_get_bdevs", Json{{"name", volume.bdev_name}});
  if (!bdevs.ok()) {
    if (IsTransportError(bdevs.status())) return bdevs.status();
    return false;
  }
  return bdevs->is_array() && !bdevs->empty() && TextField((*bdevs)[0], "name") == ctrlr_bdev;
}

absl::Status VhostBlkDeviceManager::EnsureQemuDevice(uint32_t physical_id, const PciSlot& slot) const {
  bool added_chardev = false;
  const std::string ctrlr = Ctrlr(physical_id);
  ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp, QmpClient::Connect(config_.qmp));
  ASSIGN_OR_RETURN(Json chardevs, qmp->Execute("query-chardev"));
  if (!HasChardev(chardevs, ctrlr)) {
    Json chardev = {
        {"id", ctrlr},
        {"backend",
         {{"type", "socket"},
          {"data",
           {{"addr", {{"type", "unix"}, {"data", {{"path", JoinPath(config_.sock_path, ctrlr)}}}}},
            {"server", false}}}}}};
    RETURN_IF_ERROR(qmp->Execute("chardev-add", chardev).status());
    added_chardev = true;
  }
  absl::Status status;
  auto pci = qmp->Execute("query-pci");
  if (!pci.ok()) {
    status = pci.status();
  } else if (FindPciDevice(*pci, ctrlr, /*recursive=*/false) == nullptr) {
    Json device = {{"driver", "vhost-user-blk-pci"},
                   {"chardev", ctrlr},
                   {"bus", slot.bus},
                   {"addr", slot.Addr()},
                   {"id", ctrlr}};
    status = qmp->Execute("device_add", device).status();
    if (status.ok()) spdlog::info("vhost_blk: added QEMU device {} on {} slot {}", ctrlr, slot.bus, slot.Addr());
  }
  if (!status.ok() && added_chardev) {
    // Take back the chardev this call added (on the same connection, if it still works).
    auto removed = qmp->Execute("chardev-remove", Json{{"id", ctrlr}});
    if (!removed.ok()) {
      spdlog::warn("vhost_blk: could not remove the chardev {} again: {}", ctrlr, removed.status().ToString());
    }
  }
  return status;
}

absl::Status VhostBlkDeviceManager::RemoveQemuDevice(uint32_t physical_id) const {
  const std::string ctrlr = Ctrlr(physical_id);
  ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp, QmpClient::Connect(config_.qmp));
  ASSIGN_OR_RETURN(Json pci, qmp->Execute("query-pci"));
  if (FindPciDevice(pci, ctrlr, /*recursive=*/false) != nullptr) {
    // The guest must release the device first: QEMU reports DEVICE_DELETED once it is gone.
    RETURN_IF_ERROR(qmp->ExecuteAndWait("device_del", Json{{"id", ctrlr}},
                                        QmpEventFilter{"DEVICE_DELETED", Json{{"device", ctrlr}}})
                        .status());
    ASSIGN_OR_RETURN(pci, qmp->Execute("query-pci"));
    if (FindPciDevice(pci, ctrlr, /*recursive=*/false) != nullptr) {
      return absl::InternalError(absl::StrCat("device ", ctrlr, " is still present after DEVICE_DELETED"));
    }
  }
  ASSIGN_OR_RETURN(Json chardevs, qmp->Execute("query-chardev"));
  if (HasChardev(chardevs, ctrlr)) RETURN_IF_ERROR(qmp->Execute("chardev-remove", Json{{"id", ctrlr}}).status());
  return absl::OkStatus();
}

absl::StatusOr<DeviceManager::Created> VhostBlkDeviceManager::CreateDevice(const DeviceSpec& spec,
                                                                           const DeviceSpec* previous) {
  return CreateDeviceWithVolume(spec, previous, nullptr);
}

absl::StatusOr<DeviceManager::Created> VhostBlkDeviceManager::CreateDeviceWithVolume(const DeviceSpec& spec,
                                                                                     const DeviceSpec* previous,
                                                                                     const VolumeExposure* volume) {
  if (volume == nullptr) return absl::InvalidArgumentError("volume: required for virtio_blk devices");
  ASSIGN_OR_RETURN(uint32_t physical_id, SpecNumber(spec, "physical_id"));
  ASSIGN_OR_RETURN(std::string bus, SpecString(spec, "bus"));
  ASSIGN_OR_RETURN(uint32_t slot, SpecNumber(spec, "slot"));
  const std::string ctrlr = Ctrlr(physical_id);
  const Json create_params = {{"ctrlr", ctrlr}, {"dev_name", volume->bdev_name}};

  bool created = false;
  if (previous == nullptr) {
    // New to smad: the controller almost always does not exist yet; look only when creating fails.
    auto made = rpc_.Call("vhost_create_blk_controller", create_params);
    if (made.ok()) {
      created = true;
    } else if (IsTransportError(made.status())) {
      return TargetFailure(made.status(), kCreateFailed);
    }
  }
  if (!created) {
    auto bdev = ControllerBdev(ctrlr);
    if (!bdev.ok()) return TargetFailure(bdev.status(), kCreateFailed);
    if (bdev->has_value()) {
      auto same = SameBdev(**bdev, *volume);
      if (!same.ok()) return TargetFailure(same.status(), kCreateFailed);
      if (!*same) {
        return absl::InternalError(absl::StrCat(kCreateFailed, ": controller ", ctrlr, " exposes bdev ", **bdev,
                                                ", not ", volume->bdev_name));
      }
    } else {
      auto made = rpc_.Call("vhost_create_blk_controller", create_params);
      if (!made.ok()) {
        if (IsTransportError(made.status())) return TargetFailure(made.status(), kCreateFailed);
        auto exists = rpc_.Call("bdev_get_bdevs", Json{{"name", volume->bdev_name}, {"timeout", 1000}});
        if (!exists.ok() && !IsTransportError(exists.status())) return absl::NotFoundError("Volume could not be found");
        return TargetFailure(made.status(), kCreateFailed);
      }
      created = true;
    }
  }
  absl::Status qemu = EnsureQemuDevice(physical_id, PciSlot{bus, slot});
  if (!qemu.ok()) {
    if (created) {
      auto deleted = rpc_.Call("vhost_delete_controller", Json{{"ctrlr", ctrlr}});
      if (!deleted.ok()) {
        spdlog::warn("vhost_blk: could not remove the half-created controller {}: {}", ctrlr,
                     deleted.status().ToString());
      }
    }
    return QemuFailure(qemu, kCreateFailed);
  }
  return Created{spec.handle, created};
}

absl::Status VhostBlkDeviceManager::DeleteDevice(const DeviceSpec& spec) {
  ASSIGN_OR_RETURN(uint32_t physical_id, SpecNumber(spec, "physical_id"));
  const std::string ctrlr = Ctrlr(physical_id);
  absl::Status qemu = RemoveQemuDevice(physical_id);
  if (!qemu.ok()) return QemuFailure(qemu, kDeleteFailed);
  auto deleted = rpc_.Call("vhost_delete_controller", Json{{"ctrlr", ctrlr}});
  if (deleted.ok()) return absl::OkStatus();
  if (IsTransportError(deleted.status())) return TargetFailure(deleted.status(), kDeleteFailed);
  auto bdev = ControllerBdev(ctrlr);
  if (!bdev.ok()) return TargetFailure(bdev.status(), kDeleteFailed);
  if (!bdev->has_value()) return absl::OkStatus();  // already gone
  return TargetFailure(deleted.status(), kDeleteFailed);
}

absl::Status VhostBlkDeviceManager::AttachVolume(const DeviceSpec& device, VolumeExposure& volume) {
  ASSIGN_OR_RETURN(uint32_t physical_id, SpecNumber(device, "physical_id"));
  auto bdev = ControllerBdev(Ctrlr(physical_id));
  if (!bdev.ok()) return TargetFailure(bdev.status(), "Failed to attach volume");
  if (!bdev->has_value()) return absl::NotFoundError("Invalid device handle");
  auto same = SameBdev(**bdev, volume);
  if (!same.ok()) return TargetFailure(same.status(), "Failed to attach volume");
  if (!*same) return absl::UnimplementedError(kNotImplemented);
  volume.nsid = kVolumeNsid;
  return absl::OkStatus();
}

absl::Status VhostBlkDeviceManager::DetachVolume(const DeviceSpec& device, const VolumeExposure& volume) {
  return absl::UnimplementedError(kNotImplemented);
}

absl::Status VhostBlkDeviceManager::Reconcile(const DeviceSpec& spec, std::vector<VolumeExposure>& volumes,
                                              const absl::flat_hash_set<std::string>& managed_volume_ids) {
  ASSIGN_OR_RETURN(uint32_t physical_id, SpecNumber(spec, "physical_id"));
  ASSIGN_OR_RETURN(std::string bus, SpecString(spec, "bus"));
  ASSIGN_OR_RETURN(uint32_t slot, SpecNumber(spec, "slot"));
  const std::string ctrlr = Ctrlr(physical_id);
  auto bdev = ControllerBdev(ctrlr);
  if (!bdev.ok()) return TargetFailure(bdev.status(), "reconcile: vhost controller");
  if (!bdev->has_value()) {
    if (volumes.empty()) {
      spdlog::warn("reconcile: {} has no volume any more; its controller cannot be re-created", spec.handle);
      return absl::OkStatus();
    }
    spdlog::info("reconcile: re-creating vhost controller {} on {}", ctrlr, volumes[0].bdev_name);
    auto made = rpc_.Call("vhost_create_blk_controller", Json{{"ctrlr", ctrlr}, {"dev_name", volumes[0].bdev_name}});
    if (!made.ok()) {
      if (IsTransportError(made.status())) return made.status();
      // Most likely the volume's bdev is gone (it may come back): the volume manager's business.
      spdlog::warn("reconcile: cannot re-create vhost controller {}: {}", ctrlr, made.status().ToString());
      return absl::OkStatus();
    }
  } else if (!volumes.empty()) {
    auto same = SameBdev(**bdev, volumes[0]);
    if (!same.ok()) return same.status();
    if (!*same) {
      spdlog::warn("reconcile: vhost controller {} exposes bdev {}, not {}; left alone", ctrlr, **bdev,
                   volumes[0].bdev_name);
    }
  }
  for (VolumeExposure& volume : volumes) volume.nsid = kVolumeNsid;
  absl::Status qemu = EnsureQemuDevice(physical_id, PciSlot{bus, slot});
  if (!qemu.ok()) return QemuFailure(qemu, absl::StrCat("reconcile: QEMU device ", ctrlr));
  return absl::OkStatus();
}

absl::StatusOr<std::string> VhostBlkDeviceManager::QosBdev(const DeviceSpec& device, const VolumeExposure* volume) {
  if (volume != nullptr) return volume->volume_id;
  ASSIGN_OR_RETURN(uint32_t physical_id, SpecNumber(device, "physical_id"));
  auto bdev = ControllerBdev(Ctrlr(physical_id));
  if (!bdev.ok()) return TargetFailure(bdev.status(), "Failed to set QoS");
  if (!bdev->has_value() || (*bdev)->empty()) {
    return absl::NotFoundError("No device associated with device_handle could be found");
  }
  return **bdev;
}

sma::GetQosCapabilitiesResponse VhostBlkDeviceManager::QosCapabilities() const {
  sma::GetQosCapabilitiesResponse response;
  *response.mutable_max_device_caps() = BdevQosCapabilities();
  *response.mutable_max_volume_caps() = BdevQosCapabilities();
  return response;
}

}  // namespace smad::agent
