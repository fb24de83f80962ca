#include "nvme/host/controller.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nvme/host/commands.h"
#include "spdlog/spdlog.h"

namespace smad::nvme::host {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint32_t kNamespaceListEntries = kIdentifySize / 4;
constexpr uint32_t kDiscoveryPieceBytes = 4096;
constexpr int kDiscoveryAttempts = 10;
// More records than this is taken as a corrupt header rather than a log to read.
constexpr uint64_t kMaxDiscoveryRecords = 65536;

// Init steps, in order.
enum InitStepId { kGetVs, kGetCap, kGetCc, kSetCc, kWaitReady, kIdentify, kSetNumQueues, kDone };

}  // namespace

struct Controller::NamespaceWalk {
  std::vector<uint32_t> nsids;
  size_t next = 0;
  std::vector<NamespaceData> namespaces;
  Callback<absl::StatusOr<std::vector<NamespaceData>>> done;
};

struct Controller::DiscoveryWalk {
  int attempt = 0;
  DiscoveryLog log;
  std::vector<uint8_t> entries;  // raw records read so far
  Callback<absl::StatusOr<DiscoveryLog>> done;
};

Controller::Controller(Reactor& reactor, TransportId trid, Options options)
    : reactor_(reactor), trid_(std::move(trid)), options_(options) {}

Controller::~Controller() {
  StopKeepAlive();
  // Outstanding admin commands fail now, while every member is still alive.
  admin_.reset();
  alive_.reset();
  if (connect_done_) {
    reactor_.Defer([done = std::move(connect_done_)]() mutable {
      std::move(done)(absl::CancelledError("controller destroyed during connect"));
    });
  }
}

void Controller::SubmitAdmin(const uint8_t* sqe, uint8_t* read_buffer, uint32_t length,
                             QueuePair::CompletionCallback done) {
  absl::Status status;
  if (admin_ == nullptr) {
    status = absl::FailedPreconditionError("controller is not connected");
  } else if (read_buffer != nullptr) {
    status = admin_->SubmitRead(sqe, read_buffer, length, std::move(done));
  } else {
    status = admin_->Submit(sqe, std::move(done));
  }
  if (status.ok()) return;
  // A refused submission leaves `done` untouched: report through a deferred task.
  reactor_.Defer([done = std::move(done), status]() mutable {
    Completion c;
    c.transport = status;
    c.status = Generic(sc::kAbortedSqDeletion, false);
    if (done) std::move(done)(c);
  });
}

// --- Connect and initialization ---------------------------------------------------------------------

void Controller::Connect(DoneCallback done) {
  if (admin_ != nullptr) {
    reactor_.Defer([done = std::move(done)]() mutable {
      std::move(done)(absl::FailedPreconditionError("Controller::Connect called twice"));
    });
    return;
  }
  connect_done_ = std::move(done);
  QueuePair::Options qp;
  qp.qid = 0;
  qp.cntlid = 0xffff;
  qp.depth = options_.admin_queue_depth;
  qp.kato_ms = options_.kato_ms;
  qp.hdgst = options_.hdgst;
  qp.ddgst = options_.ddgst;
  qp.max_in_capsule = 0;
  qp.connect_timeout_ns = options_.timeout_ns;
  qp.command_timeout_ns = options_.timeout_ns;
  admin_ = std::make_unique<QueuePair>(reactor_, trid_, qp);
  std::weak_ptr<bool> alive = alive_;
  admin_->SetFailureCallback([this, alive](const absl::Status& status) {
    if (!alive.expired()) OnAdminFailure(status);
  });
  admin_->Connect([this, alive](absl::Status status) {
    if (alive.expired()) return;
    if (!status.ok()) {
      InitFailed(status);
      return;
    }
    cntlid_ = admin_->cntlid();
    InitStep(kGetVs);
  });
}

void Controller::InitFailed(const absl::Status& status) {
  if (admin_ != nullptr) admin_->Close(status);
  if (!connect_done_) return;
  reactor_.Defer([done = std::move(connect_done_), status]() mutable { std::move(done)(status); });
  connect_done_ = nullptr;
}

