// The Linux AIO (libaio) engine.

#include <libaio.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "common/status.h"
#include "spdlog/spdlog.h"
#include "tgt/bdev/file_io_internal.h"

namespace smad::tgt::internal {
namespace {

constexpr uint64_t kSubmitRetryNs = 100 * 1000;
constexpr int kReapBatch = 64;

// Reads and writes are iocbs submitted with one io_submit per reactor callback (deferred); each iocb
// signals the eventfd the reactor watches. fsync and fallocate go to one helper thread, which signals the
// same eventfd. iocbs that io_submit refuses complete with its error through the same path.
//
// Thread safety: the owning reactor's thread only.
class LibaioFileIo final : public FileIoBase {
 public:
  LibaioFileIo(Reactor& reactor, unsigned queue_depth)
      : FileIoBase(reactor, queue_depth), iocbs_(new iocb[queue_depth]) {
    pending_aio_.reserve(queue_depth);
    pending_blocking_.reserve(queue_depth);
    refused_.reserve(queue_depth);
  }

  ~LibaioFileIo() override {
    if (watching_) reactor_.UnwatchFd(event_fd_);
    if (retry_timer_ != 0) reactor_.CancelTimer(retry_timer_);
    if (context_ready_) DrainInDestructor();
    pool_.reset();  // runs queued fsync/fallocate requests and joins the helper
    if (context_ready_) io_destroy(context_);
    if (event_fd_ >= 0) close(event_fd_);
  }

  absl::Status Init() {
    int rc = io_setup(static_cast<int>(queue_depth_), &context_);
    if (rc < 0) return ErrnoStatus(-rc, "io_setup: " + ErrnoString(-rc));
    context_ready_ = true;
    ASSIGN_OR_RETURN(event_fd_, MakeEventFd());
    pool_ = std::make_unique<BlockingPool>(event_fd_, 1, "fileio_aio");
    RETURN_IF_ERROR(reactor_.WatchFd(event_fd_, EPOLLIN, [this](uint32_t) { Reap(); }));
    watching_ = true;
    return absl::OkStatus();
  }

  int Submit(Op op, int fd, const iovec* iov, int iovcnt, uint64_t offset, uint64_t length, Callback callback,
             void* arg) override {
    if (int rc = ValidateRequest(op, fd, iov, iovcnt, offset, length, callback); rc != 0) return rc;
    FileIoRequest* request = Acquire(op, fd, iov, iovcnt, offset, length, callback, arg);
    if (request == nullptr) return -EAGAIN;
    if (op == Op::kRead || op == Op::kWrite) {
      iocb* cb = &iocbs_[IndexOf(request)];
      auto off = static_cast<long long>(offset);
      if (op == Op::kRead) {
        io_prep_preadv(cb, fd, iov, iovcnt, off);
      } else {
        io_prep_pwritev(cb, fd, iov, iovcnt, off);
      }
      io_set_eventfd(cb, event_fd_);
      cb->data = request;
      pending_aio_.push_back(cb);
    } else {
      pending_blocking_.push_back(request);
    }
    ScheduleFlush();
    return 0;
  }

  void Flush() override { DoFlush(); }
  Engine engine() const override { return Engine::kLibaio; }

 private:
  void DoFlush() override {
    if (SubmitPendingAio() == -EAGAIN) ScheduleRetry();
    // After the iocbs, so an fsync submitted after a write does not overtake it on the way to the kernel.
    for (FileIoRequest* request : pending_blocking_) pool_->Enqueue(request);
    pending_blocking_.clear();
  }

  // io_submit()s pending_aio_. An iocb the kernel refuses (-EBADF, -EINVAL, ...) moves to refused_ and the
  // eventfd is signalled so the reactor completes it. Returns -EAGAIN when the kernel is out of resources
  // and iocbs remain pending, else 0.
  int SubmitPendingAio() {
    size_t done = 0;
    int result = 0;
    bool refused = false;
    while (done < pending_aio_.size()) {
      int rc = io_submit(context_, static_cast<long>(pending_aio_.size() - done), pending_aio_.data() + done);
      if (rc > 0) {
        kernel_in_flight_ += static_cast<unsigned>(rc);
        done += static_cast<size_t>(rc);
      } else if (rc == -EINTR) {
        continue;
      } else if (rc == -EAGAIN || rc == 0) {
        result = -EAGAIN;
        break;
      } else {
        auto* request = static_cast<FileIoRequest*>(pending_aio_[done]->data);
        request->result = rc;
        refused_.push_back(request);
        refused = true;
        ++done;
      }
    }
    pending_aio_.erase(pending_aio_.begin(), pending_aio_.begin() + static_cast<ptrdiff_t>(done));
    if (refused) {
      uint64_t one = 1;
      ssize_t rc = write(event_fd_, &one, sizeof(one));
      (void)rc;  // EAGAIN: the counter is saturated, the reactor is woken anyway
    }
    return result;
  }

