#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "common/uuid.h"
#include "nlohmann/json.hpp"
#include "reactor/reactor.h"
#include "tgt/bdev/bdev_manager.h"
#include "tgt/nvmf/listen_address.h"
#include "tgt/nvmf/poll_group.h"
#include "nvme/spec.h"
#include "tgt/nvmf/tcp_transport.h"
#include "tgt/nvmf/vfio_user_transport.h"

namespace smad::tgt {

using Json = nlohmann::json;

// One namespace of a subsystem: a bdev opened and claimed by the target.
struct Namespace {
  uint32_t nsid = 0;
  std::string bdev_name;
  Uuid uuid;
  std::array<uint8_t, 16> nguid{};
  std::optional<uint64_t> eui64;
  std::unique_ptr<BdevDesc> desc;
  Bdev* bdev() const { return &desc->bdev(); }
};

// What nvmf_create_subsystem takes.
struct SubsystemParams {
  std::string nqn;
  std::string serial_number = "00000000000000000000";
  std::string model_number = "SPDK bdev Controller";
  bool allow_any_host = false;
  uint32_t max_namespaces = 32;
  uint16_t min_cntlid = 1;
  uint16_t max_cntlid = 0xffef;
};

// What nvmf_subsystem_add_ns takes.
struct NamespaceParams {
  std::string bdev_name;
  uint32_t nsid = 0;  // 0: lowest free
  std::optional<Uuid> uuid;
  std::optional<std::array<uint8_t, 16>> nguid;
  std::optional<uint64_t> eui64;
};

class Controller;
class TcpQpair;

// A Fabrics Connect as the qpair decoded it.
struct ConnectRequest {
  std::string subnqn;
  std::string hostnqn;
  std::array<uint8_t, 16> hostid{};
  uint16_t qid = 0;
  uint16_t cntlid = 0xffff;
  uint32_t kato_ms = 0;
  std::string local_traddr, local_trsvcid;  // the listener the host reached
  std::string peer;
};

struct ConnectResult {
  nvme::Status status;
  uint32_t cdw0 = 0;  // Connect Invalid Parameters: IATTR and IPO
  uint16_t cntlid = 0;
  uint32_t subsystem_id = 0;
  std::shared_ptr<Controller> controller;  // admin queues: the new controller
};

// An NVM subsystem (or the discovery subsystem). Owned by NvmfTarget; control thread only.
class Subsystem {
 public:
  Subsystem(uint32_t id, SubsystemParams params, bool discovery)
      : id_(id), params_(std::move(params)), discovery_(discovery) {}

  uint32_t id() const { return id_; }
  const std::string& nqn() const { return params_.nqn; }
  bool is_discovery() const { return discovery_; }
  const SubsystemParams& params() const { return params_; }
  const std::vector<std::string>& hosts() const { return hosts_; }
  const std::vector<ListenAddress>& listeners() const { return listeners_; }
  const std::map<uint32_t, std::unique_ptr<Namespace>>& namespaces() const { return namespaces_; }
  // Whether `hostnqn` may connect (allow_any_host or listed).
  bool HostAllowed(const std::string& hostnqn) const;
  Json Describe() const;

 private:
  friend class NvmfTarget;
  uint32_t id_;
  SubsystemParams params_;
  bool discovery_;
  std::vector<std::string> hosts_;
  std::vector<ListenAddress> listeners_;
  std::map<uint32_t, std::unique_ptr<Namespace>> namespaces_;
  // Changes that pause the subsystem run one at a time, in arrival order.
  std::deque<absl::AnyInvocable<void(absl::AnyInvocable<void()>)>> pending_;
  bool changing_ = false;
  bool deleted_ = false;
};

// The NVMe-oF target: transports, subsystems and their namespaces, listeners and hosts, and the
// per-reactor poll groups that the data path runs on. Every change that affects what hosts see goes
// through pause / update / resume of the subsystem on every poll group, as in SPDK.
//
// Thread safety: all methods on the control thread; callbacks run there.
class NvmfTarget {
 public:
  using Done = absl::AnyInvocable<void(absl::Status)>;

  NvmfTarget(Reactor& control, ReactorSet& reactors, BdevManager& bdevs);
  ~NvmfTarget();
  NvmfTarget(const NvmfTarget&) = delete;
  NvmfTarget& operator=(const NvmfTarget&) = delete;

  // Errors: AlreadyExists if a TCP transport exists.
  absl::Status CreateTransport(const TransportOptions& options);
  TcpTransport* transport() { return transport_.get(); }
  // The vfio-user transport (control plane only). Errors: AlreadyExists.
  absl::Status CreateVfioUserTransport(const VfioUserTransportOptions& options);
  VfioUserTransport* vfio_user_transport() { return vfio_user_.get(); }
  // nvmf_get_transports: the transports in creation order, each as SPDK shows it.
  Json DescribeTransports() const;

  // Errors: InvalidArgument (bad NQN / serial / model / cntlid range), AlreadyExists.
  absl::Status CreateSubsystem(const SubsystemParams& params);
  // Removes every namespace, listener and host, then the subsystem. Errors: NotFound.
  void DeleteSubsystem(const std::string& nqn, Done done);
  Subsystem* Find(const std::string& nqn);
  std::vector<Subsystem*> List();  // discovery subsystem first, then creation order

