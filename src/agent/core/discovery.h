#pragma once

// The target's NVMe-oF discovery services as the volume manager uses them (SPDK's bdev_nvme_*_discovery
// methods). A remote volume names discovery endpoints; each endpoint is served by one discovery service
// on the target, found by its address or among the referrals of a running service, or started anew.
//
// Thread safety: stateless apart from the TargetRpc reference; callers serialise the decisions that
// depend on the target's list (Agent holds its discovery mutex).

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/core/volume.h"
#include "agent/spdk/target_rpc.h"

namespace smad::agent {

// A discovery service running on the target, as bdev_nvme_get_discovery_info lists it.
struct TargetDiscoveryService {
  std::string name;
  DiscoveryEndpoint trid;
  std::vector<DiscoveryEndpoint> referrals;
};

// Parses bdev_nvme_get_discovery_info's result; entries that are not well formed are skipped.
std::vector<TargetDiscoveryService> ParseDiscoveryInfo(const Json& result);

// The service serving `endpoint`: the one whose address matches (trtype, adrfam, traddr, trsvcid,
// case-insensitively), else the first one listing it among its referrals.
std::optional<std::string> FindDiscoveryService(const std::vector<TargetDiscoveryService>& services,
                                                const DiscoveryEndpoint& endpoint);

class DiscoveryClient {
 public:
  // `attach_timeout`: SMA's discovery_timeout (sent as attach_timeout_ms with wait_for_attach).
  DiscoveryClient(TargetRpc& rpc, std::chrono::milliseconds attach_timeout)
      : rpc_(rpc), attach_timeout_(attach_timeout) {}

  // Errors: Internal "Failed to retrieve discovery service status"; Unavailable/DeadlineExceeded.
  absl::StatusOr<std::vector<TargetDiscoveryService>> List() const;
  // bdev_nvme_start_discovery with wait_for_attach. Errors: Internal "Failed to start discovery" (the
  // target's answer is logged); Unavailable/DeadlineExceeded when the target cannot be reached.
  absl::Status Start(const std::string& name, const DiscoveryEndpoint& endpoint, const std::string& hostnqn) const;
  // bdev_nvme_stop_discovery; a service that is already gone is success.
  absl::Status Stop(const std::string& name) const;

 private:
  TargetRpc& rpc_;
  std::chrono::milliseconds attach_timeout_;
};

}  // namespace smad::agent
