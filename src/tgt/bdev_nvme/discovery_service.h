#pragma once

// NVMe-oF discovery services (SPDK's bdev_nvme_start_discovery): a named service keeps a connection to a
// remote discovery controller, reads its log page, attaches a bdev_nvme controller for every NVM
// subsystem listed there and detaches it when the subsystem leaves the log.
//
// Behaviour, following SPDK's bdev_nvme discovery:
//  - Controllers are named "<service name><N>", N counting from 0 per service and per new subsystem
//    NQN. A second path to a subsystem that already has a controller (from any service) is not
//    attached: SPDK adds it to that controller as a multipath trid, smad-tgt's module keeps one path per
//    controller, so the path is held in reserve and used (under the same name) when the controller's
//    own path leaves the log.
//  - Log entries of subtype "referral" and "current discovery subsystem" replace the service's list of
//    discovery endpoints ("referrals" in bdev_nvme_get_discovery_info). When the discovery connection
//    fails, the endpoint goes to the back of that list and the next one is tried after
//    Options::reconnect_delay_ns, round robin: the failover to referrals SPDK does.
//  - SPDK learns about log changes from the discovery log change AEN. The host Controller here has no
//    AER support, so the service reads the log header every Options::poll_interval_ns and the whole log
//    when the generation counter moved.
//  - A controller the module deleted on its own (ctrlr_loss_timeout_sec elapsed) is forgotten and the
//    log is read again, so it is attached again while listed (SPDK's remove_discovery_entry).
//  - Entries are untrusted network input: each is checked (ValidateDiscoveryEntry) and skipped with a
//    warning when invalid. Attaches run at most Options::max_parallel_attaches at a time, a service
//    holds at most Options::max_controllers_per_service controllers and remembers at most 256 discovery
//    endpoints per log, a failed attach is retried (same name) after Options::attach_retry_ns instead
//    of on every poll, and an endpoint that stays unreachable is logged once a minute, not every try.
//
// Thread safety: every method runs on the control reactor's thread, and every callback is called there.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "nvme/host/transport_id.h"
#include "reactor/reactor.h"
#include "tgt/bdev_nvme/nvme_bdev_module.h"

namespace smad::tgt {

class DiscoveryManager {
 public:
  struct Options {
    uint64_t poll_interval_ns = 1'000'000'000;       // log header poll while connected
    uint64_t reconnect_delay_ns = 1'000'000'000;     // between discovery connection attempts
    uint64_t attach_retry_ns = 10'000'000'000;       // before a failed attach is tried again
    uint64_t controller_timeout_ns = 10'000'000'000; // discovery controller connect / command timeout
    size_t max_parallel_attaches = 16;
    size_t max_controllers_per_service = 4096;
  };

  // bdev_nvme_start_discovery's parameters, decoded and validated by the RPC layer.
  struct StartParams {
    std::string name;
    // Where the discovery controller listens; subnqn is set to the discovery NQN. hostnqn and hostid
    // must be filled in (they are used for the discovered controllers too).
    nvme::host::TransportId trid;
    bool wait_for_attach = false;
    uint64_t attach_timeout_ms = 0;  // only with wait_for_attach; 0: no limit
    int64_t ctrlr_loss_timeout_sec = 0;
    uint32_t reconnect_delay_sec = 0;
    uint32_t fast_io_fail_timeout_sec = 0;
  };

  using Done = absl::AnyInvocable<void(absl::Status)>;

  // `module` must outlive the manager; Shutdown must complete before either is destroyed.
  DiscoveryManager(Reactor& control, NvmeBdevModule& module, Options options);
  DiscoveryManager(Reactor& control, NvmeBdevModule& module) : DiscoveryManager(control, module, Options()) {}
  ~DiscoveryManager();
  DiscoveryManager(const DiscoveryManager&) = delete;
  DiscoveryManager& operator=(const DiscoveryManager&) = delete;

  // Starts a service. Without wait_for_attach `done` gets OK at once and the service keeps trying to
  // reach the discovery controller. With it, `done` runs when the first log has been read and every
  // attach it caused has finished (attach failures do not fail the start); ETIMEDOUT when that did not
  // happen within attach_timeout_ms, or, without a limit, when the discovery controller could not be
  // connected or its log not read; the service and whatever it attached are then removed.
  // Errors (errno payload): EEXIST when a service has that name, or uses that address as its current
  // discovery endpoint or lists it as a referral.
  void Start(StartParams params, Done done);

  // Stops a service: detaches every controller it attached, disconnects the discovery controller, then
  // `done`. Errors: ENOENT (no such service), EALREADY (it is already stopping).
  void Stop(const std::string& name, Done done);

  // bdev_nvme_get_discovery_info's result: [{name, trid, referrals: [{trid}]}], services in start order.
  nlohmann::json Describe() const;
  // save_config entries: one bdev_nvme_start_discovery per running service.
  nlohmann::json ConfigEntries() const;
  // Stops every service, then `done` (process shutdown; before the module shuts down).
  void Shutdown(absl::AnyInvocable<void() &&> done);

  // Controller names the named service currently holds (attached or being attached); for tests.
  std::vector<std::string> ControllersForTest(const std::string& name) const;

 private:
  class Service;
  friend class Service;

  Service* Find(const std::string& name) const;
  // The controller another service (running or stopping) holds for `subnqn`.
  std::optional<std::string> HeldByOther(const Service* asking, const std::string& subnqn) const;
  // Moves a running service to the stopping list and stops it.
  void BeginStop(Service* service, Done done);
  // Called by a service that finished stopping; destroys it from a deferred task.
  void Finished(Service* service);
  void MaybeShutdownDone();

  Reactor& control_;
  NvmeBdevModule& module_;
  Options options_;
  std::vector<std::unique_ptr<Service>> running_;
  std::vector<std::unique_ptr<Service>> stopping_;
  std::vector<absl::AnyInvocable<void() &&>> shutdown_done_;
};

}  // namespace smad::tgt
