#include "agent/devices/qmp_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <utility>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace smad::agent {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kQmpErrorPayloadUrl[] = "type.smad.dev/smad.qmp.error";
constexpr size_t kCompactAfter = 64 * 1024;  // consumed bytes a QmpLineReader keeps before compacting

absl::StatusCode CodeForQmpClass(absl::string_view error_class) {
  if (error_class == "DeviceNotFound") return absl::StatusCode::kNotFound;
  if (error_class == "CommandNotFound") return absl::StatusCode::kUnimplemented;
  return absl::StatusCode::kInternal;
}

std::string StringMember(const Json& object, const char* key, const char* fallback) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string(fallback);
}

// Milliseconds left until `deadline` for poll(): at least 1 while time remains (rounded up), 0 after.
int PollTimeout(Clock::time_point deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<int64_t>(left, 60'000));
}

// Waits until `fd` is ready for `events` or `deadline` passes. Returns false on timeout.
absl::StatusOr<bool> WaitReady(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    int timeout = PollTimeout(deadline);
    if (timeout == 0) return false;
    pollfd p{fd, events, 0};
    int n = poll(&p, 1, timeout);
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return ErrnoStatus(errno, absl::StrCat("poll: ", ErrnoString(errno)));
  }
}

}  // namespace

// ---- Parsing -------------------------------------------------------------------------------------------

absl::StatusOr<std::optional<std::string>> QmpLineReader::NextLine() {
  if (failed_) return absl::DataLossError(absl::StrCat("a line is longer than ", max_line_, " bytes"));
  size_t pos = buffer_.find('\n', std::max(start_, scanned_));
  if (pos == std::string::npos) {
    scanned_ = buffer_.size();
    // +1: the line's "\r" may already be here while its "\n" is not.
    if (buffer_.size() - start_ > max_line_ + 1) {
      failed_ = true;
      return absl::DataLossError(absl::StrCat("a line is longer than ", max_line_, " bytes"));
    }
    if (start_ > 0 && start_ == buffer_.size()) {
      buffer_.clear();
      start_ = scanned_ = 0;
    }
    return std::optional<std::string>();
  }
  size_t end = pos;
  if (end > start_ && buffer_[end - 1] == '\r') --end;
  if (end - start_ > max_line_) {
    failed_ = true;
    return absl::DataLossError(absl::StrCat("a line is longer than ", max_line_, " bytes"));
  }
  std::string line = buffer_.substr(start_, end - start_);
  start_ = pos + 1;
  scanned_ = start_;
  if (start_ == buffer_.size()) {
    buffer_.clear();
    start_ = scanned_ = 0;
  } else if (start_ > kCompactAfter && start_ > buffer_.size() / 2) {
    buffer_.erase(0, start_);
    start_ = scanned_ = 0;
  }
  return std::optional<std::string>(std::move(line));
}

absl::StatusOr<QmpMessage> ParseQmpMessage(absl::string_view line) {
  Json value;
  try {
    value = Json::parse(line.data(), line.data() + line.size(), nullptr, /*allow_exceptions=*/false);
  } catch (const std::exception&) {
    value = Json(Json::value_t::discarded);
  }
  if (value.is_discarded() || !value.is_object()) return absl::DataLossError("a message is not a JSON object");
  QmpMessage message;
  if (auto it = value.find("QMP"); it != value.end()) {
    message.kind = QmpMessage::Kind::kGreeting;
    message.value = std::move(*it);
    return message;
  }
  auto id = value.find("id");
  if (auto it = value.find("return"); it != value.end()) {
    message.kind = QmpMessage::Kind::kReturn;
    message.value = std::move(*it);
    if (id != value.end()) message.id = std::move(*id);
    return message;
  }
  if (auto it = value.find("error"); it != value.end()) {
    if (!it->is_object()) return absl::DataLossError("an error reply's \"error\" is not an object");
    message.kind = QmpMessage::Kind::kError;
    message.error_class = StringMember(*it, "class", "Undefined");
    message.error_desc = StringMember(*it, "desc", "Unknown");
    if (id != value.end()) message.id = std::move(*id);
    return message;
  }
  if (auto it = value.find("event"); it != value.end()) {
    if (!it->is_string()) return absl::DataLossError("an event's name is not a string");
    message.kind = QmpMessage::Kind::kEvent;
    message.event = it->get<std::string>();
    if (auto data = value.find("data"); data != value.end() && !data->is_null()) {
      if (!data->is_object()) return absl::DataLossError("an event's \"data\" is not an object");
      message.value = std::move(*data);
    }
    return message;
  }
  return message;  // kOther
}

