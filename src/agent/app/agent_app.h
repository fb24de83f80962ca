#pragma once

// smad's process wiring: configuration → state directory → target (embedded or external) → JSON-RPC
// client → state store → device managers and crypto engine (built-in and plugins) → agent → gRPC server,
// plus the target health monitor. main() only parses flags and calls this.

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/api/sma_service.h"
#include "agent/config/config.h"
#include "agent/core/agent.h"
#include "agent/plugin/plugin_loader.h"
#include "agent/plugin/registry.h"
#include "agent/spdk/spdk_client.h"
#include "agent/store/state_store.h"
#include "agent/target/supervisor.h"

namespace smad::agent {

class AgentApp {
 public:
  // Starts everything. Errors: InvalidArgument for a configuration problem found at start (unknown
  // device manager or crypto engine, bad plugin, bad device params), FailedPrecondition when the state
  // directory is locked by another smad, Unavailable/DeadlineExceeded when the target does not come up.
  // `self_path` is argv[0]'s resolved path (to find smad-tgt next to it).
  static absl::StatusOr<std::unique_ptr<AgentApp>> Start(const AgentConfig& config, const std::string& self_path);
  ~AgentApp();  // Shutdown()

  uint16_t grpc_port() const { return grpc_->port(); }
  // Stops the gRPC server (in-flight calls finish), the agent, and the embedded target. Idempotent.
  void Shutdown();

 private:
  AgentApp() = default;
  void HealthLoop();

  AgentConfig config_;
  int lock_fd_ = -1;
  std::unique_ptr<TargetSupervisor> supervisor_;
  SpdkClientPtr client_;
  SpdkClientPtr health_client_;
  std::unique_ptr<TargetRpc> rpc_;
  StateStorePtr store_;
  Registry registry_;
  std::vector<LoadedPlugin> plugins_;
  std::vector<DeviceManagerPtr> managers_;
  CryptoEnginePtr crypto_;
  std::unique_ptr<SecretBox> secrets_;
  std::unique_ptr<Agent> agent_;
  std::unique_ptr<GrpcServer> grpc_;
  std::atomic<bool> stopping_{false};
  std::thread health_thread_;
};

}  // namespace smad::agent
