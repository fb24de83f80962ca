// Integration tests: the real smad-tgt binary, driven over its JSON-RPC Unix socket.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/net.h"
#include "support/rpc_expect.h"
#include "support/temp_dir.h"
#include "support/tgt_process.h"

namespace smad {
namespace {

using jsonrpc::BlockingClient;
using jsonrpc::Json;
using testing::TempDir;
using testing::TgtProcess;


class TgtRpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(tgt_.Start().ok()) << tgt_.ReadLog();
    auto client = tgt_.Connect();
    ASSERT_TRUE(client.ok());
    rpc_.emplace(std::move(client).value());
  }

  Json Call(const std::string& method, const Json& params = nullptr) { return rpc_->Response(method, params); }
  Json Result(const std::string& method, const Json& params = nullptr) { return rpc_->Result(method, params); }
  int ErrorCode(const std::string& method, const Json& params = nullptr) {
    Json error = rpc_->Error(method, params);
    EXPECT_FALSE(error.value("message", "").empty());
    return error.value("code", 0);
  }

  TempDir dir_;
  TgtProcess tgt_{dir_.path()};
  std::optional<testing::RpcExpect> rpc_;
};

TEST_F(TgtRpcTest, ReportsVersionAndMethods) {
  Json version = Result("spdk_get_version");
  EXPECT_THAT(version["version"].get<std::string>(), ::testing::HasSubstr("smad-tgt"));
  EXPECT_TRUE(version["fields"]["major"].is_number());
  EXPECT_TRUE(version["fields"]["suffix"].is_string());
  Json methods = Result("rpc_get_methods");
  for (const char* m : {"bdev_malloc_create", "nvmf_create_subsystem", "nvmf_subsystem_add_ns", "bdev_get_iostat",
                        "framework_get_config", "save_config"}) {
    EXPECT_NE(std::find(methods.begin(), methods.end(), m), methods.end()) << m;
  }
  EXPECT_EQ(ErrorCode("no_such_method"), -32601);
  EXPECT_EQ(Result("framework_wait_init"), true);
}

TEST_F(TgtRpcTest, MallocAndNullBdevLifecycle) {
  EXPECT_EQ(Result("bdev_malloc_create", {{"name", "Malloc0"}, {"num_blocks", 32768}, {"block_size", 512},
                                          {"uuid", "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c01"}}),
            "Malloc0");
  EXPECT_EQ(ErrorCode("bdev_malloc_create", {{"name", "Malloc0"}, {"num_blocks", 10}, {"block_size", 512}}), -17);
  EXPECT_EQ(ErrorCode("bdev_malloc_create", {{"name", "Bad"}, {"num_blocks", 10}, {"block_size", 513}}), -22);
  // Generated names count from Malloc0, as SPDK's do: the first collides.
  EXPECT_EQ(ErrorCode("bdev_malloc_create", {{"num_blocks", 10}, {"block_size", 4096}}), -17);
  EXPECT_EQ(ErrorCode("bdev_malloc_create", {{"name", "x"}, {"num_blocks", "ten"}, {"block_size", 512}}), -32603);
  EXPECT_EQ(ErrorCode("bdev_malloc_create", {{"name", "x"}, {"num_blocks", 1}, {"block_size", 512}, {"bogus", 1}}),
            -32603);
  EXPECT_EQ(Result("bdev_null_create", {{"name", "null0"}, {"num_blocks", 25600}, {"block_size", 4096}}), "null0");

  Json all = Result("bdev_get_bdevs");
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0]["name"], "Malloc0");
  EXPECT_EQ(all[0]["product_name"], "Malloc disk");
  EXPECT_EQ(all[0]["num_blocks"], 32768);
  EXPECT_EQ(all[1]["product_name"], "Null disk");
  Json by_alias = Result("bdev_get_bdevs", {{"name", "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c01"}});
  ASSERT_EQ(by_alias.size(), 1u);
  EXPECT_EQ(by_alias[0]["name"], "Malloc0");
  EXPECT_EQ(ErrorCode("bdev_get_bdevs", {{"name", "nope"}}), -19);
  EXPECT_EQ(ErrorCode("bdev_get_bdevs", {{"name", "nope"}, {"timeout", 100}}), -110);

  // A bdev that appears while bdev_get_bdevs waits for it.
  auto waiter = tgt_.Connect();
  ASSERT_TRUE(waiter.ok());
  std::thread creator([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto c = tgt_.Connect();
    ASSERT_TRUE(c->Call("bdev_malloc_create", {{"name", "Late"}, {"num_blocks", 8}, {"block_size", 512}}).ok());
  });
  auto late = waiter->Call("bdev_get_bdevs", {{"name", "Late"}, {"timeout", 5000}});
  creator.join();
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ((*late)[0]["name"], "Late");

  EXPECT_EQ(Result("bdev_malloc_delete", {{"name", "Late"}}), true);
  EXPECT_EQ(ErrorCode("bdev_malloc_delete", {{"name", "Late"}}), -19);
  EXPECT_EQ(ErrorCode("bdev_malloc_delete", {{"name", "null0"}}), -19) << "wrong module";
  EXPECT_EQ(Result("bdev_null_delete", {{"name", "null0"}}), true);
  EXPECT_EQ(ErrorCode("bdev_null_delete", {{"name", "null0"}}), -19);
}