  // Errors: NotFound (subsystem), FailedPrecondition (no transport of the address's trtype),
  // AlreadyExists (listener present), Unavailable (bind failed: address in use or not local; for
  // vfio-user, traddr not an existing directory or already used by another subsystem).
  // Removing a vfio-user listener (or deleting its subsystem) removes its `<traddr>/cntrl` socket.
  void AddListener(const std::string& nqn, const ListenAddress& address, Done done);
  void RemoveListener(const std::string& nqn, const ListenAddress& address, Done done);

  // Result: the nsid. Errors: NotFound (subsystem or bdev), InvalidArgument (nsid out of range or in
  // use, bdev already claimed).
  void AddNamespace(const std::string& nqn, const NamespaceParams& params,
                    absl::AnyInvocable<void(absl::StatusOr<uint32_t>)> done);
  void RemoveNamespace(const std::string& nqn, uint32_t nsid, Done done);

  // Errors: NotFound (subsystem), AlreadyExists / NotFound (host), InvalidArgument (bad NQN).
  // Revoking access (RemoveHost, SetAllowAnyHost(false)) also disconnects the controllers of every host
  // that is no longer allowed, as SPDK does.
  absl::Status AddHost(const std::string& nqn, const std::string& host);
  absl::Status RemoveHost(const std::string& nqn, const std::string& host);
  absl::Status SetAllowAnyHost(const std::string& nqn, bool allow);

  // nvmf_get_stats.
  void GetStats(absl::AnyInvocable<void(Json)> done);
  // framework_get_config("nvmf"): method entries that recreate the target's configuration.
  Json ConfigEntries() const;

  // --- Connections (control thread; called by qpairs through posts) ---
  // Checks a Connect against the configuration and records the controller (admin queue, qid 0) or the
  // I/O queue. Refusals carry the NVMe status the host gets: Connect Invalid Host for a host not allowed,
  // Connect Invalid Parameters for an unknown subsystem, a listener the subsystem does not have, an
  // unknown controller or a queue id out of range or in use.
  ConnectResult Connect(const ConnectRequest& request, Reactor& reactor, std::weak_ptr<TcpQpair> qpair);
  // A qpair of controller `cntlid` closed. Closing the admin queue removes the controller and closes
  // its I/O queues.
  void QpairGone(uint32_t subsystem_id, uint16_t cntlid, uint16_t qid);
  // The discovery log page as `hostnqn` may see it: every NVM subsystem listener the host is allowed to
  // use, and the discovery subsystem's own listeners.
  std::vector<uint8_t> BuildDiscoveryLog(const std::string& hostnqn) const;
  // nvmf_subsystem_get_controllers / get_qpairs.
  Json DescribeControllers(const std::string& nqn) const;
  Json DescribeQpairs(const std::string& nqn) const;
  uint64_t discovery_generation() const { return discovery_generation_; }

  // Tears everything down (shutdown).
  void Shutdown(absl::AnyInvocable<void() &&> done);

  PollGroup& poll_group(size_t i) { return *poll_groups_[i]; }
  size_t poll_group_count() const { return poll_groups_.size(); }

 private:
  // Queues `change` on the subsystem; it receives a callback to run when finished.
  void RunChange(Subsystem& subsystem, absl::AnyInvocable<void(absl::AnyInvocable<void()>)> change);
  void FinishChange(uint32_t subsystem_id);
  // Pauses the subsystem on every poll group, publishes its namespace table, resumes; then `done`.
  void Publish(Subsystem& subsystem, absl::AnyInvocable<void() &&> done);
  void OnBdevRemoved(uint32_t subsystem_id, uint32_t nsid);
  Subsystem* FindById(uint32_t id);
  void DetachNamespaces(Subsystem& subsystem, std::vector<std::unique_ptr<Namespace>>& out, uint32_t nsid);
  // Raises a namespace attribute notice on every controller of the subsystem.
  void NotifyNamespaceChanged(uint32_t subsystem_id, uint32_t nsid);
  // Closes every qpair of every controller of the subsystem (it is being deleted).
  void DisconnectAll(uint32_t subsystem_id);
  // Closes the controllers of the subsystem whose host is no longer allowed (access was revoked).
  void DisconnectRevokedHosts(const Subsystem& subsystem);
  void AcceptConnection(int fd, Reactor& reactor);
  // Starts or stops listening on `address` with the transport of its trtype.
  absl::Status StartListening(const ListenAddress& address, const std::string& nqn);
  void StopListening(const ListenAddress& address);

  struct QpairRef {
    uint16_t qid;
    Reactor* reactor;
    std::weak_ptr<TcpQpair> qpair;
    std::string peer;
  };
  struct ControllerEntry {
    uint32_t subsystem_id;
    uint16_t cntlid;
    std::string hostnqn;
    std::array<uint8_t, 16> hostid;
    Reactor* reactor;  // the admin queue's
    std::weak_ptr<Controller> controller;
    std::vector<QpairRef> qpairs;  // admin first
  };
  std::vector<ControllerEntry> controllers_;
  uint64_t discovery_generation_ = 1;

  Reactor& control_;
  ReactorSet& reactors_;
  BdevManager& bdevs_;
  std::unique_ptr<TcpTransport> transport_;
  std::unique_ptr<VfioUserTransport> vfio_user_;
  std::vector<std::string> transport_order_;  // trtypes, in creation order
  std::vector<std::unique_ptr<PollGroup>> poll_groups_;
  std::vector<std::unique_ptr<Subsystem>> subsystems_;
  uint32_t next_subsystem_id_ = 1;
};

}  // namespace smad::tgt
