#include "tgt/bdev_nvme/discovery_service.h"

#include <algorithm>
#include <deque>
#include <map>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/nqn.h"
#include "common/status.h"
#include "nvme/host/controller.h"
#include "nvme/spec.h"
#include "spdlog/spdlog.h"
#include "tgt/bdev_nvme/discovery_log.h"

namespace smad::tgt {

using Json = nlohmann::json;
using nvme::host::AddressFamily;
using nvme::host::TransportId;

namespace {

// Discovery endpoints a service remembers from one log (the log itself may list up to 64 Ki entries).
constexpr size_t kMaxReferrals = 256;

bool SameTrid(const TransportId& a, const TransportId& b) {
  return a.adrfam == b.adrfam && a.traddr == b.traddr && a.trsvcid == b.trsvcid && a.subnqn == b.subnqn;
}

Json TridJson(const TransportId& t) {
  return {{"trtype", "TCP"},
          {"adrfam", t.adrfam == AddressFamily::kIpv6 ? "IPv6" : "IPv4"},
          {"traddr", t.traddr},
          {"trsvcid", t.trsvcid},
          {"subnqn", t.subnqn}};
}

// A path from the log as a transport ID carrying the service's host identity.
TransportId TridOf(const DiscoveryPath& path, const TransportId& host) {
  TransportId trid;
  trid.adrfam = path.ipv6 ? AddressFamily::kIpv6 : AddressFamily::kIpv4;
  trid.traddr = path.traddr;
  trid.trsvcid = path.trsvcid;
  trid.subnqn = path.subnqn;
  trid.hostnqn = host.hostnqn;
  trid.hostid = host.hostid;
  return trid;
}

}  // namespace

// One discovery service. States: connecting to a discovery endpoint (or waiting to retry), polling the
// log while connected, applying a log (a round of detaches then attaches; no second round overlaps),
// stopping. Every asynchronous callback captures `alive_` (the service may be gone) and, for the
// discovery controller's callbacks, the connection epoch (a callback of a dropped controller is stale).
class DiscoveryManager::Service {
  // (Helpers first: their deduced return types are used below.)
  // Wraps a callback so that it does nothing once the service is destroyed.
  template <typename F>
  auto Guard(F f) {
    return [alive = std::weak_ptr<bool>(alive_), f = std::move(f)](auto&&... args) mutable {
      if (alive.expired()) return;
      f(std::forward<decltype(args)>(args)...);
    };
  }
  // Same, and also nothing once the discovery controller of `epoch` was dropped.
  template <typename F>
  auto GuardEpoch(F f) {
    return Guard([this, epoch = epoch_, f = std::move(f)](auto&&... args) mutable {
      if (epoch != epoch_ || stopping_) return;
      f(std::forward<decltype(args)>(args)...);
    });
  }

 public:
  Service(DiscoveryManager& owner, StartParams params)
      : owner_(owner), control_(owner.control_), module_(owner.module_), options_(owner.options_),
        params_(std::move(params)) {
    candidates_.push_back(params_.trid);
  }

  ~Service() {
    ++epoch_;
    CancelTimers();
    ctrl_.reset();  // pending operations fail now; their callbacks see the new epoch
  }

  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  const std::string& name() const { return params_.name; }
  bool stopping() const { return stopping_; }

  void Begin(Done start_done) {
    if (params_.wait_for_attach) {
      start_done_ = std::move(start_done);
      if (params_.attach_timeout_ms > 0) {
        deadline_timer_ = control_.RunAfter(params_.attach_timeout_ms * 1'000'000ull, Guard([this] {
          deadline_timer_ = 0;
          if (!initializing_) return;
          Warn("timed out after {} ms while attaching the discovered subsystems", params_.attach_timeout_ms);
          FailStart();
        }));
      }
    } else {
      std::move(start_done)(absl::OkStatus());
    }
    ConnectNext();
  }

  // Uses `trid` as its discovery endpoint now or lists it as a referral.
  bool Uses(const TransportId& trid) const {
    if (in_use_ && SameTrid(*in_use_, trid)) return true;
    return std::any_of(candidates_.begin(), candidates_.end(), [&](const TransportId& c) { return SameTrid(c, trid); });
  }

  std::optional<std::string> Holds(const std::string& subnqn) const {
    for (const DiscoveredController& c : controllers_) {
      if (c.path.subnqn == subnqn) return c.name;
    }
    return std::nullopt;
  }

  std::vector<std::string> ControllerNames() const {
    std::vector<std::string> names;
    for (const DiscoveredController& c : controllers_) names.push_back(c.name);
    return names;
  }

