// `apply` on both drivers: what a run records, failing and out-of-order
// migrations, `apply --to`, transaction control and no-transaction files,
// and `baseline`.
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "applier/conninfo.h"
#include "applier/planner.h"
#include "ledger/ledger.h"
#include "tests/cli_scenario.h"
#include "tests/test_util.h"

namespace migledger::testing {
namespace {

namespace fs = std::filesystem;

// ---- apply, status, audit log (both drivers) ------------------------------

TEST_P(CoreScenarioTest, ApplyThreeMigrationsRecordsEverything) {
  ThreeMigrations();
  RunResult r = Run({"apply"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(Contains(r.out, "applied  0001 a")) << r.out;
  EXPECT_TRUE(Contains(r.out, "applied  0002 b")) << r.out;
  EXPECT_TRUE(Contains(r.out, "applied  0003 c")) << r.out;
  EXPECT_TRUE(r.err.empty()) << r.err;

  EXPECT_TRUE(target_->TableExists("a"));
  EXPECT_TRUE(target_->TableExists("b"));
  EXPECT_TRUE(target_->TableExists("c"));
  EXPECT_EQ(target_->Query("SELECT count(*) FROM c"), Rows{"1"});
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002", "0003"}));

  RunResult status = Run({"status"});
  ASSERT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_TRUE(Contains(status.out, "3 applied, 0 pending")) << status.out;
  EXPECT_EQ(CountOf(status.out, " applied "), 3u) << status.out;

  RunResult log = Run({"audit", "log", "--format", "jsonl"});
  ASSERT_EQ(log.exit_code, 0) << Describe(log);
  std::vector<std::string> lines = Lines(log.out);
  ASSERT_FALSE(lines.empty());
  std::map<std::string, int> types;
  uint64_t last_seq = 0;
  for (const auto& line : lines) {
    EXPECT_TRUE(LooksLikeJsonObject(line)) << line;
    uint64_t seq = SequenceOf(line);
    EXPECT_EQ(seq, last_seq + 1) << line;
    last_seq = seq;
    size_t t = line.find("\"type\":\"");
    ASSERT_NE(t, std::string::npos) << line;
    t += 8;
    types[line.substr(t, line.find('"', t) - t)]++;
  }
  EXPECT_EQ(types["run_started"], 1);
  EXPECT_EQ(types["step_started"], 3);
  EXPECT_EQ(types["step_applied"], 3);
  EXPECT_EQ(types["run_finished"], 1);
  EXPECT_TRUE(Contains(lines.back(), "OUTCOME_SUCCEEDED")) << lines.back();

  RunResult again = Run({"apply"});
  EXPECT_EQ(again.exit_code, 0) << Describe(again);
  EXPECT_EQ(again.out, "nothing to apply\n");
  EXPECT_EQ(EventLines("step_started").size(), 3u);
  ExpectLedgerVerifies();
}

// An error the server finds while running (not parsing) the statements:
// the failing statement is known by how many ran before it, also when the
// driver sent the whole step as one message.
TEST_P(CoreScenarioTest, RuntimeErrorNamesTheStatementThatFailed) {
  Migration("0001_u.up.sql",
            "CREATE TABLE u (id INTEGER PRIMARY KEY);\n"
            "INSERT INTO u (id) VALUES (1);\n"
            "\n"
            "-- a duplicate key\n"
            "INSERT INTO u (id) VALUES (1);\n"
            "INSERT INTO u (id) VALUES (2);\n");
  RunResult r = Run({"apply"});
  ASSERT_EQ(r.exit_code, 3) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "0001_u.up.sql:5")) << r.err;
  EXPECT_TRUE(Contains(r.err, "statement 3")) << r.err;
  if (target_->is_pg()) {
    EXPECT_TRUE(Contains(r.err, "SQLSTATE 23505")) << r.err;
    EXPECT_TRUE(Contains(r.err, "DETAIL: Key (id)=(1) already exists."))
        << r.err;
  }
  EXPECT_FALSE(target_->TableExists("u"));
  EXPECT_EQ(target_->Markers(), Rows{});
  std::vector<std::string> failed = EventLines("step_failed");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_TRUE(Contains(failed[0], "\"statement_index\":2")) << failed[0];
  EXPECT_TRUE(Contains(failed[0], "\"file_line\":5")) << failed[0];
  ExpectLedgerVerifies();

  // Fixed, it runs: nothing of the failed attempt was left behind.
  Migration("0001_u.up.sql",
            "CREATE TABLE u (id INTEGER PRIMARY KEY);\n"
            "INSERT INTO u (id) VALUES (1);\n"
            "INSERT INTO u (id) VALUES (2);\n");
  RunResult ok = Run({"apply"});
  ASSERT_EQ(ok.exit_code, 0) << Describe(ok);
  EXPECT_EQ(target_->Markers(), Rows{"0001"});
  ExpectLedgerVerifies();
}

TEST_P(CoreScenarioTest, FailingMigrationRollsBackAndNamesFileLine) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  // Statement 2 (index 1) starts on line 3 and has a syntax error.
  Migration("0003_c.up.sql",
            "CREATE TABLE c (id INTEGER);\n"
            "-- the next statement has a typo\n"
            "CREATE TABLEE d (id INTEGER);\n");
  RunResult r = Run({"apply"});
  ASSERT_EQ(r.exit_code, 3) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "migration 0003 ")) << r.err;
  EXPECT_TRUE(Contains(r.err, "0003_c.up.sql:3")) << r.err;
  EXPECT_TRUE(Contains(r.err, "statement 2")) << r.err;
  EXPECT_TRUE(Contains(r.err, SyntaxErrorText())) << r.err;
  if (target_->is_pg()) {
    EXPECT_TRUE(Contains(r.err, "SQLSTATE 42601")) << r.err;
  }
  EXPECT_TRUE(Contains(r.out, "applied  0001 a")) << r.out;
  EXPECT_TRUE(Contains(r.out, "applied  0002 b")) << r.out;

  // Earlier steps of the run stay; the failed one left nothing.
  EXPECT_TRUE(target_->TableExists("a"));
  EXPECT_TRUE(target_->TableExists("b"));
  EXPECT_FALSE(target_->TableExists("c"));
  EXPECT_FALSE(target_->TableExists("d"));
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002"}));

  std::vector<std::string> failed = EventLines("step_failed");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_TRUE(LooksLikeJsonObject(failed[0])) << failed[0];
  EXPECT_TRUE(Contains(failed[0], "\"version\":\"0003\"")) << failed[0];
  EXPECT_TRUE(Contains(failed[0], "\"file_line\":3")) << failed[0];
  EXPECT_TRUE(Contains(failed[0], "\"statement_index\":1")) << failed[0];
  EXPECT_TRUE(Contains(failed[0], "\"rolled_back\":true")) << failed[0];
  if (target_->is_pg()) {
    EXPECT_TRUE(Contains(failed[0], "\"sqlstate\":\"42601\"")) << failed[0];
  }
  std::vector<std::string> finished = EventLines("run_finished");
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_TRUE(Contains(finished[0], "OUTCOME_FAILED")) << finished[0];

  RunResult status = Run({"status"});
  EXPECT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_TRUE(Contains(status.out, "2 applied, 1 pending")) << status.out;
  EXPECT_TRUE(Contains(status.out, "failed")) << status.out;
  EXPECT_FALSE(Contains(status.out, "unfinished")) << status.out;
  ExpectLedgerVerifies();

  // Fixed: the next apply runs it (and only it).
  Migration("0003_c.up.sql",
            "CREATE TABLE c (id INTEGER);\n"
            "-- fixed\n"
            "CREATE TABLE d (id INTEGER);\n");
  RunResult fixed = Run({"apply"});
  ASSERT_EQ(fixed.exit_code, 0) << Describe(fixed);
  EXPECT_TRUE(Contains(fixed.out, "applied  0003 c")) << fixed.out;
  EXPECT_FALSE(Contains(fixed.out, "0001")) << fixed.out;
  EXPECT_TRUE(target_->TableExists("c"));
  EXPECT_TRUE(target_->TableExists("d"));
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002", "0003"}));
  status = Run({"status"});
  EXPECT_TRUE(Contains(status.out, "3 applied, 0 pending")) << status.out;
  ExpectLedgerVerifies();
}

