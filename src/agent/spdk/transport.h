#pragma once

// Internal to smad_agent_spdk: target addresses and the socket plumbing shared by the stream (Unix/TCP)
// and HTTP clients.

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace smad::agent {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// An owned file descriptor, closed on destruction. Move-only. Thread compatible.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership without closing.
  int Release();
  void Reset();

 private:
  int fd_ = -1;
};

// A parsed JsonRpcClientOptions::address.
struct SpdkAddress {
  enum class Kind { kUnix, kTcp, kHttp };
  Kind kind = Kind::kUnix;
  std::string path;  // kUnix: the socket path; kHttp: the request target ("/" when absent)
  std::string host;  // kTcp, kHttp: a name or numeric address (IPv6 without brackets)
  uint16_t port = 0;
  // kHttp basic auth (percent-decoded); no Authorization header when `has_credentials` is false.
  bool has_credentials = false;
  std::string user;
  std::string password;

  // "host:port" with IPv6 hosts in brackets (also the HTTP Host header).
  std::string HostPort() const;
  // The address for logs and error messages: never contains the password.
  std::string Redacted() const;
};

// Parses an address (see JsonRpcClientOptions::address). Errors: InvalidArgument, whose message never
// contains the password.
absl::StatusOr<SpdkAddress> ParseSpdkAddress(absl::string_view address);

// Opens a non-blocking, close-on-exec stream socket to a Unix or TCP address (kHttp connects to host:port),
// giving up at `deadline`. Name resolution (getaddrinfo) is not bounded by the deadline; numeric
// addresses never block. Errors: Unavailable (no such socket, refused, unreachable, unresolvable),
// DeadlineExceeded.
absl::StatusOr<UniqueFd> ConnectStream(const SpdkAddress& address, Deadline deadline);

// Waits on `cv` (with `mu` held) until it is signalled or `deadline`. Returns false, without waiting, once
// the deadline has passed; true otherwise (the caller re-checks its condition).
bool WaitWithDeadline(absl::CondVar& cv, absl::Mutex& mu, Deadline deadline)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

// Milliseconds from now until `deadline` for poll(): 0 once it passed, rounded up, capped at INT_MAX.
int PollTimeoutMs(Deadline deadline);

}  // namespace smad::agent
