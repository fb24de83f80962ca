#include "agent/secrets/secret_box.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <iterator>

#include "gtest/gtest.h"
#include "support/temp_dir.h"

namespace smad::agent {
namespace {

TEST(SecretBoxTest, SealsAndOpensWithTheSameKeyFileAcrossInstances) {
  smad::testing::TempDir dir;
  std::string path = dir.path() + "/master.key";
  auto first = SecretBox::OpenOrCreate(path);
  ASSERT_TRUE(first.ok()) << first.status();
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 32);

  auto sealed = (*first)->Seal("1234567890abcdef1234567890abcdef", "volume-a");
  ASSERT_TRUE(sealed.ok());
  EXPECT_EQ(sealed->find("1234567890abcdef"), std::string::npos);
  // A second seal of the same text differs (fresh nonce).
  EXPECT_NE(*sealed, *(*first)->Seal("1234567890abcdef1234567890abcdef", "volume-a"));

  auto second = SecretBox::OpenOrCreate(path);  // the process restarted
  ASSERT_TRUE(second.ok());
  auto opened = (*second)->Open(*sealed, "volume-a");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, "1234567890abcdef1234567890abcdef");
}

TEST(SecretBoxTest, RefusesAnotherContextTamperingAndAnotherKey) {
  std::array<unsigned char, 32> key{};
  key[0] = 1;
  auto box = SecretBox::FromKey(key);
  auto sealed = box->Seal("secret", "volume-a");
  ASSERT_TRUE(sealed.ok());
  EXPECT_TRUE(absl::IsDataLoss(box->Open(*sealed, "volume-b").status()));
  std::string tampered = *sealed;
  tampered[tampered.size() / 2] = tampered[tampered.size() / 2] == 'A' ? 'B' : 'A';
  EXPECT_TRUE(absl::IsDataLoss(box->Open(tampered, "volume-a").status()));
  EXPECT_TRUE(absl::IsDataLoss(box->Open("not base64 !!", "volume-a").status()));
  EXPECT_TRUE(absl::IsDataLoss(box->Open("", "volume-a").status()));
  key[0] = 2;
  auto other = SecretBox::FromKey(key);
  EXPECT_TRUE(absl::IsDataLoss(other->Open(*sealed, "volume-a").status()));
}

TEST(SecretBoxTest, RefusesKeyFilesOthersCanReadOrOfTheWrongSize) {
  smad::testing::TempDir dir;
  std::string path = dir.path() + "/master.key";
  { std::ofstream(path) << std::string(32, 'k'); }
  chmod(path.c_str(), 0644);
  EXPECT_TRUE(absl::IsFailedPrecondition(SecretBox::OpenOrCreate(path).status()));
  chmod(path.c_str(), 0600);
  EXPECT_TRUE(SecretBox::OpenOrCreate(path).ok());
  { std::ofstream(path) << std::string(31, 'k'); }
  EXPECT_TRUE(absl::IsFailedPrecondition(SecretBox::OpenOrCreate(path).status()));
}

}  // namespace
}  // namespace smad::agent
