// Drift (`validate`, and the refusals of `apply` and `plan`) and what does
// not verify: an edited mirror row or ledger is exit 6 from every command.
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "applier/conninfo.h"
#include "applier/planner.h"
#include "ledger/ledger.h"
#include "tests/cli_scenario.h"
#include "tests/test_util.h"

namespace migledger::testing {
namespace {

namespace fs = std::filesystem;

// ---- drift ----------------------------------------------------------------

TEST_P(CoreScenarioTest, DeletedMarkerIsDriftAndNothingRuns) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  Migration("0003_c.up.sql", "CREATE TABLE c (id INTEGER);\n");
  ASSERT_EQ(target_->Exec("DELETE FROM " + target_->marker_table() +
                          " WHERE version = '0002';"),
            "");

  RunResult r = Run({"apply"});
  EXPECT_EQ(r.exit_code, 4) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "drift")) << r.err;
  EXPECT_TRUE(Contains(r.err, "0002")) << r.err;
  EXPECT_FALSE(target_->TableExists("c"));
  EXPECT_EQ(target_->Markers(), Rows{"0001"});
  EXPECT_EQ(EventLines("step_started").size(), 2u);  // only the first run's

  RunResult v = Run({"validate"});
  EXPECT_EQ(v.exit_code, 4) << Describe(v);
  EXPECT_TRUE(Contains(v.out, "missing_marker")) << v.out;
  EXPECT_TRUE(Contains(v.err, "drift")) << v.err;
  ExpectLedgerVerifies();
}

TEST_P(CoreScenarioTest, ChangedAppliedFileIsChecksumDriftUntilAccepted) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER, extra INTEGER);\n");

  RunResult v = Run({"validate"});
  EXPECT_EQ(v.exit_code, 4) << Describe(v);
  EXPECT_TRUE(Contains(v.out, "checksum")) << v.out;
  EXPECT_TRUE(Contains(v.out, "0001_a.up.sql")) << v.out;
  ExpectOneErrorLine(v);

  RunResult apply = Run({"apply"});
  EXPECT_EQ(apply.exit_code, 4) << Describe(apply);
  EXPECT_TRUE(Contains(apply.err, "accept-checksum")) << apply.err;

  RunResult accept =
      Run({"accept-checksum", "--version", "0001", "--reason", "r"});
  ASSERT_EQ(accept.exit_code, 0) << Describe(accept);
  EXPECT_EQ(EventLines("checksum_accepted").size(), 1u);
  RunResult ok = Run({"validate"});
  EXPECT_EQ(ok.exit_code, 0) << Describe(ok);
  EXPECT_TRUE(Contains(ok.out, "ok")) << ok.out;
  RunResult again = Run({"apply"});
  EXPECT_EQ(again.exit_code, 0) << Describe(again);
  EXPECT_EQ(again.out, "nothing to apply\n");
  ExpectLedgerVerifies();
}

// plan shows what apply would do: on drift, apply refuses, so plan reports
// the same drift the same way (exit 4) instead of listing the migration.
TEST_P(CoreScenarioTest, PlanReportsTheDriftApplyRefusesOn) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  Migration("0003_c.up.sql", "CREATE TABLE c (id INTEGER);\n");
  ASSERT_EQ(target_->Exec("DELETE FROM " + target_->marker_table() +
                          " WHERE version = '0002';"),
            "");
  RunResult plan = Run({"plan"});
  EXPECT_EQ(plan.exit_code, 4) << Describe(plan);
  ExpectOneErrorLine(plan);
  EXPECT_FALSE(Contains(plan.out, "0003")) << plan.out;
  RunResult sql = Run({"plan", "--sql"});
  EXPECT_EQ(sql.exit_code, 4) << Describe(sql);
  ExpectOneErrorLine(sql);
  RunResult apply = Run({"apply"});
  EXPECT_EQ(apply.exit_code, 4) << Describe(apply);
  EXPECT_EQ(plan.err, apply.err);
  EXPECT_EQ(sql.err, apply.err);
  EXPECT_FALSE(target_->TableExists("c"));
}

