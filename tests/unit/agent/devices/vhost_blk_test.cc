#include "agent/devices/vhost_blk.h"

#include <chrono>
#include <string>

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

constexpr char kUuid0[] = "0e3c5f7a-1b2d-4c6e-8f90-a1b2c3d4e5f0";
constexpr char kUuid1[] = "0e3c5f7a-1b2d-4c6e-8f90-a1b2c3d4e5f1";

class VhostBlkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spdk_.AddBdev("null0", kUuid0);
    spdk_.AddBdev("null1", kUuid1);
    ASSERT_TRUE(manager_.Init(Params()).ok());
  }

  Json Params(uint16_t qmp_port = 0, double timeout = 2) {
    return Json{{"buses", {{{"name", "pci.spdk.0"}, {"count", 32}}, {{"name", "pci.spdk.1"}, {"count", 32}}}},
                {"qmp_port", qmp_port != 0 ? qmp_port : qemu_.port()},
                {"sock_path", dir_.path()},
                {"qmp_timeout", timeout}};
  }

  static sma::CreateDeviceRequest Request(uint32_t physical_id, const char* volume_uuid, uint32_t virtual_id = 0) {
    sma::CreateDeviceRequest request;
    request.mutable_virtio_blk()->set_physical_id(physical_id);
    request.mutable_virtio_blk()->set_virtual_id(virtual_id);
    if (volume_uuid != nullptr) {
      auto bytes = Uuid::Parse(volume_uuid)->bytes();
      request.mutable_volume()->set_volume_id(std::string(bytes.begin(), bytes.end()));
    }
    return request;
  }

  DeviceSpec Plan(uint32_t physical_id, const char* volume_uuid) {
    auto spec = manager_.PlanDevice(Request(physical_id, volume_uuid), nullptr);
    EXPECT_TRUE(spec.ok()) << spec.status();
    return spec.ok() ? *spec : DeviceSpec{};
  }

  static VolumeExposure Volume(const char* uuid) { return VolumeExposure{uuid, uuid, 0}; }

  // Creates device `physical_id` on `volume_uuid` as the agent does: create, then confirm the exposure.
  DeviceSpec Create(uint32_t physical_id, const char* volume_uuid) {
    DeviceSpec spec = Plan(physical_id, volume_uuid);
    VolumeExposure volume = Volume(volume_uuid);
    auto created = manager_.CreateDeviceWithVolume(spec, nullptr, &volume);
    EXPECT_TRUE(created.ok()) << created.status();
    EXPECT_TRUE(manager_.AttachVolume(spec, volume).ok());
    EXPECT_EQ(volume.nsid, 1u);
    return spec;
  }

  smad::testing::TempDir dir_;
  FakeQemu qemu_;
  FakeSpdk spdk_;
  TargetRpc rpc_{spdk_, 5s};
  VhostBlkDeviceManager manager_{rpc_};
};

TEST_F(VhostBlkTest, OwnsOnlyWellFormedHandles) {
  for (const char* handle : {"virtio_blk:sma-0", "virtio_blk:sma-32", "virtio_blk:sma-4294967295"}) {
    EXPECT_TRUE(manager_.OwnsHandle(handle)) << handle;
    ASSERT_TRUE(manager_.SpecFromHandle(handle).ok()) << handle;
  }
  for (const char* handle : {"virtio_blk:sma-", "virtio_blk:sma-01", "virtio_blk:sma--1", "virtio_blk:sma-1/../x",
                             "virtio_blk:../sma-1", "virtio_blk:foo", "virtio_blk", "virtio_blk:sma-4294967296",
                             "virtio_blk:sma-1 ", "nvme:nqn.2016-06.io.spdk:vfiouser-0", "virtio_blkx:sma-1"}) {
    EXPECT_FALSE(manager_.OwnsHandle(handle)) << handle;
    EXPECT_EQ(manager_.SpecFromHandle(handle).status().code(), absl::StatusCode::kNotFound) << handle;
  }
}

