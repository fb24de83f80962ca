// bdev_nvme end to end: two real smad-tgt processes, a "remote" exporting bdevs over NVMe/TCP and a
// "local" one attaching them with bdev_nvme_attach_controller and exporting the resulting bdevs again in
// a subsystem of its own. Data is written and read back through the initiator library (SyncController)
// on both sides; namespace hot-add/remove and controller loss/reconnect are driven by RPCs on the remote
// and by killing and restarting it.
//
// Timing: every wait is a bounded poll (namespace changes are noticed within the module's 1 s poll,
// reconnects are tried every reconnect_delay_sec).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jsonrpc/blocking_client.h"
#include "nvme/host/sync_controller.h"
#include "nvme/host/transport_id.h"
#include "support/net.h"
#include "support/temp_dir.h"
#include "support/tgt_process.h"

namespace smad {
namespace {

using jsonrpc::Json;
using nvme::host::SyncController;
using nvme::host::TransportId;
using namespace std::chrono_literals;

constexpr char kRemoteNqn[] = "nqn.2016-06.io.spdk:remote0";
constexpr char kLocalNqn[] = "nqn.2016-06.io.spdk:local0";
constexpr char kHostNqn[] = "nqn.2014-08.org.nvmexpress:uuid:0d3e1f7a-1111-4222-8333-944455556666";
constexpr char kUuid1[] = "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c03";
constexpr char kUuid2[] = "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c04";
constexpr char kUuid3[] = "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c05";

Json Listen(const std::string& port) {
  return {{"trtype", "tcp"}, {"adrfam", "ipv4"}, {"traddr", "127.0.0.1"}, {"trsvcid", port}};
}

// A smad-tgt process with its RPC connection.
class Tgt {
 public:
  Tgt(const testing::TempDir& dir, const std::string& name) : process_(dir.path(), name) {}
  ~Tgt() {
    if (process_.running()) process_.Stop(SIGTERM);
  }

  bool Start(const std::string& config_file = "") {
    testing::TgtProcess::Options options;
    options.cpumask = "0x3";  // two data reactors: queue pairs per reactor
    options.config_file = config_file;
    absl::Status started = process_.Start(options);
    if (!started.ok()) {
      ADD_FAILURE() << "smad-tgt did not start: " << started << "\n" << process_.ReadLog();
      return false;
    }
    auto client = process_.Connect();
    if (!client.ok()) return false;
    client_.emplace(std::move(client).value());
    return true;
  }
  void Kill() { process_.Stop(SIGKILL); }

  absl::StatusOr<Json> TryCall(const std::string& method, const Json& params = Json()) {
    return client_->Call(method, params);
  }
  Json Call(const std::string& method, const Json& params = Json()) {
    auto result = TryCall(method, params);
    if (!result.ok()) {
      ADD_FAILURE() << method << " " << params.dump() << ": " << result.status() << "\n" << process_.ReadLog();
      return Json();
    }
    return *result;
  }
  // The JSON-RPC error {code, message} of a call expected to fail.
  std::pair<int, std::string> Error(const std::string& method, const Json& params) {
    auto raw = client_->CallRaw(method, params);
    if (!raw.ok() || !raw->contains("error")) {
      ADD_FAILURE() << method << " " << params.dump() << " did not fail: " << (raw.ok() ? raw->dump() : "");
      return {0, ""};
    }
    return {(*raw)["error"]["code"].get<int>(), (*raw)["error"]["message"].get<std::string>()};
  }

  Json Bdev(const std::string& name) {
    auto r = TryCall("bdev_get_bdevs", {{"name", name}});
    return r.ok() && r->is_array() && r->size() == 1 ? (*r)[0] : Json();
  }
  std::string ControllerState(const std::string& name) {
    auto r = TryCall("bdev_nvme_get_controllers", {{"name", name}});
    if (!r.ok() || r->empty()) return "";
    return (*r)[0]["ctrlrs"][0]["state"].get<std::string>();
  }
  std::string log() const { return process_.ReadLog(); }

