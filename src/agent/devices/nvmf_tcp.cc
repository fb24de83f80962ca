#include "agent/devices/nvmf_tcp.h"

#include <arpa/inet.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/devices/subsystem_json.h"
#include "agent/devices/target_errors.h"
#include "common/nqn.h"
#include "common/uuid.h"
#include "spdlog/spdlog.h"

namespace smad::agent {
namespace {

constexpr size_t kMaxHosts = 1024;
constexpr char kCreateFailed[] = "Failed to create NVMe/TCP device";

absl::Status ValidateSubsystemNqn(const std::string& nqn, absl::string_view field) {
  if (nqn.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": missing"));
  absl::Status valid = ValidateNqn(nqn);
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat(field, ": ", valid.message()));
  if (nqn == kDiscoveryNqn) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": the discovery NQN cannot be a device"));
  }
  return absl::OkStatus();
}

// Whether `listen_addresses` (the target's answer) holds `listener` (from our spec).
bool HasListener(const Json& listen_addresses, const Json& listener) {
  if (!listen_addresses.is_array()) return false;
  for (const Json& a : listen_addresses) {
    if (!a.is_object()) continue;
    if (SameText(a.value("trtype", Json()), "tcp") &&
        SameText(a.value("adrfam", Json()), listener["adrfam"].get<std::string>()) &&
        SameText(a.value("traddr", Json()), listener["traddr"].get<std::string>()) &&
        SameText(a.value("trsvcid", Json()), listener["trsvcid"].get<std::string>())) {
      return true;
    }
  }
  return false;
}

Json ListenAddress(const Json& listener) {
  return Json{{"trtype", "tcp"}, {"adrfam", listener["adrfam"]}, {"traddr", listener["traddr"]},
              {"trsvcid", listener["trsvcid"]}};
}

std::vector<std::string> HostNqns(const Json& subsystem) {
  std::vector<std::string> hosts;
  auto it = subsystem.find("hosts");
  if (it == subsystem.end() || !it->is_array()) return hosts;
  for (const Json& h : *it) {
    if (h.is_object() && h.contains("nqn") && h["nqn"].is_string()) hosts.push_back(h["nqn"]);
  }
  return hosts;
}

}  // namespace

absl::Status NvmfTcpDeviceManager::PrepareTarget() {
  return EnsureTransport(rpc_, "tcp", "NVMe/TCP transport is unavailable");
}

bool NvmfTcpDeviceManager::OwnsHandle(absl::string_view handle) const {
  if (!absl::StartsWith(handle, kHandlePrefix)) return false;
  std::string nqn(handle.substr(kHandlePrefix.size()));
  return ValidateSubsystemNqn(nqn, "handle").ok();
}

absl::StatusOr<DeviceSpec> NvmfTcpDeviceManager::SpecFromHandle(absl::string_view handle) const {
  if (!OwnsHandle(handle)) return absl::NotFoundError("Invalid device handle");
  DeviceSpec spec;
  spec.handle = std::string(handle);
  spec.manager = name_;
  spec.params = {{"nqn", std::string(handle.substr(kHandlePrefix.size()))}};
  return spec;
}

absl::StatusOr<DeviceSpec> NvmfTcpDeviceManager::PlanDevice(const sma::CreateDeviceRequest& request,
                                                            const DeviceSpec* previous) const {
  const sma::nvmf_tcp::DeviceParameters& p = request.nvmf_tcp();
  RETURN_IF_ERROR(ValidateSubsystemNqn(p.subnqn(), "nvmf_tcp.subnqn"));
  std::string adrfam = absl::AsciiStrToLower(p.adrfam());
  int family;
  if (adrfam == "ipv4") {
    family = AF_INET;
  } else if (adrfam == "ipv6") {
    family = AF_INET6;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("nvmf_tcp.adrfam: must be \"ipv4\" or \"ipv6\", got \"", p.adrfam(), "\""));
  }
  unsigned char addr[sizeof(struct in6_addr)];
  if (p.traddr().size() > 64 || inet_pton(family, p.traddr().c_str(), addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("nvmf_tcp.traddr: not an ", adrfam, " address: \"",
                                                   p.traddr().substr(0, 64), "\""));
  }
  uint32_t port = 0;
  if (p.trsvcid().empty() || p.trsvcid().size() > 5 ||
      !std::all_of(p.trsvcid().begin(), p.trsvcid().end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      !absl::SimpleAtoi(p.trsvcid(), &port) || port == 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("nvmf_tcp.trsvcid: must be a port number 1-65535, got \"",
                                                   p.trsvcid().substr(0, 16), "\""));
  }
  if (static_cast<size_t>(p.hosts_size()) > kMaxHosts) {
    return absl::InvalidArgumentError(absl::StrCat("nvmf_tcp.hosts: at most ", kMaxHosts, " hosts"));
  }
  Json hosts = Json::array();
  for (int i = 0; i < p.hosts_size(); ++i) {
    const std::string& host = p.hosts(i);
    absl::Status valid = ValidateNqn(host);
    if (host.empty() || !valid.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("nvmf_tcp.hosts[", i, "]: ",
                                                     host.empty() ? "empty" : valid.message()));
    }
    if (std::find(hosts.begin(), hosts.end(), Json(host)) == hosts.end()) hosts.push_back(host);
  }
  Json listener = {{"adrfam", adrfam}, {"traddr", p.traddr()}, {"trsvcid", std::to_string(port)}};
  Json listeners = Json::array();
  if (previous != nullptr && previous->params.contains("listeners")) listeners = previous->params["listeners"];
  if (std::find(listeners.begin(), listeners.end(), listener) == listeners.end()) listeners.push_back(listener);

  DeviceSpec spec;
  spec.handle = absl::StrCat(kHandlePrefix, p.subnqn());
  spec.manager = name_;
  spec.params = {{"nqn", p.subnqn()},
                 {"allow_any_host", p.allow_any_host()},
                 {"hosts", std::move(hosts)},
                 {"listeners", std::move(listeners)}};
  return spec;
}

