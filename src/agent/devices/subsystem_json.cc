#include "agent/devices/subsystem_json.h"

#include "absl/strings/match.h"
#include "agent/devices/target_errors.h"
#include "common/uuid.h"
#include "spdlog/spdlog.h"

namespace smad::agent {

bool SameText(const Json& a, absl::string_view b) {
  return a.is_string() && absl::EqualsIgnoreCase(a.get_ref<const std::string&>(), b);
}

std::string TextField(const Json& object, const char* key) {
  if (!object.is_object()) return std::string();
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

uint32_t NsidOf(const Json& ns) {
  if (!ns.is_object()) return 0;
  auto it = ns.find("nsid");
  return it != ns.end() && it->is_number_unsigned() && it->get<uint64_t>() <= UINT32_MAX
             ? static_cast<uint32_t>(it->get<uint64_t>())
             : 0;
}

Json NamespaceParams(const VolumeExposure& volume) {
  auto uuid = Uuid::Parse(volume.volume_id);
  Json ns = {{"bdev_name", volume.bdev_name},
             {"uuid", volume.volume_id},
             {"nguid", uuid.ok() ? uuid->ToHex(false) : std::string()}};
  if (volume.nsid != 0) ns["nsid"] = volume.nsid;
  return ns;
}

const Json* FindNamespace(const Json& subsystem, const std::string& volume_id) {
  if (!subsystem.is_object()) return nullptr;
  auto it = subsystem.find("namespaces");
  if (it == subsystem.end() || !it->is_array()) return nullptr;
  for (const Json& ns : *it) {
    if (ns.is_object() && SameText(ns.value("uuid", Json()), volume_id)) return &ns;
  }
  return nullptr;
}

absl::StatusOr<std::optional<Json>> GetSubsystemByNqn(const TargetRpc& rpc, const std::string& nqn) {
  auto list = rpc.Call("nvmf_get_subsystems", Json{{"nqn", nqn}});
  if (!list.ok()) {
    auto error = SpdkErrorOf(list.status());
    if (error.has_value() && error->code == -32602) return std::optional<Json>();
    return list.status();
  }
  if (list->is_array()) {
    for (Json& s : *list) {
      if (s.is_object() && SameText(s.value("nqn", Json()), nqn)) return std::optional<Json>(std::move(s));
    }
  }
  return std::optional<Json>();
}

namespace {

absl::StatusOr<uint32_t> AddNamespace(const TargetRpc& rpc, const std::string& nqn, const VolumeExposure& volume) {
  auto nsid = rpc.Call("nvmf_subsystem_add_ns", Json{{"nqn", nqn}, {"namespace", NamespaceParams(volume)}});
  if (!nsid.ok()) return nsid.status();
  if (!nsid->is_number_unsigned() || nsid->get<uint64_t>() == 0 || nsid->get<uint64_t>() > UINT32_MAX) {
    return absl::InternalError("nvmf_subsystem_add_ns: the target answered no nsid");
  }
  return static_cast<uint32_t>(nsid->get<uint64_t>());
}

}  // namespace

absl::Status ExposeNamespace(const TargetRpc& rpc, const std::string& nqn, VolumeExposure& volume) {
  constexpr char kFailed[] = "Failed to attach volume";
  auto nsid = AddNamespace(rpc, nqn, volume);
  if (nsid.ok()) {
    volume.nsid = *nsid;
    return absl::OkStatus();
  }
  if (IsTransportError(nsid.status())) return TargetFailure(nsid.status(), kFailed);
  // Find out why: already attached (a retry), no such device, no such bdev, or a wanted nsid in use.
  auto actual = GetSubsystemByNqn(rpc, nqn);
  if (!actual.ok()) return TargetFailure(actual.status(), kFailed);
  if (!actual->has_value()) return absl::NotFoundError("Invalid device handle");
  if (const Json* ns = FindNamespace(**actual, volume.volume_id)) {
    volume.nsid = NsidOf(*ns);
    return absl::OkStatus();
  }
  auto bdev = rpc.Call("bdev_get_bdevs", Json{{"name", volume.bdev_name}, {"timeout", 1000}});
  if (!bdev.ok()) {
    if (IsTransportError(bdev.status())) return TargetFailure(bdev.status(), kFailed);
    return absl::NotFoundError("Volume could not be found");
  }
  // The bdev exists (it may have appeared within the wait); a remembered nsid may be taken: let the
  // target choose.
  VolumeExposure any = volume;
  any.nsid = 0;
  auto retried = AddNamespace(rpc, nqn, any);
  if (!retried.ok()) return TargetFailure(retried.status(), kFailed);
  volume.nsid = *retried;
  return absl::OkStatus();
}

absl::Status RemoveNamespace(const TargetRpc& rpc, const std::string& nqn, const VolumeExposure& volume) {
  auto actual = GetSubsystemByNqn(rpc, nqn);
  if (!actual.ok()) return TargetFailure(actual.status(), "Failed to detach volume");
  if (!actual->has_value()) return absl::OkStatus();
  const Json* ns = FindNamespace(**actual, volume.volume_id);
  if (ns == nullptr) return absl::OkStatus();
  auto removed = rpc.Call("nvmf_subsystem_remove_ns", Json{{"nqn", nqn}, {"nsid", NsidOf(*ns)}});
  if (!removed.ok()) return TargetFailure(removed.status(), "Failed to detach volume");
  return absl::OkStatus();
}

absl::Status EnsureTransport(const TargetRpc& rpc, const char* trtype, absl::string_view failure) {
  auto transports = rpc.Call("nvmf_get_transports");
  if (!transports.ok()) return TargetFailure(transports.status(), failure);
  if (transports->is_array()) {
    for (const Json& t : *transports) {
      if (t.is_object() && SameText(t.value("trtype", Json()), trtype)) return absl::OkStatus();
    }
  }
  auto created = rpc.Call("nvmf_create_transport", Json{{"trtype", trtype}});
  if (!created.ok()) return TargetFailure(created.status(), failure);
  spdlog::info("created the NVMe-oF {} transport", trtype);
  return absl::OkStatus();
}

}  // namespace smad::agent
