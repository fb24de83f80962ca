#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "jsonrpc/protocol.h"

namespace smad::jsonrpc {

// A minimal synchronous JSON-RPC client: one connection, one call at a time. For tests, tools and
// benchmarks; smad's production client is asynchronous and pipelined.
// Thread compatible (one thread at a time).
class BlockingClient {
 public:
  // Connects to a Unix socket (an address containing '/' or no ':'), else to TCP "host:port" (IPv6 hosts
  // in brackets: "[::1]:5260"). Errors: Unavailable, InvalidArgument for a malformed address.
  static absl::StatusOr<BlockingClient> Connect(const std::string& address);

  BlockingClient(BlockingClient&& other) noexcept;
  BlockingClient& operator=(BlockingClient&& other) noexcept;
  BlockingClient(const BlockingClient&) = delete;
  BlockingClient& operator=(const BlockingClient&) = delete;
  ~BlockingClient();

  // Sends {"jsonrpc":"2.0","id":N,"method":...,"params":...} ("params" omitted when null) and waits for
  // the response object with id N (the whole {"jsonrpc","id","result"|"error"}); values with other ids
  // are skipped, except an error with id null (the server's answer to a request it could not read).
  // Errors: Unavailable (connection lost), DeadlineExceeded, DataLoss (unparseable answer).
  absl::StatusOr<Json> CallRaw(const std::string& method, const Json& params,
                               std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Like CallRaw but returns `result`, or FailedPrecondition with "code: message" for an error answer
  // (ErrorCodeOf gives the code back).
  absl::StatusOr<Json> Call(const std::string& method, const Json& params = Json(),
                            std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Sends raw bytes (for protocol tests). Errors: Unavailable.
  absl::Status SendRaw(const std::string& bytes);
  // Reads the next complete JSON value from the connection. Errors: Unavailable (connection closed),
  // DeadlineExceeded, DataLoss (malformed stream).
  absl::StatusOr<Json> ReadValue(std::chrono::milliseconds timeout = std::chrono::seconds(30));

  int fd() const { return fd_; }

 private:
  // Responses may be much larger than requests (listings); this only guards against a runaway peer.
  static constexpr size_t kMaxResponseSize = 1024u << 20;

  explicit BlockingClient(int fd) : fd_(fd), framer_(kMaxResponseSize) {}
  int fd_ = -1;
  int64_t next_id_ = 1;
  StreamFramer framer_;
};

// The JSON-RPC error code of a status returned by BlockingClient::Call for an error answer, nullopt for
// any other status.
std::optional<int> ErrorCodeOf(const absl::Status& status);

}  // namespace smad::jsonrpc
