// bdev_nvme_start_discovery / stop_discovery / get_discovery_info between real smad-tgt processes: a
// "remote" target serving subsystems and discovery listeners, and a "local" target whose discovery
// service attaches them as bdev_nvme controllers. Fault injection (an endpoint answering garbage or
// nothing) uses FakeTcpPeer.
#include <chrono>
#include <optional>
#include <thread>
#include <tuple>

#include <csignal>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nvme/host/sync_controller.h"
#include "nvme/host/transport_id.h"
#include "support/fake_tcp_peer.h"
#include "support/net.h"
#include "support/temp_dir.h"
#include "support/tgt_process.h"

namespace smad {
namespace {

using ::testing::HasSubstr;
using jsonrpc::Json;
using testing::FakeTcpPeer;

constexpr char kDiscoveryNqn[] = "nqn.2014-08.org.nvmexpress.discovery";
constexpr char kNqn1[] = "nqn.2016-06.io.spdk:remote1";
constexpr char kNqn2[] = "nqn.2016-06.io.spdk:remote2";
constexpr char kHostNqn[] = "nqn.2014-08.org.nvmexpress:uuid:0d3e1f7a-1111-4222-8333-944455556666";
constexpr char kOtherHostNqn[] = "nqn.2014-08.org.nvmexpress:uuid:0d3e1f7a-2222-4222-8333-944455556666";
constexpr char kUuid1[] = "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c03";
constexpr char kUuid2[] = "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c04";

Json Listen(const std::string& port) {
  return {{"trtype", "tcp"}, {"adrfam", "ipv4"}, {"traddr", "127.0.0.1"}, {"trsvcid", port}};
}
Json Trid(const std::string& port, const std::string& subnqn) {
  return {{"trtype", "TCP"}, {"adrfam", "IPv4"}, {"traddr", "127.0.0.1"}, {"trsvcid", port}, {"subnqn", subnqn}};
}

// A started smad-tgt with a client.
struct Tgt {
  explicit Tgt(const std::string& dir, const std::string& name) : process(dir, name) {}
  testing::TgtProcess process;
  std::optional<jsonrpc::BlockingClient> client;

  void Start() {
    ASSERT_TRUE(process.Start().ok()) << process.ReadLog();
    auto c = process.Connect();
    ASSERT_TRUE(c.ok()) << c.status();
    client.emplace(std::move(c).value());
  }
  Json Call(const std::string& method, const Json& params = Json(),
            std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    auto result = client->Call(method, params, timeout);
    EXPECT_TRUE(result.ok()) << method << " " << params.dump() << ": " << result.status();
    return result.ok() ? *result : Json();
  }
  // The error object of a call expected to fail.
  Json CallError(const std::string& method, const Json& params,
                 std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    auto raw = client->CallRaw(method, params, timeout);
    EXPECT_TRUE(raw.ok()) << raw.status();
    if (!raw.ok()) return Json();
    EXPECT_TRUE(raw->contains("error")) << raw->dump();
    return raw->value("error", Json());
  }
};

class DiscoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    remote_.Start();
    local_.Start();
    data_port_ = testing::FreeTcpPort();
    disc_port_ = testing::FreeTcpPort();
    remote_.Call("nvmf_create_transport", {{"trtype", "TCP"}});
    local_.Call("nvmf_create_transport", {{"trtype", "TCP"}});
    AddRemoteSubsystem(kNqn1, "Malloc1", kUuid1);
    remote_.Call("nvmf_subsystem_add_listener", {{"nqn", kDiscoveryNqn}, {"listen_address", Listen(disc_port_)}});
  }

  void AddRemoteSubsystem(const std::string& nqn, const std::string& bdev, const std::string& uuid) {
    remote_.Call("bdev_malloc_create", {{"name", bdev}, {"num_blocks", 8192}, {"block_size", 512}, {"uuid", uuid}});
    remote_.Call("nvmf_create_subsystem", {{"nqn", nqn}, {"allow_any_host", false}});
    remote_.Call("nvmf_subsystem_add_ns", {{"nqn", nqn}, {"namespace", {{"bdev_name", bdev}, {"uuid", uuid}}}});
    remote_.Call("nvmf_subsystem_add_host", {{"nqn", nqn}, {"host", kHostNqn}});
    remote_.Call("nvmf_subsystem_add_listener", {{"nqn", nqn}, {"listen_address", Listen(data_port_)}});
  }

