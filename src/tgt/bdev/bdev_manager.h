#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "reactor/reactor.h"
#include "tgt/bdev/bdev.h"

namespace smad::tgt {

class BdevManager;

// An open handle on a bdev, the owner's promise to stop using it when told. Destroying it closes it.
// Thread safety: control thread only.
class BdevDesc {
 public:
  ~BdevDesc();
  BdevDesc(const BdevDesc&) = delete;
  BdevDesc& operator=(const BdevDesc&) = delete;
  Bdev& bdev() { return *bdev_; }

 private:
  friend class BdevManager;
  BdevDesc(BdevManager& manager, Bdev& bdev, absl::AnyInvocable<void()> on_remove)
      : manager_(manager), bdev_(&bdev), on_remove_(std::move(on_remove)) {}
  BdevManager& manager_;
  Bdev* bdev_;
  absl::AnyInvocable<void()> on_remove_;
};

// The registry of bdevs: names and aliases, opening, deletion with hot-remove, QoS configuration and
// statistics gathering. SPDK's bdev layer minus the examine machinery.
//
// Thread safety: every method runs on the control reactor's thread. Callbacks run there too.
class BdevManager {
 public:
  using Done = absl::AnyInvocable<void(absl::Status)>;

  BdevManager(Reactor& control, ReactorSet& reactors);
  ~BdevManager();
  BdevManager(const BdevManager&) = delete;
  BdevManager& operator=(const BdevManager&) = delete;

  // Takes ownership. Errors (errno payload): EEXIST when the name or UUID is taken.
  absl::Status Register(std::unique_ptr<Bdev> bdev);
  // By name or alias (UUID string); nullptr when absent or being deleted.
  Bdev* Find(const std::string& name_or_alias) const;
  // In registration order, without bdevs being deleted.
  std::vector<Bdev*> List() const;

  // Opens `name`. `on_remove` runs (once) when the bdev is being deleted; the owner must then destroy
  // the descriptor, after releasing its channels. Errors: ENODEV.
  absl::StatusOr<std::unique_ptr<BdevDesc>> Open(const std::string& name, absl::AnyInvocable<void()> on_remove);

  // Deletes a bdev: notifies every descriptor, waits until all are closed and every reactor released its
  // channel, then destroys it. `product` (e.g. "Malloc disk") restricts which module may be deleted;
  // nullptr allows any. Errors: ENODEV if absent or of another module. Once started, deletion always
  // completes: holders cannot refuse it.
  void Unregister(const std::string& name, const char* product, Done done);

  // Calls `done` with the bdev once `name` exists, or ETIMEDOUT after `timeout_ms`.
  void WaitFor(const std::string& name, uint64_t timeout_ms, absl::AnyInvocable<void(absl::StatusOr<Bdev*>)> done);

  // Applies QoS limits (already validated; zero fields mean unlimited). EAGAIN while a previous change
  // on the same bdev is in progress.
  void SetQos(Bdev& bdev, const QosLimits& limits, Done done);

  // Sums each bdev's counters over every reactor. `done` receives them in the order given.
  void GatherStats(std::vector<Bdev*> bdevs, absl::AnyInvocable<void(std::vector<IoStats>)> done);

  // Runs `fn` on every data reactor (in parallel), then `done` on the control reactor.
  void ForEachReactor(std::function<void(Reactor&)> fn, absl::AnyInvocable<void() &&> done);

  // Deletes every bdev (at shutdown), then `done`.
  void UnregisterAll(absl::AnyInvocable<void() &&> done);

  Reactor& control() { return control_; }
  ReactorSet& reactors() { return reactors_; }

 private:
  friend class BdevDesc;
  friend class Bdev;
  friend class BdevChannel;
  void CloseDesc(BdevDesc* desc);
  void MaybeFinishDelete(Bdev* bdev);
  void DisableQosForDelete(uint64_t bdev_id);
  void OnChannelRetired(uint64_t bdev_id, const IoStats& stats);
  Reactor& PickQosReactor(const Bdev& bdev);

  struct Pending {
    std::vector<Done> waiters;
  };
  struct Waiter {
    std::string name;
    uint64_t timer;
    absl::AnyInvocable<void(absl::StatusOr<Bdev*>)> done;
  };

  Reactor& control_;
  ReactorSet& reactors_;
  std::vector<std::unique_ptr<Bdev>> bdevs_;  // registration order
  absl::flat_hash_map<uint64_t, std::vector<BdevDesc*>> descs_;
  absl::flat_hash_map<uint64_t, Pending> deleting_;
  std::vector<std::unique_ptr<Waiter>> waiters_;
};

// Context passed to channels so they can report to the manager from any reactor. Set once at start.
void SetBdevManagerForChannels(BdevManager* manager);

}  // namespace smad::tgt
