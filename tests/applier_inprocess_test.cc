// The applier in process, through its public header (applier/applier.h), on
// real SQLite files in a temporary directory: no binary in between and no
// mocks, so the reconciler's and the no-transaction step's edge cases run in
// milliseconds. Results are read from RunReport and the target's tables.
//
// A crash needs a process to kill: the crash cases start this test binary
// again (`--apply-in-child DIR`, see main) with MIGLEDGER_CRASH_AT set, so
// the applier dies at that named point in a fresh process (crash points read
// the variable once per process), and the test then opens the same files
// here and lets Recover and Apply finish the job.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "applier/applier.h"
#include "applier/config.h"
#include "common/crash_points.h"
#include "tests/test_util.h"

namespace migledger::testing {
namespace {

using Rows = std::vector<std::string>;

// Opens the project in `dir` for writing, as `apply` does.
std::unique_ptr<Applier> OpenForWrite(const std::string& dir) {
  bool found = false;
  StatusOr<ProjectConfig> config = LoadProjectConfig(dir, &found);
  EXPECT_TRUE(config.ok()) << config.status().message();
  if (!config.ok()) return nullptr;
  ApplierOptions options;
  options.config = std::move(config).value();
  options.command_line = "applier_inprocess_test";
  options.lock_timeout = std::chrono::milliseconds(2000);
  StatusOr<std::unique_ptr<Applier>> applier =
      Applier::Open(std::move(options), AccessMode::kWrite);
  EXPECT_TRUE(applier.ok()) << applier.status().message();
  return applier.ok() ? std::move(applier).value() : nullptr;
}

// "version outcome" of each step of a report, in order.
Rows Steps(const RunReport& report) {
  Rows out;
  for (const StepReport& s : report.steps)
    out.push_back(s.version + " " + s.outcome);
  return out;
}

class ApplierInProcessTest : public ::testing::Test {
 protected:
  void SetUp() override { MakeProject(dir_.path()); }