  Json StartParams(const std::string& name, const std::string& port, const std::string& hostnqn = kHostNqn) {
    return {{"name", name},           {"trtype", "tcp"},       {"traddr", "127.0.0.1"}, {"adrfam", "ipv4"},
            {"trsvcid", port},        {"hostnqn", hostnqn},    {"wait_for_attach", true}};
  }

  std::vector<std::string> ControllerNames() {
    std::vector<std::string> names;
    for (const Json& c : local_.Call("bdev_nvme_get_controllers")) names.push_back(c["name"]);
    return names;
  }
  std::vector<std::string> BdevNames() {
    std::vector<std::string> names;
    for (const Json& b : local_.Call("bdev_get_bdevs")) names.push_back(b["name"]);
    return names;
  }

  // Polls `condition` for up to `seconds`.
  template <typename F>
  bool Eventually(F condition, int seconds = 10) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      if (condition()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return condition();
  }

  testing::TempDir dir_;
  Tgt remote_{dir_.path(), "remote"};
  Tgt local_{dir_.path(), "local"};
  std::string data_port_;
  std::string disc_port_;
};

TEST_F(DiscoveryTest, AttachesListedSubsystemAndDescribesService) {
  EXPECT_EQ(local_.Call("bdev_nvme_start_discovery", StartParams("disc", disc_port_)), true);

  Json controllers = local_.Call("bdev_nvme_get_controllers");
  ASSERT_EQ(controllers.size(), 1u) << controllers.dump();
  EXPECT_EQ(controllers[0]["name"], "disc0");
  EXPECT_EQ(controllers[0]["ctrlrs"][0]["trid"], Trid(data_port_, kNqn1));
  Json bdev = local_.Call("bdev_get_bdevs", {{"name", kUuid1}});
  ASSERT_EQ(bdev.size(), 1u);
  EXPECT_EQ(bdev[0]["name"], "disc0n1");
  EXPECT_EQ(bdev[0]["uuid"], kUuid1);

  Json expected = Json::array({{{"name", "disc"},
                                {"trid", Trid(disc_port_, kDiscoveryNqn)},
                                {"referrals", Json::array({{{"trid", Trid(disc_port_, kDiscoveryNqn)}}})}}});
  EXPECT_EQ(local_.Call("bdev_nvme_get_discovery_info"), expected);

  // save_config: the service, not its controllers.
  Json config = local_.Call("save_config");
  Json bdev_config;
  for (const Json& s : config["subsystems"]) {
    if (s["subsystem"] == "bdev") bdev_config = s["config"];
  }
  int discovery_entries = 0;
  for (const Json& entry : bdev_config) {
    EXPECT_NE(entry["method"], "bdev_nvme_attach_controller") << entry.dump();
    if (entry["method"] != "bdev_nvme_start_discovery") continue;
    ++discovery_entries;
    EXPECT_EQ(entry["params"], Json({{"name", "disc"},
                                     {"hostnqn", kHostNqn},
                                     {"trtype", "TCP"},
                                     {"adrfam", "IPv4"},
                                     {"traddr", "127.0.0.1"},
                                     {"trsvcid", disc_port_},
                                     {"wait_for_attach", true},
                                     {"ctrlr_loss_timeout_sec", 0},
                                     {"reconnect_delay_sec", 0},
                                     {"fast_io_fail_timeout_sec", 0}}));
  }
  EXPECT_EQ(discovery_entries, 1);

  // Stop: everything it attached goes, and the name is unknown afterwards.
  EXPECT_EQ(local_.Call("bdev_nvme_stop_discovery", {{"name", "disc"}}), true);
  EXPECT_EQ(local_.Call("bdev_nvme_get_controllers"), Json::array());
  EXPECT_EQ(local_.Call("bdev_get_bdevs"), Json::array());
  EXPECT_EQ(local_.Call("bdev_nvme_get_discovery_info"), Json::array());
  Json error = local_.CallError("bdev_nvme_stop_discovery", {{"name", "disc"}});
  EXPECT_EQ(error["code"], -2);
  EXPECT_EQ(error["message"], "No such file or directory");
}

