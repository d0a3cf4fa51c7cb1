// The crash harness: what every crash test needs to kill the real migledger
// binary at a named crash point (common/crash_points.h,
// MIGLEDGER_CRASH_AT=name[:N]) and to check that the next run finishes the
// job on its own:
//
//   - every migration applied exactly once on the target (marker rows, the
//     tables, exact row counts),
//   - the ledger verifies (`audit verify`) and agrees with the target
//     (`validate`),
//   - every StepStarted attempt has exactly one terminal event
//     (step_applied, step_failed, step_reverted or step_recovered), and the
//     attempt the kill interrupted got the right one: a step_recovered with
//     the right outcome, or the step_applied / step_reverted the killed run
//     committed into the target's mirror, pulled back unchanged.
//
// The suites that use it are listed in tests/README.md. PostgreSQL cases run
// when PGTEST_URI (and PGTEST_PASSWORD) are set, e.g. under
// scripts/pg-throwaway run -- ...; each case gets a fresh database.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace migledger::testing {

constexpr int kExitBusyCode = 5;  // cli/exit_codes.h kExitBusy

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

// `n` as a four-digit version: V(7) == "0007".
std::string V(int n);

// The non-empty lines of `text`, without a trailing CR.
std::vector<std::string> NonEmptyLines(const std::string& text);

// Versions the run reports as applied ("applied  0001 t1 (1.2 ms)").
std::set<std::string> AppliedVersions(const RunResult& r);

// ---------------------------------------------------------------------------
// Targets: a SQLite file, or a fresh PostgreSQL database per test case
// ---------------------------------------------------------------------------

enum class TargetKind { kSqlite, kPostgres };

const char* KindName(TargetKind k);
void PrintTo(TargetKind k, std::ostream* os);

struct PgConfig {
  std::string uri;
  std::string password;
};

std::optional<PgConfig> PgFromEnv();

class TestTarget {
 public:
  // A fresh, empty target. SQLite: `dir`/app.db; PostgreSQL: a new database
  // (dropped again by the destructor). Returns null (with a test failure)
  // when the database cannot be created.
  static std::unique_ptr<TestTarget> Create(TargetKind kind,
                                            const std::string& dir) {
    std::unique_ptr<TestTarget> t(new TestTarget);
    t->kind_ = kind;
    if (kind == TargetKind::kSqlite) {
      t->sqlite_path_ = dir + "/app.db";
      t->url_ = "sqlite:" + t->sqlite_path_;
      return t;
    }
    auto pg = PgFromEnv();
    if (!pg) {
      ADD_FAILURE() << "PGTEST_URI is not set";
      return nullptr;
    }
    static std::atomic<int> counter{0};
    std::random_device rd;
    t->pg_ = *pg;
    t->db_name_ = "crash_" + std::to_string(getpid()) + "_" +
                  std::to_string(counter++) + "_" +
                  std::to_string(rd() % 100000);
    PsqlResult r = RunPsql(pg->uri, "CREATE DATABASE " + t->db_name_ + ";\n");
    if (r.exit_code != 0) {
      ADD_FAILURE() << "cannot create database " << t->db_name_ << ": "
                    << r.output;
      return nullptr;
    }
    t->url_ = WithDatabase(pg->uri, t->db_name_);
    t->env_["PGPASSWORD"] = pg->password;
    return t;
  }

  ~TestTarget() {
    if (kind_ == TargetKind::kPostgres && !db_name_.empty()) {
      // In the background: nothing waits for it.
      std::string cmd =
          "(PGPASSWORD=" + ShellQuote(pg_.password) + " psql -X -q " +
          ShellQuote(pg_.uri) + " -c " +
          ShellQuote("DROP DATABASE IF EXISTS " + db_name_ + " WITH (FORCE)") +
          " >/dev/null 2>&1 &)";
      (void)std::system(cmd.c_str());
    }
  }

  TargetKind kind() const { return kind_; }
  const std::string& url() const { return url_; }
  // Extra environment for RunMigledger (PGPASSWORD for PostgreSQL).
  const std::map<std::string, std::string>& env() const { return env_; }

  // Rows of a query, cells joined by '|'; one "<error: ...>" row on error.
  std::vector<std::string> Query(const std::string& sql) const {
    if (kind_ == TargetKind::kSqlite) return SqliteQuery(sqlite_path_, sql);
    PsqlResult r = RunPsql(url_, sql + ";\n");
    if (r.exit_code != 0) return {"<error: " + r.output + ">"};
    return r.rows;
  }

