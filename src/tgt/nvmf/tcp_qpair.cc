#include "tgt/nvmf/tcp_qpair.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/status.h"
#include "spdlog/spdlog.h"
#include "tgt/nvmf/controller.h"
#include "tgt/nvmf/poll_group.h"
#include "tgt/nvmf/target.h"

namespace smad::tgt {
namespace {

using nvme::Generic;
using nvme::Load16;
using nvme::Load32;
using nvme::Specific;
namespace sc = nvme::sc;
namespace tcp = nvme::tcp;

constexpr size_t kReadChunk = 256 * 1024;
constexpr size_t kMaxPendingOutput = 8u << 20;  // stop reading commands while this much is unsent

// Data direction from the opcode's low two bits (NVMe): 01 host to controller, 10 controller to host.
bool HostToController(const nvme::Command& cmd) {
  uint8_t bits = cmd.opcode() == nvme::kFabricsOpcode ? cmd.fctype() & 0x3 : cmd.opcode() & 0x3;
  return bits == 0x1;
}

std::string AddressString(const sockaddr_storage& ss, std::string* port) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t p = 0;
  if (ss.ss_family == AF_INET) {
    const auto* sa = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &sa->sin_addr, host, sizeof(host));
    p = ntohs(sa->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* sa = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &sa->sin6_addr, host, sizeof(host));
    p = ntohs(sa->sin6_port);
  }
  if (port) *port = std::to_string(p);
  return host;
}

}  // namespace

TcpQpair::TcpQpair(NvmfTarget& target, PollGroup& group, Reactor& control, int fd, const TransportOptions& options)
    : target_(target),
      group_(group),
      reactor_(group.reactor()),
      control_(control),
      fd_(fd),
      options_(options),
      reader_(tcp::PduReader::Role::kController, std::max(options.in_capsule_data_size, options.max_io_size)) {}

TcpQpair::~TcpQpair() {
  if (fd_ >= 0) ::close(fd_);
}

void TcpQpair::Start() {
  self_ = shared_from_this();
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    std::string port;
    peer_ = AddressString(ss, &port) + ":" + port;
  }
  len = sizeof(ss);
  if (getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    local_traddr_ = AddressString(ss, &local_trsvcid_);
  }
  ++group_.stats().current_unassociated_qpairs;
  absl::Status watched = reactor_.WatchFd(fd_, EPOLLIN | EPOLLRDHUP, [this](uint32_t events) {
    auto guard = shared_from_this();
    if (events & EPOLLOUT) OnWritable();
    if (!closed_ && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) OnReadable();
  });
  if (!watched.ok()) Close("cannot watch socket: " + StatusMessage(watched));
}

void TcpQpair::Close(const std::string& reason) {
  if (closed_) return;
  closed_ = true;
  spdlog::debug("NVMe/TCP qpair {} qid {} from {} closed: {}", cntlid_, qid_, peer_, reason);
  reactor_.UnwatchFd(fd_);
  ::close(fd_);
  fd_ = -1;
  PollGroupStats& stats = group_.stats();
  if (!connected_) {
    --stats.current_unassociated_qpairs;
  } else if (qid_ == 0) {
    --stats.current_admin_qpairs;
  } else {
    --stats.current_io_qpairs;
  }
  if (connected_) {
    uint32_t subsystem_id = subsystem_id_;
    uint16_t cntlid = cntlid_;
    uint16_t qid = qid_;
    NvmfTarget* target = &target_;
    if (controller_) controller_->OnAdminClosed();
    control_.Post([target, subsystem_id, cntlid, qid] { target->QpairGone(subsystem_id, cntlid, qid); });
  }
  controller_.reset();
  // Requests that are not executing in a bdev are done for.
  for (auto& req : requests_) {
    if (req->state == Request::State::kNeedData) FreeRequest(*req);
  }
  MaybeDestroy();
}

void TcpQpair::MaybeDestroy() {
  if (closed_ && bdev_ios_ == 0) self_.reset();  // may delete this: nothing may follow
}

void TcpQpair::OnReadable() {
  for (int round = 0; round < 8 && !closed_; ++round) {
    size_t available = 0;
    uint8_t* space = reader_.WritableSpace(kReadChunk, &available);
    ssize_t n = recv(fd_, space, available, MSG_DONTWAIT);
    if (n == 0) return Close("connection closed by host");
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      return Close("recv failed: " + ErrnoString(errno));
    }
    reader_.Commit(static_cast<size_t>(n));
    tcp::Pdu pdu;
    tcp::ProtocolError error;
    while (!closed_ && !reading_paused_) {
      auto result = reader_.Next(&pdu, &error);
      if (result == tcp::PduReader::Result::kNeedMore) break;
      if (result == tcp::PduReader::Result::kError) return Fatal(error);
      HandlePdu(pdu);
    }
    if (reading_paused_ || static_cast<size_t>(n) < available) break;
  }
}