TEST_F(TgtRpcTest, AioBdevOnFile) {
  std::string path = dir_.File("aio0.img");
  { std::ofstream(path).close(); }
  ASSERT_EQ(truncate(path.c_str(), 8 << 20), 0);
  EXPECT_EQ(Result("bdev_aio_create", {{"name", "aio0"}, {"filename", path}, {"block_size", 512}}), "aio0");
  Json bdev = Result("bdev_get_bdevs", {{"name", "aio0"}})[0];
  EXPECT_EQ(bdev["num_blocks"], (8 << 20) / 512);
  EXPECT_EQ(bdev["product_name"], "AIO disk");
  EXPECT_EQ(ErrorCode("bdev_aio_create", {{"name", "aio1"}, {"filename", dir_.File("missing.img")}}), -2);
  EXPECT_EQ(ErrorCode("bdev_aio_create", {{"name", "aio0"}, {"filename", path}}), -17);
  EXPECT_EQ(Result("bdev_aio_delete", {{"name", "aio0"}}), true);
}

TEST_F(TgtRpcTest, IostatAndQos) {
  Result("bdev_malloc_create", {{"name", "Malloc0"}, {"num_blocks", 1024}, {"block_size", 512}});
  Json stats = Result("bdev_get_iostat");
  ASSERT_EQ(stats["bdevs"].size(), 1u);
  EXPECT_TRUE(stats["tick_rate"].is_number_unsigned());
  EXPECT_TRUE(stats["bdevs"][0]["bytes_read"].is_number_unsigned());
  EXPECT_EQ(Result("bdev_get_iostat", {{"names", {"Malloc0"}}})["bdevs"][0]["name"], "Malloc0");
  EXPECT_EQ(ErrorCode("bdev_get_iostat", {{"name", "Malloc0"}}), -32603);

  EXPECT_EQ(Result("bdev_set_qos_limit", {{"name", "Malloc0"}, {"rw_ios_per_sec", 10000}, {"rw_mbytes_per_sec", 100}}),
            true);
  Json limits = Result("bdev_get_bdevs", {{"name", "Malloc0"}})[0]["assigned_rate_limits"];
  EXPECT_EQ(limits["rw_ios_per_sec"], 10000);
  EXPECT_EQ(limits["rw_mbytes_per_sec"], 100);
  // Unspecified limits keep their value; IOPS round up to a multiple of 1000.
  EXPECT_EQ(Result("bdev_set_qos_limit", {{"name", "Malloc0"}, {"rw_ios_per_sec", 1500}}), true);
  limits = Result("bdev_get_bdevs", {{"name", "Malloc0"}})[0]["assigned_rate_limits"];
  EXPECT_EQ(limits["rw_ios_per_sec"], 2000);
  EXPECT_EQ(limits["rw_mbytes_per_sec"], 100);
  EXPECT_EQ(ErrorCode("bdev_set_qos_limit", {{"name", "Malloc0"}}), -22);
  EXPECT_EQ(ErrorCode("bdev_set_qos_limit", {{"name", "nope"}, {"rw_ios_per_sec", 1000}}), -19);
  EXPECT_EQ(Result("bdev_set_qos_limit", {{"name", "Malloc0"}, {"rw_ios_per_sec", 0}, {"rw_mbytes_per_sec", 0},
                                          {"r_mbytes_per_sec", 0}, {"w_mbytes_per_sec", 0}}),
            true);
  limits = Result("bdev_get_bdevs", {{"name", "Malloc0"}})[0]["assigned_rate_limits"];
  EXPECT_EQ(limits["rw_ios_per_sec"], 0);
  EXPECT_EQ(limits["rw_mbytes_per_sec"], 0);
  // A bdev with active QoS can still be deleted.
  EXPECT_EQ(Result("bdev_set_qos_limit", {{"name", "Malloc0"}, {"w_mbytes_per_sec", 10}}), true);
  EXPECT_EQ(Result("bdev_malloc_delete", {{"name", "Malloc0"}}), true);
}

