#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

namespace smad::tgt {

// The ciphers of SPDK's accel framework (accel_crypto_key_create's "cipher").
enum class Cipher : uint8_t { kAesCbc, kAesXts };

// "AES_CBC" / "AES_XTS".
const char* CipherName(Cipher cipher);
// The inverse of CipherName; nullopt for any other string (case-sensitive, as SPDK compares).
std::optional<Cipher> ParseCipher(std::string_view name);

inline constexpr size_t kAesBlockBytes = 16;
using CipherIv = std::array<uint8_t, 16>;

// The IV (CBC) or tweak (XTS) SPDK uses for the logical block at `lba` in the default tweak mode
// (SIMPLE_LBA), so that data written by smad-tgt reads back under SPDK and the other way round:
// - AES_XTS, as SPDK's software accel module (accel_sw) computes it: bytes 0-7 zero, bytes 8-15 the LBA
//   as a little-endian 64-bit integer.
// - AES_CBC, which only SPDK's DPDK cryptodev module implements: bytes 0-7 the LBA as a little-endian
//   64-bit integer, bytes 8-15 zero.
// The data unit is one logical block of the crypto bdev.
CipherIv BlockIv(Cipher cipher, uint64_t lba);

// One direction (encrypt or decrypt) of one key, as an OpenSSL EVP context with the key schedule
// computed once. Each call to Process is one independent data unit with its own IV.
//
// Thread safety: none; each reactor owns its own instances (no locks on the I/O path).
class AesCipher {
 public:
  // `key` is the data key; for AES_XTS `key2` is the tweak key (IEEE 1619 Key2), empty for AES_CBC. Key
  // sizes: 16 or 32 bytes each. Errors: InvalidArgument for a size OpenSSL has no cipher for, Internal
  // when OpenSSL fails. The caller keeps the key bytes; copies made here are wiped.
  static absl::StatusOr<std::unique_ptr<AesCipher>> Create(Cipher cipher, absl::Span<const uint8_t> key,
                                                           absl::Span<const uint8_t> key2, bool encrypt);
  ~AesCipher();  // frees (and so wipes) the key schedule
  AesCipher(const AesCipher&) = delete;
  AesCipher& operator=(const AesCipher&) = delete;

  // Transforms `len` bytes (a positive multiple of 16) from `in` to `out` with `iv`. `in` may equal `out`
  // (in place); other overlaps are not allowed. Returns false when OpenSSL refuses.
  [[nodiscard]] bool Process(const CipherIv& iv, const uint8_t* in, uint8_t* out, size_t len);

 private:
  explicit AesCipher(EVP_CIPHER_CTX* ctx) : ctx_(ctx) {}
  EVP_CIPHER_CTX* ctx_;
};

}  // namespace smad::tgt
