#include "support/fake_qmp.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

namespace smad::testing {
namespace {

bool SendAll(int fd, const std::string& text) {
  size_t sent = 0;
  while (sent < text.size()) {
    ssize_t n = send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

std::string Line(const Json& message) { return message.dump() + "\r\n"; }

Json ErrorReply(const Json& id, const std::string& error_class, const std::string& desc) {
  Json reply = {{"error", {{"class", error_class}, {"desc", desc}}}};
  if (!id.is_null()) reply["id"] = id;
  return reply;
}

}  // namespace

FakeQemu::FakeQemu(std::vector<std::string> bridges) : bridges_(std::move(bridges)) {
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

FakeQemu::~FakeQemu() {
  stop_ = true;
  thread_.join();
  close(listen_fd_);
}

void FakeQemu::FailCommand(const std::string& command, const std::string& error_class, const std::string& desc) {
  absl::MutexLock lock(&mu_);
  failures_[command] = {error_class, desc};
}

void FakeQemu::SilenceCommand(const std::string& command) {
  absl::MutexLock lock(&mu_);
  silenced_.insert(command);
}

void FakeQemu::CloseOnCommand(const std::string& command) {
  absl::MutexLock lock(&mu_);
  close_on_.insert(command);
}

void FakeQemu::RawReply(const std::string& command, const std::string& line) {
  absl::MutexLock lock(&mu_);
  raw_replies_[command] = line;
}

void FakeQemu::ClearFaults() {
  absl::MutexLock lock(&mu_);
  failures_.clear();
  silenced_.clear();
  close_on_.clear();
  raw_replies_.clear();
}

void FakeQemu::SetGreeting(std::optional<std::string> line) {
  absl::MutexLock lock(&mu_);
  greeting_ = std::move(line);
}

void FakeQemu::SetGuestReleasesDevices(bool releases) {
  absl::MutexLock lock(&mu_);
  guest_releases_ = releases;
}

void FakeQemu::SetNoiseEvents(bool noise) {
  absl::MutexLock lock(&mu_);
  noise_ = noise;
}

void FakeQemu::SetEventBeforeReply(bool before) {
  absl::MutexLock lock(&mu_);
  event_before_reply_ = before;
}

std::vector<Json> FakeQemu::Requests() {
  absl::MutexLock lock(&mu_);
  return requests_;
}

std::vector<std::string> FakeQemu::Commands() {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const Json& r : requests_) {
    std::string c = r.value("execute", "");
    if (c != "qmp_capabilities") out.push_back(c);
  }
  return out;
}

std::vector<std::string> FakeQemu::RawLines() {
  absl::MutexLock lock(&mu_);
  return raw_lines_;
}

Json FakeQemu::LastArguments(const std::string& command) {
  absl::MutexLock lock(&mu_);
  for (auto it = requests_.rbegin(); it != requests_.rend(); ++it) {
    if (it->value("execute", "") == command) return it->value("arguments", Json());
  }
  return Json();
}

std::vector<Json> FakeQemu::AllArguments(const std::string& command) {
  absl::MutexLock lock(&mu_);
  std::vector<Json> out;
  for (const Json& r : requests_) {
    if (r.value("execute", "") == command) out.push_back(r.value("arguments", Json()));
  }
  return out;
}

void FakeQemu::ClearRequests() {
  absl::MutexLock lock(&mu_);
  requests_.clear();
  raw_lines_.clear();
}

std::optional<FakeQemu::Device> FakeQemu::FindDevice(const std::string& id) {
  absl::MutexLock lock(&mu_);
  for (const Device& d : devices_) {
    if (d.id == id) return d;
  }
  return std::nullopt;
}

std::vector<FakeQemu::Device> FakeQemu::Devices() {
  absl::MutexLock lock(&mu_);
  return devices_;
}

bool FakeQemu::HasChardev(const std::string& id) {
  absl::MutexLock lock(&mu_);
  return chardevs_.count(id) > 0;
}

std::string FakeQemu::ChardevPath(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = chardevs_.find(id);
  return it == chardevs_.end() ? "" : it->second;
}

std::vector<std::string> FakeQemu::DeletedEvents() {
  absl::MutexLock lock(&mu_);
  return deleted_events_;
}

void FakeQemu::RemoveDevice(const std::string& id) {
  absl::MutexLock lock(&mu_);
  std::erase_if(devices_, [&](const Device& d) { return d.id == id; });
}

void FakeQemu::RemoveChardev(const std::string& id) {
  absl::MutexLock lock(&mu_);
  chardevs_.erase(id);
}

int FakeQemu::connections() {
  absl::MutexLock lock(&mu_);
  return connections_;
}

void FakeQemu::Serve() {
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

void FakeQemu::ServeConnection(int fd) {
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

Json FakeQemu::QueryPci() {
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

bool FakeQemu::Handle(const std::string& raw, const std::string& line, std::string& reply) {
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
  if (auto replacement = raw_replies_.find(command); replacement != raw_replies_.end()) {
    std::string text = replacement->second;
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
      deleted_events_.push_back(did);
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

}  // namespace smad::testing
