// Opening a ledger: RocksDB's options, the layout (format 1 or 2) the
// directory holds, the directory's checks and a new ledger's creation.
#include <fcntl.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "ledger/rocks_ledger.h"

namespace migledger {
namespace ledger_internal {
namespace {
// RocksDB's own diagnostics are not written into the ledger directory: on a
// full disk, logging the write error would fail too (and Debian's build
// asserts on that). Errors reach the caller as Status instead.
class SilentLogger final : public rocksdb::Logger {
 public:
  using rocksdb::Logger::Logv;
  void Logv(const char *, va_list) override {}
};

rocksdb::Options LedgerDbOptions(bool read_only) {
  rocksdb::Options o;
  static std::shared_ptr<rocksdb::Logger> silent =
      std::make_shared<SilentLogger>();
  o.info_log = silent;
  // A ledger is small and written by one short-lived process: keep memory and
  // background work low so the tool starts fast and stays light.
  o.write_buffer_size = 4 << 20;
  o.max_write_buffer_number = 2;
  o.max_background_jobs = 2;
  o.keep_log_file_num = 2;
  o.max_manifest_file_size = 4 << 20;
  o.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  o.max_open_files = 256;
  // One thread: the default (16 per column family) spawns ~150 threads on
  // every open, which costs more than the file opening it parallelizes.
  o.max_file_opening_threads = 1;
  o.compression = rocksdb::kNoCompression;
  o.recycle_log_file_num = 0;
  // A writer's open does not turn the recovered log into a table file (a
  // write and an fsync on every apply); ~RocksLedger flushes when it grew.
  o.avoid_flush_during_recovery = true;
  // One append puts keys into several tables of the one column family; each
  // table's keys mostly ascend (sequence numbers, times). An insert hint per
  // table (its tag byte) lets the memtable insert next to that table's
  // previous key instead of searching the skip list from the top: measured,
  // a third of the memtable's cost per append.
  o.memtable_insert_with_hint_prefix_extractor.reset(
      rocksdb::NewFixedPrefixTransform(1));
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = nullptr;
  t.no_block_cache = false;
  if (read_only) {
    // Readers (the audit commands) mostly scan the whole ledger once.
    // Mapped table files let a block be read in place: no copy out of the
    // page cache, no allocation per block, no block cache to fill and evict
    // (measured: scanning the events, hashes and target index of a
    // million-event ledger takes ~40% less CPU). Block checksums are still
    // verified. Table files are never rewritten in place, so a mapping
    // cannot change under the reader.
    o.allow_mmap_reads = true;
    t.no_block_cache = true;
  }
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  return o;
}

// A new ledger: open with the default column family only, then create the
// others in one call. DB::Open's create_missing_column_families creates them
// one at a time and rewrites (and re-reads) the OPTIONS file after each: 9
// OPTIONS files and ~35 fsyncs, the bulk of a fresh runner's first apply.
// A crash in between leaves a ledger without some families, which the next
// open creates (create_missing_column_families) before Init() runs.
rocksdb::Status CreateWithColumnFamilies(
    const rocksdb::DBOptions &db_options,
    const rocksdb::ColumnFamilyOptions &cf_options, const std::string &dir,
    std::vector<rocksdb::ColumnFamilyHandle *> *handles, rocksdb::DB **db) {
  std::vector<rocksdb::ColumnFamilyDescriptor> just_default = {
      {rocksdb::kDefaultColumnFamilyName, cf_options}};
  std::vector<rocksdb::ColumnFamilyHandle *> opened;
  rocksdb::DB *raw = nullptr;
  rocksdb::Status s =
      rocksdb::DB::Open(db_options, dir, just_default, &opened, &raw);
  if (s.IsInvalidArgument() &&
      s.ToString().find("olumn families not opened") != std::string::npos) {
    // Another process created the ledger while this one waited for its
    // lock: open it like any existing ledger.
    std::vector<rocksdb::ColumnFamilyDescriptor> all;
    for (const char *name : kCfNames) all.emplace_back(name, cf_options);
    return rocksdb::DB::Open(db_options, dir, all, handles, db);
  }
  if (!s.ok()) return s;
  std::vector<std::string> names(std::begin(kCfNames) + 1, std::end(kCfNames));
  std::vector<rocksdb::ColumnFamilyHandle *> created;
  s = raw->CreateColumnFamilies(cf_options, names, &created);
  if (!s.ok()) {
    for (auto *h : created) raw->DestroyColumnFamilyHandle(h);
    raw->DestroyColumnFamilyHandle(opened[0]);
    delete raw;
    return s;
  }
  handles->clear();
  handles->push_back(opened[0]);
  handles->insert(handles->end(), created.begin(), created.end());
  *db = raw;
  return s;
}

}  // namespace
}  // namespace ledger_internal

Status CheckLedgerDirectory(const std::string &dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();  // created private on demand
    return IoError("cannot open ledger " + dir + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode))
    return IoError("cannot open ledger " + dir + ": not a directory");
  const uid_t me = ::geteuid();
  if (st.st_uid != me) {
    return IoError("ledger directory " + dir + " is owned by uid " +
                   std::to_string(st.st_uid) + ", not by you (uid " +
                   std::to_string(me) +
                   "): run migledger as its owner, or chown it to yourself");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    return IoError(
        "ledger directory " + dir + " is writable by " +
        ((st.st_mode & S_IWOTH) != 0 ? "every user" : "its group") + " (mode " +
        mode + "), so another user could replace its files: chmod 700 " + dir);
  }
  return Status::Ok();
}

