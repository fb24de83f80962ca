#include "agent/devices/vfiouser.h"

#include <sys/stat.h>
#include <sys/types.h>

#include <cerrno>
#include <filesystem>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/devices/subsystem_json.h"
#include "agent/devices/target_errors.h"
#include "common/uuid.h"
#include "spdlog/spdlog.h"

namespace smad::agent {
namespace {

constexpr char kTransport[] = "vfiouser";
constexpr char kTransportFailed[] = "NVMe/vfiouser transport is unavailable";
constexpr char kSubsystemFailed[] = "Failed to create the NVMe/vfiouser subsystem";
constexpr char kListenerFailed[] = "Failed to add the NVMe/vfiouser listener";
constexpr char kCreateFailed[] = "Failed to create NVMe/vfiouser device";
constexpr char kDeleteFailed[] = "Failed to delete NVMe/vfiouser device";
// The longest name appended to sock_path: "vfiouser-4294967295/cntrl".
constexpr size_t kMaxSocketName = sizeof("vfiouser-4294967295/cntrl") - 1;

Json ListenAddress(const std::string& dir) { return Json{{"trtype", kTransport}, {"traddr", dir}}; }

// Whether the subsystem (the target's answer) listens on vfio-user at `dir`.
bool HasListener(const Json& subsystem, const std::string& dir) {
  auto it = subsystem.find("listen_addresses");
  if (it == subsystem.end() || !it->is_array()) return false;
  for (const Json& a : *it) {
    if (a.is_object() && SameText(a.value("trtype", Json()), kTransport) && TextField(a, "traddr") == dir) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::string VfioUserDeviceManager::DevId(uint32_t physical_id) { return absl::StrCat("vfiouser-", physical_id); }

std::string VfioUserDeviceManager::Nqn(uint32_t physical_id) {
  return absl::StrCat(kNqnPrefix, DevId(physical_id));
}

std::string VfioUserDeviceManager::SocketDir(uint32_t physical_id) const {
  return JoinPath(config_.sock_path, DevId(physical_id));
}

absl::Status VfioUserDeviceManager::Init(const Json& params) {
  ASSIGN_OR_RETURN(config_, ParseQemuDeviceConfig(params, kMaxSocketName, name_));
  return absl::OkStatus();
}

absl::Status VfioUserDeviceManager::PrepareTarget() {
  return EnsureTransport(rpc_, kTransport, kTransportFailed);
}

bool VfioUserDeviceManager::OwnsHandle(absl::string_view handle) const {
  return ParseHandleNumber(handle, kHandlePrefix).has_value();
}

absl::StatusOr<DeviceSpec> VfioUserDeviceManager::SpecFromHandle(absl::string_view handle) const {
  return SpecFromNumberedHandle(handle, kHandlePrefix, name_);
}

absl::StatusOr<DeviceSpec> VfioUserDeviceManager::PlanDevice(const sma::CreateDeviceRequest& request,
                                                             const DeviceSpec* previous) const {
  const sma::nvme::DeviceParameters& p = request.nvme();
  if (p.virtual_id() != 0) return absl::InvalidArgumentError("Unsupported virtual_id value");
  ASSIGN_OR_RETURN(PciSlot slot, SlotForDevice(config_.buses, p.physical_id(), previous));
  DeviceSpec spec;
  spec.handle = absl::StrCat(kHandlePrefix, p.physical_id());
  spec.manager = name_;
  spec.params = {{"physical_id", p.physical_id()}, {"bus", slot.bus}, {"slot", slot.slot}};
  return spec;
}

absl::StatusOr<std::optional<Json>> VfioUserDeviceManager::GetSubsystem(const std::string& nqn) const {
  return GetSubsystemByNqn(rpc_, nqn);
}

absl::Status VfioUserDeviceManager::EnsureSocketDir(const std::string& dir, bool& created) const {
  created = false;
  struct stat st;
  if (lstat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return absl::OkStatus();  // kept: it may hold the target's live socket
    return absl::InternalError(absl::StrCat("Socket path error ", dir, ": exists and is not a directory"));
  }
  if (errno != ENOENT) return absl::InternalError(absl::StrCat("Socket path error ", dir, ": ", ErrnoString(errno)));
  std::error_code ec;
  std::filesystem::create_directories(config_.sock_path, ec);
  if (ec) return absl::InternalError(absl::StrCat("Socket path error ", config_.sock_path, ": ", ec.message()));
  if (mkdir(dir.c_str(), 0755) != 0) {
    if (errno == EEXIST && lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("Socket path error ", dir, ": ", ErrnoString(errno)));
  }
  created = true;
  return absl::OkStatus();
}

absl::Status VfioUserDeviceManager::RemoveSocketDir(const std::string& dir) const {
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("Socket path error ", dir, ": ", ErrnoString(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    // Not something this manager made: leave it alone.
    spdlog::warn("vfiouser: {} is not a directory; not removing it", dir);
    return absl::OkStatus();
  }
  // remove_all never follows symbolic links: only entries inside `dir` itself go.
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("Socket path error ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<VfioUserDeviceManager::SubsystemState> VfioUserDeviceManager::EnsureSubsystem(uint32_t physical_id,
                                                                                             bool create_first) {
  const std::string nqn = Nqn(physical_id);
  const std::string dir = SocketDir(physical_id);
  const Json create_params = {{"nqn", nqn}, {"allow_any_host", true}};
  SubsystemState state;
  if (create_first) {
    // New to smad: the subsystem almost always does not exist yet; look only when creating fails.
    auto created = rpc_.Call("nvmf_create_subsystem", create_params);
    if (created.ok()) {
      state.created_subsystem = true;
    } else if (IsTransportError(created.status())) {
      return TargetFailure(created.status(), kSubsystemFailed);
    }
  }
  if (!state.created_subsystem) {
    auto actual = GetSubsystem(nqn);
    if (!actual.ok()) return TargetFailure(actual.status(), kSubsystemFailed);
    state.actual = *std::move(actual);
    if (!state.actual.has_value()) {
      auto created = rpc_.Call("nvmf_create_subsystem", create_params);
      if (!created.ok()) return TargetFailure(created.status(), kSubsystemFailed);
      state.created_subsystem = true;
    }
  }
  absl::Status dir_ready = EnsureSocketDir(dir, state.created_dir);
  if (!dir_ready.ok()) {
    UndoSubsystem(physical_id, state);
    return dir_ready;
  }
  if (state.created_subsystem || !HasListener(*state.actual, dir)) {
    auto added = rpc_.Call("nvmf_subsystem_add_listener", Json{{"nqn", nqn}, {"listen_address", ListenAddress(dir)}});
    if (!added.ok()) {
      UndoSubsystem(physical_id, state);
      return TargetFailure(added.status(), kListenerFailed);
    }
    state.added_listener = true;
  }
  return state;
}

void VfioUserDeviceManager::UndoSubsystem(uint32_t physical_id, const SubsystemState& state) {
  const std::string nqn = Nqn(physical_id);
  const std::string dir = SocketDir(physical_id);
  if (state.created_subsystem) {
    auto deleted = rpc_.Call("nvmf_delete_subsystem", Json{{"nqn", nqn}});
    if (!deleted.ok()) {
      spdlog::warn("vfiouser: could not remove the half-created subsystem {}: {}", nqn, deleted.status().ToString());
    }
  } else if (state.added_listener) {
    auto removed =
        rpc_.Call("nvmf_subsystem_remove_listener", Json{{"nqn", nqn}, {"listen_address", ListenAddress(dir)}});
    if (!removed.ok()) {
      spdlog::warn("vfiouser: could not remove the listener added to {}: {}", nqn, removed.status().ToString());
    }
  }
  if (state.created_dir) {
    absl::Status removed = RemoveSocketDir(dir);
    if (!removed.ok()) spdlog::warn("vfiouser: {}", removed.ToString());
  }
}

absl::Status VfioUserDeviceManager::EnsureQemuDevice(uint32_t physical_id, const PciSlot& slot) const {
  const std::string dev_id = DevId(physical_id);
  ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp, QmpClient::Connect(config_.qmp));
  ASSIGN_OR_RETURN(Json pci, qmp->Execute("query-pci"));
  if (FindPciDevice(pci, dev_id, /*recursive=*/true) != nullptr) return absl::OkStatus();
  Json device = {{"driver", "vfio-user-pci"},
                 {"x-enable-migration", "on"},
                 {"socket", JoinPath(SocketDir(physical_id), "cntrl")},
                 {"bus", slot.bus},
                 {"addr", slot.Addr()},
                 {"id", dev_id}};
  RETURN_IF_ERROR(qmp->Execute("device_add", device).status());
  spdlog::info("vfiouser: added QEMU device {} on {} slot {}", dev_id, slot.bus, slot.Addr());
  return absl::OkStatus();
}

absl::Status VfioUserDeviceManager::RemoveQemuDevice(uint32_t physical_id) const {
  const std::string dev_id = DevId(physical_id);
  ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp, QmpClient::Connect(config_.qmp));
  ASSIGN_OR_RETURN(Json pci, qmp->Execute("query-pci"));
  if (FindPciDevice(pci, dev_id, /*recursive=*/true) == nullptr) return absl::OkStatus();
  return qmp->Execute("device_del", Json{{"id", dev_id}}).status();
}

absl::StatusOr<DeviceManager::Created> VfioUserDeviceManager::CreateDevice(const DeviceSpec& spec,
                                                                           const DeviceSpec* previous) {
  ASSIGN_OR_RETURN(uint32_t physical_id, SpecNumber(spec, "physical_id"));
  ASSIGN_OR_RETURN(std::string bus, SpecString(spec, "bus"));
  ASSIGN_OR_RETURN(uint32_t slot, SpecNumber(spec, "slot"));
  ASSIGN_OR_RETURN(SubsystemState state, EnsureSubsystem(physical_id, /*create_first=*/previous == nullptr));
  absl::Status qemu = EnsureQemuDevice(physical_id, PciSlot{bus, slot});
  if (!qemu.ok()) {
    UndoSubsystem(physical_id, state);
    return QemuFailure(qemu, kCreateFailed);
  }
  return Created{spec.handle, state.created_subsystem};
}

absl::Status VfioUserDeviceManager::DeleteDevice(const DeviceSpec& spec) {
  ASSIGN_OR_RETURN(uint32_t physical_id, SpecNumber(spec, "physical_id"));
  const std::string nqn = Nqn(physical_id);
  auto deleted = rpc_.Call("nvmf_delete_subsystem", Json{{"nqn", nqn}});
  if (!deleted.ok()) {
    if (IsTransportError(deleted.status())) return TargetFailure(deleted.status(), kDeleteFailed);
    auto actual = GetSubsystem(nqn);
    if (!actual.ok()) return TargetFailure(actual.status(), kDeleteFailed);
    if (actual->has_value()) return TargetFailure(deleted.status(), kDeleteFailed);
  }
  absl::Status qemu = RemoveQemuDevice(physical_id);
  if (!qemu.ok()) return QemuFailure(qemu, kDeleteFailed);
  return RemoveSocketDir(SocketDir(physical_id));
}


absl::Status VfioUserDeviceManager::AttachVolume(const DeviceSpec& device, VolumeExposure& volume) {
  ASSIGN_OR_RETURN(uint32_t physical_id, SpecNumber(device, "physical_id"));
  return ExposeNamespace(rpc_, Nqn(physical_id), volume);
}

absl::Status VfioUserDeviceManager::DetachVolume(const DeviceSpec& device, const VolumeExposure& volume) {
  ASSIGN_OR_RETURN(uint32_t physical_id, SpecNumber(device, "physical_id"));
  return RemoveNamespace(rpc_, Nqn(physical_id), volume);
}

absl::Status VfioUserDeviceManager::Reconcile(const DeviceSpec& spec, std::vector<VolumeExposure>& volumes,
                                              const absl::flat_hash_set<std::string>& managed_volume_ids) {
  ASSIGN_OR_RETURN(uint32_t physical_id, SpecNumber(spec, "physical_id"));
  ASSIGN_OR_RETURN(std::string bus, SpecString(spec, "bus"));
  ASSIGN_OR_RETURN(uint32_t slot, SpecNumber(spec, "slot"));
  const std::string nqn = Nqn(physical_id);
  ASSIGN_OR_RETURN(SubsystemState state, EnsureSubsystem(physical_id, /*create_first=*/false));
  if (state.created_subsystem) spdlog::info("reconcile: re-created subsystem {}", nqn);
  const Json subsystem = state.actual.value_or(Json{{"nqn", nqn}});

  absl::flat_hash_set<std::string> wanted;
  for (VolumeExposure& volume : volumes) {
    wanted.insert(absl::AsciiStrToLower(volume.volume_id));
    if (const Json* ns = FindNamespace(subsystem, volume.volume_id)) {
      volume.nsid = NsidOf(*ns);
      continue;
    }
    spdlog::info("reconcile: exposing volume {} on {}", volume.volume_id, nqn);
    absl::Status attached = AttachVolume(spec, volume);
    if (!attached.ok()) {
      if (IsTransportError(attached)) return attached;
      // A missing bdev is the volume manager's business (it may come back); keep reconciling the rest.
      spdlog::warn("reconcile: cannot expose volume {} on {}: {}", volume.volume_id, nqn, attached.ToString());
    }
  }
  if (subsystem.contains("namespaces") && subsystem["namespaces"].is_array()) {
    for (const Json& ns : subsystem["namespaces"]) {
      std::string uuid = absl::AsciiStrToLower(TextField(ns, "uuid"));
      if (uuid.empty() || wanted.contains(uuid) || !managed_volume_ids.contains(uuid)) continue;
      spdlog::info("reconcile: removing namespace {} (volume {}) from {}", NsidOf(ns), uuid, nqn);
      auto removed = rpc_.Call("nvmf_subsystem_remove_ns", Json{{"nqn", nqn}, {"nsid", NsidOf(ns)}});
      if (!removed.ok()) return TargetFailure(removed.status(), "reconcile: removing a namespace");
    }
  }
  absl::Status qemu = EnsureQemuDevice(physical_id, PciSlot{bus, slot});
  if (!qemu.ok()) return QemuFailure(qemu, absl::StrCat("reconcile: QEMU device ", DevId(physical_id)));
  return absl::OkStatus();
}

sma::GetQosCapabilitiesResponse VfioUserDeviceManager::QosCapabilities() const {
  sma::GetQosCapabilitiesResponse response;
  *response.mutable_max_volume_caps() = BdevQosCapabilities();
  return response;
}

}  // namespace smad::agent
