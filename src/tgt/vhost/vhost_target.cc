#include "tgt/vhost/vhost_target.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace smad::tgt {
namespace {

using Json = nlohmann::json;

// vhost-user message framing (the vhost-user protocol specification): a 12-byte header
// {request, flags, size} in host order, then `size` bytes of payload.
constexpr size_t kHeaderSize = 12;
constexpr uint32_t kVersionMask = 0x3;
constexpr uint32_t kVersion = 0x1;
constexpr uint32_t kReplyFlag = 0x4;
constexpr uint32_t kMaxPayload = 4096;  // larger than any request answered here
constexpr size_t kMaxSessions = 64;     // per controller

enum Request : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
};

// Virtio feature bits.
constexpr int kVirtioBlkFRo = 5;
constexpr int kVirtioBlkFBlkSize = 6;
constexpr int kVirtioBlkFFlush = 9;
constexpr int kVirtioBlkFDiscard = 13;
constexpr int kVirtioBlkFWriteZeroes = 14;
constexpr int kVhostUserFProtocolFeatures = 30;
constexpr int kVirtioFVersion1 = 32;
constexpr int kVirtioFRingPacked = 34;

// SPDK's defaults (vhost_internal.h): no coalescing delay, 60000 IOPS threshold, statistics checked
// every 10 ms.
constexpr uint32_t kDefaultDelayBaseUs = 0;
constexpr uint32_t kDefaultIopsThreshold = 60000;
constexpr uint32_t kStatsCheckIntervalMs = 10;
// smad-tgt's tick rate (nanoseconds), used for SPDK's "delay fits 32-bit ticks" check.
constexpr uint64_t kTicksPerSecond = 1000000000;

uint64_t Bit(int n) { return uint64_t{1} << n; }

}  // namespace

std::string FormatCpuMask(const std::vector<int>& cores) {
  int max = 0;
  for (int c : cores) max = std::max(max, c);
  std::string out;
  for (int nibble = max / 4; nibble >= 0; --nibble) {
    int value = 0;
    for (int c : cores) {
      if (c / 4 == nibble) value |= 1 << (c % 4);
    }
    out.push_back("0123456789abcdef"[value]);
  }
  return out;
}

VhostBlkController::VhostBlkController(Reactor& control, uint64_t id, std::string name, std::string socket_path)
    : control_(control), id_(id), name_(std::move(name)), socket_path_(std::move(socket_path)) {}

VhostBlkController::~VhostBlkController() {
  CloseAllSessions();
  listener_.reset();  // closes the socket and removes its file
}

Json VhostBlkController::Describe() const {
  Json sessions = Json::array();
  for (const auto& [id, s] : sessions_) {
    sessions.push_back({{"vid", s->vid},
                        {"id", s->id},
                        {"name", name_ + "s" + std::to_string(s->vid)},
                        {"started", false},
                        {"max_queues", 0},
                        {"inflight_task_cnt", 0}});
  }
  return Json{{"ctrlr", name_},
              {"cpumask", "0x" + FormatCpuMask(cores_)},
              {"delay_base_us", delay_base_us_},
              {"iops_threshold", iops_threshold_},
              {"socket", socket_path_},
              {"sessions", sessions},
              {"backend_specific",
               {{"block",
                 {{"readonly", readonly_},
                  {"bdev", bdev_name_.empty() ? Json() : Json(bdev_name_)},
                  {"transport", kVhostUserBlkTransport}}}}}};
}

void VhostBlkController::AppendConfig(Json& entries) const {
  if (bdev_name_.empty()) return;  // hot-removed: SPDK saves nothing for it
  Json params = {{"ctrlr", name_},
                 {"dev_name", bdev_name_},
                 {"cpumask", FormatCpuMask(cores_)},
                 {"readonly", readonly_},
                 {"transport", kVhostUserBlkTransport}};
  // SPDK forgets packed_ring; saving it (only when set) keeps the feature across a restart.
  if (packed_ring_) params["packed_ring"] = true;
  entries.push_back({{"method", "vhost_create_blk_controller"}, {"params", params}});
  // SPDK saves the coalescing settings only when a delay is set.
  if (delay_base_us_ != 0) {
    entries.push_back({{"method", "vhost_controller_set_coalescing"},
                       {"params", {{"ctrlr", name_}, {"delay_base_us", delay_base_us_}, {"iops_threshold", iops_threshold_}}}});
  }
}

void VhostBlkController::Accept(int fd, uint32_t vid) {
  if (sessions_.size() >= kMaxSessions) {
    spdlog::warn("vhost controller {}: refusing a connection beyond {} sessions", name_, kMaxSessions);
    ::close(fd);
    return;
  }
  auto session = std::make_unique<Session>();
  session->fd = fd;
  session->vid = vid;
  session->id = next_session_id_++;
  uint32_t id = session->id;
  absl::Status watched = control_.WatchFd(fd, EPOLLIN | EPOLLRDHUP, [this, id](uint32_t) { OnReadable(id); });
  if (!watched.ok()) {
    spdlog::warn("vhost controller {}: cannot watch a new connection: {}", name_, watched.ToString());
    ::close(fd);
    return;
  }
  spdlog::info("vhost controller {}: vhost-user session {} connected", name_, session->vid);
  sessions_[id] = std::move(session);
}

