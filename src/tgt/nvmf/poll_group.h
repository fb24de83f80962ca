#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "reactor/reactor.h"
#include "tgt/bdev/bdev.h"

namespace smad::tgt {

// The namespace table of one subsystem as published to poll groups. Immutable once published.
struct SubsystemSnapshot {
  uint32_t subsystem_id = 0;
  struct Ns {
    uint32_t nsid;
    Bdev* bdev;
    std::array<uint8_t, 16> uuid;
    std::array<uint8_t, 16> nguid;
    std::optional<uint64_t> eui64;
  };
  std::vector<Ns> namespaces;
};

// Counters reported by nvmf_get_stats, per poll group.
struct PollGroupStats {
  uint64_t admin_qpairs = 0, io_qpairs = 0;
  uint64_t current_admin_qpairs = 0, current_io_qpairs = 0, current_unassociated_qpairs = 0;
  uint64_t pending_bdev_io = 0, completed_nvme_io = 0;
};

// A reactor's view of the NVMe-oF target: for every subsystem, its namespaces with this reactor's bdev
// channels, whether it is paused, and how much I/O it has in flight. The control thread changes it only
// by posting Pause / Apply / Remove; the transport's qpairs on this reactor read it without locks.
//
// Thread safety: reactor-affine. Every method runs on reactor().
class PollGroup {
 public:
  struct NsChannel {
    uint32_t nsid;
    Bdev* bdev;
    BdevChannel* channel;
  };

  PollGroup(Reactor& reactor, int index) : reactor_(reactor), index_(index) {}
  ~PollGroup();
  PollGroup(const PollGroup&) = delete;
  PollGroup& operator=(const PollGroup&) = delete;

  Reactor& reactor() { return reactor_; }
  std::string name() const;

  // Stops starting new I/O for the subsystem; `paused` runs (on this reactor) once its in-flight I/O
  // drained. Commands arriving meanwhile wait (see WhenActive).
  void Pause(uint32_t subsystem_id, absl::AnyInvocable<void() &&> paused);
  // Installs a new namespace table (acquiring channels for new namespaces, releasing those of removed
  // ones) and resumes the subsystem, running the commands that waited.
  void Apply(std::shared_ptr<const SubsystemSnapshot> snapshot);
  // Forgets the subsystem, releasing its channels. It must be paused.
  void Remove(uint32_t subsystem_id);

  // --- Data path, used by the transport on this reactor ---
  bool IsActive(uint32_t subsystem_id) const;
  // Runs `fn` now if the subsystem is active, else when it resumes (or drops it if removed).
  void WhenActive(uint32_t subsystem_id, absl::AnyInvocable<void() &&> fn);
  // nullptr when the namespace does not exist (in this poll group's current table).
  const NsChannel* FindNamespace(uint32_t subsystem_id, uint32_t nsid) const;
  // The published table (with namespace identities), nullptr before the first publication.
  const SubsystemSnapshot* Snapshot(uint32_t subsystem_id) const;
  void IoStarted(uint32_t subsystem_id);
  void IoFinished(uint32_t subsystem_id);

  PollGroupStats& stats() { return stats_; }

 private:
  struct Entry {
    std::shared_ptr<const SubsystemSnapshot> snapshot;
    std::vector<NsChannel> namespaces;  // sorted by nsid
    bool paused = false;
    uint64_t outstanding = 0;
    absl::AnyInvocable<void() &&> on_paused;
    std::vector<absl::AnyInvocable<void() &&>> waiting;
  };

  Reactor& reactor_;
  int index_;
  absl::flat_hash_map<uint32_t, std::unique_ptr<Entry>> subsystems_;
  PollGroupStats stats_;
};

}  // namespace smad::tgt
