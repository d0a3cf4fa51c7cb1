// Crash tests, every named crash point: `apply` killed at each point (and
// hit) of common/crash_points.h on each target kind, with and without a
// no-transaction migration, then `apply` (or `recover` + `apply`) finishes
// the job; the same for `down --steps 2`, then `recover`. The checks are
// tests/crash_harness.h's.

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
// 1. Kill `apply` at every crash point, then apply (or recover + apply)
// ---------------------------------------------------------------------------

struct ApplyCase {
  std::string point;
  int hit;
  TargetKind target;
  bool no_tx;        // migration 2 is a no-transaction migration
  bool via_recover;  // second run: `recover`, then `apply`
};
// Readable test parameters in ctest's output (instead of a byte dump).
void PrintTo(const ApplyCase& c, std::ostream* os) {
  *os << c.point << ":" << c.hit << " " << KindName(c.target)
      << (c.no_tx ? " no-tx" : " tx") << (c.via_recover ? " via recover" : "");
}

std::vector<ApplyCase> ApplyCases() {
  std::vector<ApplyCase> cases;
  for (const char* point : kCrashPoints) {
    std::string p = point;
    for (TargetKind target : {TargetKind::kSqlite, TargetKind::kPostgres}) {
      // All transactional: the first hit (no-tx points are never hit then;
      // the run must exit 0, which is checked).
      cases.push_back({p, 1, target, false, false});
      // Migration 2 without a transaction: the first and second hit (every
      // statement boundary for no-tx points), and the first hit again with
      // `recover` as the second run. Hit 1 of the per-step points lands in
      // transactional migration 1, hit 2 of most in no-tx migration 2.
      int max_hit = MaxHit(p, ApplyHits(p, true, true));
      for (int hit = 1; hit <= max_hit; ++hit) {
        cases.push_back({p, hit, target, true, false});
      }
      cases.push_back({p, 1, target, true, true});
    }
  }
  return cases;
}

std::string ApplyCaseName(const ::testing::TestParamInfo<ApplyCase>& info) {
  const ApplyCase& c = info.param;
  return ParamName(c.point) + "_" + std::to_string(c.hit) + "_" +
         KindName(c.target) + (c.no_tx ? "_notx" : "_tx") +
         (c.via_recover ? "_recover" : "");
}

class ApplyCrashTest : public ::testing::TestWithParam<ApplyCase> {};

