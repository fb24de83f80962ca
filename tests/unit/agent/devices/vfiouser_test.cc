#include "agent/devices/vfiouser.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "agent/plugin/registry.h"
#include "common/uuid.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/net.h"
#include "support/temp_dir.h"
#include "unit/agent/devices/fakes.h"

namespace smad::agent {
namespace {

using namespace std::chrono_literals;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;
using testing::FakeQemu;
using testing::FakeSpdk;

constexpr char kUuid0[] = "6f1e6b5e-2a4c-4d8e-9f10-1a2b3c4d5e60";
constexpr char kUuid1[] = "6f1e6b5e-2a4c-4d8e-9f10-1a2b3c4d5e61";
constexpr char kHandle0[] = "nvme:nqn.2016-06.io.spdk:vfiouser-0";
constexpr char kNqn0[] = "nqn.2016-06.io.spdk:vfiouser-0";

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

void WriteFile(const std::string& path) { std::ofstream(path) << "x"; }

class VfioUserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spdk_.AddBdev("null0", kUuid0);
    spdk_.AddBdev("null1", kUuid1);
    ASSERT_TRUE(manager_.Init(Params()).ok());
    ASSERT_TRUE(manager_.PrepareTarget().ok());
    spdk_.ClearCalls();
  }

  Json Params(uint16_t qmp_port = 0) {
    return Json{{"buses", {{{"name", "pci.spdk.0"}, {"count", 32}}, {{"name", "pci.spdk.1"}}}},
                {"qmp_port", qmp_port != 0 ? qmp_port : qemu_.port()},
                {"sock_path", dir_.path() + "/"},
                {"qmp_timeout", 2}};
  }

  static sma::CreateDeviceRequest Request(uint32_t physical_id, uint32_t virtual_id = 0) {
    sma::CreateDeviceRequest request;
    request.mutable_nvme()->set_physical_id(physical_id);
    request.mutable_nvme()->set_virtual_id(virtual_id);
    return request;
  }

  DeviceSpec Plan(uint32_t physical_id) {
    auto spec = manager_.PlanDevice(Request(physical_id), nullptr);
    EXPECT_TRUE(spec.ok()) << spec.status();
    return spec.ok() ? *spec : DeviceSpec{};
  }

  // Plans and creates device `physical_id` as the agent does for a new handle.
  DeviceSpec Create(uint32_t physical_id) {
    DeviceSpec spec = Plan(physical_id);
    auto created = manager_.CreateDevice(spec, nullptr);
    EXPECT_TRUE(created.ok()) << created.status();
    return spec;
  }

  std::string Dir(uint32_t physical_id) { return manager_.SocketDirForTest(physical_id); }

  VolumeExposure Volume(const char* uuid) { return VolumeExposure{uuid, uuid, 0}; }

  smad::testing::TempDir dir_;
  FakeQemu qemu_;
  FakeSpdk spdk_;
  TargetRpc rpc_{spdk_, 5s};
  VfioUserDeviceManager manager_{rpc_};
};

// ---- registration, config, handles -------------------------------------------------------------------

TEST(VfioUserRegistryTest, BuiltinsRegisterBothQemuManagers) {
  Registry registry;
  RegisterBuiltins(registry);
  FakeSpdk spdk;
  TargetRpc rpc(spdk, 1s);
  const DeviceManagerFactory* vfiouser = registry.FindDeviceManager("vfiouser");
  ASSERT_NE(vfiouser, nullptr);
  DeviceManagerPtr manager = (*vfiouser)(rpc);
  EXPECT_EQ(manager->name(), "vfiouser");
  EXPECT_EQ(manager->protocol(), "nvme");
  EXPECT_FALSE(manager->allow_delete_volumes());
  EXPECT_TRUE(manager->supports_attach());
  const DeviceManagerFactory* vhost = registry.FindDeviceManager("vhost_blk");
  ASSERT_NE(vhost, nullptr);
  DeviceManagerPtr vhost_manager = (*vhost)(rpc);
  EXPECT_EQ(vhost_manager->name(), "vhost_blk");
  EXPECT_EQ(vhost_manager->protocol(), "virtio_blk");
  EXPECT_TRUE(vhost_manager->allow_delete_volumes());
  EXPECT_FALSE(vhost_manager->supports_attach());
}

