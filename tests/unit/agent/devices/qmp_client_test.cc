#include "agent/devices/qmp_client.h"

#include <chrono>
#include <string>

#include "agent/devices/qemu_device.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/net.h"
#include "unit/agent/devices/fakes.h"

namespace smad::agent {
namespace {

using namespace std::chrono_literals;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::FakeQemu;

QmpOptions OptionsFor(const FakeQemu& qemu, std::chrono::milliseconds timeout = 5s) {
  QmpOptions options;
  options.port = qemu.port();
  options.timeout = timeout;
  return options;
}

// ---- parsing ----------------------------------------------------------------------------------------

TEST(QmpLineReaderTest, SplitsLinesAcrossChunksAndDropsCarriageReturns) {
  QmpLineReader reader(100);
  reader.Append("{\"a\":", 5);
  auto none = reader.NextLine();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  reader.Append("1}\r\n{\"b\":2}\n\r\n", 15);
  EXPECT_EQ(reader.NextLine()->value(), "{\"a\":1}");
  EXPECT_EQ(reader.NextLine()->value(), "{\"b\":2}");
  EXPECT_EQ(reader.NextLine()->value(), "");
  EXPECT_FALSE(reader.NextLine()->has_value());
}

TEST(QmpLineReaderTest, BoundsTheLineLengthAndStaysFailed) {
  QmpLineReader reader(8);
  reader.Append("12345678\r\n", 10);
  EXPECT_EQ(reader.NextLine()->value(), "12345678");  // exactly the limit
  reader.Append("1234567890", 10);
  auto line = reader.NextLine();
  EXPECT_EQ(line.status().code(), absl::StatusCode::kDataLoss);
  reader.Append("\n", 1);
  EXPECT_EQ(reader.NextLine().status().code(), absl::StatusCode::kDataLoss);
}

TEST(QmpParseTest, ClassifiesMessages) {
  auto greeting = ParseQmpMessage(R"({"QMP": {"version": {}, "capabilities": []}})");
  ASSERT_TRUE(greeting.ok());
  EXPECT_EQ(greeting->kind, QmpMessage::Kind::kGreeting);

  auto ret = ParseQmpMessage(R"({"return": [1], "id": "7"})");
  ASSERT_TRUE(ret.ok());
  EXPECT_EQ(ret->kind, QmpMessage::Kind::kReturn);
  EXPECT_EQ(ret->id, Json("7"));
  EXPECT_EQ(ret->value, Json::array({1}));

  auto error = ParseQmpMessage(R"({"error": {"class": "GenericError", "desc": "boom"}, "id": "8"})");
  ASSERT_TRUE(error.ok());
  EXPECT_EQ(error->kind, QmpMessage::Kind::kError);
  EXPECT_EQ(error->error_class, "GenericError");
  EXPECT_EQ(error->error_desc, "boom");

  auto sparse = ParseQmpMessage(R"({"error": {}})");
  ASSERT_TRUE(sparse.ok());
  EXPECT_EQ(sparse->error_class, "Undefined");
  EXPECT_EQ(sparse->error_desc, "Unknown");
  EXPECT_TRUE(sparse->id.is_null());

  auto event = ParseQmpMessage(R"({"event": "DEVICE_DELETED", "data": {"device": "sma-0"}, "timestamp": {}})");
  ASSERT_TRUE(event.ok());
  EXPECT_EQ(event->kind, QmpMessage::Kind::kEvent);
  EXPECT_EQ(event->event, "DEVICE_DELETED");

  auto other = ParseQmpMessage(R"({"something": 1})");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->kind, QmpMessage::Kind::kOther);
}

TEST(QmpParseTest, RejectsGarbageWithDataLoss) {
  for (const char* line : {"", "not json", "[1,2]", "\"text\"", "{\"return\": 1", R"({"error": "x"})",
                           R"({"event": 5})", R"({"event": "X", "data": [1]})", "\xff\xfe"}) {
    EXPECT_EQ(ParseQmpMessage(line).status().code(), absl::StatusCode::kDataLoss) << line;
  }
}

TEST(QmpParseTest, EventMatchingIsCaseInsensitiveOnTheNameAndASubsetOnTheData) {
  auto event = ParseQmpMessage(R"({"event": "DEVICE_DELETED", "data": {"device": "sma-0", "path": "/p"}})");
  ASSERT_TRUE(event.ok());
  EXPECT_TRUE(QmpEventMatches(*event, "device_deleted", Json{{"device", "sma-0"}}));
  EXPECT_TRUE(QmpEventMatches(*event, "DEVICE_DELETED", Json()));
  EXPECT_TRUE(QmpEventMatches(*event, "DEVICE_DELETED", Json::object()));
  EXPECT_FALSE(QmpEventMatches(*event, "DEVICE_DELETED", Json{{"device", "sma-1"}}));
  EXPECT_FALSE(QmpEventMatches(*event, "DEVICE_DELETED", Json{{"device", "sma-0"}, {"extra", 1}}));
  EXPECT_FALSE(QmpEventMatches(*event, "RESET", Json()));
  auto no_data = ParseQmpMessage(R"({"event": "DEVICE_DELETED"})");
  ASSERT_TRUE(no_data.ok());
  EXPECT_FALSE(QmpEventMatches(*no_data, "DEVICE_DELETED", Json{{"device", "sma-0"}}));
}

TEST(QmpParseTest, FindsPciDevicesRecursivelyOrOneLevelBelowBridges) {
  Json pci = Json::parse(R"([{"bus": 0, "devices": [
      {"qdev_id": "on-root"},
      {"qdev_id": "pci.spdk.0", "pci_bridge": {"devices": [
          {"qdev_id": "sma-0"},
          {"qdev_id": "nested-bridge", "pci_bridge": {"devices": [{"qdev_id": "vfiouser-7"}]}}]}},
      {"qdev_id": "broken", "pci_bridge": 5}, 7]}, "junk"])");
  for (bool recursive : {true, false}) {
    const Json* found = FindPciDevice(pci, "sma-0", recursive);
    ASSERT_NE(found, nullptr);
    EXPECT_EQ((*found)["qdev_id"], "sma-0");
  }
  EXPECT_NE(FindPciDevice(pci, "vfiouser-7", true), nullptr);
  EXPECT_EQ(FindPciDevice(pci, "vfiouser-7", false), nullptr);  // two bridges deep
  EXPECT_NE(FindPciDevice(pci, "on-root", true), nullptr);
  EXPECT_EQ(FindPciDevice(pci, "on-root", false), nullptr);  // not behind a bridge
  EXPECT_EQ(FindPciDevice(pci, "absent", true), nullptr);
  EXPECT_EQ(FindPciDevice(Json("x"), "sma-0", true), nullptr);
}

