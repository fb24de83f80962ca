// SPDK SMA conformance, against real processes: smad (gRPC) with its embedded smad-tgt. Follows the
// checklist of shared/spec/sma.md section 4 for nvmf_tcp (4.1), QoS (4.5) and the extra points (4.8),
// then checks what smad does better than the reference (section 6): idempotent retries keep the device,
// failed creates leave nothing, bad input changes nothing.

#include <gtest/gtest.h>

#include <limits>

#include "absl/strings/str_cat.h"
#include "support/net.h"
#include "support/sma_helpers.h"
#include "support/smad_process.h"
#include "support/temp_dir.h"

namespace smad::testing {
namespace {

constexpr char kCnode0[] = "nqn.2016-06.io.spdk:cnode0";
constexpr char kCnode1[] = "nqn.2016-06.io.spdk:cnode1";
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

class SmaConformanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    smad_ = std::make_unique<SmadProcess>(dir_.path());
    SmadProcess::Options options;
    options.config_yaml = "devices:\n  - name: nvmf_tcp\n";
    ASSERT_TRUE(smad_->Start(options).ok()) << smad_->ReadLog();
    client_ = std::make_unique<SmaClient>(smad_->Stub());
    tgt_ = std::make_unique<TargetView>(smad_->tgt_socket());
    port_ = FreeTcpPort();
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

