#include "tgt/bdev/bdev_manager.h"

#include <algorithm>
#include <atomic>

#include "common/status.h"
#include "spdlog/spdlog.h"
#include "tgt/bdev/qos.h"

namespace smad::tgt {

BdevDesc::~BdevDesc() { manager_.CloseDesc(this); }

BdevManager::BdevManager(Reactor& control, ReactorSet& reactors) : control_(control), reactors_(reactors) {
  SetBdevManagerForChannels(this);
}

BdevManager::~BdevManager() {
  for (auto& waiter : waiters_) control_.CancelTimer(waiter->timer);
  SetBdevManagerForChannels(nullptr);
}

absl::Status BdevManager::Register(std::unique_ptr<Bdev> bdev) {
  for (const auto& existing : bdevs_) {
    if (existing->name() == bdev->name() || existing->uuid() == bdev->uuid()) {
      return ErrnoStatus(EEXIST);
    }
    for (const auto& alias : existing->aliases()) {
      if (alias == bdev->name()) return ErrnoStatus(EEXIST);
    }
  }
  Bdev* raw = bdev.get();
  bdevs_.push_back(std::move(bdev));
  // Wake bdev_get_bdevs callers waiting for this name.
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    Waiter& w = **it;
    bool match = w.name == raw->name() ||
                 std::find(raw->aliases().begin(), raw->aliases().end(), w.name) != raw->aliases().end();
    if (match) {
      control_.CancelTimer(w.timer);
      auto done = std::move(w.done);
      it = waiters_.erase(it);
      done(raw);
    } else {
      ++it;
    }
  }
  return absl::OkStatus();
}

Bdev* BdevManager::Find(const std::string& name) const {
  for (const auto& bdev : bdevs_) {
    if (bdev->removing_) continue;
    if (bdev->name() == name) return bdev.get();
    for (const auto& alias : bdev->aliases()) {
      if (alias == name) return bdev.get();
    }
  }
  return nullptr;
}

std::vector<Bdev*> BdevManager::List() const {
  std::vector<Bdev*> out;
  for (const auto& bdev : bdevs_) {
    if (!bdev->removing_) out.push_back(bdev.get());
  }
  return out;
}

absl::StatusOr<std::unique_ptr<BdevDesc>> BdevManager::Open(const std::string& name,
                                                            absl::AnyInvocable<void()> on_remove) {
  Bdev* bdev = Find(name);
  if (bdev == nullptr) return ErrnoStatus(ENODEV);
  auto desc = std::unique_ptr<BdevDesc>(new BdevDesc(*this, *bdev, std::move(on_remove)));
  ++bdev->open_descriptors_;
  descs_[bdev->id()].push_back(desc.get());
  return desc;
}

void BdevManager::CloseDesc(BdevDesc* desc) {
  Bdev* bdev = desc->bdev_;
  auto& list = descs_[bdev->id()];
  list.erase(std::remove(list.begin(), list.end(), desc), list.end());
  if (list.empty()) descs_.erase(bdev->id());
  --bdev->open_descriptors_;
  if (bdev->removing_) MaybeFinishDelete(bdev);
}

void BdevManager::Unregister(const std::string& name, const char* product, Done done) {
  Bdev* bdev = Find(name);
  if (bdev == nullptr || (product != nullptr && std::string(bdev->product_name()) != product)) {
    done(ErrnoStatus(ENODEV));
    return;
  }
  bdev->removing_ = true;
  deleting_[bdev->id()].waiters.push_back(std::move(done));
  // Hot-remove: tell every holder. They close asynchronously (an NVMe-oF namespace pauses its
  // subsystem first), and CloseDesc re-checks.
  auto it = descs_.find(bdev->id());
  if (it != descs_.end()) {
    std::vector<BdevDesc*> holders = it->second;
    for (BdevDesc* desc : holders) {
      if (desc->on_remove_) {
        auto cb = std::move(desc->on_remove_);
        desc->on_remove_ = nullptr;
        cb();
      }
    }
  }
  DisableQosForDelete(bdev->id());
  MaybeFinishDelete(bdev);
}

