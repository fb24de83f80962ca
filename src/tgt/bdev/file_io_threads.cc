// The thread-pool engine, and BlockingPool, which it shares with the libaio engine.

#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "common/status.h"
#include "spdlog/spdlog.h"
#include "tgt/bdev/file_io_internal.h"

namespace smad::tgt::internal {

BlockingPool::BlockingPool(int notify_fd, unsigned threads, const char* name) : notify_fd_(notify_fd) {
  workers_.reserve(threads);
  for (unsigned i = 0; i < threads; ++i) {
    workers_.emplace_back([this, name = std::string(name) + std::to_string(i)] {
      pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
      WorkerLoop();
    });
  }
}

BlockingPool::~BlockingPool() {
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
  }
  work_cv_.SignalAll();
  for (std::thread& worker : workers_) worker.join();
  // No producer is left, so Pop() sees every node. The nodes are embedded in requests: drop them here
  // so the queue's destructor finds nothing to delete.
  while (done_.Pop() != nullptr) {
  }
}

void BlockingPool::Enqueue(FileIoRequest* request) {
  request->next_queued = nullptr;
  {
    absl::MutexLock lock(&mutex_);
    if (queue_tail_ == nullptr) {
      queue_head_ = request;
    } else {
      queue_tail_->next_queued = request;
    }
    queue_tail_ = request;
  }
  work_cv_.Signal();
}

void BlockingPool::ResetSignal() {
  // An RMW (not a plain store) so that it reads from, and synchronizes with, the exchange of every worker
  // whose push it must observe.
  signalled_.exchange(false, std::memory_order_acq_rel);
}

FileIoRequest* BlockingPool::PopCompleted() {
  MpscQueue<FileIoRequest*>::Node* node = done_.Pop();
  return node == nullptr ? nullptr : node->value;
}

void BlockingPool::WorkerLoop() {
  while (true) {
    FileIoRequest* request;
    {
      absl::MutexLock lock(&mutex_);
      while (queue_head_ == nullptr && !stopping_) work_cv_.Wait(&mutex_);
      // Finish queued work even when stopping: the FileIo destructor promises that every accepted
      // operation has run before it returns.
      if (queue_head_ == nullptr) return;
      request = queue_head_;
      queue_head_ = request->next_queued;
      if (queue_head_ == nullptr) queue_tail_ = nullptr;
    }
    request->result = ExecuteBlocking(*request);
    done_.Push(&request->done_node);
    // Only the first completion after the reactor re-armed the signal writes the eventfd.
    if (!signalled_.exchange(true, std::memory_order_acq_rel)) {
      uint64_t one = 1;
      ssize_t rc;
      do {
        rc = write(notify_fd_, &one, sizeof(one));
      } while (rc < 0 && errno == EINTR);
      // EAGAIN: the counter is saturated, so the reactor is being woken anyway.
    }
  }
}

namespace {

// Thread safety: the owning reactor's thread only (the workers touch requests only between Enqueue and
// their completion push).
class ThreadPoolFileIo final : public FileIoBase {
 public:
  ThreadPoolFileIo(Reactor& reactor, unsigned queue_depth, int event_fd, unsigned threads)
      : FileIoBase(reactor, queue_depth),
        event_fd_(event_fd),
        pool_(std::make_unique<BlockingPool>(event_fd, threads, "fileio_w")) {}

  ~ThreadPoolFileIo() override {
    reactor_.UnwatchFd(event_fd_);
    pool_.reset();  // runs the queued requests, joins the workers, drops their callbacks
    close(event_fd_);
  }

  absl::Status Start() {
    return reactor_.WatchFd(event_fd_, EPOLLIN, [this](uint32_t) { Reap(); });
  }

  int Submit(Op op, int fd, const iovec* iov, int iovcnt, uint64_t offset, uint64_t length, Callback callback,
             void* arg) override {
    if (int rc = ValidateRequest(op, fd, iov, iovcnt, offset, length, callback); rc != 0) return rc;
    FileIoRequest* request = Acquire(op, fd, iov, iovcnt, offset, length, callback, arg);
    if (request == nullptr) return -EAGAIN;
    pool_->Enqueue(request);
    return 0;
  }

  void Flush() override {}
  Engine engine() const override { return Engine::kThreadPool; }

 private:
  void DoFlush() override {}

  void Reap() {
    DrainEventFd(event_fd_);
    pool_->ResetSignal();
    while (FileIoRequest* request = pool_->PopCompleted()) {
      if (!Complete(request, request->result)) return;  // a callback destroyed this object
    }
  }

  const int event_fd_;
  std::unique_ptr<BlockingPool> pool_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<FileIo>> CreateThreadPoolFileIo(Reactor& reactor, unsigned queue_depth,
                                                               unsigned threads) {
  ASSIGN_OR_RETURN(int event_fd, MakeEventFd());
  auto io = std::make_unique<ThreadPoolFileIo>(reactor, queue_depth, event_fd, threads);
  RETURN_IF_ERROR(io->Start());
  return io;
}

}  // namespace smad::tgt::internal
