#pragma once

// A host-side NVMe over Fabrics controller association: the admin queue, controller initialization
// (properties, CC.EN, CSTS.RDY, Identify, Number of Queues), keep-alive, admin commands (Identify,
// Get Log Page including the discovery log), I/O queue pair creation and orderly shutdown.

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nvme/host/identify.h"
#include "nvme/host/queue_pair.h"
#include "nvme/host/transport_id.h"
#include "reactor/reactor.h"

namespace smad::nvme::host {

// Asynchronous controller. Every operation reports through a callback that runs on the controller's
// reactor, never from inside the call that started it. Operations may overlap (up to the admin queue
// depth); Connect must finish successfully before any other operation.
//
// Thread safety: belongs to the Reactor passed at construction; call every method, and destroy it, on
// that thread. I/O queue pairs may live on other reactors (see CreateIoQueuePair).
//
// Destruction closes the admin queue: operations still waiting for a completion fail with a transport
// error from inside the destructor (their callbacks must not use the Controller); those waiting on a timer
// fail with Cancelled when the timer fires.
class Controller {
 public:
  struct Options {
    bool hdgst = false;
    bool ddgst = false;
    uint32_t kato_ms = 10000;        // keep-alive timeout in Connect; Keep Alive every KATO/2; 0 disables
    uint16_t admin_queue_depth = 32;
    uint16_t num_io_queues = 1;      // requested with Set Features Number of Queues
    uint64_t timeout_ns = 10'000'000'000ull;  // connect, each admin command, CSTS waits
    uint64_t io_command_timeout_ns = 0;       // for I/O queue pairs made by AllocateIoQueue; 0: none
  };

  template <typename T>
  using Callback = absl::AnyInvocable<void(T) &&>;
  using DoneCallback = Callback<absl::Status>;

  Controller(Reactor& reactor, TransportId trid, Options options);
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Connects the admin queue and initializes the controller: Property Get VS, CAP, CC; Property Set CC
  // (EN=1, IOSQES=6, IOCQES=4); waits for CSTS.RDY (up to CAP.TO); Identify Controller; Set Features
  // Number of Queues (not for discovery controllers); starts keep-alive. Errors: those of
  // QueuePair::Connect (e.g. "Connect failed: SCT 1 SC 0x84 (connect invalid host)"), an NVMe status of
  // a step ("Property Set failed: ..."), DeadlineExceeded, FailedPrecondition when CSTS.CFS is set.
  void Connect(DoneCallback done);

  // Admin commands. NVMe status failures come back as NvmeStatusError("<command>", status).
  void GetProperty(uint32_t offset, bool eight_bytes, Callback<absl::StatusOr<uint64_t>> done);
  void SetProperty(uint32_t offset, bool eight_bytes, uint64_t value, DoneCallback done);
  // Identify with any CNS: the 4096-byte data structure.
  void Identify(uint8_t cns, uint32_t nsid, Callback<absl::StatusOr<std::vector<uint8_t>>> done);
  // Identify Controller; also refreshes data().
  void IdentifyController(Callback<absl::StatusOr<ControllerData>> done);
  // Active namespace IDs (CNS 02h, following the list past 1024 entries).
  void ActiveNamespaces(Callback<absl::StatusOr<std::vector<uint32_t>>> done);
  // Identify Namespace plus the namespace identification descriptors (whose failure is ignored: older
  // controllers lack CNS 03h). NotFound when the namespace is inactive (NSZE 0).
  void IdentifyNamespace(uint32_t nsid, Callback<absl::StatusOr<NamespaceData>> done);
  // IdentifyNamespace for every active namespace, in NSID order.
  void Namespaces(Callback<absl::StatusOr<std::vector<NamespaceData>>> done);
  // `length` bytes (non-zero multiple of 4) of log page `lid` at byte `offset`.
  void GetLogPage(uint8_t lid, uint32_t nsid, uint64_t offset, uint32_t length,
                  Callback<absl::StatusOr<std::vector<uint8_t>>> done);
  // The whole discovery log: the header, then the records in pieces of at most 4 KiB (and MDTS), then the
  // header again; starts over (up to 10 times) when the generation counter changed meanwhile.
  void GetDiscoveryLog(Callback<absl::StatusOr<DiscoveryLog>> done);
  // Set Features; the value is the completion's DW0.
  void SetFeatures(uint8_t fid, uint32_t cdw11, Callback<absl::StatusOr<uint32_t>> done);
  void GetFeatures(uint8_t fid, uint32_t cdw11, Callback<absl::StatusOr<uint32_t>> done);
  void KeepAlive(DoneCallback done);

