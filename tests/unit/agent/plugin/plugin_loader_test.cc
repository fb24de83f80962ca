#include "agent/plugin/plugin_loader.h"

#include <dlfcn.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/plugin/plugin_abi.h"
#include "common/uuid.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace smad::agent {
namespace {

using ::testing::HasSubstr;

const std::string kPluginDir = SMAD_PLUGIN_DIR;
const std::string kTestPluginDir = SMAD_TEST_PLUGIN_DIR;
const std::string kPlugin1 = kPluginDir + "/libsmad_example_plugin1.so";
const std::string kPlugin2 = kPluginDir + "/libsmad_example_plugin2.so";

std::string TestPlugin(const std::string& kind) {
  return kTestPluginDir + "/libsmad_test_plugin_" + kind + ".so";
}

constexpr char kVolumeId[] = "0b9c1b2e-6a2d-4c1e-9a57-3f1e2d3c4b5a";

// Answers JSON-RPC calls from a table and records them.
class FakeSpdkClient : public SpdkClient {
 public:
  struct RecordedCall {
    std::string method;
    Json params;
    std::chrono::milliseconds timeout;
  };

  absl::StatusOr<Json> Call(absl::string_view method, const Json& params,
                            std::chrono::milliseconds timeout) override {
    calls.push_back({std::string(method), params, timeout});
    auto it = answers.find(std::string(method));
    if (it == answers.end())
      return absl::UnimplementedError(absl::StrCat(method, ": Method not found"));
    return it->second;
  }
  uint64_t connection_epoch() const override { return 1; }

  std::map<std::string, absl::StatusOr<Json>> answers;
  std::vector<RecordedCall> calls;
};

sma::CreateDeviceRequest NvmeRequest() {
  sma::CreateDeviceRequest request;
  request.mutable_nvme();
  return request;
}

sma::CreateDeviceRequest NvmfTcpRequest() {
  sma::CreateDeviceRequest request;
  request.mutable_nvmf_tcp();
  return request;
}

class PluginLoaderTest : public ::testing::Test {
 protected:
  void TearDown() override { SetActiveCryptoEngineName("nop"); }

  DeviceManagerPtr MakeManager(const std::string& name) {
    const DeviceManagerFactory* factory = registry_.FindDeviceManager(name);
    if (factory == nullptr) return nullptr;
    return (*factory)(rpc_);
  }
  CryptoEnginePtr MakeEngine(const std::string& name) {
    const CryptoEngineFactory* factory = registry_.FindCryptoEngine(name);
    if (factory == nullptr) return nullptr;
    return (*factory)(rpc_);
  }

