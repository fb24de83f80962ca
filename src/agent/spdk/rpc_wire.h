#pragma once

// Internal to smad_agent_spdk: the client side of SPDK's JSON-RPC wire format. Requests out, answers in,
// with no I/O, so the parsing can be tested and fuzzed on its own.

#include <cstdint>
#include <deque>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/spdk/spdk_client.h"
#include "jsonrpc/protocol.h"

namespace smad::agent {

// {"jsonrpc":"2.0","method":method,"id":id[,"params":params]}, "params" omitted when null. Invalid
// UTF-8 in strings is replaced by U+FFFD. Never throws.
std::string EncodeRequest(int64_t id, absl::string_view method, const Json& params);

// One response of the target.
struct SpdkAnswer {
  // The request id when "id" is an integer (smad only sends integer ids); nullopt otherwise.
  std::optional<int64_t> id;
  // "id" was null or absent: the target could not read the request it answers (only error answers).
  bool id_null = false;
  // Set for an error answer; otherwise `result` holds the "result" member (possibly null).
  std::optional<SpdkError> error;
  Json result;
};

// Turns the target's bytes (JSON values back to back, usually newline-terminated) into answers. Each
// value is a response object or a non-empty batch (array) of them. A response is an object with "id" and
// either a non-null "error" (which wins when both are present) or "result". An error whose code is
// missing or not an int is reported with -32603; a non-string message is kept as its JSON text.
// Thread compatible.
class AnswerStream {
 public:
  // Values larger than `max_answer_size` are a protocol error.
  explicit AnswerStream(size_t max_answer_size) : framer_(max_answer_size) {}

  void Append(const char* data, size_t size) { framer_.Append(data, size); }
  // The next answer, nullopt when more bytes are needed. Errors: DataLoss when the stream is not valid
  // JSON-RPC answers or a value exceeds the size limit. Errors are sticky: the stream cannot be
  // resynchronised and the connection must be dropped.
  absl::StatusOr<std::optional<SpdkAnswer>> Next();
  // Bytes received but not yet part of a complete value (an incomplete answer when the input ended).
  size_t buffered() const { return framer_.buffered(); }

 private:
  jsonrpc::StreamFramer framer_;
  std::deque<SpdkAnswer> pending_;  // the rest of a batch
  absl::Status error_;
};

}  // namespace smad::agent
