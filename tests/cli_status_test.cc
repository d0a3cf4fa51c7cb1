// `status` (table and --format json), `plan` and its offline script, the
// projection snapshot, and SQLite's journal mode across an apply.
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

// ---- status --format json, plan -------------------------------------------

// A no-op apply after a long history saves the projection in the ledger;
// later commands start from it, but only when it stands on this ledger's
// own target chain.
TEST_P(CoreScenarioTest, ProjectionSnapshotIsUsedOnlyForItsOwnChain) {
  const int n = 140;  // 282 events: enough for a snapshot
  for (int i = 1; i <= n; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "%04d_t%d.up.sql", i, i);
    Migration(name, "CREATE TABLE t" + std::to_string(i) + " (id INTEGER);\n");
  }
  Migration("0140_t140.down.sql", "DROP TABLE t140;\n");
  RunResult apply = Run({"apply", "-q"});
  ASSERT_EQ(apply.exit_code, 0) << Describe(apply);
  const std::string ledger_dir = dir_ / ".migledger";
  auto snapshot_name = [&]() -> std::string {
    LedgerOptions ro;
    ro.read_only = true;
    auto ledger = Ledger::Open(ledger_dir, ro);
    EXPECT_TRUE(ledger.ok()) << ledger.status().ToString();
    if (!ledger.ok() || (*ledger)->TargetKeys().size() != 1) return "";
    return "projection/" + (*ledger)->TargetKeys()[0];
  };
  auto has_snapshot = [&]() {
    LedgerOptions ro;
    ro.read_only = true;
    auto ledger = Ledger::Open(ledger_dir, ro);
    if (!ledger.ok()) return false;
    auto v = (*ledger)->GetDerived(snapshot_name());
    return v.ok() && v->has_value();
  };
  EXPECT_FALSE(has_snapshot());  // the apply replayed nothing long
  RunResult noop = Run({"apply"});
  ASSERT_EQ(noop.exit_code, 0) << Describe(noop);
  EXPECT_TRUE(Contains(noop.out, "nothing to apply")) << noop.out;
  ASSERT_TRUE(has_snapshot()) << "the no-op apply saved no snapshot";

  RunResult status = Run({"status"});
  EXPECT_TRUE(Contains(status.out, "140 applied, 0 pending"))
      << Describe(status);
  RunResult genuine = Run({"validate"});  // the saved snapshot is the replay's
  EXPECT_EQ(genuine.exit_code, 0) << Describe(genuine);
  // Events after the snapshot are replayed on top of it.
  ASSERT_EQ(Run({"down", "--steps", "1"}).exit_code, 0);
  status = Run({"status"});
  EXPECT_TRUE(Contains(status.out, "139 applied, 1 pending"))
      << Describe(status);

  // Overwrites the snapshot with an empty projection at the ledger's head,
  // on its real chain or on another one.
  auto plant = [&](bool real_chain) {
    auto ledger = Ledger::Open(ledger_dir, LedgerOptions{});
    ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
    const std::string key = (*ledger)->TargetKeys()[0];
    const ChainHead head = (*ledger)->TargetHead(key);
    SnapshotPoint at{
        key, head.size,
        real_chain ? std::string(AsBytes(head.chain)) : std::string(32, 'x')};
    ASSERT_TRUE(
        (*ledger)
            ->PutDerived("projection/" + key, SnapshotOf(Projection{}, at))
            .ok());
  };
  // On this chain it is believed (so it is what status reads): the ledger
  // then seems to know none of the 139 markers.
  plant(true);
  status = Run({"status"});
  EXPECT_TRUE(Contains(status.out, "not in ledger")) << Describe(status);
  EXPECT_TRUE(Contains(status.out,
                       "drift: the target has a marker row for "
                       "version 0139"))
      << Describe(status);
  // validate and every command that changes the target replay the whole
  // history and find the snapshot forged: nothing runs.
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"validate"}, {"apply"}}) {
    RunResult r = Run(args);
    EXPECT_EQ(r.exit_code, 6) << args[0] << "\n" << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "projection snapshot")) << r.err;
  }
  EXPECT_FALSE(target_->TableExists("t140"));
  // On another chain it is ignored and the history replayed.
  plant(false);
  status = Run({"status"});
  EXPECT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_TRUE(Contains(status.out, "139 applied, 1 pending"))
      << Describe(status);
  EXPECT_FALSE(Contains(status.out, "not in ledger")) << Describe(status);
  EXPECT_FALSE(Contains(status.out, "drift")) << Describe(status);

  // A second target of the same ledger: the first target's snapshot must
  // not be taken for this one's.
  const std::string other = "sqlite:" + (dir_ / "other.db");
  ASSERT_EQ(Run({"apply", "-q", "--target", other, "--to", "0005"}).exit_code,
            0);
  status = Run({"status", "--target", other});
  EXPECT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_TRUE(Contains(status.out, "5 applied, 135 pending"))
      << Describe(status);
  EXPECT_FALSE(Contains(status.out, "not in ledger")) << Describe(status);
  EXPECT_FALSE(Contains(status.out, "drift")) << Describe(status);
  ExpectLedgerVerifies();
}

