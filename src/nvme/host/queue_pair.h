#pragma once

// One NVMe/TCP queue pair seen from the host: a non-blocking TCP connection owned by a Reactor, the
// ICReq/ICResp exchange, Fabrics Connect, and command submission with in-capsule data, R2T/H2CData for
// writes and C2HData reassembly for reads.

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "nvme/host/transport_id.h"
#include "nvme/spec.h"
#include "nvme/tcp_pdu.h"
#include "reactor/reactor.h"

namespace smad::nvme::host {

// The outcome of one command.
struct Completion {
  // Non-OK when the command did not complete on the wire: the queue pair failed or was closed (the
  // message says why: TermReq from the controller, protocol error, connection reset, timeout, close).
  // `status` is then "aborted due to SQ deletion".
  absl::Status transport;
  Status status;  // the CQE status
  uint32_t cdw0 = 0;
  uint32_t cdw1 = 0;

  bool ok() const { return transport.ok() && status.ok(); }
  // OK, or an error "<what> failed: ..." carrying the transport error or the NVMe SCT/SC.
  absl::Status ToStatus(absl::string_view what) const;
};

// A host-side NVMe/TCP queue pair (admin queue for qid 0, otherwise an I/O queue).
//
// Lifecycle: construct, Connect(), submit commands once connected, destroy (or Close()). After a failure
// (TermReq, malformed PDU, socket error, timeout) the queue pair is closed for good: every outstanding
// command completes with a transport error and new submissions are refused; make a new QueuePair to
// reconnect.
//
// Batching: PDUs are appended to an output buffer and sent with one send() per reactor iteration (a
// deferred flush), so many submissions in one callback cost one system call.
//
// Thread safety: a QueuePair belongs to the Reactor passed at construction. Construct it anywhere, but
// call every method, and destroy it, on that reactor's thread. All callbacks run on that thread.
//
// Ownership: buffers passed to SubmitRead/SubmitWrite are borrowed and must stay valid until the
// command's callback ran.
class QueuePair {
 public:
  struct Options {
    uint16_t qid = 0;          // 0: admin queue
    uint16_t cntlid = 0xffff;  // 0xffff for the admin queue (dynamic); the admin's CNTLID for I/O queues
    // Commands in flight at most; the Connect SQSIZE is depth - 1 (0's based), as SPDK and Linux do.
    uint16_t depth = 32;
    uint32_t kato_ms = 0;  // keep-alive timeout sent in Connect (admin queue only)
    bool hdgst = false;    // request header digests in ICReq
    bool ddgst = false;    // request data digests in ICReq
    // Writes of at most this many bytes go in-capsule, larger ones wait for R2T. Use the controller's
    // IOCCSZ * 16 - 64 for I/O queues; 0 disables in-capsule data (Connect data is always in-capsule).
    uint32_t max_in_capsule = 0;
    // Largest PDU data (one C2HData chunk) accepted from the controller.
    uint32_t max_recv_data = 16u << 20;
    uint64_t connect_timeout_ns = 10'000'000'000ull;  // TCP connect + IC exchange + Fabrics Connect
    uint64_t command_timeout_ns = 0;                  // 0: commands never time out
  };

  enum class State { kIdle, kTcpConnecting, kIcExchange, kFabricConnect, kReady, kClosed };

  using ConnectCallback = absl::AnyInvocable<void(absl::Status) &&>;
  using CompletionCallback = absl::AnyInvocable<void(const Completion&) &&>;
  using FailureCallback = absl::AnyInvocable<void(const absl::Status&) &&>;

  // `trid` names the controller; `trid.hostnqn`/`hostid` identify this host in Connect.
  QueuePair(Reactor& reactor, TransportId trid, Options options);
  // Closes the connection. Outstanding commands complete with a Cancelled transport error from inside
  // the destructor; their callbacks must not touch this object anymore.
  ~QueuePair();
  QueuePair(const QueuePair&) = delete;
  QueuePair& operator=(const QueuePair&) = delete;

  // Connects TCP, exchanges ICReq/ICResp and sends Fabrics Connect. `done` gets OK once the queue accepts
  // commands, else the error: Unavailable (TCP connect failed, connection closed), DeadlineExceeded,
  // the Connect NVMe status as by NvmeStatusError("Connect", ...), or a protocol error. `done` always
  // runs from a deferred reactor task, never from inside a QueuePair method, so it may destroy the
  // QueuePair. Call once.
  void Connect(ConnectCallback done);

