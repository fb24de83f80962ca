#include "agent/plugin/plugin_loader.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/plugin/plugin_abi.h"
#include "common/status.h"
#include "common/uuid.h"
#include "google/protobuf/util/json_util.h"
#include "spdlog/spdlog.h"

namespace smad::agent {
namespace {

constexpr char kNotImplemented[] = "Method is not implemented by selected device type";

// ---- the active crypto engine's name, as reported to plugins ------------------------------------

struct ActiveEngine {
  absl::Mutex mu;
  std::string name ABSL_GUARDED_BY(mu) = "nop";
};

ActiveEngine& Engine() {
  static auto* engine = new ActiveEngine;  // never destroyed: plugins may ask during shutdown
  return *engine;
}

std::string ActiveEngineName() {
  ActiveEngine& engine = Engine();
  absl::MutexLock lock(&engine.mu);
  return engine.name;
}

// ---- boundary helpers ---------------------------------------------------------------------------

// A smad_sink that copies into a std::string. Not copyable: the C struct points at it.
class StringSink {
 public:
  StringSink() : sink_{this, &StringSink::Assign} {}
  StringSink(const StringSink&) = delete;
  StringSink& operator=(const StringSink&) = delete;

  smad_sink* get() { return &sink_; }
  std::string& value() { return value_; }

 private:
  static void Assign(void* opaque, const void* data, size_t len) {
    auto* self = static_cast<StringSink*>(opaque);
    if (len == 0) {
      self->value_.clear();
    } else {
      self->value_.assign(static_cast<const char*>(data), len);
    }
  }

