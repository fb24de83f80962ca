#pragma once

#include <functional>

#include "jsonrpc/server.h"
#include "reactor/reactor.h"
#include "tgt/bdev/bdev_manager.h"
#include "tgt/nvmf/target.h"
#include "tgt/vhost/vhost_target.h"

namespace smad::tgt {

class DiscoveryManager;
class NvmeBdevModule;
class CryptoKeyStore;

// What the JSON-RPC methods of smad-tgt operate on. All of it lives on the control thread.
struct RpcContext {
  Reactor& control;
  BdevManager& bdevs;
  NvmfTarget& nvmf;
  VhostTarget& vhost;
  jsonrpc::Dispatcher& dispatcher;
  // Asks the process to shut down (spdk_kill_instance).
  std::function<void()> request_shutdown;
  // The whole running configuration in SPDK's save_config format.
  std::function<nlohmann::json()> save_config;
  // NVMe-oF discovery services (bdev_nvme_*_discovery); set before RegisterDiscoveryRpcs.
  DiscoveryManager* discovery = nullptr;
  // Accel crypto keys (accel_crypto_key_*, bdev_crypto_*); set before RegisterCryptoRpcs.
  CryptoKeyStore* keys = nullptr;
  // Remote NVMe bdevs (bdev_nvme_attach_controller etc.); set before RegisterBdevNvmeRpcs.
  NvmeBdevModule* nvme = nullptr;
};

// Register SPDK's method names with SPDK's parameters, result shapes and error codes.
void RegisterAppRpcs(RpcContext& context);
void RegisterBdevRpcs(RpcContext& context);
void RegisterNvmfRpcs(RpcContext& context);
void RegisterVhostRpcs(RpcContext& context);
void RegisterDiscoveryRpcs(RpcContext& context);
void RegisterBdevNvmeRpcs(RpcContext& context);
void RegisterCryptoRpcs(RpcContext& context);

// Version reported by spdk_get_version.
inline constexpr int kVersionMajor = 0;
inline constexpr int kVersionMinor = 1;
inline constexpr int kVersionPatch = 0;

}  // namespace smad::tgt
