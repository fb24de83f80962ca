#include "tgt/bdev/aio_bdev.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <deque>

#include "common/status.h"
#include "spdlog/spdlog.h"
#include "tgt/bdev/memory_bdevs.h"

namespace smad::tgt {
namespace {

constexpr unsigned kEngineQueueDepth = 1024;

// A reactor's engine plus the I/O that found the engine full; those are retried as slots free up.
class AioChannel : public ModuleChannel {
 public:
  explicit AioChannel(std::unique_ptr<FileIo> io) : io_(std::move(io)) {}
  FileIo* io() { return io_.get(); }
  std::deque<BdevIo*>& waiting() { return waiting_; }

 private:
  std::unique_ptr<FileIo> io_;
  std::deque<BdevIo*> waiting_;
};

FileIo::Engine PreferredEngine() { return FileIo::Engine::kIoUring; }

}  // namespace

absl::StatusOr<std::unique_ptr<AioBdev>> AioBdev::Create(const Options& options) {
  if (options.filename.empty()) return ErrnoStatus(EINVAL, "filename is required");
  int flags = (options.readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  bool direct = true;
  int fd = open(options.filename.c_str(), flags | O_DIRECT);
  if (fd < 0 && errno == EINVAL) {  // the file system does not support O_DIRECT (e.g. tmpfs)
    direct = false;
    fd = open(options.filename.c_str(), flags);
  }
  if (fd < 0) return ErrnoStatus(errno);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return ErrnoStatus(err);
  }
  uint64_t size = 0;
  uint32_t device_block = 512;
  if (S_ISBLK(st.st_mode)) {
    if (ioctl(fd, BLKGETSIZE64, &size) != 0) size = 0;
    int ssz = 0;
    if (ioctl(fd, BLKSSZGET, &ssz) == 0 && ssz > 0) device_block = static_cast<uint32_t>(ssz);
  } else if (S_ISREG(st.st_mode)) {
    size = static_cast<uint64_t>(st.st_size);
  } else {
    close(fd);
    return ErrnoStatus(EINVAL, "not a regular file or block device");
  }
  uint32_t block_size = options.block_size ? options.block_size : device_block;
  absl::Status valid = ValidateBlockSize(block_size);
  if (!valid.ok() || block_size < device_block) {
    close(fd);
    return ErrnoStatus(EINVAL, "invalid block_size");
  }
  uint64_t num_blocks = size / block_size;
  if (num_blocks == 0) {
    close(fd);
    return ErrnoStatus(EINVAL, "file is smaller than one block");
  }
  Params params{options.name, options.uuid, block_size, num_blocks};
  return std::unique_ptr<AioBdev>(new AioBdev(std::move(params), fd, options.filename, options.readonly, direct));
}

AioBdev::AioBdev(Params params, int fd, std::string filename, bool readonly, bool direct)
    : Bdev(std::move(params)), fd_(fd), filename_(std::move(filename)), readonly_(readonly), direct_(direct) {
  spdlog::info("aio bdev {} on {} ({} blocks of {} bytes, {})", name(), filename_, num_blocks(), block_size(),
               direct_ ? "O_DIRECT" : "buffered");
}

AioBdev::~AioBdev() {
  if (fd_ >= 0) close(fd_);
}

bool AioBdev::SupportsIoType(IoType type) const {
  if (readonly_) return type == IoType::kRead || type == IoType::kFlush || type == IoType::kReset;
  return true;
}

std::unique_ptr<ModuleChannel> AioBdev::CreateModuleChannel(Reactor& reactor) {
  auto io = FileIo::Create(reactor, PreferredEngine(), kEngineQueueDepth);
  if (!io.ok()) {
    // Every engine failed (even the thread pool): nothing can run I/O. Treat as fatal for the process
    // state rather than limping on.
    spdlog::critical("aio bdev {}: no file I/O engine: {}", name(), io.status().ToString());
    std::abort();
  }
  return std::make_unique<AioChannel>(std::move(io).value());
}

void AioBdev::OnDone(void* arg, int64_t result) {
  auto* io = static_cast<BdevIo*>(arg);
  int status = 0;
  if (result < 0) {
    status = static_cast<int>(result);
  } else if ((io->type == IoType::kRead || io->type == IoType::kWrite) &&
             static_cast<uint64_t>(result) != io->bytes()) {
    status = -EIO;  // short transfer: the file shrank underneath us
  }
  auto& channel = static_cast<AioChannel&>(io->module_channel->module());
  auto* bdev = static_cast<AioBdev*>(&io->module_channel->bdev());
  // One engine slot is free again: take the oldest I/O that found the engine full. Taken before
  // completing `io`, whose callback may release the channel (a waiting I/O keeps it alive).
  BdevIo* next = nullptr;
  if (!channel.waiting().empty()) {
    next = channel.waiting().front();
    channel.waiting().pop_front();
  }
  Bdev::CompleteIo(*io, status);
  if (next != nullptr) bdev->SubmitIo(channel, *next);
}

void AioBdev::SubmitIo(ModuleChannel& channel, BdevIo& io) {
  FileIo* file_io = static_cast<AioChannel&>(channel).io();
  uint64_t offset = io.offset_blocks * block_size();
  uint64_t length = io.num_blocks * block_size();
  int rc = 0;
  switch (io.type) {
    case IoType::kRead:
      rc = file_io->Submit(FileIo::Op::kRead, fd_, io.iovs, io.iovcnt, offset, length, &OnDone, &io);
      break;
    case IoType::kWrite:
      rc = file_io->Submit(FileIo::Op::kWrite, fd_, io.iovs, io.iovcnt, offset, length, &OnDone, &io);
      break;
    case IoType::kFlush:
      rc = file_io->Submit(FileIo::Op::kFsync, fd_, nullptr, 0, 0, 0, &OnDone, &io);
      break;
    case IoType::kUnmap:
    case IoType::kWriteZeroes:
      rc = file_io->Submit(FileIo::Op::kPunchHole, fd_, nullptr, 0, offset, length, &OnDone, &io);
      break;
    case IoType::kReset:
      rc = file_io->Submit(FileIo::Op::kFsync, fd_, nullptr, 0, 0, 0, &OnDone, &io);
      break;
  }
  if (rc == -EAGAIN) {
    static_cast<AioChannel&>(channel).waiting().push_back(&io);
  } else if (rc != 0) {
    Reactor::Current()->Defer([&io, rc] { Bdev::CompleteIo(io, rc); });
  }
}

Json AioBdev::ConfigEntry() const {
  Json params = {{"name", name()}, {"filename", filename_}, {"block_size", block_size()},
                 {"uuid", uuid().ToString()}};
  if (readonly_) params["readonly"] = true;
  return Json{{"method", "bdev_aio_create"}, {"params", params}};
}

Json AioBdev::DriverSpecific() const {
  return Json{{"aio", {{"filename", filename_}, {"block_size_override", true}, {"readonly", readonly_},
                       {"fallocate", false}}}};
}

}  // namespace smad::tgt
