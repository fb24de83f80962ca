#include "tgt/bdev/bdev.h"

#include <algorithm>
#include <atomic>

#include "absl/container/flat_hash_map.h"
#include "common/status.h"
#include "spdlog/spdlog.h"
#include "tgt/bdev/bdev_manager.h"
#include "tgt/bdev/qos.h"

namespace smad::tgt {
namespace {

std::atomic<uint64_t> g_next_bdev_id{1};
BdevManager* g_manager = nullptr;

// This reactor's channels, by bdev id. Reactor-affine by construction.
absl::flat_hash_map<uint64_t, BdevChannel*>& Channels() {
  thread_local absl::flat_hash_map<uint64_t, BdevChannel*> channels;
  return channels;
}

constexpr int kIoSlabSize = 256;

}  // namespace

void SetBdevManagerForChannels(BdevManager* manager) { g_manager = manager; }

BdevChannel* FindChannelOnThisReactor(uint64_t bdev_id) {
  auto& channels = Channels();
  auto it = channels.find(bdev_id);
  return it == channels.end() ? nullptr : it->second;
}

const char* IoTypeName(IoType type) {
  switch (type) {
    case IoType::kRead: return "read";
    case IoType::kWrite: return "write";
    case IoType::kFlush: return "flush";
    case IoType::kWriteZeroes: return "write_zeroes";
    case IoType::kUnmap: return "unmap";
    case IoType::kReset: return "reset";
  }
  return "unknown";
}

uint64_t BdevIo::bytes() const {
  return num_blocks * origin->bdev().block_size();
}

void IoStats::Add(const IoStats& o) {
  auto add_min = [](uint64_t& mine, uint64_t theirs) {
    if (theirs != 0 && (mine == 0 || theirs < mine)) mine = theirs;
  };
  bytes_read += o.bytes_read;
  num_read_ops += o.num_read_ops;
  bytes_written += o.bytes_written;
  num_write_ops += o.num_write_ops;
  bytes_unmapped += o.bytes_unmapped;
  num_unmap_ops += o.num_unmap_ops;
  read_latency_ticks += o.read_latency_ticks;
  write_latency_ticks += o.write_latency_ticks;
  unmap_latency_ticks += o.unmap_latency_ticks;
  max_read_latency_ticks = std::max(max_read_latency_ticks, o.max_read_latency_ticks);
  max_write_latency_ticks = std::max(max_write_latency_ticks, o.max_write_latency_ticks);
  max_unmap_latency_ticks = std::max(max_unmap_latency_ticks, o.max_unmap_latency_ticks);
  add_min(min_read_latency_ticks, o.min_read_latency_ticks);
  add_min(min_write_latency_ticks, o.min_write_latency_ticks);
  add_min(min_unmap_latency_ticks, o.min_unmap_latency_ticks);
  num_flush_ops += o.num_flush_ops;
  num_write_zeroes_ops += o.num_write_zeroes_ops;
  num_io_errors += o.num_io_errors;
}

Json IoStats::ToJson() const {
  return Json{{"bytes_read", bytes_read},
              {"num_read_ops", num_read_ops},
              {"bytes_written", bytes_written},
              {"num_write_ops", num_write_ops},
              {"bytes_unmapped", bytes_unmapped},
              {"num_unmap_ops", num_unmap_ops},
              {"bytes_copied", uint64_t{0}},
              {"num_copy_ops", uint64_t{0}},
              {"read_latency_ticks", read_latency_ticks},
              {"max_read_latency_ticks", max_read_latency_ticks},
              {"min_read_latency_ticks", min_read_latency_ticks},
              {"write_latency_ticks", write_latency_ticks},
              {"max_write_latency_ticks", max_write_latency_ticks},
              {"min_write_latency_ticks", min_write_latency_ticks},
              {"unmap_latency_ticks", unmap_latency_ticks},
              {"max_unmap_latency_ticks", max_unmap_latency_ticks},
              {"min_unmap_latency_ticks", min_unmap_latency_ticks},
              {"copy_latency_ticks", uint64_t{0}},
              {"max_copy_latency_ticks", uint64_t{0}},
              {"min_copy_latency_ticks", uint64_t{0}},
              {"io_error", Json::object()}};
}

Bdev::Bdev(Params params)
    : name_(std::move(params.name)),
      uuid_(params.uuid.IsNull() ? Uuid::Generate() : params.uuid),
      block_size_(params.block_size),
      num_blocks_(params.num_blocks),
      aliases_{uuid_.ToString()},
      id_(g_next_bdev_id.fetch_add(1)) {}

Bdev::~Bdev() = default;

absl::Status Bdev::Claim(const std::string& module) {
  if (claimed()) {
    return ErrnoStatus(EPERM, "bdev " + name_ + " already claimed by " + claim_module_);
  }
  claim_module_ = module;
  return absl::OkStatus();
}

void Bdev::ReleaseClaim() { claim_module_.clear(); }

Json Bdev::Describe() const {
  auto io_type = [this](IoType t) { return SupportsIoType(t); };
  Json j = {
      {"name", name_},
      {"aliases", aliases_},
      {"product_name", product_name()},
      {"block_size", block_size_},
      {"num_blocks", num_blocks_},
      {"preferred_write_alignment", 0},
      {"preferred_write_granularity", 0},
      {"optimal_write_size", 0},
      {"preferred_unmap_alignment", 0},
      {"preferred_unmap_granularity", 0},
      {"uuid", uuid_.ToString()},
      {"numa_id", -1},
      {"assigned_rate_limits",
       {{"rw_ios_per_sec", qos_limits_.rw_ios_per_sec},
        {"rw_mbytes_per_sec", qos_limits_.rw_mbytes_per_sec},
        {"r_mbytes_per_sec", qos_limits_.r_mbytes_per_sec},
        {"w_mbytes_per_sec", qos_limits_.w_mbytes_per_sec}}},
      {"claimed", claimed()},
  };
  if (claimed()) {
    j["claim_type"] = "exclusive_write";
    j["claimed_by"] = claim_module_;
  }
  j["zoned"] = false;
  j["supported_io_types"] = {
      {"read", io_type(IoType::kRead)},
      {"write", io_type(IoType::kWrite)},
      {"unmap", io_type(IoType::kUnmap)},
      {"flush", io_type(IoType::kFlush)},
      {"reset", io_type(IoType::kReset)},
      {"nvme_admin", false},
      {"nvme_io", false},
      {"nvme_io_md", false},
      {"write_zeroes", io_type(IoType::kWriteZeroes)},
      {"zcopy", false},
      {"get_zone_info", false},
      {"zone_management", false},
      {"zone_append", false},
      {"compare", false},
      {"compare_and_write", false},
      {"abort", false},
      {"seek_hole", false},
      {"seek_data", false},
      {"copy", false},
      {"nvme_iov_md", false},
      {"nvme_nssr", false},
      {"write_uncorrectable", false},
  };
  j["driver_specific"] = DriverSpecific();
  AmendDescription(j);
  return j;
}

BdevChannel* Bdev::AcquireChannel() {
  Reactor* reactor = Reactor::Current();
  auto& channels = Channels();
  auto it = channels.find(id_);
  BdevChannel* channel;
  if (it != channels.end()) {
    channel = it->second;
  } else {
    channel = new BdevChannel(*this, *reactor);
    channels.emplace(id_, channel);
    live_channels_.fetch_add(1);
    absl::MutexLock lock(&qos_mutex_);
    channel->qos_ = qos_;
  }
  ++channel->refs_;
  return channel;
}

void Bdev::ReleaseChannel(BdevChannel* channel) {
  if (--channel->refs_ > 0) return;
  Channels().erase(id_);
  channel->MaybeDestroy();
}

void Bdev::CompleteIo(BdevIo& io, int status) {
  io.status = status;
  BdevChannel* executing = io.module_channel;
  BdevChannel* origin = io.origin;
  if (executing != origin) {
    --executing->executing_;
    executing->MaybeDestroy();
    origin->reactor().Post([&io] { io.origin->Finish(io); });
    return;
  }
  origin->Finish(io);
}

BdevChannel::BdevChannel(Bdev& bdev, Reactor& reactor)
    : bdev_(bdev), reactor_(reactor), module_(bdev.CreateModuleChannel(reactor)) {}

BdevChannel::~BdevChannel() = default;

void BdevChannel::MaybeDestroy() {
  if (refs_ > 0 || outstanding_ > 0 || executing_ > 0) return;
  IoStats stats = stats_;
  uint64_t bdev_id = bdev_.id();
  BdevManager* manager = g_manager;
  delete this;
  if (manager != nullptr) {
    manager->control().Post([manager, bdev_id, stats] { manager->OnChannelRetired(bdev_id, stats); });
  }
}

BdevIo* BdevChannel::AllocIo() {
  if (free_list_ == nullptr) {
    auto slab = std::make_unique<BdevIo[]>(kIoSlabSize);
    for (int i = 0; i < kIoSlabSize; ++i) {
      slab[i].next = free_list_;
      free_list_ = &slab[i];
    }
    io_slabs_.push_back(std::move(slab));
  }
  BdevIo* io = free_list_;
  free_list_ = io->next;
  io->next = nullptr;
  return io;
}

void BdevChannel::FreeIo(BdevIo* io) {
  io->next = free_list_;
  free_list_ = io;
}

int BdevChannel::Submit(IoType type, uint64_t offset_blocks, uint64_t num_blocks, const iovec* iovs,
                        int iovcnt, IoCallback callback, void* arg) {
  if (!bdev_.SupportsIoType(type)) return -ENOTSUP;
  uint64_t total = bdev_.num_blocks();
  if (type != IoType::kFlush && type != IoType::kReset) {
    if (num_blocks == 0 && type != IoType::kFlush) return -EINVAL;
  }
  if (offset_blocks > total || num_blocks > total - offset_blocks) return -EINVAL;
  if (type == IoType::kRead || type == IoType::kWrite) {
    uint64_t bytes = 0;
    for (int i = 0; i < iovcnt; ++i) bytes += iovs[i].iov_len;
    if (iovcnt <= 0 || bytes != num_blocks * bdev_.block_size()) return -EINVAL;
  }
  BdevIo* io = AllocIo();
  io->type = type;
  io->offset_blocks = offset_blocks;
  io->num_blocks = num_blocks;
  io->iovs = iovs;
  io->iovcnt = iovcnt;
  io->status = 0;
  io->start_ns = NowNs();
  io->callback = callback;
  io->callback_arg = arg;
  io->origin = this;
  io->module_channel = this;
  ++outstanding_;
  if (qos_ != nullptr) {
    Qos* qos = qos_.get();
    if (&qos->reactor() == &reactor_) {
      qos->Enqueue(io);
    } else {
      // Keep the Qos object alive while the message is in flight.
      qos->reactor().Post([keep = qos_, io] { keep->Enqueue(io); });
    }
    return 0;
  }
  bdev_.SubmitIo(*module_, *io);
  return 0;
}

void BdevChannel::Account(const BdevIo& io, uint64_t now) {
  uint64_t latency = now - io.start_ns;
  auto track = [latency](uint64_t& sum, uint64_t& max, uint64_t& min) {
    sum += latency;
    max = std::max(max, latency);
    if (min == 0 || latency < min) min = latency;
  };
  if (io.status != 0) {
    ++stats_.num_io_errors;
    return;
  }
  uint64_t bytes = io.num_blocks * bdev_.block_size();
  switch (io.type) {
    case IoType::kRead:
      stats_.bytes_read += bytes;
      ++stats_.num_read_ops;
      track(stats_.read_latency_ticks, stats_.max_read_latency_ticks, stats_.min_read_latency_ticks);
      break;
    case IoType::kWrite:
      stats_.bytes_written += bytes;
      ++stats_.num_write_ops;
      track(stats_.write_latency_ticks, stats_.max_write_latency_ticks, stats_.min_write_latency_ticks);
      break;
    case IoType::kUnmap:
      stats_.bytes_unmapped += bytes;
      ++stats_.num_unmap_ops;
      track(stats_.unmap_latency_ticks, stats_.max_unmap_latency_ticks, stats_.min_unmap_latency_ticks);
      break;
    case IoType::kFlush:
      ++stats_.num_flush_ops;
      break;
    case IoType::kWriteZeroes:
      ++stats_.num_write_zeroes_ops;
      break;
    case IoType::kReset:
      break;
  }
}

void BdevChannel::Finish(BdevIo& io) {
  Account(io, NowNs());
  IoCallback callback = io.callback;
  void* arg = io.callback_arg;
  int status = io.status;
  FreeIo(&io);
  --outstanding_;
  // With refs_ already 0 the owner has released this channel and the callback cannot touch it; with
  // refs_ > 0 the callback may release it (and so destroy it), so `this` is not used afterwards.
  bool orphaned = refs_ == 0;
  callback(arg, status);
  if (orphaned) MaybeDestroy();
}

}  // namespace smad::tgt