 private:
  testing::TgtProcess process_;
  std::optional<jsonrpc::BlockingClient> client_;
};

// Polls `pred` every 100 ms until it holds or `timeout` passes.
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return pred();
}

std::vector<uint8_t> Pattern(size_t bytes, uint8_t seed) {
  std::vector<uint8_t> data(bytes);
  for (size_t i = 0; i < bytes; ++i) data[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
  return data;
}

absl::StatusOr<std::unique_ptr<SyncController>> ConnectTo(const std::string& port, const std::string& nqn) {
  auto trid = nvme::host::ParseTransportId("trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:" + port +
                                           " subnqn:" + nqn + " hostnqn:" + kHostNqn);
  if (!trid.ok()) return trid.status();
  return SyncController::Connect(*trid);
}

// The remote's configuration as a save_config document: aio bdevs (data survives a restart) with fixed
// UUIDs, exported as namespaces 1 and 2 of kRemoteNqn on `port`.
std::string WriteRemoteConfig(const testing::TempDir& dir, const std::string& port) {
  std::string disk1 = dir.File("remote1.img"), disk2 = dir.File("remote2.img");
  for (const auto& disk : {disk1, disk2}) {
    if (access(disk.c_str(), F_OK) != 0) {
      std::ofstream(disk).close();
      EXPECT_EQ(truncate(disk.c_str(), 8 << 20), 0);
    }
  }
  Json bdev = Json::array(
      {{{"method", "bdev_aio_create"},
        {"params", {{"name", "aio1"}, {"filename", disk1}, {"block_size", 512}, {"uuid", kUuid1}}}},
       {{"method", "bdev_aio_create"},
        {"params", {{"name", "aio2"}, {"filename", disk2}, {"block_size", 4096}, {"uuid", kUuid2}}}}});
  Json nvmf = Json::array(
      {{{"method", "nvmf_create_transport"}, {"params", {{"trtype", "TCP"}}}},
       {{"method", "nvmf_create_subsystem"},
        {"params", {{"nqn", kRemoteNqn}, {"allow_any_host", true}, {"serial_number", "SMADREMOTE0"}}}},
       {{"method", "nvmf_subsystem_add_listener"}, {"params", {{"nqn", kRemoteNqn}, {"listen_address", Listen(port)}}}},
       {{"method", "nvmf_subsystem_add_ns"},
        {"params", {{"nqn", kRemoteNqn}, {"namespace", {{"bdev_name", "aio1"}, {"nsid", 1}}}}}},
       {{"method", "nvmf_subsystem_add_ns"},
        {"params", {{"nqn", kRemoteNqn}, {"namespace", {{"bdev_name", "aio2"}, {"nsid", 2}}}}}}});
  Json config = {{"subsystems", Json::array({{{"subsystem", "bdev"}, {"config", bdev}},
                                             {{"subsystem", "nvmf"}, {"config", nvmf}}})}};
  std::string path = dir.File("remote.json");
  std::ofstream(path) << config.dump(2);
  return path;
}

Json AttachParams(const std::string& port) {
  return {{"name", "Nvme0"},       {"trtype", "tcp"},        {"traddr", "127.0.0.1"}, {"adrfam", "ipv4"},
          {"trsvcid", port},       {"subnqn", kRemoteNqn},   {"hostnqn", kHostNqn}};
}

class BdevNvmeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    remote_port_ = testing::FreeTcpPort();
    local_port_ = testing::FreeTcpPort();
    remote_config_ = WriteRemoteConfig(dir_, remote_port_);
    remote_ = std::make_unique<Tgt>(dir_, "remote");
    ASSERT_TRUE(remote_->Start(remote_config_));
    local_ = std::make_unique<Tgt>(dir_, "local");
    ASSERT_TRUE(local_->Start());
  }

  // Attaches Nvme0 with reconnects every `delay` s for up to `loss` s, and exports Nvme0n1 locally.
  void AttachAndExport(uint32_t delay, int loss) {
    Json params = AttachParams(remote_port_);
    params["reconnect_delay_sec"] = delay;
    params["ctrlr_loss_timeout_sec"] = loss;
    ASSERT_EQ(local_->Call("bdev_nvme_attach_controller", params).size(), 2u);
    ExportLocally("Nvme0n1");
  }

