#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <queue>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "reactor/mpsc_queue.h"

namespace smad {

// Monotonic clock in nanoseconds.
uint64_t NowNs();

// An event loop bound to one thread: a message queue other threads post closures to, fd readiness
// callbacks (epoll), timers, and pollers. The model is SPDK's reactor and Seastar's shard: objects that
// belong to a reactor are only touched on its thread, so nothing on the I/O path takes a lock.
//
// Thread safety: Post(), Stop() and IsCurrent() may be called from any thread. Every other method must
// be called on the reactor's own thread (or before it starts).
class Reactor {
 public:
  using Task = absl::AnyInvocable<void() &&>;
  using FdCallback = absl::AnyInvocable<void(uint32_t events)>;
  using Poller = absl::AnyInvocable<bool()>;  // returns true when it found work

  struct Options {
    std::string name = "reactor";
    int index = 0;         // position in its ReactorSet
    int core = -1;         // CPU to pin the thread to; -1 leaves it unpinned
    bool busy_poll = false;  // never sleep in epoll_wait (SPDK's poll mode)
  };

  explicit Reactor(Options options);
  ~Reactor();
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  // Starts a dedicated thread running the loop.
  void Start();
  // Runs the loop on the calling thread until Stop(). For the control thread and tests.
  void Run();
  // Asks the loop to exit after the tasks already posted ran. Thread safe.
  void Stop();
  // Joins the thread started by Start().
  void Join();

  // Runs `task` on the reactor thread. Thread safe, lock free, never blocks. Tasks posted from one
  // thread run in posting order.
  void Post(Task task);
  // Runs `task` on the reactor thread after the current callback returns and before the loop sleeps.
  void Defer(Task task);

  // Timers. The returned id can be passed to CancelTimer (cancelling a fired or unknown id is a no-op).
  uint64_t RunAfter(uint64_t delay_ns, Task task);
  uint64_t RunEvery(uint64_t period_ns, absl::AnyInvocable<void()> fn);
  void CancelTimer(uint64_t id);

  // Watches `fd` for `events` (EPOLLIN, EPOLLOUT, ...). The callback may unwatch its own fd or others.
  absl::Status WatchFd(int fd, uint32_t events, FdCallback callback);
  absl::Status ModifyFd(int fd, uint32_t events);
  void UnwatchFd(int fd);

  // A function called on every loop iteration; the loop does not sleep while a poller finds work.
  uint64_t AddPoller(Poller poller);
  void RemovePoller(uint64_t id);

  bool IsCurrent() const { return Current() == this; }
  static Reactor* Current();
  int index() const { return options_.index; }
  const std::string& name() const { return options_.name; }
  bool busy_poll() const { return options_.busy_poll; }

  // Loop statistics, read on the reactor thread.
  uint64_t iterations() const { return iterations_; }

 private:
  struct FdWatch {
    int fd;
    FdCallback callback;
  };
  struct Timer {
    uint64_t period_ns = 0;  // 0 for one-shot
    Task once;
    absl::AnyInvocable<void()> repeat;
  };
  struct TimerEntry {
    uint64_t deadline;
    uint64_t id;
    bool operator>(const TimerEntry& o) const {
      return deadline != o.deadline ? deadline > o.deadline : id > o.id;
    }
  };

  void Loop();
  bool RunPosted();
  bool RunDeferred();
  bool RunTimers();
  bool RunPollers();
  int NextTimeoutMs() const;
  void Wake();

  Options options_;
  int epoll_fd_ = -1;
  int event_fd_ = -1;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> sleeping_{false};
  MpscQueue<Task> posted_;

  std::vector<Task> deferred_;
  std::vector<Task> deferred_running_;
  absl::flat_hash_map<int, std::unique_ptr<FdWatch>> watches_;
  std::vector<std::unique_ptr<FdWatch>> retired_watches_;
  absl::flat_hash_map<uint64_t, Timer> timers_;
  std::priority_queue<TimerEntry, std::vector<TimerEntry>, std::greater<>> timer_heap_;
  uint64_t next_timer_id_ = 1;
  std::vector<std::pair<uint64_t, Poller>> pollers_;
  uint64_t next_poller_id_ = 1;
  uint64_t iterations_ = 0;
};

// Parses an SPDK CPU mask: hex ("0x3", "3") or a list ("[0,2-3]"). Errors: InvalidArgument.
absl::StatusOr<std::vector<int>> ParseCpuMask(const std::string& mask);

// The data-path reactors of the process, one per core of the mask. Thread safety: construct, Start and
// Stop from one thread; reactor(i) is safe from any thread once started.
class ReactorSet {
 public:
  ReactorSet(const std::vector<int>& cores, bool busy_poll);
  ReactorSet(const ReactorSet&) = delete;
  ReactorSet& operator=(const ReactorSet&) = delete;
  ~ReactorSet();

  void Start();
  void Stop();  // stops and joins every reactor
  size_t size() const { return reactors_.size(); }
  Reactor& reactor(size_t i) { return *reactors_[i]; }

 private:
  std::vector<std::unique_ptr<Reactor>> reactors_;
  bool started_ = false;
};

}  // namespace smad
