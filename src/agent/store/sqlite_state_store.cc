// StateStore on SQLite: one connection in WAL mode, guarded by a mutex, with leader/follower group commit.
//
// Concurrent writes are batched: the first queued writer runs the bodies of those queued behind it in
// the same transaction (see Write). Every transaction commits with synchronous=NORMAL: its WAL frames reach the OS (so it survives a crash
// of the process) but are not fsynced. A caller that needs durability then waits for a "sync round": the
// first waiter becomes the leader and syncs the WAL file through SQLite's VFS, which makes every frame
// written before it durable. The sync runs outside the connection's mutex, so writers keep committing
// during it; whoever committed meanwhile is covered by the next round. Statements are prepared once.

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/store/state_store.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace smad::agent {
namespace {

constexpr int kSchemaVersion = 1;
// Most writes one transaction commits for concurrent writers.
constexpr size_t kMaxBatch = 64;

// Version 1. `sync_epoch` is no longer written (sync rounds used to update it; they now sync the WAL
// file directly) and is kept so the schema stays version 1. AUTOINCREMENT keeps op ids from being
// reused after the newest op row is deleted.
constexpr char kSchemaV1[] = R"sql(
  CREATE TABLE records (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                        PRIMARY KEY (kind, key)) WITHOUT ROWID;
  CREATE TABLE ops (id INTEGER PRIMARY KEY AUTOINCREMENT, description TEXT NOT NULL,
                    before TEXT NOT NULL, after TEXT NOT NULL);
  CREATE TABLE sync_epoch (id INTEGER PRIMARY KEY CHECK (id = 0), epoch INTEGER NOT NULL);
  INSERT INTO sync_epoch VALUES (0, 0);
  PRAGMA user_version = 1;
)sql";

absl::Status SqliteError(sqlite3* db, int rc, absl::string_view context) {
  std::string message = absl::StrCat(context, ": ", db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  const int primary = rc & 0xff;
  if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) return absl::DataLossError(message);
  return absl::InternalError(message);
}

// A prepared statement. Binding errors are remembered and reported by the next Step().
class Statement {
 public:
  static absl::StatusOr<Statement> Prepare(sqlite3* db, absl::string_view sql) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt,
                                nullptr);
    if (rc != SQLITE_OK) return SqliteError(db, rc, absl::StrCat("preparing \"", sql, "\""));
    return Statement(db, stmt);
  }
  Statement(Statement&& other) noexcept
      : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)), bind_rc_(other.bind_rc_) {}
  Statement& operator=(Statement&&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  Statement& Bind(int index, absl::string_view text) {
    Check(sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
    return *this;
  }
  Statement& Bind(int index, int64_t value) {
    Check(sqlite3_bind_int64(stmt_, index, value));
    return *this;
  }

  // True when a row is available, false when the statement is done.
  absl::StatusOr<bool> Step() {
    if (bind_rc_ != SQLITE_OK) return SqliteError(nullptr, bind_rc_, "binding parameters");
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteError(db_, rc, sqlite3_sql(stmt_));
  }
  // Steps to completion, then resets the statement for new bindings.
  absl::Status Run() {
    absl::StatusOr<bool> row;
    do {
      row = Step();
    } while (row.ok() && *row);
    Reset();  // also after a failure: cached statements are used again
    return row.status();
  }
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    bind_rc_ = SQLITE_OK;
  }

  bool IsNull(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }
  std::string Text(int column) const {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    return text == nullptr ? std::string() : std::string(text, sqlite3_column_bytes(stmt_, column));
  }

 private:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  void Check(int rc) {
    if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  int bind_rc_ = SQLITE_OK;
};

absl::Status Exec(sqlite3* db, const char* sql) {
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? absl::OkStatus() : SqliteError(db, rc, sql);
}

// Runs `body` in a write transaction, rolled back if `body` or the commit fails.
absl::Status Transaction(sqlite3* db, absl::FunctionRef<absl::Status()> body) {
  RETURN_IF_ERROR(Exec(db, "BEGIN IMMEDIATE"));
  absl::Status status = body();
  if (status.ok()) status = Exec(db, "COMMIT");
  if (!status.ok() && !sqlite3_get_autocommit(db)) Exec(db, "ROLLBACK").IgnoreError();
  return status;
}

// The statements a store runs on every write, prepared once per connection.
struct PreparedStatements {
  static absl::StatusOr<std::unique_ptr<PreparedStatements>> Prepare(sqlite3* db) {
    ASSIGN_OR_RETURN(Statement begin, Statement::Prepare(db, "BEGIN IMMEDIATE"));
    ASSIGN_OR_RETURN(Statement commit, Statement::Prepare(db, "COMMIT"));
    ASSIGN_OR_RETURN(Statement rollback, Statement::Prepare(db, "ROLLBACK"));
    ASSIGN_OR_RETURN(Statement savepoint, Statement::Prepare(db, "SAVEPOINT batched_write"));
    ASSIGN_OR_RETURN(Statement rollback_to_savepoint, Statement::Prepare(db, "ROLLBACK TO batched_write"));
    ASSIGN_OR_RETURN(Statement release_savepoint, Statement::Prepare(db, "RELEASE batched_write"));
    ASSIGN_OR_RETURN(Statement select_value, Statement::Prepare(db, "SELECT value FROM records WHERE kind = ? AND key = ?"));
    ASSIGN_OR_RETURN(Statement upsert,
                     Statement::Prepare(db, "INSERT OR REPLACE INTO records (kind, key, value) VALUES (?, ?, ?)"));
    ASSIGN_OR_RETURN(Statement remove, Statement::Prepare(db, "DELETE FROM records WHERE kind = ? AND key = ?"));
    ASSIGN_OR_RETURN(Statement insert_op,
                     Statement::Prepare(db, "INSERT INTO ops (description, before, after) VALUES (?, ?, ?)"));
    ASSIGN_OR_RETURN(Statement select_op_before, Statement::Prepare(db, "SELECT before FROM ops WHERE id = ?"));
    ASSIGN_OR_RETURN(Statement delete_op, Statement::Prepare(db, "DELETE FROM ops WHERE id = ?"));
    return std::unique_ptr<PreparedStatements>(new PreparedStatements{
        std::move(begin), std::move(commit), std::move(rollback), std::move(savepoint),
        std::move(rollback_to_savepoint), std::move(release_savepoint), std::move(select_value), std::move(upsert),
        std::move(remove), std::move(insert_op), std::move(select_op_before), std::move(delete_op)});
  }
  Statement begin, commit, rollback, savepoint, rollback_to_savepoint, release_savepoint, select_value, upsert,
      remove, insert_op, select_op_before, delete_op;
};

// Images are stored as JSON arrays of {"kind", "key", "value"} (value null: absent).
// InvalidArgument for duplicate records and for text that is not UTF-8.
absl::StatusOr<std::string> EncodeImage(const std::vector<RecordChange>& changes) {
  std::set<std::pair<absl::string_view, absl::string_view>> seen;
  nlohmann::json image = nlohmann::json::array();
  for (const RecordChange& change : changes) {
    if (!seen.emplace(change.kind, change.key).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("record (", change.kind, ", ", change.key, ") appears more than once in the changes"));
    }
    image.push_back({{"kind", change.kind},
                     {"key", change.key},
                     {"value", change.value ? nlohmann::json(*change.value) : nlohmann::json()}});
  }
  try {
    return image.dump();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("record changes are not valid UTF-8: ", e.what()));
  }
}

