// Server-stop tests: the PostgreSQL server dies (`pg_ctl stop -m immediate`)
// while migledger applies, right before, during (COMMIT or a statement sent,
// its answer not read) and right after each COMMIT and each mirror write, on
// the transactional and the no-transaction path; then the server starts
// again and the next apply must finish the job:
//
//   - every migration ran exactly once (marker rows, tables, row counts),
//   - `audit verify` and `validate` pass (no fork: the run that lost its
//     COMMIT's answer recorded nothing that claims a result),
//   - no step_failed for a step that committed, one terminal event per
//     attempt, and the next run says how it learned an unknown outcome.
//
// The server is stopped at a crash point (common/crash_points.h) by the
// MIGLEDGER_CRASH_RUN command, so the client goes on and meets the dead
// connection at that exact point. ServerStopLoopTest stops it at random
// moments instead (seeded: MIGLEDGER_SERVER_STOP_SEED reruns a case).
//
// These tests stop their server, so they start their own with
// scripts/pg-throwaway (never the one PGTEST_URI names, which other tests
// share); they run when PGTEST_URI is set, like every PostgreSQL test.

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/crash_points.h"
#include "tests/test_util.h"

namespace migledger::testing {
namespace {
namespace fs = std::filesystem;
using Rows = std::vector<std::string>;

constexpr int kExitTargetUnavailable = 7;  // cli/exit_codes.h

// A throwaway server of this test binary's own (scripts/pg-throwaway).
class OwnServer {
 public:
  // Starts it and points test_util's PgServer helpers at it.
  static bool Start() {
    char tmpl[] = "/tmp/mlsk-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return false;
    dir_ = tmpl;
    const std::string env = dir_ + ".env";
    const std::string cmd = std::string(MIGLEDGER_SOURCE_DIR) +
                            "/scripts/pg-throwaway start " + ShellQuote(dir_) +
                            " >" + ShellQuote(env) + " 2>&1";
    const int rc = std::system(cmd.c_str());
    const std::string out = ReadFile(env);
    fs::remove(env);
    if (rc != 0) {
      std::cerr << "pg-throwaway start failed:\n" << out << "\n";
      return false;
    }
    for (const auto& line : Lines(out)) {
      const std::string p = "export PGTEST_PORT=";
      if (line.rfind(p, 0) == 0) port_ = line.substr(p.size());
    }
    if (port_.empty()) return false;
    setenv("PGTEST_HOST", dir_.c_str(), 1);
    setenv("PGTEST_PORT", port_.c_str(), 1);
    return true;
  }
  static void Remove() {
    if (dir_.empty()) return;
    const std::string cmd = std::string(MIGLEDGER_SOURCE_DIR) +
                            "/scripts/pg-throwaway stop " + ShellQuote(dir_) +
                            " >/dev/null 2>&1";
    (void)std::system(cmd.c_str());
    dir_.clear();
  }
  // The shell command that stops the server at once, as a crash does.
  static std::string StopCommand() {
    return PgCtl("-m immediate -w -t 60 stop");
  }
  static bool Stop() { return std::system(StopCommand().c_str()) == 0; }
  // With fsync off: only processes die here, never the machine, so what the
  // server wrote survives; and its crash recovery then does not sync every
  // file of the cluster first (3 s of each restart, measured).
  static bool Restart() {
    return std::system(PgCtl("-l " + ShellQuote(dir_ + "/log/postgres.log") +
                             " -o '-c fsync=off' -w -t 60 start")
                           .c_str()) == 0;
  }