  Json Describe() const {
    Json referrals = Json::array();
    for (const TransportId& t : candidates_) referrals.push_back({{"trid", TridJson(t)}});
    return {{"name", params_.name}, {"trid", TridJson(params_.trid)}, {"referrals", std::move(referrals)}};
  }

  Json ConfigEntry() const {
    Json trid = TridJson(params_.trid);
    trid.erase("subnqn");  // SPDK writes the trid without the (implied) discovery NQN
    Json p = {{"name", params_.name}, {"hostnqn", params_.trid.hostnqn}};
    p.update(trid);
    p["wait_for_attach"] = params_.wait_for_attach;
    p["ctrlr_loss_timeout_sec"] = params_.ctrlr_loss_timeout_sec;
    p["reconnect_delay_sec"] = params_.reconnect_delay_sec;
    p["fast_io_fail_timeout_sec"] = params_.fast_io_fail_timeout_sec;
    return {{"method", "bdev_nvme_start_discovery"}, {"params", std::move(p)}};
  }

  // Detaches everything, disconnects, then `done` (OK). Called once, by the manager.
  void Stop(Done done) {
    stopping_ = true;
    stop_done_ = std::move(done);
    CancelTimers();
    if (start_done_) CompleteStart(ErrnoStatus(ECANCELED, "discovery service stopped while starting"));
    attach_queue_.clear();
    ContinueStop();
  }

 private:
  enum class StopStage { kWaitOps, kDetaching, kDisconnecting, kDone };

  template <typename... Args>
  void Warn(fmt::format_string<Args...> format, Args&&... args) const {
    spdlog::warn("discovery {} ({}:{}): {}", params_.name, params_.trid.traddr, params_.trid.trsvcid,
                 fmt::format(format, std::forward<Args>(args)...));
  }
  template <typename... Args>
  void Info(fmt::format_string<Args...> format, Args&&... args) const {
    spdlog::info("discovery {} ({}:{}): {}", params_.name, params_.trid.traddr, params_.trid.trsvcid,
                 fmt::format(format, std::forward<Args>(args)...));
  }

  void CancelTimers() {
    for (uint64_t* t : {&deadline_timer_, &reconnect_timer_, &poll_timer_}) {
      if (*t != 0) control_.CancelTimer(*t);
      *t = 0;
    }
  }

  void CompleteStart(absl::Status status) {
    if (deadline_timer_ != 0) control_.CancelTimer(deadline_timer_);
    deadline_timer_ = 0;
    if (start_done_) std::exchange(start_done_, nullptr)(std::move(status));
  }

  // The start failed (wait_for_attach): answer ETIMEDOUT, then remove the service and its controllers.
  void FailStart() {
    initializing_ = false;
    CompleteStart(ErrnoStatus(ETIMEDOUT));
    owner_.BeginStop(this, [](absl::Status) {});
  }

  // Destroys the discovery controller from a deferred task (its own callback may be on the stack).
  void DropController() {
    ++epoch_;
    reading_ = false;
    if (!ctrl_) return;
    control_.Defer([ctrl = std::move(ctrl_)]() mutable { ctrl.reset(); });
  }

  void ConnectNext() {
    reconnect_timer_ = 0;
    if (stopping_ || ctrl_ || candidates_.empty()) return;
    in_use_ = candidates_.front();
    candidates_.pop_front();
    nvme::host::Controller::Options copts;
    copts.timeout_ns = options_.controller_timeout_ns;
    copts.admin_queue_depth = 8;
    ctrl_ = std::make_unique<nvme::host::Controller>(control_, *in_use_, copts);
    ++epoch_;
    ctrl_->Connect(GuardEpoch([this](absl::Status status) {
      if (!status.ok()) return OnDiscoveryFailure(status, "connect");
      Info("connected to the discovery controller at {}", in_use_->Describe());
      failures_ = 0;
      ctrl_->SetFailureCallback(
          GuardEpoch([this](const absl::Status& s) { OnDiscoveryFailure(s, "connection lost"); }));
      last_genctr_.reset();
      Poll();
    }));
  }

