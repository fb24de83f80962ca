#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "reactor/reactor.h"
#include "tgt/bdev/bdev_manager.h"
#include "tgt/net/unix_listener.h"

namespace smad::tgt {

// The only virtio-blk transport (SPDK's default; SPDK's config never mentions it).
inline constexpr char kVhostUserBlkTransport[] = "vhost_user_blk";

// What vhost_create_blk_controller takes.
struct VhostBlkParams {
  std::string ctrlr;
  std::string dev_name;                    // bdev name or alias (UUID)
  std::optional<std::string> cpumask;      // default: every core of the target
  bool readonly = false;
  bool packed_ring = false;
  std::optional<std::string> transport;    // default: vhost_user_blk
};

// A vhost-user-blk controller: an open (not claimed) bdev and a listening vhost-user socket
// `<socket dir><name>`. Control plane only: a connected client is a session that is answered
// VHOST_USER_GET_FEATURES, GET_PROTOCOL_FEATURES and the messages that need no reply (SET_OWNER,
// SET_FEATURES, ...); any other request closes the session (no virtqueues, no I/O).
//
// Thread safety: control thread only. Owned by VhostTarget.
class VhostBlkController {
 public:
  ~VhostBlkController();
  VhostBlkController(const VhostBlkController&) = delete;
  VhostBlkController& operator=(const VhostBlkController&) = delete;

  const std::string& name() const { return name_; }
  const std::string& socket_path() const { return socket_path_; }
  // Empty once the bdev was hot-removed (deleted while the controller existed).
  const std::string& bdev_name() const { return bdev_name_; }
  bool readonly() const { return readonly_; }
  // The virtio feature bits offered by VHOST_USER_GET_FEATURES.
  uint64_t virtio_features() const { return virtio_features_; }
  size_t session_count() const { return sessions_.size(); }

  // The vhost_get_controllers entry, in SPDK's shape.
  nlohmann::json Describe() const;
  // save_config entries: vhost_create_blk_controller (none after a hot-remove, as SPDK; packed_ring,
  // which SPDK drops, is kept) and vhost_controller_set_coalescing when a delay is set.
  void AppendConfig(nlohmann::json& entries) const;

 private:
  friend class VhostTarget;
  struct Session {
    int fd = -1;
    uint32_t vid = 0;
    uint32_t id = 0;
    std::string input;
  };

  VhostBlkController(Reactor& control, uint64_t id, std::string name, std::string socket_path);
  void Accept(int fd, uint32_t vid);
  void OnReadable(uint32_t id);
  // Answers every complete request in the session's input; false when the session must end.
  bool HandleRequests(Session& session);
  bool Reply(Session& session, uint32_t request, uint64_t value);
  void CloseSession(uint32_t id, const char* why);
  void CloseAllSessions();

  Reactor& control_;
  uint64_t id_;
  std::string name_;
  std::string socket_path_;
  std::vector<int> cores_;
  bool readonly_ = false;
  bool packed_ring_ = false;
  uint64_t virtio_features_ = 0;
  uint32_t delay_base_us_ = 0;
  uint32_t iops_threshold_ = 60000;
  std::string bdev_name_;
  std::unique_ptr<BdevDesc> desc_;
  std::unique_ptr<UnixListener> listener_;
  std::map<uint32_t, std::unique_ptr<Session>> sessions_;  // by id: creation order
  uint32_t next_session_id_ = 0;
};

// SPDK's vhost target for block devices: the vhost_* and virtio_blk_* JSON-RPC methods act on it.
// Controllers are kept sorted by name, as SPDK lists them.
//
// A controller opens its bdev for writing without claiming it, as SPDK's vhost_blk does: a bdev
// claimed by another module (an NVMe-oF namespace) cannot be used (EPERM), while a bdev in use by a
// controller can still be claimed by others or shared by several controllers. Deleting the bdev
// hot-removes it: the controller stays, without bdev.
//
// Thread safety: control thread only.
class VhostTarget {
 public:
  // `socket_dir` is where controller sockets are created (SPDK's -S), empty for the working
  // directory; `app_cores` are the target's cores (the default and the bound of a controller's
  // cpumask).
  VhostTarget(Reactor& control, BdevManager& bdevs, std::string socket_dir, std::vector<int> app_cores);
  ~VhostTarget();
  VhostTarget(const VhostTarget&) = delete;
  VhostTarget& operator=(const VhostTarget&) = delete;

  // Checks in SPDK's order. Errors (errno payload): EINVAL (unknown transport, cpumask invalid or
  // outside the target's cores, socket path too long), ENODEV (no such bdev), EPERM (bdev claimed),
  // EEXIST (name taken), EIO (the socket could not be created: directory missing, path taken by a
  // non-socket file or a live socket).
  absl::Status CreateBlkController(const VhostBlkParams& params);
  // Closes the sessions and the socket (its file is removed) and closes the bdev. Errors: ENODEV.
  absl::Status DeleteController(const std::string& name);
  // Errors: ENODEV, EINVAL (the delay overflows 32-bit ticks, or iops_threshold below 100).
  absl::Status SetCoalescing(const std::string& name, uint32_t delay_base_us, uint32_t iops_threshold);

  const VhostBlkController* Find(const std::string& name) const;
  std::vector<const VhostBlkController*> List() const;
  // framework_get_config("vhost_blk").
  nlohmann::json ConfigEntries() const;
  // Deletes every controller (shutdown).
  void Shutdown();

  // The directory prefix of socket paths: "" or ending with '/'.
  const std::string& socket_prefix() const { return socket_prefix_; }

 private:
  void OnBdevRemoved(uint64_t controller_id);

  Reactor& control_;
  BdevManager& bdevs_;
  std::string socket_prefix_;
  std::vector<int> app_cores_;
  std::map<std::string, std::unique_ptr<VhostBlkController>> controllers_;
  uint64_t next_controller_id_ = 1;
  uint32_t next_vid_ = 0;
  // Expires with the target, for deferred hot-remove work.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// Hex digits of a CPU set, as SPDK's spdk_cpuset_fmt prints it ("3" for cores 0 and 1).
std::string FormatCpuMask(const std::vector<int>& cores);

}  // namespace smad::tgt