TEST(VfioUserInitTest, RejectsMissingParamsAndPort) {
  FakeSpdk spdk;
  TargetRpc rpc(spdk, 1s);
  VfioUserDeviceManager manager(rpc);
  EXPECT_EQ(manager.Init(Json()), absl::InvalidArgumentError("params: missing (buses, qmp_port...)"));
  EXPECT_EQ(manager.Init(Json{{"buses", Json::array()}}), absl::InvalidArgumentError("qmp_port: missing"));
  EXPECT_EQ(manager.Init(Json::parse(R"({"qmp_port": 1, "buses": [{"name": "a"}, {"name": "a"}]})")),
            absl::InvalidArgumentError("buses[1].name: duplicate"));
  EXPECT_TRUE(manager.Init(Json{{"qmp_port", 10005}}).ok());
}

TEST_F(VfioUserTest, PrepareTargetCreatesTheVfioUserTransportOnce) {
  FakeSpdk spdk;
  TargetRpc rpc(spdk, 1s);
  VfioUserDeviceManager manager(rpc);
  ASSERT_TRUE(manager.Init(Params()).ok());
  ASSERT_TRUE(manager.PrepareTarget().ok());
  EXPECT_TRUE(spdk.HasTransport("vfiouser"));
  ASSERT_EQ(spdk.Calls().size(), 2u);
  EXPECT_EQ(spdk.Calls()[1].method, "nvmf_create_transport");
  EXPECT_EQ(spdk.Calls()[1].params, Json({{"trtype", "vfiouser"}}));
  spdk.ClearCalls();
  ASSERT_TRUE(manager.PrepareTarget().ok());
  EXPECT_THAT(spdk.Methods(), ElementsAre("nvmf_get_transports"));  // "VFIOUSER" matches
  spdk.SetUnreachable(true);
  EXPECT_EQ(manager.PrepareTarget().code(), absl::StatusCode::kUnavailable);
}

TEST_F(VfioUserTest, OwnsOnlyWellFormedHandles) {
  for (const char* handle : {"nvme:nqn.2016-06.io.spdk:vfiouser-0", "nvme:nqn.2016-06.io.spdk:vfiouser-42",
                             "nvme:nqn.2016-06.io.spdk:vfiouser-4294967295"}) {
    EXPECT_TRUE(manager_.OwnsHandle(handle)) << handle;
    auto spec = manager_.SpecFromHandle(handle);
    ASSERT_TRUE(spec.ok()) << handle;
    EXPECT_EQ(spec->handle, handle);
  }
  for (const char* handle :
       {"nvme:nqn.2016-06.io.spdk:../victim", "nvme:nqn.2016-06.io.spdk:vfiouser-../../etc",
        "nvme:nqn.2016-06.io.spdk:vfiouser-1/../../victim", "nvme:nqn.2016-06.io.spdk:vfiouser-01",
        "nvme:nqn.2016-06.io.spdk:vfiouser-+1", "nvme:nqn.2016-06.io.spdk:vfiouser--1",
        "nvme:nqn.2016-06.io.spdk:vfiouser-4294967296", "nvme:nqn.2016-06.io.spdk:vfiouser-", "nvme:",
        "nvme", "nvme:plugin1-device1:nop", "nvme:nqn.2016-06.io.spdk:cnode0", "nvmf-tcp:nqn.2016-06.io.spdk:cnode0",
        "virtio_blk:sma-0", "NVME:nqn.2016-06.io.spdk:vfiouser-0", "nvme:nqn.2016-06.io.spdk:vfiouser-0 "}) {
    EXPECT_FALSE(manager_.OwnsHandle(handle)) << handle;
    EXPECT_EQ(manager_.SpecFromHandle(handle).status().code(), absl::StatusCode::kNotFound) << handle;
  }
}

// ---- PlanDevice: validation before anything touches the target -----------------------------------------

TEST_F(VfioUserTest, PlansHandleAndPlacement) {
  DeviceSpec spec = Plan(0);
  EXPECT_EQ(spec.handle, kHandle0);
  EXPECT_EQ(spec.manager, "vfiouser");
  EXPECT_EQ(spec.params, Json({{"physical_id", 0}, {"bus", "pci.spdk.0"}, {"slot", 0}}));
  DeviceSpec p42 = Plan(42);
  EXPECT_EQ(p42.handle, "nvme:nqn.2016-06.io.spdk:vfiouser-42");
  EXPECT_EQ(p42.params, Json({{"physical_id", 42}, {"bus", "pci.spdk.1"}, {"slot", 10}}));
}

