#include "agent/spdk/transport.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status.h"

namespace smad::agent {
namespace {

constexpr absl::string_view kHttpScheme = "http://";

bool HasControlOrSpace(absl::string_view text) {
  for (char c : text) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return true;
  }
  return false;
}

// Decodes %XX escapes. Errors: InvalidArgument for a truncated or non-hex escape.
absl::StatusOr<std::string> PercentDecode(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    int value = 0;
    if (i + 2 >= text.size() || !absl::ascii_isxdigit(text[i + 1]) || !absl::ascii_isxdigit(text[i + 2])) {
      return absl::InvalidArgumentError("invalid percent-encoding in the credentials");
    }
    for (int k = 1; k <= 2; ++k) {
      char c = absl::ascii_tolower(text[i + k]);
      value = value * 16 + (absl::ascii_isdigit(c) ? c - '0' : c - 'a' + 10);
    }
    out.push_back(static_cast<char>(value));
    i += 2;
  }
  return out;
}

// Parses "host:port", "[v6]:port", or (when `default_port` is not 0) "host" / "[v6]".
absl::Status ParseHostPort(absl::string_view text, uint16_t default_port, SpdkAddress& address) {
  absl::string_view host;
  absl::string_view port;
  if (absl::StartsWith(text, "[")) {
    size_t close = text.find(']');
    if (close == absl::string_view::npos) return absl::InvalidArgumentError("unterminated '[' in host");
    host = text.substr(1, close - 1);
    absl::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return absl::InvalidArgumentError("expected ':' after ']'");
      port = rest.substr(1);
    }
  } else {
    size_t colon = text.rfind(':');
    host = colon == absl::string_view::npos ? text : text.substr(0, colon);
    if (colon != absl::string_view::npos) port = text.substr(colon + 1);
  }
  if (host.empty() || HasControlOrSpace(host)) return absl::InvalidArgumentError("missing or invalid host");
  uint32_t port_number = default_port;
  if (!port.empty() || default_port == 0) {
    if (!absl::SimpleAtoi(port, &port_number) || port_number == 0 || port_number > 65535) {
      return absl::InvalidArgumentError("missing or invalid port");
    }
  }
  address.host = std::string(host);
  address.port = static_cast<uint16_t>(port_number);
  return absl::OkStatus();
}

absl::StatusOr<SpdkAddress> ParseHttpAddress(absl::string_view rest) {
  SpdkAddress address;
  address.kind = SpdkAddress::Kind::kHttp;
  size_t slash = rest.find('/');
  absl::string_view authority = rest.substr(0, slash);
  address.path = slash == absl::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (HasControlOrSpace(address.path)) return absl::InvalidArgumentError("invalid HTTP path");
  size_t at = authority.rfind('@');
  if (at != absl::string_view::npos) {
    absl::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    size_t colon = userinfo.find(':');
    absl::StatusOr<std::string> user = PercentDecode(userinfo.substr(0, colon));
    absl::StatusOr<std::string> password =
        PercentDecode(colon == absl::string_view::npos ? absl::string_view() : userinfo.substr(colon + 1));
    if (!user.ok()) return user.status();
    if (!password.ok()) return password.status();
    address.has_credentials = true;
    address.user = std::move(*user);
    address.password = std::move(*password);
  }
  RETURN_IF_ERROR(ParseHostPort(authority, 80, address));
  return address;
}

absl::StatusOr<UniqueFd> ConnectUnix(const SpdkAddress& address) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, address.path.data(), address.path.size());  // length checked by the parser
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::UnavailableError("socket(AF_UNIX): " + ErrnoString(errno));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot connect to ", address.path, ": ", ErrnoString(errno)));
  }
  return fd;
}

// Waits for a non-blocking connect in progress. Returns 0 or the errno of the failure (ETIMEDOUT at the
// deadline).
int FinishConnect(int fd, Deadline deadline) {
  while (true) {
    pollfd pfd{fd, POLLOUT, 0};
    int rc = ::poll(&pfd, 1, PollTimeoutMs(deadline));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return errno;
    if (rc == 0) {
      if (PollTimeoutMs(deadline) == 0) return ETIMEDOUT;
      continue;
    }
    int error = 0;
    socklen_t length = sizeof(error);
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) return errno;
    return error;
  }
}

