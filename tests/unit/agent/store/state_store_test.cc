#include "agent/store/state_store.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <map>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/temp_dir.h"
#include "unit/agent/store/fault_injection_vfs.h"

namespace smad::agent {

// gtest prints these in failure messages.
void PrintTo(const RecordChange& change, std::ostream* os) {
  *os << "(" << change.kind << ", " << change.key << ", " << (change.value ? "\"" + *change.value + "\"" : "absent")
      << ")";
}
void PrintTo(const StoredRecord& record, std::ostream* os) {
  *os << "(" << record.kind << ", " << record.key << ", \"" << record.value << "\")";
}

namespace {

using ::smad::testing::FaultInjectionVfs;
using ::smad::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

absl::Status ToStatus(const absl::Status& status) { return status; }
template <typename T>
absl::Status ToStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

#define ASSERT_OK(expr)                            \
  do {                                             \
    const absl::Status smad_status_ = ToStatus(expr); \
    ASSERT_TRUE(smad_status_.ok()) << smad_status_;   \
  } while (0)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) ASSERT_OK_AND_ASSIGN_IMPL(SMAD_CONCAT(statusor_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  ASSERT_TRUE(tmp.ok()) << tmp.status();          \
  lhs = std::move(tmp).value()

RecordChange Set(std::string kind, std::string key, std::string value) {
  return {std::move(kind), std::move(key), std::move(value)};
}
RecordChange Del(std::string kind, std::string key) { return {std::move(kind), std::move(key), std::nullopt}; }

// Records plus the ids of pending ops: what a power loss may lose.
struct Snapshot {
  std::vector<StoredRecord> records;
  std::vector<uint64_t> pending;
  bool operator==(const Snapshot&) const = default;
};

Snapshot Take(StateStore& store) {
  Snapshot snapshot;
  auto records = store.LoadAll();
  auto pending = store.PendingOps();
  EXPECT_TRUE(records.ok() && pending.ok());
  if (records.ok()) snapshot.records = *records;
  if (pending.ok()) {
    for (const PendingOp& op : *pending) snapshot.pending.push_back(op.id);
  }
  return snapshot;
}

void WriteFile(const std::string& path, const std::string& content, std::streamoff offset = 0) {
  std::fstream out(path, std::ios::binary | std::ios::in | std::ios::out);
  if (!out) out.open(path, std::ios::binary | std::ios::out);
  out.seekp(offset);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
}

TEST(StateStoreTest, RoundTripAcrossReopen) {
  TempDir dir;
  const std::string path = dir.File("state.db");
  {
    ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(path));
    ASSERT_OK(store->Apply({Set("volume", "v2", R"({"size":2})"), Set("device", "d1", "{}"),
                            Set("volume", "v1", std::string("with\0nul", 8)), Del("volume", "absent")}));
    ASSERT_OK(store->Apply({Del("device", "d1")}));
  }
  ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(path));
  ASSERT_OK_AND_ASSIGN(std::vector<StoredRecord> records, store->LoadAll());
  EXPECT_THAT(records, ElementsAre(StoredRecord{"volume", "v1", std::string("with\0nul", 8)},
                                   StoredRecord{"volume", "v2", R"({"size":2})"}));
  ASSERT_OK_AND_ASSIGN(std::vector<PendingOp> pending, store->PendingOps());
  EXPECT_THAT(pending, IsEmpty());
}

TEST(StateStoreTest, CreatesPrivateFiles) {
  TempDir dir;
  const std::string path = dir.File("state.db");
  ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(path));
  ASSERT_OK(store->Apply({Set("k", "a", "1")}));
  for (const std::string& file : {path, path + "-wal"}) {
    struct stat st;
    ASSERT_EQ(::stat(file.c_str(), &st), 0) << file;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << file;
  }
}

TEST(StateStoreTest, MissingDirectoryIsNotFound) {
  TempDir dir;
  auto store = StateStore::Open(dir.File("no/such/state.db"));
  EXPECT_EQ(store.status().code(), absl::StatusCode::kNotFound) << store.status();
}