absl::StatusOr<std::vector<RecordChange>> DecodeImage(const std::string& text) {
  nlohmann::json image = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto is_string = [](const nlohmann::json& entry, const char* name) {
    auto it = entry.find(name);
    return it != entry.end() && it->is_string();
  };
  std::vector<RecordChange> changes;
  if (!image.is_array()) return absl::DataLossError("malformed image (not a JSON array)");
  for (const nlohmann::json& entry : image) {
    if (!entry.is_object() || !is_string(entry, "kind") || !is_string(entry, "key") || !entry.contains("value") ||
        !(entry["value"].is_null() || entry["value"].is_string())) {
      return absl::DataLossError("malformed image entry");
    }
    RecordChange& change = changes.emplace_back();
    change.kind = entry["kind"].get<std::string>();
    change.key = entry["key"].get<std::string>();
    if (entry["value"].is_string()) change.value = entry["value"].get<std::string>();
  }
  return changes;
}

class SqliteStateStore final : public StateStore {
 public:
  SqliteStateStore(sqlite3* db, std::unique_ptr<PreparedStatements> statements, Options options)
      : db_(db), statements_(std::move(statements)), options_(std::move(options)) {}
  ~SqliteStateStore() override {
    statements_.reset();  // finalized before the connection closes
    sqlite3_close_v2(db_);
  }
  SqliteStateStore(const SqliteStateStore&) = delete;
  SqliteStateStore& operator=(const SqliteStateStore&) = delete;

