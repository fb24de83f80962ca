#include "tgt/nvmf/poll_group.h"

#include <algorithm>
#include <cstdio>

namespace smad::tgt {

PollGroup::~PollGroup() {
  for (auto& [id, entry] : subsystems_) {
    for (auto& ns : entry->namespaces) ns.bdev->ReleaseChannel(ns.channel);
  }
}

std::string PollGroup::name() const {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "nvmf_tgt_poll_group_%03d", index_);
  return buf;
}

void PollGroup::Pause(uint32_t subsystem_id, absl::AnyInvocable<void() &&> paused) {
  auto& entry = subsystems_[subsystem_id];
  if (!entry) entry = std::make_unique<Entry>();
  entry->paused = true;
  if (entry->outstanding == 0) {
    std::move(paused)();
  } else {
    entry->on_paused = std::move(paused);
  }
}

void PollGroup::Apply(std::shared_ptr<const SubsystemSnapshot> snapshot) {
  auto& entry = subsystems_[snapshot->subsystem_id];
  if (!entry) entry = std::make_unique<Entry>();
  std::vector<NsChannel> next;
  next.reserve(snapshot->namespaces.size());
  for (const auto& ns : snapshot->namespaces) {
    auto it = std::find_if(entry->namespaces.begin(), entry->namespaces.end(),
                           [&](const NsChannel& c) { return c.nsid == ns.nsid && c.bdev == ns.bdev; });
    if (it != entry->namespaces.end()) {
      next.push_back(*it);
      it->channel = nullptr;  // moved
    } else {
      next.push_back({ns.nsid, ns.bdev, ns.bdev->AcquireChannel()});
    }
  }
  for (auto& old : entry->namespaces) {
    if (old.channel != nullptr) old.bdev->ReleaseChannel(old.channel);
  }
  std::sort(next.begin(), next.end(), [](const NsChannel& a, const NsChannel& b) { return a.nsid < b.nsid; });
  entry->namespaces = std::move(next);
  entry->snapshot = std::move(snapshot);
  entry->paused = false;
  std::vector<absl::AnyInvocable<void() &&>> waiting;
  waiting.swap(entry->waiting);
  for (auto& fn : waiting) std::move(fn)();
}

void PollGroup::Remove(uint32_t subsystem_id) {
  auto it = subsystems_.find(subsystem_id);
  if (it == subsystems_.end()) return;
  for (auto& ns : it->second->namespaces) ns.bdev->ReleaseChannel(ns.channel);
  subsystems_.erase(it);  // commands still waiting are dropped with it; their qpairs see the removal
}

bool PollGroup::IsActive(uint32_t subsystem_id) const {
  auto it = subsystems_.find(subsystem_id);
  return it != subsystems_.end() && !it->second->paused;
}

void PollGroup::WhenActive(uint32_t subsystem_id, absl::AnyInvocable<void() &&> fn) {
  auto it = subsystems_.find(subsystem_id);
  if (it == subsystems_.end()) return;
  if (!it->second->paused) {
    std::move(fn)();
  } else {
    it->second->waiting.push_back(std::move(fn));
  }
}

const PollGroup::NsChannel* PollGroup::FindNamespace(uint32_t subsystem_id, uint32_t nsid) const {
  auto it = subsystems_.find(subsystem_id);
  if (it == subsystems_.end()) return nullptr;
  const auto& list = it->second->namespaces;
  auto pos = std::lower_bound(list.begin(), list.end(), nsid,
                              [](const NsChannel& c, uint32_t id) { return c.nsid < id; });
  return pos != list.end() && pos->nsid == nsid ? &*pos : nullptr;
}

const SubsystemSnapshot* PollGroup::Snapshot(uint32_t subsystem_id) const {
  auto it = subsystems_.find(subsystem_id);
  return it == subsystems_.end() ? nullptr : it->second->snapshot.get();
}

void PollGroup::IoStarted(uint32_t subsystem_id) {
  auto it = subsystems_.find(subsystem_id);
  if (it != subsystems_.end()) ++it->second->outstanding;
  ++stats_.pending_bdev_io;
}

void PollGroup::IoFinished(uint32_t subsystem_id) {
  --stats_.pending_bdev_io;
  ++stats_.completed_nvme_io;
  auto it = subsystems_.find(subsystem_id);
  if (it == subsystems_.end()) return;
  Entry& entry = *it->second;
  if (--entry.outstanding == 0 && entry.paused && entry.on_paused) {
    auto cb = std::move(entry.on_paused);
    entry.on_paused = nullptr;
    std::move(cb)();
  }
}

}  // namespace smad::tgt
