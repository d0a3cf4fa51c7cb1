// Ctrl-C and SIGTERM during apply (common/interrupt.h): the running step
// is cancelled and recorded as failed, the plan stops.

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
// Ctrl-C and SIGTERM during apply (common/interrupt.h)
// ---------------------------------------------------------------------------

// A signal while a migration's statement runs cancels that statement: the
// step rolls back and is recorded as failed, the next migration is not
// started, apply exits 130 with one error line, and the next apply (the
// statement fixed) carries on. SQLite gets SIGINT, PostgreSQL SIGTERM.
class InterruptTest : public ::testing::TestWithParam<TargetKind> {};

TEST_P(InterruptTest, SignalCancelsTheRunningStepAndStopsThePlan) {
  const TargetKind kind = GetParam();
  if (kind == TargetKind::kPostgres && !PgFromEnv())
    GTEST_SKIP() << "PGTEST_URI not set";
  const int sig = kind == TargetKind::kSqlite ? SIGINT : SIGTERM;
  const std::string sig_name =
      kind == TargetKind::kSqlite ? "SIGINT" : "SIGTERM";
  TempDir dir;
  const std::string project = dir.path();
  auto target = TestTarget::Create(kind, project);
  ASSERT_NE(nullptr, target);
  WriteConfig(project, target->url(), "");
  // Minutes of work unless cancelled.
  const std::string slow =
      kind == TargetKind::kSqlite
          ? "INSERT INTO t2 (v) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
            "SELECT x + 1 FROM c WHERE x < 100000000000) SELECT count(*) "
            "FROM c;\n"
          : "INSERT INTO t2 (v) SELECT pg_sleep(600)::text;\n";
  WriteMigrations(project,
                  {{V(1), "t1", TxMigration(1, 1), ""},
                   {V(2), "t2", "CREATE TABLE t2 (v TEXT);\n" + slow, ""},
                   {V(3), "t3", TxMigration(3, 1), ""}});
  const std::string err_path = project + "/apply.err";
  pid_t pid = StartMigledger({"apply", "-v"}, project, target->env(), err_path);
  ASSERT_GT(pid, 0);
  // Wait until the slow statement runs: migledger has said it applies 0002
  // (PostgreSQL: and the server shows the statement sleeping).
  const bool running = WaitUntil(
      [&] {
        if (!Contains(ReadFile(err_path), "applying " + V(2))) return false;
        if (kind == TargetKind::kSqlite) {
          std::this_thread::sleep_for(std::chrono::milliseconds(500));
          return true;
        }
        return !target
                    ->Query(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event = "
                        "'PgSleep' AND application_name = 'migledger' AND "
                        "datname = current_database()")
                    .empty();
      },
      60);
  if (!running) kill(pid, SIGKILL);
  ASSERT_TRUE(running) << ReadFile(err_path);
  kill(pid, sig);
  // It ends on its own, long before the statement would have.
  int status = 0;
  ASSERT_TRUE(WaitForExit(pid, 60, &status))
      << "apply went on after " << sig_name << ": " << ReadFile(err_path);
  // It ends by the signal, as programs do for their caller (a shell then
  // stops too), after the error line below.
  ASSERT_TRUE(WIFSIGNALED(status)) << "exited " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), sig);
  std::vector<std::string> errors;
  for (const auto& line : Lines(ReadFile(err_path))) {
    if (line.rfind("error: ", 0) == 0) errors.push_back(line);
  }
  ASSERT_EQ(errors.size(), 1u) << ReadFile(err_path);
  EXPECT_TRUE(Contains(errors[0], "interrupted by " + sig_name +
                                      ": migration " + V(2) + " up failed"))
      << errors[0];

  TestTarget::State st = target->Snapshot(3);
  EXPECT_EQ(st.markers, std::set<std::string>{V(1)});
  EXPECT_EQ(st.rows, (std::map<std::string, int>{{"t1", 1}}));
  RunResult status_run = RunMigledger({"status"}, project, target->env());
  ASSERT_EQ(status_run.exit_code, 0) << Describe(status_run);
  EXPECT_TRUE(Contains(status_run.out, "1 applied, 2 pending"))
      << status_run.out;
  EXPECT_FALSE(Contains(status_run.out, "unfinished")) << status_run.out;
  RunResult verify = RunMigledger({"audit", "verify"}, project);
  EXPECT_EQ(verify.exit_code, 0) << Describe(verify);
  RunResult log = RunMigledger({"audit", "log", "--format", "jsonl"}, project);
  ASSERT_EQ(log.exit_code, 0) << Describe(log);
  EXPECT_TRUE(Contains(log.out, "interrupted by " + sig_name)) << log.out;

  WriteMigrations(project, {{V(2), "t2", TxMigration(2, 1), ""}});
  RunResult again = RunMigledger({"apply"}, project, target->env());
  ASSERT_EQ(again.exit_code, 0) << Describe(again);
  st = target->Snapshot(3);
  EXPECT_EQ(st.markers, (std::set<std::string>{V(1), V(2), V(3)}));
  EXPECT_EQ(st.rows,
            (std::map<std::string, int>{{"t1", 1}, {"t2", 1}, {"t3", 1}}));
}

INSTANTIATE_TEST_SUITE_P(Targets, InterruptTest,
                         ::testing::Values(TargetKind::kSqlite,
                                           TargetKind::kPostgres),
                         [](const ::testing::TestParamInfo<TargetKind>& i) {
                           return std::string(KindName(i.param));
                         });

}  // namespace
}  // namespace migledger::testing