TEST_F(VhostBlkTest, InitNeedsParamsAndQmpPort) {
  VhostBlkDeviceManager manager(rpc_);
  EXPECT_EQ(manager.Init(Json()), absl::InvalidArgumentError("params: missing (buses, qmp_port...)"));
  EXPECT_EQ(manager.Init(Json{{"sock_path", "/var/tmp"}}), absl::InvalidArgumentError("qmp_port: missing"));
  EXPECT_EQ(manager.Init(Json::parse(R"({"qmp_port": 9090, "buses": [{"name": "b", "count": -1}]})")).message(),
            "buses[0].count: must not be negative");
}

// ---- PlanDevice --------------------------------------------------------------------------------------

TEST_F(VhostBlkTest, PlansHandlePlacementAndVolume) {
  DeviceSpec spec = Plan(32, kUuid0);
  EXPECT_EQ(spec.handle, "virtio_blk:sma-32");
  EXPECT_EQ(spec.manager, "vhost_blk");
  EXPECT_EQ(spec.params, Json({{"physical_id", 32}, {"bus", "pci.spdk.1"}, {"slot", 0}, {"volume_id", kUuid0}}));
}

TEST_F(VhostBlkTest, RejectsBadRequestsBeforeTouchingAnything) {
  EXPECT_EQ(manager_.PlanDevice(Request(0, kUuid0, 1), nullptr).status(),
            absl::InvalidArgumentError("Unsupported virtual_id value"));
  EXPECT_EQ(manager_.PlanDevice(Request(0, nullptr), nullptr).status(),
            absl::InvalidArgumentError("volume: required for virtio_blk devices"));
  EXPECT_EQ(manager_.PlanDevice(Request(64, kUuid0), nullptr).status(),
            absl::InvalidArgumentError("Invalid physical_id"));
  EXPECT_THAT(spdk_.Calls(), IsEmpty());
  EXPECT_EQ(qemu_.connections(), 0);
}

TEST_F(VhostBlkTest, ADeviceCannotChangeItsVolume) {
  DeviceSpec previous = Plan(1, kUuid1);
  auto spec = manager_.PlanDevice(Request(1, kUuid0), &previous);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(spec.status().message()), StartsWith("Failed to create vhost device"));
  EXPECT_TRUE(manager_.PlanDevice(Request(1, kUuid1), &previous).ok());
}

TEST_F(VhostBlkTest, CreateNeedsTheVolume) {
  DeviceSpec spec = Plan(0, kUuid0);
  EXPECT_EQ(manager_.CreateDeviceWithVolume(spec, nullptr, nullptr).status(),
            absl::InvalidArgumentError("volume: required for virtio_blk devices"));
  EXPECT_EQ(manager_.CreateDevice(spec, nullptr).status(),
            absl::InvalidArgumentError("volume: required for virtio_blk devices"));
  EXPECT_THAT(spdk_.Calls(), IsEmpty());
}

// ---- CreateDevice ------------------------------------------------------------------------------------

TEST_F(VhostBlkTest, CreatesControllerChardevAndDevice) {
  DeviceSpec spec = Plan(0, kUuid0);
  VolumeExposure volume = Volume(kUuid0);
  auto created = manager_.CreateDeviceWithVolume(spec, nullptr, &volume);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->created);
  EXPECT_EQ(created->handle, "virtio_blk:sma-0");
  ASSERT_EQ(spdk_.Calls().size(), 1u);
  EXPECT_EQ(spdk_.Calls()[0].method, "vhost_create_blk_controller");
  EXPECT_EQ(spdk_.Calls()[0].params, Json({{"ctrlr", "sma-0"}, {"dev_name", kUuid0}}));
  EXPECT_EQ(spdk_.Controller("sma-0"), "null0");

  EXPECT_THAT(qemu_.Commands(), ElementsAre("query-chardev", "chardev-add", "query-pci", "device_add"));
  EXPECT_EQ(qemu_.LastArguments("chardev-add"),
            Json::parse(R"({"id": "sma-0", "backend": {"type": "socket", "data": {"addr": {"type": "unix",
                "data": {"path": ")" + dir_.path() + R"(/sma-0"}}, "server": false}}})"));
  EXPECT_EQ(qemu_.LastArguments("device_add"), Json({{"driver", "vhost-user-blk-pci"},
                                                     {"chardev", "sma-0"},
                                                     {"bus", "pci.spdk.0"},
                                                     {"addr", "0x0"},
                                                     {"id", "sma-0"}}));
  ASSERT_TRUE(manager_.AttachVolume(spec, volume).ok());
  EXPECT_EQ(volume.nsid, 1u);
}

