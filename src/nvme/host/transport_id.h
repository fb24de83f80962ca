#pragma once

// The address of an NVMe over Fabrics controller as the initiator tools take it: SPDK's transport ID
// string form ("trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn..."), parsed into a value.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/uuid.h"

namespace smad::nvme::host {

inline constexpr char kDefaultHostNqnFile[] = "/etc/nvme/hostnqn";
inline constexpr char kDefaultHostIdFile[] = "/etc/nvme/hostid";
inline constexpr uint16_t kDefaultNvmeTcpPort = 4420;

enum class AddressFamily { kIpv4, kIpv6 };

// A parsed transport ID. Value type; thread compatible.
struct TransportId {
  std::string trtype = "TCP";  // only TCP is supported; kept for printing
  AddressFamily adrfam = AddressFamily::kIpv4;
  std::string traddr;                 // numeric address or host name
  std::string trsvcid = "4420";       // decimal port
  std::string subnqn;                 // subsystem NQN (default: the discovery NQN)
  std::string hostnqn;                // this host's NQN
  Uuid hostid;                        // Host Identifier sent in Connect data
  std::string hostaddr;               // optional source address to bind
  std::string hostsvcid;              // optional source port
  uint32_t nsid = 0;                  // SPDK perf's "ns:" key; 0 when absent

  // True when `subnqn` is the well-known discovery NQN.
  bool IsDiscovery() const;
  uint16_t port() const;  // trsvcid as a number (validated by the parser)
  // SPDK's form, e.g. "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn...".
  std::string ToString() const;
  // Short form for messages: "TCP 127.0.0.1:4420 nqn...".
  std::string Describe() const;
};

// Where the host identity defaults come from; tests point these at temporary files.
struct HostIdentitySources {
  std::string hostnqn_file = kDefaultHostNqnFile;
  std::string hostid_file = kDefaultHostIdFile;
};

// Parses SPDK's transport ID string: whitespace-separated `key:value` or `key=value` pairs (the first ':'
// or '=' separates; IPv6 addresses may contain more colons). Keys are case-insensitive: trtype, adrfam,
// traddr, trsvcid, subnqn, hostnqn, hostid, hostaddr, hostsvcid, ns, priority (accepted and ignored).
// Defaults: trtype tcp, adrfam from the address form, trsvcid 4420, subnqn the discovery NQN; hostnqn from
// `sources.hostnqn_file` when it exists, else "nqn.2014-08.org.nvmexpress:uuid:<random uuid>"; hostid the
// UUID inside a uuid-form hostnqn, else `sources.hostid_file`, else random.
// Errors: InvalidArgument whose message names the offending key (unknown key, missing value, duplicate,
// bad value, missing traddr).
absl::StatusOr<TransportId> ParseTransportId(absl::string_view text, const HostIdentitySources& sources = {});

// The UUID inside a uuid-form host NQN ("nqn.2014-08.org.nvmexpress:uuid:<uuid>"); nullopt otherwise.
std::optional<Uuid> HostIdOf(absl::string_view hostnqn);

// The host NQN this machine uses by default (see ParseTransportId). Never fails: falls back to a generated
// uuid-form NQN.
std::string DefaultHostNqn(const HostIdentitySources& sources = {});

}  // namespace smad::nvme::host
