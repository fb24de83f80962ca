#include "jsonrpc/blocking_client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <exception>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace smad::jsonrpc {
namespace {

constexpr char kErrorCodePayloadUrl[] = "type.smad.dev/jsonrpc-error-code";
constexpr size_t kReadChunk = 64 * 1024;

std::string Dump(const Json& value) { return value.dump(-1, ' ', false, Json::error_handler_t::replace); }

absl::StatusOr<int> ConnectUnix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError("invalid unix socket path '" + path + "'");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError("socket(AF_UNIX) failed: " + ErrnoString(errno));
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    ::close(fd);
    return absl::UnavailableError("cannot connect to " + path + ": " + ErrnoString(err));
  }
  return fd;
}

absl::StatusOr<int> ConnectTcp(const std::string& address) {
  size_t colon = address.rfind(':');
  std::string host = address.substr(0, colon);
  std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port_number = 0;
  if (host.empty() || !absl::SimpleAtoi(port, &port_number) || port_number <= 0 || port_number > 65535) {
    return absl::InvalidArgumentError("invalid address '" + address + "': expected host:port");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* results = nullptr;
  int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &results);
  if (rc != 0) return absl::UnavailableError("cannot resolve " + host + ": " + ::gai_strerror(rc));
  int fd = -1;
  int err = 0;
  for (addrinfo* ai = results; ai != nullptr && fd < 0; ai = ai->ai_next) {
    int candidate = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (candidate < 0) {
      err = errno;
      continue;
    }
    if (::connect(candidate, ai->ai_addr, ai->ai_addrlen) != 0) {
      err = errno;
      ::close(candidate);
      continue;
    }
    fd = candidate;
  }
  ::freeaddrinfo(results);
  if (fd < 0) return absl::UnavailableError("cannot connect to " + address + ": " + ErrnoString(err));
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

int RemainingMs(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return 0;
  return left.count() > INT_MAX ? INT_MAX : static_cast<int>(left.count());
}

}  // namespace

absl::StatusOr<BlockingClient> BlockingClient::Connect(const std::string& address) {
  bool is_unix = address.find('/') != std::string::npos || address.find(':') == std::string::npos;
  absl::StatusOr<int> fd = is_unix ? ConnectUnix(address) : ConnectTcp(address);
  if (!fd.ok()) return fd.status();
  return BlockingClient(*fd);
}

BlockingClient::BlockingClient(BlockingClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), next_id_(other.next_id_), framer_(std::move(other.framer_)) {}

BlockingClient& BlockingClient::operator=(BlockingClient&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    next_id_ = other.next_id_;
    framer_ = std::move(other.framer_);
  }
  return *this;
}

BlockingClient::~BlockingClient() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status BlockingClient::SendRaw(const std::string& bytes) {
  if (fd_ < 0) return absl::FailedPreconditionError("client is not connected");
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return absl::UnavailableError("send failed: " + ErrnoString(errno));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Json> BlockingClient::ReadValue(std::chrono::milliseconds timeout) {
  if (fd_ < 0) return absl::FailedPreconditionError("client is not connected");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::array<char, kReadChunk> buffer;
  while (true) {
    absl::StatusOr<std::optional<std::string>> next = framer_.Next();
    if (!next.ok()) return absl::DataLossError("malformed response stream: " + StatusMessage(next.status()));
    if (next->has_value()) {
      Json value;
      try {
        value = Json::parse(**next, nullptr, /*allow_exceptions=*/false);
      } catch (const std::exception&) {
        value = Json(Json::value_t::discarded);
      }
      if (value.is_discarded()) {
        return absl::DataLossError("unparseable response: " + (*next)->substr(0, 200));
      }
      return value;
    }
    pollfd pfd{fd_, POLLIN, 0};
    int rc = ::poll(&pfd, 1, RemainingMs(deadline));
    if (rc < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError("poll failed: " + ErrnoString(errno));
    }
    if (rc == 0) {
      if (RemainingMs(deadline) == 0) return absl::DeadlineExceededError("no response in time");
      continue;
    }
    ssize_t n = ::recv(fd_, buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n == 0) return absl::UnavailableError("connection closed by peer");
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return absl::UnavailableError("recv failed: " + ErrnoString(errno));
    }
    framer_.Append(buffer.data(), static_cast<size_t>(n));
  }
}

absl::StatusOr<Json> BlockingClient::CallRaw(const std::string& method, const Json& params,
                                             std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const int64_t id = next_id_++;
  std::string request = absl::StrCat(R"({"jsonrpc":"2.0","id":)", id, R"(,"method":)", Dump(Json(method)));
  if (!params.is_null()) absl::StrAppend(&request, R"(,"params":)", Dump(params));
  request.push_back('}');
  RETURN_IF_ERROR(SendRaw(request));
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) left = std::chrono::milliseconds(0);
    ASSIGN_OR_RETURN(Json response, ReadValue(left));
    if (!response.is_object()) continue;
    auto id_it = response.find("id");
    if (id_it == response.end()) continue;
    if (*id_it == id || (id_it->is_null() && response.contains("error"))) return response;
  }
}

absl::StatusOr<Json> BlockingClient::Call(const std::string& method, const Json& params,
                                          std::chrono::milliseconds timeout) {
  ASSIGN_OR_RETURN(Json response, CallRaw(method, params, timeout));
  auto error_it = response.find("error");
  if (error_it != response.end()) {
    int code = kInternalError;
    std::string message;
    if (error_it->is_object()) {
      auto code_it = error_it->find("code");
      if (code_it != error_it->end() && code_it->is_number_integer()) {
        int64_t value = code_it->get<int64_t>();
        if (value >= INT_MIN && value <= INT_MAX) code = static_cast<int>(value);
      }
      auto message_it = error_it->find("message");
      if (message_it != error_it->end()) {
        message = message_it->is_string() ? message_it->get<std::string>() : Dump(*message_it);
      }
    } else {
      message = Dump(*error_it);
    }
    absl::Status status = absl::FailedPreconditionError(absl::StrCat(code, ": ", message));
    status.SetPayload(kErrorCodePayloadUrl, absl::Cord(std::to_string(code)));
    return status;
  }
  auto result_it = response.find("result");
  if (result_it == response.end()) {
    return absl::DataLossError("response has neither result nor error: " + Dump(response).substr(0, 200));
  }
  return std::move(*result_it);
}

std::optional<int> ErrorCodeOf(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kFailedPrecondition) return std::nullopt;
  int code = 0;
  if (auto payload = status.GetPayload(kErrorCodePayloadUrl)) {
    if (absl::SimpleAtoi(std::string(*payload), &code)) return code;
  }
  // Fall back to the "code: message" text (for example after the status was copied without payloads).
  absl::string_view message = status.message();
  size_t colon = message.find(':');
  if (colon != absl::string_view::npos && absl::SimpleAtoi(message.substr(0, colon), &code)) return code;
  return std::nullopt;
}

}  // namespace smad::jsonrpc
