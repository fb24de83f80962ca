#include "tgt/bdev_nvme/nvme_bdev_module.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <set>

#include "common/status.h"
#include "nvme/host/controller.h"
#include "spdlog/spdlog.h"
#include "tgt/bdev_nvme/nvme_bdev.h"

namespace smad::tgt {

using bdev_nvme::CtrlrState;
using bdev_nvme::NvmeBdev;
using bdev_nvme::ReactorPath;
using bdev_nvme::SharedCtrlr;
using nvme::host::Controller;

namespace {

constexpr uint64_t kNsPerSec = 1'000'000'000ull;
constexpr char kProduct[] = "NVMe disk";

std::atomic<uint64_t> g_next_ctrlr_id{1};

bool SameNetworkPath(const nvme::host::TransportId& a, const nvme::host::TransportId& b) {
  return a.traddr == b.traddr && a.trsvcid == b.trsvcid && a.hostaddr == b.hostaddr && a.hostsvcid == b.hostsvcid;
}

}  // namespace

absl::Status CheckNvmeResiliencyParams(int64_t loss, uint32_t delay, uint32_t fast_fail) {
  if (loss < -1) return ErrnoStatus(EINVAL, "ctrlr_loss_timeout_sec can't be less than -1");
  if (loss == 0) {
    if (delay != 0 || fast_fail != 0) {
      return ErrnoStatus(EINVAL, "Both reconnect_delay_sec and fast_io_fail_timeout_sec must be 0 if "
                                 "ctrlr_loss_timeout_sec is 0");
    }
    return absl::OkStatus();
  }
  if (delay == 0) return ErrnoStatus(EINVAL, "reconnect_delay_sec can't be 0 if ctrlr_loss_timeout_sec is not 0");
  if (loss > 0 && delay > static_cast<uint64_t>(loss)) {
    return ErrnoStatus(EINVAL, "reconnect_delay_sec can't be more than ctrlr_loss_timeout_sec");
  }
  if (fast_fail != 0 && fast_fail < delay) {
    return ErrnoStatus(EINVAL, "reconnect_delay_sec can't be more than fast_io_fail_timeout_sec");
  }
  if (loss > 0 && fast_fail > static_cast<uint64_t>(loss)) {
    return ErrnoStatus(EINVAL, "fast_io_fail_timeout_sec can't be more than ctrlr_loss_timeout_sec");
  }
  return absl::OkStatus();
}

struct NvmeBdevModule::Impl {
  struct Ctrlr {
    uint64_t id = 0;
    NvmeAttachParams params;
    std::shared_ptr<SharedCtrlr> shared;
    std::unique_ptr<Controller> ctrlr;       // the current association (enabled)
    std::unique_ptr<Controller> connecting;  // a reconnect attempt
    CtrlrState state = CtrlrState::kAttaching;
    std::map<uint32_t, std::string> namespaces;  // NSID -> bdev name
    std::set<uint32_t> identifying;
    bool polling = false;
    uint64_t poll_timer = 0;
    uint64_t reconnect_timer = 0;
    uint64_t fast_fail_timer = 0;
    uint64_t reset_start_ns = 0;
    std::vector<Done> detach_waiters;
  };

  Impl(Reactor& c, BdevManager& b, Options o) : control(c), bdevs(b), options(o) {}
  ~Impl() {
    *alive = false;
    for (auto& c : ctrlrs) ClearHooks(*c);
  }

  Reactor& control;
  BdevManager& bdevs;
  Options options;
  std::vector<std::unique_ptr<Ctrlr>> ctrlrs;  // attach order
  bool shutting_down = false;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  // Wraps a callback so that it does nothing once the module is gone.
  template <typename F>
  auto Guarded(F f) {
    return [weak = std::weak_ptr<bool>(alive), f = std::move(f)](auto&&... args) mutable {
      if (weak.expired()) return;
      f(std::forward<decltype(args)>(args)...);
    };
  }

  Ctrlr* FindById(uint64_t id) {
    for (auto& c : ctrlrs) {
      if (c->id == id) return c.get();
    }
    return nullptr;
  }
  Ctrlr* FindByName(const std::string& name) const {
    for (auto& c : ctrlrs) {
      if (c->params.name == name) return c.get();
    }
    return nullptr;
  }