TEST_F(VfioUserTest, RejectsVirtualIdsAndPhysicalIdsBeyondTheBusesWithoutSideEffects) {
  EXPECT_EQ(manager_.PlanDevice(Request(0, 1), nullptr).status(),
            absl::InvalidArgumentError("Unsupported virtual_id value"));
  EXPECT_EQ(manager_.PlanDevice(Request(64), nullptr).status(), absl::InvalidArgumentError("Invalid physical_id"));
  EXPECT_EQ(manager_.PlanDevice(Request(UINT32_MAX), nullptr).status(),
            absl::InvalidArgumentError("Invalid physical_id"));
  EXPECT_THAT(spdk_.Calls(), IsEmpty());
  EXPECT_THAT(qemu_.Requests(), IsEmpty());
  EXPECT_FALSE(Exists(Dir(64)));
  EXPECT_EQ(spdk_.SubsystemCount(), 0u);
}

TEST_F(VfioUserTest, KeepsThePlacementOfAnExistingDevice) {
  DeviceSpec previous = Plan(5);
  previous.params["bus"] = "pci.spdk.1";  // placed under an older bus configuration
  auto spec = manager_.PlanDevice(Request(5), &previous);
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->params, previous.params);
}

// ---- CreateDevice ---------------------------------------------------------------------------------------

TEST_F(VfioUserTest, CreatesSubsystemListenerDirectoryAndQemuDevice) {
  DeviceSpec spec = Plan(0);
  auto created = manager_.CreateDevice(spec, nullptr);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->created);
  EXPECT_EQ(created->handle, kHandle0);

  const std::string dir = Dir(0);
  EXPECT_EQ(dir, dir_.path() + "/vfiouser-0");
  struct stat st;
  ASSERT_EQ(lstat(dir.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  auto calls = spdk_.Calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].method, "nvmf_create_subsystem");
  EXPECT_EQ(calls[0].params, Json({{"nqn", kNqn0}, {"allow_any_host", true}}));
  EXPECT_EQ(calls[1].method, "nvmf_subsystem_add_listener");
  EXPECT_EQ(calls[1].params,
            Json({{"nqn", kNqn0}, {"listen_address", {{"trtype", "vfiouser"}, {"traddr", dir}}}}));

  EXPECT_THAT(qemu_.Commands(), ElementsAre("query-pci", "device_add"));
  EXPECT_EQ(qemu_.LastArguments("device_add"), Json({{"driver", "vfio-user-pci"},
                                                     {"x-enable-migration", "on"},
                                                     {"socket", dir + "/cntrl"},
                                                     {"bus", "pci.spdk.0"},
                                                     {"addr", "0x0"},
                                                     {"id", "vfiouser-0"}}));
  ASSERT_TRUE(qemu_.FindDevice("vfiouser-0").has_value());
}

TEST_F(VfioUserTest, PhysicalId42GoesToTheSecondBusSlot10) {
  Create(42);
  auto device = qemu_.FindDevice("vfiouser-42");
  ASSERT_TRUE(device.has_value());
  EXPECT_EQ(device->bus, "pci.spdk.1");
  EXPECT_EQ(device->args["addr"], "0xa");
  EXPECT_EQ(device->args["socket"], Dir(42) + "/cntrl");
}

TEST_F(VfioUserTest, TwoDevicesGetDistinctHandlesSubsystemsAndSlots) {
  DeviceSpec d0 = Create(0);
  DeviceSpec d1 = Create(1);
  EXPECT_NE(d0.handle, d1.handle);
  EXPECT_EQ(spdk_.SubsystemCount(), 2u);
  EXPECT_EQ(qemu_.FindDevice("vfiouser-1")->args["addr"], "0x1");
}

