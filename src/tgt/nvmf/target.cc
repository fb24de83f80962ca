#include "tgt/nvmf/target.h"

#include <algorithm>
#include <atomic>

#include "absl/synchronization/mutex.h"
#include "common/nqn.h"
#include "common/status.h"
#include "spdlog/spdlog.h"
#include "tgt/nvmf/controller.h"
#include "tgt/nvmf/tcp_qpair.h"

namespace smad::tgt {
namespace {

constexpr char kClaimModule[] = "NVMe-oF Target";

bool IsPrintableAscii(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c <= 0x7e; });
}

}  // namespace

bool Subsystem::HostAllowed(const std::string& hostnqn) const {
  return params_.allow_any_host || std::find(hosts_.begin(), hosts_.end(), hostnqn) != hosts_.end();
}

Json Subsystem::Describe() const {
  Json listen = Json::array();
  for (const auto& l : listeners_) listen.push_back(l.ToJson());
  Json hosts = Json::array();
  for (const auto& h : hosts_) hosts.push_back({{"nqn", h}});
  Json j = {{"nqn", params_.nqn},
            {"subtype", discovery_ ? "Discovery" : "NVMe"},
            {"listen_addresses", listen},
            {"allow_any_host", params_.allow_any_host},
            {"hosts", hosts}};
  if (discovery_) return j;
  j["serial_number"] = params_.serial_number;
  j["model_number"] = params_.model_number;
  j["max_namespaces"] = params_.max_namespaces;
  j["passthrough"] = false;
  j["min_cntlid"] = params_.min_cntlid;
  j["max_cntlid"] = params_.max_cntlid;
  j["dmrsl"] = 2097152;
  j["wzsl"] = 12;
  Json namespaces = Json::array();
  for (const auto& [nsid, ns] : namespaces_) {
    Json n = {{"nsid", nsid},
              {"bdev_name", ns->bdev_name},
              {"name", ns->bdev_name},
              {"nguid", Uuid(ns->nguid).ToHex(true)},
              {"uuid", ns->uuid.ToString()}};
    if (ns->eui64) {
      char buf[17];
      std::snprintf(buf, sizeof(buf), "%016llX", static_cast<unsigned long long>(*ns->eui64));
      n["eui64"] = buf;
    }
    namespaces.push_back(n);
  }
  j["namespaces"] = namespaces;
  return j;
}

NvmfTarget::NvmfTarget(Reactor& control, ReactorSet& reactors, BdevManager& bdevs)
    : control_(control), reactors_(reactors), bdevs_(bdevs) {
  for (size_t i = 0; i < reactors_.size(); ++i) {
    poll_groups_.push_back(std::make_unique<PollGroup>(reactors_.reactor(i), static_cast<int>(i)));
  }
  SubsystemParams discovery;
  discovery.nqn = std::string(kDiscoveryNqn);
  discovery.allow_any_host = true;
  discovery.max_namespaces = 0;
  subsystems_.push_back(std::make_unique<Subsystem>(next_subsystem_id_++, discovery, true));
}

NvmfTarget::~NvmfTarget() {
  // Poll groups must be destroyed on their reactors; Shutdown() normally emptied them. Whatever is left
  // is released here, after the reactors stopped.
  transport_.reset();
  vfio_user_.reset();
}

absl::Status NvmfTarget::CreateTransport(const TransportOptions& options) {
  if (transport_) return absl::AlreadyExistsError("Transport type 'TCP' already exists");
  transport_ = std::make_unique<TcpTransport>(control_, reactors_, options);
  transport_->SetConnectionHandler([this](int fd, Reactor& reactor) { AcceptConnection(fd, reactor); });
  transport_order_.push_back(kTrtypeTcp);
  return absl::OkStatus();
}

absl::Status NvmfTarget::CreateVfioUserTransport(const VfioUserTransportOptions& options) {
  if (vfio_user_) return absl::AlreadyExistsError("Transport type 'VFIOUSER' already exists");
  vfio_user_ = std::make_unique<VfioUserTransport>(control_, options);
  transport_order_.push_back(kTrtypeVfioUser);
  return absl::OkStatus();
}

Json NvmfTarget::DescribeTransports() const {
  Json list = Json::array();
  for (const std::string& trtype : transport_order_) {
    if (trtype == kTrtypeTcp && transport_) list.push_back(transport_->options().ToJson());
    if (trtype == kTrtypeVfioUser && vfio_user_) list.push_back(vfio_user_->options().ToJson());
  }
  return list;
}

