// smad end to end with real processes: a host reads and writes a volume through the device smad created
// (NVMe/TCP), the desired state survives smad crashes, and smad restores the target after smad-tgt dies.

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "nvme/host/sync_controller.h"
#include "nvme/host/transport_id.h"
#include "support/net.h"
#include "support/nvme_host.h"
#include "support/sma_helpers.h"
#include "support/smad_process.h"
#include "support/temp_dir.h"

namespace smad::testing {
namespace {

using nvme::host::SyncController;

constexpr char kNqn[] = "nqn.2016-06.io.spdk:cnode0";
constexpr char kHost[] = "nqn.2016-06.io.spdk:host0";

std::unique_ptr<SyncController> ConnectHost(const std::string& port, const std::string& nqn = kNqn) {
  return smad::testing::ConnectHost(port, nqn, kHost);
}

class SmaDurabilityTest : public ::testing::Test {
 protected:
  // smad with its embedded target; the target loads `bdevs.json` at every start (an aio bdev backed by a
  // file in the test directory, with a fixed UUID), as a production node would configure its disks.
  void StartSmad() {
    std::string file = dir_.path() + "/disk0.img";
    {
      std::ofstream out(file, std::ios::binary | std::ios::trunc);
      out.seekp(16 * 1024 * 1024 - 1);
      out.put('\0');
    }
    uuid_ = "5b8b05c5-3e44-4c12-9d0b-6f0e7e1f2a3b";
    std::ofstream cfg(dir_.path() + "/bdevs.json", std::ios::trunc);
    cfg << R"({"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_aio_create","params":{"name":"aio0","filename":")"
        << file << R"(","block_size":4096,"uuid":")" << uuid_ << R"("}}]}]})";
    cfg.close();
    smad_ = std::make_unique<SmadProcess>(dir_.path());
    SmadProcess::Options options;
    options.config_yaml = absl::StrCat("devices:\n  - name: nvmf_tcp\ntarget:\n  config_file: ", dir_.path(),
                                       "/bdevs.json\n");
    ASSERT_TRUE(smad_->Start(options).ok()) << smad_->ReadLog();
    client_ = std::make_unique<SmaClient>(smad_->Stub());
    tgt_ = std::make_unique<TargetView>(smad_->tgt_socket());
    port_ = FreeTcpPort();
  }

  std::string CreateDeviceWithVolume() {
    sma::CreateDeviceRequest create = NvmfTcpDevice(kNqn, port_, {kHost});
    create.mutable_volume()->set_volume_id(UuidBytes(uuid_));
    auto handle = client_->CreateDevice(create);
    EXPECT_TRUE(handle.ok()) << handle.status();
    return handle.value_or("");
  }

  // Waits until the target shows `nqn` with `namespaces` namespaces (the reconciler works in the
  // background after restarts).
  bool WaitForNamespaces(size_t namespaces, int timeout_ms = 20000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      if (tgt_->HasSubsystem(kNqn) && tgt_->Namespaces(kNqn).size() == namespaces) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  TempDir dir_;
  std::unique_ptr<SmadProcess> smad_;
  std::unique_ptr<SmaClient> client_;
  std::unique_ptr<TargetView> tgt_;
  std::string port_;
  std::string uuid_;
};

