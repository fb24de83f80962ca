#include "common/nqn.h"

#include "gtest/gtest.h"

namespace smad {
namespace {

TEST(NqnTest, AcceptsValidNames) {
  for (const char* good : {"nqn.2016-06.io.spdk:cnode1", "nqn.2014-08.org.nvmexpress.discovery",
                           "nqn.2014-08.org.nvmexpress:uuid:0d3e1f7a-1111-4222-8333-944455556666",
                           "nqn.2016-06.io.spdk", "nqn.2019-12.com.example-corp:sub:with:colons",
                           "nqn.2016-06.io.spdk:vfiouser-0", "nqn.2016-06.io.spdk:ünïcode"}) {
    EXPECT_TRUE(ValidateNqn(good).ok()) << good;
  }
}

TEST(NqnTest, RejectsInvalidNames) {
  std::string too_long = "nqn.2016-06.io.spdk:" + std::string(210, 'a');
  for (const std::string& bad : {std::string("not-an-nqn"), std::string("nqn."), std::string("nqn.2016-6.io.spdk:x"),
                                 std::string("nqn.2016-13.io.spdk:x"), std::string("nqn.2016-06.:x"),
                                 std::string("nqn.2016-06.1io.spdk:x"), std::string("nqn.2016-06.io-.spdk:x"),
                                 std::string("nqn.2016-06.io..spdk:x"), std::string("nqn.2016-06.io.spdk:"),
                                 std::string("nqn.2014-08.org.nvmexpress:uuid:not-a-uuid"), too_long,
                                 std::string("nqn.2016-06.io.spdk:a\nb"), std::string("nqn.2016-06.io.spdk:\xff"),
                                 std::string("nqn.2016-06.io.spdk:../../etc")}) {
    if (bad == "nqn.2016-06.io.spdk:../../etc") {
      // Path characters are legal in an NQN's user part; consumers that build paths must not trust it.
      EXPECT_TRUE(ValidateNqn(bad).ok());
      continue;
    }
    EXPECT_FALSE(ValidateNqn(bad).ok()) << bad;
  }
}

TEST(NqnTest, LengthLimitIsExact) {
  std::string prefix = "nqn.2016-06.io.spdk:";
  EXPECT_TRUE(ValidateNqn(prefix + std::string(kMaxNqnLength - prefix.size(), 'a')).ok());
  EXPECT_FALSE(ValidateNqn(prefix + std::string(kMaxNqnLength - prefix.size() + 1, 'a')).ok());
}

}  // namespace
}  // namespace smad
