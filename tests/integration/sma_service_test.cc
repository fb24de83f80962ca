// smad's service surface beyond the six methods, against real processes: plugins enabled through the
// configuration and SMA_PLUGINS (the plugins checklist, sma.md 4.3), the gRPC health service and server
// reflection, and smad-client (the sma-client.py equivalent) printing exactly what SPDK's tests compare.

#include <gtest/gtest.h>
#include <stdio.h>

#include <array>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "support/net.h"
#include "support/sma_helpers.h"
#include "support/smad_process.h"
#include "support/temp_dir.h"

namespace smad::testing {
namespace {

std::string Plugin(int n) { return absl::StrCat(SMAD_PLUGIN_DIR, "/libsmad_example_plugin", n, ".so"); }

struct PluginCase {
  std::string config;
  std::string env_plugins;
  std::string nvme_handle;      // expected handle of CreateDevice {nvme: {}}, "" = must fail
  std::string nvmf_tcp_handle;  // expected handle of CreateDevice {nvmf_tcp: {}}
};

class SmaPluginsTest : public ::testing::TestWithParam<int> {};

std::vector<PluginCase> PluginCases() {
  std::string p1 = Plugin(1), p2 = Plugin(2);
  auto devices = [](const std::string& a, const std::string& b) {
    std::string out = "devices:\n";
    if (!a.empty()) out += "  - name: " + a + "\n";
    if (!b.empty()) out += "  - name: " + b + "\n";
    return out;
  };
  return {
      // 1-2: plugin1, both or only device2 enabled.
      {"plugins:\n  - " + p1 + "\n" + devices("plugin1-device1", "plugin1-device2"), "",
       "nvme:plugin1-device1:nop", "nvmf_tcp:plugin1-device2:nop"},
      {"plugins:\n  - " + p1 + "\n" + devices("plugin1-device2", ""), "", "", "nvmf_tcp:plugin1-device2:nop"},
      // 3-5: both plugins loaded, different selections.
      {"plugins:\n  - " + p1 + "\n  - " + p2 + "\n" + devices("plugin1-device1", "plugin1-device2"), "",
       "nvme:plugin1-device1:nop", "nvmf_tcp:plugin1-device2:nop"},
      {"plugins:\n  - " + p1 + "\n  - " + p2 + "\n" + devices("plugin2-device1", "plugin2-device2"), "",
       "nvme:plugin2-device1:nop", "nvmf_tcp:plugin2-device2:nop"},
      {"plugins:\n  - " + p1 + "\n  - " + p2 + "\n" + devices("plugin1-device1", "plugin2-device2"), "",
       "nvme:plugin1-device1:nop", "nvmf_tcp:plugin2-device2:nop"},
      // 6-7: from SMA_PLUGINS, alone and with the config's list.
      {devices("plugin1-device1", "plugin2-device2"), p1 + ":" + p2, "nvme:plugin1-device1:nop",
       "nvmf_tcp:plugin2-device2:nop"},
      {"plugins:\n  - " + p2 + "\n" + devices("plugin1-device1", "plugin2-device2"), p1,
       "nvme:plugin1-device1:nop", "nvmf_tcp:plugin2-device2:nop"},
      // 8: the crypto engine a plugin registers is selected and reported in handles.
      {"plugins:\n  - " + p1 + "\n  - " + p2 + "\n" + devices("plugin1-device1", "plugin2-device2") +
           "crypto:\n  name: crypto-plugin1\n",
       "", "nvme:plugin1-device1:crypto-plugin1", "nvmf_tcp:plugin2-device2:crypto-plugin1"},
      {"plugins:\n  - " + p1 + "\n  - " + p2 + "\n" + devices("plugin1-device1", "plugin2-device2") +
           "crypto:\n  name: crypto-plugin2\n",
       "", "nvme:plugin1-device1:crypto-plugin2", "nvmf_tcp:plugin2-device2:crypto-plugin2"},
  };
}

TEST_P(SmaPluginsTest, ChecklistRow) {
  PluginCase c = PluginCases()[GetParam()];
  TempDir dir;
  SmadProcess smad(dir.path());
  SmadProcess::Options options;
  options.config_yaml = c.config;
  if (!c.env_plugins.empty()) options.env["SMA_PLUGINS"] = c.env_plugins;
  ASSERT_TRUE(smad.Start(options).ok()) << smad.ReadLog();
  SmaClient client(smad.Stub());
  sma::CreateDeviceRequest nvme;
  nvme.mutable_nvme();
  auto handle = client.CreateDevice(nvme);
  if (c.nvme_handle.empty()) {
    EXPECT_EQ(handle.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(handle.status().message(), "Unsupported device type");
  } else {
    ASSERT_TRUE(handle.ok()) << handle.status();
    EXPECT_EQ(*handle, c.nvme_handle);
  }
  sma::CreateDeviceRequest nvmf_tcp;
  nvmf_tcp.mutable_nvmf_tcp();
  handle = client.CreateDevice(nvmf_tcp);
  ASSERT_TRUE(handle.ok()) << handle.status();
  EXPECT_EQ(*handle, c.nvmf_tcp_handle);
  // Plugin managers implement only create: the rest is UNIMPLEMENTED, QoS capabilities are empty.
  EXPECT_EQ(client.DeleteDevice(*handle).code(), absl::StatusCode::kUnimplemented);
  auto caps = client.GetQosCapabilities(3);
  ASSERT_TRUE(caps.ok());
  EXPECT_EQ(caps->ByteSizeLong(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Rows, SmaPluginsTest, ::testing::Range(0, 9));

TEST(SmaPluginsLoadTest, MissingPluginIsAConfigurationError) {
  TempDir dir;
  SmadProcess smad(dir.path());
  SmadProcess::Options options;
  options.config_yaml = "plugins:\n  - /nonexistent/libnothing.so\n";
  options.wait_ready = false;
  ASSERT_TRUE(smad.Start(options).ok());
  EXPECT_NE(smad.WaitExit(20000), 0);
  EXPECT_NE(smad.ReadLog().find("libnothing.so"), std::string::npos) << smad.ReadLog();
}

class SmaSurfaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    smad_ = std::make_unique<SmadProcess>(dir_.path());
    SmadProcess::Options options;
    options.config_yaml = "devices:\n  - name: nvmf_tcp\n";
    ASSERT_TRUE(smad_->Start(options).ok()) << smad_->ReadLog();
  }
  // Runs smad-client with `input` on stdin; returns (exit status, stdout).
  std::pair<int, std::string> SmadClient(const std::string& input) {
    std::string in_path = dir_.path() + "/in.json";
    FILE* in = fopen(in_path.c_str(), "w");
    fputs(input.c_str(), in);
    fclose(in);
    std::string cmd = absl::StrCat(SMAD_CLIENT_BINARY, " -a 127.0.0.1 -p ", smad_->port(), " < ", in_path, " 2>&1");
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
    int status = pclose(p);
    return {WEXITSTATUS(status), out};
  }
  TempDir dir_;
  std::unique_ptr<SmadProcess> smad_;
};

TEST_F(SmaSurfaceTest, HealthServiceReportsServing) {
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", smad_->port()), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  for (std::string service : {"", "sma.StorageManagementAgent"}) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(health->Check(&context, request, &response).ok()) << service;
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
}

TEST_F(SmaSurfaceTest, ReflectionListsTheService) {
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", smad_->port()), grpc::InsecureChannelCredentials());
  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
  grpc::ClientContext context;
  auto stream = reflection->ServerReflectionInfo(&context);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  std::vector<std::string> names;
  for (const auto& s : response.list_services_response().service()) names.push_back(s.name());
  EXPECT_NE(std::find(names.begin(), names.end(), "sma.StorageManagementAgent"), names.end());
  // The file descriptor of the service resolves (what grpc_cli / grpcurl need).
  request.Clear();
  request.set_file_containing_symbol("sma.StorageManagementAgent");
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_GT(response.file_descriptor_response().file_descriptor_proto_size(), 0);
  stream->WritesDone();
}

// What SPDK's qos.sh compares, byte for byte after JSON normalisation, and the client's error format.
TEST_F(SmaSurfaceTest, SmadClientPrintsWhatSpdkTestsCompare) {
  auto [status, out] = SmadClient(R"({"method":"GetQosCapabilities","params":{"device_type":3}})");
  ASSERT_EQ(status, 0) << out;
  EXPECT_EQ(Json::parse(out), Json::parse(R"({"max_volume_caps":{"rw_iops":true,"rd_bandwidth":true,
                                              "wr_bandwidth":true,"rw_bandwidth":true}})"));
  std::tie(status, out) = SmadClient(R"({"method":"GetQosCapabilities","params":{"device_type":1234}})");
  EXPECT_EQ(status, 1);
  EXPECT_NE(out.find("INVALID_ARGUMENT"), std::string::npos) << out;
  // proto3 JSON: lowerCamelCase names, enum names, numbers as strings.
  std::tie(status, out) = SmadClient(R"({"method":"GetQosCapabilities","params":{"deviceType":"DEVICE_TYPE_NVMF_TCP"}})");
  EXPECT_EQ(status, 0) << out;
  std::tie(status, out) = SmadClient(absl::StrCat(
      R"({"method":"CreateDevice","params":{"nvmf_tcp":{"subnqn":"nqn.2016-06.io.spdk:cnode0","adrfam":"ipv4",)",
      R"("traddr":"127.0.0.1","trsvcid":")", FreeTcpPort(), R"("}}})"));
  ASSERT_EQ(status, 0) << out;
  EXPECT_EQ(Json::parse(out)["handle"], "nvmf-tcp:nqn.2016-06.io.spdk:cnode0");
  std::tie(status, out) = SmadClient(R"({"method":"DeleteDevice","params":{"handle":"nvmf-tcp:nqn.2016-06.io.spdk:cnode0"}})");
  ASSERT_EQ(status, 0) << out;
  EXPECT_EQ(Json::parse(out), Json::object());
}

}  // namespace
}  // namespace smad::testing