TEST(StateStoreTest, BeginOpRecordsBeforeAndAfterImages) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(dir.File("state.db")));
  ASSERT_OK(store->Apply({Set("k", "present", "old"), Set("k", "doomed", "x")}));
  const std::vector<RecordChange> changes = {Set("k", "present", "new"), Set("k", "fresh", "1"),
                                             Del("k", "doomed"), Del("k", "never")};
  ASSERT_OK_AND_ASSIGN(uint64_t id, store->BeginOp("create things", changes));

  ASSERT_OK_AND_ASSIGN(std::vector<StoredRecord> records, store->LoadAll());
  EXPECT_THAT(records, ElementsAre(StoredRecord{"k", "fresh", "1"}, StoredRecord{"k", "present", "new"}));
  ASSERT_OK_AND_ASSIGN(std::vector<PendingOp> pending, store->PendingOps());
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].id, id);
  EXPECT_EQ(pending[0].description, "create things");
  EXPECT_THAT(pending[0].before, ElementsAre(Set("k", "present", "old"), Del("k", "fresh"), Set("k", "doomed", "x"),
                                             Del("k", "never")));
  EXPECT_EQ(pending[0].after, changes);
}

TEST(StateStoreTest, CompleteKeepsChangesAndAbortRestores) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(dir.File("state.db")));
  ASSERT_OK(store->Apply({Set("k", "a", "0"), Set("k", "b", "0")}));
  ASSERT_OK_AND_ASSIGN(uint64_t kept, store->BeginOp("keep", {Set("k", "a", "1")}));
  ASSERT_OK_AND_ASSIGN(uint64_t undone, store->BeginOp("undo", {Set("k", "b", "1"), Set("k", "c", "1"), Del("k", "a")}));
  EXPECT_GT(undone, kept);
  ASSERT_OK(store->CompleteOp(kept));
  ASSERT_OK(store->AbortOp(undone));

  ASSERT_OK_AND_ASSIGN(std::vector<StoredRecord> records, store->LoadAll());
  EXPECT_THAT(records, ElementsAre(StoredRecord{"k", "a", "1"}, StoredRecord{"k", "b", "0"}));
  ASSERT_OK_AND_ASSIGN(std::vector<PendingOp> pending, store->PendingOps());
  EXPECT_THAT(pending, IsEmpty());
  EXPECT_EQ(store->CompleteOp(kept).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->AbortOp(undone).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->AbortOp(12345).code(), absl::StatusCode::kNotFound);
}

TEST(StateStoreTest, CompleteAppliesFinalChanges) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(dir.File("state.db")));
  ASSERT_OK_AND_ASSIGN(uint64_t id, store->BeginOp("create", {Set("volume", "v", R"({"state":"creating"})")}));
  EXPECT_EQ(store->CompleteOp(id, {Set("k", "x", "1"), Set("k", "x", "2")}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->CompleteOp(id + 1, {Set("k", "x", "1")}).code(), absl::StatusCode::kNotFound);
  ASSERT_OK(store->CompleteOp(id, {Set("volume", "v", R"({"state":"ready","bdev":"b0"})"), Del("volume", "w")}));

  ASSERT_OK_AND_ASSIGN(std::vector<StoredRecord> records, store->LoadAll());
  EXPECT_THAT(records, ElementsAre(StoredRecord{"volume", "v", R"({"state":"ready","bdev":"b0"})"}));
  ASSERT_OK_AND_ASSIGN(std::vector<PendingOp> pending, store->PendingOps());
  EXPECT_THAT(pending, IsEmpty());
}

TEST(StateStoreTest, RejectsInvalidChangeLists) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(dir.File("state.db")));
  EXPECT_EQ(store->BeginOp("dup", {Set("k", "a", "1"), Del("k", "a")}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Apply({Set("k", "a", "1"), Set("k", "a", "2")}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Apply({Set("k", "a", "\xff\xfe")}).code(), absl::StatusCode::kInvalidArgument);
  // The same key under another kind is another record.
  ASSERT_OK(store->Apply({Set("k", "a", "1"), Set("j", "a", "2")}));
  ASSERT_OK_AND_ASSIGN(std::vector<StoredRecord> records, store->LoadAll());
  EXPECT_THAT(records, ElementsAre(StoredRecord{"j", "a", "2"}, StoredRecord{"k", "a", "1"}));
  ASSERT_OK_AND_ASSIGN(std::vector<PendingOp> pending, store->PendingOps());
  EXPECT_THAT(pending, IsEmpty());
}

TEST(StateStoreTest, OpIdsAreNeverReused) {
  TempDir dir;
  const std::string path = dir.File("state.db");
  uint64_t last = 0;
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(path));
    ASSERT_OK_AND_ASSIGN(uint64_t id, store->BeginOp("op", {Set("k", "a", "1")}));
    EXPECT_GT(id, last);
    ASSERT_OK(store->CompleteOp(id));  // the newest op row is gone; its id must still not come back
    last = id;
  }
}