TEST_F(TgtRpcTest, NvmfObjects) {
  EXPECT_EQ(Result("nvmf_get_transports"), Json::array());
  EXPECT_EQ(Result("nvmf_create_transport", {{"trtype", "TCP"}}), true);
  EXPECT_EQ(ErrorCode("nvmf_create_transport", {{"trtype", "TCP"}}), -32603);
  EXPECT_EQ(ErrorCode("nvmf_create_transport", {{"trtype", "RDMA"}}), -32602);
  Json transports = Result("nvmf_get_transports", {{"trtype", "tcp"}});
  ASSERT_EQ(transports.size(), 1u);
  EXPECT_EQ(transports[0]["trtype"], "TCP");
  EXPECT_EQ(transports[0]["max_queue_depth"], 128);

  const std::string nqn = "nqn.2016-06.io.spdk:cnode1";
  EXPECT_EQ(Result("nvmf_create_subsystem", {{"nqn", nqn}, {"serial_number", "SPDK00000000000001"},
                                             {"allow_any_host", false}, {"max_namespaces", 32}}),
            true);
  EXPECT_EQ(ErrorCode("nvmf_create_subsystem", {{"nqn", nqn}}), -32603);
  EXPECT_EQ(ErrorCode("nvmf_create_subsystem", {{"nqn", "not-an-nqn"}}), -32603);
  EXPECT_EQ(ErrorCode("nvmf_create_subsystem", {{"nqn", "nqn.2016-06.io.spdk:x"}, {"serial_number", std::string(21, '1')}}),
            -32603);

  std::string port = testing::FreeTcpPort();
  Json address = {{"trtype", "tcp"}, {"adrfam", "ipv4"}, {"traddr", "127.0.0.1"}, {"trsvcid", port}};
  EXPECT_EQ(Result("nvmf_subsystem_add_listener", {{"nqn", nqn}, {"listen_address", address}}), true);
  EXPECT_EQ(ErrorCode("nvmf_subsystem_add_listener", {{"nqn", nqn}, {"listen_address", address}}), -32602);
  Json bad_address = address;
  bad_address["traddr"] = "localhost";
  EXPECT_EQ(ErrorCode("nvmf_subsystem_add_listener", {{"nqn", nqn}, {"listen_address", bad_address}}), -32602);
  Json listeners = Result("nvmf_subsystem_get_listeners", {{"nqn", nqn}});
  ASSERT_EQ(listeners.size(), 1u);
  EXPECT_EQ(listeners[0]["address"]["trtype"], "TCP");
  EXPECT_EQ(listeners[0]["address"]["adrfam"], "IPv4");
  // The listener really holds the port.
  int probe = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(std::stoi(port)));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_NE(bind(probe, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  close(probe);

  Json discovery = {{"trtype", "tcp"}, {"adrfam", "ipv4"}, {"traddr", "127.0.0.1"}, {"trsvcid", testing::FreeTcpPort()}};
  EXPECT_EQ(Result("nvmf_subsystem_add_listener",
                   {{"nqn", "nqn.2014-08.org.nvmexpress.discovery"}, {"listen_address", discovery}}),
            true);

  Result("bdev_malloc_create", {{"name", "Malloc0"}, {"num_blocks", 1024}, {"block_size", 512},
                                {"uuid", "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c01"}});
  Result("bdev_null_create", {{"name", "null0"}, {"num_blocks", 1024}, {"block_size", 4096}});
  EXPECT_EQ(Result("nvmf_subsystem_add_ns",
                   {{"nqn", nqn}, {"namespace", {{"bdev_name", "Malloc0"}, {"nguid", "7b2b4a6e0c1d4c539d0a3f1e2a9b8c01"}}}}),
            1);
  EXPECT_EQ(ErrorCode("nvmf_subsystem_add_ns", {{"nqn", nqn}, {"namespace", {{"bdev_name", "Malloc0"}}}}), -32602);
  EXPECT_EQ(Result("nvmf_subsystem_add_ns", {{"nqn", nqn}, {"namespace", {{"bdev_name", "null0"}, {"nsid", 5}}}}), 5);
  EXPECT_EQ(ErrorCode("nvmf_subsystem_add_ns", {{"nqn", nqn}, {"namespace", {{"bdev_name", "missing"}}}}), -32602);
  EXPECT_EQ(ErrorCode("nvmf_subsystem_add_ns", {{"nqn", "nqn.2016-06.io.spdk:none"}, {"namespace", {{"bdev_name", "x"}}}}),
            -32602);
  EXPECT_EQ(Result("bdev_get_bdevs", {{"name", "Malloc0"}})[0]["claimed"], true);

  const std::string host = "nqn.2014-08.org.nvmexpress:uuid:0d3e1f7a-1111-4222-8333-944455556666";
  EXPECT_EQ(Result("nvmf_subsystem_add_host", {{"nqn", nqn}, {"host", host}}), true);
  EXPECT_EQ(ErrorCode("nvmf_subsystem_add_host", {{"nqn", nqn}, {"host", host}}), -32603);
  EXPECT_EQ(ErrorCode("nvmf_subsystem_add_host", {{"nqn", nqn}, {"host", "bad host"}}), -32602);

  Json subsystems = Result("nvmf_get_subsystems");
  ASSERT_EQ(subsystems.size(), 2u);
  EXPECT_EQ(subsystems[0]["subtype"], "Discovery");
  EXPECT_EQ(subsystems[0]["listen_addresses"].size(), 1u);
  Json s = subsystems[1];
  EXPECT_EQ(s["nqn"], nqn);
  EXPECT_EQ(s["serial_number"], "SPDK00000000000001");
  EXPECT_EQ(s["hosts"][0]["nqn"], host);
  ASSERT_EQ(s["namespaces"].size(), 2u);
  EXPECT_EQ(s["namespaces"][0]["nguid"], "7B2B4A6E0C1D4C539D0A3F1E2A9B8C01");
  EXPECT_EQ(s["namespaces"][0]["uuid"], "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c01");
  EXPECT_EQ(s["namespaces"][1]["nsid"], 5);
  EXPECT_EQ(ErrorCode("nvmf_get_subsystems", {{"nqn", "nqn.2016-06.io.spdk:none"}}), -32602);
  EXPECT_EQ(Result("nvmf_subsystem_get_controllers", {{"nqn", nqn}}), Json::array());
  EXPECT_EQ(Result("nvmf_subsystem_get_qpairs", {{"nqn", nqn}}), Json::array());
  Json stats = Result("nvmf_get_stats");
  EXPECT_EQ(stats["poll_groups"].size(), 1u);
  EXPECT_EQ(stats["poll_groups"][0]["name"], "nvmf_tgt_poll_group_000");

  EXPECT_EQ(Result("nvmf_subsystem_allow_any_host", {{"nqn", nqn}, {"allow_any_host", true}}), true);
  EXPECT_EQ(ErrorCode("nvmf_subsystem_remove_host", {{"nqn", nqn}, {"host", "nqn.2014-08.org.nvmexpress:uuid:absent"}}),
            -32603);
  EXPECT_EQ(Result("nvmf_subsystem_remove_host", {{"nqn", nqn}, {"host", host}}), true);
  EXPECT_EQ(Result("nvmf_subsystem_remove_ns", {{"nqn", nqn}, {"nsid", 5}}), true);
  EXPECT_EQ(ErrorCode("nvmf_subsystem_remove_ns", {{"nqn", nqn}, {"nsid", 5}}), -32602);
  EXPECT_EQ(Result("bdev_get_bdevs", {{"name", "null0"}})[0]["claimed"], false);
  EXPECT_EQ(Result("nvmf_subsystem_remove_listener", {{"nqn", nqn}, {"listen_address", address}}), true);
  EXPECT_EQ(ErrorCode("nvmf_subsystem_remove_listener", {{"nqn", nqn}, {"listen_address", address}}), -32602);
  EXPECT_EQ(Result("nvmf_delete_subsystem", {{"nqn", nqn}}), true);
  EXPECT_EQ(ErrorCode("nvmf_delete_subsystem", {{"nqn", nqn}}), -32602);
  // Deleting the subsystem released the claim on its remaining namespace.
  EXPECT_EQ(Result("bdev_get_bdevs", {{"name", "Malloc0"}})[0]["claimed"], false);
}

TEST_F(TgtRpcTest, DeletingABdevHotRemovesItsNamespace) {
  const std::string nqn = "nqn.2016-06.io.spdk:hot";
  Result("nvmf_create_subsystem", {{"nqn", nqn}, {"allow_any_host", true}});
  Result("bdev_malloc_create", {{"name", "M"}, {"num_blocks", 64}, {"block_size", 512}});
  EXPECT_EQ(Result("nvmf_subsystem_add_ns", {{"nqn", nqn}, {"namespace", {{"bdev_name", "M"}}}}), 1);
  EXPECT_EQ(Result("bdev_malloc_delete", {{"name", "M"}}), true);
  EXPECT_EQ(Result("nvmf_get_subsystems", {{"nqn", nqn}})[0]["namespaces"], Json::array());
  EXPECT_EQ(ErrorCode("bdev_get_bdevs", {{"name", "M"}}), -19);
}

TEST_F(TgtRpcTest, PipelinedRequestsAreAnsweredInOrder) {
  std::string batch;
  for (int i = 0; i < 50; ++i) {
    batch += Json{{"jsonrpc", "2.0"}, {"id", i}, {"method", i % 2 ? "bdev_get_bdevs" : "spdk_get_version"}}.dump();
  }
  ASSERT_TRUE(rpc_->client().SendRaw(batch).ok());
  for (int i = 0; i < 50; ++i) {
    auto value = rpc_->client().ReadValue();
    ASSERT_TRUE(value.ok());
    EXPECT_EQ((*value)["id"], i);
  }
}

TEST_F(TgtRpcTest, OversizedRequestClosesOnlyThatConnection) {
  auto victim = tgt_.Connect();
  ASSERT_TRUE(victim.ok());
  std::string huge = R"({"jsonrpc":"2.0","id":1,"method":"bdev_get_bdevs","params":{"name":")" +
                     std::string(17u << 20, 'a');
  (void)victim->SendRaw(huge);
  auto answer = victim->ReadValue(std::chrono::seconds(10));
  if (answer.ok()) {
    EXPECT_TRUE(answer->contains("error"));
    EXPECT_FALSE(victim->ReadValue(std::chrono::seconds(10)).ok());
  }
  EXPECT_EQ(Result("spdk_get_version")["fields"]["major"], 0);
}

