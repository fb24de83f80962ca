#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace smad::tgt {

inline constexpr char kTrtypeTcp[] = "TCP";
inline constexpr char kTrtypeVfioUser[] = "VFIOUSER";

// An NVMe-oF transport address (SPDK's listen_address object). Stored normalised:
// - TCP: adrfam "IPv4"/"IPv6", traddr a numeric IP literal, trsvcid a decimal port.
// - VFIOUSER: traddr the directory that holds the controller's socket (`<traddr>/cntrl`), as given;
//   adrfam empty unless given (reported "unknown", as SPDK does), trsvcid as given (usually empty).
struct ListenAddress {
  std::string trtype = kTrtypeTcp;
  std::string adrfam = "IPv4";
  std::string traddr;
  std::string trsvcid;

  // Parses and normalises {"trtype","adrfam","traddr","trsvcid"}; trtype and adrfam are
  // case-insensitive, trtype defaults to TCP and a TCP adrfam defaults from traddr. Touches no file.
  // Errors: InvalidArgument naming the field.
  static absl::StatusOr<ListenAddress> FromJson(const nlohmann::json& json);
  // What nvmf_get_subsystems and nvmf_subsystem_get_listeners show.
  nlohmann::json ToJson() const;
  // The listen_address of a saved nvmf_subsystem_add_listener entry (no "unknown" adrfam, which SPDK
  // would refuse on replay).
  nlohmann::json ToConfigJson() const;
  std::string ToString() const { return trtype == kTrtypeTcp ? traddr + ":" + trsvcid : traddr; }
  bool is_tcp() const { return trtype == kTrtypeTcp; }
  uint16_t port() const;

  // Whether both name the same listener: every field for TCP; the directory for vfio-user, whose
  // transport knows an endpoint by traddr only.
  friend bool operator==(const ListenAddress& a, const ListenAddress& b) {
    if (a.trtype != b.trtype) return false;
    if (a.trtype == kTrtypeVfioUser) return a.traddr == b.traddr;
    return a.adrfam == b.adrfam && a.traddr == b.traddr && a.trsvcid == b.trsvcid;
  }
};

}  // namespace smad::tgt
