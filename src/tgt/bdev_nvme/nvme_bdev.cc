#include "tgt/bdev_nvme/nvme_bdev.h"

#include <algorithm>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "nvme/host/commands.h"
#include "spdlog/spdlog.h"

namespace smad::tgt::bdev_nvme {
namespace {

using nvme::host::Completion;
using nvme::host::QueuePair;

constexpr uint32_t kMaxBlocksPerCommand = 65536;     // NLB is 16 bits, 0's based
constexpr uint64_t kMaxBlocksPerRange = 0xffffffffu;  // a DSM range's length is 32 bits

// BdevIo::module_scratch while the I/O is in this module.
enum Scratch { kPending = 0, kFlags = 1, kBounce = 2, kNsid = 3 };
constexpr uint64_t kNvmeError = 1;
constexpr uint64_t kTransportError = 2;

uint8_t* BounceOf(const BdevIo& io) { return reinterpret_cast<uint8_t*>(io.module_scratch[kBounce]); }
void FreeBounce(BdevIo& io) {
  delete[] BounceOf(io);
  io.module_scratch[kBounce] = 0;
}
uint8_t* AllocBounce(BdevIo& io, size_t bytes) {
  FreeBounce(io);
  auto* buffer = new uint8_t[bytes];
  io.module_scratch[kBounce] = reinterpret_cast<uint64_t>(buffer);
  return buffer;
}

// Per-reactor registry of paths, by controller id.
absl::flat_hash_map<uint64_t, ReactorPath*>& Registry() {
  thread_local absl::flat_hash_map<uint64_t, ReactorPath*> paths;
  return paths;
}

class NvmeChannel : public ModuleChannel {
 public:
  explicit NvmeChannel(ReactorPath* path) : path_(path) {}
  ~NvmeChannel() override { path_->Release(); }
  ReactorPath& path() { return *path_; }

