#include "tgt/bdev/file_io.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace smad::tgt {
namespace {

constexpr size_t kBlock = 4096;
constexpr uint64_t kFileSize = 8 << 20;
constexpr int64_t kNotRun = INT64_MIN;
constexpr const char* kEngineEnv = "SMAD_FILE_IO_ENGINE";
const absl::Duration kTimeout = absl::Seconds(30);

// Set around every Submit call the tests make, to catch callbacks that run inside Submit.
thread_local bool t_in_submit = false;

// Collects the completions of a group of operations. Everything except Wait() and the accessors used
// after it runs on the reactor thread; the notification orders those writes before the test thread's
// reads.
class Batch {
 public:
  struct Entry {
    Batch* batch = nullptr;
    int64_t result = kNotRun;
    int calls = 0;
  };

  Batch(Reactor& reactor, size_t n) : reactor_(reactor), entries_(n), remaining_(n) {
    for (Entry& e : entries_) e.batch = this;
    if (n == 0) done_.Notify();
  }

  static void Done(void* arg, int64_t result) {
    auto* e = static_cast<Entry*>(arg);
    Batch* b = e->batch;
    if (Reactor::Current() != &b->reactor_) b->wrong_thread_ = true;
    if (t_in_submit) b->inside_submit_ = true;
    e->result = result;
    if (++e->calls > 1) b->duplicate_ = true;
    if (--b->remaining_ == 0) b->done_.Notify();
  }

  // Submits entry `i` on the reactor thread. A refused submission counts as done.
  int Submit(FileIo& io, FileIo::Op op, int fd, const iovec* iov, int iovcnt, uint64_t offset,
             uint64_t length, size_t i) {
    t_in_submit = true;
    int rc = io.Submit(op, fd, iov, iovcnt, offset, length, &Batch::Done, &entries_[i]);
    t_in_submit = false;
    if (rc != 0 && --remaining_ == 0) done_.Notify();
    return rc;
  }

  bool Wait() { return done_.WaitForNotificationWithTimeout(kTimeout); }
  int64_t result(size_t i) const { return entries_[i].result; }
  int calls(size_t i) const { return entries_[i].calls; }
  size_t size() const { return entries_.size(); }

  // Checks the delivery rules: right thread, never inside Submit, at most once.
  void ExpectWellDelivered() const {
    EXPECT_FALSE(wrong_thread_) << "a callback ran outside the reactor thread";
    EXPECT_FALSE(inside_submit_) << "a callback ran inside Submit";
    EXPECT_FALSE(duplicate_) << "a callback ran twice";
  }

 private:
  Reactor& reactor_;
  std::vector<Entry> entries_;
  size_t remaining_;
  absl::Notification done_;
  bool wrong_thread_ = false;
  bool inside_submit_ = false;
  bool duplicate_ = false;
};

// A 4096-aligned buffer (usable with O_DIRECT).
struct AlignedBuffer {
  explicit AlignedBuffer(size_t size) : size(size) {
    void* p = nullptr;
    if (posix_memalign(&p, kBlock, size) != 0) std::abort();
    data = static_cast<uint8_t*>(p);
    memset(data, 0, size);
  }
  ~AlignedBuffer() { free(data); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  iovec iov() const { return iovec{data, size}; }

  uint8_t* data;
  size_t size;
};

uint8_t PatternByte(uint64_t seed, size_t i) {
  return static_cast<uint8_t>(seed * 131 + i * 7 + (i >> 8) + (seed >> 3));
}

void FillPattern(uint8_t* p, size_t len, uint64_t seed) {
  for (size_t i = 0; i < len; ++i) p[i] = PatternByte(seed, i);
}

bool MatchesPattern(const uint8_t* p, size_t len, uint64_t seed) {
  for (size_t i = 0; i < len; ++i) {
    if (p[i] != PatternByte(seed, i)) return false;
  }
  return true;
}

bool AllZero(const uint8_t* p, size_t len) {
  return std::all_of(p, p + len, [](uint8_t b) { return b == 0; });
}

std::string TempDir() {
  std::string dir = ::testing::TempDir();
  if (!dir.empty() && dir.back() != '/') dir += '/';
  return dir;
}

// Creates a kFileSize sparse file in `dir`; returns its path, or "" on failure.
std::string MakeTempFile(const std::string& dir) {
  std::string path = dir + "file_io_test_XXXXXX";
  int fd = mkstemp(path.data());
  if (fd < 0) return "";
  int rc = ftruncate(fd, kFileSize);
  close(fd);
  if (rc != 0) {
    unlink(path.c_str());
    return "";
  }
  return path;
}

class ReactorHarness {
 public:
  explicit ReactorHarness(bool busy_poll = false) {
    Reactor::Options options;
    options.name = busy_poll ? "fio_busy" : "fio_test";
    options.busy_poll = busy_poll;
    reactor_ = std::make_unique<Reactor>(std::move(options));
    reactor_->Start();
  }
  ~ReactorHarness() {
    reactor_->Stop();
    reactor_->Join();
  }

