#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/uuid.h"
#include "nlohmann/json.hpp"
#include "reactor/reactor.h"

namespace smad::tgt {

using Json = nlohmann::json;

class Bdev;
class BdevChannel;
class Qos;

enum class IoType : uint8_t { kRead, kWrite, kFlush, kWriteZeroes, kUnmap, kReset };
const char* IoTypeName(IoType type);

// Called on the submitting reactor when an I/O finishes: status 0 or -errno.
using IoCallback = void (*)(void* arg, int status);

// One block I/O in flight. Allocated by BdevChannel::Submit from the channel's pool; modules see it in
// Bdev::SubmitIo and finish it with Bdev::CompleteIo. Buffers (iovs) belong to the submitter and must
// stay valid until the callback runs.
struct BdevIo {
  IoType type;
  uint64_t offset_blocks = 0;
  uint64_t num_blocks = 0;
  const iovec* iovs = nullptr;
  int iovcnt = 0;
  int status = 0;
  uint64_t start_ns = 0;
  IoCallback callback = nullptr;
  void* callback_arg = nullptr;
  BdevChannel* origin = nullptr;          // channel the I/O was submitted on (its reactor finishes it)
  BdevChannel* module_channel = nullptr;  // channel whose module context executes it (differs with QoS)
  BdevIo* next = nullptr;                 // free list / QoS queue link
  uint64_t module_scratch[4] = {};        // per-I/O scratch space for the executing module
  uint64_t bytes() const;
};

// Per-(bdev, reactor) context a module keeps, e.g. an io_uring ring. Created and destroyed on its reactor.
class ModuleChannel {
 public:
  virtual ~ModuleChannel() = default;
};

// I/O counters of one channel, or of a bdev once summed. Matches bdev_get_iostat's fields.
struct IoStats {
  uint64_t bytes_read = 0, num_read_ops = 0, bytes_written = 0, num_write_ops = 0;
  uint64_t bytes_unmapped = 0, num_unmap_ops = 0;
  uint64_t read_latency_ticks = 0, max_read_latency_ticks = 0, min_read_latency_ticks = 0;
  uint64_t write_latency_ticks = 0, max_write_latency_ticks = 0, min_write_latency_ticks = 0;
  uint64_t unmap_latency_ticks = 0, max_unmap_latency_ticks = 0, min_unmap_latency_ticks = 0;
  uint64_t num_flush_ops = 0, num_write_zeroes_ops = 0, num_io_errors = 0;
  void Add(const IoStats& other);
  Json ToJson() const;  // without the name
};

// QoS rate limits as bdev_set_qos_limit takes them; 0 means unlimited.
struct QosLimits {
  uint64_t rw_ios_per_sec = 0;
  uint64_t rw_mbytes_per_sec = 0;
  uint64_t r_mbytes_per_sec = 0;
  uint64_t w_mbytes_per_sec = 0;
  bool any() const { return rw_ios_per_sec || rw_mbytes_per_sec || r_mbytes_per_sec || w_mbytes_per_sec; }
  friend bool operator==(const QosLimits&, const QosLimits&) = default;
};

// A block device. Subclasses (modules: malloc, null, aio, ...) implement the I/O; this base class owns
// identity, claims, descriptors, per-reactor channels, statistics and QoS.
//
// Thread safety: identity getters are immutable after registration and safe anywhere. Claims,
// descriptors and QoS configuration belong to the control thread (BdevManager's). Channels belong to
// their reactor. Module hooks run where documented.
class Bdev {
 public:
  struct Params {
    std::string name;
    Uuid uuid;  // null: generate
    uint32_t block_size = 512;
    uint64_t num_blocks = 0;
  };

  explicit Bdev(Params params);
  virtual ~Bdev();
  Bdev(const Bdev&) = delete;
  Bdev& operator=(const Bdev&) = delete;

  const std::string& name() const { return name_; }
  const Uuid& uuid() const { return uuid_; }
  uint32_t block_size() const { return block_size_; }
  uint64_t num_blocks() const { return num_blocks_; }
  const std::vector<std::string>& aliases() const { return aliases_; }
  uint64_t id() const { return id_; }