  FakeSpdkClient fake_;
  TargetRpc rpc_{fake_, std::chrono::seconds(3)};
  Registry registry_;
};

// ---- loading ------------------------------------------------------------------------------------

TEST_F(PluginLoaderTest, LoadsBothExamplePlugins) {
  auto plugin1 = LoadPlugin(kPlugin1, registry_);
  ASSERT_TRUE(plugin1.ok()) << plugin1.status();
  auto plugin2 = LoadPlugin(kPlugin2, registry_);
  ASSERT_TRUE(plugin2.ok()) << plugin2.status();
  EXPECT_EQ(plugin1->path(), kPlugin1);

  for (const char* n : {"1", "2"}) {
    std::string plugin = absl::StrCat("plugin", n);
    DeviceManagerPtr device1 = MakeManager(plugin + "-device1");
    ASSERT_NE(device1, nullptr) << plugin;
    EXPECT_EQ(device1->name(), plugin + "-device1");
    EXPECT_EQ(device1->protocol(), "nvme");
    EXPECT_FALSE(device1->allow_delete_volumes());
    EXPECT_FALSE(device1->supports_attach());
    DeviceManagerPtr device2 = MakeManager(plugin + "-device2");
    ASSERT_NE(device2, nullptr) << plugin;
    EXPECT_EQ(device2->protocol(), "nvmf_tcp");
    CryptoEnginePtr engine = MakeEngine("crypto-" + plugin);
    ASSERT_NE(engine, nullptr) << plugin;
    EXPECT_EQ(engine->name(), "crypto-" + plugin);
  }
}

TEST_F(PluginLoaderTest, LoadingTwiceIsAlreadyExists) {
  auto first = LoadPlugin(kPlugin1, registry_);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = LoadPlugin(kPlugin1, registry_);
  EXPECT_TRUE(absl::IsAlreadyExists(second.status())) << second.status();
  EXPECT_THAT(second.status().message(), HasSubstr(kPlugin1));
  EXPECT_THAT(second.status().message(), HasSubstr("plugin1-device1"));
  // The first load is untouched.
  EXPECT_NE(MakeManager("plugin1-device1"), nullptr);
}

TEST_F(PluginLoaderTest, NameClashRegistersNothing) {
  ASSERT_TRUE(
      registry_.AddDeviceManager("plugin1-device2", [](TargetRpc&) { return nullptr; }).ok());
  auto loaded = LoadPlugin(kPlugin1, registry_);
  EXPECT_TRUE(absl::IsAlreadyExists(loaded.status())) << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr("plugin1-device2"));
  // All or nothing: neither the other manager nor the engine was registered.
  EXPECT_EQ(registry_.FindDeviceManager("plugin1-device1"), nullptr);
  EXPECT_EQ(registry_.FindCryptoEngine("crypto-plugin1"), nullptr);
}

TEST_F(PluginLoaderTest, EngineNameClashIsAlreadyExists) {
  ASSERT_TRUE(registry_.AddCryptoEngine("crypto-plugin2", [](TargetRpc&) { return nullptr; }).ok());
  auto loaded = LoadPlugin(kPlugin2, registry_);
  EXPECT_TRUE(absl::IsAlreadyExists(loaded.status())) << loaded.status();
  EXPECT_EQ(registry_.FindDeviceManager("plugin2-device1"), nullptr);
}

TEST_F(PluginLoaderTest, MissingFileIsNotFound) {
  std::string path = kPluginDir + "/no_such_plugin.so";
  auto loaded = LoadPlugin(path, registry_);
  EXPECT_TRUE(absl::IsNotFound(loaded.status())) << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr(path));
}

TEST_F(PluginLoaderTest, LibraryWithoutEntryPointIsFailedPrecondition) {
  auto loaded = LoadPlugin(TestPlugin("no_entry"), registry_);
  EXPECT_TRUE(absl::IsFailedPrecondition(loaded.status())) << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr("smad_plugin_entry"));
  // Any shared library, found by name.
  auto libc = LoadPlugin("libc.so.6", registry_);
  EXPECT_TRUE(absl::IsFailedPrecondition(libc.status())) << libc.status();
}

TEST_F(PluginLoaderTest, AbiMismatchIsFailedPrecondition) {
  auto loaded = LoadPlugin(TestPlugin("bad_abi"), registry_);
  EXPECT_TRUE(absl::IsFailedPrecondition(loaded.status())) << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr("999"));
}

TEST_F(PluginLoaderTest, EntryPointRefusingTheHostIsFailedPrecondition) {
  auto loaded = LoadPlugin(TestPlugin("null_entry"), registry_);
  EXPECT_TRUE(absl::IsFailedPrecondition(loaded.status())) << loaded.status();
}

TEST_F(PluginLoaderTest, FailedRegistrationIsInvalidArgument) {
  auto loaded = LoadPlugin(TestPlugin("register_fails"), registry_);
  EXPECT_TRUE(absl::IsInvalidArgument(loaded.status())) << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr("boom"));
}