  Controller::Options ControllerOptions(const NvmeAttachParams& p) const {
    Controller::Options o;
    o.hdgst = p.hdgst;
    o.ddgst = p.ddgst;
    uint32_t reactors = static_cast<uint32_t>(std::max<size_t>(1, bdevs.reactors().size()));
    uint32_t wanted = p.num_io_queues == 0 ? reactors : std::min(p.num_io_queues, reactors);
    o.num_io_queues = static_cast<uint16_t>(std::clamp<uint32_t>(wanted, 1, 65535));
    if (p.fabrics_connect_timeout_us != 0) o.timeout_ns = p.fabrics_connect_timeout_us * 1000;
    return o;
  }

  void DestroyLater(std::unique_ptr<Controller> ctrlr) {
    if (ctrlr != nullptr) control.Defer([ctrlr = std::move(ctrlr)]() mutable { ctrlr.reset(); });
  }

  void ClearHooks(Ctrlr& c) {
    c.shared->request_qpair = nullptr;
    c.shared->path_failed = nullptr;
    c.shared->release_qid = nullptr;
  }

  // Runs `fn` on this controller's path of every reactor (control included), then `done` on the control
  // reactor.
  void Broadcast(uint64_t id, std::function<void(ReactorPath&)> fn, absl::AnyInvocable<void() &&> done = [] {}) {
    auto run = [id, fn](Reactor&) {
      if (ReactorPath* path = ReactorPath::Find(id)) fn(*path);
    };
    run(control);
    bdevs.ForEachReactor(run, std::move(done));
  }

  void InstallHooks(Ctrlr& c) {
    uint64_t id = c.id;
    c.shared->request_qpair = Guarded([this, id](uint64_t gen, Reactor& reactor, SharedCtrlr::QpairDone done) {
      Ctrlr* c = FindById(id);
      if (c == nullptr || c->state != CtrlrState::kEnabled || c->ctrlr == nullptr ||
          c->shared->generation.load() != gen) {
        reactor.Post([done = std::move(done)]() mutable { std::move(done)(absl::CancelledError("stale request")); });
        return;
      }
      c->ctrlr->CreateIoQueuePair(reactor, options.io_queue_depth, std::move(done));
    });
    c.shared->path_failed = Guarded([this, id](uint64_t gen, const absl::Status& why) {
      Ctrlr* c = FindById(id);
      if (c != nullptr && c->shared->generation.load() == gen) StartReset(*c, why);
    });
    c.shared->release_qid = Guarded([this, id](uint64_t gen, uint16_t qid) {
      Ctrlr* c = FindById(id);
      if (c != nullptr && c->ctrlr != nullptr && c->shared->generation.load() == gen) c->ctrlr->ReleaseIoQueue(qid);
    });
  }

  // Takes over a connected association: controller data for driver_specific, failure handling.
  void Adopt(Ctrlr& c, std::unique_ptr<Controller> ctrlr) {
    c.shared->cdata = ctrlr->data();
    c.shared->vs = ctrlr->vs();
    c.shared->max_transfer_bytes.store(ctrlr->max_transfer_bytes());
    c.shared->volatile_write_cache.store((ctrlr->data().vwc & 1) != 0);
    uint64_t id = c.id;
    uint64_t gen = c.shared->generation.load();
    ctrlr->SetFailureCallback(Guarded([this, id, gen](const absl::Status& why) {
      Ctrlr* c = FindById(id);
      if (c != nullptr && c->shared->generation.load() == gen) StartReset(*c, why);
    }));
    c.ctrlr = std::move(ctrlr);
  }