TEST(QmpParseTest, RecursiveSearchIsBounded) {
  Json devices = Json::array({{{"qdev_id", "deep"}}});
  for (int i = 0; i < 100; ++i) {
    devices = Json::array({{{"qdev_id", "b" + std::to_string(i)}, {"pci_bridge", {{"devices", devices}}}}});
  }
  Json pci = Json::array({{{"bus", 0}, {"devices", devices}}});
  EXPECT_EQ(FindPciDevice(pci, "deep", true), nullptr);  // beyond kMaxPciDepth bridges
  EXPECT_NE(FindPciDevice(pci, "b90", true), nullptr);
}

TEST(QmpParseTest, ErrorStatusCarriesClassAndDesc) {
  absl::Status status = QmpErrorStatus("device_add", "GenericError", "Duplicate device ID 'x'");
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(status.message(), "device_add: Duplicate device ID 'x' (GenericError)");
  auto error = QmpErrorOf(status);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->error_class, "GenericError");
  EXPECT_EQ(error->desc, "Duplicate device ID 'x'");
  EXPECT_EQ(QmpErrorStatus("device_del", "DeviceNotFound", "x").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(QmpErrorStatus("foo", "CommandNotFound", "x").code(), absl::StatusCode::kUnimplemented);
  EXPECT_FALSE(QmpErrorOf(absl::InternalError("x")).has_value());
}

