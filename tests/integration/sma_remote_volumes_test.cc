// Remote volumes through smad, with three real smad-tgt processes: two remote storage nodes (NVMe/TCP
// subsystems and discovery listeners) and the local one under smad. Follows the discovery (4.2) and crypto
// (4.4) checklists of shared/spec/sma.md, then checks data end to end (host -> local device -> remote
// namespace, plaintext vs. ciphertext on the remote), restoration after a local target restart, and bad
// discovery endpoints and keys.

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "support/net.h"
#include "support/nvme_host.h"
#include "support/sma_helpers.h"
#include "support/smad_process.h"
#include "support/temp_dir.h"
#include "support/tgt_process.h"

namespace smad::testing {
namespace {

constexpr char kLocal0[] = "nqn.2016-06.io.spdk:local0";
constexpr char kNode1[] = "nqn.2016-06.io.spdk:node1";
constexpr char kNode2[] = "nqn.2016-06.io.spdk:node2";
constexpr char kHost0[] = "nqn.2016-06.io.spdk:host0";
constexpr char kDiscoveryNqn[] = "nqn.2014-08.org.nvmexpress.discovery";
constexpr char kKey0[] = "1234567890abcdef1234567890abcdef";
constexpr char kKey1[] = "deadbeefcafebabefeedbeefbabecafe";
constexpr uint32_t kBlock = 4096;

bool WaitFor(const std::function<bool()>& condition, int timeout_ms = 10000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return condition();
}

// A remote storage node: a smad-tgt with malloc bdevs in one subsystem (host0 allowed), a data listener
// and discovery listeners.
class RemoteNode {
 public:
  RemoteNode(const std::string& dir, const std::string& name) : process_(dir, name) {}

  void Start(const std::string& nqn, int bdevs, int discovery_listeners) {
    nqn_ = nqn;
    ASSERT_TRUE(process_.Start().ok()) << process_.ReadLog();
    view_ = std::make_unique<TargetView>(process_.socket());
    ASSERT_TRUE(Call("nvmf_create_transport", {{"trtype", "tcp"}}).ok());
    ASSERT_TRUE(Call("nvmf_create_subsystem", {{"nqn", nqn}, {"allow_any_host", false}}).ok());
    ASSERT_TRUE(Call("nvmf_subsystem_add_host", {{"nqn", nqn}, {"host", kHost0}}).ok());
    for (int i = 0; i < bdevs; ++i) {
      std::string name = absl::StrCat("m", i);
      ASSERT_TRUE(Call("bdev_malloc_create", {{"name", name}, {"num_blocks", 2048}, {"block_size", kBlock}}).ok());
      uuids_.push_back(view_->BdevUuid(name));
      ASSERT_TRUE(Call("nvmf_subsystem_add_ns", {{"nqn", nqn}, {"namespace", {{"bdev_name", name}}}}).ok());
    }
    data_port_ = FreeTcpPort();
    ASSERT_TRUE(AddListener(nqn, data_port_).ok());
    for (int i = 0; i < discovery_listeners; ++i) {
      discovery_ports_.push_back(FreeTcpPort());
      ASSERT_TRUE(AddListener(kDiscoveryNqn, discovery_ports_.back()).ok());
    }
  }

  absl::StatusOr<Json> Call(const std::string& method, const Json& params = Json()) {
    return view_->Call(method, params);
  }
  absl::StatusOr<Json> AddListener(const std::string& nqn, const std::string& port) {
    return Call("nvmf_subsystem_add_listener",
                {{"nqn", nqn},
                 {"listen_address", {{"trtype", "tcp"}, {"adrfam", "ipv4"}, {"traddr", "127.0.0.1"}, {"trsvcid", port}}}});
  }
  absl::Status RemoveNamespace(uint32_t nsid) { return Call("nvmf_subsystem_remove_ns", {{"nqn", nqn_}, {"nsid", nsid}}).status(); }
  absl::Status AddNamespace(uint32_t nsid) {
    return Call("nvmf_subsystem_add_ns", {{"nqn", nqn_}, {"namespace", {{"bdev_name", absl::StrCat("m", nsid - 1)}, {"nsid", nsid}}}})
        .status();
  }

  const std::string& uuid(size_t i) const { return uuids_.at(i); }
  const std::string& data_port() const { return data_port_; }
  const std::string& discovery_port(size_t i) const { return discovery_ports_.at(i); }
  const std::string& nqn() const { return nqn_; }

