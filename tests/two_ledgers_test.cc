// Two ledgers on one target: two projects (two operators, a CI runner and
// a laptop) applying to one database, racing (both kinds of target, and a
// larger race on SQLite), and a second ledger applying after the first one
// was killed at a crash point. The target's lock and marker rows must make
// every migration run exactly once, and both ledgers end up complete.
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
using Rows = std::vector<std::string>;

TEST(TwoLedgersTest, TwoLedgersOnOneSqliteTargetApplyEachMigrationOnce) {
  TempDir shared;
  const std::string db = shared / "shared.db";
  TempDir a, b;
  MakeProject(a.path(), "sqlite:" + db);
  MakeProject(b.path(), "sqlite:" + db);
  auto add = [&](int v) {
    std::string name =
        "000" + std::to_string(v) + "_t" + std::to_string(v) + ".up.sql";
    std::string sql = "CREATE TABLE t" + std::to_string(v) +
                      " (x INTEGER);\n"
                      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                      "FROM c WHERE x < 20000) INSERT INTO t" +
                      std::to_string(v) + " SELECT x FROM c;\n";
    WriteFile(a / ("migrations/" + name), sql);
    WriteFile(b / ("migrations/" + name), sql);
  };
  auto race = [&](int last_version) {
    TimedRun ra, rb;
    std::atomic<int> ready{0};
    auto go = [&](const std::string& dir, TimedRun* r) {
      ++ready;
      while (ready < 2) std::this_thread::yield();
      *r = RunTimed({"apply"}, dir, {}, 60);
    };
    std::thread ta(go, a.path(), &ra);
    std::thread tb(go, b.path(), &rb);
    ta.join();
    tb.join();
    for (auto [dir, r] : {std::pair{a.path(), &ra}, std::pair{b.path(), &rb}}) {
      EXPECT_FALSE(r->timed_out) << Describe(*r);
      EXPECT_TRUE(r->exit_code == 0 || r->exit_code == 5) << Describe(*r);
      if (r->exit_code == 5) {
        ExpectOneErrorLine(*r);
        EXPECT_TRUE(Contains(r->err, "lock")) << Describe(*r);
        TimedRun retry = RunTimed({"apply"}, dir, {}, 60);
        EXPECT_EQ(retry.exit_code, 0) << Describe(retry);
      }
    }
    Rows expected;
    for (int v = 1; v <= last_version; ++v) {
      expected.push_back("000" + std::to_string(v) + "|1");
      EXPECT_EQ(SqliteQuery(db, "SELECT count(*) FROM t" + std::to_string(v)),
                Rows{"20000"})
          << "migration " << v << " ran more or less than once";
    }
    EXPECT_EQ(SqliteQuery(db,
                          "SELECT version, count(*) FROM migledger_applied "
                          "GROUP BY version ORDER BY version"),
              expected);
    std::fprintf(stderr, "[ info ] concurrent applies exited %d and %d\n",
                 ra.exit_code, rb.exit_code);
    for (const TempDir* d : {&a, &b}) {
      TimedRun v = RunTimed({"audit", "verify"}, d->path());
      EXPECT_EQ(v.exit_code, 0) << Describe(v);
      TimedRun val = RunTimed({"validate"}, d->path());
      EXPECT_EQ(val.exit_code, 0) << Describe(val);
    }
  };
  for (int v = 1; v <= 5; ++v) add(v);
  race(5);
  add(6);
  add(7);
  race(7);
}

TEST_P(ConcurrencyTest, TwoLedgersOnOneTargetNeverApplyTwice) {
  const TargetKind kind = GetParam();
  if (kind == TargetKind::kPostgres && !PgFromEnv())
    GTEST_SKIP() << "PGTEST_URI not set";
  std::set<std::string> all;
  std::vector<std::string> versions;
  for (int n = 1; n <= kSmallMigrations; ++n) {
    all.insert(V(n));
    versions.push_back(V(n));
  }
  const int rounds = kind == TargetKind::kSqlite ? 5 : 3;
  for (int round = 0; round < rounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    TempDir dir;
    const std::string p1 = dir / "one", p2 = dir / "two";
    auto target = TestTarget::Create(kind, dir.path());
    ASSERT_NE(nullptr, target);
    for (const auto& p : {p1, p2}) {
      MakeProject(p, target->url());  // the same target, two ledgers
      WriteMigrations(p, FourMigrations(false, false));
    }
    auto results = RunTogether({{"apply"}, {"apply"}}, {p1, p2}, target->env());
    std::set<std::string> a = AppliedVersions(results[0]),
                          b = AppliedVersions(results[1]);
    for (const auto& v : a)
      EXPECT_FALSE(b.count(v)) << "both ledgers applied " << v;
    ASSERT_TRUE(a == all || b == all) << Describe(results[0]) << "\n"
                                      << Describe(results[1]);
    const bool first_won = a == all;
    const std::string& loser_project = first_won ? p2 : p1;
    const RunResult& winner = first_won ? results[0] : results[1];
    const RunResult& loser = first_won ? results[1] : results[0];
    EXPECT_EQ(0, winner.exit_code) << Describe(winner);
    ExpectLoserOutcome(loser);
    if (loser.exit_code != 0) {
      // Busy: once the winner is done, the loser catches up.
      RunResult again = RunMigledger({"apply"}, loser_project, target->env());
      EXPECT_EQ(0, again.exit_code) << Describe(again);
      EXPECT_NE(std::string::npos, again.out.find("nothing to apply"))
          << Describe(again);
    }
    // Both ledgers hold the whole history: the loser pulled the winner's
    // events from the target's mirror.
    for (const auto& p : {p1, p2}) {
      SCOPED_TRACE(p);
      LedgerSummary s = ExpectComplete(p, *target, Expected{});
      std::set<std::string> applied;
      for (const auto& e : s.events) {
        if (e.type == "step_applied") applied.insert(e.version);
      }
      EXPECT_EQ(all, applied);
    }
    if (HasFailure()) break;
  }
}