absl::Status NvmfTarget::StartListening(const ListenAddress& address, const std::string& nqn) {
  if (address.is_tcp()) {
    if (!transport_) return absl::FailedPreconditionError("the TCP transport has not been created");
    return transport_->Listen(address);
  }
  if (!vfio_user_) return absl::FailedPreconditionError("the VFIOUSER transport has not been created");
  return vfio_user_->Listen(address, nqn);
}

void NvmfTarget::StopListening(const ListenAddress& address) {
  if (address.is_tcp()) {
    if (transport_) transport_->StopListening(address);
  } else if (vfio_user_) {
    vfio_user_->StopListening(address);
  }
}

absl::Status NvmfTarget::CreateSubsystem(const SubsystemParams& params) {
  RETURN_IF_ERROR(ValidateNqn(params.nqn));
  if (params.nqn == kDiscoveryNqn) return absl::AlreadyExistsError("the discovery subsystem always exists");
  if (Find(params.nqn) != nullptr) return absl::AlreadyExistsError("subsystem " + params.nqn + " exists");
  if (params.serial_number.empty() || params.serial_number.size() > 20 || !IsPrintableAscii(params.serial_number)) {
    return absl::InvalidArgumentError("serial_number must be 1-20 printable ASCII characters");
  }
  if (params.model_number.empty() || params.model_number.size() > 40 || !IsPrintableAscii(params.model_number)) {
    return absl::InvalidArgumentError("model_number must be 1-40 printable ASCII characters");
  }
  if (params.min_cntlid < 1 || params.max_cntlid > 0xffef || params.min_cntlid > params.max_cntlid) {
    return absl::InvalidArgumentError("controller ID range must satisfy 1 <= min_cntlid <= max_cntlid <= 65519");
  }
  subsystems_.push_back(std::make_unique<Subsystem>(next_subsystem_id_++, params, false));
  ++discovery_generation_;
  spdlog::info("subsystem {} created", params.nqn);
  return absl::OkStatus();
}

Subsystem* NvmfTarget::Find(const std::string& nqn) {
  for (auto& s : subsystems_) {
    if (s->nqn() == nqn && !s->deleted_) return s.get();
  }
  return nullptr;
}

Subsystem* NvmfTarget::FindById(uint32_t id) {
  for (auto& s : subsystems_) {
    if (s->id() == id && !s->deleted_) return s.get();
  }
  return nullptr;
}

std::vector<Subsystem*> NvmfTarget::List() {
  std::vector<Subsystem*> out;
  for (auto& s : subsystems_) {
    if (!s->deleted_) out.push_back(s.get());
  }
  return out;
}

void NvmfTarget::RunChange(Subsystem& subsystem, absl::AnyInvocable<void(absl::AnyInvocable<void()>)> change) {
  subsystem.pending_.push_back(std::move(change));
  if (subsystem.changing_) return;
  subsystem.changing_ = true;
  auto next = std::move(subsystem.pending_.front());
  subsystem.pending_.pop_front();
  uint32_t id = subsystem.id();
  next([this, id] { FinishChange(id); });
}

void NvmfTarget::FinishChange(uint32_t subsystem_id) {
  auto it = std::find_if(subsystems_.begin(), subsystems_.end(),
                         [subsystem_id](const auto& s) { return s->id() == subsystem_id; });
  if (it == subsystems_.end()) return;
  Subsystem& subsystem = **it;
  if (subsystem.deleted_) {
    // Run what was queued behind the deletion: each change sees deleted_ and fails at once.
    while (!subsystem.pending_.empty()) {
      auto change = std::move(subsystem.pending_.front());
      subsystem.pending_.pop_front();
      change([] {});
    }
    subsystems_.erase(it);
    return;
  }
  if (subsystem.pending_.empty()) {
    subsystem.changing_ = false;
    return;
  }
  auto next = std::move(subsystem.pending_.front());
  subsystem.pending_.pop_front();
  next([this, subsystem_id] { FinishChange(subsystem_id); });
}

