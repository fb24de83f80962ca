#include "agent/core/bdev_crypto_engine.h"

#include <openssl/crypto.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/devices/target_errors.h"
#include "agent/spdk/spdk_client.h"
#include "common/status.h"
#include "common/uuid.h"
#include "spdlog/spdlog.h"

namespace smad::agent {
namespace {

constexpr int kSpdkNoSuchDevice = -19;

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("Invalid volume crypto configuration: ", what));
}

const char* CipherName(int cipher) {
  switch (cipher) {
    case 0: return "AES_CBC";
    case 1: return "AES_XTS";
    default: return nullptr;
  }
}

bool IsHexKey(const std::string& key) {
  return (key.size() == 32 || key.size() == 64) &&
         std::all_of(key.begin(), key.end(), [](char c) { return absl::ascii_isxdigit(c); });
}

bool IsNoSuchDevice(const absl::Status& status) {
  auto error = SpdkErrorOf(status);
  return error && error->code == kSpdkNoSuchDevice;
}

class BdevCryptoEngine final : public CryptoEngine {
 public:
  explicit BdevCryptoEngine(TargetRpc& rpc) : rpc_(rpc) {}

  const std::string& name() const override { return name_; }

  absl::Status Init(const Json& params) override {
    if (params.is_object() && params.contains("driver")) {
      if (!params["driver"].is_string()) return absl::InvalidArgumentError("crypto.params.driver: must be a string");
      driver_ = params["driver"].get<std::string>();
    }
    return absl::OkStatus();
  }

  absl::Status Validate(const CryptoParams& params) const override {
    const char* cipher = CipherName(params.cipher);
    if (cipher == nullptr) return Bad("bad cipher");
    if (params.tweak_mode != 0) return Bad("bad tweak_mode");
    if (!IsHexKey(params.key)) return Bad("bad key (hex text of 16 or 32 bytes expected)");
    if (params.cipher == 1) {
      if (params.key2.size() != params.key.size() || !IsHexKey(params.key2)) {
        return Bad("bad key2 (AES_XTS needs key2, hex text as long as key)");
      }
      if (absl::EqualsIgnoreCase(params.key, params.key2)) return Bad("bad key2 (must differ from key)");
    } else if (!params.key2.empty()) {
      return Bad("bad key2 (AES_CBC takes no key2)");
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Setup(const std::string& volume_id, const std::string& volume_bdev,
                                    const CryptoParams& params) override {
    return SetupNamed(volume_id, volume_bdev, params, Uuid::Generate().ToString());
  }

  absl::StatusOr<std::string> SetupNamed(const std::string& volume_id, const std::string& volume_bdev,
                                         const CryptoParams& params, const std::string& name) override {
    RETURN_IF_ERROR(Validate(params));
    RETURN_IF_ERROR(Create(volume_id, volume_bdev, name, params));
    return name;
  }

  absl::Status Restore(const std::string& volume_id, const std::string& volume_bdev, const std::string& crypto_bdev,
                       const CryptoParams& params) override {
    auto found = rpc_.Call("bdev_get_bdevs", Json{{"name", crypto_bdev}});
    if (found.ok()) return absl::OkStatus();
    if (!IsNoSuchDevice(found.status())) return TargetFailure(found.status(), "Failed to look up crypto bdev");
    return Create(volume_id, volume_bdev, crypto_bdev, params);
  }

  absl::Status Verify(const std::string& volume_id, const std::string& crypto_bdev,
                      const CryptoParams* params) override {
    if (crypto_bdev.empty() != (params == nullptr)) return Bad("crypto vs. no crypto");
    if (params == nullptr) return absl::OkStatus();
    auto bdevs = rpc_.Call("bdev_get_bdevs", Json{{"name", crypto_bdev}});
    if (!bdevs.ok()) return TargetFailure(bdevs.status(), "Failed to look up crypto bdev");
    std::string key_name;
    if (bdevs->is_array() && !bdevs->empty()) {
      const Json crypto = (*bdevs)[0].value("driver_specific", Json::object()).value("crypto", Json::object());
      if (crypto.contains("key_name") && crypto["key_name"].is_string()) key_name = crypto["key_name"].get<std::string>();
    }
    if (key_name.empty()) return absl::InternalError("Unexpected crypto configuration: crypto bdev has no key");
    auto keys = rpc_.Call("accel_crypto_keys_get", Json{{"key_name", key_name}});
    if (!keys.ok()) {
      if (IsTransportError(keys.status())) return TargetFailure(keys.status(), "Failed to look up crypto key");
      return absl::InvalidArgumentError("No key object found");
    }
    if (!keys->is_array() || keys->empty() || !(*keys)[0].is_object()) {
      return absl::InvalidArgumentError("No key object found");
    }
    const Json& key = (*keys)[0];
    const char* cipher = CipherName(params->cipher);
    if (cipher == nullptr || !absl::EqualsIgnoreCase(key.value("cipher", ""), cipher)) return Bad("bad cipher");
    std::string stored_key = key.value("key", "");
    bool key_matches = absl::EqualsIgnoreCase(stored_key, params->key);
    OPENSSL_cleanse(stored_key.data(), stored_key.size());
    if (!key_matches) return Bad("bad key");
    if (!params->key2.empty()) {
      std::string stored_key2 = key.value("key2", "");
      bool key2_matches = absl::EqualsIgnoreCase(stored_key2, params->key2);
      OPENSSL_cleanse(stored_key2.data(), stored_key2.size());
      if (!key2_matches) return Bad("bad key2");
    }
    if (key.value("name", "") != key_name) return Bad("key name does not match");
    if (params->tweak_mode != 0) return Bad("bad tweak_mode");
    return absl::OkStatus();
  }

  absl::Status Cleanup(const std::string& volume_id, const std::string& crypto_bdev) override {
    if (crypto_bdev.empty()) return absl::OkStatus();
    auto deleted = rpc_.Call("bdev_crypto_delete", Json{{"name", crypto_bdev}});
    if (deleted.ok() || IsNoSuchDevice(deleted.status())) return absl::OkStatus();
    return TargetFailure(deleted.status(), absl::StrCat("Failed to clean up crypto of volume ", volume_id));
  }

 private:
  absl::Status Create(const std::string& volume_id, const std::string& volume_bdev, const std::string& name,
                      const CryptoParams& params) {
    Json request = {{"base_bdev_name", volume_bdev}, {"name", name}, {"key", params.key},
                    {"cipher", CipherName(params.cipher)}};
    if (!params.key2.empty()) request["key2"] = params.key2;
    if (!driver_.empty()) request["crypto_pmd"] = driver_;
    auto created = rpc_.Call("bdev_crypto_create", request);
    // The request holds the key: wipe our copy of its text.
    for (const char* field : {"key", "key2"}) {
      if (request.contains(field)) {
        auto& text = request[field].get_ref<std::string&>();
        OPENSSL_cleanse(text.data(), text.size());
      }
    }
    if (!created.ok()) {
      spdlog::warn("crypto: bdev_crypto_create for volume {} failed: {}", volume_id, StatusMessage(created.status()));
      return TargetFailure(created.status(), absl::StrCat("Failed to setup crypto for volume: ", volume_id));
    }
    return absl::OkStatus();
  }

  TargetRpc& rpc_;
  const std::string name_ = "bdev_crypto";
  std::string driver_;
};

}  // namespace

CryptoEnginePtr MakeBdevCryptoEngine(TargetRpc& rpc) { return std::make_unique<BdevCryptoEngine>(rpc); }

}  // namespace smad::agent
