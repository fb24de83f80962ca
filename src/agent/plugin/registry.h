#pragma once

// Named factories of device managers and crypto engines: the built-in ones and those that plugins
// (shared libraries, plugin/plugin_abi.h) register. The configuration enables managers by name.

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "agent/core/crypto_engine.h"
#include "agent/devices/device_manager.h"
#include "agent/spdk/target_rpc.h"

namespace smad::agent {

using DeviceManagerFactory = std::function<DeviceManagerPtr(TargetRpc& rpc)>;
using CryptoEngineFactory = std::function<CryptoEnginePtr(TargetRpc& rpc)>;

// Thread compatible: filled at start-up, read-only afterwards.
class Registry {
 public:
  // AlreadyExists when the name is taken (a plugin may not replace a built-in or another plugin's name).
  absl::Status AddDeviceManager(const std::string& name, DeviceManagerFactory factory);
  absl::Status AddCryptoEngine(const std::string& name, CryptoEngineFactory factory);
  // nullptr when unknown.
  const DeviceManagerFactory* FindDeviceManager(const std::string& name) const;
  const CryptoEngineFactory* FindCryptoEngine(const std::string& name) const;

 private:
  std::map<std::string, DeviceManagerFactory> managers_;
  std::map<std::string, CryptoEngineFactory> engines_;
};

// Registers nvmf_tcp (and the other built-in managers) and the nop engine.
void RegisterBuiltins(Registry& registry);

}  // namespace smad::agent
