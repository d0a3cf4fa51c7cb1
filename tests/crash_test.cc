// Crash tests: run the real migledger binary, kill it with SIGKILL at every
// named crash point (common/crash_points.h, MIGLEDGER_CRASH_AT=name[:N]),
// and check that the next run finishes the job on its own:
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
// The suites:
//   ApplyCrashTest            every point x hit x target x (tx | no-tx),
//                             then `apply` (or `recover` + `apply`)
//   DownCrashTest             the same for `down --steps 2`, then `recover`
//   RandomKillTest            30 migrations, random point:N kills until an
//                             apply completes (seeded, time-bounded)
//   ConcurrencyTest           two applies at once: one project, or two
//                             ledgers on one target
//   FreshLedgerRaceTest       two first runs racing to create the ledger
//   RunningStepStatusTest     status while another process holds the
//                             target's lock: the open step is "running"
//   BootstrapKillTest         init, apply, baseline of a new project killed
//                             before the ledger's format marker and at
//                             random moments: the project still works
//   SecondLedgerAfterKillTest a killed ledger, then another ledger applies
//   KilledConcurrentIndexTest PostgreSQL: a runner killed while its CREATE
//                             INDEX CONCURRENTLY builds; the next apply
//                             waits for the orphaned build and takes its
//                             index, stops clearly while it still runs, or
//                             drops the invalid index it left and rebuilds
//   KilledDuringCommitTest    PostgreSQL: a runner killed while the server
//                             runs its COMMIT; the next apply waits for
//                             that session and finds the step committed
//   UnacknowledgedStatementTest killed after a no-tx statement ran, before
//                             its acknowledgement: the resume finds what it
//                             created and goes on
//   UnacknowledgedDropTest    the same for the DROPs of a no-tx down file
//
// PostgreSQL cases run when PGTEST_URI (and PGTEST_PASSWORD) are set, e.g.
// under scripts/pg-throwaway run -- ...; each case gets a fresh database.
// The audit-store crash points are reached only then (the store is a
// PostgreSQL database); without a server the run completes, which is checked.
//
// Environment knobs: MIGLEDGER_CRASH_SEED (seed of the randomized kill loop),
// MIGLEDGER_CRASH_SECONDS (its time budget per target, default 20).

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
#include "tests/test_util.h"

