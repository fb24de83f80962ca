#include "tgt/nvmf/listen_address.h"

#include <arpa/inet.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"

namespace smad::tgt {

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
  if (trtype != "TCP") return absl::InvalidArgumentError("listen_address.trtype must be tcp");
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
  return {{"trtype", trtype}, {"adrfam", adrfam}, {"traddr", traddr}, {"trsvcid", trsvcid}};
}

uint16_t ListenAddress::port() const {
  uint32_t port = 0;
  if (!absl::SimpleAtoi(trsvcid, &port)) return 0;
  return static_cast<uint16_t>(port);
}

}  // namespace smad::tgt
