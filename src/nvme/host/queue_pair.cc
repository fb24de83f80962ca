#include "nvme/host/queue_pair.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "nvme/host/commands.h"
#include "spdlog/spdlog.h"

namespace smad::nvme::host {
namespace {

constexpr size_t kRecvChunk = 64 * 1024;
// Bytes read per readiness event before yielding to the reactor's other work.
constexpr size_t kRecvBudget = 4 * 1024 * 1024;
// Sent bytes at the front of the output buffer tolerated before compacting it.
constexpr size_t kCompactThreshold = 1024 * 1024;

// Byte offsets inside received PDU headers (TCP transport binding).
constexpr uint32_t kFeiFlags = 1;
constexpr uint32_t kFeiCccid = 8;         // C2HData, R2T
constexpr uint32_t kFeiDataOffset = 12;   // datao / r2to
constexpr uint32_t kFeiDataLength = 16;   // datal / r2tl
constexpr uint32_t kFeiRespCid = 8 + 12;  // CapsuleResp: CQE CID
constexpr uint32_t kFeiIcPfv = 8, kFeiIcCpda = 10, kFeiIcDgst = 11, kFeiIcMaxh2cdata = 12;

const char* FesName(uint16_t fes) {
  switch (fes) {
    case tcp::kFesInvalidHeaderField: return "invalid PDU header field";
    case tcp::kFesPduSequenceError: return "PDU sequence error";
    case tcp::kFesHeaderDigestError: return "header digest error";
    case tcp::kFesDataOutOfRange: return "data transfer out of range";
    case tcp::kFesDataLimitExceeded: return "data transfer limit exceeded";
    case tcp::kFesUnsupportedParameter: return "unsupported parameter";
    default: return "unknown";
  }
}

}  // namespace

absl::Status Completion::ToStatus(absl::string_view what) const {
  if (!transport.ok()) {
    return absl::Status(transport.code(), absl::StrCat(what, " failed: ", transport.message()));
  }
  return NvmeStatusError(what, status);
}

const char* QueuePairStateName(QueuePair::State state) {
  switch (state) {
    case QueuePair::State::kIdle: return "idle";
    case QueuePair::State::kTcpConnecting: return "tcp-connecting";
    case QueuePair::State::kIcExchange: return "ic-exchange";
    case QueuePair::State::kFabricConnect: return "fabric-connect";
    case QueuePair::State::kReady: return "ready";
    case QueuePair::State::kClosed: return "closed";
  }
  return "?";
}

QueuePair::QueuePair(Reactor& reactor, TransportId trid, Options options)
    : reactor_(reactor),
      trid_(std::move(trid)),
      options_(options),
      reader_(tcp::PduReader::Role::kHost, options.max_recv_data) {
  if (options_.depth == 0) options_.depth = 1;
  requests_.resize(options_.depth);
  free_cids_.reserve(options_.depth);
  // Hand out low CIDs first.
  for (int cid = options_.depth - 1; cid >= 0; --cid) free_cids_.push_back(static_cast<uint16_t>(cid));
  cntlid_ = options_.cntlid;
}

QueuePair::~QueuePair() {
  Close(absl::CancelledError("queue pair destroyed"));
  alive_.reset();
}

void QueuePair::Connect(ConnectCallback done) {
  if (state_ != State::kIdle) {
    reactor_.Defer([done = std::move(done)]() mutable {
      std::move(done)(absl::FailedPreconditionError("QueuePair::Connect called twice"));
    });
    return;
  }
  connect_done_ = std::move(done);
  std::weak_ptr<bool> alive = alive_;
  connect_timer_ = reactor_.RunAfter(options_.connect_timeout_ns, [this, alive] {
    if (alive.expired()) return;
    connect_timer_ = 0;
    if (state_ == State::kReady || state_ == State::kClosed) return;
    Fail(absl::DeadlineExceededError(absl::StrCat("connecting queue ", options_.qid, " to ", trid_.Describe(),
                                                  " timed out in state ", QueuePairStateName(state_))),
         nullptr, true);
  });
  StartTcpConnect();
}

void QueuePair::StartTcpConnect() {
  state_ = State::kTcpConnecting;
  addrinfo hints{};
  hints.ai_family = trid_.adrfam == AddressFamily::kIpv6 ? AF_INET6 : AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* result = nullptr;
  // NOTE: a host name (not a numeric address) resolves synchronously here, blocking the reactor.
  int rc = getaddrinfo(trid_.traddr.c_str(), trid_.trsvcid.c_str(), &hints, &result);
  if (rc != 0 || result == nullptr) {
    Fail(absl::InvalidArgumentError(absl::StrCat("cannot resolve ", trid_.traddr, ":", trid_.trsvcid, ": ",
                                                 gai_strerror(rc))),
         nullptr, true);
    return;
  }
  fd_ = socket(result->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    int err = errno;
    freeaddrinfo(result);
    Fail(ErrnoStatus(err, "socket() failed: " + ErrnoString(err)), nullptr, true);
    return;
  }
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (!trid_.hostaddr.empty() || !trid_.hostsvcid.empty()) {
    addrinfo* local = nullptr;
    addrinfo local_hints = hints;
    local_hints.ai_flags |= AI_PASSIVE;
    const char* host = trid_.hostaddr.empty() ? nullptr : trid_.hostaddr.c_str();
    const char* port = trid_.hostsvcid.empty() ? nullptr : trid_.hostsvcid.c_str();
    rc = getaddrinfo(host, port, &local_hints, &local);
    if (rc != 0 || local == nullptr || bind(fd_, local->ai_addr, local->ai_addrlen) != 0) {
      int err = errno;
      if (local != nullptr) freeaddrinfo(local);
      freeaddrinfo(result);
      Fail(absl::InvalidArgumentError(absl::StrCat("cannot bind to host address ", trid_.hostaddr, ":",
                                                   trid_.hostsvcid, ": ", rc != 0 ? gai_strerror(rc) : ErrnoString(err))),
           nullptr, true);
      return;
    }
    freeaddrinfo(local);
  }
  rc = connect(fd_, result->ai_addr, result->ai_addrlen);
  int err = errno;
  freeaddrinfo(result);
  if (rc != 0 && err != EINPROGRESS) {
    Fail(ErrnoStatus(err, absl::StrCat("connect to ", trid_.traddr, ":", trid_.trsvcid, " failed: ",
                                       ErrnoString(err))),
         nullptr, true);
    return;
  }
  absl::Status watch = reactor_.WatchFd(fd_, EPOLLOUT, [this](uint32_t events) { OnEvents(events); });
  if (!watch.ok()) {
    Fail(watch, nullptr, true);
    return;
  }
  watching_ = true;
  want_write_ = true;
}

void QueuePair::OnEvents(uint32_t events) {
  if (state_ == State::kTcpConnecting) {
    OnTcpConnected();
    return;
  }
  if (state_ == State::kClosed) return;
  if (events & EPOLLOUT) {
    Flush();
    if (state_ == State::kClosed) return;
  }
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ReadAndProcess();
}

void QueuePair::OnTcpConnected() {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) {
    Fail(ErrnoStatus(err, absl::StrCat("connect to ", trid_.traddr, ":", trid_.trsvcid, " failed: ",
                                       ErrnoString(err))),
         nullptr, true);
    return;
  }
  state_ = State::kIcExchange;
  SetWantWrite(false);
  // hpda 0 (no padding before H2C data), maxr2t 0 (one outstanding R2T per command, 0's based).
  tcp::AppendIcReq(out_, 0, options_.hdgst, options_.ddgst, 0);
  Flush();
}