  std::string MarkerTable() const {
    return kind_ == TargetKind::kSqlite ? "migledger_applied"
                                        : "migledger.applied";
  }

  // What the target holds, read in one go (one psql run on PostgreSQL).
  struct State {
    std::set<std::string> markers;    // versions of the marker rows
    int marker_rows = 0;              // number of marker rows
    std::map<std::string, int> rows;  // existing tables among t1..tN -> rows
    std::string error;
  };

  // Tables are resolved like the migrations resolve them (through the
  // search_path on PostgreSQL, not a hard-coded schema).
  State Snapshot(int tables) const {
    State st;
    std::vector<std::string> rows;
    if (kind_ == TargetKind::kSqlite) {
      for (const auto& v : Query("SELECT version FROM " + MarkerTable())) {
        rows.push_back("m|" + v);
      }
      for (int n = 1; n <= tables; ++n) {
        std::string t = "t" + std::to_string(n);
        auto exists = Query(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='" +
            t + "'");
        if (exists.size() == 1 && exists[0] == "1") {
          auto count = Query("SELECT count(*) FROM " + t);
          rows.push_back("t|" + t + "|" + (count.empty() ? "?" : count[0]));
        } else if (exists.size() != 1 || exists[0] != "0") {
          rows.push_back(exists.empty() ? "<error: no rows>" : exists[0]);
        }
      }
    } else {
      std::string in;
      for (int n = 1; n <= tables; ++n) {
        in += std::string(n > 1 ? ", " : "") + "pg_catalog.to_regclass('t" +
              std::to_string(n) + "')";
      }
      rows = Query(
          "SELECT 'm|' || version FROM " + MarkerTable() +
          " UNION ALL SELECT 't|' || c.relname || '|' || "
          "(pg_catalog.xpath('/row/n/text()', pg_catalog.query_to_xml("
          "pg_catalog.format('SELECT count(*) AS n FROM %s', c.oid::regclass),"
          " false, true, '')))[1]::text FROM pg_catalog.pg_class c WHERE c.oid "
          "IN (" +
          in + ")");
    }
    for (const auto& r : rows) {
      if (r.rfind("m|", 0) == 0) {
        st.markers.insert(r.substr(2));
        ++st.marker_rows;
      } else if (r.rfind("t|", 0) == 0) {
        size_t bar = r.find('|', 2);
        st.rows[r.substr(2, bar - 2)] = std::atoi(r.c_str() + bar + 1);
      } else {
        st.error += r + "\n";
      }
    }
    return st;
  }

 private:
  TestTarget() = default;
  TargetKind kind_ = TargetKind::kSqlite;
  std::string url_;
  std::string sqlite_path_;
  PgConfig pg_;
  std::string db_name_;
  std::map<std::string, std::string> env_;
};

// ---------------------------------------------------------------------------
// Projects and migrations
// ---------------------------------------------------------------------------

struct MigrationFiles {
  std::string version, slug, up, down;
};

// migledger.toml with one target "dev" (like MakeProject), and optionally
// a central audit store.
void WriteConfig(const std::string& dir, const std::string& url,
                 const std::string& audit_store, int lock_timeout_ms = 2000);

void WriteMigrations(const std::string& project,
                     const std::vector<MigrationFiles>& ms);

// A transactional migration: CREATE TABLE tN + two rows. Not idempotent: if
// it ever ran twice the CREATE TABLE would fail.
std::string TxMigration(int n, int rows);

// A no-transaction migration of 1 + `rows` statements that are NOT safe to
// re-run: a second CREATE TABLE fails, a second INSERT adds a row (the table
// has no key), so exact row counts prove that no statement ran twice.
std::string NoTxMigration(int n, int rows);

// A no-transaction migration whose statements may run twice without harm.
// Only for runs killed at apply.between_statements_no_tx (or the random
// loop, which may pick that point): there the statement has completed on
// the target but its StatementApplied event was never written, so the tool
// cannot know it ran and legitimately runs it again on resume. The SQL
// (ON CONFLICT DO NOTHING) is valid for both SQLite and PostgreSQL.
std::string IdempotentNoTxMigration(int n, int rows);

constexpr int kSmallMigrations = 4;
constexpr int kRowsPerTable = 2;
constexpr int kStatementsPerStep = 1 + kRowsPerTable;

// Four migrations t1..t4; with `no_tx`, migration 2 is a no-transaction one.
std::vector<MigrationFiles> FourMigrations(bool no_tx, bool idempotent);

// ---------------------------------------------------------------------------
// The ledger, as `audit log --format jsonl` prints it
// ---------------------------------------------------------------------------