  TempDir dir_;
  std::unique_ptr<SmadProcess> smad_;
  std::unique_ptr<SmaClient> client_;
  std::unique_ptr<TargetView> tgt_;
  std::string port_;
};

TEST_F(SmaConformanceTest, NvmfTcpChecklist) {
  // 1: the TCP transport was created at start.
  auto transports = tgt_->Call("nvmf_get_transports", {{"trtype", "tcp"}});
  ASSERT_TRUE(transports.ok()) << transports.status();
  // 3-5: create two devices, repeat both: same handles, still 3 subsystems (with discovery).
  auto dev0 = client_->CreateDevice(NvmfTcpDevice(kCnode0, port_));
  ASSERT_TRUE(dev0.ok()) << dev0.status();
  EXPECT_EQ(*dev0, absl::StrCat("nvmf-tcp:", kCnode0));
  auto dev1 = client_->CreateDevice(NvmfTcpDevice(kCnode1, port_));
  ASSERT_TRUE(dev1.ok()) << dev1.status();
  EXPECT_NE(*dev0, *dev1);
  EXPECT_EQ(tgt_->Subsystems().size(), 2u);
  EXPECT_EQ(client_->CreateDevice(NvmfTcpDevice(kCnode0, port_)).value_or(""), *dev0);
  EXPECT_EQ(client_->CreateDevice(NvmfTcpDevice(kCnode1, port_)).value_or(""), *dev1);
  EXPECT_EQ(tgt_->Subsystems().size(), 2u);
  // 6-8: delete both, and again.
  EXPECT_TRUE(client_->DeleteDevice(*dev0).ok());
  EXPECT_FALSE(tgt_->HasSubsystem(kCnode0));
  EXPECT_EQ(tgt_->Subsystems().size(), 1u);
  EXPECT_TRUE(client_->DeleteDevice(*dev1).ok());
  EXPECT_EQ(tgt_->Subsystems().size(), 0u);
  EXPECT_TRUE(client_->DeleteDevice(*dev0).ok());
  EXPECT_TRUE(client_->DeleteDevice(*dev1).ok());
  // 9-13: attach a null bdev's UUID to cnode0, repeat, detach, repeat.
  std::string uuid = NullBdev("null0");
  ASSERT_FALSE(uuid.empty());
  ASSERT_TRUE(client_->CreateDevice(NvmfTcpDevice(kCnode0, port_)).ok());
  ASSERT_TRUE(client_->CreateDevice(NvmfTcpDevice(kCnode1, port_)).ok());
  ASSERT_TRUE(client_->AttachVolume(*dev0, uuid).ok());
  auto ns = tgt_->Namespaces(kCnode0);
  ASSERT_EQ(ns.size(), 1u);
  EXPECT_EQ(ns[0]["uuid"], uuid);
  EXPECT_EQ(tgt_->Namespaces(kCnode1).size(), 0u);
  EXPECT_TRUE(client_->AttachVolume(*dev0, uuid).ok());
  EXPECT_EQ(tgt_->Namespaces(kCnode0).size(), 1u);
  EXPECT_TRUE(client_->DetachVolume(*dev0, uuid).ok());
  EXPECT_EQ(tgt_->Namespaces(kCnode0).size(), 0u);
  EXPECT_EQ(tgt_->Namespaces(kCnode1).size(), 0u);
  EXPECT_TRUE(client_->DetachVolume(*dev0, uuid).ok());
}

TEST_F(SmaConformanceTest, QosChecklist) {
  std::string uuid = NullBdev("null0");
  sma::CreateDeviceRequest create = NvmfTcpDevice(kCnode0, port_);
  create.mutable_volume()->set_volume_id(UuidBytes(uuid));
  auto handle = client_->CreateDevice(create);
  ASSERT_TRUE(handle.ok()) << handle.status();

  // 1-2: capabilities.
  auto caps = client_->GetQosCapabilities(3);
  ASSERT_TRUE(caps.ok());
  EXPECT_FALSE(caps->has_max_device_caps());
  EXPECT_TRUE(caps->max_volume_caps().rw_iops() && caps->max_volume_caps().rd_bandwidth() &&
              caps->max_volume_caps().wr_bandwidth() && caps->max_volume_caps().rw_bandwidth());
  EXPECT_FALSE(caps->max_volume_caps().rd_iops() || caps->max_volume_caps().wr_iops());
  EXPECT_EQ(client_->GetQosCapabilities(1234).status().code(), absl::StatusCode::kInvalidArgument);

  auto qos = [&](std::initializer_list<std::pair<const char*, uint64_t>> limits, std::string handle_override = "",
                 std::optional<std::string> volume = std::nullopt) {
    sma::SetQosRequest request;
    request.set_device_handle(handle_override.empty() ? *handle : handle_override);
    request.set_volume_id(volume ? *volume : UuidBytes(uuid));
    auto* m = request.mutable_maximum();
    for (auto [name, value] : limits) {
      std::string n = name;
      if (n == "rd_iops") m->set_rd_iops(value);
      if (n == "wr_iops") m->set_wr_iops(value);
      if (n == "rw_iops") m->set_rw_iops(value);
      if (n == "rd_bandwidth") m->set_rd_bandwidth(value);
      if (n == "wr_bandwidth") m->set_wr_bandwidth(value);
      if (n == "rw_bandwidth") m->set_rw_bandwidth(value);
    }
    return client_->SetQos(request);
  };
  auto expect_limits = [&](uint64_t rw_ios, uint64_t rw_mb, uint64_t r_mb, uint64_t w_mb) {
    Json l = Limits("null0");
    EXPECT_EQ(l.value("rw_ios_per_sec", 0ull), rw_ios) << l;
    EXPECT_EQ(l.value("rw_mbytes_per_sec", 0ull), rw_mb) << l;
    EXPECT_EQ(l.value("r_mbytes_per_sec", 0ull), r_mb) << l;
    EXPECT_EQ(l.value("w_mbytes_per_sec", 0ull), w_mb) << l;
  };
  // 3-5.
  ASSERT_TRUE(qos({{"rw_iops", 1}}).ok());
  expect_limits(1000, 0, 0, 0);
  ASSERT_TRUE(qos({{"rw_iops", 2}, {"rd_bandwidth", 8}}).ok());
  expect_limits(2000, 0, 8, 0);
  ASSERT_TRUE(qos({{"rw_iops", kMax}, {"rd_bandwidth", kMax}, {"rw_bandwidth", 6}}).ok());
  expect_limits(2000, 6, 8, 0);
  // 6-11: refused, with the reference's codes and messages.
  auto refused = qos({{"rw_iops", kMax}, {"rd_bandwidth", kMax}, {"rw_bandwidth", kMax}, {"rd_iops", 1}});
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.message(), "Unsupported QoS limit: maximum.rd_iops");
  refused = qos({{"rw_iops", kMax}, {"rd_bandwidth", kMax}, {"rw_bandwidth", kMax}, {"wr_iops", 1}});
  EXPECT_EQ(refused.message(), "Unsupported QoS limit: maximum.wr_iops");
  refused = qos({{"rw_iops", 1}}, *handle + "-invalid");
  EXPECT_EQ(refused.code(), absl::StatusCode::kNotFound) << refused;
  refused = qos({{"rw_iops", 1}}, "", UuidBytes(RandomUuid()));
  EXPECT_EQ(refused.code(), absl::StatusCode::kNotFound) << refused;
  refused = qos({{"rw_iops", 1}}, "", std::string());
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
  sma::SetQosRequest no_handle;
  no_handle.set_volume_id(UuidBytes(uuid));
  no_handle.mutable_maximum()->set_rw_iops(1);
  EXPECT_EQ(client_->SetQos(no_handle).code(), absl::StatusCode::kNotFound);
  // 12: unchanged.
  expect_limits(2000, 6, 8, 0);
  // Without `maximum` every limit resets (as in the reference).
  sma::SetQosRequest reset;
  reset.set_device_handle(*handle);
  reset.set_volume_id(UuidBytes(uuid));
  ASSERT_TRUE(client_->SetQos(reset).ok());
  expect_limits(0, 0, 0, 0);
}

