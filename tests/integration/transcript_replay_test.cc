// Replays the JSON-RPC requests recorded from a real SPDK target (tests/data/spdk-jsonrpc, copied from
// shared/interop) against smad-tgt and checks that every answer has the recorded shape: the same
// outcome (result or error), the same error code, and results whose keys and value types match.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "gtest/gtest.h"
#include "support/net.h"
#include "support/temp_dir.h"
#include "support/tgt_process.h"

namespace smad {
namespace {

using jsonrpc::Json;

std::string DataDir() { return std::string(SMAD_SOURCE_DIR) + "/tests/data/spdk-jsonrpc/"; }

// Recording artifacts, not behaviour: SPDK answered these with EAGAIN because the previous
// bdev_set_qos_limit on the same bdev was still being applied when the next request arrived
// (qos_mod_in_progress). smad-tgt applies QoS changes before answering, so the same requests succeed.
const std::set<std::string> kRecordingArtifacts = {
    "10-bdev.jsonl:qos iops not multiple of 1000 -> error?", "10-bdev.jsonl:qos clear",
    "11-bdev-more.jsonl:iops not multiple of 1000", "11-bdev-more.jsonl:qos clear"};

std::string TypeName(const Json& v) {
  if (v.is_boolean()) return "bool";
  if (v.is_number_integer()) return "integer";
  if (v.is_number_float()) return "float";
  return v.type_name();
}

// Appends to `problems` every place where `actual` does not have the shape of `expected`.
void CompareShape(const Json& expected, const Json& actual, const std::string& path, std::vector<std::string>& problems) {
  if (TypeName(expected) != TypeName(actual)) {
    problems.push_back(path + ": expected " + TypeName(expected) + ", got " + TypeName(actual));
    return;
  }
  if (expected.is_object()) {
    for (const auto& [key, value] : expected.items()) {
      if (!actual.contains(key)) {
        problems.push_back(path + "." + key + ": missing");
        continue;
      }
      CompareShape(value, actual[key], path + "." + key, problems);
    }
  } else if (expected.is_array() && !expected.empty() && !actual.empty()) {
    // Elements of one array share a shape; compare the first of each.
    CompareShape(expected[0], actual[0], path + "[0]", problems);
  }
}


// Rewrites machine-specific values of a recorded request: disk paths and TCP ports.
Json Localize(const Json& value, const std::map<std::string, std::string>& replacements) {
  if (value.is_string()) {
    std::string s = value.get<std::string>();
    for (const auto& [from, to] : replacements) {
      if (s == from) return to;
      if (s.rfind(from, 0) == 0 && from.back() == '/') return to + s.substr(from.size());
    }
    return s;
  }
  if (value.is_object()) {
    Json out = Json::object();
    for (const auto& [k, v] : value.items()) out[k] = Localize(v, replacements);
    return out;
  }
  if (value.is_array()) {
    Json out = Json::array();
    for (const auto& v : value) out.push_back(Localize(v, replacements));
    return out;
  }
  return value;
}

// Sends every request of `file` accepted by `wanted` (its note) and checks each answer's shape against the
// recording; returns how many were compared.
int ReplayFile(jsonrpc::BlockingClient& client, const char* file, const std::map<std::string, std::string>& replacements,
               const std::function<bool(const std::string&)>& wanted) {
  int compared = 0;
  std::ifstream in(DataDir() + file);
  EXPECT_TRUE(in) << DataDir() + file;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    Json entry = Json::parse(line);
    std::string note = std::string(file) + ":" + entry["note"].get<std::string>();
    if (kRecordingArtifacts.count(note) || !wanted(entry["note"].get<std::string>())) continue;
    Json request = Localize(entry["request"], replacements);
    const Json& expected = entry["response"];
    EXPECT_TRUE(client.SendRaw(request.dump()).ok());
    auto actual = client.ReadValue();
    EXPECT_TRUE(actual.ok()) << note << ": " << actual.status();
    if (!actual.ok()) return compared;
    SCOPED_TRACE(note + "\n  request:  " + request.dump() + "\n  response: " + actual->dump().substr(0, 2000));
    EXPECT_EQ((*actual)["id"], expected["id"]);
    EXPECT_EQ(actual->contains("error"), expected.contains("error"));
    if (actual->contains("error") != expected.contains("error")) continue;
    if (expected.contains("error")) {
      EXPECT_EQ((*actual)["error"]["code"], expected["error"]["code"]);
      EXPECT_TRUE((*actual)["error"]["message"].is_string());
    } else {
      std::vector<std::string> problems;
      CompareShape(expected["result"], (*actual)["result"], "result", problems);
      for (const auto& p : problems) ADD_FAILURE() << p;
    }
    ++compared;
  }
  return compared;
}

TEST(TranscriptReplayTest, ResponsesHaveTheRecordedShape) {
  testing::TempDir dir;
  std::string disk = dir.File("aio0.img");
  { std::ofstream(disk).close(); }
  ASSERT_EQ(truncate(disk.c_str(), 16 << 20), 0);
  std::map<std::string, std::string> replacements = {
      {"/srv/disks/", dir.path() + "/"}, {"4420", testing::FreeTcpPort()}, {"8009", testing::FreeTcpPort()}};

  testing::TgtProcess tgt(dir.path());
  testing::TgtProcess::Options options;
  options.extra_args = {"-S", dir.path()};  // vhost controller sockets
  ASSERT_TRUE(tgt.Start(options).ok()) << tgt.ReadLog();
  auto client = tgt.Connect();
  ASSERT_TRUE(client.ok());

  int compared = 0;
  // 30-bdev-nvme needs a second target (see below). 40-vhost uses null0 from 10-bdev.
  for (const char* file : {"00-app.jsonl", "10-bdev.jsonl", "11-bdev-more.jsonl", "20-nvmf.jsonl",
                           "21-nvmf-teardown.jsonl", "40-vhost.jsonl"}) {
    compared += ReplayFile(*client, file, replacements, [](const std::string&) { return true; });
  }
  EXPECT_GE(compared, 60);
}

// Starts a "remote" smad-tgt configured by `calls` and a "local" one, then replays the lines of
// 30-bdev-nvme.jsonl that `wanted` accepts against the local one; returns how many were compared.
int ReplayBdevNvmeAgainstRemote(const std::vector<std::pair<std::string, Json>>& calls,
                                const std::map<std::string, std::string>& replacements,
                                const std::function<bool(const std::string&)>& wanted) {
  testing::TempDir dir;
  testing::TgtProcess remote(dir.path(), "remote");
  testing::TgtProcess local(dir.path(), "local");
  if (!remote.Start().ok() || !local.Start().ok()) {
    ADD_FAILURE() << remote.ReadLog() << local.ReadLog();
    return 0;
  }
  auto rc = remote.Connect();
  auto client = local.Connect();
  if (!rc.ok() || !client.ok()) {
    ADD_FAILURE() << "no RPC connection";
    return 0;
  }
  for (const auto& [method, params] : calls) {
    if (!rc->Call(method, params).ok()) {
      ADD_FAILURE() << method;
      return 0;
    }
  }
  return ReplayFile(*client, "30-bdev-nvme.jsonl", replacements, wanted);
}

// 30-bdev-nvme's attach/get_controllers/bdev_get_bdevs/detach lines against a second smad-tgt playing the
// recorded remote (nqn.2016-06.io.spdk:remote0 with two namespaces, the first with the recorded UUID).
// The discovery lines belong to the discovery service's own test.
TEST(TranscriptReplayTest, BdevNvmeControllerLinesHaveTheRecordedShape) {
  std::string remote_port = testing::FreeTcpPort();
  std::map<std::string, std::string> replacements = {{"4421", remote_port}, {"4999", testing::FreeTcpPort()}};
  const std::string nqn = "nqn.2016-06.io.spdk:remote0";
  const std::vector<std::pair<std::string, Json>> calls = {
           {"bdev_malloc_create",
            {{"name", "m1"}, {"num_blocks", 8192}, {"block_size", 4096}, {"uuid", "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c03"}}},
           {"bdev_malloc_create",
            {{"name", "m2"}, {"num_blocks", 8192}, {"block_size", 4096}, {"uuid", "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c04"}}},
           {"nvmf_create_transport", {{"trtype", "TCP"}}},
           {"nvmf_create_subsystem", {{"nqn", nqn}, {"allow_any_host", true}, {"serial_number", "SPDKREMOTE0"}}},
           {"nvmf_subsystem_add_listener",
            {{"nqn", nqn},
             {"listen_address", {{"trtype", "tcp"}, {"adrfam", "ipv4"}, {"traddr", "127.0.0.1"}, {"trsvcid", remote_port}}}}},
           {"nvmf_subsystem_add_ns", {{"nqn", nqn}, {"namespace", {{"bdev_name", "m1"}}}}},
           {"nvmf_subsystem_add_ns", {{"nqn", nqn}, {"namespace", {{"bdev_name", "m2"}}}}}};
  int compared = ReplayBdevNvmeAgainstRemote(calls, replacements, [](const std::string& note) {
    return note.find("discovery") == std::string::npos && note != "controllers after stop";
  });
  EXPECT_EQ(compared, 8);
}

// 30-bdev-nvme's discovery lines (start, info, controllers, the -110 and -17 errors, stop, stop again)
// against a second smad-tgt serving the recorded remote subsystem and a discovery listener. "bdevs after
// discovery" is left out: its first bdev is a malloc bdev of the recording's other files.
TEST(TranscriptReplayTest, BdevNvmeDiscoveryLinesHaveTheRecordedShape) {
  std::string remote_port = testing::FreeTcpPort();
  std::string discovery_port = testing::FreeTcpPort();
  std::map<std::string, std::string> replacements = {
      {"4421", remote_port}, {"8010", discovery_port}, {"8099", testing::FreeTcpPort()}};
  const std::string nqn = "nqn.2016-06.io.spdk:remote0";
  auto listen = [](const std::string& port) {
    return Json{{"trtype", "tcp"}, {"adrfam", "ipv4"}, {"traddr", "127.0.0.1"}, {"trsvcid", port}};
  };
  const std::vector<std::pair<std::string, Json>> calls = {
           {"bdev_malloc_create", {{"name", "m1"}, {"num_blocks", 8192}, {"block_size", 4096}}},
           {"nvmf_create_transport", {{"trtype", "TCP"}}},
           {"nvmf_create_subsystem", {{"nqn", nqn}, {"allow_any_host", true}}},
           {"nvmf_subsystem_add_listener", {{"nqn", nqn}, {"listen_address", listen(remote_port)}}},
           {"nvmf_subsystem_add_ns", {{"nqn", nqn}, {"namespace", {{"bdev_name", "m1"}}}}},
           {"nvmf_subsystem_add_listener",
            {{"nqn", "nqn.2014-08.org.nvmexpress.discovery"}, {"listen_address", listen(discovery_port)}}}};
  int compared = ReplayBdevNvmeAgainstRemote(calls, replacements, [](const std::string& note) {
    return (note.find("discovery") != std::string::npos && note != "bdevs after discovery") ||
           note == "controllers after stop";
  });
  EXPECT_EQ(compared, 8);
}

}  // namespace
}  // namespace smad
