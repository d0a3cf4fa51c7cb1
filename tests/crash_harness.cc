#include "tests/crash_harness.h"

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <thread>

namespace migledger::testing {
namespace fs = std::filesystem;
std::string V(int n) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d", n);
  return buf;
}

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

const char* KindName(TargetKind k) {
  return k == TargetKind::kSqlite ? "sqlite" : "postgres";
}

void PrintTo(TargetKind k, std::ostream* os) { *os << KindName(k); }

std::optional<PgConfig> PgFromEnv() {
  const char* uri = std::getenv("PGTEST_URI");
  if (uri == nullptr || *uri == '\0') return std::nullopt;
  const char* pw = std::getenv("PGTEST_PASSWORD");
  return PgConfig{uri, pw ? pw : ""};
}

void WriteConfig(const std::string& dir, const std::string& url,
                 const std::string& audit_store, int lock_timeout_ms) {
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

std::string TxMigration(int n, int rows) {
  std::string t = "t" + std::to_string(n);
  std::string sql = "CREATE TABLE " + t + " (v TEXT);\n";
  for (int i = 0; i < rows; ++i) {
    sql += "INSERT INTO " + t + " (v) VALUES ('r" + std::to_string(i) + "');\n";
  }
  return sql;
}

std::string NoTxMigration(int n, int rows) {
  return "-- migledger:no-transaction\n" + TxMigration(n, rows);
}

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
  return Summarize(ReadAuditLog(project));
}

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

bool IsRunLevel(const std::string& p) {
  return p == "apply.after_run_started" || p == "apply.before_run_finished";
}

bool IsNoTxPoint(const std::string& p) {
  return p == "apply.between_statements_no_tx" ||
         p == "apply.after_statement_event_no_tx";
}

bool IsStorePoint(const std::string& p) { return p.rfind("store.", 0) == 0; }

bool IsLedgerCreationPoint(const std::string& p) {
  return p.rfind("ledger.", 0) == 0;
}

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

int MaxHit(const std::string& p, int hits) {
  if (IsNoTxPoint(p) || p == "mirror.before_commit") return std::max(1, hits);
  if (p.rfind("apply.", 0) == 0 && !IsRunLevel(p)) return 2;
  return 1;
}

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

void ExpectLoserOutcome(const RunResult& r) {
  if (r.exit_code == 0) {
    EXPECT_NE(std::string::npos, r.out.find("nothing to apply")) << Describe(r);
    return;
  }
  EXPECT_EQ(kExitBusyCode, r.exit_code) << Describe(r);
  bool clear = r.err.find("another migledger process") != std::string::npos;
  EXPECT_TRUE(clear) << "busy without a clear message: " << Describe(r);
}

}  // namespace migledger::testing
