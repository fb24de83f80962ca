#pragma once

// The pure half of the discovery service (discovery_service.h): checking the entries of a discovery log
// page that came from the network, and deciding which controllers to attach and detach when a new log
// arrives. No I/O and no clock: everything here is a function of its arguments, so it is unit tested
// and fuzzed directly.
//
// Value types and free functions; thread compatible.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nvme/host/identify.h"

namespace smad::tgt {

// One usable NVMe/TCP path from a discovery log entry: where to connect and which subsystem to ask for.
struct DiscoveryPath {
  bool ipv6 = false;
  std::string traddr;
  std::string trsvcid;
  std::string subnqn;

  // "IPv4 127.0.0.1:4420 nqn..." for logs and map keys.
  std::string Key() const;
  bool operator==(const DiscoveryPath& other) const = default;
};

// A log page split into what the service uses. Entries failing ValidateDiscoveryEntry are counted and
// dropped; duplicates (the same path twice) are kept once, in first-seen order.
struct ClassifiedLog {
  std::vector<DiscoveryPath> subsystems;  // subtype NVM subsystem
  std::vector<DiscoveryPath> referrals;   // subtypes referral and current discovery subsystem
  size_t invalid = 0;
  // The first few reasons (at most `max_reasons` given to ClassifyDiscoveryLog), "entry N: why".
  std::vector<std::string> reasons;
};

// Checks an entry received from a remote discovery controller before anything acts on it: transport
// TCP; address family IPv4 or IPv6 with TRADDR a numeric address of that family; TRSVCID a decimal port
// 1-65535; SUBNQN a valid NQN (NVM entries: not the discovery NQN); text fields padded with NUL or
// space only; subtype one of referral, NVM subsystem, current discovery subsystem. InvalidArgument names
// the first rule broken.
absl::Status ValidateDiscoveryEntry(const nvme::host::DiscoveryLogEntry& entry);

ClassifiedLog ClassifyDiscoveryLog(const nvme::host::DiscoveryLog& log, size_t max_reasons = 8);

// A controller a discovery service attached (or is attaching) for one path.
struct DiscoveredController {
  std::string name;
  DiscoveryPath path;
};

// A path whose attach failed: retried with the same controller name once `retry_at_ns` passed.
struct FailedAttach {
  std::string name;
  uint64_t retry_at_ns = 0;
};

// What one discovery round does. Detaches run first, then attaches.
struct DiscoveryPlan {
  std::vector<std::string> detach;                // controller names whose path left the log
  std::vector<DiscoveredController> attach;       // new controllers (name, path)
  std::vector<DiscoveredController> keep;         // still-listed controllers, unchanged
  // Listed paths to a subsystem that already has a controller (here or in another service): SPDK adds
  // them to that controller as further multipath trids; smad-tgt keeps one path per subsystem and
  // attaches one of these (under the same name) when the controller's own path leaves the log.
  std::vector<DiscoveryPath> standby;
  // Listed subsystem paths left out because the service reached `max_controllers`.
  size_t over_limit = 0;
};

struct DiscoveryPlanInput {
  std::string service_name;
  const std::vector<DiscoveredController>* current = nullptr;  // this service's controllers
  const std::vector<DiscoveryPath>* listed = nullptr;          // ClassifiedLog::subsystems
  const std::map<std::string, FailedAttach>* failed = nullptr; // by DiscoveryPath::Key()
  // The controller another discovery service holds for a subsystem NQN, if any.
  std::function<std::optional<std::string>(const std::string& subnqn)> held_elsewhere;
  uint64_t now_ns = 0;
  size_t max_controllers = 4096;
};

// Decides a round. A new subsystem gets the controller "<service name><index>" with `*next_index`
// counting up per service (SPDK's naming); a failed path keeps the name it was given; a subsystem whose
// controller is being detached because its path left, but which is still listed through another path,
// is re-attached through that path under the same name.
DiscoveryPlan PlanDiscoveryRound(const DiscoveryPlanInput& input, uint32_t* next_index);

}  // namespace smad::tgt