void NvmfTarget::Publish(Subsystem& subsystem, absl::AnyInvocable<void() &&> done) {
  auto snapshot = std::make_shared<SubsystemSnapshot>();
  snapshot->subsystem_id = subsystem.id();
  for (const auto& [nsid, ns] : subsystem.namespaces_) {
    snapshot->namespaces.push_back({nsid, ns->bdev(), ns->uuid.bytes(), ns->nguid, ns->eui64});
  }
  std::shared_ptr<const SubsystemSnapshot> frozen = snapshot;

  struct State {
    std::atomic<size_t> remaining;
    absl::AnyInvocable<void() &&> done;
  };
  auto state = std::make_shared<State>();
  state->remaining = poll_groups_.size();
  state->done = std::move(done);
  // Phase 1: pause everywhere (in-flight I/O drains). Phase 2: apply the new table and resume.
  auto apply_all = [this, frozen, state]() {
    state->remaining = poll_groups_.size();
    for (auto& pg : poll_groups_) {
      PollGroup* group = pg.get();
      group->reactor().Post([this, group, frozen, state] {
        group->Apply(frozen);
        if (state->remaining.fetch_sub(1) == 1) control_.Post([state] { std::move(state->done)(); });
      });
    }
  };
  auto paused_all = std::make_shared<absl::AnyInvocable<void()>>(std::move(apply_all));
  uint32_t id = subsystem.id();
  for (auto& pg : poll_groups_) {
    PollGroup* group = pg.get();
    group->reactor().Post([this, group, id, state, paused_all] {
      group->Pause(id, [this, state, paused_all] {
        if (state->remaining.fetch_sub(1) == 1) control_.Post([paused_all] { (*paused_all)(); });
      });
    });
  }
}

void NvmfTarget::AddListener(const std::string& nqn, const ListenAddress& address, Done done) {
  Subsystem* subsystem = Find(nqn);
  if (subsystem == nullptr) return done(absl::NotFoundError("Subsystem with NQN '" + nqn + "' not found"));
  auto& listeners = subsystem->listeners_;
  if (std::find(listeners.begin(), listeners.end(), address) != listeners.end()) {
    return done(absl::AlreadyExistsError("listener " + address.ToString() + " already exists"));
  }
  absl::Status status = StartListening(address, nqn);
  if (absl::IsFailedPrecondition(status)) return done(status);
  if (!status.ok()) return done(absl::UnavailableError(StatusMessage(status)));
  listeners.push_back(address);
  ++discovery_generation_;
  done(absl::OkStatus());
}

void NvmfTarget::RemoveListener(const std::string& nqn, const ListenAddress& address, Done done) {
  Subsystem* subsystem = Find(nqn);
  if (subsystem == nullptr) return done(absl::NotFoundError("Subsystem with NQN '" + nqn + "' not found"));
  auto& listeners = subsystem->listeners_;
  auto it = std::find(listeners.begin(), listeners.end(), address);
  if (it == listeners.end()) return done(absl::NotFoundError("listener " + address.ToString() + " not found"));
  // Stop with the stored address: a vfio-user listener may be named by its directory alone.
  ListenAddress stored = *it;
  listeners.erase(it);
  ++discovery_generation_;
  StopListening(stored);
  done(absl::OkStatus());
}

void NvmfTarget::AddNamespace(const std::string& nqn, const NamespaceParams& params,
                              absl::AnyInvocable<void(absl::StatusOr<uint32_t>)> done) {
  Subsystem* subsystem = Find(nqn);
  if (subsystem == nullptr || subsystem->is_discovery()) {
    return done(absl::NotFoundError("Subsystem with NQN '" + nqn + "' not found"));
  }
  uint32_t id = subsystem->id();
  RunChange(*subsystem, [this, id, nqn, params, done = std::move(done)](absl::AnyInvocable<void()> finish) mutable {
    Subsystem* s = FindById(id);
    if (s == nullptr) {
      finish();
      return done(absl::NotFoundError("Subsystem with NQN '" + nqn + "' not found"));
    }
    uint32_t max = s->params_.max_namespaces;
    uint32_t nsid = params.nsid;
    if (nsid == 0) {
      nsid = 1;
      while (s->namespaces_.count(nsid)) ++nsid;
    }
    if ((max != 0 && nsid > max) || nsid == 0xffffffff) {
      finish();
      return done(absl::InvalidArgumentError("nsid " + std::to_string(nsid) + " is out of range"));
    }
    if (s->namespaces_.count(nsid)) {
      finish();
      return done(absl::InvalidArgumentError("nsid " + std::to_string(nsid) + " is already in use"));
    }
    auto desc = bdevs_.Open(params.bdev_name, [this, id, nsid] { OnBdevRemoved(id, nsid); });
    if (!desc.ok()) {
      finish();
      return done(absl::NotFoundError("bdev " + params.bdev_name + " not found"));
    }
    Bdev& bdev = (*desc)->bdev();
    absl::Status claimed = bdev.Claim(kClaimModule);
    if (!claimed.ok()) {
      finish();
      return done(absl::InvalidArgumentError(StatusMessage(claimed)));
    }
    auto ns = std::make_unique<Namespace>();
    ns->nsid = nsid;
    ns->bdev_name = bdev.name();
    ns->uuid = params.uuid.value_or(bdev.uuid());
    ns->nguid = params.nguid.value_or(ns->uuid.bytes());
    ns->eui64 = params.eui64;
    ns->desc = std::move(desc).value();
    s->namespaces_[nsid] = std::move(ns);
    Publish(*s, [this, id, nsid, finish = std::move(finish), done = std::move(done)]() mutable {
      NotifyNamespaceChanged(id, nsid);
      finish();
      done(nsid);
    });
  });
}

