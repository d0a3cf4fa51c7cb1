// What the ledger's tests share (ledger/*_test.cc): temporary
// directories, events, opening and appending, template ledgers built once
// per suite, and the ledger's RocksDB opened directly for tampering, the way
// an attacker (or a bad disk) would, on the closed ledger.
#pragma once

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/sha256.h"
#include "common/status.h"
#include "ledger/ledger.h"
#include "migledger/v1/event.pb.h"

namespace migledger {

// A fresh directory from mkdtemp, removed with everything in it at the end.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") +
                       "/migledger-ledger-test-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) != nullptr) path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string Be64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i) {
    s[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return s;
}

inline std::string Raw(const Digest32& d) { return std::string(AsBytes(d)); }

inline bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// An event about target `kind:db_id` ("" db_id: about no target), at
// `micros` since the epoch. With a version it is a step_started event (so it
// is in the version index), else a run_started one.
inline v1::Event MakeEvent(const std::string& kind, const std::string& db_id,
                           const std::string& run_id, int64_t micros,
                           const std::string& version = "") {
  v1::Event e;
  int64_t seconds = micros / 1000000;
  int64_t rest = micros % 1000000;
  if (rest < 0) {
    rest += 1000000;
    seconds -= 1;
  }
  e.mutable_time()->set_seconds(seconds);
  e.mutable_time()->set_nanos(static_cast<int32_t>(rest * 1000));
  e.set_run_id(run_id);
  e.mutable_actor()->set_os_user("tester");
  if (!db_id.empty()) {
    e.mutable_target()->set_kind(kind);
    e.mutable_target()->set_database_id(db_id);
    e.mutable_target()->set_name(db_id + "-name");
  }
  if (version.empty()) {
    e.mutable_run_started()->set_command("apply");
  } else {
    e.mutable_step_started()->set_version(version);
    e.mutable_step_started()->set_slug("step-" + version);
  }
  return e;
}

inline LedgerOptions Writable() {
  LedgerOptions o;
  o.create_if_missing = true;
  return o;
}

inline LedgerOptions ReadOnly() {
  LedgerOptions o;
  o.read_only = true;
  return o;
}

inline std::unique_ptr<Ledger> MustOpen(const std::string& dir,
                                        const LedgerOptions& options) {
  auto l = Ledger::Open(dir, options);
  EXPECT_TRUE(l.ok()) << l.status().ToString();
  if (!l.ok()) return nullptr;
  return std::move(l).value();
}

inline uint64_t MustAppend(Ledger* ledger, v1::Event event,
                           PreparedEvent* prepared = nullptr) {
  auto p = ledger->Prepare(&event);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  if (!p.ok()) return 0;
  auto seq = ledger->Append(*p, /*sync=*/false);
  EXPECT_TRUE(seq.ok()) << seq.status().ToString();
  if (!seq.ok()) return 0;
  if (prepared != nullptr) *prepared = *p;
  return *seq;
}

inline std::vector<LedgerEntry> ScanAll(Ledger* ledger,
                                        const ScanFilter& filter) {
  std::vector<LedgerEntry> out;
  Status s = ledger->Scan(filter, [&](const LedgerEntry& e) {
    out.push_back(e);
    return true;
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

inline std::vector<uint64_t> Sequences(
    const std::vector<LedgerEntry>& entries) {
  std::vector<uint64_t> out;
  for (const auto& e : entries) out.push_back(e.sequence);
  return out;
}

// The tag byte that leads a table's keys in a format-2 ledger (see
// ledger/FORMAT.md); format 1 kept each table in its own column family.
inline char TableTag(const std::string& table) {
  static const std::map<std::string, char> tags = {
      {"events", 'e'},        {"hashes", 'h'},    {"target_index", 't'},
      {"version_index", 'v'}, {"run_index", 'r'}, {"time_index", 'i'},
      {"blobs", 'b'},         {"meta", 'm'},      {"target_heads", 'n'}};
  return tags.at(table);
}

// The ledger's RocksDB opened directly, with every column family; tables are
// named as in ledger/FORMAT.md whichever the format.
class RawDb {
 public:
  explicit RawDb(const std::string& dir) {
    std::vector<std::string> names;
    status_ = rocksdb::DB::ListColumnFamilies({}, dir, &names);
    if (!status_.ok()) return;
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const auto& name : names) {
      descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
    }
    rocksdb::DBOptions options;
    // Tampered keys stay in the WAL, which the next open replays: closing
    // without writing (and syncing) a table keeps the many tampering tests
    // fast.
    options.avoid_flush_during_shutdown = true;
    status_ = rocksdb::DB::Open(options, dir, descriptors, &handles_, &db_);
    for (size_t i = 0; i < handles_.size(); ++i) {
      by_name_[descriptors[i].name] = handles_[i];
    }
  }
  ~RawDb() {
    for (auto* h : handles_) (void)db_->DestroyColumnFamilyHandle(h);
    delete db_;
  }
  const rocksdb::Status& status() const { return status_; }

  std::string Get(const std::string& table, const std::string& key) {
    std::string v;
    rocksdb::Status s = db_->Get({}, Cf(table), Key(table, key), &v);
    EXPECT_TRUE(s.ok()) << table << ": " << s.ToString();
    return v;
  }
  void Put(const std::string& table, const std::string& key,
           const std::string& value) {
    rocksdb::Status s = db_->Put({}, Cf(table), Key(table, key), value);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  void Delete(const std::string& table, const std::string& key) {
    rocksdb::Status s = db_->Delete({}, Cf(table), Key(table, key));
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  uint64_t LatestSequence() { return db_->GetLatestSequenceNumber(); }
  size_t CountKeys(const std::string& table) {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, Cf(table)));
    const std::string prefix = Key(table, "");
    size_t n = 0;
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
         it->Next())
      ++n;
    EXPECT_TRUE(it->status().ok()) << it->status().ToString();
    return n;
  }
  void CreateColumnFamily(const std::string& name) {
    rocksdb::ColumnFamilyHandle* h = nullptr;
    rocksdb::Status s = db_->CreateColumnFamily({}, name, &h);
    ASSERT_TRUE(s.ok()) << s.ToString();
    handles_.push_back(h);
  }
  std::string GetEvent(uint64_t seq) { return Get("events", Be64(seq)); }
  void PutEvent(uint64_t seq, const std::string& bytes) {
    Put("events", Be64(seq), bytes);
  }
  bool Format1() const { return by_name_.count("events") != 0; }

 private:
  rocksdb::Status status_;
  rocksdb::DB* db_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* Cf(const std::string& table) {
    return Format1() ? by_name_.at(table) : by_name_.at("default");
  }
  std::string Key(const std::string& table, const std::string& key) const {
    return Format1() ? key : TableTag(table) + key;
  }
  std::map<std::string, rocksdb::ColumnFamilyHandle*> by_name_;
};

class LedgerTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(tmp_.path().empty()) << "mkdtemp"; }