void TcpQpair::OnWritable() { Flush(); }

void TcpQpair::ScheduleFlush() {
  if (flush_scheduled_ || closed_) return;
  flush_scheduled_ = true;
  reactor_.Defer([weak = weak_from_this()] {
    if (auto self = weak.lock()) {
      self->flush_scheduled_ = false;
      self->Flush();
    }
  });
}

void TcpQpair::Flush() {
  if (closed_) return;
  while (out_sent_ < out_.size()) {
    ssize_t n = send(fd_, out_.data() + out_sent_, out_.size() - out_sent_, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      return Close("send failed: " + ErrnoString(errno));
    }
    out_sent_ += static_cast<size_t>(n);
  }
  bool pending = out_sent_ < out_.size();
  if (!pending) {
    out_.clear();
    out_sent_ = 0;
  }
  bool pause = out_.size() - out_sent_ > kMaxPendingOutput;
  if (pending != want_write_ || pause != reading_paused_) {
    want_write_ = pending;
    bool was_paused = reading_paused_;
    reading_paused_ = pause;
    uint32_t events = (pause ? 0u : uint32_t{EPOLLIN | EPOLLRDHUP}) | (pending ? uint32_t{EPOLLOUT} : 0u);
    (void)reactor_.ModifyFd(fd_, events);
    // Commands already buffered while paused are parsed once output drained.
    if (was_paused && !pause) reactor_.Defer([weak = weak_from_this()] {
      if (auto self = weak.lock(); self && !self->closed_) self->OnReadable();
    });
  }
}

void TcpQpair::Fatal(const tcp::ProtocolError& error) {
  spdlog::warn("NVMe/TCP protocol error from {}: {} (FES {}, FEI {})", peer_, error.message, error.fes, error.fei);
  tcp::AppendTermReq(out_, /*from_controller=*/true, error);
  Flush();
  Close("protocol error: " + error.message);
}

void TcpQpair::HandlePdu(const tcp::Pdu& pdu) {
  switch (pdu.type) {
    case tcp::kIcReq: return HandleIcReq(pdu);
    case tcp::kCapsuleCmd: return HandleCapsule(pdu);
    case tcp::kH2CData: return HandleH2CData(pdu);
    case tcp::kH2CTermReq: {
      tcp::TermFields term = tcp::ParseTerm(pdu);
      return Close("host terminated the connection (FES " + std::to_string(term.fes) + ")");
    }
    default: {
      tcp::ProtocolError error;
      error.fes = tcp::kFesInvalidHeaderField;
      error.message = std::string("unexpected PDU ") + tcp::PduTypeName(pdu.type);
      error.header.assign(pdu.header, pdu.header + std::min<size_t>(pdu.hlen, tcp::kMaxTermReqData));
      return Fatal(error);
    }
  }
}

void TcpQpair::HandleIcReq(const tcp::Pdu& pdu) {
  tcp::IcFields ic = tcp::ParseIc(pdu);
  tcp::ProtocolError error;
  error.header.assign(pdu.header, pdu.header + std::min<size_t>(pdu.hlen, tcp::kMaxTermReqData));
  if (ic.pfv != 0) {
    error.fei = 8;
    error.message = "unsupported PDU format version " + std::to_string(ic.pfv);
    return Fatal(error);
  }
  if (ic.pda != 0) {
    // Host PDU data alignment other than none is not implemented: refuse it explicitly.
    error.fes = tcp::kFesUnsupportedParameter;
    error.fei = 10;
    error.message = "host PDU data alignment (HPDA) " + std::to_string(ic.pda) + " is not supported";
    return Fatal(error);
  }
  params_.hdgst = ic.hdgst;
  params_.ddgst = ic.ddgst;
  params_.cpda = 0;
  params_.maxh2cdata = options_.max_io_size;
  params_.max_in_capsule = options_.in_capsule_data_size;
  tcp::AppendIcResp(out_, 0, ic.hdgst, ic.ddgst, params_.maxh2cdata);
  reader_.SetParams(params_);
  ic_done_ = true;
  ScheduleFlush();
}

