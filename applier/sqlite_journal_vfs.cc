#include "applier/sqlite_journal_vfs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <string>

namespace migledger {
namespace {

// A journal whose directory entry this process synced, held open: while
// the descriptor is open the inode cannot be freed, so no other file can
// show up under its (device, inode) and pass for it.
struct Pin {
  int fd = -1;
  dev_t dev = 0;
  ino_t ino = 0;
};

// One registered instance. `vfs` comes first, so the sqlite3_vfs* SQLite
// hands back is the instance.
struct KeptJournal {
  sqlite3_vfs vfs;    // a copy of the base, zName, xOpen, xDelete replaced
  sqlite3_vfs* base;  // where every call goes
  std::string name;
  std::mutex mu;
  std::map<std::string, Pin> pins;  // by journal path
};

KeptJournal* Self(sqlite3_vfs* vfs) {
  return reinterpret_cast<KeptJournal*>(vfs);
}

void Unpin(KeptJournal* self, const std::string& path) {
  auto it = self->pins.find(path);
  if (it == self->pins.end()) return;
  ::close(it->second.fd);
  self->pins.erase(it);
}

// fsync of the directory holding `path`.
bool SyncDirectoryOf(const std::string& path) {
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

// Syncs the directory of `path` and pins the file: its directory entry is
// durable from now on.
void SyncAndPin(KeptJournal* self, const std::string& path) {
  Pin pin;
  pin.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (pin.fd < 0) return;
  struct stat st;
  if (::fstat(pin.fd, &st) != 0 || !SyncDirectoryOf(path)) {
    ::close(pin.fd);
    return;
  }
  pin.dev = st.st_dev;
  pin.ino = st.st_ino;
  std::lock_guard<std::mutex> lock(self->mu);
  Unpin(self, path);
  self->pins[path] = pin;
}

int Open(sqlite3_vfs* vfs, const char* name, sqlite3_file* file, int flags,
         int* out_flags) {
  KeptJournal* self = Self(vfs);
  sqlite3_vfs* base = self->base;
  const bool journal = name != nullptr &&
                       (flags & SQLITE_OPEN_MAIN_JOURNAL) != 0 &&
                       (flags & SQLITE_OPEN_CREATE) != 0 &&
                       (flags & SQLITE_OPEN_EXCLUSIVE) == 0 &&
                       (flags & SQLITE_OPEN_DELETEONCLOSE) == 0;
  if (!journal) return base->xOpen(vfs, name, file, flags, out_flags);
  struct stat st;
  // A journal created by this open (the DELETE mode's every transaction)
  // is left to the base. One that was already there is kept between
  // transactions: pinned after this open, opened without CREATE after that.
  const bool existed = ::stat(name, &st) == 0;
  if (existed) {
    bool pinned;
    {
      std::lock_guard<std::mutex> lock(self->mu);
      auto it = self->pins.find(name);
      pinned = it != self->pins.end() && it->second.dev == st.st_dev &&
               it->second.ino == st.st_ino;
    }
    if (pinned) {
      int rc =
          base->xOpen(vfs, name, file, flags & ~SQLITE_OPEN_CREATE, out_flags);
      if (rc == SQLITE_OK) return rc;
      // Gone since the stat (another connection deleted it): opened the
      // normal way below.
    }
  }
  int rc = base->xOpen(vfs, name, file, flags, out_flags);
  if (rc == SQLITE_OK && existed) SyncAndPin(self, name);
  return rc;
}

int Delete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  KeptJournal* self = Self(vfs);
  if (name != nullptr) {
    std::lock_guard<std::mutex> lock(self->mu);
    Unpin(self, name);
  }
  return self->base->xDelete(vfs, name, sync_dir);
}

}  // namespace

void RegisterKeptJournalVfs(const char* name, sqlite3_vfs* base) {
  auto* self = new KeptJournal{*base, base, name, {}, {}};
  self->vfs.zName = self->name.c_str();
  self->vfs.pNext = nullptr;
  self->vfs.xOpen = Open;
  self->vfs.xDelete = Delete;
  sqlite3_vfs_register(&self->vfs, /*makeDflt=*/0);
}

const char* KeptJournalVfs() {
  static constexpr char kName[] = "migledger-kept-journal";
  static std::once_flag once;
  std::call_once(
      once, [] { RegisterKeptJournalVfs(kName, sqlite3_vfs_find(nullptr)); });
  return kName;
}

}  // namespace migledger
