#include "agent/core/bdev_crypto_engine.h"

#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/spdk/spdk_client.h"
#include "gtest/gtest.h"

namespace smad::agent {
namespace {

constexpr char kKey0[] = "1234567890abcdef1234567890abcdef";
constexpr char kKey1[] = "deadbeefcafebabefeedbeefbabecafe";
constexpr char kVolume[] = "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c03";

// Answers bdev_crypto_create / bdev_crypto_delete / bdev_get_bdevs / accel_crypto_keys_get like SPDK's
// legacy inline-key path (the key is named "<crypto bdev>_<cipher>"), recording every call.
class CryptoTarget : public SpdkClient {
 public:
  absl::StatusOr<Json> Call(absl::string_view method_view, const Json& params,
                            std::chrono::milliseconds) override {
    absl::MutexLock lock(&mu_);
    std::string method(method_view);
    calls.push_back(method);
    if (method == "bdev_crypto_create") {
      if (fail_create) return SpdkErrorStatus(method, {-22, "Invalid argument"});
      Json key = {{"name", absl::StrCat(params["name"].get<std::string>(), "_", params["cipher"].get<std::string>())},
                  {"cipher", params["cipher"]}, {"key", params["key"]}};
      if (params.contains("key2")) key["key2"] = params["key2"];
      bdevs[params["name"]] = key;
      return params["name"];
    }
    if (method == "bdev_crypto_delete") {
      if (!bdevs.erase(params["name"].get<std::string>())) return SpdkErrorStatus(method, {-19, "No such device"});
      return Json(true);
    }
    if (method == "bdev_get_bdevs") {
      auto it = bdevs.find(params["name"].get<std::string>());
      if (it == bdevs.end()) return SpdkErrorStatus(method, {-19, "No such device"});
      return Json::array({{{"name", it->first}, {"product_name", "crypto"},
                           {"driver_specific", {{"crypto", {{"base_bdev_name", kVolume}, {"name", it->first},
                                                            {"key_name", it->second["name"]}}}}}}});
    }
    if (method == "accel_crypto_keys_get") {
      for (const auto& [name, key] : bdevs) {
        if (key["name"] == params["key_name"]) return Json::array({key});
      }
      return SpdkErrorStatus(method, {-19, "No such device"});
    }
    return SpdkErrorStatus(method, {-32601, "Method not found"});
  }
  uint64_t connection_epoch() const override { return 1; }

  absl::Mutex mu_;
  std::vector<std::string> calls;
  std::map<std::string, Json> bdevs;
  bool fail_create = false;
};

CryptoParams Params(int cipher, std::string key, std::string key2 = "") {
  CryptoParams p;
  p.cipher = cipher;
  p.key = std::move(key);
  p.key2 = std::move(key2);
  return p;
}

class BdevCryptoEngineTest : public ::testing::Test {
 protected:
  CryptoTarget target_;
  TargetRpc rpc_{target_, std::chrono::seconds(5)};
  CryptoEnginePtr engine_ = MakeBdevCryptoEngine(rpc_);
};

TEST_F(BdevCryptoEngineTest, ValidationRefusesBadParametersWithoutTargetCalls) {
  struct Case {
    CryptoParams params;
    std::string what;
  };
  std::vector<Case> cases = {
      {Params(8, kKey0), "bad cipher"},
      {Params(-1, kKey0), "bad cipher"},
      {Params(0, "1234"), "bad key"},
      {Params(0, std::string(32, 'g')), "bad key"},
      {Params(0, std::string(48, 'a')), "bad key"},
      {Params(0, kKey0, kKey1), "bad key2"},
      {Params(1, kKey0), "bad key2"},
      {Params(1, kKey0, kKey0), "bad key2"},
      {Params(1, kKey0, "abcd"), "bad key2"},
  };
  CryptoParams tweak = Params(0, kKey0);
  tweak.tweak_mode = 3;
  cases.push_back({tweak, "bad tweak_mode"});
  for (const Case& c : cases) {
    absl::Status status = engine_->Validate(c.params);
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << c.what << ": " << status;
    EXPECT_NE(status.message().find(c.what), absl::string_view::npos) << status;
    EXPECT_FALSE(engine_->SetupNamed(kVolume, kVolume, c.params, "c0").ok());
  }
  EXPECT_TRUE(target_.calls.empty());
  EXPECT_TRUE(engine_->Validate(Params(0, kKey0)).ok());
  EXPECT_TRUE(engine_->Validate(Params(1, kKey0, kKey1)).ok());
  EXPECT_TRUE(engine_->Validate(Params(0, std::string(64, 'A'))).ok());
}

TEST_F(BdevCryptoEngineTest, VerifyFollowsTheReferenceOrder) {
  auto name = engine_->SetupNamed(kVolume, kVolume, Params(0, kKey0), "c0");
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_EQ(*name, "c0");
  CryptoParams same = Params(0, kKey0);
  EXPECT_TRUE(engine_->Verify(kVolume, "c0", &same).ok());
  CryptoParams upper = Params(0, "1234567890ABCDEF1234567890ABCDEF");
  EXPECT_TRUE(engine_->Verify(kVolume, "c0", &upper).ok());
  auto expect = [&](const CryptoParams* p, const std::string& crypto_bdev, const std::string& what) {
    absl::Status status = engine_->Verify(kVolume, crypto_bdev, p);
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << what << ": " << status;
    EXPECT_NE(status.message().find(what), absl::string_view::npos) << status;
  };
  CryptoParams xts = Params(1, kKey0, kKey1);
  expect(&xts, "c0", "bad cipher");
  CryptoParams other_key = Params(0, kKey1);
  expect(&other_key, "c0", "bad key");
  CryptoParams extra_key2 = Params(0, kKey0, kKey1);
  expect(&extra_key2, "c0", "bad key2");
  CryptoParams cipher8 = Params(8, kKey0);
  expect(&cipher8, "c0", "bad cipher");
  expect(nullptr, "c0", "Invalid volume crypto configuration");
  expect(&same, "", "Invalid volume crypto configuration");
  EXPECT_TRUE(engine_->Verify(kVolume, "", nullptr).ok());
}

TEST_F(BdevCryptoEngineTest, RestoreRecreatesOnlyWhenMissingAndCleanupIsIdempotent) {
  ASSERT_TRUE(engine_->Restore(kVolume, kVolume, "c0", Params(0, kKey0)).ok());
  EXPECT_EQ(target_.bdevs.count("c0"), 1u);
  target_.calls.clear();
  ASSERT_TRUE(engine_->Restore(kVolume, kVolume, "c0", Params(0, kKey0)).ok());
  EXPECT_EQ(target_.calls, std::vector<std::string>{"bdev_get_bdevs"});
  EXPECT_TRUE(engine_->Cleanup(kVolume, "c0").ok());
  EXPECT_TRUE(engine_->Cleanup(kVolume, "c0").ok());
  EXPECT_TRUE(engine_->Cleanup(kVolume, "").ok());
  EXPECT_TRUE(target_.bdevs.empty());
}

TEST_F(BdevCryptoEngineTest, TargetFailureIsInternalAndNamesTheVolume) {
  target_.fail_create = true;
  auto name = engine_->SetupNamed(kVolume, kVolume, Params(0, kKey0), "c0");
  ASSERT_TRUE(absl::IsInternal(name.status())) << name.status();
  EXPECT_NE(name.status().message().find(absl::StrCat("Failed to setup crypto for volume: ", kVolume)),
            absl::string_view::npos);
  EXPECT_EQ(name.status().message().find(kKey0), absl::string_view::npos);
}

}  // namespace
}  // namespace smad::agent