void NvmfTarget::DetachNamespaces(Subsystem& subsystem, std::vector<std::unique_ptr<Namespace>>& out,
                                  uint32_t nsid) {
  for (auto it = subsystem.namespaces_.begin(); it != subsystem.namespaces_.end();) {
    if (nsid == 0 || it->first == nsid) {
      out.push_back(std::move(it->second));
      it = subsystem.namespaces_.erase(it);
    } else {
      ++it;
    }
  }
}

void NvmfTarget::RemoveNamespace(const std::string& nqn, uint32_t nsid, Done done) {
  Subsystem* subsystem = Find(nqn);
  if (subsystem == nullptr) return done(absl::NotFoundError("Subsystem with NQN '" + nqn + "' not found"));
  uint32_t id = subsystem->id();
  RunChange(*subsystem, [this, id, nqn, nsid, done = std::move(done)](absl::AnyInvocable<void()> finish) mutable {
    Subsystem* s = FindById(id);
    if (s == nullptr) {
      finish();
      return done(absl::NotFoundError("Subsystem with NQN '" + nqn + "' not found"));
    }
    if (nsid == 0 || !s->namespaces_.count(nsid)) {
      finish();
      return done(absl::NotFoundError("namespace " + std::to_string(nsid) + " not found"));
    }
    auto removed = std::make_shared<std::vector<std::unique_ptr<Namespace>>>();
    DetachNamespaces(*s, *removed, nsid);
    Publish(*s, [this, id, nsid, removed, finish = std::move(finish), done = std::move(done)]() mutable {
      NotifyNamespaceChanged(id, nsid);
      // Every poll group released its channel: now the claim and the descriptor can go.
      for (auto& ns : *removed) ns->bdev()->ReleaseClaim();
      removed->clear();
      finish();
      done(absl::OkStatus());
    });
  });
}

void NvmfTarget::OnBdevRemoved(uint32_t subsystem_id, uint32_t nsid) {
  Subsystem* s = FindById(subsystem_id);
  if (s == nullptr) return;
  spdlog::info("bdev of namespace {} of {} is being deleted: removing the namespace", nsid, s->nqn());
  RemoveNamespace(s->nqn(), nsid, [](absl::Status status) {
    if (!status.ok()) spdlog::debug("hot-remove: {}", status.ToString());
  });
}

void NvmfTarget::DeleteSubsystem(const std::string& nqn, Done done) {
  Subsystem* subsystem = Find(nqn);
  if (subsystem == nullptr || subsystem->is_discovery()) {
    return done(absl::NotFoundError("Subsystem with NQN '" + nqn + "' not found"));
  }
  uint32_t id = subsystem->id();
  RunChange(*subsystem, [this, id, nqn, done = std::move(done)](absl::AnyInvocable<void()> finish) mutable {
    Subsystem* s = FindById(id);
    if (s == nullptr) {
      finish();
      return done(absl::NotFoundError("Subsystem with NQN '" + nqn + "' not found"));
    }
    for (const auto& l : s->listeners_) StopListening(l);
    s->listeners_.clear();
    DisconnectAll(id);
    ++discovery_generation_;
    auto removed = std::make_shared<std::vector<std::unique_ptr<Namespace>>>();
    DetachNamespaces(*s, *removed, 0);
    s->deleted_ = true;
    struct State {
      std::atomic<size_t> remaining;
    };
    auto state = std::make_shared<State>();
    state->remaining = poll_groups_.size();
    auto complete = std::make_shared<absl::AnyInvocable<void()>>(
        [removed, nqn, finish = std::move(finish), done = std::move(done)]() mutable {
          for (auto& ns : *removed) ns->bdev()->ReleaseClaim();
          removed->clear();
          spdlog::info("subsystem {} deleted", nqn);
          done(absl::OkStatus());
          finish();  // erases the subsystem
        });
    for (auto& pg : poll_groups_) {
      PollGroup* group = pg.get();
      group->reactor().Post([this, group, id, state, complete] {
        group->Pause(id, [this, group, id, state, complete] {
          group->Remove(id);
          if (state->remaining.fetch_sub(1) == 1) control_.Post([complete] { (*complete)(); });
        });
      });
    }
  });
}