void VhostBlkController::OnReadable(uint32_t id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  Session& session = *it->second;
  int fd = session.fd;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n > 0) {
      session.input.append(buffer, static_cast<size_t>(n));
      if (session.input.size() > kHeaderSize + kMaxPayload) break;  // HandleRequests refuses it
      continue;
    }
    if (n == 0) return CloseSession(id, "disconnected");
    if (errno == EINTR) continue;
    if (errno == EAGAIN) break;
    return CloseSession(id, "connection error");
  }
  if (!HandleRequests(session)) CloseSession(id, "closed");
}

bool VhostBlkController::HandleRequests(Session& session) {
  while (session.input.size() >= kHeaderSize) {
    uint32_t header[3];
    std::memcpy(header, session.input.data(), kHeaderSize);
    uint32_t request = header[0], flags = header[1], size = header[2];
    if ((flags & kVersionMask) != kVersion || size > kMaxPayload) {
      spdlog::warn("vhost controller {}: malformed vhost-user message on session {}", name_, session.vid);
      return false;
    }
    if (session.input.size() < kHeaderSize + size) return true;  // wait for the payload
    session.input.erase(0, kHeaderSize + size);
    switch (request) {
      case kGetFeatures:
        if (!Reply(session, request, virtio_features_)) return false;
        break;
      case kGetProtocolFeatures:
        // No protocol feature (not even CONFIG): nothing beyond this handshake is implemented.
        if (!Reply(session, request, 0)) return false;
        break;
      case kSetFeatures:
      case kSetOwner:
      case kResetOwner:
      case kSetProtocolFeatures:
        break;  // no reply expected (REPLY_ACK is never negotiated)
      default:
        spdlog::warn("vhost controller {}: vhost-user request {} is not implemented (smad-tgt has no vhost data "
                     "path); closing session {}",
                     name_, request, session.vid);
        return false;
    }
  }
  return true;
}

bool VhostBlkController::Reply(Session& session, uint32_t request, uint64_t value) {
  char message[kHeaderSize + sizeof(value)];
  uint32_t header[3] = {request, kVersion | kReplyFlag, sizeof(value)};
  std::memcpy(message, header, kHeaderSize);
  std::memcpy(message + kHeaderSize, &value, sizeof(value));
  ssize_t n = ::send(session.fd, message, sizeof(message), MSG_DONTWAIT | MSG_NOSIGNAL);
  return n == static_cast<ssize_t>(sizeof(message));
}

void VhostBlkController::CloseSession(uint32_t id, const char* why) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  spdlog::info("vhost controller {}: vhost-user session {} {}", name_, it->second->vid, why);
  control_.UnwatchFd(it->second->fd);
  ::close(it->second->fd);
  sessions_.erase(it);
}

void VhostBlkController::CloseAllSessions() {
  while (!sessions_.empty()) CloseSession(sessions_.begin()->first, "closed: controller deleted");
}

VhostTarget::VhostTarget(Reactor& control, BdevManager& bdevs, std::string socket_dir, std::vector<int> app_cores)
    : control_(control), bdevs_(bdevs), socket_prefix_(std::move(socket_dir)), app_cores_(std::move(app_cores)) {
  if (!socket_prefix_.empty() && socket_prefix_.back() != '/') socket_prefix_.push_back('/');
}

VhostTarget::~VhostTarget() { Shutdown(); }