struct LedgerSummary {
  std::vector<LogEvent> events;
  std::map<std::string, LogEvent> started;   // attempt -> StepStarted
  std::map<std::string, int> started_count;  // attempt -> #StepStarted
  std::map<std::string, std::vector<LogEvent>>
      terminals;                                // attempt -> terminal events
  std::vector<std::string> open;                // attempts without terminal
  std::map<std::string, int> statements_acked;  // attempt -> #StatementApplied

  const LogEvent* Terminal(const std::string& attempt) const {
    auto it = terminals.find(attempt);
    return it == terminals.end() || it->second.empty() ? nullptr
                                                       : &it->second.front();
  }
};

LedgerSummary Summarize(std::vector<LogEvent> events);

LedgerSummary ReadSummary(const std::string& project);

// Every StepStarted attempt has exactly one terminal event, and every
// terminal event belongs to a started attempt.
void ExpectOneTerminalPerAttempt(const LedgerSummary& s);

// Each of `versions` went up exactly once according to the ledger: one
// step_applied or one step_recovered COMMITTED (direction up), not both.
void ExpectEachAppliedOnceInLedger(const LedgerSummary& s,
                                   const std::vector<std::string>& versions);

// ---------------------------------------------------------------------------
// Final-state checks
// ---------------------------------------------------------------------------

struct Expected {
  int migrations = kSmallMigrations;
  int rows_per_table = kRowsPerTable;
  bool each_applied_once_in_ledger = true;  // false after down + apply
};

// All migrations applied once on the target; ledger verifies and agrees.
// Returns the ledger as read for the checks.
LedgerSummary ExpectComplete(const std::string& project, const TestTarget& t,
                             const Expected& x);

// The jsonl lines of the ledger's events of one type (`audit log --type`).
std::string EventsOfType(const std::string& project, const std::string& type);

// The ledger verifies, and files, ledger and target agree.
void ExpectVerifiesAndValidates(const std::string& project,
                                const TestTarget& target);

// ---------------------------------------------------------------------------
// Crash points
// ---------------------------------------------------------------------------

bool IsRunLevel(const std::string& p);
bool IsNoTxPoint(const std::string& p);
bool IsStorePoint(const std::string& p);
// Points passed only while a new ledger is created.
bool IsLedgerCreationPoint(const std::string& p);

// How many times one `apply` of FourMigrations(no_tx) on an empty target
// passes `point` (`store`: an audit store is configured); -1 for a point
// this test does not know (it is then checked generically).
int ApplyHits(const std::string& p, bool no_tx, bool store);

// The same for `down --steps 2` over four applied migrations (each down
// file is one transactional DROP TABLE; no audit store).
int DownHits(const std::string& p);

// The hit numbers worth trying: every statement boundary of the no-tx step,
// the first and second hit of per-step points, the first of the others.
int MaxHit(const std::string& p, int hits);

// Hits of mirror.before_commit inside the no-transaction step of an apply:
// the flush of its StepStarted (hit 2) and of each StatementApplied.
bool MirrorFlushInsideNoTxStep(int hit, bool no_tx);

// Points where the killed step is still open in the local ledger.
bool LeavesOpenAttempt(const std::string& p);

// MIGLEDGER_CRASH_AT for the `hit`-th pass of `point`.
std::string CrashSpec(const std::string& point, int hit);

// `s` with every character gtest does not allow in a name made '_'.
std::string ParamName(std::string s);

// Checks the terminal event of the attempt a kill at `point` interrupted,
// after the next run healed it. `killed_run` is the run id of the killed
// process; `acked` how many StatementApplied the attempt had.
void ExpectHealedAttempt(const LedgerSummary& after, const LogEvent& attempt,
                         const std::string& point,
                         const std::string& killed_run, int acked, bool down);

// ---------------------------------------------------------------------------
// More than one process
// ---------------------------------------------------------------------------

// Runs the commands at the same moment, each from its own thread (each
// RunMigledger forks before either waits). Each gets its own working
// directory: RunMigledger names its capture files after the test's pid and
// the cwd, so two concurrent calls must not share a cwd.
std::vector<RunResult> RunTogether(
    const std::vector<std::vector<std::string>>& args,
    const std::vector<std::string>& cwds,
    const std::map<std::string, std::string>& env);

// A run that lost the race: "nothing to apply", or busy with a clear message.
void ExpectLoserOutcome(const RunResult& r);

// Two applies at once on each target kind (crash_concurrency_test.cc; the
// two-ledger case is in two_ledgers_test.cc).
class ConcurrencyTest : public ::testing::TestWithParam<TargetKind> {};

}  // namespace migledger::testing