void Controller::InitStep(int step) {
  std::weak_ptr<bool> alive = alive_;
  switch (step) {
    case kGetVs:
      GetProperty(prop::kVs, false, [this, alive](absl::StatusOr<uint64_t> v) {
        if (alive.expired()) return;
        if (!v.ok()) return InitFailed(v.status());
        vs_ = static_cast<uint32_t>(*v);
        InitStep(kGetCap);
      });
      return;
    case kGetCap:
      GetProperty(prop::kCap, true, [this, alive](absl::StatusOr<uint64_t> v) {
        if (alive.expired()) return;
        if (!v.ok()) return InitFailed(v.status());
        cap_ = *v;
        InitStep(kGetCc);
      });
      return;
    case kGetCc:
      GetProperty(prop::kCc, false, [this, alive](absl::StatusOr<uint64_t> v) {
        if (alive.expired()) return;
        if (!v.ok()) return InitFailed(v.status());
        cc_ = static_cast<uint32_t>(*v);
        InitStep((cc_ & kCcEnable) ? kWaitReady : kSetCc);
      });
      return;
    case kSetCc: {
      uint32_t cc = kCcEnableValue;
      SetProperty(prop::kCc, false, cc, [this, alive, cc](absl::Status s) {
        if (alive.expired()) return;
        if (!s.ok()) return InitFailed(s);
        cc_ = cc;
        InitStep(kWaitReady);
      });
      return;
    }
    case kWaitReady: {
      uint64_t limit = std::max<uint64_t>(CapTimeoutMs(cap_) * kMs, 500 * kMs);
      WaitReady(NowNs() + std::min<uint64_t>(limit, std::max<uint64_t>(options_.timeout_ns, 500 * kMs)));
      return;
    }
    case kIdentify:
      IdentifyController([this, alive](absl::StatusOr<ControllerData> data) {
        if (alive.expired()) return;
        if (!data.ok()) return InitFailed(data.status());
        is_discovery_ = data->IsDiscovery() || trid_.IsDiscovery();
        InitStep(is_discovery_ ? kDone : kSetNumQueues);
      });
      return;
    case kSetNumQueues: {
      uint32_t n = std::max<uint32_t>(options_.num_io_queues, 1) - 1;
      SetFeatures(feature::kNumberOfQueues, n | n << 16, [this, alive](absl::StatusOr<uint32_t> v) {
        if (alive.expired()) return;
        if (!v.ok()) return InitFailed(v.status());
        io_queues_granted_ = std::min(*v & 0xffff, *v >> 16) + 1;
        qid_used_.assign(io_queues_granted_ + 1, false);
        InitStep(kDone);
      });
      return;
    }
    case kDone:
      connected_ = true;
      StartKeepAlive();
      if (connect_done_) {
        reactor_.Defer([done = std::move(connect_done_)]() mutable { std::move(done)(absl::OkStatus()); });
        connect_done_ = nullptr;
      }
      return;
  }
}

void Controller::WaitReady(uint64_t deadline_ns) {
  std::weak_ptr<bool> alive = alive_;
  GetProperty(prop::kCsts, false, [this, alive, deadline_ns](absl::StatusOr<uint64_t> v) {
    if (alive.expired()) return;
    if (!v.ok()) return InitFailed(v.status());
    uint32_t csts = static_cast<uint32_t>(*v);
    if (csts & kCstsFatal) {
      return InitFailed(absl::FailedPreconditionError("controller reports fatal status (CSTS.CFS) while enabling"));
    }
    if (csts & kCstsReady) return InitStep(kIdentify);
    if (NowNs() >= deadline_ns) {
      return InitFailed(absl::DeadlineExceededError("controller did not become ready (CSTS.RDY) in time"));
    }
    reactor_.RunAfter(1 * kMs, [this, alive, deadline_ns] {
      if (!alive.expired()) WaitReady(deadline_ns);
    });
  });
}