// ---- the client against a fake QEMU ------------------------------------------------------------------

TEST(QmpClientTest, NegotiatesAndSendsCommandsWithIncreasingIds) {
  FakeQemu qemu;
  auto client = QmpClient::Connect(OptionsFor(qemu));
  ASSERT_TRUE(client.ok()) << client.status();
  auto pci = (*client)->Execute("query-pci");
  ASSERT_TRUE(pci.ok()) << pci.status();
  EXPECT_NE(FindPciDevice(*pci, "pci.spdk.1", true), nullptr);
  ASSERT_TRUE((*client)->Execute("chardev-add", Json{{"id", "c0"},
                                                     {"backend", {{"type", "socket"},
                                                                  {"data", {{"addr", {{"type", "unix"}, {"data", {{"path", "/p"}}}}},
                                                                            {"server", false}}}}}})
                  .ok());
  std::vector<std::string> lines = qemu.RawLines();
  ASSERT_EQ(lines.size(), 3u);
  // "\r\n"-terminated; no "arguments" when empty.
  EXPECT_EQ(lines[0], R"({"execute":"qmp_capabilities","id":"1"})" "\r");
  EXPECT_EQ(lines[1], R"({"execute":"query-pci","id":"2"})" "\r");
  EXPECT_THAT(lines[2], StartsWith(R"({"arguments":{"backend":)"));
  EXPECT_THAT(lines[2], HasSubstr(R"("execute":"chardev-add","id":"3"})" "\r"));
  EXPECT_TRUE(qemu.HasChardev("c0"));
}

TEST(QmpClientTest, ReturnsTheReplyValue) {
  FakeQemu qemu;
  qemu.RawReply("query-status", R"({"return": {"status": "running"}, "id": {id}})");
  auto client = QmpClient::Connect(OptionsFor(qemu));
  ASSERT_TRUE(client.ok()) << client.status();
  auto status = (*client)->Execute("query-status");
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(*status, Json({{"status", "running"}}));
}

TEST(QmpClientTest, ErrorRepliesBecomeStatusesAndKeepTheConnection) {
  FakeQemu qemu;
  auto client = QmpClient::Connect(OptionsFor(qemu));
  ASSERT_TRUE(client.ok()) << client.status();
  auto failed = (*client)->Execute("device_add", Json{{"id", "x"}, {"bus", "no-such-bus"}, {"addr", "0x1"}});
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr("Bus 'no-such-bus' not found (GenericError)"));
  ASSERT_TRUE(QmpErrorOf(failed.status()).has_value());
  EXPECT_EQ(QmpErrorOf(failed.status())->error_class, "GenericError");
  auto unknown = (*client)->Execute("no-such-command");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_TRUE((*client)->Execute("query-pci").ok());  // still usable
}

TEST(QmpClientTest, SkipsEventsWhileWaitingForAReply) {
  FakeQemu qemu;
  qemu.SetNoiseEvents(true);
  auto client = QmpClient::Connect(OptionsFor(qemu));
  ASSERT_TRUE(client.ok()) << client.status();
  auto chardevs = (*client)->Execute("query-chardev");
  ASSERT_TRUE(chardevs.ok()) << chardevs.status();
  EXPECT_TRUE(HasChardev(*chardevs, "compat_monitor0"));
}

