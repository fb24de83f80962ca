#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"

namespace smad::tgt {

struct TargetOptions {
  std::string rpc_socket = "/var/tmp/spdk.sock";
  std::string tcp_rpc;         // "host:port", empty for none
  std::string cpumask = "0x1";
  std::string config_file;     // SPDK JSON config to load at start, empty for none
  std::string vhost_socket_dir;  // where vhost controller sockets go (SPDK's -S); empty: working directory
  bool busy_poll = false;      // reactors spin instead of sleeping (SPDK's poll mode)
};

// The smad-tgt process: data reactors, the control thread with the JSON-RPC server, the bdev layer and
// the NVMe-oF target. Run() blocks until SIGINT/SIGTERM or spdk_kill_instance, then shuts down cleanly:
// subsystems are deleted (in-flight I/O drains), bdevs closed, the RPC socket removed.
//
// Thread safety: construct and Run on one thread (the main thread, which becomes the control thread).
class TargetApp {
 public:
  explicit TargetApp(TargetOptions options);
  ~TargetApp();
  TargetApp(const TargetApp&) = delete;
  TargetApp& operator=(const TargetApp&) = delete;

  // Returns OK after a clean shutdown; an error if start-up failed (bad mask, config that does not
  // load, RPC socket in use). SIGINT and SIGTERM must be blocked in every thread before calling (see
  // BlockShutdownSignals), so that they are delivered to the control thread only.
  absl::Status Run();

 private:
  struct State;
  TargetOptions options_;
  std::unique_ptr<State> state_;
};

// Blocks SIGINT, SIGTERM and SIGPIPE in the calling thread; threads created afterwards inherit it.
void BlockShutdownSignals();

}  // namespace smad::tgt