void QueuePair::SetWantWrite(bool want) {
  if (!watching_ || want == want_write_) return;
  want_write_ = want;
  absl::Status s = reactor_.ModifyFd(fd_, want ? (EPOLLIN | EPOLLOUT) : static_cast<uint32_t>(EPOLLIN));
  if (!s.ok()) Fail(s, nullptr, true);
}

void QueuePair::ScheduleFlush() {
  if (flush_scheduled_ || want_write_) return;  // with EPOLLOUT armed, the writable event flushes
  flush_scheduled_ = true;
  std::weak_ptr<bool> alive = alive_;
  reactor_.Defer([this, alive] {
    if (alive.expired()) return;
    flush_scheduled_ = false;
    if (state_ != State::kClosed) Flush();
  });
}

void QueuePair::Flush() {
  while (out_sent_ < out_.size()) {
    ssize_t n = send(fd_, out_.data() + out_sent_, out_.size() - out_sent_, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      out_sent_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (out_sent_ >= kCompactThreshold) {
        out_.erase(out_.begin(), out_.begin() + static_cast<ptrdiff_t>(out_sent_));
        out_sent_ = 0;
      }
      SetWantWrite(true);
      return;
    }
    int err = n < 0 ? errno : EPIPE;
    Fail(ErrnoStatus(err, "send to controller failed: " + ErrnoString(err)), nullptr, true);
    return;
  }
  out_.clear();
  out_sent_ = 0;
  SetWantWrite(false);
}