  void OnDiscoveryFailure(const absl::Status& status, const char* what) {
    // An endpoint that stays unreachable is reported on the first failure, then once a minute or so.
    if (failures_++ % 60 == 0) {
      Warn("discovery controller {}: {}: {} (failure {})", in_use_ ? in_use_->Describe() : "?", what,
           status.ToString(), failures_);
    }
    DropController();
    if (poll_timer_ != 0) control_.CancelTimer(poll_timer_);
    poll_timer_ = 0;
    if (in_use_) candidates_.push_back(*std::exchange(in_use_, std::nullopt));
    // wait_for_attach without a time limit: an unreachable discovery controller fails the start (SPDK
    // would retry forever and never answer).
    if (initializing_ && !round_active_ && start_done_ && params_.attach_timeout_ms == 0) return FailStart();
    if (reconnect_timer_ == 0) {
      reconnect_timer_ = control_.RunAfter(options_.reconnect_delay_ns, Guard([this] { ConnectNext(); }));
    }
  }

  void SchedulePoll() {
    if (stopping_ || !ctrl_ || !ctrl_->connected() || poll_timer_ != 0) return;
    poll_timer_ = control_.RunAfter(options_.poll_interval_ns, Guard([this] {
      poll_timer_ = 0;
      Poll();
    }));
  }

  // Reads the log header; the whole log when it changed (or something else asks for a fresh look).
  void Poll() {
    if (stopping_ || !ctrl_ || !ctrl_->connected() || reading_ || round_active_) return;
    bool force = !last_genctr_.has_value();
    // Controllers the module deleted on its own are forgotten, and attached again while listed.
    for (auto it = controllers_.begin(); it != controllers_.end();) {
      if (module_.HasController(it->name)) {
        ++it;
        continue;
      }
      Info("controller {} is gone; reading the log again", it->name);
      it = controllers_.erase(it);
      force = true;
    }
    // A subsystem held in reserve whose controller went away may be attached now.
    for (const DiscoveryPath& p : standby_) {
      if (!Holds(p.subnqn) && !owner_.HeldByOther(this, p.subnqn)) force = true;
    }
    // A failed attach whose retry time came.
    for (const auto& [key, f] : failed_) {
      (void)key;
      if (f.retry_at_ns <= NowNs()) force = true;
    }
    reading_ = true;
    if (force) return ReadLog();
    ctrl_->GetLogPage(nvme::log_page::kDiscovery, 0, 0, nvme::kDiscoveryHeaderSize,
                      GuardEpoch([this](absl::StatusOr<std::vector<uint8_t>> data) {
                        reading_ = false;
                        if (!data.ok()) return OnDiscoveryFailure(data.status(), "log header");
                        auto header = nvme::host::ParseDiscoveryHeader(*data);
                        if (!header.ok()) return OnDiscoveryFailure(header.status(), "log header");
                        if (last_genctr_ == header->genctr) return SchedulePoll();
                        reading_ = true;
                        ReadLog();
                      }));
  }

  void ReadLog() {
    ctrl_->GetDiscoveryLog(GuardEpoch([this](absl::StatusOr<nvme::host::DiscoveryLog> log) {
      reading_ = false;
      if (!log.ok()) return OnDiscoveryFailure(log.status(), "discovery log");
      Apply(*log);
    }));
  }

  void Apply(const nvme::host::DiscoveryLog& log) {
    ClassifiedLog classified = ClassifyDiscoveryLog(log);
    if (classified.invalid > 0) {
      Warn("skipped {} of {} log entries (generation {}): {}{}", classified.invalid, log.entries.size(), log.genctr,
           absl::StrJoin(classified.reasons, "; "), classified.invalid > classified.reasons.size() ? "; ..." : "");
    }
    candidates_.clear();
    for (const DiscoveryPath& p : classified.referrals) {
      if (candidates_.size() == kMaxReferrals) {
        Warn("log lists {} discovery endpoints; keeping the first {}", classified.referrals.size(), kMaxReferrals);
        break;
      }
      candidates_.push_back(TridOf(p, params_.trid));
    }

    DiscoveryPlanInput input;
    input.service_name = params_.name;
    input.current = &controllers_;
    input.listed = &classified.subsystems;
    input.failed = &failed_;
    input.held_elsewhere = [this](const std::string& subnqn) { return owner_.HeldByOther(this, subnqn); };
    input.now_ns = NowNs();
    input.max_controllers = options_.max_controllers_per_service;
    DiscoveryPlan plan = PlanDiscoveryRound(input, &next_index_);
    if (plan.over_limit > 0) {
      Warn("{} listed subsystems not attached: the service holds at most {} controllers", plan.over_limit,
           options_.max_controllers_per_service);
    }
    last_genctr_ = log.genctr;
    // Only failures still waiting for their retry are kept: the others are retried in this round (and
    // come back on failure), or their path left the log or is now held in reserve.
    absl::flat_hash_set<std::string> listed;
    for (const DiscoveryPath& p : classified.subsystems) listed.insert(p.Key());
    for (auto it = failed_.begin(); it != failed_.end();) {
      bool waiting = listed.contains(it->first) && it->second.retry_at_ns > input.now_ns;
      it = waiting ? std::next(it) : failed_.erase(it);
    }
    standby_ = std::move(plan.standby);
    controllers_ = std::move(plan.keep);
    attach_queue_.assign(plan.attach.begin(), plan.attach.end());
    round_active_ = true;
    for (const std::string& name : plan.detach) {
      Info("subsystem of controller {} left the log; detaching it", name);
      ++detaches_in_flight_;
      module_.DetachController(name, Guard([this, name](absl::Status status) {
        --detaches_in_flight_;
        if (!status.ok()) Warn("detaching {}: {}", name, status.ToString());
        Pump();
      }));
    }
    Pump();
  }