namespace ledger_internal {
namespace {

// Ledger::Open in steps: the options and the directory checked, the
// directory prepared for a new ledger, RocksDB opened in the layout the
// directory holds (waiting for another writer's lock), RocksDB's refusals
// turned into the ledger's errors, and the ledger initialized.
class Opener {
 public:
  Opener(const std::string &dir, const LedgerOptions &options)
      : dir_(dir),
        options_(options),
        db_options_(LedgerDbOptions(options.read_only)),
        cf_options_(LedgerDbOptions(options.read_only)) {}

  StatusOr<std::unique_ptr<Ledger>> Open() {
    MIGLEDGER_RETURN_IF_ERROR(CheckOptionsAndDirectory());
    std::error_code ec;
    exists_ =
        std::filesystem::exists(std::filesystem::path(dir_) / "CURRENT", ec);
    if (!exists_) MIGLEDGER_RETURN_IF_ERROR(PrepareNewLedger());
    db_options_.create_if_missing = !exists_;
    // Format 2 lives in the default column family; format 1 needs all of
    // kCfNames opened (RocksDB refuses a writer that leaves one out; a reader
    // lists the families first, see below).
    descriptors_ = {{rocksdb::kDefaultColumnFamilyName, cf_options_}};
    create_format_1_ = !exists_ && options_.create_format_1;
    if (exists_ && options_.read_only) {
      // A reader opens only the families it names, so it looks first: a
      // format-1 ledger needs them all, an unknown one is a newer format.
      MIGLEDGER_RETURN_IF_ERROR(ChooseLayout());
    }
    MIGLEDGER_RETURN_IF_ERROR(OpenDb());
    if (!s_.ok() && s_.IsInvalidArgument() &&
        s_.ToString().find("olumn families not opened") != std::string::npos) {
      // A writer learns it from RocksDB's refusal: no listing on every open.
      MIGLEDGER_RETURN_IF_ERROR(ChooseLayout());
      MIGLEDGER_RETURN_IF_ERROR(OpenDb());
    }
    if (!s_.ok()) return OpenError();
    // An older migledger that opened a format-2 ledger for writing created
    // the format-1 families (empty) before it refused the missing marker: the
    // marker in the default family says which layout holds the tables.
    bool format_2 = handles_.size() == 1;
    if (!format_2) {
      std::string marker;
      format_2 = db_->Get({}, handles_[0],
                          std::string(1, kTableTags[kMeta]) + "format", &marker)
                     .ok();
    }
    auto ledger = std::make_unique<RocksLedger>(db_, std::move(handles_),
                                                options_.read_only, format_2);
    MIGLEDGER_RETURN_IF_ERROR(
        ledger->Init(dir_, options_.new_ledger_id, options_.verify_new_events));
    return std::unique_ptr<Ledger>(std::move(ledger));
  }

 private:
  Status CheckOptionsAndDirectory() {
    namespace fs = std::filesystem;
    const std::string &id = options_.new_ledger_id;
    if (!id.empty() &&
        (id.size() != 32 ||
         id.find_first_not_of("0123456789abcdef") != std::string::npos)) {
      return InvalidInput("a ledger id is 32 lowercase hex characters, not \"" +
                          id + "\"");
    }
    std::error_code ec;
    if (fs::exists(dir_, ec) && !fs::is_directory(dir_, ec)) {
      return IoError("cannot open ledger " + dir_ + ": not a directory");
    }
    // A writer refuses a directory another user can change (as ssh refuses
    // such keys): they could move the log away or plant files in it.
    if (!options_.read_only) {
      MIGLEDGER_RETURN_IF_ERROR(CheckLedgerDirectory(dir_));
      if (::access(dir_.c_str(), W_OK) != 0 && errno == EACCES) {
        return IoError("cannot open ledger " + dir_ +
                       ": permission denied (the directory is not writable)");
      }
    }
    return Status::Ok();
  }

