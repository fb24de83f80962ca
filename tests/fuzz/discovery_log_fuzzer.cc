// Fuzzes what the discovery service does with a discovery log page received from the network: the
// header and entry parsers (nvme/host/identify.h), the entry checks and classification, and round
// planning (tgt/bdev_nvme/discovery_log.h). Besides "never crashes or reads out of bounds", it checks
// that:
//   - every entry is either classified (as a subsystem path or a referral), a duplicate, or invalid;
//   - every classified path satisfies the rules the service relies on (numeric address, port, NQN);
//   - planning the same log twice keeps every controller of the first round and attaches nothing new,
//     and controller names are unique.
//
// Input layout: a discovery log page as a controller returns it (1024-byte header, then 1024-byte
// records); records beyond the input are ignored, a partial last record is dropped.
#include <arpa/inet.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <string>

#include "absl/types/span.h"
#include "common/nqn.h"
#include "nvme/host/identify.h"
#include "nvme/spec.h"
#include "tgt/bdev_nvme/discovery_log.h"

namespace smad::tgt {
namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

void CheckPath(const DiscoveryPath& p) {
  unsigned char buffer[16];
  Check(inet_pton(p.ipv6 ? AF_INET6 : AF_INET, p.traddr.c_str(), buffer) == 1);
  Check(!p.trsvcid.empty() && p.trsvcid.size() <= 5);
  Check(ValidateNqn(p.subnqn).ok());
}

}  // namespace
}  // namespace smad::tgt

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace smad;
  using namespace smad::tgt;
  absl::Span<const uint8_t> input(data, size);
  auto header = nvme::host::ParseDiscoveryHeader(input);
  if (!header.ok()) return 0;
  nvme::host::DiscoveryLog log = *header;
  if (size < nvme::kDiscoveryHeaderSize) return 0;
  size_t available = (size - nvme::kDiscoveryHeaderSize) / nvme::kDiscoveryEntrySize;
  size_t count = static_cast<size_t>(std::min<uint64_t>(log.numrec, available));
  for (size_t i = 0; i < count; ++i) {
    auto entry = nvme::host::ParseDiscoveryEntry(
        input.subspan(nvme::kDiscoveryHeaderSize + i * nvme::kDiscoveryEntrySize, nvme::kDiscoveryEntrySize));
    Check(entry.ok());
    log.entries.push_back(*entry);
  }

  ClassifiedLog classified = ClassifyDiscoveryLog(log);
  Check(classified.subsystems.size() + classified.referrals.size() + classified.invalid <= log.entries.size());
  size_t valid = 0;
  for (const auto& e : log.entries) valid += ValidateDiscoveryEntry(e).ok() ? 1 : 0;
  Check(valid + classified.invalid == log.entries.size());
  for (const DiscoveryPath& p : classified.subsystems) {
    CheckPath(p);
    Check(p.subnqn != kDiscoveryNqn);
  }
  for (const DiscoveryPath& p : classified.referrals) CheckPath(p);

  std::vector<DiscoveredController> current;
  std::map<std::string, FailedAttach> failed;
  DiscoveryPlanInput in;
  in.service_name = "fuzz";
  in.current = &current;
  in.listed = &classified.subsystems;
  in.failed = &failed;
  in.max_controllers = 64;
  uint32_t next = 0;
  DiscoveryPlan first = PlanDiscoveryRound(in, &next);
  Check(first.detach.empty() && first.keep.empty());
  std::set<std::string> names;
  for (const auto& c : first.attach) Check(names.insert(c.name).second);
  current = first.attach;
  DiscoveryPlan second = PlanDiscoveryRound(in, &next);
  Check(second.detach.empty());
  Check(second.keep.size() == first.attach.size());
  Check(second.attach.empty());
  return 0;
}