TEST_F(PluginLoaderTest, UnknownProtocolIsInvalidArgument) {
  auto loaded = LoadPlugin(TestPlugin("bad_protocol"), registry_);
  EXPECT_TRUE(absl::IsInvalidArgument(loaded.status())) << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr("scsi"));
  EXPECT_EQ(registry_.FindDeviceManager("test-bad"), nullptr);
}

// ---- the example plugins behind DeviceManager ---------------------------------------------------

TEST_F(PluginLoaderTest, CreateDeviceReturnsHandleWithActiveCryptoEngine) {
  auto plugin1 = LoadPlugin(kPlugin1, registry_);
  ASSERT_TRUE(plugin1.ok()) << plugin1.status();
  DeviceManagerPtr manager = MakeManager("plugin1-device1");
  ASSERT_NE(manager, nullptr);
  ASSERT_TRUE(manager->Init(Json()).ok());

  auto spec = manager->PlanDevice(NvmeRequest(), nullptr);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->handle, "");  // known only once created
  EXPECT_EQ(spec->manager, "plugin1-device1");

  auto created = manager->CreateDevice(*spec, nullptr);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->handle, "nvme:plugin1-device1:nop");
  EXPECT_TRUE(created->created);

  SetActiveCryptoEngineName("crypto-plugin2");
  created = manager->CreateDevice(*spec, nullptr);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->handle, "nvme:plugin1-device1:crypto-plugin2");
}

TEST_F(PluginLoaderTest, HandlesFromBothPlugins) {
  auto plugin1 = LoadPlugin(kPlugin1, registry_);
  auto plugin2 = LoadPlugin(kPlugin2, registry_);
  ASSERT_TRUE(plugin1.ok() && plugin2.ok());
  SetActiveCryptoEngineName("crypto-plugin1");
  DeviceManagerPtr manager = MakeManager("plugin2-device2");
  auto spec = manager->PlanDevice(NvmfTcpRequest(), nullptr);
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto created = manager->CreateDevice(*spec, nullptr);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->handle, "nvmf_tcp:plugin2-device2:crypto-plugin1");
}

TEST_F(PluginLoaderTest, OwnsHandle) {
  auto plugin1 = LoadPlugin(kPlugin1, registry_);
  auto plugin2 = LoadPlugin(kPlugin2, registry_);
  ASSERT_TRUE(plugin1.ok() && plugin2.ok());
  DeviceManagerPtr device1 = MakeManager("plugin1-device1");
  DeviceManagerPtr device2 = MakeManager("plugin1-device2");
  DeviceManagerPtr other = MakeManager("plugin2-device1");
  EXPECT_TRUE(device1->OwnsHandle("nvme:plugin1-device1:nop"));
  EXPECT_TRUE(device1->OwnsHandle("nvme:plugin1-device1:"));
  EXPECT_FALSE(device1->OwnsHandle("nvme:plugin1-device1"));
  EXPECT_FALSE(device1->OwnsHandle("nvmf_tcp:plugin1-device2:nop"));
  EXPECT_TRUE(device2->OwnsHandle("nvmf_tcp:plugin1-device2:crypto-plugin2"));
  EXPECT_FALSE(other->OwnsHandle("nvme:plugin1-device1:nop"));
  EXPECT_FALSE(device1->OwnsHandle(""));
}

TEST_F(PluginLoaderTest, PlanDeviceRejectsOtherProtocols) {
  auto plugin1 = LoadPlugin(kPlugin1, registry_);
  ASSERT_TRUE(plugin1.ok());
  DeviceManagerPtr manager = MakeManager("plugin1-device1");
  auto spec = manager->PlanDevice(NvmfTcpRequest(), nullptr);
  EXPECT_TRUE(absl::IsInvalidArgument(spec.status())) << spec.status();
}

