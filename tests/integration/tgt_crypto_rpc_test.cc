// Integration tests: SPDK's accel crypto key and crypto bdev methods on the real smad-tgt binary, every
// error path with SPDK's code and message, result shapes, save_config replay, and keys kept out of logs.
#include <algorithm>
#include <cctype>
#include <csignal>
#include <fstream>
#include <optional>

#include "gtest/gtest.h"
#include "support/rpc_expect.h"
#include "support/temp_dir.h"
#include "support/tgt_process.h"

namespace smad {
namespace {

using jsonrpc::Json;
using testing::TempDir;
using testing::TgtProcess;

const std::string kKeyA = "1234567890abcdef1234567890abcdef";
const std::string kKeyB = "fedcba0987654321fedcba0987654321";
const std::string kKey256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeef0";

class TgtCryptoRpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(tgt_.Start().ok()) << tgt_.ReadLog();
    rpc_.emplace(tgt_.Connect().value());  // Start waited until the socket answered
  }
  Json Ok(const std::string& method, const Json& params = nullptr) { return rpc_->Result(method, params); }
  Json Err(const std::string& method, const Json& params) { return rpc_->Error(method, params); }
  static Json Error(int code, const std::string& message) { return {{"code", code}, {"message", message}}; }

  void Malloc(const std::string& name) {
    ASSERT_EQ(Ok("bdev_malloc_create", {{"name", name}, {"num_blocks", 256}, {"block_size", 4096}}), name);
  }
  Json Bdev(const std::string& name) { return Ok("bdev_get_bdevs", {{"name", name}})[0]; }
  std::vector<std::string> BdevNames() {
    std::vector<std::string> names;
    for (const auto& b : Ok("bdev_get_bdevs")) names.push_back(b["name"]);
    return names;
  }
  std::vector<std::string> KeyNames() {
    std::vector<std::string> names;
    for (const auto& k : Ok("accel_crypto_keys_get")) names.push_back(k["name"]);
    return names;
  }

  TempDir dir_;
  TgtProcess tgt_{dir_.path()};
  std::optional<testing::RpcExpect> rpc_;
};

