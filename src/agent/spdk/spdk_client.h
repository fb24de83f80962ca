#pragma once

// smad's connection to an SPDK-compatible target (real SPDK or smad-tgt): JSON-RPC 2.0 calls over a
// Unix socket, TCP host:port, or HTTP with basic auth (SPDK's rpc_http_proxy).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace smad::agent {

using Json = nlohmann::json;

// The interface every agent component talks to (the production client below, fault-injecting wrappers
// and fakes in tests).
//
// Errors of Call():
//  - the target answered with a JSON-RPC error: a status from SpdkErrorStatus() (see below), so
//    SpdkErrorOf() recovers the target's code and message;
//  - Unavailable: not connected (target down, socket missing, connection lost before the answer; the
//    request was not sent, or may have executed if the connection was lost after sending it);
//  - DeadlineExceeded: no answer within `timeout` (the request may still execute on the target), or no
//    free slot within `timeout` (max_in_flight; the request was not sent);
//  - DataLoss: the answer could not be parsed, or the target answered that it could not read a request
//    of the connection (an error with id null, which cannot be attributed to one call); the connection
//    is then dropped and re-established, and every call waiting on it fails the same way;
//  - PermissionDenied (HTTP only): the proxy refused the credentials (401/403);
//  - InvalidArgument: `params` is neither null, an object nor an array.
// Every message starts with "<method>: ".
// Thread safety: every method may be called from any thread concurrently.
class SpdkClient {
 public:
  virtual ~SpdkClient() = default;

  // Sends {"jsonrpc":"2.0","method":method,"id":N[,"params":params]} ("params" omitted when null) and
  // waits for the answer; returns its "result".
  virtual absl::StatusOr<Json> Call(absl::string_view method, const Json& params,
                                    std::chrono::milliseconds timeout) = 0;

  // Counts connections established so far (0 = never connected). A change means the previous
  // connection was lost: the target may have restarted and lost its state.
  virtual uint64_t connection_epoch() const = 0;
};

using SpdkClientPtr = std::unique_ptr<SpdkClient>;

// An error answer of the target. `code` is the JSON-RPC error code (SPDK answers -32602 for bad
// parameters, -32601 for unknown methods, -32603 or -errno otherwise).
struct SpdkError {
  int code = 0;
  std::string message;
};

// A status for an error answer: canonical code NotFound for -ENODEV/-ENOENT, AlreadyExists for -EEXIST,
// InvalidArgument for -32602/-EINVAL, Unimplemented for -32601, Unavailable for -EBUSY/-EAGAIN, Internal
// otherwise; message "<method>: <target message> (code <code>)"; the code and message travel as a payload.
absl::Status SpdkErrorStatus(absl::string_view method, const SpdkError& error);
// The target's error behind `status`, nullopt when `status` is not an error answer.
std::optional<SpdkError> SpdkErrorOf(const absl::Status& status);

struct JsonRpcClientOptions {
  // "/path/to/spdk.sock" (anything containing '/' or without ':'), "host:port" ("[::1]:5260" for IPv6),
  // or "http://[user:password@]host:port[/path]" (rpc_http_proxy: one POST per call, basic auth).
  std::string address;
  // Calls waiting for an answer at once; further calls wait for a slot (within their own timeout).
  size_t max_in_flight = 128;
  // Reconnection after a lost connection or a failed connect: exponential backoff between these bounds.
  // Calls made while disconnected try to connect at once (no waiting out the backoff) but fail with
  // Unavailable if that fails.
  std::chrono::milliseconds reconnect_min = std::chrono::milliseconds(50);
  std::chrono::milliseconds reconnect_max = std::chrono::seconds(2);
  // Answers larger than this are a protocol error (DataLoss).
  size_t max_response_size = size_t{1} << 30;
  // Called (on the client's I/O thread; must not call Call() synchronously) when a connection is
  // established (`up` true, with the new epoch) or lost (`up` false, with the epoch that ended). Failed
  // connection attempts and the client's own destruction do not call it. For HTTP, "connection" means
  // the target's reachability and the callback runs on the calling thread (see http_transport.h).
  std::function<void(bool up, uint64_t epoch)> on_connection_change;
};

// The production client: one persistent connection (Unix/TCP) carrying pipelined requests matched to
// answers by id, served by a background I/O thread; a lost connection fails the calls waiting on it with
// Unavailable and is re-established with backoff. For HTTP, each call is one POST on a small pool of
// keep-alive connections (rpc_http_proxy does not pipeline).
// Errors of Create: InvalidArgument for a malformed address or options (max_in_flight or
// max_response_size 0, reconnect delays not 0 < min <= max); the message never holds the password. It
// does not connect (the target may not be up yet); the background reconnect or the first Call does.
// Destroying the client fails the calls still waiting with Unavailable; no Call may start once
// destruction began.
absl::StatusOr<SpdkClientPtr> CreateJsonRpcClient(JsonRpcClientOptions options);

}  // namespace smad::agent