TEST_F(DiscoveryTest, TwoDiscoveryListenersAreBothReferrals) {
  std::string second = testing::FreeTcpPort();
  remote_.Call("nvmf_subsystem_add_listener", {{"nqn", kDiscoveryNqn}, {"listen_address", Listen(second)}});
  EXPECT_EQ(local_.Call("bdev_nvme_start_discovery", StartParams("disc", disc_port_)), true);
  Json info = local_.Call("bdev_nvme_get_discovery_info");
  ASSERT_EQ(info.size(), 1u);
  EXPECT_EQ(info[0]["referrals"], Json::array({{{"trid", Trid(disc_port_, kDiscoveryNqn)}},
                                               {{"trid", Trid(second, kDiscoveryNqn)}}}));
  // The referred address belongs to this service now: a second service for it is refused.
  Json error = local_.CallError("bdev_nvme_start_discovery", StartParams("other", second));
  EXPECT_EQ(error["code"], -17);
  EXPECT_EQ(error["message"], "File exists");
}

TEST_F(DiscoveryTest, HostNotAllowedSeesNoSubsystem) {
  EXPECT_EQ(local_.Call("bdev_nvme_start_discovery", StartParams("disc", disc_port_, kOtherHostNqn)), true);
  EXPECT_EQ(local_.Call("bdev_nvme_get_controllers"), Json::array());
  EXPECT_EQ(local_.Call("bdev_nvme_get_discovery_info").size(), 1u);
}

TEST_F(DiscoveryTest, FollowsSubsystemsAddedAndDeletedRemotely) {
  EXPECT_EQ(local_.Call("bdev_nvme_start_discovery", StartParams("disc", disc_port_)), true);
  ASSERT_EQ(ControllerNames(), std::vector<std::string>{"disc0"});

  AddRemoteSubsystem(kNqn2, "Malloc2", kUuid2);
  ASSERT_TRUE(Eventually([&] { return ControllerNames().size() == 2; })) << local_.process.ReadLog();
  EXPECT_EQ(ControllerNames(), (std::vector<std::string>{"disc0", "disc1"}));
  Json bdev = local_.Call("bdev_get_bdevs", {{"name", "disc1n1"}});
  ASSERT_EQ(bdev.size(), 1u);
  EXPECT_EQ(bdev[0]["uuid"], kUuid2);

  remote_.Call("nvmf_delete_subsystem", {{"nqn", kNqn1}});
  ASSERT_TRUE(Eventually([&] { return ControllerNames() == std::vector<std::string>{"disc1"}; }))
      << local_.process.ReadLog();
  EXPECT_EQ(BdevNames(), std::vector<std::string>{"disc1n1"});
}

TEST_F(DiscoveryTest, ReconnectsWhenTheDiscoveryControllerGoesAway) {
  Json params = StartParams("disc", disc_port_);
  params["ctrlr_loss_timeout_sec"] = -1;
  params["reconnect_delay_sec"] = 1;
  EXPECT_EQ(local_.Call("bdev_nvme_start_discovery", params), true);
  ASSERT_EQ(ControllerNames(), std::vector<std::string>{"disc0"});

  // The remote target dies and comes back (same ports) with one more subsystem.
  remote_.process.Stop(SIGKILL);
  Tgt again(dir_.path(), "remote-again");
  again.Start();
  again.Call("nvmf_create_transport", {{"trtype", "TCP"}});
  for (auto [nqn, bdev, uuid] : {std::tuple{kNqn1, "Malloc1", kUuid1}, std::tuple{kNqn2, "Malloc2", kUuid2}}) {
    again.Call("bdev_malloc_create", {{"name", bdev}, {"num_blocks", 8192}, {"block_size", 512}, {"uuid", uuid}});
    again.Call("nvmf_create_subsystem", {{"nqn", nqn}, {"allow_any_host", true}});
    again.Call("nvmf_subsystem_add_ns", {{"nqn", nqn}, {"namespace", {{"bdev_name", bdev}, {"uuid", uuid}}}});
    again.Call("nvmf_subsystem_add_listener", {{"nqn", nqn}, {"listen_address", Listen(data_port_)}});
  }
  again.Call("nvmf_subsystem_add_listener", {{"nqn", kDiscoveryNqn}, {"listen_address", Listen(disc_port_)}});

  ASSERT_TRUE(Eventually([&] { return ControllerNames() == std::vector<std::string>{"disc0", "disc1"}; }, 15))
      << local_.process.ReadLog();
  EXPECT_EQ(local_.Call("bdev_nvme_get_discovery_info")[0]["referrals"].size(), 1u);
}