TEST_F(TgtCryptoRpcTest, KeysCreateGetDestroyWithSpdkShapesAndErrors) {
  EXPECT_EQ(Ok("accel_crypto_keys_get"), Json::array());
  EXPECT_EQ(Ok("accel_crypto_key_create", {{"cipher", "AES_XTS"}, {"key", kKeyA}, {"key2", kKeyB}, {"name", "xts"}}),
            true);
  EXPECT_EQ(Ok("accel_crypto_key_create", {{"cipher", "AES_CBC"}, {"key", kKey256}, {"name", "cbc"},
                                           {"tweak_mode", "SIMPLE_LBA"}}),
            true);
  // SPDK's enum decoder records the default tweak mode even when none was given.
  EXPECT_EQ(Ok("accel_crypto_keys_get"),
            Json::array({{{"name", "xts"}, {"cipher", "AES_XTS"}, {"key", kKeyA}, {"key2", kKeyB},
                          {"tweak_mode", "SIMPLE_LBA"}},
                         {{"name", "cbc"}, {"cipher", "AES_CBC"}, {"key", kKey256}, {"tweak_mode", "SIMPLE_LBA"}}}));
  EXPECT_EQ(Ok("accel_crypto_keys_get", {{"key_name", "cbc"}}).size(), 1u);
  EXPECT_EQ(Err("accel_crypto_keys_get", {{"key_name", "none"}}), Error(-32602, "key was not found"));
  EXPECT_EQ(Err("accel_crypto_keys_get", {{"key_name", 5}}), Error(-32700, "spdk_json_decode_object failed"));

  const Json dek_einval = Error(-32602, "failed to create DEK, rc -22");
  auto create = [&](Json params) {
    params["name"] = "k";
    return Err("accel_crypto_key_create", params);
  };
  EXPECT_EQ(Err("accel_crypto_key_create", {{"cipher", "AES_CBC"}, {"key", kKeyA}, {"name", "xts"}}),
            Error(-32602, "failed to create DEK, rc -17"));
  EXPECT_EQ(create({{"cipher", "AES_CBC"}, {"key", "xyz" + kKeyA.substr(3)}}), dek_einval);
  EXPECT_EQ(create({{"cipher", "AES_CBC"}, {"key", kKeyA.substr(1)}}), dek_einval);
  EXPECT_EQ(create({{"cipher", "AES_CBC"}, {"key", kKeyA.substr(8)}}), dek_einval);
  EXPECT_EQ(create({{"cipher", "AES_CBC"}, {"key", ""}}), dek_einval);
  EXPECT_EQ(create({{"cipher", "AES_CBC"}, {"key", kKeyA}, {"key2", kKeyB}}), dek_einval);
  EXPECT_EQ(create({{"cipher", "AES_XTS"}, {"key", kKeyA}}), dek_einval);
  EXPECT_EQ(create({{"cipher", "AES_XTS"}, {"key", kKeyA}, {"key2", kKeyA}}), dek_einval);
  EXPECT_EQ(create({{"cipher", "AES_XTS"}, {"key", kKeyA}, {"key2", kKey256}}), dek_einval);
  EXPECT_EQ(create({{"cipher", "AES_XTS"}, {"key", kKeyA}, {"key2", kKeyB}, {"tweak_mode", "INCR_512_UPPER_LBA"}}),
            dek_einval);
  const Json decode = Error(-32700, "spdk_json_decode_object failed");
  EXPECT_EQ(create({{"cipher", "AES_GCM"}, {"key", kKeyA}}), decode);
  EXPECT_EQ(create({{"cipher", "AES_XTS"}, {"key", kKeyA}, {"key2", kKeyB}, {"tweak_mode", "LBA"}}), decode);
  EXPECT_EQ(create({{"cipher", "AES_CBC"}, {"key", 1234}}), decode);
  EXPECT_EQ(create({{"cipher", "AES_CBC"}, {"key", kKeyA}, {"bogus", 1}}), decode);
  EXPECT_EQ(Err("accel_crypto_key_create", {{"cipher", "AES_CBC"}, {"key", kKeyA}}), decode);
  EXPECT_EQ(Err("accel_crypto_key_create", nullptr), decode);
  EXPECT_EQ(KeyNames(), (std::vector<std::string>{"xts", "cbc"})) << "failed creates leave nothing";

  EXPECT_EQ(Err("accel_crypto_key_destroy", {{"key_name", "none"}}), Error(-32602, "No key object found"));
  EXPECT_EQ(Err("accel_crypto_key_destroy", Json::object()), decode);
  EXPECT_EQ(Ok("accel_crypto_key_destroy", {{"key_name", "xts"}}), true);
  EXPECT_EQ(KeyNames(), std::vector<std::string>{"cbc"});
}

