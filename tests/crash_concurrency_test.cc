// Crash tests, more than one process: two applies at once (one project, or
// two ledgers on one target), two first runs racing to create the ledger,
// `status` while another process holds the target's lock, and a second
// ledger applying after the first one was killed.

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
// 3. Concurrency
// ---------------------------------------------------------------------------

TEST_P(ConcurrencyTest, TwoAppliesOnOneProjectNeverApplyTwice) {
  const TargetKind kind = GetParam();
  if (kind == TargetKind::kPostgres && !PgFromEnv())
    GTEST_SKIP() << "PGTEST_URI not set";
  std::set<std::string> all;
  for (int n = 1; n <= kSmallMigrations; ++n) all.insert(V(n));
  // Fewer rounds on PostgreSQL: a database per round costs more.
  const int rounds = kind == TargetKind::kSqlite ? 10 : 5;
  for (int round = 0; round < rounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    TempDir dir;
    const std::string project = dir / "project";
    fs::create_directories(dir / "a");
    fs::create_directories(dir / "b");
    auto target = TestTarget::Create(kind, dir.path());
    ASSERT_NE(nullptr, target);
    MakeProject(project, target->url());
    WriteMigrations(project, FourMigrations(false, false));

    auto results =
        RunTogether({{"-C", project, "apply"}, {"-C", project, "apply"}},
                    {dir / "a", dir / "b"}, target->env());
    std::set<std::string> a = AppliedVersions(results[0]),
                          b = AppliedVersions(results[1]);
    for (const auto& v : a)
      EXPECT_FALSE(b.count(v)) << "both runs applied " << v;
    // One run applies everything; the other finds nothing left or is busy.
    ASSERT_TRUE(a == all || b == all) << Describe(results[0]) << "\n"
                                      << Describe(results[1]);
    const RunResult& winner = a == all ? results[0] : results[1];
    const RunResult& loser = a == all ? results[1] : results[0];
    EXPECT_EQ(0, winner.exit_code) << Describe(winner);
    EXPECT_TRUE(AppliedVersions(loser).empty());
    ExpectLoserOutcome(loser);
    ExpectComplete(project, *target, Expected{});
    if (HasFailure()) break;
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, ConcurrencyTest,
                         ::testing::Values(TargetKind::kSqlite,
                                           TargetKind::kPostgres),
                         [](const ::testing::TestParamInfo<TargetKind>& i) {
                           return std::string(KindName(i.param));
                         });

// Two applies racing to create the ledger of a fresh project. The window is
// widened deterministically: the test holds RocksDB's LOCK file of the
// (not yet created) ledger while both start, so both see "no ledger yet",
// then lets them go. The ledger's identity (the ledger_id in `audit digest`,
// which saved digests are checked against) must be created once and never
// change after events were written.
TEST(FreshLedgerRaceTest, ConcurrentFirstRunsKeepOneLedgerId) {
  TempDir dir;
  const std::string project = dir / "project";
  for (const char* sub : {"a", "b", "c"}) fs::create_directories(dir / sub);
  auto target = TestTarget::Create(TargetKind::kSqlite, dir.path());
  ASSERT_NE(nullptr, target);
  // A long lock timeout: the second run must wait for the first, not give up.
  WriteConfig(project, target->url(), "", 30000);
  WriteMigrations(project, FourMigrations(false, false));
  fs::create_directories(project + "/.migledger");
  int fd = open((project + "/.migledger/LOCK").c_str(),
                O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  ASSERT_EQ(0, fcntl(fd, F_SETLK, &fl));

  std::atomic<bool> done{false};
  std::vector<RunResult> results;
  std::thread runner([&] {
    results = RunTogether({{"-C", project, "apply"}, {"-C", project, "apply"}},
                          {dir / "a", dir / "b"}, target->env());
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  close(fd);  // releases the lock: both runs proceed, one after the other
  std::vector<std::string> ids;  // distinct ledger ids seen, in order
  auto look = [&] {
    RunResult d = RunMigledger({"-C", project, "audit", "digest"}, dir / "c");
    for (const auto& line : NonEmptyLines(d.out)) {
      if (line.rfind("ledger_id: ", 0) == 0 &&
          (ids.empty() || ids.back() != line)) {
        ids.push_back(line);
      }
    }
  };
  while (!done) look();
  runner.join();
  look();
  ASSERT_EQ(2u, results.size());
  for (const auto& r : results) {
    EXPECT_EQ(0, r.exit_code) << Describe(r);
  }
  std::string seen;
  for (const auto& id : ids) seen += "\n  " + id;
  EXPECT_EQ(1u, ids.size())
      << "the ledger's identity changed while it was in use:" << seen;
  ExpectComplete(project, *target, Expected{});
}

// ---------------------------------------------------------------------------
// status while another migledger runs a step
// ---------------------------------------------------------------------------

// Holds the applier lock of `target` the way a running apply does: SQLite,
// flock on the lock file beside the database; PostgreSQL, the advisory lock
// on a session of its own (a psql kept open). Released by the destructor.
class HeldTargetLock {
 public:
  explicit HeldTargetLock(const TestTarget& target) {
    if (target.kind() == TargetKind::kSqlite) {
      const std::string lock = target.url().substr(7) + ".migledger-lock";
      fd_ = open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      held_ = fd_ >= 0 && flock(fd_, LOCK_EX | LOCK_NB) == 0;
      return;
    }
    auto pg = PgFromEnv();
    if (!pg) return;
    const std::string cmd = "PGPASSWORD=" + ShellQuote(pg->password) +
                            " psql -X -q -o /dev/null " +
                            ShellQuote(target.url());
    psql_ = popen(cmd.c_str(), "w");
    if (psql_ == nullptr) return;
    std::fputs("SELECT pg_advisory_lock(607043952827027902);\n", psql_);
    std::fflush(psql_);
    held_ = WaitUntil(
        [&] {
          return target.Query(
                     "SELECT count(*) FROM pg_locks WHERE locktype "
                     "= 'advisory' AND objid = 1129173438 AND "
                     "granted") == std::vector<std::string>{"1"};
        },
        60);
  }
  ~HeldTargetLock() {
    if (fd_ >= 0) close(fd_);
    if (psql_ != nullptr) {
      std::fputs("\\q\n", psql_);
      pclose(psql_);
    }
  }
  bool held() const { return held_; }

 private:
  int fd_ = -1;
  FILE* psql_ = nullptr;
  bool held_ = false;
};

class RunningStepStatusTest : public ::testing::TestWithParam<TargetKind> {};

// Issue 39: `status` while an apply runs a step called that step unfinished
// and advised recovering it. The step an apply is running is in the ledger
// without an outcome, exactly as after a kill; what tells the two apart is
// the target's applier lock, held by the running apply, which status probes
// without waiting. A kill at apply.after_step_started leaves the ledger in
// that state; the test then holds the lock as the running apply would.
TEST_P(RunningStepStatusTest, StatusSaysAnApplyIsRunningTheStep) {
  if (!CrashPointsEnabled())
    GTEST_SKIP() << "built without MIGLEDGER_CRASH_POINTS";
  const TargetKind kind = GetParam();
  if (kind == TargetKind::kPostgres && !PgFromEnv())
    GTEST_SKIP() << "PGTEST_URI not set";
  TempDir dir;
  const std::string project = dir.path();
  auto target = TestTarget::Create(kind, project);
  ASSERT_NE(nullptr, target);
  WriteConfig(project, target->url(), "");
  WriteMigrations(project, FourMigrations(false, false));
  auto env = target->env();
  env["MIGLEDGER_CRASH_AT"] = "apply.after_step_started:1";
  RunResult killed = RunMigledger({"apply"}, project, env);
  ASSERT_EQ(SIGKILL, killed.signal) << Describe(killed);

  RunResult after_kill = RunMigledger({"status"}, project, target->env());
  ASSERT_EQ(0, after_kill.exit_code) << Describe(after_kill);
  EXPECT_TRUE(Contains(after_kill.out, "1 unfinished step(s)"))
      << after_kill.out;
  EXPECT_FALSE(Contains(after_kill.out, "running")) << after_kill.out;
  {
    HeldTargetLock lock(*target);
    ASSERT_TRUE(lock.held());
    RunResult running = RunMigledger({"status"}, project, target->env());
    ASSERT_EQ(0, running.exit_code) << Describe(running);
    EXPECT_TRUE(Contains(running.out,
                         "1 step(s) running: another migledger (apply, down "
                         "or recover) holds the lock on this target"))
        << running.out;
    EXPECT_FALSE(Contains(running.out, "recover` finishes")) << running.out;
    EXPECT_FALSE(Contains(running.out, "unfinished")) << running.out;
    bool row = false;
    for (const auto& line : Lines(running.out)) {
      if (line.rfind(V(1) + " ", 0) == 0) {
        row = true;
        EXPECT_TRUE(Contains(line, "running now")) << line;
      }
    }
    EXPECT_TRUE(row) << running.out;
    RunResult json =
        RunMigledger({"status", "--format", "json"}, project, target->env());
    ASSERT_EQ(0, json.exit_code) << Describe(json);
    EXPECT_TRUE(Contains(json.out,
                         "\"unfinished_steps\":1,"
                         "\"running_elsewhere\":true"))
        << json.out;
  }
  RunResult released = RunMigledger({"status"}, project, target->env());
  EXPECT_TRUE(Contains(released.out, "1 unfinished step(s)")) << released.out;
  RunResult apply = RunMigledger({"apply"}, project, target->env());
  ASSERT_EQ(0, apply.exit_code) << Describe(apply);
  ExpectComplete(project, *target, Expected{});
}

INSTANTIATE_TEST_SUITE_P(Targets, RunningStepStatusTest,
                         ::testing::Values(TargetKind::kSqlite,
                                           TargetKind::kPostgres),
                         [](const ::testing::TestParamInfo<TargetKind>& i) {
                           return std::string(KindName(i.param));
                         });

}  // namespace
}  // namespace migledger::testing