TEST_F(VfioUserTest, RetryKeepsTheLiveSocketDirectoryAndChangesNothing) {
  DeviceSpec spec = Create(0);
  const std::string cntrl = Dir(0) + "/cntrl";
  WriteFile(cntrl);  // stands for the target's live socket
  spdk_.ClearCalls();
  qemu_.ClearRequests();
  auto again = manager_.CreateDevice(spec, &spec);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created);
  EXPECT_TRUE(Exists(cntrl));  // no rmtree of a live directory (the reference's defect 8)
  EXPECT_THAT(spdk_.Methods(), ElementsAre("nvmf_get_subsystems"));
  EXPECT_THAT(qemu_.Commands(), ElementsAre("query-pci"));
  EXPECT_EQ(spdk_.GetSubsystem(kNqn0)->listeners.size(), 1u);
}

TEST_F(VfioUserTest, CreateOfADeviceSmadForgotAdoptsWhatExists) {
  DeviceSpec spec = Create(0);
  const std::string cntrl = Dir(0) + "/cntrl";
  WriteFile(cntrl);
  auto again = manager_.CreateDevice(spec, nullptr);  // e.g. smad's state was lost
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created);
  EXPECT_TRUE(Exists(cntrl));
  EXPECT_EQ(spdk_.GetSubsystem(kNqn0)->listeners.size(), 1u);
  EXPECT_EQ(qemu_.Commands().size(), 3u);  // query-pci, device_add, query-pci
}

TEST_F(VfioUserTest, AnExistingDirectoryIsKeptOnFirstCreate) {
  ASSERT_TRUE(std::filesystem::create_directory(Dir(3)));
  WriteFile(Dir(3) + "/keep");
  Create(3);
  EXPECT_TRUE(Exists(Dir(3) + "/keep"));
}

TEST_F(VfioUserTest, QmpErrorRollsBackTheTargetSide) {
  qemu_.FailCommand("device_add", "GenericError", "Bus 'pci.spdk.0' does not support hotplugging");
  DeviceSpec spec = Plan(0);
  auto created = manager_.CreateDevice(spec, nullptr);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(created.status().message()), StartsWith("Failed to create NVMe/vfiouser device: device_add: Bus"));
  EXPECT_FALSE(spdk_.GetSubsystem(kNqn0).has_value());
  EXPECT_FALSE(Exists(Dir(0)));
  EXPECT_FALSE(qemu_.FindDevice("vfiouser-0").has_value());
}

TEST_F(VfioUserTest, QmpErrorNeverDeletesASubsystemThatExistedBefore) {
  DeviceSpec spec = Create(0);
  qemu_.RemoveDevice("vfiouser-0");
  qemu_.FailCommand("device_add");
  auto again = manager_.CreateDevice(spec, &spec);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kInternal);
  ASSERT_TRUE(spdk_.GetSubsystem(kNqn0).has_value());
  EXPECT_EQ(spdk_.GetSubsystem(kNqn0)->listeners.size(), 1u);
  EXPECT_TRUE(Exists(Dir(0)));
}

TEST_F(VfioUserTest, UnreachableQemuIsUnavailableAndRollsBack) {
  VfioUserDeviceManager manager(rpc_);
  ASSERT_TRUE(manager.Init(Params(static_cast<uint16_t>(std::stoi(smad::testing::FreeTcpPort())))).ok());
  auto created = manager.CreateDevice(Plan(0), nullptr);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(created.status().message()), HasSubstr("QEMU unreachable"));
  EXPECT_FALSE(spdk_.GetSubsystem(kNqn0).has_value());
  EXPECT_FALSE(Exists(Dir(0)));
}

TEST_F(VfioUserTest, SilentQemuIsDeadlineExceeded) {
  qemu_.SilenceCommand("query-pci");
  VfioUserDeviceManager manager(rpc_);
  Json params = Params();
  params["qmp_timeout"] = 0.2;
  ASSERT_TRUE(manager.Init(params).ok());
  auto start = std::chrono::steady_clock::now();
  auto created = manager.CreateDevice(Plan(0), nullptr);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  EXPECT_FALSE(spdk_.GetSubsystem(kNqn0).has_value());
}

TEST_F(VfioUserTest, UnreachableTargetIsUnavailableAndQemuIsNotTouched) {
  spdk_.SetUnreachable(true);
  auto created = manager_.CreateDevice(Plan(0), nullptr);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(created.status().message()), StartsWith("Failed to create the NVMe/vfiouser subsystem: target unreachable"));
  EXPECT_EQ(qemu_.connections(), 0);
  EXPECT_FALSE(Exists(Dir(0)));
}

