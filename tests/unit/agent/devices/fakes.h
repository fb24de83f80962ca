#pragma once

// Test doubles for the QEMU-backed device managers:
//  - FakeQemu: a TCP server speaking QMP like QEMU (greeting, capabilities, query-pci with PCI bridges,
//    device_add/device_del with DEVICE_DELETED events, chardev-add/remove/query), with fault injection;
//  - FakeSpdk: an SpdkClient answering the nvmf/vfio-user, vhost and bdev calls like SPDK, recording
//    every call, with fault injection (error answers, an unreachable target).
// Both are header-only so each test file can include them.

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

namespace smad::agent::testing {

// ---- FakeQemu ----------------------------------------------------------------------------------------

class FakeQemu {
 public:
  struct Device {
    std::string id;
    std::string bus;
    uint32_t slot = 0;
    Json args;  // the device_add arguments
  };

  // Listens on 127.0.0.1 (an ephemeral port) with bridges `bridges` on root bus 0.
  explicit FakeQemu(std::vector<std::string> bridges = {"pci.spdk.0", "pci.spdk.1"}) : bridges_(std::move(bridges)) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    socklen_t len = sizeof(addr);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    listen(listen_fd_, 8);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeQemu() {
    stop_ = true;
    thread_.join();
    close(listen_fd_);
  }
  FakeQemu(const FakeQemu&) = delete;
  FakeQemu& operator=(const FakeQemu&) = delete;

  uint16_t port() const { return port_; }

  // ---- fault injection ----
  // Every `command` fails with {"class": error_class, "desc": desc} until ClearFaults().
  void FailCommand(const std::string& command, const std::string& error_class = "GenericError",
                   const std::string& desc = "injected failure") {
    absl::MutexLock lock(&mu_);
    failures_[command] = {error_class, desc};
  }
  // `command` gets no answer (the client must time out).
  void SilenceCommand(const std::string& command) {
    absl::MutexLock lock(&mu_);
    silenced_.insert(command);
  }
  // The connection is closed when `command` arrives.
  void CloseOnCommand(const std::string& command) {
    absl::MutexLock lock(&mu_);
    close_on_.insert(command);
  }
  // Replaces the reply line (without "\r\n") to `command`; "{id}" is replaced by the request's id.
  void RawReply(const std::string& command, const std::string& line) {
    absl::MutexLock lock(&mu_);
    raw_replies_[command] = line;
  }
  void ClearFaults() {
    absl::MutexLock lock(&mu_);
    failures_.clear();
    silenced_.clear();
    close_on_.clear();
    raw_replies_.clear();
  }
  // The greeting line (without "\r\n"); nullopt: never greet.
  void SetGreeting(std::optional<std::string> line) {
    absl::MutexLock lock(&mu_);
    greeting_ = std::move(line);
  }
  // Whether the guest releases unplugged devices (device_del then removes the device and QEMU emits
  // DEVICE_DELETED); otherwise the device stays and no event comes.
  void SetGuestReleasesDevices(bool releases) {
    absl::MutexLock lock(&mu_);
    guest_releases_ = releases;
  }
  // Unrelated events sent before every reply (the client must skip them).
  void SetNoiseEvents(bool noise) {
    absl::MutexLock lock(&mu_);
    noise_ = noise;
  }
  // The DEVICE_DELETED event of device_del is sent before its reply.
  void SetEventBeforeReply(bool before) {
    absl::MutexLock lock(&mu_);
    event_before_reply_ = before;
  }

  // ---- state ----
  std::vector<Json> Requests() {
    absl::MutexLock lock(&mu_);
    return requests_;
  }
  // The commands received so far, qmp_capabilities excluded.
  std::vector<std::string> Commands() {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> out;
    for (const Json& r : requests_) {
      std::string c = r.value("execute", "");
      if (c != "qmp_capabilities") out.push_back(c);
    }
    return out;
  }
  // The request lines as received (with their "\r"), without the final "\n".
  std::vector<std::string> RawLines() {
    absl::MutexLock lock(&mu_);
    return raw_lines_;
  }
  // The arguments of the last `command` received (null when none).
  Json LastArguments(const std::string& command) {
    absl::MutexLock lock(&mu_);
    for (auto it = requests_.rbegin(); it != requests_.rend(); ++it) {
      if (it->value("execute", "") == command) return it->value("arguments", Json());
    }
    return Json();
  }
  void ClearRequests() {
    absl::MutexLock lock(&mu_);
    requests_.clear();
    raw_lines_.clear();
  }
  std::optional<Device> FindDevice(const std::string& id) {
    absl::MutexLock lock(&mu_);
    for (const Device& d : devices_) {
      if (d.id == id) return d;
    }
    return std::nullopt;
  }
  bool HasChardev(const std::string& id) {
    absl::MutexLock lock(&mu_);
    return chardevs_.count(id) > 0;
  }
  std::string ChardevPath(const std::string& id) {
    absl::MutexLock lock(&mu_);
    auto it = chardevs_.find(id);
    return it == chardevs_.end() ? "" : it->second;
  }
  // Out-of-band changes (a VM restart, an operator).
  void RemoveDevice(const std::string& id) {
    absl::MutexLock lock(&mu_);
    std::erase_if(devices_, [&](const Device& d) { return d.id == id; });
  }
  void RemoveChardev(const std::string& id) {
    absl::MutexLock lock(&mu_);
    chardevs_.erase(id);
  }
  int connections() {
    absl::MutexLock lock(&mu_);
    return connections_;
  }

