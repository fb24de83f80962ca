// The io_uring engine.

#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/status.h"
#include "spdlog/spdlog.h"
#include "tgt/bdev/file_io_internal.h"

namespace smad::tgt::internal {
namespace {

constexpr uint64_t kSubmitRetryNs = 100 * 1000;

// One ring per FileIo. Submit fills an SQE; the SQEs of one reactor callback go to the kernel in one
// io_uring_submit from a deferred task. Completions are reaped when the ring's eventfd fires, and on
// every loop iteration by a poller when the reactor busy-polls.
//
// Thread safety: the owning reactor's thread only.
class IoUringFileIo final : public FileIoBase {
 public:
  IoUringFileIo(Reactor& reactor, unsigned queue_depth) : FileIoBase(reactor, queue_depth) {}

  ~IoUringFileIo() override {
    if (watching_) reactor_.UnwatchFd(event_fd_);
    if (poller_id_ != 0) reactor_.RemovePoller(poller_id_);
    if (retry_timer_ != 0) reactor_.CancelTimer(retry_timer_);
    if (ring_ready_) {
      DrainInDestructor();
      io_uring_queue_exit(&ring_);
    }
    if (event_fd_ >= 0) close(event_fd_);
  }

  absl::Status Init() {
    int rc = io_uring_queue_init(queue_depth_, &ring_, 0);
    if (rc < 0) return ErrnoStatus(-rc, "io_uring_queue_init: " + ErrnoString(-rc));
    ring_ready_ = true;

    // Kernels before 5.6 have no probe; they do support READV, WRITEV and FSYNC (5.1) but not FALLOCATE.
    if (io_uring_probe* probe = io_uring_get_probe_ring(&ring_); probe != nullptr) {
      bool rw = io_uring_opcode_supported(probe, IORING_OP_READV) &&
                io_uring_opcode_supported(probe, IORING_OP_WRITEV) &&
                io_uring_opcode_supported(probe, IORING_OP_FSYNC);
      bool fallocate = io_uring_opcode_supported(probe, IORING_OP_FALLOCATE);
      io_uring_free_probe(probe);
      if (!rw) return ErrnoStatus(EOPNOTSUPP, "io_uring lacks READV/WRITEV/FSYNC");
      if (!fallocate) {
        spdlog::warn("file_io: io_uring lacks FALLOCATE: punch hole and zero range will fail with -EINVAL");
      }
    }

    ASSIGN_OR_RETURN(event_fd_, MakeEventFd());
    rc = io_uring_register_eventfd(&ring_, event_fd_);
    if (rc < 0) return ErrnoStatus(-rc, "io_uring_register_eventfd: " + ErrnoString(-rc));
    RETURN_IF_ERROR(reactor_.WatchFd(event_fd_, EPOLLIN, [this](uint32_t) {
      DrainEventFd(event_fd_);
      Reap();
    }));
    watching_ = true;
    if (reactor_.busy_poll()) {
      // The loop never sleeps: peek at the CQ (no system call) instead of waiting for the eventfd.
      poller_id_ = reactor_.AddPoller([this] { return Reap() > 0; });
    }
    return absl::OkStatus();
  }

  int Submit(Op op, int fd, const iovec* iov, int iovcnt, uint64_t offset, uint64_t length, Callback callback,
             void* arg) override {
    if (int rc = ValidateRequest(op, fd, iov, iovcnt, offset, length, callback); rc != 0) return rc;
    FileIoRequest* request = Acquire(op, fd, iov, iovcnt, offset, length, callback, arg);
    if (request == nullptr) return -EAGAIN;
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      // Cannot happen while the ring has at least queue_depth entries, unless submissions keep failing.
      SubmitQueued();
      sqe = io_uring_get_sqe(&ring_);
      if (sqe == nullptr) {
        Release(request);
        return -EAGAIN;
      }
    }
    auto off = static_cast<off_t>(offset);
    auto len = static_cast<off_t>(length);
    switch (op) {
      case Op::kRead:
        io_uring_prep_readv(sqe, fd, iov, static_cast<unsigned>(iovcnt), offset);
        break;
      case Op::kWrite:
        io_uring_prep_writev(sqe, fd, iov, static_cast<unsigned>(iovcnt), offset);
        break;
      case Op::kFsync:
        io_uring_prep_fsync(sqe, fd, 0);
        break;
      case Op::kPunchHole:
        io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
        break;
      case Op::kZeroRange:
        io_uring_prep_fallocate(sqe, fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len);
        break;
    }
    io_uring_sqe_set_data(sqe, request);
    ScheduleFlush();
    return 0;
  }

