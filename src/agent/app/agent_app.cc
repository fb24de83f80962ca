#include "agent/app/agent_app.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace smad::agent {
namespace {

// Takes an exclusive lock on <dir>/lock so two smad processes never share a state directory.
absl::StatusOr<int> LockStateDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("state_dir: cannot create ", dir, ": ", ec.message()));
  chmod(dir.c_str(), 0700);
  std::string path = dir + "/lock";
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("state_dir: ", path));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    return absl::FailedPreconditionError(absl::StrCat("state_dir: ", dir, " is in use by another smad"));
  }
  return fd;
}

// Waits until the target answers rpc_get_methods (SPDK's SMA waits the same way, 1 s apart).
absl::Status WaitForTarget(SpdkClient& client, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  absl::Status last;
  while (std::chrono::steady_clock::now() < deadline) {
    auto methods = client.Call("rpc_get_methods", Json(), std::chrono::seconds(5));
    if (methods.ok()) return absl::OkStatus();
    last = methods.status();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return absl::DeadlineExceededError(absl::StrCat("the target did not answer within ", timeout.count(),
                                                  " ms: ", last.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<AgentApp>> AgentApp::Start(const AgentConfig& config, const std::string& self_path) {
  std::unique_ptr<AgentApp> app(new AgentApp());
  app->config_ = config;
  ASSIGN_OR_RETURN(app->lock_fd_, LockStateDir(config.state_dir));

  // Device managers and crypto engines: built-ins, then plugins. All configuration checks happen here,
  // before anything is started.
  RegisterBuiltins(app->registry_);
  for (const std::string& plugin : config.plugins) {
    ASSIGN_OR_RETURN(LoadedPlugin loaded, LoadPlugin(plugin, app->registry_));
    app->plugins_.push_back(std::move(loaded));
  }
  for (size_t i = 0; i < config.devices.size(); ++i) {
    if (app->registry_.FindDeviceManager(config.devices[i].name) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("devices[", i, "].name: unknown device manager \"", config.devices[i].name, "\""));
    }
  }
  const CryptoEngineFactory* crypto_factory = app->registry_.FindCryptoEngine(config.crypto.name);
  if (crypto_factory == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("crypto.name: unknown crypto engine \"", config.crypto.name, "\""));
  }
  SetActiveCryptoEngineName(config.crypto.name);

  // The target.
  std::string address = config.target.socket;
  if (address.empty()) {
    TargetSupervisor::Options o;
    o.binary = config.target.binary.empty()
                   ? (std::filesystem::path(self_path).parent_path() / "smad-tgt").string()
                   : config.target.binary;
    o.socket = config.state_dir + "/smad-tgt.sock";
    o.pid_file = config.state_dir + "/smad-tgt.pid";
    o.log_file = config.state_dir + "/smad-tgt.log";
    o.cpumask = config.target.cpumask;
    o.config_file = config.target.config_file;
    o.args = config.target.args;
    o.startup_timeout = config.target.startup_timeout;
    AgentApp* raw = app.get();
    o.on_restart = [raw] {
      if (raw->agent_ != nullptr) raw->agent_->RequestReconcile();
    };
    ASSIGN_OR_RETURN(app->supervisor_, TargetSupervisor::Start(std::move(o)));
    address = config.state_dir + "/smad-tgt.sock";
  }
  JsonRpcClientOptions client_options;
  client_options.address = address;
  AgentApp* raw = app.get();
  client_options.on_connection_change = [raw](bool up, uint64_t epoch) {
    if (up && raw->agent_ != nullptr) raw->agent_->RequestReconcile();
    if (!up) spdlog::warn("target: connection lost");
  };
  ASSIGN_OR_RETURN(app->client_, CreateJsonRpcClient(client_options));
  JsonRpcClientOptions health_options;
  health_options.address = address;
  health_options.max_in_flight = 1;
  ASSIGN_OR_RETURN(app->health_client_, CreateJsonRpcClient(health_options));
  RETURN_IF_ERROR(WaitForTarget(*app->client_, config.target.startup_timeout));
  app->rpc_ = std::make_unique<TargetRpc>(*app->client_, config.target.rpc_timeout);

  StateStore::Options store_options;
  store_options.fsync = config.state_fsync;
  ASSIGN_OR_RETURN(app->store_, StateStore::Open(config.state_dir + "/state.db", store_options));

  std::vector<DeviceManager*> enabled;
  for (size_t i = 0; i < config.devices.size(); ++i) {
    DeviceManagerPtr manager = (*app->registry_.FindDeviceManager(config.devices[i].name))(*app->rpc_);
    absl::Status init = manager->Init(config.devices[i].params);
    if (!init.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("devices[", i, "].params: ", init.message()));
    }
    enabled.push_back(manager.get());
    app->managers_.push_back(std::move(manager));
  }
  app->crypto_ = (*crypto_factory)(*app->rpc_);
  absl::Status crypto_init = app->crypto_->Init(config.crypto.params);
  if (!crypto_init.ok()) return absl::InvalidArgumentError(absl::StrCat("crypto.params: ", crypto_init.message()));

  // Volume keys are kept sealed under a master key of the state directory (to restore crypto bdevs).
  ASSIGN_OR_RETURN(app->secrets_, SecretBox::OpenOrCreate(config.state_dir + "/master.key"));

  Agent::Options agent_options;
  agent_options.secrets = app->secrets_.get();
  agent_options.discovery_timeout = config.discovery_timeout;
  agent_options.volume_cleanup_period = config.volume_cleanup_period;
  app->agent_ = std::make_unique<Agent>(agent_options, *app->rpc_, *app->store_, std::move(enabled), *app->crypto_);
  RETURN_IF_ERROR(app->agent_->Start());
  ASSIGN_OR_RETURN(app->grpc_, GrpcServer::Start(config.address, config.port, *app->agent_));
  app->grpc_->SetServing(true);
  app->health_thread_ = std::thread([raw] { raw->HealthLoop(); });
  spdlog::info("smad: serving SMA on {}:{} (target {})", config.address, app->grpc_->port(), address);
  return app;
}

void AgentApp::HealthLoop() {
  // Pings the target on its own connection. Three missed pings in a row: not serving; an embedded target
  // that stopped answering (hung, not dead: the supervisor handles exits) is killed and restarted.
  int missed = 0;
  while (!stopping_.load()) {
    auto started = std::chrono::steady_clock::now();
    auto ping = health_client_->Call("spdk_get_version", Json(),
                                     std::max(config_.target.health_interval, std::chrono::milliseconds(1000)));
    if (ping.ok()) {
      if (missed >= 3) spdlog::info("target: answering again");
      missed = 0;
      grpc_->SetServing(true);
    } else if (++missed == 3) {
      spdlog::error("target: not answering ({}); reporting NOT_SERVING", ping.status().ToString());
      grpc_->SetServing(false);
      if (supervisor_ != nullptr && absl::IsDeadlineExceeded(ping.status())) supervisor_->KillForRestart();
    }
    auto next = started + config_.target.health_interval;
    while (!stopping_.load() && std::chrono::steady_clock::now() < next) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

void AgentApp::Shutdown() {
  if (stopping_.exchange(true)) return;
  spdlog::info("smad: shutting down");
  if (grpc_ != nullptr) grpc_->Shutdown(std::chrono::seconds(10));
  if (health_thread_.joinable()) health_thread_.join();
  if (agent_ != nullptr) agent_->Stop();
  if (supervisor_ != nullptr) supervisor_->Stop();
  if (lock_fd_ >= 0) {
    close(lock_fd_);
    lock_fd_ = -1;
  }
}

AgentApp::~AgentApp() { Shutdown(); }

}  // namespace smad::agent