 private:
  static std::string PgCtl(const std::string& args) {
    const std::string as_pg = geteuid() == 0 ? "runuser -u postgres -- " : "";
    return as_pg + "/usr/lib/postgresql/15/bin/pg_ctl -D " +
           ShellQuote(dir_ + "/data") + " " + args + " >/dev/null 2>&1";
  }
  static std::string dir_;
  static std::string port_;
};
std::string OwnServer::dir_;
std::string OwnServer::port_;

// ---------------------------------------------------------------------------
// The ledger as `audit log --format jsonl` shows it
// ---------------------------------------------------------------------------

int CountErrorLines(const std::string& err) {
  int n = 0;
  for (const auto& l : Lines(err)) n += l.rfind("error: ", 0) == 0;
  return n;
}

// ---------------------------------------------------------------------------
// The migrations and what must be true after they all ran
// ---------------------------------------------------------------------------

struct Mig {
  std::string version;
  std::string sql;
  bool no_tx = false;
  std::string table;
  int rows = 0;  // -1: a no-tx file (its statements are checked by name)
};

// A no-transaction file whose statements, completed just before the
// connection died, are found done on resume (they create what exists).
std::string NoTxSql(const std::string& t) {
  return "-- migledger:no-transaction\nCREATE TABLE " + t +
         " (id int);\nCREATE INDEX " + t + "_idx ON " + t + " (id);\n";
}

// Transactional files insert one row each (run twice: two rows).
std::string TxSql(const std::string& t) {
  return "CREATE TABLE " + t + " (id int);\nINSERT INTO " + t +
         " VALUES (1);\n";
}

std::vector<Mig> Migrations(int n, bool with_no_tx) {
  std::vector<Mig> ms;
  for (int i = 1; i <= n; ++i) {
    char v[16];
    std::snprintf(v, sizeof v, "%04d", i);
    const std::string t = "t" + std::string(v);
    if (with_no_tx && i % 4 == 2) {
      ms.push_back({v, NoTxSql(t), true, t, -1});
    } else if (with_no_tx && i % 4 == 0) {
      // Its own BEGIN ... COMMIT block: acknowledged with that COMMIT.
      ms.push_back({v,
                    "-- migledger:no-transaction\nBEGIN;\nCREATE TABLE " + t +
                        " (id int);\nINSERT INTO " + t +
                        " VALUES (1);\nCOMMIT;\n",
                    true, t, 1});
    } else {
      ms.push_back({v, TxSql(t), false, t, 1});
    }
  }
  return ms;
}

void WriteMigrations(const std::string& project, const std::vector<Mig>& ms) {
  for (const auto& m : ms) {
    WriteFile(project + "/migrations/" + m.version + "_" + m.table + ".up.sql",
              m.sql);
  }
}

// Everything ran exactly once, ledger and target agree, and the history
// holds no failure of a step that committed.
void ExpectFinished(const std::string& project, const std::string& uri,
                    const std::vector<Mig>& ms) {
  Rows markers = PgServer::Query(
      uri, "SELECT version || '|' || attempt_id FROM migledger.applied");
  std::map<std::string, std::string> attempt_of;  // version -> attempt
  for (const auto& row : markers) {
    const size_t bar = row.find('|');
    const std::string version = row.substr(0, bar);
    EXPECT_EQ(0u, attempt_of.count(version)) << "two markers of " << version;
    attempt_of[version] = row.substr(bar + 1);
  }
  EXPECT_EQ(ms.size(), attempt_of.size()) << "marker rows";
  // One query: each table's rows (a no-tx file's: whether its index exists).
  std::string sql = "SELECT ''";
  for (const auto& m : ms) {
    EXPECT_EQ(1u, attempt_of.count(m.version)) << "no marker of " << m.version;
    sql += m.rows >= 0 ? " || (SELECT count(*) FROM " + m.table + ") || ' '"
                       : " || (SELECT count(*) FROM pg_indexes WHERE "
                         "indexname = '" +
                             m.table + "_idx') || ' '";
  }
  Rows counts = PgServer::Query(uri, sql);
  std::string expected;
  for (size_t i = 0; i < ms.size(); ++i) expected += "1 ";
  EXPECT_EQ(Rows{expected}, counts)
      << "rows per table (or index per no-tx file): every migration must "
         "have run exactly once";
  RunResult verify = RunMigledger({"audit", "verify"}, project);
  EXPECT_EQ(0, verify.exit_code) << verify.out << verify.err;
  RunResult validate = RunMigledger({"validate"}, project);
  EXPECT_EQ(0, validate.exit_code) << validate.out << validate.err;

  std::map<std::string, int> started, terminals, applied;
  std::set<std::string> failed_attempts, applied_attempts;
  for (const auto& e : ReadAuditLog(project)) {
    if (e.type == "step_started") ++started[e.attempt_id];
    if (IsTerminal(e.type)) ++terminals[e.attempt_id];
    if (e.type == "step_failed") failed_attempts.insert(e.attempt_id);
    if (e.type == "step_applied") applied_attempts.insert(e.attempt_id);
    if (e.type == "step_applied" ||
        (e.type == "step_recovered" && e.outcome == "RECOVERED_COMMITTED")) {
      ++applied[e.version];
    }
  }
  for (const auto& [attempt, n] : started) {
    EXPECT_EQ(1, n) << "attempt " << attempt << " started " << n << " times";
    EXPECT_EQ(1, terminals[attempt])
        << "attempt " << attempt << " has " << terminals[attempt]
        << " terminal events";
  }
  for (const auto& m : ms) {
    EXPECT_EQ(1, applied[m.version]) << m.version << " applied in the ledger";
    EXPECT_EQ(0u, failed_attempts.count(attempt_of[m.version]))
        << "step_failed for the attempt of " << m.version << " that committed";
  }
  for (const auto& a : failed_attempts) {
    EXPECT_EQ(0u, applied_attempts.count(a))
        << "attempt " << a << " both failed and applied";
  }
}

// The own server starts with the first test that needs it and is removed
// at the end of the process.
class ServerStopEnv : public ::testing::Environment {
 public:
  void TearDown() override { OwnServer::Remove(); }
  static bool Started() {
    static const bool started = OwnServer::Start();
    return started;
  }
};

#define SKIP_WITHOUT_OWN_SERVER()                                        \
  do {                                                                   \
    if (!PgServer::Available()) GTEST_SKIP() << "PGTEST_URI not set";    \
    if (!CrashPointsEnabled())                                           \
      GTEST_SKIP() << "built without -DMIGLEDGER_CRASH_POINTS=ON";       \
    ASSERT_TRUE(ServerStopEnv::Started()) << "own server did not start"; \
  } while (0)

int db_counter = 0;

struct Project {
  TempDir dir;
  std::string db;
  std::string uri;
  explicit Project(const std::vector<Mig>& ms) {
    db = "sk" + std::to_string(getpid()) + "_" + std::to_string(++db_counter);
    uri = PgServer::CreateDatabase(db);
    MakeProject(dir.path(), uri);
    WriteMigrations(dir.path(), ms);
  }
  ~Project() { PgServer::DropDatabase(db); }
};

// ---------------------------------------------------------------------------
// The server stopped at each point, each hit
// ---------------------------------------------------------------------------

struct StopCase {
  std::string point;
  bool no_tx;
};

// Every hit of the point: the server stops there, the run ends (exit 0 when
// nothing it still had to do needed the server, else 7 with one error
// line), the server starts again and the next apply finishes the job.
void StopAtEveryHit(const StopCase& c) {
  const std::vector<Mig> ms = Migrations(c.no_tx ? 4 : 3, c.no_tx);
  int reached = 0;
  for (int hit = 1; hit <= 16; ++hit) {
    SCOPED_TRACE(c.point + ":" + std::to_string(hit));
    Project p(ms);
    const std::string flag = p.dir / "stopped";
    RunResult first = RunMigledger(
        {"apply"}, p.dir.path(),
        {{"MIGLEDGER_CRASH_AT", c.point + ":" + std::to_string(hit)},
         {"MIGLEDGER_CRASH_RUN",
          OwnServer::StopCommand() + "; touch " + ShellQuote(flag)}});
    const bool stopped = fs::exists(flag);
    if (!stopped) {
      EXPECT_EQ(0, first.exit_code) << first.err;
      break;
    }
    ++reached;
    ASSERT_TRUE(OwnServer::Restart()) << "the server did not start again";
    EXPECT_TRUE(first.exit_code == 0 ||
                first.exit_code == kExitTargetUnavailable)
        << first.exit_code << ": " << first.err;
    if (first.exit_code != 0) {
      EXPECT_EQ(1, CountErrorLines(first.err)) << first.err;
    }
    EXPECT_FALSE(Contains(first.err, "forks")) << first.err;
    const bool unknown = Contains(first.err, "is unknown");

    RunResult second = RunMigledger({"apply"}, p.dir.path());
    EXPECT_EQ(0, second.exit_code) << second.out << second.err;
    if (unknown) {
      // How it learned the outcome: pulled from the mirror, or reconciled
      // from the marker row (a step_recovered).
      EXPECT_TRUE(Contains(second.out, "recovered version")) << second.out;
    }
    ExpectFinished(p.dir.path(), p.uri, ms);
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_GT(reached, 0) << c.point << " was never reached";
}

std::vector<StopCase> StopCases() {
  std::vector<StopCase> cases;
  for (bool no_tx : {false, true}) {
    for (const char* p :
         {"apply.before_commit", "postgres.commit_sent", "apply.after_commit",
          "mirror.before_commit", "mirror.after_commit"}) {
      cases.push_back({p, no_tx});
    }
  }
  cases.push_back({"apply.before_commit_no_tx", true});
  cases.push_back({"postgres.statement_sent", true});
  return cases;
}

// Three transactional migrations.
TEST(ServerStopTest, AtEveryCommitAndMirrorWriteOfTransactionalSteps) {
  SKIP_WITHOUT_OWN_SERVER();
  for (const auto& c : StopCases()) {
    if (c.no_tx) continue;
    SCOPED_TRACE(c.point);
    StopAtEveryHit(c);
    if (HasFailure()) break;
  }
}

// Transactional, no-transaction, transactional, and a no-transaction file
// with its own BEGIN ... COMMIT block.
TEST(ServerStopTest, AtEveryCommitStatementAndMirrorWriteOfNoTxSteps) {
  SKIP_WITHOUT_OWN_SERVER();
  for (const auto& c : StopCases()) {
    if (!c.no_tx) continue;
    SCOPED_TRACE(c.point);
    StopAtEveryHit(c);
    if (HasFailure()) break;
  }
}

// Every server-stop point is exercised above.
TEST(ServerStopPoints, EveryOneIsTested) {
  std::set<std::string> tested;
  for (const auto& c : StopCases()) tested.insert(c.point);
  for (const char* p : kServerStopPoints) {
    EXPECT_TRUE(tested.count(p)) << p << " is not exercised";
  }
}

// ---------------------------------------------------------------------------
// A COMMIT durable on the server whose answer never reaches the client
// ---------------------------------------------------------------------------

// A shell script for MIGLEDGER_CRASH_RUN: from now on commits wait for a
// synchronous standby that does not exist (synchronous_commit goes from
// local to on; the server names a standby from the start), so the next one
// the client sends is written and flushed on the server, but never
// answered. A watcher then stops the server while that COMMIT waits, and
// `flag` is created.
std::string HoldCommitScript(const std::string& flag) {
  const std::string psql = "psql -X -q -At -h " +
                           ShellQuote(getenv("PGTEST_HOST")) + " -p " +
                           getenv("PGTEST_PORT") + " -U migledger -d postgres";
  return "#!/bin/sh\n"
         // Wait until the reload reached every session (this one included:
         // the postmaster signals them all at once).
         "i=0; until [ \"$(" +
         psql +
         " -c \"ALTER SYSTEM SET synchronous_commit = on\" "
         "-c 'SELECT pg_reload_conf()' -c 'SELECT pg_sleep(0.01)' "
         "-c 'SHOW synchronous_commit' | tail -1)\" = on ] || [ $i -ge 200 ]; "
         "do i=$((i+1)); done\n"
         "(\n"
         "  i=0\n"
         "  until [ \"$(" +
         psql +
         " -c \"SELECT count(*) FROM pg_stat_activity WHERE wait_event = "
         "'SyncRep' AND application_name = 'migledger'\")\" = 1 ] || "
         "[ $i -ge 1200 ]; do sleep 0.05; i=$((i+1)); done\n"
         "  " +
         psql +
         " -c \"ALTER SYSTEM SET synchronous_commit = local\"\n"
         "  " +
         OwnServer::StopCommand() +
         "\n"
         "  touch " +
         ShellQuote(flag) +
         "\n"
         ") </dev/null >/dev/null 2>&1 &\n";
}

// The case the issue reported: the server dies after the step's COMMIT is
// durable and before its answer arrives (here: while it waits for a
// synchronous standby). The run must record no result for the step (a
// step_failed there took the target sequence the mirror already held, and
// every later run refused with a fork); the next run pulls the outcome
// from the mirror and says so.
TEST(ServerStopTest, CommitDurableButItsAnswerLost) {
  SKIP_WITHOUT_OWN_SERVER();
  const std::string base = std::string(getenv("PGTEST_HOST"));
  auto admin = [&](const std::string& sql) {
    PgServer::Query("postgresql:///postgres?host=" + base +
                        "&port=" + getenv("PGTEST_PORT") + "&user=migledger",
                    sql);
  };
  admin("ALTER SYSTEM SET synchronous_standby_names = 'nobody'");
  admin("ALTER SYSTEM SET synchronous_commit = local");
  admin("SELECT pg_reload_conf()");
  struct HoldCase {
    bool no_tx;
    std::string point;  // the COMMIT after it is held
    int hit;
  };
  for (const HoldCase& c : std::vector<HoldCase>{
           {false, "apply.after_step_started", 1},       // a transactional step
           {false, "apply.after_step_started", 3},       // ... with RunFinished
           {true, "apply.after_step_started", 2},        // a no-tx statement
           {true, "apply.between_statements_no_tx", 1},  // its ack's mirror
           {true, "apply.after_step_started", 4}}) {  // a no-tx file's COMMIT
    SCOPED_TRACE(c.point + ":" + std::to_string(c.hit) +
                 (c.no_tx ? " no-tx" : " tx"));
    const std::vector<Mig> ms = Migrations(c.no_tx ? 4 : 3, c.no_tx);
    Project p(ms);
    const std::string flag = p.dir / "stopped";
    const std::string script = p.dir / "hold.sh";
    WriteFile(script, HoldCommitScript(flag));
    RunResult first = RunMigledger(
        {"apply"}, p.dir.path(),
        {{"MIGLEDGER_CRASH_AT", c.point + ":" + std::to_string(c.hit)},
         {"MIGLEDGER_CRASH_RUN", "sh " + ShellQuote(script)}});
    ASSERT_TRUE(WaitUntil([&] { return fs::exists(flag); }, 120))
        << "the server was not stopped: " << first.err;
    ASSERT_TRUE(OwnServer::Restart());
    EXPECT_EQ(kExitTargetUnavailable, first.exit_code) << first.err;
    EXPECT_EQ(1, CountErrorLines(first.err)) << first.err;
    EXPECT_TRUE(Contains(first.err, "is unknown")) << first.err;
    RunResult log = RunMigledger({"audit", "log"}, p.dir.path());
    EXPECT_FALSE(Contains(log.out, "step_failed")) << log.out;
    // A reader may learn the outcome first (status pulls the mirror); the
    // writer after it records how it was learned all the same.
    const bool status_first = c.hit % 2 == 1;
    if (status_first) {
      RunResult st = RunMigledger({"status"}, p.dir.path());
      EXPECT_EQ(0, st.exit_code) << st.err;
    }
    RunResult second = RunMigledger({"apply"}, p.dir.path());
    EXPECT_EQ(0, second.exit_code) << second.out << second.err;
    EXPECT_FALSE(Contains(second.err, "forks")) << second.err;
    if (!status_first) {
      EXPECT_TRUE(Contains(second.out, "recovered version")) << second.out;
    }
    // The ledger says how the outcome was learned: an outcome_learned for
    // the attempt whose step_applied came from the mirror, or a
    // step_recovered found from the marker row.
    int learned = 0, recovered = 0;
    std::set<std::string> applied_attempts;
    for (const auto& e : ReadAuditLog(p.dir.path())) {
      if (e.type == "step_applied") applied_attempts.insert(e.attempt_id);
      if (e.type == "step_recovered") ++recovered;
      if (e.type == "outcome_learned") {
        ++learned;
        EXPECT_TRUE(applied_attempts.count(e.attempt_id))
            << "outcome_learned of an attempt without step_applied before it";
      }
    }
    if (!c.no_tx) {
      EXPECT_EQ(1, learned) << "one outcome_learned for the lost COMMIT";
    } else {
      EXPECT_EQ(1, learned + recovered);
    }
    ExpectFinished(p.dir.path(), p.uri, ms);
    if (HasFailure()) break;
  }
  admin("ALTER SYSTEM RESET synchronous_standby_names");
  admin("ALTER SYSTEM RESET synchronous_commit");
  admin("SELECT pg_reload_conf()");
}

// ---------------------------------------------------------------------------
// The server stopped at random moments
// ---------------------------------------------------------------------------

// 60 migrations (a quarter of them without a transaction); apply in the
// background, stop the server after a random delay, start it again, until
// an apply finishes with the server up (at most 12 rounds). No run may
// report a fork; at the end everything ran exactly once.
TEST(ServerStopLoopTest, RandomStopsNeverForkTheHistory) {
  SKIP_WITHOUT_OWN_SERVER();
  uint32_t seed = std::random_device{}();
  if (const char* s = std::getenv("MIGLEDGER_SERVER_STOP_SEED"))
    seed = static_cast<uint32_t>(std::strtoul(s, nullptr, 10));
  std::cout << "seed " << seed << " (MIGLEDGER_SERVER_STOP_SEED=" << seed
            << " reruns it)\n";
  SCOPED_TRACE("MIGLEDGER_SERVER_STOP_SEED=" + std::to_string(seed));
  std::mt19937 rng(seed);
  const std::vector<Mig> ms = Migrations(60, true);
  Project p(ms);
  int stops = 0, unknown = 0;
  bool finished = false;
  for (int round = 1; round <= 12 && !finished; ++round) {
    const std::string err = p.dir / ("err." + std::to_string(round));
    pid_t pid = StartMigledger({"apply"}, p.dir.path(), {}, err);
    ASSERT_GT(pid, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(
        std::uniform_int_distribution<int>(0, 300)(rng)));
    ASSERT_TRUE(OwnServer::Stop());
    ++stops;
    int status = 0;
    ASSERT_TRUE(WaitForExit(pid, 120, &status)) << "apply did not end";
    ASSERT_TRUE(OwnServer::Restart());
    ASSERT_TRUE(WIFEXITED(status)) << "apply ended by a signal";
    const int rc = WEXITSTATUS(status);
    const std::string text = ReadFile(err);
    ASSERT_TRUE(rc == 0 || rc == kExitTargetUnavailable)
        << "round " << round << ": exit " << rc << ": " << text;
    ASSERT_FALSE(Contains(text, "forks")) << text;
    unknown += Contains(text, "is unknown");
    finished = rc == 0;
  }
  std::cout << stops << " stop(s), " << unknown << " unknown outcome(s)\n";
  RunResult last = RunMigledger({"apply"}, p.dir.path());
  ASSERT_EQ(0, last.exit_code) << last.out << last.err;
  ExpectFinished(p.dir.path(), p.uri, ms);
}

}  // namespace
}  // namespace migledger::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new migledger::testing::ServerStopEnv());
  return RUN_ALL_TESTS();
}
