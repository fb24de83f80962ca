#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "tgt/crypto/aes_cipher.h"

namespace smad::tgt {

// Key material of at most 32 bytes, held inline (never on a heap that outlives it) and wiped with
// OPENSSL_cleanse when wiped or destroyed. Remembers the letter case of the hex digits it was decoded
// from, so ToHex() gives back exactly the text the user passed (SPDK echoes the original string).
// Not copyable or movable: key bytes exist in exactly one place.
// Thread safety: thread compatible; immutable once decoded.
class KeyBytes {
 public:
  static constexpr size_t kMaxBytes = 32;

  KeyBytes() = default;
  ~KeyBytes() { Wipe(); }
  KeyBytes(const KeyBytes&) = delete;
  KeyBytes& operator=(const KeyBytes&) = delete;

  // Decodes hex digits (either case). False, leaving this empty, for an odd length, a non-hex character,
  // or more than kMaxBytes bytes.
  [[nodiscard]] bool DecodeHex(std::string_view hex);
  std::string ToHex() const;
  absl::Span<const uint8_t> bytes() const { return {bytes_.data(), size_}; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Constant-time comparison of the key bytes.
  bool SameKeyAs(const KeyBytes& other) const;
  void Wipe();

 private:
  std::array<uint8_t, kMaxBytes> bytes_{};
  uint64_t upper_case_digits_ = 0;  // bit i: hex digit i was an upper-case letter
  uint8_t size_ = 0;
};

// What accel_crypto_key_create (or bdev_crypto_create's legacy form) asks for. Strings as the user gave
// them; `key` and `key2` are hex. The caller wipes its copies of the hex strings.
struct CryptoKeySpec {
  std::string name;
  std::string cipher;
  std::string key;
  std::optional<std::string> key2;
  std::optional<std::string> tweak_mode;
};

// A named data encryption key (SPDK's accel crypto key). Immutable after creation.
// Thread safety: safe to read from any thread; the bytes live until the last reference goes.
class CryptoKey {
 public:
  // Validates `spec` with SPDK's rules for the ciphers smad-tgt implements (software AES-CBC and
  // AES-XTS): cipher AES_CBC or AES_XTS; key 16 or 32 bytes of hex; AES_XTS needs key2 of the same size
  // and different from key; AES_CBC takes no key2; tweak_mode absent or SIMPLE_LBA (the other SPDK
  // modes are refused as SPDK's software module refuses them). Errors: EINVAL payload, with a message
  // that names the rule and never contains key material.
  static absl::StatusOr<std::unique_ptr<CryptoKey>> Create(const CryptoKeySpec& spec);
  CryptoKey(const CryptoKey&) = delete;
  CryptoKey& operator=(const CryptoKey&) = delete;

  const std::string& name() const { return name_; }
  Cipher cipher() const { return cipher_; }
  const KeyBytes& key() const { return key_; }
  const KeyBytes& key2() const { return key2_; }  // empty for AES_CBC
  // The parameters as accel_crypto_keys_get and save_config show them: name, cipher, key, then key2 and
  // tweak_mode only when they were given.
  nlohmann::json Describe() const;

 private:
  CryptoKey() = default;
  std::string name_;
  Cipher cipher_ = Cipher::kAesCbc;
  std::string cipher_text_;
  std::optional<std::string> tweak_mode_;
  KeyBytes key_;
  KeyBytes key2_;
};

// The registry of crypto keys (SPDK's accel keyring), in creation order.
// Thread safety: control thread only.
class CryptoKeyStore {
 public:
  CryptoKeyStore() = default;
  CryptoKeyStore(const CryptoKeyStore&) = delete;
  CryptoKeyStore& operator=(const CryptoKeyStore&) = delete;

  // Errors (errno payload): EINVAL as CryptoKey::Create, then EEXIST when the name is taken.
  absl::Status Create(const CryptoKeySpec& spec);
  // nullptr when absent. A holder (a crypto bdev) keeps the key in use: Destroy refuses it meanwhile.
  std::shared_ptr<const CryptoKey> Find(const std::string& name) const;
  // Removes the key; its bytes are wiped once the last reference is gone (at once, since it must not be
  // in use). Errors: ENOENT when absent, EBUSY while something besides the store holds it.
  absl::Status Destroy(const std::string& name);
  std::vector<std::shared_ptr<const CryptoKey>> List() const { return keys_; }
  // save_config entries that recreate every key: accel_crypto_key_create with Describe()'s params.
  nlohmann::json ConfigEntries() const;

 private:
  std::vector<std::shared_ptr<const CryptoKey>> keys_;
};

}  // namespace smad::tgt