// --- Keep alive -------------------------------------------------------------------------------------

void Controller::StartKeepAlive() {
  if (options_.kato_ms == 0 || keep_alive_timer_ != 0) return;
  uint64_t period = std::max<uint64_t>(options_.kato_ms / 2, 1) * kMs;
  keep_alive_timer_ = reactor_.RunEvery(period, [this] { SendKeepAlive(); });
}

void Controller::StopKeepAlive() {
  if (keep_alive_timer_ != 0) reactor_.CancelTimer(keep_alive_timer_);
  keep_alive_timer_ = 0;
}

void Controller::SendKeepAlive() {
  if (keep_alive_outstanding_ || admin_ == nullptr || !admin_->ready()) return;
  keep_alive_outstanding_ = true;
  std::weak_ptr<bool> alive = alive_;
  uint8_t sqe[kSqeSize];
  BuildKeepAlive(sqe);
  SubmitAdmin(sqe, nullptr, 0, [this, alive](const Completion& c) {
    if (alive.expired()) return;
    keep_alive_outstanding_ = false;
    if (c.ok()) return;
    if (c.transport.ok() && c.status.sct == kSctGeneric && c.status.sc == sc::kInvalidOpcode) {
      spdlog::info("controller {} does not support Keep Alive; stopping it", trid_.Describe());
      StopKeepAlive();
      return;
    }
    if (c.transport.ok()) spdlog::warn("Keep Alive to {} failed: {}", trid_.Describe(), DescribeStatus(c.status));
  });
}

void Controller::KeepAlive(DoneCallback done) {
  uint8_t sqe[kSqeSize];
  BuildKeepAlive(sqe);
  SubmitAdmin(sqe, nullptr, 0, [done = std::move(done)](const Completion& c) mutable {
    std::move(done)(c.ToStatus("Keep Alive"));
  });
}

void Controller::OnAdminFailure(const absl::Status& status) {
  StopKeepAlive();
  bool was_connected = connected_;
  connected_ = false;
  if (was_connected && failure_callback_) {
    auto cb = std::move(failure_callback_);
    failure_callback_ = nullptr;
    std::move(cb)(status);
  }
}

// --- Admin commands -----------------------------------------------------------------------------------

void Controller::GetProperty(uint32_t offset, bool eight_bytes, Callback<absl::StatusOr<uint64_t>> done) {
  uint8_t sqe[kSqeSize];
  BuildPropertyGet(sqe, offset, eight_bytes);
  SubmitAdmin(sqe, nullptr, 0, [done = std::move(done), eight_bytes, offset](const Completion& c) mutable {
    if (!c.ok()) return std::move(done)(c.ToStatus(absl::StrCat("Property Get 0x", absl::Hex(offset))));
    uint64_t value = c.cdw0;
    if (eight_bytes) value |= static_cast<uint64_t>(c.cdw1) << 32;
    std::move(done)(value);
  });
}

void Controller::SetProperty(uint32_t offset, bool eight_bytes, uint64_t value, DoneCallback done) {
  uint8_t sqe[kSqeSize];
  BuildPropertySet(sqe, offset, eight_bytes, value);
  SubmitAdmin(sqe, nullptr, 0, [done = std::move(done), offset](const Completion& c) mutable {
    std::move(done)(c.ToStatus(absl::StrCat("Property Set 0x", absl::Hex(offset))));
  });
}

void Controller::Identify(uint8_t cns, uint32_t nsid, Callback<absl::StatusOr<std::vector<uint8_t>>> done) {
  uint8_t sqe[kSqeSize];
  BuildIdentify(sqe, cns, nsid);
  auto buffer = std::make_unique<std::vector<uint8_t>>(kIdentifySize);
  uint8_t* data = buffer->data();
  SubmitAdmin(sqe, data, kIdentifySize,
              [done = std::move(done), buffer = std::move(buffer), cns](const Completion& c) mutable {
                if (!c.ok()) return std::move(done)(c.ToStatus(absl::StrCat("Identify CNS ", cns)));
                std::move(done)(std::move(*buffer));
              });
}