TEST_F(SmaConformanceTest, ExtraConformancePoints) {
  std::string uuid = NullBdev("null0");
  auto handle = client_->CreateDevice(NvmfTcpDevice(kCnode0, port_));
  ASSERT_TRUE(handle.ok());
  auto handle1 = client_->CreateDevice(NvmfTcpDevice(kCnode1, port_));
  ASSERT_TRUE(handle1.ok());

  EXPECT_EQ(client_->CreateDevice(sma::CreateDeviceRequest()).status().message(), "Unsupported device type");
  sma::CreateDeviceRequest nvme;
  nvme.mutable_nvme();
  EXPECT_EQ(client_->CreateDevice(nvme).status().code(), absl::StatusCode::kInvalidArgument);

  sma::AttachVolumeRequest no_volume;
  no_volume.set_device_handle(*handle);
  auto status = client_->AttachVolume(no_volume);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "Missing required field: volume");
  for (std::string bad : {std::string(), std::string("abc"), std::string(8, 'x'), std::string(17, 'x')}) {
    sma::AttachVolumeRequest request;
    request.set_device_handle(*handle);
    request.mutable_volume()->set_volume_id(bad);
    status = client_->AttachVolume(request);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(status.message(), "Invalid volume ID");
  }
  EXPECT_EQ(client_->AttachVolume("foo:bar", uuid).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->DetachVolume("foo:bar", uuid).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->AttachVolume("nvmf-tcp:nqn.2016-06.io.spdk:nope", uuid).code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE(client_->AttachVolume(*handle, uuid).ok());
  status = client_->AttachVolume(*handle1, uuid);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(status.message(), "Volume is already attached to a different device");
  status = client_->DeleteDevice(*handle);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(status.message(), "Device has attached volumes");
  EXPECT_TRUE(tgt_->HasSubsystem(kCnode0));

  sma::DetachVolumeRequest bad_detach;
  bad_detach.set_device_handle(*handle);
  bad_detach.set_volume_id("abc");
  sma::DetachVolumeResponse unused;
  grpc::ClientContext context;
  EXPECT_EQ(client_->stub().DetachVolume(&context, bad_detach, &unused).error_code(), grpc::INVALID_ARGUMENT);

  // A cross detach (the volume belongs to the other device) succeeds and changes nothing.
  EXPECT_TRUE(client_->DetachVolume(*handle1, uuid).ok());
  EXPECT_EQ(tgt_->Namespaces(kCnode0).size(), 1u);
  EXPECT_EQ(client_->DeleteDevice(*handle).code(), absl::StatusCode::kFailedPrecondition);

  // Discovery endpoint with a host name.
  sma::AttachVolumeRequest named;
  named.set_device_handle(*handle1);
  named.mutable_volume()->set_volume_id(UuidBytes(RandomUuid()));
  auto* ep = named.mutable_volume()->mutable_nvmf()->mutable_discovery()->add_discovery_endpoints();
  ep->set_trtype("tcp");
  ep->set_traddr("localhost");
  ep->set_trsvcid("8009");
  status = client_->AttachVolume(named);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("Invalid traddr"), std::string::npos) << status;

  EXPECT_EQ(client_->GetQosCapabilities(0).status().message(), "Invalid device type");
  EXPECT_EQ(client_->GetQosCapabilities(1).status().message(), "Unsupported device type");

  // Crypto: not ASCII, and the nop engine refuses crypto.
  std::string uuid2 = NullBdev("null1");
  sma::AttachVolumeRequest crypto;
  crypto.set_device_handle(*handle1);
  crypto.mutable_volume()->set_volume_id(UuidBytes(uuid2));
  crypto.mutable_volume()->mutable_crypto()->set_key(std::string("\xff\xfe", 2));
  status = client_->AttachVolume(crypto);
  EXPECT_EQ(status.message(), "Corrupted crypto key");
  crypto.mutable_volume()->mutable_crypto()->set_key("1234567890abcdef1234567890abcdef");
  status = client_->AttachVolume(crypto);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "Crypto is disabled");
  EXPECT_EQ(tgt_->Namespaces(kCnode1).size(), 0u);
  // The nop engine's verify passes: a tracked plain volume re-attached with crypto parameters succeeds.
  sma::AttachVolumeRequest again;
  again.set_device_handle(*handle);
  again.mutable_volume()->set_volume_id(UuidBytes(uuid));
  again.mutable_volume()->mutable_crypto()->set_key("1234567890abcdef1234567890abcdef");
  EXPECT_TRUE(client_->AttachVolume(again).ok());
}