void BdevManager::DisableQosForDelete(uint64_t bdev_id) {
  Bdev* bdev = nullptr;
  for (auto& b : bdevs_) {
    if (b->id() == bdev_id) bdev = b.get();
  }
  if (bdev == nullptr) return;
  {
    absl::MutexLock lock(&bdev->qos_mutex_);
    if (bdev->qos_ == nullptr) return;
  }
  // The limiter holds a channel, which would keep the deletion waiting: stop it first.
  SetQos(*bdev, QosLimits{}, [this, bdev_id](absl::Status status) {
    if (!status.ok()) {  // another change in progress: retry shortly
      control_.RunAfter(1'000'000, [this, bdev_id] { DisableQosForDelete(bdev_id); });
    }
  });
}

void BdevManager::OnChannelRetired(uint64_t bdev_id, const IoStats& stats) {
  for (auto& bdev : bdevs_) {
    if (bdev->id() != bdev_id) continue;
    bdev->retired_stats_.Add(stats);
    bdev->live_channels_.fetch_sub(1);
    if (bdev->removing_) MaybeFinishDelete(bdev.get());
    return;
  }
}

void BdevManager::MaybeFinishDelete(Bdev* bdev) {
  if (bdev->open_descriptors_ > 0) return;
  if (bdev->live_channels_.load() > 0) return;  // a reactor still holds a channel; it will report
  auto pending = deleting_.find(bdev->id());
  if (pending == deleting_.end()) return;
  std::vector<Done> waiters = std::move(pending->second.waiters);
  deleting_.erase(pending);
  auto it = std::find_if(bdevs_.begin(), bdevs_.end(), [bdev](const auto& b) { return b.get() == bdev; });
  std::unique_ptr<Bdev> owned = std::move(*it);
  bdevs_.erase(it);
  owned->OnUnregistered();
  spdlog::info("bdev {} deleted", owned->name());
  owned.reset();
  for (auto& waiter : waiters) waiter(absl::OkStatus());
}

void BdevManager::WaitFor(const std::string& name, uint64_t timeout_ms,
                          absl::AnyInvocable<void(absl::StatusOr<Bdev*>)> done) {
  if (Bdev* bdev = Find(name)) {
    done(bdev);
    return;
  }
  if (timeout_ms == 0) {
    done(ErrnoStatus(ENODEV));
    return;
  }
  auto waiter = std::make_unique<Waiter>();
  Waiter* raw = waiter.get();
  waiter->name = name;
  waiter->done = std::move(done);
  waiter->timer = control_.RunAfter(timeout_ms * 1'000'000, [this, raw] {
    auto it = std::find_if(waiters_.begin(), waiters_.end(), [raw](const auto& w) { return w.get() == raw; });
    if (it == waiters_.end()) return;
    auto cb = std::move((*it)->done);
    waiters_.erase(it);
    cb(ErrnoStatus(ETIMEDOUT));
  });
  waiters_.push_back(std::move(waiter));
}

Reactor& BdevManager::PickQosReactor(const Bdev& bdev) {
  return reactors_.reactor(bdev.id() % reactors_.size());
}

