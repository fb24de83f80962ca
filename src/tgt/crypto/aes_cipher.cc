#include "tgt/crypto/aes_cipher.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <climits>
#include <cstring>

namespace smad::tgt {

const char* CipherName(Cipher cipher) {
  switch (cipher) {
    case Cipher::kAesCbc: return "AES_CBC";
    case Cipher::kAesXts: return "AES_XTS";
  }
  return "unknown";
}

std::optional<Cipher> ParseCipher(std::string_view name) {
  if (name == "AES_CBC") return Cipher::kAesCbc;
  if (name == "AES_XTS") return Cipher::kAesXts;
  return std::nullopt;
}

CipherIv BlockIv(Cipher cipher, uint64_t lba) {
  CipherIv iv{};
  size_t at = cipher == Cipher::kAesXts ? 8 : 0;
  for (size_t i = 0; i < 8; ++i) iv[at + i] = static_cast<uint8_t>(lba >> (8 * i));
  return iv;
}

absl::StatusOr<std::unique_ptr<AesCipher>> AesCipher::Create(Cipher cipher, absl::Span<const uint8_t> key,
                                                              absl::Span<const uint8_t> key2, bool encrypt) {
  const EVP_CIPHER* evp = nullptr;
  // OpenSSL's XTS key is Key1 || Key2 (data key, then tweak key).
  uint8_t joined[64];
  size_t joined_len = 0;
  if (cipher == Cipher::kAesCbc) {
    if (!key2.empty()) return absl::InvalidArgumentError("AES_CBC takes no key2");
    if (key.size() == 16) evp = EVP_aes_128_cbc();
    if (key.size() == 32) evp = EVP_aes_256_cbc();
    if (evp == nullptr) return absl::InvalidArgumentError("AES_CBC key must be 16 or 32 bytes");
    std::memcpy(joined, key.data(), key.size());
    joined_len = key.size();
  } else {
    if (key.size() != key2.size()) return absl::InvalidArgumentError("AES_XTS keys differ in size");
    if (key.size() == 16) evp = EVP_aes_128_xts();
    if (key.size() == 32) evp = EVP_aes_256_xts();
    if (evp == nullptr) return absl::InvalidArgumentError("AES_XTS keys must be 16 or 32 bytes each");
    std::memcpy(joined, key.data(), key.size());
    std::memcpy(joined + key.size(), key2.data(), key2.size());
    joined_len = key.size() * 2;
  }
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  bool ok = ctx != nullptr && EVP_CipherInit_ex(ctx, evp, nullptr, joined, nullptr, encrypt ? 1 : 0) == 1 &&
            EVP_CIPHER_CTX_set_padding(ctx, 0) == 1;
  OPENSSL_cleanse(joined, joined_len);
  if (!ok) {
    EVP_CIPHER_CTX_free(ctx);
    return absl::InternalError("OpenSSL refused the cipher key");
  }
  return std::unique_ptr<AesCipher>(new AesCipher(ctx));
}

AesCipher::~AesCipher() { EVP_CIPHER_CTX_free(ctx_); }

bool AesCipher::Process(const CipherIv& iv, const uint8_t* in, uint8_t* out, size_t len) {
  if (len == 0 || len % kAesBlockBytes != 0 || len > INT_MAX) return false;
  // A null cipher and key keep the key schedule and only reset the IV and the chaining state.
  if (EVP_CipherInit_ex(ctx_, nullptr, nullptr, nullptr, iv.data(), -1) != 1) return false;
  int written = 0;
  if (EVP_CipherUpdate(ctx_, out, &written, in, static_cast<int>(len)) != 1) return false;
  return static_cast<size_t>(written) == len;
}

}  // namespace smad::tgt
