#pragma once

// A client for QEMU's machine protocol (QMP) over TCP, as SPDK's SMA uses it to hot-plug the PCI devices
// of the vfiouser and vhost_blk managers: one connection per operation, one command at a time.
//
// Wire format: QEMU sends one JSON object per line ("\r\n"-terminated): first the greeting
// {"QMP": {...}}, then replies {"return": X, "id": I} / {"error": {"class", "desc"}, "id": I} and,
// at any time, events {"event": NAME, "data": {...}, "timestamp": {...}}. The client sends
// {"execute": CMD, "id": "<n>", "arguments": {...}}\r\n ("arguments" omitted when empty).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/spdk/spdk_client.h"

namespace smad::agent {

// ---- Parsing (no I/O; fuzzed by tests/fuzz/qmp_reply_fuzzer.cc) ---------------------------------------

// Splits a byte stream into lines ending in "\n" (a preceding "\r" is dropped). A line longer than
// `max_line` bytes is a protocol error. Thread compatible.
class QmpLineReader {
 public:
  explicit QmpLineReader(size_t max_line) : max_line_(max_line) {}

  void Append(const char* data, size_t size) { buffer_.append(data, size); }
  // The next complete line (without its terminator), nullopt when none is complete yet. DataLoss when a
  // line exceeds max_line (sticky: every later call fails the same way).
  absl::StatusOr<std::optional<std::string>> NextLine();

 private:
  const size_t max_line_;
  std::string buffer_;
  size_t start_ = 0;    // where the next line starts in buffer_
  size_t scanned_ = 0;  // buffer_[start_, scanned_) is known to hold no '\n'
  bool failed_ = false;
};

// One message from QEMU.
struct QmpMessage {
  enum class Kind {
    kGreeting,  // {"QMP": {...}}; `value` is the "QMP" member
    kReturn,    // a successful reply; `value` is "return", `id` the echoed id (null when absent)
    kError,     // a failed reply; `error_class`/`error_desc`, `id` as for kReturn
    kEvent,     // an asynchronous event; `event` is its name, `value` its "data" (null when absent)
    kOther,     // any other JSON object (ignored by the client)
  };
  Kind kind = Kind::kOther;
  Json id;
  Json value;
  std::string event;
  std::string error_class;
  std::string error_desc;
};

// Parses one line. DataLoss when it is not a JSON object, or when a known member has the wrong type
// (an "event" name that is not a string, "data" that is neither an object nor absent). Never throws.
absl::StatusOr<QmpMessage> ParseQmpMessage(absl::string_view line);

// Whether `message` is the event `name` (compared case-insensitively) whose data holds every member of
// `data` with an equal value (`data`: an object, or null for "any data").
bool QmpEventMatches(const QmpMessage& message, absl::string_view name, const Json& data);

// The device whose "qdev_id" is `qdev_id` in a query-pci answer, or nullptr. `recursive`: searched at
// every level of the tree (root buses and bridges behind bridges, as the vfiouser manager does), at most
// kMaxPciDepth bridges deep; otherwise only the devices directly behind a bridge of a root bus (the
// vhost_blk manager's search). Malformed parts of the answer are skipped.
inline constexpr int kMaxPciDepth = 16;
const Json* FindPciDevice(const Json& query_pci, absl::string_view qdev_id, bool recursive);
// Whether a query-chardev answer holds a chardev labelled `label`.
bool HasChardev(const Json& query_chardev, absl::string_view label);

// A status for a QMP error reply to `command`: canonical code NotFound for class DeviceNotFound,
// Unimplemented for CommandNotFound, Internal otherwise; message "<command>: <desc> (<class>)"; the
// class and desc travel as a payload (QmpErrorOf).
absl::Status QmpErrorStatus(absl::string_view command, absl::string_view error_class,
                            absl::string_view desc);
struct QmpError {
  std::string error_class;
  std::string desc;
};
// The QMP error behind `status`, nullopt when `status` is not a QMP error reply.
std::optional<QmpError> QmpErrorOf(const absl::Status& status);

// ---- The client ------------------------------------------------------------------------------------

struct QmpOptions {
  std::string address = "127.0.0.1";  // an IPv4 or IPv6 literal, or "localhost" (no name resolution)
  uint16_t port = 0;
  // Bounds the connection (connect + greeting + capabilities negotiation) and each command (from
  // sending it to its reply, or to the awaited event).
  std::chrono::milliseconds timeout = std::chrono::seconds(8);
  size_t max_line = size_t{4} << 20;  // query-pci of a large VM is tens of KiB
};

// What an ExecuteAndWait waits for: an event named `name` (case-insensitive) whose data holds `data`.
struct QmpEventFilter {
  std::string name;
  Json data;  // object or null
};

// One QMP connection in command mode.
// Errors of every method:
//  - Unavailable: cannot connect, or the connection failed or was closed by QEMU;
//  - DeadlineExceeded: no answer (or no awaited event) within options.timeout;
//  - DataLoss: QEMU broke the protocol (no QMP greeting, a line that is not JSON or longer than
//    max_line, a reply with another id);
//  - a QMP error reply: see QmpErrorStatus.
// After an error other than a QMP error reply the connection is unusable (every call fails the same way).
// Messages of errors other than QMP error replies start with "QMP <address>:<port>: ".
// Thread safety: thread compatible (one operation at a time; use one client per operation).
class QmpClient {
 public:
  // Connects, reads the greeting and negotiates capabilities (qmp_capabilities).
  static absl::StatusOr<std::unique_ptr<QmpClient>> Connect(const QmpOptions& options);
  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // Runs `command` with `arguments` (an object; null or {} send none) and returns its "return" value.
  // Events that arrive meanwhile are skipped.
  absl::StatusOr<Json> Execute(absl::string_view command, const Json& arguments = Json());
  // Runs `command`, then waits for the event `filter` (an event that arrives before the reply counts
  // too) and returns the event's data.
  absl::StatusOr<Json> ExecuteAndWait(absl::string_view command, const Json& arguments,
                                      const QmpEventFilter& filter);

 private:
  QmpClient(const QmpOptions& options, int fd);
  absl::Status Fail(absl::Status status);
  absl::Status SendLine(const std::string& line, std::chrono::steady_clock::time_point deadline);
  absl::StatusOr<QmpMessage> ReadMessage(std::chrono::steady_clock::time_point deadline);
  absl::StatusOr<Json> Run(absl::string_view command, const Json& arguments, const QmpEventFilter* filter,
                           std::chrono::steady_clock::time_point deadline);
  std::string Prefix() const;

  const QmpOptions options_;
  int fd_;
  uint64_t next_id_ = 0;
  QmpLineReader reader_;
  absl::Status broken_;  // set once the connection is unusable
};

}  // namespace smad::agent