  // Registers the bdev of one namespace; its name, or the error (namespace skipped).
  absl::StatusOr<std::string> AddNamespace(Ctrlr& c, const nvme::host::NamespaceData& ns) {
    uint32_t block_size = ns.block_size();
    uint32_t format = ns.current_format();
    if (block_size == 0 || ns.nsze == 0) return ErrnoStatus(EINVAL, "namespace has no usable LBA format");
    if (format < ns.lba_formats.size() && ns.lba_formats[format].metadata_size != 0) {
      return ErrnoStatus(ENOTSUP, "namespaces with metadata are not supported");
    }
    Bdev::Params params;
    params.name = c.params.name + "n" + std::to_string(ns.nsid);
    params.uuid = bdev_nvme::NamespaceBdevUuid(ns);
    params.block_size = block_size;
    params.num_blocks = ns.nsze;
    std::string name = params.name;
    absl::Status status = bdevs.Register(std::make_unique<NvmeBdev>(std::move(params), c.shared, ns));
    if (!status.ok()) return status;
    c.namespaces[ns.nsid] = name;
    spdlog::info("bdev_nvme {}: namespace {} is bdev {} ({} blocks of {} bytes)", c.params.name, ns.nsid, name,
                 ns.nsze, block_size);
    return name;
  }

  void StartPolling(Ctrlr& c) {
    if (c.poll_timer != 0 || options.namespace_poll_ms == 0) return;
    uint64_t id = c.id;
    c.poll_timer = control.RunEvery(options.namespace_poll_ms * 1'000'000ull, Guarded([this, id] { Poll(id); }));
  }

  // --- Attach --------------------------------------------------------------------------------------

  void Attach(NvmeAttachParams params, AttachDone done) {
    if (shutting_down) return done(ErrnoStatus(ESHUTDOWN));
    if (params.name.empty()) return done(ErrnoStatus(EINVAL, "controller name must not be empty"));
    absl::Status valid = CheckNvmeResiliencyParams(params.ctrlr_loss_timeout_sec, params.reconnect_delay_sec,
                                         params.fast_io_fail_timeout_sec);
    if (!valid.ok()) return done(valid);
    if (Ctrlr* existing = FindByName(params.name)) {
      const auto& t = existing->params.trid;
      const std::string& name = params.name;
      if (params.multipath == "disable") {
        return done(ErrnoStatus(EALREADY, "A controller named " + name + " already exists and multipath is disabled"));
      }
      if (SameNetworkPath(params.trid, t)) {
        return done(
            ErrnoStatus(EALREADY, "A controller named " + name + " already exists with the specified network path"));
      }
      if (params.trid.subnqn != t.subnqn) {
        return done(ErrnoStatus(
            EINVAL, "A controller named " + name + " already exists, but uses a different subnqn (" + t.subnqn + ")"));
      }
      if (params.trid.hostnqn != t.hostnqn) {
        return done(ErrnoStatus(EINVAL, "A controller named " + name +
                                            " already exists, but uses a different hostnqn (" + t.hostnqn + ")"));
      }
      return done(ErrnoStatus(EEXIST, "A controller named " + name +
                                          " already exists; smad-tgt does not support a second path (multipath)"));
    }
    for (const auto& c : ctrlrs) {
      const auto& t = c->params.trid;
      if (t.traddr == params.trid.traddr && t.trsvcid == params.trid.trsvcid && t.subnqn == params.trid.subnqn &&
          t.hostnqn == params.trid.hostnqn) {
        return done(ErrnoStatus(EEXIST));
      }
    }

    auto c = std::make_unique<Ctrlr>();
    c->id = g_next_ctrlr_id.fetch_add(1);
    c->params = std::move(params);
    c->shared = std::make_shared<SharedCtrlr>();
    c->shared->id = c->id;
    c->shared->name = c->params.name;
    c->shared->control = &control;
    c->shared->max_queued_io = options.max_queued_io;
    c->shared->io_queue_depth = options.io_queue_depth;
    c->shared->trid = c->params.trid;
    c->connecting = std::make_unique<Controller>(control, c->params.trid, ControllerOptions(c->params));
    Controller* raw = c->connecting.get();
    uint64_t id = c->id;
    ctrlrs.push_back(std::move(c));
    auto shared_done = std::make_shared<AttachDone>(std::move(done));
    raw->Connect([this, weak = std::weak_ptr<bool>(alive), id, shared_done](absl::Status status) {
      if (weak.expired()) return (*shared_done)(ErrnoStatus(ECANCELED));
      OnAttachConnected(id, status, shared_done);
    });
  }

