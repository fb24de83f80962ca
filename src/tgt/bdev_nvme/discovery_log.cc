#include "tgt/bdev_nvme/discovery_log.h"

#include <arpa/inet.h>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/nqn.h"
#include "nvme/spec.h"

namespace smad::tgt {
namespace {

bool IsPort(const std::string& text) {
  if (text.empty() || text.size() > 5) return false;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  uint32_t port = 0;
  return absl::SimpleAtoi(text, &port) && port >= 1 && port <= 65535;
}

bool IsNumericAddress(bool ipv6, const std::string& text) {
  unsigned char buffer[sizeof(struct in6_addr)];
  return inet_pton(ipv6 ? AF_INET6 : AF_INET, text.c_str(), buffer) == 1;
}

}  // namespace

std::string DiscoveryPath::Key() const {
  return absl::StrCat(ipv6 ? "IPv6 " : "IPv4 ", traddr, ":", trsvcid, " ", subnqn);
}

absl::Status ValidateDiscoveryEntry(const nvme::host::DiscoveryLogEntry& e) {
  auto invalid = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (e.trtype != nvme::kTrtypeTcp) return invalid("transport type ", e.trtype, " is not TCP");
  if (e.subtype != nvme::kSubtypeNvm && e.subtype != nvme::kSubtypeDiscoveryReferral &&
      e.subtype != nvme::kSubtypeCurrentDiscovery) {
    return invalid("unknown subtype ", e.subtype);
  }
  if (e.adrfam != nvme::kAdrfamIpv4 && e.adrfam != nvme::kAdrfamIpv6) {
    return invalid("address family ", e.adrfam, " is not IPv4 or IPv6");
  }
  if (!e.padding_ok) return invalid("a text field has bytes after its padding");
  if (!IsNumericAddress(e.adrfam == nvme::kAdrfamIpv6, e.traddr)) {
    return invalid("TRADDR '", absl::CHexEscape(e.traddr), "' is not a numeric ",
                   e.adrfam == nvme::kAdrfamIpv6 ? "IPv6" : "IPv4", " address");
  }
  if (!IsPort(e.trsvcid)) return invalid("TRSVCID '", absl::CHexEscape(e.trsvcid), "' is not a port number");
  if (absl::Status s = ValidateNqn(e.subnqn); !s.ok()) {
    return invalid("SUBNQN '", absl::CHexEscape(e.subnqn), "': ", s.message());
  }
  if (e.subtype == nvme::kSubtypeNvm && e.subnqn == kDiscoveryNqn) {
    return invalid("an NVM subsystem entry names the discovery NQN");
  }
  return absl::OkStatus();
}

ClassifiedLog ClassifyDiscoveryLog(const nvme::host::DiscoveryLog& log, size_t max_reasons) {
  ClassifiedLog out;
  absl::flat_hash_set<std::string> seen_subsystems, seen_referrals;
  for (size_t i = 0; i < log.entries.size(); ++i) {
    const nvme::host::DiscoveryLogEntry& e = log.entries[i];
    if (absl::Status s = ValidateDiscoveryEntry(e); !s.ok()) {
      ++out.invalid;
      if (out.reasons.size() < max_reasons) out.reasons.push_back(absl::StrCat("entry ", i, ": ", s.message()));
      continue;
    }
    DiscoveryPath path{e.adrfam == nvme::kAdrfamIpv6, e.traddr, e.trsvcid, e.subnqn};
    bool nvm = e.subtype == nvme::kSubtypeNvm;
    auto& seen = nvm ? seen_subsystems : seen_referrals;
    if (!seen.insert(path.Key()).second) continue;
    (nvm ? out.subsystems : out.referrals).push_back(std::move(path));
  }
  return out;
}

DiscoveryPlan PlanDiscoveryRound(const DiscoveryPlanInput& in, uint32_t* next_index) {
  DiscoveryPlan plan;
  const std::vector<DiscoveredController> no_controllers;
  const std::vector<DiscoveryPath> no_paths;
  const std::map<std::string, FailedAttach> no_failures;
  const auto& current = in.current ? *in.current : no_controllers;
  const auto& listed = in.listed ? *in.listed : no_paths;
  const auto& failed = in.failed ? *in.failed : no_failures;

  absl::flat_hash_set<std::string> listed_keys, kept_keys;
  for (const DiscoveryPath& p : listed) listed_keys.insert(p.Key());

  absl::flat_hash_map<std::string, std::string> held;   // subnqn -> controller kept or being attached
  absl::flat_hash_map<std::string, std::string> named;  // subnqn -> name to reuse (detached or failed)
  for (const DiscoveredController& c : current) {
    if (listed_keys.contains(c.path.Key())) {
      plan.keep.push_back(c);
      kept_keys.insert(c.path.Key());
      held[c.path.subnqn] = c.name;
    } else {
      plan.detach.push_back(c.name);
      named.emplace(c.path.subnqn, c.name);
    }
  }
  for (const DiscoveryPath& p : listed) {
    auto f = failed.find(p.Key());
    if (f != failed.end()) named.emplace(p.subnqn, f->second.name);
  }

  for (const DiscoveryPath& p : listed) {
    std::string key = p.Key();
    if (kept_keys.contains(key)) continue;
    if (held.contains(p.subnqn) || (in.held_elsewhere && in.held_elsewhere(p.subnqn))) {
      plan.standby.push_back(p);
      continue;
    }
    auto f = failed.find(key);
    if (f != failed.end() && f->second.retry_at_ns > in.now_ns) continue;
    if (plan.keep.size() + plan.attach.size() >= in.max_controllers) {
      ++plan.over_limit;
      continue;
    }
    std::string name;
    if (auto n = named.find(p.subnqn); n != named.end()) {
      name = n->second;
    } else {
      name = absl::StrCat(in.service_name, (*next_index)++);
    }
    held[p.subnqn] = name;
    plan.attach.push_back({std::move(name), p});
  }
  return plan;
}

}  // namespace smad::tgt