TEST_P(CoreScenarioTest, MissingRelationErrorCarriesDatabaseMessage) {
  Migration("0001_a.up.sql", "INSERT INTO no_such_table VALUES (1);\n");
  RunResult r = Run({"apply"});
  ASSERT_EQ(r.exit_code, 3) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "0001_a.up.sql:1")) << r.err;
  EXPECT_TRUE(Contains(r.err, "no_such_table")) << r.err;
  if (target_->is_pg()) {
    EXPECT_TRUE(Contains(r.err, "SQLSTATE 42P01")) << r.err;
  }
  EXPECT_EQ(target_->Markers(), Rows{});
  ExpectLedgerVerifies();
}

// VACUUM cannot run inside a transaction on either target: the error says
// how to mark the file, and once marked it runs. Every other error (above)
// goes without that advice.
TEST_P(CoreScenarioTest, StatementThatRefusesATransactionSaysHowToMarkTheFile) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\nVACUUM;\n");
  RunResult r = Run({"apply"});
  ASSERT_EQ(r.exit_code, 3) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "0001_a.up.sql:2")) << r.err;
  EXPECT_TRUE(Contains(r.err,
                       "put `-- migledger:no-transaction` at the top "
                       "of the file"))
      << r.err;
  if (target_->is_pg()) {
    EXPECT_TRUE(Contains(r.err, "SQLSTATE 25001")) << r.err;
  }
  EXPECT_FALSE(target_->TableExists("a"));
  EXPECT_EQ(target_->Markers(), Rows{});
  ExpectLedgerVerifies();

  Migration("0001_a.up.sql",
            "-- migledger:no-transaction\nCREATE TABLE a (id INTEGER);\n"
            "VACUUM;\n");
  RunResult ok = Run({"apply"});
  ASSERT_EQ(ok.exit_code, 0) << Describe(ok);
  EXPECT_TRUE(target_->TableExists("a"));
  EXPECT_EQ(target_->Markers(), Rows{"0001"});

  // The advice is for that error only.
  Migration("0002_b.up.sql", "INSERT INTO no_such_table VALUES (1);\n");
  RunResult other = Run({"apply"});
  ASSERT_EQ(other.exit_code, 3) << Describe(other);
  EXPECT_FALSE(Contains(other.err, "no-transaction")) << other.err;
  ExpectLedgerVerifies();
}