// Section 6, items 5, 6 and 9: retries never destroy the device; a conflicting volume is refused before
// anything is created; a create that fails leaves nothing behind.
TEST_F(SmaConformanceTest, RetriesKeepTheDeviceAndFailuresLeaveNothing) {
  std::string uuid = NullBdev("null0");
  const std::string host = "nqn.2016-06.io.spdk:host0";
  sma::CreateDeviceRequest create = NvmfTcpDevice(kCnode0, port_, {host});
  create.mutable_volume()->set_volume_id(UuidBytes(uuid));
  auto handle = client_->CreateDevice(create);
  ASSERT_TRUE(handle.ok()) << handle.status();
  for (int i = 0; i < 3; ++i) {
    auto again = client_->CreateDevice(create);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(*again, *handle);
  }
  auto subsystems = tgt_->Subsystems();
  ASSERT_EQ(subsystems.size(), 1u);
  EXPECT_EQ(subsystems[0]["hosts"].size(), 1u);
  EXPECT_EQ(subsystems[0]["namespaces"].size(), 1u);

  // Changed hosts: the device follows the request (hosts are exactly the requested set).
  sma::CreateDeviceRequest changed = NvmfTcpDevice(kCnode0, port_, {"nqn.2016-06.io.spdk:host1"});
  ASSERT_TRUE(client_->CreateDevice(changed).ok());
  subsystems = tgt_->Subsystems();
  ASSERT_EQ(subsystems[0]["hosts"].size(), 1u);
  EXPECT_EQ(subsystems[0]["hosts"][0]["nqn"], "nqn.2016-06.io.spdk:host1");
  EXPECT_EQ(subsystems[0]["namespaces"].size(), 1u);

  // The volume is bound to cnode0: a new device with it is refused and not created.
  sma::CreateDeviceRequest conflict = NvmfTcpDevice(kCnode1, port_);
  conflict.mutable_volume()->set_volume_id(UuidBytes(uuid));
  EXPECT_EQ(client_->CreateDevice(conflict).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(tgt_->HasSubsystem(kCnode1));

  // A volume that does not exist: NOT_FOUND and no subsystem left behind.
  sma::CreateDeviceRequest missing = NvmfTcpDevice(kCnode1, port_);
  missing.mutable_volume()->set_volume_id(UuidBytes(RandomUuid()));
  auto failed = client_->CreateDevice(missing);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kNotFound) << failed.status();
  EXPECT_FALSE(tgt_->HasSubsystem(kCnode1));
  // The next create of the same device works.
  EXPECT_TRUE(client_->CreateDevice(NvmfTcpDevice(kCnode1, port_)).ok());
}