TEST_F(VfioUserTest, TargetErrorsAreInternal) {
  spdk_.Fail("nvmf_create_subsystem", -32603, "Unable to create subsystem");
  auto created = manager_.CreateDevice(Plan(0), nullptr);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(created.status().message()), StartsWith("Failed to create the NVMe/vfiouser subsystem"));
  spdk_.ClearFaults();

  spdk_.Fail("nvmf_subsystem_add_listener", -32602, "Invalid parameters");
  created = manager_.CreateDevice(Plan(0), nullptr);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(created.status().message()), StartsWith("Failed to add the NVMe/vfiouser listener"));
  EXPECT_FALSE(spdk_.GetSubsystem(kNqn0).has_value());
  EXPECT_FALSE(Exists(Dir(0)));
  EXPECT_EQ(qemu_.connections(), 0);
}

TEST_F(VfioUserTest, ASocketPathThatIsNotADirectoryIsAnError) {
  WriteFile(Dir(0));
  auto created = manager_.CreateDevice(Plan(0), nullptr);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(created.status().message()), StartsWith("Socket path error " + Dir(0)));
  EXPECT_FALSE(spdk_.GetSubsystem(kNqn0).has_value());
  EXPECT_TRUE(Exists(Dir(0)));  // not ours: left alone
}

// ---- DeleteDevice ---------------------------------------------------------------------------------------

TEST_F(VfioUserTest, DeleteRemovesEverythingAndIsIdempotent) {
  DeviceSpec spec = Create(0);
  WriteFile(Dir(0) + "/cntrl");
  qemu_.ClearRequests();
  spdk_.ClearCalls();
  ASSERT_TRUE(manager_.DeleteDevice(spec).ok());
  EXPECT_THAT(spdk_.Methods(), ElementsAre("nvmf_delete_subsystem"));
  EXPECT_THAT(qemu_.Commands(), ElementsAre("query-pci", "device_del"));
  EXPECT_EQ(qemu_.LastArguments("device_del"), Json({{"id", "vfiouser-0"}}));
  EXPECT_FALSE(spdk_.GetSubsystem(kNqn0).has_value());
  EXPECT_FALSE(qemu_.FindDevice("vfiouser-0").has_value());
  EXPECT_FALSE(Exists(Dir(0)));

  qemu_.ClearRequests();
  ASSERT_TRUE(manager_.DeleteDevice(spec).ok());
  EXPECT_THAT(qemu_.Commands(), ElementsAre("query-pci"));
  auto unknown = manager_.SpecFromHandle("nvme:nqn.2016-06.io.spdk:vfiouser-7");
  ASSERT_TRUE(unknown.ok());
  EXPECT_TRUE(manager_.DeleteDevice(*unknown).ok());
}

TEST_F(VfioUserTest, DeleteDoesNotWaitForTheGuest) {
  DeviceSpec spec = Create(0);
  qemu_.SetGuestReleasesDevices(false);
  EXPECT_TRUE(manager_.DeleteDevice(spec).ok());
}

TEST_F(VfioUserTest, DeleteRemovesOnlyItsOwnDirectory) {
  DeviceSpec spec = Create(0);
  Create(1);
  ASSERT_TRUE(std::filesystem::create_directory(dir_.File("victim")));
  WriteFile(dir_.File("victim/data"));
  WriteFile(Dir(1) + "/cntrl");
  ASSERT_TRUE(manager_.DeleteDevice(spec).ok());
  EXPECT_TRUE(Exists(dir_.File("victim/data")));
  EXPECT_TRUE(Exists(Dir(1) + "/cntrl"));
  EXPECT_TRUE(spdk_.GetSubsystem("nqn.2016-06.io.spdk:vfiouser-1").has_value());
}

TEST_F(VfioUserTest, DeleteNeverFollowsASymlinkedSocketDirectory) {
  ASSERT_TRUE(std::filesystem::create_directory(dir_.File("outside")));
  WriteFile(dir_.File("outside/data"));
  ASSERT_EQ(symlink(dir_.File("outside").c_str(), Dir(3).c_str()), 0);
  auto spec = manager_.SpecFromHandle("nvme:nqn.2016-06.io.spdk:vfiouser-3");
  ASSERT_TRUE(spec.ok());
  EXPECT_TRUE(manager_.DeleteDevice(*spec).ok());
  EXPECT_TRUE(Exists(dir_.File("outside/data")));
}