 private:
  ReactorPath* path_;
};

}  // namespace

const char* CtrlrStateName(CtrlrState state) {
  switch (state) {
    case CtrlrState::kAttaching: return "attaching";
    case CtrlrState::kEnabled: return "enabled";
    case CtrlrState::kResetting: return "resetting";
    case CtrlrState::kReconnectDelayed: return "reconnect_is_delayed";
    case CtrlrState::kFailed: return "failed";
    case CtrlrState::kDeleting: return "deleting";
  }
  return "unknown";
}

// --- ReactorPath -------------------------------------------------------------------------------------

ReactorPath::ReactorPath(std::shared_ptr<SharedCtrlr> shared, Reactor& reactor)
    : shared_(std::move(shared)), reactor_(reactor) {}

ReactorPath::~ReactorPath() {
  if (qp_ != nullptr) DisposeQpair(std::move(qp_), qp_gen_, /*release_qid=*/true);
}

ReactorPath* ReactorPath::Find(uint64_t id) {
  auto& registry = Registry();
  auto it = registry.find(id);
  return it == registry.end() ? nullptr : it->second;
}

ReactorPath* ReactorPath::Acquire(const std::shared_ptr<SharedCtrlr>& shared) {
  ReactorPath* path = Find(shared->id);
  if (path == nullptr) {
    path = new ReactorPath(shared, *Reactor::Current());
    Registry()[shared->id] = path;
    if (shared->io_ready.load()) path->RequestQpair(shared->generation.load());
  }
  ++path->refs_;
  return path;
}

void ReactorPath::Release() {
  if (--refs_ > 0) return;
  Registry().erase(shared_->id);
  // Deferred: the last channel may close from inside a completion callback of our queue pair.
  reactor_.Defer([this] { delete this; });
}

void ReactorPath::RequestQpair(uint64_t gen) {
  wanted_gen_ = gen;
  no_queue_ = false;
  Reactor* reactor = &reactor_;
  shared_->control->Post([shared = shared_, gen, reactor] {
    auto reply = [shared, gen, reactor](absl::StatusOr<std::unique_ptr<QueuePair>> qp) mutable {
      OnQpair(shared, gen, *reactor, std::move(qp));
    };
    if (shared->request_qpair) {
      shared->request_qpair(gen, *reactor, std::move(reply));
    } else {
      reactor->Post([reply = std::move(reply)]() mutable { reply(absl::CancelledError("controller is gone")); });
    }
  });
}

void ReactorPath::OnQpair(const std::shared_ptr<SharedCtrlr>& shared, uint64_t gen, Reactor& reactor,
                          absl::StatusOr<std::unique_ptr<QueuePair>> qp) {
  const uint64_t id = shared->id;
  ReactorPath* path = Find(id);
  if (path == nullptr || path->wanted_gen_ != gen) {
    if (qp.ok()) {
      // Nobody wants it anymore; give the queue ID back if its controller is still the current one.
      uint16_t qid = (*qp)->qid();
      reactor.Defer([qp = std::move(*qp)]() mutable { qp.reset(); });
      shared->control->Post([shared, gen, qid] {
        if (shared->release_qid) shared->release_qid(gen, qid);
      });
    }
    return;
  }
  path->wanted_gen_ = 0;
  if (!qp.ok()) {
    spdlog::warn("bdev_nvme {}: no I/O queue pair on reactor {}: {}", path->shared_->name, reactor.name(),
                 qp.status().ToString());
    if (absl::IsResourceExhausted(qp.status())) {
      path->no_queue_ = true;  // the controller granted fewer I/O queues than there are reactors
      path->FailWaiting();
    } else if (!absl::IsCancelled(qp.status())) {
      uint64_t current = path->shared_->generation.load();
      if (current == gen) {
        path->shared_->control->Post([shared = path->shared_, gen, why = qp.status()] {
          if (shared->path_failed) shared->path_failed(gen, why);
        });
      }
    }
    return;
  }
  if (path->qp_ != nullptr) path->DisposeQpair(std::move(path->qp_), path->qp_gen_, true);
  path->qp_ = std::move(*qp);
  path->qp_gen_ = gen;
  path->qp_->SetFailureCallback([id, gen](const absl::Status& why) {
    if (ReactorPath* p = Find(id)) p->OnQpairFailed(gen, why);
  });
  path->Drain();
}

void ReactorPath::OnQpairFailed(uint64_t gen, const absl::Status& why) {
  if (qp_ == nullptr || qp_gen_ != gen) return;
  spdlog::warn("bdev_nvme {}: I/O queue pair on reactor {} failed: {}", shared_->name, reactor_.name(),
               why.ToString());
  DisposeQpair(std::move(qp_), gen, false);
  shared_->control->Post([shared = shared_, gen, why] {
    if (shared->path_failed) shared->path_failed(gen, why);
  });
}

void ReactorPath::DisposeQpair(std::unique_ptr<QueuePair> qp, uint64_t gen, bool release_qid) {
  uint16_t qid = qp->qid();
  // Outstanding commands complete now (transport error) and are queued again by OnCommandDone.
  qp->Close(absl::UnavailableError("I/O queue pair dropped"));
  reactor_.Defer([qp = std::move(qp)]() mutable { qp.reset(); });
  if (release_qid) {
    shared_->control->Post([shared = shared_, gen, qid] {
      if (shared->release_qid) shared->release_qid(gen, qid);
    });
  }
}

void ReactorPath::OnDown(const absl::Status& why) {
  wanted_gen_ = 0;
  if (qp_ == nullptr) return;
  std::unique_ptr<QueuePair> qp = std::move(qp_);
  qp->Close(why);
  reactor_.Defer([qp = std::move(qp)]() mutable { qp.reset(); });
}

void ReactorPath::OnUp(uint64_t gen) {
  if (refs_ == 0 || wanted_gen_ == gen || (qp_ != nullptr && qp_gen_ == gen)) return;
  if (qp_ != nullptr) OnDown(absl::UnavailableError("stale I/O queue pair"));
  RequestQpair(gen);
}

void ReactorPath::FailWaiting() {
  std::deque<BdevIo*> waiting;
  waiting.swap(waiting_);
  for (BdevIo* io : waiting) {
    FreeBounce(*io);
    Bdev::CompleteIo(*io, -EIO);
  }
}

void ReactorPath::CompleteLater(BdevIo& io, int status) {
  FreeBounce(io);
  Reactor::Current()->Defer([&io, status] { Bdev::CompleteIo(io, status); });
}

void ReactorPath::Submit(uint32_t nsid, BdevIo& io) {
  io.module_scratch[kPending] = 0;
  io.module_scratch[kFlags] = 0;
  io.module_scratch[kBounce] = 0;
  io.module_scratch[kNsid] = nsid;
  if (shared_->fail_io.load() || no_queue_) return CompleteLater(io, -EIO);
  if (qp_ == nullptr || !qp_->ready() || !waiting_.empty() || !Execute(io)) Enqueue(io);
}

void ReactorPath::Enqueue(BdevIo& io) {
  if (shared_->fail_io.load() || no_queue_) return CompleteLater(io, -EIO);
  if (waiting_.size() >= shared_->max_queued_io) return CompleteLater(io, -ENOMEM);
  waiting_.push_back(&io);
}

void ReactorPath::Drain() {
  while (qp_ != nullptr && qp_->ready() && !waiting_.empty()) {
    BdevIo* io = waiting_.front();
    if (!Execute(*io)) break;
    waiting_.pop_front();
  }
}

bool ReactorPath::Execute(BdevIo& io) {
  const uint32_t nsid = static_cast<uint32_t>(io.module_scratch[kNsid]);
  const uint32_t block_size = io.module_channel->bdev().block_size();
  const size_t free_slots = qp_->depth() - qp_->outstanding();
  uint8_t sqe[nvme::kSqeSize];

  // Each command's completion; submission errors are reported like a failed transfer, from a deferred task.
  auto submitted = [this, &io](absl::Status status) {
    if (status.ok()) return;
    Completion failed;
    failed.transport = status;
    reactor_.Defer([this, &io, failed] { OnCommandDone(io, failed); });
  };
  auto done = [this, &io](const Completion& c) { OnCommandDone(io, c); };

  switch (io.type) {
    case IoType::kRead:
    case IoType::kWrite: {
      uint64_t max_blocks = kMaxBlocksPerCommand;
      uint64_t mdts = shared_->max_transfer_bytes.load();
      if (mdts != 0) max_blocks = std::clamp<uint64_t>(mdts / block_size, 1, max_blocks);
      uint64_t commands = (io.num_blocks + max_blocks - 1) / max_blocks;
      if (commands > free_slots) {
        if (commands > qp_->depth()) {
          CompleteLater(io, -EINVAL);  // larger than the queue can ever carry
          return true;
        }
        return false;
      }
      uint8_t* data = io.iovcnt == 1 ? static_cast<uint8_t*>(io.iovs[0].iov_base) : BounceOf(io);
      if (data == nullptr) {  // several buffers: one contiguous copy
        data = AllocBounce(io, io.num_blocks * block_size);
        if (io.type == IoType::kWrite) {
          size_t at = 0;
          for (int i = 0; i < io.iovcnt; ++i) {
            std::memcpy(data + at, io.iovs[i].iov_base, io.iovs[i].iov_len);
            at += io.iovs[i].iov_len;
          }
        }
      }
      io.module_scratch[kPending] = commands;
      for (uint64_t done_blocks = 0; done_blocks < io.num_blocks;) {
        uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(max_blocks, io.num_blocks - done_blocks));
        uint64_t lba = io.offset_blocks + done_blocks;
        uint8_t* chunk = data + done_blocks * block_size;
        uint32_t bytes = n * block_size;
        if (io.type == IoType::kRead) {
          nvme::host::BuildRead(sqe, nsid, lba, n);
          submitted(qp_->SubmitRead(sqe, chunk, bytes, done));
        } else {
          nvme::host::BuildWrite(sqe, nsid, lba, n);
          submitted(qp_->SubmitWrite(sqe, chunk, bytes, done));
        }
        done_blocks += n;
      }
      return true;
    }
    case IoType::kWriteZeroes: {
      uint64_t commands = (io.num_blocks + kMaxBlocksPerCommand - 1) / kMaxBlocksPerCommand;
      if (commands > free_slots) {
        if (commands > qp_->depth()) {
          CompleteLater(io, -EINVAL);
          return true;
        }
        return false;
      }
      io.module_scratch[kPending] = commands;
      for (uint64_t done_blocks = 0; done_blocks < io.num_blocks;) {
        uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(kMaxBlocksPerCommand, io.num_blocks - done_blocks));
        nvme::host::BuildWriteZeroes(sqe, nsid, io.offset_blocks + done_blocks, n);
        submitted(qp_->Submit(sqe, done));
        done_blocks += n;
      }
      return true;
    }
    case IoType::kUnmap: {
      uint64_t ranges = (io.num_blocks + kMaxBlocksPerRange - 1) / kMaxBlocksPerRange;
      uint64_t commands = (ranges + nvme::host::kDsmMaxRanges - 1) / nvme::host::kDsmMaxRanges;
      if (commands > free_slots) return false;
      uint8_t* list = BounceOf(io);
      if (list == nullptr) {
        list = AllocBounce(io, ranges * nvme::host::kDsmRangeSize);
        for (uint64_t r = 0, at = 0; r < ranges; ++r, at += kMaxBlocksPerRange) {
          uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(kMaxBlocksPerRange, io.num_blocks - at));
          nvme::host::PutDsmRange(list + r * nvme::host::kDsmRangeSize, io.offset_blocks + at, n);
        }
      }
      io.module_scratch[kPending] = commands;
      for (uint64_t first = 0; first < ranges; first += nvme::host::kDsmMaxRanges) {
        uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(nvme::host::kDsmMaxRanges, ranges - first));
        nvme::host::BuildDeallocate(sqe, nsid, n);
        submitted(qp_->SubmitWrite(sqe, list + first * nvme::host::kDsmRangeSize, n * nvme::host::kDsmRangeSize,
                                   done));
      }
      return true;
    }
    case IoType::kFlush:
      if (!shared_->volatile_write_cache.load()) {
        CompleteLater(io, 0);  // nothing cached on the remote side
        return true;
      }
      if (free_slots == 0) return false;
      io.module_scratch[kPending] = 1;
      nvme::host::BuildFlush(sqe, nsid);
      submitted(qp_->Submit(sqe, done));
      return true;
    case IoType::kReset:
      // Commands of this reactor complete on their own; a reset of the association is the controller's
      // business (failure handling), not a per-I/O operation.
      CompleteLater(io, 0);
      return true;
  }
  CompleteLater(io, -ENOTSUP);
  return true;
}

