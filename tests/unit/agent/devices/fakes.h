#pragma once

// Test doubles for the QEMU-backed device managers:
//  - FakeQemu: the QMP peer, from support/fake_qmp.h (a TCP server speaking QMP like QEMU, with fault
//    injection);
//  - FakeSpdk: an SpdkClient answering the nvmf/vfio-user, vhost and bdev calls like SPDK, recording
//    every call, with fault injection (error answers, an unreachable target). Header-only so each test
//    file can include it.

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/spdk/spdk_client.h"
#include "support/fake_qmp.h"

namespace smad::agent::testing {

// The QMP peer lives in tests/support (integration tests use it too).
using smad::testing::FakeQemu;

// ---- FakeSpdk ----------------------------------------------------------------------------------------

class FakeSpdk : public SpdkClient {
 public:
  struct RecordedCall {
    std::string method;
    Json params;
  };
  struct Namespace {
    uint32_t nsid;
    std::string bdev;  // the bdev's name
    std::string uuid;
  };
  struct Subsystem {
    bool allow_any_host = false;
    std::vector<Json> listeners;  // {"trtype","traddr"}
    std::vector<Namespace> namespaces;
  };

  absl::StatusOr<Json> Call(absl::string_view method_view, const Json& params,
                            std::chrono::milliseconds timeout) override {
    absl::MutexLock lock(&mu_);
    const std::string method(method_view);
    calls_.push_back({method, params});
    if (unreachable_) return absl::UnavailableError(absl::StrCat(method, ": not connected"));
    if (auto f = failures_.find(method); f != failures_.end()) return SpdkErrorStatus(method, f->second);
    return Answer(method, params.is_null() ? Json::object() : params);
  }
  uint64_t connection_epoch() const override { return 1; }

  // ---- fault injection ----
  void Fail(const std::string& method, int code, const std::string& message = "injected failure") {
    absl::MutexLock lock(&mu_);
    failures_[method] = SpdkError{code, message};
  }
  void ClearFaults() {
    absl::MutexLock lock(&mu_);
    failures_.clear();
    unreachable_ = false;
  }
  void SetUnreachable(bool unreachable) {
    absl::MutexLock lock(&mu_);
    unreachable_ = unreachable;
  }

  // ---- state ----
  void AddBdev(const std::string& name, const std::string& uuid) {
    absl::MutexLock lock(&mu_);
    bdevs_[name] = uuid;
  }
  void AddTransport(const std::string& trtype) {
    absl::MutexLock lock(&mu_);
    transports_.insert(absl::AsciiStrToUpper(trtype));
  }
  bool HasTransport(const std::string& trtype) {
    absl::MutexLock lock(&mu_);
    return transports_.count(absl::AsciiStrToUpper(trtype)) > 0;
  }
  std::optional<Subsystem> GetSubsystem(const std::string& nqn) {
    absl::MutexLock lock(&mu_);
    auto it = subsystems_.find(nqn);
    if (it == subsystems_.end()) return std::nullopt;
    return it->second;
  }
  void DeleteSubsystem(const std::string& nqn) {
    absl::MutexLock lock(&mu_);
    subsystems_.erase(nqn);
  }
  size_t SubsystemCount() {
    absl::MutexLock lock(&mu_);
    return subsystems_.size();
  }
  // The bdev of controller `ctrlr`; nullopt when absent.
  std::optional<std::string> Controller(const std::string& ctrlr) {
    absl::MutexLock lock(&mu_);
    auto it = controllers_.find(ctrlr);
    if (it == controllers_.end()) return std::nullopt;
    return it->second;
  }
  void DeleteController(const std::string& ctrlr) {
    absl::MutexLock lock(&mu_);
    controllers_.erase(ctrlr);
  }
  std::vector<RecordedCall> Calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  std::vector<std::string> Methods() {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> out;
    for (const RecordedCall& c : calls_) out.push_back(c.method);
    return out;
  }
  void ClearCalls() {
    absl::MutexLock lock(&mu_);
    calls_.clear();
  }

 private:
  static absl::Status Error(const std::string& method, int code, const std::string& message) {
    return SpdkErrorStatus(method, SpdkError{code, message});
  }