Request* TcpQpair::AllocRequest(uint16_t cid) {
  if (cid_in_use_[cid >> 6] >> (cid & 63) & 1) return nullptr;
  if (free_slots_.empty()) {
    size_t limit = std::max<size_t>(queue_size_, 32) + 8;  // admin AERs and a margin before Connect
    if (requests_.size() >= limit) return nullptr;
    auto req = std::make_unique<Request>();
    req->slot = static_cast<uint16_t>(requests_.size());
    req->qpair = this;
    free_slots_.push_back(req->slot);
    requests_.push_back(std::move(req));
  }
  Request& req = *requests_[free_slots_.back()];
  free_slots_.pop_back();
  cid_in_use_[cid >> 6] |= uint64_t{1} << (cid & 63);
  req.state = Request::State::kExecuting;
  req.received = 0;
  req.transfer_length = 0;
  req.pending = 0;
  req.first_error = 0;
  req.data.clear();
  return &req;
}

void TcpQpair::FreeRequest(Request& req) {
  if (req.state == Request::State::kFree) return;
  uint16_t cid = req.cmd.cid();
  cid_in_use_[cid >> 6] &= ~(uint64_t{1} << (cid & 63));
  req.state = Request::State::kFree;
  if (req.data.capacity() > options_.max_io_size) IoBuffer().swap(req.data);
  free_slots_.push_back(req.slot);
}

void TcpQpair::HandleCapsule(const tcp::Pdu& pdu) {
  nvme::Command cmd;
  std::memcpy(cmd.raw, pdu.header + tcp::kCommonHeaderSize, nvme::kSqeSize);
  if (qid_ == 0 && controller_ != nullptr && (cid_in_use_[cmd.cid() >> 6] >> (cmd.cid() & 63) & 1)) {
    // SPDK's host, when it detaches, completes its outstanding Asynchronous Event Requests locally and
    // reuses their command IDs for the shutdown sequence (Property Get/Set CC; see the identify and
    // discover captures in tests/data/nvme-tcp). A command that reuses the CID of an outstanding AER
    // retires that AER, which the host gave up, instead of failing the connection.
    controller_->RetireAer(cmd.cid());
  }
  Request* req = AllocRequest(cmd.cid());
  if (req == nullptr) {
    tcp::ProtocolError error;
    error.fes = tcp::kFesInvalidHeaderField;
    error.fei = tcp::kCommonHeaderSize + 2;
    error.message = "command id " + std::to_string(cmd.cid()) + " in use or queue full";
    error.header.assign(pdu.header, pdu.header + std::min<size_t>(pdu.hlen, tcp::kMaxTermReqData));
    return Fatal(error);
  }
  if (queue_size_ != 0) sqhd_ = (sqhd_ + 1) % queue_size_;
  req->cmd = cmd;
  req->host_to_controller = HostToController(cmd);
  uint32_t length = cmd.sgl_length();
  uint8_t sgl_type = cmd.sgl_type();
  if (pdu.data_length > 0) {
    // In-capsule data: an offset data block descriptor covering exactly the data sent.
    if (sgl_type != nvme::kSglDataBlockOffset || !req->host_to_controller) {
      return Complete(*req, Generic(sc::kSglDescriptorTypeInvalid));
    }
    if (cmd.sgl_address() != 0) return Complete(*req, Generic(sc::kSglOffsetInvalid));
    if (length != pdu.data_length) return Complete(*req, Generic(sc::kDataSglLengthInvalid));
    if (pdu.data_digest_error) return Complete(*req, Generic(sc::kDataTransferError, false));
    req->data.assign(pdu.data, pdu.data + pdu.data_length);
    req->transfer_length = length;
    req->received = length;
    return Execute(*req);
  }
  if (length > 0) {
    if (sgl_type != nvme::kSglTransportDataBlock) {
      return Complete(*req, Generic(sc::kSglDescriptorTypeInvalid));
    }
    if (length > options_.max_io_size) return Complete(*req, Generic(sc::kDataSglLengthInvalid));
    req->transfer_length = length;
    if (req->host_to_controller) {
      // Ask the host for the data: one R2T for the whole transfer; the transfer tag is the slot.
      req->data.resize(length);
      req->state = Request::State::kNeedData;
      tcp::AppendR2T(out_, params_, cmd.cid(), req->slot, 0, length);
      ScheduleFlush();
      return;
    }
  }
  Execute(*req);
}