void ReactorPath::OnCommandDone(BdevIo& io, const Completion& completion) {
  if (!completion.transport.ok()) {
    io.module_scratch[kFlags] |= kTransportError;
  } else if (!completion.status.ok()) {
    io.module_scratch[kFlags] |= kNvmeError;
    spdlog::debug("bdev_nvme {}: {} failed: {}", shared_->name, IoTypeName(io.type),
                  nvme::host::DescribeStatus(completion.status));
  }
  if (--io.module_scratch[kPending] > 0) return;
  uint64_t flags = io.module_scratch[kFlags];
  if (flags == kTransportError && !shared_->fail_io.load()) {
    // The queue pair went away under the I/O: run it again on the next one.
    io.module_scratch[kFlags] = 0;
    Enqueue(io);
  } else {
    int status = flags != 0 ? -EIO : 0;
    if (status == 0 && io.type == IoType::kRead && BounceOf(io) != nullptr) {
      const uint8_t* data = BounceOf(io);
      for (int i = 0; i < io.iovcnt; ++i) {
        std::memcpy(io.iovs[i].iov_base, data, io.iovs[i].iov_len);
        data += io.iovs[i].iov_len;
      }
    }
    FreeBounce(io);
    Bdev::CompleteIo(io, status);
  }
  Drain();
}