// Files saved by editors that write a UTF-8 byte order mark and CRLF line
// ends run on both targets, their directives included; the checksum is
// still over the exact bytes.
TEST_P(CoreScenarioTest, FileWithAByteOrderMarkAndCrlfRuns) {
  Migration("0001_a.up.sql",
            "\xEF\xBB\xBF"
            "CREATE TABLE a (id INTEGER);\r\n"
            "INSERT INTO a (id) VALUES (1);\r\n");
  Migration("0002_b.up.sql",
            "\xEF\xBB\xBF-- migledger:no-transaction\r\n"
            "CREATE TABLE b (id INTEGER);\r\n");
  RunResult r = Run({"apply"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(target_->TableExists("a"));
  EXPECT_TRUE(target_->TableExists("b"));
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002"}));
  std::vector<std::string> started = EventLines("step_started");
  ASSERT_EQ(started.size(), 2u);
  EXPECT_TRUE(Contains(started[0], "\"tx_mode\":\"TX_MODE_TRANSACTION\""))
      << started[0];
  EXPECT_TRUE(Contains(started[1], "\"tx_mode\":\"TX_MODE_NO_TRANSACTION\""))
      << started[1];
  ExpectLedgerVerifies();
}

// A migration merged late, with a version below one already applied, is
// refused until the operator says it may run out of order (flag or config);
// status marks it meanwhile.
TEST_P(CoreScenarioTest, OutOfOrderMigrationIsRefusedUntilAllowed) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  Migration("0003_c.up.sql", "CREATE TABLE c (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  RunResult status = Run({"status"});
  ASSERT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_TRUE(Contains(status.out, "out of order")) << status.out;
  for (const char* command : {"apply", "plan"}) {
    RunResult r = Run({command});
    EXPECT_EQ(r.exit_code, 2) << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err,
                         "migration 0002 (0002_b.up.sql) is older than "
                         "0003, which is applied"))
        << r.err;
  }
  EXPECT_FALSE(target_->TableExists("b"));
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0003"}));

  RunResult allowed = Run({"apply", "--allow-out-of-order"});
  ASSERT_EQ(allowed.exit_code, 0) << Describe(allowed);
  EXPECT_TRUE(Contains(allowed.out, "applied  0002 b")) << allowed.out;
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002", "0003"}));
  std::vector<std::string> started = EventLines("run_started");
  ASSERT_FALSE(started.empty());
  EXPECT_TRUE(Contains(started.back(), "--allow-out-of-order"))
      << started.back();

  // The project can allow it for good.
  Migration("0000_z.up.sql", "CREATE TABLE z (id INTEGER);\n");
  EXPECT_EQ(Run({"apply"}).exit_code, 2);
  WriteFile(dir_ / "migledger.toml",
            "allow_out_of_order = true\n" + ReadFile(dir_ / "migledger.toml"));
  RunResult configured = Run({"apply"});
  ASSERT_EQ(configured.exit_code, 0) << Describe(configured);
  EXPECT_TRUE(target_->TableExists("z"));
  ExpectLedgerVerifies();
}

