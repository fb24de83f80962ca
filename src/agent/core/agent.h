#pragma once

// The agent: SMA's six operations over the desired state. Each mutating call
//   1. validates the request (no target calls, nothing recorded, on bad input),
//   2. locks the device and volume keys it touches (core/key_locks.h),
//   3. records its intent durably: the new desired state plus an op row (StateStore::BeginOp),
//   4. drives the target there through the device manager,
//   5. on success completes the op; on failure undoes exactly what it did on the target and aborts the
//      op (restoring the previous desired state) before answering.
// A crash between 3 and 5 leaves a pending op: the reconciler rolls it forward (the target is made to
// match the recorded desired state), and the client, who got no answer, may retry (every call is
// idempotent).
//
// The reconciler runs at start, after every reconnection to the target (a target restart loses its
// state), and whenever a pass failed (with backoff). It re-creates what is missing, removes exposures of
// volumes smad no longer wants, re-applies QoS limits, and completes pending ops. It never touches target
// objects that smad does not manage. Operations wait while a pass runs.
//
// Thread safety: every public method may be called from any thread concurrently.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/core/crypto_engine.h"
#include "agent/core/discovery.h"
#include "agent/core/key_locks.h"
#include "agent/core/volume.h"
#include "agent/devices/device_manager.h"
#include "agent/secrets/secret_box.h"
#include "agent/spdk/target_rpc.h"
#include "agent/store/state_store.h"
#include "sma.pb.h"

namespace smad::agent {

class Agent {
 public:
  struct Options {
    std::chrono::milliseconds discovery_timeout{10000};
    std::chrono::milliseconds volume_cleanup_period{60000};
    // Backoff between failed reconciliation passes.
    std::chrono::milliseconds reconcile_retry_min{100};
    std::chrono::milliseconds reconcile_retry_max{5000};
    // Seals volume keys in the state store so crypto bdevs can be re-created after a target restart.
    // Null: keys are not kept (encrypted volumes are then not restored; a warning says so).
    const SecretBox* secrets = nullptr;
  };

  // `managers`: the enabled device managers in registration order (a later manager with the same
  // protocol replaces an earlier one, as in SPDK's SMA). `rpc`, `store` and `crypto` must outlive the
  // agent.
  Agent(Options options, TargetRpc& rpc, StateStore& store, std::vector<DeviceManager*> managers,
        CryptoEngine& crypto);
  ~Agent();  // Stop()s
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Loads the desired state and starts the background thread (reconciliation and volume cleanup). The
  // first reconciliation pass runs in the background; operations wait for it. Errors: the store's.
  absl::Status Start();
  // Stops the background thread; in-flight operations finish first. Idempotent.
  void Stop();

  absl::StatusOr<sma::CreateDeviceResponse> CreateDevice(const sma::CreateDeviceRequest& request);
  absl::Status DeleteDevice(const sma::DeleteDeviceRequest& request);
  absl::Status AttachVolume(const sma::AttachVolumeRequest& request);
  absl::Status DetachVolume(const sma::DetachVolumeRequest& request);
  absl::Status SetQos(const sma::SetQosRequest& request);
  absl::StatusOr<sma::GetQosCapabilitiesResponse> GetQosCapabilities(
      const sma::GetQosCapabilitiesRequest& request);

  // Asks for a reconciliation pass (e.g. the target restarted) and returns at once.
  void RequestReconcile();
  // Runs a pass now, in the calling thread; for tests and start-up. Errors: the first failure.
  absl::Status ReconcileNow();
  // Runs one volume cleanup pass now (tests).
  absl::Status CleanupVolumesNow();

  // True once a reconciliation pass succeeded since the last (re)connection to the target.
  bool in_sync() const { return in_sync_.load(); }

  struct Counters {
    std::atomic<uint64_t> ops_ok{0};
    std::atomic<uint64_t> ops_failed{0};
    std::atomic<uint64_t> rollbacks{0};
    std::atomic<uint64_t> reconcile_passes{0};
    std::atomic<uint64_t> reconcile_failures{0};
    std::atomic<uint64_t> volumes_cleaned{0};
  };
  const Counters& counters() const { return counters_; }

  // A snapshot of the desired state (tests, diagnostics).
  std::vector<DeviceSpec> DevicesForTest() const;
  std::vector<VolumeRecord> VolumesForTest() const;

 private:
  DeviceManager* ManagerForHandle(absl::string_view handle) const;
  DeviceManager* ManagerForProtocol(absl::string_view protocol) const;