TEST(StateStoreTest, UnfinishedOpsArePendingAfterReopen) {
  TempDir dir;
  const std::string path = dir.File("state.db");
  uint64_t first = 0, second = 0;
  {
    ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(path));
    ASSERT_OK_AND_ASSIGN(first, store->BeginOp("first", {Set("k", "a", "1")}));
    ASSERT_OK_AND_ASSIGN(second, store->BeginOp("second", {Set("k", "a", "2")}));
    ASSERT_OK_AND_ASSIGN(uint64_t done, store->BeginOp("done", {Set("k", "b", "1")}));
    ASSERT_OK(store->CompleteOp(done));
  }  // "crash": destroyed without finishing the first two
  ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(path));
  ASSERT_OK_AND_ASSIGN(std::vector<PendingOp> pending, store->PendingOps());
  ASSERT_EQ(pending.size(), 2u);
  EXPECT_EQ(pending[0].id, first);
  EXPECT_EQ(pending[0].description, "first");
  EXPECT_THAT(pending[0].before, ElementsAre(Del("k", "a")));
  EXPECT_EQ(pending[1].id, second);
  EXPECT_THAT(pending[1].before, ElementsAre(Set("k", "a", "1")));
  EXPECT_THAT(pending[1].after, ElementsAre(Set("k", "a", "2")));
  // The reconciler rolls both back, newest first.
  ASSERT_OK(store->AbortOp(second));
  ASSERT_OK(store->AbortOp(first));
  ASSERT_OK_AND_ASSIGN(std::vector<StoredRecord> records, store->LoadAll());
  EXPECT_THAT(records, ElementsAre(StoredRecord{"k", "b", "1"}));
}

// The child of the SIGKILL test: op i sets both "a" and "b" to i; even ops are completed. Reports each
// op number on `report_fd` once BeginOp returned. Never returns.
[[noreturn]] void RunOpsUntilKilled(const std::string& path, int report_fd) {
  auto store = StateStore::Open(path);
  if (!store.ok()) _exit(2);
  auto records = (*store)->LoadAll();
  if (!records.ok()) _exit(3);
  int64_t i = records->empty() ? 0 : std::stoll(records->front().value);
  while (true) {
    ++i;
    auto id = (*store)->BeginOp(absl::StrCat("op ", i), {Set("k", "a", std::to_string(i)),
                                                         Set("k", "b", std::to_string(i))});
    if (!id.ok()) _exit(4);
    if (write(report_fd, &i, sizeof(i)) != sizeof(i)) _exit(5);
    if (i % 2 == 0 && !(*store)->CompleteOp(*id).ok()) _exit(6);
  }
}

TEST(StateStoreTest, SigkillMidWriteLeavesEveryOpWholeAndLogged) {
  TempDir dir;
  const std::string path = dir.File("state.db");
  std::mt19937 rng(7);
  for (int round = 0; round < 4; ++round) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      RunOpsUntilKilled(path, fds[1]);
    }
    close(fds[1]);
    int64_t reported = 0;
    for (int reports = 0; reports < 20 + static_cast<int>(rng() % 30); ++reports) {
      ASSERT_EQ(read(fds[0], &reported, sizeof(reported)), static_cast<ssize_t>(sizeof(reported)))
          << "the child died early";
    }
    usleep(rng() % 3000);
    kill(pid, SIGKILL);
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(wstatus)) << "child exit status " << WEXITSTATUS(wstatus);
    close(fds[0]);

    ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(path));
    ASSERT_OK_AND_ASSIGN(std::vector<StoredRecord> records, store->LoadAll());
    ASSERT_EQ(records.size(), 2u);
    EXPECT_EQ(records[0].value, records[1].value) << "a partial op";
    const int64_t last = std::stoll(records[0].value);
    EXPECT_GE(last, reported) << "a committed op was lost";
    ASSERT_OK_AND_ASSIGN(std::vector<PendingOp> pending, store->PendingOps());
    for (const PendingOp& op : pending) {
      ASSERT_EQ(op.after.size(), 2u);
      const int64_t i = std::stoll(*op.after[0].value);
      EXPECT_TRUE(i % 2 == 1 || i == last) << "op " << i << " was completed but is pending";
      EXPECT_EQ(op.after, std::vector<RecordChange>({Set("k", "a", std::to_string(i)), Set("k", "b", std::to_string(i))}));
      if (i == 1) {
        EXPECT_EQ(op.before, std::vector<RecordChange>({Del("k", "a"), Del("k", "b")}));
      } else {
        EXPECT_EQ(op.before, std::vector<RecordChange>({Set("k", "a", std::to_string(i - 1)),
                                                        Set("k", "b", std::to_string(i - 1))}));
      }
    }
    for (const PendingOp& op : pending) ASSERT_OK(store->CompleteOp(op.id));  // roll forward, as smad would
  }
}

