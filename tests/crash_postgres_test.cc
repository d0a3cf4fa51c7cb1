// Crash tests on PostgreSQL only: a runner killed while its CREATE INDEX
// CONCURRENTLY builds, or while the server runs its COMMIT; the next apply
// must cope with what the dead session left running.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/crash_points.h"
#include "tests/crash_harness.h"
#include "tests/test_util.h"

namespace migledger::testing {
namespace {
namespace fs = std::filesystem;

// ---------------------------------------------------------------------------
// A CREATE INDEX CONCURRENTLY killed mid-build (PostgreSQL)
// ---------------------------------------------------------------------------

// The index build calls this function once per row; it sleeps only in
// sessions that set mltest.sleep (the first, killed run), so the rebuild
// after recovery is quick.
constexpr const char* kSlowIndexSetup =
    "CREATE TABLE big (id integer NOT NULL);\n"
    "INSERT INTO big SELECT g FROM generate_series(1, 400) AS g;\n"
    "CREATE FUNCTION slow_key(i integer) RETURNS integer\n"
    "LANGUAGE plpgsql IMMUTABLE AS $fn$\n"
    "BEGIN\n"
    "  PERFORM pg_sleep(coalesce(nullif(current_setting('mltest.sleep', "
    "true), ''), '0')::float8);\n"
    "  RETURN i;\n"
    "END\n"
    "$fn$;\n";

// The session building big_slow_idx, in the build phase; is the index
// valid; how many there are.
constexpr const char* kIndexBuilding =
    "SELECT a.pid FROM pg_stat_activity a JOIN pg_stat_progress_create_index "
    "p ON p.pid = a.pid WHERE a.query LIKE "
    "'CREATE INDEX CONCURRENTLY big_slow_idx%' AND a.state = 'active' "
    "AND p.phase LIKE 'building index%' AND a.datname = current_database()";
constexpr const char* kIndexValidity =
    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c "
    "ON c.oid = i.indexrelid WHERE c.relname = 'big_slow_idx'";
constexpr const char* kIndexCount =
    "SELECT count(*) FROM pg_indexes WHERE indexname = 'big_slow_idx'";

// statement index of the CREATE INDEX CONCURRENTLY in the no-tx migration
class KilledConcurrentIndexTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    if (!PgFromEnv()) GTEST_SKIP() << "PGTEST_URI is not set";
    target_ = TestTarget::Create(TargetKind::kPostgres, dir_.path());
    ASSERT_TRUE(target_);
  }
  // One valid big_slow_idx, both migrations applied once (the plain
  // statements too), one terminal event per attempt; the ledger's story.
  LedgerSummary ExpectIndexBuiltAndStepApplied(int index_statement) {
    EXPECT_EQ(target_->Query(kIndexValidity), std::vector<std::string>{"t"});
    EXPECT_EQ(target_->Query(kIndexCount), std::vector<std::string>{"1"});
    EXPECT_EQ(
        target_->Query("SELECT version FROM migledger.applied ORDER BY 1"),
        (std::vector<std::string>{V(1), V(2)}));
    EXPECT_EQ(target_->Query("SELECT count(*) FROM pg_tables WHERE tablename "
                             "IN ('before_index', 'after_index')"),
              std::vector<std::string>{index_statement == 1 ? "2" : "1"});
    LedgerSummary s = ReadSummary(dir_.path());
    ExpectOneTerminalPerAttempt(s);
    ExpectEachAppliedOnceInLedger(s, {V(1), V(2)});
    return s;
  }
  TempDir dir_;
  std::unique_ptr<TestTarget> target_;
};