// --- NvmeBdev ----------------------------------------------------------------------------------------

NvmeBdev::NvmeBdev(Params params, std::shared_ptr<SharedCtrlr> shared, nvme::host::NamespaceData ns)
    : Bdev(std::move(params)),
      shared_(std::move(shared)),
      ns_(std::move(ns)),
      write_zeroes_(shared_->cdata.oncs & (1u << 3)),
      unmap_(shared_->cdata.oncs & (1u << 2)) {}

bool NvmeBdev::SupportsIoType(IoType type) const {
  switch (type) {
    case IoType::kRead:
    case IoType::kWrite:
    case IoType::kFlush:
    case IoType::kReset:
      return true;
    case IoType::kWriteZeroes: return write_zeroes_;
    case IoType::kUnmap: return unmap_;
  }
  return false;
}

std::unique_ptr<ModuleChannel> NvmeBdev::CreateModuleChannel(Reactor& reactor) {
  (void)reactor;  // ReactorPath::Acquire works on the calling reactor, which is `reactor`
  return std::make_unique<NvmeChannel>(ReactorPath::Acquire(shared_));
}

void NvmeBdev::SubmitIo(ModuleChannel& channel, BdevIo& io) {
  static_cast<NvmeChannel&>(channel).path().Submit(ns_.nsid, io);
}