  // Submits a command (the 64-byte `sqe`; its CID and SGL descriptor are overwritten). `done` runs on
  // completion (CapsuleResp, or C2HData with SUCCESS for reads), or with a transport error when the
  // queue pair fails or closes. Completion callbacks run inside the queue pair's event handling: they may
  // submit more commands or call Close(), but must not destroy the QueuePair (defer that).
  // Errors (nothing submitted, `done` neither called nor moved from): FailedPrecondition when not
  // connected, ResourceExhausted when `depth` commands are in flight, InvalidArgument for an empty buffer.
  absl::Status Submit(const uint8_t* sqe, CompletionCallback&& done);
  // Controller-to-host data of `length` bytes into `buffer`.
  absl::Status SubmitRead(const uint8_t* sqe, uint8_t* buffer, uint32_t length, CompletionCallback&& done);
  // Host-to-controller data of `length` bytes from `data`: in-capsule when length <= max_in_capsule,
  // otherwise sent in H2CData PDUs of at most the controller's MAXH2CDATA as R2Ts ask for it.
  absl::Status SubmitWrite(const uint8_t* sqe, const uint8_t* data, uint32_t length, CompletionCallback&& done);

  // Closes the connection and fails outstanding commands with `reason` (a pending Connect gets it too).
  // Does not run the failure callback. Idempotent.
  void Close(const absl::Status& reason);

  // Called once, from a deferred task, when a connected queue pair fails on its own (not via Close).
  void SetFailureCallback(FailureCallback callback) { failure_callback_ = std::move(callback); }
  void set_max_in_capsule(uint32_t bytes) { options_.max_in_capsule = bytes; }

  State state() const { return state_; }
  bool ready() const { return state_ == State::kReady; }
  uint16_t qid() const { return options_.qid; }
  // The controller ID: from the Connect response for the admin queue, the configured one otherwise.
  uint16_t cntlid() const { return cntlid_; }
  uint16_t depth() const { return options_.depth; }
  size_t outstanding() const { return options_.depth - free_cids_.size(); }
  // What ICResp negotiated (digests, CPDA, MAXH2CDATA); valid once connected.
  const tcp::Params& params() const { return params_; }
  const TransportId& trid() const { return trid_; }
  Reactor& reactor() const { return reactor_; }
  // Why the queue pair closed (OK while open).
  const absl::Status& close_reason() const { return close_reason_; }
  uint64_t commands_completed() const { return completed_; }

 private:
  enum class Kind : uint8_t { kNone, kRead, kWrite };
  struct Request {
    CompletionCallback done;
    uint8_t* read_buffer = nullptr;
    const uint8_t* write_data = nullptr;
    uint32_t length = 0;
    uint32_t transferred = 0;  // C2H bytes received, or H2C bytes requested by R2Ts so far
    uint64_t submit_ns = 0;
    uint8_t opcode = 0;
    Kind kind = Kind::kNone;
    bool in_capsule = false;
    bool busy = false;
  };

  absl::Status SubmitInternal(const uint8_t* sqe, Kind kind, uint8_t* read_buffer, const uint8_t* write_data,
                              uint32_t length, bool force_in_capsule, CompletionCallback&& done);
  void StartTcpConnect();
  void OnEvents(uint32_t events);
  void OnTcpConnected();
  void ReadAndProcess();
  void ProcessPdus();
  void HandlePdu(const tcp::Pdu& pdu);
  void HandleIcResp(const tcp::Pdu& pdu);
  void HandleCapsuleResp(const tcp::Pdu& pdu);
  void HandleC2HData(const tcp::Pdu& pdu);
  void HandleR2T(const tcp::Pdu& pdu);
  void HandleTermReq(const tcp::Pdu& pdu);
  void OnConnectResponse(const Completion& completion);
  void Complete(uint16_t cid, const Completion& completion);
  // Looks up a busy request; nullptr after failing the connection with a TermReq pointing at `fei`.
  Request* FindRequest(const tcp::Pdu& pdu, uint16_t cid, uint32_t fei);

  void ScheduleFlush();
  void Flush();
  void SetWantWrite(bool want);
  // Fails the queue pair: optionally sends a TermReq for `error`, closes the socket, completes every
  // outstanding command with `reason`, reports to the connect or failure callback.
  void Fail(const absl::Status& reason, const tcp::ProtocolError* error, bool notify);
  void ProtocolFail(const tcp::Pdu& pdu, uint16_t fes, uint32_t fei, const std::string& message);
  void FinishConnect(const absl::Status& status);
  void CheckCommandTimeouts();

  Reactor& reactor_;
  TransportId trid_;
  Options options_;
  State state_ = State::kIdle;
  int fd_ = -1;
  bool watching_ = false;
  bool want_write_ = false;
  bool flush_scheduled_ = false;
  tcp::Params params_;
  tcp::PduReader reader_;
  std::vector<uint8_t> out_;  // PDUs waiting to be sent
  size_t out_sent_ = 0;       // bytes of out_ already sent
  std::vector<Request> requests_;   // indexed by CID
  std::vector<uint16_t> free_cids_;
  std::array<uint8_t, kConnectDataSize> connect_data_{};
  uint16_t cntlid_ = 0xffff;
  ConnectCallback connect_done_;
  FailureCallback failure_callback_;
  absl::Status close_reason_;
  uint64_t connect_timer_ = 0;
  uint64_t timeout_timer_ = 0;
  uint64_t completed_ = 0;
  // Expires with the object; deferred tasks and timers hold a weak_ptr to it.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

const char* QueuePairStateName(QueuePair::State state);

}  // namespace smad::nvme::host
