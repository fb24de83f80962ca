#pragma once

// JSON-RPC 2.0 as SPDK speaks it: values sent back to back on a stream socket (no length prefix; SPDK
// ends each response with a newline), batches, string or number ids, notifications without an answer.

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace smad::jsonrpc {

using Json = nlohmann::json;

// Standard JSON-RPC 2.0 error codes (SPDK uses the same numbers; methods also answer -errno).
inline constexpr int kParseError = -32700;
inline constexpr int kInvalidRequest = -32600;
inline constexpr int kMethodNotFound = -32601;
inline constexpr int kInvalidParams = -32602;
inline constexpr int kInternalError = -32603;

// Requests larger than this are refused and the connection is closed (16 MiB).
inline constexpr size_t kDefaultMaxMessageSize = 16u << 20;
// Deeper nesting of arrays/objects is a framing error (keeps recursive JSON code off the stack limit).
inline constexpr int kMaxNestingDepth = 1024;

struct Error {
  int code = kInternalError;
  std::string message;
};

// Splits a byte stream into complete top-level JSON texts without parsing them, tracking nesting,
// strings and escapes. Incremental: every byte is scanned once, whatever the Append sizes. Whitespace
// between values is skipped. Objects and arrays end at their closing bracket, strings at their closing
// quote, bare scalars (123, true) at the next whitespace or structural character. The framer does not
// validate: a framed text may still fail to parse. Thread compatible.
class StreamFramer {
 public:
  explicit StreamFramer(size_t max_message_size = kDefaultMaxMessageSize)
      : max_message_size_(max_message_size) {}

  void Append(const char* data, size_t size);
  // The next complete value (its text), nullopt when more bytes are needed. Errors (the stream cannot be
  // resynchronised; the caller closes the connection): InvalidArgument for bytes that cannot start a
  // JSON value or nesting deeper than kMaxNestingDepth, ResourceExhausted when a value exceeds the size
  // limit. Errors are sticky: every later call returns the same error.
  absl::StatusOr<std::optional<std::string>> Next();
  // Bytes buffered but not yet returned.
  size_t buffered() const { return buffer_.size() - consumed_; }

 private:
  void Compact();

  std::string buffer_;
  size_t consumed_ = 0;   // bytes of buffer_ already returned (or skipped as whitespace)
  size_t scan_pos_ = 0;   // index in buffer_ of the next byte of the current value to scan
  int depth_ = 0;
  bool in_string_ = false;
  bool escape_ = false;
  bool started_ = false;
  bool scalar_ = false;   // the current value is a bare scalar (number, true, ...)
  size_t max_message_size_;
  absl::Status error_;
};

// One decoded request. `id` is null for notifications... and for requests that had "id": null, which
// JSON-RPC 2.0 treats as a normal (if discouraged) request; `has_id` tells them apart.
struct Request {
  bool has_id = false;
  Json id;
  std::string method;
  Json params;  // null when absent
};

// The result of decoding one framed text: either a single request, a batch, or an immediate error
// response for a malformed request (with the id when one could be read).
struct Decoded {
  bool is_batch = false;
  // The text was not valid JSON: `items` holds the -32700 answer and the stream cannot be trusted any
  // more (the server closes the connection after answering).
  bool parse_error = false;
  // For each element: a request, or the error response to send for it.
  struct Item {
    std::optional<Request> request;
    std::optional<Json> error_response;
  };
  std::vector<Item> items;
};

// Decodes one framed JSON text. Invalid JSON gives a single error response with code -32700 and id null;
// an empty batch gives -32600. A request must be an object with a string "method"; "jsonrpc", when
// present, must be "2.0"; "id", when present, a number, string or null; "params", when present, an object
// or array. Violations give a -32600 answer (with the id when it was valid). Never throws.
Decoded DecodeRequestText(const std::string& text);

// Response builders.
Json MakeResult(const Json& id, Json result);
Json MakeError(const Json& id, int code, const std::string& message);

// Serialises a response (or a batch array of them): compact JSON followed by '\n' (SPDK's framing).
// Response members are written in SPDK's order: jsonrpc, id, result|error. Invalid UTF-8 in strings is
// replaced by U+FFFD rather than failing. Never throws.
std::string Serialize(const Json& response);

}  // namespace smad::jsonrpc