TEST_F(VhostBlkTest, TwoDevicesAndTheSecondBus) {
  DeviceSpec d0 = Create(0, kUuid0);
  DeviceSpec d32 = Create(32, kUuid1);
  EXPECT_NE(d0.handle, d32.handle);
  auto device = qemu_.FindDevice("sma-32");
  ASSERT_TRUE(device.has_value());
  EXPECT_EQ(device->bus, "pci.spdk.1");
  EXPECT_EQ(device->args["addr"], "0x0");
}

TEST_F(VhostBlkTest, RetryChangesNothing) {
  DeviceSpec spec = Create(0, kUuid0);
  spdk_.ClearCalls();
  qemu_.ClearRequests();
  VolumeExposure volume = Volume(kUuid0);
  auto again = manager_.CreateDeviceWithVolume(spec, &spec, &volume);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created);
  EXPECT_THAT(spdk_.Methods(), ElementsAre("vhost_get_controllers", "bdev_get_bdevs"));
  EXPECT_THAT(qemu_.Commands(), ElementsAre("query-chardev", "query-pci"));
  // Same for a device smad forgot (previous == nullptr): the optimistic create fails, then it looks.
  auto adopted = manager_.CreateDeviceWithVolume(spec, nullptr, &volume);
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  EXPECT_FALSE(adopted->created);
}

TEST_F(VhostBlkTest, AControllerOnAnotherVolumeIsInternalAndUntouched) {
  Create(1, kUuid1);
  DeviceSpec conflicting = Plan(1, kUuid0);
  VolumeExposure volume = Volume(kUuid0);
  auto created = manager_.CreateDeviceWithVolume(conflicting, nullptr, &volume);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(created.status().message()), StartsWith("Failed to create vhost device"));
  EXPECT_EQ(spdk_.Controller("sma-1"), "null1");
  EXPECT_TRUE(qemu_.FindDevice("sma-1").has_value());
  EXPECT_TRUE(qemu_.HasChardev("sma-1"));
}

TEST_F(VhostBlkTest, AMissingVolumeIsNotFound) {
  DeviceSpec spec = Plan(0, "00000000-0000-4000-8000-000000000000");
  VolumeExposure volume = Volume("00000000-0000-4000-8000-000000000000");
  auto created = manager_.CreateDeviceWithVolume(spec, nullptr, &volume);
  EXPECT_EQ(created.status(), absl::NotFoundError("Volume could not be found"));
  EXPECT_EQ(qemu_.connections(), 0);
}

TEST_F(VhostBlkTest, QmpErrorsRollBackChardevAndController) {
  for (const char* failing : {"device_add", "chardev-add", "query-pci"}) {
    qemu_.ClearFaults();
    qemu_.FailCommand(failing, "GenericError", "injected");
    DeviceSpec spec = Plan(0, kUuid0);
    VolumeExposure volume = Volume(kUuid0);
    auto created = manager_.CreateDeviceWithVolume(spec, nullptr, &volume);
    EXPECT_EQ(created.status().code(), absl::StatusCode::kInternal) << failing;
    EXPECT_THAT(std::string(created.status().message()), StartsWith("Failed to create vhost device: ")) << failing;
    EXPECT_FALSE(spdk_.Controller("sma-0").has_value()) << failing;
    EXPECT_FALSE(qemu_.HasChardev("sma-0")) << failing;
    EXPECT_FALSE(qemu_.FindDevice("sma-0").has_value()) << failing;
  }
}

