#pragma once

// Loads device-manager / crypto-engine plugins: shared libraries exporting the C entry point
// declared in plugin/plugin_abi.h. Each plugin's managers and engines are added to a Registry under
// their names.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/plugin/registry.h"

namespace smad::agent {

// A loaded plugin; the library stays loaded for the life of this object (keep it for the life of
// the process: the factories it registered point into it).
class LoadedPlugin {
 public:
  LoadedPlugin(std::string path, void* handle) : path_(std::move(path)), handle_(handle) {}
  LoadedPlugin(LoadedPlugin&& other) noexcept
      : path_(std::move(other.path_)), handle_(other.handle_) {
    other.handle_ = nullptr;
  }
  LoadedPlugin(const LoadedPlugin&) = delete;
  LoadedPlugin& operator=(const LoadedPlugin&) = delete;
  LoadedPlugin& operator=(LoadedPlugin&&) = delete;
  ~LoadedPlugin();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* handle_;
};

// Loads `plugin` (a path, or a name searched by dlopen) and registers what it provides. The
// factories it adds wrap the plugin's C objects in DeviceManager / CryptoEngine; each instance gets
// host services (the active crypto engine's name, JSON-RPC calls through the TargetRpc the factory
// is given). Registration is all or nothing: on any error the registry is unchanged and the library
// is closed. Errors (all name the plugin): NotFound (cannot be loaded), FailedPrecondition (no
// entry point, or an ABI version this smad does not speak), AlreadyExists (a name already
// registered), InvalidArgument (the plugin's registration failed, or a malformed descriptor).
// Thread safety: call at start-up, from one thread (the Registry is not synchronised).
absl::StatusOr<LoadedPlugin> LoadPlugin(const std::string& plugin, Registry& registry);

// Set once at start-up, before any plugin device is used: the crypto engine plugins report in
// handles ("nop" until set). Thread safe.
void SetActiveCryptoEngineName(const std::string& name);

}  // namespace smad::agent