  void Migration(const std::string& file, const std::string& sql) {
    WriteFile(dir_ / ("migrations/" + file), sql);
  }
  // 0001_a, 0002_b, 0003_c: each creates its table and inserts one row.
  void ThreeMigrations() {
    for (const std::string& name : {"0001_a", "0002_b", "0003_c"}) {
      const std::string t = name.substr(5);
      Migration(name + ".up.sql", "CREATE TABLE " + t + " (id INTEGER);\n" +
                                      "INSERT INTO " + t + " VALUES (1);\n");
      Migration(name + ".down.sql", "DROP TABLE " + t + ";\n");
    }
  }
  // Opens, applies everything pending, closes.
  RunReport ApplyAll() {
    std::unique_ptr<Applier> applier = OpenForWrite(dir_.path());
    if (!applier) return {};
    StatusOr<RunReport> report = applier->Apply("");
    EXPECT_TRUE(report.ok()) << report.status().message();
    return report.ok() ? std::move(report).value() : RunReport{};
  }
  RunReport RecoverOnly() {
    std::unique_ptr<Applier> applier = OpenForWrite(dir_.path());
    if (!applier) return {};
    StatusOr<RunReport> report = applier->Recover();
    EXPECT_TRUE(report.ok()) << report.status().message();
    return report.ok() ? std::move(report).value() : RunReport{};
  }
  Rows Query(const std::string& sql) {
    return SqliteQuery(dir_ / "app.db", sql);
  }
  Rows Markers() {
    return Query("SELECT version FROM migledger_applied ORDER BY version");
  }
  bool TableExists(const std::string& t) {
    return Query(
               "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
               "AND name = '" +
               t + "'") == Rows{"1"};
  }
  // Runs `apply` in a fresh process of this binary that dies at `crash_at`
  // (MIGLEDGER_CRASH_AT syntax); true when it was killed there.
  bool ApplyKilledAt(const std::string& crash_at) {
    pid_t pid = fork();
    if (pid == 0) {
      setenv("MIGLEDGER_CRASH_AT", crash_at.c_str(), 1);
      execl("/proc/self/exe", "/proc/self/exe", "--apply-in-child",
            dir_.path().c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    int status = 0;
    if (pid < 0 || !WaitForExit(pid, 60, &status)) return false;
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the run was not killed at " << crash_at << " (wait status "
        << status << ")";
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  }

  TempDir dir_;
};

TEST_F(ApplierInProcessTest, ApplyRunsEveryPendingStepInOrder) {
  ThreeMigrations();
  RunReport report = ApplyAll();
  EXPECT_TRUE(report.failure.ok()) << report.failure.message();
  EXPECT_FALSE(report.run_id.empty());
  EXPECT_EQ(Steps(report),
            (Rows{"0001 applied", "0002 applied", "0003 applied"}));
  EXPECT_EQ(Markers(), (Rows{"0001", "0002", "0003"}));
  EXPECT_EQ(Query("SELECT count(*) FROM c"), Rows{"1"});

  // Nothing pending: the next run has no step.
  EXPECT_EQ(Steps(ApplyAll()), Rows{});
}

TEST_F(ApplierInProcessTest, FailedStepIsReportedLastAndEarlierStepsStay) {
  ThreeMigrations();
  Migration("0002_b.up.sql",
            "CREATE TABLE b (id INTEGER);\nINSERT INTO missing VALUES (1);\n");
  RunReport report = ApplyAll();
  EXPECT_FALSE(report.failure.ok());
  EXPECT_TRUE(Contains(report.failure.message(), "0002"))
      << report.failure.message();
  EXPECT_TRUE(Contains(report.failure.message(), "missing"))
      << report.failure.message();
  EXPECT_EQ(Steps(report), (Rows{"0001 applied", "0002 failed"}));
  // The failed step rolled back as a whole; 0003 never started.
  EXPECT_EQ(Markers(), Rows{"0001"});
  EXPECT_FALSE(TableExists("b"));
  EXPECT_FALSE(TableExists("c"));

  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  EXPECT_EQ(Steps(ApplyAll()), (Rows{"0002 applied", "0003 applied"}));
  EXPECT_EQ(Markers(), (Rows{"0001", "0002", "0003"}));
}

TEST_F(ApplierInProcessTest, NoTransactionStepResumesAtTheFailedStatement) {
  Migration("0001_nt.up.sql",
            "-- migledger:no-transaction\n"
            "CREATE TABLE n1 (id INTEGER);\n"
            "INSERT INTO n1 VALUES (1);\n"
            "INSERT INTO nope VALUES (1);\n"
            "CREATE TABLE n2 (id INTEGER);\n");
  RunReport failed = ApplyAll();
  EXPECT_FALSE(failed.failure.ok());
  EXPECT_EQ(Steps(failed), Rows{"0001 failed"});
  // Statements 1 and 2 ran and stay; no marker row.
  EXPECT_EQ(Query("SELECT count(*) FROM n1"), Rows{"1"});
  EXPECT_FALSE(TableExists("n2"));
  EXPECT_EQ(Markers(), Rows{});

  Migration("0001_nt.up.sql",
            "-- migledger:no-transaction\n"
            "CREATE TABLE n1 (id INTEGER);\n"
            "INSERT INTO n1 VALUES (1);\n"
            "CREATE TABLE nope (id INTEGER);\n"
            "CREATE TABLE n2 (id INTEGER);\n");
  RunReport resumed = ApplyAll();
  EXPECT_TRUE(resumed.failure.ok()) << resumed.failure.message();
  EXPECT_EQ(Steps(resumed), Rows{"0001 applied"});
  // The acknowledged INSERT did not run again.
  EXPECT_EQ(Query("SELECT count(*) FROM n1"), Rows{"1"});
  EXPECT_TRUE(TableExists("n2"));
  EXPECT_EQ(Markers(), Rows{"0001"});
}

TEST_F(ApplierInProcessTest, DownRevertsTheNewestSteps) {
  ThreeMigrations();
  ApplyAll();
  std::unique_ptr<Applier> applier = OpenForWrite(dir_.path());
  ASSERT_NE(applier, nullptr);
  StatusOr<RunReport> down = applier->Down("", 2);
  ASSERT_TRUE(down.ok()) << down.status().message();
  EXPECT_TRUE(down->failure.ok()) << down->failure.message();
  EXPECT_EQ(Steps(*down), (Rows{"0003 reverted", "0002 reverted"}));
  for (const StepReport& s : down->steps)
    EXPECT_EQ(s.direction, v1::DIRECTION_DOWN) << s.version;
  EXPECT_EQ(Markers(), Rows{"0001"});
  EXPECT_FALSE(TableExists("b"));
  EXPECT_TRUE(TableExists("a"));
}

TEST_F(ApplierInProcessTest, MarkerRowsWrittenOfflineAreRecordedOutOfBand) {
  ThreeMigrations();
  std::string script;
  {
    std::unique_ptr<Applier> applier = OpenForWrite(dir_.path());
    ASSERT_NE(applier, nullptr);
    StatusOr<std::string> sql = applier->ExportPlanSql("0002");
    ASSERT_TRUE(sql.ok()) << sql.status().message();
    script = *sql;
  }
  ASSERT_EQ(SqliteExec(dir_ / "app.db", script), "");
  ASSERT_EQ(Markers(), (Rows{"0001", "0002"}));

  RunReport recovered = RecoverOnly();
  EXPECT_EQ(recovered.out_of_band, (Rows{"0001", "0002"}));
  EXPECT_EQ(Steps(recovered), Rows{});
  // Only 0003 runs; 0001 and 0002 are not run again.
  EXPECT_EQ(Steps(ApplyAll()), Rows{"0003 applied"});
  EXPECT_EQ(Query("SELECT count(*) FROM a"), Rows{"1"});
}

TEST_F(ApplierInProcessTest, KilledBeforeCommitIsRecoveredAsRolledBack) {
  if (!CrashPointsEnabled())
    GTEST_SKIP() << "built without MIGLEDGER_CRASH_POINTS";
  ThreeMigrations();
  ASSERT_TRUE(ApplyKilledAt("apply.before_commit:2"));
  EXPECT_EQ(Markers(), Rows{"0001"});
  EXPECT_FALSE(TableExists("b"));

  RunReport recovered = RecoverOnly();
  ASSERT_EQ(recovered.recovered.size(), 1u);
  EXPECT_TRUE(Contains(recovered.recovered[0], "version 0002"))
      << recovered.recovered[0];
  EXPECT_TRUE(Contains(recovered.recovered[0], "never committed"))
      << recovered.recovered[0];
  EXPECT_EQ(Steps(ApplyAll()), (Rows{"0002 applied", "0003 applied"}));
  EXPECT_EQ(Markers(), (Rows{"0001", "0002", "0003"}));
  EXPECT_EQ(Query("SELECT count(*) FROM b"), Rows{"1"});
}

TEST_F(ApplierInProcessTest, KilledAfterCommitIsNotRunAgain) {
  if (!CrashPointsEnabled())
    GTEST_SKIP() << "built without MIGLEDGER_CRASH_POINTS";
  ThreeMigrations();
  ASSERT_TRUE(ApplyKilledAt("apply.after_commit:2"));
  EXPECT_EQ(Markers(), (Rows{"0001", "0002"}));

  // The outcome is in the target's mirror: nothing to roll back or resume.
  RunReport recovered = RecoverOnly();
  for (const std::string& line : recovered.recovered)
    EXPECT_FALSE(Contains(line, "never committed")) << line;
  // 0002's CREATE TABLE would fail if it ran twice.
  RunReport report = ApplyAll();
  EXPECT_TRUE(report.failure.ok()) << report.failure.message();
  EXPECT_EQ(Steps(report), Rows{"0003 applied"});
  EXPECT_EQ(Query("SELECT count(*) FROM b"), Rows{"1"});
}

TEST_F(ApplierInProcessTest, KilledInsideANoTransactionStepResumesAfterIt) {
  if (!CrashPointsEnabled())
    GTEST_SKIP() << "built without MIGLEDGER_CRASH_POINTS";
  ThreeMigrations();
  // Three statements that must each run once: a second CREATE TABLE fails,
  // a second INSERT adds a row.
  Migration("0002_b.up.sql",
            "-- migledger:no-transaction\n"
            "CREATE TABLE b (id INTEGER);\n"
            "INSERT INTO b VALUES (1);\n"
            "INSERT INTO b VALUES (2);\n");
  ASSERT_TRUE(ApplyKilledAt("apply.after_statement_event_no_tx:2"));
  EXPECT_EQ(Markers(), Rows{"0001"});
  EXPECT_EQ(Query("SELECT count(*) FROM b"), Rows{"1"});

  RunReport recovered = RecoverOnly();
  ASSERT_EQ(recovered.recovered.size(), 1u);
  EXPECT_TRUE(Contains(recovered.recovered[0], "version 0002"))
      << recovered.recovered[0];
  EXPECT_TRUE(Contains(recovered.recovered[0], "will resume at statement 3"))
      << recovered.recovered[0];
  EXPECT_EQ(Steps(ApplyAll()), (Rows{"0002 applied", "0003 applied"}));
  EXPECT_EQ(Query("SELECT count(*) FROM b"), Rows{"2"});
  EXPECT_EQ(Markers(), (Rows{"0001", "0002", "0003"}));
}

}  // namespace
}  // namespace migledger::testing

// `--apply-in-child DIR`: open the project in DIR and apply, nothing else
// (the crash cases above start the binary so, to be killed at a crash
// point); exits 0 if no crash point fired.
int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--apply-in-child") == 0) {
    bool found = false;
    auto config = migledger::LoadProjectConfig(argv[2], &found);
    if (!config.ok()) return 2;
    migledger::ApplierOptions options;
    options.config = std::move(config).value();
    options.command_line = "applier_inprocess_test --apply-in-child";
    auto applier = migledger::Applier::Open(std::move(options),
                                            migledger::AccessMode::kWrite);
    if (!applier.ok()) return 3;
    auto report = (*applier)->Apply("");
    return report.ok() ? 0 : 4;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
