// Crash tests, no-transaction files and a file's own transaction: killed
// after a statement ran but before its acknowledgement (up and down), inside
// and after a BEGIN/COMMIT block a file runs itself, and right after the
// last COMMIT of a run.

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

// Killed after a no-transaction step's statement ran but before its
// acknowledgement was written: the resume finds what the statement creates
// already there (no IF NOT EXISTS), records it as found applied and
// finishes the step, running each later statement once.
class UnacknowledgedStatementTest
    : public ::testing::TestWithParam<std::tuple<TargetKind, int>> {};

TEST_P(UnacknowledgedStatementTest, ResumeFindsWhatItCreatedAndGoesOn) {
  if (!CrashPointsEnabled())
    GTEST_SKIP() << "built without MIGLEDGER_CRASH_POINTS";
  const auto [kind, statement] = GetParam();
  if (kind == TargetKind::kPostgres && !PgFromEnv())
    GTEST_SKIP() << "PGTEST_URI not set";
  TempDir dir;
  auto target = TestTarget::Create(kind, dir.path());
  ASSERT_TRUE(target);
  const std::string project = dir.path();
  MakeProject(project, target->url());
  WriteMigrations(project, {{V(1), "no_tx",
                             "-- migledger:no-transaction\n"
                             "CREATE TABLE a (id INTEGER);\n"
                             "CREATE INDEX a_id ON a (id);\n"
                             "INSERT INTO a (id) VALUES (1);\n",
                             ""}});
  auto env = target->env();
  env["MIGLEDGER_CRASH_AT"] =
      CrashSpec("apply.between_statements_no_tx", statement);
  RunResult killed = RunMigledger({"apply"}, project, env);
  ASSERT_EQ(SIGKILL, killed.signal) << Describe(killed);

  RunResult again = RunMigledger({"apply"}, project, target->env());
  ASSERT_EQ(0, again.exit_code) << Describe(again);
  EXPECT_NE(again.err.find("statement " + std::to_string(statement) +
                           " of 0001 was already applied"),
            std::string::npos)
      << Describe(again);
  EXPECT_EQ(target->Query("SELECT count(*) FROM a"),
            std::vector<std::string>{"1"});
  LedgerSummary s = ReadSummary(project);
  ExpectOneTerminalPerAttempt(s);
  ExpectEachAppliedOnceInLedger(s, {V(1)});
  RunResult log =
      RunMigledger({"audit", "log", "--type", "statement_applied"}, project);
  EXPECT_NE(log.out.find("statement " + std::to_string(statement) +
                         " found applied by the interrupted attempt"),
            std::string::npos)
      << log.out;
  ExpectVerifiesAndValidates(project, *target);
}

// The same for a no-transaction down file: what the resumed DROP names is
// gone already ("no such index", "does not exist"), so it is found applied.
class UnacknowledgedDropTest : public ::testing::TestWithParam<TargetKind> {};

TEST_P(UnacknowledgedDropTest, DownResumeFindsWhatItDroppedAndGoesOn) {
  if (!CrashPointsEnabled())
    GTEST_SKIP() << "built without MIGLEDGER_CRASH_POINTS";
  if (GetParam() == TargetKind::kPostgres && !PgFromEnv())
    GTEST_SKIP() << "PGTEST_URI not set";
  for (int statement : {1, 2}) {
    SCOPED_TRACE("killed after DROP statement " + std::to_string(statement));
    TempDir dir;
    auto target = TestTarget::Create(GetParam(), dir.path());
    ASSERT_TRUE(target);
    const std::string project = dir.path();
    MakeProject(project, target->url());
    WriteMigrations(project, {{V(1), "indexed",
                               "CREATE TABLE a (id INTEGER);\n"
                               "CREATE INDEX a_id ON a (id);\n",
                               "-- migledger:no-transaction\n"
                               "DROP INDEX a_id;\n"
                               "DROP TABLE a;\n"}});
    ASSERT_EQ(0, RunMigledger({"apply"}, project, target->env()).exit_code);
    auto env = target->env();
    env["MIGLEDGER_CRASH_AT"] =
        CrashSpec("apply.between_statements_no_tx", statement);
    RunResult killed = RunMigledger({"down", "--steps", "1"}, project, env);
    ASSERT_EQ(SIGKILL, killed.signal) << Describe(killed);

    RunResult again =
        RunMigledger({"down", "--steps", "1"}, project, target->env());
    ASSERT_EQ(0, again.exit_code) << Describe(again);
    EXPECT_NE(again.err.find("statement " + std::to_string(statement) +
                             " of 0001 was already applied"),
              std::string::npos)
        << Describe(again);
    EXPECT_EQ(target->Query(GetParam() == TargetKind::kSqlite
                                ? "SELECT count(*) FROM sqlite_master "
                                  "WHERE name IN ('a', 'a_id')"
                                : "SELECT count(*) FROM pg_class "
                                  "WHERE relname IN ('a', 'a_id')"),
              std::vector<std::string>{"0"});
    RunResult status = RunMigledger({"status"}, project, target->env());
    EXPECT_NE(status.out.find("0 applied, 1 pending"), std::string::npos)
        << Describe(status);
    LedgerSummary s = ReadSummary(project);
    ExpectOneTerminalPerAttempt(s);
    ExpectVerifiesAndValidates(project, *target);
  }
}

