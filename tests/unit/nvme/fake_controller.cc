#include "unit/nvme/fake_controller.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace smad::nvme::testing {
namespace {

constexpr uint16_t kCntlid = 1;

std::vector<uint8_t> Zeroed(size_t n) { return std::vector<uint8_t>(n, 0); }

}  // namespace

// --- Connection ---------------------------------------------------------------------------------------

void FakeController::Connection::SendRaw(const uint8_t* bytes, size_t n) {
  std::lock_guard<std::mutex> lock(send_mu_);
  size_t sent = 0;
  while (sent < n && fd_ >= 0) {
    ssize_t rc = send(fd_, bytes + sent, n - sent, MSG_NOSIGNAL);
    if (rc <= 0) return;
    sent += static_cast<size_t>(rc);
  }
}

void FakeController::Connection::Send(const std::vector<uint8_t>& bytes) { SendRaw(bytes.data(), bytes.size()); }

void FakeController::Connection::SendResponse(uint16_t cid, Status status, uint32_t cdw0, uint32_t cdw1) {
  uint8_t cqe[kCqeSize] = {};
  Store32(cqe, cdw0);
  Store32(cqe + 4, cdw1);
  Store16(cqe + 10, qid_);
  Store16(cqe + 12, cid);
  Store16(cqe + 14, status.Encode());
  std::vector<uint8_t> out;
  tcp::AppendCapsuleResp(out, params_, cqe);
  Send(out);
}

void FakeController::Connection::SendC2HData(uint16_t cid, uint32_t offset, const uint8_t* data, uint32_t length,
                                             bool last, bool success) {
  std::vector<uint8_t> out;
  tcp::AppendC2HData(out, params_, cid, offset, data, length, last, success);
  Send(out);
}

void FakeController::Connection::SendR2T(uint16_t cid, uint16_t ttag, uint32_t offset, uint32_t length) {
  std::vector<uint8_t> out;
  tcp::AppendR2T(out, params_, cid, ttag, offset, length);
  Send(out);
}

void FakeController::Connection::SendTermReq(uint16_t fes, uint32_t fei) {
  tcp::ProtocolError error;
  error.fes = fes;
  error.fei = fei;
  error.message = "fake controller";
  std::vector<uint8_t> out;
  tcp::AppendTermReq(out, true, error);
  Send(out);
}

void FakeController::Connection::Close() {
  if (fd_ >= 0) shutdown(fd_, SHUT_RDWR);
}

// --- FakeController ------------------------------------------------------------------------------------

FakeController::FakeController(Config config) : config_(std::move(config)) {
  media_.assign(static_cast<size_t>(config_.block_size) * config_.blocks, 0);
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(listen_fd_, 16) != 0) {
    std::abort();
  }
  socklen_t len = sizeof(addr);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

FakeController::~FakeController() {
  stopping_ = true;
  shutdown(listen_fd_, SHUT_RDWR);
  accept_thread_.join();
  close(listen_fd_);
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : conns_) c->Close();
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
}

void FakeController::SetHook(CommandHook hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hook_ = std::move(hook);
}

std::string FakeController::last_hostnqn() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_hostnqn_;
}

std::vector<uint8_t> FakeController::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return media_;
}

void FakeController::Fill(uint64_t offset, const std::vector<uint8_t>& bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  std::copy(bytes.begin(), bytes.end(), media_.begin() + static_cast<ptrdiff_t>(offset));
}

void FakeController::AcceptLoop() {
  while (!stopping_) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (stopping_) return;
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto conn = std::make_shared<Connection>();
    conn->fd_ = fd;
    ++connections_;
    std::lock_guard<std::mutex> lock(mu_);
    conns_.push_back(conn);
    threads_.emplace_back([this, conn] { Serve(conn); });
  }
}

