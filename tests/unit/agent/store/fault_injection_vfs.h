#pragma once

// A sqlite3_vfs for "drop unsynced writes, then recover" tests (LevelDB's FaultInjectionTestEnv, for SQLite).
// It wraps SQLite's default VFS and remembers, for every database, WAL and journal file it opens, the file's
// content as of its last xSync. A simulated power loss then puts every such file back to that content.
//
// Usage:
//   FaultInjectionVfs vfs("fault");                // registered under "fault" until destroyed
//   ... open databases with vfs name "fault", write ...
//   vfs.SetFilesystemActive(false);                 // the machine "dies": later writes go nowhere
//   ... close the databases (their closing writes are dropped) ...
//   vfs.DropUnsyncedData();                         // the disk as it was at each file's last sync
//   vfs.SetFilesystemActive(true);                  // reboot, reopen, check
//
// Real fsyncs are not performed (the simulation does not need them). A file's content when the VFS first
// opens it counts as synced; a deletion counts as durable at once.
//
// Thread safety: SQLite may call the VFS from any thread; the public methods may be called from any thread,
// but DropUnsyncedData() only while no database using the VFS is open.

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <sqlite3.h>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace smad::testing {

class FaultInjectionVfs {
 public:
  explicit FaultInjectionVfs(std::string name);
  ~FaultInjectionVfs();
  FaultInjectionVfs(const FaultInjectionVfs&) = delete;
  FaultInjectionVfs& operator=(const FaultInjectionVfs&) = delete;

  const std::string& name() const { return name_; }

  // While inactive, writes, truncations, syncs and deletions report success and do nothing.
  void SetFilesystemActive(bool active);
  // Restores every tracked file to its content at its last sync (deleting it if it did not exist then).
  void DropUnsyncedData();
  // xSync calls that recorded a sync point.
  uint64_t sync_count() const;

 private:
  struct File;
  friend struct File;

  bool active() const;
  // Remembers `path`'s current on-disk content as synced unless it is already tracked.
  void Track(const std::string& path);
  void RecordSync(const std::string& path, std::string content);
  void RecordDelete(const std::string& path);

  static int Open(sqlite3_vfs* vfs, const char* name, sqlite3_file* file, int flags, int* out_flags);
  static int Delete(sqlite3_vfs* vfs, const char* name, int sync_dir);
  static int Access(sqlite3_vfs* vfs, const char* name, int flags, int* result);
  static int FullPathname(sqlite3_vfs* vfs, const char* name, int size, char* out);
  static int Randomness(sqlite3_vfs* vfs, int size, char* out);
  static int Sleep(sqlite3_vfs* vfs, int microseconds);
  static int CurrentTime(sqlite3_vfs* vfs, double* now);
  static int GetLastError(sqlite3_vfs* vfs, int size, char* out);
  static int CurrentTimeInt64(sqlite3_vfs* vfs, sqlite3_int64* now);

  const std::string name_;
  sqlite3_vfs* const base_;  // the default VFS
  sqlite3_vfs vfs_;

  mutable absl::Mutex mu_;
  bool active_ ABSL_GUARDED_BY(mu_) = true;
  uint64_t syncs_ ABSL_GUARDED_BY(mu_) = 0;
  // Synced content per path; nullopt: the file did not exist.
  std::map<std::string, std::optional<std::string>> synced_ ABSL_GUARDED_BY(mu_);
};

}  // namespace smad::testing
