// Opening the ledger: locking, creation, formats 1 and 2, and directories
// that are not (yet) ledgers.
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/sha256.h"
#include "common/status.h"
#include "ledger/ledger.h"
#include "ledger/ledger_test_util.h"
#include "ledger/merkle.h"
#include "migledger/v1/event.pb.h"

namespace migledger {
namespace {

namespace fs = std::filesystem;

TEST_F(LedgerTest, ReadOnlyOpenWorksWhileAWriterHoldsTheLedger) {
  auto writer = MustOpen(EmptyLedger(Dir()), Writable());
  ASSERT_TRUE(writer);
  for (int i = 1; i <= 3; ++i) {
    MustAppend(writer.get(), MakeEvent("sqlite", "db-a", "run-1", i, "1"));
  }
  ASSERT_TRUE(writer->Sync().ok());
  auto reader = MustOpen(Dir(), ReadOnly());
  ASSERT_TRUE(reader);
  EXPECT_TRUE(reader->read_only());
  EXPECT_EQ(reader->ledger_id(), writer->ledger_id());
  EXPECT_EQ(reader->Head().size, 3u);
  EXPECT_EQ(reader->Head().chain, writer->Head().chain);
  auto report = reader->Verify();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->ok()) << report->problem;
  // A reader cannot write.
  v1::Event e = MakeEvent("sqlite", "db-a", "run-1", 9);
  auto p = reader->Prepare(&e);
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(reader->Append(*p, false).ok());
  EXPECT_FALSE(reader->PutBlob("select 1;").ok());
  EXPECT_EQ(reader->Head().size, 3u);
  // The writer keeps writing while the reader is open.
  EXPECT_EQ(MustAppend(writer.get(), MakeEvent("sqlite", "db-a", "run-1", 4)),
            4u);
}

TEST_F(LedgerTest, SecondWriterIsBusyAfterLockTimeout) {
  auto writer = MustOpen(EmptyLedger(Dir()), Writable());
  ASSERT_TRUE(writer);
  LedgerOptions second = Writable();
  second.lock_timeout = std::chrono::milliseconds(100);
  auto start = std::chrono::steady_clock::now();
  auto busy = Ledger::Open(Dir(), second);
  auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.status().code(), Code::kLedgerBusy)
      << busy.status().ToString();
  EXPECT_GE(waited, std::chrono::milliseconds(100));
  EXPECT_LT(waited, std::chrono::seconds(2));

  // Without a timeout it does not wait.
  auto busy_now = Ledger::Open(Dir(), Writable());
  ASSERT_FALSE(busy_now.ok());
  EXPECT_EQ(busy_now.status().code(), Code::kLedgerBusy);

  // Once the first writer is gone the ledger opens again.
  writer.reset();
  auto again = MustOpen(Dir(), second);
  EXPECT_TRUE(again);
}

TEST_F(LedgerTest, NewerFormatIsUnsupported) {
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    EXPECT_EQ(raw.Get("meta", "format"), "2");
    raw.Put("meta", "format", "99");
  }
  for (const LedgerOptions& options : {ReadOnly(), Writable()}) {
    auto ledger = Ledger::Open(Dir(), options);
    ASSERT_FALSE(ledger.ok());
    EXPECT_EQ(ledger.status().code(), Code::kUnsupported)
        << ledger.status().ToString();
  }
}

