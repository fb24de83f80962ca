#include "tgt/bdev/file_io.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <limits>

#include "absl/strings/numbers.h"
#include "common/status.h"
#include "spdlog/spdlog.h"
#include "tgt/bdev/file_io_internal.h"

namespace smad::tgt {
namespace {

constexpr unsigned kMaxQueueDepth = 32768;  // io_uring's limit on SQ entries
constexpr unsigned kDefaultWorkerThreads = 4;
constexpr unsigned kMaxWorkerThreads = 64;
constexpr const char* kEngineEnv = "SMAD_FILE_IO_ENGINE";
constexpr const char* kThreadsEnv = "SMAD_FILE_IO_THREADS";

unsigned WorkerThreads(unsigned queue_depth) {
  unsigned threads = kDefaultWorkerThreads;
  if (const char* value = std::getenv(kThreadsEnv); value != nullptr) {
    unsigned parsed = 0;
    if (absl::SimpleAtoi(value, &parsed) && parsed >= 1 && parsed <= kMaxWorkerThreads) {
      threads = parsed;
    } else {
      spdlog::warn("file_io: ignoring {}='{}' (expected 1..{})", kThreadsEnv, value, kMaxWorkerThreads);
    }
  }
  return std::min(threads, queue_depth);
}

absl::StatusOr<std::unique_ptr<FileIo>> CreateEngine(Reactor& reactor, FileIo::Engine engine,
                                                     unsigned queue_depth) {
  switch (engine) {
    case FileIo::Engine::kIoUring:
      return internal::CreateIoUringFileIo(reactor, queue_depth);
    case FileIo::Engine::kLibaio:
      return internal::CreateLibaioFileIo(reactor, queue_depth);
    case FileIo::Engine::kThreadPool:
      return internal::CreateThreadPoolFileIo(reactor, queue_depth, WorkerThreads(queue_depth));
  }
  return absl::InvalidArgumentError("unknown file I/O engine");
}

}  // namespace

const char* EngineName(FileIo::Engine engine) {
  switch (engine) {
    case FileIo::Engine::kIoUring:
      return "io_uring";
    case FileIo::Engine::kLibaio:
      return "libaio";
    case FileIo::Engine::kThreadPool:
      return "threads";
  }
  return "unknown";
}

absl::StatusOr<FileIo::Engine> ParseEngine(const std::string& name) {
  if (name == "io_uring") return FileIo::Engine::kIoUring;
  if (name == "libaio") return FileIo::Engine::kLibaio;
  if (name == "threads") return FileIo::Engine::kThreadPool;
  return absl::InvalidArgumentError("unknown file I/O engine '" + name +
                                    "' (expected io_uring, libaio or threads)");
}

absl::StatusOr<std::unique_ptr<FileIo>> FileIo::Create(Reactor& reactor, Engine preferred,
                                                       unsigned queue_depth) {
  if (queue_depth == 0 || queue_depth > kMaxQueueDepth) {
    return absl::InvalidArgumentError("file I/O queue depth must be in [1, " +
                                      std::to_string(kMaxQueueDepth) + "]");
  }
  Engine first = preferred;
  if (const char* forced = std::getenv(kEngineEnv); forced != nullptr && forced[0] != '\0') {
    absl::StatusOr<Engine> parsed = ParseEngine(forced);
    if (parsed.ok()) {
      if (*parsed != preferred) {
        spdlog::info("file_io: {}={} overrides the preferred engine {}", kEngineEnv, forced,
                     EngineName(preferred));
      }
      first = *parsed;
    } else {
      spdlog::warn("file_io: ignoring {}: {}", kEngineEnv, StatusMessage(parsed.status()));
    }
  }

  absl::Status last_error = absl::InternalError("no file I/O engine tried");
  for (int e = static_cast<int>(first); e <= static_cast<int>(Engine::kThreadPool); ++e) {
    auto engine = static_cast<Engine>(e);
    absl::StatusOr<std::unique_ptr<FileIo>> io = CreateEngine(reactor, engine, queue_depth);
    if (io.ok()) {
      spdlog::info("file_io: reactor {} uses the {} engine (queue depth {})", reactor.name(),
                   EngineName(engine), queue_depth);
      return io;
    }
    spdlog::warn("file_io: {} engine refused: {}", EngineName(engine), StatusMessage(io.status()));
    last_error = io.status();
  }
  return last_error;
}

namespace internal {

int ValidateRequest(FileIo::Op op, int fd, const iovec* iov, int iovcnt, uint64_t offset, uint64_t length,
                    FileIo::Callback callback) {
  constexpr uint64_t kMaxOffset = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (callback == nullptr) return -EINVAL;
  if (fd < 0) return -EBADF;
  switch (op) {
    case FileIo::Op::kRead:
    case FileIo::Op::kWrite:
      if (iov == nullptr || iovcnt <= 0 || iovcnt > IOV_MAX) return -EINVAL;
      if (offset > kMaxOffset) return -EINVAL;
      return 0;
    case FileIo::Op::kFsync:
      return 0;
    case FileIo::Op::kPunchHole:
    case FileIo::Op::kZeroRange:
      if (length == 0 || offset > kMaxOffset || length > kMaxOffset - offset) return -EINVAL;
      return 0;
  }
  return -EINVAL;
}

int64_t ExecuteBlocking(const FileIoRequest& request) {
  auto offset = static_cast<off_t>(request.offset);
  auto length = static_cast<off_t>(request.length);
  while (true) {
    int64_t rc = -1;
    switch (request.op) {
      case FileIo::Op::kRead:
        rc = preadv(request.fd, request.iov, request.iovcnt, offset);
        break;
      case FileIo::Op::kWrite:
        rc = pwritev(request.fd, request.iov, request.iovcnt, offset);
        break;
      case FileIo::Op::kFsync:
        rc = fsync(request.fd);
        break;
      case FileIo::Op::kPunchHole:
        rc = fallocate(request.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
        break;
      case FileIo::Op::kZeroRange:
        rc = fallocate(request.fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length);
        break;
    }
    if (rc >= 0) return rc;
    if (errno != EINTR) return -errno;
  }
}

absl::StatusOr<int> MakeEventFd() {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "eventfd: " + ErrnoString(errno));
  return fd;
}

void DrainEventFd(int fd) {
  uint64_t value;
  while (read(fd, &value, sizeof(value)) > 0) {
  }
}

FileIoBase::FileIoBase(Reactor& reactor, unsigned queue_depth)
    : reactor_(reactor),
      queue_depth_(queue_depth),
      requests_(new FileIoRequest[queue_depth]),
      alive_(std::make_shared<char>(0)) {
  free_.reserve(queue_depth);
  // Hand out low indices first: in reverse so that back() is requests_[0].
  for (unsigned i = queue_depth; i > 0; --i) free_.push_back(&requests_[i - 1]);
}

FileIoRequest* FileIoBase::Acquire(Op op, int fd, const iovec* iov, int iovcnt, uint64_t offset,
                                   uint64_t length, Callback callback, void* arg) {
  if (free_.empty()) return nullptr;
  FileIoRequest* request = free_.back();
  free_.pop_back();
  ++in_flight_;
  request->op = op;
  request->fd = fd;
  request->iov = iov;
  request->iovcnt = iovcnt;
  request->offset = offset;
  request->length = length;
  request->callback = callback;
  request->arg = arg;
  request->result = 0;
  request->next_queued = nullptr;
  return request;
}

void FileIoBase::Release(FileIoRequest* request) {
  request->callback = nullptr;
  request->arg = nullptr;
  free_.push_back(request);
  --in_flight_;
}

bool FileIoBase::Complete(FileIoRequest* request, int64_t result) {
  Callback callback = request->callback;
  void* arg = request->arg;
  Release(request);
  std::weak_ptr<char> alive = alive_;
  callback(arg, result);
  return !alive.expired();
}

void FileIoBase::ScheduleFlush() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  reactor_.Defer([this, alive = std::weak_ptr<char>(alive_)]() {
    if (alive.expired()) return;
    flush_scheduled_ = false;
    DoFlush();
  });
}

}  // namespace internal
}  // namespace smad::tgt