// Events record the migration file relative to the project directory (the
// schema's contract), not the runner's absolute path.
TEST_P(CoreScenarioTest, StepEventsRecordTheFileRelativeToTheProject) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  Migration("0002_b.up.sql", "CREATE TABLEE b (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 3);
  std::vector<std::string> lines = EventLines("step_started");
  std::vector<std::string> failed = EventLines("step_failed");
  lines.insert(lines.end(), failed.begin(), failed.end());
  ASSERT_EQ(lines.size(), 3u);
  for (size_t i = 0; i < lines.size(); ++i) {
    const char* want = i == 0 ? "\"file\":\"migrations/0001_a.up.sql\""
                              : "\"file\":\"migrations/0002_b.up.sql\"";
    EXPECT_TRUE(Contains(lines[i], want)) << lines[i];
    EXPECT_FALSE(Contains(lines[i], "\"file\":\"/")) << lines[i];
  }
}

// A failure belongs to the file that failed: a file deleted and replaced by
// another one with the same version is pending, not failed with the old
// file's error.
TEST_P(CoreScenarioTest, StatusDoesNotShowAReplacedFilesFailure) {
  Migration("0001_a.up.sql", "CREATE TABLEE a (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 3);
  RunResult failed = Run({"status"});
  ASSERT_EQ(failed.exit_code, 0) << Describe(failed);
  EXPECT_TRUE(Contains(failed.out, "failed")) << failed.out;
  fs::remove(dir_ / "migrations/0001_a.up.sql");
  Migration("0001_other.up.sql", "CREATE TABLE other (id INTEGER);\n");
  RunResult status = Run({"status"});
  ASSERT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_FALSE(Contains(status.out, "failed")) << status.out;
  EXPECT_FALSE(Contains(status.out, "TABLEE")) << status.out;
  EXPECT_TRUE(Contains(status.out, "0 applied, 1 pending")) << status.out;
  // The same file failing again is shown again.
  Migration("0001_other.up.sql", "CREATE TABLEE other (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 3);
  EXPECT_TRUE(Contains(Run({"status"}).out, "failed"));
}

// ---- what does not verify: exit 6 from every command ----------------------

// The ledger directory as RocksDB sees it (format 2: one column family, keys
// led by the table's tag byte; ledger/FORMAT.md), for edits no migledger
// command would make: what `ldb put` or any program with RocksDB can do.
class RawLedgerEdit {
 public:
  explicit RawLedgerEdit(const std::string& dir) {
    rocksdb::Options o;
    rocksdb::Status s = rocksdb::DB::Open(o, dir, &db_);
    if (!s.ok()) ADD_FAILURE() << "open " << dir << ": " << s.ToString();
  }
  ~RawLedgerEdit() { delete db_; }
  std::string Get(char tag, const std::string& key) {
    std::string v;
    if (db_ == nullptr) return v;
    rocksdb::Status s = db_->Get({}, std::string(1, tag) + key, &v);
    if (!s.ok()) ADD_FAILURE() << "get: " << s.ToString();
    return v;
  }
  void Put(char tag, const std::string& key, const std::string& value) {
    if (db_ == nullptr) return;
    rocksdb::WriteOptions wo;
    wo.sync = true;
    rocksdb::Status s = db_->Put(wo, std::string(1, tag) + key, value);
    if (!s.ok()) ADD_FAILURE() << "put: " << s.ToString();
  }

 private:
  rocksdb::DB* db_ = nullptr;
};

std::string Be64Key(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) s[i] = static_cast<char>(v & 0xff);
  return s;
}

// The one target key of a project's ledger.
std::string OnlyTargetKey(const std::string& ledger_dir) {
  LedgerOptions ro;
  ro.read_only = true;
  auto ledger = Ledger::Open(ledger_dir, ro);
  if (!ledger.ok() || (*ledger)->TargetKeys().size() != 1) return "";
  return (*ledger)->TargetKeys()[0];
}

// One meaning for exit codes 4 and 6 in `--help` and in the README's table.
TEST(CliExitCodesTest, HelpAndReadmeGiveOneMeaningToDriftAndNotVerifying) {
  TempDir dir;
  RunResult help = RunMigledger({"--help"}, dir.path());
  ASSERT_EQ(help.exit_code, 0) << Describe(help);
  const std::string flat = [&] {
    std::string s = help.out;
    std::replace(s.begin(), s.end(), '\n', ' ');
    return s;
  }();
  EXPECT_TRUE(Contains(flat,
                       "4 drift (the target disagrees with a history "
                       "that verifies)"))
      << help.out;
  EXPECT_TRUE(Contains(flat,
                       "6 does not verify (the ledger, the target's "
                       "event mirror or a digest)"))
      << help.out;
  const std::string readme = ReadFile(MIGLEDGER_SOURCE_DIR "/README.md");
  EXPECT_TRUE(Contains(readme,
                       "| 4 | drift: the target disagrees with a history that "
                       "verifies"));
  EXPECT_TRUE(Contains(readme,
                       "| 6 | does not verify: the local ledger (an event, "
                       "index entry, chain head or projection snapshot "
                       "edited), the target's event mirror"));
}

// An edited row of the target's event mirror is the same answer from every
// command that reads it: exit 6 (it does not verify; drift, 4, is a target
// that disagrees with a history that does), one error line, nothing run.
TEST_P(CoreScenarioTest, EditedMirrorRowIsExit6FromEveryCommandThatReadsIt) {
  ThreeMigrations();
  ASSERT_EQ(Run({"apply", "--to", "0002"}).exit_code, 0);
  const std::string table =
      target_->is_pg() ? "migledger.events" : "migledger_events";
  // One byte of the StepApplied of 0001 (target sequence 3); its stored
  // hashes are left as they were.
  const std::string edited =
      target_->is_pg()
          ? "overlay(event_bytes placing '\\x58'::bytea from 20 for 1)"
          : "CAST(substr(event_bytes, 1, 19) || X'58' || "
            "substr(event_bytes, 21) AS BLOB)";
  ASSERT_EQ(target_->Exec("UPDATE " + table + " SET event_bytes = " + edited +
                          " WHERE target_sequence = 3;"),
            "");
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"validate"},
                                             {"apply"},
                                             {"down", "--steps", "1"},
                                             {"recover"},
                                             {"validate"}}) {
    RunResult r = Run(args);
    EXPECT_EQ(r.exit_code, 6) << args[0] << "\n" << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "target sequence 3 was edited")) << r.err;
  }
  EXPECT_FALSE(target_->TableExists("c"));
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002"}));
  ExpectLedgerVerifies();  // the local ledger is intact
}

