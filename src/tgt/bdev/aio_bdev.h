#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tgt/bdev/bdev.h"
#include "tgt/bdev/file_io.h"

namespace smad::tgt {

// bdev_aio: a file or block device with real asynchronous I/O (see FileIo for the engines). Opened
// with O_DIRECT when the file system allows it. Unmap and write-zeroes punch holes (reads return zeros).
class AioBdev : public Bdev {
 public:
  struct Options {
    std::string name;
    std::string filename;
    uint32_t block_size = 0;  // 0: the device's logical block size, or 512 for a regular file
    bool readonly = false;
    Uuid uuid;
  };
  // Errors (errno payload): ENOENT and other open(2) errors, EINVAL for a bad block size or a file
  // smaller than one block.
  static absl::StatusOr<std::unique_ptr<AioBdev>> Create(const Options& options);
  ~AioBdev() override;

  const char* product_name() const override { return "AIO disk"; }
  bool SupportsIoType(IoType type) const override;
  std::unique_ptr<ModuleChannel> CreateModuleChannel(Reactor& reactor) override;
  void SubmitIo(ModuleChannel& channel, BdevIo& io) override;
  Json ConfigEntry() const override;
  Json DriverSpecific() const override;

  const std::string& filename() const { return filename_; }

 private:
  AioBdev(Params params, int fd, std::string filename, bool readonly, bool direct);
  static void OnDone(void* arg, int64_t result);

  int fd_;
  std::string filename_;
  bool readonly_;
  bool direct_;
};

}  // namespace smad::tgt