  void Flush() override { SubmitQueued(); }
  Engine engine() const override { return Engine::kIoUring; }

 private:
  void DoFlush() override { SubmitQueued(); }

  // Hands every prepared SQE to the kernel. A transient refusal (-EAGAIN, -EBUSY) is retried shortly.
  void SubmitQueued() {
    while (io_uring_sq_ready(&ring_) > 0) {
      int rc = io_uring_submit(&ring_);
      if (rc > 0 || rc == -EINTR) continue;
      if (rc != -EAGAIN && rc != -EBUSY) {
        spdlog::error("file_io: io_uring_submit failed: {}; retrying", ErrnoString(-rc));
      }
      ScheduleRetry();
      return;
    }
  }

  void ScheduleRetry() {
    if (retry_timer_ != 0) return;
    retry_timer_ = reactor_.RunAfter(kSubmitRetryNs, [this, alive = LivenessToken()] {
      if (alive.expired()) return;
      retry_timer_ = 0;
      SubmitQueued();
    });
  }

  // Runs the callbacks of the completed operations. Returns how many completed; stops early (without
  // touching members) when a callback destroyed this object.
  unsigned Reap() {
    unsigned reaped = 0;
    io_uring_cqe* cqe;
    while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
      auto* request = static_cast<FileIoRequest*>(io_uring_cqe_get_data(cqe));
      int64_t result = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      ++reaped;
      if (!Complete(request, result)) break;
    }
    return reaped;
  }

  // Submits what is still queued and waits for every outstanding CQE, dropping the callbacks.
  void DrainInDestructor() {
    unsigned outstanding = in_flight();
    while (io_uring_sq_ready(&ring_) > 0) {
      int rc = io_uring_submit(&ring_);
      if (rc > 0 || rc == -EINTR) continue;
      if ((rc == -EAGAIN || rc == -EBUSY) && outstanding > io_uring_sq_ready(&ring_)) {
        // Make room by waiting for one operation the kernel already has.
        io_uring_cqe* cqe;
        if (io_uring_wait_cqe(&ring_, &cqe) == 0) {
          io_uring_cqe_seen(&ring_, cqe);
          --outstanding;
          continue;
        }
      }
      // These never reach the kernel, so nothing will touch their buffers.
      unsigned dropped = io_uring_sq_ready(&ring_);
      spdlog::error("file_io: dropping {} unsubmitted io_uring operations: {}", dropped, ErrnoString(-rc));
      outstanding -= std::min(dropped, outstanding);
      break;
    }
    while (outstanding > 0) {
      io_uring_cqe* cqe;
      int rc = io_uring_wait_cqe(&ring_, &cqe);
      if (rc == -EINTR) continue;
      if (rc < 0) {
        spdlog::error("file_io: io_uring_wait_cqe failed with {} operations outstanding: {}", outstanding,
                      ErrnoString(-rc));
        return;
      }
      io_uring_cqe_seen(&ring_, cqe);
      --outstanding;
    }
  }

  io_uring ring_{};
  bool ring_ready_ = false;
  int event_fd_ = -1;
  bool watching_ = false;
  uint64_t poller_id_ = 0;
  uint64_t retry_timer_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<FileIo>> CreateIoUringFileIo(Reactor& reactor, unsigned queue_depth) {
  auto io = std::make_unique<IoUringFileIo>(reactor, queue_depth);
  RETURN_IF_ERROR(io->Init());
  return io;
}

}  // namespace smad::tgt::internal