absl::Status NvmfTarget::AddHost(const std::string& nqn, const std::string& host) {
  Subsystem* s = Find(nqn);
  if (s == nullptr) return absl::NotFoundError("Subsystem with NQN '" + nqn + "' not found");
  RETURN_IF_ERROR(ValidateNqn(host));
  if (std::find(s->hosts_.begin(), s->hosts_.end(), host) != s->hosts_.end()) {
    return absl::AlreadyExistsError("host " + host + " is already allowed");
  }
  s->hosts_.push_back(host);
  ++discovery_generation_;
  return absl::OkStatus();
}

absl::Status NvmfTarget::RemoveHost(const std::string& nqn, const std::string& host) {
  Subsystem* s = Find(nqn);
  if (s == nullptr) return absl::NotFoundError("Subsystem with NQN '" + nqn + "' not found");
  auto it = std::find(s->hosts_.begin(), s->hosts_.end(), host);
  if (it == s->hosts_.end()) return absl::NotFoundError("host " + host + " is not allowed");
  s->hosts_.erase(it);
  ++discovery_generation_;
  DisconnectRevokedHosts(*s);
  return absl::OkStatus();
}

absl::Status NvmfTarget::SetAllowAnyHost(const std::string& nqn, bool allow) {
  Subsystem* s = Find(nqn);
  if (s == nullptr) return absl::NotFoundError("Subsystem with NQN '" + nqn + "' not found");
  if (s->is_discovery()) return absl::InvalidArgumentError("the discovery subsystem always allows any host");
  s->params_.allow_any_host = allow;
  ++discovery_generation_;
  DisconnectRevokedHosts(*s);
  return absl::OkStatus();
}

void NvmfTarget::GetStats(absl::AnyInvocable<void(Json)> done) {
  struct State {
    absl::Mutex mu;
    std::vector<Json> groups;
  };
  auto state = std::make_shared<State>();
  state->groups.resize(poll_groups_.size());
  bool has_transport = transport_ != nullptr;
  bool has_vfio_user = vfio_user_ != nullptr;
  for (size_t i = 0; i < poll_groups_.size(); ++i) (void)i;
  std::vector<PollGroup*> groups;
  for (auto& pg : poll_groups_) groups.push_back(pg.get());
  bdevs_.ForEachReactor(
      [state, groups, has_transport, has_vfio_user](Reactor& r) {
        PollGroup* group = groups[static_cast<size_t>(r.index())];
        const PollGroupStats& s = group->stats();
        Json transports = Json::array();
        if (has_transport) transports.push_back({{"trtype", "TCP"}});
        if (has_vfio_user) transports.push_back({{"trtype", "VFIOUSER"}});
        Json j = {{"name", group->name()},
                  {"admin_qpairs", s.admin_qpairs},
                  {"io_qpairs", s.io_qpairs},
                  {"current_admin_qpairs", s.current_admin_qpairs},
                  {"current_io_qpairs", s.current_io_qpairs},
                  {"current_unassociated_qpairs", s.current_unassociated_qpairs},
                  {"pending_bdev_io", s.pending_bdev_io},
                  {"completed_nvme_io", s.completed_nvme_io},
                  {"transports", transports}};
        absl::MutexLock lock(&state->mu);
        state->groups[static_cast<size_t>(r.index())] = std::move(j);
      },
      [state, done = std::move(done)]() mutable {
        absl::MutexLock lock(&state->mu);
        done(Json{{"tick_rate", 1000000000}, {"ticks", NowNs()}, {"poll_groups", state->groups}});
      });
}

