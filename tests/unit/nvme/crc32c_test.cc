#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nvme/crc32c_internal.h"
#include "nvme/spec.h"
#include "nvme/tcp_pdu.h"
#include "unit/nvme/test_files.h"

namespace smad::nvme::tcp {
namespace {

using test::FromHex;
using test::ReadCaptureStream;

uint32_t Crc(const std::string& text) { return Crc32c(text.data(), text.size()); }
uint32_t Crc(const std::vector<uint8_t>& bytes) { return Crc32c(bytes.data(), bytes.size()); }

// The one-shot CRC through each implementation.
uint32_t Portable(const uint8_t* data, size_t size) {
  return ~internal::Crc32cUpdatePortable(0xffffffffu, data, size);
}
uint32_t Hardware(const uint8_t* data, size_t size) {
  return ~internal::Crc32cUpdateHardware(0xffffffffu, data, size);
}

std::vector<uint8_t> RandomBytes(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> bytes(size);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  return bytes;
}

TEST(Crc32cTest, KnownVectors) {
  EXPECT_EQ(Crc32c(nullptr, 0), 0u);
  EXPECT_EQ(Crc("123456789"), 0xe3069283u);
  EXPECT_EQ(Crc("a"), 0xc1d04330u);
  // RFC 3720 (iSCSI) B.4.
  EXPECT_EQ(Crc(std::vector<uint8_t>(32, 0x00)), 0x8a9136aau);
  EXPECT_EQ(Crc(std::vector<uint8_t>(32, 0xff)), 0x62a8ab43u);
  std::vector<uint8_t> ascending(32), descending(32);
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<uint8_t>(i);
    descending[i] = static_cast<uint8_t>(31 - i);
  }
  EXPECT_EQ(Crc(ascending), 0x46dd794eu);
  EXPECT_EQ(Crc(descending), 0x113fdb5cu);
}

TEST(Crc32cTest, PortableAndHardwareAgreeOnEveryLengthAndAlignment) {
  const std::vector<uint8_t> bytes = RandomBytes(1100, 7);
  for (size_t offset = 0; offset < 9; ++offset) {
    for (size_t size = 0; size + offset <= 300; ++size) {
      const uint32_t portable = Portable(bytes.data() + offset, size);
      EXPECT_EQ(Crc32c(bytes.data() + offset, size), portable) << offset << "+" << size;
      if (internal::Crc32cHardwareAvailable()) {
        EXPECT_EQ(Hardware(bytes.data() + offset, size), portable) << offset << "+" << size;
      }
    }
  }
  EXPECT_EQ(Portable(bytes.data(), bytes.size()), Crc32c(bytes.data(), bytes.size()));
}

TEST(Crc32cTest, PortableMatchesKnownVector) {
  const std::string text = "123456789";
  EXPECT_EQ(Portable(reinterpret_cast<const uint8_t*>(text.data()), text.size()), 0xe3069283u);
}

TEST(Crc32cTest, IncrementalEqualsOneShot) {
  const std::vector<uint8_t> bytes = RandomBytes(70000, 11);
  const uint32_t whole = Crc(bytes);
  std::mt19937 rng(3);
  for (int round = 0; round < 20; ++round) {
    uint32_t crc = 0xffffffffu;
    size_t pos = 0;
    while (pos < bytes.size()) {
      const size_t piece = std::min<size_t>(bytes.size() - pos, rng() % 5000);
      crc = Crc32cUpdate(crc, bytes.data() + pos, piece);
      pos += piece;
    }
    EXPECT_EQ(~crc, whole);
  }
}

// Header digests of PDUs captured between an SPDK initiator and target with digests on
// (perf-randrw-64k-digests.pcap); the digest is stored little endian after the header.
TEST(Crc32cTest, HeaderDigestsFromCapture) {
  const char* kPdus[] = {
      // CapsuleResp for the I/O queue Connect.
      "050118001c00000007000000000000000100000000000000a4a3c315",
      // R2T cccid 0 ttag 2 length 65536, and cccid 1 ttag 3.
      "090118001c00000000000200000000000000010000000000918df9ec",
      "090118001c0000000100030000000000000001000000000029d5f24a",
      // CapsuleCmd: I/O Write, 64 KiB transport data block.
      "040148004c0000000140000001000000000000000000000000000000000000000000000000000000000001000000005a"
      "d01b0000000000000f0000000000000000000000000000002b519dcc",
  };
  for (const char* hex : kPdus) {
    const std::vector<uint8_t> pdu = FromHex(hex);
    ASSERT_GE(pdu.size(), 28u);
    const size_t hlen = pdu[2];
    ASSERT_EQ(pdu.size(), hlen + kDigestSize) << hex;
    EXPECT_EQ(Crc32c(pdu.data(), hlen), Load32(pdu.data() + hlen)) << hex;
  }
}

// Header and data digests of the first capsule (Connect, 1024 bytes of in-capsule data) and of the first
// 64 KiB H2CData PDU of the captured I/O queue.
TEST(Crc32cTest, DataDigestsFromCapture) {
  const std::vector<uint8_t> stream = ReadCaptureStream("perf-randrw-64k-digests.1.h2c.bin");
  ASSERT_GT(stream.size(), 100000u);
  const uint8_t* connect = stream.data() + kIcSize;
  ASSERT_EQ(connect[0], kCapsuleCmd);
  ASSERT_EQ(Load32(connect + 4), 72u + 4 + 1024 + 4);
  EXPECT_EQ(Crc32c(connect, 72), Load32(connect + 72));
  EXPECT_EQ(Crc32c(connect, 72), 0xa261a150u);
  EXPECT_EQ(Crc32c(connect + 76, 1024), Load32(connect + 76 + 1024));

  // Find the first H2CData PDU by walking the PDUs.
  size_t pos = 0;
  while (pos + 8 <= stream.size() && stream[pos] != kH2CData) pos += Load32(stream.data() + pos + 4);
  ASSERT_LT(pos + 8, stream.size());
  const uint8_t* data_pdu = stream.data() + pos;
  const uint32_t plen = Load32(data_pdu + 4);
  const uint8_t pdo = data_pdu[3];
  ASSERT_EQ(plen, 24u + 4 + 65536 + 4);
  ASSERT_LE(pos + plen, stream.size());
  EXPECT_EQ(Crc32c(data_pdu, 24), Load32(data_pdu + 24));
  EXPECT_EQ(Crc32c(data_pdu + pdo, 65536), Load32(data_pdu + pdo + 65536));
}

}  // namespace
}  // namespace smad::nvme::tcp