 private:
  TgtProcess process_;
  std::unique_ptr<TargetView> view_;
  std::string nqn_;
  std::vector<std::string> uuids_;
  std::string data_port_;
  std::vector<std::string> discovery_ports_;
};

class SmaRemoteVolumesTest : public ::testing::Test {
 protected:
  void StartNodes() {
    t1_ = std::make_unique<RemoteNode>(dir_.path(), "t1");
    t1_->Start(kNode1, 1, 1);
    t2_ = std::make_unique<RemoteNode>(dir_.path(), "t2");
    t2_->Start(kNode2, 2, 2);
  }

  void StartSmad(const std::string& extra_config = "") {
    smad_ = std::make_unique<SmadProcess>(dir_.path() + "/smad");
    SmadProcess::Options options;
    options.config_yaml = "devices:\n  - name: nvmf_tcp\ndiscovery_timeout: 5\nvolume_cleanup_period: 1\n" + extra_config;
    ASSERT_TRUE(smad_->Start(options).ok()) << smad_->ReadLog();
    client_ = std::make_unique<SmaClient>(smad_->Stub());
    local_ = std::make_unique<TargetView>(smad_->tgt_socket());
    local_port_ = FreeTcpPort();
  }

  void SetUp() override { std::filesystem::create_directories(dir_.path() + "/smad"); }

  sma::VolumeParameters Volume(const std::string& uuid, const std::vector<std::string>& ports,
                               const std::string& subnqn = "", const std::string& hostnqn = kHost0) {
    sma::VolumeParameters v;
    v.set_volume_id(UuidBytes(uuid));
    v.mutable_nvmf()->set_hostnqn(hostnqn);
    v.mutable_nvmf()->set_subnqn(subnqn);
    for (const std::string& port : ports) {
      auto* ep = v.mutable_nvmf()->mutable_discovery()->add_discovery_endpoints();
      ep->set_trtype("tcp");
      ep->set_traddr("127.0.0.1");
      ep->set_trsvcid(port);
    }
    return v;
  }
  static void SetCrypto(sma::VolumeParameters& v, int cipher, const std::string& key, const std::string& key2 = "") {
    v.mutable_crypto()->set_cipher(static_cast<sma::VolumeCryptoParameters::Cipher>(cipher));
    v.mutable_crypto()->set_key(key);
    v.mutable_crypto()->set_key2(key2);
  }

  absl::Status Attach(const sma::VolumeParameters& volume) {
    sma::AttachVolumeRequest request;
    request.set_device_handle(handle_);
    *request.mutable_volume() = volume;
    return client_->AttachVolume(request);
  }
  absl::Status Detach(const std::string& uuid) { return client_->DetachVolume(handle_, uuid); }
  absl::Status CreateLocal0(const sma::VolumeParameters* volume = nullptr) {
    sma::CreateDeviceRequest request = NvmfTcpDevice(kLocal0, local_port_, {}, /*allow_any_host=*/true);
    if (volume != nullptr) *request.mutable_volume() = *volume;
    auto handle = client_->CreateDevice(request);
    if (handle.ok()) handle_ = *handle;
    return handle.status();
  }

  // trsvcids of the local target's discovery services, sorted.
  std::vector<std::string> Services() {
    std::vector<std::string> ports;
    auto info = local_->Call("bdev_nvme_get_discovery_info");
    if (!info.ok()) return {absl::StrCat("error: ", info.status().message())};  // fails comparisons
    for (const Json& s : *info) ports.push_back(s["trid"]["trsvcid"].get<std::string>());
    std::sort(ports.begin(), ports.end());
    return ports;
  }
  // UUIDs of local0's namespaces, sorted.
  std::vector<std::string> NamespaceUuids() {
    std::vector<std::string> uuids;
    for (const Json& ns : local_->Namespaces(kLocal0)) uuids.push_back(ns.value("uuid", ""));
    std::sort(uuids.begin(), uuids.end());
    return uuids;
  }
  std::vector<Json> Bdevs(const std::string& product = "") {
    std::vector<Json> out;
    auto bdevs = local_->Call("bdev_get_bdevs");
    if (bdevs.ok()) {
      for (const Json& b : *bdevs) {
        if (product.empty() || b.value("product_name", "") == product) out.push_back(b);
      }
    }
    return out;
  }
  static std::vector<std::string> Sorted(std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  }