TEST_P(ApplyCrashTest, NextRunFinishesTheJob) {
  const ApplyCase& c = GetParam();
  if (!CrashPointsEnabled())
    GTEST_SKIP() << "built without MIGLEDGER_CRASH_POINTS";
  if (c.target == TargetKind::kPostgres && !PgFromEnv())
    GTEST_SKIP() << "PGTEST_URI not set";

  TempDir dir;
  const std::string project = dir.path();
  auto target = TestTarget::Create(c.target, project);
  ASSERT_NE(nullptr, target);
  // The audit store (a PostgreSQL database) is configured for its own crash
  // points when a server is available; without one they are not reached.
  std::unique_ptr<TestTarget> store;
  if (IsStorePoint(c.point) && PgFromEnv()) {
    store = TestTarget::Create(TargetKind::kPostgres, project);
    ASSERT_NE(nullptr, store);
  }
  WriteConfig(project, target->url(), store ? store->url() : "");
  const int hits = ApplyHits(c.point, c.no_tx, store != nullptr);
  const bool known = hits >= 0;
  if (!known) {
    std::cout << "[ note     ] crash point " << c.point
              << " is new to tests/crash_test.cc: checked generically"
              << std::endl;
  }
  const bool idempotent =
      c.no_tx && c.point == "apply.between_statements_no_tx";
  WriteMigrations(project, FourMigrations(c.no_tx, idempotent));

  auto run_env = target->env();
  if (store) run_env.insert(store->env().begin(), store->env().end());
  auto env = run_env;
  env["MIGLEDGER_CRASH_AT"] = CrashSpec(c.point, c.hit);
  RunResult killed = RunMigledger({"apply"}, project, env);
  const bool reached = known ? c.hit <= hits : killed.signal == SIGKILL;
  if (reached) {
    ASSERT_EQ(SIGKILL, killed.signal)
        << "expected a kill at " << CrashSpec(c.point, c.hit) << ": "
        << Describe(killed);
  } else {
    // Not on this run's path (e.g. a no-transaction point while every step
    // is transactional, or an audit-store point without a store): the run
    // must simply complete.
    ASSERT_EQ(0, killed.exit_code) << Describe(killed);
    ASSERT_EQ(0, killed.signal);
  }

  // What the killed run left in the local ledger (killed while creating
  // it: no ledger yet for a reader).
  LedgerSummary before;
  if (IsLedgerCreationPoint(c.point) && reached) {
    RunResult log = RunMigledger({"audit", "log"}, project);
    EXPECT_EQ(2, log.exit_code) << Describe(log);
    EXPECT_NE(std::string::npos, log.err.find("no ledger at")) << log.err;
  } else {
    before = ReadSummary(project);
  }
  ASSERT_LE(before.open.size(), 1u) << "more than one step in flight";
  const bool open_expected =
      known ? reached && (LeavesOpenAttempt(c.point) ||
                          (c.point == "mirror.before_commit" &&
                           MirrorFlushInsideNoTxStep(c.hit, c.no_tx)))
            : !before.open.empty();
  ASSERT_EQ(open_expected ? 1u : 0u, before.open.size());
  std::optional<LogEvent> interrupted;
  int acked = 0;
  std::string killed_run;
  if (open_expected) {
    interrupted = before.started.at(before.open[0]);
    acked = before.statements_acked[interrupted->attempt_id];
    killed_run = interrupted->run_id;
  }

  if (c.via_recover) {
    RunResult rec = RunMigledger({"recover"}, project, run_env);
    ASSERT_EQ(0, rec.exit_code) << "recover: " << Describe(rec);
    LedgerSummary mid = ReadSummary(project);
    EXPECT_TRUE(mid.open.empty())
        << "recover left " << mid.open.size() << " attempt(s) open";
    if (interrupted && c.point != "apply.after_commit") {
      EXPECT_NE(std::string::npos,
                rec.out.find("recovered version " + interrupted->version))
          << Describe(rec);
    }
    // Nothing was applied by recover itself: the target is as the kill left it.
    EXPECT_TRUE(AppliedVersions(rec).empty());
  }

  RunResult second = RunMigledger({"apply"}, project, run_env);
  ASSERT_EQ(0, second.exit_code)
      << "apply after the kill: " << Describe(second);
  if (!reached || c.point == "apply.before_run_finished") {
    EXPECT_NE(std::string::npos, second.out.find("nothing to apply"))
        << Describe(second);
  }

  LedgerSummary after = ExpectComplete(project, *target, Expected{});
  if (interrupted && known) {
    ExpectHealedAttempt(after, *interrupted, c.point, killed_run, acked, false);
  }

  if (store) {
    // The store caught up with everything the ledger holds.
    size_t events = ReadAuditLog(project).size();
    EXPECT_EQ(
        std::to_string(events),
        store->Query("SELECT count(*) FROM migledger_store.events").front())
        << "events in the audit store";
  }
}

INSTANTIATE_TEST_SUITE_P(AllPoints, ApplyCrashTest,
                         ::testing::ValuesIn(ApplyCases()), ApplyCaseName);

// ---------------------------------------------------------------------------
// 1b. Kill `down --steps 2` at every crash point, then recover
// ---------------------------------------------------------------------------

struct DownCase {
  std::string point;
  int hit;
  TargetKind target;
};
void PrintTo(const DownCase& c, std::ostream* os) {
  *os << c.point << ":" << c.hit << " " << KindName(c.target);
}

std::vector<DownCase> DownCases() {
  std::vector<DownCase> cases;
  for (const char* point : kCrashPoints) {
    std::string p = point;
    // The second hit (the second down step) for the points around COMMIT.
    // (mirror.before_commit is passed once: RunStarted's own flush.)
    bool second = p == "apply.after_begin" || p == "apply.before_commit" ||
                  p == "apply.after_commit";
    int max_hit = second ? 2 : 1;
    for (TargetKind target : {TargetKind::kSqlite, TargetKind::kPostgres}) {
      for (int hit = 1; hit <= max_hit; ++hit)
        cases.push_back({p, hit, target});
    }
  }
  return cases;
}

std::string DownCaseName(const ::testing::TestParamInfo<DownCase>& info) {
  const DownCase& c = info.param;
  return ParamName(c.point) + "_" + std::to_string(c.hit) + "_" +
         KindName(c.target);
}

// How many of the two down steps committed when the run died at point:hit.
// -1: unknown point.
int RevertedWhenKilled(const std::string& point, int hit) {
  if (point == "apply.after_run_started") return 0;
  if (point == "apply.before_run_finished") return 2;
  // The flush of RunStarted: nothing reverted yet.
  if (point == "mirror.before_commit") return 0;
  if (point == "apply.after_commit" || point == "apply.after_outcome")
    return hit;
  if (point.rfind("apply.", 0) == 0) return hit - 1;
  return -1;
}