// Writes a project whose second migration builds big_slow_idx
// CONCURRENTLY (after one plain statement when index_statement is 1), starts
// `apply` with slow_key() sleeping `sleep` seconds per row and SIGKILLs it
// while the index builds. Returns the server session of the build, which
// goes on without its client.
std::string KillDuringIndexBuild(const std::string& project,
                                 const TestTarget& target, int index_statement,
                                 const std::string& sleep) {
  WriteConfig(project, target.url(), "");
  std::string no_tx = "-- migledger:no-transaction\n";
  if (index_statement == 1) no_tx += "CREATE TABLE before_index (v integer);\n";
  no_tx +=
      "CREATE INDEX CONCURRENTLY big_slow_idx ON big (slow_key(id));\n"
      "CREATE TABLE after_index (v integer);\n";
  WriteMigrations(project, {{V(1), "big", kSlowIndexSetup, ""},
                            {V(2), "slow_index", no_tx, ""}});
  auto env = target.env();
  env["PGOPTIONS"] = "-c mltest.sleep=" + sleep;
  pid_t pid = StartMigledger({"apply"}, project, env);
  EXPECT_GT(pid, 0);
  if (pid <= 0) return "";
  // The build phase: the invalid index is in the catalog (committed) and
  // the table is being scanned row by row through slow_key().
  std::vector<std::string> backend;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    backend = target.Query(kIndexBuilding);
    if (!backend.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_EQ(backend.size(), 1u) << "the index build was never seen running";
  EXPECT_TRUE(WIFSIGNALED(status)) << "apply ended before it was killed";
  return backend.size() == 1 ? backend[0] : "";
}

// The runner dies while its CREATE INDEX CONCURRENTLY builds, and the
// server then ends the orphaned build (as it does when an operator cancels
// it): PostgreSQL keeps the half-built index, marked invalid, and a plain
// rerun of the statement would fail ("already exists"). The next apply must
// record the recovery with the invalid index as evidence, drop it, build it
// again, and finish.
TEST_P(KilledConcurrentIndexTest, NextApplyDropsTheInvalidIndexAndRebuildsIt) {
  const int index_statement = GetParam();
  const std::string project = dir_.path();
  TestTarget* target = target_.get();
  // 400 rows x 50 ms: far longer than the test waits.
  const std::string backend =
      KillDuringIndexBuild(project, *target, index_statement, "0.05");
  ASSERT_FALSE(backend.empty());
  // The orphaned backend would finish the build on its own: end it, as a
  // dropped connection or a cancel does.
  EXPECT_EQ(target->Query("SELECT pg_terminate_backend(" + backend + ")"),
            std::vector<std::string>{"t"})
      << "the build's backend ended by itself after the kill";
  for (int i = 0; i < 200 && !target->Query(kIndexBuilding).empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(target->Query(kIndexValidity), std::vector<std::string>{"f"})
      << "the killed build did not leave an invalid index";

  RunResult again = RunMigledger({"apply"}, project, target->env());
  ASSERT_EQ(0, again.exit_code) << Describe(again);
  EXPECT_NE(again.err.find("dropping invalid index public.big_slow_idx"),
            std::string::npos)
      << Describe(again);
  // The story: the killed attempt recovered (resumed at the index, with the
  // invalid index as evidence), a new attempt resumed there and applied.
  LedgerSummary s = ExpectIndexBuiltAndStepApplied(index_statement);
  std::vector<const LogEvent*> attempts;
  for (const auto& e : s.events) {
    if (e.type == "step_started" && e.version == V(2)) attempts.push_back(&e);
  }
  ASSERT_EQ(attempts.size(), 2u);
  const LogEvent* killed = s.Terminal(attempts[0]->attempt_id);
  ASSERT_NE(killed, nullptr);
  EXPECT_EQ(killed->type, "step_recovered");
  EXPECT_EQ(killed->outcome, "RECOVERED_RESUMED");
  EXPECT_EQ(killed->resume_at, index_statement);
  EXPECT_EQ(attempts[1]->resume_at, index_statement);
  const LogEvent* finished = s.Terminal(attempts[1]->attempt_id);
  ASSERT_NE(finished, nullptr);
  EXPECT_EQ(finished->type, "step_applied");
  const std::string recovered = EventsOfType(project, "step_recovered");
  EXPECT_NE(recovered.find("invalid index public.big_slow_idx found"),
            std::string::npos)
      << recovered;
  ExpectVerifiesAndValidates(project, *target);
}

// The orphaned build is left alone, as nobody would think of ending it: the
// next apply waits for it, finds the index it built there, records the
// statement as found applied and finishes the step without a second build.
TEST_P(KilledConcurrentIndexTest, NextApplyWaitsForTheOrphanedBuild) {
  const int index_statement = GetParam();
  const std::string project = dir_.path();
  TestTarget* target = target_.get();
  // 400 rows x 5 ms: the build outlives its client by about two seconds.
  ASSERT_FALSE(
      KillDuringIndexBuild(project, *target, index_statement, "0.005").empty());
  ASSERT_FALSE(target->Query(kIndexBuilding).empty())
      << "the orphaned build ended before the next apply";

  RunResult again = RunMigledger({"apply", "-v", "--lock-timeout", "60s"},
                                 project, target->env());
  ASSERT_EQ(0, again.exit_code) << Describe(again);
  EXPECT_NE(again.err.find("waiting for server session"), std::string::npos)
      << Describe(again);
  EXPECT_NE(again.err.find("already applied by the interrupted attempt"),
            std::string::npos)
      << Describe(again);
  EXPECT_EQ(again.err.find("dropping invalid index"), std::string::npos)
      << Describe(again);
  ExpectIndexBuiltAndStepApplied(index_statement);
  const std::string statements = EventsOfType(project, "statement_applied");
  EXPECT_NE(statements.find(
                "\"found_applied\":\"relation \\\"big_slow_idx\\\" already "
                "exists\""),
            std::string::npos)
      << statements;
  ExpectVerifiesAndValidates(project, *target);
}

// While the orphaned build still runs past the lock timeout, the resume
// stops (exit 5) and names the server session; nothing else happens until
// the operator waits or cancels it, after which apply finishes.
TEST_P(KilledConcurrentIndexTest, StillRunningOrphanStopsTheResumeClearly) {
  const int index_statement = GetParam();
  const std::string project = dir_.path();
  TestTarget* target = target_.get();
  const std::string backend =
      KillDuringIndexBuild(project, *target, index_statement, "0.05");
  ASSERT_FALSE(backend.empty());

  RunResult busy = RunMigledger({"apply", "--lock-timeout", "300ms"}, project,
                                target->env());
  EXPECT_EQ(5, busy.exit_code) << Describe(busy);
  int errors = 0;
  for (const auto& line : Lines(busy.err))
    errors += line.rfind("error:", 0) == 0;
  EXPECT_EQ(errors, 1) << Describe(busy);
  EXPECT_NE(busy.err.find("is still running"), std::string::npos)
      << Describe(busy);
  EXPECT_NE(busy.err.find("pg_cancel_backend(" + backend + ")"),
            std::string::npos)
      << Describe(busy);
  EXPECT_EQ(target->Query("SELECT version FROM migledger.applied ORDER BY 1"),
            (std::vector<std::string>{V(1)}));
  RunResult verify = RunMigledger({"audit", "verify"}, project);
  EXPECT_EQ(0, verify.exit_code) << Describe(verify);

  // The operator cancels it; the next apply rebuilds the index.
  EXPECT_EQ(target->Query("SELECT pg_cancel_backend(" + backend + ")"),
            std::vector<std::string>{"t"});
  RunResult again =
      RunMigledger({"apply", "--lock-timeout", "30s"}, project, target->env());
  ASSERT_EQ(0, again.exit_code) << Describe(again);
  ExpectIndexBuiltAndStepApplied(index_statement);
  ExpectVerifiesAndValidates(project, *target);
}

// The runner dies while the server runs its step's COMMIT (slowed here by
// a deferred trigger; a synchronous standby can do the same): the server
// finishes the commit without it. The next apply must wait for that
// session before it looks at the target, then find the step committed,
// not take it for rolled back and run it again.
TEST(KilledDuringCommitTest, NextApplyWaitsAndFindsTheStepCommitted) {
  if (!PgFromEnv()) GTEST_SKIP() << "PGTEST_URI is not set";
  TempDir dir;
  auto target = TestTarget::Create(TargetKind::kPostgres, dir.path());
  ASSERT_TRUE(target);
  const std::string project = dir.path();
  WriteConfig(project, target->url(), "");
  WriteMigrations(
      project,
      {{V(1), "slow_commit",
        "CREATE TABLE slow_commit (id integer);\n"
        "CREATE FUNCTION sleep_at_commit() RETURNS trigger LANGUAGE plpgsql "
        "AS $fn$\n"
        "BEGIN\n"
        "  PERFORM pg_sleep(coalesce(nullif(current_setting("
        "'mltest.commit_sleep', true), ''), '0')::float8);\n"
        "  RETURN NULL;\n"
        "END\n"
        "$fn$;\n"
        "CREATE CONSTRAINT TRIGGER slow_commit_trigger AFTER INSERT ON "
        "slow_commit DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE "
        "FUNCTION sleep_at_commit();\n"
        "INSERT INTO slow_commit VALUES (1);\n",
        ""}});
  auto env = target->env();
  env["PGOPTIONS"] = "-c mltest.commit_sleep=2";
  pid_t pid = StartMigledger({"apply"}, project, env);
  ASSERT_GT(pid, 0);
  std::vector<std::string> committing;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline && committing.empty()) {
    committing = target->Query(
        "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND "
        "application_name = 'migledger' AND datname = current_database()");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_EQ(committing.size(), 1u) << "the COMMIT was never seen running";
  ASSERT_TRUE(WIFSIGNALED(status)) << "apply ended before it was killed";

  RunResult again = RunMigledger({"apply", "-v", "--lock-timeout", "30s"},
                                 project, target->env());
  ASSERT_EQ(0, again.exit_code) << Describe(again);
  EXPECT_NE(again.err.find("waiting for server session " + committing[0]),
            std::string::npos)
      << Describe(again);
  EXPECT_EQ(target->Query("SELECT count(*) FROM slow_commit"),
            std::vector<std::string>{"1"});
  EXPECT_EQ(target->Query("SELECT version FROM migledger.applied"),
            std::vector<std::string>{V(1)});
  LedgerSummary s = ReadSummary(project);
  ExpectOneTerminalPerAttempt(s);
  ExpectEachAppliedOnceInLedger(s, {V(1)});
  for (const auto& e : s.events) {
    EXPECT_NE(e.type, "step_recovered") << "the committed step was recovered";
  }
  ExpectVerifiesAndValidates(project, *target);
}

INSTANTIATE_TEST_SUITE_P(IndexStatement, KilledConcurrentIndexTest,
                         ::testing::Values(0, 1),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return i.param == 0 ? "IndexIsFirstStatement"
                                               : "IndexAfterOneStatement";
                         });

}  // namespace
}  // namespace migledger::testing