  // No ledger in the directory yet: only a writer asked to create one goes
  // on, with the directory made private and the creation evidence in it.
  Status PrepareNewLedger() {
    namespace fs = std::filesystem;
    if (options_.read_only || !options_.create_if_missing) {
      return NotFound("no ledger at " + dir_ + " (run `migledger init` first)");
    }
    std::error_code ec;
    if (!fs::exists(dir_, ec)) {
      // The ledger holds who ran what: private to its owner.
      if (!fs::create_directories(dir_, ec) && ec) {
        return IoError("cannot create ledger directory " + dir_ + ": " +
                       ec.message());
      }
      ::chmod(dir_.c_str(), 0700);
    }
    // Evidence that this is a creation: a ledger that a kill leaves without
    // its marker is then initialized by the next writer (Init). RocksDB
    // syncs the directory when it writes CURRENT, which makes this entry
    // durable first.
    const std::string creating = dir_ + "/" + kCreatingFile;
    int fd = ::open(creating.c_str(),
                    O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
      return IoError("cannot create ledger " + dir_ + ": " +
                     std::strerror(errno));
    }
    ::close(fd);
    return Status::Ok();
  }

  // Opens RocksDB into s_, db_ and handles_; waits up to lock_timeout while
  // another process holds the lock.
  Status OpenDb() {
    auto deadline = std::chrono::steady_clock::now() + options_.lock_timeout;
    for (;;) {
      if (options_.read_only) {
        s_ = rocksdb::DB::OpenForReadOnly(db_options_, dir_, descriptors_,
                                          &handles_, &db_);
      } else if (create_format_1_) {
        s_ = CreateWithColumnFamilies(db_options_, cf_options_, dir_, &handles_,
                                      &db_);
      } else {
        s_ =
            rocksdb::DB::Open(db_options_, dir_, descriptors_, &handles_, &db_);
      }
      // Busy only when another process holds the lock (EAGAIN from fcntl,
      // or this process itself): a LOCK file that cannot be opened
      // ("Permission denied", a read-only file system) is not "in use".
      const std::string why = s_.ToString();
      bool locked =
          s_.IsIOError() &&
          (why.find("Resource temporarily") != std::string::npos ||
           why.find("lock hold by current process") != std::string::npos);
      if (!locked || std::chrono::steady_clock::now() >= deadline) {
        if (locked) {
          return LedgerBusy("the ledger " + dir_ +
                            " is in use by another migledger process");
        }
        return Status::Ok();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  // Switches descriptors_ to the format-1 families when the directory has
  // them, keeps the default family alone when that is all there is, and
  // refuses any family it does not know (a newer format).
  Status ChooseLayout() {
    std::vector<std::string> names;
    rocksdb::Status ls =
        rocksdb::DB::ListColumnFamilies(db_options_, dir_, &names);
    // Unlistable: let the open itself report why (permissions...).
    if (!ls.ok()) return Status::Ok();
    for (const auto &name : names) {
      if (std::find(std::begin(kCfNames), std::end(kCfNames), name) ==
          std::end(kCfNames)) {
        return Unsupported("ledger " + dir_ +
                           " was written by a newer migledger (unknown "
                           "column family \"" +
                           name + "\"); upgrade migledger");
      }
    }
    if (names.size() == 1) return Status::Ok();  // format 2 after all
    descriptors_.clear();
    for (const char *name : kCfNames)
      descriptors_.emplace_back(name, cf_options_);
    // A format-1 ledger torn while its families were created gets the rest.
    db_options_.create_missing_column_families = !options_.read_only;
    return Status::Ok();
  }

  // What RocksDB's refusal s_ means for the ledger.
  Status OpenError() const {
    // RocksDB refuses a writer that does not open every column family in
    // the directory ("Column families not opened: x"): a newer format. A
    // reader asking for a family the directory lacks gets "Column family
    // not found": not (a complete) ledger.
    if (s_.IsInvalidArgument() &&
        s_.ToString().find("olumn families not opened") != std::string::npos) {
      return Unsupported("ledger " + dir_ +
                         " was written by a newer migledger (unknown column "
                         "families); upgrade migledger");
    }
    if (s_.IsInvalidArgument() &&
        s_.ToString().find("olumn family not found") != std::string::npos) {
      return LedgerCorrupt("ledger " + dir_ +
                           " is missing column families (not a migledger "
                           "ledger?): " +
                           s_.ToString());
    }
    if (s_.IsIOError() &&
        s_.ToString().find("ermission denied") != std::string::npos) {
      return IoError("cannot open ledger " + dir_ + ": permission denied");
    }
    return FromRocks(s_, "cannot open ledger " + dir_);
  }

  const std::string &dir_;
  const LedgerOptions &options_;
  rocksdb::DBOptions db_options_;
  rocksdb::ColumnFamilyOptions cf_options_;
  bool exists_ = false;
  bool create_format_1_ = false;
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors_;
  std::vector<rocksdb::ColumnFamilyHandle *> handles_;
  rocksdb::DB *db_ = nullptr;
  rocksdb::Status s_;
};

}  // namespace
}  // namespace ledger_internal

StatusOr<std::unique_ptr<Ledger>> Ledger::Open(const std::string &dir,
                                               const LedgerOptions &options) {
  return ledger_internal::Opener(dir, options).Open();
}

}  // namespace migledger