TEST_F(SmaDurabilityTest, HostReadsAndWritesTheAttachedVolumeAndLosesItOnDetach) {
  StartSmad();
  std::string handle = CreateDeviceWithVolume();
  auto host = ConnectHost(port_);
  ASSERT_NE(host, nullptr) << smad_->ReadLog();
  auto namespaces = host->ActiveNamespaces();
  ASSERT_TRUE(namespaces.ok());
  ASSERT_EQ(namespaces->size(), 1u);
  uint32_t nsid = (*namespaces)[0];
  auto ns = host->IdentifyNamespace(nsid);
  ASSERT_TRUE(ns.ok());
  ASSERT_TRUE(ns->uuid.has_value());
  EXPECT_EQ(ns->uuid->ToString(), uuid_);
  std::vector<uint8_t> data = Pattern(64 * 1024, 1);
  ASSERT_TRUE(host->Write(nsid, 16, 16, data).ok());
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(host->Read(nsid, 16, 16, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, data);

  ASSERT_TRUE(client_->DetachVolume(handle, uuid_).ok());
  namespaces = host->ActiveNamespaces();
  ASSERT_TRUE(namespaces.ok());
  EXPECT_TRUE(namespaces->empty());
  EXPECT_FALSE(host->Read(nsid, 16, 16, absl::MakeSpan(back)).ok());

  // A host that is not allowed is refused at Connect.
  auto trid = nvme::host::ParseTransportId(absl::StrCat("trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:", port_,
                                                        " subnqn:", kNqn, " hostnqn:nqn.2016-06.io.spdk:other"));
  ASSERT_TRUE(trid.ok());
  EXPECT_FALSE(SyncController::Connect(*trid).ok());
}

TEST_F(SmaDurabilityTest, DesiredStateSurvivesSmadCrash) {
  StartSmad();
  std::string handle = CreateDeviceWithVolume();
  sma::SetQosRequest qos;
  qos.set_device_handle(handle);
  qos.set_volume_id(UuidBytes(uuid_));
  qos.mutable_maximum()->set_rw_iops(7);
  ASSERT_TRUE(client_->SetQos(qos).ok());
  pid_t tgt_pid = smad_->TgtPid();
  smad_->Stop(SIGKILL);
  // The target keeps serving while smad is down; the restarted smad adopts it.
  EXPECT_EQ(kill(tgt_pid, 0), 0);
  ASSERT_TRUE(smad_->Restart().ok()) << smad_->ReadLog();
  client_ = std::make_unique<SmaClient>(smad_->Stub());
  EXPECT_EQ(smad_->TgtPid(), tgt_pid);
  // The bindings survived: deleting the device is refused while the volume is attached.
  EXPECT_EQ(client_->DeleteDevice(handle).code(), absl::StatusCode::kFailedPrecondition) << smad_->ReadLog();
  ASSERT_TRUE(client_->DetachVolume(handle, uuid_).ok());
  EXPECT_TRUE(WaitForNamespaces(0));
  ASSERT_TRUE(client_->DeleteDevice(handle).ok());
  EXPECT_FALSE(tgt_->HasSubsystem(kNqn));
}

TEST_F(SmaDurabilityTest, TargetRestartRestoresDevicesVolumesQosAndData) {
  StartSmad();
  std::string handle = CreateDeviceWithVolume();
  sma::SetQosRequest qos;
  qos.set_device_handle(handle);
  qos.set_volume_id(UuidBytes(uuid_));
  qos.mutable_maximum()->set_rw_bandwidth(100);
  ASSERT_TRUE(client_->SetQos(qos).ok());
  std::vector<uint8_t> data = Pattern(128 * 1024, 2);
  {
    auto host = ConnectHost(port_);
    ASSERT_NE(host, nullptr);
    ASSERT_TRUE(host->Write(1, 0, 32, data).ok());
    ASSERT_TRUE(host->Flush(1).ok());
  }
  pid_t old_pid = smad_->TgtPid();
  ASSERT_GT(old_pid, 0);
  kill(old_pid, SIGKILL);
  // The supervisor restarts smad-tgt; the reconciler re-creates the subsystem, namespace and QoS.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline && (smad_->TgtPid() == old_pid || smad_->TgtPid() <= 0)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_NE(smad_->TgtPid(), old_pid);
  ASSERT_TRUE(WaitForNamespaces(1)) << smad_->ReadLog();
  auto ns = tgt_->Namespaces(kNqn);
  EXPECT_EQ(ns[0]["uuid"], uuid_);
  auto bdevs = tgt_->Call("bdev_get_bdevs", {{"name", "aio0"}});
  ASSERT_TRUE(bdevs.ok());
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline &&
         (*bdevs)[0]["assigned_rate_limits"].value("rw_mbytes_per_sec", 0) != 100) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    bdevs = tgt_->Call("bdev_get_bdevs", {{"name", "aio0"}});
  }
  EXPECT_EQ((*bdevs)[0]["assigned_rate_limits"].value("rw_mbytes_per_sec", 0), 100);
  auto host = ConnectHost(port_);
  ASSERT_NE(host, nullptr);
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(host->Read(1, 0, 32, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, data);
}

TEST_F(SmaDurabilityTest, InvalidConfigurationExitsWithStatus2) {
  for (const std::string& yaml : {std::string("port: abc\n"), std::string("devices:\n  - name: nope\n"),
                                 std::string("bogus_key: 1\n"), std::string("crypto:\n  name: nope\n")}) {
    TempDir dir;
    SmadProcess smad(dir.path());
    SmadProcess::Options options;
    options.config_yaml = yaml;
    options.wait_ready = false;
    ASSERT_TRUE(smad.Start(options).ok());
    EXPECT_EQ(smad.WaitExit(20000), 2) << yaml << smad.ReadLog();
    std::string log = smad.ReadLog();
    EXPECT_NE(log.find("invalid configuration"), std::string::npos) << log;
    EXPECT_EQ(smad.TgtPid(), -1) << "nothing may be started for " << yaml;
  }
}

}  // namespace
}  // namespace smad::testing