absl::StatusOr<UniqueFd> ConnectTcp(const SpdkAddress& address, Deadline deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* results = nullptr;
  const std::string port = std::to_string(address.port);
  int rc = ::getaddrinfo(address.host.c_str(), port.c_str(), &hints, &results);
  if (rc != 0)
    return absl::UnavailableError(absl::StrCat("cannot resolve ", address.host, ": ", ::gai_strerror(rc)));
  int error = 0;
  UniqueFd connected;
  for (addrinfo* ai = results; ai != nullptr && !connected.valid(); ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      error = errno;
      continue;
    }
    error = ::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : errno;
    if (error == EINPROGRESS) error = FinishConnect(fd.get(), deadline);
    if (error == 0) connected = std::move(fd);
    if (error == ETIMEDOUT) break;
  }
  ::freeaddrinfo(results);
  const std::string target = address.HostPort();
  if (error == ETIMEDOUT) return absl::DeadlineExceededError("timed out connecting to " + target);
  if (!connected.valid())
    return absl::UnavailableError(absl::StrCat("cannot connect to ", target, ": ", ErrnoString(error)));
  int one = 1;
  ::setsockopt(connected.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return connected;
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    Reset();
    fd_ = other.Release();
  }
  return *this;
}

int UniqueFd::Release() { return std::exchange(fd_, -1); }

void UniqueFd::Reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::string SpdkAddress::HostPort() const {
  bool v6 = host.find(':') != std::string::npos;
  return absl::StrCat(v6 ? "[" : "", host, v6 ? "]" : "", ":", port);
}

std::string SpdkAddress::Redacted() const {
  switch (kind) {
    case Kind::kUnix: return path;
    case Kind::kTcp: return HostPort();
    case Kind::kHttp: return absl::StrCat("http://", has_credentials ? user + ":***@" : "", HostPort(), path);
  }
  return "?";
}

absl::StatusOr<SpdkAddress> ParseSpdkAddress(absl::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("empty target address");
  if (absl::StartsWithIgnoreCase(text, kHttpScheme)) {
    absl::StatusOr<SpdkAddress> address = ParseHttpAddress(text.substr(kHttpScheme.size()));
    if (!address.ok()) {
      // The text may hold a password: the message names the problem only.
      return absl::InvalidArgumentError(
          absl::StrCat("invalid HTTP target address: ", address.status().message()));
    }
    return address;
  }
  size_t scheme = text.find("://");
  if (scheme != absl::string_view::npos && text[0] != '/' && text[0] != '.') {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported scheme '", text.substr(0, scheme), "' in the target address"));
  }
  SpdkAddress address;
  if (text.find('/') != absl::string_view::npos || text.find(':') == absl::string_view::npos) {
    if (text.size() >= sizeof(sockaddr_un::sun_path) || text.find('\0') != absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("invalid Unix socket path '", text, "'"));
    }
    address.kind = SpdkAddress::Kind::kUnix;
    address.path = std::string(text);
    return address;
  }
  address.kind = SpdkAddress::Kind::kTcp;
  absl::Status status = ParseHostPort(text, 0, address);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid target address '", text, "': ", status.message()));
  }
  return address;
}

absl::StatusOr<UniqueFd> ConnectStream(const SpdkAddress& address, Deadline deadline) {
  if (address.kind == SpdkAddress::Kind::kUnix) return ConnectUnix(address);
  return ConnectTcp(address, deadline);
}

bool WaitWithDeadline(absl::CondVar& cv, absl::Mutex& mu, Deadline deadline) {
  const Clock::duration left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) return false;
  cv.WaitWithTimeout(&mu, absl::FromChrono(left));
  return true;
}

int PollTimeoutMs(Deadline deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  return left.count() > INT_MAX ? INT_MAX : static_cast<int>(left.count());
}

}  // namespace smad::agent