absl::Status VhostTarget::CreateBlkController(const VhostBlkParams& params) {
  // SPDK's order: transport, bdev, cpumask, name, socket.
  if (params.transport && absl::AsciiStrToLower(*params.transport) != kVhostUserBlkTransport) {
    return ErrnoStatus(EINVAL, "virtio-blk transport '" + *params.transport + "' is not available");
  }
  Bdev* bdev = bdevs_.Find(params.dev_name);
  if (bdev == nullptr) return ErrnoStatus(ENODEV, "bdev " + params.dev_name + " not found");
  if (bdev->claimed()) {
    return ErrnoStatus(EPERM, "bdev " + bdev->name() + " is claimed by " + bdev->claim_module());
  }
  std::vector<int> cores = app_cores_;
  if (params.cpumask) {
    auto parsed = ParseCpuMask(*params.cpumask);
    if (!parsed.ok()) return ErrnoStatus(EINVAL, "cpumask " + *params.cpumask + " is invalid");
    for (int core : *parsed) {
      if (std::find(app_cores_.begin(), app_cores_.end(), core) == app_cores_.end()) {
        return ErrnoStatus(EINVAL, "cpumask " + *params.cpumask + " is outside the core mask 0x" +
                                       FormatCpuMask(app_cores_));
      }
    }
    cores = *parsed;
  }
  if (params.ctrlr.empty()) return ErrnoStatus(EINVAL, "the controller needs a name");
  if (controllers_.count(params.ctrlr)) return ErrnoStatus(EEXIST, "vhost controller " + params.ctrlr + " exists");

  uint64_t id = next_controller_id_++;
  auto controller = std::unique_ptr<VhostBlkController>(
      new VhostBlkController(control_, id, params.ctrlr, socket_prefix_ + params.ctrlr));
  VhostBlkController& c = *controller;
  c.cores_ = std::move(cores);
  c.readonly_ = params.readonly;
  c.packed_ring_ = params.packed_ring;
  c.delay_base_us_ = kDefaultDelayBaseUs;
  c.iops_threshold_ = kDefaultIopsThreshold;
  c.virtio_features_ = Bit(kVirtioFVersion1) | Bit(kVhostUserFProtocolFeatures) | Bit(kVirtioBlkFBlkSize);
  if (bdev->SupportsIoType(IoType::kFlush)) c.virtio_features_ |= Bit(kVirtioBlkFFlush);
  if (bdev->SupportsIoType(IoType::kUnmap)) c.virtio_features_ |= Bit(kVirtioBlkFDiscard);
  if (bdev->SupportsIoType(IoType::kWriteZeroes)) c.virtio_features_ |= Bit(kVirtioBlkFWriteZeroes);
  if (params.readonly) c.virtio_features_ |= Bit(kVirtioBlkFRo);
  if (params.packed_ring) c.virtio_features_ |= Bit(kVirtioFRingPacked);

  auto listener = UnixListener::Create(control_, c.socket_path_, [this, &c](int fd) { c.Accept(fd, next_vid_++); });
  if (!listener.ok()) {
    int err = StatusErrno(listener.status()).value_or(EIO);
    spdlog::warn("vhost controller {}: {}", params.ctrlr, StatusMessage(listener.status()));
    // SPDK reports a path that does not fit as EINVAL and every other socket failure as EIO.
    return ErrnoStatus(err == ENAMETOOLONG ? EINVAL : EIO, StatusMessage(listener.status()));
  }
  c.listener_ = std::move(listener).value();
  auto desc = bdevs_.Open(bdev->name(), [this, id] { OnBdevRemoved(id); });
  if (!desc.ok()) return desc.status();  // cannot happen: found above
  c.desc_ = std::move(desc).value();
  c.bdev_name_ = bdev->name();
  spdlog::info("vhost controller {} created on bdev {}, socket {}", c.name_, c.bdev_name_, c.socket_path_);
  controllers_[params.ctrlr] = std::move(controller);
  return absl::OkStatus();
}

absl::Status VhostTarget::DeleteController(const std::string& name) {
  auto it = controllers_.find(name);
  if (it == controllers_.end()) return ErrnoStatus(ENODEV, "vhost controller " + name + " not found");
  if (it->second->session_count() > 0) {
    spdlog::info("vhost controller {}: deleted with {} session(s) connected; closing them", name,
                 it->second->session_count());
  }
  controllers_.erase(it);
  spdlog::info("vhost controller {} deleted", name);
  return absl::OkStatus();
}

absl::Status VhostTarget::SetCoalescing(const std::string& name, uint32_t delay_base_us, uint32_t iops_threshold) {
  auto it = controllers_.find(name);
  if (it == controllers_.end()) return ErrnoStatus(ENODEV, "vhost controller " + name + " not found");
  if (uint64_t{delay_base_us} * kTicksPerSecond / 1000000 >= UINT32_MAX) {
    return ErrnoStatus(EINVAL, "delay_base_us " + std::to_string(delay_base_us) + " is too big");
  }
  if (uint64_t{iops_threshold} * kStatsCheckIntervalMs / 1000 == 0) {
    return ErrnoStatus(EINVAL, "iops_threshold must be at least " + std::to_string(1000 / kStatsCheckIntervalMs));
  }
  it->second->delay_base_us_ = delay_base_us;
  it->second->iops_threshold_ = iops_threshold;
  return absl::OkStatus();
}

const VhostBlkController* VhostTarget::Find(const std::string& name) const {
  auto it = controllers_.find(name);
  return it == controllers_.end() ? nullptr : it->second.get();
}

std::vector<const VhostBlkController*> VhostTarget::List() const {
  std::vector<const VhostBlkController*> out;
  for (const auto& [name, c] : controllers_) out.push_back(c.get());
  return out;
}

Json VhostTarget::ConfigEntries() const {
  Json entries = Json::array();
  for (const auto& [name, c] : controllers_) c->AppendConfig(entries);
  return entries;
}

void VhostTarget::Shutdown() { controllers_.clear(); }

void VhostTarget::OnBdevRemoved(uint64_t controller_id) {
  // Runs inside BdevManager::Unregister: close the descriptor from the loop, not from inside the
  // notification (closing may finish the deletion while Unregister still uses the bdev).
  control_.Defer([this, alive = std::weak_ptr<bool>(alive_), controller_id] {
    if (alive.expired()) return;
    for (auto& [name, c] : controllers_) {
      if (c->id_ != controller_id) continue;
      spdlog::warn("vhost controller {}: bdev {} is being deleted; the controller stays without bdev", name,
                   c->bdev_name_);
      c->desc_.reset();
      c->bdev_name_.clear();
    }
  });
}

}  // namespace smad::tgt