  TempDir dir_;
  std::unique_ptr<RemoteNode> t1_, t2_;
  std::unique_ptr<SmadProcess> smad_;
  std::unique_ptr<SmaClient> client_;
  std::unique_ptr<TargetView> local_;
  std::string local_port_;
  std::string handle_;
};

TEST_F(SmaRemoteVolumesTest, DiscoveryChecklist) {
  StartNodes();
  StartSmad();
  const std::string d1 = t1_->discovery_port(0), d2 = t2_->discovery_port(0), d2b = t2_->discovery_port(1);
  const std::string t1uuid = t1_->uuid(0), t2uuid = t2_->uuid(0), t2uuid2 = t2_->uuid(1);
  // 1
  ASSERT_TRUE(CreateLocal0().ok());
  // 2: two endpoints, two services.
  ASSERT_TRUE(Attach(Volume(t1uuid, {d1, d2})).ok()) << smad_->ReadLog();
  EXPECT_EQ(Services(), Sorted({d1, d2}));
  EXPECT_EQ(NamespaceUuids(), std::vector<std::string>{t1uuid});
  // 3: the 8010-like service is reused.
  ASSERT_TRUE(Attach(Volume(t2uuid, {d2})).ok());
  EXPECT_EQ(Services(), Sorted({d1, d2}));
  EXPECT_EQ(NamespaceUuids(), Sorted({t1uuid, t2uuid}));
  // 4, 5: references drop one by one.
  ASSERT_TRUE(Detach(t1uuid).ok());
  EXPECT_EQ(Services(), std::vector<std::string>{d2});
  EXPECT_EQ(NamespaceUuids(), std::vector<std::string>{t2uuid});
  ASSERT_TRUE(Detach(t2uuid).ok());
  EXPECT_TRUE(Services().empty());
  EXPECT_TRUE(NamespaceUuids().empty());
  // 6: an unknown volume: NOT_FOUND, and the service started for it is gone again.
  absl::Status missing = Attach(Volume(RandomUuid(), {d1}));
  EXPECT_TRUE(absl::IsNotFound(missing)) << missing;
  EXPECT_EQ(missing.message(), "Volume could not be found");
  EXPECT_TRUE(Services().empty());
  EXPECT_TRUE(NamespaceUuids().empty());
  // 7, 8: both volumes through both endpoints.
  ASSERT_TRUE(Attach(Volume(t1uuid, {d1, d2})).ok());
  ASSERT_TRUE(Attach(Volume(t2uuid, {d1, d2})).ok());
  EXPECT_EQ(Services(), Sorted({d1, d2}));
  EXPECT_EQ(NamespaceUuids(), Sorted({t1uuid, t2uuid}));
  ASSERT_TRUE(Detach(t1uuid).ok());
  EXPECT_EQ(Services(), Sorted({d1, d2}));
  // 9: a device with volumes cannot be deleted.
  EXPECT_TRUE(absl::IsFailedPrecondition(client_->DeleteDevice(handle_)));
  EXPECT_EQ(Services(), Sorted({d1, d2}));
  // 10
  ASSERT_TRUE(Detach(t2uuid).ok());
  ASSERT_TRUE(client_->DeleteDevice(handle_).ok());
  EXPECT_TRUE(Services().empty());
  EXPECT_FALSE(local_->HasSubsystem(kLocal0));
  // 11, 12: CreateDevice with a remote volume.
  sma::VolumeParameters v1 = Volume(t1uuid, {d1});
  ASSERT_TRUE(CreateLocal0(&v1).ok());
  EXPECT_EQ(Services(), std::vector<std::string>{d1});
  EXPECT_EQ(NamespaceUuids(), std::vector<std::string>{t1uuid});
  ASSERT_TRUE(Detach(t1uuid).ok());
  EXPECT_TRUE(Services().empty());
  EXPECT_TRUE(NamespaceUuids().empty());
  // 13, 14: the second discovery listener of t2 is a referral of the first one's service.
  ASSERT_TRUE(Attach(Volume(t2uuid, {d2, d2b})).ok());
  EXPECT_EQ(Services(), std::vector<std::string>{d2});
  ASSERT_TRUE(Attach(Volume(t2uuid2, {d2b})).ok());
  EXPECT_EQ(Services(), std::vector<std::string>{d2});
  EXPECT_EQ(NamespaceUuids(), Sorted({t2uuid, t2uuid2}));
  // 15
  EXPECT_TRUE(Detach(t1uuid).ok());
  EXPECT_TRUE(Detach(t2uuid).ok());
  EXPECT_TRUE(Detach(t2uuid2).ok());
  EXPECT_TRUE(client_->DeleteDevice(handle_).ok());
  EXPECT_TRUE(Services().empty());
  // 16-18: the subsystem NQN check, and a host the remote refuses.
  ASSERT_TRUE(CreateLocal0().ok());
  ASSERT_TRUE(Attach(Volume(t1uuid, {d1}, kNode1)).ok());
  EXPECT_EQ(Services(), std::vector<std::string>{d1});
  absl::Status wrong_nqn = Attach(Volume(t2uuid, {d2}, absl::StrCat(kNode2, "-invalid")));
  EXPECT_TRUE(absl::IsInvalidArgument(wrong_nqn)) << wrong_nqn;
  EXPECT_EQ(wrong_nqn.message(), "Unexpected subsystem NQN");
  EXPECT_EQ(Services(), std::vector<std::string>{d1});
  EXPECT_EQ(NamespaceUuids(), std::vector<std::string>{t1uuid});
  absl::Status wrong_host = Attach(Volume(t2uuid, {d2}, "", absl::StrCat(kHost0, "-invalid")));
  EXPECT_TRUE(absl::IsNotFound(wrong_host) || absl::IsInternal(wrong_host)) << wrong_host;
  EXPECT_EQ(Services(), std::vector<std::string>{d1});
  EXPECT_EQ(NamespaceUuids(), std::vector<std::string>{t1uuid});
  // 19: nobody listening.
  absl::Status nobody = Attach(Volume(RandomUuid(), {FreeTcpPort()}));
  EXPECT_TRUE(absl::IsInternal(nobody)) << nobody;
  EXPECT_NE(nobody.message().find("Failed to start discovery"), absl::string_view::npos) << nobody;
  EXPECT_EQ(Services(), std::vector<std::string>{d1});
  // 20: the remote drops the namespace: hot-remove locally, the cleanup pass forgets the volume and
  // stops the service.
  ASSERT_TRUE(t1_->RemoveNamespace(1).ok());
  EXPECT_TRUE(WaitFor([&] { return Services().empty(); })) << smad_->ReadLog();
  EXPECT_TRUE(NamespaceUuids().empty());
  ASSERT_TRUE(t1_->AddNamespace(1).ok());
  // 21-23: two volumes on one service; they vanish one at a time.
  ASSERT_TRUE(Attach(Volume(t2uuid, {d2})).ok());
  ASSERT_TRUE(Attach(Volume(t2uuid2, {d2})).ok());
  EXPECT_EQ(NamespaceUuids(), Sorted({t2uuid, t2uuid2}));
  ASSERT_TRUE(t2_->RemoveNamespace(2).ok());
  EXPECT_TRUE(WaitFor([&] { return NamespaceUuids() == std::vector<std::string>{t2uuid}; }));
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_EQ(Services(), std::vector<std::string>{d2});
  ASSERT_TRUE(t2_->RemoveNamespace(1).ok());
  EXPECT_TRUE(WaitFor([&] { return Services().empty(); }));
  EXPECT_TRUE(NamespaceUuids().empty());
  ASSERT_TRUE(t2_->AddNamespace(1).ok());
  ASSERT_TRUE(t2_->AddNamespace(2).ok());
  // 24
  EXPECT_TRUE(client_->DeleteDevice(handle_).ok());
  EXPECT_TRUE(Services().empty());
}

TEST_F(SmaRemoteVolumesTest, HostReadsAndWritesTheRemoteVolumeThroughTheLocalDevice) {
  StartNodes();
  StartSmad();
  ASSERT_TRUE(CreateLocal0().ok());
  ASSERT_TRUE(Attach(Volume(t1_->uuid(0), {t1_->discovery_port(0)})).ok()) << smad_->ReadLog();
  auto host = ConnectHost(local_port_, kLocal0, kHost0);
  ASSERT_NE(host, nullptr);
  std::vector<uint8_t> written = Pattern(16 * kBlock, 11);
  ASSERT_TRUE(host->Write(1, 100, 16, written).ok());
  std::vector<uint8_t> back(written.size());
  ASSERT_TRUE(host->Read(1, 100, 16, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, written);
  // The same bytes are on the remote node.
  auto direct = ConnectHost(t1_->data_port(), kNode1, kHost0);
  ASSERT_NE(direct, nullptr);
  std::vector<uint8_t> remote(written.size());
  ASSERT_TRUE(direct->Read(1, 100, 16, absl::MakeSpan(remote)).ok());
  EXPECT_EQ(remote, written);
  // After the detach the host loses the namespace.
  ASSERT_TRUE(Detach(t1_->uuid(0)).ok());
  EXPECT_FALSE(host->Read(1, 100, 16, absl::MakeSpan(back)).ok());
}

// AES-128-CBC of one block as the crypto bdev writes it: IV = the LBA, little endian, zero padded.
std::vector<uint8_t> EncryptCbc(const std::string& hex_key, uint64_t lba, const std::vector<uint8_t>& plain) {
  std::string key = absl::HexStringToBytes(hex_key);
  unsigned char iv[16] = {};
  for (int i = 0; i < 8; ++i) iv[i] = static_cast<unsigned char>(lba >> (8 * i));
  std::vector<uint8_t> out(plain.size());
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int len = 0;
  EVP_EncryptInit_ex(ctx, EVP_aes_128_cbc(), nullptr, reinterpret_cast<const unsigned char*>(key.data()), iv);
  EVP_CIPHER_CTX_set_padding(ctx, 0);
  EVP_EncryptUpdate(ctx, out.data(), &len, plain.data(), static_cast<int>(plain.size()));
  EVP_CIPHER_CTX_free(ctx);
  return out;
}

TEST_F(SmaRemoteVolumesTest, CryptoChecklist) {
  StartNodes();
  StartSmad("crypto:\n  name: bdev_crypto\n");
  const std::string uuid = t1_->uuid(0), d1 = t1_->discovery_port(0);
  // 1-3: a plain volume.
  ASSERT_TRUE(CreateLocal0().ok());
  ASSERT_TRUE(Attach(Volume(uuid, {d1})).ok()) << smad_->ReadLog();
  EXPECT_TRUE(Bdevs("crypto").empty());
  auto ns = local_->Namespaces(kLocal0);
  ASSERT_EQ(ns.size(), 1u);
  EXPECT_EQ(ns[0].value("uuid", ""), uuid);
  ASSERT_TRUE(Detach(uuid).ok());
  // 4, 5: encrypted; a repeat changes nothing.
  sma::VolumeParameters crypto = Volume(uuid, {d1});
  SetCrypto(crypto, 0, kKey0);
  ASSERT_TRUE(Attach(crypto).ok()) << smad_->ReadLog();
  EXPECT_EQ(Services().size(), 1u);
  auto crypto_bdevs = Bdevs("crypto");
  ASSERT_EQ(crypto_bdevs.size(), 1u);
  std::string crypto_name = crypto_bdevs[0]["name"];
  ns = local_->Namespaces(kLocal0);
  ASSERT_EQ(ns.size(), 1u);
  EXPECT_EQ(ns[0].value("bdev_name", ""), crypto_name);
  EXPECT_EQ(ns[0].value("uuid", ""), uuid);
  std::string key_name = crypto_bdevs[0]["driver_specific"]["crypto"]["key_name"];
  auto keys = local_->Call("accel_crypto_keys_get", {{"key_name", key_name}});
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ((*keys)[0]["key"], kKey0);
  EXPECT_EQ((*keys)[0]["cipher"], "AES_CBC");
  ASSERT_TRUE(Attach(crypto).ok());
  ASSERT_EQ(Bdevs("crypto").size(), 1u);
  EXPECT_EQ(Bdevs("crypto")[0]["name"], crypto_name);
  // 6-9: mismatches on re-attach.
  struct Mismatch {
    int cipher;
    std::string key, key2, what;
  };
  for (const Mismatch& m : std::vector<Mismatch>{{1, kKey0, kKey1, "bad cipher"},
                                                 {0, kKey1, "", "bad key"},
                                                 {0, kKey0, kKey1, "bad key2"},
                                                 {8, kKey0, "", "bad cipher"}}) {
    sma::VolumeParameters wrong = Volume(uuid, {d1});
    SetCrypto(wrong, m.cipher, m.key, m.key2);
    absl::Status status = Attach(wrong);
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << m.what << ": " << status;
    EXPECT_NE(status.message().find(m.what), absl::string_view::npos) << status;
  }
  // 10: unchanged.
  ASSERT_EQ(Bdevs("crypto").size(), 1u);
  EXPECT_EQ(local_->Namespaces(kLocal0).size(), 1u);

  // The host writes plaintext; the remote base bdev holds AES-CBC ciphertext.
  {
    auto host = ConnectHost(local_port_, kLocal0, kHost0);
    ASSERT_NE(host, nullptr);
    std::vector<uint8_t> plain = Pattern(4 * kBlock, 5);
    ASSERT_TRUE(host->Write(1, 8, 4, plain).ok());
    std::vector<uint8_t> back(plain.size());
    ASSERT_TRUE(host->Read(1, 8, 4, absl::MakeSpan(back)).ok());
    EXPECT_EQ(back, plain);
    auto direct = ConnectHost(t1_->data_port(), kNode1, kHost0);
    ASSERT_NE(direct, nullptr);
    std::vector<uint8_t> stored(plain.size());
    ASSERT_TRUE(direct->Read(1, 8, 4, absl::MakeSpan(stored)).ok());
    EXPECT_NE(stored, plain);
    for (uint64_t i = 0; i < 4; ++i) {
      std::vector<uint8_t> block(plain.begin() + i * kBlock, plain.begin() + (i + 1) * kBlock);
      std::vector<uint8_t> expected = EncryptCbc(kKey0, 8 + i, block);
      EXPECT_TRUE(std::equal(expected.begin(), expected.end(), stored.begin() + i * kBlock)) << "block " << i;
    }
  }
  // The key never reaches smad's log.
  EXPECT_EQ(smad_->ReadLog().find(kKey0), std::string::npos);

  // 11, 12: detach; a bad cipher on a fresh volume leaves nothing at all.
  ASSERT_TRUE(Detach(uuid).ok());
  EXPECT_TRUE(Bdevs("crypto").empty());
  sma::VolumeParameters bad = Volume(uuid, {d1});
  SetCrypto(bad, 8, kKey0);
  EXPECT_TRUE(absl::IsInvalidArgument(Attach(bad)));
  EXPECT_TRUE(Services().empty());
  EXPECT_TRUE(local_->Namespaces(kLocal0).empty());
  EXPECT_TRUE(Bdevs().empty());
  // Keys of the wrong length or not hex: INVALID_ARGUMENT, nothing started.
  for (const std::string& key : {std::string("1234"), std::string(32, 'z'), std::string(40, 'a')}) {
    sma::VolumeParameters k = Volume(uuid, {d1});
    SetCrypto(k, 0, key);
    absl::Status status = Attach(k);
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
    EXPECT_TRUE(Services().empty());
    EXPECT_TRUE(Bdevs().empty());
  }
  // 13-15: CreateDevice with an encrypted volume.
  ASSERT_TRUE(client_->DeleteDevice(handle_).ok());
  ASSERT_TRUE(CreateLocal0(&crypto).ok()) << smad_->ReadLog();
  ASSERT_EQ(Bdevs("crypto").size(), 1u);
  ns = local_->Namespaces(kLocal0);
  ASSERT_EQ(ns.size(), 1u);
  EXPECT_EQ(ns[0].value("uuid", ""), uuid);
  EXPECT_EQ(ns[0].value("bdev_name", ""), Bdevs("crypto")[0]["name"]);
  ASSERT_TRUE(Detach(uuid).ok());
  ASSERT_TRUE(client_->DeleteDevice(handle_).ok());
  // 16: CreateDevice with a bad cipher fails before the device exists.
  EXPECT_TRUE(absl::IsInvalidArgument(CreateLocal0(&bad)));
  EXPECT_FALSE(local_->HasSubsystem(kLocal0));
  EXPECT_TRUE(Services().empty());
  EXPECT_TRUE(Bdevs().empty());
  // 17, 18: without a crypto engine, crypto is refused.
  smad_->Stop(SIGTERM);
  StartSmad();
  ASSERT_TRUE(CreateLocal0().ok());
  absl::Status disabled = Attach(crypto);
  EXPECT_TRUE(absl::IsInvalidArgument(disabled)) << disabled;
  EXPECT_EQ(disabled.message(), "Crypto is disabled");
  EXPECT_TRUE(Services().empty());
  EXPECT_TRUE(Bdevs().empty());
}

TEST_F(SmaRemoteVolumesTest, EncryptedRemoteVolumeIsRestoredAfterTheLocalTargetRestarts) {
  StartNodes();
  StartSmad("crypto:\n  name: bdev_crypto\n");
  ASSERT_TRUE(CreateLocal0().ok());
  sma::VolumeParameters crypto = Volume(t1_->uuid(0), {t1_->discovery_port(0)});
  SetCrypto(crypto, 0, kKey0);
  ASSERT_TRUE(Attach(crypto).ok()) << smad_->ReadLog();
  ASSERT_TRUE(Attach(Volume(t2_->uuid(0), {t2_->discovery_port(0)})).ok());
  std::vector<uint8_t> plain = Pattern(2 * kBlock, 9);
  {
    auto host = ConnectHost(local_port_, kLocal0, kHost0);
    ASSERT_NE(host, nullptr);
    ASSERT_TRUE(host->Write(1, 0, 2, plain).ok());
  }
  // The state store holds no key in clear.
  std::string db;
  {
    std::ifstream in(smad_->state_dir() + "/state.db", std::ios::binary);
    db.assign(std::istreambuf_iterator<char>(in), {});
    std::ifstream wal(smad_->state_dir() + "/state.db-wal", std::ios::binary);
    db.append(std::istreambuf_iterator<char>(wal), {});
  }
  EXPECT_EQ(db.find(kKey0), std::string::npos);

  pid_t tgt = smad_->TgtPid();
  ASSERT_GT(tgt, 0);
  ASSERT_EQ(kill(tgt, SIGKILL), 0);
  // smad restarts its target and restores discovery, the crypto bdev and both namespaces.
  EXPECT_TRUE(WaitFor(
      [&] {
        return Services().size() == 2 && Bdevs("crypto").size() == 1 &&
               NamespaceUuids() == Sorted({t1_->uuid(0), t2_->uuid(0)});
      },
      30000))
      << smad_->ReadLog();
  auto host = ConnectHost(local_port_, kLocal0, kHost0);
  ASSERT_NE(host, nullptr);
  uint32_t nsid = 0;
  for (const Json& ns : local_->Namespaces(kLocal0)) {
    if (ns.value("uuid", "") == t1_->uuid(0)) nsid = ns["nsid"];
  }
  ASSERT_NE(nsid, 0u);
  std::vector<uint8_t> back(plain.size());
  ASSERT_TRUE(host->Read(nsid, 0, 2, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, plain);
}

// smad is SIGKILLed at random moments while it attaches and detaches an encrypted remote volume. After each
// restart the local target must hold either the whole volume (namespace, crypto bdev, one discovery
// service) or nothing of it, and a detach must leave nothing at all.
TEST_F(SmaRemoteVolumesTest, CrashesDuringRemoteAttachAndDetachLeaveNoHalfVolumes) {
  StartNodes();
  StartSmad("crypto:\n  name: bdev_crypto\n");
  ASSERT_TRUE(CreateLocal0().ok());
  const std::string uuid = t1_->uuid(0);
  sma::VolumeParameters crypto = Volume(uuid, {t1_->discovery_port(0)});
  SetCrypto(crypto, 0, kKey0);
  std::mt19937 rng(20261121);
  int whole = 0, none = 0;
  for (int round = 0; round < 20; ++round) {
    bool attach = round % 4 != 3;  // mostly attaches, which have the most steps
    std::thread call([&] {
      if (attach) {
        Attach(crypto).IgnoreError();
      } else {
        Detach(uuid).IgnoreError();
      }
    });
    // An attach takes a few milliseconds on loopback: kill anywhere in the first 25 ms.
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 25000)(rng)));
    smad_->Stop(SIGKILL);
    call.join();
    ASSERT_TRUE(smad_->Restart().ok()) << smad_->ReadLog();
    client_ = std::make_unique<SmaClient>(smad_->Stub());
    // Wait until the reconciler settled: a whole volume, or nothing.
    auto state = [&]() -> int {
      auto services = Services();
      auto crypto_bdevs = Bdevs("crypto");
      auto uuids = NamespaceUuids();
      if (services.size() == 1 && crypto_bdevs.size() == 1 && uuids == std::vector<std::string>{uuid}) return 1;
      if (services.empty() && crypto_bdevs.empty() && uuids.empty()) return 0;
      return -1;
    };
    ASSERT_TRUE(WaitFor([&] { return state() >= 0; }, 20000))
        << "round " << round << ": services " << Services().size() << ", crypto bdevs " << Bdevs("crypto").size()
        << ", namespaces " << NamespaceUuids().size() << "\n" << smad_->ReadLog();
    (state() == 1 ? whole : none)++;
  }
  // Both outcomes occurred; a final detach leaves nothing, and the data path still works.
  ASSERT_TRUE(Attach(crypto).ok()) << smad_->ReadLog();
  auto host = ConnectHost(local_port_, kLocal0, kHost0);
  ASSERT_NE(host, nullptr);
  std::vector<uint8_t> plain = Pattern(kBlock, 3);
  ASSERT_TRUE(host->Write(local_->Namespaces(kLocal0)[0]["nsid"], 0, 1, plain).ok());
  ASSERT_TRUE(Detach(uuid).ok());
  EXPECT_TRUE(Services().empty());
  EXPECT_TRUE(Bdevs("crypto").empty());
  EXPECT_TRUE(NamespaceUuids().empty());
  std::string log = smad_->ReadLog();
  auto count = [&log](const std::string& what) {
    int n = 0;
    for (size_t at = log.find(what); at != std::string::npos; at = log.find(what, at + 1)) ++n;
    return n;
  };
  std::printf("rounds ending with the whole volume: %d, with nothing: %d; pending ops rolled forward: %d, "
              "connections rolled back: %d, unreferenced services stopped: %d\n",
              whole, none, count("rolling forward pending op"), count("rolling back the unfinished connection"),
              count("stopping unreferenced discovery service"));
  RecordProperty("rounds_whole", whole);
  RecordProperty("rounds_none", none);
}

// A TCP peer that answers every connection with garbage bytes (not NVMe/TCP).
class GarbagePeer {
 public:
  GarbagePeer() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = std::to_string(ntohs(addr.sin_port));
    listen(fd_, 16);
    thread_ = std::thread([this] {
      while (!stop_) {
        int c = accept(fd_, nullptr, nullptr);
        if (c < 0) break;
        std::string junk(4096, '\xA5');
        for (int i = 0; i < 4 && !stop_; ++i) {
          if (send(c, junk.data(), junk.size(), MSG_NOSIGNAL) < 0) break;
        }
        close(c);
      }
    });
  }
  ~GarbagePeer() {
    stop_ = true;
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
  }
  const std::string& port() const { return port_; }