TEST_F(TgtCryptoRpcTest, CryptoBdevOnANamedKey) {
  Malloc("base");
  Malloc("other");
  Malloc("spare");
  ASSERT_EQ(Ok("accel_crypto_key_create", {{"cipher", "AES_XTS"}, {"key", kKeyA}, {"key2", kKeyB}, {"name", "k"}}),
            true);
  EXPECT_EQ(Ok("bdev_crypto_create", {{"base_bdev_name", "base"}, {"name", "crypt"}, {"key_name", "k"},
                                      {"crypto_pmd", "crypto_aesni_mb"}}),
            "crypt");
  Json crypt = Bdev("crypt");
  EXPECT_EQ(crypt["product_name"], "crypto");
  EXPECT_EQ(crypt["block_size"], 4096);
  EXPECT_EQ(crypt["num_blocks"], 256);
  EXPECT_EQ(crypt["claimed"], false);
  EXPECT_EQ(crypt["supported_io_types"]["read"], true);
  EXPECT_EQ(crypt["supported_io_types"]["write_zeroes"], false);
  EXPECT_EQ(crypt["driver_specific"], Json({{"crypto", {{"base_bdev_name", "base"}, {"name", "crypt"}, {"key_name", "k"}}}}));
  EXPECT_NE(crypt["uuid"], Bdev("base")["uuid"]);
  EXPECT_EQ(Bdev("base")["claimed"], true);
  EXPECT_EQ(Bdev("base")["claimed_by"], "crypto");

  EXPECT_EQ(Err("accel_crypto_key_destroy", {{"key_name", "k"}}), Error(-32602, "Failed to destroy key, rc -16"));
  auto create = [&](const std::string& name, const std::string& base, Json extra) {
    Json params = {{"base_bdev_name", base}, {"name", name}};
    params.update(extra);
    return Err("bdev_crypto_create", params);
  };
  EXPECT_EQ(create("crypt", "other", {{"key_name", "k"}}), Error(-17, "File exists"));
  EXPECT_EQ(create("crypt2", "base", {{"key_name", "k"}}), Error(-1, "Operation not permitted"));
  EXPECT_EQ(create("crypt2", "missing", {{"key_name", "k"}}), Error(-19, "No such device"));
  EXPECT_EQ(create("other", "spare", {{"key_name", "k"}}), Error(-22, "Invalid argument")) << "name taken";
  EXPECT_EQ(create("crypt2", "other", {{"key_name", "nokey"}}), Error(-32602, "Key was not found"));
  EXPECT_EQ(Err("bdev_crypto_create", {{"name", "x"}, {"key_name", "k"}}),
            Error(-32700, "Failed to decode crypto disk create parameters."));
  EXPECT_EQ(create("x", "other", {{"key_name", 3}}), Error(-32700, "Failed to decode crypto disk create parameters."));
  EXPECT_EQ(Bdev("other")["claimed"], false) << "failed creates claim nothing";
  EXPECT_EQ(Bdev("spare")["claimed"], false) << "failed creates claim nothing";
  EXPECT_EQ(BdevNames(), (std::vector<std::string>{"base", "other", "spare", "crypt"}));

  EXPECT_EQ(Err("bdev_crypto_delete", {{"name", "nope"}}), Error(-19, "No such device"));
  EXPECT_EQ(Err("bdev_crypto_delete", {{"name", "other"}}), Error(-19, "No such device")) << "not a crypto bdev";
  EXPECT_EQ(Err("bdev_crypto_delete", {{"nam", "crypt"}}), Error(-32602, "Invalid parameters"));
  EXPECT_EQ(Ok("bdev_crypto_delete", {{"name", "crypt"}}), true);
  EXPECT_EQ(Bdev("base")["claimed"], false);
  EXPECT_EQ(KeyNames(), std::vector<std::string>{"k"}) << "a named key outlives the bdev";
  EXPECT_EQ(Ok("accel_crypto_key_destroy", {{"key_name", "k"}}), true);
}