// A no-transaction file that opens its own transaction (BEGIN; ...; COMMIT;
// run one by one). What runs inside it is undone when the process dies
// before its COMMIT, so those statements are acknowledged only with the
// COMMIT, in the target's mirror inside that very transaction.
class FileTransactionTest : public ::testing::TestWithParam<TargetKind> {
 protected:
  void SetUp() override {
    if (!CrashPointsEnabled())
      GTEST_SKIP() << "built without MIGLEDGER_CRASH_POINTS";
    if (GetParam() == TargetKind::kPostgres && !PgFromEnv())
      GTEST_SKIP() << "PGTEST_URI not set";
    target_ = TestTarget::Create(GetParam(), dir_.path());
    ASSERT_TRUE(target_);
    MakeProject(project(), target_->url());
  }

  const std::string& project() const { return dir_.path(); }

  // Statement 1 runs alone, 2-5 are the file's transaction, 6 runs alone.
  void WriteBlockMigration() {
    WriteMigrations(project(), {{V(1), "block",
                                 "-- migledger:no-transaction\n"
                                 "CREATE TABLE before_block (id INTEGER);\n"
                                 "BEGIN;\n"
                                 "CREATE TABLE in_block (id INTEGER);\n"
                                 "INSERT INTO in_block (id) VALUES (1);\n"
                                 "COMMIT;\n"
                                 "CREATE TABLE after_block (id INTEGER);\n",
                                 ""}});
  }

  // Kills an apply at `crash`, applies again and checks that every
  // statement took effect exactly once.
  void KillAndFinish(const std::string& crash,
                     const std::string& expected_recovery) {
    WriteBlockMigration();
    auto env = target_->env();
    env["MIGLEDGER_CRASH_AT"] = crash;
    RunResult killed = RunMigledger({"apply"}, project(), env);
    ASSERT_EQ(SIGKILL, killed.signal) << Describe(killed);

    RunResult again = RunMigledger({"apply"}, project(), target_->env());
    ASSERT_EQ(0, again.exit_code) << Describe(again);
    EXPECT_NE(again.out.find(expected_recovery), std::string::npos)
        << Describe(again);
    for (const char* table : {"before_block", "in_block", "after_block"}) {
      EXPECT_EQ(target_->Query(std::string("SELECT count(*) FROM ") + table),
                std::vector<std::string>{
                    std::string(table) == "in_block" ? "1" : "0"})
          << table;
    }
    LedgerSummary s = ReadSummary(project());
    ExpectOneTerminalPerAttempt(s);
    ExpectEachAppliedOnceInLedger(s, {V(1)});
    ExpectVerifiesAndValidates(project(), *target_);
  }

  TempDir dir_;
  std::unique_ptr<TestTarget> target_;
};

TEST_P(FileTransactionTest, KilledInsideTheBlockResumesAtItsBegin) {
  // Hit 3: CREATE TABLE in_block ran inside the file's transaction. Before
  // the fix its acknowledgement was durable, so the resume skipped the
  // rolled-back table and went on at the INSERT.
  KillAndFinish(CrashSpec("apply.between_statements_no_tx", 3),
                "1 of 6 statements acknowledged; will resume at statement 2");
}

TEST_P(FileTransactionTest, KilledAfterTheBlocksCommitDoesNotRunItAgain) {
  // The COMMIT is durable, the local ledger has not heard of it yet: the
  // next run learns from the mirror that the block committed.
  KillAndFinish(CrashSpec("apply.after_commit", 1),
                "5 of 6 statements acknowledged; will resume at statement 6");
}

