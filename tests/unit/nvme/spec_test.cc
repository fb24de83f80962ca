#include "nvme/spec.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nvme/tcp_pdu.h"
#include "unit/nvme/test_files.h"

namespace smad::nvme {
namespace {

TEST(PaddedFieldTest, SpacePaddedRoundTrip) {
  uint8_t field[20];
  PutPadded(field, sizeof(field), "SPDKREMOTE0", 11, ' ');
  EXPECT_EQ(std::string(reinterpret_cast<char*>(field), sizeof(field)), "SPDKREMOTE0         ");
  EXPECT_EQ(GetPadded(field, sizeof(field)), "SPDKREMOTE0");
}

TEST(PaddedFieldTest, NulPaddedRoundTrip) {
  uint8_t field[256];
  std::memset(field, 0xaa, sizeof(field));
  const std::string nqn = "nqn.2016-06.io.spdk:remote0";
  PutPadded(field, sizeof(field), nqn.data(), nqn.size(), '\0');
  EXPECT_EQ(field[nqn.size()], 0);
  EXPECT_EQ(field[255], 0);
  EXPECT_EQ(GetPadded(field, sizeof(field)), nqn);
}

TEST(PaddedFieldTest, TruncatesAndHandlesFullFields) {
  uint8_t field[8];
  PutPadded(field, sizeof(field), "0123456789", 10, ' ');
  EXPECT_EQ(GetPadded(field, sizeof(field)), "01234567");
  PutPadded(field, sizeof(field), "", 0, ' ');
  EXPECT_EQ(GetPadded(field, sizeof(field)), "");
  PutPadded(field, sizeof(field), "ab", 2, '\0');
  EXPECT_EQ(GetPadded(field, sizeof(field)), "ab");
}

TEST(CommandBuilderTest, InitClearsAndSetsIdentity) {
  uint8_t sqe[kSqeSize];
  std::memset(sqe, 0xff, sizeof(sqe));
  CommandBuilder::Init(sqe, io::kRead, 0x1234, 7);
  const Command* command = reinterpret_cast<const Command*>(sqe);
  EXPECT_EQ(command->opcode(), io::kRead);
  EXPECT_EQ(command->cid(), 0x1234);
  EXPECT_EQ(command->nsid(), 7u);
  EXPECT_EQ(command->flags(), 0);
  for (size_t i = 8; i < kSqeSize; ++i) EXPECT_EQ(sqe[i], 0) << i;
}

TEST(CommandBuilderTest, SglDescriptors) {
  uint8_t sqe[kSqeSize];
  CommandBuilder::Init(sqe, io::kWrite, 1, 1);
  sqe[1] = 0x01;  // a FUSE bit, which SetSgl keeps
  CommandBuilder::SetSgl(sqe, /*in_capsule=*/true, 4096);
  const Command* command = reinterpret_cast<const Command*>(sqe);
  EXPECT_EQ(command->flags(), 0x41);
  EXPECT_EQ(command->sgl_address(), 0u);
  EXPECT_EQ(command->sgl_length(), 4096u);
  EXPECT_EQ(command->sgl_type(), kSglDataBlockOffset);

  CommandBuilder::SetSgl(sqe, /*in_capsule=*/false, 65536);
  EXPECT_EQ(command->flags(), 0x41);
  EXPECT_EQ(command->sgl_length(), 65536u);
  EXPECT_EQ(command->sgl_type(), kSglTransportDataBlock);
}

// The SQEs an SPDK initiator sent (identify.pcap): Connect with 1024 bytes in capsule, and a Property Get
// with an empty transport data block. Our builder produces the same bytes.
TEST(CommandBuilderTest, MatchesCapturedCommands) {
  const std::vector<uint8_t> stream = test::ReadCaptureStream("identify.0.h2c.bin");
  ASSERT_GT(stream.size(), tcp::kIcSize + 2 * tcp::kCapsuleCmdHeaderSize);
  const uint8_t* connect = stream.data() + tcp::kIcSize + tcp::kCommonHeaderSize;
  ASSERT_EQ(connect[0], kFabricsOpcode);
  ASSERT_EQ(connect[4], fabrics::kConnect);
  uint8_t sqe[kSqeSize];
  CommandBuilder::Init(sqe, kFabricsOpcode, Load16(connect + 2), 0);
  sqe[4] = fabrics::kConnect;
  CommandBuilder::SetSgl(sqe, /*in_capsule=*/true, kConnectDataSize);
  EXPECT_EQ(std::memcmp(sqe, connect, 40), 0);

  const size_t second = tcp::kIcSize + Load32(stream.data() + tcp::kIcSize + 4);
  const uint8_t* property_get = stream.data() + second + tcp::kCommonHeaderSize;
  ASSERT_EQ(property_get[4], fabrics::kPropertyGet);
  CommandBuilder::Init(sqe, kFabricsOpcode, Load16(property_get + 2), 0);
  sqe[4] = fabrics::kPropertyGet;
  CommandBuilder::SetSgl(sqe, /*in_capsule=*/false, 0);
  EXPECT_EQ(std::memcmp(sqe, property_get, 40), 0);
}

TEST(StatusTest, EncodeDecode) {
  const Status status = Specific(sc_specific::kConnectInvalidHost);
  const uint16_t word = status.Encode();
  EXPECT_EQ(word, (0x84 << 1) | (1 << 9) | (1 << 15));
  const Status decoded = Status::Decode(word);
  EXPECT_EQ(decoded.sct, kSctCommandSpecific);
  EXPECT_EQ(decoded.sc, sc_specific::kConnectInvalidHost);
  EXPECT_TRUE(decoded.dnr);
  EXPECT_FALSE(decoded.ok());
  EXPECT_TRUE(Status::Decode(0).ok());
}

}  // namespace
}  // namespace smad::nvme
