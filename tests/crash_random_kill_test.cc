// Crash tests, kills at moments nobody chose: 30 migrations killed at random
// point:N until an apply completes (seeded, time-bounded:
// MIGLEDGER_CRASH_SEED, MIGLEDGER_CRASH_SECONDS, default 20 per target), and
// `init`, `apply`, `baseline` of a new project killed before the ledger's
// format marker and at random moments.

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
// 2. Randomized kill loop
// ---------------------------------------------------------------------------

constexpr int kRandomMigrations = 30;

std::vector<MigrationFiles> ThirtyMigrations() {
  std::vector<MigrationFiles> ms;
  for (int n = 1; n <= kRandomMigrations; ++n) {
    // Every fifth one is a no-transaction migration. Idempotent: the loop
    // may kill at apply.between_statements_no_tx, after which re-running the
    // unacknowledged statement is correct (see IdempotentNoTxMigration).
    std::string up =
        n % 5 == 3 ? IdempotentNoTxMigration(n, 1) : TxMigration(n, 1);
    ms.push_back({V(n), "m" + std::to_string(n), up, ""});
  }
  return ms;
}

class RandomKillTest : public ::testing::TestWithParam<TargetKind> {};

TEST_P(RandomKillTest, KilledAnywhereAnyNumberOfTimes) {
  if (!CrashPointsEnabled())
    GTEST_SKIP() << "built without MIGLEDGER_CRASH_POINTS";
  const TargetKind kind = GetParam();
  if (kind == TargetKind::kPostgres && !PgFromEnv())
    GTEST_SKIP() << "PGTEST_URI not set";

  uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("MIGLEDGER_CRASH_SEED"); s && *s)
    seed = std::strtoull(s, nullptr, 10);
  int seconds = 20;
  if (const char* s = std::getenv("MIGLEDGER_CRASH_SECONDS"); s && *s)
    seconds = std::atoi(s);
  std::cout << "[ seed     ] MIGLEDGER_CRASH_SEED=" << seed << " ("
            << KindName(kind) << ")" << std::endl;
  RecordProperty("seed", std::to_string(seed));
  SCOPED_TRACE("MIGLEDGER_CRASH_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  // Every point a run without an audit store can reach (unknown new points
  // included: at worst the run completes and ends the round).
  std::vector<std::string> points;
  for (const char* p : kCrashPoints) {
    if (ApplyHits(p, true, false) != 0) points.push_back(p);
  }

  int rounds = 0, kills = 0, recovers = 0;
  do {
    ++rounds;
    TempDir dir;
    const std::string project = dir.path();
    auto target = TestTarget::Create(kind, project);
    ASSERT_NE(nullptr, target);
    MakeProject(project, target->url());
    WriteMigrations(project, ThirtyMigrations());
    // The state the target must reach: every version, one row per table.
    std::set<std::string> expected_versions;
    std::map<std::string, int> expected_rows;
    for (int n = 1; n <= kRandomMigrations; ++n) {
      expected_versions.insert(V(n));
      expected_rows["t" + std::to_string(n)] = 1;
    }

    for (int iter = 0;; ++iter) {
      const bool last =
          std::chrono::steady_clock::now() >= deadline || iter >= 300;
      auto env = target->env();
      std::string spec = "none";
      if (!last) {
        std::string point = points[rng() % points.size()];
        // The ledger exists after the first run: pick another point.
        while (iter > 0 && IsLedgerCreationPoint(point))
          point = points[rng() % points.size()];
        // Per-step points are hit many times per run; others once.
        bool per_step = point.rfind("apply.", 0) == 0 && !IsRunLevel(point);
        int hit = per_step ? 1 + static_cast<int>(rng() % 6) : 1;
        spec = CrashSpec(point, hit);
        env["MIGLEDGER_CRASH_AT"] = spec;
      }
      RunResult r = RunMigledger({"apply"}, project, env);
      if (r.exit_code == 0) break;
      ASSERT_FALSE(last) << "apply without a crash point failed: "
                         << Describe(r);
      ASSERT_EQ(SIGKILL, r.signal)
          << "round " << rounds << ", iteration " << iter << ", " << spec
          << ": " << Describe(r);
      ++kills;
      RunResult verify = RunMigledger({"audit", "verify"}, project);
      // Killed while creating the ledger: a reader sees no ledger yet.
      const int verify_exit = IsLedgerCreationPoint(spec) ? 2 : 0;
      ASSERT_EQ(verify_exit, verify.exit_code)
          << "after a kill at " << spec << ": " << Describe(verify);
      if (rng() % 4 == 0) {
        ++recovers;
        RunResult rec = RunMigledger({"recover"}, project, target->env());
        ASSERT_EQ(0, rec.exit_code)
            << "recover after a kill at " << spec << ": " << Describe(rec);
      }
    }
    TestTarget::State st = target->Snapshot(kRandomMigrations);
    EXPECT_EQ(expected_versions, st.markers) << "round " << rounds;
    EXPECT_EQ(expected_rows, st.rows) << "round " << rounds;
    Expected x;
    x.migrations = kRandomMigrations;
    x.rows_per_table = 1;
    ExpectComplete(project, *target, x);
    if (HasFailure()) break;
  } while (std::chrono::steady_clock::now() < deadline);
  std::cout << "[ random   ] " << KindName(kind) << ": " << rounds
            << " round(s), " << kills << " kill(s), " << recovers
            << " extra recover run(s)" << std::endl;
}