  // Forgets a controller whose attach failed and answers `done`: SPDK reports every connection or
  // initialization failure as EIO; `answer` overrides that.
  void FailAttach(uint64_t id, const absl::Status& why, const std::shared_ptr<AttachDone>& done,
                  absl::Status answer = ErrnoStatus(EIO)) {
    auto it = std::find_if(ctrlrs.begin(), ctrlrs.end(), [id](const auto& c) { return c->id == id; });
    if (it != ctrlrs.end()) {
      std::unique_ptr<Ctrlr> c = std::move(*it);
      ctrlrs.erase(it);
      spdlog::warn("bdev_nvme {}: attach to {} failed: {}", c->params.name, c->params.trid.Describe(), why.ToString());
      ClearHooks(*c);
      DestroyLater(std::move(c->connecting));
      DestroyLater(std::move(c->ctrlr));
    }
    (*done)(std::move(answer));
  }

  void OnAttachConnected(uint64_t id, const absl::Status& status, const std::shared_ptr<AttachDone>& done) {
    Ctrlr* c = FindById(id);
    if (c == nullptr) return (*done)(ErrnoStatus(ECANCELED));
    if (!status.ok()) return FailAttach(id, status, done);
    std::unique_ptr<Controller> ctrlr = std::move(c->connecting);
    if (ctrlr->is_discovery()) {
      DestroyLater(std::move(ctrlr));
      absl::Status why = ErrnoStatus(EINVAL, "the subsystem is a discovery subsystem");
      return FailAttach(id, why, done, why);
    }
    Controller* raw = ctrlr.get();
    Adopt(*c, std::move(ctrlr));
    raw->Namespaces(Guarded([this, id, done](absl::StatusOr<std::vector<nvme::host::NamespaceData>> list) {
      Ctrlr* c = FindById(id);
      if (c == nullptr) return (*done)(ErrnoStatus(ECANCELED));
      if (!list.ok()) return FailAttach(id, list.status(), done);
      std::vector<std::string> names;
      for (const auto& ns : *list) {
        auto name = AddNamespace(*c, ns);
        if (name.ok()) {
          names.push_back(*name);
        } else {
          spdlog::warn("bdev_nvme {}: namespace {} not exposed: {}", c->params.name, ns.nsid,
                       name.status().ToString());
        }
      }
      c->state = CtrlrState::kEnabled;
      InstallHooks(*c);
      c->shared->io_ready.store(true);
      StartPolling(*c);
      spdlog::info("bdev_nvme {}: attached to {} (cntlid {}), {} bdevs", c->params.name,
                   c->params.trid.Describe(), c->shared->cdata.cntlid, names.size());
      (*done)(std::move(names));
    }));
  }

  // --- Namespace changes ----------------------------------------------------------------------------

  void Poll(uint64_t id) {
    Ctrlr* c = FindById(id);
    if (c == nullptr || c->state != CtrlrState::kEnabled || c->polling || c->ctrlr == nullptr) return;
    c->polling = true;
    c->ctrlr->ActiveNamespaces(Guarded([this, id](absl::StatusOr<std::vector<uint32_t>> list) {
      Ctrlr* c = FindById(id);
      if (c == nullptr) return;
      c->polling = false;
      if (!list.ok() || c->state != CtrlrState::kEnabled) return;  // a dead admin queue resets the controller
      std::set<uint32_t> active(list->begin(), list->end());
      for (auto it = c->namespaces.begin(); it != c->namespaces.end();) {
        if (active.count(it->first)) {
          ++it;
          continue;
        }
        spdlog::info("bdev_nvme {}: namespace {} is gone; removing bdev {}", c->params.name, it->first, it->second);
        bdevs.Unregister(it->second, kProduct, [](absl::Status) {});
        it = c->namespaces.erase(it);
      }
      for (uint32_t nsid : active) {
        if (c->namespaces.count(nsid) || c->identifying.count(nsid)) continue;
        c->identifying.insert(nsid);
        c->ctrlr->IdentifyNamespace(nsid, Guarded([this, id, nsid](absl::StatusOr<nvme::host::NamespaceData> ns) {
          Ctrlr* c = FindById(id);
          if (c == nullptr) return;
          c->identifying.erase(nsid);
          if (!ns.ok() || c->state != CtrlrState::kEnabled || c->namespaces.count(nsid)) return;
          auto name = AddNamespace(*c, *ns);
          if (!name.ok()) {
            spdlog::warn("bdev_nvme {}: new namespace {} not exposed: {}", c->params.name, nsid,
                         name.status().ToString());
          }
        }));
      }
    }));
  }

