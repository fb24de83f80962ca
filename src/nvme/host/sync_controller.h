#pragma once

// A blocking facade over Controller for tools and tests: it runs a Reactor on a private thread and turns
// each asynchronous operation into a call that waits for its result.

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nvme/host/controller.h"
#include "nvme/host/identify.h"
#include "nvme/host/queue_pair.h"
#include "nvme/host/transport_id.h"
#include "reactor/reactor.h"

namespace smad::nvme::host {

// Thread safety: methods may be called from any thread except the private reactor's own, and from several
// threads at once (each call is a message to the reactor). Not for use from inside reactor callbacks.
class SyncController {
 public:
  struct Options {
    Controller::Options controller;
    uint16_t io_queue_depth = 32;  // of the I/O queue Read/Write/Flush use (created on first use)
  };

  // Starts the private reactor, connects and initializes the controller (see Controller::Connect).
  // Errors: those of Controller::Connect, e.g. PermissionDenied "Connect failed: SCT 1 SC 0x84 (connect
  // invalid host)".
  static absl::StatusOr<std::unique_ptr<SyncController>> Connect(const TransportId& trid, const Options& options);
  static absl::StatusOr<std::unique_ptr<SyncController>> Connect(const TransportId& trid) {
    return Connect(trid, Options());
  }

  // Shuts the controller down (if Shutdown() was not called), closes every queue and stops the thread.
  ~SyncController();
  SyncController(const SyncController&) = delete;
  SyncController& operator=(const SyncController&) = delete;

  // What Connect learned; fixed for the life of the object.
  const TransportId& trid() const { return trid_; }
  const ControllerData& controller_data() const { return data_; }
  uint64_t cap() const { return cap_; }
  uint32_t vs() const { return vs_; }
  uint16_t cntlid() const { return data_.cntlid; }
  bool is_discovery() const { return is_discovery_; }
  uint32_t io_queues_granted() const { return io_queues_granted_; }
  uint64_t max_transfer_bytes() const { return max_transfer_bytes_; }

  // Admin commands (see Controller for each one's errors).
  absl::StatusOr<ControllerData> IdentifyController();
  absl::StatusOr<std::vector<uint32_t>> ActiveNamespaces();
  absl::StatusOr<NamespaceData> IdentifyNamespace(uint32_t nsid);
  absl::StatusOr<std::vector<NamespaceData>> Namespaces();
  absl::StatusOr<std::vector<uint8_t>> GetLogPage(uint8_t lid, uint32_t nsid, uint64_t offset, uint32_t length);
  absl::StatusOr<DiscoveryLog> GetDiscoveryLog();
  absl::StatusOr<uint64_t> GetProperty(uint32_t offset, bool eight_bytes);
  absl::StatusOr<uint32_t> SetFeatures(uint8_t fid, uint32_t cdw11);
  absl::StatusOr<uint32_t> GetFeatures(uint8_t fid, uint32_t cdw11 = 0);
  absl::Status KeepAlive();

  // I/O on queue 1 (connected on first use). `buffer.size()` is the transfer length and must match
  // `nblocks` times the namespace's block size. Errors: InvalidArgument (empty buffer, nblocks 0 or
  // > 65536), the NVMe status as NvmeStatusError("Read"/"Write"/"Flush", ...), transport errors.
  absl::Status Read(uint32_t nsid, uint64_t lba, uint32_t nblocks, absl::Span<uint8_t> buffer);
  absl::Status Write(uint32_t nsid, uint64_t lba, uint32_t nblocks, absl::Span<const uint8_t> buffer);
  absl::Status Flush(uint32_t nsid);

  // Reserves an I/O queue ID for a QueuePair the caller runs on its own reactor (Controller::AllocateIoQueue).
  absl::StatusOr<QueuePair::Options> AllocateIoQueue(uint16_t depth);
  void ReleaseIoQueue(uint16_t qid);

  // CC.SHN=01b, wait for CSTS.SHST=10b, close. Later calls (other than the accessors) fail.
  absl::Status Shutdown();

  // The private reactor and the controller living on it, for callers that want the asynchronous API.
  // Only touch the Controller on that reactor.
  Reactor& reactor() { return *reactor_; }
  Controller& async_controller() { return *controller_; }

 private:
  SyncController(const TransportId& trid, const Options& options);

  // Runs `op` on the reactor and waits for the value it passes to its callback.
  template <typename T>
  T Call(absl::AnyInvocable<void(absl::AnyInvocable<void(T) &&>) &&> op);
  // On the reactor: the connected I/O queue pair, connecting it first if needed.
  void WithIoQueue(absl::AnyInvocable<void(absl::StatusOr<QueuePair*>) &&> fn);
  absl::Status SubmitIo(absl::AnyInvocable<void(uint8_t* sqe) &&> build, uint8_t* read_buffer,
                        const uint8_t* write_data, uint32_t length, const char* what);

  TransportId trid_;
  Options options_;
  std::unique_ptr<Reactor> reactor_;
  std::unique_ptr<Controller> controller_;  // touched on reactor_ only
  std::unique_ptr<QueuePair> io_queue_;     // touched on reactor_ only
  std::vector<absl::AnyInvocable<void(absl::StatusOr<QueuePair*>) &&>> io_waiters_;  // reactor_ only
  std::atomic<bool> shut_down_{false};
  ControllerData data_;
  uint64_t cap_ = 0;
  uint32_t vs_ = 0;
  bool is_discovery_ = false;
  uint32_t io_queues_granted_ = 0;
  uint64_t max_transfer_bytes_ = 0;
};

}  // namespace smad::nvme::host
