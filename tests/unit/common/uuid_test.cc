#include "common/uuid.h"

#include <set>

#include "gtest/gtest.h"

namespace smad {
namespace {

TEST(UuidTest, ParsesAndFormatsCanonicalForm) {
  auto uuid = Uuid::Parse("7B2B4A6E-0c1d-4c53-9d0a-3f1e2a9b8c01");
  ASSERT_TRUE(uuid.ok());
  EXPECT_EQ(uuid->ToString(), "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c01");
  EXPECT_EQ(uuid->ToHex(true), "7B2B4A6E0C1D4C539D0A3F1E2A9B8C01");
  EXPECT_EQ(uuid->bytes()[0], 0x7b);
  EXPECT_EQ(uuid->bytes()[15], 0x01);
}

TEST(UuidTest, RejectsMalformedText) {
  for (const char* bad : {"", "7b2b4a6e0c1d4c539d0a3f1e2a9b8c01", "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c0",
                          "7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c0g", "7b2b4a6e-0c1d-4c53-9d0a--f1e2a9b8c01",
                          "7b2b4a6e00c1d-4c53-9d0a-3f1e2a9b8c01"}) {
    EXPECT_FALSE(Uuid::Parse(bad).ok()) << bad;
  }
}

TEST(UuidTest, FromBytesNeedsExactlySixteen) {
  EXPECT_FALSE(Uuid::FromBytes("abc").ok());
  EXPECT_FALSE(Uuid::FromBytes(std::string(17, 'x')).ok());
  auto uuid = Uuid::FromBytes(std::string("\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff", 16));
  ASSERT_TRUE(uuid.ok());
  EXPECT_EQ(uuid->ToString(), "00112233-4455-6677-8899-aabbccddeeff");
}

TEST(UuidTest, GeneratesDistinctVersion4Uuids) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    Uuid u = Uuid::Generate();
    EXPECT_EQ(u.bytes()[6] >> 4, 4);
    EXPECT_EQ(u.bytes()[8] & 0xc0, 0x80);
    seen.insert(u.ToString());
  }
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_TRUE(Uuid().IsNull());
}

}  // namespace
}  // namespace smad