void TcpQpair::HandleH2CData(const tcp::Pdu& pdu) {
  tcp::DataFields f = tcp::ParseData(pdu);
  tcp::ProtocolError error;
  error.header.assign(pdu.header, pdu.header + std::min<size_t>(pdu.hlen, tcp::kMaxTermReqData));
  if (f.ttag >= requests_.size() || requests_[f.ttag]->state != Request::State::kNeedData) {
    error.fei = 10;
    error.message = "H2CData for an unknown transfer tag";
    return Fatal(error);
  }
  Request& req = *requests_[f.ttag];
  if (f.cccid != req.cmd.cid()) {
    error.fei = 8;
    error.message = "H2CData command id does not match its transfer tag";
    return Fatal(error);
  }
  if (f.offset != req.received || f.length != pdu.data_length ||
      uint64_t{f.offset} + f.length > req.transfer_length) {
    error.fes = tcp::kFesDataOutOfRange;
    error.message = "H2CData out of the requested range";
    return Fatal(error);
  }
  std::memcpy(req.data.data() + f.offset, pdu.data, f.length);
  req.received += f.length;
  if (pdu.data_digest_error) {
    req.first_error = -EIO;
  }
  if (req.received == req.transfer_length) {
    req.state = Request::State::kExecuting;
    if (req.first_error != 0) return Complete(req, Generic(sc::kDataTransferError, false));
    Execute(req);
  }
}

void TcpQpair::Execute(Request& req) {
  const nvme::Command& cmd = req.cmd;
  bool is_connect = cmd.opcode() == nvme::kFabricsOpcode && cmd.fctype() == nvme::fabrics::kConnect;
  if (!connected_) {
    if (!is_connect || connecting_) return Complete(req, Generic(sc::kCommandSequenceError));
    return ExecuteConnect(req);
  }
  if (is_connect) return Complete(req, Generic(sc::kCommandSequenceError));
  if (qid_ == 0) return controller_->HandleAdmin(*this, req);
  ExecuteIo(req);
}

void TcpQpair::ExecuteConnect(Request& req) {
  const uint8_t* sqe = req.cmd.raw;
  uint16_t recfmt = Load16(sqe + nvme::connect_cmd::kRecfmt);
  uint16_t qid = Load16(sqe + nvme::connect_cmd::kQid);
  uint32_t sqsize = Load16(sqe + nvme::connect_cmd::kSqsize) + 1u;
  uint8_t cattr = sqe[nvme::connect_cmd::kCattr];
  uint32_t kato = Load32(sqe + nvme::connect_cmd::kKato);
  // Invalid Parameters carries the offending field: IATTR 0 (command) or 1 (data), IPO its offset.
  auto invalid = [this, &req](uint8_t iattr, uint16_t ipo) {
    Complete(req, Specific(nvme::sc_specific::kConnectInvalidParameters), iattr | uint32_t{ipo} << 16);
  };
  if (recfmt != 0) return Complete(req, Specific(nvme::sc_specific::kConnectIncompatibleFormat));
  uint32_t limit = qid == 0 ? options_.max_aq_depth : options_.max_queue_depth;
  if (sqsize < 2 || sqsize > limit) return invalid(0, nvme::connect_cmd::kSqsize);
  if (req.data.size() != nvme::kConnectDataSize) return invalid(0, 32);
  ConnectRequest connect;
  std::memcpy(connect.hostid.data(), req.data.data() + nvme::connect_data::kHostId, 16);
  connect.cntlid = Load16(req.data.data() + nvme::connect_data::kCntlid);
  connect.subnqn = nvme::GetPadded(req.data.data() + nvme::connect_data::kSubnqn, 256);
  connect.hostnqn = nvme::GetPadded(req.data.data() + nvme::connect_data::kHostnqn, 256);
  connect.qid = qid;
  connect.kato_ms = kato;
  connect.local_traddr = local_traddr_;
  connect.local_trsvcid = local_trsvcid_;
  connect.peer = peer_;
  connecting_ = true;
  ++bdev_ios_;  // the answer refers to `req`
  std::weak_ptr<TcpQpair> weak = weak_from_this();
  Request* request = &req;
  Reactor& reactor = reactor_;
  NvmfTarget* target = &target_;
  control_.Post([target, connect, weak, request, &reactor, sqsize, cattr] {
    ConnectResult result = target->Connect(connect, reactor, weak);
    reactor.Post([weak, request, result = std::move(result), sqsize, cattr]() mutable {
      auto self = weak.lock();
      if (!self) return;
      --self->bdev_ios_;
      self->connecting_ = false;
      if (self->closed_) {
        // The connection closed meanwhile; tell the registry to forget what it just recorded.
        if (result.status.ok()) {
          NvmfTarget* t = &self->target_;
          uint32_t sid = result.subsystem_id;
          uint16_t cntlid = result.cntlid;
          uint16_t qid = Load16(request->cmd.raw + nvme::connect_cmd::kQid);
          self->control_.Post([t, sid, cntlid, qid] { t->QpairGone(sid, cntlid, qid); });
        }
        self->FreeRequest(*request);
        self->MaybeDestroy();
        return;
      }
      if (!result.status.ok()) return self->Complete(*request, result.status, result.cdw0);
      self->qid_ = Load16(request->cmd.raw + nvme::connect_cmd::kQid);
      self->cntlid_ = result.cntlid;
      self->subsystem_id_ = result.subsystem_id;
      self->queue_size_ = sqsize;
      self->sq_flow_disabled_ = cattr & 0x4;
      self->sqhd_ = 1 % sqsize;
      self->connected_ = true;
      PollGroupStats& stats = self->group_.stats();
      --stats.current_unassociated_qpairs;
      if (self->qid_ == 0) {
        ++stats.admin_qpairs;
        ++stats.current_admin_qpairs;
        self->controller_ = std::move(result.controller);
        self->controller_->Start();
      } else {
        ++stats.io_qpairs;
        ++stats.current_io_qpairs;
      }
      self->Complete(*request, Generic(sc::kSuccess), result.cntlid);
    });
  });
}