TEST_F(PluginLoaderTest, UnimplementedCallbacks) {
  auto plugin1 = LoadPlugin(kPlugin1, registry_);
  ASSERT_TRUE(plugin1.ok());
  DeviceManagerPtr manager = MakeManager("plugin1-device1");
  DeviceSpec spec{"nvme:plugin1-device1:nop", "plugin1-device1", Json()};

  absl::Status deleted = manager->DeleteDevice(spec);
  EXPECT_TRUE(absl::IsUnimplemented(deleted)) << deleted;
  EXPECT_EQ(deleted.message(), "Method is not implemented by selected device type");
  VolumeExposure volume{kVolumeId, kVolumeId, 0};
  EXPECT_TRUE(absl::IsUnimplemented(manager->AttachVolume(spec, volume)));
  EXPECT_TRUE(absl::IsUnimplemented(manager->DetachVolume(spec, volume)));
  EXPECT_TRUE(absl::IsUnimplemented(manager->QosBdev(spec, &volume).status()));

  // As SMA: unimplemented get_qos_capabilities is OK with an empty response.
  sma::GetQosCapabilitiesResponse caps = manager->QosCapabilities();
  EXPECT_EQ(caps.ByteSizeLong(), 0u);
  EXPECT_FALSE(caps.has_max_device_caps());
  EXPECT_FALSE(caps.has_max_volume_caps());

  // An unknown handle the manager owns goes to the plugin's delete_device (UNIMPLEMENTED, as SMA).
  auto guessed = manager->SpecFromHandle("nvme:plugin1-device1:other");
  ASSERT_TRUE(guessed.ok()) << guessed.status();
  EXPECT_TRUE(absl::IsUnimplemented(manager->DeleteDevice(*guessed)));
  EXPECT_TRUE(
      absl::IsNotFound(manager->SpecFromHandle("nvmf-tcp:nqn.2016-06.io.spdk:cnode0").status()));
}

TEST_F(PluginLoaderTest, ReconcileRecreatesTheDevice) {
  auto plugin1 = LoadPlugin(kPlugin1, registry_);
  ASSERT_TRUE(plugin1.ok());
  DeviceManagerPtr manager = MakeManager("plugin1-device2");
  auto spec = manager->PlanDevice(NvmfTcpRequest(), nullptr);
  ASSERT_TRUE(spec.ok());
  spec->handle = "nvmf_tcp:plugin1-device2:nop";
  std::vector<VolumeExposure> volumes;
  EXPECT_TRUE(manager->Reconcile(*spec, volumes, {}).ok());
  // The plugin now answers another handle (the crypto engine changed): reported, not hidden.
  SetActiveCryptoEngineName("crypto-plugin1");
  absl::Status status = manager->Reconcile(*spec, volumes, {});
  EXPECT_TRUE(absl::IsInternal(status)) << status;
}

// ---- the example crypto engine: its JSON-RPC call reaches the target ----------------------------

TEST_F(PluginLoaderTest, ExampleCryptoEngine) {
  auto plugin2 = LoadPlugin(kPlugin2, registry_);
  ASSERT_TRUE(plugin2.ok());
  CryptoEnginePtr engine = MakeEngine("crypto-plugin2");
  ASSERT_NE(engine, nullptr);
  ASSERT_TRUE(engine->Init(Json()).ok());

  CryptoParams params;
  auto setup = engine->Setup(kVolumeId, "bdev\"0", params);
  EXPECT_TRUE(absl::IsInvalidArgument(setup.status())) << setup.status();
  EXPECT_TRUE(fake_.calls.empty());

  params.key = "1234567890abcdef1234567890abcdef";
  fake_.answers["bdev_get_bdevs"] = Json::array({Json{{"name", "bdev\"0"}}});
  setup = engine->Setup(kVolumeId, "bdev\"0", params);
  ASSERT_TRUE(setup.ok()) << setup.status();
  EXPECT_EQ(*setup, "bdev\"0");
  ASSERT_EQ(fake_.calls.size(), 1u);
  EXPECT_EQ(fake_.calls[0].method, "bdev_get_bdevs");
  EXPECT_EQ(fake_.calls[0].params, (Json{{"name", "bdev\"0"}}));
  EXPECT_EQ(fake_.calls[0].timeout, std::chrono::seconds(3));  // timeout 0: the configured one

  // The target's error travels back through the plugin.
  fake_.answers["bdev_get_bdevs"] =
      absl::NotFoundError("bdev_get_bdevs: No such device (code -19)");
  setup = engine->Setup(kVolumeId, "missing", params);
  EXPECT_TRUE(absl::IsNotFound(setup.status())) << setup.status();
  EXPECT_THAT(setup.status().message(), HasSubstr("No such device"));

  EXPECT_TRUE(engine->Verify(kVolumeId, "", nullptr).ok());
  EXPECT_TRUE(engine->Verify(kVolumeId, "bdev0", &params).ok());
  EXPECT_TRUE(engine->Cleanup(kVolumeId, "bdev0").ok());
}