INSTANTIATE_TEST_SUITE_P(Targets, RandomKillTest,
                         ::testing::Values(TargetKind::kSqlite,
                                           TargetKind::kPostgres),
                         [](const ::testing::TestParamInfo<TargetKind>& i) {
                           return std::string(KindName(i.param));
                         });

// ---------------------------------------------------------------------------
// Killed while a new ledger is created
// ---------------------------------------------------------------------------

// The first commands of a project, each of which creates its ledger.
struct BootstrapCommand {
  const char* name;
  std::vector<std::string> args;
};

std::vector<BootstrapCommand> BootstrapCommands() {
  return {{"init", {"init", "--target", "sqlite:app.db"}},
          {"apply", {"apply"}},
          {"baseline", {"baseline", "--version", "0002", "--reason", "r"}}};
}

// A project for `c`: `init` gets an empty directory, the others a project
// with FourMigrations and no ledger yet.
void BootstrapProject(const BootstrapCommand& c, const std::string& project,
                      const TestTarget& target) {
  fs::create_directories(project);
  if (std::string(c.name) == "init") return;
  WriteConfig(project, target.url(), "");
  WriteMigrations(project, FourMigrations(false, false));
}

// Whatever the killed bootstrap left, the project works: the ledger
// verifies, `status` reads it, and `apply` (after running the killed command
// again) brings the target up to date with a ledger that has its identity.
void ExpectBootstrapHealed(const BootstrapCommand& c,
                           const std::string& project, const TestTarget& target,
                           const std::string& context) {
  SCOPED_TRACE(context);
  const bool init = std::string(c.name) == "init";
  if (!init) {  // (init may not have written migledger.toml yet)
    RunResult status = RunMigledger({"status"}, project, target.env());
    EXPECT_EQ(0, status.exit_code) << "status: " << Describe(status);
  }
  RunResult again = RunMigledger(c.args, project, target.env());
  ASSERT_EQ(0, again.exit_code) << c.name << " again: " << Describe(again);
  if (init) WriteMigrations(project, FourMigrations(false, false));
  RunResult apply = RunMigledger({"apply"}, project, target.env());
  ASSERT_EQ(0, apply.exit_code) << "apply: " << Describe(apply);
  RunResult verify = RunMigledger({"audit", "verify"}, project);
  EXPECT_EQ(0, verify.exit_code) << "audit verify: " << Describe(verify);
  RunResult digest = RunMigledger({"audit", "digest"}, project);
  EXPECT_EQ(0, digest.exit_code) << Describe(digest);
  EXPECT_TRUE(
      std::regex_search(digest.out, std::regex("ledger_id: [0-9a-f]{32}\\n")))
      << digest.out;
}

void PrintTo(const BootstrapCommand& c, std::ostream* os) { *os << c.name; }

class BootstrapKillTest : public ::testing::TestWithParam<BootstrapCommand> {};