void BdevManager::SetQos(Bdev& bdev, const QosLimits& limits, Done done) {
  if (bdev.qos_change_in_progress_) {
    done(ErrnoStatus(EAGAIN));
    return;
  }
  std::shared_ptr<Qos> current;
  {
    absl::MutexLock lock(&bdev.qos_mutex_);
    current = bdev.qos_;
  }
  uint64_t bdev_id = bdev.id();
  auto finish = [this, bdev_id, limits, done = std::move(done)](bool apply) mutable {
    for (auto& b : bdevs_) {
      if (b->id() == bdev_id) {
        b->qos_change_in_progress_ = false;
        if (apply) b->qos_limits_ = limits;
      }
    }
    done(absl::OkStatus());
  };
  if (current == nullptr && !limits.any()) {
    bdev.qos_limits_ = limits;
    finish(true);
    return;
  }
  bdev.qos_change_in_progress_ = true;
  if (current != nullptr && limits.any()) {
    // Update in place on the QoS reactor.
    current->reactor().Post([this, current, limits, finish = std::move(finish)]() mutable {
      current->SetLimits(limits);
      control_.Post([finish = std::move(finish)]() mutable { finish(true); });
    });
    return;
  }
  if (current == nullptr) {
    // Enable: start the limiter on its reactor, then attach every existing channel to it.
    auto qos = std::make_shared<Qos>(bdev, PickQosReactor(bdev), limits);
    qos->reactor().Post([this, qos, &bdev, finish = std::move(finish)]() mutable {
      qos->Start();
      control_.Post([this, qos, &bdev, finish = std::move(finish)]() mutable {
        {
          absl::MutexLock lock(&bdev.qos_mutex_);
          bdev.qos_ = qos;
        }
        uint64_t id = bdev.id();
        ForEachReactor(
            [id, qos](Reactor&) {
              if (BdevChannel* ch = FindChannelOnThisReactor(id)) ch->qos_ = qos;
            },
            [finish = std::move(finish)]() mutable { finish(true); });
      });
    });
    return;
  }
  // Disable: detach every channel first, then drain and stop the limiter on its reactor.
  {
    absl::MutexLock lock(&bdev.qos_mutex_);
    bdev.qos_ = nullptr;
  }
  ForEachReactor(
      [bdev_id](Reactor&) {
        if (BdevChannel* ch = FindChannelOnThisReactor(bdev_id)) ch->qos_ = nullptr;
      },
      [this, current, finish = std::move(finish)]() mutable {
        current->reactor().Post([this, current, finish = std::move(finish)]() mutable {
          current->Stop();
          control_.Post([finish = std::move(finish)]() mutable { finish(true); });
        });
      });
}

void BdevManager::GatherStats(std::vector<Bdev*> bdevs, absl::AnyInvocable<void(std::vector<IoStats>)> done) {
  struct State {
    std::vector<uint64_t> ids;
    std::vector<IoStats> totals;
    absl::Mutex mu;
  };
  auto state = std::make_shared<State>();
  for (Bdev* bdev : bdevs) {
    state->ids.push_back(bdev->id());
    state->totals.push_back(bdev->retired_stats_);
  }
  ForEachReactor(
      [state](Reactor&) {
        std::vector<IoStats> local(state->ids.size());
        for (size_t i = 0; i < state->ids.size(); ++i) {
          if (BdevChannel* ch = FindChannelOnThisReactor(state->ids[i])) local[i] = ch->stats();
        }
        absl::MutexLock lock(&state->mu);
        for (size_t i = 0; i < local.size(); ++i) state->totals[i].Add(local[i]);
      },
      [state, done = std::move(done)]() mutable {
        absl::MutexLock lock(&state->mu);
        done(std::move(state->totals));
      });
}

void BdevManager::ForEachReactor(std::function<void(Reactor&)> fn, absl::AnyInvocable<void() &&> done) {
  struct State {
    std::atomic<size_t> remaining;
    absl::AnyInvocable<void() &&> done;
  };
  auto state = std::make_shared<State>();
  state->remaining = reactors_.size();
  state->done = std::move(done);
  auto shared_fn = std::make_shared<std::function<void(Reactor&)>>(std::move(fn));
  for (size_t i = 0; i < reactors_.size(); ++i) {
    Reactor& r = reactors_.reactor(i);
    r.Post([this, &r, state, shared_fn] {
      (*shared_fn)(r);
      if (state->remaining.fetch_sub(1) == 1) {
        control_.Post([state] { std::move(state->done)(); });
      }
    });
  }
}

void BdevManager::UnregisterAll(absl::AnyInvocable<void() &&> done) {
  std::vector<std::string> names;
  for (const auto& bdev : bdevs_) {
    if (!bdev->removing_) names.push_back(bdev->name());
  }
  if (names.empty()) {
    std::move(done)();
    return;
  }
  auto remaining = std::make_shared<size_t>(names.size());
  auto shared_done = std::make_shared<absl::AnyInvocable<void() &&>>(std::move(done));
  for (const auto& name : names) {
    Unregister(name, nullptr, [remaining, shared_done](absl::Status) {
      if (--*remaining == 0) std::move (*shared_done)();
    });
  }
}

}  // namespace smad::tgt
