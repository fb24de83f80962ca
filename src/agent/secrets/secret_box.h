#pragma once

// Encryption at rest for the secrets smad must keep to restore the target after a restart (volume crypto
// keys). A 256-bit master key lives in a file of its own (mode 0600, in the state directory, created on
// first use); each secret is sealed with AES-256-GCM under a fresh random 96-bit nonce, so the state
// database never holds a key in clear. Copying the database without the key file reveals nothing.
//
// Thread safety: Seal and Open may be called concurrently (they keep no mutable state).

#include <array>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace smad::agent {

class SecretBox {
 public:
  // Reads the master key from `path`, or creates it (O_EXCL, mode 0600) when absent.
  // Errors: FailedPrecondition when the file exists with another size or is readable by group/others,
  // the errno of a failed open/read/write as an ErrnoStatus.
  static absl::StatusOr<std::unique_ptr<SecretBox>> OpenOrCreate(const std::string& path);
  // A box over a given key (tests).
  static std::unique_ptr<SecretBox> FromKey(const std::array<unsigned char, 32>& key);

  ~SecretBox();  // wipes the key
  SecretBox(const SecretBox&) = delete;
  SecretBox& operator=(const SecretBox&) = delete;

  // Seals `plaintext`: base64 of nonce(12) || ciphertext || tag(16). `context` (e.g. the volume id) is
  // authenticated too, so a sealed value cannot be moved to another record. Errors: Internal (OpenSSL).
  absl::StatusOr<std::string> Seal(absl::string_view plaintext, absl::string_view context) const;
  // Opens what Seal made with the same context. Errors: DataLoss when the value is malformed, was made
  // with another master key or context, or was tampered with.
  absl::StatusOr<std::string> Open(absl::string_view sealed, absl::string_view context) const;

 private:
  explicit SecretBox(const std::array<unsigned char, 32>& key) : key_(key) {}
  std::array<unsigned char, 32> key_;
};

}  // namespace smad::agent
