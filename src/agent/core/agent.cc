#include "agent/core/agent.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "agent/devices/target_errors.h"
#include "common/uuid.h"
#include "openssl/crypto.h"
#include "spdlog/spdlog.h"

namespace smad::agent {
namespace {

constexpr uint64_t kLeaveUnchanged = std::numeric_limits<uint64_t>::max();

std::string DeviceKey(absl::string_view handle) { return absl::StrCat("device:", handle); }
std::string VolumeKey(absl::string_view id) { return absl::StrCat("volume:", id); }

RecordChange PutDevice(const DeviceSpec& spec) { return {kDeviceKind, spec.handle, SerializeDevice(spec)}; }
RecordChange DropDevice(const std::string& handle) { return {kDeviceKind, handle, std::nullopt}; }
RecordChange PutVolume(const VolumeRecord& r) { return {kVolumeKind, r.volume_id, SerializeVolume(r)}; }
RecordChange DropVolume(const std::string& id) { return {kVolumeKind, id, std::nullopt}; }

RecordChange PutDiscovery(const DiscoveryRecord& r) { return {kDiscoveryKind, r.name, SerializeDiscovery(r)}; }
RecordChange DropDiscovery(const std::string& name) { return {kDiscoveryKind, name, std::nullopt}; }

bool References(const VolumeRecord& v, const std::string& service) {
  return std::find(v.discovery_services.begin(), v.discovery_services.end(), service) != v.discovery_services.end();
}

bool SameSpec(const DeviceSpec& a, const DeviceSpec& b) {
  return a.handle == b.handle && a.manager == b.manager && a.params == b.params;
}

}  // namespace

Agent::Agent(Options options, TargetRpc& rpc, StateStore& store, std::vector<DeviceManager*> managers,
             CryptoEngine& crypto)
    : options_(options),
      rpc_(rpc),
      store_(store),
      managers_(std::move(managers)),
      crypto_(crypto),
      discovery_client_(rpc, options.discovery_timeout) {}

Agent::~Agent() { Stop(); }

absl::Status Agent::Start() {
  ASSIGN_OR_RETURN(std::vector<StoredRecord> records, store_.LoadAll());
  {
    absl::MutexLock lock(&state_mu_);
    for (const StoredRecord& r : records) {
      if (r.kind == kDeviceKind) {
        ASSIGN_OR_RETURN(DeviceSpec spec, ParseDeviceRecord(r.key, r.value));
        devices_[spec.handle] = std::move(spec);
      } else if (r.kind == kVolumeKind) {
        ASSIGN_OR_RETURN(VolumeRecord v, ParseVolumeRecord(r.key, r.value));
        volumes_[v.volume_id] = std::move(v);
      } else if (r.kind == kDiscoveryKind) {
        ASSIGN_OR_RETURN(DiscoveryRecord d, ParseDiscoveryRecord(r.key, r.value));
        discovery_[d.name] = std::move(d);
      }
    }
    spdlog::info("agent: desired state has {} devices, {} volumes and {} discovery services", devices_.size(),
                 volumes_.size(), discovery_.size());
    for (const auto& [handle, spec] : devices_) {
      if (ManagerForHandle(handle) == nullptr) {
        spdlog::warn("agent: device {} belongs to manager '{}', which is not enabled; it is left alone", handle,
                     spec.manager);
      }
    }
  }
  thread_ = std::thread([this] { BackgroundLoop(); });
  return absl::OkStatus();
}

void Agent::Stop() {
  {
    absl::MutexLock lock(&bg_mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
  // In-flight operations hold ops_mu_ shared; wait for them.
  absl::MutexLock exclusive(&ops_mu_);
}

DeviceManager* Agent::ManagerForHandle(absl::string_view handle) const {
  for (DeviceManager* m : managers_) {
    if (m->OwnsHandle(handle)) return m;
  }
  return nullptr;
}

DeviceManager* Agent::ManagerForProtocol(absl::string_view protocol) const {
  // A later registration for the same protocol replaces an earlier one.
  DeviceManager* found = nullptr;
  for (DeviceManager* m : managers_) {
    if (m->protocol() == protocol) found = m;
  }
  return found;
}

// ---- durable intent -------------------------------------------------------------------------------

absl::StatusOr<Agent::Op> Agent::BeginOp(const std::string& description, std::vector<RecordChange> changes) {
  Op op;
  {
    absl::MutexLock lock(&state_mu_);
    for (const RecordChange& c : changes) {
      std::optional<std::string> old;
      if (c.kind == kDeviceKind) {
        auto it = devices_.find(c.key);
        if (it != devices_.end()) old = SerializeDevice(it->second);
      } else if (c.kind == kVolumeKind) {
        auto it = volumes_.find(c.key);
        if (it != volumes_.end()) old = SerializeVolume(it->second);
      } else if (c.kind == kDiscoveryKind) {
        auto it = discovery_.find(c.key);
        if (it != discovery_.end()) old = SerializeDiscovery(it->second);
      }
      op.before.push_back({c.kind, c.key, std::move(old)});
    }
  }
  auto id = store_.BeginOp(description, changes);
  if (!id.ok()) {
    spdlog::error("agent: cannot record the intent of {}: {}", description, id.status().ToString());
    return absl::UnavailableError(absl::StrCat("state store: ", id.status().message()));
  }
  op.id = *id;
  absl::MutexLock lock(&state_mu_);
  ApplyToMemory(changes);
  return op;
}

void Agent::CompleteOp(const Op& op, std::vector<RecordChange> final_changes) {
  {
    absl::MutexLock lock(&state_mu_);
    ApplyToMemory(final_changes);
  }
  absl::Status done = store_.CompleteOp(op.id, std::move(final_changes));
  if (!done.ok()) {
    // The op stays pending; the next reconciliation pass completes it.
    spdlog::error("agent: cannot complete op {}: {}", op.id, done.ToString());
  }
  counters_.ops_ok++;
}

void Agent::AbortOp(const Op& op) {
  absl::Status aborted = store_.AbortOp(op.id);
  if (!aborted.ok()) {
    // The intent stays: the reconciler will roll the op forward. Memory keeps the new state to match.
    spdlog::error("agent: cannot abort op {}: {}; it will be rolled forward", op.id, aborted.ToString());
    RequestReconcile();
  } else {
    absl::MutexLock lock(&state_mu_);
    ApplyToMemory(op.before);
  }
  counters_.ops_failed++;
  counters_.rollbacks++;
}

void Agent::ApplyToMemory(const std::vector<RecordChange>& changes) {
  for (const RecordChange& c : changes) {
    if (c.kind == kDeviceKind) {
      if (!c.value.has_value()) {
        devices_.erase(c.key);
      } else if (auto spec = ParseDeviceRecord(c.key, *c.value); spec.ok()) {
        devices_[c.key] = std::move(*spec);
      }
    } else if (c.kind == kVolumeKind) {
      if (!c.value.has_value()) {
        volumes_.erase(c.key);
      } else if (auto v = ParseVolumeRecord(c.key, *c.value); v.ok()) {
        volumes_[c.key] = std::move(*v);
      }
    } else if (c.kind == kDiscoveryKind) {
      if (!c.value.has_value()) {
        discovery_.erase(c.key);
      } else if (auto d = ParseDiscoveryRecord(c.key, *c.value); d.ok()) {
        discovery_[c.key] = std::move(*d);
      }
    }
  }
}

// ---- volumes ----------------------------------------------------------------------------------------

absl::Status Agent::ApplyDurably(std::vector<RecordChange> changes) {
  absl::Status applied = store_.Apply(changes);
  if (!applied.ok()) return absl::UnavailableError(absl::StrCat("state store: ", applied.message()));
  absl::MutexLock lock(&state_mu_);
  ApplyToMemory(changes);
  return absl::OkStatus();
}

absl::StatusOr<VolumeRecord> Agent::PlanVolume(const VolumeRequest& request) const {
  VolumeRecord record;
  record.volume_id = request.volume_id;
  record.bdev = request.volume_id;  // found by its UUID alias
  record.endpoints = request.endpoints;
  record.subnqn = request.subnqn;
  record.hostnqn = request.hostnqn;
  if (request.crypto.has_value()) {
    RETURN_IF_ERROR(crypto_.Validate(*request.crypto));
    record.crypto_engine = crypto_.name();
    record.crypto_bdev = Uuid::Generate().ToString();
    record.bdev = record.crypto_bdev;
    record.crypto_cipher = request.crypto->cipher;
    record.crypto_tweak_mode = request.crypto->tweak_mode;
    if (options_.secrets != nullptr) {
      std::string keys = Json{{"key", request.crypto->key}, {"key2", request.crypto->key2}}.dump();
      auto sealed = options_.secrets->Seal(keys, request.volume_id);
      OPENSSL_cleanse(keys.data(), keys.size());
      if (!sealed.ok()) return sealed.status();
      record.crypto_sealed = *sealed;
    }
  }
  record.connecting = record.remote() || request.crypto.has_value();
  return record;
}

absl::Status Agent::ConnectVolume(const VolumeRequest& request, VolumeRecord& record) {
  if (record.remote()) {
    // One discovery service per endpoint: a running one that serves it (directly or as a referral), else
    // a new one, recorded before it is started.
    absl::MutexLock discovery(&discovery_mu_);
    record.discovery_services.clear();
    for (const DiscoveryEndpoint& endpoint : record.endpoints) {
      ASSIGN_OR_RETURN(std::vector<TargetDiscoveryService> running, discovery_client_.List());
      std::optional<std::string> name = FindDiscoveryService(running, endpoint);
      if (!name) {
        DiscoveryRecord service{Uuid::Generate().ToString(), endpoint, record.hostnqn};
        RETURN_IF_ERROR(ApplyDurably({PutDiscovery(service)}));
        record.discovery_services.push_back(service.name);
        RETURN_IF_ERROR(discovery_client_.Start(service.name, endpoint, record.hostnqn));
        continue;
      }
      if (!References(record, *name)) record.discovery_services.push_back(*name);
    }
    // The references count from now on (other volumes' releases see them).
    RETURN_IF_ERROR(ApplyDurably({PutVolume(record)}));
  }
  const CryptoParams* crypto = request.crypto.has_value() ? &*request.crypto : nullptr;
  return FinishConnect(record, crypto, /*restore=*/false);
}

absl::Status Agent::FinishConnect(VolumeRecord& record, const CryptoParams* crypto, bool restore) {
  if (record.remote() || !record.subnqn.empty()) {
    auto bdevs = rpc_.Call("bdev_get_bdevs", Json{{"name", record.volume_id}, {"timeout", 1000}});
    if (!bdevs.ok()) {
      if (IsTransportError(bdevs.status())) return TargetFailure(bdevs.status(), "Volume lookup failed");
      return absl::NotFoundError("Volume could not be found");
    }
    if (!record.subnqn.empty()) {
      std::string subnqn;
      if (bdevs->is_array() && !bdevs->empty()) {
        Json nvme = (*bdevs)[0].value("driver_specific", Json::object()).value("nvme", Json::array());
        if (nvme.is_array() && !nvme.empty() && nvme[0].is_object()) {
          subnqn = nvme[0].value("trid", Json::object()).value("subnqn", "");
        }
      }
      if (subnqn != record.subnqn) return absl::InvalidArgumentError("Unexpected subsystem NQN");
    }
  }
  if (!record.crypto_bdev.empty()) {
    if (crypto == nullptr) return absl::FailedPreconditionError("the volume's crypto key is not available");
    if (restore) {
      RETURN_IF_ERROR(crypto_.Restore(record.volume_id, record.volume_id, record.crypto_bdev, *crypto));
    } else {
      ASSIGN_OR_RETURN(std::string name,
                       crypto_.SetupNamed(record.volume_id, record.volume_id, *crypto, record.crypto_bdev));
      record.crypto_bdev = name;
      record.bdev = name;
    }
  }
  record.connecting = false;
  return absl::OkStatus();
}

void Agent::CleanupCrypto(const VolumeRecord& record) {
  if (record.crypto_bdev.empty()) return;
  absl::Status cleaned = crypto_.Cleanup(record.volume_id, record.crypto_bdev);
  if (!cleaned.ok()) spdlog::warn("agent: crypto cleanup of volume {}: {}", record.volume_id, cleaned.ToString());
}

void Agent::ReleaseDiscovery(const std::vector<std::string>& services) {
  if (services.empty()) return;
  absl::MutexLock discovery(&discovery_mu_);
  for (const std::string& name : services) {
    {
      absl::MutexLock lock(&state_mu_);
      if (!discovery_.contains(name)) continue;  // not started by smad: never stopped by it
      bool referenced = std::any_of(volumes_.begin(), volumes_.end(),
                                    [&name](const auto& entry) { return References(entry.second, name); });
      if (referenced) continue;
    }
    absl::Status stopped = discovery_client_.Stop(name);
    if (!stopped.ok()) {
      spdlog::warn("agent: stopping discovery service {}: {} (the reconciler retries)", name, stopped.ToString());
      RequestReconcile();
      continue;
    }
    absl::Status dropped = ApplyDurably({DropDiscovery(name)});
    if (!dropped.ok()) spdlog::warn("agent: forgetting discovery service {}: {}", name, dropped.ToString());
  }
}

std::optional<CryptoParams> Agent::UnsealCrypto(const VolumeRecord& record) const {
  if (record.crypto_sealed.empty() || options_.secrets == nullptr) return std::nullopt;
  auto opened = options_.secrets->Open(record.crypto_sealed, record.volume_id);
  if (!opened.ok()) {
    spdlog::error("agent: the key of volume {} cannot be unsealed: {}", record.volume_id,
                  StatusMessage(opened.status()));
    return std::nullopt;
  }
  CryptoParams params;
  try {
    Json keys = Json::parse(*opened);
    params.key = keys.value("key", "");
    params.key2 = keys.value("key2", "");
  } catch (const std::exception&) {
    spdlog::error("agent: the sealed key of volume {} is malformed", record.volume_id);
  }
  OPENSSL_cleanse(opened->data(), opened->size());
  if (params.key.empty()) return std::nullopt;
  params.cipher = record.crypto_cipher;
  params.tweak_mode = record.crypto_tweak_mode;
  return params;
}

absl::Status Agent::VerifyVolume(const VolumeRequest& request, const VolumeRecord& record) {
  const CryptoParams* params = request.crypto.has_value() ? &*request.crypto : nullptr;
  return crypto_.Verify(record.volume_id, record.crypto_bdev, params);
}

// ---- operations -------------------------------------------------------------------------------------

void Agent::WaitUntilReady() {
  absl::MutexLock lock(&bg_mu_);
  bg_mu_.Await(absl::Condition(
      +[](bool* done) { return *done; }, &first_pass_done_));
}

absl::StatusOr<sma::CreateDeviceResponse> Agent::CreateDevice(const sma::CreateDeviceRequest& request) {
  const char* protocol = nullptr;
  switch (request.params_case()) {
    case sma::CreateDeviceRequest::kNvme: protocol = "nvme"; break;
    case sma::CreateDeviceRequest::kVirtioBlk: protocol = "virtio_blk"; break;
    case sma::CreateDeviceRequest::kNvmfTcp: protocol = "nvmf_tcp"; break;
    default: break;
  }
  DeviceManager* manager = protocol != nullptr ? ManagerForProtocol(protocol) : nullptr;
  if (manager == nullptr) return absl::InvalidArgumentError("Unsupported device type");
  std::optional<VolumeRequest> volume;
  if (request.has_volume()) {
    ASSIGN_OR_RETURN(volume, ParseVolumeRequest(request.volume()));
  }
  ASSIGN_OR_RETURN(DeviceSpec planned, manager->PlanDevice(request, nullptr));

  WaitUntilReady();
  absl::ReaderMutexLock running(&ops_mu_);
  // Plugins learn their handle only when creating: serialise their creates per manager.
  std::string device_key = planned.handle.empty() ? absl::StrCat("manager:", manager->name()) : DeviceKey(planned.handle);
  KeyLocks::Guard guard = locks_.Lock({device_key, volume ? VolumeKey(volume->volume_id) : ""});

  std::optional<DeviceSpec> previous;
  std::optional<VolumeRecord> tracked;
  {
    absl::MutexLock lock(&state_mu_);
    if (!planned.handle.empty()) {
      auto it = devices_.find(planned.handle);
      if (it != devices_.end()) previous = it->second;
    }
    if (volume) {
      auto it = volumes_.find(volume->volume_id);
      if (it != volumes_.end()) tracked = it->second;
    }
  }
  DeviceSpec spec = planned;
  if (previous) {
    ASSIGN_OR_RETURN(spec, manager->PlanDevice(request, &*previous));
    // Device-level QoS limits set through SetQos are not part of the request.
    if (previous->params.contains("qos")) spec.params["qos"] = previous->params["qos"];
  }
  if (tracked) {
    if (planned.handle.empty() || tracked->device_handle != planned.handle) {
      return absl::AlreadyExistsError("Volume is already attached to a different device");
    }
    RETURN_IF_ERROR(VerifyVolume(*volume, *tracked));
  }

  if (planned.handle.empty()) {
    // Plugin device: the handle comes from the plugin; record the device once it exists.
    auto created = manager->CreateDevice(spec, nullptr);
    if (!created.ok()) return created.status();
    spec.handle = created->handle;
    if (volume && !tracked) {
      // Volumes with plugin devices: the plugin exposes nothing we can undo generically.
      return absl::UnimplementedError("Method is not implemented by selected device type");
    }
    auto op = BeginOp(absl::StrCat("CreateDevice ", spec.handle), {PutDevice(spec)});
    if (!op.ok()) return op.status();
    CompleteOp(*op);
    sma::CreateDeviceResponse response;
    response.set_handle(spec.handle);
    return response;
  }

  bool device_unchanged = previous && SameSpec(*previous, spec);
  bool volume_done = !volume || (tracked && tracked->nsid != 0);
  if (device_unchanged && volume_done) {
    // An idempotent retry: make sure the target still holds the device (cheap), change nothing.
    std::optional<VolumeExposure> exposure;
    if (volume) exposure = ExposureOf(*tracked);
    auto created = manager->CreateDeviceWithVolume(spec, &*previous, exposure ? &*exposure : nullptr);
    if (!created.ok()) return created.status();
    sma::CreateDeviceResponse response;
    response.set_handle(spec.handle);
    return response;
  }

  VolumeRecord record;
  if (volume) {
    if (tracked) {
      record = *tracked;
    } else {
      ASSIGN_OR_RETURN(record, PlanVolume(*volume));
    }
    record.device_handle = spec.handle;
  }
  std::vector<RecordChange> changes;
  if (!device_unchanged) changes.push_back(PutDevice(spec));
  if (volume) changes.push_back(PutVolume(record));
  ASSIGN_OR_RETURN(Op op, BeginOp(absl::StrCat("CreateDevice ", spec.handle), std::move(changes)));

  bool volume_connected = false;
  auto fail = [&](absl::Status status, bool device_created) {
    if (device_created) {
      absl::Status undone = manager->DeleteDevice(spec);
      if (!undone.ok()) spdlog::warn("agent: undoing the creation of {}: {}", spec.handle, undone.ToString());
    }
    if (volume_connected) CleanupCrypto(record);
    AbortOp(op);
    if (volume_connected) ReleaseDiscovery(record.discovery_services);
    return status;
  };
  if (volume && !tracked) {
    // From here on the connection may have started services or a crypto bdev: undo them on failure.
    volume_connected = true;
    absl::Status connected = ConnectVolume(*volume, record);
    if (!connected.ok()) return fail(connected, false);
  }
  VolumeExposure exposure;
  if (volume) exposure = ExposureOf(record);
  auto created = manager->CreateDeviceWithVolume(spec, previous ? &*previous : nullptr, volume ? &exposure : nullptr);
  if (!created.ok()) return fail(created.status(), false);
  std::vector<RecordChange> final_changes;
  if (volume) {
    absl::Status attached = manager->AttachVolume(spec, exposure);
    if (!attached.ok()) return fail(attached, created->created);
    record.nsid = exposure.nsid;
    final_changes.push_back(PutVolume(record));
  }
  CompleteOp(op, std::move(final_changes));
  sma::CreateDeviceResponse response;
  response.set_handle(spec.handle);
  return response;
}

absl::Status Agent::DeleteDevice(const sma::DeleteDeviceRequest& request) {
  DeviceManager* manager = ManagerForHandle(request.handle());
  if (manager == nullptr) return absl::NotFoundError("Invalid device handle");
  WaitUntilReady();
  absl::ReaderMutexLock running(&ops_mu_);
  KeyLocks::Guard guard = locks_.Lock({DeviceKey(request.handle())});

  std::optional<DeviceSpec> spec;
  std::vector<VolumeRecord> bound;
  {
    absl::MutexLock lock(&state_mu_);
    auto it = devices_.find(request.handle());
    if (it != devices_.end()) spec = it->second;
    for (const auto& [id, v] : volumes_) {
      if (v.device_handle == request.handle()) bound.push_back(v);
    }
  }
  if (!bound.empty() && !manager->allow_delete_volumes()) {
    return absl::FailedPreconditionError("Device has attached volumes");
  }
  if (!spec) {
    // Unknown to smad: delete whatever the target has under this handle (idempotent, as SPDK's SMA).
    auto guess = manager->SpecFromHandle(request.handle());
    if (!guess.ok()) return absl::OkStatus();
    return manager->DeleteDevice(*guess);
  }
  // Volumes bound to the device are locked too (vhost_blk deletes them with the device).
  std::vector<std::string> volume_keys;
  for (const VolumeRecord& v : bound) volume_keys.push_back(VolumeKey(v.volume_id));
  KeyLocks::Guard volume_guard = locks_.Lock(std::move(volume_keys));

  std::vector<RecordChange> changes = {DropDevice(spec->handle)};
  for (const VolumeRecord& v : bound) changes.push_back(DropVolume(v.volume_id));
  ASSIGN_OR_RETURN(Op op, BeginOp(absl::StrCat("DeleteDevice ", spec->handle), std::move(changes)));
  absl::Status deleted = manager->DeleteDevice(*spec);
  if (!deleted.ok()) {
    AbortOp(op);
    return deleted;
  }
  std::vector<std::string> services;
  for (const VolumeRecord& v : bound) {
    CleanupCrypto(v);
    services.insert(services.end(), v.discovery_services.begin(), v.discovery_services.end());
  }
  CompleteOp(op);
  ReleaseDiscovery(services);
  return absl::OkStatus();
}

absl::Status Agent::AttachVolume(const sma::AttachVolumeRequest& request) {
  if (!request.has_volume()) return absl::InvalidArgumentError("Missing required field: volume");
  ASSIGN_OR_RETURN(VolumeRequest volume, ParseVolumeRequest(request.volume()));
  DeviceManager* manager = ManagerForHandle(request.device_handle());
  if (manager == nullptr) return absl::NotFoundError("Invalid device handle");
  if (!manager->supports_attach()) {
    return absl::UnimplementedError("Method is not implemented by selected device type");
  }
  WaitUntilReady();
  absl::ReaderMutexLock running(&ops_mu_);
  KeyLocks::Guard guard = locks_.Lock({DeviceKey(request.device_handle()), VolumeKey(volume.volume_id)});

  std::optional<DeviceSpec> spec;
  std::optional<VolumeRecord> tracked;
  {
    absl::MutexLock lock(&state_mu_);
    auto d = devices_.find(request.device_handle());
    if (d != devices_.end()) spec = d->second;
    auto v = volumes_.find(volume.volume_id);
    if (v != volumes_.end()) tracked = v->second;
  }
  if (!spec) return absl::NotFoundError("Invalid device handle");
  if (tracked) {
    if (tracked->device_handle != spec->handle) {
      return absl::AlreadyExistsError("Volume is already attached to a different device");
    }
    RETURN_IF_ERROR(VerifyVolume(volume, *tracked));
    if (tracked->nsid != 0) return absl::OkStatus();  // already attached: an idempotent retry
  }

  VolumeRecord record;
  if (tracked) {
    record = *tracked;
  } else {
    ASSIGN_OR_RETURN(record, PlanVolume(volume));
  }
  record.device_handle = spec->handle;
  ASSIGN_OR_RETURN(Op op, BeginOp(absl::StrCat("AttachVolume ", volume.volume_id, " to ", spec->handle),
                                  {PutVolume(record)}));
  auto fail = [&](absl::Status status) {
    if (!tracked) CleanupCrypto(record);
    AbortOp(op);
    if (!tracked) ReleaseDiscovery(record.discovery_services);
    return status;
  };
  if (!tracked) {
    absl::Status status = ConnectVolume(volume, record);
    if (!status.ok()) return fail(status);
  }
  VolumeExposure exposure = ExposureOf(record);
  absl::Status attached = manager->AttachVolume(*spec, exposure);
  if (!attached.ok()) return fail(attached);
  record.nsid = exposure.nsid;
  CompleteOp(op, {PutVolume(record)});
  return absl::OkStatus();
}

absl::Status Agent::DetachVolume(const sma::DetachVolumeRequest& request) {
  DeviceManager* manager = ManagerForHandle(request.device_handle());
  if (manager == nullptr) return absl::NotFoundError("Invalid device handle");
  ASSIGN_OR_RETURN(std::string volume_id, ParseVolumeId(request.volume_id()));
  if (!manager->supports_attach()) {
    return absl::UnimplementedError("Method is not implemented by selected device type");
  }
  WaitUntilReady();
  absl::ReaderMutexLock running(&ops_mu_);
  KeyLocks::Guard guard = locks_.Lock({DeviceKey(request.device_handle()), VolumeKey(volume_id)});

  std::optional<DeviceSpec> spec;
  std::optional<VolumeRecord> tracked;
  {
    absl::MutexLock lock(&state_mu_);
    auto d = devices_.find(request.device_handle());
    if (d != devices_.end()) spec = d->second;
    auto v = volumes_.find(volume_id);
    if (v != volumes_.end()) tracked = v->second;
  }
  // Not attached here (never attached, already detached, or attached to another device): nothing to do.
  if (!spec || !tracked || tracked->device_handle != spec->handle) return absl::OkStatus();

  ASSIGN_OR_RETURN(Op op, BeginOp(absl::StrCat("DetachVolume ", volume_id, " from ", spec->handle),
                                  {DropVolume(volume_id)}));
  absl::Status detached = manager->DetachVolume(*spec, ExposureOf(*tracked));
  if (!detached.ok()) {
    AbortOp(op);
    return detached;
  }
  CleanupCrypto(*tracked);
  CompleteOp(op);
  ReleaseDiscovery(tracked->discovery_services);
  return absl::OkStatus();
}

absl::Status Agent::SetQos(const sma::SetQosRequest& request) {
  DeviceManager* manager = ManagerForHandle(request.device_handle());
  if (manager == nullptr) return absl::NotFoundError("Invalid device handle");
  const sma::QosLimit& max = request.maximum();
  if (request.has_maximum()) {
    if (max.rd_iops() != 0 && max.rd_iops() != kLeaveUnchanged) {
      return absl::InvalidArgumentError("Unsupported QoS limit: maximum.rd_iops");
    }
    if (max.wr_iops() != 0 && max.wr_iops() != kLeaveUnchanged) {
      return absl::InvalidArgumentError("Unsupported QoS limit: maximum.wr_iops");
    }
    if (max.rw_iops() != kLeaveUnchanged && max.rw_iops() > kLeaveUnchanged / 1000) {
      return absl::InvalidArgumentError("maximum.rw_iops: too large");
    }
  }
  std::optional<std::string> volume_id;
  if (!request.volume_id().empty()) {
    auto parsed = ParseVolumeId(request.volume_id());
    if (!parsed.ok()) return absl::InvalidArgumentError("Invalid volume ID");
    volume_id = *parsed;
  }
  WaitUntilReady();
  absl::ReaderMutexLock running(&ops_mu_);
  KeyLocks::Guard guard =
      locks_.Lock({DeviceKey(request.device_handle()), volume_id ? VolumeKey(*volume_id) : ""});
  std::optional<DeviceSpec> spec;
  std::optional<VolumeRecord> tracked;
  {
    absl::MutexLock lock(&state_mu_);
    auto d = devices_.find(request.device_handle());
    if (d != devices_.end()) spec = d->second;
    if (volume_id) {
      auto v = volumes_.find(*volume_id);
      if (v != volumes_.end()) tracked = v->second;
    }
  }
  if (!spec) return absl::NotFoundError("No device associated with device_handle could be found");
  if (volume_id && !tracked) return absl::NotFoundError("No volume associated with volume_id could be found");
  if (tracked && tracked->device_handle != spec->handle) {
    return absl::InvalidArgumentError("Specified volume is not attached to the device");
  }
  std::optional<VolumeExposure> exposure;
  if (tracked) exposure = ExposureOf(*tracked);
  ASSIGN_OR_RETURN(std::string bdev, manager->QosBdev(*spec, exposure ? &*exposure : nullptr));

  // Volume-level limits live in the volume record, device-level ones in the device's spec ("qos").
  // UINT64_MAX keeps the current value; anything else (including an absent field: 0) replaces it.
  bool known = tracked ? tracked->qos.has_value() : spec->params.contains("qos");
  QosLimits current = tracked ? tracked->qos.value_or(QosLimits{})
                              : (known ? QosFromJson(spec->params["qos"]) : QosLimits{});
  QosLimits next = current;
  auto pick = [](uint64_t requested, uint64_t now, uint64_t scale) {
    return requested == kLeaveUnchanged ? now : requested * scale;
  };
  next.rw_ios_per_sec = pick(max.rw_iops(), current.rw_ios_per_sec, 1000);
  next.r_mbytes_per_sec = pick(max.rd_bandwidth(), current.r_mbytes_per_sec, 1);
  next.w_mbytes_per_sec = pick(max.wr_bandwidth(), current.w_mbytes_per_sec, 1);
  next.rw_mbytes_per_sec = pick(max.rw_bandwidth(), current.rw_mbytes_per_sec, 1);
  if (known && next == current) return absl::OkStatus();

  RecordChange change;
  if (tracked) {
    VolumeRecord record = *tracked;
    record.qos = next;
    change = PutVolume(record);
  } else {
    DeviceSpec device = *spec;
    device.params["qos"] = QosJson(next);
    change = PutDevice(device);
  }
  ASSIGN_OR_RETURN(Op op, BeginOp(absl::StrCat("SetQos ", request.device_handle()), {std::move(change)}));
  Json params = QosJson(next);
  params["name"] = bdev;
  auto set = rpc_.Call("bdev_set_qos_limit", params);
  if (!set.ok()) {
    AbortOp(op);
    return TargetFailure(set.status(), "Failed to set QoS");
  }
  CompleteOp(op);
  return absl::OkStatus();
}

absl::StatusOr<sma::GetQosCapabilitiesResponse> Agent::GetQosCapabilities(
    const sma::GetQosCapabilitiesRequest& request) {
  const char* protocol = nullptr;
  switch (request.device_type()) {
    case sma::DEVICE_TYPE_NVME: protocol = "nvme"; break;
    case sma::DEVICE_TYPE_VIRTIO_BLK: protocol = "virtio_blk"; break;
    case sma::DEVICE_TYPE_NVMF_TCP: protocol = "nvmf_tcp"; break;
    default: return absl::InvalidArgumentError("Invalid device type");
  }
  DeviceManager* manager = ManagerForProtocol(protocol);
  if (manager == nullptr) return absl::InvalidArgumentError("Unsupported device type");
  return manager->QosCapabilities();
}

// ---- reconciliation ---------------------------------------------------------------------------------

void Agent::RequestReconcile() {
  absl::MutexLock lock(&bg_mu_);
  reconcile_requested_ = true;
}

absl::Status Agent::ReconcileNow() {
  absl::MutexLock exclusive(&ops_mu_);
  return ReconcilePass();
}

absl::Status Agent::ReconcilePass() {
  counters_.reconcile_passes++;
  uint64_t epoch = rpc_.connection_epoch();
  for (DeviceManager* m : managers_) RETURN_IF_ERROR(m->PrepareTarget());

  ASSIGN_OR_RETURN(std::vector<PendingOp> pending, store_.PendingOps());
  std::vector<DeviceSpec> devices;
  std::vector<VolumeRecord> volumes;
  absl::flat_hash_set<std::string> managed;
  {
    absl::MutexLock lock(&state_mu_);
    for (const auto& [h, d] : devices_) devices.push_back(d);
    for (const auto& [id, v] : volumes_) {
      volumes.push_back(v);
      managed.insert(id);
    }
  }
  // Roll pending ops forward. Devices an op deleted must be gone; volumes an op touched are managed
  // (so an exposure it left behind is removed when the desired state no longer has it).
  for (const PendingOp& op : pending) {
    spdlog::info("reconcile: rolling forward pending op {} ({})", op.id, op.description);
    for (size_t i = 0; i < op.before.size(); ++i) {
      const RecordChange& before = op.before[i];
      if (before.kind == kVolumeKind) managed.insert(before.key);
      if (before.kind == kDeviceKind && before.value.has_value()) {
        bool still_wanted = std::any_of(devices.begin(), devices.end(),
                                        [&](const DeviceSpec& d) { return d.handle == before.key; });
        if (still_wanted) continue;
        auto spec = ParseDeviceRecord(before.key, *before.value);
        DeviceManager* m = spec.ok() ? ManagerForHandle(spec->handle) : nullptr;
        if (m != nullptr) RETURN_IF_ERROR(m->DeleteDevice(*spec));
      }
    }
    for (const RecordChange& after : op.after) {
      if (after.kind == kVolumeKind) managed.insert(after.key);
    }
  }

  RETURN_IF_ERROR(ReconcileVolumes(pending, volumes));

  std::vector<RecordChange> nsid_updates;
  // One device that cannot be reconciled (say its QEMU is unreachable) must not keep the others from
  // being restored: remember the first failure, go on, and fail the pass at the end so it is retried.
  // Only when the target itself is unreachable is the rest pointless.
  absl::Status device_failure;
  for (DeviceManager* m : managers_) {
    RETURN_IF_ERROR(m->BeginReconcile());
    absl::Status target_down;
    for (const DeviceSpec& d : devices) {
      if (ManagerForHandle(d.handle) != m) continue;
      std::vector<VolumeExposure> exposures;
      std::vector<VolumeRecord*> owners;
      for (VolumeRecord& v : volumes) {
        if (v.device_handle == d.handle) {
          exposures.push_back(ExposureOf(v));
          owners.push_back(&v);
        }
      }
      absl::Status status = m->Reconcile(d, exposures, managed);
      if (!status.ok()) {
        if (IsTransportError(status) && !rpc_.Call("spdk_get_version").ok()) {
          target_down = status;
          break;
        }
        spdlog::warn("reconcile: device {}: {}; the other devices go on, this one is retried", d.handle,
                     status.ToString());
        if (device_failure.ok()) device_failure = status;
        continue;
      }
      for (size_t i = 0; i < exposures.size(); ++i) {
        if (owners[i]->nsid != exposures[i].nsid) {
          owners[i]->nsid = exposures[i].nsid;
          nsid_updates.push_back(PutVolume(*owners[i]));
        }
      }
    }
    m->EndReconcile();
    RETURN_IF_ERROR(target_down);
  }
  // QoS limits live in the target's memory: set them again.
  std::vector<std::pair<std::string, QosLimits>> limits;  // bdev -> limits
  for (const VolumeRecord& v : volumes) {
    if (v.qos.has_value() && v.nsid != 0) limits.emplace_back(v.volume_id, *v.qos);
  }
  for (const DeviceSpec& d : devices) {
    DeviceManager* m = ManagerForHandle(d.handle);
    if (m == nullptr || !d.params.contains("qos")) continue;
    auto bdev = m->QosBdev(d, nullptr);
    if (bdev.ok()) {
      limits.emplace_back(*bdev, QosFromJson(d.params["qos"]));
    } else {
      spdlog::warn("reconcile: device-level QoS of {}: {}", d.handle, bdev.status().ToString());
    }
  }
  for (const auto& [bdev, qos] : limits) {
    Json params = QosJson(qos);
    params["name"] = bdev;
    auto set = rpc_.Call("bdev_set_qos_limit", params);
    if (!set.ok()) {
      if (IsTransportError(set.status())) return set.status();
      spdlog::warn("reconcile: QoS of bdev {}: {}", bdev, set.status().ToString());
    }
  }
  if (!nsid_updates.empty()) {
    absl::MutexLock lock(&state_mu_);
    ApplyToMemory(nsid_updates);
  }
  if (!nsid_updates.empty()) RETURN_IF_ERROR(store_.Apply(std::move(nsid_updates)));
  RETURN_IF_ERROR(device_failure);  // pending ops stay pending until every device is reconciled
  for (const PendingOp& op : pending) RETURN_IF_ERROR(store_.CompleteOp(op.id, {}));
  if (rpc_.connection_epoch() != epoch) return absl::UnavailableError("the target connection changed during the pass");
  synced_epoch_ = epoch;
  return absl::OkStatus();
}

void Agent::DropVolumeForReconcile(const VolumeRecord& volume, const std::string& why) {
  spdlog::warn("reconcile: rolling back the unfinished connection of volume {}: {}", volume.volume_id, why);
  CleanupCrypto(volume);
  absl::Status dropped = ApplyDurably({DropVolume(volume.volume_id)});
  if (!dropped.ok()) spdlog::warn("reconcile: forgetting volume {}: {}", volume.volume_id, dropped.ToString());
}

absl::Status Agent::ReconcileVolumes(const std::vector<PendingOp>& pending, std::vector<VolumeRecord>& volumes) {
  auto wanted = [&volumes](const std::string& id) {
    return std::any_of(volumes.begin(), volumes.end(), [&id](const VolumeRecord& v) { return v.volume_id == id; });
  };
  // 1. Crypto bdevs of volumes that an interrupted op was removing.
  for (const PendingOp& op : pending) {
    for (const RecordChange& before : op.before) {
      if (before.kind != kVolumeKind || !before.value.has_value() || wanted(before.key)) continue;
      auto v = ParseVolumeRecord(before.key, *before.value);
      if (v.ok()) CleanupCrypto(*v);
    }
  }
  // 2. Connections interrupted before their references were recorded never succeeded: roll them back.
  std::vector<std::string> released;
  for (auto it = volumes.begin(); it != volumes.end();) {
    if (it->connecting && it->remote() && it->discovery_services.empty()) {
      DropVolumeForReconcile(*it, "interrupted before its discovery services were recorded");
      it = volumes.erase(it);
    } else {
      ++it;
    }
  }
  // 3. Discovery services smad started: stop unreferenced ones, start referenced ones the target lacks.
  std::vector<DiscoveryRecord> services;
  {
    absl::MutexLock lock(&state_mu_);
    for (const auto& [name, d] : discovery_) services.push_back(d);
  }
  if (!services.empty()) {
    ASSIGN_OR_RETURN(std::vector<TargetDiscoveryService> running, discovery_client_.List());
    for (const DiscoveryRecord& d : services) {
      bool referenced = std::any_of(volumes.begin(), volumes.end(),
                                    [&d](const VolumeRecord& v) { return References(v, d.name); });
      bool is_running = std::any_of(running.begin(), running.end(),
                                    [&d](const TargetDiscoveryService& t) { return t.name == d.name; });
      if (!referenced) {
        spdlog::info("reconcile: stopping unreferenced discovery service {}", d.name);
        RETURN_IF_ERROR(discovery_client_.Stop(d.name));
        RETURN_IF_ERROR(ApplyDurably({DropDiscovery(d.name)}));
      } else if (!is_running) {
        spdlog::info("reconcile: restarting discovery service {} ({}:{})", d.name, d.endpoint.traddr,
                     d.endpoint.trsvcid);
        absl::Status started = discovery_client_.Start(d.name, d.endpoint, d.hostnqn);
        if (IsTransportError(started)) return started;
        // A remote that does not answer: its volumes stay unexposed, and the cleanup pass forgets them.
        if (!started.ok()) spdlog::warn("reconcile: discovery service {}: {}", d.name, started.ToString());
      }
    }
  }
  // 4. Finish interrupted connections (roll back those that cannot be), restore crypto bdevs.
  for (auto it = volumes.begin(); it != volumes.end();) {
    VolumeRecord& v = *it;
    if (!v.crypto_bdev.empty() && v.crypto_engine != crypto_.name()) {
      spdlog::warn("reconcile: volume {} was encrypted by engine {}, but {} is configured; not restoring it",
                   v.volume_id, v.crypto_engine, crypto_.name());
      ++it;
      continue;
    }
    std::optional<CryptoParams> crypto = UnsealCrypto(v);
    if (v.connecting) {
      absl::Status finished = FinishConnect(v, crypto ? &*crypto : nullptr, /*restore=*/true);
      if (IsTransportError(finished)) return finished;
      if (!finished.ok()) {
        DropVolumeForReconcile(v, finished.ToString());
        released.insert(released.end(), v.discovery_services.begin(), v.discovery_services.end());
        it = volumes.erase(it);
        continue;
      }
      RETURN_IF_ERROR(ApplyDurably({PutVolume(v)}));
    } else if (!v.crypto_bdev.empty()) {
      if (!crypto) {
        spdlog::warn("reconcile: the key of encrypted volume {} is not kept; its crypto bdev is not restored",
                     v.volume_id);
      } else {
        absl::Status restored = crypto_.Restore(v.volume_id, v.volume_id, v.crypto_bdev, *crypto);
        if (IsTransportError(restored)) return restored;
        if (!restored.ok()) spdlog::warn("reconcile: crypto of volume {}: {}", v.volume_id, restored.ToString());
      }
    }
    ++it;
  }
  ReleaseDiscovery(released);
  return absl::OkStatus();
}

absl::Status Agent::CleanupVolumesNow() { return CleanupPass(); }

absl::Status Agent::CleanupPass() {
  // Volumes whose bdev vanished (a remote namespace removed, a hot-removed disk) are forgotten, as in
  // SPDK's SMA: their discovery references and crypto bdevs are released.
  std::vector<VolumeRecord> volumes;
  {
    absl::MutexLock lock(&state_mu_);
    for (const auto& [id, v] : volumes_) {
      if (!v.discovery_services.empty() && !v.connecting) volumes.push_back(v);
    }
  }
  if (volumes.empty()) return absl::OkStatus();
  auto bdevs = rpc_.Call("bdev_get_bdevs");
  if (!bdevs.ok()) return bdevs.status();
  absl::flat_hash_set<std::string> present;
  if (bdevs->is_array()) {
    for (const Json& b : *bdevs) {
      if (b.is_object() && b.contains("uuid") && b["uuid"].is_string()) present.insert(b["uuid"].get<std::string>());
    }
  }
  for (const VolumeRecord& v : volumes) {
    if (present.contains(v.volume_id)) continue;
    absl::ReaderMutexLock running(&ops_mu_);
    KeyLocks::Guard guard = locks_.Lock({VolumeKey(v.volume_id)});
    auto op = BeginOp(absl::StrCat("cleanup of vanished volume ", v.volume_id), {DropVolume(v.volume_id)});
    if (!op.ok()) return op.status();
    spdlog::info("cleanup: volume {} vanished from the target; forgetting it", v.volume_id);
    CleanupCrypto(v);
    CompleteOp(*op);
    ReleaseDiscovery(v.discovery_services);
    counters_.volumes_cleaned++;
  }
  return absl::OkStatus();
}

void Agent::BackgroundLoop() {
  auto backoff = options_.reconcile_retry_min;
  auto next_cleanup = std::chrono::steady_clock::now() + options_.volume_cleanup_period;
  for (;;) {
    bool want_reconcile;
    {
      absl::MutexLock lock(&bg_mu_);
      if (stop_) break;
      want_reconcile = reconcile_requested_ || rpc_.connection_epoch() != synced_epoch_;
      reconcile_requested_ = false;
    }
    if (want_reconcile) {
      in_sync_ = false;
      absl::Status status;
      {
        absl::MutexLock exclusive(&ops_mu_);
        status = ReconcilePass();
      }
      {
        absl::MutexLock lock(&bg_mu_);
        first_pass_done_ = true;
      }
      if (status.ok()) {
        in_sync_ = true;
        backoff = options_.reconcile_retry_min;
        spdlog::info("reconcile: target matches the desired state");
      } else {
        counters_.reconcile_failures++;
        spdlog::warn("reconcile: pass failed ({}); retrying in {} ms", status.ToString(), backoff.count());
        absl::MutexLock lock(&bg_mu_);
        reconcile_requested_ = true;
        bg_mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::FromChrono(backoff));
        backoff = std::min(backoff * 2, options_.reconcile_retry_max);
        continue;
      }
    }
    if (std::chrono::steady_clock::now() >= next_cleanup) {
      absl::Status cleaned = CleanupPass();
      if (!cleaned.ok()) spdlog::warn("cleanup: {}", cleaned.ToString());
      next_cleanup = std::chrono::steady_clock::now() + options_.volume_cleanup_period;
    }
    absl::MutexLock lock(&bg_mu_);
    auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(bg_mu_) {
      return stop_ || reconcile_requested_ || rpc_.connection_epoch() != synced_epoch_;
    };
    bg_mu_.AwaitWithTimeout(absl::Condition(&wake), absl::Milliseconds(100));
  }
}

std::vector<DeviceSpec> Agent::DevicesForTest() const {
  absl::MutexLock lock(&state_mu_);
  std::vector<DeviceSpec> out;
  for (const auto& [h, d] : devices_) out.push_back(d);
  return out;
}

std::vector<VolumeRecord> Agent::VolumesForTest() const {
  absl::MutexLock lock(&state_mu_);
  std::vector<VolumeRecord> out;
  for (const auto& [id, v] : volumes_) out.push_back(v);
  return out;
}

}  // namespace smad::agent