  absl::StatusOr<std::vector<StoredRecord>> LoadAll() override ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(Statement select,
                     Statement::Prepare(db_, "SELECT kind, key, value FROM records ORDER BY kind, key"));
    std::vector<StoredRecord> records;
    while (true) {
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      records.push_back({select.Text(0), select.Text(1), select.Text(2)});
    }
    return records;
  }

  absl::StatusOr<uint64_t> BeginOp(absl::string_view description, std::vector<RecordChange> changes) override
      ABSL_LOCKS_EXCLUDED(mu_) {
    ASSIGN_OR_RETURN(std::string after, EncodeImage(changes));
    uint64_t id = 0;
    RETURN_IF_ERROR(Write(/*synced=*/true, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
      ASSIGN_OR_RETURN(std::vector<RecordChange> before_changes, ReadBeforeImage(changes));
      ASSIGN_OR_RETURN(std::string before, EncodeImage(before_changes));
      RETURN_IF_ERROR(ApplyLocked(changes));
      RETURN_IF_ERROR(statements_->insert_op.Bind(1, description).Bind(2, before).Bind(3, after).Run());
      id = static_cast<uint64_t>(sqlite3_last_insert_rowid(db_));
      return absl::OkStatus();
    }));
    return id;
  }

  using StateStore::CompleteOp;
  absl::Status CompleteOp(uint64_t id, std::vector<RecordChange> final_changes) override
      ABSL_LOCKS_EXCLUDED(mu_) {
    RETURN_IF_ERROR(EncodeImage(final_changes).status());  // validation only
    return Write(/*synced=*/false, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
      RETURN_IF_ERROR(ApplyLocked(final_changes));
      return DeleteOpLocked(id);  // NotFound rolls back the changes above
    });
  }

  absl::Status AbortOp(uint64_t id) override ABSL_LOCKS_EXCLUDED(mu_) {
    return Write(/*synced=*/true, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
      Statement& select = statements_->select_op_before;
      absl::StatusOr<bool> found = select.Bind(1, static_cast<int64_t>(id)).Step();
      std::string image = found.ok() && *found ? select.Text(0) : std::string();
      select.Reset();
      if (!found.ok()) return found.status();
      if (!*found) return absl::NotFoundError(absl::StrCat("no pending op ", id));
      absl::StatusOr<std::vector<RecordChange>> before = DecodeImage(image);
      if (!before.ok()) return absl::DataLossError(absl::StrCat("op ", id, ": ", before.status().message()));
      RETURN_IF_ERROR(ApplyLocked(*before));
      return DeleteOpLocked(id);
    });
  }

  absl::Status Apply(std::vector<RecordChange> changes) override ABSL_LOCKS_EXCLUDED(mu_) {
    RETURN_IF_ERROR(EncodeImage(changes).status());  // validation only
    return Write(/*synced=*/true, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ApplyLocked(changes); });
  }

  absl::StatusOr<std::vector<PendingOp>> PendingOps() override ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(Statement select,
                     Statement::Prepare(db_, "SELECT id, description, before, after FROM ops ORDER BY id"));
    std::vector<PendingOp> ops;
    while (true) {
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      PendingOp& op = ops.emplace_back();
      op.id = static_cast<uint64_t>(select.Int(0));
      op.description = select.Text(1);
      absl::StatusOr<std::vector<RecordChange>> before = DecodeImage(select.Text(2));
      absl::StatusOr<std::vector<RecordChange>> after = DecodeImage(select.Text(3));
      if (!before.ok() || !after.ok()) {
        const absl::Status& bad = before.ok() ? after.status() : before.status();
        return absl::DataLossError(absl::StrCat("op ", op.id, ": ", bad.message()));
      }
      op.before = *std::move(before);
      op.after = *std::move(after);
    }
    return ops;
  }

  uint64_t synced_commits() const override { return synced_commits_.load(std::memory_order_relaxed); }
  uint64_t fsyncs() const override { return fsyncs_.load(std::memory_order_relaxed); }

 private:
  // A write waiting in queue_. It lives on its caller's stack; the caller waits until `done` (or until it
  // leads a batch), and nobody touches it once `done` is set.
  struct QueuedWrite {
    absl::FunctionRef<absl::Status()> body;
    bool synced;  // the caller asked for durability
    absl::Status status;
    bool done = false;
  };

  // Runs `body` in a write transaction (its changes are rolled back if it fails). When `synced` (and
  // options_.fsync), returns only once the commit is durable.
  //
  // Writers queue up; the first in the queue leads a batch: it runs its own body and those of the writers
  // queued behind it in one transaction (each in a savepoint, so one failing body undoes only its own
  // changes), commits once, hands the queue to the next leader, and makes the batch durable. So N
  // concurrent writers cost one commit and one fsync, and each follower sleeps once.
  absl::Status Write(bool synced, absl::FunctionRef<absl::Status()> body) ABSL_LOCKS_EXCLUDED(mu_, sync_mu_, queue_mu_) {
    QueuedWrite write{body, synced};
    std::vector<QueuedWrite*> batch;
    {
      absl::MutexLock lock(&queue_mu_);
      queue_.push_back(&write);
      auto done_or_first = [this, &write]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
        return write.done || queue_.front() == &write;
      };
      queue_mu_.Await(absl::Condition(&done_or_first));
      if (write.done) return write.status;
      for (size_t i = 0; i < queue_.size() && i < kMaxBatch; ++i) batch.push_back(queue_[i]);
    }
    const uint64_t seq = CommitBatch(batch);
    std::vector<QueuedWrite*> to_sync;
    {
      absl::MutexLock lock(&queue_mu_);
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(batch.size()));
      for (QueuedWrite* w : batch) {
        if (w->status.ok() && w->synced) synced_commits_.fetch_add(1, std::memory_order_relaxed);
        if (w->status.ok() && w->synced && options_.fsync) {
          to_sync.push_back(w);
        } else if (w != &write) {
          w->done = true;
        }
      }
    }
    if (!to_sync.empty()) {
      absl::Status durable = WaitDurable(seq);
      absl::MutexLock lock(&queue_mu_);
      for (QueuedWrite* w : to_sync) {
        if (!durable.ok()) w->status = durable;
        if (w != &write) w->done = true;
      }
    }
    return write.status;
  }

  // Runs the bodies of `batch` in one transaction and sets each one's status. Returns the commit's
  // sequence number for WaitDurable.
  uint64_t CommitBatch(const std::vector<QueuedWrite*>& batch) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    PreparedStatements& st = *statements_;
    absl::Status begun = st.begin.Run();
    if (!begun.ok()) {
      for (QueuedWrite* w : batch) w->status = begun;
      return 0;
    }
    bool any_ok = false;
    for (QueuedWrite* w : batch) {
      if (batch.size() == 1) {
        w->status = w->body();  // a failure rolls back the whole transaction below
      } else {
        w->status = st.savepoint.Run();
        if (w->status.ok()) w->status = w->body();
        if (!w->status.ok()) st.rollback_to_savepoint.Run().IgnoreError();
        st.release_savepoint.Run().IgnoreError();
      }
      any_ok = any_ok || w->status.ok();
    }
    absl::Status committed = any_ok ? st.commit.Run() : absl::OkStatus();
    if (!any_ok || !committed.ok()) {
      if (!sqlite3_get_autocommit(db_)) st.rollback.Run().IgnoreError();
      for (QueuedWrite* w : batch) {
        if (w->status.ok()) w->status = committed;
      }
    }
    // Every commit numbered up to this one has written its WAL frames once this returns.
    return written_seq_.fetch_add(1, std::memory_order_acq_rel) + 1;
  }

  // Returns once the commit numbered `seq` is durable, leading a sync round if none is running.
  absl::Status WaitDurable(uint64_t seq) ABSL_LOCKS_EXCLUDED(mu_, sync_mu_) {
    absl::MutexLock lock(&sync_mu_);
    while (durable_seq_ < seq) {
      if (sync_running_) {
        auto done_or_leaderless = [this, seq]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(sync_mu_) {
          return durable_seq_ >= seq || !sync_running_;
        };
        sync_mu_.Await(absl::Condition(&done_or_leaderless));
        continue;
      }
      sync_running_ = true;
      // Every commit numbered up to `target` has written its WAL frames.
      const uint64_t target = written_seq_.load(std::memory_order_acquire);
      sync_mu_.Unlock();
      absl::Status status = SyncWal();
      sync_mu_.Lock();
      sync_running_ = false;
      // On failure, followers retry as leaders of a new round.
      RETURN_IF_ERROR(status);
      durable_seq_ = std::max(durable_seq_, target);
    }
    return absl::OkStatus();
  }

  // Makes every WAL frame written so far durable: an fsync of the WAL file through SQLite's VFS (the
  // file object lives as long as the connection). Runs without mu_: writers append meanwhile.
  absl::Status SyncWal() ABSL_LOCKS_EXCLUDED(mu_) {
    sqlite3_file* wal = nullptr;
    {
      absl::MutexLock lock(&mu_);
      int rc = sqlite3_file_control(db_, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);
      if (rc != SQLITE_OK || wal == nullptr || wal->pMethods == nullptr) {
        return absl::InternalError("syncing the state database: its WAL file is not open");
      }
    }
    int rc = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
    if (rc != SQLITE_OK) return SqliteError(nullptr, rc, "syncing the state database's WAL");
    fsyncs_.fetch_add(1, std::memory_order_relaxed);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<RecordChange>> ReadBeforeImage(const std::vector<RecordChange>& changes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Statement& select = statements_->select_value;
    std::vector<RecordChange> before;
    for (const RecordChange& change : changes) {
      absl::StatusOr<bool> found = select.Bind(1, change.kind).Bind(2, change.key).Step();
      if (found.ok()) {
        before.push_back({change.kind, change.key, *found ? std::optional<std::string>(select.Text(0)) : std::nullopt});
      }
      select.Reset();
      if (!found.ok()) return found.status();
    }
    return before;
  }

  absl::Status ApplyLocked(const std::vector<RecordChange>& changes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Statement& upsert = statements_->upsert;
    Statement& remove = statements_->remove;
    for (const RecordChange& change : changes) {
      if (change.value) {
        RETURN_IF_ERROR(upsert.Bind(1, change.kind).Bind(2, change.key).Bind(3, *change.value).Run());
      } else {
        RETURN_IF_ERROR(remove.Bind(1, change.kind).Bind(2, change.key).Run());
      }
    }
    return absl::OkStatus();
  }

  absl::Status DeleteOpLocked(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    RETURN_IF_ERROR(statements_->delete_op.Bind(1, static_cast<int64_t>(id)).Run());
    if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("no pending op ", id));
    return absl::OkStatus();
  }

  absl::Mutex mu_;  // the connection
  sqlite3* const db_ ABSL_PT_GUARDED_BY(mu_);
  std::unique_ptr<PreparedStatements> statements_ ABSL_PT_GUARDED_BY(mu_);
  const Options options_;
  // Writers waiting to be committed, in arrival order; the first leads the next batch.
  absl::Mutex queue_mu_;
  std::deque<QueuedWrite*> queue_ ABSL_GUARDED_BY(queue_mu_);
  // Group commit: commits are numbered when written (under mu_); those up to durable_seq_ are durable.
  std::atomic<uint64_t> written_seq_{0};
  absl::Mutex sync_mu_ ABSL_ACQUIRED_AFTER(mu_);
  uint64_t durable_seq_ ABSL_GUARDED_BY(sync_mu_) = 0;
  bool sync_running_ ABSL_GUARDED_BY(sync_mu_) = false;  // a leader is running a sync round
  std::atomic<uint64_t> synced_commits_{0};
  std::atomic<uint64_t> fsyncs_{0};
};