// An apply of 2048 steps or more replays its own events at its end, so the
// first `status` after it starts from a snapshot.
// The apply's own connection keeps the rollback journal between its
// transactions (journal_mode=PERSIST, applier/sqlite_driver.cc) and goes
// back to the default at the end: no journal file left, nothing about the
// database changed for its other users.
void WriteThreeTables(const TempDir& dir) {
  for (int i = 1; i <= 3; ++i) {
    WriteFile(dir / ("migrations/000" + std::to_string(i) + "_t" +
                     std::to_string(i) + ".up.sql"),
              "CREATE TABLE t" + std::to_string(i) + " (id INTEGER);\n");
  }
}

// Applies the project, then checks the journal mode a new connection to
// its database gets, and the number of marker rows.
void ApplyThenExpect(const TempDir& dir, const char* mode,
                     const char* markers) {
  RunResult apply = RunMigledger({"apply", "-q"}, dir.path());
  ASSERT_EQ(apply.exit_code, 0) << Describe(apply);
  EXPECT_EQ(SqliteQuery(dir / "app.db", "PRAGMA journal_mode"),
            std::vector<std::string>{mode});
  EXPECT_EQ(
      SqliteQuery(dir / "app.db", "SELECT count(*) FROM migledger_applied"),
      std::vector<std::string>{markers});
}

TEST(CliSqliteJournalTest, ApplyLeavesTheDefaultJournalModeAndNoJournal) {
  TempDir dir;
  MakeProject(dir.path());
  WriteThreeTables(dir);
  ApplyThenExpect(dir, "delete", "3");
  EXPECT_FALSE(fs::exists(dir / "app.db-journal"));
}

TEST(CliSqliteJournalTest, KilledBetweenStepsLeavesAnInactiveJournal) {
  TempDir dir;
  MakeProject(dir.path());
  WriteThreeTables(dir);
  // Killed after the first step's commit: the kept journal is still there,
  // its header zeroed, so nothing is rolled back.
  RunResult killed =
      RunMigledger({"apply", "-q"}, dir.path(),
                   {{"MIGLEDGER_CRASH_AT", "apply.after_outcome:1"}});
  ASSERT_EQ(killed.signal, SIGKILL) << Describe(killed);
  EXPECT_TRUE(fs::exists(dir / "app.db-journal"));
  EXPECT_EQ(
      SqliteQuery(dir / "app.db", "SELECT version FROM migledger_applied"),
      std::vector<std::string>{"0001"});
  ApplyThenExpect(dir, "delete", "3");
  EXPECT_FALSE(fs::exists(dir / "app.db-journal"));
  RunResult verify = RunMigledger({"audit", "verify"}, dir.path());
  EXPECT_EQ(verify.exit_code, 0) << Describe(verify);
}

TEST(CliSqliteJournalTest, WalDatabaseStaysInWal) {
  TempDir dir;
  MakeProject(dir.path());
  WriteThreeTables(dir);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir / "app.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(db, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(db);
  ApplyThenExpect(dir, "wal", "3");
}

TEST(CliSqliteJournalTest, AMigrationsOwnJournalModeIsKept) {
  TempDir dir;
  MakeProject(dir.path());
  WriteThreeTables(dir);
  WriteFile(dir / "migrations/0004_wal.up.sql",
            "-- migledger:no-transaction\nPRAGMA journal_mode=WAL;\n");
  ApplyThenExpect(dir, "wal", "4");
}

