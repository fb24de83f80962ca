// In-process tests of the bdev layer: channels on real reactors, modules, hot-remove, QoS.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <future>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "support/bdev_layer_fixture.h"
#include "support/temp_dir.h"
#include "tgt/bdev/aio_bdev.h"
#include "tgt/bdev/bdev_manager.h"
#include "tgt/bdev/memory_bdevs.h"

namespace smad::tgt {
namespace {

// A control reactor and two data reactors, all on their own threads.
class BdevTest : public testing::BdevLayerTest {
 protected:
  template <typename F>
  void OnReactor(size_t i, F fn) {
    std::promise<void> done;
    reactors_.reactor(i).Post([&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }
  void Register(absl::StatusOr<std::unique_ptr<Bdev>> bdev) {
    ASSERT_TRUE(bdev.ok()) << bdev.status();
    absl::Status status;
    OnControl([&] { status = manager_->Register(std::move(bdev).value()); });
    ASSERT_TRUE(status.ok()) << status;
  }
  Bdev* Find(const std::string& name) {
    Bdev* bdev = nullptr;
    OnControl([&] { bdev = manager_->Find(name); });
    return bdev;
  }

  // Runs one I/O on reactor `i` and waits for its status.
  int DoIo(size_t i, Bdev* bdev, IoType type, uint64_t lba, uint64_t blocks, void* buf) {
    std::promise<int> result;
    iovec iov{buf, blocks * bdev->block_size()};
    struct Ctx {
      std::promise<int>* result;
      Bdev* bdev;
      BdevChannel* channel;
      iovec iov;
    };
    auto* ctx = new Ctx{&result, bdev, nullptr, iov};
    reactors_.reactor(i).Post([ctx, type, lba, blocks]() mutable {
      ctx->channel = ctx->bdev->AcquireChannel();
      int rc = ctx->channel->Submit(
          type, lba, blocks, &ctx->iov, 1,
          [](void* arg, int status) {
            auto* c = static_cast<Ctx*>(arg);
            c->bdev->ReleaseChannel(c->channel);
            c->result->set_value(status);
            delete c;
          },
          ctx);
      if (rc != 0) {
        ctx->bdev->ReleaseChannel(ctx->channel);
        ctx->result->set_value(rc);
        delete ctx;
      }
    });
    return result.get_future().get();
  }

};

absl::StatusOr<std::unique_ptr<Bdev>> MakeMalloc(const std::string& name, uint64_t blocks, uint32_t bs) {
  auto b = MallocBdev::Create({name, Uuid(), bs, blocks});
  if (!b.ok()) return b.status();
  return std::unique_ptr<Bdev>(std::move(b).value());
}

TEST_F(BdevTest, MallocRoundTripAcrossReactors) {
  Register(MakeMalloc("m", 256, 512));
  Bdev* bdev = Find("m");
  ASSERT_NE(bdev, nullptr);
  std::vector<uint8_t> out(4096), in(4096);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(i * 7 + 3);
  EXPECT_EQ(DoIo(0, bdev, IoType::kWrite, 8, 8, out.data()), 0);
  EXPECT_EQ(DoIo(1, bdev, IoType::kRead, 8, 8, in.data()), 0);
  EXPECT_EQ(in, out);
  EXPECT_EQ(DoIo(1, bdev, IoType::kWriteZeroes, 9, 1, in.data()), 0);
  EXPECT_EQ(DoIo(0, bdev, IoType::kRead, 8, 8, in.data()), 0);
  EXPECT_TRUE(std::all_of(in.begin() + 512, in.begin() + 1024, [](uint8_t b) { return b == 0; }));
  EXPECT_EQ(in[0], out[0]);
}

TEST_F(BdevTest, RejectsOutOfRangeAndMismatchedIo) {
  Register(MakeMalloc("m", 16, 512));
  Bdev* bdev = Find("m");
  std::vector<uint8_t> buf(8192);
  EXPECT_EQ(DoIo(0, bdev, IoType::kRead, 15, 2, buf.data()), -EINVAL);
  EXPECT_EQ(DoIo(0, bdev, IoType::kRead, UINT64_MAX, 1, buf.data()), -EINVAL);
  EXPECT_EQ(DoIo(0, bdev, IoType::kRead, 0, 0, buf.data()), -EINVAL);
  EXPECT_EQ(DoIo(0, bdev, IoType::kRead, 0, 16, buf.data()), 0);
}

TEST_F(BdevTest, IoStatsAreSummedOverReactors) {
  Register(MakeMalloc("m", 64, 512));
  Bdev* bdev = Find("m");
  std::vector<uint8_t> buf(512);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(DoIo(i % 2, bdev, IoType::kRead, i, 1, buf.data()), 0);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(DoIo(i % 2, bdev, IoType::kWrite, i, 1, buf.data()), 0);
  std::promise<std::vector<IoStats>> stats;
  control_.Post([&] { manager_->GatherStats({bdev}, [&](std::vector<IoStats> s) { stats.set_value(s); }); });
  auto s = stats.get_future().get();
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].num_read_ops, 10u);
  EXPECT_EQ(s[0].bytes_read, 5120u);
  EXPECT_EQ(s[0].num_write_ops, 3u);
}

TEST_F(BdevTest, HotRemoveNotifiesHoldersAndWaitsForThem) {
  Register(MakeMalloc("m", 64, 512));
  std::unique_ptr<BdevDesc> desc;
  std::atomic<bool> notified{false};
  OnControl([&] {
    auto d = manager_->Open("m", [&] { notified = true; });
    ASSERT_TRUE(d.ok());
    desc = std::move(d).value();
  });
  std::promise<absl::Status> deleted;
  OnControl([&] { manager_->Unregister("m", nullptr, [&](absl::Status s) { deleted.set_value(s); }); });
  EXPECT_TRUE(notified.load());
  auto future = deleted.get_future();
  EXPECT_EQ(future.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout)
      << "deletion must wait for the open descriptor";
  EXPECT_EQ(Find("m"), nullptr) << "a bdev being deleted is no longer found";
  OnControl([&] { desc.reset(); });
  EXPECT_TRUE(future.get().ok());
}

TEST_F(BdevTest, QosLimitsIopsWhileUnlimitedBdevRunsFree) {
  Register(MakeMalloc("limited", 1024, 512));
  Register(MakeMalloc("free", 1024, 512));
  Bdev* limited = Find("limited");
  std::promise<absl::Status> set;
  QosLimits limits;
  limits.rw_ios_per_sec = 2000;
  control_.Post([&] { manager_->SetQos(*limited, limits, [&](absl::Status s) { set.set_value(s); }); });
  ASSERT_TRUE(set.get_future().get().ok());

  // 200 I/Os at 2000 IOPS need about 100 ms; the same on the unlimited bdev takes far less. Only the
  // lower bound is asserted (a loaded machine can only make things slower).
  auto run = [&](Bdev* bdev) {
    std::vector<uint8_t> buf(512);
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 200; ++i) EXPECT_EQ(DoIo(i % 2, bdev, IoType::kRead, i, 1, buf.data()), 0);
    return std::chrono::steady_clock::now() - start;
  };
  auto limited_time = run(limited);
  EXPECT_GE(limited_time, std::chrono::milliseconds(80));
  run(Find("free"));