 private:
  static bool SendAll(int fd, const std::string& text) {
    size_t sent = 0;
    while (sent < text.size()) {
      ssize_t n = send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  void Serve() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      {
        absl::MutexLock lock(&mu_);
        ++connections_;
      }
      ServeConnection(fd);
      close(fd);
    }
  }

  void ServeConnection(int fd) {
    std::optional<std::string> greeting;
    {
      absl::MutexLock lock(&mu_);
      greeting = greeting_;
    }
    if (greeting.has_value() && !SendAll(fd, *greeting + "\r\n")) return;
    std::string buffer;
    char chunk[4096];
    while (!stop_) {
      size_t eol;
      while ((eol = buffer.find('\n')) != std::string::npos) {
        std::string raw = buffer.substr(0, eol);
        buffer.erase(0, eol + 1);
        std::string line = raw;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        std::string reply;
        if (!Handle(raw, line, reply)) return;  // close
        if (!reply.empty() && !SendAll(fd, reply)) return;
      }
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
      if (n <= 0) return;
      buffer.append(chunk, static_cast<size_t>(n));
    }
  }

  static std::string Line(const Json& message) { return message.dump() + "\r\n"; }
  static Json ErrorReply(const Json& id, const std::string& error_class, const std::string& desc) {
    Json reply = {{"error", {{"class", error_class}, {"desc", desc}}}};
    if (!id.is_null()) reply["id"] = id;
    return reply;
  }

  Json QueryPci() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Json root = Json::array();
    root.push_back({{"bus", 0}, {"slot", 0}, {"function", 0}, {"qdev_id", ""}, {"class_info", {{"class", 1536}}}});
    for (size_t i = 0; i < bridges_.size(); ++i) {
      Json behind = Json::array();
      for (const Device& d : devices_) {
        if (d.bus == bridges_[i]) {
          behind.push_back({{"bus", i + 1}, {"slot", d.slot}, {"function", 0}, {"qdev_id", d.id},
                            {"class_info", {{"class", 256}}}, {"id", {{"vendor", 6900}, {"device", 4097}}}});
        }
      }
      root.push_back({{"bus", 0}, {"slot", 3 + i}, {"function", 0}, {"qdev_id", bridges_[i]},
                      {"class_info", {{"desc", "PCI bridge"}, {"class", 1540}}},
                      {"pci_bridge", {{"bus", {{"number", i + 1}, {"secondary", i + 1}}}, {"devices", behind}}}});
    }
    return Json::array({{{"bus", 0}, {"devices", root}}});
  }