TEST(StateStoreTest, ConcurrentSyncedCommitsShareFsyncs) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(dir.File("state.db")));
  constexpr int kThreads = 16, kCommits = 20;
  absl::Notification go;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      go.WaitForNotification();
      for (int j = 0; j < kCommits; ++j) {
        absl::Status status = store->Apply({Set("t", absl::StrCat(t, "/", j), "v")});
        EXPECT_TRUE(status.ok()) << status;
      }
    });
  }
  go.Notify();
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(store->synced_commits(), uint64_t{kThreads * kCommits});
  EXPECT_GT(store->fsyncs(), 0u);
  EXPECT_LE(store->fsyncs(), store->synced_commits() / 2);
  std::cout << store->synced_commits() << " synced commits, " << store->fsyncs() << " fsyncs\n";
  ASSERT_OK_AND_ASSIGN(std::vector<StoredRecord> records, store->LoadAll());
  EXPECT_EQ(records.size(), size_t{kThreads * kCommits});
}

// Concurrent writes share transactions; one that fails must undo only its own changes.
TEST(StateStoreTest, ConcurrentWritesSucceedOrFailEachOnItsOwn) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(dir.File("state.db")));
  constexpr int kThreads = 16, kRounds = 15;
  absl::Notification go;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      go.WaitForNotification();
      for (int j = 0; j < kRounds; ++j) {
        const std::string key = absl::StrCat(t, "/", j);
        switch ((t + j) % 3) {
          case 0: {
            // An op that fails half-way: AbortOp of an unknown id changes nothing.
            absl::Status aborted = store->AbortOp(1000000 + t * 100 + j);
            EXPECT_EQ(aborted.code(), absl::StatusCode::kNotFound) << aborted;
            break;
          }
          case 1: {
            absl::StatusOr<uint64_t> id = store->BeginOp("op", {Set("t", key, "begun")});
            ASSERT_TRUE(id.ok()) << id.status();
            ASSERT_OK(store->CompleteOp(*id, {Set("t", key, "done")}));
            // Completing it again fails (the op row is gone) and must not apply its final changes.
            EXPECT_EQ(store->CompleteOp(*id, {Set("t", key, "twice")}).code(), absl::StatusCode::kNotFound);
            break;
          }
          default:
            ASSERT_OK(store->Apply({Set("t", key, "applied")}));
        }
      }
    });
  }
  go.Notify();
  for (std::thread& thread : threads) thread.join();
  ASSERT_OK_AND_ASSIGN(std::vector<StoredRecord> records, store->LoadAll());
  std::map<std::string, std::string> values;
  for (const StoredRecord& r : records) values[r.key] = r.value;
  for (int t = 0; t < kThreads; ++t) {
    for (int j = 0; j < kRounds; ++j) {
      const std::string key = absl::StrCat(t, "/", j);
      switch ((t + j) % 3) {
        case 0: EXPECT_FALSE(values.contains(key)) << key; break;
        case 1: EXPECT_EQ(values[key], "done") << key; break;
        default: EXPECT_EQ(values[key], "applied") << key;
      }
    }
  }
  ASSERT_OK_AND_ASSIGN(std::vector<PendingOp> pending, store->PendingOps());
  EXPECT_THAT(pending, IsEmpty());
}

TEST(StateStoreTest, WithoutFsyncNothingIsSynced) {
  TempDir dir;
  StateStore::Options options;
  options.fsync = false;
  ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(dir.File("state.db"), options));
  ASSERT_OK(store->Apply({Set("k", "a", "1")}));
  ASSERT_OK_AND_ASSIGN(uint64_t id, store->BeginOp("op", {Set("k", "a", "2")}));
  ASSERT_OK(store->CompleteOp(id));
  EXPECT_EQ(store->synced_commits(), 2u);
  EXPECT_EQ(store->fsyncs(), 0u);
}