void QueuePair::ReadAndProcess() {
  size_t total = 0;
  while (state_ != State::kClosed && total < kRecvBudget) {
    size_t available = 0;
    uint8_t* space = reader_.WritableSpace(kRecvChunk, &available);
    ssize_t n = recv(fd_, space, available, 0);
    if (n > 0) {
      reader_.Commit(static_cast<size_t>(n));
      total += static_cast<size_t>(n);
      ProcessPdus();
      if (static_cast<size_t>(n) < available) return;  // drained; level-triggered epoll reports more
      continue;
    }
    if (n == 0) {
      Fail(absl::UnavailableError(absl::StrCat("connection closed by the controller (queue ", options_.qid, ")")),
           nullptr, true);
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    int err = errno;
    Fail(ErrnoStatus(err, "receive from controller failed: " + ErrnoString(err)), nullptr, true);
    return;
  }
}

void QueuePair::ProcessPdus() {
  tcp::Pdu pdu;
  tcp::ProtocolError error;
  while (state_ != State::kClosed) {
    tcp::PduReader::Result result = reader_.Next(&pdu, &error);
    if (result == tcp::PduReader::Result::kNeedMore) return;
    if (result == tcp::PduReader::Result::kError) {
      Fail(absl::DataLossError(absl::StrCat("NVMe/TCP protocol error from controller: ", error.message)), &error,
           true);
      return;
    }
    HandlePdu(pdu);
  }
}

void QueuePair::HandlePdu(const tcp::Pdu& pdu) {
  switch (pdu.type) {
    case tcp::kIcResp: HandleIcResp(pdu); return;
    case tcp::kCapsuleResp: HandleCapsuleResp(pdu); return;
    case tcp::kC2HData: HandleC2HData(pdu); return;
    case tcp::kR2T: HandleR2T(pdu); return;
    case tcp::kC2HTermReq: HandleTermReq(pdu); return;
    default:
      ProtocolFail(pdu, tcp::kFesInvalidHeaderField, 0,
                   absl::StrCat("unexpected PDU type ", tcp::PduTypeName(pdu.type), " from controller"));
      return;
  }
}

void QueuePair::HandleIcResp(const tcp::Pdu& pdu) {
  if (state_ != State::kIcExchange) {
    ProtocolFail(pdu, tcp::kFesPduSequenceError, 0, "unexpected ICResp");
    return;
  }
  tcp::IcFields ic = tcp::ParseIc(pdu);
  if (ic.pfv != 0) {
    ProtocolFail(pdu, tcp::kFesInvalidHeaderField, kFeiIcPfv, absl::StrCat("ICResp PFV ", ic.pfv, " unsupported"));
    return;
  }
  if ((ic.hdgst && !options_.hdgst) || (ic.ddgst && !options_.ddgst)) {
    ProtocolFail(pdu, tcp::kFesInvalidHeaderField, kFeiIcDgst, "ICResp enables a digest the host did not request");
    return;
  }
  if (ic.pda > 31) {
    ProtocolFail(pdu, tcp::kFesInvalidHeaderField, kFeiIcCpda, absl::StrCat("ICResp CPDA ", ic.pda, " invalid"));
    return;
  }
  if (ic.limit < 4096) {
    ProtocolFail(pdu, tcp::kFesInvalidHeaderField, kFeiIcMaxh2cdata,
                 absl::StrCat("ICResp MAXH2CDATA ", ic.limit, " below 4096"));
    return;
  }
  if (ic.hdgst != options_.hdgst || ic.ddgst != options_.ddgst) {
    spdlog::info("queue {}: controller declined digests (hdgst {}, ddgst {})", options_.qid, ic.hdgst, ic.ddgst);
  }
  params_.hdgst = ic.hdgst;
  params_.ddgst = ic.ddgst;
  params_.cpda = ic.pda;
  params_.maxh2cdata = ic.limit;
  params_.max_in_capsule = options_.max_in_capsule;
  reader_.SetParams(params_);

  state_ = State::kFabricConnect;
  uint8_t sqe[kSqeSize];
  BuildConnect(sqe, options_.qid, options_.depth, options_.qid == 0 ? options_.kato_ms : 0);
  BuildConnectData(connect_data_.data(), trid_.hostid.bytes().data(), options_.cntlid, trid_.subnqn,
                   trid_.hostnqn);
  absl::Status s = SubmitInternal(sqe, Kind::kWrite, nullptr, connect_data_.data(), kConnectDataSize, true,
                                  [this](const Completion& c) { OnConnectResponse(c); });
  if (!s.ok()) Fail(s, nullptr, true);
}

void QueuePair::OnConnectResponse(const Completion& completion) {
  if (state_ != State::kFabricConnect) return;  // already failed; Fail() reported the reason
  if (!completion.status.ok()) {
    Fail(NvmeStatusError("Connect", completion.status), nullptr, true);
    return;
  }
  if (options_.qid == 0) cntlid_ = static_cast<uint16_t>(completion.cdw0 & 0xffff);
  state_ = State::kReady;
  if (connect_timer_ != 0) {
    reactor_.CancelTimer(connect_timer_);
    connect_timer_ = 0;
  }
  if (options_.command_timeout_ns > 0) {
    std::weak_ptr<bool> alive = alive_;
    uint64_t period = std::max<uint64_t>(options_.command_timeout_ns / 4, 1'000'000);
    timeout_timer_ = reactor_.RunEvery(period, [this, alive] {
      if (!alive.expired()) CheckCommandTimeouts();
    });
  }
  FinishConnect(absl::OkStatus());
}

void QueuePair::FinishConnect(const absl::Status& status) {
  if (!connect_done_) return;
  reactor_.Defer([done = std::move(connect_done_), status]() mutable { std::move(done)(status); });
  connect_done_ = nullptr;
}

void QueuePair::CheckCommandTimeouts() {
  if (state_ != State::kReady) return;
  uint64_t now = NowNs();
  for (size_t cid = 0; cid < requests_.size(); ++cid) {
    const Request& r = requests_[cid];
    if (r.busy && now - r.submit_ns > options_.command_timeout_ns) {
      Fail(absl::DeadlineExceededError(absl::StrFormat("command CID %d opcode 0x%02x on queue %d timed out after "
                                                       "%d ms",
                                                       cid, r.opcode, options_.qid,
                                                       options_.command_timeout_ns / 1000000)),
           nullptr, true);
      return;
    }
  }
}

QueuePair::Request* QueuePair::FindRequest(const tcp::Pdu& pdu, uint16_t cid, uint32_t fei) {
  if (cid >= requests_.size() || !requests_[cid].busy) {
    ProtocolFail(pdu, tcp::kFesInvalidHeaderField, fei,
                 absl::StrCat(tcp::PduTypeName(pdu.type), " for unknown command ID ", cid));
    return nullptr;
  }
  return &requests_[cid];
}

void QueuePair::HandleCapsuleResp(const tcp::Pdu& pdu) {
  if (state_ != State::kFabricConnect && state_ != State::kReady) {
    ProtocolFail(pdu, tcp::kFesPduSequenceError, 0, "CapsuleResp before the connection was initialized");
    return;
  }
  const uint8_t* cqe = pdu.header + tcp::kCommonHeaderSize;
  uint16_t cid = Load16(cqe + 12);
  if (FindRequest(pdu, cid, kFeiRespCid) == nullptr) return;
  Completion c;
  c.cdw0 = Load32(cqe);
  c.cdw1 = Load32(cqe + 4);
  c.status = Status::Decode(Load16(cqe + 14));
  Complete(cid, c);
}

void QueuePair::HandleC2HData(const tcp::Pdu& pdu) {
  tcp::DataFields d = tcp::ParseData(pdu);
  Request* r = FindRequest(pdu, d.cccid, kFeiCccid);
  if (r == nullptr) return;
  if (r->kind != Kind::kRead) {
    ProtocolFail(pdu, tcp::kFesInvalidHeaderField, kFeiCccid,
                 absl::StrCat("C2HData for command ", d.cccid, " which transfers no data to the host"));
    return;
  }
  if (d.length != pdu.data_length) {
    ProtocolFail(pdu, tcp::kFesInvalidHeaderField, kFeiDataLength,
                 absl::StrCat("C2HData DATAL ", d.length, " does not match the PDU data length ", pdu.data_length));
    return;
  }
  if (d.offset != r->transferred) {
    ProtocolFail(pdu, tcp::kFesDataOutOfRange, kFeiDataOffset,
                 absl::StrCat("C2HData DATAO ", d.offset, " out of order (expected ", r->transferred, ")"));
    return;
  }
  if (static_cast<uint64_t>(d.offset) + d.length > r->length) {
    ProtocolFail(pdu, tcp::kFesDataOutOfRange, kFeiDataLength,
                 absl::StrCat("C2HData beyond the command's ", r->length, " bytes"));
    return;
  }
  if (d.length > 0) std::memcpy(r->read_buffer + d.offset, pdu.data, d.length);
  r->transferred += d.length;
  if (pdu.flags & tcp::kFlagSuccess) {
    if (!(pdu.flags & tcp::kFlagLastPdu)) {
      ProtocolFail(pdu, tcp::kFesInvalidHeaderField, kFeiFlags, "C2HData has SUCCESS without LAST_PDU");
      return;
    }
    if (r->transferred != r->length) {
      ProtocolFail(pdu, tcp::kFesInvalidHeaderField, kFeiFlags,
                   absl::StrCat("C2HData SUCCESS after ", r->transferred, " of ", r->length, " bytes"));
      return;
    }
    Complete(d.cccid, Completion{});
  }
}

void QueuePair::HandleR2T(const tcp::Pdu& pdu) {
  tcp::DataFields d = tcp::ParseData(pdu);
  Request* r = FindRequest(pdu, d.cccid, kFeiCccid);
  if (r == nullptr) return;
  if (r->kind != Kind::kWrite || r->in_capsule) {
    ProtocolFail(pdu, tcp::kFesInvalidHeaderField, kFeiCccid,
                 absl::StrCat("R2T for command ", d.cccid, " which has no data waiting for R2T"));
    return;
  }
  if (d.length == 0) {
    ProtocolFail(pdu, tcp::kFesInvalidHeaderField, kFeiDataLength, "R2T with R2TL 0");
    return;
  }
  if (d.offset != r->transferred || static_cast<uint64_t>(d.offset) + d.length > r->length) {
    ProtocolFail(pdu, tcp::kFesDataOutOfRange, kFeiDataOffset,
                 absl::StrCat("R2T for bytes ", d.offset, "+", d.length, " of a ", r->length,
                              "-byte command (next expected offset ", r->transferred, ")"));
    return;
  }
  uint32_t end = d.offset + d.length;
  for (uint32_t offset = d.offset; offset < end;) {
    uint32_t chunk = std::min(end - offset, params_.maxh2cdata);
    tcp::AppendH2CData(out_, params_, d.cccid, d.ttag, offset, r->write_data + offset, chunk, offset + chunk == end);
    offset += chunk;
  }
  r->transferred = end;
  ScheduleFlush();
}

void QueuePair::HandleTermReq(const tcp::Pdu& pdu) {
  tcp::TermFields t = tcp::ParseTerm(pdu);
  Fail(absl::UnavailableError(absl::StrFormat("controller terminated the connection: FES 0x%x (%s), FEI %u", t.fes,
                                              FesName(t.fes), t.fei)),
       nullptr, true);
}

void QueuePair::ProtocolFail(const tcp::Pdu& pdu, uint16_t fes, uint32_t fei, const std::string& message) {
  tcp::ProtocolError error;
  error.fes = fes;
  error.fei = fei;
  error.message = message;
  size_t n = std::min<size_t>(pdu.hlen, tcp::kMaxTermReqData);
  if (pdu.header != nullptr) error.header.assign(pdu.header, pdu.header + n);
  Fail(absl::DataLossError(absl::StrCat("NVMe/TCP protocol error from controller: ", message)), &error, true);
}

absl::Status QueuePair::Submit(const uint8_t* sqe, CompletionCallback&& done) {
  if (state_ != State::kReady) {
    return absl::FailedPreconditionError(absl::StrCat("queue pair is ", QueuePairStateName(state_)));
  }
  return SubmitInternal(sqe, Kind::kNone, nullptr, nullptr, 0, false, std::move(done));
}

absl::Status QueuePair::SubmitRead(const uint8_t* sqe, uint8_t* buffer, uint32_t length, CompletionCallback&& done) {
  if (state_ != State::kReady) {
    return absl::FailedPreconditionError(absl::StrCat("queue pair is ", QueuePairStateName(state_)));
  }
  if (length == 0 || buffer == nullptr) return absl::InvalidArgumentError("read needs a non-empty buffer");
  return SubmitInternal(sqe, Kind::kRead, buffer, nullptr, length, false, std::move(done));
}

absl::Status QueuePair::SubmitWrite(const uint8_t* sqe, const uint8_t* data, uint32_t length,
                                    CompletionCallback&& done) {
  if (state_ != State::kReady) {
    return absl::FailedPreconditionError(absl::StrCat("queue pair is ", QueuePairStateName(state_)));
  }
  if (length == 0 || data == nullptr) return absl::InvalidArgumentError("write needs non-empty data");
  return SubmitInternal(sqe, Kind::kWrite, nullptr, data, length, false, std::move(done));
}

absl::Status QueuePair::SubmitInternal(const uint8_t* sqe_in, Kind kind, uint8_t* read_buffer,
                                       const uint8_t* write_data, uint32_t length, bool force_in_capsule,
                                       CompletionCallback&& done) {
  if (free_cids_.empty()) {
    return absl::ResourceExhaustedError(absl::StrCat("queue ", options_.qid, " is full (", options_.depth,
                                                     " commands in flight)"));
  }
  uint16_t cid = free_cids_.back();
  free_cids_.pop_back();
  Request& r = requests_[cid];
  r.done = std::move(done);
  r.read_buffer = read_buffer;
  r.write_data = write_data;
  r.length = length;
  r.transferred = 0;
  r.submit_ns = options_.command_timeout_ns > 0 ? NowNs() : 0;
  r.opcode = sqe_in[0];
  r.kind = kind;
  r.in_capsule = kind == Kind::kWrite && (force_in_capsule || length <= options_.max_in_capsule);
  r.busy = true;

  uint8_t sqe[kSqeSize];
  std::memcpy(sqe, sqe_in, kSqeSize);
  Store16(sqe + 2, cid);
  CommandBuilder::SetSgl(sqe, r.in_capsule, length);
  sqe[1] = static_cast<uint8_t>((sqe[1] & 0x3f) | 0x40);  // PSDT 01b: SGLs for data transfer
  tcp::AppendCapsuleCmd(out_, params_, sqe, r.in_capsule ? write_data : nullptr, r.in_capsule ? length : 0);
  ScheduleFlush();
  return absl::OkStatus();
}

void QueuePair::Complete(uint16_t cid, const Completion& completion) {
  Request& r = requests_[cid];
  CompletionCallback done = std::move(r.done);
  r.done = nullptr;
  r.busy = false;
  free_cids_.push_back(cid);
  ++completed_;
  if (done) std::move(done)(completion);
}

void QueuePair::Close(const absl::Status& reason) { Fail(reason, nullptr, false); }

void QueuePair::Fail(const absl::Status& reason, const tcp::ProtocolError* error, bool notify) {
  if (state_ == State::kClosed) return;
  bool was_ready = state_ == State::kReady;
  if (state_ != State::kIdle) {
    if (notify) spdlog::warn("NVMe/TCP queue {} to {}: {}", options_.qid, trid_.Describe(), StatusMessage(reason));
  }
  state_ = State::kClosed;
  close_reason_ = reason.ok() ? absl::CancelledError("closed") : reason;
  if (fd_ >= 0) {
    if (error != nullptr) {
      // Best effort: whatever is queued, then the termination request; no retry on a full socket.
      tcp::AppendTermReq(out_, false, *error);
      while (out_sent_ < out_.size()) {
        ssize_t n = send(fd_, out_.data() + out_sent_, out_.size() - out_sent_, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n <= 0) break;
        out_sent_ += static_cast<size_t>(n);
      }
    }
    if (watching_) reactor_.UnwatchFd(fd_);
    watching_ = false;
    close(fd_);
    fd_ = -1;
  }
  out_.clear();
  out_sent_ = 0;
  if (connect_timer_ != 0) reactor_.CancelTimer(connect_timer_);
  if (timeout_timer_ != 0) reactor_.CancelTimer(timeout_timer_);
  connect_timer_ = timeout_timer_ = 0;

  // Outstanding commands: collect first, so callbacks that submit (and are refused) see a consistent state.
  std::vector<CompletionCallback> callbacks;
  for (size_t cid = 0; cid < requests_.size(); ++cid) {
    Request& r = requests_[cid];
    if (!r.busy) continue;
    r.busy = false;
    callbacks.push_back(std::move(r.done));
    r.done = nullptr;
    free_cids_.push_back(static_cast<uint16_t>(cid));
  }
  Completion failed;
  failed.transport = close_reason_;
  failed.status = Generic(sc::kAbortedSqDeletion, false);
  for (auto& cb : callbacks) {
    if (cb) std::move(cb)(failed);
  }
  FinishConnect(close_reason_);
  if (was_ready && notify && failure_callback_) {
    reactor_.Defer([cb = std::move(failure_callback_), reason = close_reason_]() mutable { std::move(cb)(reason); });
    failure_callback_ = nullptr;
  }
}

}  // namespace smad::nvme::host
