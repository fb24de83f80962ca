// smad: the Storage Management Agent (SPDK's SMA gRPC API) in front of an SPDK-compatible target.
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/synchronization/mutex.h"
#include "agent/app/agent_app.h"
#include "agent/config/config.h"
#include "spdlog/spdlog.h"

namespace {

// A configuration problem: one line, exit status 2, nothing started.
int ConfigError(const std::string& message) {
  std::fprintf(stderr, "smad: invalid configuration: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // A control-plane daemon with a handful of busy threads: two malloc arenas are plenty, and each
  // arena a thread would otherwise get keeps pages resident.
  mallopt(M_ARENA_MAX, 2);
#ifdef NDEBUG
  // Debian builds Abseil without NDEBUG, which leaves its deadlock detector on: a global lock and a
  // graph update on every Mutex acquisition. Release builds turn it off; debug and sanitizer builds
  // (the tests) keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  std::string config_path, address, socket, state_dir, log_level;
  int port = -1;
  CLI::App cli{"smad: Storage Management Agent for SPDK-compatible targets"};
  cli.add_option("-c,--config", config_path, "YAML configuration file");
  cli.add_option("-a,--address", address, "gRPC listen address (default localhost)");
  cli.add_option("-p,--port", port, "gRPC port (default 8080)");
  cli.add_option("-s,--socket", socket, "external target's JSON-RPC address (default: start smad-tgt)");
  cli.add_option("--state-dir", state_dir, "state directory (default /var/lib/smad)");
  cli.add_option("-L,--log-level", log_level, "trace, debug, info, warn, error");
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = cli.exit(e);
    return rc == 0 ? 0 : 2;
  }

  absl::StatusOr<smad::agent::AgentConfig> config =
      config_path.empty() ? smad::agent::ParseConfig("") : smad::agent::LoadConfigFile(config_path);
  if (!config.ok()) return ConfigError(std::string(config.status().message()));
  if (!address.empty()) config->address = address;
  if (port != -1) {
    if (port < 0 || port > 65535) return ConfigError("-p: must be a port number 0-65535");
    config->port = static_cast<uint16_t>(port);
  }
  if (!socket.empty()) config->target.socket = socket;
  if (!state_dir.empty()) config->state_dir = state_dir;
  if (!log_level.empty()) config->log_level = log_level;
  smad::agent::AppendEnvPlugins(*config, std::getenv("SMA_PLUGINS"));
  auto level = spdlog::level::from_str(config->log_level);
  if (level == spdlog::level::off && config->log_level != "off") return ConfigError("log_level: unknown level");
  spdlog::set_level(level);
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [smad] [%l] %v");

  // SIGTERM/SIGINT are taken synchronously below; every thread inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  std::string self_path = n > 0 ? std::string(self, n) : std::string(argv[0]);

  auto app = smad::agent::AgentApp::Start(*config, self_path);
  if (!app.ok()) {
    if (absl::IsInvalidArgument(app.status())) return ConfigError(std::string(app.status().message()));
    std::fprintf(stderr, "smad: %s\n", std::string(app.status().message()).c_str());
    return 1;
  }
  malloc_trim(0);  // hand back what start-up (configuration, state loading) used and freed
  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("smad: signal {} received", sig);
  (*app)->Shutdown();
  return 0;
}