void Controller::IdentifyController(Callback<absl::StatusOr<ControllerData>> done) {
  std::weak_ptr<bool> alive = alive_;
  Identify(cns::kController, 0,
           [this, alive, done = std::move(done)](absl::StatusOr<std::vector<uint8_t>> data) mutable {
             if (!data.ok()) return std::move(done)(data.status());
             absl::StatusOr<ControllerData> parsed = ParseControllerData(*data);
             if (parsed.ok() && !alive.expired()) data_ = *parsed;
             std::move(done)(std::move(parsed));
           });
}

void Controller::ActiveNamespaces(Callback<absl::StatusOr<std::vector<uint32_t>>> done) {
  ActiveNamespacesFrom(0, {}, std::move(done));
}

void Controller::ActiveNamespacesFrom(uint32_t start, std::vector<uint32_t> found,
                                      Callback<absl::StatusOr<std::vector<uint32_t>>> done) {
  std::weak_ptr<bool> alive = alive_;
  Identify(cns::kActiveNamespaceList, start,
           [this, alive, found = std::move(found), done = std::move(done)](
               absl::StatusOr<std::vector<uint8_t>> data) mutable {
             if (!data.ok()) return std::move(done)(data.status());
             std::vector<uint32_t> page = ParseNamespaceList(*data);
             found.insert(found.end(), page.begin(), page.end());
             if (page.size() < kNamespaceListEntries || alive.expired() || page.back() >= 0xfffffffeu) {
               return std::move(done)(std::move(found));
             }
             ActiveNamespacesFrom(page.back(), std::move(found), std::move(done));
           });
}

void Controller::IdentifyNamespace(uint32_t nsid, Callback<absl::StatusOr<NamespaceData>> done) {
  std::weak_ptr<bool> alive = alive_;
  Identify(cns::kNamespace, nsid,
           [this, alive, nsid, done = std::move(done)](absl::StatusOr<std::vector<uint8_t>> data) mutable {
             if (!data.ok()) return std::move(done)(data.status());
             absl::StatusOr<NamespaceData> ns = ParseNamespaceData(nsid, *data);
             if (!ns.ok()) return std::move(done)(ns.status());
             if (ns->nsze == 0) {
               return std::move(done)(absl::NotFoundError(absl::StrCat("namespace ", nsid, " is not active")));
             }
             if (alive.expired()) return std::move(done)(std::move(ns));
             Identify(cns::kNamespaceIdDescriptors, nsid,
                      [ns = std::move(*ns), done = std::move(done)](
                          absl::StatusOr<std::vector<uint8_t>> descriptors) mutable {
                        if (descriptors.ok()) {
                          absl::Status s = ApplyNamespaceDescriptors(*descriptors, ns);
                          if (!s.ok()) spdlog::warn("namespace {}: {}", ns.nsid, StatusMessage(s));
                        }
                        std::move(done)(std::move(ns));
                      });
           });
}

void Controller::Namespaces(Callback<absl::StatusOr<std::vector<NamespaceData>>> done) {
  std::weak_ptr<bool> alive = alive_;
  ActiveNamespaces([this, alive, done = std::move(done)](absl::StatusOr<std::vector<uint32_t>> ids) mutable {
    if (!ids.ok()) return std::move(done)(ids.status());
    if (alive.expired()) return std::move(done)(absl::CancelledError("controller destroyed"));
    auto walk = std::make_unique<NamespaceWalk>();
    walk->nsids = std::move(*ids);
    walk->done = std::move(done);
    NextNamespace(std::move(walk));
  });
}