Json NvmfTarget::ConfigEntries() const {
  Json entries = Json::array();
  for (const std::string& trtype : transport_order_) {
    if (trtype == kTrtypeTcp && transport_) {
      entries.push_back({{"method", "nvmf_create_transport"}, {"params", transport_->options().ToConfigParams()}});
    }
    if (trtype == kTrtypeVfioUser && vfio_user_) {
      entries.push_back({{"method", "nvmf_create_transport"}, {"params", vfio_user_->options().ToConfigParams()}});
    }
  }
  for (const auto& s : subsystems_) {
    if (s->deleted_) continue;
    const SubsystemParams& p = s->params();
    if (!s->is_discovery()) {
      entries.push_back({{"method", "nvmf_create_subsystem"},
                         {"params",
                          {{"nqn", p.nqn},
                           {"serial_number", p.serial_number},
                           {"model_number", p.model_number},
                           {"allow_any_host", p.allow_any_host},
                           {"max_namespaces", p.max_namespaces},
                           {"min_cntlid", p.min_cntlid},
                           {"max_cntlid", p.max_cntlid}}}});
    }
    for (const auto& l : s->listeners()) {
      entries.push_back({{"method", "nvmf_subsystem_add_listener"},
                         {"params", {{"nqn", p.nqn}, {"listen_address", l.ToConfigJson()}}}});
    }
    for (const auto& h : s->hosts()) {
      entries.push_back({{"method", "nvmf_subsystem_add_host"}, {"params", {{"nqn", p.nqn}, {"host", h}}}});
    }
    for (const auto& [nsid, ns] : s->namespaces()) {
      Json n = {{"nsid", nsid},
                {"bdev_name", ns->bdev_name},
                {"uuid", ns->uuid.ToString()},
                {"nguid", Uuid(ns->nguid).ToHex(true)}};
      if (ns->eui64) {
        char buf[17];
        std::snprintf(buf, sizeof(buf), "%016llX", static_cast<unsigned long long>(*ns->eui64));
        n["eui64"] = buf;
      }
      entries.push_back({{"method", "nvmf_subsystem_add_ns"}, {"params", {{"nqn", p.nqn}, {"namespace", n}}}});
    }
  }
  return entries;
}

void NvmfTarget::Shutdown(absl::AnyInvocable<void() &&> done) {
  std::vector<std::string> names;
  for (auto& s : subsystems_) {
    if (!s->is_discovery() && !s->deleted_) names.push_back(s->nqn());
  }
  // Discovery listeners and controllers.
  for (auto& s : subsystems_) {
    if (s->is_discovery()) {
      DisconnectAll(s->id());
      for (const auto& l : s->listeners_) StopListening(l);
      s->listeners_.clear();
    }
  }
  if (names.empty()) {
    std::move(done)();
    return;
  }
  auto remaining = std::make_shared<size_t>(names.size());
  auto shared_done = std::make_shared<absl::AnyInvocable<void() &&>>(std::move(done));
  for (const auto& nqn : names) {
    DeleteSubsystem(nqn, [remaining, shared_done](absl::Status) {
      if (--*remaining == 0) std::move(*shared_done)();
    });
  }
}

void NvmfTarget::AcceptConnection(int fd, Reactor& reactor) {
  // Runs on `reactor`: the qpair lives there for its whole life.
  PollGroup& group = *poll_groups_[static_cast<size_t>(reactor.index())];
  auto qpair = std::make_shared<TcpQpair>(*this, group, control_, fd, transport_->options());
  qpair->Start();
}