// Malformed fields of every RPC: the precise code, a message naming the problem, nothing changed.
TEST_F(SmaConformanceTest, BadInputChangesNothing) {
  std::string uuid = NullBdev("null0");
  auto handle = client_->CreateDevice(NvmfTcpDevice(kCnode0, port_));
  ASSERT_TRUE(handle.ok());
  ASSERT_TRUE(client_->AttachVolume(*handle, uuid).ok());
  auto before = tgt_->Call("nvmf_get_subsystems");
  ASSERT_TRUE(before.ok());

  struct Case {
    std::string name;
    std::function<absl::Status()> call;
    absl::StatusCode code;
    std::string message_part;
  };
  auto create = [&](std::function<void(sma::nvmf_tcp::DeviceParameters*)> mutate) {
    return [this, mutate]() {
      sma::CreateDeviceRequest r = NvmfTcpDevice("nqn.2016-06.io.spdk:new", port_);
      mutate(r.mutable_nvmf_tcp());
      return client_->CreateDevice(r).status();
    };
  };
  std::vector<Case> cases = {
      {"empty nqn", create([](auto* p) { p->set_subnqn(""); }), absl::StatusCode::kInvalidArgument, "nvmf_tcp.subnqn"},
      {"bad nqn", create([](auto* p) { p->set_subnqn("not-an-nqn"); }), absl::StatusCode::kInvalidArgument, "nvmf_tcp.subnqn"},
      {"long nqn", create([](auto* p) { p->set_subnqn("nqn.2016-06.io.spdk:" + std::string(300, 'a')); }),
       absl::StatusCode::kInvalidArgument, "nvmf_tcp.subnqn"},
      {"discovery nqn", create([](auto* p) { p->set_subnqn("nqn.2014-08.org.nvmexpress.discovery"); }),
       absl::StatusCode::kInvalidArgument, "nvmf_tcp.subnqn"},
      {"adrfam", create([](auto* p) { p->set_adrfam("ipx"); }), absl::StatusCode::kInvalidArgument, "nvmf_tcp.adrfam"},
      {"traddr", create([](auto* p) { p->set_traddr("300.1.1.1"); }), absl::StatusCode::kInvalidArgument, "nvmf_tcp.traddr"},
      {"traddr family", create([](auto* p) { p->set_traddr("::1"); }), absl::StatusCode::kInvalidArgument, "nvmf_tcp.traddr"},
      {"trsvcid", create([](auto* p) { p->set_trsvcid("http"); }), absl::StatusCode::kInvalidArgument, "nvmf_tcp.trsvcid"},
      {"trsvcid range", create([](auto* p) { p->set_trsvcid("70000"); }), absl::StatusCode::kInvalidArgument, "nvmf_tcp.trsvcid"},
      {"host nqn", create([](auto* p) { p->add_hosts("../../etc/passwd"); }), absl::StatusCode::kInvalidArgument, "nvmf_tcp.hosts[0]"},
      {"delete traversal", [&] { return client_->DeleteDevice("nvme:nqn.2016-06.io.spdk:../victim"); },
       absl::StatusCode::kNotFound, "Invalid device handle"},
      {"delete garbage", [&] { return client_->DeleteDevice(std::string(5000, 'x')); }, absl::StatusCode::kNotFound,
       "Invalid device handle"},
      {"delete bad nqn", [&] { return client_->DeleteDevice("nvmf-tcp:../x"); }, absl::StatusCode::kNotFound,
       "Invalid device handle"},
      {"attach unknown handle", [&] { return client_->AttachVolume("virtio_blk:sma-0", uuid); },
       absl::StatusCode::kNotFound, "Invalid device handle"},
      {"detach short id",
       [&] {
         sma::DetachVolumeRequest r;
         r.set_device_handle(*handle);
         r.set_volume_id("short");
         sma::DetachVolumeResponse out;
         grpc::ClientContext c;
         return FromGrpc(client_->stub().DetachVolume(&c, r, &out));
       },
       absl::StatusCode::kInvalidArgument, "Invalid volume ID"},
      {"attach bad hostnqn",
       [&] {
         sma::AttachVolumeRequest r;
         r.set_device_handle(*handle);
         r.mutable_volume()->set_volume_id(UuidBytes(RandomUuid()));
         r.mutable_volume()->mutable_nvmf()->set_hostnqn("bogus");
         return client_->AttachVolume(r);
       },
       absl::StatusCode::kInvalidArgument, "volume.nvmf.hostnqn"},
      {"attach bad trsvcid",
       [&] {
         sma::AttachVolumeRequest r;
         r.set_device_handle(*handle);
         r.mutable_volume()->set_volume_id(UuidBytes(RandomUuid()));
         auto* e = r.mutable_volume()->mutable_nvmf()->mutable_discovery()->add_discovery_endpoints();
         e->set_trtype("tcp");
         e->set_traddr("127.0.0.1");
         e->set_trsvcid("0");
         return client_->AttachVolume(r);
       },
       absl::StatusCode::kInvalidArgument, "trsvcid"},
      {"attach bad trtype",
       [&] {
         sma::AttachVolumeRequest r;
         r.set_device_handle(*handle);
         r.mutable_volume()->set_volume_id(UuidBytes(RandomUuid()));
         auto* e = r.mutable_volume()->mutable_nvmf()->mutable_discovery()->add_discovery_endpoints();
         e->set_trtype("fc");
         e->set_traddr("127.0.0.1");
         e->set_trsvcid("8009");
         return client_->AttachVolume(r);
       },
       absl::StatusCode::kInvalidArgument, "trtype"},
  };
  for (const Case& c : cases) {
    absl::Status status = c.call();
    EXPECT_EQ(status.code(), c.code) << c.name << ": " << status;
    EXPECT_NE(status.message().find(c.message_part), std::string::npos) << c.name << ": " << status;
  }
  auto after = tgt_->Call("nvmf_get_subsystems");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*before, *after);
}

}  // namespace
}  // namespace smad::testing