TEST(StateStoreTest, ConcurrentReadersSeeWholeCommits) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(dir.File("state.db")));
  std::atomic<int> writers_left{3};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int j = 0; j < 40; ++j) {
        const std::string v = absl::StrCat(t, "-", j);
        if (j % 2 == 0) {
          EXPECT_TRUE(store->Apply({Set("pair", "x", v), Set("pair", "y", v)}).ok());
        } else {
          auto id = store->BeginOp("pair", {Set("pair", "x", v), Set("pair", "y", v)});
          ASSERT_TRUE(id.ok()) << id.status();
          EXPECT_TRUE((j % 4 == 1 ? store->CompleteOp(*id) : store->AbortOp(*id)).ok());
        }
      }
      --writers_left;
    });
  }
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&] {
      while (writers_left > 0) {
        auto records = store->LoadAll();
        ASSERT_TRUE(records.ok()) << records.status();
        if (!records->empty()) {
          ASSERT_EQ(records->size(), 2u);
          EXPECT_EQ((*records)[0].value, (*records)[1].value);
        }
        EXPECT_TRUE(store->PendingOps().ok());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  ASSERT_OK_AND_ASSIGN(std::vector<PendingOp> pending, store->PendingOps());
  EXPECT_THAT(pending, IsEmpty());
}

TEST(StateStoreTest, RefusesNewerSchema) {
  TempDir dir;
  const std::string path = dir.File("state.db");
  { ASSERT_OK(StateStore::Open(path)); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 2", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto store = StateStore::Open(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
}

TEST(StateStoreTest, GarbageFileIsDataLoss) {
  TempDir dir;
  const std::string path = dir.File("state.db");
  std::string garbage;
  std::mt19937 rng(1);
  for (int i = 0; i < 8192; ++i) garbage.push_back(static_cast<char>(rng()));
  WriteFile(path, garbage);
  auto store = StateStore::Open(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss) << store.status();
}

TEST(StateStoreTest, CorruptPageIsDataLoss) {
  TempDir dir;
  const std::string path = dir.File("state.db");
  {
    ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(path));
    std::vector<RecordChange> changes;
    for (int i = 0; i < 200; ++i) changes.push_back(Set("k", absl::StrCat("key", i), std::string(100, 'v')));
    ASSERT_OK(store->Apply(std::move(changes)));
  }  // closing checkpoints everything into the database file
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  ASSERT_GE(st.st_size, 4 * 4096);
  WriteFile(path, std::string(4096, '\x5a'), 2 * 4096);  // page 3
  auto store = StateStore::Open(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss) << store.status();
}

TEST(StateStoreTest, MalformedOpImageIsDataLoss) {
  TempDir dir;
  const std::string path = dir.File("state.db");
  uint64_t id = 0;
  {
    ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(path));
    ASSERT_OK_AND_ASSIGN(id, store->BeginOp("op", {Set("k", "a", "1")}));
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE ops SET before = '[{\"kind\": 1}]'", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(path));
  EXPECT_EQ(store->PendingOps().status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store->AbortOp(id).code(), absl::StatusCode::kDataLoss);
  ASSERT_OK_AND_ASSIGN(std::vector<StoredRecord> records, store->LoadAll());  // the abort changed nothing
  EXPECT_THAT(records, ElementsAre(StoredRecord{"k", "a", "1"}));
}

class StateStorePowerLossTest : public ::testing::Test {
 protected:
  StateStorePtr Open() {
    StateStore::Options options;
    options.vfs_name = vfs_.name();
    auto store = StateStore::Open(path_, options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  // The machine loses power: whatever was not synced is gone, including what closing the store writes.
  void PowerLoss(StateStorePtr& store) {
    vfs_.SetFilesystemActive(false);
    store.reset();
    vfs_.DropUnsyncedData();
    vfs_.SetFilesystemActive(true);
  }
  // A checkpoint from a second connection: it syncs the WAL, making every commit so far durable.
  void Checkpoint() {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE, vfs_.name().c_str()), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db, "PRAGMA wal_checkpoint(PASSIVE)", nullptr, nullptr, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }

  TempDir dir_;
  const std::string path_ = dir_.File("state.db");
  FaultInjectionVfs vfs_{"smad_power_loss"};
};

TEST_F(StateStorePowerLossTest, SyncedCommitsSurviveBufferedCompletionsMayNot) {
  StateStorePtr store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_OK_AND_ASSIGN(uint64_t first, store->BeginOp("first", {Set("k", "a", "1")}));
  ASSERT_OK_AND_ASSIGN(uint64_t second, store->BeginOp("second", {Set("k", "b", "2")}));
  ASSERT_OK(store->CompleteOp(first));       // buffered, then made durable by the next synced commit
  ASSERT_OK(store->Apply({Set("k", "c", "3")}));
  ASSERT_OK(store->CompleteOp(second, {Set("k", "b", "2+")}));  // buffered: lost
  EXPECT_GT(vfs_.sync_count(), 0u);
  PowerLoss(store);

  store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_OK_AND_ASSIGN(std::vector<StoredRecord> records, store->LoadAll());
  EXPECT_THAT(records, ElementsAre(StoredRecord{"k", "a", "1"}, StoredRecord{"k", "b", "2"},
                                   StoredRecord{"k", "c", "3"}));
  ASSERT_OK_AND_ASSIGN(std::vector<PendingOp> pending, store->PendingOps());
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].id, second);
  ASSERT_OK(store->CompleteOp(second));
}

