#include "unit/agent/store/fault_injection_vfs.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <utility>

namespace smad::testing {
namespace {

FaultInjectionVfs* Self(sqlite3_vfs* vfs) { return static_cast<FaultInjectionVfs*>(vfs->pAppData); }

std::optional<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

// What SQLite allocates for each open file: this header, then the default VFS's file object.
struct FaultInjectionVfs::File {
  sqlite3_file base;  // first, so SQLite's sqlite3_file* points at a File
  FaultInjectionVfs* vfs;
  const char* path;  // nullptr: not tracked (temporary files); SQLite keeps the name valid until xClose

  static File* Of(sqlite3_file* file) { return reinterpret_cast<File*>(file); }
  static sqlite3_file* Real(sqlite3_file* file) { return reinterpret_cast<sqlite3_file*>(Of(file) + 1); }
  static const sqlite3_io_methods* RealMethods(sqlite3_file* file) { return Real(file)->pMethods; }

  static int Close(sqlite3_file* f) { return RealMethods(f)->xClose(Real(f)); }
  static int Read(sqlite3_file* f, void* buffer, int amount, sqlite3_int64 offset) {
    return RealMethods(f)->xRead(Real(f), buffer, amount, offset);
  }
  static int Write(sqlite3_file* f, const void* buffer, int amount, sqlite3_int64 offset) {
    if (!Of(f)->vfs->active()) return SQLITE_OK;
    return RealMethods(f)->xWrite(Real(f), buffer, amount, offset);
  }
  static int Truncate(sqlite3_file* f, sqlite3_int64 size) {
    if (!Of(f)->vfs->active()) return SQLITE_OK;
    return RealMethods(f)->xTruncate(Real(f), size);
  }
  static int Sync(sqlite3_file* f, int flags) {
    File* self = Of(f);
    if (!self->vfs->active() || self->path == nullptr) return SQLITE_OK;
    sqlite3_int64 size = 0;
    int rc = RealMethods(f)->xFileSize(Real(f), &size);
    if (rc != SQLITE_OK) return rc;
    std::string content(static_cast<size_t>(size), '\0');
    if (size > 0) {
      rc = RealMethods(f)->xRead(Real(f), content.data(), static_cast<int>(size), 0);
      if (rc != SQLITE_OK) return rc;
    }
    self->vfs->RecordSync(self->path, std::move(content));
    return SQLITE_OK;
  }
  static int FileSize(sqlite3_file* f, sqlite3_int64* size) { return RealMethods(f)->xFileSize(Real(f), size); }
  static int Lock(sqlite3_file* f, int level) { return RealMethods(f)->xLock(Real(f), level); }
  static int Unlock(sqlite3_file* f, int level) { return RealMethods(f)->xUnlock(Real(f), level); }
  static int CheckReservedLock(sqlite3_file* f, int* out) {
    return RealMethods(f)->xCheckReservedLock(Real(f), out);
  }
  static int FileControl(sqlite3_file* f, int op, void* arg) {
    return RealMethods(f)->xFileControl(Real(f), op, arg);
  }
  static int SectorSize(sqlite3_file* f) { return RealMethods(f)->xSectorSize(Real(f)); }
  static int DeviceCharacteristics(sqlite3_file* f) { return RealMethods(f)->xDeviceCharacteristics(Real(f)); }
  // Shared memory (the WAL index) is not durable state: SQLite rebuilds it after a crash.
  static int ShmMap(sqlite3_file* f, int page, int page_size, int extend, void volatile** out) {
    return RealMethods(f)->xShmMap(Real(f), page, page_size, extend, out);
  }
  static int ShmLock(sqlite3_file* f, int offset, int n, int flags) {
    return RealMethods(f)->xShmLock(Real(f), offset, n, flags);
  }
  static void ShmBarrier(sqlite3_file* f) { RealMethods(f)->xShmBarrier(Real(f)); }
  static int ShmUnmap(sqlite3_file* f, int delete_flag) { return RealMethods(f)->xShmUnmap(Real(f), delete_flag); }