void FakeController::Serve(std::shared_ptr<Connection> conn) {
  tcp::PduReader reader(tcp::PduReader::Role::kController, 1u << 20);
  bool open = true;
  while (open && !stopping_) {
    size_t available = 0;
    uint8_t* space = reader.WritableSpace(65536, &available);
    ssize_t n = recv(conn->fd_, space, available, 0);
    if (n <= 0) break;
    reader.Commit(static_cast<size_t>(n));
    tcp::Pdu pdu;
    tcp::ProtocolError error;
    while (open) {
      tcp::PduReader::Result result = reader.Next(&pdu, &error);
      if (result == tcp::PduReader::Result::kNeedMore) break;
      if (result == tcp::PduReader::Result::kError) {
        conn->SendTermReq(error.fes, error.fei);
        open = false;
        break;
      }
      switch (pdu.type) {
        case tcp::kIcReq: {
          tcp::IcFields ic = tcp::ParseIc(pdu);
          conn->params_.hdgst = ic.hdgst && config_.allow_hdgst;
          conn->params_.ddgst = ic.ddgst && config_.allow_ddgst;
          conn->params_.cpda = config_.cpda;
          conn->params_.maxh2cdata = config_.maxh2cdata;
          conn->params_.max_in_capsule = 1u << 20;
          hdgst_ = conn->params_.hdgst;
          ddgst_ = conn->params_.ddgst;
          std::vector<uint8_t> out;
          tcp::AppendIcResp(out, config_.cpda, conn->params_.hdgst, conn->params_.ddgst, config_.maxh2cdata);
          conn->Send(out);
          reader.SetParams(conn->params_);
          break;
        }
        case tcp::kCapsuleCmd: {
          Command cmd;
          std::memcpy(cmd.raw, pdu.header + tcp::kCommonHeaderSize, kSqeSize);
          HandleCommand(*conn, cmd, pdu.data, pdu.data_length);
          break;
        }
        case tcp::kH2CData:
          ++h2c_pdus_;
          HandleH2CData(*conn, pdu);
          break;
        case tcp::kH2CTermReq:
          ++term_reqs_;
          open = false;
          break;
        default:
          break;
      }
    }
  }
  shutdown(conn->fd_, SHUT_RDWR);
  std::lock_guard<std::mutex> lock(conn->send_mu_);
  close(conn->fd_);
  conn->fd_ = -1;
}

void FakeController::HandleCommand(Connection& conn, const Command& cmd, const uint8_t* data, uint32_t length) {
  CommandHook hook;
  {
    std::lock_guard<std::mutex> lock(mu_);
    hook = hook_;
  }
  if (hook && hook(conn, cmd, data, length)) return;

  if (cmd.opcode() == kFabricsOpcode) {
    switch (cmd.fctype()) {
      case fabrics::kConnect: {
        uint16_t qid = Load16(cmd.raw + connect_cmd::kQid);
        last_sqsize_ = Load16(cmd.raw + connect_cmd::kSqsize);
        if (qid == 0) last_kato_ = Load32(cmd.raw + connect_cmd::kKato);
        conn.qid_ = qid;
        if (length != kConnectDataSize) {
          conn.SendResponse(cmd.cid(), Generic(sc::kDataSglLengthInvalid));
          return;
        }
        {
          std::lock_guard<std::mutex> lock(mu_);
          last_hostnqn_ = GetPadded(data + connect_data::kHostnqn, 256);
        }
        if (config_.connect_status.has_value()) {
          conn.SendResponse(cmd.cid(), *config_.connect_status);
          return;
        }
        std::string subnqn = GetPadded(data + connect_data::kSubnqn, 256);
        if (subnqn != config_.subnqn) {
          conn.SendResponse(cmd.cid(), Specific(sc_specific::kConnectInvalidParameters), (1u << 16) | 256);
          return;
        }
        if (qid != 0 && Load16(data + connect_data::kCntlid) != kCntlid) {
          conn.SendResponse(cmd.cid(), Specific(sc_specific::kConnectInvalidParameters), (1u << 16) | 16);
          return;
        }
        conn.SendResponse(cmd.cid(), Status{}, kCntlid);
        return;
      }
      case fabrics::kPropertyGet: {
        uint32_t offset = Load32(cmd.raw + property_cmd::kOffset);
        uint64_t value = 0;
        std::lock_guard<std::mutex> lock(mu_);
        switch (offset) {
          case prop::kCap: value = 127 | (1ull << 16) | (2ull << 24) | (1ull << 37); break;  // MQES 127, TO 1 s
          case prop::kVs: value = kVersion2_0; break;
          case prop::kCc: value = cc_; break;
          case prop::kCsts:
            value = (cc_ & kCcEnable) ? kCstsReady : 0;
            if (((cc_ >> kCcShnShift) & 3) != 0) value |= 2u << kCstsShstShift;
            break;
          default: break;
        }
        conn.SendResponse(cmd.cid(), Status{}, static_cast<uint32_t>(value), static_cast<uint32_t>(value >> 32));
        return;
      }
      case fabrics::kPropertySet: {
        uint32_t offset = Load32(cmd.raw + property_cmd::kOffset);
        if (offset == prop::kCc) {
          std::lock_guard<std::mutex> lock(mu_);
          cc_ = static_cast<uint32_t>(Load64(cmd.raw + property_cmd::kValue));
          if (((cc_ >> kCcShnShift) & 3) != 0) shutdown_seen_ = true;
        }
        conn.SendResponse(cmd.cid(), Status{});
        return;
      }
      default:
        conn.SendResponse(cmd.cid(), Generic(sc::kInvalidOpcode));
        return;
    }
  }
  if (conn.qid_ == 0) {
    HandleAdmin(conn, cmd);
  } else if (cmd.opcode() == io::kRead) {
    HandleRead(conn, cmd);
  } else if (cmd.opcode() == io::kWrite) {
    HandleWrite(conn, cmd, data, length);
  } else if (cmd.opcode() == io::kFlush) {
    conn.SendResponse(cmd.cid(), Status{});
  } else {
    conn.SendResponse(cmd.cid(), Generic(sc::kInvalidOpcode));
  }
}

