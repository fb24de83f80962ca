#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "nvme/spec.h"
#include "reactor/reactor.h"
#include "tgt/nvmf/tcp_qpair.h"

namespace smad::tgt {

// What a controller knows about its subsystem and host, captured on the control thread when the admin
// queue connected. Immutable afterwards.
struct ControllerInfo {
  uint32_t subsystem_id = 0;
  bool discovery = false;
  uint16_t cntlid = 0;
  std::string subnqn;
  std::string hostnqn;
  std::array<uint8_t, 16> hostid{};
  std::string serial_number;
  std::string model_number;
  uint32_t max_namespaces = 0;
  uint32_t kato_ms = 0;
};

// The NVMe controller behind an admin queue: properties (CAP, VS, CC, CSTS), Identify, Get Log Page
// (including the discovery log), features, asynchronous events and the keep-alive timer. I/O queues of
// the same controller live on other qpairs (possibly other reactors) and only need the subsystem.
//
// Thread safety: reactor-affine to the admin qpair's reactor. The control thread reaches it by posting
// (NotifyNamespaceChanged, Shutdown) through a weak_ptr.
class Controller : public std::enable_shared_from_this<Controller> {
 public:
  Controller(ControllerInfo info, std::weak_ptr<TcpQpair> admin, NvmfTarget& target, Reactor& control);
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  const ControllerInfo& info() const { return info_; }
  // Starts the keep-alive timer (on the admin reactor).
  void Start();
  // Admin commands and fabrics Property Get/Set received on the admin queue.
  void HandleAdmin(TcpQpair& qpair, Request& req);
  // A namespace was added to or removed from the subsystem: queue a Namespace Attribute Changed event.
  void NotifyNamespaceChanged(uint32_t nsid);
  // The admin queue closed: stop timers and fail outstanding AERs.
  void OnAdminClosed();
  // Forgets the outstanding Asynchronous Event Request with command ID `cid` (the host reused the ID, so
  // it abandoned the request) and frees its request without a completion. False when there is none.
  bool RetireAer(uint16_t cid);

 private:
  void PropertyGet(TcpQpair& q, Request& req);
  void PropertySet(TcpQpair& q, Request& req);
  void Identify(TcpQpair& q, Request& req);
  void GetLogPage(TcpQpair& q, Request& req);
  void SetFeatures(TcpQpair& q, Request& req);
  void GetFeatures(TcpQpair& q, Request& req);
  void AsyncEventRequest(TcpQpair& q, Request& req);
  void DeliverEvents();
  std::vector<uint8_t> IdentifyController() const;
  uint64_t Cap() const;
  void CheckKeepAlive();

  ControllerInfo info_;
  std::weak_ptr<TcpQpair> admin_;
  NvmfTarget& target_;
  Reactor& control_;
  uint32_t cc_ = 0;
  uint32_t csts_ = 0;
  uint32_t aec_ = 0;              // asynchronous event configuration
  uint16_t io_queues_ = 0;        // granted by Set Features Number of Queues (0's based + 1)
  bool queues_set_ = false;
  bool volatile_write_cache_ = true;
  std::deque<Request*> aers_;     // outstanding Asynchronous Event Requests
  std::vector<uint32_t> changed_nsids_;
  bool ns_event_pending_ = false;
  bool ns_event_masked_ = false;  // delivered, not yet acknowledged by reading log page 04h
  uint64_t last_keep_alive_ns_ = 0;
  uint64_t keep_alive_timer_ = 0;
};

}  // namespace smad::tgt
