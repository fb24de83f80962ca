#pragma once

// Internal to smad_agent_spdk: the client for SPDK's rpc_http_proxy (one JSON-RPC request per HTTP POST)
// and the little HTTP/1.1 it needs, kept free of I/O so it can be tested and fuzzed.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/spdk/spdk_client.h"
#include "agent/spdk/transport.h"

namespace smad::agent {

// RFC 4648 base64 with padding (for the Basic Authorization header).
std::string Base64Encode(absl::string_view data);

// One HTTP response as HttpResponseParser read it.
struct HttpResponse {
  int status = 0;           // a final status, 200..599 (interim 1xx responses are skipped)
  std::string status_line;  // printable ASCII only, at most 200 characters: safe for messages and logs
  bool keep_alive = false;  // the connection may carry another request
  std::string body;         // de-chunked
};

// Incremental parser of one HTTP/1.0 or HTTP/1.1 response to a POST. The body is delimited by
// Content-Length, by the chunked transfer coding (chunk extensions and trailers are ignored), or by the
// end of the connection (what Python's http.server, hence SPDK's rpc_http_proxy, does). Bare '\n' line
// ends are accepted. Memory stays below kMaxHeadBytes plus the body limit. Thread compatible.
class HttpResponseParser {
 public:
  // Status line plus headers (and chunked trailers) larger than this are a protocol error.
  static constexpr size_t kMaxHeadBytes = 64 * 1024;

  explicit HttpResponseParser(size_t max_body_size) : max_body_size_(max_body_size) {}

  // Feeds received bytes. Errors (sticky): DataLoss for a malformed response, a body over the limit or a
  // transfer coding other than chunked.
  absl::Status Append(const char* data, size_t size);
  // The peer closed the connection: ends a body delimited by the close. Errors: DataLoss when the
  // response is incomplete.
  absl::Status Finish();
  bool done() const { return state_ == State::kDone; }
  // Bytes arrived after the end of the response: the connection must not be reused.
  bool trailing_bytes() const { return trailing_bytes_; }
  // The response; complete once done().
  HttpResponse& response() { return response_; }

 private:
  enum class State {
    kStatusLine,
    kHeaders,
    kBody,
    kChunkSize,
    kChunkData,
    kChunkEnd,
    kTrailers,
    kUntilClose,
    kDone
  };

  absl::Status Parse();
  // The next line of buffer_ from pos_ (without its line end), nullopt when it is incomplete.
  std::optional<absl::string_view> NextLine();
  absl::Status OnStatusLine(absl::string_view line);
  absl::Status OnHeader(absl::string_view line);
  absl::Status OnHeadEnd();
  absl::Status OnChunkSize(absl::string_view line);
  absl::Status AppendBody(const char* data, size_t size);

  const size_t max_body_size_;
  State state_ = State::kStatusLine;
  std::string buffer_;  // received bytes not parsed yet start at pos_
  size_t pos_ = 0;
  size_t head_bytes_ = 0;
  bool http11_ = false;
  bool connection_close_ = false;
  bool connection_keep_alive_ = false;
  bool chunked_ = false;
  std::optional<uint64_t> content_length_;
  uint64_t remaining_ = 0;  // bytes left in the body (kBody) or the chunk (kChunkData)
  bool trailing_bytes_ = false;
  HttpResponse response_;
  absl::Status error_;
};

// The client for a kHttp `address`; `options` were validated by CreateJsonRpcClient.
//
// Each call is one POST on a connection of a small keep-alive pool (a connection carries one request at
// a time; idle ones found closed by the server are discarded before reuse). Answers:
//  - 401 and 403: PermissionDenied; 502, 503, 504: Unavailable; any other non-2xx: Internal; the
//    message holds the status line;
//  - 2xx: the body is the JSON-RPC answer. An error answer with id null is the target's answer to this
//    request (it could not read it) and is reported like any error answer.
// The "connection" of connection_epoch() and on_connection_change is the target's reachability: the
// epoch increments when a call gets an HTTP response after a failure to connect, a lost connection or a
// 502/503/504 (or for the first time); on_connection_change runs on the thread of the call that saw the
// change, serialised with the other notifications. The password is never logged nor put in a status.
absl::StatusOr<SpdkClientPtr> NewHttpClient(SpdkAddress address, JsonRpcClientOptions options);

}  // namespace smad::agent
