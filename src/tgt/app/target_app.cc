#include "tgt/app/target_app.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "common/status.h"
#include "jsonrpc/server.h"
#include "reactor/reactor.h"
#include "spdlog/spdlog.h"
#include "tgt/app/target_core.h"

namespace smad::tgt {
namespace {

using jsonrpc::Json;

// Lets one process hold many RPC and NVMe/TCP connections.
void RaiseFileLimit() {
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

absl::StatusOr<Json> ReadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("cannot open config file " + path + ": " + ErrnoString(errno));
  std::stringstream buffer;
  buffer << in.rdbuf();
  Json config = Json::parse(buffer.str(), nullptr, false);
  if (config.is_discarded()) return absl::InvalidArgumentError("config file " + path + " is not valid JSON");
  if (!config.is_object() || !config.contains("subsystems") || !config["subsystems"].is_array()) {
    return absl::InvalidArgumentError("config file " + path + " has no \"subsystems\" array");
  }
  return config;
}

absl::StatusOr<std::pair<std::string, uint16_t>> SplitHostPort(const std::string& address) {
  auto colon = address.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) || port > 65535) {
    return absl::InvalidArgumentError("--tcp-rpc must be HOST:PORT");
  }
  return std::make_pair(address.substr(0, colon), static_cast<uint16_t>(port));
}

}  // namespace

void BlockShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

struct TargetApp::State {
  Reactor control{Reactor::Options{.name = "smad_tgt_ctrl"}};
  std::unique_ptr<TargetCore> core;
  std::unique_ptr<jsonrpc::Server> server;
  absl::Status result;
  bool shutting_down = false;
  int signal_fd = -1;

  void Shutdown(absl::Status status) {
    if (shutting_down) return;
    shutting_down = true;
    result = status;
    spdlog::info("smad-tgt shutting down");
    if (server) server->Shutdown();
    core->Shutdown([this] { control.Stop(); });
  }
};

TargetApp::TargetApp(TargetOptions options) : options_(std::move(options)), state_(std::make_unique<State>()) {}

TargetApp::~TargetApp() = default;

absl::Status TargetApp::Run() {
  State& s = *state_;
  auto cores = ParseCpuMask(options_.cpumask);
  if (!cores.ok()) return absl::InvalidArgumentError("invalid cpumask: " + StatusMessage(cores.status()));
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  for (int core : *cores) {
    if (core >= online) {
      return absl::InvalidArgumentError("cpumask selects core " + std::to_string(core) + " but only " +
                                        std::to_string(online) + " are online");
    }
  }
  std::optional<std::pair<std::string, uint16_t>> tcp_rpc;
  if (!options_.tcp_rpc.empty()) {
    auto parsed = SplitHostPort(options_.tcp_rpc);
    if (!parsed.ok()) return parsed.status();
    tcp_rpc = *parsed;
  }
  Json config = {{"subsystems", Json::array()}};
  if (!options_.config_file.empty()) {
    auto loaded = ReadConfigFile(options_.config_file);
    if (!loaded.ok()) return loaded.status();
    config = *loaded;
  }
  RaiseFileLimit();

  s.core = std::make_unique<TargetCore>(
      s.control, *cores, options_.busy_poll, [&s] { s.control.Defer([&s] { s.Shutdown(absl::OkStatus()); }); },
      options_.vhost_socket_dir);
  s.server = std::make_unique<jsonrpc::Server>(s.control, s.core->dispatcher());

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  s.signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (s.signal_fd < 0) return ErrnoStatus(errno, "signalfd failed");
  absl::Status watched = s.control.WatchFd(s.signal_fd, EPOLLIN, [&s](uint32_t) {
    signalfd_siginfo info;
    while (read(s.signal_fd, &info, sizeof(info)) == sizeof(info)) {
      spdlog::info("received signal {}", info.ssi_signo);
      s.Shutdown(absl::OkStatus());
    }
  });
  if (!watched.ok()) return watched;

  s.core->Start();

  // Start-up runs on the control loop: load the configuration, then open the RPC sockets.
  s.control.Post([this, &s, config, tcp_rpc] {
    s.core->LoadConfig(config, [this, &s, tcp_rpc](absl::Status status) {
      if (!status.ok()) return s.Shutdown(status);
      absl::Status listening = s.server->ListenUnix(options_.rpc_socket);
      if (listening.ok() && tcp_rpc) listening = s.server->ListenTcp(tcp_rpc->first, tcp_rpc->second);
      if (!listening.ok()) return s.Shutdown(listening);
      spdlog::info("smad-tgt ready: {} reactor(s), JSON-RPC on {}{}", s.core->reactor_count(), options_.rpc_socket,
                   options_.tcp_rpc.empty() ? "" : " and " + options_.tcp_rpc);
    });
  });

  s.control.Run();

  s.control.UnwatchFd(s.signal_fd);
  close(s.signal_fd);
  s.server.reset();
  s.core->StopReactors();
  s.core.reset();
  return s.result;
}

}  // namespace smad::tgt