  // Starts queued attaches (after the round's detaches, up to the parallel limit) and ends the round
  // when nothing is left.
  void Pump() {
    if (stopping_) return ContinueStop();
    while (detaches_in_flight_ == 0 && attaches_in_flight_ < options_.max_parallel_attaches &&
           !attach_queue_.empty()) {
      DiscoveredController c = std::move(attach_queue_.front());
      attach_queue_.pop_front();
      StartAttach(std::move(c));
    }
    if (detaches_in_flight_ > 0 || attaches_in_flight_ > 0 || !attach_queue_.empty()) return;
    round_active_ = false;
    if (initializing_) {
      initializing_ = false;
      Info("started: {} controllers", controllers_.size());
      CompleteStart(absl::OkStatus());
    }
    SchedulePoll();
  }

  void StartAttach(DiscoveredController c) {
    NvmeAttachParams p;
    p.name = c.name;
    p.trid = TridOf(c.path, params_.trid);
    p.ctrlr_loss_timeout_sec = params_.ctrlr_loss_timeout_sec;
    p.reconnect_delay_sec = params_.reconnect_delay_sec;
    p.fast_io_fail_timeout_sec = params_.fast_io_fail_timeout_sec;
    p.discovery_service = params_.name;
    controllers_.push_back(c);
    ++attaches_in_flight_;
    module_.AttachController(std::move(p), Guard([this, c](absl::StatusOr<std::vector<std::string>> bdevs) {
      --attaches_in_flight_;
      // The name in use with this very path (a retry after an answer got lost) counts as attached.
      bool ok = bdevs.ok() || StatusErrno(bdevs.status()) == EALREADY;
      if (ok) {
        failed_.erase(c.path.Key());
        if (bdevs.ok()) Info("attached {} ({}): {} bdevs", c.name, c.path.Key(), bdevs->size());
      } else {
        Warn("attaching {} ({}) failed, retrying in {} s: {}", c.name, c.path.Key(), options_.attach_retry_ns / 1'000'000'000,
             bdevs.status().ToString());
        controllers_.erase(std::remove_if(controllers_.begin(), controllers_.end(),
                                          [&](const DiscoveredController& x) { return x.name == c.name; }),
                           controllers_.end());
        failed_[c.path.Key()] = {c.name, NowNs() + options_.attach_retry_ns};
      }
      Pump();
    }));
  }

  void ContinueStop() {
    if (stop_stage_ == StopStage::kWaitOps) {
      if (attaches_in_flight_ > 0 || detaches_in_flight_ > 0) return;  // their callbacks come back here
      stop_stage_ = StopStage::kDetaching;
      for (const DiscoveredController& c : controllers_) {
        if (!module_.HasController(c.name)) continue;
        ++detaches_in_flight_;
        module_.DetachController(c.name, Guard([this, name = c.name](absl::Status status) {
          --detaches_in_flight_;
          if (!status.ok()) Warn("detaching {}: {}", name, status.ToString());
          ContinueStop();
        }));
      }
      controllers_.clear();
    }
    if (stop_stage_ == StopStage::kDetaching) {
      if (detaches_in_flight_ > 0) return;
      stop_stage_ = StopStage::kDisconnecting;
      ++epoch_;  // ignore whatever the discovery controller still reports
      if (ctrl_ && ctrl_->connected()) {
        ctrl_->Shutdown(Guard([this](absl::Status) { FinishStop(); }));
        return;
      }
      return FinishStop();
    }
  }

  void FinishStop() {
    if (stop_stage_ == StopStage::kDone) return;
    stop_stage_ = StopStage::kDone;
    DropController();
    Info("stopped");
    if (stop_done_) std::exchange(stop_done_, nullptr)(absl::OkStatus());
    owner_.Finished(this);
  }