void TcpQpair::ExecuteIo(Request& req) {
  if (!group_.IsActive(subsystem_id_)) {
    // The subsystem is paused for a namespace change: run the command when it resumes.
    std::weak_ptr<TcpQpair> weak = weak_from_this();
    Request* request = &req;
    group_.WhenActive(subsystem_id_, [weak, request] {
      auto self = weak.lock();
      if (!self) return;
      if (self->closed_) {
        self->FreeRequest(*request);
        return;
      }
      self->ExecuteIo(*request);
    });
    return;
  }
  const nvme::Command& cmd = req.cmd;
  uint8_t opcode = cmd.opcode();
  if (opcode != nvme::io::kRead && opcode != nvme::io::kWrite && opcode != nvme::io::kFlush &&
      opcode != nvme::io::kWriteZeroes && opcode != nvme::io::kDatasetManagement) {
    return Complete(req, Generic(sc::kInvalidOpcode));
  }
  const PollGroup::NsChannel* ns = group_.FindNamespace(subsystem_id_, cmd.nsid());
  if (ns == nullptr) {
    if (opcode == nvme::io::kFlush && cmd.nsid() == 0xffffffff) return Complete(req, Generic(sc::kSuccess));
    return Complete(req, Generic(sc::kInvalidNamespaceOrFormat));
  }
  uint32_t block_size = ns->bdev->block_size();
  uint64_t num_blocks = ns->bdev->num_blocks();
  if (opcode == nvme::io::kRead || opcode == nvme::io::kWrite || opcode == nvme::io::kWriteZeroes) {
    uint64_t slba = cmd.slba();
    uint64_t nlb = cmd.nlb();
    if (slba >= num_blocks || nlb > num_blocks - slba) return Complete(req, Generic(sc::kLbaOutOfRange));
    if (opcode != nvme::io::kWriteZeroes) {
      uint64_t bytes = nlb * block_size;
      if (bytes != req.transfer_length) return Complete(req, Generic(sc::kDataSglLengthInvalid));
      if (opcode == nvme::io::kRead) req.data.resize(bytes);
    }
  } else if (opcode == nvme::io::kDatasetManagement) {
    bool deallocate = cmd.cdw(11) & 0x4;
    uint32_t ranges = (cmd.cdw(10) & 0xff) + 1;
    if (req.data.size() < ranges * 16u) return Complete(req, Generic(sc::kDataSglLengthInvalid));
    if (!deallocate) return Complete(req, Generic(sc::kSuccess));
    for (uint32_t i = 0; i < ranges; ++i) {
      uint64_t nlb = Load32(req.data.data() + 16 * i + 4);
      uint64_t slba = nvme::Load64(req.data.data() + 16 * i + 8);
      if (slba >= num_blocks || nlb > num_blocks - slba) return Complete(req, Generic(sc::kLbaOutOfRange));
    }
  }
  group_.IoStarted(subsystem_id_);
  SubmitBdevIo(req);
}

