#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "jsonrpc/server.h"
#include "nlohmann/json.hpp"
#include "reactor/reactor.h"
#include "tgt/bdev/bdev_manager.h"
#include "tgt/bdev_nvme/discovery_service.h"
#include "tgt/bdev_nvme/nvme_bdev_module.h"
#include "tgt/crypto/crypto_keys.h"
#include "tgt/nvmf/target.h"
#include "tgt/rpc/rpc.h"
#include "tgt/vhost/vhost_target.h"

namespace smad::tgt {

// The target without the process around it: data reactors, the bdev layer, the NVMe-oF target, the vhost
// target and the JSON-RPC method table, driven by a control reactor that the owner runs. TargetApp wraps it in a process
// (signals, RPC sockets); tests and fuzzers use it in-process.
//
// Thread safety: construct, Start and StopReactors on any one thread; every other method on the control
// reactor's thread. Shutdown must complete before StopReactors, and StopReactors before destruction.
class TargetCore {
 public:
  // `vhost_socket_dir` is where vhost controller sockets are created (SPDK's -S); empty for the working
  // directory.
  TargetCore(Reactor& control, const std::vector<int>& cores, bool busy_poll,
             std::function<void()> request_shutdown, std::string vhost_socket_dir = "");
  ~TargetCore();
  TargetCore(const TargetCore&) = delete;
  TargetCore& operator=(const TargetCore&) = delete;

  void Start();         // starts the data reactors
  void StopReactors();  // stops and joins them

  jsonrpc::Dispatcher& dispatcher() { return dispatcher_; }
  BdevManager& bdevs() { return *bdevs_; }
  CryptoKeyStore& keys() { return *keys_; }
  NvmfTarget& nvmf() { return *nvmf_; }
  NvmeBdevModule& nvme() { return *nvme_; }
  DiscoveryManager& discovery() { return *discovery_; }
  VhostTarget& vhost() { return *vhost_; }
  size_t reactor_count() const { return reactors_->size(); }

  // The running configuration in SPDK's save_config format: {"subsystems":[{"subsystem","config"}]}.
  nlohmann::json SaveConfig() const;
  // Replays a save_config document entry by entry (accel first, then bdev, nvmf, vhost_blk) through the RPC
  // methods. `done` receives the first failure, naming the entry's index and method. Other subsystems
  // are skipped with a warning.
  void LoadConfig(const nlohmann::json& config, absl::AnyInvocable<void(absl::Status)> done);
  // Deletes every vhost controller, every subsystem (in-flight I/O drains) and every bdev, then `done`.
  void Shutdown(absl::AnyInvocable<void() &&> done);

 private:
  void LoadEntries(std::shared_ptr<std::vector<nlohmann::json>> entries, size_t index,
                   absl::AnyInvocable<void(absl::Status)> done);

  Reactor& control_;
  std::unique_ptr<ReactorSet> reactors_;
  std::unique_ptr<CryptoKeyStore> keys_;  // outlives the bdevs (crypto bdevs hold keys)
  std::unique_ptr<BdevManager> bdevs_;
  std::unique_ptr<NvmeBdevModule> nvme_;  // remote NVMe bdevs; shut down before the bdevs go
  std::unique_ptr<DiscoveryManager> discovery_;  // uses nvme_; stopped before it shuts down
  std::unique_ptr<NvmfTarget> nvmf_;
  std::unique_ptr<VhostTarget> vhost_;
  jsonrpc::Dispatcher dispatcher_;
  std::unique_ptr<RpcContext> rpc_;
};

}  // namespace smad::tgt
