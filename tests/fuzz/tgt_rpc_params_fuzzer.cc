// Fuzzes the parameter decoding of every smad-tgt JSON-RPC method, in-process, against a live target
// (TargetCore with one data reactor). Input: first byte picks the method, the rest is the params text.
// Methods that reach outside the process are not dispatched: bdev_aio_create (opens arbitrary paths),
// listener methods (bind arbitrary addresses; their parser, ListenAddress::FromJson, is fuzzed
// directly) and spdk_kill_instance.
#include <cstddef>
#include <cstdint>
#include <future>
#include <string>

#include "nlohmann/json.hpp"
#include "reactor/reactor.h"
#include "spdlog/spdlog.h"
#include "tgt/app/target_core.h"
#include "tgt/nvmf/listen_address.h"

namespace {

using Json = nlohmann::json;

constexpr const char* kMethods[] = {
    "spdk_get_version", "rpc_get_methods", "framework_get_config", "framework_get_subsystems", "save_config",
    "bdev_malloc_create", "bdev_malloc_delete", "bdev_null_create", "bdev_null_delete", "bdev_aio_delete",
    "bdev_get_bdevs", "bdev_get_iostat", "bdev_set_qos_limit", "nvmf_create_transport", "nvmf_get_transports",
    "nvmf_create_subsystem", "nvmf_delete_subsystem", "nvmf_get_subsystems", "nvmf_subsystem_get_listeners",
    "nvmf_subsystem_add_ns", "nvmf_subsystem_remove_ns", "nvmf_subsystem_add_host", "nvmf_subsystem_remove_host",
    "nvmf_subsystem_allow_any_host", "nvmf_subsystem_get_controllers", "nvmf_subsystem_get_qpairs",
    "nvmf_get_stats", "bdev_wait_for_examine", "framework_wait_init", "accel_crypto_key_create",
    "accel_crypto_keys_get", "accel_crypto_key_destroy", "bdev_crypto_create", "bdev_crypto_delete"};
constexpr size_t kMethodCount = sizeof(kMethods) / sizeof(kMethods[0]);

struct Environment {
  smad::Reactor control{smad::Reactor::Options{.name = "fuzz_ctrl"}};
  std::unique_ptr<smad::tgt::TargetCore> core;
  Environment() {
    spdlog::set_level(spdlog::level::off);
    core = std::make_unique<smad::tgt::TargetCore>(control, std::vector<int>{0}, false, [] {});
    core->Start();
    control.Start();
  }
  template <typename F>
  void OnControl(F fn) {
    std::promise<void> done;
    control.Post([&] { fn(done); });
    done.get_future().wait();
  }
};

// Leaked on purpose: reactor threads keep running until the process exits.
Environment& Env() {
  static Environment* env = new Environment();
  return *env;
}

// Keeps inputs from asking for unbounded time or memory: a short bdev_get_bdevs wait, small bdevs.
void Bound(Json& params) {
  if (!params.is_object()) return;
  if (params.contains("timeout") && params["timeout"].is_number()) params["timeout"] = 10;
  if (params.contains("num_blocks") && params["num_blocks"].is_number_unsigned() &&
      params["num_blocks"].get<uint64_t>() > 4096) {
    params["num_blocks"] = 4096;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  Json params = Json::parse(text, nullptr, false);
  if (params.is_discarded()) params = Json(text);  // not JSON: send it as a string, which must be refused

  // The listener parser, directly.
  (void)smad::tgt::ListenAddress::FromJson(params);

  Bound(params);
  const char* method = kMethods[data[0] % kMethodCount];
  Environment& env = Env();
  env.OnControl([&](std::promise<void>& done) {
    env.core->dispatcher().Call(method, params, [&done](const Json& response) {
      if (!response.contains("result") && !response.contains("error")) abort();
      if (response.contains("error") && !response["error"]["message"].is_string()) abort();
      done.set_value();
    });
  });
  // Keep the state small: clear everything once it grows.
  env.OnControl([&](std::promise<void>& done) {
    if (env.core->keys().List().size() > 16) {
      std::vector<std::string> names;
      for (const auto& key : env.core->keys().List()) names.push_back(key->name());
      for (const auto& name : names) env.core->keys().Destroy(name).IgnoreError();  // in-use keys stay
    }
    if (env.core->bdevs().List().size() > 16 || env.core->nvmf().List().size() > 16) {
      env.core->Shutdown([&done] { done.set_value(); });
    } else {
      done.set_value();
    }
  });
  return 0;
}
