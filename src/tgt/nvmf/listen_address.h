#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace smad::tgt {

// An NVMe-oF transport address (SPDK's listen_address object). Stored normalised: trtype "TCP",
// adrfam "IPv4"/"IPv6", traddr a numeric IP literal, trsvcid a decimal port.
struct ListenAddress {
  std::string trtype = "TCP";
  std::string adrfam = "IPv4";
  std::string traddr;
  std::string trsvcid;

  // Parses and normalises {"trtype","adrfam","traddr","trsvcid"}; trtype and adrfam are
  // case-insensitive, adrfam defaults from traddr. Errors: InvalidArgument naming the field.
  static absl::StatusOr<ListenAddress> FromJson(const nlohmann::json& json);
  nlohmann::json ToJson() const;
  std::string ToString() const { return traddr + ":" + trsvcid; }
  uint16_t port() const;

  friend bool operator==(const ListenAddress& a, const ListenAddress& b) {
    return a.trtype == b.trtype && a.adrfam == b.adrfam && a.traddr == b.traddr && a.trsvcid == b.trsvcid;
  }
};

}  // namespace smad::tgt
