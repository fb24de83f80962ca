#include "agent/plugin/registry.h"

#include "absl/strings/str_cat.h"
#include "agent/core/bdev_crypto_engine.h"
#include "agent/devices/nvmf_tcp.h"
#include "agent/devices/vfiouser.h"
#include "agent/devices/vhost_blk.h"

namespace smad::agent {

absl::Status Registry::AddDeviceManager(const std::string& name, DeviceManagerFactory factory) {
  if (!managers_.emplace(name, std::move(factory)).second) {
    return absl::AlreadyExistsError(absl::StrCat("device manager \"", name, "\" is already registered"));
  }
  return absl::OkStatus();
}

absl::Status Registry::AddCryptoEngine(const std::string& name, CryptoEngineFactory factory) {
  if (!engines_.emplace(name, std::move(factory)).second) {
    return absl::AlreadyExistsError(absl::StrCat("crypto engine \"", name, "\" is already registered"));
  }
  return absl::OkStatus();
}

const DeviceManagerFactory* Registry::FindDeviceManager(const std::string& name) const {
  auto it = managers_.find(name);
  return it == managers_.end() ? nullptr : &it->second;
}

const CryptoEngineFactory* Registry::FindCryptoEngine(const std::string& name) const {
  auto it = engines_.find(name);
  return it == engines_.end() ? nullptr : &it->second;
}

void RegisterBuiltins(Registry& registry) {
  registry
      .AddDeviceManager("nvmf_tcp", [](TargetRpc& rpc) { return std::make_unique<NvmfTcpDeviceManager>(rpc); })
      .IgnoreError();
  registry
      .AddDeviceManager("vfiouser", [](TargetRpc& rpc) { return std::make_unique<VfioUserDeviceManager>(rpc); })
      .IgnoreError();
  registry
      .AddDeviceManager("vhost_blk", [](TargetRpc& rpc) { return std::make_unique<VhostBlkDeviceManager>(rpc); })
      .IgnoreError();
  registry.AddCryptoEngine("nop", [](TargetRpc&) { return MakeNopCryptoEngine(); }).IgnoreError();
  registry.AddCryptoEngine("bdev_crypto", [](TargetRpc& rpc) { return MakeBdevCryptoEngine(rpc); }).IgnoreError();
}

}  // namespace smad::agent
