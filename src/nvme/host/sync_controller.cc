#include "nvme/host/sync_controller.h"

#include <chrono>
#include <future>

#include "absl/strings/str_cat.h"
#include "nvme/host/commands.h"

namespace smad::nvme::host {
namespace {

// How long a blocking call waits beyond the controller's own timeouts before giving up on the reactor.
std::chrono::nanoseconds WaitLimit(const Controller::Options& options) {
  return std::chrono::nanoseconds(options.timeout_ns * 3 + 5'000'000'000ull);
}

}  // namespace

template <typename T>
T SyncController::Call(absl::AnyInvocable<void(absl::AnyInvocable<void(T) &&>) &&> op) {
  auto promise = std::make_shared<std::promise<T>>();
  std::future<T> future = promise->get_future();
  reactor_->Post([op = std::move(op), promise]() mutable {
    std::move(op)([promise](T value) mutable { promise->set_value(std::move(value)); });
  });
  if (future.wait_for(WaitLimit(options_.controller)) != std::future_status::ready) {
    return T(absl::DeadlineExceededError("no answer from the controller's reactor"));
  }
  try {
    return future.get();
  } catch (const std::future_error&) {
    return T(absl::InternalError("operation dropped without a result"));
  }
}

SyncController::SyncController(const TransportId& trid, const Options& options) : trid_(trid), options_(options) {
  Reactor::Options reactor_options;
  reactor_options.name = "nvme_host";
  reactor_ = std::make_unique<Reactor>(reactor_options);
  controller_ = std::make_unique<Controller>(*reactor_, trid_, options_.controller);
  reactor_->Start();
}

absl::StatusOr<std::unique_ptr<SyncController>> SyncController::Connect(const TransportId& trid,
                                                                        const Options& options) {
  std::unique_ptr<SyncController> self(new SyncController(trid, options));
  SyncController* s = self.get();
  absl::Status status = s->Call<absl::Status>([s](absl::AnyInvocable<void(absl::Status) &&> done) mutable {
    s->controller_->Connect([s, done = std::move(done)](absl::Status status) mutable {
      if (status.ok()) {
        // Copy what the callers read from their own threads.
        s->data_ = s->controller_->data();
        s->cap_ = s->controller_->cap();
        s->vs_ = s->controller_->vs();
        s->is_discovery_ = s->controller_->is_discovery();
        s->io_queues_granted_ = s->controller_->io_queues_granted();
        s->max_transfer_bytes_ = s->controller_->max_transfer_bytes();
      }
      std::move(done)(status);
    });
  });
  if (!status.ok()) {
    self->shut_down_ = true;  // nothing to shut down
    return status;
  }
  return self;
}

SyncController::~SyncController() {
  if (!shut_down_) Shutdown().IgnoreError();
  std::promise<void> destroyed;
  reactor_->Post([this, &destroyed] {
    io_queue_.reset();
    controller_.reset();
    destroyed.set_value();
  });
  destroyed.get_future().wait();
  reactor_->Stop();
  reactor_->Join();
}

absl::Status SyncController::Shutdown() {
  if (shut_down_.exchange(true)) return absl::OkStatus();
  return Call<absl::Status>([this](absl::AnyInvocable<void(absl::Status) &&> done) mutable {
    if (io_queue_ != nullptr) {
      io_queue_->Close(absl::CancelledError("controller shut down"));
    }
    controller_->Shutdown(std::move(done));
  });
}

absl::StatusOr<ControllerData> SyncController::IdentifyController() {
  using R = absl::StatusOr<ControllerData>;
  return Call<R>([this](absl::AnyInvocable<void(R) &&> done) mutable {
    controller_->IdentifyController(std::move(done));
  });
}

absl::StatusOr<std::vector<uint32_t>> SyncController::ActiveNamespaces() {
  using R = absl::StatusOr<std::vector<uint32_t>>;
  return Call<R>([this](absl::AnyInvocable<void(R) &&> done) mutable {
    controller_->ActiveNamespaces(std::move(done));
  });
}

absl::StatusOr<NamespaceData> SyncController::IdentifyNamespace(uint32_t nsid) {
  using R = absl::StatusOr<NamespaceData>;
  return Call<R>([this, nsid](absl::AnyInvocable<void(R) &&> done) mutable {
    controller_->IdentifyNamespace(nsid, std::move(done));
  });
}

absl::StatusOr<std::vector<NamespaceData>> SyncController::Namespaces() {
  using R = absl::StatusOr<std::vector<NamespaceData>>;
  return Call<R>([this](absl::AnyInvocable<void(R) &&> done) mutable { controller_->Namespaces(std::move(done)); });
}

absl::StatusOr<std::vector<uint8_t>> SyncController::GetLogPage(uint8_t lid, uint32_t nsid, uint64_t offset,
                                                                uint32_t length) {
  using R = absl::StatusOr<std::vector<uint8_t>>;
  return Call<R>([this, lid, nsid, offset, length](absl::AnyInvocable<void(R) &&> done) mutable {
    controller_->GetLogPage(lid, nsid, offset, length, std::move(done));
  });
}

absl::StatusOr<DiscoveryLog> SyncController::GetDiscoveryLog() {
  using R = absl::StatusOr<DiscoveryLog>;
  return Call<R>([this](absl::AnyInvocable<void(R) &&> done) mutable {
    controller_->GetDiscoveryLog(std::move(done));
  });
}

absl::StatusOr<uint64_t> SyncController::GetProperty(uint32_t offset, bool eight_bytes) {
  using R = absl::StatusOr<uint64_t>;
  return Call<R>([this, offset, eight_bytes](absl::AnyInvocable<void(R) &&> done) mutable {
    controller_->GetProperty(offset, eight_bytes, std::move(done));
  });
}

absl::StatusOr<uint32_t> SyncController::SetFeatures(uint8_t fid, uint32_t cdw11) {
  using R = absl::StatusOr<uint32_t>;
  return Call<R>([this, fid, cdw11](absl::AnyInvocable<void(R) &&> done) mutable {
    controller_->SetFeatures(fid, cdw11, std::move(done));
  });
}

absl::StatusOr<uint32_t> SyncController::GetFeatures(uint8_t fid, uint32_t cdw11) {
  using R = absl::StatusOr<uint32_t>;
  return Call<R>([this, fid, cdw11](absl::AnyInvocable<void(R) &&> done) mutable {
    controller_->GetFeatures(fid, cdw11, std::move(done));
  });
}

absl::Status SyncController::KeepAlive() {
  return Call<absl::Status>([this](absl::AnyInvocable<void(absl::Status) &&> done) mutable {
    controller_->KeepAlive(std::move(done));
  });
}

absl::StatusOr<QueuePair::Options> SyncController::AllocateIoQueue(uint16_t depth) {
  using R = absl::StatusOr<QueuePair::Options>;
  return Call<R>([this, depth](absl::AnyInvocable<void(R) &&> done) mutable {
    std::move(done)(controller_->AllocateIoQueue(depth));
  });
}

void SyncController::ReleaseIoQueue(uint16_t qid) {
  Call<absl::Status>([this, qid](absl::AnyInvocable<void(absl::Status) &&> done) mutable {
    controller_->ReleaseIoQueue(qid);
    std::move(done)(absl::OkStatus());
  }).IgnoreError();
}

void SyncController::WithIoQueue(absl::AnyInvocable<void(absl::StatusOr<QueuePair*>) &&> fn) {
  if (shut_down_) return std::move(fn)(absl::FailedPreconditionError("controller was shut down"));
  if (io_queue_ != nullptr && io_queue_->ready()) return std::move(fn)(io_queue_.get());
  if (io_queue_ != nullptr && io_queue_->state() == QueuePair::State::kClosed) {
    // A failed queue: report why, and let the next call reconnect.
    absl::Status reason = io_queue_->close_reason();
    controller_->ReleaseIoQueue(io_queue_->qid());
    io_queue_.reset();
    return std::move(fn)(absl::UnavailableError(absl::StrCat("I/O queue failed: ", reason.message())));
  }
  io_waiters_.push_back(std::move(fn));
  if (io_waiters_.size() > 1) return;  // a connect is under way
  controller_->CreateIoQueuePair(*reactor_, options_.io_queue_depth,
                                 [this](absl::StatusOr<std::unique_ptr<QueuePair>> qp) {
                                   absl::StatusOr<QueuePair*> result = nullptr;
                                   if (qp.ok()) {
                                     io_queue_ = std::move(*qp);
                                     result = io_queue_.get();
                                   } else {
                                     result = qp.status();
                                   }
                                   auto waiters = std::move(io_waiters_);
                                   io_waiters_.clear();
                                   for (auto& w : waiters) std::move(w)(result);
                                 });
}

absl::Status SyncController::SubmitIo(absl::AnyInvocable<void(uint8_t* sqe) &&> build, uint8_t* read_buffer,
                                      const uint8_t* write_data, uint32_t length, const char* what) {
  return Call<absl::Status>([this, build = std::move(build), read_buffer, write_data, length, what](
                                absl::AnyInvocable<void(absl::Status) &&> done) mutable {
    WithIoQueue([build = std::move(build), read_buffer, write_data, length, what, done = std::move(done)](
                    absl::StatusOr<QueuePair*> qp) mutable {
      if (!qp.ok()) return std::move(done)(qp.status());
      uint8_t sqe[kSqeSize];
      std::move(build)(sqe);
      QueuePair::CompletionCallback cb = [done = std::move(done), what](const Completion& c) mutable {
        std::move(done)(c.ToStatus(what));
      };
      absl::Status s;
      if (read_buffer != nullptr) {
        s = (*qp)->SubmitRead(sqe, read_buffer, length, std::move(cb));
      } else if (write_data != nullptr) {
        s = (*qp)->SubmitWrite(sqe, write_data, length, std::move(cb));
      } else {
        s = (*qp)->Submit(sqe, std::move(cb));
      }
      if (!s.ok()) {
        Completion c;
        c.transport = s;
        std::move(cb)(c);
      }
    });
  });
}

absl::Status SyncController::Read(uint32_t nsid, uint64_t lba, uint32_t nblocks, absl::Span<uint8_t> buffer) {
  if (buffer.empty() || nblocks == 0 || nblocks > 65536) {
    return absl::InvalidArgumentError("Read needs a buffer and 1 to 65536 blocks");
  }
  return SubmitIo([nsid, lba, nblocks](uint8_t* sqe) { BuildRead(sqe, nsid, lba, nblocks); }, buffer.data(),
                  nullptr, static_cast<uint32_t>(buffer.size()), "Read");
}

absl::Status SyncController::Write(uint32_t nsid, uint64_t lba, uint32_t nblocks,
                                   absl::Span<const uint8_t> buffer) {
  if (buffer.empty() || nblocks == 0 || nblocks > 65536) {
    return absl::InvalidArgumentError("Write needs data and 1 to 65536 blocks");
  }
  return SubmitIo([nsid, lba, nblocks](uint8_t* sqe) { BuildWrite(sqe, nsid, lba, nblocks); }, nullptr,
                  buffer.data(), static_cast<uint32_t>(buffer.size()), "Write");
}

absl::Status SyncController::Flush(uint32_t nsid) {
  return SubmitIo([nsid](uint8_t* sqe) { BuildFlush(sqe, nsid); }, nullptr, nullptr, 0, "Flush");
}

}  // namespace smad::nvme::host
