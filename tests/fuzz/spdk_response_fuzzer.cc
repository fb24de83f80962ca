// Fuzzes what smad reads from its target: the input is both a JSON-RPC answer stream (Unix/TCP) and an
// HTTP response (rpc_http_proxy). Besides "never crashes, never hangs", it checks that the answers do
// not depend on how the bytes were split, that the size limit holds, and that an error answer survives
// the trip through SpdkErrorStatus/SpdkErrorOf.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "agent/spdk/http_transport.h"
#include "agent/spdk/rpc_wire.h"
#include "agent/spdk/spdk_client.h"

namespace {

using smad::agent::AnswerStream;
using smad::agent::HttpResponseParser;
using smad::agent::SpdkAnswer;

void Check(bool condition) {
  if (!condition) std::abort();
}

// What a stream yielded: a printable summary of each answer and the error that ended it, if any.
struct Outcome {
  std::vector<std::string> answers;
  bool failed = false;
  bool operator==(const Outcome& other) const = default;
};

std::string Summary(const SpdkAnswer& answer) {
  std::string text = answer.id ? std::to_string(*answer.id) : (answer.id_null ? "null" : "other");
  if (answer.error) {
    // The error must survive the trip through a status.
    absl::Status status = smad::agent::SpdkErrorStatus("fuzz_method", *answer.error);
    Check(!status.ok());
    std::optional<smad::agent::SpdkError> back = smad::agent::SpdkErrorOf(status);
    Check(back.has_value() && back->code == answer.error->code);
    // (invalid UTF-8 in the message is replaced in the payload, so only the code is compared exactly)
    return text + " error " + std::to_string(answer.error->code) + " " + answer.error->message;
  }
  Check(!answer.id_null);
  return text + " result " + answer.result.dump(-1, ' ', false, smad::agent::Json::error_handler_t::replace);
}

// Feeds `data` in chunks whose sizes come from a small PRNG seeded with `seed` (0: one chunk).
Outcome ReadStream(const uint8_t* data, size_t size, uint64_t seed, size_t max_size) {
  AnswerStream stream(max_size);
  Outcome outcome;
  size_t pos = 0;
  uint64_t state = seed;
  while (pos < size && !outcome.failed) {
    size_t chunk = size - pos;
    if (seed != 0) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      chunk = std::min<size_t>(chunk, 1 + (state >> 33) % 64);
    }
    stream.Append(reinterpret_cast<const char*>(data) + pos, chunk);
    pos += chunk;
    while (true) {
      absl::StatusOr<std::optional<SpdkAnswer>> next = stream.Next();
      if (!next.ok()) {
        Check(next.status().code() == absl::StatusCode::kDataLoss);
        Check(!stream.Next().ok());  // sticky
        outcome.failed = true;
        break;
      }
      if (!next->has_value()) break;
      outcome.answers.push_back(Summary(**next));
    }
  }
  return outcome;
}

void ParseHttp(const uint8_t* data, size_t size, uint64_t seed, size_t max_body) {
  HttpResponseParser parser(max_body);
  size_t pos = 0;
  uint64_t state = seed;
  absl::Status status;
  while (pos < size && status.ok()) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    size_t chunk = std::min<size_t>(size - pos, 1 + (state >> 33) % 128);
    status = parser.Append(reinterpret_cast<const char*>(data) + pos, chunk);
    pos += chunk;
  }
  if (status.ok()) status = parser.Finish();
  if (!status.ok()) {
    Check(status.code() == absl::StatusCode::kDataLoss);
    return;
  }
  Check(parser.done());
  const smad::agent::HttpResponse& response = parser.response();
  Check(response.status >= 200 && response.status <= 999);
  Check(response.body.size() <= max_body);
  Check(response.status_line.size() <= 200);
  AnswerStream answers(max_body + 1);
  answers.Append(response.body.data(), response.body.size());
  for (int i = 0; i < 1000; ++i) {
    absl::StatusOr<std::optional<SpdkAnswer>> next = answers.Next();
    if (!next.ok() || !next->has_value()) break;
    Summary(**next);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint64_t hash = 1469598103934665603ull;  // FNV-1a: a chunking that is stable for a given input
  for (size_t i = 0; i < size; ++i) hash = (hash ^ data[i]) * 1099511628211ull;

  const Outcome whole = ReadStream(data, size, 0, 1 << 20);
  Check(ReadStream(data, size, hash | 1, 1 << 20) == whole);
  Check(ReadStream(data, size, 1, 1 << 20) == whole);
  ReadStream(data, size, hash | 1, 64);  // the size-limit path

  ParseHttp(data, size, hash | 1, 1 << 20);
  ParseHttp(data, size, 1, 32);
  return 0;
}