  // Handles one request line (`raw`: as received, without its "\n"); fills `reply` (possibly several
  // lines). False: close the connection.
  bool Handle(const std::string& raw, const std::string& line, std::string& reply) {
    absl::MutexLock lock(&mu_);
    raw_lines_.push_back(raw);
    Json request = Json::parse(line, nullptr, false);
    if (!request.is_object()) {
      reply = Line(ErrorReply(Json(), "GenericError", "JSON parse error"));
      return true;
    }
    requests_.push_back(request);
    const std::string command = request.value("execute", "");
    const Json id = request.value("id", Json());
    const Json args = request.value("arguments", Json::object());
    if (close_on_.count(command)) return false;
    if (silenced_.count(command)) return true;
    if (noise_) reply += Line({{"event", "RTC_CHANGE"}, {"data", {{"offset", 1}}}, {"timestamp", {{"seconds", 1}}}});
    if (auto raw = raw_replies_.find(command); raw != raw_replies_.end()) {
      std::string text = raw->second;
      if (auto at = text.find("{id}"); at != std::string::npos) text.replace(at, 4, id.dump());
      reply += text + "\r\n";
      return true;
    }
    if (auto f = failures_.find(command); f != failures_.end()) {
      reply += Line(ErrorReply(id, f->second.first, f->second.second));
      return true;
    }
    Json result = Json::object();
    std::string events;
    if (command == "qmp_capabilities") {
    } else if (command == "query-pci") {
      result = QueryPci();
    } else if (command == "query-chardev") {
      result = Json::array({{{"label", "compat_monitor0"}, {"filename", "stdio"}, {"frontend-open", true}}});
      for (const auto& [label, path] : chardevs_) {
        result.push_back({{"label", label}, {"filename", "unix:" + path}, {"frontend-open", true}});
      }
    } else if (command == "chardev-add") {
      std::string cid = args.value("id", "");
      if (chardevs_.count(cid)) {
        reply += Line(ErrorReply(id, "GenericError", "attempt to add duplicate property '" + cid + "'"));
        return true;
      }
      chardevs_[cid] = args["backend"]["data"]["addr"]["data"].value("path", "");
    } else if (command == "chardev-remove") {
      std::string cid = args.value("id", "");
      if (!chardevs_.count(cid)) {
        reply += Line(ErrorReply(id, "GenericError", "Chardev '" + cid + "' not found"));
        return true;
      }
      for (const Device& d : devices_) {
        if (d.args.value("chardev", "") == cid) {
          reply += Line(ErrorReply(id, "GenericError", "Chardev '" + cid + "' is busy"));
          return true;
        }
      }
      chardevs_.erase(cid);
    } else if (command == "device_add") {
      std::string did = args.value("id", "");
      std::string bus = args.value("bus", "");
      std::string addr = args.value("addr", "");
      uint32_t slot = static_cast<uint32_t>(std::stoul(addr.empty() ? "0" : addr, nullptr, 0));
      std::string error;
      if (std::find(bridges_.begin(), bridges_.end(), bus) == bridges_.end()) error = "Bus '" + bus + "' not found";
      for (const Device& d : devices_) {
        if (d.id == did) error = "Duplicate device ID '" + did + "' for device";
        if (d.bus == bus && d.slot == slot) error = "PCI: slot " + std::to_string(slot) + " function 0 not available";
      }
      if (args.contains("chardev") && !chardevs_.count(args.value("chardev", ""))) {
        error = "Property 'vhost-user-blk-pci.chardev' can't find value '" + args.value("chardev", "") + "'";
      }
      if (!error.empty()) {
        reply += Line(ErrorReply(id, "GenericError", error));
        return true;
      }
      devices_.push_back({did, bus, slot, args});
    } else if (command == "device_del") {
      std::string did = args.value("id", "");
      auto it = std::find_if(devices_.begin(), devices_.end(), [&](const Device& d) { return d.id == did; });
      if (it == devices_.end()) {
        reply += Line(ErrorReply(id, "DeviceNotFound", "Device '" + did + "' not found"));
        return true;
      }
      if (guest_releases_) {
        devices_.erase(it);
        std::string path = "/machine/peripheral/" + did;
        events += Line({{"event", "DEVICE_DELETED"}, {"data", {{"path", path + "/virtio-backend"}}}});
        events += Line({{"event", "device_deleted"}, {"data", {{"device", "other"}, {"path", "/x"}}}});
        events += Line({{"event", "DEVICE_DELETED"}, {"data", {{"device", did}, {"path", path}}}});
      }
    } else {
      reply += Line(ErrorReply(id, "CommandNotFound", "The command " + command + " has not been found"));
      return true;
    }
    Json answer = {{"return", result}};
    if (!id.is_null()) answer["id"] = id;
    if (event_before_reply_) {
      reply += events + Line(answer);
    } else {
      reply += Line(answer) + events;
    }
    return true;
  }

  const std::vector<std::string> bridges_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;

  absl::Mutex mu_;
  std::optional<std::string> greeting_ ABSL_GUARDED_BY(mu_) =
      R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}})";
  std::map<std::string, std::pair<std::string, std::string>> failures_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> silenced_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> close_on_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> raw_replies_ ABSL_GUARDED_BY(mu_);
  bool guest_releases_ ABSL_GUARDED_BY(mu_) = true;
  bool noise_ ABSL_GUARDED_BY(mu_) = false;
  bool event_before_reply_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Json> requests_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> raw_lines_ ABSL_GUARDED_BY(mu_);
  std::vector<Device> devices_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> chardevs_ ABSL_GUARDED_BY(mu_);  // label -> socket path
  int connections_ ABSL_GUARDED_BY(mu_) = 0;
};

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