TEST_F(VhostBlkTest, QmpErrorKeepsAControllerThatExistedBefore) {
  DeviceSpec spec = Create(0, kUuid0);
  qemu_.RemoveDevice("sma-0");
  qemu_.FailCommand("device_add");
  VolumeExposure volume = Volume(kUuid0);
  EXPECT_EQ(manager_.CreateDeviceWithVolume(spec, &spec, &volume).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(spdk_.Controller("sma-0"), "null0");
  EXPECT_TRUE(qemu_.HasChardev("sma-0"));  // it existed before this call
}

TEST_F(VhostBlkTest, UnreachablePeersKeepTheirCodes) {
  VolumeExposure volume = Volume(kUuid0);
  spdk_.SetUnreachable(true);
  auto created = manager_.CreateDeviceWithVolume(Plan(0, kUuid0), nullptr, &volume);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(qemu_.connections(), 0);
  spdk_.ClearFaults();

  VhostBlkDeviceManager manager(rpc_);
  ASSERT_TRUE(manager.Init(Params(static_cast<uint16_t>(std::stoi(smad::testing::FreeTcpPort())))).ok());
  created = manager.CreateDeviceWithVolume(Plan(0, kUuid0), nullptr, &volume);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(created.status().message()), HasSubstr("QEMU unreachable"));
  EXPECT_FALSE(spdk_.Controller("sma-0").has_value());  // rolled back
}

// ---- DeleteDevice -----------------------------------------------------------------------------------

TEST_F(VhostBlkTest, DeleteUnplugsWaitsRemovesChardevThenController) {
  DeviceSpec spec = Create(0, kUuid0);
  qemu_.ClearRequests();
  spdk_.ClearCalls();
  ASSERT_TRUE(manager_.DeleteDevice(spec).ok());
  EXPECT_THAT(qemu_.Commands(), ElementsAre("query-pci", "device_del", "query-pci", "query-chardev", "chardev-remove"));
  EXPECT_EQ(qemu_.LastArguments("device_del"), Json({{"id", "sma-0"}}));
  EXPECT_EQ(qemu_.LastArguments("chardev-remove"), Json({{"id", "sma-0"}}));
  EXPECT_THAT(spdk_.Methods(), ElementsAre("vhost_delete_controller"));
  EXPECT_EQ(spdk_.Calls()[0].params, Json({{"ctrlr", "sma-0"}}));
  EXPECT_FALSE(spdk_.Controller("sma-0").has_value());
  EXPECT_FALSE(qemu_.HasChardev("sma-0"));

  qemu_.ClearRequests();
  ASSERT_TRUE(manager_.DeleteDevice(spec).ok());  // idempotent
  EXPECT_THAT(qemu_.Commands(), ElementsAre("query-pci", "query-chardev"));
  ASSERT_TRUE(manager_.DeleteDevice(*manager_.SpecFromHandle("virtio_blk:sma-9")).ok());
}