  // I/O queues. AllocateIoQueue reserves the lowest free QID (1..io_queues_granted()) and returns the
  // options for a QueuePair connecting it (CNTLID, depth clamped to CAP.MQES+1, digests, in-capsule limit
  // IOCCSZ*16-64); the caller may construct that QueuePair on any reactor. Errors: FailedPrecondition
  // (not connected, or a discovery controller), ResourceExhausted (no free QID).
  absl::StatusOr<QueuePair::Options> AllocateIoQueue(uint16_t depth);
  // Makes a QID reserved by AllocateIoQueue available again (after its QueuePair is gone).
  void ReleaseIoQueue(uint16_t qid);
  // AllocateIoQueue, then constructs and connects the QueuePair on `reactor` (any reactor, may be this
  // one). `done` runs on `reactor`, and the QueuePair it gets belongs to that reactor. On failure the QID
  // is released again.
  void CreateIoQueuePair(Reactor& reactor, uint16_t depth,
                         Callback<absl::StatusOr<std::unique_ptr<QueuePair>>> done);

  // Orderly shutdown: stops keep-alive, sets CC.SHN=01b, waits for CSTS.SHST=10b (up to timeout_ns),
  // then closes the admin queue. OK when never connected.
  void Shutdown(DoneCallback done);

  // Called (from a deferred task) when the admin queue fails after Connect succeeded.
  void SetFailureCallback(absl::AnyInvocable<void(const absl::Status&) &&> callback) {
    failure_callback_ = std::move(callback);
  }

  bool connected() const { return connected_; }
  const TransportId& trid() const { return trid_; }
  const Options& options() const { return options_; }
  Reactor& reactor() const { return reactor_; }
  // Valid after Connect succeeded.
  const ControllerData& data() const { return data_; }
  uint64_t cap() const { return cap_; }
  uint32_t vs() const { return vs_; }
  uint16_t cntlid() const { return cntlid_; }
  bool is_discovery() const { return is_discovery_; }
  uint32_t io_queues_granted() const { return io_queues_granted_; }
  // MDTS in bytes (0: unlimited).
  uint64_t max_transfer_bytes() const { return data_.MaxTransferBytes(CapMpsMinBytesOf(cap_)); }
  QueuePair* admin_queue() { return admin_.get(); }

 private:
  struct DiscoveryWalk;
  struct NamespaceWalk;

  static uint32_t CapMpsMinBytesOf(uint64_t cap) { return 4096u << ((cap >> 48) & 0xf); }

  // Submits on the admin queue; a refused submission completes `done` with the error from a deferred task.
  void SubmitAdmin(const uint8_t* sqe, uint8_t* read_buffer, uint32_t length, QueuePair::CompletionCallback done);
  void InitStep(int step);
  void InitFailed(const absl::Status& status);
  void WaitReady(uint64_t deadline_ns);
  void WaitShutdown(uint64_t deadline_ns, DoneCallback done);
  void StartKeepAlive();
  void StopKeepAlive();
  void SendKeepAlive();
  void OnAdminFailure(const absl::Status& status);
  void ActiveNamespacesFrom(uint32_t start, std::vector<uint32_t> found,
                            Callback<absl::StatusOr<std::vector<uint32_t>>> done);
  void NextNamespace(std::unique_ptr<NamespaceWalk> walk);
  void DiscoveryReadHeader(std::unique_ptr<DiscoveryWalk> walk);
  void DiscoveryReadEntries(std::unique_ptr<DiscoveryWalk> walk);
  void DiscoveryCheckHeader(std::unique_ptr<DiscoveryWalk> walk);

  Reactor& reactor_;
  TransportId trid_;
  Options options_;
  std::unique_ptr<QueuePair> admin_;
  DoneCallback connect_done_;
  absl::AnyInvocable<void(const absl::Status&) &&> failure_callback_;
  bool connected_ = false;
  bool is_discovery_ = false;
  uint64_t cap_ = 0;
  uint32_t vs_ = 0;
  uint32_t cc_ = 0;
  uint16_t cntlid_ = 0xffff;
  ControllerData data_;
  uint32_t io_queues_granted_ = 0;
  std::vector<bool> qid_used_;  // index = qid
  uint64_t keep_alive_timer_ = 0;
  bool keep_alive_outstanding_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace smad::nvme::host
