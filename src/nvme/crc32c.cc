// CRC32C (Castagnoli, reflected polynomial 0x82f63b78) for the NVMe/TCP header and data digests.

#include <array>
#include <cstring>

#include "nvme/crc32c_internal.h"
#include "nvme/spec.h"
#include "nvme/tcp_pdu.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace smad::nvme::tcp {
namespace internal {
namespace {

constexpr uint32_t kPolynomial = 0x82f63b78;  // 0x1edc6f41 bit-reversed

using Tables = std::array<std::array<uint32_t, 256>, 8>;

// tables[0][b] is the CRC of byte b; tables[k][b] that of byte b followed by k zero bytes, so eight
// lookups advance the CRC over eight bytes at once.
constexpr Tables MakeTables() {
  Tables tables{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t crc = b;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) != 0 ? kPolynomial : 0);
    tables[0][b] = crc;
  }
  for (size_t k = 1; k < tables.size(); ++k) {
    for (uint32_t b = 0; b < 256; ++b) {
      const uint32_t previous = tables[k - 1][b];
      tables[k][b] = (previous >> 8) ^ tables[0][previous & 0xff];
    }
  }
  return tables;
}

constexpr Tables kTables = MakeTables();
static_assert(kTables[0][0x80] == kPolynomial);

}  // namespace

uint32_t Crc32cUpdatePortable(uint32_t crc, const void* data, size_t size) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  const auto& t = kTables;
  while (size >= 8) {
    const uint32_t low = Load32(p) ^ crc;
    const uint32_t high = Load32(p + 4);
    crc = t[7][low & 0xff] ^ t[6][(low >> 8) & 0xff] ^ t[5][(low >> 16) & 0xff] ^ t[4][low >> 24] ^
          t[3][high & 0xff] ^ t[2][(high >> 8) & 0xff] ^ t[1][(high >> 16) & 0xff] ^ t[0][high >> 24];
    p += 8;
    size -= 8;
  }
  while (size-- > 0) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xff];
  return crc;
}

#if defined(__x86_64__)

bool Crc32cHardwareAvailable() {
  __builtin_cpu_init();  // harmless when already done; needed if called from a static initialiser
  return __builtin_cpu_supports("sse4.2") != 0;
}

__attribute__((target("sse4.2"))) uint32_t Crc32cUpdateHardware(uint32_t crc, const void* data, size_t size) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint64_t crc64 = crc;
  while (size >= 8) {
    uint64_t word;
    std::memcpy(&word, p, sizeof(word));  // unaligned loads are fine on x86
    crc64 = _mm_crc32_u64(crc64, word);
    p += 8;
    size -= 8;
  }
  uint32_t crc32 = static_cast<uint32_t>(crc64);
  while (size-- > 0) crc32 = _mm_crc32_u8(crc32, *p++);
  return crc32;
}

#else

bool Crc32cHardwareAvailable() { return false; }

uint32_t Crc32cUpdateHardware(uint32_t crc, const void* data, size_t size) {
  return Crc32cUpdatePortable(crc, data, size);
}

#endif

}  // namespace internal

namespace {

using UpdateFunction = uint32_t (*)(uint32_t, const void*, size_t);

UpdateFunction SelectUpdate() {
  return internal::Crc32cHardwareAvailable() ? internal::Crc32cUpdateHardware
                                             : internal::Crc32cUpdatePortable;
}

}  // namespace

uint32_t Crc32cUpdate(uint32_t crc, const void* data, size_t size) {
  static const UpdateFunction update = SelectUpdate();
  return update(crc, data, size);
}

uint32_t Crc32c(const void* data, size_t size) { return ~Crc32cUpdate(0xffffffffu, data, size); }

}  // namespace smad::nvme::tcp