  // Durable intent: BeginOp + mirror into memory. Completion: CompleteOp (+ final records, buffered).
  // Abort: AbortOp + restore memory.
  struct Op {
    uint64_t id = 0;
    std::vector<RecordChange> before;
  };
  absl::StatusOr<Op> BeginOp(const std::string& description, std::vector<RecordChange> changes);
  void CompleteOp(const Op& op, std::vector<RecordChange> final_changes = {});
  void AbortOp(const Op& op);
  void ApplyToMemory(const std::vector<RecordChange>& changes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);

  // Volumes (SMA's volume manager). A new remote or encrypted volume is connected in steps whose names are
  // recorded before the target sees them, so a crash leaves nothing the reconciler cannot finish or undo:
  //   PlanVolume (validation, sealed key, planned crypto bdev name; no target call) -> the op's intent ->
  //   ConnectVolume (discovery services, each recorded before it is started; the volume's references
  //   recorded; FinishConnect) -> exposure -> completion.
  absl::StatusOr<VolumeRecord> PlanVolume(const VolumeRequest& request) const;
  // On failure `record` still names what was started; the caller aborts its op, then calls CleanupCrypto
  // and ReleaseDiscovery.
  absl::Status ConnectVolume(const VolumeRequest& request, VolumeRecord& record);
  // The bdev check ("Volume could not be found"), the subsystem NQN check and the crypto bdev (Setup, or
  // Restore when `restore`).
  absl::Status FinishConnect(VolumeRecord& record, const CryptoParams* crypto, bool restore);
  // Removes the volume's crypto bdev; errors are logged.
  void CleanupCrypto(const VolumeRecord& record);
  // Stops each of `services` that smad started and no volume of the desired state references any more.
  // Errors are logged (the reconciler retries).
  void ReleaseDiscovery(const std::vector<std::string>& services) ABSL_LOCKS_EXCLUDED(discovery_mu_);
  // Checks a request for an already tracked volume against it.
  absl::Status VerifyVolume(const VolumeRequest& request, const VolumeRecord& record);
  std::optional<CryptoParams> UnsealCrypto(const VolumeRecord& record) const;
  // Durable changes outside an op (discovery records, a volume's references).
  absl::Status ApplyDurably(std::vector<RecordChange> changes);
  // Reconciliation of volumes: crypto bdevs of removed volumes, interrupted connections, discovery
  // services (stop unreferenced, start missing), crypto bdevs. Updates `volumes` (dropped ones removed).
  absl::Status ReconcileVolumes(const std::vector<PendingOp>& pending, std::vector<VolumeRecord>& volumes);
  void DropVolumeForReconcile(const VolumeRecord& volume, const std::string& why);

  // Waits until no reconciliation pass is running and the first pass has been tried.
  void WaitUntilReady();
  void BackgroundLoop();
  absl::Status ReconcilePass() ABSL_EXCLUSIVE_LOCKS_REQUIRED(ops_mu_);
  absl::Status CleanupPass();

  Options options_;
  TargetRpc& rpc_;
  StateStore& store_;
  std::vector<DeviceManager*> managers_;
  CryptoEngine& crypto_;
  KeyLocks locks_;
  Counters counters_;

  // Operations hold it shared; a reconciliation pass holds it exclusively.
  absl::Mutex ops_mu_;

  mutable absl::Mutex state_mu_;
  absl::btree_map<std::string, DeviceSpec> devices_ ABSL_GUARDED_BY(state_mu_);
  absl::btree_map<std::string, VolumeRecord> volumes_ ABSL_GUARDED_BY(state_mu_);
  absl::btree_map<std::string, DiscoveryRecord> discovery_ ABSL_GUARDED_BY(state_mu_);  // started by smad

  // Serialises decisions about discovery services (find or start, reference, release). Taken after any
  // KeyLocks keys, before state_mu_.
  absl::Mutex discovery_mu_;
  DiscoveryClient discovery_client_;

  // Background thread.
  absl::Mutex bg_mu_;
  bool stop_ ABSL_GUARDED_BY(bg_mu_) = false;
  bool reconcile_requested_ ABSL_GUARDED_BY(bg_mu_) = true;
  bool first_pass_done_ ABSL_GUARDED_BY(bg_mu_) = false;
  std::thread thread_;
  std::atomic<bool> in_sync_{false};
  uint64_t synced_epoch_ = 0;  // background thread only
};

}  // namespace smad::agent