class DownCrashTest : public ::testing::TestWithParam<DownCase> {};

TEST_P(DownCrashTest, RecoverLeavesLedgerAndTargetConsistent) {
  const DownCase& c = GetParam();
  if (!CrashPointsEnabled())
    GTEST_SKIP() << "built without MIGLEDGER_CRASH_POINTS";
  if (c.target == TargetKind::kPostgres && !PgFromEnv())
    GTEST_SKIP() << "PGTEST_URI not set";
  const int hits = DownHits(c.point);
  const bool known = hits >= 0;

  TempDir dir;
  const std::string project = dir.path();
  auto target = TestTarget::Create(c.target, project);
  ASSERT_NE(nullptr, target);
  MakeProject(project, target->url());
  WriteMigrations(project, FourMigrations(false, false));
  RunResult up = RunMigledger({"apply"}, project, target->env());
  ASSERT_EQ(0, up.exit_code) << Describe(up);

  auto env = target->env();
  env["MIGLEDGER_CRASH_AT"] = CrashSpec(c.point, c.hit);
  RunResult killed = RunMigledger({"down", "--steps", "2"}, project, env);
  const bool reached = known ? c.hit <= hits : killed.signal == SIGKILL;
  if (reached) {
    ASSERT_EQ(SIGKILL, killed.signal)
        << "expected a kill at " << CrashSpec(c.point, c.hit) << ": "
        << Describe(killed);
  } else {
    // The down files are transactional: no-transaction points are not hit.
    ASSERT_EQ(0, killed.exit_code) << Describe(killed);
  }
  const int reverted = reached ? RevertedWhenKilled(c.point, c.hit) : 2;

  LedgerSummary before = ReadSummary(project);
  ASSERT_LE(before.open.size(), 1u) << "more than one step in flight";
  const bool open_expected =
      known ? reached && LeavesOpenAttempt(c.point) : !before.open.empty();
  ASSERT_EQ(open_expected ? 1u : 0u, before.open.size());
  std::optional<LogEvent> interrupted;
  if (open_expected) interrupted = before.started.at(before.open[0]);

  // Not `down --steps 2` again: after recovery it would revert two more.
  RunResult rec = RunMigledger({"recover"}, project, target->env());
  ASSERT_EQ(0, rec.exit_code) << "recover: " << Describe(rec);

  LedgerSummary after = ReadSummary(project);
  ExpectOneTerminalPerAttempt(after);
  EXPECT_TRUE(after.open.empty());
  if (interrupted && known) {
    EXPECT_EQ("DIRECTION_DOWN", interrupted->direction);
    ExpectHealedAttempt(after, *interrupted, c.point, interrupted->run_id, 0,
                        true);
  }
  RunResult validate = RunMigledger({"validate"}, project, target->env());
  EXPECT_EQ(0, validate.exit_code)
      << "validate after recover: " << Describe(validate);
  RunResult verify = RunMigledger({"audit", "verify"}, project);
  EXPECT_EQ(0, verify.exit_code) << Describe(verify);

  // Marker rows and tables agree, and exactly the committed downs happened.
  TestTarget::State st = target->Snapshot(kSmallMigrations);
  EXPECT_EQ("", st.error);
  if (reverted >= 0) {
    std::set<std::string> want;
    for (int n = 1; n <= kSmallMigrations - reverted; ++n) want.insert(V(n));
    EXPECT_EQ(want, st.markers);
  }
  for (int n = 1; n <= kSmallMigrations; ++n) {
    std::string table = "t" + std::to_string(n);
    bool marked = st.markers.count(V(n)) > 0;
    EXPECT_EQ(marked, st.rows.count(table) > 0)
        << table << " vs its marker row";
    if (marked && st.rows.count(table)) {
      EXPECT_EQ(kRowsPerTable, st.rows[table]) << "rows of " << table;
    }
  }

  // And the reverted ones apply again cleanly.
  RunResult again = RunMigledger({"apply"}, project, target->env());
  ASSERT_EQ(0, again.exit_code) << Describe(again);
  std::set<std::string> reapplied = AppliedVersions(again);
  EXPECT_EQ(kSmallMigrations - st.markers.size(), reapplied.size())
      << Describe(again);
  Expected x;
  x.each_applied_once_in_ledger = false;
  ExpectComplete(project, *target, x);
}

INSTANTIATE_TEST_SUITE_P(AllPoints, DownCrashTest,
                         ::testing::ValuesIn(DownCases()), DownCaseName);

}  // namespace
}  // namespace migledger::testing
