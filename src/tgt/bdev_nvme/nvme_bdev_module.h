#pragma once

// bdev_nvme: remote NVMe-oF/TCP namespaces as local bdevs. A named controller is one association with a
// remote subsystem (the host-side Controller of src/nvme/host); each active remote namespace becomes a bdev
// "<controller name>n<nsid>" whose UUID (and alias) is the remote namespace's UUID. The module follows the
// remote side: namespaces that appear become bdevs, namespaces that vanish are hot-removed (and with them
// any local subsystem namespace or stacked bdev that used them). A lost connection is retried every
// reconnect_delay_sec; past ctrlr_loss_timeout_sec the controller and its bdevs are deleted.
//
// Thread safety: every method runs on the control reactor's thread, and every callback is called there.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "nvme/host/transport_id.h"
#include "reactor/reactor.h"
#include "tgt/bdev/bdev_manager.h"

namespace smad::tgt {

// What bdev_nvme_attach_controller takes (already decoded and validated by the RPC layer).
struct NvmeAttachParams {
  std::string name;                 // controller name; bdevs are "<name>n<nsid>"
  nvme::host::TransportId trid;     // trtype, adrfam, traddr, trsvcid, subnqn, hostnqn, hostaddr, hostsvcid
  bool hdgst = false;
  bool ddgst = false;
  // SPDK's semantics: -1 retries forever; 0 (with reconnect_delay_sec 0) tries one immediate reconnect and,
  // when that fails, leaves the controller "failed" (bdevs kept, their I/O failing with EIO) until detached.
  int64_t ctrlr_loss_timeout_sec = 0;
  uint32_t reconnect_delay_sec = 0;
  uint32_t fast_io_fail_timeout_sec = 0;  // 0: I/O waits for the reconnect (up to ctrlr loss)
  uint32_t num_io_queues = 0;             // 0: one per data reactor
  uint64_t fabrics_connect_timeout_us = 0;  // 0: the initiator's default (10 s)
  // SPDK's multipath mode for a name already in use: "disable", "failover" (SPDK's default) or "multipath".
  // smad-tgt has one path per controller, so only the error cases of a second attach apply.
  std::string multipath = "failover";
  // Name of the discovery service that attached this controller; empty when attached by RPC.
  std::string discovery_service;
};

// SPDK's consistency rules for ctrlr_loss_timeout_sec, reconnect_delay_sec and fast_io_fail_timeout_sec
// (bdev_nvme_attach_controller and bdev_nvme_start_discovery). Errors: EINVAL naming the broken rule.
absl::Status CheckNvmeResiliencyParams(int64_t ctrlr_loss_timeout_sec, uint32_t reconnect_delay_sec,
                                       uint32_t fast_io_fail_timeout_sec);

class NvmeBdevModule {
 public:
  struct Options {
    // How often each controller's active namespace list is read to follow hot-add and hot-remove.
    uint64_t namespace_poll_ms = 1000;
    uint16_t io_queue_depth = 128;
    // I/O a data reactor holds per controller while its queue pair (re)connects; beyond it I/O fails ENOMEM.
    size_t max_queued_io = 4096;
  };

  NvmeBdevModule(Reactor& control, BdevManager& bdevs);
  NvmeBdevModule(Reactor& control, BdevManager& bdevs, Options options);
  ~NvmeBdevModule();
  NvmeBdevModule(const NvmeBdevModule&) = delete;
  NvmeBdevModule& operator=(const NvmeBdevModule&) = delete;

  using Done = absl::AnyInvocable<void(absl::Status)>;
  using AttachDone = absl::AnyInvocable<void(absl::StatusOr<std::vector<std::string>>)>;

  // Connects to the remote controller and registers a bdev per active namespace; `done` gets the bdev
  // names in NSID order. Errors (errno payload, SPDK's codes and messages): EALREADY "A controller named X
  // already exists with the specified network path" when the name is in use with the same trid (or
  // multipath is "disable"), EINVAL when it is in use with another subnqn or hostnqn, EEXIST when it is in
  // use with another path (smad-tgt has no multipath) or another controller has the same trid and hostnqn,
  // EIO when the connection or initialization fails, EINVAL for parameters the module cannot honour.
  // Namespaces that cannot become bdevs (metadata formats, a UUID or name already taken) are skipped with a
  // warning, as SPDK does.
  void AttachController(NvmeAttachParams params, AttachDone done);

  // Deletes the controller's bdevs (hot-removing them from their users), shuts the association down and
  // forgets the controller. Errors: ENODEV when no controller has that name.
  void DetachController(const std::string& name, Done done);

  bool HasController(const std::string& name) const;
  // Names of the controllers attached on behalf of a discovery service, in attach order.
  std::vector<std::string> ControllersOf(const std::string& discovery_service) const;
  // The remote subsystem NQN of a controller ("" when unknown).
  std::string SubnqnOf(const std::string& name) const;
  // The transport ID a controller was attached with; nullptr when unknown. Valid until the next call
  // that may change the set of controllers.
  const nvme::host::TransportId* TridOf(const std::string& name) const;

  // bdev_nvme_get_controllers' result: every controller, or only `name` (empty: all). Missing name: an
  // empty array (the RPC layer answers SPDK's -EINVAL "Controller X does not exist").
  nlohmann::json DescribeControllers(const std::string& name) const;

  // save_config entries: a bdev_nvme_attach_controller per controller attached by RPC (those of a
  // discovery service are recreated by it).
  nlohmann::json ConfigEntries() const;

  // Detaches every controller (process shutdown), then `done`.
  void Shutdown(absl::AnyInvocable<void() &&> done);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace smad::tgt
