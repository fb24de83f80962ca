// Fuzzes what smad reads from QEMU's QMP socket: the line splitting, the message parser and the helpers
// that search the answers (query-pci, query-chardev, events). Besides "never crashes, never hangs", it
// checks that the lines do not depend on how the bytes were split, that the line limit holds, and that
// an error reply survives the trip through QmpErrorStatus/QmpErrorOf.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "agent/devices/qmp_client.h"

namespace {

using smad::agent::Json;
using smad::agent::QmpLineReader;
using smad::agent::QmpMessage;

void Check(bool condition) {
  if (!condition) std::abort();
}

struct Lines {
  std::vector<std::string> lines;
  bool failed = false;
  bool operator==(const Lines& other) const = default;
};

// Splits `data` into lines, fed in chunks whose sizes come from a small PRNG seeded with `seed` (0: one
// chunk).
Lines Split(const uint8_t* data, size_t size, uint64_t seed, size_t max_line) {
  QmpLineReader reader(max_line);
  Lines out;
  size_t pos = 0;
  uint64_t state = seed;
  while (pos < size && !out.failed) {
    size_t chunk = size - pos;
    if (seed != 0) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      chunk = std::min<size_t>(chunk, 1 + (state >> 33) % 64);
    }
    reader.Append(reinterpret_cast<const char*>(data) + pos, chunk);
    pos += chunk;
    for (;;) {
      auto line = reader.NextLine();
      if (!line.ok()) {
        Check(line.status().code() == absl::StatusCode::kDataLoss);
        Check(!reader.NextLine().ok());  // sticky
        out.failed = true;
        break;
      }
      if (!line->has_value()) break;
      Check((*line)->size() <= max_line);
      Check((*line)->find('\n') == std::string::npos);
      out.lines.push_back(**line);
    }
  }
  return out;
}

void Inspect(const std::string& line) {
  auto message = smad::agent::ParseQmpMessage(line);
  if (!message.ok()) {
    Check(message.status().code() == absl::StatusCode::kDataLoss);
    return;
  }
  switch (message->kind) {
    case QmpMessage::Kind::kError: {
      absl::Status status = smad::agent::QmpErrorStatus("fuzz", message->error_class, message->error_desc);
      Check(!status.ok());
      Check(smad::agent::QmpErrorOf(status).has_value());
      break;
    }
    case QmpMessage::Kind::kEvent:
      Check(message->value.is_null() || message->value.is_object());
      Check(smad::agent::QmpEventMatches(*message, message->event, Json()));
      smad::agent::QmpEventMatches(*message, "device_deleted", Json{{"device", "sma-0"}});
      break;
    case QmpMessage::Kind::kReturn:
      // The answer helpers must cope with any shape.
      smad::agent::FindPciDevice(message->value, "vfiouser-0", /*recursive=*/true);
      smad::agent::FindPciDevice(message->value, "sma-0", /*recursive=*/false);
      smad::agent::HasChardev(message->value, "sma-0");
      break;
    case QmpMessage::Kind::kGreeting:
    case QmpMessage::Kind::kOther:
      Check(!smad::agent::QmpEventMatches(*message, "DEVICE_DELETED", Json()));
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint64_t hash = 1469598103934665603ull;  // FNV-1a: a chunking that is stable for a given input
  for (size_t i = 0; i < size; ++i) hash = (hash ^ data[i]) * 1099511628211ull;

  const Lines whole = Split(data, size, 0, 1 << 20);
  Check(Split(data, size, hash | 1, 1 << 20) == whole);
  Check(Split(data, size, 1, 1 << 20) == whole);
  Split(data, size, hash | 1, 16);  // the line-limit path

  for (const std::string& line : whole.lines) Inspect(line);
  return 0;
}