  // Disabling restores full speed and deletion still works with QoS configured.
  std::promise<absl::Status> cleared;
  control_.Post([&] { manager_->SetQos(*limited, QosLimits{}, [&](absl::Status s) { cleared.set_value(s); }); });
  ASSERT_TRUE(cleared.get_future().get().ok());
}

TEST_F(BdevTest, AioDataSurvivesReopen) {
  testing::TempDir dir;
  std::string path = dir.File("disk.img");
  int fd = open(path.c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
  close(fd);
  auto make = [&] {
    AioBdev::Options o;
    o.name = "aio";
    o.filename = path;
    o.block_size = 4096;
    auto b = AioBdev::Create(o);
    return b.ok() ? absl::StatusOr<std::unique_ptr<Bdev>>(std::move(b).value())
                  : absl::StatusOr<std::unique_ptr<Bdev>>(b.status());
  };
  Register(make());
  void* raw = nullptr;
  ASSERT_EQ(posix_memalign(&raw, 4096, 8192), 0);
  auto* buf = static_cast<uint8_t*>(raw);
  std::mt19937 rng(42);
  for (int i = 0; i < 8192; ++i) buf[i] = static_cast<uint8_t>(rng());
  std::vector<uint8_t> expected(buf, buf + 8192);
  ASSERT_EQ(DoIo(0, Find("aio"), IoType::kWrite, 10, 2, buf), 0);
  ASSERT_EQ(DoIo(1, Find("aio"), IoType::kFlush, 0, 0, buf), 0);
  std::promise<absl::Status> deleted;
  control_.Post([&] { manager_->Unregister("aio", nullptr, [&](absl::Status s) { deleted.set_value(s); }); });
  ASSERT_TRUE(deleted.get_future().get().ok());

  Register(make());
  std::memset(buf, 0, 8192);
  ASSERT_EQ(DoIo(1, Find("aio"), IoType::kRead, 10, 2, buf), 0);
  EXPECT_EQ(std::vector<uint8_t>(buf, buf + 8192), expected);
  ASSERT_EQ(DoIo(0, Find("aio"), IoType::kUnmap, 10, 1, buf), 0);
  ASSERT_EQ(DoIo(0, Find("aio"), IoType::kRead, 10, 2, buf), 0);
  EXPECT_TRUE(std::all_of(buf, buf + 4096, [](uint8_t b) { return b == 0; }));
  EXPECT_EQ(std::vector<uint8_t>(buf + 4096, buf + 8192), std::vector<uint8_t>(expected.begin() + 4096, expected.end()));
  free(raw);
}

}  // namespace
}  // namespace smad::tgt
