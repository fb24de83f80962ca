#include "agent/devices/subsystem_json.h"

#include "absl/strings/match.h"
#include "common/uuid.h"

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

}  // namespace smad::agent
