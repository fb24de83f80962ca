#pragma once

// smad's durable desired state: records (kind, key) -> JSON text in SQLite (WAL), plus an operation log
// that lets the reconciler finish or roll back whatever a crash interrupted.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace smad::agent {

// One record of the desired state, e.g. kind "device", key "nvmf-tcp:nqn...", value a JSON object.
struct StoredRecord {
  std::string kind;
  std::string key;
  std::string value;
  bool operator==(const StoredRecord&) const = default;
};

// A change to one record: `value` replaces it, nullopt deletes it (deleting an absent record is fine).
struct RecordChange {
  std::string kind;
  std::string key;
  std::optional<std::string> value;
  bool operator==(const RecordChange&) const = default;
};

// An operation that was begun and neither completed nor aborted.
struct PendingOp {
  uint64_t id = 0;
  std::string description;           // free text for logs (never holds secrets)
  std::vector<RecordChange> before;  // each changed record's value before the op (nullopt: was absent)
  std::vector<RecordChange> after;   // the op's changes, as given to BeginOp
};

// Thread safety: every method may be called from any thread concurrently. Commits are serialised inside;
// synced commits that arrive while another one is being fsynced are written and fsynced together (group
// commit), so N concurrent callers cost far fewer than N fsyncs.
//
// Durability: "synced" means the commit survives a crash of the process and of the machine (WAL fsynced,
// PRAGMA synchronous=FULL semantics) before the call returns. "Buffered" commits survive a crash of the
// process at once and a machine crash after the next synced commit.
//
// Errors: Internal (SQLite failure, with its message), DataLoss (the file is corrupt or a record is
// unreadable), FailedPrecondition (the schema version is newer than this binary knows).
class StateStore {
 public:
  struct Options {
    // false: even "synced" commits are only buffered (PRAGMA synchronous=NORMAL): survives process
    // crashes, not power loss. For benchmarks and users who accept that.
    bool fsync = true;
    // Test-only: the name of a registered sqlite3_vfs to open the database with (fault injection);
    // empty: SQLite's default VFS.
    std::string vfs_name;
  };

  // Opens or creates the database at `path` (file mode 0600; the directory must exist), in WAL mode,
  // and migrates the schema (PRAGMA user_version). Besides the errors above: NotFound / PermissionDenied
  // when the file cannot be created or opened. The whole file is checked (PRAGMA quick_check), so a
  // corrupt database is reported here as DataLoss rather than later.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& path, Options options);
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& path) {
    return Open(path, Options());
  }

  virtual ~StateStore() = default;

  // Every record, ordered by (kind, key).
  virtual absl::StatusOr<std::vector<StoredRecord>> LoadAll() = 0;

  // In one synced transaction: reads the current value of every record in `changes` (the before-image),
  // applies `changes`, and stores an op row with both images. Returns the op id (increasing; ids are
  // never reused, even after the op row is deleted).
  // InvalidArgument: a record appears more than once in `changes`, or a kind, key or value is not UTF-8.
  virtual absl::StatusOr<uint64_t> BeginOp(absl::string_view description,
                                           std::vector<RecordChange> changes) = 0;
  // In one buffered transaction: applies `final_changes` (e.g. details learnt while executing the op)
  // and deletes the op row. NotFound for an unknown id; InvalidArgument for `final_changes` as for BeginOp.
  // A machine crash may lose this commit; the op is then pending again (with its original after-images)
  // and is rolled forward.
  virtual absl::Status CompleteOp(uint64_t id, std::vector<RecordChange> final_changes) = 0;
  absl::Status CompleteOp(uint64_t id) { return CompleteOp(id, {}); }
  // In one synced transaction: restores the op's before-images and deletes the op row. NotFound for an
  // unknown id.
  virtual absl::Status AbortOp(uint64_t id) = 0;
  // Applies changes without an op row (synced). InvalidArgument as for BeginOp.
  virtual absl::Status Apply(std::vector<RecordChange> changes) = 0;
  // Ops begun and neither completed nor aborted, by increasing id.
  virtual absl::StatusOr<std::vector<PendingOp>> PendingOps() = 0;

  // Counters for benchmarks and metrics.
  virtual uint64_t synced_commits() const = 0;  // commits that asked for durability
  virtual uint64_t fsyncs() const = 0;          // WAL syncs actually performed
};

using StateStorePtr = std::unique_ptr<StateStore>;

}  // namespace smad::agent