void Controller::NextNamespace(std::unique_ptr<NamespaceWalk> walk) {
  if (walk->next == walk->nsids.size()) {
    auto done = std::move(walk->done);
    std::move(done)(std::move(walk->namespaces));
    return;
  }
  uint32_t nsid = walk->nsids[walk->next++];
  std::weak_ptr<bool> alive = alive_;
  IdentifyNamespace(nsid, [this, alive, walk = std::move(walk)](absl::StatusOr<NamespaceData> ns) mutable {
    if (ns.ok()) {
      walk->namespaces.push_back(std::move(*ns));
    } else if (!absl::IsNotFound(ns.status())) {  // a namespace detached meanwhile is skipped
      auto done = std::move(walk->done);
      return std::move(done)(ns.status());
    }
    if (alive.expired()) {
      auto done = std::move(walk->done);
      return std::move(done)(absl::CancelledError("controller destroyed"));
    }
    NextNamespace(std::move(walk));
  });
}

void Controller::GetLogPage(uint8_t lid, uint32_t nsid, uint64_t offset, uint32_t length,
                            Callback<absl::StatusOr<std::vector<uint8_t>>> done) {
  if (length == 0 || length % 4 != 0 || offset % 4 != 0) {
    reactor_.Defer([done = std::move(done)]() mutable {
      std::move(done)(absl::InvalidArgumentError("Get Log Page length and offset must be multiples of 4"));
    });
    return;
  }
  uint8_t sqe[kSqeSize];
  BuildGetLogPage(sqe, lid, nsid, offset, length);
  auto buffer = std::make_unique<std::vector<uint8_t>>(length);
  uint8_t* data = buffer->data();
  SubmitAdmin(sqe, data, length,
              [done = std::move(done), buffer = std::move(buffer), lid](const Completion& c) mutable {
                if (!c.ok()) {
                  return std::move(done)(c.ToStatus(absl::StrCat("Get Log Page 0x", absl::Hex(lid))));
                }
                std::move(done)(std::move(*buffer));
              });
}

void Controller::GetDiscoveryLog(Callback<absl::StatusOr<DiscoveryLog>> done) {
  auto walk = std::make_unique<DiscoveryWalk>();
  walk->done = std::move(done);
  DiscoveryReadHeader(std::move(walk));
}

void Controller::DiscoveryReadHeader(std::unique_ptr<DiscoveryWalk> walk) {
  ++walk->attempt;
  walk->entries.clear();
  std::weak_ptr<bool> alive = alive_;
  GetLogPage(log_page::kDiscovery, 0, 0, kDiscoveryHeaderSize,
             [this, alive, walk = std::move(walk)](absl::StatusOr<std::vector<uint8_t>> data) mutable {
               auto fail = [&](absl::Status s) {
                 auto done = std::move(walk->done);
                 std::move(done)(std::move(s));
               };
               if (!data.ok()) return fail(data.status());
               absl::StatusOr<DiscoveryLog> header = ParseDiscoveryHeader(*data);
               if (!header.ok()) return fail(header.status());
               if (header->numrec > kMaxDiscoveryRecords) {
                 return fail(absl::DataLossError(absl::StrCat("discovery log claims ", header->numrec, " records")));
               }
               if (alive.expired()) return fail(absl::CancelledError("controller destroyed"));
               walk->log = *header;
               DiscoveryReadEntries(std::move(walk));
             });
}

void Controller::DiscoveryReadEntries(std::unique_ptr<DiscoveryWalk> walk) {
  uint64_t total = walk->log.numrec * kDiscoveryEntrySize;
  uint64_t have = walk->entries.size();
  if (have >= total) {
    DiscoveryCheckHeader(std::move(walk));
    return;
  }
  uint64_t piece = kDiscoveryPieceBytes;
  uint64_t mdts = max_transfer_bytes();
  if (mdts != 0) piece = std::min(piece, mdts);
  piece = std::max<uint64_t>(piece / kDiscoveryEntrySize, 1) * kDiscoveryEntrySize;
  uint32_t length = static_cast<uint32_t>(std::min(piece, total - have));
  std::weak_ptr<bool> alive = alive_;
  GetLogPage(log_page::kDiscovery, 0, kDiscoveryHeaderSize + have, length,
             [this, alive, walk = std::move(walk)](absl::StatusOr<std::vector<uint8_t>> data) mutable {
               if (!data.ok() || alive.expired()) {
                 auto done = std::move(walk->done);
                 return std::move(done)(data.ok() ? absl::CancelledError("controller destroyed") : data.status());
               }
               walk->entries.insert(walk->entries.end(), data->begin(), data->end());
               DiscoveryReadEntries(std::move(walk));
             });
}