void TcpQpair::SubmitBdevIo(Request& req) {
  const nvme::Command& cmd = req.cmd;
  const PollGroup::NsChannel* ns = group_.FindNamespace(subsystem_id_, cmd.nsid());
  BdevChannel* channel = ns->channel;
  auto submit = [&](IoType type, uint64_t slba, uint64_t nlb, const iovec* iov) {
    int rc = channel->Submit(type, slba, nlb, iov, iov ? 1 : 0, &TcpQpair::OnBdevDone, &req);
    if (rc == 0) {
      ++req.pending;
      ++bdev_ios_;
    } else if (req.first_error == 0) {
      req.first_error = rc;
    }
  };
  switch (cmd.opcode()) {
    case nvme::io::kRead:
    case nvme::io::kWrite:
      req.iov = {req.data.data(), req.data.size()};
      submit(cmd.opcode() == nvme::io::kRead ? IoType::kRead : IoType::kWrite, cmd.slba(), cmd.nlb(), &req.iov);
      break;
    case nvme::io::kFlush:
      submit(IoType::kFlush, 0, 0, nullptr);
      break;
    case nvme::io::kWriteZeroes:
      submit(IoType::kWriteZeroes, cmd.slba(), cmd.nlb(), nullptr);
      break;
    case nvme::io::kDatasetManagement: {
      uint32_t ranges = (cmd.cdw(10) & 0xff) + 1;
      for (uint32_t i = 0; i < ranges; ++i) {
        uint64_t nlb = Load32(req.data.data() + 16 * i + 4);
        uint64_t slba = nvme::Load64(req.data.data() + 16 * i + 8);
        if (nlb > 0) submit(IoType::kUnmap, slba, nlb, nullptr);
      }
      break;
    }
  }
  if (req.pending == 0) FinishBdevIo(req, req.first_error);
}

void TcpQpair::OnBdevDone(void* arg, int status) {
  auto* req = static_cast<Request*>(arg);
  TcpQpair* self = req->qpair;
  --self->bdev_ios_;
  if (status != 0 && req->first_error == 0) req->first_error = status;
  if (--req->pending > 0) return;
  auto guard = self->shared_from_this();
  self->FinishBdevIo(*req, req->first_error);
}

void TcpQpair::FinishBdevIo(Request& req, int status) {
  group_.IoFinished(subsystem_id_);
  if (closed_) {
    FreeRequest(req);
    MaybeDestroy();
    return;
  }
  nvme::Status result = Generic(sc::kSuccess);
  if (status == -EINVAL) {
    result = Generic(sc::kLbaOutOfRange);
  } else if (status == -ENOTSUP) {
    result = Generic(sc::kInvalidOpcode);
  } else if (status != 0) {
    result = nvme::Status{nvme::kSctMediaError, 0x81, false};  // unrecovered read error / write fault
    if (req.cmd.opcode() == nvme::io::kWrite) result.sc = 0x80;
  }
  Complete(req, result);
}

void TcpQpair::Complete(Request& req, nvme::Status status, uint64_t value) {
  if (closed_) {
    FreeRequest(req);
    return;
  }
  // nvme::Generic() sets DNR by default, also for kSuccess; a successful completion's status field must be
  // all zeroes (hosts such as Linux treat any non-zero status word, DNR alone included, as an error).
  if (status.ok()) status.dnr = false;
  uint8_t cqe[nvme::kCqeSize] = {};
  nvme::Store32(cqe, static_cast<uint32_t>(value));
  nvme::Store32(cqe + 4, static_cast<uint32_t>(value >> 32));
  nvme::Store16(cqe + 8, static_cast<uint16_t>(sqhd_));
  nvme::Store16(cqe + 10, qid_);
  nvme::Store16(cqe + 12, req.cmd.cid());
  nvme::Store16(cqe + 14, status.Encode());
  bool send_data = status.ok() && !req.host_to_controller && req.transfer_length > 0 && !req.data.empty();
  if (send_data) {
    uint32_t length = std::min<uint32_t>(req.transfer_length, static_cast<uint32_t>(req.data.size()));
    bool success_flag = options_.c2h_success && sq_flow_disabled_;
    tcp::AppendC2HData(out_, params_, req.cmd.cid(), 0, req.data.data(), length, true, success_flag);
    if (!success_flag) tcp::AppendCapsuleResp(out_, params_, cqe);
  } else {
    tcp::AppendCapsuleResp(out_, params_, cqe);
  }
  FreeRequest(req);
  ScheduleFlush();
}

}  // namespace smad::tgt
