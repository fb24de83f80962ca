// Fuzzes the server's input path: StreamFramer over arbitrary chunkings of the input, then
// DecodeRequestText and Serialize on every framed value. Besides "never crashes", it checks that framing
// does not depend on how the bytes were split, and that every decoded answer serialises to one line.
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "jsonrpc/protocol.h"

namespace {

using smad::jsonrpc::DecodeRequestText;
using smad::jsonrpc::Decoded;
using smad::jsonrpc::Json;
using smad::jsonrpc::MakeError;
using smad::jsonrpc::MakeResult;
using smad::jsonrpc::Serialize;
using smad::jsonrpc::StreamFramer;

struct Framed {
  std::vector<std::string> values;
  absl::StatusCode end = absl::StatusCode::kOk;  // the error that ended the stream, if any
  bool operator==(const Framed& other) const { return values == other.values && end == other.end; }
};

void Check(bool condition) {
  if (!condition) std::abort();
}

// Frames `data` fed in chunks whose sizes come from a small PRNG seeded with `seed` (seed 0: one chunk).
Framed FrameInChunks(const uint8_t* data, size_t size, uint64_t seed, size_t max_message_size) {
  StreamFramer framer(max_message_size);
  Framed framed;
  size_t pos = 0;
  uint64_t state = seed;
  while (pos < size) {
    size_t chunk = size - pos;
    if (seed != 0) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      chunk = std::min<size_t>(chunk, 1 + (state >> 33) % 64);
    }
    framer.Append(reinterpret_cast<const char*>(data) + pos, chunk);
    pos += chunk;
    while (true) {
      auto next = framer.Next();
      if (!next.ok()) {
        framed.end = next.status().code();
        Check(!framer.Next().ok());  // errors are sticky
        return framed;
      }
      if (!next->has_value()) break;
      Check(!(*next)->empty() && (*next)->size() <= max_message_size);
      framed.values.push_back(std::move(**next));
    }
  }
  return framed;
}

void CheckSerialized(const Json& response) {
  std::string line = Serialize(response);
  Check(!line.empty() && line.back() == '\n');
  Check(line.find('\n') == line.size() - 1);  // compact: exactly one line
}

void DecodeAndAnswer(const std::string& text) {
  Decoded decoded = DecodeRequestText(text);
  Check(!decoded.items.empty());
  Check(!decoded.parse_error || (decoded.items.size() == 1 && !decoded.is_batch));
  Json batch = Json::array();
  for (const Decoded::Item& item : decoded.items) {
    Check(item.request.has_value() != item.error_response.has_value());
    Json response;
    if (item.error_response) {
      response = *item.error_response;
    } else if (item.request->has_id) {
      const Json& params = item.request->params;
      Check(params.is_null() || params.is_object() || params.is_array());
      // Echo the params back, as a handler might, and an error for good measure.
      response = MakeResult(item.request->id, params);
      CheckSerialized(MakeError(item.request->id, -32601, item.request->method));
    } else {
      continue;  // notification
    }
    CheckSerialized(response);
    batch.push_back(std::move(response));
  }
  if (decoded.is_batch) CheckSerialized(batch);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint64_t hash = 1469598103934665603ull;  // FNV-1a: a chunking that is stable for a given input
  for (size_t i = 0; i < size; ++i) hash = (hash ^ data[i]) * 1099511628211ull;

  const Framed whole = FrameInChunks(data, size, 0, smad::jsonrpc::kDefaultMaxMessageSize);
  const uint64_t seeds[] = {hash | 1, 1};
  for (uint64_t seed : seeds) {
    Check(FrameInChunks(data, size, seed, smad::jsonrpc::kDefaultMaxMessageSize) == whole);
  }
  // A tiny size limit exercises the limit path; it must also be independent of the chunking.
  const Framed small = FrameInChunks(data, size, 0, 64);
  Check(FrameInChunks(data, size, hash | 1, 64) == small);

  for (const std::string& text : whole.values) DecodeAndAnswer(text);
  return 0;
}
