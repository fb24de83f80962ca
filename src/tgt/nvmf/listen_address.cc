#include "tgt/nvmf/listen_address.h"

#include <arpa/inet.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"

namespace smad::tgt {
namespace {

// SPDK's bounds of spdk_nvme_transport_id: traddr[SPDK_NVMF_TRADDR_MAX_LEN + 1], trsvcid[32 + 1].
constexpr size_t kMaxTraddr = 256;
constexpr size_t kMaxTrsvcid = 32;

absl::StatusOr<ListenAddress> ParseVfioUser(const nlohmann::json& json) {
  ListenAddress addr;
  addr.trtype = kTrtypeVfioUser;
  addr.traddr = json.value("traddr", std::string());
  addr.trsvcid = json.value("trsvcid", std::string());
  if (addr.traddr.empty()) return absl::InvalidArgumentError("listen_address.traddr is required");
  if (addr.traddr.size() > kMaxTraddr) {
    return absl::InvalidArgumentError("listen_address.traddr is longer than 256 characters");
  }
  if (addr.trsvcid.size() > kMaxTrsvcid) {
    return absl::InvalidArgumentError("listen_address.trsvcid is longer than 32 characters");
  }
  // SPDK accepts the address families it knows; "unknown" is what it reports for none, accepted here so
  // that SPDK's own saved configurations replay.
  std::string adrfam = absl::AsciiStrToLower(json.value("adrfam", std::string()));
  if (adrfam.empty() || adrfam == "unknown") {
    addr.adrfam.clear();
  } else if (adrfam == "ipv4") {
    addr.adrfam = "IPv4";
  } else if (adrfam == "ipv6") {
    addr.adrfam = "IPv6";
  } else if (adrfam == "ib") {
    addr.adrfam = "IB";
  } else if (adrfam == "fc") {
    addr.adrfam = "FC";
  } else {
    return absl::InvalidArgumentError("listen_address.adrfam must be ipv4, ipv6, ib or fc");
  }
  return addr;
}

}  // namespace

absl::StatusOr<ListenAddress> ListenAddress::FromJson(const nlohmann::json& json) {
  if (!json.is_object()) return absl::InvalidArgumentError("listen_address must be an object");
  for (const auto& [key, value] : json.items()) {
    if (key != "trtype" && key != "adrfam" && key != "traddr" && key != "trsvcid") {
      return absl::InvalidArgumentError("listen_address has unknown key '" + key + "'");
    }
    if (!value.is_string()) return absl::InvalidArgumentError("listen_address." + key + " must be a string");
  }
  ListenAddress addr;
  std::string trtype = absl::AsciiStrToUpper(json.value("trtype", std::string("tcp")));
  if (trtype == kTrtypeVfioUser) return ParseVfioUser(json);
  if (trtype != kTrtypeTcp) return absl::InvalidArgumentError("listen_address.trtype must be tcp or vfiouser");
  addr.traddr = json.value("traddr", std::string());
  addr.trsvcid = json.value("trsvcid", std::string());
  if (addr.traddr.empty()) return absl::InvalidArgumentError("listen_address.traddr is required");
  in6_addr buf;
  bool v4 = inet_pton(AF_INET, addr.traddr.c_str(), &buf) == 1;
  bool v6 = !v4 && inet_pton(AF_INET6, addr.traddr.c_str(), &buf) == 1;
  if (!v4 && !v6) return absl::InvalidArgumentError("listen_address.traddr must be an IP address");
  std::string adrfam = absl::AsciiStrToLower(json.value("adrfam", std::string(v4 ? "ipv4" : "ipv6")));
  if (adrfam == "ipv4") {
    if (!v4) return absl::InvalidArgumentError("listen_address.traddr is not an IPv4 address");
    addr.adrfam = "IPv4";
  } else if (adrfam == "ipv6") {
    if (!v6) return absl::InvalidArgumentError("listen_address.traddr is not an IPv6 address");
    addr.adrfam = "IPv6";
  } else {
    return absl::InvalidArgumentError("listen_address.adrfam must be ipv4 or ipv6");
  }
  uint32_t port;
  if (addr.trsvcid.empty() || !absl::SimpleAtoi(addr.trsvcid, &port) || port == 0 || port > 65535) {
    return absl::InvalidArgumentError("listen_address.trsvcid must be a port number");
  }
  addr.trsvcid = std::to_string(port);
  return addr;
}

nlohmann::json ListenAddress::ToJson() const {
  return {{"trtype", trtype}, {"adrfam", adrfam.empty() ? "unknown" : adrfam}, {"traddr", traddr}, {"trsvcid", trsvcid}};
}

nlohmann::json ListenAddress::ToConfigJson() const {
  if (is_tcp()) return ToJson();
  nlohmann::json j = {{"trtype", trtype}, {"traddr", traddr}};
  if (!adrfam.empty()) j["adrfam"] = adrfam;
  if (!trsvcid.empty()) j["trsvcid"] = trsvcid;
  return j;
}

uint16_t ListenAddress::port() const {
  uint32_t port = 0;
  if (!absl::SimpleAtoi(trsvcid, &port)) return 0;
  return static_cast<uint16_t>(port);
}

}  // namespace smad::tgt