void FakeController::SendData(Connection& conn, uint16_t cid, const std::vector<uint8_t>& data, uint32_t length) {
  length = std::min<uint32_t>(length, static_cast<uint32_t>(data.size()));
  for (uint32_t offset = 0; offset < length;) {
    uint32_t chunk = std::min(config_.c2h_chunk, length - offset);
    bool last = offset + chunk == length;
    conn.SendC2HData(cid, offset, data.data() + offset, chunk, last, last && config_.c2h_success);
    offset += chunk;
  }
  if (!config_.c2h_success || length == 0) conn.SendResponse(cid, Status{});
}

void FakeController::HandleAdmin(Connection& conn, const Command& cmd) {
  switch (cmd.opcode()) {
    case admin::kIdentify: {
      uint8_t cns = static_cast<uint8_t>(cmd.cdw(10) & 0xff);
      std::vector<uint8_t> data;
      if (cns == cns::kController) {
        data = IdentifyController();
      } else if (cns == cns::kNamespace) {
        data = IdentifyNamespace(cmd.nsid());
      } else if (cns == cns::kActiveNamespaceList) {
        data = Zeroed(kIdentifySize);
        if (!config_.discovery && cmd.nsid() < 1) Store32(data.data(), 1);
      } else if (cns == cns::kNamespaceIdDescriptors) {
        if (cmd.nsid() != 1) return conn.SendResponse(cmd.cid(), Generic(sc::kInvalidNamespaceOrFormat));
        data = Zeroed(kIdentifySize);
        uint8_t* p = data.data();
        p[0] = kNidtNguid;
        p[1] = 16;
        for (int i = 0; i < 16; ++i) p[4 + i] = static_cast<uint8_t>(0xa0 + i);
        p += 20;
        p[0] = kNidtUuid;
        p[1] = 16;
        for (int i = 0; i < 16; ++i) p[4 + i] = static_cast<uint8_t>(0x10 + i);
      } else {
        return conn.SendResponse(cmd.cid(), Generic(sc::kInvalidField));
      }
      SendData(conn, cmd.cid(), data, cmd.sgl_length());
      return;
    }
    case admin::kSetFeatures:
      if ((cmd.cdw(10) & 0xff) == feature::kNumberOfQueues) {
        uint32_t n = config_.io_queues - 1u;
        return conn.SendResponse(cmd.cid(), Status{}, n | n << 16);
      }
      return conn.SendResponse(cmd.cid(), Specific(sc_specific::kFeatureNotChangeable));
    case admin::kKeepAlive:
      ++keep_alives_;
      return conn.SendResponse(cmd.cid(), Status{});
    case admin::kGetLogPage: {
      uint8_t lid = static_cast<uint8_t>(cmd.cdw(10) & 0xff);
      if (lid != log_page::kDiscovery || !config_.discovery) {
        return conn.SendResponse(cmd.cid(), Specific(sc_specific::kInvalidLogPage));
      }
      uint32_t length = ((cmd.cdw(10) >> 16) | (cmd.cdw(11) & 0xffff) << 16) * 4 + 4;
      uint64_t offset = cmd.cdw(12) | static_cast<uint64_t>(cmd.cdw(13)) << 32;
      std::vector<uint8_t> page = DiscoveryLogPage();
      if (offset == 0 && length >= 16) {
        std::lock_guard<std::mutex> lock(mu_);
        if (config_.bump_genctr_once && ++header_reads_ == 1) ++genctr_;  // changes under the first walk
      }
      std::vector<uint8_t> slice(length, 0);
      for (uint32_t i = 0; i < length && offset + i < page.size(); ++i) slice[i] = page[offset + i];
      if (length != cmd.sgl_length()) return conn.SendResponse(cmd.cid(), Generic(sc::kDataSglLengthInvalid));
      SendData(conn, cmd.cid(), slice, length);
      return;
    }
    default:
      conn.SendResponse(cmd.cid(), Generic(sc::kInvalidOpcode));
  }
}