// ---- every callback, through the recording test plugin ------------------------------------------

class FullPluginTest : public PluginLoaderTest {
 protected:
  void SetUp() override {
    auto loaded = LoadPlugin(TestPlugin("full"), registry_);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    loaded_.emplace(std::move(*loaded));
    handle_ = dlopen(TestPlugin("full").c_str(), RTLD_NOW | RTLD_NOLOAD);
    ASSERT_NE(handle_, nullptr);
    force_next_ = Symbol<void (*)(int32_t, const char*)>("test_force_next");
    force_nsid_ = Symbol<void (*)(uint32_t)>("test_force_nsid");
    last_method_ = Symbol<const char* (*)()>("test_last_method");
    last_request_ = Symbol<const uint8_t* (*)(size_t*)>("test_last_request");
    last_text_ = Symbol<const char* (*)()>("test_last_text");
    last_nsid_in_ = Symbol<uint32_t (*)()>("test_last_nsid_in");
    instances_ = Symbol<int (*)()>("test_instances");
    target_call_ =
        Symbol<int32_t (*)(const char*, const char*, smad_sink*, smad_sink*)>("test_target_call");
  }
  void TearDown() override {
    if (handle_ != nullptr) dlclose(handle_);
    PluginLoaderTest::TearDown();
  }

  template <typename F>
  F Symbol(const char* name) {
    void* symbol = dlsym(handle_, name);
    EXPECT_NE(symbol, nullptr) << name;
    return reinterpret_cast<F>(symbol);
  }

  template <typename M>
  M LastRequest() {
    size_t len = 0;
    const uint8_t* data = last_request_(&len);
    M message;
    EXPECT_TRUE(message.ParseFromArray(data, static_cast<int>(len)));
    return message;
  }

  std::optional<LoadedPlugin> loaded_;
  void* handle_ = nullptr;
  void (*force_next_)(int32_t, const char*) = nullptr;
  void (*force_nsid_)(uint32_t) = nullptr;
  const char* (*last_method_)() = nullptr;
  const uint8_t* (*last_request_)(size_t*) = nullptr;
  const char* (*last_text_)() = nullptr;
  uint32_t (*last_nsid_in_)() = nullptr;
  int (*instances_)() = nullptr;
  int32_t (*target_call_)(const char*, const char*, smad_sink*, smad_sink*) = nullptr;
};

TEST_F(FullPluginTest, InstancesLiveWithTheirWrappers) {
  {
    DeviceManagerPtr manager = MakeManager("test-full");
    CryptoEnginePtr engine = MakeEngine("test-crypto");
    EXPECT_EQ(instances_(), 2);
  }
  EXPECT_EQ(instances_(), 0);
}

