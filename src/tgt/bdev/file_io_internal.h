#pragma once

// Pieces shared by the FileIo engines (file_io_uring.cc, file_io_libaio.cc, file_io_threads.cc). Not part
// of the public API: only file_io*.cc include this.

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "reactor/mpsc_queue.h"
#include "reactor/reactor.h"
#include "tgt/bdev/file_io.h"

namespace smad::tgt::internal {

// One accepted operation. Engines keep a fixed array of queue_depth requests and a free list, so the
// data path does not allocate.
struct FileIoRequest {
  FileIo::Op op = FileIo::Op::kRead;
  int fd = -1;
  const iovec* iov = nullptr;
  int iovcnt = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  FileIo::Callback callback = nullptr;
  void* arg = nullptr;
  int64_t result = 0;
  // Link in BlockingPool's work queue.
  FileIoRequest* next_queued = nullptr;
  // Node in BlockingPool's completion queue. It is embedded (never heap allocated): BlockingPool pops
  // every pushed node before the queue is destroyed, so the queue never deletes one.
  MpscQueue<FileIoRequest*>::Node done_node{this};
};

// Checks the arguments common to every engine. Returns 0 or -EINVAL / -EBADF.
int ValidateRequest(FileIo::Op op, int fd, const iovec* iov, int iovcnt, uint64_t offset, uint64_t length,
                    FileIo::Callback callback);

// Runs `request` with blocking system calls (preadv, pwritev, fsync, fallocate) and returns the byte count
// or -errno. Thread safe.
int64_t ExecuteBlocking(const FileIoRequest& request);

// Creates a non-blocking, close-on-exec eventfd. Errors: the errno of eventfd(2).
absl::StatusOr<int> MakeEventFd();

// Reads an eventfd until its counter is zero. For the reactor thread.
void DrainEventFd(int fd);

// Engine-independent parts of a FileIo: the request array and free list, the in-flight count, the
// once-per-batch deferred flush and a liveness token that lets reactor callbacks notice that a user
// callback destroyed the FileIo.
//
// Thread safety: the owning reactor's thread only.
class FileIoBase : public FileIo {
 public:
  FileIoBase(Reactor& reactor, unsigned queue_depth);
  ~FileIoBase() override = default;
  FileIoBase(const FileIoBase&) = delete;
  FileIoBase& operator=(const FileIoBase&) = delete;

  unsigned in_flight() const override { return in_flight_; }

 protected:
  // Takes a free request and fills it in, or returns nullptr when queue_depth requests are in flight.
  FileIoRequest* Acquire(Op op, int fd, const iovec* iov, int iovcnt, uint64_t offset, uint64_t length,
                         Callback callback, void* arg);
  // Returns an unused request (one whose submission failed before reaching the engine).
  void Release(FileIoRequest* request);
  // Releases `request` and runs its callback with `result`. Returns false when the callback destroyed
  // this object; the caller must then return without touching any member.
  bool Complete(FileIoRequest* request, int64_t result);

  // Arranges for DoFlush() to run once after the current reactor callback (Reactor::Defer).
  void ScheduleFlush();
  virtual void DoFlush() = 0;

  std::weak_ptr<char> LivenessToken() const { return alive_; }
  size_t IndexOf(const FileIoRequest* request) const {
    return static_cast<size_t>(request - requests_.get());
  }

  Reactor& reactor_;
  const unsigned queue_depth_;

 private:
  std::unique_ptr<FileIoRequest[]> requests_;
  std::vector<FileIoRequest*> free_;
  unsigned in_flight_ = 0;
  bool flush_scheduled_ = false;
  // Expires when this object is destroyed; deferred tasks and reaping loops hold weak references.
  std::shared_ptr<char> alive_;
};

// Worker threads that run requests with ExecuteBlocking and hand them back to the reactor through a
// lock-free completion queue, signalling `notify_fd` (an eventfd the reactor watches) when the queue goes
// from idle to non-empty. Used as the whole thread-pool engine and as libaio's helper for fsync and
// fallocate.
//
// Thread safety: Enqueue, PopCompleted, ResetSignal and the destructor on the reactor thread; the rest is
// internal to the workers.
class BlockingPool {
 public:
  BlockingPool(int notify_fd, unsigned threads, const char* name);
  // Lets the workers finish every queued request, joins them and drops finished requests that were not
  // popped (their callbacks are never run).
  ~BlockingPool();
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  void Enqueue(FileIoRequest* request);
  // Re-arms the eventfd signal. Call before draining with PopCompleted, after reading the eventfd.
  void ResetSignal();
  // The next finished request (its `result` is set), or nullptr.
  FileIoRequest* PopCompleted();

 private:
  void WorkerLoop();

  const int notify_fd_;
  absl::Mutex mutex_;
  absl::CondVar work_cv_;
  FileIoRequest* queue_head_ ABSL_GUARDED_BY(mutex_) = nullptr;
  FileIoRequest* queue_tail_ ABSL_GUARDED_BY(mutex_) = nullptr;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::vector<std::thread> workers_;
  MpscQueue<FileIoRequest*> done_;
  std::atomic<bool> signalled_{false};
};

// Engine factories. Each returns an error (with the failing call and errno in the message) when the engine
// cannot run here; Create() then tries the next one.
absl::StatusOr<std::unique_ptr<FileIo>> CreateIoUringFileIo(Reactor& reactor, unsigned queue_depth);
absl::StatusOr<std::unique_ptr<FileIo>> CreateLibaioFileIo(Reactor& reactor, unsigned queue_depth);
absl::StatusOr<std::unique_ptr<FileIo>> CreateThreadPoolFileIo(Reactor& reactor, unsigned queue_depth,
                                                               unsigned threads);

}  // namespace smad::tgt::internal
