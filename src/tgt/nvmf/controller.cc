#include "tgt/nvmf/controller.h"

#include <algorithm>
#include <cstring>

#include "spdlog/spdlog.h"
#include "tgt/nvmf/poll_group.h"
#include "tgt/nvmf/target.h"

namespace smad::tgt {
namespace {

using nvme::Generic;
using nvme::Load32;
using nvme::Specific;
using nvme::Store16;
using nvme::Store32;
using nvme::Store64;
namespace sc = nvme::sc;

constexpr char kFirmwareRevision[] = "0.1.0";
constexpr uint8_t kAerLimit = 3;  // 0's based: four outstanding AERs
constexpr uint32_t kAecNamespaceAttribute = 1u << 8;

uint32_t Log2(uint32_t v) {
  uint32_t r = 0;
  while ((1u << r) < v) ++r;
  return r;
}

}  // namespace

Controller::Controller(ControllerInfo info, std::weak_ptr<TcpQpair> admin, NvmfTarget& target, Reactor& control)
    : info_(std::move(info)), admin_(std::move(admin)), target_(target), control_(control) {}

Controller::~Controller() = default;

void Controller::Start() {
  last_keep_alive_ns_ = NowNs();
  if (info_.kato_ms > 0) {
    // Check at half the timeout so an expired controller goes within 1.5 x KATO.
    uint64_t period = std::max<uint64_t>(info_.kato_ms / 2, 10) * 1'000'000;
    keep_alive_timer_ = Reactor::Current()->RunEvery(period, [this] { CheckKeepAlive(); });
  }
}

void Controller::CheckKeepAlive() {
  if (NowNs() - last_keep_alive_ns_ <= uint64_t{info_.kato_ms} * 1'000'000) return;
  spdlog::warn("controller {} of {} (host {}): keep-alive timeout of {} ms expired", info_.cntlid, info_.subnqn,
               info_.hostnqn, info_.kato_ms);
  Reactor::Current()->CancelTimer(keep_alive_timer_);
  keep_alive_timer_ = 0;
  if (auto admin = admin_.lock()) admin->Close("keep-alive timeout");
}

void Controller::OnAdminClosed() {
  if (keep_alive_timer_ != 0) Reactor::Current()->CancelTimer(keep_alive_timer_);
  keep_alive_timer_ = 0;
  aers_.clear();  // their requests die with the qpair
}

uint64_t Controller::Cap() const {
  auto admin = admin_.lock();
  uint32_t mqes = (admin ? admin->options().max_queue_depth : 128) - 1;
  uint64_t cap = mqes & 0xffff;
  cap |= uint64_t{1} << 16;   // CQR: contiguous queues required
  cap |= uint64_t{30} << 24;  // TO: 15 s in 500 ms units
  cap |= uint64_t{1} << 37;   // CSS: NVM command set
  return cap;                 // DSTRD 0, MPSMIN = MPSMAX = 0 (4 KiB)
}

void Controller::HandleAdmin(TcpQpair& q, Request& req) {
  const nvme::Command& cmd = req.cmd;
  if (cmd.opcode() == nvme::kFabricsOpcode) {
    switch (cmd.fctype()) {
      case nvme::fabrics::kPropertyGet: return PropertyGet(q, req);
      case nvme::fabrics::kPropertySet: return PropertySet(q, req);
      default: return q.Complete(req, Generic(sc::kInvalidOpcode));
    }
  }
  // Until CC.EN=1 and CSTS.RDY=1 only fabrics commands are allowed.
  if (!(csts_ & nvme::kCstsReady)) return q.Complete(req, Generic(sc::kCommandSequenceError));
  switch (cmd.opcode()) {
    case nvme::admin::kIdentify: return Identify(q, req);
    case nvme::admin::kGetLogPage: return GetLogPage(q, req);
    case nvme::admin::kSetFeatures: return SetFeatures(q, req);
    case nvme::admin::kGetFeatures: return GetFeatures(q, req);
    case nvme::admin::kAsyncEventRequest: return AsyncEventRequest(q, req);
    case nvme::admin::kKeepAlive:
      last_keep_alive_ns_ = NowNs();
      return q.Complete(req, Generic(sc::kSuccess));
    case nvme::admin::kAbort:
      return q.Complete(req, Generic(sc::kSuccess), 1);  // bit 0: command not aborted
    default:
      return q.Complete(req, Generic(sc::kInvalidOpcode));
  }
}

void Controller::PropertyGet(TcpQpair& q, Request& req) {
  uint8_t size = req.cmd.raw[nvme::property_cmd::kAttrib] & 0x7;
  uint32_t offset = Load32(req.cmd.raw + nvme::property_cmd::kOffset);
  uint64_t value;
  switch (offset) {
    case nvme::prop::kCap: value = Cap(); break;
    case nvme::prop::kVs: value = 0x00010300; break;  // NVMe 1.3
    case nvme::prop::kCc: value = cc_; break;
    case nvme::prop::kCsts: value = csts_; break;
    default: return q.Complete(req, Generic(sc::kInvalidField));
  }
  if ((offset == nvme::prop::kCap) != (size == 1)) return q.Complete(req, Generic(sc::kInvalidField));
  q.Complete(req, Generic(sc::kSuccess), value);
}

void Controller::PropertySet(TcpQpair& q, Request& req) {
  uint8_t size = req.cmd.raw[nvme::property_cmd::kAttrib] & 0x7;
  uint32_t offset = Load32(req.cmd.raw + nvme::property_cmd::kOffset);
  uint32_t value = Load32(req.cmd.raw + nvme::property_cmd::kValue);
  if (offset != nvme::prop::kCc || size != 0) return q.Complete(req, Generic(sc::kInvalidField));
  uint32_t old = cc_;
  cc_ = value;
  uint32_t shn = (value >> nvme::kCcShnShift) & 0x3;
  if (shn != 0) {
    // Shutdown notification: nothing is cached, so shutdown completes at once.
    csts_ = (csts_ & ~(0x3u << nvme::kCstsShstShift)) | (2u << nvme::kCstsShstShift);
    spdlog::info("controller {} of {}: shutdown by host {}", info_.cntlid, info_.subnqn, info_.hostnqn);
  }
  if ((value & nvme::kCcEnable) && !(old & nvme::kCcEnable)) {
    csts_ |= nvme::kCstsReady;
    csts_ &= ~(0x3u << nvme::kCstsShstShift);
  } else if (!(value & nvme::kCcEnable) && (old & nvme::kCcEnable)) {
    csts_ &= ~nvme::kCstsReady;  // controller reset
    aers_.clear();
  }
  q.Complete(req, Generic(sc::kSuccess));
}

std::vector<uint8_t> Controller::IdentifyController() const {
  using namespace nvme::id_ctrl;
  std::vector<uint8_t> d(nvme::kIdentifySize, 0);
  auto admin = admin_.lock();
  const TransportOptions defaults;
  const TransportOptions& opts = admin ? admin->options() : defaults;
  nvme::PutPadded(&d[kSn], 20, info_.serial_number.data(), info_.serial_number.size(), ' ');
  nvme::PutPadded(&d[kMn], 40, info_.model_number.data(), info_.model_number.size(), ' ');
  nvme::PutPadded(&d[kFr], 8, kFirmwareRevision, sizeof(kFirmwareRevision) - 1, ' ');
  d[kRab] = 6;
  d[kCmic] = info_.discovery ? 0 : 0x3;  // multiple ports and controllers
  d[kMdts] = static_cast<uint8_t>(Log2(opts.max_io_size / 4096));
  Store16(&d[kCntlid], info_.cntlid);
  Store32(&d[kVer], 0x00010300);
  Store32(&d[kOaes], info_.discovery ? 0 : kAecNamespaceAttribute);
  Store32(&d[kCtratt], 1);  // 128-bit host identifier
  d[kCntrltype] = info_.discovery ? 2 : 1;
  d[kAcl] = 3;
  d[kAerl] = kAerLimit;
  d[kFrmw] = 0x3;  // one slot, slot 1 read-only
  d[kLpa] = 0x04;  // extended data for Get Log Page
  d[kElpe] = 127;
  Store16(&d[kKas], 10);  // keep-alive granularity 1 s (KAS counts 100 ms units)
  // Queue entry sizes and the capsule fields below describe I/O queues; a discovery controller has none,
  // and for it these fields are reserved (zero), as SPDK's discovery controller reports them.
  d[kSqes] = info_.discovery ? 0 : 0x66;
  d[kCqes] = info_.discovery ? 0 : 0x44;
  Store16(&d[kMaxcmd], static_cast<uint16_t>(opts.max_queue_depth));
  Store32(&d[kNn], info_.discovery ? 0 : info_.max_namespaces);
  Store16(&d[kOncs], info_.discovery ? 0 : 0x000c);  // dataset management, write zeroes
  d[kVwc] = info_.discovery ? 0 : 1;
  Store32(&d[kSgls], 0x00300001);  // SGLs, offsets, transport SGL data blocks
  nvme::PutPadded(&d[kSubnqn], 256, info_.subnqn.data(), info_.subnqn.size(), '\0');
  if (!info_.discovery) {
    Store32(&d[kIoccsz], (64 + opts.in_capsule_data_size) / 16);
    Store32(&d[kIorcsz], 1);
    d[kMsdbd] = 1;
  }
  return d;
}

void Controller::Identify(TcpQpair& q, Request& req) {
  uint8_t cns = req.cmd.cdw(10) & 0xff;
  uint32_t nsid = req.cmd.nsid();
  std::vector<uint8_t> d;
  if (cns == nvme::cns::kController) {
    d = IdentifyController();
  } else if (info_.discovery) {
    return q.Complete(req, Generic(sc::kInvalidField));
  } else {
    const SubsystemSnapshot* snapshot = q.group().Snapshot(info_.subsystem_id);
    auto find = [&](uint32_t id) -> const SubsystemSnapshot::Ns* {
      if (snapshot == nullptr) return nullptr;
      for (const auto& ns : snapshot->namespaces) {
        if (ns.nsid == id) return &ns;
      }
      return nullptr;
    };
    d.assign(nvme::kIdentifySize, 0);
    switch (cns) {
      case nvme::cns::kNamespace: {
        using namespace nvme::id_ns;
        if (nsid == 0 || nsid == 0xffffffff) return q.Complete(req, Generic(sc::kInvalidNamespaceOrFormat));
        const auto* ns = find(nsid);
        if (ns == nullptr) {
          // An inactive namespace within range reads as zeroes.
          if (nsid > info_.max_namespaces && info_.max_namespaces != 0) {
            return q.Complete(req, Generic(sc::kInvalidNamespaceOrFormat));
          }
          break;
        }
        uint64_t blocks = ns->bdev->num_blocks();
        Store64(&d[kNsze], blocks);
        Store64(&d[kNcap], blocks);
        Store64(&d[kNuse], blocks);
        d[kNlbaf] = 0;
        d[kFlbas] = 0;
        d[kNmic] = 1;     // may be shared by several controllers
        d[kDlfeat] = 1;   // deallocated blocks read as zeroes
        std::memcpy(&d[kNguid], ns->nguid.data(), 16);
        if (ns->eui64) {
          for (int i = 0; i < 8; ++i) d[kEui64 + i] = static_cast<uint8_t>(*ns->eui64 >> (56 - 8 * i));
        }
        d[kLbaf0 + 2] = static_cast<uint8_t>(Log2(ns->bdev->block_size()));
        break;
      }
      case nvme::cns::kActiveNamespaceList: {
        size_t n = 0;
        if (snapshot != nullptr) {
          for (const auto& ns : snapshot->namespaces) {
            if (ns.nsid > nsid && n < 1024) Store32(&d[4 * n++], ns.nsid);
          }
        }
        break;
      }
      case nvme::cns::kNamespaceIdDescriptors: {
        const auto* ns = find(nsid);
        if (ns == nullptr) return q.Complete(req, Generic(sc::kInvalidNamespaceOrFormat));
        size_t pos = 0;
        auto put = [&](uint8_t type, const uint8_t* value, uint8_t length) {
          d[pos] = type;
          d[pos + 1] = length;
          std::memcpy(&d[pos + 4], value, length);
          pos += 4 + length;
        };
        if (ns->eui64) {
          uint8_t eui[8];
          for (int i = 0; i < 8; ++i) eui[i] = static_cast<uint8_t>(*ns->eui64 >> (56 - 8 * i));
          put(nvme::kNidtEui64, eui, 8);
        }
        put(nvme::kNidtNguid, ns->nguid.data(), 16);
        put(nvme::kNidtUuid, ns->uuid.data(), 16);
        break;
      }
      default:
        return q.Complete(req, Generic(sc::kInvalidField));
    }
  }
  req.data.assign(d.begin(), d.end());
  q.Complete(req, Generic(sc::kSuccess));
}

void Controller::GetLogPage(TcpQpair& q, Request& req) {
  uint32_t cdw10 = req.cmd.cdw(10);
  uint8_t lid = cdw10 & 0xff;
  bool retain = (cdw10 >> 15) & 1;
  uint64_t dwords = ((uint64_t{req.cmd.cdw(11) & 0xffff} << 16) | (cdw10 >> 16)) + 1;
  uint64_t length = dwords * 4;
  uint64_t offset = req.cmd.cdw(12) | uint64_t{req.cmd.cdw(13)} << 32;
  if (length > req.transfer_length) return q.Complete(req, Generic(sc::kDataSglLengthInvalid));
  auto reply = [&q, &req, offset, length](const std::vector<uint8_t>& page) {
    if (offset > page.size() && !page.empty()) return q.Complete(req, Generic(sc::kInvalidField));
    req.data.assign(length, 0);
    if (offset < page.size()) {
      size_t n = std::min<uint64_t>(length, page.size() - offset);
      std::memcpy(req.data.data(), page.data() + offset, n);
    }
    q.Complete(req, Generic(sc::kSuccess));
  };
  if (lid == nvme::log_page::kDiscovery) {
    if (!info_.discovery) return q.Complete(req, Specific(nvme::sc_specific::kInvalidLogPage));
    // The discovery log is built from the target's configuration, owned by the control thread.
    std::weak_ptr<TcpQpair> weak = q.weak_from_this();
    Request* request = &req;
    ++q.bdev_ios_;  // the request buffer is referenced until the answer comes back
    std::string hostnqn = info_.hostnqn;
    Reactor& reactor = q.reactor();
    control_.Post([this_target = &target_, weak, request, hostnqn, &reactor, offset, length] {
      std::vector<uint8_t> page = this_target->BuildDiscoveryLog(hostnqn);
      reactor.Post([weak, request, page = std::move(page), offset, length] {
        auto qpair = weak.lock();
        if (!qpair) return;
        --qpair->bdev_ios_;
        if (qpair->closed_) {
          qpair->FreeRequest(*request);
          qpair->MaybeDestroy();
          return;
        }
        request->data.assign(length, 0);
        if (offset < page.size()) {
          size_t n = std::min<uint64_t>(length, page.size() - offset);
          std::memcpy(request->data.data(), page.data() + offset, n);
        }
        qpair->Complete(*request, Generic(sc::kSuccess));
      });
    });
    return;
  }
  if (info_.discovery) return q.Complete(req, Specific(nvme::sc_specific::kInvalidLogPage));
  std::vector<uint8_t> page;
  switch (lid) {
    case nvme::log_page::kError:
      page.assign(64 * 64, 0);  // no errors recorded
      break;
    case nvme::log_page::kHealth:
      page.assign(512, 0);
      Store16(&page[1], 273 + 40);  // composite temperature, kelvin
      page[3] = 100;                // available spare
      page[4] = 10;                 // spare threshold
      break;
    case nvme::log_page::kFirmwareSlot:
      page.assign(512, 0);
      page[0] = 1;  // active slot 1
      nvme::PutPadded(&page[8], 8, kFirmwareRevision, sizeof(kFirmwareRevision) - 1, ' ');
      break;
    case nvme::log_page::kChangedNamespaceList:
      page.assign(4096, 0);
      if (changed_nsids_.size() > 1024) {
        Store32(&page[0], 0xffffffff);
      } else {
        for (size_t i = 0; i < changed_nsids_.size(); ++i) Store32(&page[4 * i], changed_nsids_[i]);
      }
      if (!retain) {
        changed_nsids_.clear();
        ns_event_masked_ = false;  // reading the log re-arms the notice
        DeliverEvents();
      }
      break;
    default:
      return q.Complete(req, Specific(nvme::sc_specific::kInvalidLogPage));
  }
  reply(page);
}

void Controller::SetFeatures(TcpQpair& q, Request& req) {
  uint8_t fid = req.cmd.cdw(10) & 0xff;
  uint32_t value = req.cmd.cdw(11);
  auto admin = admin_.lock();
  uint32_t max_queues = admin ? admin->options().max_io_qpairs_per_ctrlr : 127;
  switch (fid) {
    case nvme::feature::kNumberOfQueues: {
      if (info_.discovery) return q.Complete(req, Generic(sc::kInvalidField));
      if (queues_set_) return q.Complete(req, Generic(sc::kCommandSequenceError));
      uint32_t nsqr = (value & 0xffff) + 1, ncqr = (value >> 16) + 1;
      if (nsqr == 0x10000 || ncqr == 0x10000) return q.Complete(req, Generic(sc::kInvalidField));
      io_queues_ = static_cast<uint16_t>(std::min({nsqr, ncqr, max_queues}));
      queues_set_ = true;
      uint32_t granted = io_queues_ - 1u;
      return q.Complete(req, Generic(sc::kSuccess), granted | granted << 16);
    }
    case nvme::feature::kAsyncEventConfiguration:
      aec_ = value;
      return q.Complete(req, Generic(sc::kSuccess));
    case nvme::feature::kKeepAliveTimer:
      info_.kato_ms = value;
      last_keep_alive_ns_ = NowNs();
      if (keep_alive_timer_ != 0) Reactor::Current()->CancelTimer(keep_alive_timer_);
      keep_alive_timer_ = 0;
      Start();
      return q.Complete(req, Generic(sc::kSuccess));
    case nvme::feature::kVolatileWriteCache:
      volatile_write_cache_ = value & 1;
      return q.Complete(req, Generic(sc::kSuccess));
    case nvme::feature::kArbitration:
    case nvme::feature::kPowerManagement:
    case nvme::feature::kTemperatureThreshold:
    case nvme::feature::kErrorRecovery:
    case nvme::feature::kInterruptCoalescing:
    case nvme::feature::kWriteAtomicity:
      return q.Complete(req, Generic(sc::kSuccess));
    case nvme::feature::kHostIdentifier:
      return q.Complete(req, Specific(nvme::sc_specific::kFeatureNotChangeable));
    default:
      return q.Complete(req, Generic(sc::kInvalidField));
  }
}

void Controller::GetFeatures(TcpQpair& q, Request& req) {
  uint8_t fid = req.cmd.cdw(10) & 0xff;
  auto admin = admin_.lock();
  uint32_t max_queues = admin ? admin->options().max_io_qpairs_per_ctrlr : 127;
  switch (fid) {
    case nvme::feature::kNumberOfQueues: {
      uint32_t n = (queues_set_ ? io_queues_ : max_queues) - 1u;
      return q.Complete(req, Generic(sc::kSuccess), n | n << 16);
    }
    case nvme::feature::kAsyncEventConfiguration: return q.Complete(req, Generic(sc::kSuccess), aec_);
    case nvme::feature::kKeepAliveTimer: return q.Complete(req, Generic(sc::kSuccess), info_.kato_ms);
    case nvme::feature::kVolatileWriteCache:
      return q.Complete(req, Generic(sc::kSuccess), volatile_write_cache_ ? 1 : 0);
    case nvme::feature::kHostIdentifier:
      req.data.assign(info_.hostid.begin(), info_.hostid.end());
      return q.Complete(req, Generic(sc::kSuccess));
    case nvme::feature::kArbitration:
    case nvme::feature::kPowerManagement:
    case nvme::feature::kTemperatureThreshold:
    case nvme::feature::kErrorRecovery:
    case nvme::feature::kInterruptCoalescing:
    case nvme::feature::kWriteAtomicity:
      return q.Complete(req, Generic(sc::kSuccess), 0);
    default:
      return q.Complete(req, Generic(sc::kInvalidField));
  }
}

void Controller::AsyncEventRequest(TcpQpair& q, Request& req) {
  if (aers_.size() > kAerLimit) return q.Complete(req, Specific(nvme::sc_specific::kAsyncEventLimitExceeded));
  aers_.push_back(&req);
  DeliverEvents();
}

bool Controller::RetireAer(uint16_t cid) {
  for (auto it = aers_.begin(); it != aers_.end(); ++it) {
    Request* req = *it;
    if (req->cmd.cid() != cid) continue;
    aers_.erase(it);
    spdlog::debug("controller {} of {}: command ID {} reused, Asynchronous Event Request retired", info_.cntlid,
                  info_.subnqn, cid);
    req->qpair->FreeRequest(*req);
    return true;
  }
  return false;
}

void Controller::NotifyNamespaceChanged(uint32_t nsid) {
  if (info_.discovery) return;
  if (std::find(changed_nsids_.begin(), changed_nsids_.end(), nsid) == changed_nsids_.end()) {
    changed_nsids_.push_back(nsid);
  }
  ns_event_pending_ = true;
  DeliverEvents();
}

void Controller::DeliverEvents() {
  if (!ns_event_pending_ || ns_event_masked_ || aers_.empty()) return;
  if (!(aec_ & kAecNamespaceAttribute)) return;
  auto admin = admin_.lock();
  if (!admin) return;
  Request* req = aers_.front();
  aers_.pop_front();
  ns_event_pending_ = false;
  ns_event_masked_ = true;  // until the host reads the changed namespace list
  // Async event: type 2 (notice), information 0 (namespace attribute changed), log page 04h.
  uint32_t cdw0 = 0x2 | (0x00u << 8) | (uint32_t{nvme::log_page::kChangedNamespaceList} << 16);
  admin->Complete(*req, Generic(sc::kSuccess), cdw0);
}

}  // namespace smad::tgt