// An event, an index entry or a chain head edited in the local ledger
// (with `ldb` or any program using RocksDB) is exit 6 before a command
// decides anything from it or touches the target; put back, all is well.
TEST_P(CoreScenarioTest, EditedLedgerIsExit6BeforeTheTargetIsTouched) {
  ThreeMigrations();
  ASSERT_EQ(Run({"apply", "--to", "0002"}).exit_code, 0);
  // A no-op apply: the verified mark is at the head, so what follows is
  // found by the checks past it, not by a first full verification.
  ASSERT_EQ(Run({"apply", "--to", "0002"}).exit_code, 0);
  const std::string ledger_dir = dir_ / ".migledger";
  const std::string key = OnlyTargetKey(ledger_dir);
  ASSERT_FALSE(key.empty());
  struct Edit {
    const char* what;
    char tag;
    std::string key;
    size_t byte;  // flipped
  };
  const std::vector<Edit> edits = {
      {"an event's bytes", 'e', Be64Key(3), 20},
      {"a target index entry's leaf", 't', key + '\0' + Be64Key(2), 50},
      {"the target's chain head", 'n', key, 12},
      {"the ledger's chain head", 'm', "head", 12},
  };
  for (const Edit& e : edits) {
    SCOPED_TRACE(e.what);
    std::string original;
    {
      RawLedgerEdit raw(ledger_dir);
      original = raw.Get(e.tag, e.key);
      ASSERT_GT(original.size(), e.byte);
      std::string forged = original;
      forged[e.byte] ^= 0x01;
      raw.Put(e.tag, e.key, forged);
    }
    for (const std::vector<std::string>& args :
         std::vector<std::vector<std::string>>{{"validate"},
                                               {"status"},
                                               {"apply"},
                                               {"down", "--steps", "1"},
                                               {"recover"}}) {
      RunResult r = Run(args);
      EXPECT_EQ(r.exit_code, 6) << args[0] << "\n" << Describe(r);
      ExpectOneErrorLine(r);
      EXPECT_TRUE(Contains(r.err, "ledger")) << r.err;
    }
    EXPECT_FALSE(target_->TableExists("c"));
    EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002"}));
    RawLedgerEdit(ledger_dir).Put(e.tag, e.key, original);
    RunResult ok = Run({"validate"});
    EXPECT_EQ(ok.exit_code, 0) << Describe(ok);
  }
  RunResult apply = Run({"apply"});
  EXPECT_EQ(apply.exit_code, 0) << Describe(apply);
  EXPECT_TRUE(target_->TableExists("c"));
  ExpectLedgerVerifies();
}

}  // namespace
}  // namespace migledger::testing