ConnectResult NvmfTarget::Connect(const ConnectRequest& request, Reactor& reactor, std::weak_ptr<TcpQpair> qpair) {
  ConnectResult result;
  auto invalid_data = [&result](uint16_t offset) {
    result.status = nvme::Specific(nvme::sc_specific::kConnectInvalidParameters);
    result.cdw0 = 1u | uint32_t{offset} << 16;  // IATTR 1: the field is in the connect data
    return result;
  };
  Subsystem* s = Find(request.subnqn);
  if (s == nullptr) {
    spdlog::warn("connect from {} ({}) to unknown subsystem {}", request.peer, request.hostnqn, request.subnqn);
    return invalid_data(nvme::connect_data::kSubnqn);
  }
  if (!s->is_discovery()) {
    bool listening = std::any_of(s->listeners_.begin(), s->listeners_.end(), [&](const ListenAddress& l) {
      return l.traddr == request.local_traddr && l.trsvcid == request.local_trsvcid;
    });
    if (!listening) {
      spdlog::warn("connect from {} to {} through {}:{}, which is not one of its listeners", request.peer,
                   request.subnqn, request.local_traddr, request.local_trsvcid);
      return invalid_data(nvme::connect_data::kSubnqn);
    }
  }
  if (!s->HostAllowed(request.hostnqn)) {
    spdlog::warn("connect from {} refused: host {} is not allowed on {}", request.peer, request.hostnqn,
                 request.subnqn);
    result.status = nvme::Specific(nvme::sc_specific::kConnectInvalidHost);
    return result;
  }
  result.subsystem_id = s->id();
  if (request.qid == 0) {
    if (request.cntlid != 0xffff && request.cntlid != 0) return invalid_data(nvme::connect_data::kCntlid);
    // Dynamic controller model: the lowest free ID in the subsystem's range.
    uint16_t cntlid = s->is_discovery() ? 1 : s->params().min_cntlid;
    uint16_t max = s->is_discovery() ? 0xffef : s->params().max_cntlid;
    while (cntlid <= max && std::any_of(controllers_.begin(), controllers_.end(), [&](const ControllerEntry& e) {
             return e.subsystem_id == s->id() && e.cntlid == cntlid;
           })) {
      ++cntlid;
    }
    if (cntlid > max) {
      result.status = nvme::Specific(nvme::sc_specific::kConnectControllerBusy);
      return result;
    }
    ControllerInfo info;
    info.subsystem_id = s->id();
    info.discovery = s->is_discovery();
    info.cntlid = cntlid;
    info.subnqn = s->nqn();
    info.hostnqn = request.hostnqn;
    info.hostid = request.hostid;
    info.serial_number = s->params().serial_number;
    info.model_number = s->params().model_number;
    info.max_namespaces = s->params().max_namespaces;
    info.kato_ms = request.kato_ms;
    auto controller = std::make_shared<Controller>(std::move(info), qpair, *this, control_);
    controllers_.push_back(ControllerEntry{s->id(), cntlid, request.hostnqn, request.hostid, &reactor, controller,
                                           {QpairRef{0, &reactor, qpair, request.peer}}});
    result.cntlid = cntlid;
    result.controller = std::move(controller);
    spdlog::info("controller {} of {} created for host {} from {}", cntlid, s->nqn(), request.hostnqn, request.peer);
    return result;
  }
  auto it = std::find_if(controllers_.begin(), controllers_.end(), [&](const ControllerEntry& e) {
    return e.subsystem_id == s->id() && e.cntlid == request.cntlid;
  });
  if (it == controllers_.end() || s->is_discovery()) return invalid_data(nvme::connect_data::kCntlid);
  if (it->hostnqn != request.hostnqn) return invalid_data(nvme::connect_data::kHostnqn);
  uint32_t max_qid = transport_ ? transport_->options().max_io_qpairs_per_ctrlr : 0;
  bool in_use = std::any_of(it->qpairs.begin(), it->qpairs.end(), [&](const QpairRef& q) { return q.qid == request.qid; });
  if (request.qid > max_qid || in_use) {
    result.status = nvme::Specific(nvme::sc_specific::kConnectInvalidParameters);
    result.cdw0 = uint32_t{nvme::connect_cmd::kQid} << 16;  // IATTR 0: in the command
    return result;
  }
  it->qpairs.push_back(QpairRef{request.qid, &reactor, qpair, request.peer});
  result.cntlid = request.cntlid;
  return result;
}

void NvmfTarget::QpairGone(uint32_t subsystem_id, uint16_t cntlid, uint16_t qid) {
  auto it = std::find_if(controllers_.begin(), controllers_.end(), [&](const ControllerEntry& e) {
    return e.subsystem_id == subsystem_id && e.cntlid == cntlid;
  });
  if (it == controllers_.end()) return;
  if (qid != 0) {
    std::erase_if(it->qpairs, [qid](const QpairRef& q) { return q.qid == qid; });
    return;
  }
  // The admin queue went: the controller ends, and its I/O queues with it.
  for (const QpairRef& q : it->qpairs) {
    if (q.qid == 0) continue;
    q.reactor->Post([weak = q.qpair] {
      if (auto qpair = weak.lock()) qpair->Close("controller ended");
    });
  }
  spdlog::info("controller {} of subsystem {} removed", cntlid, subsystem_id);
  controllers_.erase(it);
}

void NvmfTarget::DisconnectAll(uint32_t subsystem_id) {
  for (const ControllerEntry& e : controllers_) {
    if (e.subsystem_id != subsystem_id) continue;
    for (const QpairRef& q : e.qpairs) {
      q.reactor->Post([weak = q.qpair] {
        if (auto qpair = weak.lock()) qpair->Close("subsystem deleted");
      });
    }
  }
  std::erase_if(controllers_, [subsystem_id](const ControllerEntry& e) { return e.subsystem_id == subsystem_id; });
}

void NvmfTarget::DisconnectRevokedHosts(const Subsystem& subsystem) {
  for (const ControllerEntry& e : controllers_) {
    if (e.subsystem_id != subsystem.id() || subsystem.HostAllowed(e.hostnqn)) continue;
    spdlog::info("host {} lost access to {}: closing controller {}", e.hostnqn, subsystem.nqn(), e.cntlid);
    // Closing the admin queue ends the controller; its registry entry goes in QpairGone.
    for (const QpairRef& q : e.qpairs) {
      q.reactor->Post([weak = q.qpair] {
        if (auto qpair = weak.lock()) qpair->Close("host access revoked");
      });
    }
  }
}