  // Exports `bdev` as namespace 1 of kLocalNqn on the local target.
  void ExportLocally(const std::string& bdev) {
    local_->Call("nvmf_create_transport", {{"trtype", "TCP"}, {"max_io_size", 1 << 20}});
    local_->Call("nvmf_create_subsystem", {{"nqn", kLocalNqn}, {"allow_any_host", true}});
    local_->Call("nvmf_subsystem_add_listener", {{"nqn", kLocalNqn}, {"listen_address", Listen(local_port_)}});
    local_->Call("nvmf_subsystem_add_ns", {{"nqn", kLocalNqn}, {"namespace", {{"bdev_name", bdev}, {"nsid", 1}}}});
  }

  // Writes `blocks` of a pattern at `lba` through the local export's namespace `local_nsid` and checks
  // that the remote's namespace `remote_nsid` holds them.
  void ExpectWriteReachesRemote(SyncController& via_local, uint32_t local_nsid, uint32_t remote_nsid, uint64_t lba,
                                uint32_t blocks, uint8_t seed) {
    std::vector<uint8_t> data = Pattern(blocks * 512, seed);
    ASSERT_TRUE(via_local.Write(local_nsid, lba, blocks, data).ok());
    auto direct = ConnectTo(remote_port_, kRemoteNqn);
    ASSERT_TRUE(direct.ok()) << direct.status();
    std::vector<uint8_t> back(data.size());
    ASSERT_TRUE((*direct)->Read(remote_nsid, lba, blocks, absl::MakeSpan(back)).ok());
    EXPECT_EQ(back, data);
  }

  size_t LocalNamespaces() {
    auto subsystems = local_->TryCall("nvmf_get_subsystems");
    if (!subsystems.ok()) return 0;
    for (const auto& s : *subsystems) {
      if (s["nqn"] == kLocalNqn) return s["namespaces"].size();
    }
    return 0;
  }

  testing::TempDir dir_;
  std::string remote_port_, local_port_, remote_config_;
  std::unique_ptr<Tgt> remote_, local_;
};