std::vector<uint8_t> FakeController::IdentifyController() const {
  std::vector<uint8_t> d = Zeroed(kIdentifySize);
  uint8_t* p = d.data();
  Store16(p + id_ctrl::kVid, 0x1d1d);
  Store16(p + id_ctrl::kSsvid, 0x1d1d);
  PutPadded(p + id_ctrl::kSn, 20, "FAKE0001", 8, ' ');
  const char model[] = "smad fake controller";
  PutPadded(p + id_ctrl::kMn, 40, model, sizeof(model) - 1, ' ');
  PutPadded(p + id_ctrl::kFr, 8, "1.0", 3, ' ');
  p[id_ctrl::kMdts] = config_.mdts;
  Store16(p + id_ctrl::kCntlid, kCntlid);
  Store32(p + id_ctrl::kVer, kVersion2_0);
  p[id_ctrl::kCntrltype] = config_.discovery ? 2 : 1;
  Store16(p + id_ctrl::kKas, 1);
  p[id_ctrl::kSqes] = 0x66;
  p[id_ctrl::kCqes] = 0x44;
  Store16(p + id_ctrl::kMaxcmd, 128);
  Store32(p + id_ctrl::kNn, config_.discovery ? 0 : 4);
  Store32(p + id_ctrl::kSgls, 0x00100005);
  PutPadded(p + id_ctrl::kSubnqn, 256, config_.subnqn.data(), config_.subnqn.size(), '\0');
  Store32(p + id_ctrl::kIoccsz, config_.ioccsz);
  Store32(p + id_ctrl::kIorcsz, 1);
  return d;
}

std::vector<uint8_t> FakeController::IdentifyNamespace(uint32_t nsid) const {
  std::vector<uint8_t> d = Zeroed(kIdentifySize);
  if (nsid != 1) return d;  // inactive: all zeroes
  uint8_t* p = d.data();
  Store64(p + id_ns::kNsze, config_.blocks);
  Store64(p + id_ns::kNcap, config_.blocks);
  Store64(p + id_ns::kNuse, config_.blocks);
  p[id_ns::kNlbaf] = 0;
  p[id_ns::kFlbas] = 0;
  for (int i = 0; i < 8; ++i) p[id_ns::kEui64 + i] = static_cast<uint8_t>(0xe0 + i);
  uint8_t lbads = 0;
  while ((1u << lbads) < config_.block_size) ++lbads;
  p[id_ns::kLbaf0 + 2] = lbads;
  return d;
}

std::vector<uint8_t> FakeController::DiscoveryLogPage() {
  std::vector<uint8_t> page = Zeroed(kDiscoveryHeaderSize + kDiscoveryEntrySize * config_.discovery_records);
  std::lock_guard<std::mutex> lock(mu_);
  Store64(page.data() + disc_hdr::kGenctr, genctr_);
  Store64(page.data() + disc_hdr::kNumrec, config_.discovery_records);
  for (uint32_t i = 0; i < config_.discovery_records; ++i) {
    uint8_t* e = page.data() + kDiscoveryHeaderSize + kDiscoveryEntrySize * i;
    e[disc_entry::kTrtype] = kTrtypeTcp;
    e[disc_entry::kAdrfam] = kAdrfamIpv4;
    e[disc_entry::kSubtype] = i == 0 ? kSubtypeCurrentDiscovery : kSubtypeNvm;
    Store16(e + disc_entry::kPortid, static_cast<uint16_t>(i));
    Store16(e + disc_entry::kCntlid, 0xffff);
    Store16(e + disc_entry::kAsqsz, 128);
    std::string svc = std::to_string(4420 + i);
    PutPadded(e + disc_entry::kTrsvcid, 32, svc.data(), svc.size(), ' ');
    std::string nqn = i == 0 ? "nqn.2014-08.org.nvmexpress.discovery" : "nqn.2016-06.io.spdk:cnode" + std::to_string(i);
    PutPadded(e + disc_entry::kSubnqn, 256, nqn.data(), nqn.size(), '\0');
    PutPadded(e + disc_entry::kTraddr, 256, "127.0.0.1", 9, ' ');
  }
  return page;
}