void Controller::DiscoveryCheckHeader(std::unique_ptr<DiscoveryWalk> walk) {
  std::weak_ptr<bool> alive = alive_;
  GetLogPage(log_page::kDiscovery, 0, 0, kDiscoveryHeaderSize,
             [this, alive, walk = std::move(walk)](absl::StatusOr<std::vector<uint8_t>> data) mutable {
               auto finish = [&](absl::StatusOr<DiscoveryLog> result) {
                 auto done = std::move(walk->done);
                 std::move(done)(std::move(result));
               };
               if (!data.ok()) return finish(data.status());
               absl::StatusOr<DiscoveryLog> header = ParseDiscoveryHeader(*data);
               if (!header.ok()) return finish(header.status());
               if (header->genctr != walk->log.genctr || header->numrec != walk->log.numrec) {
                 if (walk->attempt >= kDiscoveryAttempts) {
                   return finish(absl::AbortedError("discovery log kept changing while being read"));
                 }
                 if (alive.expired()) return finish(absl::CancelledError("controller destroyed"));
                 return DiscoveryReadHeader(std::move(walk));
               }
               DiscoveryLog log = std::move(walk->log);
               for (uint64_t i = 0; i < log.numrec; ++i) {
                 absl::StatusOr<DiscoveryLogEntry> entry = ParseDiscoveryEntry(
                     absl::MakeConstSpan(walk->entries).subspan(i * kDiscoveryEntrySize, kDiscoveryEntrySize));
                 if (!entry.ok()) return finish(entry.status());
                 log.entries.push_back(std::move(*entry));
               }
               finish(std::move(log));
             });
}

void Controller::SetFeatures(uint8_t fid, uint32_t cdw11, Callback<absl::StatusOr<uint32_t>> done) {
  uint8_t sqe[kSqeSize];
  BuildSetFeatures(sqe, fid, cdw11);
  SubmitAdmin(sqe, nullptr, 0, [done = std::move(done), fid](const Completion& c) mutable {
    if (!c.ok()) return std::move(done)(c.ToStatus(absl::StrCat("Set Features 0x", absl::Hex(fid))));
    std::move(done)(c.cdw0);
  });
}

void Controller::GetFeatures(uint8_t fid, uint32_t cdw11, Callback<absl::StatusOr<uint32_t>> done) {
  uint8_t sqe[kSqeSize];
  BuildGetFeatures(sqe, fid, cdw11);
  SubmitAdmin(sqe, nullptr, 0, [done = std::move(done), fid](const Completion& c) mutable {
    if (!c.ok()) return std::move(done)(c.ToStatus(absl::StrCat("Get Features 0x", absl::Hex(fid))));
    std::move(done)(c.cdw0);
  });
}

// --- I/O queues ---------------------------------------------------------------------------------------

absl::StatusOr<QueuePair::Options> Controller::AllocateIoQueue(uint16_t depth) {
  if (!connected_) return absl::FailedPreconditionError("controller is not connected");
  if (is_discovery_) return absl::FailedPreconditionError("a discovery controller has no I/O queues");
  uint16_t qid = 0;
  for (uint32_t q = 1; q < qid_used_.size(); ++q) {
    if (!qid_used_[q]) {
      qid = static_cast<uint16_t>(q);
      break;
    }
  }
  if (qid == 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("all ", io_queues_granted_, " I/O queues the controller granted are in use"));
  }
  qid_used_[qid] = true;
  QueuePair::Options qp;
  qp.qid = qid;
  qp.cntlid = cntlid_;
  uint32_t max_entries = CapMqes(cap_) + 1;
  qp.depth = static_cast<uint16_t>(std::clamp<uint32_t>(depth, 1, max_entries));
  qp.kato_ms = 0;
  qp.hdgst = options_.hdgst;
  qp.ddgst = options_.ddgst;
  qp.max_in_capsule = data_.InCapsuleDataBytes();
  qp.connect_timeout_ns = options_.timeout_ns;
  qp.command_timeout_ns = options_.io_command_timeout_ns;
  return qp;
}