  // The bdev's name for a name or UUID alias.
  std::optional<std::string> ResolveBdev(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const auto& [n, uuid] : bdevs_) {
      if (n == name || uuid == name) return n;
    }
    return std::nullopt;
  }
  bool Claimed(const std::string& bdev) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const auto& [nqn, s] : subsystems_) {
      for (const Namespace& ns : s.namespaces) {
        if (ns.bdev == bdev) return true;
      }
    }
    for (const auto& [c, b] : controllers_) {
      if (b == bdev) return true;
    }
    return false;
  }
  Json SubsystemJson(const std::string& nqn, const Subsystem& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Json listen = Json::array();
    for (const Json& l : s.listeners) {
      listen.push_back({{"trtype", absl::AsciiStrToUpper(l.value("trtype", ""))},
                        {"adrfam", "IPv4"},
                        {"traddr", l.value("traddr", "")},
                        {"trsvcid", l.value("trsvcid", "")}});
    }
    Json namespaces = Json::array();
    for (const Namespace& ns : s.namespaces) {
      std::string nguid = ns.uuid;
      std::erase(nguid, '-');
      namespaces.push_back({{"nsid", ns.nsid}, {"bdev_name", ns.bdev}, {"name", ns.bdev},
                            {"nguid", absl::AsciiStrToUpper(nguid)}, {"uuid", ns.uuid}});
    }
    return {{"nqn", nqn}, {"subtype", "NVMe"}, {"listen_addresses", listen}, {"allow_any_host", s.allow_any_host},
            {"hosts", Json::array()}, {"serial_number", "00000000000000000000"},
            {"model_number", "SPDK bdev Controller"}, {"namespaces", namespaces}};
  }

  absl::StatusOr<Json> Answer(const std::string& method, const Json& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int kInvalidParams = -32602;
    const std::string nqn = p.value("nqn", "");
    if (method == "nvmf_get_transports") {
      Json out = Json::array();
      for (const std::string& t : transports_) out.push_back({{"trtype", t}});
      return out;
    }
    if (method == "nvmf_create_transport") {
      std::string t = absl::AsciiStrToUpper(p.value("trtype", ""));
      if (transports_.count(t)) return Error(method, -32603, "Transport type '" + t + "' already exists");
      transports_.insert(t);
      return true;
    }
    if (method == "nvmf_get_subsystems") {
      Json out = Json::array();
      if (!nqn.empty()) {
        auto it = subsystems_.find(nqn);
        if (it == subsystems_.end()) return Error(method, kInvalidParams, "Invalid parameters");
        out.push_back(SubsystemJson(nqn, it->second));
        return out;
      }
      for (const auto& [n, s] : subsystems_) out.push_back(SubsystemJson(n, s));
      return out;
    }
    if (method == "nvmf_create_subsystem") {
      if (subsystems_.count(nqn)) return Error(method, -32603, "Unable to create subsystem " + nqn);
      subsystems_[nqn].allow_any_host = p.value("allow_any_host", false);
      return true;
    }
    if (method == "nvmf_delete_subsystem") {
      if (!subsystems_.erase(nqn)) return Error(method, kInvalidParams, "Invalid parameters");
      return true;
    }
    auto sub = subsystems_.find(nqn);
    if (method == "nvmf_subsystem_add_listener" || method == "nvmf_subsystem_remove_listener" ||
        method == "nvmf_subsystem_get_listeners" || method == "nvmf_subsystem_add_ns" ||
        method == "nvmf_subsystem_remove_ns") {
      if (sub == subsystems_.end()) return Error(method, kInvalidParams, "Invalid parameters");
    }
    if (method == "nvmf_subsystem_add_listener") {
      Json address = p.value("listen_address", Json::object());
      std::string trtype = absl::AsciiStrToUpper(address.value("trtype", ""));
      if (!transports_.count(trtype)) return Error(method, kInvalidParams, "Invalid parameters");
      if (trtype == "VFIOUSER") {
        struct stat st;
        if (stat(address.value("traddr", "").c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
          return Error(method, -32603, "Unable to add listener");
        }
      }
      for (const Json& l : sub->second.listeners) {
        if (l.value("traddr", "") == address.value("traddr", "")) return Error(method, kInvalidParams, "Invalid parameters");
      }
      sub->second.listeners.push_back(address);
      return true;
    }
    if (method == "nvmf_subsystem_remove_listener") {
      Json address = p.value("listen_address", Json::object());
      auto& ls = sub->second.listeners;
      size_t before = ls.size();
      std::erase_if(ls, [&](const Json& l) { return l.value("traddr", "") == address.value("traddr", ""); });
      if (ls.size() == before) return Error(method, kInvalidParams, "Invalid parameters");
      return true;
    }
    if (method == "nvmf_subsystem_get_listeners") {
      Json out = Json::array();
      for (const Json& l : sub->second.listeners) out.push_back({{"address", l}});
      return out;
    }
    if (method == "nvmf_subsystem_add_ns") {
      Json ns = p.value("namespace", Json::object());
      auto bdev = ResolveBdev(ns.value("bdev_name", ""));
      if (!bdev.has_value() || Claimed(*bdev)) return Error(method, kInvalidParams, "Invalid parameters");
      uint32_t nsid = ns.value("nsid", 0u);
      auto& list = sub->second.namespaces;
      if (nsid == 0) {
        nsid = 1;
        while (std::any_of(list.begin(), list.end(), [&](const Namespace& n) { return n.nsid == nsid; })) ++nsid;
      } else if (std::any_of(list.begin(), list.end(), [&](const Namespace& n) { return n.nsid == nsid; })) {
        return Error(method, kInvalidParams, "Invalid parameters");
      }
      list.push_back({nsid, *bdev, ns.value("uuid", bdevs_[*bdev])});
      return nsid;
    }
    if (method == "nvmf_subsystem_remove_ns") {
      uint32_t nsid = p.value("nsid", 0u);
      auto& list = sub->second.namespaces;
      size_t before = list.size();
      std::erase_if(list, [&](const Namespace& n) { return n.nsid == nsid; });
      if (list.size() == before) return Error(method, kInvalidParams, "Invalid parameters");
      return true;
    }
    if (method == "bdev_get_bdevs") {
      Json out = Json::array();
      std::string name = p.value("name", "");
      for (const auto& [n, uuid] : bdevs_) {
        if (name.empty() || n == name || uuid == name) {
          out.push_back({{"name", n}, {"aliases", Json::array({uuid})}, {"uuid", uuid}, {"product_name", "Null disk"}});
        }
      }
      if (!name.empty() && out.empty()) return Error(method, -ENODEV, "No such device");
      return out;
    }
    if (method == "vhost_get_controllers") {
      Json out = Json::array();
      std::string name = p.value("name", "");
      for (const auto& [c, bdev] : controllers_) {
        if (!name.empty() && c != name) continue;
        out.push_back({{"ctrlr", c}, {"cpumask", "0x1"}, {"delay_base_us", 0}, {"iops_threshold", 60000},
                       {"socket", "/var/tmp/" + c},
                       {"backend_specific", {{"block", {{"readonly", false}, {"bdev", bdev}, {"transport", "vhost_user_blk"}}}}}});
      }
      if (!name.empty() && out.empty()) return Error(method, -ENODEV, "No such device");
      return out;
    }
    if (method == "vhost_create_blk_controller") {
      std::string c = p.value("ctrlr", "");
      if (controllers_.count(c)) return Error(method, -EEXIST, "File exists");
      auto bdev = ResolveBdev(p.value("dev_name", ""));
      if (!bdev.has_value()) return Error(method, -ENODEV, "No such device");
      if (Claimed(*bdev)) return Error(method, -EPERM, "Operation not permitted");
      controllers_[c] = *bdev;
      return true;
    }
    if (method == "vhost_delete_controller") {
      if (!controllers_.erase(p.value("ctrlr", ""))) return Error(method, -ENODEV, "No such device");
      return true;
    }
    return Error(method, -32601, "Method not found");
  }

  absl::Mutex mu_;
  bool unreachable_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, SpdkError> failures_ ABSL_GUARDED_BY(mu_);
  std::vector<RecordedCall> calls_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> transports_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Subsystem> subsystems_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> bdevs_ ABSL_GUARDED_BY(mu_);        // name -> uuid
  std::map<std::string, std::string> controllers_ ABSL_GUARDED_BY(mu_);  // ctrlr -> bdev name
};

}  // namespace smad::agent::testing