TEST_F(VfioUserTest, DeleteFailures) {
  DeviceSpec spec = Create(0);
  qemu_.FailCommand("device_del");
  auto deleted = manager_.DeleteDevice(spec);
  EXPECT_EQ(deleted.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(deleted.message()), StartsWith("Failed to delete NVMe/vfiouser device"));
  qemu_.ClearFaults();
  EXPECT_TRUE(manager_.DeleteDevice(spec).ok());  // the retry finishes the job
  EXPECT_FALSE(Exists(Dir(0)));

  Create(0);
  spdk_.SetUnreachable(true);
  EXPECT_EQ(manager_.DeleteDevice(spec).code(), absl::StatusCode::kUnavailable);
  spdk_.ClearFaults();
  spdk_.Fail("nvmf_delete_subsystem", -32603, "Internal error");
  EXPECT_EQ(manager_.DeleteDevice(spec).code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(qemu_.FindDevice("vfiouser-0").has_value());
}

// ---- volumes --------------------------------------------------------------------------------------------

TEST_F(VfioUserTest, AttachAndDetachVolumes) {
  DeviceSpec d0 = Create(0);
  DeviceSpec d1 = Create(1);
  VolumeExposure v0 = Volume(kUuid0);
  ASSERT_TRUE(manager_.AttachVolume(d0, v0).ok());
  EXPECT_EQ(v0.nsid, 1u);
  auto subsystem = spdk_.GetSubsystem(kNqn0);
  ASSERT_EQ(subsystem->namespaces.size(), 1u);
  EXPECT_EQ(subsystem->namespaces[0].uuid, kUuid0);
  EXPECT_EQ(subsystem->namespaces[0].bdev, "null0");
  auto add = spdk_.Calls().back();
  EXPECT_EQ(add.method, "nvmf_subsystem_add_ns");
  EXPECT_EQ(add.params["namespace"]["nguid"], Uuid::Parse(kUuid0)->ToHex(false));
  EXPECT_TRUE(spdk_.GetSubsystem("nqn.2016-06.io.spdk:vfiouser-1")->namespaces.empty());

  VolumeExposure retry = Volume(kUuid0);
  ASSERT_TRUE(manager_.AttachVolume(d0, retry).ok());
  EXPECT_EQ(retry.nsid, 1u);
  EXPECT_EQ(spdk_.GetSubsystem(kNqn0)->namespaces.size(), 1u);

  // A "cross" detach removes nothing.
  ASSERT_TRUE(manager_.DetachVolume(d1, v0).ok());
  EXPECT_EQ(spdk_.GetSubsystem(kNqn0)->namespaces.size(), 1u);
  ASSERT_TRUE(manager_.DetachVolume(d0, v0).ok());
  EXPECT_TRUE(spdk_.GetSubsystem(kNqn0)->namespaces.empty());
  ASSERT_TRUE(manager_.DetachVolume(d0, v0).ok());
}

TEST_F(VfioUserTest, AttachErrorsHaveTheIntendedCodes) {
  DeviceSpec spec = Plan(0);  // not created
  VolumeExposure v0 = Volume(kUuid0);
  EXPECT_EQ(manager_.AttachVolume(spec, v0), absl::NotFoundError("Invalid device handle"));
  EXPECT_TRUE(manager_.DetachVolume(spec, v0).ok());  // the device is gone: nothing exposed
  Create(0);
  VolumeExposure missing = Volume("00000000-0000-4000-8000-000000000000");
  EXPECT_EQ(manager_.AttachVolume(spec, missing), absl::NotFoundError("Volume could not be found"));
  spdk_.SetUnreachable(true);
  EXPECT_EQ(manager_.AttachVolume(spec, v0).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(manager_.DetachVolume(spec, v0).code(), absl::StatusCode::kUnavailable);
}

// ---- Reconcile ------------------------------------------------------------------------------------------

TEST_F(VfioUserTest, ReconcileRecreatesTheTargetAndQemuSides) {
  DeviceSpec spec = Create(0);
  VolumeExposure v0 = Volume(kUuid0);
  ASSERT_TRUE(manager_.AttachVolume(spec, v0).ok());
  WriteFile(Dir(0) + "/cntrl");
  spdk_.DeleteSubsystem(kNqn0);  // the target restarted
  qemu_.RemoveDevice("vfiouser-0");

  std::vector<VolumeExposure> volumes = {Volume(kUuid0)};
  ASSERT_TRUE(manager_.Reconcile(spec, volumes, {kUuid0}).ok());
  auto subsystem = spdk_.GetSubsystem(kNqn0);
  ASSERT_TRUE(subsystem.has_value());
  EXPECT_TRUE(subsystem->allow_any_host);
  ASSERT_EQ(subsystem->listeners.size(), 1u);
  EXPECT_EQ(subsystem->listeners[0]["traddr"], Dir(0));
  ASSERT_EQ(subsystem->namespaces.size(), 1u);
  EXPECT_EQ(volumes[0].nsid, subsystem->namespaces[0].nsid);
  EXPECT_TRUE(qemu_.FindDevice("vfiouser-0").has_value());
  EXPECT_TRUE(Exists(Dir(0) + "/cntrl"));
}

TEST_F(VfioUserTest, ReconcileOfAHealthyDeviceOnlyReads) {
  DeviceSpec spec = Create(0);
  VolumeExposure v0 = Volume(kUuid0);
  ASSERT_TRUE(manager_.AttachVolume(spec, v0).ok());
  spdk_.ClearCalls();
  qemu_.ClearRequests();
  std::vector<VolumeExposure> volumes = {Volume(kUuid0)};
  ASSERT_TRUE(manager_.Reconcile(spec, volumes, {kUuid0}).ok());
  EXPECT_EQ(volumes[0].nsid, 1u);
  EXPECT_THAT(spdk_.Methods(), ElementsAre("nvmf_get_subsystems"));
  EXPECT_THAT(qemu_.Commands(), ElementsAre("query-pci"));
}

TEST_F(VfioUserTest, ReconcileRemovesOnlyManagedStrayNamespaces) {
  DeviceSpec spec = Create(0);
  VolumeExposure v0 = Volume(kUuid0);
  VolumeExposure v1 = Volume(kUuid1);
  ASSERT_TRUE(manager_.AttachVolume(spec, v0).ok());
  ASSERT_TRUE(manager_.AttachVolume(spec, v1).ok());
  std::vector<VolumeExposure> none;
  ASSERT_TRUE(manager_.Reconcile(spec, none, {kUuid1}).ok());
  auto subsystem = spdk_.GetSubsystem(kNqn0);
  ASSERT_EQ(subsystem->namespaces.size(), 1u);
  EXPECT_EQ(subsystem->namespaces[0].uuid, kUuid0);  // not smad's: left alone
}

TEST_F(VfioUserTest, ReconcileReportsAnUnreachableQemu) {
  DeviceSpec spec = Create(0);
  qemu_.CloseOnCommand("query-pci");
  std::vector<VolumeExposure> none;
  EXPECT_EQ(manager_.Reconcile(spec, none, {}).code(), absl::StatusCode::kUnavailable);
}

// ---- QoS --------------------------------------------------------------------------------------------------

TEST_F(VfioUserTest, QosIsVolumeLevelOnly) {
  sma::GetQosCapabilitiesResponse caps = manager_.QosCapabilities();
  EXPECT_FALSE(caps.has_max_device_caps());
  EXPECT_TRUE(caps.max_volume_caps().rw_iops());
  EXPECT_TRUE(caps.max_volume_caps().rd_bandwidth());
  EXPECT_TRUE(caps.max_volume_caps().wr_bandwidth());
  EXPECT_TRUE(caps.max_volume_caps().rw_bandwidth());
  EXPECT_FALSE(caps.max_volume_caps().rd_iops());
  EXPECT_FALSE(caps.max_volume_caps().wr_iops());
  DeviceSpec spec = Plan(0);
  EXPECT_EQ(manager_.QosBdev(spec, nullptr).status(), absl::InvalidArgumentError("Invalid volume ID"));
  VolumeExposure v0 = Volume(kUuid0);
  EXPECT_EQ(manager_.QosBdev(spec, &v0).value_or(""), kUuid0);
}

}  // namespace
}  // namespace smad::agent