void Controller::ReleaseIoQueue(uint16_t qid) {
  if (qid < qid_used_.size()) qid_used_[qid] = false;
}

void Controller::CreateIoQueuePair(Reactor& reactor, uint16_t depth,
                                   Callback<absl::StatusOr<std::unique_ptr<QueuePair>>> done) {
  absl::StatusOr<QueuePair::Options> options = AllocateIoQueue(depth);
  if (!options.ok()) {
    reactor.Post([done = std::move(done), status = options.status()]() mutable { std::move(done)(status); });
    return;
  }
  std::weak_ptr<bool> alive = alive_;
  Reactor* home = &reactor_;
  reactor.Post([this, alive, home, &reactor, trid = trid_, options = *options, done = std::move(done)]() mutable {
    auto qp = std::make_unique<QueuePair>(reactor, trid, options);
    QueuePair* raw = qp.get();
    raw->Connect([this, alive, home, qid = options.qid, qp = std::move(qp), done = std::move(done)](
                     absl::Status status) mutable {
      if (status.ok()) return std::move(done)(std::move(qp));
      qp.reset();
      // The QID goes back on the controller's own reactor.
      home->Post([this, alive, qid] {
        if (!alive.expired()) ReleaseIoQueue(qid);
      });
      std::move(done)(status);
    });
  });
}

// --- Shutdown -------------------------------------------------------------------------------------------

void Controller::Shutdown(DoneCallback done) {
  StopKeepAlive();
  if (admin_ == nullptr || !admin_->ready()) {
    if (admin_ != nullptr) admin_->Close(absl::CancelledError("controller shut down"));
    connected_ = false;
    reactor_.Defer([done = std::move(done)]() mutable { std::move(done)(absl::OkStatus()); });
    return;
  }
  std::weak_ptr<bool> alive = alive_;
  uint32_t cc = (cc_ & ~kCcShnMask) | kCcShnNormal;
  SetProperty(prop::kCc, false, cc, [this, alive, done = std::move(done)](absl::Status s) mutable {
    if (alive.expired()) return std::move(done)(absl::CancelledError("controller destroyed"));
    if (!s.ok()) {
      admin_->Close(absl::CancelledError("controller shut down"));
      connected_ = false;
      return std::move(done)(s);
    }
    WaitShutdown(NowNs() + options_.timeout_ns, std::move(done));
  });
}

void Controller::WaitShutdown(uint64_t deadline_ns, DoneCallback done) {
  std::weak_ptr<bool> alive = alive_;
  GetProperty(prop::kCsts, false, [this, alive, deadline_ns, done = std::move(done)](
                                      absl::StatusOr<uint64_t> v) mutable {
    if (alive.expired()) return std::move(done)(absl::CancelledError("controller destroyed"));
    auto finish = [&](absl::Status status) {
      admin_->Close(absl::CancelledError("controller shut down"));
      connected_ = false;
      std::move(done)(std::move(status));
    };
    if (!v.ok()) return finish(v.status());
    if ((static_cast<uint32_t>(*v) & kCstsShstMask) == kCstsShstComplete) return finish(absl::OkStatus());
    if (NowNs() >= deadline_ns) {
      return finish(absl::DeadlineExceededError("controller did not complete shutdown (CSTS.SHST) in time"));
    }
    reactor_.RunAfter(1 * kMs, [this, alive, deadline_ns, done = std::move(done)]() mutable {
      if (alive.expired()) return std::move(done)(absl::CancelledError("controller destroyed"));
      WaitShutdown(deadline_ns, std::move(done));
    });
  });
}

}  // namespace smad::nvme::host
