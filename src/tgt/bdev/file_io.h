#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "reactor/reactor.h"

namespace smad::tgt {

// Asynchronous file I/O for one reactor, used by the aio bdev. Three engines, chosen at creation:
// io_uring, then Linux AIO (libaio), then a small thread pool for kernels or sandboxes that refuse
// both. Completions are delivered through an eventfd watched by the owning reactor, so callbacks
// always run on that reactor's thread and never inside the Submit call.
//
// Engines:
//  - kIoUring: one ring of `queue_depth` entries per FileIo; READV/WRITEV/FSYNC/FALLOCATE SQEs; its
//    eventfd is watched by the reactor (plus a CQ-peeking poller when the reactor busy-polls). A kernel
//    without IORING_OP_FALLOCATE reports -EINVAL to the callback of punch-hole/zero-range operations.
//  - kLibaio: an io_context of `queue_depth` events with io_set_eventfd; reads and writes are kernel AIO,
//    fsync and fallocate run on one helper thread (Linux AIO does not implement them reliably).
//  - kThreadPool: worker threads running preadv/pwritev/fsync/fallocate (4 by default, at most
//    `queue_depth`).
// Reads and writes are only truly asynchronous with io_uring, or with libaio on O_DIRECT files.
// io_uring and libaio batch submissions: they reach the kernel in one system call once the reactor
// callback that made them returns, or at Flush(). The thread pool hands each one to a worker at once.
//
// Environment (read by Create):
//   SMAD_FILE_IO_ENGINE=io_uring|libaio|threads  replaces `preferred` (the fallback order still applies
//                                                after it); used by tests and to work around kernels.
//   SMAD_FILE_IO_THREADS=N                       worker count of the thread-pool engine (1..64).
//
// Thread safety: create, submit and destroy on the owning reactor's thread only.
// Ownership: iovec arrays and buffers must stay valid until the callback runs.
// Destruction: the owner should wait until in_flight() == 0 (for example by counting callbacks). If it
// does not, the destructor blocks until every accepted operation has finished in the kernel or a worker
// (so no buffer is touched after it returns) and drops their callbacks WITHOUT running them. Destroying
// the FileIo from inside one of its own callbacks is allowed; the remaining callbacks are then dropped
// the same way.
class FileIo {
 public:
  enum class Engine { kIoUring, kLibaio, kThreadPool };
  enum class Op { kRead, kWrite, kFsync, kPunchHole, kZeroRange };

  // Called on the reactor thread with the byte count (>= 0) or -errno. A short read or write is
  // reported as its byte count (0 at or past the end of file); the caller decides whether that is an
  // error. fsync, punch hole and zero range report 0 on success.
  using Callback = void (*)(void* arg, int64_t result);

  virtual ~FileIo() = default;

  // Creates an engine on `reactor` (the calling thread must be that reactor's, or the reactor must not
  // run yet). `preferred` is tried first, then the engines after it in the order above; the choice and
  // every refusal are logged. `queue_depth` (1..32768) bounds the operations in flight; Submit returns
  // -EAGAIN beyond it. Errors: InvalidArgument for a bad queue depth; the last engine's error when none
  // can run.
  static absl::StatusOr<std::unique_ptr<FileIo>> Create(Reactor& reactor, Engine preferred,
                                                        unsigned queue_depth = 256);

  // Starts an operation on `fd` at byte `offset`. For kPunchHole and kZeroRange `length` is the byte
  // length and iov is unused; for kFsync both are unused. Returns 0 when submitted (the callback will
  // run exactly once, unless the FileIo is destroyed first) or -errno when it could not be (the callback
  // will not run): -EAGAIN when queue_depth operations are in flight, -EBADF for a negative fd, -EINVAL
  // for a null callback, a missing iovec array, iovcnt outside [1, IOV_MAX], an offset or range beyond
  // INT64_MAX, or a zero length. Errors found by the kernel (-EBADF for a closed fd, -EINVAL for a
  // misaligned O_DIRECT offset or length, -EOPNOTSUPP for fallocate on a file system without it) go to the
  // callback.
  virtual int Submit(Op op, int fd, const iovec* iov, int iovcnt, uint64_t offset, uint64_t length,
                     Callback callback, void* arg) = 0;

  // Pushes submissions queued by earlier Submit calls to the kernel (engines batch them until the
  // reactor finishes its current callbacks; calling this is optional).
  virtual void Flush() = 0;

  virtual Engine engine() const = 0;
  virtual unsigned in_flight() const = 0;
};

const char* EngineName(FileIo::Engine engine);
// Parses "io_uring", "libaio" or "threads". Errors: InvalidArgument.
absl::StatusOr<FileIo::Engine> ParseEngine(const std::string& name);

}  // namespace smad::tgt