  // --- Module interface ---------------------------------------------------------------------------
  virtual const char* product_name() const = 0;
  virtual bool SupportsIoType(IoType type) const = 0;
  // Creates the module context for the calling reactor.
  virtual std::unique_ptr<ModuleChannel> CreateModuleChannel(Reactor& reactor) = 0;
  // Starts `io` on the calling reactor; must finish it with CompleteIo, never from inside this call.
  virtual void SubmitIo(ModuleChannel& channel, BdevIo& io) = 0;
  // The {"method", "params"} entry that recreates this bdev (save_config), or null if it cannot be.
  virtual Json ConfigEntry() const = 0;
  virtual Json DriverSpecific() const { return Json::object(); }
  // Lets a module adjust its bdev_get_bdevs entry (e.g. SPDK's alignment hints or memory_domains) after
  // the common fields and driver_specific were filled in.
  virtual void AmendDescription(Json& description) const { (void)description; }
  // Releases module resources after the last descriptor and channel are gone (control thread).
  virtual void OnUnregistered() {}

  // Finishes an I/O started by SubmitIo. Runs on the module channel's reactor.
  static void CompleteIo(BdevIo& io, int status);

  // --- Channels (data path) ----------------------------------------------------------------------
  // Returns this reactor's channel, creating it on first use; each call must be paired with
  // ReleaseChannel on the same reactor. Must run on a reactor thread.
  BdevChannel* AcquireChannel();
  void ReleaseChannel(BdevChannel* channel);

  // --- Control-thread state ------------------------------------------------------------------------
  bool claimed() const { return !claim_module_.empty(); }
  const std::string& claim_module() const { return claim_module_; }
  // Exclusive write claim by `module`. Errors: FailedPrecondition (EPERM payload) if already claimed.
  absl::Status Claim(const std::string& module);
  void ReleaseClaim();
  const QosLimits& qos_limits() const { return qos_limits_; }
  // bdev_get_bdevs entry.
  Json Describe() const;

 private:
  friend class BdevManager;
  friend class BdevChannel;
  friend class Qos;

  std::string name_;
  Uuid uuid_;
  uint32_t block_size_;
  uint64_t num_blocks_;
  std::vector<std::string> aliases_;
  uint64_t id_;

  // Control thread.
  std::string claim_module_;
  int open_descriptors_ = 0;
  bool removing_ = false;
  QosLimits qos_limits_;
  bool qos_change_in_progress_ = false;
  IoStats retired_stats_;  // counters of destroyed channels

  // Shared: channels on every reactor read the current QoS object at creation.
  std::atomic<int> live_channels_{0};
  mutable absl::Mutex qos_mutex_;
  std::shared_ptr<Qos> qos_ ABSL_GUARDED_BY(qos_mutex_);
};

// A bdev's context on one reactor: module channel, counters, pooled BdevIo objects.
// Thread safety: reactor-affine; every method runs on that reactor.
class BdevChannel {
 public:
  BdevChannel(Bdev& bdev, Reactor& reactor);
  ~BdevChannel();
  BdevChannel(const BdevChannel&) = delete;
  BdevChannel& operator=(const BdevChannel&) = delete;

  // Submits a block I/O. Returns 0 when accepted (the callback runs later on this reactor, exactly once)
  // or -errno when refused outright (the callback does not run): -EINVAL for an LBA range beyond the
  // device or an iovec total that does not match num_blocks, -ENOTSUP for an unsupported type.
  int Submit(IoType type, uint64_t offset_blocks, uint64_t num_blocks, const iovec* iovs, int iovcnt,
             IoCallback callback, void* arg);

  Bdev& bdev() { return bdev_; }
  Reactor& reactor() { return reactor_; }
  ModuleChannel& module() { return *module_; }
  const IoStats& stats() const { return stats_; }
  uint64_t outstanding() const { return outstanding_; }

 private:
  friend class Bdev;
  friend class Qos;
  friend class BdevManager;
  BdevIo* AllocIo();
  void FreeIo(BdevIo* io);
  void Finish(BdevIo& io);
  void Account(const BdevIo& io, uint64_t now);

  Bdev& bdev_;
  Reactor& reactor_;
  std::unique_ptr<ModuleChannel> module_;
  void MaybeDestroy();

  int refs_ = 0;
  uint64_t outstanding_ = 0;  // submitted here, not yet finished
  uint64_t executing_ = 0;    // executing in this channel's module context on behalf of another (QoS)
  IoStats stats_;
  std::shared_ptr<Qos> qos_;
  BdevIo* free_list_ = nullptr;
  std::vector<std::unique_ptr<BdevIo[]>> io_slabs_;
};

// Per-reactor channel table (thread_local). Used by Bdev::AcquireChannel and to visit channels from
// control-thread broadcasts.
BdevChannel* FindChannelOnThisReactor(uint64_t bdev_id);

}  // namespace smad::tgt
