// The QEMU-backed device managers against real processes: smad (gRPC) with its embedded smad-tgt, and a
// QMP peer started by the test (support/fake_qmp.h, a real TCP server on loopback) in place of QEMU.
// Walks the rows of shared/spec/sma.md checklists 4.6 (vhost_blk) and 4.7 (vfiouser) that need no VM:
// what the target holds (subsystems, listeners, vhost controllers, their Unix sockets), what QEMU was
// asked (device_add / chardev-add with the spec's exact arguments, device_del) and what the client gets;
// then the bad-input and QEMU-unreachable cases, which must change nothing on either side.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "support/fake_qmp.h"
#include "support/net.h"
#include "support/sma_helpers.h"
#include "support/smad_process.h"
#include "support/temp_dir.h"

namespace smad::testing {
namespace {

constexpr char kNqnPrefix[] = "nqn.2016-06.io.spdk:";

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

bool IsSocket(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

ino_t Inode(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

size_t Count(const std::vector<std::string>& list, const std::string& item) {
  return static_cast<size_t>(std::count(list.begin(), list.end(), item));
}

sma::CreateDeviceRequest Nvme(uint32_t physical_id, uint32_t virtual_id = 0) {
  sma::CreateDeviceRequest request;
  request.mutable_nvme()->set_physical_id(physical_id);
  request.mutable_nvme()->set_virtual_id(virtual_id);
  return request;
}

sma::CreateDeviceRequest VirtioBlk(uint32_t physical_id, const std::string& uuid, uint32_t virtual_id = 0) {
  sma::CreateDeviceRequest request;
  request.mutable_virtio_blk()->set_physical_id(physical_id);
  request.mutable_virtio_blk()->set_virtual_id(virtual_id);
  request.mutable_volume()->set_volume_id(UuidBytes(uuid));
  return request;
}

std::string NvmeHandle(uint32_t physical_id) { return absl::StrCat("nvme:", kNqnPrefix, "vfiouser-", physical_id); }
std::string VfioNqn(uint32_t physical_id) { return absl::StrCat(kNqnPrefix, "vfiouser-", physical_id); }
std::string VirtioHandle(uint32_t physical_id) { return absl::StrCat("virtio_blk:sma-", physical_id); }

// {rw_iops, rd_bandwidth, wr_bandwidth, rw_bandwidth}: what a bdev's QoS supports.
sma::GetQosCapabilitiesResponse::QosCapabilities BdevCaps() {
  sma::GetQosCapabilitiesResponse::QosCapabilities caps;
  caps.set_rw_iops(true);
  caps.set_rd_bandwidth(true);
  caps.set_wr_bandwidth(true);
  caps.set_rw_bandwidth(true);
  return caps;
}

class SmaQemuDevicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    vfio_dir_ = dir_.File("vfio");
    vhost_dir_ = dir_.File("vhost");
    // The vhost socket directory is the target's -S: it must exist before the target starts.
    ASSERT_EQ(mkdir(vhost_dir_.c_str(), 0755), 0);
    qemu_ = std::make_unique<FakeQemu>();
    smad_ = std::make_unique<SmadProcess>(dir_.path());
    SmadProcess::Options options;
    const std::string qmp = absl::StrCat("      buses: [{name: pci.spdk.0, count: 32}, {name: pci.spdk.1, count: 32}]\n",
                                         "      qmp_addr: 127.0.0.1\n", "      qmp_port: ", qemu_->port(), "\n");
    options.config_yaml = absl::StrCat("devices:\n",
                                       "  - name: vfiouser\n",
                                       "    params:\n", qmp,
                                       "      sock_path: \"", vfio_dir_, "\"\n",
                                       "  - name: vhost_blk\n",
                                       "    params:\n", qmp,
                                       "      sock_path: \"", vhost_dir_, "\"\n",
                                       ExtraDevicesYaml(),
                                       "target:\n",
                                       "  args: [\"-S\", \"", vhost_dir_, "\"]\n",
                                       ExtraTargetYaml());
    absl::Status started = smad_->Start(options);
    ASSERT_TRUE(started.ok()) << started << "\n" << smad_->ReadLog();
    client_ = std::make_unique<SmaClient>(smad_->Stub());
    tgt_ = std::make_unique<TargetView>(smad_->tgt_socket());
  }

  // More entries for the config's `devices` list and `target` section.
  virtual std::string ExtraDevicesYaml() { return ""; }
  virtual std::string ExtraTargetYaml() { return ""; }

  void TearDown() override {
    if (HasFailure() && smad_ != nullptr) {
      std::ifstream tgt_log(smad_->state_dir() + "/smad-tgt.log");
      std::stringstream ss;
      ss << tgt_log.rdbuf();
      ADD_FAILURE() << "smad log:\n" << smad_->ReadLog() << "\nsmad-tgt log:\n" << ss.str();
    }
  }

  std::string NullBdev(const std::string& name) {
    auto created = tgt_->Call("bdev_null_create", {{"name", name}, {"num_blocks", 25600}, {"block_size", 4096}});
    EXPECT_TRUE(created.ok()) << created.status();
    return tgt_->BdevUuid(name);
  }

  Json Limits(const std::string& bdev) {
    auto bdevs = tgt_->Call("bdev_get_bdevs", {{"name", bdev}});
    if (!bdevs.ok() || bdevs->empty()) return Json();
    return (*bdevs)[0]["assigned_rate_limits"];
  }

  std::string SocketDir(uint32_t physical_id) const { return absl::StrCat(vfio_dir_, "/vfiouser-", physical_id); }
  std::string Cntrl(uint32_t physical_id) const { return SocketDir(physical_id) + "/cntrl"; }
  std::string VhostSocket(uint32_t physical_id) const { return absl::StrCat(vhost_dir_, "/sma-", physical_id); }

  // The target's vhost controllers.
  std::vector<Json> Controllers() {
    auto list = tgt_->Call("vhost_get_controllers");
    EXPECT_TRUE(list.ok()) << list.status();
    if (!list.ok()) return {};
    return list->get<std::vector<Json>>();
  }
  // The controller `name` (null when absent).
  Json Controller(const std::string& name) {
    for (const Json& c : Controllers()) {
      if (c.value("ctrlr", "") == name) return c;
    }
    return Json();
  }

  // Whether subsystem `nqn` listens on vfio-user at `dir`.
  bool ListensOn(const std::string& nqn, const std::string& dir) {
    for (const Json& s : tgt_->Subsystems()) {
      if (s.value("nqn", "") != nqn) continue;
      for (const Json& a : s.value("listen_addresses", Json::array())) {
        if (absl::AsciiStrToUpper(a.value("trtype", "")) == "VFIOUSER" && a.value("traddr", "") == dir) return true;
      }
    }
    return false;
  }

  Json VfioDeviceAdd(uint32_t physical_id, const std::string& bus, const std::string& addr) const {
    return {{"driver", "vfio-user-pci"}, {"x-enable-migration", "on"}, {"socket", Cntrl(physical_id)},
            {"bus", bus},                {"addr", addr},               {"id", absl::StrCat("vfiouser-", physical_id)}};
  }
  Json VhostDeviceAdd(uint32_t physical_id, const std::string& bus, const std::string& addr) const {
    std::string id = absl::StrCat("sma-", physical_id);
    return {{"driver", "vhost-user-blk-pci"}, {"chardev", id}, {"bus", bus}, {"addr", addr}, {"id", id}};
  }
  Json ChardevAdd(uint32_t physical_id) const {
    return {{"id", absl::StrCat("sma-", physical_id)},
            {"backend",
             {{"type", "socket"},
              {"data",
               {{"addr", {{"type", "unix"}, {"data", {{"path", VhostSocket(physical_id)}}}}}, {"server", false}}}}}};
  }

  TempDir dir_;
  std::string vfio_dir_;
  std::string vhost_dir_;
  std::unique_ptr<FakeQemu> qemu_;
  std::unique_ptr<SmadProcess> smad_;
  std::unique_ptr<SmaClient> client_;
  std::unique_ptr<TargetView> tgt_;
};

// Checklist 4.7 (vfiouser_qemu.sh), rows 1-17 and 20, without the guest checks.
TEST_F(SmaQemuDevicesTest, VfioUserChecklist) {
  // 1: the vfio-user transport was created at start.
  auto transports = tgt_->Call("nvmf_get_transports", {{"trtype", "VFIOUSER"}});
  ASSERT_TRUE(transports.ok()) << transports.status();
  ASSERT_EQ(transports->size(), 1u);
  EXPECT_EQ((*transports)[0].value("trtype", ""), "VFIOUSER");

  // 2-3: two devices: a subsystem each, listening on <sock_path>/vfiouser-N, whose cntrl socket exists;
  // QEMU was asked for a vfio-user-pci device on that socket.
  auto dev0 = client_->CreateDevice(Nvme(0));
  ASSERT_TRUE(dev0.ok()) << dev0.status();
  EXPECT_EQ(*dev0, NvmeHandle(0));
  EXPECT_TRUE(tgt_->HasSubsystem(VfioNqn(0)));
  EXPECT_TRUE(ListensOn(VfioNqn(0), SocketDir(0)));
  EXPECT_TRUE(IsSocket(Cntrl(0)));
  EXPECT_EQ(qemu_->LastArguments("device_add"), VfioDeviceAdd(0, "pci.spdk.0", "0x0"));
  auto dev1 = client_->CreateDevice(Nvme(1));
  ASSERT_TRUE(dev1.ok()) << dev1.status();
  EXPECT_EQ(*dev1, NvmeHandle(1));
  EXPECT_NE(*dev0, *dev1);
  EXPECT_TRUE(ListensOn(VfioNqn(1), SocketDir(1)));
  EXPECT_TRUE(IsSocket(Cntrl(1)));
  EXPECT_EQ(qemu_->LastArguments("device_add"), VfioDeviceAdd(1, "pci.spdk.0", "0x1"));
  EXPECT_EQ(tgt_->Subsystems().size(), 2u);
  ASSERT_TRUE(qemu_->FindDevice("vfiouser-0").has_value());
  ASSERT_TRUE(qemu_->FindDevice("vfiouser-1").has_value());

  // 4: retries: same handles, nothing added, the live sockets untouched (not recreated).
  const ino_t cntrl0 = Inode(Cntrl(0));
  const ino_t cntrl1 = Inode(Cntrl(1));
  EXPECT_EQ(client_->CreateDevice(Nvme(0)).value_or(""), *dev0);
  EXPECT_EQ(client_->CreateDevice(Nvme(1)).value_or(""), *dev1);
  EXPECT_EQ(tgt_->Subsystems().size(), 2u);
  EXPECT_TRUE(IsSocket(Cntrl(0)));
  EXPECT_TRUE(IsSocket(Cntrl(1)));
  EXPECT_EQ(Inode(Cntrl(0)), cntrl0);
  EXPECT_EQ(Inode(Cntrl(1)), cntrl1);
  EXPECT_EQ(Count(qemu_->Commands(), "device_add"), 2u);
  EXPECT_EQ(qemu_->Devices().size(), 2u);

  // 5-7: delete both (subsystem, QEMU device and socket directory go), then again.
  EXPECT_TRUE(client_->DeleteDevice(*dev0).ok());
  EXPECT_FALSE(tgt_->HasSubsystem(VfioNqn(0)));
  EXPECT_EQ(tgt_->Subsystems().size(), 1u);
  EXPECT_FALSE(Exists(SocketDir(0)));
  EXPECT_EQ(qemu_->LastArguments("device_del"), (Json{{"id", "vfiouser-0"}}));
  EXPECT_FALSE(qemu_->FindDevice("vfiouser-0").has_value());
  EXPECT_TRUE(qemu_->FindDevice("vfiouser-1").has_value());
  EXPECT_TRUE(client_->DeleteDevice(*dev1).ok());
  EXPECT_EQ(tgt_->Subsystems().size(), 0u);
  EXPECT_FALSE(Exists(SocketDir(1)));
  EXPECT_TRUE(qemu_->Devices().empty());
  EXPECT_TRUE(client_->DeleteDevice(*dev0).ok());
  EXPECT_TRUE(client_->DeleteDevice(*dev1).ok());
  EXPECT_EQ(Count(qemu_->Commands(), "device_del"), 2u);

  // 8-15: volumes: attach, repeat, cross detach (changes nothing), detach, repeat, delete.
  std::string uuid0 = NullBdev("null0");
  std::string uuid1 = NullBdev("null1");
  ASSERT_FALSE(uuid0.empty());
  ASSERT_FALSE(uuid1.empty());
  ASSERT_TRUE(client_->CreateDevice(Nvme(0)).ok());
  ASSERT_TRUE(client_->CreateDevice(Nvme(1)).ok());
  ASSERT_TRUE(client_->AttachVolume(*dev0, uuid0).ok());
  auto ns0 = tgt_->Namespaces(VfioNqn(0));
  ASSERT_EQ(ns0.size(), 1u);
  EXPECT_EQ(ns0[0]["uuid"], uuid0);
  EXPECT_EQ(tgt_->Namespaces(VfioNqn(1)).size(), 0u);
  ASSERT_TRUE(client_->AttachVolume(*dev1, uuid1).ok());
  auto ns1 = tgt_->Namespaces(VfioNqn(1));
  ASSERT_EQ(ns1.size(), 1u);
  EXPECT_EQ(ns1[0]["uuid"], uuid1);
  EXPECT_TRUE(client_->AttachVolume(*dev0, uuid0).ok());
  EXPECT_TRUE(client_->AttachVolume(*dev1, uuid1).ok());
  EXPECT_EQ(tgt_->Namespaces(VfioNqn(0)).size(), 1u);
  EXPECT_EQ(tgt_->Namespaces(VfioNqn(1)).size(), 1u);
  // 4.8: a device with a volume cannot be deleted.
  EXPECT_EQ(client_->DeleteDevice(*dev0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(tgt_->HasSubsystem(VfioNqn(0)));
  EXPECT_TRUE(IsSocket(Cntrl(0)));
  EXPECT_TRUE(client_->DetachVolume(*dev0, uuid1).ok());
  EXPECT_TRUE(client_->DetachVolume(*dev1, uuid0).ok());
  EXPECT_EQ(tgt_->Namespaces(VfioNqn(0)).size(), 1u);
  EXPECT_EQ(tgt_->Namespaces(VfioNqn(1)).size(), 1u);
  EXPECT_TRUE(client_->DetachVolume(*dev0, uuid0).ok());
  EXPECT_TRUE(client_->DetachVolume(*dev1, uuid1).ok());
  EXPECT_EQ(tgt_->Namespaces(VfioNqn(0)).size(), 0u);
  EXPECT_EQ(tgt_->Namespaces(VfioNqn(1)).size(), 0u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(client_->DetachVolume(*dev0, uuid0).ok());
    EXPECT_TRUE(client_->DetachVolume(*dev1, uuid1).ok());
  }
  EXPECT_TRUE(client_->DeleteDevice(*dev0).ok());
  EXPECT_TRUE(client_->DeleteDevice(*dev1).ok());
  EXPECT_EQ(tgt_->Subsystems().size(), 0u);

  // 16-17: physical_id 42 is slot 10 of the second bus.
  auto dev42 = client_->CreateDevice(Nvme(42));
  ASSERT_TRUE(dev42.ok()) << dev42.status();
  EXPECT_EQ(*dev42, NvmeHandle(42));
  EXPECT_EQ(qemu_->LastArguments("device_add"), VfioDeviceAdd(42, "pci.spdk.1", "0xa"));
  EXPECT_TRUE(IsSocket(Cntrl(42)));
  auto placed = qemu_->FindDevice("vfiouser-42");
  ASSERT_TRUE(placed.has_value());
  EXPECT_EQ(placed->bus, "pci.spdk.1");
  EXPECT_EQ(placed->slot, 10u);
  EXPECT_TRUE(client_->DeleteDevice(*dev42).ok());
  EXPECT_FALSE(qemu_->FindDevice("vfiouser-42").has_value());
  EXPECT_FALSE(tgt_->HasSubsystem(VfioNqn(42)));
  EXPECT_FALSE(Exists(SocketDir(42)));

  // 20: capabilities: volume caps only.
  auto caps = client_->GetQosCapabilities(sma::DEVICE_TYPE_NVME);
  ASSERT_TRUE(caps.ok()) << caps.status();
  sma::GetQosCapabilitiesResponse expected;
  *expected.mutable_max_volume_caps() = BdevCaps();
  EXPECT_FALSE(caps->has_max_device_caps()) << caps->DebugString();
  EXPECT_EQ(caps->SerializeAsString(), expected.SerializeAsString()) << caps->DebugString();
}

// Bad vfiouser requests: the precise code, and nothing created on the target, on disk or in QEMU.
TEST_F(SmaQemuDevicesTest, VfioUserBadInputChangesNothing) {
  qemu_->ClearRequests();
  auto status = client_->CreateDevice(Nvme(0, 1)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(status.message(), "Unsupported virtual_id value");
  // 2 buses of 32: 64 is the first physical_id beyond them.
  status = client_->CreateDevice(Nvme(64)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(status.message(), "Invalid physical_id");
  EXPECT_EQ(tgt_->Subsystems().size(), 0u);
  EXPECT_FALSE(Exists(SocketDir(0)));
  EXPECT_FALSE(Exists(SocketDir(64)));
  EXPECT_EQ(Count(qemu_->Commands(), "device_add"), 0u);
  EXPECT_TRUE(qemu_->Devices().empty());

  // A handle with a path in it: not a device, and nothing outside sock_path is touched.
  const std::string victim = dir_.File("victim");
  ASSERT_EQ(mkdir(victim.c_str(), 0755), 0);
  std::ofstream(victim + "/keep") << "x";
  status = client_->DeleteDevice(absl::StrCat("nvme:", kNqnPrefix, "../victim"));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  status = client_->DeleteDevice("virtio_blk:sma-../victim");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_TRUE(Exists(victim + "/keep"));
  EXPECT_EQ(Count(qemu_->Commands(), "device_del"), 0u);
}

// Checklist 4.6 (vhost_blk.sh), rows 2-12 and 15-17, without the guest checks.
TEST_F(SmaQemuDevicesTest, VhostBlkChecklist) {
  std::string uuid0 = NullBdev("null0");
  std::string uuid1 = NullBdev("null1");
  ASSERT_FALSE(uuid0.empty());
  ASSERT_FALSE(uuid1.empty());

  // 2-3: a controller each, its socket in the target's -S directory (= sock_path); QEMU got a chardev
  // on that socket and a vhost-user-blk-pci device on the chardev.
  auto dev0 = client_->CreateDevice(VirtioBlk(0, uuid0));
  ASSERT_TRUE(dev0.ok()) << dev0.status();
  EXPECT_EQ(*dev0, VirtioHandle(0));
  Json c0 = Controller("sma-0");
  ASSERT_FALSE(c0.is_null());
  EXPECT_EQ(c0["backend_specific"]["block"]["bdev"], "null0");
  EXPECT_EQ(c0.value("socket", ""), VhostSocket(0));
  EXPECT_TRUE(IsSocket(VhostSocket(0)));
  EXPECT_EQ(qemu_->LastArguments("chardev-add"), ChardevAdd(0));
  EXPECT_EQ(qemu_->LastArguments("device_add"), VhostDeviceAdd(0, "pci.spdk.0", "0x0"));
  EXPECT_EQ(qemu_->ChardevPath("sma-0"), VhostSocket(0));
  auto dev1 = client_->CreateDevice(VirtioBlk(1, uuid1));
  ASSERT_TRUE(dev1.ok()) << dev1.status();
  EXPECT_EQ(*dev1, VirtioHandle(1));
  EXPECT_NE(*dev0, *dev1);
  EXPECT_EQ(Controller("sma-1")["backend_specific"]["block"]["bdev"], "null1");
  EXPECT_TRUE(IsSocket(VhostSocket(1)));
  EXPECT_EQ(qemu_->LastArguments("chardev-add"), ChardevAdd(1));
  EXPECT_EQ(qemu_->LastArguments("device_add"), VhostDeviceAdd(1, "pci.spdk.0", "0x1"));
  EXPECT_EQ(Controllers().size(), 2u);

  // 4: retries: same handles, nothing added, the sockets untouched.
  const ino_t sock0 = Inode(VhostSocket(0));
  const ino_t sock1 = Inode(VhostSocket(1));
  EXPECT_EQ(client_->CreateDevice(VirtioBlk(0, uuid0)).value_or(""), *dev0);
  EXPECT_EQ(client_->CreateDevice(VirtioBlk(1, uuid1)).value_or(""), *dev1);
  EXPECT_EQ(Controllers().size(), 2u);
  EXPECT_EQ(Inode(VhostSocket(0)), sock0);
  EXPECT_EQ(Inode(VhostSocket(1)), sock1);
  EXPECT_EQ(Count(qemu_->Commands(), "device_add"), 2u);
  EXPECT_EQ(Count(qemu_->Commands(), "chardev-add"), 2u);

  // 5: pf 1 with null0's volume: refused, nothing changed.
  EXPECT_FALSE(client_->CreateDevice(VirtioBlk(1, uuid0)).ok());
  EXPECT_EQ(Controller("sma-1")["backend_specific"]["block"]["bdev"], "null1");
  EXPECT_EQ(Controllers().size(), 2u);
  EXPECT_EQ(qemu_->Devices().size(), 2u);

  // 7-9: delete: QEMU unplugs (device_del, answered by DEVICE_DELETED), the chardev, the controller
  // and its socket go; then again.
  EXPECT_TRUE(client_->DeleteDevice(*dev0).ok());
  EXPECT_EQ(qemu_->LastArguments("device_del"), (Json{{"id", "sma-0"}}));
  EXPECT_EQ(Count(qemu_->DeletedEvents(), "sma-0"), 1u);
  EXPECT_FALSE(qemu_->FindDevice("sma-0").has_value());
  EXPECT_FALSE(qemu_->HasChardev("sma-0"));
  EXPECT_EQ(qemu_->LastArguments("chardev-remove"), (Json{{"id", "sma-0"}}));
  EXPECT_TRUE(Controller("sma-0").is_null());
  EXPECT_FALSE(Exists(VhostSocket(0)));
  EXPECT_EQ(Controllers().size(), 1u);
  EXPECT_TRUE(client_->DeleteDevice(*dev1).ok());
  EXPECT_FALSE(qemu_->HasChardev("sma-1"));
  EXPECT_FALSE(Exists(VhostSocket(1)));
  EXPECT_EQ(Controllers().size(), 0u);
  EXPECT_TRUE(client_->DeleteDevice(*dev0).ok());
  EXPECT_TRUE(client_->DeleteDevice(*dev1).ok());
  EXPECT_TRUE(qemu_->Devices().empty());
  EXPECT_EQ(Count(qemu_->Commands(), "device_del"), 2u);

  // 11-12: pf 32 is the first slot of the second bus.
  ASSERT_TRUE(client_->CreateDevice(VirtioBlk(0, uuid0)).ok());
  auto dev32 = client_->CreateDevice(VirtioBlk(32, uuid1));
  ASSERT_TRUE(dev32.ok()) << dev32.status();
  EXPECT_EQ(*dev32, VirtioHandle(32));
  EXPECT_EQ(qemu_->LastArguments("device_add"), VhostDeviceAdd(32, "pci.spdk.1", "0x0"));
  EXPECT_TRUE(IsSocket(VhostSocket(32)));
  EXPECT_EQ(qemu_->Devices().size(), 2u);
  EXPECT_TRUE(client_->DeleteDevice(*dev0).ok());
  EXPECT_TRUE(client_->DeleteDevice(*dev32).ok());
  EXPECT_TRUE(qemu_->Devices().empty());
  EXPECT_EQ(Controllers().size(), 0u);

  // 15: capabilities: device and volume caps.
  ASSERT_TRUE(client_->CreateDevice(VirtioBlk(0, uuid0)).ok());
  auto caps = client_->GetQosCapabilities(sma::DEVICE_TYPE_VIRTIO_BLK);
  ASSERT_TRUE(caps.ok()) << caps.status();
  sma::GetQosCapabilitiesResponse expected;
  *expected.mutable_max_device_caps() = BdevCaps();
  *expected.mutable_max_volume_caps() = BdevCaps();
  EXPECT_EQ(caps->SerializeAsString(), expected.SerializeAsString()) << caps->DebugString();

  // 16-17: volume-level then device-level limits, both on null0.
  sma::SetQosRequest qos;
  qos.set_device_handle(*dev0);
  qos.set_volume_id(UuidBytes(uuid0));
  auto* m = qos.mutable_maximum();
  m->set_rd_iops(0);
  m->set_wr_iops(0);
  m->set_rw_iops(3);
  m->set_rd_bandwidth(4);
  m->set_wr_bandwidth(5);
  m->set_rw_bandwidth(6);
  ASSERT_TRUE(client_->SetQos(qos).ok());
  Json limits = Limits("null0");
  EXPECT_EQ(limits.value("rw_ios_per_sec", 0ull), 3000u) << limits;
  EXPECT_EQ(limits.value("rw_mbytes_per_sec", 0ull), 6u) << limits;
  EXPECT_EQ(limits.value("r_mbytes_per_sec", 0ull), 4u) << limits;
  EXPECT_EQ(limits.value("w_mbytes_per_sec", 0ull), 5u) << limits;
  qos.set_volume_id("");
  m->set_rw_iops(4);
  m->set_rd_bandwidth(5);
  m->set_wr_bandwidth(6);
  m->set_rw_bandwidth(7);
  ASSERT_TRUE(client_->SetQos(qos).ok());
  limits = Limits("null0");
  EXPECT_EQ(limits.value("rw_ios_per_sec", 0ull), 4000u) << limits;
  EXPECT_EQ(limits.value("rw_mbytes_per_sec", 0ull), 7u) << limits;
  EXPECT_EQ(limits.value("r_mbytes_per_sec", 0ull), 5u) << limits;
  EXPECT_EQ(limits.value("w_mbytes_per_sec", 0ull), 6u) << limits;
  EXPECT_TRUE(client_->DeleteDevice(*dev0).ok());
  EXPECT_EQ(Controllers().size(), 0u);
}

// Bad vhost_blk requests: the precise code, and no controller, socket, chardev or device.
TEST_F(SmaQemuDevicesTest, VhostBlkBadInputChangesNothing) {
  std::string uuid0 = NullBdev("null0");
  qemu_->ClearRequests();
  auto status = client_->CreateDevice(VirtioBlk(0, uuid0, 1)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(status.message(), "Unsupported virtual_id value");
  status = client_->CreateDevice(VirtioBlk(64, uuid0)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(status.message(), "Invalid physical_id");
  EXPECT_EQ(Controllers().size(), 0u);
  EXPECT_FALSE(Exists(VhostSocket(0)));
  EXPECT_FALSE(Exists(VhostSocket(64)));
  EXPECT_EQ(Count(qemu_->Commands(), "chardev-add"), 0u);
  EXPECT_EQ(Count(qemu_->Commands(), "device_add"), 0u);
  // The volume is free: a valid create with it works.
  auto dev0 = client_->CreateDevice(VirtioBlk(0, uuid0));
  ASSERT_TRUE(dev0.ok()) << dev0.status();
  EXPECT_TRUE(client_->DeleteDevice(*dev0).ok());
}

// QEMU unreachable: CreateDevice says so (UNAVAILABLE or DEADLINE_EXCEEDED, never UNKNOWN) and the
// target is rolled back (no subsystem, socket directory, controller or socket left).
TEST_F(SmaQemuDevicesTest, QmpPeerStoppedRollsBackTheTarget) {
  std::string uuid0 = NullBdev("null0");
  qemu_.reset();  // the port now refuses connections
  auto is_qemu_down = [](const absl::Status& s) {
    return s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kDeadlineExceeded;
  };

  auto nvme = client_->CreateDevice(Nvme(0));
  EXPECT_TRUE(is_qemu_down(nvme.status())) << nvme.status();
  EXPECT_FALSE(tgt_->HasSubsystem(VfioNqn(0)));
  EXPECT_EQ(tgt_->Subsystems().size(), 0u);
  EXPECT_FALSE(Exists(SocketDir(0)));

  auto virtio = client_->CreateDevice(VirtioBlk(0, uuid0));
  EXPECT_TRUE(is_qemu_down(virtio.status())) << virtio.status();
  EXPECT_EQ(Controllers().size(), 0u);
  EXPECT_FALSE(Exists(VhostSocket(0)));

  // Nothing was kept on smad's side either: a retry fails the same way (not on a half-made device).
  auto again = client_->CreateDevice(VirtioBlk(0, uuid0));
  EXPECT_TRUE(is_qemu_down(again.status())) << again.status();
  EXPECT_EQ(Controllers().size(), 0u);
}

// vhost_blk and nvmf_tcp devices, with volumes whose bdevs the target re-creates at every start.
class SmaQemuAndNvmfTest : public SmaQemuDevicesTest {
 protected:
  static constexpr const char* kUuids[] = {"0f8a2c1e-6d41-4b7e-9a35-2c1d5e7f8a01", "0f8a2c1e-6d41-4b7e-9a35-2c1d5e7f8a02",
                                           "0f8a2c1e-6d41-4b7e-9a35-2c1d5e7f8a03"};
  std::string ExtraDevicesYaml() override { return "  - name: nvmf_tcp\n"; }
  std::string ExtraTargetYaml() override {
    const std::string path = dir_.File("bdevs.json");
    std::ofstream cfg(path, std::ios::trunc);
    cfg << R"({"subsystems":[{"subsystem":"bdev","config":[)";
    for (int i = 0; i < 3; ++i) {
      cfg << (i > 0 ? "," : "") << R"({"method":"bdev_null_create","params":{"name":"null)" << i
          << R"(","num_blocks":25600,"block_size":4096,"uuid":")" << kUuids[i] << R"("}})";
    }
    cfg << "]}]}";
    return absl::StrCat("  config_file: ", path, "\n");
  }
};

// After a target restart, a device whose QEMU cannot be reached is retried; it must not keep the other
// devices (of its own type and of other types) from being restored meanwhile.
TEST_F(SmaQemuAndNvmfTest, UnreachableQemuDoesNotBlockRestoringOtherDevices) {
  ASSERT_TRUE(client_->CreateDevice(VirtioBlk(0, kUuids[0])).ok());
  ASSERT_TRUE(client_->CreateDevice(VirtioBlk(1, kUuids[1])).ok());
  const std::string nqn = absl::StrCat(kNqnPrefix, "reconcile0");
  auto handle = client_->CreateDevice(NvmfTcpDevice(nqn, FreeTcpPort(), {}, true));
  ASSERT_TRUE(handle.ok()) << handle.status();
  ASSERT_TRUE(client_->AttachVolume(*handle, kUuids[2]).ok());

  qemu_.reset();  // QEMU is gone: reconciling either vhost device fails at its QMP step
  const pid_t old_pid = smad_->TgtPid();
  ASSERT_GT(old_pid, 0);
  kill(old_pid, SIGKILL);
  // Polled while the new target may not listen yet: no assertion on the calls themselves.
  auto restored = [&] {
    if (smad_->TgtPid() <= 0 || smad_->TgtPid() == old_pid) return false;
    auto controllers = tgt_->Call("vhost_get_controllers");
    if (!controllers.ok() || !controllers->is_array() || controllers->size() != 2) return false;
    return tgt_->Namespaces(nqn).size() == 1;
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline && !restored()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(restored());
  EXPECT_EQ(Controller("sma-0")["backend_specific"]["block"]["bdev"], "null0");
  EXPECT_EQ(Controller("sma-1")["backend_specific"]["block"]["bdev"], "null1");
  EXPECT_EQ(tgt_->Namespaces(nqn)[0]["uuid"], kUuids[2]);
  // The passes keep failing (and retrying) for the vhost devices until QEMU is back.
  EXPECT_NE(smad_->ReadLog().find("QEMU unreachable"), std::string::npos);
}

}  // namespace
}  // namespace smad::testing