TEST_F(FullPluginTest, InitPassesParamsAsJson) {
  DeviceManagerPtr manager = MakeManager("test-full");
  EXPECT_TRUE(manager->Init(Json{{"bus", 3}}).ok());
  EXPECT_STREQ(last_method_(), "init");
  EXPECT_EQ(Json::parse(last_text_()), (Json{{"bus", 3}}));
  EXPECT_TRUE(manager->Init(Json()).ok());
  EXPECT_STREQ(last_text_(), "null");
  force_next_(SMAD_STATUS_INVALID_ARGUMENT, "bad bus");
  absl::Status status = manager->Init(Json{{"bus", -1}});
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_EQ(status.message(), "bad bus");
}

TEST_F(FullPluginTest, DeviceCallbacksGetSmaRequests) {
  DeviceManagerPtr manager = MakeManager("test-full");
  EXPECT_EQ(manager->protocol(), "virtio_blk");
  EXPECT_TRUE(manager->allow_delete_volumes());
  EXPECT_TRUE(manager->supports_attach());

  sma::CreateDeviceRequest request;
  request.mutable_virtio_blk()->set_physical_id(4);
  request.mutable_volume()->set_volume_id(std::string(16, 'x'));
  request.mutable_volume()->mutable_crypto()->set_key("secret");
  auto spec = manager->PlanDevice(request, nullptr);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->params.dump().find("secret"), std::string::npos);  // never stored
  auto created = manager->CreateDevice(*spec, nullptr);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->handle, "virtio_blk:test-full:0");
  EXPECT_STREQ(last_method_(), "create_device");
  auto sent = LastRequest<sma::CreateDeviceRequest>();
  EXPECT_EQ(sent.virtio_blk().physical_id(), 4u);
  EXPECT_FALSE(sent.has_volume());
  spec->handle = created->handle;

  VolumeExposure volume{kVolumeId, "crypto_bdev0", 0};
  ASSERT_TRUE(manager->AttachVolume(*spec, volume).ok());
  EXPECT_STREQ(last_method_(), "attach_volume");
  auto attach = LastRequest<sma::AttachVolumeRequest>();
  EXPECT_EQ(attach.device_handle(), "virtio_blk:test-full:0");
  EXPECT_EQ(attach.volume().volume_id(),
            std::string(reinterpret_cast<const char*>(Uuid::Parse(kVolumeId)->bytes().data()), 16));
  EXPECT_FALSE(attach.volume().has_crypto());
  EXPECT_EQ(std::string(last_text_()), absl::StrCat(kVolumeId, " crypto_bdev0"));
  EXPECT_EQ(volume.nsid, 1u);  // the plugin set none: recorded as exposed

  force_nsid_(7);
  volume.nsid = 5;
  ASSERT_TRUE(manager->AttachVolume(*spec, volume).ok());
  EXPECT_EQ(last_nsid_in_(), 5u);
  EXPECT_EQ(volume.nsid, 7u);

  ASSERT_TRUE(manager->DetachVolume(*spec, volume).ok());
  EXPECT_STREQ(last_method_(), "detach_volume");
  auto detach = LastRequest<sma::DetachVolumeRequest>();
  EXPECT_EQ(detach.device_handle(), "virtio_blk:test-full:0");
  EXPECT_EQ(detach.volume_id().size(), 16u);
  EXPECT_EQ(last_nsid_in_(), 7u);

  VolumeExposure bad{"not-a-uuid", "bdev", 0};
  EXPECT_TRUE(absl::IsInvalidArgument(manager->AttachVolume(*spec, bad)));

  ASSERT_TRUE(manager->DeleteDevice(*spec).ok());
  EXPECT_STREQ(last_method_(), "delete_device");
  EXPECT_EQ(LastRequest<sma::DeleteDeviceRequest>().handle(), "virtio_blk:test-full:0");

  auto bdev = manager->QosBdev(*spec, &volume);
  ASSERT_TRUE(bdev.ok()) << bdev.status();
  EXPECT_EQ(*bdev, kVolumeId);

  sma::GetQosCapabilitiesResponse caps = manager->QosCapabilities();
  EXPECT_STREQ(last_method_(), "get_qos_capabilities");
  EXPECT_EQ(LastRequest<sma::GetQosCapabilitiesRequest>().device_type(),
            sma::DEVICE_TYPE_VIRTIO_BLK);
  EXPECT_TRUE(caps.max_volume_caps().rw_iops());
  EXPECT_FALSE(caps.max_volume_caps().rd_iops());
}