// Creates the file with mode 0600 if it does not exist: SQLite would use 0644, and gives the WAL and shm
// files the database file's mode.
absl::Status CreateDatabaseFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    int err = errno;
    return ErrnoStatus(err, absl::StrCat("cannot open state database ", path, ": ", ErrnoString(err)));
  }
  ::close(fd);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> QueryInt(sqlite3* db, const char* sql) {
  ASSIGN_OR_RETURN(Statement query, Statement::Prepare(db, sql));
  ASSIGN_OR_RETURN(bool row, query.Step());
  if (!row) return absl::InternalError(absl::StrCat(sql, ": no result"));
  return query.Int(0);
}

// The database's schema version; FailedPrecondition when it is newer than this binary knows.
absl::StatusOr<int64_t> SchemaVersion(sqlite3* db, const std::string& path) {
  ASSIGN_OR_RETURN(int64_t version, QueryInt(db, "PRAGMA user_version"));
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat("state database ", path, " has schema version ", version,
                                                      ", newer than this smad knows (", kSchemaVersion, ")"));
  }
  return version;
}

absl::Status Initialize(sqlite3* db, const std::string& path) {
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 5000);
  RETURN_IF_ERROR(SchemaVersion(db, path).status());  // before changing anything in the file
  {
    ASSIGN_OR_RETURN(Statement wal, Statement::Prepare(db, "PRAGMA journal_mode = WAL"));
    ASSIGN_OR_RETURN(bool row, wal.Step());
    if (!row || wal.Text(0) != "wal") {
      return absl::InternalError(absl::StrCat("state database ", path, ": cannot switch to WAL mode"));
    }
  }
  RETURN_IF_ERROR(Exec(db, "PRAGMA synchronous = FULL"));  // the migration is durable at once
  RETURN_IF_ERROR(Transaction(db, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(int64_t version, SchemaVersion(db, path));  // again, under the write lock
    return version == 0 ? Exec(db, kSchemaV1) : absl::OkStatus();
  }));
  RETURN_IF_ERROR(Exec(db, "PRAGMA synchronous = NORMAL"));

  ASSIGN_OR_RETURN(Statement check, Statement::Prepare(db, "PRAGMA quick_check"));
  ASSIGN_OR_RETURN(bool row, check.Step());
  if (row && check.Text(0) != "ok") {
    return absl::DataLossError(absl::StrCat("state database ", path, " is corrupt: ", check.Text(0)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& path, Options options) {
  RETURN_IF_ERROR(CreateDatabaseFile(path));
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                           options.vfs_name.empty() ? nullptr : options.vfs_name.c_str());
  absl::Status status = rc == SQLITE_OK ? Initialize(db, path)
                                        : SqliteError(db, rc, absl::StrCat("opening state database ", path));
  absl::StatusOr<std::unique_ptr<PreparedStatements>> statements =
      status.ok() ? PreparedStatements::Prepare(db) : status;
  if (!statements.ok()) {
    sqlite3_close_v2(db);
    return statements.status();
  }
  return std::make_unique<SqliteStateStore>(db, *std::move(statements), std::move(options));
}

}  // namespace smad::agent