TEST(QmpClientTest, WaitsForTheMatchingEvent) {
  for (bool before : {false, true}) {
    FakeQemu qemu;
    qemu.SetEventBeforeReply(before);
    auto client = QmpClient::Connect(OptionsFor(qemu));
    ASSERT_TRUE(client.ok()) << client.status();
    ASSERT_TRUE((*client)->Execute("device_add", Json{{"id", "d0"}, {"bus", "pci.spdk.0"}, {"addr", "0x0"}, {"driver", "x"}}).ok());
    // The fake first sends DEVICE_DELETED for the backend path, then for another device, then ours.
    auto event = (*client)->ExecuteAndWait("device_del", Json{{"id", "d0"}},
                                           QmpEventFilter{"device_deleted", Json{{"device", "d0"}}});
    ASSERT_TRUE(event.ok()) << event.status();
    EXPECT_EQ((*event)["device"], "d0");
    EXPECT_EQ((*event)["path"], "/machine/peripheral/d0");
  }
}

TEST(QmpClientTest, EventWaitTimesOutWhenTheGuestDoesNotReleaseTheDevice) {
  FakeQemu qemu;
  qemu.SetGuestReleasesDevices(false);
  auto client = QmpClient::Connect(OptionsFor(qemu, 300ms));
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Execute("device_add", Json{{"id", "d0"}, {"bus", "pci.spdk.0"}, {"addr", "0x0"}}).ok());
  auto start = std::chrono::steady_clock::now();
  auto event = (*client)->ExecuteAndWait("device_del", Json{{"id", "d0"}},
                                         QmpEventFilter{"DEVICE_DELETED", Json{{"device", "d0"}}});
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(event.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(event.status().message()), HasSubstr("waiting for event DEVICE_DELETED"));
  EXPECT_LT(elapsed, 3s);
  EXPECT_EQ((*client)->Execute("query-pci").status().code(), absl::StatusCode::kDeadlineExceeded);  // broken
}

TEST(QmpClientTest, ErrorReplyEndsAnEventWait) {
  FakeQemu qemu;
  auto client = QmpClient::Connect(OptionsFor(qemu));
  ASSERT_TRUE(client.ok()) << client.status();
  auto event = (*client)->ExecuteAndWait("device_del", Json{{"id", "absent"}},
                                         QmpEventFilter{"DEVICE_DELETED", Json{{"device", "absent"}}});
  EXPECT_EQ(event.status().code(), absl::StatusCode::kNotFound);  // DeviceNotFound
}

