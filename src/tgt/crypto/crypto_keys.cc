#include "tgt/crypto/crypto_keys.h"

#include <openssl/crypto.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "common/status.h"

namespace smad::tgt {
namespace {

absl::Status Invalid(std::string_view key_name, std::string_view rule) {
  return ErrnoStatus(EINVAL, "crypto key '" + std::string(key_name) + "': " + std::string(rule));
}

}  // namespace

bool KeyBytes::DecodeHex(std::string_view hex) {
  Wipe();
  if (hex.size() % 2 != 0 || hex.size() / 2 > kMaxBytes) return false;
  for (size_t i = 0; i < hex.size(); ++i) {
    char c = hex[i];
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) {
      Wipe();
      return false;
    }
    int v = absl::ascii_isdigit(static_cast<unsigned char>(c)) ? c - '0' : absl::ascii_tolower(c) - 'a' + 10;
    if (absl::ascii_isupper(static_cast<unsigned char>(c))) upper_case_digits_ |= uint64_t{1} << i;
    bytes_[i / 2] = static_cast<uint8_t>(i % 2 == 0 ? v << 4 : bytes_[i / 2] | v);
  }
  size_ = static_cast<uint8_t>(hex.size() / 2);
  return true;
}

std::string KeyBytes::ToHex() const {
  std::string out(size_ * 2, '0');
  for (size_t i = 0; i < out.size(); ++i) {
    int v = i % 2 == 0 ? bytes_[i / 2] >> 4 : bytes_[i / 2] & 0xf;
    bool upper = (upper_case_digits_ >> i) & 1;
    out[i] = static_cast<char>(v < 10 ? '0' + v : (upper ? 'A' : 'a') + v - 10);
  }
  return out;
}

bool KeyBytes::SameKeyAs(const KeyBytes& other) const {
  return size_ == other.size_ && CRYPTO_memcmp(bytes_.data(), other.bytes_.data(), size_) == 0;
}

void KeyBytes::Wipe() {
  OPENSSL_cleanse(bytes_.data(), bytes_.size());
  OPENSSL_cleanse(&upper_case_digits_, sizeof(upper_case_digits_));
  size_ = 0;
}

absl::StatusOr<std::unique_ptr<CryptoKey>> CryptoKey::Create(const CryptoKeySpec& spec) {
  auto key = std::unique_ptr<CryptoKey>(new CryptoKey());
  key->name_ = spec.name;
  std::optional<Cipher> cipher = ParseCipher(spec.cipher);
  if (!cipher) return Invalid(spec.name, "unknown cipher");
  key->cipher_ = *cipher;
  key->cipher_text_ = spec.cipher;
  if (spec.key.empty()) return Invalid(spec.name, "key is empty");
  if (!key->key_.DecodeHex(spec.key)) return Invalid(spec.name, "key is not hex of a supported length");
  if (spec.key2) {
    if (spec.key2->empty()) return Invalid(spec.name, "key2 is empty");
    if (!key->key2_.DecodeHex(*spec.key2)) return Invalid(spec.name, "key2 is not hex of a supported length");
  }
  key->tweak_mode_ = spec.tweak_mode;
  if (spec.tweak_mode && *spec.tweak_mode != "SIMPLE_LBA") return Invalid(spec.name, "unsupported tweak mode");
  if (key->key_.size() != 16 && key->key_.size() != 32) return Invalid(spec.name, "key must be 128 or 256 bits");
  if (*cipher == Cipher::kAesXts) {
    if (key->key2_.empty()) return Invalid(spec.name, "AES_XTS key2 is missing");
    if (key->key2_.size() != key->key_.size()) return Invalid(spec.name, "AES_XTS key and key2 differ in size");
    if (key->key_.SameKeyAs(key->key2_)) return Invalid(spec.name, "AES_XTS identical keys are not secure");
  } else if (!key->key2_.empty()) {
    return Invalid(spec.name, "AES_CBC doesn't use key2");
  }
  return key;
}

nlohmann::json CryptoKey::Describe() const {
  nlohmann::json j = {{"name", name_}, {"cipher", cipher_text_}, {"key", key_.ToHex()}};
  if (!key2_.empty()) j["key2"] = key2_.ToHex();
  if (tweak_mode_) j["tweak_mode"] = *tweak_mode_;
  return j;
}

absl::Status CryptoKeyStore::Create(const CryptoKeySpec& spec) {
  ASSIGN_OR_RETURN(std::unique_ptr<CryptoKey> key, CryptoKey::Create(spec));
  if (Find(spec.name) != nullptr) return ErrnoStatus(EEXIST, "crypto key '" + spec.name + "' exists");
  keys_.push_back(std::move(key));
  return absl::OkStatus();
}

std::shared_ptr<const CryptoKey> CryptoKeyStore::Find(const std::string& name) const {
  for (const auto& key : keys_) {
    if (key->name() == name) return key;
  }
  return nullptr;
}

absl::Status CryptoKeyStore::Destroy(const std::string& name) {
  auto it = std::find_if(keys_.begin(), keys_.end(), [&](const auto& key) { return key->name() == name; });
  if (it == keys_.end()) return ErrnoStatus(ENOENT, "crypto key '" + name + "' not found");
  if (it->use_count() > 1) return ErrnoStatus(EBUSY, "crypto key '" + name + "' is in use");
  keys_.erase(it);
  return absl::OkStatus();
}

nlohmann::json CryptoKeyStore::ConfigEntries() const {
  nlohmann::json entries = nlohmann::json::array();
  for (const auto& key : keys_) {
    entries.push_back({{"method", "accel_crypto_key_create"}, {"params", key->Describe()}});
  }
  return entries;
}

}  // namespace smad::tgt