// Format 1 (one column family per table) is what earlier builds wrote: such a
// ledger opens for reading and writing, verifies, scans by every index, and
// stays format 1 when extended. A new ledger is format 2: one column family.
TEST_F(LedgerTest, FormatOneLedgersStillOpenVerifyAndExtend) {
  auto count_matches = [](Ledger* ledger, const ScanFilter& f) {
    size_t n = 0;
    Status s = ledger->Scan(f, [&](const LedgerEntry&) {
      ++n;
      return true;
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return n;
  };
  // Opens the ledger, checks its size on both chains, verifies it and counts
  // the events of `run`.
  auto check = [&](const LedgerOptions& options, uint64_t size,
                   const std::string& run, size_t in_run) {
    auto ledger = MustOpen(Dir(), options);
    EXPECT_TRUE(ledger);
    if (!ledger) return ledger;
    EXPECT_EQ(ledger->Head().size, size);
    EXPECT_EQ(ledger->TargetHead("sqlite:db-a").size, size);
    auto report = ledger->Verify();
    EXPECT_TRUE(report.ok() && report->ok())
        << (report.ok() ? report->problem : report.status().ToString());
    ScanFilter by_run;
    by_run.run_id = run;
    EXPECT_EQ(count_matches(ledger.get(), by_run), in_run);
    return ledger;
  };
  auto append = [](Ledger* ledger, int from, int to) {
    for (int i = from; i < to; ++i) {
      v1::Event e = MakeEvent("sqlite", "db-a", i < 3 ? "run-1" : "run-2",
                              1700000000000000 + i, std::to_string(i + 1));
      auto p = ledger->Prepare(&e);
      ASSERT_TRUE(p.ok()) << p.status().ToString();
      ASSERT_TRUE(ledger->Append(*p, /*sync=*/true).ok());
    }
  };
  std::string blob;
  {
    LedgerOptions legacy = Writable();
    legacy.create_format_1 = true;
    auto ledger = MustOpen(Dir(), legacy);
    ASSERT_TRUE(ledger);
    append(ledger.get(), 0, 5);
    auto key = ledger->PutBlob("CREATE TABLE t (id INTEGER);");
    ASSERT_TRUE(key.ok()) << key.status().ToString();
    blob = *key;
  }
  std::vector<std::string> names;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies({}, Dir(), &names).ok());
  EXPECT_EQ(names.size(), 9u);
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    EXPECT_TRUE(raw.Format1());
    EXPECT_EQ(raw.Get("meta", "format"), "1");
  }
  for (const LedgerOptions& options : {ReadOnly(), Writable()}) {
    auto ledger = check(options, 5, "run-1", 3);
    ASSERT_TRUE(ledger);
    ScanFilter by_version;
    by_version.version = "0004";
    EXPECT_EQ(count_matches(ledger.get(), by_version), 1u);
    ScanFilter by_time;
    by_time.since_micros = 1700000000000001;
    by_time.until_micros = 1700000000000003;
    EXPECT_EQ(count_matches(ledger.get(), by_time), 2u);
    auto got = ledger->GetBlob(blob);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, "CREATE TABLE t (id INTEGER);");
  }
  {
    auto ledger = MustOpen(Dir(), Writable());
    ASSERT_TRUE(ledger);
    append(ledger.get(), 5, 8);
  }
  EXPECT_TRUE(check(ReadOnly(), 8, "run-2", 5));
  RawDb raw(Dir());
  ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
  EXPECT_TRUE(raw.Format1());
  EXPECT_EQ(raw.Get("meta", "format"), "1");
}

// What an older migledger leaves when it opens a format-2 ledger for writing:
// the nine format-1 families, created empty before it refused the ledger.
// The marker in the default family still says where the tables are.
TEST_F(LedgerTest, FormatTwoLedgerPaddedWithEmptyFormatOneFamiliesStillOpens) {
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    for (const char* name :
         {"events", "hashes", "target_index", "version_index", "run_index",
          "time_index", "blobs", "meta"}) {
      raw.CreateColumnFamily(name);
    }
  }
  for (const LedgerOptions& options : {ReadOnly(), Writable()}) {
    auto ledger = MustOpen(Dir(), options);
    ASSERT_TRUE(ledger);
    EXPECT_EQ(ledger->Head().size, 10u);
    auto report = ledger->Verify();
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_TRUE(report->ok()) << report->problem;
  }
  auto ledger = MustOpen(Dir(), Writable());
  ASSERT_TRUE(ledger);
  v1::Event e = MakeEvent("sqlite", "db-a", "run-9", 1700000000000999, "11");
  auto appended = ledger->AppendEvent(&e, /*sync=*/true);
  ASSERT_TRUE(appended.ok()) << appended.status().ToString();
  EXPECT_EQ(ledger->Head().size, 11u);
  auto report = ledger->Verify();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->ok()) << report->problem;
}

TEST_F(LedgerTest, NewLedgerIsFormatTwoInOneColumnFamily) {
  {
    auto ledger = MustOpen(Dir(), Writable());
    ASSERT_TRUE(ledger);
    v1::Event e = MakeEvent("sqlite", "db-a", "run-1", 1700000000000000, "1");
    ASSERT_TRUE(ledger->AppendEvent(&e, /*sync=*/true).ok());
  }
  std::vector<std::string> names;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies({}, Dir(), &names).ok());
  EXPECT_EQ(names, std::vector<std::string>{"default"});
  RawDb raw(Dir());
  ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
  EXPECT_FALSE(raw.Format1());
  EXPECT_EQ(raw.Get("meta", "format"), "2");
  EXPECT_EQ(raw.CountKeys("events"), 1u);
  EXPECT_EQ(raw.CountKeys("hashes"), 1u);
  EXPECT_EQ(raw.CountKeys("time_index"), 1u);
}

TEST_F(LedgerTest, OpenMissingDirectoryWithoutCreateIsNotFound) {
  LedgerOptions options;
  auto ledger = Ledger::Open(Dir("missing"), options);
  ASSERT_FALSE(ledger.ok());
  EXPECT_EQ(ledger.status().code(), Code::kNotFound);
  auto reader = Ledger::Open(Dir("missing"), ReadOnly());
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), Code::kNotFound);
  // Read-only never creates, even when asked to.
  LedgerOptions ro_create = ReadOnly();
  ro_create.create_if_missing = true;
  auto ro = Ledger::Open(Dir("missing"), ro_create);
  ASSERT_FALSE(ro.ok());
  EXPECT_EQ(ro.status().code(), Code::kNotFound);
  EXPECT_FALSE(fs::exists(Dir("missing")));
}

