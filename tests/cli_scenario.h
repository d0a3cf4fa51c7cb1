// What the CLI tests (tests/cli_*_test.cc) share: the target under test
// (a SQLite file, or a PostgreSQL database of its own per test when
// PGTEST_URI is set, see scripts/pg-throwaway) and CoreScenarioTest, the
// fixture of the scenarios that run on both drivers.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace migledger::testing {

// ---- small helpers --------------------------------------------------------

// How many times `needle` occurs in `text` (not overlapping).
size_t CountOf(const std::string& text, const std::string& needle);

// A cheap structural check that `line` is one JSON object: starts with '{',
// brackets balance outside strings, and the object closes on the last
// character.
bool LooksLikeJsonObject(const std::string& line);

// The "sequence" of one jsonl event line, or 0.
uint64_t SequenceOf(const std::string& line);

// ---- PostgreSQL -----------------------------------------------------------

// `uri` with `password` in its user info (postgresql://user:pw@host/db).
std::string WithPassword(const std::string& uri, const std::string& password);

// True when PGTEST_URI names a server for the PostgreSQL cases.
bool HavePostgres();

// An empty database of its own for one test.
class PgDatabase {
 public:
  PgDatabase();
  ~PgDatabase();
  bool ok() const { return !name_.empty(); }
  const std::string& error() const { return error_; }
  // Without a password (migledger gets it from PGPASSWORD).
  std::string uri() const { return WithDatabase(Env("PGTEST_URI"), name_); }

 private:
  std::string error_;
  std::string name_;
};

// ---- the target under test ------------------------------------------------

// One target database of a test project: SQLite file or PostgreSQL
// database, with the few queries the tests need on either.
class Target {
 public:
  Target(const std::string& kind, const std::string& project_dir)
      : kind_(kind), project_dir_(project_dir) {
    if (kind_ == "postgres") pg_ = std::make_unique<PgDatabase>();
  }
  bool is_pg() const { return kind_ == "postgres"; }
  bool ok() const { return !pg_ || pg_->ok(); }
  std::string setup_error() const { return pg_ ? pg_->error() : ""; }

  // The URL written in migledger.toml.
  std::string url() const { return pg_ ? pg_->uri() : "sqlite:app.db"; }
  std::string sqlite_path() const { return project_dir_ + "/app.db"; }
  std::map<std::string, std::string> env() const {
    if (!pg_) return {};
    return {{"PGPASSWORD", Env("PGTEST_PASSWORD")},
            {"PGCONNECT_TIMEOUT", "10"}};
  }

  std::vector<std::string> Query(const std::string& sql) {
    if (!pg_) return SqliteQuery(sqlite_path(), sql);
    PsqlResult r = RunPsql(pg_->uri(), sql + ";\n");
    if (r.exit_code != 0) return {"<error: " + r.output + ">"};
    return r.rows;
  }
  // "" on success, else the error.
  std::string Exec(const std::string& sql) {
    if (!pg_) return SqliteExec(sqlite_path(), sql);
    PsqlResult r = RunPsql(pg_->uri(), sql + "\n");
    return r.exit_code == 0 ? "" : "psql failed: " + r.output;
  }
  std::string ExecFile(const std::string& path) {
    if (!pg_) return SqliteExec(sqlite_path(), ReadFile(path));
    PsqlResult r = RunPsqlFile(pg_->uri(), path);
    return r.exit_code == 0 ? "" : "psql failed: " + r.output;
  }

  bool TableExists(const std::string& table) {
    if (pg_) {
      return Query("SELECT to_regclass('" + table + "') IS NOT NULL") ==
             std::vector<std::string>{"t"};
    }
    return Query(
               "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
               "name = '" +
               table + "'") == std::vector<std::string>{"1"};
  }
  std::string marker_table() const {
    return pg_ ? "\"migledger\".\"applied\"" : "\"migledger_applied\"";
  }
  // Versions with a marker row, sorted.
  std::vector<std::string> Markers() {
    return Query("SELECT version FROM " + marker_table() + " ORDER BY version");
  }

 private:
  std::string kind_;
  std::string project_dir_;
  std::unique_ptr<PgDatabase> pg_;
};

using Rows = std::vector<std::string>;

// ---- fixtures -------------------------------------------------------------

// A project on one target kind; the kind is the test parameter.
class CoreScenarioTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "postgres" && !HavePostgres()) {
      GTEST_SKIP() << "PGTEST_URI is not set (run under scripts/pg-throwaway)";
    }
    target_ = std::make_unique<Target>(GetParam(), dir_.path());
    ASSERT_TRUE(target_->ok()) << target_->setup_error();
    MakeProject(dir_.path(), target_->url());
  }

  RunResult Run(const std::vector<std::string>& args) {
    return RunMigledger(args, dir_.path(), target_->env());
  }
  void Migration(const std::string& file, const std::string& sql) {
    WriteFile(dir_ / ("migrations/" + file), sql);
  }
  // 0001_a, 0002_b, 0003_c, each creating its table, with down files.
  void ThreeMigrations() {
    Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER PRIMARY KEY);\n");
    Migration("0001_a.down.sql", "DROP TABLE a;\n");
    Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
    Migration("0002_b.down.sql", "DROP TABLE b;\n");
    Migration("0003_c.up.sql",
              "CREATE TABLE c (id INTEGER);\nINSERT INTO c VALUES (1);\n");
    Migration("0003_c.down.sql", "DROP TABLE c;\n");
  }
  void ExpectLedgerVerifies() {
    RunResult v = Run({"audit", "verify"});
    EXPECT_EQ(v.exit_code, 0) << Describe(v);
    EXPECT_TRUE(Contains(v.out, "events verified")) << Describe(v);
  }
  std::vector<std::string> EventLines(const std::string& type) {
    RunResult r = Run({"audit", "log", "--format", "jsonl", "--type", type});
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    return Lines(r.out);
  }
  std::string SyntaxErrorText() const {
    return GetParam() == "postgres" ? "syntax error at or near \"TABLEE\""
                                    : "near \"TABLEE\": syntax error";
  }

  TempDir dir_;
  std::unique_ptr<Target> target_;
};

}  // namespace migledger::testing