// ---- apply --to -----------------------------------------------------------

TEST_P(CoreScenarioTest, ApplyToVersionStopsThere) {
  ThreeMigrations();
  RunResult r = Run({"apply", "--to", "0002"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(Contains(r.out, "applied  0002 b")) << r.out;
  EXPECT_FALSE(Contains(r.out, "0003")) << r.out;
  EXPECT_TRUE(target_->TableExists("b"));
  EXPECT_FALSE(target_->TableExists("c"));
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002"}));
  RunResult status = Run({"status"});
  EXPECT_TRUE(Contains(status.out, "2 applied, 1 pending")) << status.out;

  // "2" and "0002" are the same version.
  RunResult same = Run({"apply", "--to", "2"});
  EXPECT_EQ(same.exit_code, 0) << Describe(same);
  EXPECT_EQ(same.out, "nothing to apply\n");

  RunResult unknown = Run({"apply", "--to", "0042"});
  EXPECT_EQ(unknown.exit_code, 2) << Describe(unknown);
  ExpectOneErrorLine(unknown);
  EXPECT_TRUE(Contains(unknown.err, "0042")) << unknown.err;
  EXPECT_FALSE(target_->TableExists("c"));

  RunResult rest = Run({"apply"});
  EXPECT_EQ(rest.exit_code, 0) << Describe(rest);
  EXPECT_TRUE(Contains(rest.out, "applied  0003 c")) << rest.out;
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002", "0003"}));
  ExpectLedgerVerifies();
}

// ---- transaction control --------------------------------------------------

TEST_P(CoreScenarioTest, TransactionControlInTransactionalFileIsRefused) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  Migration("0002_tx.up.sql",
            "BEGIN;\nCREATE TABLE t (id INTEGER);\nCOMMIT;\n");
  RunResult r = Run({"apply"});
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "0002_tx.up.sql:1")) << r.err;
  EXPECT_TRUE(Contains(r.err, "no-transaction")) << r.err;
  // Every file of the plan is checked before the first step runs, so the
  // sound 0001 did not run either.
  EXPECT_FALSE(target_->TableExists("a"));
  EXPECT_FALSE(target_->TableExists("t"));
  EXPECT_EQ(target_->Markers(), Rows{});
  // Refused before it started: no step of it is left unfinished.
  RunResult status = Run({"status"});
  EXPECT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_FALSE(Contains(status.out, "unfinished")) << status.out;
  ExpectLedgerVerifies();

  // The same file marked no-transaction runs statement by statement.
  Migration("0002_tx.up.sql",
            "-- migledger:no-transaction\n"
            "BEGIN;\nCREATE TABLE t (id INTEGER);\nCOMMIT;\n");
  RunResult ok = Run({"apply"});
  ASSERT_EQ(ok.exit_code, 0) << Describe(ok);
  EXPECT_TRUE(Contains(ok.out, "applied  0002 tx")) << ok.out;
  EXPECT_TRUE(target_->TableExists("t"));
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002"}));
  std::vector<std::string> stmts = EventLines("statement_applied");
  ASSERT_EQ(stmts.size(), 3u);
  EXPECT_TRUE(Contains(stmts[1], "\"statement_index\":1")) << stmts[1];
  EXPECT_TRUE(Contains(stmts[2], "\"statement_index\":2")) << stmts[2];
  ExpectLedgerVerifies();
}

