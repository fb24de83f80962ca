// Pure parts of bdev_nvme: SPDK's reconnect parameter rules and the bdev UUID chosen for a namespace.
#include "gtest/gtest.h"
#include "common/status.h"
#include "tgt/bdev_nvme/nvme_bdev.h"
#include "tgt/bdev_nvme/nvme_bdev_module.h"

namespace smad::tgt {
namespace {

bool Valid(int64_t loss, uint32_t delay, uint32_t fast_fail) {
  absl::Status s = CheckNvmeResiliencyParams(loss, delay, fast_fail);
  if (!s.ok()) {
    EXPECT_EQ(StatusErrno(s), EINVAL) << s;
  }
  return s.ok();
}

TEST(NvmeResiliencyParamsTest, FollowsSpdksRules) {
  EXPECT_TRUE(Valid(0, 0, 0));     // no reconnect (SPDK's default)
  EXPECT_TRUE(Valid(-1, 1, 0));    // retry forever
  EXPECT_TRUE(Valid(-1, 2, 2));
  EXPECT_TRUE(Valid(5, 1, 0));
  EXPECT_TRUE(Valid(5, 1, 5));
  EXPECT_TRUE(Valid(5, 5, 0));
  EXPECT_FALSE(Valid(-2, 1, 0));   // below -1
  EXPECT_FALSE(Valid(-1, 0, 0));   // forever needs a delay
  EXPECT_FALSE(Valid(-1, 3, 2));   // fast fail before the first retry
  EXPECT_FALSE(Valid(5, 0, 0));    // a loss timeout needs a delay
  EXPECT_FALSE(Valid(5, 6, 0));    // delay beyond the loss timeout
  EXPECT_FALSE(Valid(5, 2, 1));    // fast fail shorter than the delay
  EXPECT_FALSE(Valid(5, 1, 6));    // fast fail beyond the loss timeout
  EXPECT_FALSE(Valid(0, 1, 0));    // no loss timeout, no delay
  EXPECT_FALSE(Valid(0, 0, 1));
}

TEST(NvmeBdevUuidTest, PrefersNguidThenUuid) {
  nvme::host::NamespaceData ns;
  EXPECT_TRUE(bdev_nvme::NamespaceBdevUuid(ns).IsNull());
  Uuid uuid = *Uuid::Parse("7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c03");
  ns.uuid = uuid;
  EXPECT_EQ(bdev_nvme::NamespaceBdevUuid(ns), uuid);
  ns.nguid = Uuid::Parse("11111111-2222-4333-8444-555555555555")->bytes();
  EXPECT_EQ(bdev_nvme::NamespaceBdevUuid(ns).ToString(), "11111111-2222-4333-8444-555555555555");
}

TEST(NvmeBdevStateTest, NamesAreSpdks) {
  using bdev_nvme::CtrlrState;
  EXPECT_STREQ(bdev_nvme::CtrlrStateName(CtrlrState::kEnabled), "enabled");
  EXPECT_STREQ(bdev_nvme::CtrlrStateName(CtrlrState::kResetting), "resetting");
  EXPECT_STREQ(bdev_nvme::CtrlrStateName(CtrlrState::kReconnectDelayed), "reconnect_is_delayed");
  EXPECT_STREQ(bdev_nvme::CtrlrStateName(CtrlrState::kFailed), "failed");
  EXPECT_STREQ(bdev_nvme::CtrlrStateName(CtrlrState::kDeleting), "deleting");
}

}  // namespace
}  // namespace smad::tgt