TEST_F(TgtRpcTest, HalfRequestThenDisconnectCostsNothing) {
  for (int i = 0; i < 100; ++i) {
    auto c = tgt_.Connect();
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(c->SendRaw(R"({"jsonrpc":"2.0","id":1,"method":"spdk_get)").ok());
  }
  EXPECT_TRUE(Result("spdk_get_version").is_object());
}

TEST_F(TgtRpcTest, ManyConcurrentConnections) {
  constexpr int kClients = 1000;
  std::vector<BlockingClient> clients;
  for (int i = 0; i < kClients; ++i) {
    auto c = tgt_.Connect();
    ASSERT_TRUE(c.ok()) << i;
    clients.push_back(std::move(c).value());
  }
  for (auto& c : clients) ASSERT_TRUE(c.SendRaw(R"({"jsonrpc":"2.0","id":7,"method":"spdk_get_version"})").ok());
  for (auto& c : clients) {
    auto v = c.ReadValue();
    ASSERT_TRUE(v.ok());
    EXPECT_EQ((*v)["id"], 7);
  }
}

TEST(TgtProcessTest, SigtermShutsDownCleanlyAndRemovesSocket) {
  TempDir dir;
  TgtProcess tgt(dir.path());
  ASSERT_TRUE(tgt.Start().ok());
  auto c = tgt.Connect();
  ASSERT_TRUE(c->Call("bdev_malloc_create", {{"name", "M"}, {"num_blocks", 64}, {"block_size", 512}}).ok());
  ASSERT_TRUE(c->Call("nvmf_create_subsystem", {{"nqn", "nqn.2016-06.io.spdk:a"}}).ok());
  ASSERT_TRUE(c->Call("nvmf_subsystem_add_ns", {{"nqn", "nqn.2016-06.io.spdk:a"}, {"namespace", {{"bdev_name", "M"}}}}).ok());
  int status = tgt.Stop(SIGTERM);
  ASSERT_TRUE(WIFEXITED(status)) << tgt.ReadLog();
  EXPECT_EQ(WEXITSTATUS(status), 0) << tgt.ReadLog();
  struct stat st;
  EXPECT_NE(stat(tgt.socket().c_str(), &st), 0) << "socket file left behind";
}

TEST(TgtProcessTest, StaleSocketIsReplacedLiveSocketRefused) {
  TempDir dir;
  TgtProcess first(dir.path());
  ASSERT_TRUE(first.Start().ok());
  first.Stop(SIGKILL);  // leaves the socket file behind
  struct stat st;
  ASSERT_EQ(stat(first.socket().c_str(), &st), 0);
  TgtProcess again(dir.path());
  ASSERT_TRUE(again.Start().ok()) << again.ReadLog();
  // A second target on the same live socket must refuse to start, and say why.
  std::string command = TgtProcess::Binary() + " -r " + again.socket() + " 2>&1";
  FILE* intruder = popen(command.c_str(), "r");
  ASSERT_NE(intruder, nullptr);
  std::string output;
  char buf[256];
  while (fgets(buf, sizeof(buf), intruder)) output += buf;
  int status = pclose(intruder);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << output;
  EXPECT_THAT(output, ::testing::HasSubstr("in use"));
  EXPECT_TRUE(again.Connect()->Call("spdk_get_version").ok());
}

TEST(TgtProcessTest, BadCommandLineAndConfigFailFast) {
  TempDir dir;
  TgtProcess bad_mask(dir.path());
  EXPECT_FALSE(bad_mask.Start({.cpumask = "0x0"}).ok());
  std::string config = dir.File("bad.json");
  std::ofstream(config) << R"({"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_malloc_create","params":{"name":"M","num_blocks":1,"block_size":513}}]}]})";
  TgtProcess bad_config(dir.path(), "cfg");
  absl::Status status = bad_config.Start({.config_file = config});
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("bdev_malloc_create"));
}