absl::Status NvmfTcpDeviceManager::BeginReconcile() {
  auto list = rpc_.Call("nvmf_get_subsystems");
  if (!list.ok()) return list.status();
  absl::flat_hash_map<std::string, Json> by_nqn;
  if (list->is_array()) {
    for (Json& s : *list) {
      if (!s.is_object() || !s.contains("nqn") || !s["nqn"].is_string()) continue;
      std::string nqn = s["nqn"].get<std::string>();
      by_nqn[nqn] = std::move(s);
    }
  }
  absl::MutexLock lock(&snapshot_mu_);
  snapshot_ = std::move(by_nqn);
  return absl::OkStatus();
}

void NvmfTcpDeviceManager::EndReconcile() {
  absl::MutexLock lock(&snapshot_mu_);
  snapshot_.reset();
}

absl::StatusOr<std::optional<Json>> NvmfTcpDeviceManager::GetSubsystem(const std::string& nqn) const {
  return GetSubsystemByNqn(rpc_, nqn);
}

absl::Status NvmfTcpDeviceManager::CreateSubsystem(const Json& params) {
  const std::string nqn = params["nqn"];
  auto created = rpc_.Call("nvmf_create_subsystem",
                           Json{{"nqn", nqn}, {"allow_any_host", params["allow_any_host"]}});
  if (!created.ok()) return created.status();
  absl::Status status;
  for (const Json& host : params["hosts"]) {
    auto added = rpc_.Call("nvmf_subsystem_add_host", Json{{"nqn", nqn}, {"host", host}});
    if (!added.ok()) {
      status = added.status();
      break;
    }
  }
  if (status.ok()) {
    for (const Json& listener : params["listeners"]) {
      auto added = rpc_.Call("nvmf_subsystem_add_listener",
                             Json{{"nqn", nqn}, {"listen_address", ListenAddress(listener)}});
      if (!added.ok()) {
        status = added.status();
        break;
      }
    }
  }
  if (!status.ok()) {
    // This call created the subsystem: take it away again so a failed create leaves nothing behind.
    auto deleted = rpc_.Call("nvmf_delete_subsystem", Json{{"nqn", nqn}});
    if (!deleted.ok()) {
      spdlog::warn("nvmf_tcp: could not remove the half-created subsystem {}: {}", nqn,
                   deleted.status().ToString());
    }
  }
  return status;
}