  // --- Loss and reconnect ----------------------------------------------------------------------------

  void StartReset(Ctrlr& c, const absl::Status& why) {
    if (c.state == CtrlrState::kDeleting) {
      // Nothing to reconnect; make sure I/O stuck on dead queue pairs finishes so deletion can complete.
      Broadcast(c.id, [why](ReactorPath& p) { p.OnDown(why); });
      return;
    }
    if (c.state != CtrlrState::kEnabled) return;
    spdlog::warn("bdev_nvme {}: connection to {} lost ({}); resetting", c.params.name, c.params.trid.Describe(),
                 why.ToString());
    c.state = CtrlrState::kResetting;
    c.shared->io_ready.store(false);
    c.shared->generation.fetch_add(1);
    c.reset_start_ns = NowNs();
    DestroyLater(std::move(c.ctrlr));
    Broadcast(c.id, [why](ReactorPath& p) { p.OnDown(why); });
    uint64_t id = c.id;
    if (c.params.fast_io_fail_timeout_sec != 0) {
      c.fast_fail_timer = control.RunAfter(c.params.fast_io_fail_timeout_sec * kNsPerSec, Guarded([this, id] {
        Ctrlr* c = FindById(id);
        if (c == nullptr) return;
        c->fast_fail_timer = 0;
        if (c->state != CtrlrState::kResetting && c->state != CtrlrState::kReconnectDelayed) return;
        spdlog::warn("bdev_nvme {}: fast_io_fail_timeout_sec expired; failing I/O", c->params.name);
        c->shared->fail_io.store(true);
        Broadcast(id, [](ReactorPath& p) { p.FailWaiting(); });
      }));
    }
    Reconnect(c);
  }

  void Reconnect(Ctrlr& c) {
    c.reconnect_timer = 0;
    c.state = CtrlrState::kResetting;
    c.connecting = std::make_unique<Controller>(control, c.params.trid, ControllerOptions(c.params));
    uint64_t id = c.id;
    c.connecting->Connect(Guarded([this, id](absl::Status status) {
      if (Ctrlr* c = FindById(id)) OnReconnect(*c, status);
    }));
  }

  void OnReconnect(Ctrlr& c, const absl::Status& status) {
    std::unique_ptr<Controller> ctrlr = std::move(c.connecting);
    if (c.state == CtrlrState::kDeleting) return DestroyLater(std::move(ctrlr));
    if (status.ok()) {
      Adopt(c, std::move(ctrlr));
      c.state = CtrlrState::kEnabled;
      if (c.fast_fail_timer != 0) control.CancelTimer(c.fast_fail_timer);
      c.fast_fail_timer = 0;
      c.shared->fail_io.store(false);
      c.shared->io_ready.store(true);
      uint64_t gen = c.shared->generation.load();
      spdlog::info("bdev_nvme {}: reconnected to {} (cntlid {})", c.params.name, c.params.trid.Describe(),
                   c.shared->cdata.cntlid);
      Broadcast(c.id, [gen](ReactorPath& p) { p.OnUp(gen); });
      Poll(c.id);
      return;
    }
    DestroyLater(std::move(ctrlr));
    uint64_t elapsed_sec = (NowNs() - c.reset_start_ns) / kNsPerSec;
    if (c.params.reconnect_delay_sec == 0) {
      spdlog::warn("bdev_nvme {}: reconnect failed ({}); controller failed", c.params.name, status.ToString());
      c.state = CtrlrState::kFailed;
      c.shared->fail_io.store(true);
      Broadcast(c.id, [](ReactorPath& p) { p.FailWaiting(); });
    } else if (c.params.ctrlr_loss_timeout_sec > 0 &&
               elapsed_sec >= static_cast<uint64_t>(c.params.ctrlr_loss_timeout_sec)) {
      spdlog::warn("bdev_nvme {}: ctrlr_loss_timeout_sec ({}) expired ({}); deleting the controller",
                   c.params.name, c.params.ctrlr_loss_timeout_sec, status.ToString());
      Delete(c, nullptr);
    } else {
      spdlog::info("bdev_nvme {}: reconnect failed ({}); next try in {} s", c.params.name, status.ToString(),
                   c.params.reconnect_delay_sec);
      c.state = CtrlrState::kReconnectDelayed;
      uint64_t id = c.id;
      c.reconnect_timer = control.RunAfter(c.params.reconnect_delay_sec * kNsPerSec, Guarded([this, id] {
        if (Ctrlr* c = FindById(id); c != nullptr && c->state == CtrlrState::kReconnectDelayed) Reconnect(*c);
      }));
    }
  }