 private:
  int fd_;
  std::string port_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST_F(SmaRemoteVolumesTest, BadDiscoveryEndpointsFailCleanlyAndTheTargetStaysHealthy) {
  StartNodes();
  StartSmad();
  ASSERT_TRUE(CreateLocal0().ok());
  GarbagePeer garbage;
  absl::Status status = Attach(Volume(RandomUuid(), {garbage.port()}));
  EXPECT_TRUE(absl::IsInternal(status)) << status;
  EXPECT_TRUE(Services().empty());
  // Endpoints that are not IP literals, or bad ports: refused before anything is started.
  sma::VolumeParameters host_name = Volume(RandomUuid(), {"8009"});
  host_name.mutable_nvmf()->mutable_discovery()->mutable_discovery_endpoints(0)->set_traddr("localhost");
  EXPECT_TRUE(absl::IsInvalidArgument(Attach(host_name)));
  EXPECT_TRUE(absl::IsInvalidArgument(Attach(Volume(RandomUuid(), {"0"}))));
  EXPECT_TRUE(absl::IsInvalidArgument(Attach(Volume(RandomUuid(), {"65536"}))));
  EXPECT_TRUE(Services().empty());
  // The good node still works afterwards.
  ASSERT_TRUE(Attach(Volume(t1_->uuid(0), {garbage.port(), t1_->discovery_port(0)})).code() ==
              absl::StatusCode::kInternal);
  EXPECT_TRUE(Services().empty());
  ASSERT_TRUE(Attach(Volume(t1_->uuid(0), {t1_->discovery_port(0)})).ok()) << smad_->ReadLog();
  EXPECT_EQ(NamespaceUuids(), std::vector<std::string>{t1_->uuid(0)});
}

}  // namespace
}  // namespace smad::testing