Json TridJson(const nvme::host::TransportId& trid) {
  Json j = {{"trtype", "TCP"}, {"adrfam", trid.adrfam == nvme::host::AddressFamily::kIpv6 ? "IPv6" : "IPv4"}};
  if (!trid.traddr.empty()) j["traddr"] = trid.traddr;
  if (!trid.trsvcid.empty()) j["trsvcid"] = trid.trsvcid;
  if (!trid.subnqn.empty()) j["subnqn"] = trid.subnqn;
  return j;
}

Json NvmeBdev::DriverSpecific() const {
  const nvme::host::ControllerData& c = shared_->cdata;
  Json ctrlr_data = {
      {"cntlid", c.cntlid},
      {"vendor_id", absl::StrFormat("0x%04x", c.vid)},
      {"model_number", c.model},
      {"serial_number", c.serial},
      {"firmware_revision", c.firmware},
  };
  if (!c.subnqn.empty()) ctrlr_data["subnqn"] = c.subnqn;
  ctrlr_data["oacs"] = {{"security", c.oacs & 1u},
                        {"format", (c.oacs >> 1) & 1u},
                        {"firmware", (c.oacs >> 2) & 1u},
                        {"ns_manage", (c.oacs >> 3) & 1u}};
  ctrlr_data["multi_ctrlr"] = (c.cmic & 0x2) != 0;
  ctrlr_data["ana_reporting"] = (c.cmic & 0x8) != 0;
  Json nvme = {{"trid", TridJson(shared_->trid)},
               {"ctrlr_data", ctrlr_data},
               {"vs", {{"nvme_version", nvme::host::VersionString(shared_->vs)}}},
               {"ns_data", {{"id", ns_.nsid}, {"can_share", (ns_.nmic & 1u) != 0}}}};
  return Json{{"nvme", Json::array({nvme})}, {"mp_policy", "active_passive"}};
}

void NvmeBdev::AmendDescription(Json& description) const {
  description["memory_domains"] = Json::array({{{"dma_device_type", "DMA"}}});
}

Uuid NamespaceBdevUuid(const nvme::host::NamespaceData& ns) {
  if (ns.has_nguid()) return Uuid(ns.nguid);
  if (ns.uuid.has_value()) return *ns.uuid;
  return Uuid();
}

}  // namespace smad::tgt::bdev_nvme