TEST_F(TgtCryptoRpcTest, LegacyInlineKeyIsCreatedAndDestroyedWithTheBdev) {
  Malloc("base");
  Malloc("base2");
  EXPECT_EQ(Ok("bdev_crypto_create", {{"base_bdev_name", "base"}, {"name", "c1"}, {"crypto_pmd", "crypto_aesni_mb"},
                                      {"key", kKeyA}, {"cipher", "AES_XTS"}, {"key2", kKeyB}}),
            "c1");
  // SPDK names it "<name>_<cipher>" and, not having decoded a tweak mode, records none.
  EXPECT_EQ(Ok("accel_crypto_keys_get", {{"key_name", "c1_AES_XTS"}}),
            Json::array({{{"name", "c1_AES_XTS"}, {"cipher", "AES_XTS"}, {"key", kKeyA}, {"key2", kKeyB}}}));
  EXPECT_EQ(Bdev("c1")["driver_specific"]["crypto"]["key_name"], "c1_AES_XTS");
  // The default cipher is AES_CBC.
  EXPECT_EQ(Ok("bdev_crypto_create", {{"base_bdev_name", "base2"}, {"name", "c2"}, {"key", kKeyB}}), "c2");
  EXPECT_EQ(KeyNames(), (std::vector<std::string>{"c1_AES_XTS", "c2_AES_CBC"}));

  // Failures after the key was made take it back; a bad inline key is "No key was found".
  EXPECT_EQ(Err("bdev_crypto_create", {{"base_bdev_name", "base"}, {"name", "c3"}, {"key", kKeyA}}),
            Error(-1, "Operation not permitted"));
  EXPECT_EQ(Err("bdev_crypto_create", {{"base_bdev_name", "gone"}, {"name", "c3"}, {"key", kKeyA}}),
            Error(-19, "No such device"));
  for (const Json& bad : {Json{{"key", "nothex"}}, Json{{"key", kKeyA}, {"cipher", "AES_XTS"}}, Json::object(),
                          Json{{"key", kKeyA}, {"cipher", "DES"}}}) {
    Json params = {{"base_bdev_name", "base"}, {"name", "c3"}};
    params.update(bad);
    EXPECT_EQ(Err("bdev_crypto_create", params), Error(-32603, "No key was found")) << bad.dump();
  }
  EXPECT_EQ(KeyNames(), (std::vector<std::string>{"c1_AES_XTS", "c2_AES_CBC"}));

  EXPECT_EQ(Ok("bdev_crypto_delete", {{"name", "c1"}}), true);
  EXPECT_EQ(KeyNames(), std::vector<std::string>{"c2_AES_CBC"}) << "bdev_crypto_delete destroys its own key";
  // Hot-removing the base removes the crypto bdev, and with it its key.
  EXPECT_EQ(Ok("bdev_malloc_delete", {{"name", "base2"}}), true);
  EXPECT_EQ(BdevNames(), std::vector<std::string>{"base"});
  EXPECT_EQ(KeyNames(), std::vector<std::string>{});
  EXPECT_EQ(Bdev("base")["claimed"], false);
}

TEST_F(TgtCryptoRpcTest, SaveConfigReplaysKeysBeforeCryptoBdevs) {
  Malloc("base");
  Malloc("base2");
  ASSERT_EQ(Ok("accel_crypto_key_create", {{"cipher", "AES_XTS"}, {"key", kKeyA}, {"key2", kKeyB}, {"name", "k"}}),
            true);
  ASSERT_EQ(Ok("bdev_crypto_create", {{"base_bdev_name", "base"}, {"name", "crypt"}, {"key_name", "k"}}), "crypt");
  ASSERT_EQ(Ok("bdev_crypto_create", {{"base_bdev_name", "base2"}, {"name", "legacy"}, {"key", kKeyB}}), "legacy");
  Json subsystems = Ok("framework_get_subsystems");
  EXPECT_EQ(subsystems[0]["subsystem"], "accel");
  EXPECT_EQ(Ok("framework_get_config", {{"name", "accel"}}),
            Json::array({{{"method", "accel_crypto_key_create"},
                          {"params", {{"name", "k"}, {"cipher", "AES_XTS"}, {"key", kKeyA}, {"key2", kKeyB},
                                      {"tweak_mode", "SIMPLE_LBA"}}}},
                         {{"method", "accel_crypto_key_create"},
                          {"params", {{"name", "legacy_AES_CBC"}, {"cipher", "AES_CBC"}, {"key", kKeyB}}}}}));
  Json bdev_config = Ok("framework_get_config", {{"name", "bdev"}});
  ASSERT_EQ(bdev_config.size(), 4u);
  EXPECT_EQ(bdev_config[2], Json({{"method", "bdev_crypto_create"},
                                  {"params", {{"base_bdev_name", "base"}, {"name", "crypt"}, {"key_name", "k"}}}}));
  Json saved = Ok("save_config");
  std::ofstream(dir_.File("config.json")) << saved.dump(2);
  Json crypt_before = Bdev("crypt");

  TgtProcess second(dir_.path(), "second");
  ASSERT_TRUE(second.Start({.config_file = dir_.File("config.json")}).ok()) << second.ReadLog();
  auto client = second.Connect();
  ASSERT_TRUE(client.ok());
  auto again = client->Call("save_config");
  ASSERT_TRUE(again.ok());
  // Replayed through accel_crypto_key_create, the legacy key gains the default tweak mode, as on SPDK.
  Json expected = saved;
  expected["subsystems"][0]["config"][1]["params"]["tweak_mode"] = "SIMPLE_LBA";
  EXPECT_EQ(*again, expected);
  auto crypt_after = client->Call("bdev_get_bdevs", {{"name", "crypt"}});
  ASSERT_TRUE(crypt_after.ok());
  EXPECT_EQ((*crypt_after)[0]["uuid"], crypt_before["uuid"]) << "derived from the base's UUID, which is saved";
  EXPECT_EQ((*crypt_after)[0]["driver_specific"], crypt_before["driver_specific"]);
}