  std::string Dir(const std::string& name = "ledger") const {
    return tmp_.path() + "/" + name;
  }

  // The suite's templates: an empty ledger, and one with 10 events alternating
  // between sqlite:db-a (odd sequences) and sqlite:db-b (even ones), built once
  // and closed.
  static void SetUpTestSuite() {
    template_dir_ = new TempDir();
    template_bytes_ = new std::vector<std::string>();
    MustOpen(template_dir_->path() + "/empty", Writable());
    auto ledger = MustOpen(template_dir_->path() + "/ledger", Writable());
    if (!ledger) return;
    for (int i = 1; i <= 10; ++i) {
      PreparedEvent p;
      MustAppend(ledger.get(),
                 MakeEvent("sqlite", i % 2 ? "db-a" : "db-b", "run-1",
                           1700000000000000 + i * 1000, std::to_string(i)),
                 &p);
      template_bytes_->push_back(p.bytes);
    }
  }
  static void TearDownTestSuite() {
    delete template_dir_;
    template_dir_ = nullptr;
    delete template_bytes_;
    template_bytes_ = nullptr;
  }

  // Copies the empty template ledger to `dir` and returns `dir`: faster than
  // creating one, for tests that do not care about creation.
  std::string EmptyLedger(const std::string& dir) {
    std::error_code ec;
    std::filesystem::copy(template_dir_->path() + "/empty", dir,
                          std::filesystem::copy_options::recursive, ec);
    EXPECT_FALSE(ec) << ec.message();
    return dir;
  }

  // Copies the template ledger (closed) to `dir` and returns its events'
  // bytes (index 0 = sequence 1). Copying is much faster than building.
  std::vector<std::string> BuildLedger(const std::string& dir) {
    std::error_code ec;
    std::filesystem::copy(template_dir_->path() + "/ledger", dir,
                          std::filesystem::copy_options::recursive, ec);
    EXPECT_FALSE(ec) << ec.message();
    if (ec) return {};
    return *template_bytes_;
  }

  // Reopens a tampered ledger read-only and verifies it.
  VerifyReport VerifyTampered(const std::string& dir) {
    auto ledger = MustOpen(dir, ReadOnly());
    if (!ledger) return VerifyReport{};
    auto report = ledger->Verify();
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    if (!report.ok()) return VerifyReport{};
    return *report;
  }

  TempDir tmp_;
  static inline TempDir* template_dir_ = nullptr;
  static inline std::vector<std::string>* template_bytes_ = nullptr;
};

}  // namespace migledger