  static constexpr sqlite3_io_methods kMethods = {
      /*iVersion=*/2, Close, Read, Write, Truncate, Sync, FileSize, Lock, Unlock, CheckReservedLock, FileControl,
      SectorSize, DeviceCharacteristics, ShmMap, ShmLock, ShmBarrier, ShmUnmap, /*xFetch=*/nullptr,
      /*xUnfetch=*/nullptr};
};

FaultInjectionVfs::FaultInjectionVfs(std::string name) : name_(std::move(name)), base_(sqlite3_vfs_find(nullptr)) {
  vfs_ = sqlite3_vfs{};
  vfs_.iVersion = 2;
  vfs_.szOsFile = static_cast<int>(sizeof(File)) + base_->szOsFile;
  vfs_.mxPathname = base_->mxPathname;
  vfs_.zName = name_.c_str();
  vfs_.pAppData = this;
  vfs_.xOpen = Open;
  vfs_.xDelete = Delete;
  vfs_.xAccess = Access;
  vfs_.xFullPathname = FullPathname;
  vfs_.xRandomness = Randomness;
  vfs_.xSleep = Sleep;
  vfs_.xCurrentTime = CurrentTime;
  vfs_.xGetLastError = GetLastError;
  vfs_.xCurrentTimeInt64 = CurrentTimeInt64;
  if (sqlite3_vfs_register(&vfs_, /*makeDflt=*/0) != SQLITE_OK) std::abort();
}

FaultInjectionVfs::~FaultInjectionVfs() { sqlite3_vfs_unregister(&vfs_); }

void FaultInjectionVfs::SetFilesystemActive(bool active) {
  absl::MutexLock lock(&mu_);
  active_ = active;
}

bool FaultInjectionVfs::active() const {
  absl::MutexLock lock(&mu_);
  return active_;
}

uint64_t FaultInjectionVfs::sync_count() const {
  absl::MutexLock lock(&mu_);
  return syncs_;
}

void FaultInjectionVfs::DropUnsyncedData() {
  absl::MutexLock lock(&mu_);
  for (const auto& [path, content] : synced_) {
    if (!content) {
      ::unlink(path.c_str());
      continue;
    }
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(content->data(), static_cast<std::streamsize>(content->size()));
    if (!out) std::abort();
  }
}

void FaultInjectionVfs::Track(const std::string& path) {
  absl::MutexLock lock(&mu_);
  if (!synced_.contains(path)) synced_[path] = ReadWholeFile(path);
}

void FaultInjectionVfs::RecordSync(const std::string& path, std::string content) {
  absl::MutexLock lock(&mu_);
  synced_[path] = std::move(content);
  ++syncs_;
}

void FaultInjectionVfs::RecordDelete(const std::string& path) {
  absl::MutexLock lock(&mu_);
  synced_[path] = std::nullopt;
}

int FaultInjectionVfs::Open(sqlite3_vfs* vfs, const char* name, sqlite3_file* file, int flags, int* out_flags) {
  FaultInjectionVfs* self = Self(vfs);
  File* wrapper = File::Of(file);
  wrapper->vfs = self;
  wrapper->path = nullptr;
  constexpr int kTracked = SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL;
  if (name != nullptr && (flags & kTracked) != 0) {
    wrapper->path = name;
    self->Track(name);
  }
  sqlite3_file* real = File::Real(file);
  int rc = self->base_->xOpen(self->base_, name, real, flags, out_flags);
  // SQLite calls xClose even after a failed open when pMethods is set.
  wrapper->base.pMethods = real->pMethods != nullptr ? &File::kMethods : nullptr;
  return rc;
}

int FaultInjectionVfs::Delete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  FaultInjectionVfs* self = Self(vfs);
  if (!self->active()) return SQLITE_OK;
  int rc = self->base_->xDelete(self->base_, name, sync_dir);
  if (rc == SQLITE_OK) self->RecordDelete(name);
  return rc;
}

int FaultInjectionVfs::Access(sqlite3_vfs* vfs, const char* name, int flags, int* result) {
  return Self(vfs)->base_->xAccess(Self(vfs)->base_, name, flags, result);
}
int FaultInjectionVfs::FullPathname(sqlite3_vfs* vfs, const char* name, int size, char* out) {
  return Self(vfs)->base_->xFullPathname(Self(vfs)->base_, name, size, out);
}
int FaultInjectionVfs::Randomness(sqlite3_vfs* vfs, int size, char* out) {
  return Self(vfs)->base_->xRandomness(Self(vfs)->base_, size, out);
}
int FaultInjectionVfs::Sleep(sqlite3_vfs* vfs, int microseconds) {
  return Self(vfs)->base_->xSleep(Self(vfs)->base_, microseconds);
}
int FaultInjectionVfs::CurrentTime(sqlite3_vfs* vfs, double* now) {
  return Self(vfs)->base_->xCurrentTime(Self(vfs)->base_, now);
}
int FaultInjectionVfs::GetLastError(sqlite3_vfs* vfs, int size, char* out) {
  return Self(vfs)->base_->xGetLastError(Self(vfs)->base_, size, out);
}
int FaultInjectionVfs::CurrentTimeInt64(sqlite3_vfs* vfs, sqlite3_int64* now) {
  return Self(vfs)->base_->xCurrentTimeInt64(Self(vfs)->base_, now);
}

}  // namespace smad::testing