  void ScheduleRetry() {
    if (retry_timer_ != 0) return;
    retry_timer_ = reactor_.RunAfter(kSubmitRetryNs, [this, alive = LivenessToken()] {
      if (alive.expired()) return;
      retry_timer_ = 0;
      if (SubmitPendingAio() == -EAGAIN) ScheduleRetry();
    });
  }

  void Reap() {
    DrainEventFd(event_fd_);
    pool_->ResetSignal();
    io_event events[kReapBatch];
    while (kernel_in_flight_ > 0) {
      timespec zero{};
      int n = io_getevents(context_, 0, kReapBatch, events, &zero);
      if (n == -EINTR) continue;
      if (n < 0) {
        spdlog::error("file_io: io_getevents failed: {}", ErrnoString(-n));
        break;
      }
      if (n == 0) break;
      // Counted before the callbacks: if one destroys this object, the destructor must not wait for these.
      kernel_in_flight_ -= static_cast<unsigned>(n);
      for (int i = 0; i < n; ++i) {
        auto* request = static_cast<FileIoRequest*>(events[i].data);
        auto result = static_cast<int64_t>(static_cast<long>(events[i].res));
        if (!Complete(request, result)) return;
      }
      if (n < kReapBatch) break;
    }
    while (FileIoRequest* request = pool_->PopCompleted()) {
      if (!Complete(request, request->result)) return;
    }
    if (!refused_.empty()) {
      std::vector<FileIoRequest*> refused;
      refused.swap(refused_);
      for (FileIoRequest* request : refused) {
        if (!Complete(request, request->result)) return;
      }
    }
  }

  // Submits what is still pending and waits for every iocb in the kernel, dropping the callbacks.
  void DrainInDestructor() {
    io_event events[kReapBatch];
    while (true) {
      bool again = !pending_aio_.empty() && SubmitPendingAio() == -EAGAIN;
      if (!again) break;
      if (kernel_in_flight_ == 0) {
        spdlog::error("file_io: dropping {} unsubmitted AIO operations", pending_aio_.size());
        break;
      }
      int n = io_getevents(context_, 1, kReapBatch, events, nullptr);
      if (n > 0) kernel_in_flight_ -= static_cast<unsigned>(n);
    }
    for (FileIoRequest* request : pending_blocking_) pool_->Enqueue(request);
    pending_blocking_.clear();
    while (kernel_in_flight_ > 0) {
      int n = io_getevents(context_, 1, kReapBatch, events, nullptr);
      if (n == -EINTR) continue;
      if (n < 0) {
        spdlog::error("file_io: io_getevents failed with {} operations outstanding: {}", kernel_in_flight_,
                      ErrnoString(-n));
        return;
      }
      kernel_in_flight_ -= static_cast<unsigned>(n);
    }
  }

  std::unique_ptr<iocb[]> iocbs_;  // iocbs_[i] belongs to request i
  io_context_t context_ = nullptr;
  bool context_ready_ = false;
  int event_fd_ = -1;
  bool watching_ = false;
  std::unique_ptr<BlockingPool> pool_;
  std::vector<iocb*> pending_aio_;                // prepared, not yet io_submit()ted
  std::vector<FileIoRequest*> pending_blocking_;  // fsync/fallocate not yet handed to the helper
  std::vector<FileIoRequest*> refused_;           // refused by io_submit, result set
  unsigned kernel_in_flight_ = 0;                 // submitted iocbs whose event was not fetched yet
  uint64_t retry_timer_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<FileIo>> CreateLibaioFileIo(Reactor& reactor, unsigned queue_depth) {
  auto io = std::make_unique<LibaioFileIo>(reactor, queue_depth);
  RETURN_IF_ERROR(io->Init());
  return io;
}

}  // namespace smad::tgt::internal