TEST(TgtProcessTest, SavedConfigSurvivesSigkill) {
  TempDir dir;
  std::string image = dir.File("disk.img");
  { std::ofstream(image).close(); }
  ASSERT_EQ(truncate(image.c_str(), 4 << 20), 0);
  Json saved;
  {
    TgtProcess tgt(dir.path());
    ASSERT_TRUE(tgt.Start({.cpumask = "0x3"}).ok());
    auto c = tgt.Connect();
    const std::string nqn = "nqn.2016-06.io.spdk:persist";
    for (const auto& [method, params] : std::vector<std::pair<std::string, Json>>{
             {"bdev_malloc_create", {{"name", "M"}, {"num_blocks", 128}, {"block_size", 4096}}},
             {"bdev_null_create", {{"name", "N"}, {"num_blocks", 128}, {"block_size", 512}}},
             {"bdev_aio_create", {{"name", "A"}, {"filename", image}}},
             {"bdev_set_qos_limit", {{"name", "N"}, {"rw_ios_per_sec", 5000}, {"r_mbytes_per_sec", 7}}},
             {"nvmf_create_transport", {{"trtype", "tcp"}, {"max_queue_depth", 64}}},
             {"nvmf_create_subsystem", {{"nqn", nqn}, {"serial_number", "S1"}, {"model_number", "M1"}}},
             {"nvmf_subsystem_add_listener",
              {{"nqn", nqn}, {"listen_address", {{"trtype", "tcp"}, {"traddr", "127.0.0.1"}, {"trsvcid", testing::FreeTcpPort()}}}}},
             {"nvmf_subsystem_add_host", {{"nqn", nqn}, {"host", "nqn.2014-08.org.nvmexpress:uuid:0d3e1f7a-1111-4222-8333-944455556666"}}},
             {"nvmf_subsystem_add_ns", {{"nqn", nqn}, {"namespace", {{"bdev_name", "A"}, {"nsid", 3}}}}},
             {"nvmf_subsystem_add_ns", {{"nqn", nqn}, {"namespace", {{"bdev_name", "M"}}}}},
         }) {
      auto r = c->Call(method, params);
      ASSERT_TRUE(r.ok()) << method << ": " << r.status();
    }
    auto config = c->Call("save_config");
    ASSERT_TRUE(config.ok());
    saved = *config;
    std::ofstream(dir.File("config.json")) << saved.dump(2);
    tgt.Stop(SIGKILL);
  }
  TgtProcess restarted(dir.path(), "second");
  ASSERT_TRUE(restarted.Start({.cpumask = "0x3", .config_file = dir.File("config.json")}).ok()) << restarted.ReadLog();
  auto again = restarted.Connect()->Call("save_config");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, saved) << again->dump(2) << "\nvs\n" << saved.dump(2);
  EXPECT_EQ(restarted.Connect()->Call("nvmf_get_subsystems")->at(1)["namespaces"].size(), 2u);
}

}  // namespace
}  // namespace smad