TEST_P(CoreScenarioTest, NoTransactionFileRecordsEachStatement) {
  Migration("0001_nt.up.sql",
            "-- migledger:no-transaction\n"
            "CREATE TABLE n1 (id INTEGER);\n"
            "INSERT INTO n1 VALUES (1);\n"
            "CREATE TABLE n2 (id INTEGER);\n");
  RunResult r = Run({"apply"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(target_->TableExists("n1"));
  EXPECT_TRUE(target_->TableExists("n2"));
  EXPECT_EQ(target_->Query("SELECT count(*) FROM n1"), Rows{"1"});
  EXPECT_EQ(target_->Markers(), Rows{"0001"});
  std::vector<std::string> stmts = EventLines("statement_applied");
  ASSERT_EQ(stmts.size(), 3u);
  for (const auto& s : stmts) {
    EXPECT_TRUE(Contains(s, "\"version\":\"0001\"")) << s;
  }
  std::vector<std::string> started = EventLines("step_started");
  ASSERT_EQ(started.size(), 1u);
  EXPECT_TRUE(Contains(started[0], "TX_MODE_NO_TRANSACTION")) << started[0];
  EXPECT_TRUE(Contains(started[0], "\"statement_count\":3")) << started[0];
  RunResult status = Run({"status"});
  EXPECT_TRUE(Contains(status.out, "no-transaction")) << status.out;
  ExpectLedgerVerifies();
}

TEST_P(CoreScenarioTest, NoTransactionFailureResumesAtTheFailedStatement) {
  Migration("0001_nt.up.sql",
            "-- migledger:no-transaction\n"
            "CREATE TABLE n1 (id INTEGER);\n"
            "INSERT INTO n1 VALUES (1);\n"
            "INSERT INTO nope VALUES (1);\n"
            "CREATE TABLE n2 (id INTEGER);\n");
  RunResult r = Run({"apply"});
  ASSERT_EQ(r.exit_code, 3) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "0001_nt.up.sql:4 (statement 3)")) << r.err;
  EXPECT_TRUE(Contains(r.err, "nope")) << r.err;
  EXPECT_TRUE(Contains(r.err, "resume")) << r.err;
  // Statements 1 and 2 ran and stay; no marker.
  EXPECT_EQ(target_->Query("SELECT count(*) FROM n1"), Rows{"1"});
  EXPECT_FALSE(target_->TableExists("n2"));
  EXPECT_EQ(target_->Markers(), Rows{});
  std::vector<std::string> failed = EventLines("step_failed");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_TRUE(Contains(failed[0], "\"file_line\":4")) << failed[0];
  EXPECT_TRUE(Contains(failed[0], "\"statement_index\":2")) << failed[0];
  ExpectLedgerVerifies();

  // Fixed: resumes at statement 3; the INSERT does not run twice.
  Migration("0001_nt.up.sql",
            "-- migledger:no-transaction\n"
            "CREATE TABLE n1 (id INTEGER);\n"
            "INSERT INTO n1 VALUES (1);\n"
            "CREATE TABLE nope (id INTEGER);\n"
            "CREATE TABLE n2 (id INTEGER);\n");
  RunResult fixed = Run({"apply"});
  ASSERT_EQ(fixed.exit_code, 0) << Describe(fixed);
  EXPECT_EQ(target_->Query("SELECT count(*) FROM n1"), Rows{"1"});
  EXPECT_TRUE(target_->TableExists("nope"));
  EXPECT_TRUE(target_->TableExists("n2"));
  EXPECT_EQ(target_->Markers(), Rows{"0001"});
  EXPECT_EQ(EventLines("statement_applied").size(), 4u);
  ExpectLedgerVerifies();
}

// ---- baseline -------------------------------------------------------------

TEST_P(CoreScenarioTest, BaselineMakesApplyRunOnlyLaterVersions) {
  ASSERT_EQ(target_->Exec("CREATE TABLE a (id INTEGER);\n"
                          "CREATE TABLE b (id INTEGER);\n"),
            "");
  ThreeMigrations();
  RunResult b =
      Run({"baseline", "--version", "0002", "--reason", "existing db"});
  ASSERT_EQ(b.exit_code, 0) << Describe(b);
  EXPECT_TRUE(Contains(b.out, "baselined at 0002")) << b.out;
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002"}));
  std::vector<std::string> baselined = EventLines("baselined");
  ASSERT_EQ(baselined.size(), 1u);
  EXPECT_TRUE(Contains(baselined[0], "existing db")) << baselined[0];

  RunResult r = Run({"apply"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(Contains(r.out, "applied  0003 c")) << r.out;
  EXPECT_FALSE(Contains(r.out, "0001")) << r.out;
  EXPECT_FALSE(Contains(r.out, "0002")) << r.out;
  std::vector<std::string> started = EventLines("step_started");
  ASSERT_EQ(started.size(), 1u);
  EXPECT_TRUE(Contains(started[0], "\"version\":\"0003\"")) << started[0];
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002", "0003"}));
  RunResult status = Run({"status"});
  EXPECT_TRUE(Contains(status.out, "3 applied, 0 pending")) << status.out;
  ExpectLedgerVerifies();
}

}  // namespace
}  // namespace migledger::testing