bool QmpEventMatches(const QmpMessage& message, absl::string_view name, const Json& data) {
  if (message.kind != QmpMessage::Kind::kEvent || !absl::EqualsIgnoreCase(message.event, name)) return false;
  if (!data.is_object()) return true;
  for (const auto& [key, wanted] : data.items()) {
    if (!message.value.is_object()) return false;
    auto it = message.value.find(key);
    if (it == message.value.end() || *it != wanted) return false;
  }
  return true;
}

namespace {

bool HasQdevId(const Json& device, absl::string_view qdev_id) {
  if (!device.is_object()) return false;
  auto it = device.find("qdev_id");
  return it != device.end() && it->is_string() && it->get_ref<const std::string&>() == qdev_id;
}

// The "devices" array behind a bridge device, or nullptr.
const Json* BridgeDevices(const Json& device) {
  if (!device.is_object()) return nullptr;
  auto bridge = device.find("pci_bridge");
  if (bridge == device.end() || !bridge->is_object()) return nullptr;
  auto devices = bridge->find("devices");
  if (devices == bridge->end() || !devices->is_array()) return nullptr;
  return &*devices;
}

const Json* BusDevices(const Json& bus) {
  if (!bus.is_object()) return nullptr;
  auto devices = bus.find("devices");
  return devices != bus.end() && devices->is_array() ? &*devices : nullptr;
}

}  // namespace

const Json* FindPciDevice(const Json& query_pci, absl::string_view qdev_id, bool recursive) {
  if (!query_pci.is_array()) return nullptr;
  if (!recursive) {
    for (const Json& bus : query_pci) {
      const Json* devices = BusDevices(bus);
      if (devices == nullptr) continue;
      for (const Json& device : *devices) {
        const Json* behind = BridgeDevices(device);
        if (behind == nullptr) continue;
        for (const Json& d : *behind) {
          if (HasQdevId(d, qdev_id)) return &d;
        }
      }
    }
    return nullptr;
  }
  // Without recursion (the answer comes from outside): each device array is searched before the arrays
  // behind its bridges.
  std::vector<std::pair<const Json*, int>> pending;  // device arrays with their bridge depth
  for (auto bus = query_pci.rbegin(); bus != query_pci.rend(); ++bus) {
    if (const Json* devices = BusDevices(*bus)) pending.emplace_back(devices, 0);
  }
  while (!pending.empty()) {
    auto [devices, depth] = pending.back();
    pending.pop_back();
    std::vector<std::pair<const Json*, int>> bridges;
    for (const Json& device : *devices) {
      if (HasQdevId(device, qdev_id)) return &device;
      const Json* behind = BridgeDevices(device);
      if (behind != nullptr && depth < kMaxPciDepth) bridges.emplace_back(behind, depth + 1);
    }
    pending.insert(pending.end(), bridges.rbegin(), bridges.rend());
  }
  return nullptr;
}

bool HasChardev(const Json& query_chardev, absl::string_view label) {
  if (!query_chardev.is_array()) return false;
  for (const Json& c : query_chardev) {
    if (!c.is_object()) continue;
    auto it = c.find("label");
    if (it != c.end() && it->is_string() && it->get_ref<const std::string&>() == label) return true;
  }
  return false;
}