TEST_F(BdevNvmeTest, AttachExposesRemoteNamespacesAndCarriesData) {
  Json names = local_->Call("bdev_nvme_attach_controller", AttachParams(remote_port_));
  ASSERT_EQ(names, Json::array({"Nvme0n1", "Nvme0n2"}));

  Json b1 = local_->Bdev("Nvme0n1");
  ASSERT_FALSE(b1.is_null());
  EXPECT_EQ(b1["uuid"], kUuid1);
  EXPECT_EQ(b1["aliases"], Json::array({kUuid1}));
  EXPECT_EQ(b1["product_name"], "NVMe disk");
  EXPECT_EQ(b1["block_size"], 512);
  EXPECT_EQ(b1["num_blocks"], (8 << 20) / 512);
  EXPECT_EQ(b1["supported_io_types"]["write_zeroes"], true);
  EXPECT_EQ(b1["supported_io_types"]["unmap"], true);
  const Json& nvme = b1["driver_specific"]["nvme"][0];
  EXPECT_EQ(nvme["trid"], Json({{"trtype", "TCP"}, {"adrfam", "IPv4"}, {"traddr", "127.0.0.1"},
                                {"trsvcid", remote_port_}, {"subnqn", kRemoteNqn}}));
  EXPECT_EQ(nvme["ctrlr_data"]["subnqn"], kRemoteNqn);
  EXPECT_EQ(nvme["ctrlr_data"]["serial_number"], "SMADREMOTE0");
  EXPECT_EQ(nvme["ns_data"]["id"], 1);
  EXPECT_EQ(b1["driver_specific"]["mp_policy"], "active_passive");
  Json b2 = local_->Bdev(kUuid2);  // by alias
  EXPECT_EQ(b2["name"], "Nvme0n2");
  EXPECT_EQ(b2["block_size"], 4096);

  Json ctrlrs = local_->Call("bdev_nvme_get_controllers");
  ASSERT_EQ(ctrlrs.size(), 1u);
  EXPECT_EQ(ctrlrs[0]["name"], "Nvme0");
  EXPECT_EQ(ctrlrs[0]["ctrlrs"][0]["state"], "enabled");
  EXPECT_EQ(ctrlrs[0]["ctrlrs"][0]["host"]["nqn"], kHostNqn);
  EXPECT_EQ(ctrlrs[0]["ctrlrs"][0]["trid"]["trsvcid"], remote_port_);
  EXPECT_EQ(local_->Call("bdev_nvme_get_controllers", {{"name", "Nvme0"}}), ctrlrs);

  // Data: written through the local export, read back there and straight from the remote.
  ExportLocally("Nvme0n1");
  auto via_local = ConnectTo(local_port_, kLocalNqn);
  ASSERT_TRUE(via_local.ok()) << via_local.status();
  auto direct = ConnectTo(remote_port_, kRemoteNqn);
  ASSERT_TRUE(direct.ok()) << direct.status();
  // Up to 1 MiB: the local transport takes it in one command, the remote's MDTS (128 KiB) makes the
  // module split it.
  for (uint32_t blocks : {1u, 8u, 256u, 2048u}) {
    std::vector<uint8_t> data = Pattern(blocks * 512, static_cast<uint8_t>(blocks));
    uint64_t lba = 100 + blocks;
    absl::Status written = (*via_local)->Write(1, lba, blocks, data);
    ASSERT_TRUE(written.ok()) << written << "\n" << local_->log();
    std::vector<uint8_t> back(data.size());
    ASSERT_TRUE((*via_local)->Read(1, lba, blocks, absl::MakeSpan(back)).ok());
    EXPECT_EQ(back, data) << blocks << " blocks via local";
    std::fill(back.begin(), back.end(), 0);
    for (uint32_t at = 0; at < blocks; at += 256) {  // the remote takes at most 128 KiB per command
      uint32_t n = std::min(256u, blocks - at);
      ASSERT_TRUE((*direct)->Read(1, lba + at, n, absl::MakeSpan(back).subspan(at * 512, n * 512)).ok());
    }
    EXPECT_EQ(back, data) << blocks << " blocks direct";
  }
  // And the other way round: written on the remote, read through the local bdev.
  std::vector<uint8_t> data = Pattern(64 * 512, 0x5a);
  ASSERT_TRUE((*direct)->Write(1, 5000, 64, data).ok());
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE((*via_local)->Read(1, 5000, 64, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, data);
  ASSERT_TRUE((*via_local)->Flush(1).ok());
  via_local->reset();
  direct->reset();

  // save_config recreates the controller.
  Json config = local_->Call("save_config");
  bool saved = false;
  for (const auto& s : config["subsystems"]) {
    if (s["subsystem"] != "bdev") continue;
    for (const auto& e : s["config"]) {
      if (e["method"] != "bdev_nvme_attach_controller") continue;
      saved = true;
      EXPECT_EQ(e["params"]["name"], "Nvme0");
      EXPECT_EQ(e["params"]["trsvcid"], remote_port_);
      EXPECT_EQ(e["params"]["subnqn"], kRemoteNqn);
      EXPECT_EQ(e["params"]["hostnqn"], kHostNqn);
    }
    for (const auto& e : s["config"]) EXPECT_NE(e["params"].value("name", ""), "Nvme0n1");
  }
  EXPECT_TRUE(saved) << config.dump();

  // Detach: bdevs and the local namespace go away.
  EXPECT_EQ(local_->Call("bdev_nvme_detach_controller", {{"name", "Nvme0"}}), true);
  EXPECT_TRUE(local_->Bdev("Nvme0n1").is_null());
  EXPECT_TRUE(local_->Bdev("Nvme0n2").is_null());
  EXPECT_EQ(local_->Call("bdev_nvme_get_controllers"), Json::array());
  EXPECT_TRUE(WaitFor([&] { return LocalNamespaces() == 0; }, 5s));
  EXPECT_EQ(local_->Error("bdev_nvme_detach_controller", {{"name", "Nvme0"}}).first, -ENODEV);

  // The saved entry attaches again.
  ASSERT_TRUE(saved);
  Json again = local_->Call("bdev_nvme_attach_controller",
                            [&] {
                              for (const auto& s : config["subsystems"]) {
                                for (const auto& e : s["config"]) {
                                  if (e["method"] == "bdev_nvme_attach_controller") return e["params"];
                                }
                              }
                              return Json();
                            }());
  EXPECT_EQ(again, Json::array({"Nvme0n1", "Nvme0n2"}));
}

TEST_F(BdevNvmeTest, AttachErrorsAreSpdks) {
  ASSERT_EQ(local_->Call("bdev_nvme_attach_controller", AttachParams(remote_port_)).size(), 2u);
  auto [code, message] = local_->Error("bdev_nvme_attach_controller", AttachParams(remote_port_));
  EXPECT_EQ(code, -114);
  EXPECT_EQ(message, "A controller named Nvme0 already exists with the specified network path");

  Json other_nqn = AttachParams(remote_port_);
  other_nqn["subnqn"] = "nqn.2016-06.io.spdk:other";
  other_nqn["trsvcid"] = testing::FreeTcpPort();
  EXPECT_EQ(local_->Error("bdev_nvme_attach_controller", other_nqn).first, -EINVAL);

  Json same_trid = AttachParams(remote_port_);
  same_trid["name"] = "Nvme1";
  EXPECT_EQ(local_->Error("bdev_nvme_attach_controller", same_trid).first, -EEXIST);

  Json nobody = AttachParams(testing::FreeTcpPort());
  nobody["name"] = "Nvme9";
  auto [code5, message5] = local_->Error("bdev_nvme_attach_controller", nobody);
  EXPECT_EQ(code5, -5);
  EXPECT_EQ(message5, "Input/output error");
  EXPECT_FALSE(local_->TryCall("bdev_nvme_get_controllers", {{"name", "Nvme9"}}).ok());

  Json bad = AttachParams(remote_port_);
  bad["name"] = "Nvme2";
  bad["ctrlr_loss_timeout_sec"] = 5;  // reconnect_delay_sec 0
  EXPECT_EQ(local_->Error("bdev_nvme_attach_controller", bad).first, -EINVAL);
  bad["reconnect_delay_sec"] = 10;  // more than the loss timeout
  EXPECT_EQ(local_->Error("bdev_nvme_attach_controller", bad).first, -EINVAL);
  bad["reconnect_delay_sec"] = 1;
  bad["fast_io_fail_timeout_sec"] = 6;  // more than the loss timeout
  EXPECT_EQ(local_->Error("bdev_nvme_attach_controller", bad).first, -EINVAL);
  Json rdma = AttachParams(remote_port_);
  rdma["trtype"] = "rdma";
  EXPECT_EQ(local_->Error("bdev_nvme_attach_controller", rdma).first, -EINVAL);
  Json queues = AttachParams(remote_port_);
  queues["name"] = "Nvme3";
  queues["num_io_queues"] = 0;
  EXPECT_EQ(local_->Error("bdev_nvme_attach_controller", queues).first, -EINVAL);
  Json unknown = AttachParams(remote_port_);
  unknown["bogus"] = 1;
  EXPECT_EQ(local_->Error("bdev_nvme_attach_controller", unknown).first, -32603);
  EXPECT_EQ(local_->Error("bdev_nvme_attach_controller", {{"name", "x"}}).first, -32603);

  auto [gc, gm] = local_->Error("bdev_nvme_get_controllers", {{"name", "nope"}});
  EXPECT_EQ(gc, -EINVAL);
  EXPECT_EQ(gm, "Controller nope does not exist");
  EXPECT_EQ(local_->Error("bdev_nvme_detach_controller", {{"name", "nope"}}).first, -ENODEV);
  EXPECT_EQ(local_->Error("bdev_nvme_detach_controller", {{"name", "Nvme0"}, {"traddr", "127.0.0.2"}}).first,
            -ENXIO);
  EXPECT_EQ(local_->Call("bdev_nvme_get_controllers").size(), 1u);
}

TEST_F(BdevNvmeTest, RemoteNamespaceChangesFollowLocally) {
  ASSERT_EQ(local_->Call("bdev_nvme_attach_controller", AttachParams(remote_port_)).size(), 2u);
  ExportLocally("Nvme0n1");
  ASSERT_EQ(LocalNamespaces(), 1u);

  remote_->Call("nvmf_subsystem_remove_ns", {{"nqn", kRemoteNqn}, {"nsid", 1}});
  EXPECT_TRUE(WaitFor([&] { return local_->Bdev("Nvme0n1").is_null(); }, 5s));
  EXPECT_TRUE(WaitFor([&] { return LocalNamespaces() == 0; }, 5s));
  EXPECT_FALSE(local_->Bdev("Nvme0n2").is_null());

  remote_->Call("bdev_malloc_create", {{"name", "m3"}, {"num_blocks", 2048}, {"block_size", 512}, {"uuid", kUuid3}});
  remote_->Call("nvmf_subsystem_add_ns", {{"nqn", kRemoteNqn}, {"namespace", {{"bdev_name", "m3"}, {"nsid", 3}}}});
  ASSERT_TRUE(WaitFor([&] { return !local_->Bdev("Nvme0n3").is_null(); }, 5s));
  Json b3 = local_->Bdev("Nvme0n3");
  EXPECT_EQ(b3["uuid"], kUuid3);
  EXPECT_EQ(b3["num_blocks"], 2048);

  // The new bdev carries I/O.
  local_->Call("nvmf_subsystem_add_ns", {{"nqn", kLocalNqn}, {"namespace", {{"bdev_name", "Nvme0n3"}, {"nsid", 3}}}});
  auto via_local = ConnectTo(local_port_, kLocalNqn);
  ASSERT_TRUE(via_local.ok());
  ExpectWriteReachesRemote(**via_local, 3, 3, 7, 16, 3);
}

TEST_F(BdevNvmeTest, ReconnectsWhenTheRemoteComesBack) {
  AttachAndExport(1, 5);
  auto via_local = ConnectTo(local_port_, kLocalNqn);
  ASSERT_TRUE(via_local.ok());
  std::vector<uint8_t> before = Pattern(32 * 512, 0x11);
  ASSERT_TRUE((*via_local)->Write(1, 40, 32, before).ok());

  remote_->Kill();
  EXPECT_TRUE(WaitFor([&] { return local_->ControllerState("Nvme0") != "enabled"; }, 3s));
  EXPECT_FALSE(local_->Bdev("Nvme0n1").is_null());
  // I/O during the outage waits for the reconnect.
  std::vector<uint8_t> during(before.size());
  auto pending = std::async(std::launch::async, [&] {
    return (*via_local)->Read(1, 40, 32, absl::MakeSpan(during));
  });
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(pending.wait_for(0s), std::future_status::timeout);

  remote_ = std::make_unique<Tgt>(dir_, "remote2");
  ASSERT_TRUE(remote_->Start(remote_config_));
  ASSERT_TRUE(WaitFor([&] { return local_->ControllerState("Nvme0") == "enabled"; }, 5s)) << local_->log();
  ASSERT_EQ(pending.wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(pending.get().ok());
  EXPECT_EQ(during, before);
  EXPECT_EQ(local_->Bdev("Nvme0n1")["uuid"], kUuid1);
  EXPECT_EQ(LocalNamespaces(), 1u);

  ExpectWriteReachesRemote(**via_local, 1, 1, 80, 32, 0x22);
}

TEST_F(BdevNvmeTest, ControllerLossTimeoutDeletesTheBdevs) {
  AttachAndExport(1, 3);
  auto start = std::chrono::steady_clock::now();
  remote_->Kill();
  ASSERT_TRUE(WaitFor([&] { return local_->Bdev("Nvme0n1").is_null(); }, 8s)) << local_->log();
  EXPECT_GE(std::chrono::steady_clock::now() - start, 2500ms);
  EXPECT_TRUE(local_->Bdev("Nvme0n2").is_null());
  EXPECT_TRUE(WaitFor([&] { return local_->Call("bdev_nvme_get_controllers").empty(); }, 3s));
  EXPECT_TRUE(WaitFor([&] { return LocalNamespaces() == 0; }, 3s));
}

TEST_F(BdevNvmeTest, WithoutReconnectTheControllerFails) {
  AttachAndExport(0, 0);
  remote_->Kill();
  ASSERT_TRUE(WaitFor([&] { return local_->ControllerState("Nvme0") == "failed"; }, 5s)) << local_->log();
  EXPECT_FALSE(local_->Bdev("Nvme0n1").is_null());  // SPDK keeps the bdevs of a failed controller
  auto via_local = ConnectTo(local_port_, kLocalNqn);
  ASSERT_TRUE(via_local.ok());
  std::vector<uint8_t> buffer(512);
  EXPECT_FALSE((*via_local)->Read(1, 0, 1, absl::MakeSpan(buffer)).ok());
  EXPECT_EQ(local_->Call("bdev_nvme_detach_controller", {{"name", "Nvme0"}}), true);
  EXPECT_TRUE(local_->Bdev("Nvme0n1").is_null());
}

}  // namespace
}  // namespace smad