  // --- Deletion --------------------------------------------------------------------------------------

  void Delete(Ctrlr& c, Done done) {
    if (done) c.detach_waiters.push_back(std::move(done));
    if (c.state == CtrlrState::kDeleting) return;
    c.state = CtrlrState::kDeleting;
    c.shared->io_ready.store(false);
    c.shared->fail_io.store(true);
    for (uint64_t* timer : {&c.poll_timer, &c.reconnect_timer, &c.fast_fail_timer}) {
      if (*timer != 0) control.CancelTimer(*timer);
      *timer = 0;
    }
    DestroyLater(std::move(c.connecting));
    uint64_t id = c.id;
    Broadcast(id, [](ReactorPath& p) { p.FailWaiting(); });
    std::map<uint32_t, std::string> namespaces;
    namespaces.swap(c.namespaces);
    auto pending = std::make_shared<size_t>(namespaces.size() + 1);
    auto one_done = [this, id, pending](absl::Status) {
      if (--*pending == 0) ShutdownAssociation(id);
    };
    for (const auto& [nsid, name] : namespaces) bdevs.Unregister(name, kProduct, Guarded(one_done));
    one_done(absl::OkStatus());
  }

  void ShutdownAssociation(uint64_t id) {
    Ctrlr* c = FindById(id);
    if (c == nullptr) return;
    if (c->ctrlr == nullptr || !c->ctrlr->connected()) return Forget(id);
    c->ctrlr->Shutdown(Guarded([this, id](absl::Status status) {
      if (!status.ok()) spdlog::warn("bdev_nvme: controller shutdown: {}", status.ToString());
      Forget(id);
    }));
  }

  void Forget(uint64_t id) {
    auto it = std::find_if(ctrlrs.begin(), ctrlrs.end(), [id](const auto& c) { return c->id == id; });
    if (it == ctrlrs.end()) return;
    std::unique_ptr<Ctrlr> c = std::move(*it);
    ctrlrs.erase(it);
    ClearHooks(*c);
    DestroyLater(std::move(c->ctrlr));
    DestroyLater(std::move(c->connecting));
    spdlog::info("bdev_nvme {}: controller deleted", c->params.name);
    for (auto& waiter : c->detach_waiters) waiter(absl::OkStatus());
  }

  Json Describe(const Ctrlr& c) const {
    const auto& t = c.params.trid;
    Json ctrlr = {{"state", bdev_nvme::CtrlrStateName(c.state)},
                  {"trid", bdev_nvme::TridJson(t)},
                  {"cntlid", c.shared->cdata.cntlid},
                  {"host", {{"nqn", t.hostnqn}, {"addr", t.hostaddr}, {"svcid", t.hostsvcid},
                            {"no_shn_notification", false}}}};
    return Json{{"name", c.params.name}, {"ctrlrs", Json::array({ctrlr})}};
  }