TEST_P(FileTransactionTest, AFileThatLeavesItsTransactionOpenFailsClearly) {
  WriteMigrations(project(), {{V(1), "open_block",
                               "-- migledger:no-transaction\n"
                               "CREATE TABLE before_block (id INTEGER);\n"
                               "BEGIN;\n"
                               "CREATE TABLE in_block (id INTEGER);\n",
                               ""}});
  RunResult r = RunMigledger({"apply"}, project(), target_->env());
  EXPECT_EQ(3, r.exit_code) << Describe(r);
  EXPECT_NE(r.err.find("ends inside a transaction it opened itself"),
            std::string::npos)
      << Describe(r);
  EXPECT_EQ(target_->Query("SELECT count(*) FROM before_block"),
            std::vector<std::string>{"0"});
  const std::string in_block_exists =
      GetParam() == TargetKind::kSqlite
          ? "SELECT count(*) FROM sqlite_master WHERE name = 'in_block'"
          : "SELECT count(*) FROM pg_class WHERE relname = 'in_block'";
  EXPECT_EQ(target_->Query(in_block_exists), std::vector<std::string>{"0"});
  ExpectVerifiesAndValidates(project(), *target_);
}

INSTANTIATE_TEST_SUITE_P(Targets, FileTransactionTest,
                         ::testing::Values(TargetKind::kSqlite,
                                           TargetKind::kPostgres),
                         [](const ::testing::TestParamInfo<TargetKind>& i) {
                           return std::string(KindName(i.param));
                         });

// A run's RunFinished commits to the target's mirror with its last step
// (no mirror transaction of its own): a kill right after that COMMIT leaves
// a finished run, which the next run pulls back, once.
class RunFinishedTest : public FileTransactionTest {};

TEST_P(RunFinishedTest, KilledAfterTheLastCommitTheRunIsFinishedOnce) {
  std::vector<MigrationFiles> ms;
  for (int n = 1; n <= 3; ++n)
    ms.push_back({V(n), "t" + std::to_string(n), TxMigration(n, 2), ""});
  WriteMigrations(project(), ms);
  auto env = target_->env();
  env["MIGLEDGER_CRASH_AT"] = CrashSpec("apply.after_commit", 3);
  RunResult killed = RunMigledger({"apply"}, project(), env);
  ASSERT_EQ(SIGKILL, killed.signal) << Describe(killed);
  std::string killed_run;
  for (const auto& e : ReadAuditLog(project()))
    if (e.type == "run_started") killed_run = e.run_id;
  ASSERT_FALSE(killed_run.empty());

  RunResult again = RunMigledger({"apply"}, project(), target_->env());
  ASSERT_EQ(0, again.exit_code) << Describe(again);
  EXPECT_NE(again.out.find("nothing to apply"), std::string::npos)
      << Describe(again);
  std::vector<LogEvent> log = ReadAuditLog(project());
  int finished = 0, started = 0;
  for (const auto& e : log) {
    if (e.type == "run_started") ++started;
    if (e.type == "run_finished") {
      ++finished;
      EXPECT_EQ(killed_run, e.run_id);
    }
  }
  EXPECT_EQ(1, started);
  EXPECT_EQ(1, finished);
  // The pulled outcome and RunFinished, then how this ledger learned them.
  ASSERT_GE(log.size(), 3u);
  EXPECT_EQ("step_applied", log[log.size() - 3].type);
  EXPECT_EQ("run_finished", log[log.size() - 2].type);
  EXPECT_EQ("outcome_learned", log.back().type);
  LedgerSummary s = ReadSummary(project());
  ExpectOneTerminalPerAttempt(s);
  ExpectEachAppliedOnceInLedger(s, {V(1), V(2), V(3)});
  ExpectVerifiesAndValidates(project(), *target_);
}

INSTANTIATE_TEST_SUITE_P(Targets, RunFinishedTest,
                         ::testing::Values(TargetKind::kSqlite,
                                           TargetKind::kPostgres),
                         [](const ::testing::TestParamInfo<TargetKind>& i) {
                           return KindName(i.param);
                         });

INSTANTIATE_TEST_SUITE_P(Targets, UnacknowledgedDropTest,
                         ::testing::Values(TargetKind::kSqlite,
                                           TargetKind::kPostgres),
                         [](const ::testing::TestParamInfo<TargetKind>& i) {
                           return std::string(KindName(i.param));
                         });

INSTANTIATE_TEST_SUITE_P(
    Targets, UnacknowledgedStatementTest,
    ::testing::Combine(::testing::Values(TargetKind::kSqlite,
                                         TargetKind::kPostgres),
                       ::testing::Values(1, 2)),
    [](const ::testing::TestParamInfo<std::tuple<TargetKind, int>>& i) {
      return std::string(KindName(std::get<0>(i.param))) +
             (std::get<1>(i.param) == 1 ? "_CreateTable" : "_CreateIndex");
    });

}  // namespace
}  // namespace migledger::testing
