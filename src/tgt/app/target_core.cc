#include "tgt/app/target_core.h"

#include "spdlog/spdlog.h"

namespace smad::tgt {

using Json = nlohmann::json;

namespace {

// The subsystems smad-tgt provides, in replay order.
constexpr const char* kSubsystems[] = {"accel", "bdev", "nvmf", "vhost_blk"};

bool Provided(const std::string& name) {
  for (const char* s : kSubsystems) {
    if (name == s) return true;
  }
  return false;
}

}  // namespace

TargetCore::TargetCore(Reactor& control, const std::vector<int>& cores, bool busy_poll,
                       std::function<void()> request_shutdown, std::string vhost_socket_dir)
    : control_(control),
      reactors_(std::make_unique<ReactorSet>(cores, busy_poll)),
      keys_(std::make_unique<CryptoKeyStore>()) {
  bdevs_ = std::make_unique<BdevManager>(control_, *reactors_);
  nvme_ = std::make_unique<NvmeBdevModule>(control_, *bdevs_);
  discovery_ = std::make_unique<DiscoveryManager>(control_, *nvme_);
  nvmf_ = std::make_unique<NvmfTarget>(control_, *reactors_, *bdevs_);
  vhost_ = std::make_unique<VhostTarget>(control_, *bdevs_, std::move(vhost_socket_dir), cores);
  rpc_ = std::unique_ptr<RpcContext>(new RpcContext{control_, *bdevs_, *nvmf_, *vhost_, dispatcher_,
                                                    std::move(request_shutdown), [this] { return SaveConfig(); }});
  RegisterAppRpcs(*rpc_);
  RegisterBdevRpcs(*rpc_);
  RegisterNvmfRpcs(*rpc_);
  RegisterVhostRpcs(*rpc_);
  rpc_->keys = keys_.get();
  RegisterCryptoRpcs(*rpc_);
  rpc_->nvme = nvme_.get();
  RegisterBdevNvmeRpcs(*rpc_);
  rpc_->discovery = discovery_.get();
  RegisterDiscoveryRpcs(*rpc_);
}

TargetCore::~TargetCore() {
  vhost_.reset();
  nvmf_.reset();
  discovery_.reset();
  nvme_.reset();
  bdevs_.reset();
}

void TargetCore::Start() { reactors_->Start(); }

void TargetCore::StopReactors() { reactors_->Stop(); }

Json TargetCore::SaveConfig() const {
  // Remote NVMe controllers first: other bdevs may be stacked on their namespaces.
  Json bdev_config = nvme_->ConfigEntries();
  // Discovery services recreate their own controllers (SPDK writes them after the attach entries).
  for (Json& entry : discovery_->ConfigEntries()) bdev_config.push_back(std::move(entry));
  for (Bdev* bdev : bdevs_->List()) {
    Json entry = bdev->ConfigEntry();
    if (!entry.is_null()) bdev_config.push_back(entry);
  }
  for (Bdev* bdev : bdevs_->List()) {
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
  return Json{{"subsystems", Json::array({{{"subsystem", "accel"}, {"config", keys_->ConfigEntries()}},
                                          {{"subsystem", "bdev"}, {"config", bdev_config}},
                                          {{"subsystem", "nvmf"}, {"config", nvmf_->ConfigEntries()}},
                                          {{"subsystem", "vhost_blk"}, {"config", vhost_->ConfigEntries()}}})}};
}

void TargetCore::LoadConfig(const Json& config, absl::AnyInvocable<void(absl::Status)> done) {
  auto entries = std::make_shared<std::vector<Json>>();
  const Json empty = Json::array();
  const Json& subsystems = config.is_object() && config.contains("subsystems") ? config["subsystems"] : empty;
  if (!subsystems.is_array()) return done(absl::InvalidArgumentError("config: \"subsystems\" must be an array"));
  for (const char* name : kSubsystems) {
    for (const auto& subsystem : subsystems) {
      if (!subsystem.is_object() || subsystem.value("subsystem", "") != name) continue;
      if (subsystem.contains("config") && subsystem["config"].is_array()) {
        for (const auto& entry : subsystem["config"]) entries->push_back(entry);
      }
    }
  }
  for (const auto& subsystem : subsystems) {
    if (!subsystem.is_object()) continue;
    std::string name = subsystem.value("subsystem", "");
    if (!Provided(name) && subsystem.contains("config") && subsystem["config"].is_array() &&
        !subsystem["config"].empty()) {
      spdlog::warn("config: subsystem '{}' is not provided by smad-tgt; its {} entries are skipped", name,
                   subsystem["config"].size());
    }
  }
  LoadEntries(entries, 0, std::move(done));
}

void TargetCore::LoadEntries(std::shared_ptr<std::vector<Json>> entries, size_t index,
                             absl::AnyInvocable<void(absl::Status)> done) {
  if (index == entries->size()) return done(absl::OkStatus());
  const Json& entry = (*entries)[index];
  if (!entry.is_object() || !entry.contains("method") || !entry["method"].is_string()) {
    return done(absl::InvalidArgumentError("config entry " + std::to_string(index) + " has no method"));
  }
  std::string method = entry["method"].get<std::string>();
  Json params = entry.contains("params") ? entry["params"] : Json();
  auto shared_done = std::make_shared<absl::AnyInvocable<void(absl::Status)>>(std::move(done));
  dispatcher_.Call(method, params, [this, entries, index, method, shared_done](const Json& response) {
    if (response.contains("error")) {
      return (*shared_done)(absl::InvalidArgumentError("config entry " + std::to_string(index) + " (" + method +
                                                       ") failed: " + response["error"].value("message", "")));
    }
    // Continue from the reactor loop, not from inside the answer.
    control_.Defer([this, entries, index, shared_done] { LoadEntries(entries, index + 1, std::move(*shared_done)); });
  });
}

void TargetCore::Shutdown(absl::AnyInvocable<void() &&> done) {
  auto shared = std::make_shared<absl::AnyInvocable<void() &&>>(std::move(done));
  vhost_->Shutdown();
  nvmf_->Shutdown([this, shared] {
    discovery_->Shutdown([this, shared] {
      nvme_->Shutdown([this, shared] { bdevs_->UnregisterAll([shared] { std::move(*shared)(); }); });
    });
  });
}

}  // namespace smad::tgt