// An applied migration whose file was deleted: status still lists it (from
// its marker row) and names the drift.
TEST(CliStatusTest, AppliedMigrationWithoutItsFileIsListedAsMissing) {
  TempDir dir;
  MakeProject(dir.path());
  WriteThreeTables(dir);
  RunResult apply = RunMigledger({"apply", "-q"}, dir.path());
  ASSERT_EQ(apply.exit_code, 0) << Describe(apply);
  fs::remove(dir / "migrations/0002_t2.up.sql");
  RunResult status = RunMigledger({"status"}, dir.path());
  bool listed = false;
  for (const std::string& line : Lines(status.out)) {
    if (line.rfind("0002", 0) == 0) listed = Contains(line, "missing file");
  }
  EXPECT_TRUE(listed) << Describe(status);
  EXPECT_TRUE(Contains(status.out, "2 applied, 0 pending")) << Describe(status);
  RunResult validate = RunMigledger({"validate"}, dir.path());
  EXPECT_TRUE(Contains(validate.out, "missing_file")) << Describe(validate);
}

TEST(CliSnapshotTest, LongApplyLeavesAProjectionSnapshot) {
  TempDir dir;
  MakeProject(dir.path());
  for (int i = 1; i <= 2048; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "%04d_t%d.up.sql", i, i);
    WriteFile(dir / ("migrations/" + std::string(name)),
              "CREATE TABLE t" + std::to_string(i) + " (id INTEGER);\n");
  }
  RunResult apply = RunMigledger({"apply", "-q"}, dir.path());
  ASSERT_EQ(apply.exit_code, 0) << Describe(apply);
  LedgerOptions ro;
  ro.read_only = true;
  auto ledger = Ledger::Open(dir / ".migledger", ro);
  ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
  ASSERT_EQ((*ledger)->TargetKeys().size(), 1u);
  const std::string key = (*ledger)->TargetKeys()[0];
  auto snapshot = (*ledger)->GetDerived("projection/" + key);
  ASSERT_TRUE(snapshot.ok()) << snapshot.status().ToString();
  ASSERT_TRUE(snapshot->has_value()) << "the long apply left no snapshot";
  SnapshotPoint at;
  auto restored = ProjectionBuilder::Restore(**snapshot, &at);
  ASSERT_TRUE(restored.has_value());
  EXPECT_EQ(at.target_key, key);
  // Saved after the run's last event, its RunFinished.
  EXPECT_EQ(at.target_size, (*ledger)->TargetHead(key).size);
  EXPECT_EQ(restored->projection().versions.size(), 2048u);
  ledger->reset();
  RunResult status = RunMigledger({"status"}, dir.path());
  EXPECT_TRUE(Contains(status.out, "2048 applied, 0 pending"))
      << Describe(status);
}