  DiscoveryManager& owner_;
  Reactor& control_;
  NvmeBdevModule& module_;
  const Options& options_;
  StartParams params_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);

  // Discovery endpoints to try, in order (SPDK's list, shown as "referrals"), and the one in use.
  std::deque<TransportId> candidates_;
  std::optional<TransportId> in_use_;
  std::unique_ptr<nvme::host::Controller> ctrl_;
  uint64_t epoch_ = 0;
  std::optional<uint64_t> last_genctr_;
  bool reading_ = false;
  uint64_t failures_ = 0;  // consecutive discovery connection failures

  std::vector<DiscoveredController> controllers_;  // attached or being attached
  std::vector<DiscoveryPath> standby_;
  std::map<std::string, FailedAttach> failed_;
  uint32_t next_index_ = 0;
  std::deque<DiscoveredController> attach_queue_;
  size_t attaches_in_flight_ = 0;
  size_t detaches_in_flight_ = 0;
  bool round_active_ = false;

  bool initializing_ = true;
  Done start_done_;
  bool stopping_ = false;
  StopStage stop_stage_ = StopStage::kWaitOps;
  Done stop_done_;

  uint64_t deadline_timer_ = 0;
  uint64_t reconnect_timer_ = 0;
  uint64_t poll_timer_ = 0;
};

DiscoveryManager::DiscoveryManager(Reactor& control, NvmeBdevModule& module, Options options)
    : control_(control), module_(module), options_(options) {}

DiscoveryManager::~DiscoveryManager() = default;

DiscoveryManager::Service* DiscoveryManager::Find(const std::string& name) const {
  for (const auto& s : running_) {
    if (s->name() == name) return s.get();
  }
  return nullptr;
}

std::optional<std::string> DiscoveryManager::HeldByOther(const Service* asking, const std::string& subnqn) const {
  for (const auto* list : {&running_, &stopping_}) {
    for (const auto& s : *list) {
      if (s.get() == asking) continue;
      if (auto name = s->Holds(subnqn)) return name;
    }
  }
  return std::nullopt;
}

void DiscoveryManager::Start(StartParams params, Done done) {
  params.trid.subnqn = std::string(kDiscoveryNqn);
  for (const auto& s : running_) {
    if (s->name() == params.name || s->Uses(params.trid)) return done(ErrnoStatus(EEXIST));
  }
  running_.push_back(std::make_unique<Service>(*this, std::move(params)));
  running_.back()->Begin(std::move(done));
}

void DiscoveryManager::Stop(const std::string& name, Done done) {
  if (Service* s = Find(name)) return BeginStop(s, std::move(done));
  for (const auto& s : stopping_) {
    if (s->name() == name) return done(ErrnoStatus(EALREADY));
  }
  done(ErrnoStatus(ENOENT));
}

void DiscoveryManager::BeginStop(Service* service, Done done) {
  auto it = std::find_if(running_.begin(), running_.end(), [&](const auto& s) { return s.get() == service; });
  if (it == running_.end()) return done(ErrnoStatus(EALREADY));
  stopping_.push_back(std::move(*it));
  running_.erase(it);
  service->Stop(std::move(done));
}

void DiscoveryManager::Finished(Service* service) {
  control_.Defer([this, service] {
    auto it = std::find_if(stopping_.begin(), stopping_.end(), [&](const auto& s) { return s.get() == service; });
    if (it != stopping_.end()) stopping_.erase(it);
    MaybeShutdownDone();
  });
}

void DiscoveryManager::MaybeShutdownDone() {
  if (shutdown_done_.empty() || !running_.empty() || !stopping_.empty()) return;
  auto callbacks = std::move(shutdown_done_);
  shutdown_done_.clear();
  for (auto& cb : callbacks) std::move(cb)();
}

Json DiscoveryManager::Describe() const {
  Json out = Json::array();
  for (const auto& s : running_) out.push_back(s->Describe());
  return out;
}

Json DiscoveryManager::ConfigEntries() const {
  Json out = Json::array();
  for (const auto& s : running_) out.push_back(s->ConfigEntry());
  return out;
}

void DiscoveryManager::Shutdown(absl::AnyInvocable<void() &&> done) {
  shutdown_done_.push_back(std::move(done));
  while (!running_.empty()) BeginStop(running_.front().get(), [](absl::Status) {});
  MaybeShutdownDone();
}

std::vector<std::string> DiscoveryManager::ControllersForTest(const std::string& name) const {
  Service* s = Find(name);
  return s ? s->ControllerNames() : std::vector<std::string>();
}

}  // namespace smad::tgt
