// End-to-end tests of the NVMe/TCP initiator library and tools against a real smad-tgt process: the
// target is configured over JSON-RPC (malloc bdev, TCP transport, subsystems, listeners), then the host
// side connects over loopback TCP. Every test skips (with a note) while the target does not yet accept
// NVMe/TCP connections.
#include <sys/wait.h>

#include <cstdio>
#include <optional>
#include <sstream>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nvme/host/sync_controller.h"
#include "nvme/host/transport_id.h"
#include "support/net.h"
#include "support/temp_dir.h"
#include "support/tgt_process.h"
#include "tools/perf.h"

namespace smad {
namespace {

using ::testing::HasSubstr;
using jsonrpc::Json;
using nvme::host::SyncController;
using nvme::host::TransportId;

constexpr char kSubNqn[] = "nqn.2016-06.io.spdk:cnode1";
constexpr char kRestrictedNqn[] = "nqn.2016-06.io.spdk:restricted";
constexpr char kDiscoveryNqn[] = "nqn.2014-08.org.nvmexpress.discovery";
constexpr char kHostNqn[] = "nqn.2014-08.org.nvmexpress:uuid:5c0e9a10-7d1b-4c55-9f0e-0123456789ab";
constexpr char kUuid[] = "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c01";
constexpr char kNguid[] = "7B2B4A6E0C1D4C539D0A3F1E2A9B8C01";
constexpr char kSerial[] = "SMAD00000000000001";
constexpr uint64_t kBlocks = 16384;
constexpr uint32_t kBlockSize = 512;

struct CommandResult {
  int exit_code = -1;
  std::string output;
};

CommandResult RunCommand(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

class NvmeHostE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(tgt_.Start().ok()) << tgt_.ReadLog();
    auto client = tgt_.Connect();
    ASSERT_TRUE(client.ok()) << client.status();
    client_.emplace(std::move(client).value());
    port_ = testing::FreeTcpPort();
    discovery_port_ = testing::FreeTcpPort();
    Call("bdev_malloc_create", {{"name", "Malloc0"}, {"num_blocks", kBlocks}, {"block_size", kBlockSize},
                                {"uuid", kUuid}});
    Call("bdev_malloc_create", {{"name", "Malloc1"}, {"num_blocks", 1024}, {"block_size", kBlockSize}});
    Call("nvmf_create_transport", {{"trtype", "TCP"}});
    Call("nvmf_create_subsystem", {{"nqn", kSubNqn}, {"serial_number", kSerial},
                                   {"model_number", "smad e2e"}, {"allow_any_host", true}});
    Call("nvmf_subsystem_add_ns", {{"nqn", kSubNqn},
                                   {"namespace", {{"bdev_name", "Malloc0"}, {"uuid", kUuid}, {"nguid", kNguid}}}});
    Call("nvmf_subsystem_add_listener", {{"nqn", kSubNqn}, {"listen_address", Listen(port_)}});
    Call("nvmf_create_subsystem", {{"nqn", kRestrictedNqn}, {"allow_any_host", false}});
    Call("nvmf_subsystem_add_ns", {{"nqn", kRestrictedNqn}, {"namespace", {{"bdev_name", "Malloc1"}}}});
    Call("nvmf_subsystem_add_host",
         {{"nqn", kRestrictedNqn}, {"host", "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001"}});
    Call("nvmf_subsystem_add_listener", {{"nqn", kRestrictedNqn}, {"listen_address", Listen(port_)}});
    Call("nvmf_subsystem_add_listener", {{"nqn", kDiscoveryNqn}, {"listen_address", Listen(discovery_port_)}});
  }

  static Json Listen(const std::string& port) {
    return {{"trtype", "tcp"}, {"adrfam", "ipv4"}, {"traddr", "127.0.0.1"}, {"trsvcid", port}};
  }

  void Call(const std::string& method, const Json& params) {
    auto result = client_->Call(method, params);
    ASSERT_TRUE(result.ok()) << method << " " << params.dump() << ": " << result.status();
  }

