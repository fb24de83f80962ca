#pragma once

// Runs the embedded target: smad starts smad-tgt on a private socket in its state directory, waits until
// it is ready, restarts it with backoff when it dies, and stops it on shutdown. If smad itself crashes,
// smad-tgt keeps serving I/O; the next smad adopts it (pid file + a live socket) instead of starting a
// second one, so an agent restart never interrupts the data path.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace smad::agent {

class TargetSupervisor {
 public:
  struct Options {
    std::string binary;       // smad-tgt executable
    std::string socket;       // its JSON-RPC socket
    std::string pid_file;     // where the running target's pid is kept
    std::string log_file;     // its stdout/stderr (appended)
    std::string cpumask;      // -m, empty: default
    std::string config_file;  // -c, empty: none (e.g. the bdevs to create at every start)
    std::vector<std::string> args;
    std::chrono::milliseconds startup_timeout{60000};
    std::chrono::milliseconds restart_min{200};
    std::chrono::milliseconds restart_max{10000};
    // Called after the target (re)started and is ready (not for the first start), on the supervisor's
    // thread.
    std::function<void()> on_restart;
  };

  // Adopts a running target or starts one, and waits until it answers framework_wait_init. Errors:
  // FailedPrecondition (binary missing), DeadlineExceeded (not ready within startup_timeout), Internal.
  static absl::StatusOr<std::unique_ptr<TargetSupervisor>> Start(Options options);
  ~TargetSupervisor();  // Stop()
  TargetSupervisor(const TargetSupervisor&) = delete;
  TargetSupervisor& operator=(const TargetSupervisor&) = delete;

  // Stops supervising and terminates the target (SIGTERM, SIGKILL after 10 s). Idempotent.
  void Stop();
  // Kills the target (SIGKILL) so the supervisor restarts it: used when it stops answering.
  void KillForRestart();

  pid_t pid() const;
  bool adopted() const { return adopted_; }
  uint64_t restarts() const { return restarts_.load(); }

 private:
  explicit TargetSupervisor(Options options) : options_(std::move(options)) {}
  absl::Status Launch();          // fork/exec; sets pid_
  absl::Status WaitReady(pid_t pid);
  bool TryAdopt();
  void WatchLoop();

  Options options_;
  mutable absl::Mutex mu_;
  pid_t pid_ ABSL_GUARDED_BY(mu_) = -1;
  int pidfd_ ABSL_GUARDED_BY(mu_) = -1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool adopted_ = false;
  int wake_fd_ = -1;  // eventfd: wakes the watcher on Stop
  std::atomic<uint64_t> restarts_{0};
  std::thread watcher_;
};

}  // namespace smad::agent
