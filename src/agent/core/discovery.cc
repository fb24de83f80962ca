#include "agent/core/discovery.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/devices/target_errors.h"
#include "agent/spdk/spdk_client.h"
#include "spdlog/spdlog.h"

namespace smad::agent {
namespace {

// SPDK's ENOENT answer to bdev_nvme_stop_discovery for an unknown name.
constexpr int kSpdkNoSuchEntry = -2;

std::optional<DiscoveryEndpoint> ParseTrid(const Json& trid) {
  if (!trid.is_object()) return std::nullopt;
  auto text = [&trid](const char* key) -> std::string {
    auto it = trid.find(key);
    return it != trid.end() && it->is_string() ? absl::AsciiStrToLower(it->get<std::string>()) : std::string();
  };
  DiscoveryEndpoint ep{text("trtype"), text("adrfam"), text("traddr"), text("trsvcid")};
  if (ep.trtype.empty() || ep.traddr.empty() || ep.trsvcid.empty()) return std::nullopt;
  return ep;
}

bool SameAddress(const DiscoveryEndpoint& a, const DiscoveryEndpoint& b) {
  return absl::EqualsIgnoreCase(a.trtype, b.trtype) && absl::EqualsIgnoreCase(a.adrfam, b.adrfam) &&
         absl::EqualsIgnoreCase(a.traddr, b.traddr) && a.trsvcid == b.trsvcid;
}

}  // namespace

std::vector<TargetDiscoveryService> ParseDiscoveryInfo(const Json& result) {
  std::vector<TargetDiscoveryService> services;
  if (!result.is_array()) return services;
  for (const Json& entry : result) {
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string()) continue;
    auto trid = ParseTrid(entry.value("trid", Json()));
    if (!trid) continue;
    TargetDiscoveryService service{entry["name"].get<std::string>(), *trid, {}};
    if (entry.contains("referrals") && entry["referrals"].is_array()) {
      for (const Json& referral : entry["referrals"]) {
        if (!referral.is_object()) continue;
        if (auto r = ParseTrid(referral.value("trid", Json()))) service.referrals.push_back(*r);
      }
    }
    services.push_back(std::move(service));
  }
  return services;
}

std::optional<std::string> FindDiscoveryService(const std::vector<TargetDiscoveryService>& services,
                                                const DiscoveryEndpoint& endpoint) {
  for (const TargetDiscoveryService& s : services) {
    if (SameAddress(s.trid, endpoint)) return s.name;
  }
  for (const TargetDiscoveryService& s : services) {
    for (const DiscoveryEndpoint& r : s.referrals) {
      if (SameAddress(r, endpoint)) return s.name;
    }
  }
  return std::nullopt;
}

absl::StatusOr<std::vector<TargetDiscoveryService>> DiscoveryClient::List() const {
  auto info = rpc_.Call("bdev_nvme_get_discovery_info");
  if (!info.ok()) return TargetFailure(info.status(), "Failed to retrieve discovery service status");
  return ParseDiscoveryInfo(*info);
}

absl::Status DiscoveryClient::Start(const std::string& name, const DiscoveryEndpoint& endpoint,
                                    const std::string& hostnqn) const {
  Json params = {{"name", name},
                 {"wait_for_attach", true},
                 {"attach_timeout_ms", attach_timeout_.count()},
                 {"hostnqn", hostnqn},
                 {"trtype", endpoint.trtype},
                 {"traddr", endpoint.traddr},
                 {"trsvcid", endpoint.trsvcid},
                 {"adrfam", endpoint.adrfam}};
  // The target waits up to attach_timeout for the attach; give the call that long plus the usual margin.
  auto started = rpc_.Call("bdev_nvme_start_discovery", params,
                           attach_timeout_ + std::chrono::seconds(10));
  if (!started.ok()) {
    spdlog::warn("discovery: starting service {} for {}:{}:{}: {}", name, endpoint.trtype, endpoint.traddr,
                 endpoint.trsvcid, started.status().ToString());
    return TargetFailure(started.status(), "Failed to start discovery");
  }
  return absl::OkStatus();
}

absl::Status DiscoveryClient::Stop(const std::string& name) const {
  auto stopped = rpc_.Call("bdev_nvme_stop_discovery", Json{{"name", name}});
  if (stopped.ok()) return absl::OkStatus();
  if (auto error = SpdkErrorOf(stopped.status()); error && error->code == kSpdkNoSuchEntry) return absl::OkStatus();
  return TargetFailure(stopped.status(), absl::StrCat("Failed to stop discovery service ", name));
}

}  // namespace smad::agent