  Reactor& reactor() { return *reactor_; }

  // Runs `fn` on the reactor thread and waits for it.
  void Run(std::function<void()> fn) {
    std::promise<void> done;
    reactor_->Post([&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }

  absl::StatusOr<std::unique_ptr<FileIo>> Create(FileIo::Engine engine, unsigned queue_depth) {
    absl::StatusOr<std::unique_ptr<FileIo>> io = absl::UnknownError("not run");
    Run([&] { io = FileIo::Create(*reactor_, engine, queue_depth); });
    return io;
  }

  void Destroy(std::unique_ptr<FileIo>& io) {
    Run([&] { io.reset(); });
  }

 private:
  std::unique_ptr<Reactor> reactor_;
};

class FileIoTest : public ::testing::TestWithParam<FileIo::Engine> {
 protected:
  void SetUp() override {
    unsetenv(kEngineEnv);  // the parameter chooses the engine; nothing runs concurrently yet
    path_ = MakeTempFile(TempDir());
    ASSERT_FALSE(path_.empty()) << "cannot create a temp file in " << TempDir();
    fd_ = open(path_.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd_, 0);
    harness_ = std::make_unique<ReactorHarness>();
    io_ = CreateIo(harness_.get(), 256);
  }

  void TearDown() override {
    if (harness_ != nullptr) {
      if (io_ != nullptr) harness_->Destroy(io_);
      harness_.reset();
    }
    if (fd_ >= 0) close(fd_);
    if (!path_.empty()) unlink(path_.c_str());
  }

  // Creates a FileIo of the parameter's engine on `harness`; skips the test when this machine gives
  // another engine.
  std::unique_ptr<FileIo> CreateIo(ReactorHarness* harness, unsigned queue_depth) {
    absl::StatusOr<std::unique_ptr<FileIo>> io = harness->Create(GetParam(), queue_depth);
    EXPECT_TRUE(io.ok()) << io.status();
    if (!io.ok()) return nullptr;
    std::unique_ptr<FileIo> result = std::move(*io);
    if (result->engine() != GetParam()) {
      harness->Destroy(result);
      return nullptr;
    }
    return result;
  }

  Reactor& reactor() { return harness_->reactor(); }
  void Run(std::function<void()> fn) { harness_->Run(std::move(fn)); }

  // Submits one operation, waits for it and returns its result (or Submit's error).
  int64_t RunOne(FileIo::Op op, int fd, const iovec* iov, int iovcnt, uint64_t offset, uint64_t length) {
    Batch batch(reactor(), 1);
    int rc = 0;
    Run([&] { rc = batch.Submit(*io_, op, fd, iov, iovcnt, offset, length, 0); });
    EXPECT_TRUE(batch.Wait());
    batch.ExpectWellDelivered();
    if (rc != 0) return rc;
    EXPECT_EQ(batch.calls(0), 1);
    return batch.result(0);
  }

  int64_t Write(uint64_t offset, uint8_t* data, size_t len) {
    iovec iov{data, len};
    return RunOne(FileIo::Op::kWrite, fd_, &iov, 1, offset, 0);
  }
  int64_t Read(uint64_t offset, uint8_t* data, size_t len) {
    iovec iov{data, len};
    return RunOne(FileIo::Op::kRead, fd_, &iov, 1, offset, 0);
  }

  std::string path_;
  int fd_ = -1;
  std::unique_ptr<ReactorHarness> harness_;
  std::unique_ptr<FileIo> io_;
};

#define SKIP_IF_ENGINE_UNAVAILABLE()                                                      \
  do {                                                                                    \
    if (io_ == nullptr) GTEST_SKIP() << EngineName(GetParam()) << " is unavailable here"; \
  } while (0)

TEST_P(FileIoTest, ReportsEngineAndStartsIdle) {
  SKIP_IF_ENGINE_UNAVAILABLE();
  Run([&] {
    EXPECT_EQ(io_->engine(), GetParam());
    EXPECT_EQ(io_->in_flight(), 0u);
  });
}

TEST_P(FileIoTest, ManyOutstandingRandomWritesReadBack) {
  SKIP_IF_ENGINE_UNAVAILABLE();
  constexpr size_t kOps = 64;
  std::mt19937 rng(1234);
  std::vector<uint64_t> blocks(kFileSize / kBlock);
  for (size_t i = 0; i < blocks.size(); ++i) blocks[i] = i;
  std::shuffle(blocks.begin(), blocks.end(), rng);
  blocks.resize(kOps);

  std::vector<std::unique_ptr<AlignedBuffer>> out;
  std::vector<iovec> out_iov(kOps);
  for (size_t i = 0; i < kOps; ++i) {
    out.push_back(std::make_unique<AlignedBuffer>(kBlock));
    FillPattern(out[i]->data, kBlock, blocks[i]);
    out_iov[i] = out[i]->iov();
  }
  Batch writes(reactor(), kOps);
  Run([&] {
    for (size_t i = 0; i < kOps; ++i) {
      ASSERT_EQ(writes.Submit(*io_, FileIo::Op::kWrite, fd_, &out_iov[i], 1, blocks[i] * kBlock, 0, i), 0);
    }
    EXPECT_EQ(io_->in_flight(), kOps);
  });
  ASSERT_TRUE(writes.Wait());
  writes.ExpectWellDelivered();
  for (size_t i = 0; i < kOps; ++i) EXPECT_EQ(writes.result(i), static_cast<int64_t>(kBlock)) << i;

  // Independent check with pread.
  std::vector<uint8_t> check(kBlock);
  for (size_t i = 0; i < kOps; ++i) {
    ASSERT_EQ(pread(fd_, check.data(), kBlock, static_cast<off_t>(blocks[i] * kBlock)),
              static_cast<ssize_t>(kBlock));
    EXPECT_TRUE(MatchesPattern(check.data(), kBlock, blocks[i])) << "block " << blocks[i];
  }

  std::vector<std::unique_ptr<AlignedBuffer>> in;
  std::vector<iovec> in_iov(kOps);
  for (size_t i = 0; i < kOps; ++i) {
    in.push_back(std::make_unique<AlignedBuffer>(kBlock));
    in_iov[i] = in[i]->iov();
  }
  Batch reads(reactor(), kOps);
  Run([&] {
    for (size_t i = 0; i < kOps; ++i) {
      ASSERT_EQ(reads.Submit(*io_, FileIo::Op::kRead, fd_, &in_iov[i], 1, blocks[i] * kBlock, 0, i), 0);
    }
  });
  ASSERT_TRUE(reads.Wait());
  reads.ExpectWellDelivered();
  for (size_t i = 0; i < kOps; ++i) {
    EXPECT_EQ(reads.result(i), static_cast<int64_t>(kBlock)) << i;
    EXPECT_TRUE(MatchesPattern(in[i]->data, kBlock, blocks[i])) << "block " << blocks[i];
  }
  Run([&] { EXPECT_EQ(io_->in_flight(), 0u); });
}

TEST_P(FileIoTest, VectoredWriteAndRead) {
  SKIP_IF_ENGINE_UNAVAILABLE();
  constexpr uint64_t kOffset = 5 * kBlock;
  std::vector<uint8_t> a(512), b(1536), c(2048);
  std::vector<uint8_t> whole(a.size() + b.size() + c.size());
  FillPattern(whole.data(), whole.size(), 77);
  memcpy(a.data(), whole.data(), a.size());
  memcpy(b.data(), whole.data() + a.size(), b.size());
  memcpy(c.data(), whole.data() + a.size() + b.size(), c.size());
  iovec out[3] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
  EXPECT_EQ(RunOne(FileIo::Op::kWrite, fd_, out, 3, kOffset, 0), static_cast<int64_t>(whole.size()));

  // Read back split differently.
  std::vector<uint8_t> x(100), y(3000), z(996);
  iovec in[3] = {{x.data(), x.size()}, {y.data(), y.size()}, {z.data(), z.size()}};
  EXPECT_EQ(RunOne(FileIo::Op::kRead, fd_, in, 3, kOffset, 0), static_cast<int64_t>(whole.size()));
  std::vector<uint8_t> joined;
  joined.insert(joined.end(), x.begin(), x.end());
  joined.insert(joined.end(), y.begin(), y.end());
  joined.insert(joined.end(), z.begin(), z.end());
  EXPECT_EQ(joined, whole);
}

TEST_P(FileIoTest, DirectIoWithAlignedBuffers) {
  SKIP_IF_ENGINE_UNAVAILABLE();
  std::string direct_path;
  int direct_fd = -1;
  for (const std::string& dir : {TempDir(), std::string("/var/tmp/")}) {
    std::string path = MakeTempFile(dir);
    if (path.empty()) continue;
    direct_fd = open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
    if (direct_fd >= 0) {
      direct_path = path;
      break;
    }
    unlink(path.c_str());  // EINVAL: no O_DIRECT here (tmpfs)
  }
  if (direct_fd < 0) GTEST_SKIP() << "no file system with O_DIRECT among the temp directories";
  struct Cleanup {
    int fd;
    std::string path;
    ~Cleanup() {
      close(fd);
      unlink(path.c_str());
    }
  } cleanup{direct_fd, direct_path};

  constexpr size_t kOps = 16;
  std::vector<std::unique_ptr<AlignedBuffer>> out, in;
  std::vector<iovec> out_iov(kOps), in_iov(kOps);
  for (size_t i = 0; i < kOps; ++i) {
    out.push_back(std::make_unique<AlignedBuffer>(kBlock));
    in.push_back(std::make_unique<AlignedBuffer>(kBlock));
    FillPattern(out[i]->data, kBlock, 1000 + i);
    out_iov[i] = out[i]->iov();
    in_iov[i] = in[i]->iov();
  }
  Batch writes(reactor(), kOps);
  Run([&] {
    for (size_t i = 0; i < kOps; ++i) {
      ASSERT_EQ(
          writes.Submit(*io_, FileIo::Op::kWrite, direct_fd, &out_iov[i], 1, (3 * i + 1) * kBlock, 0, i), 0);
    }
  });
  ASSERT_TRUE(writes.Wait());
  writes.ExpectWellDelivered();
  Batch reads(reactor(), kOps);
  Run([&] {
    for (size_t i = 0; i < kOps; ++i) {
      ASSERT_EQ(reads.Submit(*io_, FileIo::Op::kRead, direct_fd, &in_iov[i], 1, (3 * i + 1) * kBlock, 0, i),
                0);
    }
  });
  ASSERT_TRUE(reads.Wait());
  reads.ExpectWellDelivered();
  for (size_t i = 0; i < kOps; ++i) {
    EXPECT_EQ(writes.result(i), static_cast<int64_t>(kBlock)) << i;
    EXPECT_EQ(reads.result(i), static_cast<int64_t>(kBlock)) << i;
    EXPECT_TRUE(MatchesPattern(in[i]->data, kBlock, 1000 + i)) << i;
  }

  // A misaligned memory buffer: older kernels refuse it with -EINVAL, newer ones accept any buffer the
  // device can DMA to (STATX_DIOALIGN). Either way it is reported, not crashed on.
  std::vector<uint8_t> unaligned(kBlock + 1);
  iovec bad{unaligned.data() + 1, kBlock};
  int64_t rc = RunOne(FileIo::Op::kRead, direct_fd, &bad, 1, 0, 0);
  EXPECT_TRUE(rc == -EINVAL || rc == static_cast<int64_t>(kBlock)) << rc;
  // A misaligned file offset is refused on every kernel.
  EXPECT_EQ(RunOne(FileIo::Op::kRead, direct_fd, &in_iov[0], 1, 1, 0), -EINVAL);
}

TEST_P(FileIoTest, FsyncCompletesWithZero) {
  SKIP_IF_ENGINE_UNAVAILABLE();
  AlignedBuffer buf(kBlock);
  FillPattern(buf.data, kBlock, 5);
  ASSERT_EQ(Write(0, buf.data, kBlock), static_cast<int64_t>(kBlock));
  EXPECT_EQ(RunOne(FileIo::Op::kFsync, fd_, nullptr, 0, 0, 0), 0);
}

TEST_P(FileIoTest, PunchHoleReadsZeros) {
  SKIP_IF_ENGINE_UNAVAILABLE();
  AlignedBuffer buf(3 * kBlock);
  FillPattern(buf.data, buf.size, 9);
  ASSERT_EQ(Write(10 * kBlock, buf.data, buf.size), static_cast<int64_t>(buf.size));
  int64_t rc = RunOne(FileIo::Op::kPunchHole, fd_, nullptr, 0, 11 * kBlock, kBlock);
  if (rc == -EOPNOTSUPP) GTEST_SKIP() << "the file system cannot punch holes";
  ASSERT_EQ(rc, 0);
  AlignedBuffer back(3 * kBlock);
  ASSERT_EQ(Read(10 * kBlock, back.data, back.size), static_cast<int64_t>(back.size));
  EXPECT_EQ(memcmp(back.data, buf.data, kBlock), 0);
  EXPECT_TRUE(AllZero(back.data + kBlock, kBlock));
  EXPECT_EQ(memcmp(back.data + 2 * kBlock, buf.data + 2 * kBlock, kBlock), 0);
  struct stat st;
  ASSERT_EQ(fstat(fd_, &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kFileSize);  // KEEP_SIZE
}

TEST_P(FileIoTest, ZeroRangeReadsZeros) {
  SKIP_IF_ENGINE_UNAVAILABLE();
  AlignedBuffer buf(4 * kBlock);
  FillPattern(buf.data, buf.size, 11);
  ASSERT_EQ(Write(20 * kBlock, buf.data, buf.size), static_cast<int64_t>(buf.size));
  int64_t rc = RunOne(FileIo::Op::kZeroRange, fd_, nullptr, 0, 21 * kBlock, 2 * kBlock);
  if (rc == -EOPNOTSUPP) GTEST_SKIP() << "the file system cannot zero ranges";
  ASSERT_EQ(rc, 0);
  AlignedBuffer back(4 * kBlock);
  ASSERT_EQ(Read(20 * kBlock, back.data, back.size), static_cast<int64_t>(back.size));
  EXPECT_EQ(memcmp(back.data, buf.data, kBlock), 0);
  EXPECT_TRUE(AllZero(back.data + kBlock, 2 * kBlock));
  EXPECT_EQ(memcmp(back.data + 3 * kBlock, buf.data + 3 * kBlock, kBlock), 0);
}

TEST_P(FileIoTest, ReadAtEndOfFileIsShort) {
  SKIP_IF_ENGINE_UNAVAILABLE();
  AlignedBuffer buf(kBlock);
  EXPECT_EQ(Read(kFileSize, buf.data, kBlock), 0);
  EXPECT_EQ(Read(kFileSize + 10 * kBlock, buf.data, kBlock), 0);
  EXPECT_EQ(Read(kFileSize - 1024, buf.data, kBlock), 1024);
}

TEST_P(FileIoTest, BadFileDescriptor) {
  SKIP_IF_ENGINE_UNAVAILABLE();
  AlignedBuffer buf(kBlock);
  iovec iov = buf.iov();
  constexpr int kClosedFd = 999999;  // far above anything this test opens
  ASSERT_EQ(fcntl(kClosedFd, F_GETFD), -1);
  EXPECT_EQ(RunOne(FileIo::Op::kRead, kClosedFd, &iov, 1, 0, 0), -EBADF);
  EXPECT_EQ(RunOne(FileIo::Op::kWrite, kClosedFd, &iov, 1, 0, 0), -EBADF);
  EXPECT_EQ(RunOne(FileIo::Op::kFsync, kClosedFd, nullptr, 0, 0, 0), -EBADF);
  EXPECT_EQ(RunOne(FileIo::Op::kRead, -1, &iov, 1, 0, 0), -EBADF);
  Run([&] { EXPECT_EQ(io_->in_flight(), 0u); });
}

TEST_P(FileIoTest, InvalidArgumentsAreRefusedBySubmit) {
  SKIP_IF_ENGINE_UNAVAILABLE();
  AlignedBuffer buf(kBlock);
  iovec iov = buf.iov();
  Run([&] {
    auto noop = [](void*, int64_t) { ADD_FAILURE() << "callback of a refused Submit ran"; };
    EXPECT_EQ(io_->Submit(FileIo::Op::kRead, fd_, nullptr, 1, 0, 0, noop, nullptr), -EINVAL);
    EXPECT_EQ(io_->Submit(FileIo::Op::kRead, fd_, &iov, 0, 0, 0, noop, nullptr), -EINVAL);
    EXPECT_EQ(io_->Submit(FileIo::Op::kWrite, fd_, &iov, IOV_MAX + 1, 0, 0, noop, nullptr), -EINVAL);
    EXPECT_EQ(io_->Submit(FileIo::Op::kRead, fd_, &iov, 1, 0, 0, nullptr, nullptr), -EINVAL);
    EXPECT_EQ(io_->Submit(FileIo::Op::kRead, fd_, &iov, 1, UINT64_MAX, 0, noop, nullptr), -EINVAL);
    EXPECT_EQ(io_->Submit(FileIo::Op::kPunchHole, fd_, nullptr, 0, 0, 0, noop, nullptr), -EINVAL);
    EXPECT_EQ(io_->Submit(FileIo::Op::kZeroRange, fd_, nullptr, 0, INT64_MAX, 2, noop, nullptr), -EINVAL);
    EXPECT_EQ(io_->in_flight(), 0u);
  });
}

TEST_P(FileIoTest, QueueDepthOverflowReturnsEagain) {
  SKIP_IF_ENGINE_UNAVAILABLE();
  constexpr unsigned kDepth = 4;
  std::unique_ptr<FileIo> small = CreateIo(harness_.get(), kDepth);
  ASSERT_NE(small, nullptr);
  AlignedBuffer buf(kDepth * kBlock);  // one block per concurrent read
  std::vector<iovec> iovs(kDepth);
  for (unsigned i = 0; i < kDepth; ++i) iovs[i] = iovec{buf.data + i * kBlock, kBlock};
  Batch batch(reactor(), kDepth + 1);
  Run([&] {
    for (unsigned i = 0; i < kDepth; ++i) {
      EXPECT_EQ(batch.Submit(*small, FileIo::Op::kRead, fd_, &iovs[i], 1, i * kBlock, 0, i), 0);
    }
    EXPECT_EQ(small->in_flight(), kDepth);
    EXPECT_EQ(batch.Submit(*small, FileIo::Op::kRead, fd_, &iovs[0], 1, 0, 0, kDepth), -EAGAIN);
    small->Flush();
  });
  ASSERT_TRUE(batch.Wait());
  batch.ExpectWellDelivered();
  for (unsigned i = 0; i < kDepth; ++i) EXPECT_EQ(batch.result(i), static_cast<int64_t>(kBlock));
  EXPECT_EQ(batch.calls(kDepth), 0);

  // Capacity comes back with the completions.
  Batch again(reactor(), kDepth);
  Run([&] {
    EXPECT_EQ(small->in_flight(), 0u);
    for (unsigned i = 0; i < kDepth; ++i) {
      EXPECT_EQ(again.Submit(*small, FileIo::Op::kRead, fd_, &iovs[i], 1, 0, 0, i), 0);
    }
  });
  ASSERT_TRUE(again.Wait());
  harness_->Destroy(small);
}

// Keeps `kLanes` writes in flight by resubmitting from the callbacks, then verifies the file.
struct Pipeline {
  static constexpr size_t kLanes = 32;
  static constexpr size_t kPerLane = 48;
  struct Lane {
    Pipeline* pipeline;
    size_t index;
    size_t next = 0;
    std::unique_ptr<AlignedBuffer> buf;
    iovec iov;
  };

  FileIo* io;
  int fd;
  Reactor* reactor;
  std::vector<Lane> lanes;
  size_t active = kLanes;
  int64_t first_error = 0;
  bool wrong_thread = false;
  bool inside_submit = false;
  absl::Notification done;

  static uint64_t Block(size_t lane, size_t k) { return lane + kLanes * k; }

  void SubmitNext(Lane& lane) {
    FillPattern(lane.buf->data, kBlock, Block(lane.index, lane.next) + 5000);
    t_in_submit = true;
    int rc = io->Submit(FileIo::Op::kWrite, fd, &lane.iov, 1, Block(lane.index, lane.next) * kBlock, 0,
                        &Pipeline::OnDone, &lane);
    t_in_submit = false;
    if (rc != 0) {
      if (first_error == 0) first_error = rc;
      if (--active == 0) done.Notify();
    }
  }

  static void OnDone(void* arg, int64_t result) {
    auto* lane = static_cast<Lane*>(arg);
    Pipeline* p = lane->pipeline;
    if (Reactor::Current() != p->reactor) p->wrong_thread = true;
    if (t_in_submit) p->inside_submit = true;
    if (result != static_cast<int64_t>(kBlock) && p->first_error == 0) {
      p->first_error = result == 0 ? -1 : result;  // a short write counts as an error here
    }
    if (++lane->next < kPerLane) {
      p->SubmitNext(*lane);
    } else if (--p->active == 0) {
      p->done.Notify();
    }
  }
};

TEST_P(FileIoTest, ResubmittingFromCallbacksKeepsThePipelineFull) {
  SKIP_IF_ENGINE_UNAVAILABLE();
  Pipeline p;
  p.io = io_.get();
  p.fd = fd_;
  p.reactor = &reactor();
  p.lanes.resize(Pipeline::kLanes);
  for (size_t i = 0; i < Pipeline::kLanes; ++i) {
    p.lanes[i].pipeline = &p;
    p.lanes[i].index = i;
    p.lanes[i].buf = std::make_unique<AlignedBuffer>(kBlock);
    p.lanes[i].iov = p.lanes[i].buf->iov();
  }
  Run([&] {
    for (auto& lane : p.lanes) p.SubmitNext(lane);
  });
  ASSERT_TRUE(p.done.WaitForNotificationWithTimeout(kTimeout));
  EXPECT_EQ(p.first_error, 0);
  EXPECT_FALSE(p.wrong_thread);
  EXPECT_FALSE(p.inside_submit);
  std::vector<uint8_t> check(kBlock);
  for (size_t lane = 0; lane < Pipeline::kLanes; ++lane) {
    for (size_t k = 0; k < Pipeline::kPerLane; ++k) {
      uint64_t block = Pipeline::Block(lane, k);
      ASSERT_EQ(pread(fd_, check.data(), kBlock, static_cast<off_t>(block * kBlock)),
                static_cast<ssize_t>(kBlock));
      ASSERT_TRUE(MatchesPattern(check.data(), kBlock, block + 5000)) << "block " << block;
    }
  }
}

TEST_P(FileIoTest, DestructionWaitsForOperationsAndDropsCallbacks) {
  SKIP_IF_ENGINE_UNAVAILABLE();
  constexpr size_t kOps = 32;
  std::vector<std::unique_ptr<AlignedBuffer>> bufs;
  std::vector<iovec> iovs(kOps);
  for (size_t i = 0; i < kOps; ++i) {
    bufs.push_back(std::make_unique<AlignedBuffer>(kBlock));
    FillPattern(bufs[i]->data, kBlock, 300 + i);
    iovs[i] = bufs[i]->iov();
  }
  Batch batch(reactor(), kOps);
  Run([&] {
    for (size_t i = 0; i < kOps; ++i) {
      ASSERT_EQ(batch.Submit(*io_, FileIo::Op::kWrite, fd_, &iovs[i], 1, (100 + i) * kBlock, 0, i), 0);
    }
    io_.reset();  // in the same callback: nothing was even flushed yet
  });
  Run([] {});  // let the reactor run any stale events
  for (size_t i = 0; i < kOps; ++i) EXPECT_EQ(batch.calls(i), 0) << i;
  // Every accepted write ran before the destructor returned.
  std::vector<uint8_t> check(kBlock);
  for (size_t i = 0; i < kOps; ++i) {
    ASSERT_EQ(pread(fd_, check.data(), kBlock, static_cast<off_t>((100 + i) * kBlock)),
              static_cast<ssize_t>(kBlock));
    EXPECT_TRUE(MatchesPattern(check.data(), kBlock, 300 + i)) << i;
  }
}

struct DestroyingCallback {
  std::unique_ptr<FileIo>* io;
  int calls = 0;
  static void Done(void* arg, int64_t) {
    auto* self = static_cast<DestroyingCallback*>(arg);
    ++self->calls;
    self->io->reset();
  }
};

TEST_P(FileIoTest, DestroyingFromACallbackDropsTheOthers) {
  SKIP_IF_ENGINE_UNAVAILABLE();
  constexpr size_t kOps = 16;
  AlignedBuffer buf(kOps * kBlock);
  std::vector<iovec> iovs(kOps);
  for (size_t i = 0; i < kOps; ++i) iovs[i] = iovec{buf.data + i * kBlock, kBlock};
  DestroyingCallback cb{&io_};
  Run([&] {
    for (size_t i = 0; i < kOps; ++i) {
      ASSERT_EQ(
          io_->Submit(FileIo::Op::kRead, fd_, &iovs[i], 1, i * kBlock, 0, &DestroyingCallback::Done, &cb), 0);
    }
  });
  absl::Time deadline = absl::Now() + kTimeout;
  int calls = 0;
  while (absl::Now() < deadline) {
    bool gone = false;
    Run([&] {
      gone = io_ == nullptr;
      calls = cb.calls;
    });
    if (gone) break;
    absl::SleepFor(absl::Milliseconds(1));
  }
  Run([] {});
  Run([&] { calls = cb.calls; });
  EXPECT_EQ(calls, 1);
}

TEST_P(FileIoTest, BusyPollingReactor) {
  SKIP_IF_ENGINE_UNAVAILABLE();
  ReactorHarness busy(/*busy_poll=*/true);
  std::unique_ptr<FileIo> io = CreateIo(&busy, 64);
  ASSERT_NE(io, nullptr);
  constexpr size_t kOps = 32;
  std::vector<std::unique_ptr<AlignedBuffer>> bufs;
  std::vector<iovec> iovs(kOps);
  for (size_t i = 0; i < kOps; ++i) {
    bufs.push_back(std::make_unique<AlignedBuffer>(kBlock));
    FillPattern(bufs[i]->data, kBlock, 700 + i);
    iovs[i] = bufs[i]->iov();
  }
  Batch writes(busy.reactor(), kOps);
  busy.Run([&] {
    for (size_t i = 0; i < kOps; ++i) {
      ASSERT_EQ(writes.Submit(*io, FileIo::Op::kWrite, fd_, &iovs[i], 1, (200 + i) * kBlock, 0, i), 0);
    }
  });
  ASSERT_TRUE(writes.Wait());
  writes.ExpectWellDelivered();
  for (size_t i = 0; i < kOps; ++i) memset(bufs[i]->data, 0, kBlock);
  Batch reads(busy.reactor(), kOps);
  busy.Run([&] {
    for (size_t i = 0; i < kOps; ++i) {
      ASSERT_EQ(reads.Submit(*io, FileIo::Op::kRead, fd_, &iovs[i], 1, (200 + i) * kBlock, 0, i), 0);
    }
  });
  ASSERT_TRUE(reads.Wait());
  reads.ExpectWellDelivered();
  for (size_t i = 0; i < kOps; ++i) {
    EXPECT_EQ(writes.result(i), static_cast<int64_t>(kBlock));
    EXPECT_EQ(reads.result(i), static_cast<int64_t>(kBlock));
    EXPECT_TRUE(MatchesPattern(bufs[i]->data, kBlock, 700 + i)) << i;
  }
  busy.Destroy(io);
}

INSTANTIATE_TEST_SUITE_P(Engines, FileIoTest,
                         ::testing::Values(FileIo::Engine::kIoUring, FileIo::Engine::kLibaio,
                                           FileIo::Engine::kThreadPool),
                         [](const ::testing::TestParamInfo<FileIo::Engine>& info) {
                           switch (info.param) {
                             case FileIo::Engine::kIoUring:
                               return std::string("IoUring");
                             case FileIo::Engine::kLibaio:
                               return std::string("Libaio");
                             case FileIo::Engine::kThreadPool:
                               return std::string("ThreadPool");
                           }
                           return std::string("Unknown");
                         });

TEST(FileIoEngineTest, NamesRoundTrip) {
  for (FileIo::Engine e : {FileIo::Engine::kIoUring, FileIo::Engine::kLibaio, FileIo::Engine::kThreadPool}) {
    absl::StatusOr<FileIo::Engine> parsed = ParseEngine(EngineName(e));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, e);
  }
  EXPECT_STREQ(EngineName(FileIo::Engine::kIoUring), "io_uring");
  EXPECT_STREQ(EngineName(FileIo::Engine::kLibaio), "libaio");
  EXPECT_STREQ(EngineName(FileIo::Engine::kThreadPool), "threads");
  EXPECT_EQ(ParseEngine("epoll").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseEngine("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FileIoEngineTest, EnvironmentForcesEngine) {
  // Set before the reactor thread exists, so getenv in Create does not race with setenv.
  ASSERT_EQ(setenv(kEngineEnv, "threads", 1), 0);
  {
    ReactorHarness harness;
    absl::StatusOr<std::unique_ptr<FileIo>> io = harness.Create(FileIo::Engine::kIoUring, 8);
    ASSERT_TRUE(io.ok()) << io.status();
    EXPECT_EQ((*io)->engine(), FileIo::Engine::kThreadPool);
    harness.Destroy(*io);
  }
  ASSERT_EQ(setenv(kEngineEnv, "no-such-engine", 1), 0);
  {
    ReactorHarness harness;
    absl::StatusOr<std::unique_ptr<FileIo>> io = harness.Create(FileIo::Engine::kThreadPool, 8);
    ASSERT_TRUE(io.ok()) << io.status();  // ignored with a warning
    EXPECT_EQ((*io)->engine(), FileIo::Engine::kThreadPool);
    harness.Destroy(*io);
  }
  unsetenv(kEngineEnv);
}

TEST(FileIoEngineTest, RejectsBadQueueDepth) {
  ReactorHarness harness;
  EXPECT_EQ(harness.Create(FileIo::Engine::kThreadPool, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(harness.Create(FileIo::Engine::kThreadPool, 1u << 20).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace smad::tgt
