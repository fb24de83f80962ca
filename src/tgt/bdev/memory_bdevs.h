#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tgt/bdev/bdev.h"

namespace smad::tgt {

// bdev_malloc: a RAM disk. Memory is reserved lazily (anonymous mapping) and released on delete.
// I/O is a memcpy on the submitting reactor; completions are deferred to the end of the reactor's
// current callback so they never run inside Submit.
class MallocBdev : public Bdev {
 public:
  // Errors: EINVAL for a block size that is not a multiple of 512 in [512, 65536] or zero blocks;
  // ENOMEM when the mapping fails.
  static absl::StatusOr<std::unique_ptr<MallocBdev>> Create(Params params);
  ~MallocBdev() override;

  const char* product_name() const override { return "Malloc disk"; }
  bool SupportsIoType(IoType) const override { return true; }
  std::unique_ptr<ModuleChannel> CreateModuleChannel(Reactor& reactor) override;
  void SubmitIo(ModuleChannel& channel, BdevIo& io) override;
  Json ConfigEntry() const override;

 private:
  MallocBdev(Params params, uint8_t* memory, size_t size);
  uint8_t* memory_;
  size_t size_;
};

// bdev_null: discards writes and returns reads without touching the buffer (for benchmarks).
class NullBdev : public Bdev {
 public:
  static absl::StatusOr<std::unique_ptr<NullBdev>> Create(Params params);
  const char* product_name() const override { return "Null disk"; }
  bool SupportsIoType(IoType type) const override;
  std::unique_ptr<ModuleChannel> CreateModuleChannel(Reactor& reactor) override;
  void SubmitIo(ModuleChannel& channel, BdevIo& io) override;
  Json ConfigEntry() const override;

 private:
  explicit NullBdev(Params params) : Bdev(std::move(params)) {}
};

// Validates a block size the way SPDK's malloc and null modules do. Errors: EINVAL.
absl::Status ValidateBlockSize(uint32_t block_size);

}  // namespace smad::tgt