TEST_F(DiscoveryTest, ReadsAndWritesThroughADiscoveredBdevExportedLocally) {
  EXPECT_EQ(local_.Call("bdev_nvme_start_discovery", StartParams("disc", disc_port_)), true);
  std::string local_port = testing::FreeTcpPort();
  const std::string local_nqn = "nqn.2016-06.io.spdk:local";
  local_.Call("nvmf_create_subsystem", {{"nqn", local_nqn}, {"allow_any_host", true}});
  local_.Call("nvmf_subsystem_add_ns", {{"nqn", local_nqn}, {"namespace", {{"bdev_name", "disc0n1"}}}});
  local_.Call("nvmf_subsystem_add_listener", {{"nqn", local_nqn}, {"listen_address", Listen(local_port)}});

  auto trid = [](const std::string& port, const std::string& nqn) {
    auto t = nvme::host::ParseTransportId(
        absl::StrCat("trtype:tcp traddr:127.0.0.1 trsvcid:", port, " subnqn:", nqn, " hostnqn:", kHostNqn));
    EXPECT_TRUE(t.ok()) << t.status();
    return *t;
  };
  auto through_local = nvme::host::SyncController::Connect(trid(local_port, local_nqn));
  ASSERT_TRUE(through_local.ok()) << through_local.status();
  std::vector<uint8_t> pattern(8 * 512);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<uint8_t>(i * 7 + 3);
  ASSERT_TRUE((*through_local)->Write(1, 100, 8, pattern).ok());

  // The bytes are on the remote namespace, and read back the same way through the local export.
  auto direct = nvme::host::SyncController::Connect(trid(data_port_, kNqn1));
  ASSERT_TRUE(direct.ok()) << direct.status();
  std::vector<uint8_t> remote_bytes(pattern.size()), local_bytes(pattern.size());
  ASSERT_TRUE((*direct)->Read(1, 100, 8, absl::MakeSpan(remote_bytes)).ok());
  ASSERT_TRUE((*through_local)->Read(1, 100, 8, absl::MakeSpan(local_bytes)).ok());
  EXPECT_EQ(remote_bytes, pattern);
  EXPECT_EQ(local_bytes, pattern);
  (void)(*through_local)->Shutdown();
  (void)(*direct)->Shutdown();
}

TEST_F(DiscoveryTest, ErrorCodes) {
  EXPECT_EQ(local_.Call("bdev_nvme_start_discovery", StartParams("disc", disc_port_)), true);
  // Same name, or same discovery address under another name.
  Json error = local_.CallError("bdev_nvme_start_discovery", StartParams("disc", testing::FreeTcpPort()));
  EXPECT_EQ(error, Json({{"code", -17}, {"message", "File exists"}}));
  error = local_.CallError("bdev_nvme_start_discovery", StartParams("disc2", disc_port_));
  EXPECT_EQ(error, Json({{"code", -17}, {"message", "File exists"}}));

  // Nobody listening: -110 with a time limit (after it), and without one (at once).
  std::string nobody = testing::FreeTcpPort();
  Json params = StartParams("none", nobody);
  params["attach_timeout_ms"] = 1000;
  auto begin = std::chrono::steady_clock::now();
  error = local_.CallError("bdev_nvme_start_discovery", params);
  EXPECT_EQ(error, Json({{"code", -110}, {"message", "Connection timed out"}}));
  EXPECT_GE(std::chrono::steady_clock::now() - begin, std::chrono::milliseconds(900));
  error = local_.CallError("bdev_nvme_start_discovery", StartParams("none", nobody));
  EXPECT_EQ(error["code"], -110);
  EXPECT_EQ(local_.Call("bdev_nvme_get_discovery_info").size(), 1u);  // only "disc"

  // Without waiting the service starts and keeps trying; it can be stopped.
  Json no_wait = StartParams("later", nobody);
  no_wait.erase("wait_for_attach");
  EXPECT_EQ(local_.Call("bdev_nvme_start_discovery", no_wait), true);
  EXPECT_EQ(local_.Call("bdev_nvme_get_discovery_info").size(), 2u);
  EXPECT_EQ(local_.Call("bdev_nvme_stop_discovery", {{"name", "later"}}), true);

  // Parameters.
  Json bad = StartParams("x", nobody);
  bad["trtype"] = "rdma";
  EXPECT_EQ(local_.CallError("bdev_nvme_start_discovery", bad)["code"], -22);
  bad = StartParams("x", nobody);
  bad["adrfam"] = "ib";
  EXPECT_EQ(local_.CallError("bdev_nvme_start_discovery", bad)["code"], -22);
  bad = StartParams("x", nobody);
  bad["ctrlr_loss_timeout_sec"] = 5;  // reconnect_delay_sec 0 with a loss timeout
  EXPECT_EQ(local_.CallError("bdev_nvme_start_discovery", bad)["code"], -22);
  bad = StartParams("x", nobody);
  bad.erase("name");
  EXPECT_EQ(local_.CallError("bdev_nvme_start_discovery", bad)["code"], -32603);
  bad = StartParams("x", nobody);
  bad["bogus"] = 1;
  EXPECT_EQ(local_.CallError("bdev_nvme_start_discovery", bad)["code"], -32603);
  EXPECT_EQ(local_.CallError("bdev_nvme_stop_discovery", Json::object())["code"], -32603);
}

