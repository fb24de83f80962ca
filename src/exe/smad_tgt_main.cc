// smad-tgt: an SPDK-compatible storage target (JSON-RPC control plane, bdevs, NVMe-oF subsystems).
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/synchronization/mutex.h"
#include "spdlog/spdlog.h"
#include "tgt/app/target_app.h"

int main(int argc, char** argv) {
#ifdef NDEBUG
  // Debian builds Abseil without NDEBUG, which leaves its deadlock detector on: a global lock and a
  // graph update on every Mutex acquisition. Release builds turn it off; debug and sanitizer builds
  // (the tests) keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  smad::tgt::TargetOptions options;
  std::string log_level = "info";
  CLI::App app{"smad-tgt: SPDK-compatible NVMe-oF storage target"};
  app.add_option("-r,--rpc-socket", options.rpc_socket, "JSON-RPC Unix socket path")->capture_default_str();
  app.add_option("-m,--cpumask", options.cpumask, "reactor cores: hex mask or list like [0,1]")
      ->capture_default_str();
  app.add_option("-c,--config", options.config_file, "SPDK JSON configuration to load at start");
  app.add_option("--tcp-rpc", options.tcp_rpc, "also serve JSON-RPC on TCP HOST:PORT");
  app.add_option("-S,--vhost-socket-dir", options.vhost_socket_dir,
                 "directory for vhost controller sockets (default: the working directory)");
  app.add_flag("--busy-poll", options.busy_poll, "reactors poll instead of sleeping (lowest latency)");
  app.add_option("-L,--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [smad-tgt] [%l] %v");

  smad::tgt::BlockShutdownSignals();
  smad::tgt::TargetApp target(options);
  absl::Status status = target.Run();
  if (!status.ok()) {
    std::fprintf(stderr, "smad-tgt: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