absl::Status QmpErrorStatus(absl::string_view command, absl::string_view error_class, absl::string_view desc) {
  absl::Status status(CodeForQmpClass(error_class), absl::StrCat(command, ": ", desc, " (", error_class, ")"));
  Json payload = {{"class", std::string(error_class)}, {"desc", std::string(desc)}};
  status.SetPayload(kQmpErrorPayloadUrl, absl::Cord(payload.dump(-1, ' ', false, Json::error_handler_t::replace)));
  return status;
}

std::optional<QmpError> QmpErrorOf(const absl::Status& status) {
  if (status.ok()) return std::nullopt;
  absl::optional<absl::Cord> payload = status.GetPayload(kQmpErrorPayloadUrl);
  if (!payload) return std::nullopt;
  Json value = Json::parse(std::string(*payload), nullptr, /*allow_exceptions=*/false);
  if (!value.is_object()) return std::nullopt;
  return QmpError{StringMember(value, "class", ""), StringMember(value, "desc", "")};
}

// ---- The client --------------------------------------------------------------------------------------

QmpClient::QmpClient(const QmpOptions& options, int fd)
    : options_(options), fd_(fd), reader_(options.max_line) {}

QmpClient::~QmpClient() {
  if (fd_ >= 0) close(fd_);
}

std::string QmpClient::Prefix() const { return absl::StrCat("QMP ", options_.address, ":", options_.port, ": "); }

absl::StatusOr<std::unique_ptr<QmpClient>> QmpClient::Connect(const QmpOptions& options) {
  const std::string prefix = absl::StrCat("QMP ", options.address, ":", options.port, ": ");
  const Clock::time_point deadline = Clock::now() + options.timeout;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  const std::string host = options.address == "localhost" ? "127.0.0.1" : options.address;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(options.port);
    addr_len = sizeof(*v4);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(options.port);
    addr_len = sizeof(*v6);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "not an IP address"));
  }
  if (options.port == 0) return absl::InvalidArgumentError(absl::StrCat(prefix, "no port"));

  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat(prefix, "socket: ", ErrnoString(errno)));
  std::unique_ptr<QmpClient> client(new QmpClient(options, fd));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), addr_len) != 0) {
    if (errno != EINPROGRESS && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat(prefix, "connect: ", ErrnoString(errno)));
    }
    auto ready = WaitReady(fd, POLLOUT, deadline);
    if (!ready.ok()) return absl::UnavailableError(absl::StrCat(prefix, "connect: ", ready.status().message()));
    if (!*ready) {
      return absl::DeadlineExceededError(
          absl::StrCat(prefix, "connect: no connection within ", options.timeout.count(), " ms"));
    }
    int error = 0;
    socklen_t len = sizeof(error);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
    if (error != 0) return absl::UnavailableError(absl::StrCat(prefix, "connect: ", ErrnoString(error)));
  }
  auto greeting = client->ReadMessage(deadline);
  if (!greeting.ok()) return client->Fail(greeting.status());
  if (greeting->kind != QmpMessage::Kind::kGreeting) {
    return client->Fail(absl::DataLossError("the peer did not greet with {\"QMP\": ...}"));
  }
  // Negotiation shares the connection's deadline.
  auto negotiated = client->Run("qmp_capabilities", Json(), nullptr, deadline);
  if (!negotiated.ok()) return negotiated.status();
  return client;
}

absl::Status QmpClient::Fail(absl::Status status) {
  if (QmpErrorOf(status).has_value()) return status;  // a QMP error reply: the connection stays usable
  absl::Status failed(status.code(), absl::StrCat(Prefix(), status.message()));
  broken_ = failed;
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  return failed;
}

absl::Status QmpClient::SendLine(const std::string& line, Clock::time_point deadline) {
  size_t sent = 0;
  while (sent < line.size()) {
    ssize_t n = send(fd_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      auto ready = WaitReady(fd_, POLLOUT, deadline);
      if (!ready.ok()) return absl::UnavailableError(absl::StrCat("send: ", ready.status().message()));
      if (!*ready) {
        return absl::DeadlineExceededError(absl::StrCat("send: not sent within ", options_.timeout.count(), " ms"));
      }
      continue;
    }
    return absl::UnavailableError(absl::StrCat("send: ", ErrnoString(n < 0 ? errno : EPIPE)));
  }
  return absl::OkStatus();
}