TEST(QmpClientTest, ASilentPeerTimesOut) {
  FakeQemu qemu;
  qemu.SilenceCommand("query-pci");
  auto client = QmpClient::Connect(OptionsFor(qemu, 200ms));
  ASSERT_TRUE(client.ok()) << client.status();
  auto start = std::chrono::steady_clock::now();
  auto pci = (*client)->Execute("query-pci");
  EXPECT_EQ(pci.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  EXPECT_THAT(std::string(pci.status().message()), StartsWith("QMP 127.0.0.1:"));
}

TEST(QmpClientTest, NoGreetingTimesOut) {
  FakeQemu qemu;
  qemu.SetGreeting(std::nullopt);
  auto start = std::chrono::steady_clock::now();
  auto client = QmpClient::Connect(OptionsFor(qemu, 200ms));
  EXPECT_EQ(client.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

TEST(QmpClientTest, ABadGreetingIsAProtocolError) {
  for (const char* greeting : {R"({"hello": 1})", "garbage", R"({"return": {}})"}) {
    FakeQemu qemu;
    qemu.SetGreeting(greeting);
    auto client = QmpClient::Connect(OptionsFor(qemu));
    EXPECT_EQ(client.status().code(), absl::StatusCode::kDataLoss) << greeting;
  }
}

TEST(QmpClientTest, GarbageRepliesAreProtocolErrors) {
  struct Case {
    const char* reply;
    absl::StatusCode code;
  };
  for (const Case& c : {Case{"this is not json", absl::StatusCode::kDataLoss},
                        Case{R"({"return": {}, "id": "999"})", absl::StatusCode::kDataLoss},
                        Case{R"({"return": {}})", absl::StatusCode::kDataLoss},
                        Case{R"({"QMP": {}})", absl::StatusCode::kDataLoss},
                        Case{R"({"error": {"class": "GenericError", "desc": "parse"}})", absl::StatusCode::kInternal}}) {
    FakeQemu qemu;
    qemu.RawReply("query-pci", c.reply);
    auto client = QmpClient::Connect(OptionsFor(qemu));
    ASSERT_TRUE(client.ok()) << client.status();
    EXPECT_EQ((*client)->Execute("query-pci").status().code(), c.code) << c.reply;
  }
}

TEST(QmpClientTest, OverlongLinesAreProtocolErrors) {
  FakeQemu qemu;
  qemu.RawReply("query-pci", R"({"return": ")" + std::string(5000, 'x') + R"(", "id": {id}})");
  QmpOptions options = OptionsFor(qemu);
  options.max_line = 1024;
  auto client = QmpClient::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  auto pci = (*client)->Execute("query-pci");
  EXPECT_EQ(pci.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(pci.status().message()), HasSubstr("longer than 1024 bytes"));
}

TEST(QmpClientTest, AClosedConnectionIsUnavailable) {
  FakeQemu qemu;
  qemu.CloseOnCommand("query-pci");
  auto client = QmpClient::Connect(OptionsFor(qemu));
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->Execute("query-pci").status().code(), absl::StatusCode::kUnavailable);
}

TEST(QmpClientTest, NobodyListeningIsUnavailable) {
  QmpOptions options;
  options.port = static_cast<uint16_t>(std::stoi(smad::testing::FreeTcpPort()));
  options.timeout = 1s;
  auto client = QmpClient::Connect(options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(client.status().message()), HasSubstr("connect"));
}

TEST(QmpClientTest, RejectsAddressesThatNeedNameResolution) {
  QmpOptions options;
  options.address = "qemu.example.com";
  options.port = 1;
  EXPECT_EQ(QmpClient::Connect(options).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- shared config helpers ---------------------------------------------------------------------------

TEST(QemuDeviceConfigTest, Defaults) {
  auto config = ParseQemuDeviceConfig(Json{{"qmp_port", 9090}}, 14, "test");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->buses.empty());
  EXPECT_EQ(config->qmp.address, "127.0.0.1");
  EXPECT_EQ(config->qmp.port, 9090);
  EXPECT_EQ(config->qmp.timeout, 8s);
  EXPECT_EQ(config->sock_path, "/var/tmp");
  auto full = ParseQemuDeviceConfig(Json::parse(R"({"buses": [{"name": "pci.spdk.0"}, {"name": "b1", "count": 4}],
      "qmp_addr": "::1", "qmp_port": 10005, "sock_path": "/run/sma//", "qmp_timeout": 0.5})"),
                                    14, "test");
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_EQ(full->buses.size(), 2u);
  EXPECT_EQ(full->buses[0].count, 32u);
  EXPECT_EQ(full->buses[1].count, 4u);
  EXPECT_EQ(full->qmp.address, "::1");
  EXPECT_EQ(full->qmp.timeout, 500ms);
  EXPECT_EQ(full->sock_path, "/run/sma");
}

TEST(QemuDeviceConfigTest, ErrorsNameTheKey) {
  struct Case {
    const char* params;
    const char* message;
  };
  for (const Case& c : {
           Case{"null", "params: missing (buses, qmp_port...)"},
           Case{"[]", "params: must be a mapping"},
           Case{R"({"buses": []})", "qmp_port: missing"},
           Case{R"({"qmp_port": 0})", "qmp_port: must be a port number 1-65535"},
           Case{R"({"qmp_port": 70000})", "qmp_port: must be a port number 1-65535"},
           Case{R"({"qmp_port": "9090"})", "qmp_port: must be a port number 1-65535"},
           Case{R"({"qmp_port": 1, "qmp_addr": "qemu.local"})", "qmp_addr: must be an IPv4 or IPv6 address"},
           Case{R"({"qmp_port": 1, "buses": {}})", "buses: must be a list"},
           Case{R"({"qmp_port": 1, "buses": [{"name": "a"}, {"name": "a"}]})", "buses[1].name: duplicate"},
           Case{R"({"qmp_port": 1, "buses": [{"count": 3}]})", "buses[0].name: missing"},
           Case{R"({"qmp_port": 1, "buses": [{"name": "a", "count": -1}]})", "buses[0].count: must not be negative"},
           Case{R"({"qmp_port": 1, "buses": [{"name": "a", "count": 33}]})", "buses[0].count: at most 32"},
           Case{R"({"qmp_port": 1, "buses": [{"name": "a", "count": "x"}]})", "buses[0].count: must be an integer"},
           Case{R"({"qmp_port": 1, "buses": [{"name": "../a"}]})", "buses[0].name: must be a QEMU device id"},
           Case{R"({"qmp_port": 1, "buses": ["a"]})", "buses[0]: must be a mapping"},
           Case{R"({"qmp_port": 1, "sock_path": "relative"})", "sock_path: must be an absolute path"},
           Case{R"({"qmp_port": 1, "qmp_timeout": 0})", "qmp_timeout: must be a number of seconds"},
       }) {
    auto config = ParseQemuDeviceConfig(Json::parse(c.params), 14, "test");
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << c.params;
    EXPECT_THAT(std::string(config.status().message()), StartsWith(c.message)) << c.params;
  }
  auto long_path = ParseQemuDeviceConfig(Json{{"qmp_port", 1}, {"sock_path", "/" + std::string(100, 'a')}}, 14, "t");
  EXPECT_THAT(std::string(long_path.status().message()), StartsWith("sock_path: too long"));
}

TEST(QemuDeviceConfigTest, PlacesPhysicalIdsOnTheBusesInOrder) {
  std::vector<PciBus> buses = {{"pci.spdk.0", 32}, {"pci.spdk.1", 32}};
  auto first = PlacePhysicalId(buses, 0);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->bus, "pci.spdk.0");
  EXPECT_EQ(first->Addr(), "0x0");
  auto p42 = PlacePhysicalId(buses, 42);
  ASSERT_TRUE(p42.ok());
  EXPECT_EQ(p42->bus, "pci.spdk.1");
  EXPECT_EQ(p42->Addr(), "0xa");
  EXPECT_EQ(PlacePhysicalId(buses, 63)->Addr(), "0x1f");
  EXPECT_EQ(PlacePhysicalId(buses, 64).status(), absl::InvalidArgumentError("Invalid physical_id"));
  EXPECT_EQ(PlacePhysicalId({{"empty", 0}, {"b", 1}}, 0)->bus, "b");
  EXPECT_FALSE(PlacePhysicalId({}, 0).ok());
  EXPECT_FALSE(PlacePhysicalId(buses, UINT32_MAX).ok());
}

TEST(QemuDeviceConfigTest, HandleNumbersAreStrictDecimals) {
  EXPECT_EQ(ParseHandleNumber("p-0", "p-"), 0u);
  EXPECT_EQ(ParseHandleNumber("p-42", "p-"), 42u);
  EXPECT_EQ(ParseHandleNumber("p-4294967295", "p-"), 4294967295u);
  for (const char* bad : {"p-", "p-01", "p-+1", "p--1", "p-4294967296", "p-99999999999", "p-1 ", " p-1", "p-1/../x",
                          "p-../victim", "p-0x1", "P-1", "p-1\n"}) {
    EXPECT_FALSE(ParseHandleNumber(bad, "p-").has_value()) << bad;
  }
}

}  // namespace
}  // namespace smad::agent