std::string Upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
  return s;
}

TEST(TgtCryptoLogTest, KeyMaterialNeverReachesTheLog) {
  TempDir dir;
  TgtProcess tgt(dir.path());
  ASSERT_TRUE(tgt.Start({.extra_args = {"-L", "trace"}}).ok()) << tgt.ReadLog();
  auto c = tgt.Connect();
  ASSERT_TRUE(c.ok());
  const std::string secret1 = "5ec7e75ec7e75ec7e75ec7e75ec7e701";
  const std::string secret2 = "a11ce5a11ce5a11ce5a11ce5a11ce502";
  const std::string bad = "5ec7e75ec7e75ec7e75ec7e75ec7e7zz";
  auto call = [&](const std::string& method, const Json& params) { ASSERT_TRUE(c->CallRaw(method, params).ok()); };
  call("bdev_malloc_create", {{"name", "m"}, {"num_blocks", 64}, {"block_size", 512}});
  call("accel_crypto_key_create", {{"cipher", "AES_XTS"}, {"key", secret1}, {"key2", secret2}, {"name", "k"}});
  call("accel_crypto_key_create", {{"cipher", "AES_XTS"}, {"key", secret1}, {"key2", secret1}, {"name", "same"}});
  call("accel_crypto_key_create", {{"cipher", "AES_CBC"}, {"key", bad}, {"name", "bad"}});
  call("bdev_crypto_create", {{"base_bdev_name", "m"}, {"name", "c"}, {"key", secret2}, {"cipher", "AES_CBC"}});
  call("bdev_crypto_create", {{"base_bdev_name", "m"}, {"name", "d"}, {"key", bad}});
  call("accel_crypto_keys_get", nullptr);
  call("save_config", nullptr);
  call("bdev_crypto_delete", {{"name", "c"}});
  tgt.Stop(SIGTERM);
  std::string log = tgt.ReadLog();
  EXPECT_NE(log.find("accel_crypto_key_create"), std::string::npos) << "the failures are logged: " << log;
  for (const std::string& s : {secret1, secret2, bad}) {
    for (const std::string& piece : {s.substr(0, 12), s.substr(12, 12), s.substr(20)}) {
      EXPECT_EQ(log.find(piece), std::string::npos) << piece << " in:\n" << log;
      EXPECT_EQ(log.find(Upper(piece)), std::string::npos) << piece << " in:\n" << log;
    }
  }
}

}  // namespace
}  // namespace smad