TEST_P(CoreScenarioTest, StatusJsonListsStates) {
  ThreeMigrations();
  ASSERT_EQ(Run({"apply", "--to", "0001"}).exit_code, 0);
  RunResult r = Run({"status", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  ASSERT_FALSE(r.out.empty());
  EXPECT_EQ(r.out.back(), '\n');
  std::string json = r.out.substr(0, r.out.size() - 1);
  EXPECT_TRUE(LooksLikeJsonObject(json)) << json;
  EXPECT_EQ(Lines(r.out).size(), 1u) << r.out;
  EXPECT_TRUE(Contains(
      json, "{\"version\":\"0001\",\"slug\":\"a\",\"state\":\"applied\""))
      << json;
  EXPECT_TRUE(Contains(
      json, "{\"version\":\"0002\",\"slug\":\"b\",\"state\":\"pending\""))
      << json;
  EXPECT_TRUE(Contains(
      json, "{\"version\":\"0003\",\"slug\":\"c\",\"state\":\"pending\""))
      << json;
  EXPECT_TRUE(Contains(json, "\"drift\":[]")) << json;
  EXPECT_TRUE(Contains(json, "\"unfinished_steps\":0")) << json;
  EXPECT_FALSE(Contains(json, "\"database_id\":\"\"")) << json;
}

TEST_P(CoreScenarioTest, PlanListsPendingWithoutRunningThem) {
  ThreeMigrations();
  ASSERT_EQ(Run({"apply", "--to", "0001"}).exit_code, 0);
  RunResult r = Run({"plan"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(Contains(r.out, "2 migration(s) to apply")) << r.out;
  EXPECT_TRUE(Contains(r.out, "0002")) << r.out;
  EXPECT_TRUE(Contains(r.out, "0003")) << r.out;
  EXPECT_FALSE(Contains(r.out, "0001 ")) << r.out;
  EXPECT_FALSE(target_->TableExists("b"));
  EXPECT_EQ(target_->Markers(), Rows{"0001"});

  RunResult to = Run({"plan", "--to", "0002"});
  EXPECT_EQ(to.exit_code, 0) << Describe(to);
  EXPECT_TRUE(Contains(to.out, "1 migration(s) to apply")) << to.out;

  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  RunResult none = Run({"plan"});
  EXPECT_EQ(none.exit_code, 0) << Describe(none);
  EXPECT_EQ(none.out, "nothing to apply\n");
}

TEST_P(CoreScenarioTest, OfflinePlanScriptIsRecordedAsOutOfBand) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  RunResult plan = Run({"plan", "--sql"});
  ASSERT_EQ(plan.exit_code, 0) << Describe(plan);
  const std::string& script = plan.out;
  EXPECT_EQ(CountOf(script, "BEGIN;\n"), 2u) << script;
  EXPECT_EQ(CountOf(script, "COMMIT;\n"), 2u) << script;
  EXPECT_EQ(CountOf(script, "INSERT INTO " + target_->marker_table()), 2u)
      << script;
  EXPECT_TRUE(Contains(script, "VALUES ('0001', ")) << script;
  EXPECT_TRUE(Contains(script, "VALUES ('0002', ")) << script;
  EXPECT_LT(script.find("CREATE TABLE a"), script.find("CREATE TABLE b"));
  EXPECT_EQ(EventLines("plan_exported").size(), 1u);
  // Printing the plan ran nothing.
  EXPECT_FALSE(target_->TableExists("a"));

  WriteFile(dir_ / "offline.sql", script);
  ASSERT_EQ(target_->ExecFile(dir_ / "offline.sql"), "");
  EXPECT_TRUE(target_->TableExists("a"));
  EXPECT_TRUE(target_->TableExists("b"));

  RunResult apply = Run({"apply"});
  ASSERT_EQ(apply.exit_code, 0) << Describe(apply);
  EXPECT_TRUE(Contains(apply.out, "out-of-band application of 0001"))
      << apply.out;
  EXPECT_TRUE(Contains(apply.out, "out-of-band application of 0002"))
      << apply.out;
  EXPECT_TRUE(Contains(apply.out, "nothing to apply")) << apply.out;
  EXPECT_EQ(EventLines("applied_out_of_band").size(), 2u);
  EXPECT_EQ(EventLines("step_started"), Rows{});  // nothing ran twice
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002"}));

  RunResult again = Run({"apply"});
  EXPECT_EQ(again.exit_code, 0) << Describe(again);
  EXPECT_EQ(again.out, "nothing to apply\n");
  EXPECT_EQ(EventLines("applied_out_of_band").size(), 2u);
  RunResult validate = Run({"validate"});
  EXPECT_EQ(validate.exit_code, 0) << Describe(validate);
  ExpectLedgerVerifies();
}

// The offline script must stay valid SQL when a file's last statement has
// no terminating semicolon (apply accepts such files).
TEST_P(CoreScenarioTest, OfflinePlanScriptWorksWithoutFinalSemicolon) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER)");
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER)\n");
  RunResult plan = Run({"plan", "--sql"});
  ASSERT_EQ(plan.exit_code, 0) << Describe(plan);
  WriteFile(dir_ / "offline.sql", plan.out);
  ASSERT_EQ(target_->ExecFile(dir_ / "offline.sql"), "") << plan.out;
  EXPECT_TRUE(target_->TableExists("a"));
  EXPECT_TRUE(target_->TableExists("b"));
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002"}));

  RunResult apply = Run({"apply"});
  EXPECT_EQ(apply.exit_code, 0) << Describe(apply);
  EXPECT_EQ(EventLines("applied_out_of_band").size(), 2u);
  EXPECT_EQ(EventLines("step_started"), Rows{});
  ExpectLedgerVerifies();
}

}  // namespace
}  // namespace migledger::testing