TEST_F(VhostBlkTest, DeleteFailsWhenTheGuestKeepsTheDevice) {
  VhostBlkDeviceManager manager(rpc_);
  ASSERT_TRUE(manager.Init(Params(0, 0.3)).ok());
  DeviceSpec spec = Create(0, kUuid0);
  qemu_.SetGuestReleasesDevices(false);
  auto start = std::chrono::steady_clock::now();
  absl::Status deleted = manager.DeleteDevice(spec);
  EXPECT_EQ(deleted.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(deleted.message()), StartsWith("Failed to delete vhost device: QEMU timed out"));
  EXPECT_THAT(std::string(deleted.message()), HasSubstr("waiting for event DEVICE_DELETED"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  EXPECT_EQ(spdk_.Controller("sma-0"), "null0");  // nothing removed under a live device
  EXPECT_TRUE(qemu_.HasChardev("sma-0"));
}

TEST_F(VhostBlkTest, DeleteErrorsAreInternal) {
  DeviceSpec spec = Create(0, kUuid0);
  qemu_.FailCommand("chardev-remove");
  EXPECT_EQ(manager_.DeleteDevice(spec).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(spdk_.Controller("sma-0"), "null0");
  qemu_.ClearFaults();
  spdk_.Fail("vhost_delete_controller", -32603, "Internal error");
  absl::Status deleted = manager_.DeleteDevice(spec);
  EXPECT_EQ(deleted.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(deleted.message()), StartsWith("Failed to delete vhost device"));
  spdk_.ClearFaults();
  EXPECT_TRUE(manager_.DeleteDevice(spec).ok());
}

// ---- volumes ----------------------------------------------------------------------------------------

TEST_F(VhostBlkTest, VolumesAreFixedAtCreation) {
  DeviceSpec spec = Create(0, kUuid0);
  VolumeExposure other = Volume(kUuid1);
  EXPECT_EQ(manager_.AttachVolume(spec, other).code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(manager_.DetachVolume(spec, Volume(kUuid0)).code(), absl::StatusCode::kUnimplemented);
  DeviceSpec absent = Plan(5, kUuid1);
  EXPECT_EQ(manager_.AttachVolume(absent, other), absl::NotFoundError("Invalid device handle"));
}

// ---- Reconcile --------------------------------------------------------------------------------------

TEST_F(VhostBlkTest, ReconcileRecreatesControllerChardevAndDevice) {
  DeviceSpec spec = Create(0, kUuid0);
  spdk_.DeleteController("sma-0");
  qemu_.RemoveDevice("sma-0");
  qemu_.RemoveChardev("sma-0");
  std::vector<VolumeExposure> volumes = {Volume(kUuid0)};
  ASSERT_TRUE(manager_.Reconcile(spec, volumes, {kUuid0}).ok());
  EXPECT_EQ(spdk_.Controller("sma-0"), "null0");
  EXPECT_TRUE(qemu_.HasChardev("sma-0"));
  EXPECT_TRUE(qemu_.FindDevice("sma-0").has_value());
  EXPECT_EQ(volumes[0].nsid, 1u);

  spdk_.ClearCalls();
  qemu_.ClearRequests();
  ASSERT_TRUE(manager_.Reconcile(spec, volumes, {kUuid0}).ok());
  EXPECT_THAT(spdk_.Methods(), ElementsAre("vhost_get_controllers", "bdev_get_bdevs"));
  EXPECT_THAT(qemu_.Commands(), ElementsAre("query-chardev", "query-pci"));
}

TEST_F(VhostBlkTest, ReconcileWithoutItsVolumeLeavesTheQemuSideAlone) {
  DeviceSpec spec = Create(0, kUuid0);
  spdk_.DeleteController("sma-0");
  qemu_.ClearRequests();
  std::vector<VolumeExposure> none;
  EXPECT_TRUE(manager_.Reconcile(spec, none, {}).ok());
  EXPECT_FALSE(spdk_.Controller("sma-0").has_value());
  EXPECT_EQ(qemu_.connections(), 1);  // only Create's
}

// ---- QoS --------------------------------------------------------------------------------------------

TEST_F(VhostBlkTest, QosAtDeviceAndVolumeLevel) {
  sma::GetQosCapabilitiesResponse caps = manager_.QosCapabilities();
  ASSERT_TRUE(caps.has_max_device_caps());
  ASSERT_TRUE(caps.has_max_volume_caps());
  for (const auto* c : {&caps.max_device_caps(), &caps.max_volume_caps()}) {
    EXPECT_TRUE(c->rw_iops() && c->rd_bandwidth() && c->wr_bandwidth() && c->rw_bandwidth());
    EXPECT_FALSE(c->rd_iops() || c->wr_iops());
  }
  DeviceSpec spec = Create(0, kUuid0);
  EXPECT_EQ(manager_.QosBdev(spec, nullptr).value_or(""), "null0");  // the controller's bdev
  VolumeExposure volume = Volume(kUuid0);
  EXPECT_EQ(manager_.QosBdev(spec, &volume).value_or(""), kUuid0);
  DeviceSpec absent = Plan(7, kUuid1);
  EXPECT_EQ(manager_.QosBdev(absent, nullptr).status(),
            absl::NotFoundError("No device associated with device_handle could be found"));
}

}  // namespace
}  // namespace smad::agent