TEST_F(FullPluginTest, ErrorsReachTheCaller) {
  DeviceManagerPtr manager = MakeManager("test-full");
  DeviceSpec spec{"virtio_blk:test-full:0", "test-full", Json()};

  force_next_(SMAD_STATUS_NOT_FOUND, "gone");
  absl::Status status = manager->DeleteDevice(spec);
  EXPECT_TRUE(absl::IsNotFound(status)) << status;
  EXPECT_EQ(status.message(), "gone");

  force_next_(99, "");
  status = manager->DeleteDevice(spec);
  EXPECT_TRUE(absl::IsUnknown(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr("delete_device"));

  force_next_(SMAD_STATUS_INTERNAL, "no room");
  VolumeExposure volume{kVolumeId, kVolumeId, 0};
  status = manager->AttachVolume(spec, volume);
  EXPECT_TRUE(absl::IsInternal(status)) << status;
  EXPECT_EQ(volume.nsid, 0u);

  // Create failures, and a spec without a stored request.
  auto planned = manager->PlanDevice(sma::CreateDeviceRequest(), nullptr);
  EXPECT_TRUE(absl::IsInvalidArgument(planned.status()));
  EXPECT_TRUE(absl::IsInternal(manager->CreateDevice(spec, nullptr).status()));
  sma::CreateDeviceRequest request;
  request.mutable_virtio_blk();
  planned = manager->PlanDevice(request, nullptr);
  ASSERT_TRUE(planned.ok());
  force_next_(SMAD_STATUS_ALREADY_EXISTS, "taken");
  auto created = manager->CreateDevice(*planned, nullptr);
  EXPECT_TRUE(absl::IsAlreadyExists(created.status())) << created.status();

  // get_qos_capabilities has no error path in DeviceManager: an empty response.
  force_next_(SMAD_STATUS_INTERNAL, "down");
  EXPECT_EQ(manager->QosCapabilities().ByteSizeLong(), 0u);
}

TEST_F(FullPluginTest, ReconcileCreatesThenAttaches) {
  DeviceManagerPtr manager = MakeManager("test-full");
  sma::CreateDeviceRequest request;
  request.mutable_virtio_blk();
  auto spec = manager->PlanDevice(request, nullptr);
  ASSERT_TRUE(spec.ok());
  spec->handle = "virtio_blk:test-full:0";
  std::vector<VolumeExposure> volumes = {{kVolumeId, kVolumeId, 3}};
  force_nsid_(3);
  ASSERT_TRUE(manager->Reconcile(*spec, volumes, {}).ok());
  EXPECT_STREQ(last_method_(), "attach_volume");
  EXPECT_EQ(last_nsid_in_(), 3u);
  EXPECT_EQ(volumes[0].nsid, 3u);

  force_next_(SMAD_STATUS_UNAVAILABLE, "target down");
  absl::Status status = manager->Reconcile(*spec, volumes, {});
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_STREQ(last_method_(), "create_device");
}

TEST_F(FullPluginTest, CryptoCallbacksGetPlainParameters) {
  CryptoEnginePtr engine = MakeEngine("test-crypto");
  ASSERT_NE(engine, nullptr);
  CryptoParams params;
  params.key = "00112233";
  params.cipher = 1;
  params.tweak_mode = 2;
  auto setup = engine->Setup(kVolumeId, "vol0", params);
  ASSERT_TRUE(setup.ok()) << setup.status();
  EXPECT_EQ(*setup, "crypto0");
  EXPECT_EQ(std::string(last_text_()), absl::StrCat(kVolumeId, " vol0 00112233 - 1 2"));

  params.key2 = "44556677";
  setup = engine->Setup(kVolumeId, "vol0", params);
  ASSERT_TRUE(setup.ok()) << setup.status();
  EXPECT_EQ(*setup, "vol0");  // the engine named no bdev: the volume's own is exposed
  EXPECT_EQ(std::string(last_text_()), absl::StrCat(kVolumeId, " vol0 00112233 44556677 1 2"));

  force_next_(SMAD_STATUS_INVALID_ARGUMENT, "Invalid volume crypto configuration: bad key");
  absl::Status status = engine->Verify(kVolumeId, "crypto0", &params);
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_EQ(status.message(), "Invalid volume crypto configuration: bad key");

  ASSERT_TRUE(engine->Verify(kVolumeId, "", nullptr).ok());
  EXPECT_STREQ(last_method_(), "verify");
  EXPECT_EQ(std::string(last_text_()), absl::StrCat(kVolumeId, "  none"));

  ASSERT_TRUE(engine->Cleanup(kVolumeId, "crypto0").ok());
  EXPECT_STREQ(last_method_(), "cleanup");
}

// A sink for the test's own calls into the host.
struct TestSink {
  TestSink()
      : sink{this, [](void* self, const void* data, size_t len) {
               static_cast<TestSink*>(self)->value.assign(static_cast<const char*>(data), len);
             }} {}
  smad_sink sink;
  std::string value;
};

TEST_F(FullPluginTest, HostTargetCall) {
  DeviceManagerPtr manager = MakeManager("test-full");  // gives the plugin a host
  fake_.answers["spdk_get_version"] = Json{{"version", "SPDK v24.01"}};
  TestSink result;
  TestSink error;
  ASSERT_EQ(target_call_("spdk_get_version", nullptr, &result.sink, &error.sink), SMAD_STATUS_OK)
      << error.value;
  EXPECT_EQ(Json::parse(result.value), (Json{{"version", "SPDK v24.01"}}));
  ASSERT_EQ(fake_.calls.size(), 1u);
  EXPECT_TRUE(fake_.calls[0].params.is_null());

  EXPECT_EQ(target_call_("bdev_get_bdevs", "{\"name\":", &result.sink, &error.sink),
            SMAD_STATUS_INVALID_ARGUMENT);
  EXPECT_THAT(error.value, HasSubstr("not valid JSON"));
  EXPECT_EQ(fake_.calls.size(), 1u);

  EXPECT_EQ(target_call_("bdev_nope", "[1,2]", &result.sink, &error.sink),
            SMAD_STATUS_UNIMPLEMENTED);
  EXPECT_THAT(error.value, HasSubstr("Method not found"));
  ASSERT_EQ(fake_.calls.size(), 2u);
  EXPECT_EQ(fake_.calls[1].params, Json::array({1, 2}));

  fake_.answers["bdev_get_bdevs"] = absl::UnavailableError("not connected");
  EXPECT_EQ(target_call_("bdev_get_bdevs", "", nullptr, nullptr), SMAD_STATUS_UNAVAILABLE);
}

TEST_F(PluginLoaderTest, ActiveCryptoEngineDefaultsToNop) {
  auto plugin1 = LoadPlugin(kPlugin1, registry_);
  ASSERT_TRUE(plugin1.ok());
  DeviceManagerPtr manager = MakeManager("plugin1-device2");
  auto spec = manager->PlanDevice(NvmfTcpRequest(), nullptr);
  ASSERT_TRUE(spec.ok());
  auto created = manager->CreateDevice(*spec, nullptr);
  ASSERT_TRUE(created.ok());
  EXPECT_EQ(created->handle, "nvmf_tcp:plugin1-device2:nop");
}

}  // namespace
}  // namespace smad::agent
