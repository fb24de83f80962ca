#include "nvme/host/transport_id.h"

#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/nqn.h"

namespace smad::nvme::host {
namespace {

constexpr absl::string_view kUuidNqnPrefix = "nqn.2014-08.org.nvmexpress:uuid:";

// The first line of `path` with surrounding whitespace removed; empty when unreadable.
std::string ReadFirstLine(const std::string& path) {
  if (path.empty()) return "";
  std::ifstream in(path);
  if (!in) return "";
  std::string line;
  std::getline(in, line);
  return std::string(absl::StripAsciiWhitespace(line));
}

absl::Status KeyError(absl::string_view key, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("transport ID key '", key, "': ", problem));
}

}  // namespace

bool TransportId::IsDiscovery() const { return subnqn == kDiscoveryNqn; }

uint16_t TransportId::port() const {
  uint32_t port = 0;
  if (!absl::SimpleAtoi(trsvcid, &port) || port > 65535) return 0;
  return static_cast<uint16_t>(port);
}

std::string TransportId::ToString() const {
  std::string out = absl::StrCat("trtype:", trtype, " adrfam:", adrfam == AddressFamily::kIpv6 ? "IPv6" : "IPv4",
                                 " traddr:", traddr, " trsvcid:", trsvcid, " subnqn:", subnqn);
  if (!hostnqn.empty()) absl::StrAppend(&out, " hostnqn:", hostnqn);
  return out;
}

std::string TransportId::Describe() const {
  if (adrfam == AddressFamily::kIpv6) return absl::StrCat(trtype, " [", traddr, "]:", trsvcid, " ", subnqn);
  return absl::StrCat(trtype, " ", traddr, ":", trsvcid, " ", subnqn);
}

std::string DefaultHostNqn(const HostIdentitySources& sources) {
  std::string from_file = ReadFirstLine(sources.hostnqn_file);
  if (!from_file.empty() && ValidateNqn(from_file).ok()) return from_file;
  return absl::StrCat(kUuidNqnPrefix, Uuid::Generate().ToString());
}

absl::StatusOr<TransportId> ParseTransportId(absl::string_view text, const HostIdentitySources& sources) {
  TransportId trid;
  trid.subnqn = std::string(kDiscoveryNqn);
  bool have_adrfam = false, have_hostid = false;
  absl::flat_hash_set<std::string> seen;

  for (absl::string_view token : absl::StrSplit(text, absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty())) {
    size_t sep = token.find_first_of(":=");
    if (sep == 0) return absl::InvalidArgumentError(absl::StrCat("transport ID entry '", token, "' has no key"));
    std::string key = absl::AsciiStrToLower(token.substr(0, sep == absl::string_view::npos ? token.size() : sep));
    if (sep == absl::string_view::npos || sep + 1 == token.size()) return KeyError(key, "missing value");
    absl::string_view value = token.substr(sep + 1);
    if (!seen.insert(key).second) return KeyError(key, "given more than once");

    if (key == "trtype") {
      if (!absl::EqualsIgnoreCase(value, "tcp")) {
        return KeyError(key, absl::StrCat("unsupported transport type '", value, "' (only tcp)"));
      }
      trid.trtype = "TCP";
    } else if (key == "adrfam") {
      if (absl::EqualsIgnoreCase(value, "ipv4")) {
        trid.adrfam = AddressFamily::kIpv4;
      } else if (absl::EqualsIgnoreCase(value, "ipv6")) {
        trid.adrfam = AddressFamily::kIpv6;
      } else {
        return KeyError(key, absl::StrCat("unsupported address family '", value, "' (ipv4 or ipv6)"));
      }
      have_adrfam = true;
    } else if (key == "traddr") {
      if (value.size() > 255) return KeyError(key, "longer than 255 bytes");
      trid.traddr = std::string(value);
    } else if (key == "trsvcid") {
      uint32_t port = 0;
      if (!absl::SimpleAtoi(value, &port) || port == 0 || port > 65535) {
        return KeyError(key, absl::StrCat("'", value, "' is not a port number (1-65535)"));
      }
      trid.trsvcid = std::to_string(port);
    } else if (key == "subnqn") {
      if (absl::Status s = ValidateNqn(value); !s.ok()) return KeyError(key, s.message());
      trid.subnqn = std::string(value);
    } else if (key == "hostnqn") {
      if (absl::Status s = ValidateNqn(value); !s.ok()) return KeyError(key, s.message());
      trid.hostnqn = std::string(value);
    } else if (key == "hostid") {
      auto uuid = Uuid::Parse(value);
      if (!uuid.ok()) uuid = Uuid::ParseHex(value);
      if (!uuid.ok()) return KeyError(key, "not a UUID");
      trid.hostid = *uuid;
      have_hostid = true;
    } else if (key == "hostaddr") {
      trid.hostaddr = std::string(value);
    } else if (key == "hostsvcid") {
      uint32_t port = 0;
      if (!absl::SimpleAtoi(value, &port) || port > 65535) return KeyError(key, "not a port number");
      trid.hostsvcid = std::string(value);
    } else if (key == "ns") {
      uint32_t nsid = 0;
      if (!absl::SimpleAtoi(value, &nsid) || nsid == 0 || nsid == 0xffffffffu) {
        return KeyError(key, "not a namespace ID");
      }
      trid.nsid = nsid;
    } else if (key == "priority") {
      int priority = 0;
      if (!absl::SimpleAtoi(value, &priority)) return KeyError(key, "not a number");
    } else {
      return KeyError(key, "unknown key");
    }
  }

  if (trid.traddr.empty()) return KeyError("traddr", "missing (required)");
  if (!have_adrfam && trid.traddr.find(':') != std::string::npos) trid.adrfam = AddressFamily::kIpv6;
  if (trid.hostnqn.empty()) trid.hostnqn = DefaultHostNqn(sources);
  if (!have_hostid) {
    std::optional<Uuid> from_nqn = HostIdOf(trid.hostnqn);
    absl::StatusOr<Uuid> uuid = from_nqn ? absl::StatusOr<Uuid>(*from_nqn)
                                         : Uuid::Parse(ReadFirstLine(sources.hostid_file));
    trid.hostid = uuid.ok() ? *uuid : Uuid::Generate();
  }
  return trid;
}

std::optional<Uuid> HostIdOf(absl::string_view hostnqn) {
  if (!absl::ConsumePrefix(&hostnqn, kUuidNqnPrefix)) return std::nullopt;
  auto uuid = Uuid::Parse(hostnqn);
  if (!uuid.ok()) return std::nullopt;
  return *uuid;
}

}  // namespace smad::nvme::host