TEST_F(DiscoveryTest, GarbageAndSilentEndpointsFailCleanly) {
  FakeTcpPeer garbage(FakeTcpPeer::Mode::kGarbage);
  FakeTcpPeer silent(FakeTcpPeer::Mode::kSilent);

  Json params = StartParams("junk", garbage.port());
  params["attach_timeout_ms"] = 1500;
  Json error = local_.CallError("bdev_nvme_start_discovery", params);
  EXPECT_EQ(error["code"], -110);
  EXPECT_GE(garbage.connections(), 1);
  error = local_.CallError("bdev_nvme_start_discovery", StartParams("junk", garbage.port()));
  EXPECT_EQ(error["code"], -110);

  params = StartParams("mute", silent.port());
  params["attach_timeout_ms"] = 1500;
  auto begin = std::chrono::steady_clock::now();
  error = local_.CallError("bdev_nvme_start_discovery", params);
  EXPECT_EQ(error["code"], -110);
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(5));

  // Stopping a service while its connection hangs.
  Json no_wait = StartParams("mute2", silent.port());
  no_wait["wait_for_attach"] = false;
  EXPECT_EQ(local_.Call("bdev_nvme_start_discovery", no_wait), true);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(local_.Call("bdev_nvme_stop_discovery", {{"name", "mute2"}}, std::chrono::seconds(5)), true);

  // Nothing left behind, and the target still works.
  EXPECT_EQ(local_.Call("bdev_nvme_get_discovery_info"), Json::array());
  EXPECT_EQ(local_.Call("bdev_nvme_get_controllers"), Json::array());
  EXPECT_EQ(local_.Call("bdev_nvme_start_discovery", StartParams("disc", disc_port_)), true);
  EXPECT_EQ(ControllerNames(), std::vector<std::string>{"disc0"});
}

TEST_F(DiscoveryTest, ThousandSubsystemsAttachAndDetach) {
  constexpr int kCount = 1100;
  for (int i = 0; i < kCount; ++i) {
    std::string nqn = absl::StrCat("nqn.2016-06.io.spdk:many", i);
    remote_.Call("nvmf_create_subsystem", {{"nqn", nqn}, {"allow_any_host", true}});
    remote_.Call("nvmf_subsystem_add_listener", {{"nqn", nqn}, {"listen_address", Listen(data_port_)}});
  }
  Json params = StartParams("big", disc_port_);
  params["attach_timeout_ms"] = 240000;
  auto begin = std::chrono::steady_clock::now();
  EXPECT_EQ(local_.Call("bdev_nvme_start_discovery", params, std::chrono::seconds(250)), true);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - begin);
  std::vector<std::string> names = ControllerNames();
  EXPECT_EQ(names.size(), static_cast<size_t>(kCount + 1));
  // While attached, the control thread keeps answering promptly.
  auto ping = std::chrono::steady_clock::now();
  local_.Call("spdk_get_version");
  EXPECT_LT(std::chrono::steady_clock::now() - ping, std::chrono::seconds(2));
  std::cout << "attached " << names.size() << " controllers in " << took.count() << " ms\n";

  EXPECT_EQ(local_.Call("bdev_nvme_stop_discovery", {{"name", "big"}}, std::chrono::seconds(250)), true);
  EXPECT_EQ(local_.Call("bdev_nvme_get_controllers"), Json::array());
}

}  // namespace
}  // namespace smad
