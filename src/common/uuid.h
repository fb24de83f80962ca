#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace smad {

// A 128-bit UUID in RFC 4122 byte order (the canonical string's hex digits in order).
// Value type; thread compatible.
class Uuid {
 public:
  Uuid() = default;
  explicit Uuid(const std::array<uint8_t, 16>& bytes) : bytes_(bytes) {}

  // Parses the canonical 36-character form (either case). Errors: InvalidArgument.
  static absl::StatusOr<Uuid> Parse(absl::string_view text);
  // Parses 32 hex digits without dashes (an NVMe NGUID as SPDK prints it). Errors: InvalidArgument.
  static absl::StatusOr<Uuid> ParseHex(absl::string_view text);
  // Builds from exactly 16 raw bytes. Errors: InvalidArgument.
  static absl::StatusOr<Uuid> FromBytes(absl::string_view bytes);
  // A random version-4 UUID from the OS's CSPRNG.
  static Uuid Generate();

  bool IsNull() const;
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  // Lowercase canonical form: xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.
  std::string ToString() const;
  // 32 hex digits, no dashes; uppercase when `upper`.
  std::string ToHex(bool upper) const;

  friend bool operator==(const Uuid&, const Uuid&) = default;

 private:
  std::array<uint8_t, 16> bytes_{};
};

}  // namespace smad