  std::string TridText(const std::string& subnqn, const std::string& port) const {
    return "trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:" + port + " subnqn:" + subnqn + " hostnqn:" + kHostNqn;
  }
  TransportId Trid(const std::string& subnqn, const std::string& port) const {
    auto trid = nvme::host::ParseTransportId(TridText(subnqn, port));
    EXPECT_TRUE(trid.ok()) << trid.status();
    return *trid;
  }

  // Connects to `subnqn`; nullopt (and the test is skipped) while the target does not accept NVMe/TCP.
  std::unique_ptr<SyncController> ConnectOrSkip(const std::string& subnqn, const std::string& port,
                                                bool digests = false) {
    SyncController::Options options;
    options.controller.hdgst = digests;
    options.controller.ddgst = digests;
    auto ctrl = SyncController::Connect(Trid(subnqn, port), options);
    if (!ctrl.ok() && absl::StrContains(ctrl.status().message(), "Connection refused")) {
      skipped_ = true;
      return nullptr;
    }
    EXPECT_TRUE(ctrl.ok()) << ctrl.status() << "\n" << tgt_.ReadLog();
    return ctrl.ok() ? *std::move(ctrl) : nullptr;
  }

  testing::TempDir dir_;
  testing::TgtProcess tgt_{dir_.path()};
  std::optional<jsonrpc::BlockingClient> client_;
  std::string port_;
  std::string discovery_port_;
  bool skipped_ = false;
};

#define CONNECT_OR_SKIP(var, ...)                                                      \
  auto var = ConnectOrSkip(__VA_ARGS__);                                               \
  if (skipped_) GTEST_SKIP() << "smad-tgt does not accept NVMe/TCP connections yet"; \
  ASSERT_NE(var, nullptr)

TEST_F(NvmeHostE2eTest, IdentifiesControllerAndNamespace) {
  CONNECT_OR_SKIP(ctrl, kSubNqn, port_);
  EXPECT_FALSE(ctrl->is_discovery());
  EXPECT_EQ(ctrl->controller_data().serial, kSerial);
  EXPECT_EQ(ctrl->controller_data().model, "smad e2e");
  EXPECT_EQ(ctrl->controller_data().subnqn, kSubNqn);
  EXPECT_GE(ctrl->io_queues_granted(), 1u);
  auto namespaces = ctrl->Namespaces();
  ASSERT_TRUE(namespaces.ok()) << namespaces.status();
  ASSERT_EQ(namespaces->size(), 1u);
  const auto& ns = (*namespaces)[0];
  EXPECT_EQ(ns.nsid, 1u);
  EXPECT_EQ(ns.nsze, kBlocks);
  EXPECT_EQ(ns.block_size(), kBlockSize);
  ASSERT_TRUE(ns.uuid.has_value());
  EXPECT_EQ(ns.uuid->ToString(), kUuid);
  EXPECT_TRUE(ns.has_nguid());
  EXPECT_TRUE(ctrl->Shutdown().ok());
}

TEST_F(NvmeHostE2eTest, WritesAndReadsBackWithAndWithoutDigests) {
  for (bool digests : {false, true}) {
    CONNECT_OR_SKIP(ctrl, kSubNqn, port_, digests);
    for (uint32_t size : {512u, 4096u, 65536u, 131072u}) {
      uint64_t max = ctrl->max_transfer_bytes();
      if (max != 0 && size > max) continue;
      std::vector<uint8_t> data(size);
      for (size_t i = 0; i < size; ++i) data[i] = static_cast<uint8_t>(i * 13 + size + digests);
      uint64_t lba = size / kBlockSize * 3;
      ASSERT_TRUE(ctrl->Write(1, lba, size / kBlockSize, data).ok()) << size;
      std::vector<uint8_t> back(size);
      ASSERT_TRUE(ctrl->Read(1, lba, size / kBlockSize, absl::MakeSpan(back)).ok()) << size;
      EXPECT_EQ(back, data) << "size " << size << " digests " << digests;
    }
    std::vector<uint8_t> buffer(4096);
    absl::Status s = ctrl->Read(1, kBlocks - 1, 8, absl::MakeSpan(buffer));
    EXPECT_THAT(std::string(s.message()), HasSubstr("SCT 0 SC 0x80"));
  }
}

TEST_F(NvmeHostE2eTest, DiscoveryLogListsTheSubsystem) {
  CONNECT_OR_SKIP(ctrl, kDiscoveryNqn, discovery_port_);
  EXPECT_TRUE(ctrl->is_discovery());
  auto log = ctrl->GetDiscoveryLog();
  ASSERT_TRUE(log.ok()) << log.status();
  bool found = false;
  for (const auto& e : log->entries) {
    if (e.subnqn != kSubNqn) continue;
    found = true;
    EXPECT_EQ(e.trtype, nvme::kTrtypeTcp);
    EXPECT_EQ(e.adrfam, nvme::kAdrfamIpv4);
    EXPECT_EQ(e.subtype, nvme::kSubtypeNvm);
    EXPECT_EQ(e.trsvcid, port_);
    EXPECT_EQ(e.traddr, "127.0.0.1");
  }
  EXPECT_TRUE(found);
}

TEST_F(NvmeHostE2eTest, HostNotAllowedIsRefusedAtConnect) {
  auto probe = ConnectOrSkip(kSubNqn, port_);
  if (skipped_) GTEST_SKIP() << "smad-tgt does not accept NVMe/TCP connections yet";
  auto ctrl = SyncController::Connect(Trid(kRestrictedNqn, port_));
  ASSERT_FALSE(ctrl.ok());
  EXPECT_EQ(ctrl.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(ctrl.status().message()), HasSubstr("SCT 1 SC 0x84 (connect invalid host)"));
}

TEST_F(NvmeHostE2eTest, PerfWithVerify) {
  auto probe = ConnectOrSkip(kSubNqn, port_);
  if (skipped_) GTEST_SKIP() << "smad-tgt does not accept NVMe/TCP connections yet";
  probe.reset();
  tools::PerfOptions options;
  options.trid = Trid(kSubNqn, port_);
  options.queue_depth = 16;
  options.io_size = 4096;
  options.workload = tools::Workload::kRandRw;
  options.read_percent = 50;
  options.seconds = 1;
  options.verify = true;
  options.busy_poll = false;
  std::ostringstream log;
  auto result = tools::RunPerf(options, log);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(result->total.ios, 100u);
  EXPECT_EQ(result->total.errors, 0u) << result->first_error;
  EXPECT_EQ(result->total.verify_failures, 0u) << result->first_error;
}

TEST_F(NvmeHostE2eTest, ToolBinaries) {
  auto probe = ConnectOrSkip(kSubNqn, port_);
  if (skipped_) GTEST_SKIP() << "smad-tgt does not accept NVMe/TCP connections yet";
  probe.reset();
  CommandResult identify = RunCommand(std::string(SMAD_IDENTIFY_BINARY) + " '" + TridText(kSubNqn, port_) + "'");
  EXPECT_EQ(identify.exit_code, 0) << identify.output;
  EXPECT_THAT(identify.output, HasSubstr(kSerial));
  EXPECT_THAT(identify.output, HasSubstr(kUuid));

  CommandResult discovery =
      RunCommand(std::string(SMAD_IDENTIFY_BINARY) + " '" + TridText(kDiscoveryNqn, discovery_port_) + "'");
  EXPECT_EQ(discovery.exit_code, 0) << discovery.output;
  EXPECT_THAT(discovery.output, HasSubstr("Discovery Log Page"));
  EXPECT_THAT(discovery.output, HasSubstr(kSubNqn));

  CommandResult denied =
      RunCommand(std::string(SMAD_IDENTIFY_BINARY) + " '" + TridText(kRestrictedNqn, port_) + "'");
  EXPECT_EQ(denied.exit_code, 1);
  EXPECT_THAT(denied.output, HasSubstr("SCT 1 SC 0x84"));

  CommandResult perf = RunCommand(std::string(SMAD_PERF_BINARY) + " -r '" + TridText(kSubNqn, port_) +
                                  "' -q 8 -o 4k -w randread -t 1 --hdgst --ddgst --no-busy-poll");
  EXPECT_EQ(perf.exit_code, 0) << perf.output;
  EXPECT_THAT(perf.output, HasSubstr("{\"tool\":\"smad-perf\""));
}

}  // namespace
}  // namespace smad