// One ledger is killed; a second ledger (another operator, a CI runner)
// then applies to the same target; then the first runs again. README: every
// event is mirrored into the target "so a throwaway CI runner or a second
// operator continues the same verifiable history", a no-transaction step
// resumes at the first statement not acknowledged. So: the second ledger
// finishes the job without re-running acknowledged statements, and the
// killed one catches up by itself, except after a kill inside a
// transactional step (see below), where it refuses until moved aside.
class SecondLedgerAfterKillTest : public ::testing::TestWithParam<std::string> {
};

TEST_P(SecondLedgerAfterKillTest, BothLedgersEndUpComplete) {
  if (!CrashPointsEnabled())
    GTEST_SKIP() << "built without MIGLEDGER_CRASH_POINTS";
  const std::string point = GetParam();
  const int hits = ApplyHits(point, true, false);
  const int hit = std::min(2, MaxHit(point, hits));
  ASSERT_GE(hits, hit) << point << " is not reached by this apply";
  TempDir dir;
  const std::string killed_project = dir / "killed",
                    other_project = dir / "other";
  auto target = TestTarget::Create(TargetKind::kSqlite, dir.path());
  ASSERT_NE(nullptr, target);
  const bool idempotent = point == "apply.between_statements_no_tx";
  for (const auto& p : {killed_project, other_project}) {
    MakeProject(p, target->url());
    WriteMigrations(p, FourMigrations(true, idempotent));
  }
  auto env = target->env();
  env["MIGLEDGER_CRASH_AT"] = CrashSpec(point, hit);
  RunResult killed = RunMigledger({"apply"}, killed_project, env);
  ASSERT_EQ(SIGKILL, killed.signal) << Describe(killed);

  RunResult other = RunMigledger({"apply"}, other_project, target->env());
  EXPECT_EQ(0, other.exit_code)
      << "second ledger after the first was killed at " << CrashSpec(point, hit)
      << ": " << Describe(other);
  RunResult again = RunMigledger({"apply"}, killed_project, target->env());
  if (again.exit_code == 4) {
    // By design for a kill inside a transactional step: the killed ledger
    // holds that attempt's StepStarted, which never reached the target (it
    // rolled back), while the other ledger has continued the target's chain.
    // The ledger is append-only, so it refuses and says what to do: keep it
    // for the audit, move it aside, and a new ledger pulls the history.
    const bool mid_transaction =
        point == "apply.after_step_started" || point == "apply.after_begin" ||
        point == "apply.after_statement" || point == "apply.before_commit" ||
        point == "mirror.before_commit";
    EXPECT_TRUE(mid_transaction) << point << ": " << Describe(again);
    EXPECT_NE(std::string::npos, again.err.find("move it aside")) << again.err;
    std::filesystem::rename(killed_project + "/.migledger",
                            killed_project + "/.migledger.kept");
    again = RunMigledger({"apply"}, killed_project, target->env());
  }
  EXPECT_EQ(0, again.exit_code)
      << "killed ledger, run again: " << Describe(again);
  for (const auto& p : {other_project, killed_project}) {
    SCOPED_TRACE(p);
    ExpectComplete(p, *target, Expected{});
  }
}

// Every point an apply without an audit store reaches (the store's points
// are covered with a store by ApplyCrashTest).
std::vector<std::string> PointsReachedWithoutStore() {
  std::vector<std::string> points;
  for (const char* point : kCrashPoints) {
    const int hits = ApplyHits(point, true, false);
    if (hits < 0 || hits >= std::min(2, MaxHit(point, hits))) {
      if (hits != 0) points.push_back(point);
    }
  }
  return points;
}

INSTANTIATE_TEST_SUITE_P(AllPoints, SecondLedgerAfterKillTest,
                         ::testing::ValuesIn(PointsReachedWithoutStore()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           return ParamName(i.param);
                         });

}  // namespace
}  // namespace migledger::testing