absl::Status NvmfTcpDeviceManager::UpdateSubsystem(const Json& params, const Json& actual) {
  const std::string nqn = params["nqn"];
  if (actual.value("allow_any_host", false) != params["allow_any_host"].get<bool>()) {
    RETURN_IF_ERROR(rpc_.Call("nvmf_subsystem_allow_any_host",
                              Json{{"nqn", nqn}, {"allow_any_host", params["allow_any_host"]}})
                        .status());
  }
  std::vector<std::string> current = HostNqns(actual);
  for (const Json& host : params["hosts"]) {
    if (std::find(current.begin(), current.end(), host.get<std::string>()) != current.end()) continue;
    RETURN_IF_ERROR(rpc_.Call("nvmf_subsystem_add_host", Json{{"nqn", nqn}, {"host", host}}).status());
  }
  for (const std::string& host : current) {
    if (std::find(params["hosts"].begin(), params["hosts"].end(), Json(host)) != params["hosts"].end()) continue;
    RETURN_IF_ERROR(rpc_.Call("nvmf_subsystem_remove_host", Json{{"nqn", nqn}, {"host", host}}).status());
  }
  const Json& addresses = actual.contains("listen_addresses") ? actual["listen_addresses"] : Json();
  for (const Json& listener : params["listeners"]) {
    if (HasListener(addresses, listener)) continue;
    RETURN_IF_ERROR(rpc_.Call("nvmf_subsystem_add_listener",
                              Json{{"nqn", nqn}, {"listen_address", ListenAddress(listener)}})
                        .status());
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceManager::Created> NvmfTcpDeviceManager::CreateDevice(const DeviceSpec& spec,
                                                                          const DeviceSpec* previous) {
  const std::string nqn = spec.params["nqn"];
  if (previous == nullptr) {
    // New to smad: the subsystem almost always does not exist yet, so try the create first (as many
    // target calls as a script would make) and look only when that fails.
    absl::Status created = CreateSubsystem(spec.params);
    if (created.ok()) return Created{spec.handle, true};
    if (IsTransportError(created)) return TargetFailure(created, kCreateFailed);
  }
  auto actual = GetSubsystem(nqn);
  if (!actual.ok()) return TargetFailure(actual.status(), kCreateFailed);
  if (!actual->has_value()) {
    absl::Status created = CreateSubsystem(spec.params);
    if (!created.ok()) return TargetFailure(created, kCreateFailed);
    return Created{spec.handle, true};
  }
  absl::Status updated = UpdateSubsystem(spec.params, **actual);
  if (!updated.ok()) {
    // Put back what we changed: the previous spec when smad had one, else what the target held.
    Json restore = previous != nullptr ? previous->params : Json();
    if (restore.is_null()) {
      restore = spec.params;
      restore["allow_any_host"] = (*actual)->value("allow_any_host", false);
      restore["hosts"] = HostNqns(**actual);
    }
    auto now = GetSubsystem(nqn);
    if (now.ok() && now->has_value()) {
      absl::Status undone = UpdateSubsystem(restore, **now);
      if (!undone.ok()) spdlog::warn("nvmf_tcp: could not undo a partial update of {}: {}", nqn, undone.ToString());
    }
    return TargetFailure(updated, kCreateFailed);
  }
  return Created{spec.handle, false};
}

absl::Status NvmfTcpDeviceManager::DeleteDevice(const DeviceSpec& spec) {
  const std::string nqn = spec.params["nqn"];
  auto deleted = rpc_.Call("nvmf_delete_subsystem", Json{{"nqn", nqn}});
  if (deleted.ok()) return absl::OkStatus();
  if (IsTransportError(deleted.status())) return TargetFailure(deleted.status(), "Failed to delete device");
  auto actual = GetSubsystem(nqn);
  if (!actual.ok()) return TargetFailure(actual.status(), "Failed to delete device");
  if (!actual->has_value()) return absl::OkStatus();  // already gone
  return TargetFailure(deleted.status(), "Failed to delete device");
}


absl::Status NvmfTcpDeviceManager::AttachVolume(const DeviceSpec& device, VolumeExposure& volume) {
  return ExposeNamespace(rpc_, device.params["nqn"].get<std::string>(), volume);
}

absl::Status NvmfTcpDeviceManager::DetachVolume(const DeviceSpec& device, const VolumeExposure& volume) {
  return RemoveNamespace(rpc_, device.params["nqn"].get<std::string>(), volume);
}

absl::Status NvmfTcpDeviceManager::Reconcile(const DeviceSpec& spec, std::vector<VolumeExposure>& volumes,
                                             const absl::flat_hash_set<std::string>& managed_volume_ids) {
  const std::string nqn = spec.params["nqn"];
  absl::StatusOr<std::optional<Json>> actual = std::optional<Json>();
  bool from_snapshot = false;
  {
    // Within a reconciliation pass the snapshot answers the first read of each device.
    absl::MutexLock lock(&snapshot_mu_);
    if (snapshot_.has_value()) {
      from_snapshot = true;
      auto it = snapshot_->find(nqn);
      if (it != snapshot_->end()) actual = std::optional<Json>(it->second);
    }
  }
  if (!from_snapshot) actual = GetSubsystem(nqn);
  if (!actual.ok()) return actual.status();
  if (!actual->has_value()) {
    spdlog::info("reconcile: re-creating subsystem {}", nqn);
    RETURN_IF_ERROR(CreateSubsystem(spec.params));
    actual = std::optional<Json>(Json{{"nqn", nqn}});  // just created: no namespaces yet
  } else {
    RETURN_IF_ERROR(UpdateSubsystem(spec.params, **actual));
  }
  const Json& subsystem = **actual;
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
      // A missing bdev is the volume manager's business (it may come back); keep reconciling the rest.
      spdlog::warn("reconcile: cannot expose volume {} on {}: {}", volume.volume_id, nqn, attached.ToString());
    }
  }
  if (subsystem.contains("namespaces") && subsystem["namespaces"].is_array()) {
    for (const Json& ns : subsystem["namespaces"]) {
      std::string uuid = absl::AsciiStrToLower(TextField(ns, "uuid"));
      if (uuid.empty() || wanted.contains(uuid) || !managed_volume_ids.contains(uuid)) continue;
      spdlog::info("reconcile: removing namespace {} (volume {}) from {}", NsidOf(ns), uuid, nqn);
      RETURN_IF_ERROR(
          rpc_.Call("nvmf_subsystem_remove_ns", Json{{"nqn", nqn}, {"nsid", NsidOf(ns)}}).status());
    }
  }
  return absl::OkStatus();
}

sma::GetQosCapabilitiesResponse NvmfTcpDeviceManager::QosCapabilities() const {
  sma::GetQosCapabilitiesResponse response;
  *response.mutable_max_volume_caps() = BdevQosCapabilities();
  return response;
}

}  // namespace smad::agent
