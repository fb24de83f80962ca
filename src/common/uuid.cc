#include "common/uuid.h"

#include <sys/random.h>

#include <cstdio>

#include "absl/status/status.h"

namespace smad {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

absl::StatusOr<Uuid> Uuid::ParseHex(absl::string_view text) {
  if (text.size() != 32) return absl::InvalidArgumentError("expected 32 hex digits");
  std::array<uint8_t, 16> bytes;
  for (size_t i = 0; i < 16; ++i) {
    int hi = HexValue(text[2 * i]);
    int lo = HexValue(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return absl::InvalidArgumentError("invalid hex digit");
    bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return Uuid(bytes);
}

absl::StatusOr<Uuid> Uuid::Parse(absl::string_view text) {
  if (text.size() != 36 || text[8] != '-' || text[13] != '-' || text[18] != '-' || text[23] != '-') {
    return absl::InvalidArgumentError("UUID must have the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx");
  }
  std::string hex;
  hex.reserve(32);
  for (char c : text) {
    if (c != '-') hex.push_back(c);
  }
  if (hex.size() != 32) return absl::InvalidArgumentError("UUID has misplaced dashes");
  return ParseHex(hex);
}

absl::StatusOr<Uuid> Uuid::FromBytes(absl::string_view bytes) {
  if (bytes.size() != 16) return absl::InvalidArgumentError("UUID must be exactly 16 bytes");
  std::array<uint8_t, 16> out;
  for (size_t i = 0; i < 16; ++i) out[i] = static_cast<uint8_t>(bytes[i]);
  return Uuid(out);
}

Uuid Uuid::Generate() {
  std::array<uint8_t, 16> bytes{};
  size_t filled = 0;
  while (filled < bytes.size()) {
    ssize_t n = getrandom(bytes.data() + filled, bytes.size() - filled, 0);
    if (n > 0) filled += static_cast<size_t>(n);
  }
  bytes[6] = static_cast<uint8_t>((bytes[6] & 0x0f) | 0x40);  // version 4
  bytes[8] = static_cast<uint8_t>((bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return Uuid(bytes);
}

bool Uuid::IsNull() const {
  for (uint8_t b : bytes_) {
    if (b != 0) return false;
  }
  return true;
}

std::string Uuid::ToHex(bool upper) const {
  static constexpr char kLower[] = "0123456789abcdef";
  static constexpr char kUpper[] = "0123456789ABCDEF";
  const char* digits = upper ? kUpper : kLower;
  std::string out;
  out.reserve(32);
  for (uint8_t b : bytes_) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0xf]);
  }
  return out;
}

std::string Uuid::ToString() const {
  std::string hex = ToHex(false);
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" + hex.substr(16, 4) +
         "-" + hex.substr(20);
}

}  // namespace smad
