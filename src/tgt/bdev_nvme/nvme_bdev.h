#pragma once

// The data path of bdev_nvme: the bdev of one remote namespace, the state of its controller that data
// reactors read, and the per-reactor I/O queue pair shared by every namespace of a controller.
// Internal to the bdev_nvme module (see nvme_bdev_module.h for the public interface).

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "nvme/host/controller.h"
#include "nvme/host/identify.h"
#include "nvme/host/queue_pair.h"
#include "nvme/host/transport_id.h"
#include "reactor/reactor.h"
#include "tgt/bdev/bdev.h"

namespace smad::tgt::bdev_nvme {

// get_controllers' "state" values are SPDK's.
enum class CtrlrState : int { kAttaching, kEnabled, kResetting, kReconnectDelayed, kFailed, kDeleting };
const char* CtrlrStateName(CtrlrState state);

// The parts of a controller that its bdevs and the data reactors see.
//
// Thread safety: the atomics may be read anywhere and are written on the control reactor. The other
// fields are control-reactor only (bdev_get_bdevs, save_config and the module run there).
struct SharedCtrlr {
  using QpairDone = absl::AnyInvocable<void(absl::StatusOr<std::unique_ptr<nvme::host::QueuePair>>) &&>;

  uint64_t id = 0;  // unique in the process; keys the per-reactor path registry
  std::string name;
  Reactor* control = nullptr;
  size_t max_queued_io = 4096;
  uint16_t io_queue_depth = 128;

  // Incremented whenever the association is replaced; queue pairs of an older generation are stale.
  std::atomic<uint64_t> generation{1};
  std::atomic<bool> io_ready{false};  // an association is up: queue pairs may be requested
  std::atomic<bool> fail_io{false};   // fast_io_fail expired, failed or deleting: no queueing, fail with EIO
  std::atomic<uint64_t> max_transfer_bytes{0};  // MDTS in bytes, 0: unlimited
  std::atomic<bool> volatile_write_cache{false};

  // Control reactor only. Asks for an I/O queue pair of generation `gen` on `reactor`; `done` runs on
  // `reactor`. Set by the module; reset to null when the controller is forgotten.
  absl::AnyInvocable<void(uint64_t gen, Reactor& reactor, QpairDone done)> request_qpair;
  // Control reactor only: a queue pair of generation `gen` failed on its own.
  absl::AnyInvocable<void(uint64_t gen, const absl::Status& why)> path_failed;
  // Control reactor only: queue ID `qid` of generation `gen` is free again.
  absl::AnyInvocable<void(uint64_t gen, uint16_t qid)> release_qid;

  // Descriptive state for driver_specific (control reactor only).
  nvme::host::TransportId trid;
  nvme::host::ControllerData cdata;
  uint32_t vs = 0;
};

// A controller's context on one data reactor: the I/O queue pair and the I/O waiting for it. Created when
// the first channel of one of the controller's bdevs opens on the reactor, destroyed (deferred) when the
// last one closes.
//
// Thread safety: reactor-affine; every method runs on its reactor.
class ReactorPath {
 public:
  // This reactor's path of `shared`, created on first use; pair with Release.
  static ReactorPath* Acquire(const std::shared_ptr<SharedCtrlr>& shared);
  // This reactor's path of controller `id`, or nullptr.
  static ReactorPath* Find(uint64_t id);
  void Release();

  // Starts `io` of `bdev` (namespace `nsid`); finishes it later, never from inside this call.
  void Submit(uint32_t nsid, BdevIo& io);

  // Broadcasts from the control reactor.
  void OnDown(const absl::Status& why);  // the association is gone: drop the queue pair, keep the I/O
  void OnUp(uint64_t gen);               // a new association: connect a queue pair of generation `gen`
  void FailWaiting();                    // fail every queued I/O with EIO (fail_io is set)

  ~ReactorPath();
  ReactorPath(const ReactorPath&) = delete;
  ReactorPath& operator=(const ReactorPath&) = delete;

 private:
  ReactorPath(std::shared_ptr<SharedCtrlr> shared, Reactor& reactor);

  void RequestQpair(uint64_t gen);
  static void OnQpair(const std::shared_ptr<SharedCtrlr>& shared, uint64_t gen, Reactor& reactor,
                      absl::StatusOr<std::unique_ptr<nvme::host::QueuePair>> qp);
  void OnQpairFailed(uint64_t gen, const absl::Status& why);
  // Hands a queue pair to a deferred task that destroys it (never inside its own callbacks).
  void DisposeQpair(std::unique_ptr<nvme::host::QueuePair> qp, uint64_t gen, bool release_qid);
  void Enqueue(BdevIo& io);
  void Drain();
  // Submits every command of `io`; false when the queue pair has too few free slots (nothing submitted).
  bool Execute(BdevIo& io);
  void OnCommandDone(BdevIo& io, const nvme::host::Completion& completion);
  static void CompleteLater(BdevIo& io, int status);

  std::shared_ptr<SharedCtrlr> shared_;
  Reactor& reactor_;
  std::unique_ptr<nvme::host::QueuePair> qp_;
  uint64_t qp_gen_ = 0;
  uint64_t wanted_gen_ = 0;  // generation of the queue pair being connected (0: none)
  bool no_queue_ = false;    // the controller has no I/O queue for this reactor: I/O fails
  std::deque<BdevIo*> waiting_;
  int refs_ = 0;
};

// One active namespace of a remote controller as a bdev ("<ctrlr>n<nsid>", product "NVMe disk").
class NvmeBdev : public Bdev {
 public:
  NvmeBdev(Params params, std::shared_ptr<SharedCtrlr> shared, nvme::host::NamespaceData ns);

  const char* product_name() const override { return "NVMe disk"; }
  bool SupportsIoType(IoType type) const override;
  std::unique_ptr<ModuleChannel> CreateModuleChannel(Reactor& reactor) override;
  void SubmitIo(ModuleChannel& channel, BdevIo& io) override;
  Json ConfigEntry() const override { return Json(); }  // recreated by bdev_nvme_attach_controller
  Json DriverSpecific() const override;
  void AmendDescription(Json& description) const override;

  uint32_t nsid() const { return ns_.nsid; }

 private:
  std::shared_ptr<SharedCtrlr> shared_;
  nvme::host::NamespaceData ns_;
  bool write_zeroes_;
  bool unmap_;
};

// The SPDK-format "trid" object: trtype, adrfam, traddr, trsvcid, subnqn.
Json TridJson(const nvme::host::TransportId& trid);

// The bdev UUID SPDK derives from a namespace: its NGUID when set, else its UUID, else null (the bdev
// layer then generates one).
Uuid NamespaceBdevUuid(const nvme::host::NamespaceData& ns);

}  // namespace smad::tgt::bdev_nvme