  Json ConfigEntry(const Ctrlr& c) const {
    const NvmeAttachParams& p = c.params;
    Json params = {{"name", p.name}};
    params.update(bdev_nvme::TridJson(p.trid));
    params["prchk_reftag"] = false;
    params["prchk_guard"] = false;
    params["ctrlr_loss_timeout_sec"] = p.ctrlr_loss_timeout_sec;
    params["reconnect_delay_sec"] = p.reconnect_delay_sec;
    params["fast_io_fail_timeout_sec"] = p.fast_io_fail_timeout_sec;
    params["hostnqn"] = p.trid.hostnqn;
    params["hdgst"] = p.hdgst;
    params["ddgst"] = p.ddgst;
    if (!p.trid.hostaddr.empty()) params["hostaddr"] = p.trid.hostaddr;
    if (!p.trid.hostsvcid.empty()) params["hostsvcid"] = p.trid.hostsvcid;
    if (p.multipath == "multipath") params["multipath"] = "multipath";
    params["fabrics_connect_timeout_us"] = p.fabrics_connect_timeout_us;
    params["num_io_queues"] = p.num_io_queues;
    params["disable_sq_flow_control"] = false;
    params["multipath_opts"] = {{"policy", "active_passive"}};
    return Json{{"method", "bdev_nvme_attach_controller"}, {"params", params}};
  }
};

NvmeBdevModule::NvmeBdevModule(Reactor& control, BdevManager& bdevs) : NvmeBdevModule(control, bdevs, Options()) {}

NvmeBdevModule::NvmeBdevModule(Reactor& control, BdevManager& bdevs, Options options)
    : impl_(std::make_unique<Impl>(control, bdevs, options)) {}

NvmeBdevModule::~NvmeBdevModule() = default;

void NvmeBdevModule::AttachController(NvmeAttachParams params, AttachDone done) {
  impl_->Attach(std::move(params), std::move(done));
}

void NvmeBdevModule::DetachController(const std::string& name, Done done) {
  Impl::Ctrlr* c = impl_->FindByName(name);
  if (c == nullptr || c->state == CtrlrState::kAttaching) return done(ErrnoStatus(ENODEV));
  impl_->Delete(*c, std::move(done));
}

bool NvmeBdevModule::HasController(const std::string& name) const { return impl_->FindByName(name) != nullptr; }

std::vector<std::string> NvmeBdevModule::ControllersOf(const std::string& discovery_service) const {
  std::vector<std::string> names;
  for (const auto& c : impl_->ctrlrs) {
    if (c->state != CtrlrState::kAttaching && c->params.discovery_service == discovery_service) {
      names.push_back(c->params.name);
    }
  }
  return names;
}

std::string NvmeBdevModule::SubnqnOf(const std::string& name) const {
  const nvme::host::TransportId* trid = TridOf(name);
  return trid == nullptr ? "" : trid->subnqn;
}

const nvme::host::TransportId* NvmeBdevModule::TridOf(const std::string& name) const {
  Impl::Ctrlr* c = impl_->FindByName(name);
  return c == nullptr ? nullptr : &c->params.trid;
}

nlohmann::json NvmeBdevModule::DescribeControllers(const std::string& name) const {
  Json out = Json::array();
  for (const auto& c : impl_->ctrlrs) {
    if (c->state == CtrlrState::kAttaching) continue;
    if (name.empty() || c->params.name == name) out.push_back(impl_->Describe(*c));
  }
  return out;
}

nlohmann::json NvmeBdevModule::ConfigEntries() const {
  Json out = Json::array();
  for (const auto& c : impl_->ctrlrs) {
    if (c->state == CtrlrState::kAttaching || c->state == CtrlrState::kDeleting) continue;
    if (!c->params.discovery_service.empty()) continue;
    out.push_back(impl_->ConfigEntry(*c));
  }
  return out;
}

void NvmeBdevModule::Shutdown(absl::AnyInvocable<void() &&> done) {
  impl_->shutting_down = true;
  std::vector<uint64_t> ids;
  for (const auto& c : impl_->ctrlrs) ids.push_back(c->id);
  auto pending = std::make_shared<size_t>(ids.size() + 1);
  auto shared_done = std::make_shared<absl::AnyInvocable<void() &&>>(std::move(done));
  auto one_done = [pending, shared_done](absl::Status) {
    if (--*pending == 0) std::move(*shared_done)();
  };
  for (uint64_t id : ids) {
    Impl::Ctrlr* c = impl_->FindById(id);
    if (c == nullptr) {
      one_done(absl::OkStatus());
    } else if (c->state == CtrlrState::kAttaching) {
      // The pending attach fails with ECANCELED when its Connect callback finds the controller gone.
      impl_->Forget(id);
      one_done(absl::OkStatus());
    } else {
      impl_->Delete(*c, one_done);
    }
  }
  one_done(absl::OkStatus());
}

}  // namespace smad::tgt