  smad_sink sink_;
  std::string value_;
};

void AssignTo(smad_sink* sink, absl::string_view text) {
  if (sink != nullptr) sink->assign(sink->opaque, text.data(), text.size());
}

// A callback's result as a status, with the message it wrote into `error`. Codes outside gRPC's
// range become Unknown; an empty message names what failed. (Takes the sink, not its string: the
// callback must have run before the message is read, which argument evaluation order would not
// guarantee.)
absl::Status CallbackStatus(int32_t code, StringSink& error, absl::string_view what) {
  if (code == SMAD_STATUS_OK) return absl::OkStatus();
  if (code < 1 || code > 16) code = SMAD_STATUS_UNKNOWN;
  std::string message = std::move(error.value());
  if (message.empty()) message = absl::StrCat(what, " failed");
  return absl::Status(static_cast<absl::StatusCode>(code), message);
}

// Copies a descriptor of `struct_size` bytes into a zero-initialised T (fields a smaller, older
// plugin struct lacks stay zero/NULL; fields a newer one appended are ignored).
template <typename T>
T CopyDescriptor(const T& in) {
  T out;
  std::memset(&out, 0, sizeof(out));
  std::memcpy(&out, &in, std::min<size_t>(in.struct_size, sizeof(T)));
  out.struct_size = sizeof(T);
  return out;
}

std::string DumpJson(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// ---- host services ------------------------------------------------------------------------------

// What an instance's smad_host_v1 points at. Lives as long as the instance's wrapper.
struct HostContext {
  smad_host_v1 host;
  TargetRpc* rpc;
  std::string plugin;
};

void HostActiveCryptoEngine(const smad_host_v1* host, smad_sink* name) {
  try {
    AssignTo(name, ActiveEngineName());
  } catch (...) {
    AssignTo(name, "");
  }
}

int32_t HostTargetCall(const smad_host_v1* host, const char* method, const char* params_json,
                       uint32_t timeout_ms, smad_sink* result_json, smad_sink* error_message) {
  auto* context = static_cast<HostContext*>(host->opaque);
  try {
    if (method == nullptr || *method == '\0') {
      AssignTo(error_message, "target_call: missing method");
      return SMAD_STATUS_INVALID_ARGUMENT;
    }
    Json params;
    if (params_json != nullptr && *params_json != '\0') {
      params = Json::parse(params_json, nullptr, /*allow_exceptions=*/false);
      if (params.is_discarded()) {
        AssignTo(error_message,
                 absl::StrCat("target_call ", method, ": params_json is not valid JSON"));
        return SMAD_STATUS_INVALID_ARGUMENT;
      }
    }
    absl::StatusOr<Json> answer =
        timeout_ms == 0 ? context->rpc->Call(method, params)
                        : context->rpc->Call(method, params, std::chrono::milliseconds(timeout_ms));
    if (!answer.ok()) {
      AssignTo(error_message, answer.status().message());
      return static_cast<int32_t>(answer.status().code());
    }
    if (result_json != nullptr) AssignTo(result_json, DumpJson(*answer));
    return SMAD_STATUS_OK;
  } catch (const std::exception& e) {
    AssignTo(error_message, absl::StrCat("target_call: ", e.what()));
  } catch (...) {
    AssignTo(error_message, "target_call: unexpected failure");
  }
  return SMAD_STATUS_INTERNAL;
}

void HostLog(const smad_host_v1* host, int32_t level, const char* message) {
  auto* context = static_cast<HostContext*>(host->opaque);
  if (message == nullptr) return;
  try {
    switch (level) {
      case SMAD_LOG_DEBUG:
        spdlog::debug("plugin {}: {}", context->plugin, message);
        break;
      case SMAD_LOG_INFO:
        spdlog::info("plugin {}: {}", context->plugin, message);
        break;
      case SMAD_LOG_WARN:
        spdlog::warn("plugin {}: {}", context->plugin, message);
        break;
      default:
        spdlog::error("plugin {}: {}", context->plugin, message);
        break;
    }
  } catch (...) {
    // Logging never fails a plugin call.
  }
}

// One instance of a plugin object (a device manager or a crypto engine) and the host services it was
// given: create_instance(user_data, host) in the constructor (or user_data itself when the plugin has no
// create_instance), destroy_instance in the destructor. Not movable: the host services point at it.
class PluginInstance {
 public:
  PluginInstance(TargetRpc& rpc, std::string plugin, void* (*create)(void*, const smad_host_v1*),
                 void (*destroy)(void*), void* user_data)
      : destroy_(destroy) {
    context_.rpc = &rpc;
    context_.plugin = std::move(plugin);
    smad_host_v1& host = context_.host;
    std::memset(&host, 0, sizeof(host));
    host.struct_size = sizeof(host);
    host.opaque = &context_;
    host.active_crypto_engine = &HostActiveCryptoEngine;
    host.target_call = &HostTargetCall;
    host.log = &HostLog;
    if (create == nullptr) {
      instance_ = user_data;
      created_ = true;
    } else {
      instance_ = create(user_data, &host);
      created_ = instance_ != nullptr;
    }
  }
  ~PluginInstance() {
    if (created_ && destroy_ != nullptr) destroy_(instance_);
  }
  PluginInstance(const PluginInstance&) = delete;
  PluginInstance& operator=(const PluginInstance&) = delete;

  void* get() const { return instance_; }
  bool created() const { return created_; }
  // OK, or Internal "<object>: create_instance failed".
  absl::Status Check(absl::string_view object) const {
    if (created_) return absl::OkStatus();
    return absl::InternalError(absl::StrCat(object, ": create_instance failed"));
  }

 private:
  HostContext context_;
  void (*const destroy_)(void*);
  void* instance_ = nullptr;
  bool created_ = false;
};

// ---- device managers ----------------------------------------------------------------------------

struct ManagerDescriptor {
  std::string plugin;
  std::string name;
  std::string protocol;
  smad_device_manager_v1 c;  // name/protocol pointers cleared: use the strings above
};

absl::StatusOr<std::string> VolumeIdBytes(const std::string& volume_id) {
  absl::StatusOr<Uuid> uuid = Uuid::Parse(volume_id);
  if (!uuid.ok()) return absl::InvalidArgumentError(absl::StrCat("Invalid volume ID: ", volume_id));
  return std::string(reinterpret_cast<const char*>(uuid->bytes().data()), uuid->bytes().size());
}

bool RequestMatchesProtocol(const sma::CreateDeviceRequest& request, const std::string& protocol) {
  switch (request.params_case()) {
    case sma::CreateDeviceRequest::kNvme:
      return protocol == "nvme";
    case sma::CreateDeviceRequest::kVirtioBlk:
      return protocol == "virtio_blk";
    case sma::CreateDeviceRequest::kNvmfTcp:
      return protocol == "nvmf_tcp";
    default:
      return false;
  }
}

sma::DeviceType DeviceTypeOf(const std::string& protocol) {
  if (protocol == "nvme") return sma::DEVICE_TYPE_NVME;
  if (protocol == "virtio_blk") return sma::DEVICE_TYPE_VIRTIO_BLK;
  if (protocol == "nvmf_tcp") return sma::DEVICE_TYPE_NVMF_TCP;
  return sma::DEVICE_TYPE_INVALID;
}

// A plugin's device manager behind smad's C++ interface. Specs carry the CreateDeviceRequest
// (without its volume) as proto-JSON in params["request"]; the handle is only known once the plugin
// created the device. Thread safety: no mutable state of its own; the plugin instance synchronises
// itself.
class PluginDeviceManager final : public DeviceManager {
 public:
  PluginDeviceManager(std::shared_ptr<const ManagerDescriptor> descriptor, TargetRpc& rpc)
      : d_(std::move(descriptor)),
        instance_(rpc, d_->plugin, d_->c.create_instance, d_->c.destroy_instance, d_->c.user_data) {}
  PluginDeviceManager(const PluginDeviceManager&) = delete;
  PluginDeviceManager& operator=(const PluginDeviceManager&) = delete;

  const std::string& name() const override { return d_->name; }
  const std::string& protocol() const override { return d_->protocol; }
  bool allow_delete_volumes() const override { return d_->c.allow_delete_volumes != 0; }
  bool supports_attach() const override {
    return d_->c.attach_volume != nullptr || d_->c.detach_volume != nullptr;
  }

  absl::Status Init(const Json& params) override {
    RETURN_IF_ERROR(CheckInstance());
    if (d_->c.init == nullptr) return absl::OkStatus();
    std::string text = DumpJson(params);
    StringSink error;
    return CallbackStatus(d_->c.init(instance_.get(), text.c_str(), error.get()), error, "init");
  }

  bool OwnsHandle(absl::string_view handle) const override {
    if (!instance_.created() || d_->c.owns_device == nullptr) return false;
    std::string terminated(handle);
    return d_->c.owns_device(instance_.get(), terminated.c_str(), terminated.size()) != 0;
  }

  // A device smad has no record of: the plugin deletes by handle alone.
  absl::StatusOr<DeviceSpec> SpecFromHandle(absl::string_view handle) const override {
    if (!OwnsHandle(handle)) return absl::NotFoundError("unknown device");
    return DeviceSpec{std::string(handle), d_->name, Json()};
  }

  absl::StatusOr<DeviceSpec> PlanDevice(const sma::CreateDeviceRequest& request,
                                        const DeviceSpec* previous) const override {
    if (!RequestMatchesProtocol(request, d_->protocol)) {
      return absl::InvalidArgumentError("Unsupported device type");
    }
    sma::CreateDeviceRequest stored = request;
    stored.clear_volume();  // volumes (and their crypto keys) are smad's business, not the plugin's
    std::string json;
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    if (!google::protobuf::util::MessageToJsonString(stored, &json, options).ok()) {
      return absl::InternalError(Prefix("cannot encode the CreateDeviceRequest"));
    }
    Json parsed = Json::parse(json, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded())
      return absl::InternalError(Prefix("cannot encode the CreateDeviceRequest"));
    return DeviceSpec{"", d_->name, Json{{"request", std::move(parsed)}}};
  }

  absl::StatusOr<Created> CreateDevice(const DeviceSpec& spec,
                                       const DeviceSpec* previous) override {
    ASSIGN_OR_RETURN(sma::CreateDeviceRequest request, StoredRequest(spec));
    ASSIGN_OR_RETURN(std::string handle, CallCreate(request));
    return Created{std::move(handle), /*created=*/true};
  }

  absl::Status DeleteDevice(const DeviceSpec& spec) override {
    RETURN_IF_ERROR(CheckInstance());
    if (d_->c.delete_device == nullptr) return absl::UnimplementedError(kNotImplemented);
    sma::DeleteDeviceRequest request;
    request.set_handle(spec.handle);
    std::string bytes = request.SerializeAsString();
    StringSink error;
    return CallbackStatus(d_->c.delete_device(instance_.get(), Data(bytes), bytes.size(), error.get()),
                          error, "delete_device");
  }

  absl::Status AttachVolume(const DeviceSpec& device, VolumeExposure& volume) override {
    RETURN_IF_ERROR(CheckInstance());
    if (d_->c.attach_volume == nullptr) return absl::UnimplementedError(kNotImplemented);
    ASSIGN_OR_RETURN(std::string volume_id, VolumeIdBytes(volume.volume_id));
    sma::AttachVolumeRequest request;
    request.mutable_volume()->set_volume_id(volume_id);
    request.set_device_handle(device.handle);
    std::string bytes = request.SerializeAsString();
    smad_volume_exposure exposure{volume.volume_id.c_str(), volume.bdev_name.c_str(), volume.nsid};
    StringSink error;
    RETURN_IF_ERROR(CallbackStatus(
        d_->c.attach_volume(instance_.get(), Data(bytes), bytes.size(), &exposure, error.get()), error,
        "attach_volume"));
    // smad reads nsid 0 as "not exposed"; a device without namespace IDs is recorded as 1.
    volume.nsid = exposure.nsid != 0 ? exposure.nsid : 1;
    return absl::OkStatus();
  }

  absl::Status DetachVolume(const DeviceSpec& device, const VolumeExposure& volume) override {
    RETURN_IF_ERROR(CheckInstance());
    if (d_->c.detach_volume == nullptr) return absl::UnimplementedError(kNotImplemented);
    ASSIGN_OR_RETURN(std::string volume_id, VolumeIdBytes(volume.volume_id));
    sma::DetachVolumeRequest request;
    request.set_volume_id(volume_id);
    request.set_device_handle(device.handle);
    std::string bytes = request.SerializeAsString();
    const smad_volume_exposure exposure{volume.volume_id.c_str(), volume.bdev_name.c_str(),
                                        volume.nsid};
    StringSink error;
    return CallbackStatus(
        d_->c.detach_volume(instance_.get(), Data(bytes), bytes.size(), &exposure, error.get()), error,
        "detach_volume");
  }

  // Re-creates the device with its stored request (create_device is idempotent by contract) and
  // re-attaches `volumes`. A plugin cannot list what a device exposes, so nothing is removed:
  // `managed_volume_ids` is unused.
  absl::Status Reconcile(const DeviceSpec& spec, std::vector<VolumeExposure>& volumes,
                         const absl::flat_hash_set<std::string>& managed_volume_ids) override {
    RETURN_IF_ERROR(CheckInstance());
    if (d_->c.create_device != nullptr) {
      ASSIGN_OR_RETURN(sma::CreateDeviceRequest request, StoredRequest(spec));
      ASSIGN_OR_RETURN(std::string handle, CallCreate(request));
      if (handle != spec.handle) {
        return absl::InternalError(
            Prefix(absl::StrCat("re-creating device ", spec.handle, " returned handle ", handle)));
      }
    }
    if (d_->c.attach_volume != nullptr) {
      for (VolumeExposure& volume : volumes) RETURN_IF_ERROR(AttachVolume(spec, volume));
    }
    return absl::OkStatus();
  }

  // smad applies the limits itself (see plugin_abi.h); a manager without set_qos has no QoS at all.
  absl::StatusOr<std::string> QosBdev(const DeviceSpec& device,
                                      const VolumeExposure* volume) override {
    if (d_->c.set_qos == nullptr) return absl::UnimplementedError(kNotImplemented);
    return DeviceManager::QosBdev(device, volume);
  }

  sma::GetQosCapabilitiesResponse QosCapabilities() const override {
    sma::GetQosCapabilitiesResponse response;
    if (!instance_.created() || d_->c.get_qos_capabilities == nullptr) return response;
    sma::GetQosCapabilitiesRequest request;
    request.set_device_type(DeviceTypeOf(d_->protocol));
    std::string bytes = request.SerializeAsString();
    StringSink out;
    StringSink error;
    absl::Status status = CallbackStatus(
        d_->c.get_qos_capabilities(instance_.get(), Data(bytes), bytes.size(), out.get(), error.get()),
        error, "get_qos_capabilities");
    if (status.ok() && !response.ParseFromString(out.value())) {
      status = absl::InternalError("malformed GetQosCapabilitiesResponse");
    }
    if (!status.ok()) {
      // The interface has no error path here: report no capabilities, as for an unimplemented call.
      spdlog::warn("{}", Prefix(absl::StrCat("get_qos_capabilities: ", status.ToString())));
      response.Clear();
    }
    return response;
  }

 private:
  static const uint8_t* Data(const std::string& bytes) {
    return reinterpret_cast<const uint8_t*>(bytes.data());
  }

  std::string Prefix(absl::string_view what) const {
    return absl::StrCat("plugin ", d_->plugin, ": device manager ", d_->name, ": ", what);
  }

  absl::Status CheckInstance() const {
    return instance_.Check(absl::StrCat("plugin ", d_->plugin, ": device manager ", d_->name));
  }

  absl::StatusOr<sma::CreateDeviceRequest> StoredRequest(const DeviceSpec& spec) const {
    sma::CreateDeviceRequest request;
    auto it = spec.params.is_object() ? spec.params.find("request") : spec.params.end();
    if (it == spec.params.end() || !it->is_object()) {
      return absl::InternalError(
          Prefix(absl::StrCat("device ", spec.handle, " has no stored request")));
    }
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = true;
    if (!google::protobuf::util::JsonStringToMessage(DumpJson(*it), &request, options).ok()) {
      return absl::InternalError(
          Prefix(absl::StrCat("device ", spec.handle, ": unreadable stored request")));
    }
    return request;
  }

  absl::StatusOr<std::string> CallCreate(const sma::CreateDeviceRequest& request) {
    RETURN_IF_ERROR(CheckInstance());
    if (d_->c.create_device == nullptr) return absl::UnimplementedError(kNotImplemented);
    std::string bytes = request.SerializeAsString();
    StringSink out;
    StringSink error;
    RETURN_IF_ERROR(CallbackStatus(
        d_->c.create_device(instance_.get(), Data(bytes), bytes.size(), out.get(), error.get()), error,
        "create_device"));
    sma::CreateDeviceResponse response;
    if (!response.ParseFromString(out.value())) {
      return absl::InternalError(Prefix("create_device returned a malformed CreateDeviceResponse"));
    }
    if (response.handle().empty())
      return absl::InternalError(Prefix("create_device returned no handle"));
    return std::move(*response.mutable_handle());
  }

  std::shared_ptr<const ManagerDescriptor> d_;
  PluginInstance instance_;
};

// ---- crypto engines -----------------------------------------------------------------------------

struct EngineDescriptor {
  std::string plugin;
  std::string name;
  smad_crypto_engine_v1 c;  // name pointer cleared
};

smad_crypto_params ToC(const CryptoParams& params) {
  return smad_crypto_params{params.key.c_str(), params.key.size(), params.key2.c_str(),
                            params.key2.size(), params.cipher,     params.tweak_mode};
}

// A plugin's crypto engine behind smad's C++ interface. Thread safety: as PluginDeviceManager.
class PluginCryptoEngine final : public CryptoEngine {
 public:
  PluginCryptoEngine(std::shared_ptr<const EngineDescriptor> descriptor, TargetRpc& rpc)
      : d_(std::move(descriptor)),
        instance_(rpc, d_->plugin, d_->c.create_instance, d_->c.destroy_instance, d_->c.user_data) {}
  PluginCryptoEngine(const PluginCryptoEngine&) = delete;
  PluginCryptoEngine& operator=(const PluginCryptoEngine&) = delete;

  const std::string& name() const override { return d_->name; }

  absl::Status Init(const Json& params) override {
    RETURN_IF_ERROR(CheckInstance());
    if (d_->c.init == nullptr) return absl::OkStatus();
    std::string text = DumpJson(params);
    StringSink error;
    return CallbackStatus(d_->c.init(instance_.get(), text.c_str(), error.get()), error, "init");
  }

  absl::StatusOr<std::string> Setup(const std::string& volume_id, const std::string& volume_bdev,
                                    const CryptoParams& params) override {
    RETURN_IF_ERROR(CheckInstance());
    smad_crypto_params c_params = ToC(params);
    StringSink crypto_bdev;
    StringSink error;
    RETURN_IF_ERROR(CallbackStatus(d_->c.setup(instance_.get(), volume_id.c_str(), volume_bdev.c_str(),
                                               &c_params, crypto_bdev.get(), error.get()),
                                   error, "setup"));
    return crypto_bdev.value().empty() ? volume_bdev : std::move(crypto_bdev.value());
  }

  absl::Status Verify(const std::string& volume_id, const std::string& crypto_bdev,
                      const CryptoParams* params) override {
    RETURN_IF_ERROR(CheckInstance());
    if (d_->c.verify == nullptr) return absl::OkStatus();
    smad_crypto_params c_params{};
    if (params != nullptr) c_params = ToC(*params);
    StringSink error;
    return CallbackStatus(d_->c.verify(instance_.get(), volume_id.c_str(), crypto_bdev.c_str(),
                                       params != nullptr ? &c_params : nullptr, error.get()),
                          error, "verify");
  }

  absl::Status Cleanup(const std::string& volume_id, const std::string& crypto_bdev) override {
    RETURN_IF_ERROR(CheckInstance());
    if (d_->c.cleanup == nullptr) return absl::OkStatus();
    StringSink error;
    return CallbackStatus(
        d_->c.cleanup(instance_.get(), volume_id.c_str(), crypto_bdev.c_str(), error.get()), error,
        "cleanup");
  }

 private:
  absl::Status CheckInstance() const {
    return instance_.Check(absl::StrCat("plugin ", d_->plugin, ": crypto engine ", d_->name));
  }

  std::shared_ptr<const EngineDescriptor> d_;
  PluginInstance instance_;
};

// ---- registration -------------------------------------------------------------------------------

// What a plugin registers during register_plugin, checked and added to the Registry only when all
// of it is acceptable (so a failed load leaves the Registry untouched).
struct Staging {
  std::string plugin;
  const Registry* registry;
  std::vector<std::shared_ptr<const ManagerDescriptor>> managers;
  std::vector<std::shared_ptr<const EngineDescriptor>> engines;
  absl::Status error;  // the first failure

  int32_t Fail(absl::Status status) {
    if (error.ok()) error = status;
    return static_cast<int32_t>(status.code());
  }
};

// Runs a registrar callback's `body(staging, fail)`, where fail(code, what) records "plugin <name>:
// <what>" as the load's first error and returns the code to give the plugin. Never throws into C.
template <typename Body>
int32_t RunRegistration(const smad_registrar_v1* registrar, Body&& body) {
  auto* staging = static_cast<Staging*>(registrar->opaque);
  try {
    auto fail = [staging](absl::StatusCode code, absl::string_view what) {
      return staging->Fail(absl::Status(code, absl::StrCat("plugin ", staging->plugin, ": ", what)));
    };
    return body(*staging, fail);
  } catch (...) {
    return staging->Fail(absl::InternalError(absl::StrCat("plugin ", staging->plugin, ": out of memory")));
  }
}

// Whether `name` is staged in `staged` already or `registered` (what the Registry found) is set.
template <typename Descriptors>
bool NameTaken(const Descriptors& staged, const std::string& name, const void* registered) {
  return registered != nullptr ||
         std::any_of(staged.begin(), staged.end(), [&](const auto& d) { return d->name == name; });
}

int32_t AddDeviceManager(const smad_registrar_v1* registrar, const smad_device_manager_v1* manager) {
  return RunRegistration(registrar, [&](Staging& staging, auto fail) {
    if (manager == nullptr || manager->struct_size < sizeof(smad_device_manager_v1)) {
      return fail(absl::StatusCode::kInvalidArgument, "malformed device manager descriptor");
    }
    if (manager->name == nullptr || *manager->name == '\0') {
      return fail(absl::StatusCode::kInvalidArgument, "device manager without a name");
    }
    std::string name = manager->name;
    std::string protocol = manager->protocol != nullptr ? manager->protocol : "";
    if (DeviceTypeOf(protocol) == sma::DEVICE_TYPE_INVALID) {
      return fail(absl::StatusCode::kInvalidArgument,
                  absl::StrCat("device manager \"", name, "\": unknown protocol \"", protocol,
                               "\" (expected nvme, virtio_blk or nvmf_tcp)"));
    }
    if (NameTaken(staging.managers, name, staging.registry->FindDeviceManager(name))) {
      return fail(absl::StatusCode::kAlreadyExists,
                  absl::StrCat("device manager \"", name, "\" is already registered"));
    }
    auto descriptor = std::make_shared<ManagerDescriptor>();
    descriptor->plugin = staging.plugin;
    descriptor->name = std::move(name);
    descriptor->protocol = std::move(protocol);
    descriptor->c = CopyDescriptor(*manager);
    descriptor->c.name = nullptr;
    descriptor->c.protocol = nullptr;
    staging.managers.push_back(std::move(descriptor));
    return int32_t{SMAD_STATUS_OK};
  });
}

int32_t AddCryptoEngine(const smad_registrar_v1* registrar, const smad_crypto_engine_v1* engine) {
  return RunRegistration(registrar, [&](Staging& staging, auto fail) {
    if (engine == nullptr || engine->struct_size < sizeof(smad_crypto_engine_v1)) {
      return fail(absl::StatusCode::kInvalidArgument, "malformed crypto engine descriptor");
    }
    if (engine->name == nullptr || *engine->name == '\0') {
      return fail(absl::StatusCode::kInvalidArgument, "crypto engine without a name");
    }
    std::string name = engine->name;
    if (engine->setup == nullptr) {
      return fail(absl::StatusCode::kInvalidArgument, absl::StrCat("crypto engine \"", name, "\" has no setup"));
    }
    if (NameTaken(staging.engines, name, staging.registry->FindCryptoEngine(name))) {
      return fail(absl::StatusCode::kAlreadyExists,
                  absl::StrCat("crypto engine \"", name, "\" is already registered"));
    }
    auto descriptor = std::make_shared<EngineDescriptor>();
    descriptor->plugin = staging.plugin;
    descriptor->name = std::move(name);
    descriptor->c = CopyDescriptor(*engine);
    descriptor->c.name = nullptr;
    staging.engines.push_back(std::move(descriptor));
    return int32_t{SMAD_STATUS_OK};
  });
}

std::string DlError() {
  const char* error = dlerror();  // NOLINT(concurrency-mt-unsafe): thread-local in glibc
  return error != nullptr ? error : "unknown error";
}

}  // namespace

LoadedPlugin::~LoadedPlugin() {
  if (handle_ != nullptr) dlclose(handle_);
}

absl::StatusOr<LoadedPlugin> LoadPlugin(const std::string& plugin, Registry& registry) {
  void* handle = dlopen(plugin.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    return absl::NotFoundError(absl::StrCat("plugin ", plugin, ": cannot load: ", DlError()));
  }
  // From here on, `loaded` closes the library on every error path.
  LoadedPlugin loaded(plugin, handle);

  dlerror();  // clear any stale error before dlsym
  void* symbol = dlsym(handle, SMAD_PLUGIN_ENTRY_SYMBOL);
  if (symbol == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "plugin ", plugin, ": no entry point " SMAD_PLUGIN_ENTRY_SYMBOL ": ", DlError()));
  }
  auto entry = reinterpret_cast<smad_plugin_entry_fn>(symbol);
  const smad_plugin_v1* descriptor = entry(SMAD_PLUGIN_ABI_VERSION);
  if (descriptor == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("plugin ", plugin, ": refuses plugin ABI version ", SMAD_PLUGIN_ABI_VERSION));
  }
  if (descriptor->abi_version != SMAD_PLUGIN_ABI_VERSION) {
    return absl::FailedPreconditionError(
        absl::StrCat("plugin ", plugin, ": built for plugin ABI version ", descriptor->abi_version,
                     ", smad speaks version ", SMAD_PLUGIN_ABI_VERSION));
  }
  if (descriptor->register_plugin == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("plugin ", plugin, ": no register_plugin function"));
  }

  Staging staging;
  staging.plugin = plugin;
  staging.registry = &registry;
  smad_registrar_v1 registrar;
  std::memset(&registrar, 0, sizeof(registrar));
  registrar.struct_size = sizeof(registrar);
  registrar.opaque = &staging;
  registrar.add_device_manager = &AddDeviceManager;
  registrar.add_crypto_engine = &AddCryptoEngine;
  StringSink error;
  int32_t code = descriptor->register_plugin(&registrar, error.get());
  if (!staging.error.ok())
    return staging.error;  // the precise reason, even if the plugin ignored it
  if (code != SMAD_STATUS_OK) {
    return absl::InvalidArgumentError(
        absl::StrCat("plugin ", plugin, ": registration failed: ",
                     error.value().empty() ? absl::StrCat("code ", code) : error.value()));
  }

  // Every name was checked against the registry while staging, so these cannot clash.
  for (auto& manager : staging.managers) {
    std::string name = manager->name;
    RETURN_IF_ERROR(registry.AddDeviceManager(name, [manager](TargetRpc& rpc) -> DeviceManagerPtr {
      return std::make_unique<PluginDeviceManager>(manager, rpc);
    }));
  }
  for (auto& engine : staging.engines) {
    std::string name = engine->name;
    RETURN_IF_ERROR(registry.AddCryptoEngine(name, [engine](TargetRpc& rpc) -> CryptoEnginePtr {
      return std::make_unique<PluginCryptoEngine>(engine, rpc);
    }));
  }
  spdlog::info("plugin {}{}{}: {} device manager(s), {} crypto engine(s)", plugin,
               descriptor->name != nullptr ? " " : "",
               descriptor->name != nullptr ? descriptor->name : "", staging.managers.size(),
               staging.engines.size());
  return loaded;
}

void SetActiveCryptoEngineName(const std::string& name) {
  ActiveEngine& engine = Engine();
  absl::MutexLock lock(&engine.mu);
  engine.name = name;
}

}  // namespace smad::agent