absl::StatusOr<QmpMessage> QmpClient::ReadMessage(Clock::time_point deadline) {
  char chunk[4096];
  for (;;) {
    ASSIGN_OR_RETURN(std::optional<std::string> line, reader_.NextLine());
    if (line.has_value()) {
      if (line->find_first_not_of(" \t") == std::string::npos) continue;  // blank line
      return ParseQmpMessage(*line);
    }
    auto ready = WaitReady(fd_, POLLIN, deadline);
    if (!ready.ok()) return absl::UnavailableError(absl::StrCat("recv: ", ready.status().message()));
    if (!*ready) {
      return absl::DeadlineExceededError(absl::StrCat("no answer within ", options_.timeout.count(), " ms"));
    }
    ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n > 0) {
      reader_.Append(chunk, static_cast<size_t>(n));
    } else if (n == 0) {
      return absl::UnavailableError("the connection was closed by the peer");
    } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
      return absl::UnavailableError(absl::StrCat("recv: ", ErrnoString(errno)));
    }
  }
}

absl::StatusOr<Json> QmpClient::Run(absl::string_view command, const Json& arguments,
                                    const QmpEventFilter* filter, Clock::time_point deadline) {
  if (!broken_.ok()) return broken_;
  if (!arguments.is_null() && !arguments.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(command, ": arguments must be an object"));
  }
  const std::string id = std::to_string(++next_id_);
  Json request = {{"execute", std::string(command)}, {"id", id}};
  if (arguments.is_object() && !arguments.empty()) request["arguments"] = arguments;
  std::string line = request.dump(-1, ' ', false, Json::error_handler_t::replace);
  line += "\r\n";
  absl::Status sent = SendLine(line, deadline);
  if (!sent.ok()) return Fail(absl::Status(sent.code(), absl::StrCat(command, ": ", sent.message())));

  std::optional<Json> reply;
  std::optional<Json> event;
  for (;;) {
    auto message = ReadMessage(deadline);
    if (!message.ok()) {
      std::string waiting = reply.has_value() ? absl::StrCat(" (waiting for event ", filter->name, ")") : "";
      return Fail(absl::Status(message.status().code(),
                               absl::StrCat(command, ": ", message.status().message(), waiting)));
    }
    switch (message->kind) {
      case QmpMessage::Kind::kReturn:
      case QmpMessage::Kind::kError: {
        bool no_id = message->id.is_null();
        if (reply.has_value() || (no_id && message->kind == QmpMessage::Kind::kReturn) ||
            (!no_id && message->id != Json(id))) {
          return Fail(absl::DataLossError(absl::StrCat(command, ": a reply that does not answer command id ", id)));
        }
        // An error without id: QEMU could not parse the command at all.
        if (message->kind == QmpMessage::Kind::kError) {
          return QmpErrorStatus(command, message->error_class, message->error_desc);
        }
        if (filter == nullptr) return std::move(message->value);
        if (event.has_value()) return std::move(*event);
        reply = std::move(message->value);
        break;
      }
      case QmpMessage::Kind::kEvent:
        if (filter != nullptr && !event.has_value() && QmpEventMatches(*message, filter->name, filter->data)) {
          if (reply.has_value()) return std::move(message->value);
          event = std::move(message->value);
        }
        break;
      case QmpMessage::Kind::kGreeting:
        return Fail(absl::DataLossError(absl::StrCat(command, ": an unexpected second greeting")));
      case QmpMessage::Kind::kOther:
        break;
    }
  }
}

absl::StatusOr<Json> QmpClient::Execute(absl::string_view command, const Json& arguments) {
  return Run(command, arguments, nullptr, Clock::now() + options_.timeout);
}

absl::StatusOr<Json> QmpClient::ExecuteAndWait(absl::string_view command, const Json& arguments,
                                               const QmpEventFilter& filter) {
  return Run(command, arguments, &filter, Clock::now() + options_.timeout);
}

}  // namespace smad::agent
