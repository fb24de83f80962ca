#include "reactor/reactor.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace smad {
namespace {

class ReactorTest : public ::testing::Test {
 protected:
  void SetUp() override { reactor_.Start(); }
  void TearDown() override {
    reactor_.Stop();
    reactor_.Join();
  }
  // Runs `fn` on the reactor and waits for it.
  template <typename F>
  void RunOn(F fn) {
    std::promise<void> done;
    reactor_.Post([&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }
  Reactor reactor_{Reactor::Options{.name = "test"}};
};

TEST_F(ReactorTest, PostedTasksRunOnReactorInOrderPerProducer) {
  constexpr int kProducers = 4, kPerProducer = 20000;
  std::vector<std::vector<int>> seen(kProducers);
  std::atomic<int> finished{0};
  std::promise<void> all;
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        reactor_.Post([&, p, i] {
          EXPECT_TRUE(reactor_.IsCurrent());
          seen[p].push_back(i);
          if (finished.fetch_add(1) + 1 == kProducers * kPerProducer) all.set_value();
        });
      }
    });
  }
  for (auto& t : threads) t.join();
  all.get_future().wait();
  for (int p = 0; p < kProducers; ++p) {
    ASSERT_EQ(seen[p].size(), static_cast<size_t>(kPerProducer));
    for (int i = 0; i < kPerProducer; ++i) ASSERT_EQ(seen[p][i], i);
  }
}

TEST_F(ReactorTest, DeferRunsAfterCurrentCallback) {
  std::vector<int> order;
  std::promise<void> deferred_ran;
  RunOn([&] {
    reactor_.Defer([&] {
      order.push_back(2);
      deferred_ran.set_value();
    });
    order.push_back(1);
  });
  deferred_ran.get_future().wait();
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
}

TEST_F(ReactorTest, TimersFireInDeadlineOrderAndCancel) {
  std::vector<int> order;
  std::promise<void> done;
  RunOn([&] {
    reactor_.RunAfter(30'000'000, [&] {
      order.push_back(3);
      done.set_value();
    });
    reactor_.RunAfter(10'000'000, [&] { order.push_back(1); });
    uint64_t cancelled = reactor_.RunAfter(20'000'000, [&] { order.push_back(99); });
    reactor_.RunAfter(15'000'000, [&] { order.push_back(2); });
    reactor_.CancelTimer(cancelled);
  });
  done.get_future().wait();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST_F(ReactorTest, PeriodicTimerRepeatsUntilCancelled) {
  std::atomic<int> ticks{0};
  std::promise<void> done;
  uint64_t id = 0;
  RunOn([&] {
    id = reactor_.RunEvery(1'000'000, [&] {
      if (++ticks == 5) {
        reactor_.CancelTimer(id);
        done.set_value();
      }
    });
  });
  done.get_future().wait();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(ticks.load(), 5);
}

TEST_F(ReactorTest, FdWatchDeliversReadinessAndCanUnwatchItself) {
  int fd = eventfd(0, EFD_NONBLOCK);
  std::promise<uint64_t> got;
  RunOn([&] {
    ASSERT_TRUE(reactor_.WatchFd(fd, EPOLLIN, [&, fd](uint32_t events) {
      EXPECT_TRUE(events & EPOLLIN);
      uint64_t value = 0;
      EXPECT_EQ(read(fd, &value, sizeof(value)), 8);
      reactor_.UnwatchFd(fd);
      got.set_value(value);
    }).ok());
  });
  uint64_t seven = 7;
  ASSERT_EQ(write(fd, &seven, sizeof(seven)), 8);
  EXPECT_EQ(got.get_future().get(), 7u);
  close(fd);
}

TEST(ReactorStopTest, StopRunsAlreadyPostedTasks) {
  Reactor reactor(Reactor::Options{});
  std::atomic<int> ran{0};
  for (int i = 0; i < 100; ++i) reactor.Post([&] { ++ran; });
  reactor.Stop();
  reactor.Run();  // on this thread: drains and exits
  EXPECT_EQ(ran.load(), 100);
}

TEST(CpuMaskTest, ParsesHexAndLists) {
  EXPECT_EQ(*ParseCpuMask("0x1"), (std::vector<int>{0}));
  EXPECT_EQ(*ParseCpuMask("0x5"), (std::vector<int>{0, 2}));
  EXPECT_EQ(*ParseCpuMask("3"), (std::vector<int>{0, 1}));
  EXPECT_EQ(*ParseCpuMask("[0,2-3]"), (std::vector<int>{0, 2, 3}));
  for (const char* bad : {"", "0x", "0x0", "zz", "[", "[1-0]", "[a]", "0x11111111111111111"}) {
    EXPECT_FALSE(ParseCpuMask(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace smad