void NvmfTarget::NotifyNamespaceChanged(uint32_t subsystem_id, uint32_t nsid) {
  for (const ControllerEntry& e : controllers_) {
    if (e.subsystem_id != subsystem_id) continue;
    e.reactor->Post([weak = e.controller, nsid] {
      if (auto controller = weak.lock()) controller->NotifyNamespaceChanged(nsid);
    });
  }
}

std::vector<uint8_t> NvmfTarget::BuildDiscoveryLog(const std::string& hostnqn) const {
  struct Record {
    const Subsystem* subsystem;
    const ListenAddress* address;
    uint16_t portid;
  };
  std::vector<Record> records;
  // Port IDs: one per distinct listen address, in first-seen order.
  std::vector<const ListenAddress*> ports;
  auto port_of = [&ports](const ListenAddress& a) {
    for (size_t i = 0; i < ports.size(); ++i) {
      if (*ports[i] == a) return static_cast<uint16_t>(i);
    }
    ports.push_back(&a);
    return static_cast<uint16_t>(ports.size() - 1);
  };
  for (const auto& s : subsystems_) {
    if (s->deleted_) continue;
    if (!s->is_discovery() && !s->HostAllowed(hostnqn)) continue;
    for (const auto& l : s->listeners()) {
      // Only NVMe/TCP listeners: a vfio-user endpoint is a local socket no fabrics host can reach.
      if (l.is_tcp()) records.push_back({s.get(), &l, port_of(l)});
    }
  }
  std::vector<uint8_t> page(nvme::kDiscoveryHeaderSize + records.size() * nvme::kDiscoveryEntrySize, 0);
  nvme::Store64(&page[nvme::disc_hdr::kGenctr], discovery_generation_);
  nvme::Store64(&page[nvme::disc_hdr::kNumrec], records.size());
  uint32_t asqsz = transport_ ? transport_->options().max_aq_depth : 128;
  for (size_t i = 0; i < records.size(); ++i) {
    uint8_t* e = &page[nvme::kDiscoveryHeaderSize + i * nvme::kDiscoveryEntrySize];
    const Record& r = records[i];
    using namespace nvme::disc_entry;
    e[kTrtype] = nvme::kTrtypeTcp;
    e[kAdrfam] = r.address->adrfam == "IPv6" ? nvme::kAdrfamIpv6 : nvme::kAdrfamIpv4;
    e[kSubtype] = r.subsystem->is_discovery() ? nvme::kSubtypeCurrentDiscovery : nvme::kSubtypeNvm;
    e[kTreq] = 0x02;  // secure channel not required
    nvme::Store16(e + kPortid, r.portid);
    nvme::Store16(e + kCntlid, 0xffff);
    nvme::Store16(e + kAsqsz, static_cast<uint16_t>(asqsz));
    if (r.subsystem->is_discovery()) nvme::Store16(e + 10, 0x3);  // EFLAGS: duplicate info, persistent
    nvme::PutPadded(e + kTrsvcid, 32, r.address->trsvcid.data(), r.address->trsvcid.size(), ' ');
    nvme::PutPadded(e + kSubnqn, 256, r.subsystem->nqn().data(), r.subsystem->nqn().size(), '\0');
    nvme::PutPadded(e + kTraddr, 256, r.address->traddr.data(), r.address->traddr.size(), ' ');
    // TSAS for TCP: security type 0 (none) — all zeroes.
  }
  return page;
}

Json NvmfTarget::DescribeControllers(const std::string& nqn) const {
  Json list = Json::array();
  for (const auto& s : subsystems_) {
    if (s->deleted_ || s->nqn() != nqn) continue;
    for (const ControllerEntry& e : controllers_) {
      if (e.subsystem_id != s->id()) continue;
      list.push_back({{"cntlid", e.cntlid},
                      {"hostnqn", e.hostnqn},
                      {"hostid", Uuid(e.hostid).ToString()},
                      {"num_io_qpairs", e.qpairs.empty() ? 0 : e.qpairs.size() - 1}});
    }
  }
  return list;
}

Json NvmfTarget::DescribeQpairs(const std::string& nqn) const {
  Json list = Json::array();
  for (const auto& s : subsystems_) {
    if (s->deleted_ || s->nqn() != nqn) continue;
    for (const ControllerEntry& e : controllers_) {
      if (e.subsystem_id != s->id()) continue;
      for (const QpairRef& q : e.qpairs) {
        list.push_back({{"cntlid", e.cntlid}, {"qid", q.qid}, {"state", "active"}, {"thread", q.reactor->name()},
                        {"peer_address", q.peer}});
      }
    }
  }
  return list;
}

}  // namespace smad::tgt