// RocksDB has created the ledger (CURRENT is there), its format marker is
// not written yet: the next command initializes it instead of refusing it.
TEST_P(BootstrapKillTest, KilledBeforeTheFormatMarkerTheNextRunInitializes) {
  if (!CrashPointsEnabled())
    GTEST_SKIP() << "built without MIGLEDGER_CRASH_POINTS";
  const BootstrapCommand& c = GetParam();
  TempDir dir;
  const std::string project = dir / "project";
  auto target = TestTarget::Create(TargetKind::kSqlite, dir.path());
  ASSERT_NE(nullptr, target);
  BootstrapProject(c, project, *target);
  auto env = target->env();
  env["MIGLEDGER_CRASH_AT"] = "ledger.before_format_marker";
  RunResult killed = RunMigledger(c.args, project, env);
  ASSERT_EQ(SIGKILL, killed.signal) << Describe(killed);
  ASSERT_TRUE(fs::exists(project + "/.migledger/CURRENT"));
  // A reader: no ledger yet, as an instant before (not "corrupt", exit 6).
  RunResult verify = RunMigledger({"audit", "verify"}, project);
  EXPECT_EQ(2, verify.exit_code) << Describe(verify);
  EXPECT_NE(std::string::npos, verify.err.find("no ledger at")) << verify.err;
  ExpectBootstrapHealed(c, project, *target, "killed before the marker");
}

// SIGKILL at random moments of a bootstrap (seeded; the moments spread over
// the time an uninterrupted run of the same command takes here).
TEST_P(BootstrapKillTest, KilledAtRandomMomentsTheProjectStillWorks) {
  const BootstrapCommand& c = GetParam();
  uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("MIGLEDGER_CRASH_SEED"); s && *s)
    seed = std::strtoull(s, nullptr, 10);
  std::cout << "[ seed     ] MIGLEDGER_CRASH_SEED=" << seed << " (" << c.name
            << ")" << std::endl;
  RecordProperty("seed", std::to_string(seed));
  std::mt19937_64 rng(seed);
  // How long the whole command takes on this machine, uninterrupted.
  int64_t span_us = 0;
  {
    TempDir dir;
    const std::string project = dir / "project";
    auto target = TestTarget::Create(TargetKind::kSqlite, dir.path());
    ASSERT_NE(nullptr, target);
    BootstrapProject(c, project, *target);
    const auto start = std::chrono::steady_clock::now();
    RunResult r = RunMigledger(c.args, project, target->env());
    span_us = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
    ASSERT_EQ(0, r.exit_code) << Describe(r);
  }
  constexpr int kRounds = 25;
  int killed_runs = 0, with_current = 0;
  for (int round = 0; round < kRounds && !HasFailure(); ++round) {
    TempDir dir;
    const std::string project = dir / "project";
    auto target = TestTarget::Create(TargetKind::kSqlite, dir.path());
    ASSERT_NE(nullptr, target);
    BootstrapProject(c, project, *target);
    const int64_t delay_us = static_cast<int64_t>(rng() % (span_us + 1));
    pid_t pid = StartMigledger(c.args, project, target->env());
    ASSERT_GT(pid, 0);
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    kill(pid, SIGKILL);
    int wstatus = 0;
    ASSERT_EQ(pid, waitpid(pid, &wstatus, 0));
    if (WIFSIGNALED(wstatus)) ++killed_runs;
    if (fs::exists(project + "/.migledger/CURRENT")) ++with_current;
    ExpectBootstrapHealed(c, project, *target,
                          "round " + std::to_string(round) + ", killed after " +
                              std::to_string(delay_us) + " us");
  }
  std::cout << "[ random   ] " << c.name << ": " << kRounds << " round(s), "
            << killed_runs << " killed before they ended, " << with_current
            << " left a ledger directory" << std::endl;
}

INSTANTIATE_TEST_SUITE_P(
    Commands, BootstrapKillTest, ::testing::ValuesIn(BootstrapCommands()),
    [](const ::testing::TestParamInfo<BootstrapCommand>& i) {
      return std::string(i.param.name);
    });

}  // namespace
}  // namespace migledger::testing
