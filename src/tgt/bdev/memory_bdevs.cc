#include "tgt/bdev/memory_bdevs.h"

#include <sys/mman.h>

#include <cstring>
#include <vector>

#include "common/status.h"

namespace smad::tgt {
namespace {

// Completes I/O at the end of the reactor's current callback, in one batch.
class DeferredCompleter : public ModuleChannel {
 public:
  explicit DeferredCompleter(Reactor& reactor) : reactor_(reactor) {}
  ~DeferredCompleter() override { *alive_ = false; }

  void Complete(BdevIo& io, int status) {
    io.status = status;
    ready_.push_back(&io);
    if (ready_.size() == 1) {
      reactor_.Defer([this, alive = alive_] {
        if (!*alive) return;
        std::vector<BdevIo*> batch;
        batch.swap(ready_);
        for (BdevIo* io : batch) Bdev::CompleteIo(*io, io->status);
      });
    }
  }

 private:
  Reactor& reactor_;
  std::vector<BdevIo*> ready_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace

absl::Status ValidateBlockSize(uint32_t block_size) {
  if (block_size < 512 || block_size > 65536 || block_size % 512 != 0) {
    return ErrnoStatus(EINVAL, "block_size must be a multiple of 512 between 512 and 65536");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<MallocBdev>> MallocBdev::Create(Params params) {
  RETURN_IF_ERROR(ValidateBlockSize(params.block_size));
  if (params.num_blocks == 0) return ErrnoStatus(EINVAL, "num_blocks must be positive");
  if (params.num_blocks > (uint64_t{1} << 40) / params.block_size) {
    return ErrnoStatus(EINVAL, "malloc bdev larger than 1 TiB");
  }
  size_t size = params.num_blocks * params.block_size;
  void* memory = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (memory == MAP_FAILED) return ErrnoStatus(ENOMEM);
  return std::unique_ptr<MallocBdev>(new MallocBdev(std::move(params), static_cast<uint8_t*>(memory), size));
}

MallocBdev::MallocBdev(Params params, uint8_t* memory, size_t size)
    : Bdev(std::move(params)), memory_(memory), size_(size) {}

MallocBdev::~MallocBdev() { munmap(memory_, size_); }

std::unique_ptr<ModuleChannel> MallocBdev::CreateModuleChannel(Reactor& reactor) {
  return std::make_unique<DeferredCompleter>(reactor);
}

void MallocBdev::SubmitIo(ModuleChannel& channel, BdevIo& io) {
  uint8_t* base = memory_ + io.offset_blocks * block_size();
  size_t length = io.num_blocks * block_size();
  switch (io.type) {
    case IoType::kRead:
      for (int i = 0; i < io.iovcnt; ++i) {
        std::memcpy(io.iovs[i].iov_base, base, io.iovs[i].iov_len);
        base += io.iovs[i].iov_len;
      }
      break;
    case IoType::kWrite:
      for (int i = 0; i < io.iovcnt; ++i) {
        std::memcpy(base, io.iovs[i].iov_base, io.iovs[i].iov_len);
        base += io.iovs[i].iov_len;
      }
      break;
    case IoType::kWriteZeroes:
    case IoType::kUnmap:
      std::memset(base, 0, length);
      break;
    case IoType::kFlush:
    case IoType::kReset:
      break;
  }
  static_cast<DeferredCompleter&>(channel).Complete(io, 0);
}

Json MallocBdev::ConfigEntry() const {
  return Json{{"method", "bdev_malloc_create"},
              {"params",
               {{"name", name()}, {"num_blocks", num_blocks()}, {"block_size", block_size()},
                {"uuid", uuid().ToString()}}}};
}

absl::StatusOr<std::unique_ptr<NullBdev>> NullBdev::Create(Params params) {
  RETURN_IF_ERROR(ValidateBlockSize(params.block_size));
  if (params.num_blocks == 0) return ErrnoStatus(EINVAL, "num_blocks must be positive");
  return std::unique_ptr<NullBdev>(new NullBdev(std::move(params)));
}

bool NullBdev::SupportsIoType(IoType type) const {
  return type == IoType::kRead || type == IoType::kWrite || type == IoType::kWriteZeroes ||
         type == IoType::kReset;
}

std::unique_ptr<ModuleChannel> NullBdev::CreateModuleChannel(Reactor& reactor) {
  return std::make_unique<DeferredCompleter>(reactor);
}

void NullBdev::SubmitIo(ModuleChannel& channel, BdevIo& io) {
  static_cast<DeferredCompleter&>(channel).Complete(io, 0);
}

Json NullBdev::ConfigEntry() const {
  return Json{{"method", "bdev_null_create"},
              {"params",
               {{"name", name()}, {"num_blocks", num_blocks()}, {"block_size", block_size()},
                {"uuid", uuid().ToString()}}}};
}

}  // namespace smad::tgt
