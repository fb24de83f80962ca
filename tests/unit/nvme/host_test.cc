// Unit tests of the NVMe/TCP initiator: transport IDs, command building, Identify/discovery parsing, and
// the queue pair / controller state machines against a scripted fake controller on loopback TCP. Also the
// tools' pure parts (histogram, size and argument parsing) and their engines against the fake.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nvme/host/commands.h"
#include "nvme/host/controller.h"
#include "nvme/host/identify.h"
#include "nvme/host/queue_pair.h"
#include "nvme/host/sync_controller.h"
#include "nvme/host/transport_id.h"
#include "common/latency_histogram.h"
#include "tools/identify.h"
#include "tools/perf.h"
#include "unit/nvme/fake_controller.h"

namespace smad::nvme::host {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::FakeController;

constexpr char kHostNqn[] = "nqn.2014-08.org.nvmexpress:uuid:2b3c4d5e-0000-4000-8000-00000000abcd";
constexpr char kSubNqn[] = "nqn.2016-06.io.spdk:cnode1";

HostIdentitySources NoFiles() { return HostIdentitySources{"", ""}; }

// A temporary file with `contents`, removed at scope exit.
class TempFile {
 public:
  explicit TempFile(const std::string& contents) {
    char name[] = "/tmp/smad_host_test_XXXXXX";
    int fd = mkstemp(name);
    path_ = name;
    if (fd >= 0) {
      ssize_t rc = write(fd, contents.data(), contents.size());
      (void)rc;
      close(fd);
    }
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// --- Transport IDs ------------------------------------------------------------------------------------

TEST(HostTransportIdTest, ParsesSpdkForm) {
  auto trid = ParseTransportId(
      "trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:4421 subnqn:nqn.2016-06.io.spdk:cnode1 "
      "hostnqn:nqn.2014-08.org.nvmexpress:uuid:2b3c4d5e-0000-4000-8000-00000000abcd",
      NoFiles());
  ASSERT_TRUE(trid.ok()) << trid.status();
  EXPECT_EQ(trid->trtype, "TCP");
  EXPECT_EQ(trid->adrfam, AddressFamily::kIpv4);
  EXPECT_EQ(trid->traddr, "127.0.0.1");
  EXPECT_EQ(trid->trsvcid, "4421");
  EXPECT_EQ(trid->port(), 4421);
  EXPECT_EQ(trid->subnqn, kSubNqn);
  EXPECT_EQ(trid->hostnqn, kHostNqn);
  // The host ID is the UUID inside a uuid-form host NQN.
  EXPECT_EQ(trid->hostid.ToString(), "2b3c4d5e-0000-4000-8000-00000000abcd");
  EXPECT_FALSE(trid->IsDiscovery());
  EXPECT_THAT(trid->ToString(), HasSubstr("trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4421 subnqn:"));
}

TEST(HostTransportIdTest, AcceptsEqualsAndCaseInsensitiveKeysAndExtraWhitespace) {
  auto trid = ParseTransportId("  TRTYPE=TCP\tTrAddr=10.1.2.3   TRSVCID:8009 ns:2 priority:1 ", NoFiles());
  ASSERT_TRUE(trid.ok()) << trid.status();
  EXPECT_EQ(trid->traddr, "10.1.2.3");
  EXPECT_EQ(trid->trsvcid, "8009");
  EXPECT_EQ(trid->nsid, 2u);
}

TEST(HostTransportIdTest, DefaultsToDiscoveryNqnPort4420AndHostNqnFromFile) {
  TempFile hostnqn(std::string(kHostNqn) + "\n");
  auto trid = ParseTransportId("traddr:192.168.0.9", HostIdentitySources{hostnqn.path(), ""});
  ASSERT_TRUE(trid.ok()) << trid.status();
  EXPECT_EQ(trid->trsvcid, "4420");
  EXPECT_EQ(trid->subnqn, "nqn.2014-08.org.nvmexpress.discovery");
  EXPECT_TRUE(trid->IsDiscovery());
  EXPECT_EQ(trid->hostnqn, kHostNqn);
}

TEST(HostTransportIdTest, GeneratesUuidHostNqnWithoutFile) {
  auto trid = ParseTransportId("traddr:127.0.0.1", HostIdentitySources{"/nonexistent/hostnqn", ""});
  ASSERT_TRUE(trid.ok()) << trid.status();
  EXPECT_THAT(trid->hostnqn, StartsWith("nqn.2014-08.org.nvmexpress:uuid:"));
  EXPECT_EQ(trid->hostnqn.substr(32), trid->hostid.ToString());
  EXPECT_FALSE(trid->hostid.IsNull());
}

TEST(HostTransportIdTest, HostIdFromFileForNonUuidHostNqn) {
  TempFile hostid("0f0e0d0c-0b0a-4908-8706-050403020100\n");
  auto trid = ParseTransportId("traddr:127.0.0.1 hostnqn:nqn.2016-06.io.example:host1",
                               HostIdentitySources{"", hostid.path()});
  ASSERT_TRUE(trid.ok()) << trid.status();
  EXPECT_EQ(trid->hostid.ToString(), "0f0e0d0c-0b0a-4908-8706-050403020100");
}

TEST(HostTransportIdTest, InfersIpv6FromAddress) {
  auto trid = ParseTransportId("trtype:tcp traddr:::1 trsvcid:4420", NoFiles());
  ASSERT_TRUE(trid.ok()) << trid.status();
  EXPECT_EQ(trid->traddr, "::1");
  EXPECT_EQ(trid->adrfam, AddressFamily::kIpv6);
}

TEST(HostTransportIdTest, ErrorsNameTheKey) {
  struct Case {
    const char* text;
    const char* key;
    const char* problem;
  };
  const Case cases[] = {
      {"traddr:1.2.3.4 bogus:1", "'bogus'", "unknown key"},
      {"traddr:", "'traddr'", "missing value"},
      {"traddr:1.2.3.4 subnqn", "'subnqn'", "missing value"},
      {"traddr:1.2.3.4 trsvcid:99999", "'trsvcid'", "port"},
      {"traddr:1.2.3.4 trsvcid:abc", "'trsvcid'", "port"},
      {"traddr:1.2.3.4 trtype:rdma", "'trtype'", "only tcp"},
      {"traddr:1.2.3.4 adrfam:ib", "'adrfam'", "address family"},
      {"traddr:1.2.3.4 subnqn:not-an-nqn", "'subnqn'", ""},
      {"traddr:1.2.3.4 traddr:5.6.7.8", "'traddr'", "more than once"},
      {"trsvcid:4420", "'traddr'", "missing"},
      {"traddr:1.2.3.4 ns:0", "'ns'", "namespace"},
  };
  for (const Case& c : cases) {
    auto trid = ParseTransportId(c.text, NoFiles());
    ASSERT_FALSE(trid.ok()) << c.text;
    EXPECT_EQ(trid.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(std::string(trid.status().message()), HasSubstr(c.key)) << c.text;
    EXPECT_THAT(std::string(trid.status().message()), HasSubstr(c.problem)) << c.text;
  }
}

// --- Command building and status text ---------------------------------------------------------------------

TEST(HostCommandsTest, ReadWriteLayout) {
  uint8_t sqe[kSqeSize];
  BuildRead(sqe, 7, 0x123456789aull, 8);
  Command cmd;
  std::memcpy(cmd.raw, sqe, kSqeSize);
  EXPECT_EQ(cmd.opcode(), io::kRead);
  EXPECT_EQ(cmd.nsid(), 7u);
  EXPECT_EQ(cmd.slba(), 0x123456789aull);
  EXPECT_EQ(cmd.nlb(), 8u);
  BuildWrite(sqe, 1, 0, 65536);
  std::memcpy(cmd.raw, sqe, kSqeSize);
  EXPECT_EQ(cmd.opcode(), io::kWrite);
  EXPECT_EQ(cmd.nlb(), 65536u);
}

TEST(HostCommandsTest, FabricsLayout) {
  uint8_t sqe[kSqeSize];
  BuildConnect(sqe, 3, 128, 15000);
  EXPECT_EQ(sqe[0], kFabricsOpcode);
  EXPECT_EQ(sqe[4], fabrics::kConnect);
  EXPECT_EQ(Load16(sqe + connect_cmd::kQid), 3);
  EXPECT_EQ(Load16(sqe + connect_cmd::kSqsize), 127);  // 0's based
  EXPECT_EQ(Load32(sqe + connect_cmd::kKato), 15000u);

  uint8_t data[kConnectDataSize];
  uint8_t hostid[16] = {1, 2, 3};
  BuildConnectData(data, hostid, 0xffff, kSubNqn, kHostNqn);
  EXPECT_EQ(Load16(data + connect_data::kCntlid), 0xffff);
  EXPECT_EQ(GetPadded(data + connect_data::kSubnqn, 256), kSubNqn);
  EXPECT_EQ(GetPadded(data + connect_data::kHostnqn, 256), kHostNqn);
  EXPECT_EQ(data[connect_data::kHostId + 2], 3);

  BuildPropertySet(sqe, prop::kCc, false, kCcEnableValue);
  EXPECT_EQ(sqe[4], fabrics::kPropertySet);
  EXPECT_EQ(sqe[property_cmd::kAttrib], 0);
  EXPECT_EQ(Load32(sqe + property_cmd::kOffset), prop::kCc);
  EXPECT_EQ(Load64(sqe + property_cmd::kValue), 0x00460001u);
  BuildPropertyGet(sqe, prop::kCap, true);
  EXPECT_EQ(sqe[property_cmd::kAttrib], 1);
}

TEST(HostCommandsTest, AdminLayout) {
  uint8_t sqe[kSqeSize];
  Command cmd;
  BuildGetLogPage(sqe, log_page::kDiscovery, 0, 0x100000400ull, 0x40004);
  std::memcpy(cmd.raw, sqe, kSqeSize);
  EXPECT_EQ(cmd.opcode(), admin::kGetLogPage);
  EXPECT_EQ(cmd.cdw(10) & 0xff, log_page::kDiscovery);
  uint32_t numd = (cmd.cdw(10) >> 16) | (cmd.cdw(11) & 0xffff) << 16;
  EXPECT_EQ(numd, 0x40004u / 4 - 1);
  EXPECT_EQ(cmd.cdw(12), 0x400u);
  EXPECT_EQ(cmd.cdw(13), 1u);
  BuildIdentify(sqe, cns::kNamespaceIdDescriptors, 5);
  std::memcpy(cmd.raw, sqe, kSqeSize);
  EXPECT_EQ(cmd.opcode(), admin::kIdentify);
  EXPECT_EQ(cmd.cdw(10), cns::kNamespaceIdDescriptors);
  EXPECT_EQ(cmd.nsid(), 5u);
  BuildSetFeatures(sqe, feature::kNumberOfQueues, 0x00030003);
  std::memcpy(cmd.raw, sqe, kSqeSize);
  EXPECT_EQ(cmd.cdw(10), feature::kNumberOfQueues);
  EXPECT_EQ(cmd.cdw(11), 0x00030003u);
}

TEST(HostCommandsTest, StatusText) {
  Status invalid_host = Specific(sc_specific::kConnectInvalidHost);
  EXPECT_EQ(DescribeStatus(invalid_host), "SCT 1 SC 0x84 (connect invalid host) DNR");
  absl::Status s = NvmeStatusError("Connect", invalid_host);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(s.message()), HasSubstr("Connect failed: SCT 1 SC 0x84 (connect invalid host)"));
  EXPECT_EQ(NvmeStatusError("Read", Generic(sc::kLbaOutOfRange, false)).code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(NvmeStatusError("Read", Status{}).ok());
  EXPECT_EQ(DescribeStatus(Status{7, 0x55, false}), "SCT 7 SC 0x55");
}

// --- Identify parsing -----------------------------------------------------------------------------------

TEST(HostIdentifyTest, ParsesControllerData) {
  std::vector<uint8_t> d(kIdentifySize, 0);
  Store16(d.data() + id_ctrl::kVid, 0x8086);
  PutPadded(d.data() + id_ctrl::kSn, 20, "SPDK00000000000001", 18, ' ');
  PutPadded(d.data() + id_ctrl::kMn, 40, "SPDK bdev Controller", 20, ' ');
  PutPadded(d.data() + id_ctrl::kFr, 8, "26.09", 5, ' ');
  d[id_ctrl::kMdts] = 5;
  Store16(d.data() + id_ctrl::kCntlid, 6);
  Store32(d.data() + id_ctrl::kNn, 32);
  Store32(d.data() + id_ctrl::kIoccsz, 516);
  PutPadded(d.data() + id_ctrl::kSubnqn, 256, kSubNqn, sizeof(kSubNqn) - 1, '\0');
  auto c = ParseControllerData(d);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->vid, 0x8086);
  EXPECT_EQ(c->serial, "SPDK00000000000001");
  EXPECT_EQ(c->model, "SPDK bdev Controller");
  EXPECT_EQ(c->firmware, "26.09");
  EXPECT_EQ(c->cntlid, 6);
  EXPECT_EQ(c->nn, 32u);
  EXPECT_EQ(c->subnqn, kSubNqn);
  EXPECT_EQ(c->InCapsuleDataBytes(), 8192u);
  EXPECT_EQ(c->MaxTransferBytes(4096), 131072u);
  EXPECT_FALSE(ParseControllerData(absl::MakeConstSpan(d).subspan(0, 100)).ok());
}

TEST(HostIdentifyTest, ParsesNamespaceAndDescriptors) {
  std::vector<uint8_t> d(kIdentifySize, 0);
  Store64(d.data() + id_ns::kNsze, 8192);
  d[id_ns::kNlbaf] = 1;
  d[id_ns::kFlbas] = 1;
  d[id_ns::kLbaf0 + 2] = 9;
  d[id_ns::kLbaf0 + 4 + 2] = 12;
  auto ns = ParseNamespaceData(3, d);
  ASSERT_TRUE(ns.ok());
  EXPECT_EQ(ns->nsid, 3u);
  EXPECT_EQ(ns->lba_formats.size(), 2u);
  EXPECT_EQ(ns->block_size(), 4096u);
  EXPECT_FALSE(ns->has_nguid());

  std::vector<uint8_t> desc(kIdentifySize, 0);
  desc[0] = kNidtEui64;
  desc[1] = 8;
  desc[4] = 0xee;
  desc[12] = kNidtUuid;
  desc[13] = 16;
  for (int i = 0; i < 16; ++i) desc[16 + i] = static_cast<uint8_t>(i);
  ASSERT_TRUE(ApplyNamespaceDescriptors(desc, *ns).ok());
  EXPECT_TRUE(ns->has_eui64());
  EXPECT_EQ(ns->eui64[0], 0xee);
  ASSERT_TRUE(ns->uuid.has_value());
  EXPECT_EQ(ns->uuid->ToString(), "00010203-0405-0607-0809-0a0b0c0d0e0f");
  desc[13] = 15;  // a UUID must be 16 bytes
  EXPECT_FALSE(ApplyNamespaceDescriptors(desc, *ns).ok());
}

TEST(HostIdentifyTest, ParsesDiscoveryEntry) {
  std::vector<uint8_t> e(kDiscoveryEntrySize, 0);
  e[disc_entry::kTrtype] = kTrtypeTcp;
  e[disc_entry::kAdrfam] = kAdrfamIpv4;
  e[disc_entry::kSubtype] = kSubtypeNvm;
  Store16(e.data() + disc_entry::kPortid, 2);
  PutPadded(e.data() + disc_entry::kTrsvcid, 32, "4421", 4, ' ');
  PutPadded(e.data() + disc_entry::kTraddr, 256, "127.0.0.1", 9, ' ');
  PutPadded(e.data() + disc_entry::kSubnqn, 256, kSubNqn, sizeof(kSubNqn) - 1, '\0');
  auto entry = ParseDiscoveryEntry(e);
  ASSERT_TRUE(entry.ok());
  EXPECT_EQ(entry->trsvcid, "4421");
  EXPECT_EQ(entry->traddr, "127.0.0.1");
  EXPECT_EQ(entry->subnqn, kSubNqn);
  EXPECT_EQ(entry->portid, 2);
  EXPECT_STREQ(SubtypeName(entry->subtype), "NVM Subsystem");
  EXPECT_EQ(VersionString(0x00010400), "1.4");
  EXPECT_EQ(VersionString(0x00010201), "1.2.1");
}

// --- Against the fake controller ----------------------------------------------------------------------------

TransportId TridFor(const FakeController& fake, const std::string& subnqn = kSubNqn) {
  auto trid = ParseTransportId(
      "trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:" + fake.port() + " subnqn:" + subnqn + " hostnqn:" + kHostNqn,
      NoFiles());
  EXPECT_TRUE(trid.ok()) << trid.status();
  return *trid;
}

SyncController::Options FastOptions() {
  SyncController::Options options;
  options.controller.timeout_ns = 3'000'000'000ull;
  return options;
}

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + seed + (i >> 9));
  return v;
}

TEST(HostControllerTest, ConnectsIdentifiesAndListsNamespaces) {
  FakeController fake(FakeController::Config{});
  auto ctrl = SyncController::Connect(TridFor(fake), FastOptions());
  ASSERT_TRUE(ctrl.ok()) << ctrl.status();
  EXPECT_FALSE((*ctrl)->is_discovery());
  EXPECT_EQ((*ctrl)->controller_data().serial, "FAKE0001");
  EXPECT_EQ((*ctrl)->controller_data().model, "smad fake controller");
  EXPECT_EQ((*ctrl)->cntlid(), 1);
  EXPECT_EQ((*ctrl)->vs(), kVersion2_0);
  EXPECT_EQ(CapMqes((*ctrl)->cap()), 127u);
  EXPECT_EQ((*ctrl)->io_queues_granted(), 4u);
  EXPECT_EQ((*ctrl)->max_transfer_bytes(), 131072u);
  EXPECT_EQ(fake.last_connect_sqsize(), 31);  // admin depth 32
  EXPECT_EQ(fake.last_connect_kato(), 10000u);
  EXPECT_EQ(fake.last_hostnqn(), kHostNqn);

  auto namespaces = (*ctrl)->Namespaces();
  ASSERT_TRUE(namespaces.ok()) << namespaces.status();
  ASSERT_EQ(namespaces->size(), 1u);
  const NamespaceData& ns = (*namespaces)[0];
  EXPECT_EQ(ns.nsid, 1u);
  EXPECT_EQ(ns.nsze, 2048u);
  EXPECT_EQ(ns.block_size(), 512u);
  EXPECT_TRUE(ns.has_nguid());
  EXPECT_EQ(ns.nguid[0], 0xa0);
  EXPECT_EQ(ns.eui64[0], 0xe0);
  ASSERT_TRUE(ns.uuid.has_value());
  EXPECT_EQ(ns.uuid->ToString(), "10111213-1415-1617-1819-1a1b1c1d1e1f");

  auto inactive = (*ctrl)->IdentifyNamespace(2);
  EXPECT_EQ(inactive.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE((*ctrl)->Shutdown().ok());
  EXPECT_TRUE(fake.saw_shutdown());
}

TEST(HostControllerTest, ConnectRejectedWithInvalidHost) {
  FakeController::Config config;
  config.connect_status = Specific(sc_specific::kConnectInvalidHost);
  FakeController fake(config);
  auto ctrl = SyncController::Connect(TridFor(fake), FastOptions());
  ASSERT_FALSE(ctrl.ok());
  EXPECT_EQ(ctrl.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(ctrl.status().message()), HasSubstr("Connect failed: SCT 1 SC 0x84 (connect invalid host)"));
}

TEST(HostControllerTest, ConnectRejectedForUnknownSubsystem) {
  FakeController fake(FakeController::Config{});
  auto ctrl = SyncController::Connect(TridFor(fake, "nqn.2016-06.io.spdk:other"), FastOptions());
  ASSERT_FALSE(ctrl.ok());
  EXPECT_THAT(std::string(ctrl.status().message()), HasSubstr("SCT 1 SC 0x82 (connect invalid parameters)"));
}

TEST(HostControllerTest, TcpConnectFailureIsReported) {
  std::string port;
  {
    FakeController fake(FakeController::Config{});
    port = fake.port();
  }  // closed again: nothing listens there now
  auto trid = ParseTransportId("traddr:127.0.0.1 trsvcid:" + port + " subnqn:" + kSubNqn, NoFiles());
  ASSERT_TRUE(trid.ok());
  auto ctrl = SyncController::Connect(*trid, FastOptions());
  ASSERT_FALSE(ctrl.ok());
  EXPECT_THAT(std::string(ctrl.status().message()), HasSubstr("connect to 127.0.0.1:" + port));
}

TEST(HostControllerTest, ReadCompletedByC2HDataSuccessFlag) {
  FakeController::Config config;
  config.c2h_chunk = 1024;  // 4 C2HData PDUs, the last with SUCCESS, no CapsuleResp
  FakeController fake(config);
  std::vector<uint8_t> pattern = Pattern(4096, 3);
  fake.Fill(512 * 10, pattern);
  auto ctrl = SyncController::Connect(TridFor(fake), FastOptions());
  ASSERT_TRUE(ctrl.ok()) << ctrl.status();
  std::vector<uint8_t> buffer(4096);
  ASSERT_TRUE((*ctrl)->Read(1, 10, 8, absl::MakeSpan(buffer)).ok());
  EXPECT_EQ(buffer, pattern);
  EXPECT_EQ(fake.connections(), 2);  // admin + I/O queue 1
}

TEST(HostControllerTest, ReadCompletedByCapsuleResp) {
  FakeController::Config config;
  config.c2h_success = false;  // SPDK's target style: C2HData then CapsuleResp
  FakeController fake(config);
  std::vector<uint8_t> pattern = Pattern(8192, 9);
  fake.Fill(0, pattern);
  auto ctrl = SyncController::Connect(TridFor(fake), FastOptions());
  ASSERT_TRUE(ctrl.ok()) << ctrl.status();
  std::vector<uint8_t> buffer(8192);
  ASSERT_TRUE((*ctrl)->Read(1, 0, 16, absl::MakeSpan(buffer)).ok());
  EXPECT_EQ(buffer, pattern);
}

TEST(HostControllerTest, WriteViaR2TAndH2CDataChunks) {
  FakeController::Config config;
  config.ioccsz = 4;           // no in-capsule data
  config.maxh2cdata = 4096;    // each R2T answered with several H2CData PDUs
  config.r2t_chunk = 8192;     // and the command needs several R2Ts
  FakeController fake(config);
  auto ctrl = SyncController::Connect(TridFor(fake), FastOptions());
  ASSERT_TRUE(ctrl.ok()) << ctrl.status();
  std::vector<uint8_t> data = Pattern(16384, 1);
  ASSERT_TRUE((*ctrl)->Write(1, 4, 32, data).ok());
  EXPECT_EQ(fake.in_capsule_writes(), 0);
  EXPECT_EQ(fake.r2ts_sent(), 2);
  EXPECT_EQ(fake.h2c_pdus(), 4);
  std::vector<uint8_t> media = fake.Snapshot();
  EXPECT_TRUE(std::equal(data.begin(), data.end(), media.begin() + 4 * 512));
  std::vector<uint8_t> back(16384);
  ASSERT_TRUE((*ctrl)->Read(1, 4, 32, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, data);
}

TEST(HostControllerTest, SmallWriteGoesInCapsule) {
  FakeController::Config config;
  config.ioccsz = (8192 + 64) / 16;
  FakeController fake(config);
  auto ctrl = SyncController::Connect(TridFor(fake), FastOptions());
  ASSERT_TRUE(ctrl.ok()) << ctrl.status();
  EXPECT_EQ((*ctrl)->controller_data().InCapsuleDataBytes(), 8192u);
  std::vector<uint8_t> data = Pattern(4096, 5);
  ASSERT_TRUE((*ctrl)->Write(1, 100, 8, data).ok());
  EXPECT_EQ(fake.in_capsule_writes(), 1);
  EXPECT_EQ(fake.r2ts_sent(), 0);
  std::vector<uint8_t> big = Pattern(16384, 6);  // above the limit: R2T
  ASSERT_TRUE((*ctrl)->Write(1, 200, 32, big).ok());
  EXPECT_EQ(fake.in_capsule_writes(), 1);
  EXPECT_EQ(fake.r2ts_sent(), 1);
  std::vector<uint8_t> media = fake.Snapshot();
  EXPECT_TRUE(std::equal(data.begin(), data.end(), media.begin() + 100 * 512));
  EXPECT_TRUE(std::equal(big.begin(), big.end(), media.begin() + 200 * 512));
}

TEST(HostControllerTest, DigestsAndControllerDataAlignment) {
  FakeController::Config config;
  config.cpda = 3;  // host-to-controller data aligned to 16 bytes
  config.ioccsz = (4096 + 64) / 16;
  config.maxh2cdata = 4096;
  config.c2h_chunk = 3000;
  FakeController fake(config);
  SyncController::Options options = FastOptions();
  options.controller.hdgst = true;
  options.controller.ddgst = true;
  auto ctrl = SyncController::Connect(TridFor(fake), options);
  ASSERT_TRUE(ctrl.ok()) << ctrl.status();
  EXPECT_TRUE(fake.negotiated_hdgst());
  EXPECT_TRUE(fake.negotiated_ddgst());
  ASSERT_TRUE((*ctrl)->Namespaces().ok());
  std::vector<uint8_t> small = Pattern(2048, 7), large = Pattern(32768, 8);
  ASSERT_TRUE((*ctrl)->Write(1, 0, 4, small).ok());      // in-capsule, padded per CPDA
  ASSERT_TRUE((*ctrl)->Write(1, 64, 64, large).ok());    // R2T + H2CData
  std::vector<uint8_t> back(32768);
  ASSERT_TRUE((*ctrl)->Read(1, 64, 64, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, large);
  EXPECT_EQ(fake.in_capsule_writes(), 1);
  EXPECT_EQ(fake.term_reqs_received(), 0);
}

TEST(HostControllerTest, DigestsDeclinedByController) {
  FakeController::Config config;
  config.allow_hdgst = false;
  config.allow_ddgst = false;
  FakeController fake(config);
  SyncController::Options options = FastOptions();
  options.controller.hdgst = true;
  options.controller.ddgst = true;
  auto ctrl = SyncController::Connect(TridFor(fake), options);
  ASSERT_TRUE(ctrl.ok()) << ctrl.status();
  std::vector<uint8_t> buffer(512);
  EXPECT_TRUE((*ctrl)->Read(1, 0, 1, absl::MakeSpan(buffer)).ok());
  EXPECT_FALSE(fake.negotiated_hdgst());
}

TEST(HostControllerTest, NvmeErrorStatusBecomesAbslError) {
  FakeController fake(FakeController::Config{});
  auto ctrl = SyncController::Connect(TridFor(fake), FastOptions());
  ASSERT_TRUE(ctrl.ok()) << ctrl.status();
  std::vector<uint8_t> buffer(4096);
  absl::Status s = (*ctrl)->Read(1, 2047, 8, absl::MakeSpan(buffer));
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(s.message()), HasSubstr("Read failed: SCT 0 SC 0x80 (LBA out of range)"));
  EXPECT_TRUE((*ctrl)->Flush(1).ok());
  auto log = (*ctrl)->GetLogPage(log_page::kHealth, 0xffffffff, 0, 512);
  EXPECT_THAT(std::string(log.status().message()), HasSubstr("SCT 1 SC 0x09 (invalid log page)"));
}

TEST(HostControllerTest, DiscoveryLogReadInPiecesWithGenerationRetry) {
  FakeController::Config config;
  config.discovery = true;
  config.subnqn = "nqn.2014-08.org.nvmexpress.discovery";
  config.discovery_records = 6;  // 6 KiB of records: two 4 KiB pieces
  config.bump_genctr_once = true;
  FakeController fake(config);
  auto ctrl = SyncController::Connect(TridFor(fake, config.subnqn), FastOptions());
  ASSERT_TRUE(ctrl.ok()) << ctrl.status();
  EXPECT_TRUE((*ctrl)->is_discovery());
  EXPECT_EQ((*ctrl)->AllocateIoQueue(8).status().code(), absl::StatusCode::kFailedPrecondition);
  auto log = (*ctrl)->GetDiscoveryLog();
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(log->genctr, 6u);
  EXPECT_EQ(log->numrec, 6u);
  ASSERT_EQ(log->entries.size(), 6u);
  EXPECT_EQ(log->entries[0].subtype, kSubtypeCurrentDiscovery);
  EXPECT_EQ(log->entries[5].subnqn, "nqn.2016-06.io.spdk:cnode5");
  EXPECT_EQ(log->entries[5].trsvcid, "4425");
  EXPECT_EQ(log->entries[5].traddr, "127.0.0.1");

  std::string report = tools::FormatDiscoveryLog(*log);
  EXPECT_THAT(report, HasSubstr("Generation Counter:"));
  EXPECT_THAT(report, HasSubstr("nqn.2016-06.io.spdk:cnode5"));
}

TEST(HostControllerTest, KeepAliveSentEveryHalfKato) {
  FakeController fake(FakeController::Config{});
  SyncController::Options options = FastOptions();
  options.controller.kato_ms = 100;
  auto ctrl = SyncController::Connect(TridFor(fake), options);
  ASSERT_TRUE(ctrl.ok()) << ctrl.status();
  EXPECT_EQ(fake.last_connect_kato(), 100u);
  for (int i = 0; i < 100 && fake.keep_alives() < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GE(fake.keep_alives(), 3);
}

TEST(HostControllerTest, AdminCommandTimeoutFailsTheQueue) {
  FakeController fake(FakeController::Config{});
  fake.SetHook([](FakeController::Connection&, const Command& cmd, const uint8_t*, uint32_t) {
    return cmd.opcode() == admin::kIdentify && (cmd.cdw(10) & 0xff) == cns::kNamespace;  // never answered
  });
  SyncController::Options options = FastOptions();
  options.controller.timeout_ns = 200'000'000;
  auto ctrl = SyncController::Connect(TridFor(fake), options);
  ASSERT_TRUE(ctrl.ok()) << ctrl.status();
  auto ns = (*ctrl)->IdentifyNamespace(1);
  EXPECT_EQ(ns.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(ns.status().message()), HasSubstr("timed out"));
}

// --- The queue pair directly ---------------------------------------------------------------------------

class HostQueuePairTest : public ::testing::Test {
 protected:
  void SetUp() override { reactor_.Start(); }
  void TearDown() override {
    RunOn([&] { qp_.reset(); });
    reactor_.Stop();
    reactor_.Join();
  }

  template <typename F>
  void RunOn(F fn) {
    std::promise<void> done;
    reactor_.Post([&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }

  // Connects I/O queue 1 of the fake (which does not check for an admin queue).
  absl::Status Connect(FakeController& fake, uint16_t depth) {
    QueuePair::Options options;
    options.qid = 1;
    options.cntlid = 1;
    options.depth = depth;
    options.connect_timeout_ns = 3'000'000'000ull;
    auto result = std::make_shared<std::promise<absl::Status>>();
    RunOn([&] {
      qp_ = std::make_unique<QueuePair>(reactor_, TridFor(fake), options);
      qp_->Connect([result](absl::Status s) { result->set_value(s); });
    });
    auto future = result->get_future();
    if (future.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      return absl::DeadlineExceededError("test: no connect result");
    }
    return future.get();
  }

  Reactor reactor_{Reactor::Options{.name = "qp_test"}};
  std::unique_ptr<QueuePair> qp_;
};

TEST_F(HostQueuePairTest, TermReqFromControllerFailsAllOutstandingCommands) {
  FakeController fake(FakeController::Config{});
  std::atomic<int> reads{0};
  fake.SetHook([&](FakeController::Connection& conn, const Command& cmd, const uint8_t*, uint32_t) {
    if (cmd.opcode() != io::kRead) return false;
    if (++reads == 3) conn.SendTermReq(tcp::kFesInvalidHeaderField, 8);
    return true;  // never answered otherwise
  });
  ASSERT_TRUE(Connect(fake, 8).ok());
  std::vector<std::vector<uint8_t>> buffers(3, std::vector<uint8_t>(512));
  std::vector<std::promise<Completion>> done(3);
  std::promise<absl::Status> failure;
  RunOn([&] {
    qp_->SetFailureCallback([&](const absl::Status& s) { failure.set_value(s); });
    for (int i = 0; i < 3; ++i) {
      uint8_t sqe[kSqeSize];
      BuildRead(sqe, 1, i, 1);
      ASSERT_TRUE(qp_->SubmitRead(sqe, buffers[i].data(), 512, [&, i](const Completion& c) {
                       done[i].set_value(c);
                     }).ok());
    }
  });
  for (int i = 0; i < 3; ++i) {
    Completion c = done[i].get_future().get();
    EXPECT_FALSE(c.ok());
    EXPECT_EQ(c.transport.code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(std::string(c.transport.message()), HasSubstr("controller terminated the connection: FES 0x1"));
    EXPECT_THAT(std::string(c.ToStatus("Read").message()), StartsWith("Read failed: "));
  }
  EXPECT_THAT(std::string(failure.get_future().get().message()), HasSubstr("terminated"));
  RunOn([&] {
    EXPECT_EQ(qp_->state(), QueuePair::State::kClosed);
    EXPECT_EQ(qp_->outstanding(), 0u);
    uint8_t sqe[kSqeSize];
    BuildFlush(sqe, 1);
    EXPECT_EQ(qp_->Submit(sqe, [](const Completion&) {}).code(), absl::StatusCode::kFailedPrecondition);
  });
}

TEST_F(HostQueuePairTest, MalformedPduSendsTermReqAndFails) {
  FakeController fake(FakeController::Config{});
  fake.SetHook([&](FakeController::Connection& conn, const Command& cmd, const uint8_t*, uint32_t) {
    if (cmd.opcode() != io::kRead) return false;
    uint8_t junk[512] = {};
    conn.SendC2HData(static_cast<uint16_t>(cmd.cid() + 100), 0, junk, sizeof(junk), true, true);  // unknown CID
    return true;
  });
  ASSERT_TRUE(Connect(fake, 4).ok());
  std::vector<uint8_t> buffer(512);
  std::promise<Completion> done;
  RunOn([&] {
    uint8_t sqe[kSqeSize];
    BuildRead(sqe, 1, 0, 1);
    ASSERT_TRUE(qp_->SubmitRead(sqe, buffer.data(), 512, [&](const Completion& c) { done.set_value(c); }).ok());
  });
  Completion c = done.get_future().get();
  EXPECT_EQ(c.transport.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(c.transport.message()), HasSubstr("unknown command ID"));
  for (int i = 0; i < 200 && fake.term_reqs_received() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(fake.term_reqs_received(), 1);
}

TEST_F(HostQueuePairTest, SubmissionsBeyondDepthAreRefusedAndBatchedPdusAllComplete) {
  FakeController fake(FakeController::Config{});
  ASSERT_TRUE(Connect(fake, 16).ok());
  EXPECT_EQ(fake.last_connect_sqsize(), 15);
  std::vector<std::vector<uint8_t>> buffers(16, std::vector<uint8_t>(512));
  std::atomic<int> ok{0};
  std::promise<void> all;
  RunOn([&] {
    for (int i = 0; i < 16; ++i) {  // one reactor callback: one flush for all 16 capsules
      uint8_t sqe[kSqeSize];
      BuildRead(sqe, 1, i, 1);
      ASSERT_TRUE(qp_->SubmitRead(sqe, buffers[i].data(), 512, [&](const Completion& c) {
                       if (c.ok() && ++ok == 16) all.set_value();
                     }).ok());
    }
    uint8_t sqe[kSqeSize];
    BuildRead(sqe, 1, 0, 1);
    uint8_t extra[512];
    QueuePair::CompletionCallback cb = [](const Completion&) {};
    EXPECT_EQ(qp_->SubmitRead(sqe, extra, 512, std::move(cb)).code(), absl::StatusCode::kResourceExhausted);
    EXPECT_TRUE(cb != nullptr);  // a refused submission leaves the callback with the caller
    EXPECT_EQ(qp_->outstanding(), 16u);
  });
  ASSERT_EQ(all.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  RunOn([&] { EXPECT_EQ(qp_->outstanding(), 0u); });
}

TEST_F(HostQueuePairTest, ConnectStatusReachesCallback) {
  FakeController::Config config;
  config.connect_status = Specific(sc_specific::kConnectInvalidHost);
  FakeController fake(config);
  absl::Status s = Connect(fake, 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(s.message()), HasSubstr("Connect failed: SCT 1 SC 0x84 (connect invalid host)"));
}

}  // namespace
}  // namespace smad::nvme::host

// --- Tools ------------------------------------------------------------------------------------------------

namespace smad::tools {
namespace {

using ::testing::HasSubstr;

TEST(HostHistogramTest, BucketsCoverTheRangeWithBoundedError) {
  for (uint64_t v : std::vector<uint64_t>{0, 1, 255, 256, 257, 1000, 123456789, (1ull << 40) + 12345, UINT64_MAX}) {
    size_t i = LatencyHistogram::BucketIndex(v);
    ASSERT_LT(i, LatencyHistogram::kBucketCount) << v;
    EXPECT_LE(LatencyHistogram::BucketLow(i), v) << v;
    EXPECT_GE(LatencyHistogram::BucketHigh(i), v) << v;
    if (v >= 256) {
      double width = static_cast<double>(LatencyHistogram::BucketHigh(i) - LatencyHistogram::BucketLow(i));
      EXPECT_LE(width / static_cast<double>(v), 1.0 / 128) << v;
    }
  }
  for (size_t i = 1; i < LatencyHistogram::kBucketCount; ++i) {
    ASSERT_EQ(LatencyHistogram::BucketLow(i), LatencyHistogram::BucketHigh(i - 1) + 1) << i;
  }
}

TEST(HostHistogramTest, PercentilesAndMerge) {
  LatencyHistogram a, b;
  for (uint64_t v = 1; v <= 1000; ++v) a.Record(v * 1000);  // 1..1000 us in ns
  b.Record(5'000'000);
  EXPECT_EQ(a.count(), 1000u);
  EXPECT_NEAR(a.mean(), 500500.0, 1);
  EXPECT_NEAR(static_cast<double>(a.Percentile(0.5)), 500000, 500000 / 100.0);
  EXPECT_NEAR(static_cast<double>(a.Percentile(0.99)), 990000, 990000 / 100.0);
  EXPECT_EQ(a.Percentile(1.0), 1000000u);
  EXPECT_EQ(a.min(), 1000u);
  a.Merge(b);
  EXPECT_EQ(a.count(), 1001u);
  EXPECT_EQ(a.max(), 5000000u);
  EXPECT_EQ(LatencyHistogram().Percentile(0.5), 0u);
}

TEST(HostPerfArgsTest, ParsesSizesAndWorkloads) {
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("4k"), 4096u);
  EXPECT_EQ(*ParseSize("128K"), 131072u);
  EXPECT_EQ(*ParseSize("1m"), 1048576u);
  EXPECT_EQ(*ParseSize("2MiB"), 2097152u);
  EXPECT_EQ(*ParseSize("1g"), 1073741824u);
  EXPECT_FALSE(ParseSize("").ok());
  EXPECT_FALSE(ParseSize("k").ok());
  EXPECT_FALSE(ParseSize("4x").ok());
  EXPECT_FALSE(ParseSize("0").ok());
  EXPECT_FALSE(ParseSize("99999999999999999999").ok());
  EXPECT_EQ(*ParseWorkload("RandRW"), Workload::kRandRw);
  EXPECT_FALSE(ParseWorkload("trim").ok());
}

TEST(HostPerfArgsTest, ParsesCommandLine) {
  const char* argv[] = {"smad-perf", "-r", "trtype:tcp traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2016-06.io.spdk:c1",
                        "-q", "32", "-o", "64k", "-w", "randrw", "-M", "70", "-t", "5", "-c", "0x3",
                        "--hdgst", "--ddgst", "--ns", "2", "--verify", "--no-busy-poll"};
  std::string help;
  auto options = ParsePerfArgs(static_cast<int>(std::size(argv)), argv, &help);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->trid.traddr, "127.0.0.1");
  EXPECT_EQ(options->queue_depth, 32u);
  EXPECT_EQ(options->io_size, 65536u);
  EXPECT_EQ(options->workload, Workload::kRandRw);
  EXPECT_EQ(options->read_percent, 70);
  EXPECT_EQ(options->seconds, 5);
  EXPECT_EQ(options->cpumask, "0x3");
  EXPECT_TRUE(options->hdgst && options->ddgst && options->verify);
  EXPECT_FALSE(options->busy_poll);
  EXPECT_EQ(options->nsid, 2u);

  const char* bad_mix[] = {"smad-perf", "-r", "traddr:1.2.3.4", "-q", "1", "-o", "4k", "-w", "read", "-M", "50",
                           "-t", "1"};
  auto mix = ParsePerfArgs(static_cast<int>(std::size(bad_mix)), bad_mix, &help);
  EXPECT_THAT(std::string(mix.status().message()), HasSubstr("-M"));
  const char* bad_size[] = {"smad-perf", "-r", "traddr:1.2.3.4", "-q", "1", "-o", "4q", "-w", "read", "-t", "1"};
  EXPECT_THAT(std::string(ParsePerfArgs(static_cast<int>(std::size(bad_size)), bad_size, &help).status().message()),
              HasSubstr("-o"));
  const char* missing[] = {"smad-perf", "-q", "1"};
  EXPECT_FALSE(ParsePerfArgs(static_cast<int>(std::size(missing)), missing, &help).ok());
  const char* help_args[] = {"smad-perf", "--help"};
  auto h = ParsePerfArgs(2, help_args, &help);
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->help);
  EXPECT_THAT(help, HasSubstr("--queue-depth"));
}

TEST(HostToolsTest, PerfRunsAgainstFakeWithVerify) {
  nvme::testing::FakeController::Config config;
  config.ioccsz = (4096 + 64) / 16;
  nvme::testing::FakeController fake(config);
  const std::string trid = "trtype:tcp traddr:127.0.0.1 trsvcid:" + fake.port() +
                           " subnqn:nqn.2016-06.io.spdk:cnode1 hostnqn:nqn.2014-08.org.nvmexpress:uuid:"
                           "2b3c4d5e-0000-4000-8000-00000000abcd";
  const char* argv[] = {"smad-perf", "-r", trid.c_str(), "-q", "4", "-o", "4k", "-w", "randrw", "-t", "0.3",
                        "--verify", "--no-busy-poll"};
  std::string help;
  auto options = ParsePerfArgs(static_cast<int>(std::size(argv)), argv, &help);
  ASSERT_TRUE(options.ok()) << options.status();
  std::ostringstream log;
  auto result = RunPerf(*options, log);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->cores.size(), 1u);
  EXPECT_GT(result->total.ios, 10u);
  EXPECT_EQ(result->total.errors, 0u) << result->first_error;
  EXPECT_EQ(result->total.verify_failures, 0u) << result->first_error;
  EXPECT_GT(result->total.reads, 0u);
  EXPECT_GT(result->total.writes, 0u);
  EXPECT_THAT(log.str(), HasSubstr("with lcore 0"));
  std::string report = FormatPerfReport(*options, *result);
  EXPECT_THAT(report, HasSubstr("Total"));
  EXPECT_THAT(report, HasSubstr("{\"tool\":\"smad-perf\",\"workload\":\"randrw\""));
  EXPECT_THAT(report, HasSubstr("\"verify_failures\":0}"));
}

TEST(HostToolsTest, PerfRejectsIoSizeNotMultipleOfBlockSize) {
  nvme::testing::FakeController::Config config;
  config.block_size = 4096;
  config.blocks = 256;
  nvme::testing::FakeController fake(config);
  PerfOptions options;
  auto trid = nvme::host::ParseTransportId("traddr:127.0.0.1 trsvcid:" + fake.port() +
                                           " subnqn:nqn.2016-06.io.spdk:cnode1 hostnqn:nqn.2014-08.org.nvmexpress:"
                                           "uuid:2b3c4d5e-0000-4000-8000-00000000abcd");
  ASSERT_TRUE(trid.ok());
  options.trid = *trid;
  options.queue_depth = 1;
  options.io_size = 512;
  options.seconds = 0.1;
  options.busy_poll = false;
  std::ostringstream log;
  auto result = RunPerf(options, log);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("block size 4096"));
}

TEST(HostToolsTest, IdentifyReportsControllerAndNamespaces) {
  nvme::testing::FakeController fake(nvme::testing::FakeController::Config{});
  const std::string trid = "trtype:tcp traddr:127.0.0.1 trsvcid:" + fake.port() +
                           " subnqn:nqn.2016-06.io.spdk:cnode1 hostnqn:nqn.2014-08.org.nvmexpress:uuid:"
                           "2b3c4d5e-0000-4000-8000-00000000abcd";
  const char* argv[] = {"smad-identify", trid.c_str(), "--hdgst"};
  std::string help;
  auto options = ParseIdentifyArgs(3, argv, &help);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->hdgst);
  std::ostringstream out;
  ASSERT_TRUE(RunIdentify(*options, out).ok());
  std::string report = out.str();
  EXPECT_THAT(report, HasSubstr("Serial Number:"));
  EXPECT_THAT(report, HasSubstr("FAKE0001"));
  EXPECT_THAT(report, HasSubstr("Max Data Transfer Size:                 131072"));
  EXPECT_THAT(report, HasSubstr("Namespace ID:                           1"));
  EXPECT_THAT(report, HasSubstr("10111213-1415-1617-1819-1a1b1c1d1e1f"));
  EXPECT_THAT(report, HasSubstr("A0A1A2A3A4A5A6A7A8A9AAABACADAEAF"));
  EXPECT_TRUE(fake.saw_shutdown());
}

TEST(HostToolsTest, IdentifyReportsConnectFailure) {
  nvme::testing::FakeController::Config config;
  config.connect_status = nvme::Specific(nvme::sc_specific::kConnectInvalidHost);
  nvme::testing::FakeController fake(config);
  IdentifyOptions options;
  auto trid = nvme::host::ParseTransportId("traddr:127.0.0.1 trsvcid:" + fake.port() +
                                           " subnqn:nqn.2016-06.io.spdk:cnode1");
  ASSERT_TRUE(trid.ok());
  options.trid = *trid;
  std::ostringstream out;
  absl::Status s = RunIdentify(options, out);
  EXPECT_THAT(std::string(s.message()), HasSubstr("cannot connect to TCP 127.0.0.1:"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("SCT 1 SC 0x84 (connect invalid host)"));
}

}  // namespace
}  // namespace smad::tools