namespace migledger::testing {
namespace {
namespace fs = std::filesystem;

constexpr int kExitBusyCode = 5;  // cli/exit_codes.h kExitBusy

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

std::string V(int n) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d", n);
  return buf;
}

std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

// Runs `cmd` with /bin/sh; returns its exit status, stdout in *out and
// stderr in *err.
int Shell(const std::string& cmd, std::string* out, std::string* err) {
  char tmpl[] = "/tmp/migledger-crash-psql-XXXXXX";
  int fd = mkstemp(tmpl);
  if (fd >= 0) close(fd);
  std::string err_path = tmpl;
  FILE* p = popen((cmd + " 2>" + ShellQuote(err_path)).c_str(), "r");
  if (p == nullptr) return -1;
  out->clear();
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out->append(buf, n);
  int st = pclose(p);
  *err = ReadFile(err_path);
  unlink(err_path.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// The non-empty lines of `text`, without a trailing CR.
std::vector<std::string> NonEmptyLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// Versions the run reports as applied ("applied  0001 t1 (1.2 ms)").
std::set<std::string> AppliedVersions(const RunResult& r) {
  std::set<std::string> v;
  for (const auto& line : NonEmptyLines(r.out)) {
    std::istringstream in(line);
    std::string word, version;
    in >> word >> version;
    if (word == "applied") v.insert(version);
  }
  return v;
}

// ---------------------------------------------------------------------------
// Targets: a SQLite file, or a fresh PostgreSQL database per test case
// ---------------------------------------------------------------------------

enum class TargetKind { kSqlite, kPostgres };

const char* KindName(TargetKind k) {
  return k == TargetKind::kSqlite ? "sqlite" : "postgres";
}
void PrintTo(TargetKind k, std::ostream* os) { *os << KindName(k); }

struct PgConfig {
  std::string uri;
  std::string password;
};

std::optional<PgConfig> PgFromEnv() {
  const char* uri = std::getenv("PGTEST_URI");
  if (uri == nullptr || *uri == '\0') return std::nullopt;
  const char* pw = std::getenv("PGTEST_PASSWORD");
  return PgConfig{uri, pw ? pw : ""};
}

// postgresql://user@host:port/db?params with the database name replaced.
std::string WithDatabase(const std::string& uri, const std::string& db) {
  size_t scheme = uri.find("://");
  size_t slash = uri.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  if (slash == std::string::npos) return uri + "/" + db;
  size_t q = uri.find('?', slash);
  return uri.substr(0, slash + 1) + db +
         (q == std::string::npos ? "" : uri.substr(q));
}

// Runs one SQL command with psql; returns the psql exit status.
int Psql(const PgConfig& pg, const std::string& uri, const std::string& sql,
         std::string* out, std::string* err) {
  std::string cmd = "PGPASSWORD=" + ShellQuote(pg.password) +
                    " PGOPTIONS='-c client_min_messages=warning'"
                    " psql -X -q -t -A -v ON_ERROR_STOP=1 " +
                    ShellQuote(uri) + " -c " + ShellQuote(sql);
  return Shell(cmd, out, err);
}

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
    std::string out, err;
    int rc = Psql(*pg, pg->uri, "CREATE DATABASE " + t->db_name_, &out, &err);
    if (rc != 0) {
      ADD_FAILURE() << "cannot create database " << t->db_name_ << ": " << out
                    << err;
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
    std::string out, err;
    int rc = Psql(pg_, url_, sql, &out, &err);
    if (rc != 0) return {"<error: " + err + out + ">"};
    return NonEmptyLines(out);
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
                 const std::string& audit_store, int lock_timeout_ms = 2000) {
  std::string toml = "default_target = \"dev\"\nlock_timeout_ms = " +
                     std::to_string(lock_timeout_ms) + "\n";
  if (!audit_store.empty()) toml += "audit_store = \"" + audit_store + "\"\n";
  toml += "[targets.dev]\nurl = \"" + url + "\"\n";
  WriteFile(dir + "/migledger.toml", toml);
  fs::create_directories(dir + "/migrations");
}

void WriteMigrations(const std::string& project,
                     const std::vector<MigrationFiles>& ms) {
  for (const auto& m : ms) {
    std::string base = project + "/migrations/" + m.version + "_" + m.slug;
    WriteFile(base + ".up.sql", m.up);
    if (!m.down.empty()) WriteFile(base + ".down.sql", m.down);
  }
}

// A transactional migration: CREATE TABLE tN + two rows. Not idempotent: if
// it ever ran twice the CREATE TABLE would fail.
std::string TxMigration(int n, int rows) {
  std::string t = "t" + std::to_string(n);
  std::string sql = "CREATE TABLE " + t + " (v TEXT);\n";
  for (int i = 0; i < rows; ++i) {
    sql += "INSERT INTO " + t + " (v) VALUES ('r" + std::to_string(i) + "');\n";
  }
  return sql;
}

// A no-transaction migration of 1 + `rows` statements that are NOT safe to
// re-run: a second CREATE TABLE fails, a second INSERT adds a row (the table
// has no key), so exact row counts prove that no statement ran twice.
std::string NoTxMigration(int n, int rows) {
  return "-- migledger:no-transaction\n" + TxMigration(n, rows);
}

// A no-transaction migration whose statements may run twice without harm.
// Only for runs killed at apply.between_statements_no_tx (or the random
// loop, which may pick that point): there the statement has completed on
// the target but its StatementApplied event was never written, so the tool
// cannot know it ran and legitimately runs it again on resume. The SQL
// (ON CONFLICT DO NOTHING) is valid for both SQLite and PostgreSQL.
std::string IdempotentNoTxMigration(int n, int rows) {
  std::string t = "t" + std::to_string(n);
  std::string sql = "-- migledger:no-transaction\nCREATE TABLE IF NOT EXISTS " +
                    t + " (id INTEGER PRIMARY KEY, v TEXT);\n";
  for (int i = 0; i < rows; ++i) {
    sql += "INSERT INTO " + t + " (id, v) VALUES (" + std::to_string(i + 1) +
           ", 'r" + std::to_string(i) + "') ON CONFLICT DO NOTHING;\n";
  }
  return sql;
}

constexpr int kSmallMigrations = 4;
constexpr int kRowsPerTable = 2;
constexpr int kStatementsPerStep = 1 + kRowsPerTable;

// Four migrations t1..t4; with `no_tx`, migration 2 is a no-transaction one.
std::vector<MigrationFiles> FourMigrations(bool no_tx, bool idempotent) {
  std::vector<MigrationFiles> ms;
  for (int n = 1; n <= kSmallMigrations; ++n) {
    std::string up = TxMigration(n, kRowsPerTable);
    if (n == 2 && no_tx) {
      up = idempotent ? IdempotentNoTxMigration(n, kRowsPerTable)
                      : NoTxMigration(n, kRowsPerTable);
    }
    ms.push_back({V(n), "t" + std::to_string(n), up,
                  "DROP TABLE t" + std::to_string(n) + ";\n"});
  }
  return ms;
}

// ---------------------------------------------------------------------------
// The ledger, as `audit log --format jsonl` prints it
// ---------------------------------------------------------------------------

struct LogEvent {
  std::string type;
  std::string run_id;
  std::string version;
  std::string attempt_id;
  std::string direction;
  std::string tx_mode;
  std::string outcome;  // step_recovered
  int resume_at = 0;    // step_started.resume_at_statement / step_recovered
};

std::string StringField(const std::string& line, size_t from,
                        const std::string& key) {
  const std::string pat = "\"" + key + "\":\"";
  size_t p = line.find(pat, from);
  if (p == std::string::npos) return "";
  p += pat.size();
  size_t e = line.find('"', p);
  return e == std::string::npos ? "" : line.substr(p, e - p);
}

int IntField(const std::string& line, size_t from, const std::string& key) {
  const std::string pat = "\"" + key + "\":";
  size_t p = line.find(pat, from);
  if (p == std::string::npos) return 0;  // proto3 JSON omits zero values
  p += pat.size();
  if (p < line.size() && line[p] == '"') ++p;  // int64 values are strings
  return std::atoi(line.c_str() + p);
}

LogEvent ParseEvent(const std::string& line) {
  LogEvent e;
  e.type = StringField(line, 0, "type");
  size_t ev = line.find("\"event\":");
  if (ev == std::string::npos) return e;
  e.run_id = StringField(line, ev, "run_id");
  size_t body = line.find("\"" + e.type + "\":{", ev);
  if (body == std::string::npos) return e;
  e.version = StringField(line, body, "version");
  e.attempt_id = StringField(line, body, "attempt_id");
  e.direction = StringField(line, body, "direction");
  e.tx_mode = StringField(line, body, "tx_mode");
  e.outcome = StringField(line, body, "outcome");
  e.resume_at = IntField(line, body, "resume_at_statement");
  return e;
}

std::vector<LogEvent> ReadLog(const std::string& project) {
  RunResult r = RunMigledger({"audit", "log", "--format", "jsonl"}, project);
  EXPECT_EQ(0, r.exit_code) << "audit log: " << Describe(r);
  std::vector<LogEvent> events;
  for (const auto& line : NonEmptyLines(r.out))
    events.push_back(ParseEvent(line));
  return events;
}

bool IsTerminal(const std::string& type) {
  return type == "step_applied" || type == "step_failed" ||
         type == "step_reverted" || type == "step_recovered";
}

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

LedgerSummary Summarize(std::vector<LogEvent> events) {
  LedgerSummary s;
  s.events = std::move(events);
  std::vector<std::string> order;
  for (const auto& e : s.events) {
    if (e.type == "step_started") {
      s.started[e.attempt_id] = e;
      if (s.started_count[e.attempt_id]++ == 0) order.push_back(e.attempt_id);
    } else if (IsTerminal(e.type)) {
      s.terminals[e.attempt_id].push_back(e);
    } else if (e.type == "statement_applied") {
      s.statements_acked[e.attempt_id]++;
    }
  }
  for (const auto& id : order) {
    if (!s.terminals.count(id)) s.open.push_back(id);
  }
  return s;
}

LedgerSummary ReadSummary(const std::string& project) {
  return Summarize(ReadLog(project));
}

// Every StepStarted attempt has exactly one terminal event, and every
// terminal event belongs to a started attempt.
void ExpectOneTerminalPerAttempt(const LedgerSummary& s) {
  EXPECT_FALSE(s.started.empty()) << "no step_started event in the ledger";
  for (const auto& [id, n] : s.started_count) {
    EXPECT_EQ(1, n) << "attempt " << id << " was started " << n << " times";
    auto it = s.terminals.find(id);
    size_t terminals = it == s.terminals.end() ? 0 : it->second.size();
    EXPECT_EQ(1u, terminals)
        << "attempt " << id << " (version " << s.started.at(id).version
        << ") has " << terminals << " terminal events";
  }
  for (const auto& [id, list] : s.terminals) {
    EXPECT_TRUE(s.started.count(id)) << list.front().type << " for attempt "
                                     << id << " that has no step_started";
  }
}

// Each of `versions` went up exactly once according to the ledger: one
// step_applied or one step_recovered COMMITTED (direction up), not both.
void ExpectEachAppliedOnceInLedger(const LedgerSummary& s,
                                   const std::vector<std::string>& versions) {
  std::map<std::string, int> ups;
  for (const auto& e : s.events) {
    bool up = e.type == "step_applied" || (e.type == "step_recovered" &&
                                           e.outcome == "RECOVERED_COMMITTED" &&
                                           e.direction != "DIRECTION_DOWN");
    if (up) ups[e.version]++;
  }
  for (const auto& v : versions) {
    EXPECT_EQ(1, ups[v]) << "version " << v << " is recorded as applied "
                         << ups[v] << " times in the ledger";
  }
}

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
                             const Expected& x) {
  std::set<std::string> want;
  std::vector<std::string> versions;
  for (int n = 1; n <= x.migrations; ++n) {
    want.insert(V(n));
    versions.push_back(V(n));
  }
  TestTarget::State st = t.Snapshot(x.migrations);
  EXPECT_EQ("", st.error);
  EXPECT_EQ(x.migrations, st.marker_rows) << "marker rows";
  EXPECT_EQ(want, st.markers);
  for (int n = 1; n <= x.migrations; ++n) {
    std::string table = "t" + std::to_string(n);
    auto it = st.rows.find(table);
    if (it == st.rows.end()) {
      ADD_FAILURE() << "table " << table << " is missing";
      continue;
    }
    EXPECT_EQ(x.rows_per_table, it->second) << "rows of " << table;
  }
  RunResult verify = RunMigledger({"audit", "verify"}, project);
  EXPECT_EQ(0, verify.exit_code) << "audit verify: " << Describe(verify);
  RunResult validate = RunMigledger({"validate"}, project, t.env());
  EXPECT_EQ(0, validate.exit_code) << "validate: " << Describe(validate);
  LedgerSummary s = ReadSummary(project);
  ExpectOneTerminalPerAttempt(s);
  EXPECT_TRUE(s.open.empty())
      << s.open.size() << " unfinished attempt(s) remain";
  if (x.each_applied_once_in_ledger) ExpectEachAppliedOnceInLedger(s, versions);
  return s;
}

// ---------------------------------------------------------------------------
// Crash points
// ---------------------------------------------------------------------------

bool IsRunLevel(const std::string& p) {
  return p == "apply.after_run_started" || p == "apply.before_run_finished";
}
bool IsNoTxPoint(const std::string& p) {
  return p == "apply.between_statements_no_tx" ||
         p == "apply.after_statement_event_no_tx";
}
bool IsStorePoint(const std::string& p) { return p.rfind("store.", 0) == 0; }
// Points passed only while a new ledger is created.
bool IsLedgerCreationPoint(const std::string& p) {
  return p.rfind("ledger.", 0) == 0;
}

// How many times one `apply` of FourMigrations(no_tx) on an empty target
// passes `point` (`store`: an audit store is configured); -1 for a point
// this test does not know (it is then checked generically).
int ApplyHits(const std::string& p, bool no_tx, bool store) {
  const int steps = kSmallMigrations,
            tx_steps = no_tx ? kSmallMigrations - 1 : kSmallMigrations;
  if (IsRunLevel(p)) return 1;
  // The first apply of a project creates its ledger.
  if (IsLedgerCreationPoint(p)) return 1;
  if (p == "apply.after_step_started" || p == "apply.after_commit" ||
      p == "apply.after_outcome") {
    return steps;
  }
  if (p == "apply.after_begin" || p == "apply.before_commit") return tx_steps;
  if (p == "apply.after_statement") return tx_steps * kStatementsPerStep;
  if (IsNoTxPoint(p)) return no_tx ? kStatementsPerStep : 0;
  // Own mirror transactions: RunStarted; for the no-transaction step its
  // StepStarted and each StatementApplied. Every other event reaches the
  // mirror inside a step's COMMIT (RunFinished inside the last step's).
  if (p == "mirror.before_commit")
    return 1 + (no_tx ? 1 + kStatementsPerStep : 0);
  // One push per run, one transaction for all its targets.
  if (p == "store.before_commit") return store ? 1 : 0;
  return -1;
}

// The same for `down --steps 2` over four applied migrations (each down
// file is one transactional DROP TABLE; no audit store).
int DownHits(const std::string& p) {
  if (IsRunLevel(p)) return 1;
  if (IsLedgerCreationPoint(p)) return 0;  // the ledger exists by then
  if (IsNoTxPoint(p)) return 0;
  if (p == "apply.after_step_started" || p == "apply.after_begin" ||
      p == "apply.after_statement" || p == "apply.before_commit" ||
      p == "apply.after_commit" || p == "apply.after_outcome") {
    return 2;
  }
  // RunStarted's; RunFinished commits with the last down step.
  if (p == "mirror.before_commit") return 1;
  if (p == "store.before_commit") return 0;
  return -1;
}

// The hit numbers worth trying: every statement boundary of the no-tx step,
// the first and second hit of per-step points, the first of the others.
int MaxHit(const std::string& p, int hits) {
  if (IsNoTxPoint(p) || p == "mirror.before_commit") return std::max(1, hits);
  if (p.rfind("apply.", 0) == 0 && !IsRunLevel(p)) return 2;
  return 1;
}

// Points where the killed step is still open in the local ledger.
// Hits of mirror.before_commit inside the no-transaction step of an apply:
// the flush of its StepStarted (hit 2) and of each StatementApplied.
bool MirrorFlushInsideNoTxStep(int hit, bool no_tx) {
  return no_tx && hit >= 2 && hit <= 2 + kStatementsPerStep;
}

bool LeavesOpenAttempt(const std::string& p) {
  return p.rfind("apply.", 0) == 0 && !IsRunLevel(p) &&
         p != "apply.after_outcome";
}

std::string CrashSpec(const std::string& point, int hit) {
  return point + ":" + std::to_string(hit);
}

std::string ParamName(std::string s) {
  for (char& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return s;
}

// Checks the terminal event of the attempt a kill at `point` interrupted,
// after the next run healed it. `killed_run` is the run id of the killed
// process; `acked` how many StatementApplied the attempt had.
void ExpectHealedAttempt(const LedgerSummary& after, const LogEvent& attempt,
                         const std::string& point,
                         const std::string& killed_run, int acked, bool down) {
  const LogEvent* t = after.Terminal(attempt.attempt_id);
  ASSERT_NE(nullptr, t) << "killed attempt " << attempt.attempt_id << " of "
                        << attempt.version << " has no terminal event";
  if (point == "apply.after_commit") {
    // Committed on the target with the outcome event in the mirror; the
    // killed run never appended it locally. The next run must pull that
    // exact event back (same run id as the killed run), not recover it.
    EXPECT_EQ(down ? "step_reverted" : "step_applied", t->type)
        << "the committed step must be healed from the target's mirror";
    EXPECT_EQ(killed_run, t->run_id)
        << "the outcome event was not the one the killed run wrote";
    return;
  }
  ASSERT_EQ("step_recovered", t->type) << "attempt " << attempt.attempt_id;
  if (attempt.tx_mode == "TX_MODE_NO_TRANSACTION") {
    EXPECT_EQ("RECOVERED_RESUMED", t->outcome);
    EXPECT_EQ(acked, t->resume_at) << "resume point of " << attempt.version;
    // The next attempt of that version resumes after the acknowledged
    // statements and never runs them again.
    bool seen_killed = false, resumed = false;
    for (const auto& e : after.events) {
      if (e.type == "step_started" && e.attempt_id == attempt.attempt_id)
        seen_killed = true;
      if (seen_killed && e.type == "step_started" &&
          e.version == attempt.version && e.attempt_id != attempt.attempt_id) {
        EXPECT_EQ(acked, e.resume_at)
            << "resume_at_statement of the next attempt";
        resumed = true;
        break;
      }
    }
    EXPECT_TRUE(resumed) << "no new attempt resumed version "
                         << attempt.version;
  } else {
    EXPECT_EQ("RECOVERED_ROLLED_BACK", t->outcome)
        << "a transactional step killed before COMMIT must be recorded as "
           "rolled back";
  }
}

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
    size_t events = ReadLog(project).size();
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
// 3. Concurrency
// ---------------------------------------------------------------------------

// Runs the commands at the same moment, each from its own thread (each
// RunMigledger forks before either waits). Each gets its own working
// directory: RunMigledger names its capture files after the test's pid and
// the cwd, so two concurrent calls must not share a cwd.
std::vector<RunResult> RunTogether(
    const std::vector<std::vector<std::string>>& args,
    const std::vector<std::string>& cwds,
    const std::map<std::string, std::string>& env) {
  std::vector<RunResult> results(args.size());
  std::mutex m;
  std::condition_variable cv;
  bool go = false;
  std::vector<std::thread> threads;
  for (size_t i = 0; i < args.size(); ++i) {
    threads.emplace_back([&, i] {
      {
        std::unique_lock<std::mutex> lock(m);
        cv.wait(lock, [&] { return go; });
      }
      results[i] = RunMigledger(args[i], cwds[i], env);
    });
  }
  {
    std::lock_guard<std::mutex> lock(m);
    go = true;
  }
  cv.notify_all();
  for (auto& t : threads) t.join();
  return results;
}

// A run that lost the race: "nothing to apply", or busy with a clear message.
void ExpectLoserOutcome(const RunResult& r) {
  if (r.exit_code == 0) {
    EXPECT_NE(std::string::npos, r.out.find("nothing to apply")) << Describe(r);
    return;
  }
  EXPECT_EQ(kExitBusyCode, r.exit_code) << Describe(r);
  bool clear = r.err.find("another migledger process") != std::string::npos;
  EXPECT_TRUE(clear) << "busy without a clear message: " << Describe(r);
}

class ConcurrencyTest : public ::testing::TestWithParam<TargetKind> {};

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

// The ledger verifies, and files, ledger and target agree.
// The jsonl lines of the ledger's events of one type (`audit log --type`).
std::string EventsOfType(const std::string& project, const std::string& type) {
  RunResult r = RunMigledger(
      {"audit", "log", "--format", "jsonl", "--type", type}, project);
  EXPECT_EQ(0, r.exit_code) << Describe(r);
  return r.out;
}

void ExpectVerifiesAndValidates(const std::string& project,
                                const TestTarget& target) {
  RunResult verify = RunMigledger({"audit", "verify"}, project);
  EXPECT_EQ(0, verify.exit_code) << Describe(verify);
  RunResult validate = RunMigledger({"validate"}, project, target.env());
  EXPECT_EQ(0, validate.exit_code) << Describe(validate);
}

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
  for (const auto& e : ReadLog(project()))
    if (e.type == "run_started") killed_run = e.run_id;
  ASSERT_FALSE(killed_run.empty());

  RunResult again = RunMigledger({"apply"}, project(), target_->env());
  ASSERT_EQ(0, again.exit_code) << Describe(again);
  EXPECT_NE(again.out.find("nothing to apply"), std::string::npos)
      << Describe(again);
  std::vector<LogEvent> log = ReadLog(project());
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