void FakeController::HandleRead(Connection& conn, const Command& cmd) {
  uint64_t offset = cmd.slba() * config_.block_size;
  uint32_t length = cmd.nlb() * config_.block_size;
  if (cmd.slba() + cmd.nlb() > config_.blocks) return conn.SendResponse(cmd.cid(), Generic(sc::kLbaOutOfRange));
  if (cmd.sgl_length() != length) return conn.SendResponse(cmd.cid(), Generic(sc::kDataSglLengthInvalid));
  std::vector<uint8_t> data;
  {
    std::lock_guard<std::mutex> lock(mu_);
    data.assign(media_.begin() + static_cast<ptrdiff_t>(offset),
                media_.begin() + static_cast<ptrdiff_t>(offset + length));
  }
  SendData(conn, cmd.cid(), data, length);
}

void FakeController::HandleWrite(Connection& conn, const Command& cmd, const uint8_t* data, uint32_t length) {
  uint32_t expected = cmd.nlb() * config_.block_size;
  if (cmd.slba() + cmd.nlb() > config_.blocks) return conn.SendResponse(cmd.cid(), Generic(sc::kLbaOutOfRange));
  if (cmd.sgl_length() != expected) return conn.SendResponse(cmd.cid(), Generic(sc::kDataSglLengthInvalid));
  Connection::PendingWrite w;
  w.sqe.assign(cmd.raw, cmd.raw + kSqeSize);
  w.data.assign(expected, 0);
  if (cmd.sgl_type() == kSglDataBlockOffset) {
    uint32_t limit = config_.ioccsz >= 4 ? config_.ioccsz * 16 - 64 : 0;
    if (length != expected || length > limit) {
      return conn.SendResponse(cmd.cid(), Generic(sc::kDataSglLengthInvalid));
    }
    ++in_capsule_writes_;
    std::memcpy(w.data.data(), data, length);
    w.received = length;
    conn.pending_writes_[cmd.cid()] = std::move(w);
    FinishWrite(conn, cmd.cid());
    return;
  }
  if (length != 0) return conn.SendResponse(cmd.cid(), Generic(sc::kInvalidField));
  w.ttag = conn.next_ttag_++;
  w.requested = std::min(config_.r2t_chunk, expected);
  uint16_t ttag = w.ttag;
  uint32_t first = w.requested;
  conn.pending_writes_[cmd.cid()] = std::move(w);
  ++r2ts_;
  conn.SendR2T(cmd.cid(), ttag, 0, first);
}

void FakeController::HandleH2CData(Connection& conn, const tcp::Pdu& pdu) {
  uint16_t cid = Load16(pdu.header + 8);
  uint16_t ttag = Load16(pdu.header + 10);
  uint32_t offset = Load32(pdu.header + 12);
  auto it = conn.pending_writes_.find(cid);
  if (it == conn.pending_writes_.end() || it->second.ttag != ttag || offset != it->second.received ||
      offset + pdu.data_length > it->second.requested || pdu.data_length > config_.maxh2cdata) {
    conn.SendTermReq(tcp::kFesInvalidHeaderField, 8);
    conn.Close();
    return;
  }
  Connection::PendingWrite& w = it->second;
  std::memcpy(w.data.data() + offset, pdu.data, pdu.data_length);
  w.received += pdu.data_length;
  if (!(pdu.flags & tcp::kFlagLastPdu)) return;
  if (w.received != w.requested) {
    conn.SendTermReq(tcp::kFesInvalidHeaderField, 1);
    conn.Close();
    return;
  }
  if (w.received == w.data.size()) {
    FinishWrite(conn, cid);
    return;
  }
  uint32_t next = std::min<uint32_t>(config_.r2t_chunk, static_cast<uint32_t>(w.data.size()) - w.received);
  w.requested += next;
  ++r2ts_;
  conn.SendR2T(cid, w.ttag, w.received, next);
}

void FakeController::FinishWrite(Connection& conn, uint16_t cid) {
  Connection::PendingWrite w = std::move(conn.pending_writes_[cid]);
  conn.pending_writes_.erase(cid);
  Command cmd;
  std::memcpy(cmd.raw, w.sqe.data(), kSqeSize);
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::copy(w.data.begin(), w.data.end(), media_.begin() + static_cast<ptrdiff_t>(cmd.slba() * config_.block_size));
  }
  conn.SendResponse(cid, Status{});
}

}  // namespace smad::nvme::testing