TEST_F(LedgerTest, CreateIfMissingMakesAPrivateDirectory) {
  const std::string dir = Dir("new");
  auto ledger = MustOpen(dir, Writable());
  ASSERT_TRUE(ledger);
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_EQ(ledger->Head().size, 0u);
  const std::string id = ledger->ledger_id();
  ledger.reset();
  // Reopening does not make a new ledger.
  auto again = MustOpen(dir, Writable());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->ledger_id(), id);
}

TEST_F(LedgerTest, NewLedgerIdNamesTheLedgerItCreatesOnly) {
  // A copy of another history (the audit store's) carries that history's id
  // into its digests; an existing ledger keeps its own.
  LedgerOptions named = Writable();
  named.new_ledger_id = "0123456789abcdef0123456789abcdef";
  auto ledger = MustOpen(Dir(), named);
  ASSERT_TRUE(ledger);
  EXPECT_EQ(ledger->ledger_id(), named.new_ledger_id);
  auto digest = ledger->Digest("", 0);
  ASSERT_TRUE(digest.ok()) << digest.status().ToString();
  EXPECT_EQ(digest->ledger_id, named.new_ledger_id);
  ledger.reset();
  named.new_ledger_id = "fedcba9876543210fedcba9876543210";
  auto again = MustOpen(Dir(), named);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->ledger_id(), "0123456789abcdef0123456789abcdef");
  again.reset();
  for (const char* bad : {"0123", "0123456789ABCDEF0123456789ABCDEF",
                          "0123456789abcdef0123456789abcde\n"}) {
    LedgerOptions o = Writable();
    o.new_ledger_id = bad;
    auto refused = Ledger::Open(Dir("other"), o);
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_EQ(refused.status().code(), Code::kInvalidInput) << bad;
  }
}

TEST_F(LedgerTest, RocksDbThatIsNotALedgerIsCorrupt) {
  // A RocksDB database without the ledger's column families or format.
  {
    rocksdb::Options o;
    o.create_if_missing = true;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, Dir("other"), &db).ok());
    delete db;
  }
  for (const LedgerOptions& options : {ReadOnly(), Writable()}) {
    auto ledger = Ledger::Open(Dir("other"), options);
    ASSERT_FALSE(ledger.ok());
    EXPECT_EQ(ledger.status().code(), Code::kLedgerCorrupt)
        << ledger.status().ToString();
    EXPECT_FALSE(Contains(ledger.status().message(), "newer"))
        << ledger.status().ToString();
  }
}

// What a first run killed after RocksDB created the ledger (CURRENT is
// there) and before it wrote the format marker leaves: the creator's
// MIGLEDGER-CREATING file and no row. Nothing was ever recorded, so the next
// writer initializes it (and removes the file); a reader sees no ledger yet.
// The same RocksDB without that file is refused (the test above): a ledger
// whose log was removed looks empty too.
TEST_F(LedgerTest, LedgerKilledBeforeItsFormatMarkerIsInitializedNotRefused) {
  {
    rocksdb::Options o;
    o.create_if_missing = true;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, Dir(), &db).ok());
    delete db;
  }
  ASSERT_TRUE(fs::exists(Dir() + "/CURRENT"));
  std::ofstream(Dir() + "/MIGLEDGER-CREATING").close();
  auto reader = Ledger::Open(Dir(), ReadOnly());
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), Code::kNotFound)
      << reader.status().ToString();
  std::string id;
  {
    auto ledger = MustOpen(Dir(), Writable());
    ASSERT_TRUE(ledger);
    id = ledger->ledger_id();
    EXPECT_EQ(id.size(), 32u);
    v1::Event e = MakeEvent("sqlite", "db-a", "run-1", 1700000000000000, "1");
    ASSERT_TRUE(ledger->AppendEvent(&e, /*sync=*/true).ok());
  }
  EXPECT_FALSE(fs::exists(Dir() + "/MIGLEDGER-CREATING"));
  auto again = MustOpen(Dir(), ReadOnly());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->ledger_id(), id);
  EXPECT_EQ(again->Head().size, 1u);
  auto report = again->Verify();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->ok()) << report->problem;
}

TEST_F(LedgerTest, UnknownColumnFamilyIsUnsupportedForAWriter) {
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    raw.CreateColumnFamily("from_the_future");
  }
  auto ledger = Ledger::Open(Dir(), Writable());
  ASSERT_FALSE(ledger.ok());
  EXPECT_EQ(ledger.status().code(), Code::kUnsupported)
      << ledger.status().ToString();
}

}  // namespace
}  // namespace migledger