TEST_F(StateStorePowerLossTest, RecoversTheStateOfSomeCommitSinceTheLastSync) {
  std::mt19937 rng(2024);
  for (int cycle = 0; cycle < 8; ++cycle) {
    StateStorePtr store = Open();
    ASSERT_NE(store, nullptr);
    std::vector<Snapshot> history = {Take(*store)};  // after recovery, the state on disk is durable
    size_t durable = 0;                              // history index of the last sync point
    for (int step = 0; step < 30; ++step) {
      ASSERT_OK_AND_ASSIGN(std::vector<PendingOp> pending, store->PendingOps());
      std::vector<RecordChange> changes;
      for (int key = 0; key < 5; ++key) {
        if (rng() % 3 != 0) continue;
        const size_t size = rng() % 10 == 0 ? 20000 : 10;  // some large values fill WAL pages
        changes.push_back(rng() % 4 == 0 ? Del("k", absl::StrCat(key))
                                         : Set("k", absl::StrCat(key), std::string(size, 'a' + rng() % 26)));
      }
      bool synced = true;
      switch (rng() % 6) {
        case 0:
          ASSERT_OK(store->Apply(changes));
          break;
        case 1:
        case 2:
          ASSERT_OK(store->BeginOp("op", changes));
          break;
        case 3:
          if (pending.empty()) continue;
          ASSERT_OK(store->CompleteOp(pending[rng() % pending.size()].id, changes));
          synced = false;
          break;
        case 4:
          if (pending.empty()) continue;
          ASSERT_OK(store->AbortOp(pending.back().id));
          break;
        case 5:
          Checkpoint();  // no new state, but what is there becomes durable
          durable = history.size() - 1;
          continue;
      }
      history.push_back(Take(*store));
      if (synced) durable = history.size() - 1;
    }
    PowerLoss(store);

    store = Open();
    ASSERT_NE(store, nullptr);
    const Snapshot recovered = Take(*store);
    bool found = false;
    for (size_t i = durable; i < history.size(); ++i) found = found || history[i] == recovered;
    EXPECT_TRUE(found) << "cycle " << cycle << ": recovered " << recovered.records.size() << " records and "
                       << recovered.pending.size() << " pending ops, not a state since the last sync";
  }
}

TEST_F(StateStorePowerLossTest, WithoutFsyncTheDatabaseStillOpensCleanly) {
  StateStore::Options options;
  options.fsync = false;
  options.vfs_name = vfs_.name();
  ASSERT_OK_AND_ASSIGN(StateStorePtr store, StateStore::Open(path_, options));
  for (int i = 0; i < 20; ++i) ASSERT_OK(store->Apply({Set("k", absl::StrCat(i), "v")}));
  PowerLoss(store);
  ASSERT_OK_AND_ASSIGN(store, StateStore::Open(path_, options));
  ASSERT_OK_AND_ASSIGN(std::vector<StoredRecord> records, store->LoadAll());
  EXPECT_LE(records.size(), 20u);  // whatever was synced by checkpoints; here nothing
}

}  // namespace
}  // namespace smad::agent
