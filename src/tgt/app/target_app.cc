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
#include "tgt/bdev/bdev_manager.h"
#include "tgt/nvmf/target.h"
#include "tgt/rpc/rpc.h"

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
  std::unique_ptr<ReactorSet> reactors;
  std::unique_ptr<BdevManager> bdevs;
  std::unique_ptr<NvmfTarget> nvmf;
  jsonrpc::Dispatcher dispatcher;
  std::unique_ptr<jsonrpc::Server> server;
  std::unique_ptr<RpcContext> rpc;
  absl::Status result;
  bool shutting_down = false;
  int signal_fd = -1;

  Json SaveConfig() {
    Json bdev_config = Json::array();
    for (Bdev* bdev : bdevs->List()) {
      Json entry = bdev->ConfigEntry();
      if (!entry.is_null()) bdev_config.push_back(entry);
    }
    for (Bdev* bdev : bdevs->List()) {
      const QosLimits& q = bdev->qos_limits();
      if (!q.any()) continue;
      bdev_config.push_back({{"method", "bdev_set_qos_limit"},
                             {"params",
                              {{"name", bdev->name()},
                               {"rw_ios_per_sec", q.rw_ios_per_sec},
                               {"rw_mbytes_per_sec", q.rw_mbytes_per_sec},
                               {"r_mbytes_per_sec", q.r_mbytes_per_sec},
                               {"w_mbytes_per_sec", q.w_mbytes_per_sec}}}});
    }
    return Json{{"subsystems",
                 Json::array({{{"subsystem", "bdev"}, {"config", bdev_config}},
                              {{"subsystem", "nvmf"}, {"config", nvmf->ConfigEntries()}}})}};
  }

  void Shutdown(absl::Status status) {
    if (shutting_down) return;
    shutting_down = true;
    result = status;
    spdlog::info("smad-tgt shutting down");
    if (server) server->Shutdown();
    nvmf->Shutdown([this] { bdevs->UnregisterAll([this] { control.Stop(); }); });
  }

  // Replays config entries one at a time through the RPC methods; `done` gets the first failure.
  void LoadEntries(std::shared_ptr<std::vector<Json>> entries, size_t index,
                   absl::AnyInvocable<void(absl::Status)> done) {
    if (index == entries->size()) return done(absl::OkStatus());
    const Json& entry = (*entries)[index];
    if (!entry.is_object() || !entry.contains("method") || !entry["method"].is_string()) {
      return done(absl::InvalidArgumentError("config entry " + std::to_string(index) + " has no method"));
    }
    std::string method = entry["method"].get<std::string>();
    Json params = entry.contains("params") ? entry["params"] : Json();
    auto shared_done = std::make_shared<absl::AnyInvocable<void(absl::Status)>>(std::move(done));
    dispatcher.Call(method, params, [this, entries, index, method, shared_done](const Json& response) {
      if (response.contains("error")) {
        return (*shared_done)(absl::InvalidArgumentError(
            "config entry " + std::to_string(index) + " (" + method +
            ") failed: " + response["error"].value("message", std::string())));
      }
      // Continue from the reactor loop, not from inside the answer.
      control.Defer([this, entries, index, shared_done] {
        LoadEntries(entries, index + 1, std::move(*shared_done));
      });
    });
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
  Json config = {{"subsystems", Json::array()}};
  if (!options_.config_file.empty()) {
    auto loaded = ReadConfigFile(options_.config_file);
    if (!loaded.ok()) return loaded.status();
    config = *loaded;
  }
  RaiseFileLimit();

  s.reactors = std::make_unique<ReactorSet>(*cores, options_.busy_poll);
  s.bdevs = std::make_unique<BdevManager>(s.control, *s.reactors);
  s.nvmf = std::make_unique<NvmfTarget>(s.control, *s.reactors, *s.bdevs);
  s.rpc = std::unique_ptr<RpcContext>(new RpcContext{
      s.control, *s.bdevs, *s.nvmf, s.dispatcher,
      [&s] { s.control.Defer([&s] { s.Shutdown(absl::OkStatus()); }); },
      [&s] { return s.SaveConfig(); }});
  RegisterAppRpcs(*s.rpc);
  RegisterBdevRpcs(*s.rpc);
  RegisterNvmfRpcs(*s.rpc);
  s.server = std::make_unique<jsonrpc::Server>(s.control, s.dispatcher);

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

  s.reactors->Start();

  // Start-up runs on the control loop: load the configuration, then open the RPC sockets.
  auto entries = std::make_shared<std::vector<Json>>();
  for (const char* name : {"bdev", "nvmf"}) {
    for (const auto& subsystem : config.value("subsystems", Json::array())) {
      if (subsystem.value("subsystem", "") != name) continue;
      const Json& list = subsystem.contains("config") ? subsystem["config"] : Json();
      if (list.is_array()) {
        for (const auto& entry : list) entries->push_back(entry);
      }
    }
  }
  for (const auto& subsystem : config.value("subsystems", Json::array())) {
    std::string name = subsystem.value("subsystem", "");
    const Json& list = subsystem.contains("config") ? subsystem["config"] : Json();
    if (name != "bdev" && name != "nvmf" && list.is_array() && !list.empty()) {
      spdlog::warn("config: subsystem '{}' is not provided by smad-tgt; its {} entries are skipped", name,
                   list.size());
    }
  }
  s.control.Post([this, &s, entries] {
    s.LoadEntries(entries, 0, [this, &s](absl::Status status) {
      if (!status.ok()) return s.Shutdown(status);
      absl::Status listening = s.server->ListenUnix(options_.rpc_socket);
      if (listening.ok() && !options_.tcp_rpc.empty()) {
        auto colon = options_.tcp_rpc.rfind(':');
        uint32_t port = 0;
        if (colon == std::string::npos || !absl::SimpleAtoi(options_.tcp_rpc.substr(colon + 1), &port) ||
            port > 65535) {
          listening = absl::InvalidArgumentError("--tcp-rpc must be HOST:PORT");
        } else {
          listening = s.server->ListenTcp(options_.tcp_rpc.substr(0, colon), static_cast<uint16_t>(port));
        }
      }
      if (!listening.ok()) return s.Shutdown(listening);
      spdlog::info("smad-tgt ready: {} reactor(s), JSON-RPC on {}{}", s.reactors->size(), options_.rpc_socket,
                   options_.tcp_rpc.empty() ? "" : " and " + options_.tcp_rpc);
    });
  });

  s.control.Run();

  s.control.UnwatchFd(s.signal_fd);
  close(s.signal_fd);
  s.server.reset();
  s.reactors->Stop();
  s.nvmf.reset();
  s.bdevs.reset();
  return s.result;
}

}  // namespace smad::tgt
