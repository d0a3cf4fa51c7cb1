// Integration tests of the migledger command line: every test makes a
// project in a fresh TempDir and runs the real binary on it, checking exit
// codes, what a person reads on stdout/stderr, the target database and the
// ledger (which must always verify).
//
// The core scenarios run on SQLite and, when PGTEST_URI is set (see
// scripts/pg-throwaway), on PostgreSQL too: each PostgreSQL test gets an
// empty database of its own, made with psql (see PgDatabasePool).
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
#include "tests/test_util.h"

namespace migledger::testing {
namespace {

namespace fs = std::filesystem;

// ---- small helpers --------------------------------------------------------

size_t CountOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos;
       pos = text.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

// A cheap structural check that `line` is one JSON object: starts with '{',
// brackets balance outside strings, and the object closes on the last
// character.
bool LooksLikeJsonObject(const std::string& line) {
  if (line.size() < 2 || line.front() != '{' || line.back() != '}') {
    return false;
  }
  std::vector<char> stack;
  bool in_string = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      } else if (static_cast<unsigned char>(c) < 0x20) {
        return false;  // raw control character inside a string
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '{':
      case '[':
        stack.push_back(c);
        break;
      case '}':
        if (stack.empty() || stack.back() != '{') return false;
        stack.pop_back();
        if (stack.empty() && i + 1 != line.size()) return false;
        break;
      case ']':
        if (stack.empty() || stack.back() != '[') return false;
        stack.pop_back();
        break;
      default:
        break;
    }
  }
  return !in_string && stack.empty();
}

// The "sequence" of one jsonl event line, or 0.
uint64_t SequenceOf(const std::string& line) {
  const std::string key = "\"sequence\":";
  size_t pos = line.find(key);
  if (pos == std::string::npos) return 0;
  return std::strtoull(line.c_str() + pos + key.size(), nullptr, 10);
}

// Runs SQL that changes a SQLite file; returns "" or the error.
std::string SqliteExec(const std::string& db, const std::string& sql) {
  sqlite3* h = nullptr;
  if (sqlite3_open_v2(db.c_str(), &h,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                      nullptr) != SQLITE_OK) {
    std::string e = h ? sqlite3_errmsg(h) : "cannot open";
    sqlite3_close(h);
    return e;
  }
  sqlite3_busy_timeout(h, 2000);
  char* msg = nullptr;
  std::string error;
  if (sqlite3_exec(h, sql.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
    error = msg ? msg : "error";
  }
  sqlite3_free(msg);
  sqlite3_close(h);
  return error;
}

// ---- PostgreSQL -----------------------------------------------------------

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// `uri` with its database name replaced.
std::string WithDatabase(const std::string& uri, const std::string& db) {
  size_t q = uri.find('?');
  std::string base = uri.substr(0, q);
  std::string rest = q == std::string::npos ? "" : uri.substr(q);
  size_t scheme = base.find("://");
  size_t slash = base.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  if (slash == std::string::npos) return base + "/" + db + rest;
  return base.substr(0, slash + 1) + db + rest;
}

// `uri` with `password` in its user info (postgresql://user:pw@host/db).
std::string WithPassword(const std::string& uri, const std::string& password) {
  size_t scheme = uri.find("://");
  size_t at = uri.find('@', scheme + 3);
  if (scheme == std::string::npos || at == std::string::npos) return uri;
  std::string user = uri.substr(scheme + 3, at - scheme - 3);
  user = user.substr(0, user.find(':'));
  return uri.substr(0, scheme + 3) + user + ":" + password + uri.substr(at);
}

struct PsqlResult {
  int exit_code = -1;
  std::vector<std::string> rows;
  std::string output;
};

// Runs psql on `uri` with the test password, SQL given as a file.
PsqlResult RunPsqlFile(const std::string& uri, const std::string& file) {
  std::string cmd =
      "PGPASSWORD=" + ShellQuote(Env("PGTEST_PASSWORD")) +
      " PGCONNECT_TIMEOUT=10 psql -X -A -t -q -v ON_ERROR_STOP=1 " +
      ShellQuote(uri) + " -f " + ShellQuote(file) + " 2>&1";
  PsqlResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.rows = Lines(r.output);
  return r;
}

PsqlResult RunPsql(const std::string& uri, const std::string& sql) {
  char tmpl[] = "/tmp/migledger-cli-psql-XXXXXX";
  int fd = mkstemp(tmpl);
  if (fd < 0) return {};
  close(fd);
  WriteFile(tmpl, sql);
  PsqlResult r = RunPsqlFile(uri, tmpl);
  unlink(tmpl);
  return r;
}

bool HavePostgres() { return !Env("PGTEST_URI").empty(); }

// Databases on the PGTEST_URI server, one per test at a time. Creating and
// dropping a database costs about two seconds (DROP DATABASE checkpoints),
// so a released database is wiped (its schemas dropped, an empty "public"
// recreated) and handed to the next test; all of them are dropped when the
// test program ends.
class PgDatabasePool : public ::testing::Environment {
 public:
  static PgDatabasePool* Get() {
    static PgDatabasePool* pool = static_cast<PgDatabasePool*>(
        ::testing::AddGlobalTestEnvironment(new PgDatabasePool));
    return pool;
  }

  // The name of an empty database, or "" with *error set.
  std::string Acquire(std::string* error) {
    if (!free_.empty()) {
      std::string name = free_.back();
      free_.pop_back();
      return name;
    }
    static std::atomic<int> counter{0};
    std::random_device rd;
    std::string name = "mlcli_" + std::to_string(getpid()) + "_" +
                       std::to_string(counter++) + "_" +
                       std::to_string(rd() % 100000);
    PsqlResult r =
        RunPsql(Env("PGTEST_URI"), "CREATE DATABASE \"" + name + "\";\n");
    if (r.exit_code != 0) {
      *error = r.output;
      return "";
    }
    all_.push_back(name);
    return name;
  }

  void Release(const std::string& name) {
    if (std::getenv("MIGLEDGER_KEEP_TEST_DIRS")) return;  // keep for a look
    PsqlResult r = RunPsql(WithDatabase(Env("PGTEST_URI"), name),
                           "DO $$ BEGIN EXECUTE format('ALTER ROLE %I IN "
                           "DATABASE %I RESET ALL', current_user, "
                           "current_database()); END $$;\n"
                           "DO $$ DECLARE s name; BEGIN FOR s IN SELECT "
                           "nspname FROM pg_namespace WHERE nspname NOT LIKE "
                           "'pg\\_%' AND nspname <> 'information_schema' LOOP "
                           "EXECUTE format('DROP SCHEMA %I CASCADE', s); END "
                           "LOOP; END $$;\n"
                           "CREATE SCHEMA public;\n");
    if (r.exit_code == 0) free_.push_back(name);
  }

  void TearDown() override {
    if (all_.empty() || std::getenv("MIGLEDGER_KEEP_TEST_DIRS")) return;
    std::string sql;
    for (const auto& name : all_) {
      sql += "DROP DATABASE IF EXISTS \"" + name + "\" WITH (FORCE);\n";
    }
    RunPsql(Env("PGTEST_URI"), sql);
    all_.clear();
    free_.clear();
  }

 private:
  std::vector<std::string> all_;
  std::vector<std::string> free_;
};

// Registered before main() runs, so its TearDown drops the databases.
[[maybe_unused]] ::testing::Environment* const kPgDatabasePool =
    PgDatabasePool::Get();

// An empty database of its own for one test.
class PgDatabase {
 public:
  PgDatabase() : name_(PgDatabasePool::Get()->Acquire(&error_)) {}
  ~PgDatabase() {
    if (ok()) PgDatabasePool::Get()->Release(name_);
  }
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

std::string KindName(const ::testing::TestParamInfo<std::string>& info) {
  return info.param == "postgres" ? "Postgres" : "Sqlite";
}

INSTANTIATE_TEST_SUITE_P(Drivers, CoreScenarioTest,
                         ::testing::Values("sqlite", "postgres"), KindName);

// ---- init and new ---------------------------------------------------------

TEST(CliInitTest, InitCreatesConfigMigrationsDirAndPrivateLedger) {
  TempDir dir;
  RunResult r = RunMigledger({"init"}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(fs::is_regular_file(dir / "migledger.toml"));
  EXPECT_TRUE(fs::is_directory(dir / "migrations"));
  ASSERT_TRUE(fs::is_directory(dir / ".migledger"));
  struct stat st {};
  ASSERT_EQ(stat((dir / ".migledger").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_TRUE(Contains(r.out, "migledger.toml")) << r.out;
  EXPECT_TRUE(Contains(r.out, "ledger ")) << r.out;
  std::string config = ReadFile(dir / "migledger.toml");
  EXPECT_TRUE(Contains(config, "url = \"sqlite:app.db\"")) << config;

  // A second init keeps the config and the ledger.
  WriteFile(dir / "migledger.toml", config + "# edited\n");
  RunResult again = RunMigledger({"init"}, dir.path());
  EXPECT_EQ(again.exit_code, 0) << Describe(again);
  EXPECT_TRUE(Contains(ReadFile(dir / "migledger.toml"), "# edited"));
  RunResult v = RunMigledger({"audit", "verify"}, dir.path());
  EXPECT_EQ(v.exit_code, 0) << Describe(v);
}

// issue 30 item 2: the check looked only for ":@" and the word "password",
// so postgres://app:s3cret@host/db went into migledger.toml (mode 0644).
TEST(CliInitTest, InitRefusesPasswordInConfig) {
  for (const std::string uri :
       {"postgres://app:s3cret@host/db",
        "postgresql://app@host/db?sslpassword=s3cret",
        "host=h dbname=d password=s3cret",
        "postgres:///db?host=/run/pg&password=s3cret"}) {
    TempDir dir;
    RunResult r = RunMigledger({"init", "--target", uri}, dir.path());
    EXPECT_EQ(r.exit_code, 2) << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_FALSE(Contains(r.err + r.out, "s3cret")) << Describe(r);
    for (const char* word : {"url_env", "PGPASSWORD", ".pgpass"}) {
      EXPECT_TRUE(Contains(r.err, word)) << word << ": " << r.err;
    }
    EXPECT_FALSE(fs::exists(dir / "migledger.toml"));
  }
  // Without a password the URI is written, quoted as TOML.
  TempDir dir;
  RunResult ok = RunMigledger(
      {"init", "--target", "postgres://app@host/db?sslmode=require"},
      dir.path());
  EXPECT_EQ(ok.exit_code, 0) << Describe(ok);
  EXPECT_TRUE(Contains(ReadFile(dir / "migledger.toml"),
                       "url = \"postgres://app@host/db?sslmode=require\""));
}

// A migledger.toml that holds a password (targets or the audit store) is
// refused before anything connects, and so is a misspelt key.
TEST(CliConfigTest, PasswordOrUnknownKeyInTheFileIsBadInput) {
  const std::map<std::string, std::string> files = {
      {"default_target = \"dev\"\n[targets.dev]\n"
       "url = \"postgres://app:s3cret@127.0.0.1:1/db\"\n",
       "migledger.toml:3: targets.dev.url holds a password"},
      {"audit_store = \"host=127.0.0.1 port=1 sslpassword=s3cret\"\n"
       "default_target = \"dev\"\n[targets.dev]\nurl = \"sqlite:a.db\"\n",
       "migledger.toml:1: audit_store holds a password (sslpassword)"},
      {"default_target = \"dev\"\ndefault_tagret = \"x\"\n[targets.dev]\n"
       "url = \"sqlite:a.db\"\n",
       "migledger.toml:2: unknown key \"default_tagret\""},
  };
  for (const auto& [toml, message] : files) {
    TempDir dir;
    WriteFile(dir / "migledger.toml", toml);
    fs::create_directories(dir / "migrations");
    for (const char* command : {"status", "apply"}) {
      RunResult r = RunMigledger({command}, dir.path());
      EXPECT_EQ(r.exit_code, 2) << Describe(r);
      ExpectOneErrorLine(r);
      EXPECT_TRUE(Contains(r.err, message)) << r.err;
      EXPECT_FALSE(Contains(r.err + r.out, "s3cret")) << Describe(r);
    }
    EXPECT_FALSE(fs::exists(dir / "a.db"));
  }
}

// issue 39: an ESC sequence or a bidi override in a --reason, the actor, a
// file name or a database's error text reached the terminal raw. The ledger
// keeps the exact bytes; tables and error lines escape them.
TEST(CliTerminalTest, ControlCharactersAreEscapedInTablesAndErrorLines) {
  TempDir dir;
  MakeProject(dir.path(), "sqlite:app.db");
  const std::string esc = "\x1b[2K\x1b[1A";
  const std::string rlo = "\xe2\x80\xae";
  WriteFile(dir / "migrations/0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  WriteFile(dir / "migrations/0002_b.up.sql",
            "INSERT INTO \"t" + esc + "x" + rlo + "\" VALUES (1);\n");
  const std::map<std::string, std::string> env = {
      {"MIGLEDGER_ACTOR", "ops" + esc + rlo}};
  auto raw = [&](const std::string& text) {
    return Contains(text, "\x1b") || Contains(text, rlo);
  };
  RunResult apply = RunMigledger(
      {"apply", "--reason", "ok" + esc + "forged\nline" + rlo + " x=1"},
      dir.path(), env);
  EXPECT_EQ(apply.exit_code, 3) << Describe(apply);
  ExpectOneErrorLine(apply);
  EXPECT_FALSE(raw(apply.err)) << apply.err;
  EXPECT_TRUE(Contains(apply.err, "t\\e[2K\\e[1Ax\\u202e")) << apply.err;
  RunResult log = RunMigledger({"audit", "log"}, dir.path());
  EXPECT_EQ(log.exit_code, 0) << Describe(log);
  EXPECT_FALSE(raw(log.out)) << log.out;
  EXPECT_TRUE(Contains(log.out, "ok\\e[2K\\e[1Aforged")) << log.out;
  EXPECT_TRUE(Contains(log.out, "ops\\e[2K")) << log.out;
  RunResult status = RunMigledger({"status"}, dir.path());
  EXPECT_FALSE(raw(status.out + status.err)) << status.out;
  // The stored event keeps the exact bytes (JSON escapes them its own way).
  RunResult jsonl = RunMigledger(
      {"audit", "log", "--format", "jsonl", "--type", "run_started"},
      dir.path());
  EXPECT_TRUE(Contains(jsonl.out, "ok\\u001b[2K")) << jsonl.out;
  // The command line keeps the reason as written, though it holds a '='.
  EXPECT_TRUE(Contains(jsonl.out, " x=1'")) << jsonl.out;
}

TEST(CliNewTest, NewCreatesTimestampedUpDownPairInEmptyProject) {
  TempDir dir;
  ASSERT_EQ(RunMigledger({"init"}, dir.path()).exit_code, 0);
  RunResult r = RunMigledger({"new", "create_users"}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir / "migrations")) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  ASSERT_EQ(names.size(), 2u);
  // <14-digit UTC timestamp>_create_users.{down,up}.sql
  const std::string version = names[0].substr(0, names[0].find('_'));
  EXPECT_EQ(version.size(), 14u) << names[0];
  EXPECT_EQ(names[0], version + "_create_users.down.sql");
  EXPECT_EQ(names[1], version + "_create_users.up.sql");
  EXPECT_TRUE(Contains(r.out, names[0])) << r.out;
  EXPECT_TRUE(Contains(r.out, names[1])) << r.out;
}

TEST(CliNewTest, NewKeepsSequentialNumberingAndWidth) {
  TempDir dir;
  MakeProject(dir.path());
  WriteFile(dir / "migrations/0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  RunResult r = RunMigledger({"new", "b"}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(fs::is_regular_file(dir / "migrations/0002_b.up.sql")) << r.out;
  EXPECT_TRUE(fs::is_regular_file(dir / "migrations/0002_b.down.sql")) << r.out;

  // 0009 -> 0010: the width is kept as the number grows a digit.
  WriteFile(dir / "migrations/0009_i.up.sql", "CREATE TABLE i (id INTEGER);\n");
  r = RunMigledger({"new", "--no-transaction", "j"}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  ASSERT_TRUE(fs::is_regular_file(dir / "migrations/0010_j.up.sql")) << r.out;
  EXPECT_EQ(ReadFile(dir / "migrations/0010_j.up.sql")
                .rfind("-- migledger:no-transaction\n", 0),
            0u);

  // The files it makes are valid migrations: apply takes them.
  RunResult apply = RunMigledger({"apply"}, dir.path());
  EXPECT_EQ(apply.exit_code, 0) << Describe(apply);
}

// After a timestamp version in the future (or several in one second), the
// next is the second after it, still a valid timestamp; an odd-width number
// just counts up.
TEST(CliNewTest, NewAfterTheNewestTimestampStaysATimestamp) {
  TempDir dir;
  MakeProject(dir.path());
  WriteFile(dir / "migrations/20991231235959_a.up.sql", "SELECT 1;\n");
  RunResult r = RunMigledger({"new", "b"}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(fs::is_regular_file(dir / "migrations/21000101000000_b.up.sql"))
      << r.out;
  WriteFile(dir / "migrations/99999999999999999999999_c.up.sql", "SELECT 1;\n");
  r = RunMigledger({"new", "d"}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(
      fs::is_regular_file(dir / "migrations/100000000000000000000000_d.up.sql"))
      << r.out;
}

TEST(CliNewTest, NewRejectsBadSlug) {
  TempDir dir;
  MakeProject(dir.path());
  RunResult r = RunMigledger({"new", "bad slug!"}, dir.path());
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(fs::is_empty(dir / "migrations"));
}

// An option of a command given before the command's name: the error says
// where it goes; unknown options keep CLI11's message.
TEST(CliUsageTest, CommandOptionBeforeTheCommandSaysWhereItGoes) {
  TempDir dir;
  MakeProject(dir.path());
  RunResult r = RunMigledger({"--target", "prod", "plan"}, dir.path());
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err,
                       "--target is an option of the command: put it after the "
                       "command name (migledger plan --target ...)"))
      << r.err;
  RunResult eq = RunMigledger({"--lock-timeout=5s", "apply"}, dir.path());
  EXPECT_EQ(eq.exit_code, 2) << Describe(eq);
  EXPECT_TRUE(Contains(eq.err, "(migledger apply --lock-timeout ...)"))
      << eq.err;
  RunResult unknown = RunMigledger({"--bogus", "plan"}, dir.path());
  EXPECT_EQ(unknown.exit_code, 2) << Describe(unknown);
  EXPECT_TRUE(Contains(unknown.err, "not expected: --bogus")) << unknown.err;
}

// A mistyped command is named, with the closest command to use instead (or
// the list of commands when none is close), at every level.
TEST(CliUsageTest, MistypedCommandIsNamedWithTheClosestOne) {
  TempDir dir;
  MakeProject(dir.path());
  RunResult r = RunMigledger({"statsu"}, dir.path());
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err,
                       "unknown command \"statsu\""
                       " of migledger (did you mean \"status\"?)"))
      << r.err;
  RunResult audit = RunMigledger({"-C", dir.path(), "audit", "lgo"}, "/");
  EXPECT_EQ(audit.exit_code, 2) << Describe(audit);
  ExpectOneErrorLine(audit);
  EXPECT_TRUE(Contains(audit.err,
                       "unknown command \"lgo\" of migledger "
                       "audit (did you mean \"log\"?)"))
      << audit.err;
  RunResult far = RunMigledger({"frobnicate"}, dir.path());
  EXPECT_EQ(far.exit_code, 2) << Describe(far);
  ExpectOneErrorLine(far);
  EXPECT_TRUE(Contains(far.err,
                       "unknown command \"frobnicate\" of migledger "
                       "(commands: init, new, status, plan, apply"))
      << far.err;
}

// --store is for the audit commands; with any other it would be ignored.
TEST(CliUsageTest, StoreFlagWithACommandThatIsNotAnAuditCommandIsBadInput) {
  TempDir dir;
  MakeProject(dir.path());
  for (const char* command : {"status", "apply", "validate"}) {
    RunResult r = RunMigledger({"--store", command}, dir.path());
    EXPECT_EQ(r.exit_code, 2) << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "--store")) << r.err;
    EXPECT_TRUE(Contains(r.err, std::string("not with ") + command)) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  EXPECT_FALSE(fs::exists(dir / "app.db"));
}

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

// ---- down -----------------------------------------------------------------

// A down file with no statement (what `migledger new` writes) would record
// a revert that undid nothing: refused before anything runs.
TEST_P(CoreScenarioTest, DownFileWithoutStatementsIsRefused) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  Migration("0001_a.down.sql", "-- a: down\n\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  const size_t runs = EventLines("run_started").size();
  RunResult r = Run({"down", "--steps", "1"});
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(
      Contains(r.err, "0001_a.down.sql: the down file has no statements"))
      << r.err;
  EXPECT_TRUE(target_->TableExists("a"));
  EXPECT_EQ(target_->Markers(), Rows{"0001"});
  EXPECT_EQ(EventLines("run_started").size(), runs);

  Migration("0001_a.down.sql", "-- a: down\nDROP TABLE a;\n");
  RunResult ok = Run({"down", "--steps", "1"});
  ASSERT_EQ(ok.exit_code, 0) << Describe(ok);
  EXPECT_FALSE(target_->TableExists("a"));
  EXPECT_EQ(target_->Markers(), Rows{});
  ExpectLedgerVerifies();
}

TEST_P(CoreScenarioTest, DownStepsOneRevertsTheLastMigration) {
  ThreeMigrations();
  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  RunResult r = Run({"down", "--steps", "1"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(Contains(r.out, "reverted 0003 c")) << r.out;
  EXPECT_FALSE(Contains(r.out, "0002")) << r.out;
  EXPECT_FALSE(target_->TableExists("c"));  // the down SQL ran
  EXPECT_TRUE(target_->TableExists("b"));
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002"}));
  EXPECT_EQ(EventLines("step_reverted").size(), 1u);

  RunResult status = Run({"status"});
  EXPECT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_TRUE(Contains(status.out, "2 applied, 1 pending")) << status.out;
  ExpectLedgerVerifies();

  // And up again.
  RunResult up = Run({"apply"});
  EXPECT_EQ(up.exit_code, 0) << Describe(up);
  EXPECT_TRUE(target_->TableExists("c"));
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002", "0003"}));
}

TEST_P(CoreScenarioTest, DownToVersionRevertsEverythingAboveIt) {
  ThreeMigrations();
  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  RunResult r = Run({"down", "--to", "0001"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  size_t c = r.out.find("reverted 0003 c");
  size_t b = r.out.find("reverted 0002 b");
  ASSERT_NE(c, std::string::npos) << r.out;
  ASSERT_NE(b, std::string::npos) << r.out;
  EXPECT_LT(c, b) << "newest first: " << r.out;
  EXPECT_FALSE(Contains(r.out, "0001")) << r.out;
  EXPECT_TRUE(target_->TableExists("a"));
  EXPECT_FALSE(target_->TableExists("b"));
  EXPECT_FALSE(target_->TableExists("c"));
  EXPECT_EQ(target_->Markers(), Rows{"0001"});

  RunResult nothing = Run({"down", "--to", "0001"});
  EXPECT_EQ(nothing.exit_code, 0) << Describe(nothing);
  EXPECT_EQ(nothing.out, "nothing to revert\n");
  ExpectLedgerVerifies();
}

TEST_P(CoreScenarioTest, DownWithoutDownFileIsRefusedNamingTheMigration) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  Migration("0001_a.down.sql", "DROP TABLE a;\n");
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  size_t events_before =
      Lines(Run({"audit", "log", "--format", "jsonl"}).out).size();

  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"down", "--steps", "1"},
        std::vector<std::string>{"down", "--to", "0"}}) {
    RunResult r = Run(args);
    EXPECT_EQ(r.exit_code, 2) << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "0002")) << r.err;
    EXPECT_TRUE(Contains(r.err, "0002_b.up.sql")) << r.err;
    EXPECT_TRUE(Contains(r.err, "no down migration")) << r.err;
  }
  // Nothing was reverted, not even 0001 (which has a down file).
  EXPECT_TRUE(target_->TableExists("a"));
  EXPECT_TRUE(target_->TableExists("b"));
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002"}));
  EXPECT_EQ(Lines(Run({"audit", "log", "--format", "jsonl"}).out).size(),
            events_before);
  ExpectLedgerVerifies();
}

TEST_P(CoreScenarioTest, DownNeedsStepsOrTo) {
  RunResult r = Run({"down"});
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "--steps")) << r.err;
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

// ---- status --format json, plan -------------------------------------------

// A no-op apply after a long history saves the projection in the ledger;
// later commands start from it, but only when it stands on this ledger's
// own target chain.
TEST_P(CoreScenarioTest, ProjectionSnapshotIsUsedOnlyForItsOwnChain) {
  const int n = 140;  // 282 events: enough for a snapshot
  for (int i = 1; i <= n; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "%04d_t%d.up.sql", i, i);
    Migration(name, "CREATE TABLE t" + std::to_string(i) + " (id INTEGER);\n");
  }
  Migration("0140_t140.down.sql", "DROP TABLE t140;\n");
  RunResult apply = Run({"apply", "-q"});
  ASSERT_EQ(apply.exit_code, 0) << Describe(apply);
  const std::string ledger_dir = dir_ / ".migledger";
  auto snapshot_name = [&]() -> std::string {
    LedgerOptions ro;
    ro.read_only = true;
    auto ledger = Ledger::Open(ledger_dir, ro);
    EXPECT_TRUE(ledger.ok()) << ledger.status().ToString();
    if (!ledger.ok() || (*ledger)->TargetKeys().size() != 1) return "";
    return "projection/" + (*ledger)->TargetKeys()[0];
  };
  auto has_snapshot = [&]() {
    LedgerOptions ro;
    ro.read_only = true;
    auto ledger = Ledger::Open(ledger_dir, ro);
    if (!ledger.ok()) return false;
    auto v = (*ledger)->GetDerived(snapshot_name());
    return v.ok() && v->has_value();
  };
  EXPECT_FALSE(has_snapshot());  // the apply replayed nothing long
  RunResult noop = Run({"apply"});
  ASSERT_EQ(noop.exit_code, 0) << Describe(noop);
  EXPECT_TRUE(Contains(noop.out, "nothing to apply")) << noop.out;
  ASSERT_TRUE(has_snapshot()) << "the no-op apply saved no snapshot";

  RunResult status = Run({"status"});
  EXPECT_TRUE(Contains(status.out, "140 applied, 0 pending"))
      << Describe(status);
  RunResult genuine = Run({"validate"});  // the saved snapshot is the replay's
  EXPECT_EQ(genuine.exit_code, 0) << Describe(genuine);
  // Events after the snapshot are replayed on top of it.
  ASSERT_EQ(Run({"down", "--steps", "1"}).exit_code, 0);
  status = Run({"status"});
  EXPECT_TRUE(Contains(status.out, "139 applied, 1 pending"))
      << Describe(status);

  // Overwrites the snapshot with an empty projection at the ledger's head,
  // on its real chain or on another one.
  auto plant = [&](bool real_chain) {
    auto ledger = Ledger::Open(ledger_dir, LedgerOptions{});
    ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
    const std::string key = (*ledger)->TargetKeys()[0];
    const ChainHead head = (*ledger)->TargetHead(key);
    SnapshotPoint at{
        key, head.size,
        real_chain ? std::string(AsBytes(head.chain)) : std::string(32, 'x')};
    ASSERT_TRUE(
        (*ledger)
            ->PutDerived("projection/" + key, SnapshotOf(Projection{}, at))
            .ok());
  };
  // On this chain it is believed (so it is what status reads): the ledger
  // then seems to know none of the 139 markers.
  plant(true);
  status = Run({"status"});
  EXPECT_TRUE(Contains(status.out, "not in ledger")) << Describe(status);
  EXPECT_TRUE(Contains(status.out,
                       "drift: the target has a marker row for "
                       "version 0139"))
      << Describe(status);
  // validate and every command that changes the target replay the whole
  // history and find the snapshot forged: nothing runs.
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"validate"}, {"apply"}}) {
    RunResult r = Run(args);
    EXPECT_EQ(r.exit_code, 6) << args[0] << "\n" << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "projection snapshot")) << r.err;
  }
  EXPECT_FALSE(target_->TableExists("t140"));
  // On another chain it is ignored and the history replayed.
  plant(false);
  status = Run({"status"});
  EXPECT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_TRUE(Contains(status.out, "139 applied, 1 pending"))
      << Describe(status);
  EXPECT_FALSE(Contains(status.out, "not in ledger")) << Describe(status);
  EXPECT_FALSE(Contains(status.out, "drift")) << Describe(status);

  // A second target of the same ledger: the first target's snapshot must
  // not be taken for this one's.
  const std::string other = "sqlite:" + (dir_ / "other.db");
  ASSERT_EQ(Run({"apply", "-q", "--target", other, "--to", "0005"}).exit_code,
            0);
  status = Run({"status", "--target", other});
  EXPECT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_TRUE(Contains(status.out, "5 applied, 135 pending"))
      << Describe(status);
  EXPECT_FALSE(Contains(status.out, "not in ledger")) << Describe(status);
  EXPECT_FALSE(Contains(status.out, "drift")) << Describe(status);
  ExpectLedgerVerifies();
}

// An apply of 2048 steps or more replays its own events at its end, so the
// first `status` after it starts from a snapshot.
// The apply's own connection keeps the rollback journal between its
// transactions (journal_mode=PERSIST, applier/sqlite_driver.cc) and goes
// back to the default at the end: no journal file left, nothing about the
// database changed for its other users.
void WriteThreeTables(const TempDir& dir) {
  for (int i = 1; i <= 3; ++i) {
    WriteFile(dir / ("migrations/000" + std::to_string(i) + "_t" +
                     std::to_string(i) + ".up.sql"),
              "CREATE TABLE t" + std::to_string(i) + " (id INTEGER);\n");
  }
}

// Applies the project, then checks the journal mode a new connection to
// its database gets, and the number of marker rows.
void ApplyThenExpect(const TempDir& dir, const char* mode,
                     const char* markers) {
  RunResult apply = RunMigledger({"apply", "-q"}, dir.path());
  ASSERT_EQ(apply.exit_code, 0) << Describe(apply);
  EXPECT_EQ(SqliteQuery(dir / "app.db", "PRAGMA journal_mode"),
            std::vector<std::string>{mode});
  EXPECT_EQ(
      SqliteQuery(dir / "app.db", "SELECT count(*) FROM migledger_applied"),
      std::vector<std::string>{markers});
}

TEST(CliSqliteJournalTest, ApplyLeavesTheDefaultJournalModeAndNoJournal) {
  TempDir dir;
  MakeProject(dir.path());
  WriteThreeTables(dir);
  ApplyThenExpect(dir, "delete", "3");
  EXPECT_FALSE(fs::exists(dir / "app.db-journal"));
}

TEST(CliSqliteJournalTest, KilledBetweenStepsLeavesAnInactiveJournal) {
  TempDir dir;
  MakeProject(dir.path());
  WriteThreeTables(dir);
  // Killed after the first step's commit: the kept journal is still there,
  // its header zeroed, so nothing is rolled back.
  RunResult killed =
      RunMigledger({"apply", "-q"}, dir.path(),
                   {{"MIGLEDGER_CRASH_AT", "apply.after_outcome:1"}});
  ASSERT_EQ(killed.signal, SIGKILL) << Describe(killed);
  EXPECT_TRUE(fs::exists(dir / "app.db-journal"));
  EXPECT_EQ(
      SqliteQuery(dir / "app.db", "SELECT version FROM migledger_applied"),
      std::vector<std::string>{"0001"});
  ApplyThenExpect(dir, "delete", "3");
  EXPECT_FALSE(fs::exists(dir / "app.db-journal"));
  RunResult verify = RunMigledger({"audit", "verify"}, dir.path());
  EXPECT_EQ(verify.exit_code, 0) << Describe(verify);
}

TEST(CliSqliteJournalTest, WalDatabaseStaysInWal) {
  TempDir dir;
  MakeProject(dir.path());
  WriteThreeTables(dir);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir / "app.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(db, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(db);
  ApplyThenExpect(dir, "wal", "3");
}

TEST(CliSqliteJournalTest, AMigrationsOwnJournalModeIsKept) {
  TempDir dir;
  MakeProject(dir.path());
  WriteThreeTables(dir);
  WriteFile(dir / "migrations/0004_wal.up.sql",
            "-- migledger:no-transaction\nPRAGMA journal_mode=WAL;\n");
  ApplyThenExpect(dir, "wal", "4");
}

// An applied migration whose file was deleted: status still lists it (from
// its marker row) and names the drift.
TEST(CliStatusTest, AppliedMigrationWithoutItsFileIsListedAsMissing) {
  TempDir dir;
  MakeProject(dir.path());
  WriteThreeTables(dir);
  RunResult apply = RunMigledger({"apply", "-q"}, dir.path());
  ASSERT_EQ(apply.exit_code, 0) << Describe(apply);
  fs::remove(dir / "migrations/0002_t2.up.sql");
  RunResult status = RunMigledger({"status"}, dir.path());
  bool listed = false;
  for (const std::string& line : Lines(status.out)) {
    if (line.rfind("0002", 0) == 0) listed = Contains(line, "missing file");
  }
  EXPECT_TRUE(listed) << Describe(status);
  EXPECT_TRUE(Contains(status.out, "2 applied, 0 pending")) << Describe(status);
  RunResult validate = RunMigledger({"validate"}, dir.path());
  EXPECT_TRUE(Contains(validate.out, "missing_file")) << Describe(validate);
}

TEST(CliSnapshotTest, LongApplyLeavesAProjectionSnapshot) {
  TempDir dir;
  MakeProject(dir.path());
  for (int i = 1; i <= 2048; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "%04d_t%d.up.sql", i, i);
    WriteFile(dir / ("migrations/" + std::string(name)),
              "CREATE TABLE t" + std::to_string(i) + " (id INTEGER);\n");
  }
  RunResult apply = RunMigledger({"apply", "-q"}, dir.path());
  ASSERT_EQ(apply.exit_code, 0) << Describe(apply);
  LedgerOptions ro;
  ro.read_only = true;
  auto ledger = Ledger::Open(dir / ".migledger", ro);
  ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
  ASSERT_EQ((*ledger)->TargetKeys().size(), 1u);
  const std::string key = (*ledger)->TargetKeys()[0];
  auto snapshot = (*ledger)->GetDerived("projection/" + key);
  ASSERT_TRUE(snapshot.ok()) << snapshot.status().ToString();
  ASSERT_TRUE(snapshot->has_value()) << "the long apply left no snapshot";
  SnapshotPoint at;
  auto restored = ProjectionBuilder::Restore(**snapshot, &at);
  ASSERT_TRUE(restored.has_value());
  EXPECT_EQ(at.target_key, key);
  // Saved after the run's last event, its RunFinished.
  EXPECT_EQ(at.target_size, (*ledger)->TargetHead(key).size);
  EXPECT_EQ(restored->projection().versions.size(), 2048u);
  ledger->reset();
  RunResult status = RunMigledger({"status"}, dir.path());
  EXPECT_TRUE(Contains(status.out, "2048 applied, 0 pending"))
      << Describe(status);
}

TEST_P(CoreScenarioTest, StatusJsonListsStates) {
  ThreeMigrations();
  ASSERT_EQ(Run({"apply", "--to", "0001"}).exit_code, 0);
  RunResult r = Run({"status", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  ASSERT_FALSE(r.out.empty());
  EXPECT_EQ(r.out.back(), '\n');
  std::string json = r.out.substr(0, r.out.size() - 1);
  EXPECT_TRUE(LooksLikeJsonObject(json)) << json;
  EXPECT_EQ(Lines(r.out).size(), 1u) << r.out;
  EXPECT_TRUE(Contains(
      json, "{\"version\":\"0001\",\"slug\":\"a\",\"state\":\"applied\""))
      << json;
  EXPECT_TRUE(Contains(
      json, "{\"version\":\"0002\",\"slug\":\"b\",\"state\":\"pending\""))
      << json;
  EXPECT_TRUE(Contains(
      json, "{\"version\":\"0003\",\"slug\":\"c\",\"state\":\"pending\""))
      << json;
  EXPECT_TRUE(Contains(json, "\"drift\":[]")) << json;
  EXPECT_TRUE(Contains(json, "\"unfinished_steps\":0")) << json;
  EXPECT_FALSE(Contains(json, "\"database_id\":\"\"")) << json;
}

TEST_P(CoreScenarioTest, PlanListsPendingWithoutRunningThem) {
  ThreeMigrations();
  ASSERT_EQ(Run({"apply", "--to", "0001"}).exit_code, 0);
  RunResult r = Run({"plan"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(Contains(r.out, "2 migration(s) to apply")) << r.out;
  EXPECT_TRUE(Contains(r.out, "0002")) << r.out;
  EXPECT_TRUE(Contains(r.out, "0003")) << r.out;
  EXPECT_FALSE(Contains(r.out, "0001 ")) << r.out;
  EXPECT_FALSE(target_->TableExists("b"));
  EXPECT_EQ(target_->Markers(), Rows{"0001"});

  RunResult to = Run({"plan", "--to", "0002"});
  EXPECT_EQ(to.exit_code, 0) << Describe(to);
  EXPECT_TRUE(Contains(to.out, "1 migration(s) to apply")) << to.out;

  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  RunResult none = Run({"plan"});
  EXPECT_EQ(none.exit_code, 0) << Describe(none);
  EXPECT_EQ(none.out, "nothing to apply\n");
}

TEST_P(CoreScenarioTest, OfflinePlanScriptIsRecordedAsOutOfBand) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  RunResult plan = Run({"plan", "--sql"});
  ASSERT_EQ(plan.exit_code, 0) << Describe(plan);
  const std::string& script = plan.out;
  EXPECT_EQ(CountOf(script, "BEGIN;\n"), 2u) << script;
  EXPECT_EQ(CountOf(script, "COMMIT;\n"), 2u) << script;
  EXPECT_EQ(CountOf(script, "INSERT INTO " + target_->marker_table()), 2u)
      << script;
  EXPECT_TRUE(Contains(script, "VALUES ('0001', ")) << script;
  EXPECT_TRUE(Contains(script, "VALUES ('0002', ")) << script;
  EXPECT_LT(script.find("CREATE TABLE a"), script.find("CREATE TABLE b"));
  EXPECT_EQ(EventLines("plan_exported").size(), 1u);
  // Printing the plan ran nothing.
  EXPECT_FALSE(target_->TableExists("a"));

  WriteFile(dir_ / "offline.sql", script);
  ASSERT_EQ(target_->ExecFile(dir_ / "offline.sql"), "");
  EXPECT_TRUE(target_->TableExists("a"));
  EXPECT_TRUE(target_->TableExists("b"));

  RunResult apply = Run({"apply"});
  ASSERT_EQ(apply.exit_code, 0) << Describe(apply);
  EXPECT_TRUE(Contains(apply.out, "out-of-band application of 0001"))
      << apply.out;
  EXPECT_TRUE(Contains(apply.out, "out-of-band application of 0002"))
      << apply.out;
  EXPECT_TRUE(Contains(apply.out, "nothing to apply")) << apply.out;
  EXPECT_EQ(EventLines("applied_out_of_band").size(), 2u);
  EXPECT_EQ(EventLines("step_started"), Rows{});  // nothing ran twice
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002"}));

  RunResult again = Run({"apply"});
  EXPECT_EQ(again.exit_code, 0) << Describe(again);
  EXPECT_EQ(again.out, "nothing to apply\n");
  EXPECT_EQ(EventLines("applied_out_of_band").size(), 2u);
  RunResult validate = Run({"validate"});
  EXPECT_EQ(validate.exit_code, 0) << Describe(validate);
  ExpectLedgerVerifies();
}

// The offline script must stay valid SQL when a file's last statement has
// no terminating semicolon (apply accepts such files).
TEST_P(CoreScenarioTest, OfflinePlanScriptWorksWithoutFinalSemicolon) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER)");
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER)\n");
  RunResult plan = Run({"plan", "--sql"});
  ASSERT_EQ(plan.exit_code, 0) << Describe(plan);
  WriteFile(dir_ / "offline.sql", plan.out);
  ASSERT_EQ(target_->ExecFile(dir_ / "offline.sql"), "") << plan.out;
  EXPECT_TRUE(target_->TableExists("a"));
  EXPECT_TRUE(target_->TableExists("b"));
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002"}));

  RunResult apply = Run({"apply"});
  EXPECT_EQ(apply.exit_code, 0) << Describe(apply);
  EXPECT_EQ(EventLines("applied_out_of_band").size(), 2u);
  EXPECT_EQ(EventLines("step_started"), Rows{});
  ExpectLedgerVerifies();
}

// ---- drift ----------------------------------------------------------------

TEST_P(CoreScenarioTest, DeletedMarkerIsDriftAndNothingRuns) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  Migration("0003_c.up.sql", "CREATE TABLE c (id INTEGER);\n");
  ASSERT_EQ(target_->Exec("DELETE FROM " + target_->marker_table() +
                          " WHERE version = '0002';"),
            "");

  RunResult r = Run({"apply"});
  EXPECT_EQ(r.exit_code, 4) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "drift")) << r.err;
  EXPECT_TRUE(Contains(r.err, "0002")) << r.err;
  EXPECT_FALSE(target_->TableExists("c"));
  EXPECT_EQ(target_->Markers(), Rows{"0001"});
  EXPECT_EQ(EventLines("step_started").size(), 2u);  // only the first run's

  RunResult v = Run({"validate"});
  EXPECT_EQ(v.exit_code, 4) << Describe(v);
  EXPECT_TRUE(Contains(v.out, "missing_marker")) << v.out;
  EXPECT_TRUE(Contains(v.err, "drift")) << v.err;
  ExpectLedgerVerifies();
}

TEST_P(CoreScenarioTest, ChangedAppliedFileIsChecksumDriftUntilAccepted) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER, extra INTEGER);\n");

  RunResult v = Run({"validate"});
  EXPECT_EQ(v.exit_code, 4) << Describe(v);
  EXPECT_TRUE(Contains(v.out, "checksum")) << v.out;
  EXPECT_TRUE(Contains(v.out, "0001_a.up.sql")) << v.out;
  ExpectOneErrorLine(v);

  RunResult apply = Run({"apply"});
  EXPECT_EQ(apply.exit_code, 4) << Describe(apply);
  EXPECT_TRUE(Contains(apply.err, "accept-checksum")) << apply.err;

  RunResult accept =
      Run({"accept-checksum", "--version", "0001", "--reason", "r"});
  ASSERT_EQ(accept.exit_code, 0) << Describe(accept);
  EXPECT_EQ(EventLines("checksum_accepted").size(), 1u);
  RunResult ok = Run({"validate"});
  EXPECT_EQ(ok.exit_code, 0) << Describe(ok);
  EXPECT_TRUE(Contains(ok.out, "ok")) << ok.out;
  RunResult again = Run({"apply"});
  EXPECT_EQ(again.exit_code, 0) << Describe(again);
  EXPECT_EQ(again.out, "nothing to apply\n");
  ExpectLedgerVerifies();
}

// plan shows what apply would do: on drift, apply refuses, so plan reports
// the same drift the same way (exit 4) instead of listing the migration.
TEST_P(CoreScenarioTest, PlanReportsTheDriftApplyRefusesOn) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  Migration("0003_c.up.sql", "CREATE TABLE c (id INTEGER);\n");
  ASSERT_EQ(target_->Exec("DELETE FROM " + target_->marker_table() +
                          " WHERE version = '0002';"),
            "");
  RunResult plan = Run({"plan"});
  EXPECT_EQ(plan.exit_code, 4) << Describe(plan);
  ExpectOneErrorLine(plan);
  EXPECT_FALSE(Contains(plan.out, "0003")) << plan.out;
  RunResult sql = Run({"plan", "--sql"});
  EXPECT_EQ(sql.exit_code, 4) << Describe(sql);
  ExpectOneErrorLine(sql);
  RunResult apply = Run({"apply"});
  EXPECT_EQ(apply.exit_code, 4) << Describe(apply);
  EXPECT_EQ(plan.err, apply.err);
  EXPECT_EQ(sql.err, apply.err);
  EXPECT_FALSE(target_->TableExists("c"));
}

// Events record the migration file relative to the project directory (the
// schema's contract), not the runner's absolute path.
TEST_P(CoreScenarioTest, StepEventsRecordTheFileRelativeToTheProject) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  Migration("0002_b.up.sql", "CREATE TABLEE b (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 3);
  std::vector<std::string> lines = EventLines("step_started");
  std::vector<std::string> failed = EventLines("step_failed");
  lines.insert(lines.end(), failed.begin(), failed.end());
  ASSERT_EQ(lines.size(), 3u);
  for (size_t i = 0; i < lines.size(); ++i) {
    const char* want = i == 0 ? "\"file\":\"migrations/0001_a.up.sql\""
                              : "\"file\":\"migrations/0002_b.up.sql\"";
    EXPECT_TRUE(Contains(lines[i], want)) << lines[i];
    EXPECT_FALSE(Contains(lines[i], "\"file\":\"/")) << lines[i];
  }
}

// A failure belongs to the file that failed: a file deleted and replaced by
// another one with the same version is pending, not failed with the old
// file's error.
TEST_P(CoreScenarioTest, StatusDoesNotShowAReplacedFilesFailure) {
  Migration("0001_a.up.sql", "CREATE TABLEE a (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 3);
  RunResult failed = Run({"status"});
  ASSERT_EQ(failed.exit_code, 0) << Describe(failed);
  EXPECT_TRUE(Contains(failed.out, "failed")) << failed.out;
  fs::remove(dir_ / "migrations/0001_a.up.sql");
  Migration("0001_other.up.sql", "CREATE TABLE other (id INTEGER);\n");
  RunResult status = Run({"status"});
  ASSERT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_FALSE(Contains(status.out, "failed")) << status.out;
  EXPECT_FALSE(Contains(status.out, "TABLEE")) << status.out;
  EXPECT_TRUE(Contains(status.out, "0 applied, 1 pending")) << status.out;
  // The same file failing again is shown again.
  Migration("0001_other.up.sql", "CREATE TABLEE other (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 3);
  EXPECT_TRUE(Contains(Run({"status"}).out, "failed"));
}

// ---- what does not verify: exit 6 from every command ----------------------

// The ledger directory as RocksDB sees it (format 2: one column family, keys
// led by the table's tag byte; ledger/FORMAT.md), for edits no migledger
// command would make: what `ldb put` or any program with RocksDB can do.
class RawLedgerEdit {
 public:
  explicit RawLedgerEdit(const std::string& dir) {
    rocksdb::Options o;
    rocksdb::Status s = rocksdb::DB::Open(o, dir, &db_);
    if (!s.ok()) ADD_FAILURE() << "open " << dir << ": " << s.ToString();
  }
  ~RawLedgerEdit() { delete db_; }
  std::string Get(char tag, const std::string& key) {
    std::string v;
    if (db_ == nullptr) return v;
    rocksdb::Status s = db_->Get({}, std::string(1, tag) + key, &v);
    if (!s.ok()) ADD_FAILURE() << "get: " << s.ToString();
    return v;
  }
  void Put(char tag, const std::string& key, const std::string& value) {
    if (db_ == nullptr) return;
    rocksdb::WriteOptions wo;
    wo.sync = true;
    rocksdb::Status s = db_->Put(wo, std::string(1, tag) + key, value);
    if (!s.ok()) ADD_FAILURE() << "put: " << s.ToString();
  }

 private:
  rocksdb::DB* db_ = nullptr;
};

std::string Be64Key(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) s[i] = static_cast<char>(v & 0xff);
  return s;
}

// The one target key of a project's ledger.
std::string OnlyTargetKey(const std::string& ledger_dir) {
  LedgerOptions ro;
  ro.read_only = true;
  auto ledger = Ledger::Open(ledger_dir, ro);
  if (!ledger.ok() || (*ledger)->TargetKeys().size() != 1) return "";
  return (*ledger)->TargetKeys()[0];
}

// One meaning for exit codes 4 and 6 in `--help` and in the README's table.
TEST(CliExitCodesTest, HelpAndReadmeGiveOneMeaningToDriftAndNotVerifying) {
  TempDir dir;
  RunResult help = RunMigledger({"--help"}, dir.path());
  ASSERT_EQ(help.exit_code, 0) << Describe(help);
  const std::string flat = [&] {
    std::string s = help.out;
    std::replace(s.begin(), s.end(), '\n', ' ');
    return s;
  }();
  EXPECT_TRUE(Contains(flat,
                       "4 drift (the target disagrees with a history "
                       "that verifies)"))
      << help.out;
  EXPECT_TRUE(Contains(flat,
                       "6 does not verify (the ledger, the target's "
                       "event mirror or a digest)"))
      << help.out;
  const std::string readme = ReadFile(MIGLEDGER_SOURCE_DIR "/README.md");
  EXPECT_TRUE(Contains(readme,
                       "| 4 | drift: the target disagrees with a history that "
                       "verifies"));
  EXPECT_TRUE(Contains(readme,
                       "| 6 | does not verify: the local ledger (an event, "
                       "index entry, chain head or projection snapshot "
                       "edited), the target's event mirror"));
}

// An edited row of the target's event mirror is the same answer from every
// command that reads it: exit 6 (it does not verify; drift, 4, is a target
// that disagrees with a history that does), one error line, nothing run.
TEST_P(CoreScenarioTest, EditedMirrorRowIsExit6FromEveryCommandThatReadsIt) {
  ThreeMigrations();
  ASSERT_EQ(Run({"apply", "--to", "0002"}).exit_code, 0);
  const std::string table =
      target_->is_pg() ? "migledger.events" : "migledger_events";
  // One byte of the StepApplied of 0001 (target sequence 3); its stored
  // hashes are left as they were.
  const std::string edited =
      target_->is_pg()
          ? "overlay(event_bytes placing '\\x58'::bytea from 20 for 1)"
          : "CAST(substr(event_bytes, 1, 19) || X'58' || "
            "substr(event_bytes, 21) AS BLOB)";
  ASSERT_EQ(target_->Exec("UPDATE " + table + " SET event_bytes = " + edited +
                          " WHERE target_sequence = 3;"),
            "");
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"validate"},
                                             {"apply"},
                                             {"down", "--steps", "1"},
                                             {"recover"},
                                             {"validate"}}) {
    RunResult r = Run(args);
    EXPECT_EQ(r.exit_code, 6) << args[0] << "\n" << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "target sequence 3 was edited")) << r.err;
  }
  EXPECT_FALSE(target_->TableExists("c"));
  EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002"}));
  ExpectLedgerVerifies();  // the local ledger is intact
}

// An event, an index entry or a chain head edited in the local ledger
// (with `ldb` or any program using RocksDB) is exit 6 before a command
// decides anything from it or touches the target; put back, all is well.
TEST_P(CoreScenarioTest, EditedLedgerIsExit6BeforeTheTargetIsTouched) {
  ThreeMigrations();
  ASSERT_EQ(Run({"apply", "--to", "0002"}).exit_code, 0);
  // A no-op apply: the verified mark is at the head, so what follows is
  // found by the checks past it, not by a first full verification.
  ASSERT_EQ(Run({"apply", "--to", "0002"}).exit_code, 0);
  const std::string ledger_dir = dir_ / ".migledger";
  const std::string key = OnlyTargetKey(ledger_dir);
  ASSERT_FALSE(key.empty());
  struct Edit {
    const char* what;
    char tag;
    std::string key;
    size_t byte;  // flipped
  };
  const std::vector<Edit> edits = {
      {"an event's bytes", 'e', Be64Key(3), 20},
      {"a target index entry's leaf", 't', key + '\0' + Be64Key(2), 50},
      {"the target's chain head", 'n', key, 12},
      {"the ledger's chain head", 'm', "head", 12},
  };
  for (const Edit& e : edits) {
    SCOPED_TRACE(e.what);
    std::string original;
    {
      RawLedgerEdit raw(ledger_dir);
      original = raw.Get(e.tag, e.key);
      ASSERT_GT(original.size(), e.byte);
      std::string forged = original;
      forged[e.byte] ^= 0x01;
      raw.Put(e.tag, e.key, forged);
    }
    for (const std::vector<std::string>& args :
         std::vector<std::vector<std::string>>{{"validate"},
                                               {"status"},
                                               {"apply"},
                                               {"down", "--steps", "1"},
                                               {"recover"}}) {
      RunResult r = Run(args);
      EXPECT_EQ(r.exit_code, 6) << args[0] << "\n" << Describe(r);
      ExpectOneErrorLine(r);
      EXPECT_TRUE(Contains(r.err, "ledger")) << r.err;
    }
    EXPECT_FALSE(target_->TableExists("c"));
    EXPECT_EQ(target_->Markers(), (Rows{"0001", "0002"}));
    RawLedgerEdit(ledger_dir).Put(e.tag, e.key, original);
    RunResult ok = Run({"validate"});
    EXPECT_EQ(ok.exit_code, 0) << Describe(ok);
  }
  RunResult apply = Run({"apply"});
  EXPECT_EQ(apply.exit_code, 0) << Describe(apply);
  EXPECT_TRUE(target_->TableExists("c"));
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

// ---- audit ----------------------------------------------------------------

TEST_P(CoreScenarioTest, AuditShowPrintsTheSqlOfAStep) {
  const std::string sql =
      "CREATE TABLE shown (id INTEGER);\nINSERT INTO shown VALUES (42);\n";
  Migration("0001_shown.up.sql", sql);
  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  std::vector<std::string> started = EventLines("step_started");
  ASSERT_EQ(started.size(), 1u);
  uint64_t seq = SequenceOf(started[0]);
  ASSERT_GT(seq, 0u) << started[0];

  RunResult r = Run({"audit", "show", std::to_string(seq)});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(Contains(r.out, "\"step_started\"")) << r.out;
  EXPECT_TRUE(Contains(r.out, "-- SQL (sha256 ")) << r.out;
  EXPECT_TRUE(Contains(r.out, ")\n" + sql)) << r.out;

  RunResult missing = Run({"audit", "show", "99999"});
  EXPECT_EQ(missing.exit_code, 2) << Describe(missing);
  ExpectOneErrorLine(missing);
}

TEST_P(CoreScenarioTest, DigestStaysAPrefixAndStateAsOfShowsThePast) {
  ThreeMigrations();
  ASSERT_EQ(Run({"apply", "--to", "0002"}).exit_code, 0);
  RunResult digest = Run({"audit", "digest"});
  ASSERT_EQ(digest.exit_code, 0) << Describe(digest);
  EXPECT_EQ(digest.out.rfind("migledger-digest v1\n", 0), 0u) << digest.out;
  WriteFile(dir_ / "digest.txt", digest.out);
  size_t size_pos = digest.out.find("size: ");
  ASSERT_NE(size_pos, std::string::npos) << digest.out;
  const std::string size = digest.out.substr(
      size_pos + 6, digest.out.find('\n', size_pos) - size_pos - 6);
  ASSERT_FALSE(size.empty());

  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  RunResult verify = Run({"audit", "verify", "--digest", dir_ / "digest.txt"});
  EXPECT_EQ(verify.exit_code, 0) << Describe(verify);
  EXPECT_TRUE(Contains(verify.out, "the digest of " + size +
                                       " events is a prefix of this ledger"))
      << verify.out;

  RunResult past = Run({"audit", "state", "--as-of", size});
  ASSERT_EQ(past.exit_code, 0) << Describe(past);
  EXPECT_TRUE(Contains(past.out, "schema version 0002, 2 applied")) << past.out;
  EXPECT_FALSE(Contains(past.out, "\n0003")) << past.out;
  RunResult now = Run({"audit", "state"});
  ASSERT_EQ(now.exit_code, 0) << Describe(now);
  EXPECT_TRUE(Contains(now.out, "schema version 0003, 3 applied")) << now.out;

  // A digest of another (longer) history does not verify.
  WriteFile(dir_ / "bad.txt",
            "migledger-digest v1\nledger_id: nope\nsize: 1\nroot: " +
                std::string(64, '0') + "\n");
  RunResult bad = Run({"audit", "verify", "--digest", dir_ / "bad.txt"});
  EXPECT_EQ(bad.exit_code, 6) << Describe(bad);
  ExpectOneErrorLine(bad);
}

// ---- bad input (SQLite) ---------------------------------------------------

// A project with 0001 applied, so there is a ledger that must survive every
// bad command unchanged and verifiable.
class CliBadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MakeProject(dir_.path());
    WriteFile(dir_ / "migrations/0001_a.up.sql",
              "CREATE TABLE a (id INTEGER);\n");
    RunResult r = Run({"apply"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    events_before_ = EventCount();
  }
  RunResult Run(const std::vector<std::string>& args) {
    return RunMigledger(args, dir_.path());
  }
  size_t EventCount() {
    return Lines(Run({"audit", "log", "--format", "jsonl"}).out).size();
  }
  // The bad command changed nothing and the ledger verifies.
  void ExpectUntouched() {
    EXPECT_EQ(
        SqliteQuery(dir_ / "app.db", "SELECT version FROM migledger_applied"),
        Rows{"0001"});
    EXPECT_EQ(EventCount(), events_before_);
    RunResult v = Run({"audit", "verify"});
    EXPECT_EQ(v.exit_code, 0) << Describe(v);
  }
  // Runs `apply` expecting `code` and `text` in the one error line.
  void ExpectApplyFails(int code, const std::string& text,
                        const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"apply"};
    args.insert(args.end(), extra.begin(), extra.end());
    RunResult r = Run(args);
    EXPECT_EQ(r.exit_code, code) << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, text)) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
    ExpectUntouched();
  }

  TempDir dir_;
  size_t events_before_ = 0;
};

TEST_F(CliBadInputTest, MissingMigrationsDirIsBadInput) {
  fs::remove_all(dir_ / "migrations");
  ExpectApplyFails(2, "migrations directory");
  RunResult s = Run({"status"});
  EXPECT_EQ(s.exit_code, 2) << Describe(s);
  ExpectOneErrorLine(s);
}

TEST_F(CliBadInputTest, MalformedFileNameIsBadInput) {
  WriteFile(dir_ / "migrations/abc.up.sql", "CREATE TABLE x (id INTEGER);\n");
  ExpectApplyFails(2, "abc.up.sql");
}

TEST_F(CliBadInputTest, DuplicateVersionsAreBadInput) {
  // "2" and "002" are the same version.
  WriteFile(dir_ / "migrations/2_a.up.sql", "CREATE TABLE x (id INTEGER);\n");
  WriteFile(dir_ / "migrations/002_b.up.sql", "CREATE TABLE y (id INTEGER);\n");
  RunResult r = Run({"apply"});
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "duplicate migration version")) << r.err;
  EXPECT_TRUE(Contains(r.err, "/2_a.up.sql")) << r.err;
  EXPECT_TRUE(Contains(r.err, "/002_b.up.sql")) << r.err;
  ExpectUntouched();
}

TEST_F(CliBadInputTest, DownFileWithoutUpIsBadInput) {
  WriteFile(dir_ / "migrations/0002_b.down.sql", "DROP TABLE b;\n");
  ExpectApplyFails(2, "0002_b.down.sql");
}

// Down files are read by the commands that may run or check one (down,
// validate); status, plan and apply only list them, so a broken down file
// does not stop an apply, and does stop the down before it changes anything.
TEST_F(CliBadInputTest, BrokenDownFileStopsDownAndValidateOnly) {
  WriteFile(dir_ / "migrations/0001_a.down.sql",
            "-- migledger:foo\nDROP TABLE a;\n");
  RunResult status = Run({"status"});
  EXPECT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_TRUE(Contains(status.out, "1 applied, 0 pending")) << status.out;

  RunResult down = Run({"down", "--steps", "1"});
  EXPECT_EQ(down.exit_code, 2) << Describe(down);
  ExpectOneErrorLine(down);
  EXPECT_TRUE(Contains(down.err, "0001_a.down.sql")) << down.err;
  EXPECT_TRUE(Contains(down.err, "migledger:foo")) << down.err;
  ExpectUntouched();

  RunResult validate = Run({"validate"});
  EXPECT_EQ(validate.exit_code, 2) << Describe(validate);
  EXPECT_TRUE(Contains(validate.err, "0001_a.down.sql")) << validate.err;

  WriteFile(dir_ / "migrations/0002_b.up.sql",
            "CREATE TABLE b (id INTEGER);\n");
  RunResult apply = Run({"apply"});
  EXPECT_EQ(apply.exit_code, 0) << Describe(apply);
  EXPECT_EQ(SqliteQuery(dir_ / "app.db",
                        "SELECT version FROM migledger_applied ORDER BY 1"),
            (Rows{"0001", "0002"}));

  WriteFile(dir_ / "migrations/0001_a.down.sql", "DROP TABLE a;\n");
  WriteFile(dir_ / "migrations/0002_b.down.sql", "DROP TABLE b;\n");
  RunResult fixed = Run({"down", "--steps", "2"});
  EXPECT_EQ(fixed.exit_code, 0) << Describe(fixed);
  EXPECT_EQ(
      SqliteQuery(dir_ / "app.db", "SELECT count(*) FROM migledger_applied"),
      Rows{"0"});
}

TEST_F(CliBadInputTest, UnknownDirectiveIsBadInput) {
  WriteFile(dir_ / "migrations/0002_b.up.sql",
            "-- migledger:foo\nCREATE TABLE b (id INTEGER);\n");
  ExpectApplyFails(2, "migledger:foo");
  EXPECT_EQ(SqliteQuery(dir_ / "app.db",
                        "SELECT count(*) FROM sqlite_master WHERE name = 'b'"),
            Rows{"0"});
}

TEST_F(CliBadInputTest, RequiresOfAVersionWithoutAFileIsBadInput) {
  WriteFile(dir_ / "migrations/0002_b.up.sql",
            "-- migledger:requires 0009\nCREATE TABLE b (id INTEGER);\n");
  ExpectApplyFails(2,
                   "0002_b.up.sql: -- migledger:requires 0009: no "
                   "migration has version 0009");
}

TEST_F(CliBadInputTest, UnknownTargetNameIsBadInput) {
  ExpectApplyFails(2, "nosuch", {"--target", "nosuch"});
  RunResult s = Run({"status", "-t", "nosuch"});
  EXPECT_EQ(s.exit_code, 2) << Describe(s);
  ExpectOneErrorLine(s);
}

TEST_F(CliBadInputTest, SqliteTargetInMissingDirectoryIsTargetUnavailable) {
  const std::string missing = dir_ / "no/such/dir/x.db";
  ExpectApplyFails(7, "no/such/dir", {"--target", "sqlite:" + missing});
  EXPECT_FALSE(fs::exists(missing));
}

TEST_F(CliBadInputTest, LedgerHeldByAnotherProcessIsBusy) {
  WriteFile(dir_ / "migrations/0002_b.up.sql",
            "CREATE TABLE b (id INTEGER);\n");
  {
    LedgerOptions lo;
    auto held = Ledger::Open(dir_ / ".migledger", lo);
    ASSERT_TRUE(held.ok()) << held.status().message();
    RunResult r = Run({"apply", "--lock-timeout", "200ms"});
    EXPECT_EQ(r.exit_code, 5) << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "in use")) << r.err;
    EXPECT_EQ(
        SqliteQuery(dir_ / "app.db",
                    "SELECT count(*) FROM sqlite_master WHERE name = 'b'"),
        Rows{"0"});
    // Readers never wait for the writer.
    RunResult status = Run({"status"});
    EXPECT_EQ(status.exit_code, 0) << Describe(status);
  }
  ExpectUntouched();
  RunResult r = Run({"apply", "--lock-timeout", "200ms"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
}

// A bad project is reported at once, also while another process holds the
// ledger: the wait for the ledger's lock comes after the files are read.
TEST_F(CliBadInputTest, BadFileWithABusyLedgerIsReportedWithoutWaiting) {
  WriteFile(dir_ / "migrations/0002_b.up.sql",
            "CREATE TABLE b (id INTEGER);\n");
  WriteFile(dir_ / "migrations/002_c.up.sql", "CREATE TABLE c (id INTEGER);\n");
  LedgerOptions lo;
  auto held = Ledger::Open(dir_ / ".migledger", lo);
  ASSERT_TRUE(held.ok()) << held.status().message();
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"apply", "--lock-timeout", "60s"},
        std::vector<std::string>{"down", "--steps", "1", "--lock-timeout",
                                 "60s"}}) {
    const auto t0 = std::chrono::steady_clock::now();
    RunResult r = Run(args);
    const auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(r.exit_code, 2) << args[0] << ": " << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "duplicate migration version")) << r.err;
    // Far below the 60 s it would have waited for the lock.
    EXPECT_LT(waited, std::chrono::seconds(30)) << args[0];
  }
}

TEST_F(CliBadInputTest, BadLockTimeoutIsBadInput) {
  ExpectApplyFails(2, "duration", {"--lock-timeout", "soon"});
}

TEST_F(CliBadInputTest, UnknownFlagIsBadInput) {
  ExpectApplyFails(2, "--frobnicate", {"--frobnicate"});
}

// The ledger path is a regular file: fails even for root.
TEST(CliLedgerPathTest, LedgerPathThatIsAFileFailsClearly) {
  TempDir dir;
  WriteFile(dir / "migledger.toml",
            "ledger_dir = \"ledgerfile\"\ndefault_target = \"dev\"\n"
            "lock_timeout_ms = 2000\n[targets.dev]\nurl = \"sqlite:app.db\"\n");
  WriteFile(dir / "migrations/0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  WriteFile(dir / "ledgerfile", "not a ledger\n");
  RunResult r = RunMigledger({"apply"}, dir.path());
  EXPECT_EQ(r.exit_code, 9) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "cannot open ledger")) << r.err;
  EXPECT_TRUE(Contains(r.err, "ledgerfile")) << r.err;
  EXPECT_TRUE(Contains(r.err, "not a directory")) << r.err;
  // Nothing ran on the target.
  EXPECT_FALSE(fs::exists(dir / "app.db"));
  EXPECT_EQ(ReadFile(dir / "ledgerfile"), "not a ledger\n");
}

TEST(CliLedgerPathTest, UnwritableLedgerParentIsIoError) {
  TempDir dir;
  WriteFile(dir / "migledger.toml",
            "ledger_dir = \"ro/ledger\"\ndefault_target = \"dev\"\n"
            "lock_timeout_ms = 2000\n[targets.dev]\nurl = \"sqlite:app.db\"\n");
  WriteFile(dir / "migrations/0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  const std::string ro = dir / "ro";
  fs::create_directories(ro);
  // Root ignores directory permissions, so as root the parent is a
  // read-only file system instead (EROFS rather than EACCES).
  const bool as_root = geteuid() == 0;
  if (as_root) {
    ASSERT_EQ(mount("tmpfs", ro.c_str(), "tmpfs", MS_RDONLY, "size=1m"), 0)
        << "cannot mount a read-only tmpfs: " << std::strerror(errno);
  } else {
    ASSERT_EQ(chmod(ro.c_str(), 0500), 0);
  }
  RunResult r = RunMigledger({"apply"}, dir.path());
  if (as_root) {
    umount(ro.c_str());
  } else {
    chmod(ro.c_str(), 0700);
  }
  EXPECT_EQ(r.exit_code, 9) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "ledger")) << r.err;
  EXPECT_FALSE(fs::exists(dir / "app.db"));
}

// ---- PostgreSQL schema ----------------------------------------------------

// Unqualified objects of a migration land where they would without
// migledger (the first schema of the search_path that exists, "public"),
// never in migledger's own bookkeeping schema -- even with PostgreSQL's
// default search_path ("$user", public) and a role named "migledger", whose
// "$user" entry then names that schema once migledger has created it. Also
// when the path names a quoted schema with a blank or a comma in it.
TEST(CliPostgresSchemaTest, MigrationTablesStayOutOfTheBookkeepingSchema) {
  if (!HavePostgres()) GTEST_SKIP() << "PGTEST_URI is not set";
  for (const char* path : {"\"$user\", public", "\"$user\", \"app schema\"",
                           "\"$user\", \"app, schema\""}) {
    SCOPED_TRACE(path);
    TempDir dir;
    Target target("postgres", dir.path());
    ASSERT_TRUE(target.ok()) << target.setup_error();
    MakeProject(dir.path(), target.url());
    ASSERT_EQ(target.Exec("CREATE SCHEMA \"app schema\"; CREATE SCHEMA \"app, "
                          "schema\""),
              "");
    // The server default, or one with a blank, whatever the role has
    // (scripts/pg-throwaway sets search_path = public on its role); reset
    // when the database is released.
    ASSERT_EQ(target.Exec("DO $$ BEGIN EXECUTE format('ALTER ROLE %I IN "
                          "DATABASE %I SET search_path = " +
                          std::string(path) +
                          "', current_user, current_database()); END $$;"),
              "");
    // Where an unqualified CREATE TABLE goes before migledger touched the db.
    Rows expected = target.Query("SELECT current_schema()");
    ASSERT_EQ(expected.size(), 1u);
    WriteFile(dir / "migrations/0001_a.up.sql",
              "CREATE TABLE a (id INTEGER);\n");
    // The second runs after the session's reset between migrations, which
    // sets the chosen search_path again.
    WriteFile(dir / "migrations/0002_b.up.sql",
              "CREATE TABLE b (id INTEGER);\n");
    RunResult r = RunMigledger({"apply"}, dir.path(), target.env());
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(target.Query("SELECT table_schema FROM information_schema.tables "
                           "WHERE table_name = 'a'"),
              expected);
    EXPECT_EQ(target.Query("SELECT table_schema FROM information_schema.tables "
                           "WHERE table_name = 'b'"),
              expected);
    EXPECT_EQ(target.Query("SELECT count(*) FROM information_schema.tables "
                           "WHERE table_schema = 'migledger' AND table_name "
                           "NOT IN ('applied', 'events')"),
              Rows{"0"});
  }
}

// What a migration SETs for the session (search_path, a timeout, the role)
// ends with it: the next migration of the same run sees the session's
// defaults, as it would in a run of its own or after a crash, so the schema
// never depends on how the migrations were grouped into runs.
TEST(CliPostgresSchemaTest, SessionSettingsOfAMigrationEndWithIt) {
  if (!HavePostgres()) GTEST_SKIP() << "PGTEST_URI is not set";
  for (bool one_run : {true, false}) {
    SCOPED_TRACE(one_run ? "all in one run" : "one run per migration");
    TempDir dir;
    Target target("postgres", dir.path());
    ASSERT_TRUE(target.ok()) << target.setup_error();
    MakeProject(dir.path(), target.url());
    WriteFile(dir / "migrations/0001_app.up.sql",
              "CREATE SCHEMA app;\n"
              "SET search_path TO app;\n"
              "SET statement_timeout = '17s';\n");
    WriteFile(dir / "migrations/0002_b.up.sql",
              "CREATE TABLE b (timeout text DEFAULT "
              "current_setting('statement_timeout'));\n"
              "INSERT INTO b DEFAULT VALUES;\n");
    WriteFile(dir / "migrations/0003_c.up.sql",
              "-- migledger:no-transaction\n"
              "CREATE TABLE c (id INTEGER);\n");
    if (one_run) {
      RunResult r = RunMigledger({"apply"}, dir.path(), target.env());
      ASSERT_EQ(r.exit_code, 0) << Describe(r);
    } else {
      for (const char* to : {"0001", "0002", "0003"}) {
        RunResult r =
            RunMigledger({"apply", "--to", to}, dir.path(), target.env());
        ASSERT_EQ(r.exit_code, 0) << Describe(r);
      }
    }
    EXPECT_EQ(target.Query("SELECT table_schema || '.' || table_name FROM "
                           "information_schema.tables WHERE table_name IN "
                           "('b', 'c') ORDER BY 1"),
              (Rows{"public.b", "public.c"}));
    EXPECT_EQ(target.Query("SELECT timeout FROM public.b"), Rows{"0"});
  }
}

// SET SESSION AUTHORIZATION (to another superuser: the step's marker row
// is written as that role) in one migration ends with it too (the reset
// sends RESET SESSION AUTHORIZATION when the server reports the change).
TEST(CliPostgresSchemaTest, SessionAuthorizationOfAMigrationEndsWithIt) {
  if (!HavePostgres()) GTEST_SKIP() << "PGTEST_URI is not set";
  TempDir dir;
  Target target("postgres", dir.path());
  ASSERT_TRUE(target.ok()) << target.setup_error();
  MakeProject(dir.path(), target.url());
  // Roles belong to the whole server: a name of this test's own.
  const std::string role = "migledger_other_" + std::to_string(::getpid()) +
                           "_" +
                           std::to_string(std::random_device{}() % 100000);
  WriteFile(dir / "migrations/0001_other.up.sql",
            "CREATE ROLE " + role +
                " SUPERUSER NOLOGIN;\n"
                "SET SESSION AUTHORIZATION " +
                role + ";\n");
  WriteFile(dir / "migrations/0002_t.up.sql", "CREATE TABLE t (id integer);\n");
  RunResult r = RunMigledger({"apply"}, dir.path(), target.env());
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  const std::vector<std::string> owner = target.Query(
      "SELECT tableowner FROM pg_catalog.pg_tables WHERE "
      "schemaname = 'public' AND tablename = 't'");
  const std::vector<std::string> login = target.Query("SELECT session_user");
  EXPECT_EQ(owner, login);
  EXPECT_EQ(target.Exec("DROP TABLE IF EXISTS t; DROP ROLE " + role), "");
}

// ---- secrets (PostgreSQL) -------------------------------------------------

// A PostgreSQL project whose URL carries the password
// (postgresql://user:PASSWORD@host:port/db); nothing migledger prints or
// records may contain it.
class CliPostgresSecretsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HavePostgres()) GTEST_SKIP() << "PGTEST_URI is not set";
    password_ = Env("PGTEST_PASSWORD");
    ASSERT_FALSE(password_.empty());
    db_ = std::make_unique<PgDatabase>();
    ASSERT_TRUE(db_->ok()) << db_->error();
    uri_ = WithPassword(db_->uri(), password_);
    secrets_ = {password_};
    ASSERT_TRUE(Contains(uri_, ":" + password_ + "@")) << Redact(uri_);
    // The config names the variable, not the URL; PGPASSWORD is empty so
    // the password can only come from the URI.
    WriteFile(dir_ / "migledger.toml",
              "default_target = \"dev\"\nlock_timeout_ms = 2000\n"
              "[targets.dev]\nurl_env = \"MIGLEDGER_TEST_URL\"\n");
    WriteFile(dir_ / "migrations/0001_a.up.sql",
              "CREATE TABLE a (id INTEGER);\n");
    WriteFile(dir_ / "migrations/0001_a.down.sql", "DROP TABLE a;\n");
    WriteFile(dir_ / "migrations/0002_b.up.sql",
              "CREATE TABLEE b (id INTEGER);\n");
    WriteFile(dir_ / "migrations/0002_b.down.sql", "DROP TABLE b;\n");
  }

  std::string Redact(std::string text) const {
    for (const std::string& secret : secrets_) {
      for (size_t p = text.find(secret); p != std::string::npos;
           p = text.find(secret, p)) {
        text.replace(p, secret.size(), "<secret>");
      }
    }
    return text;
  }

  bool HoldsSecret(const std::string& text) const {
    for (const std::string& secret : secrets_) {
      if (Contains(text, secret)) return true;
    }
    return false;
  }

  RunResult Run(const std::vector<std::string>& args,
                const std::string& cwd = "") {
    std::map<std::string, std::string> env = {{"MIGLEDGER_TEST_URL", uri_},
                                              {"PGPASSWORD", ""},
                                              {"PGCONNECT_TIMEOUT", "10"}};
    for (const auto& [k, v] : extra_env_) env[k] = v;
    RunResult r = RunMigledger(args, cwd.empty() ? dir_.path() : cwd, env);
    std::string line = "migledger";
    for (const auto& a : args) line += " " + a;
    runs_.emplace_back(Redact(line), r);
    return r;
  }

  // The first line of `text` that holds the password, redacted.
  std::string LeakingLine(const std::string& text) const {
    for (const auto& line : Lines(text)) {
      if (HoldsSecret(line)) return Redact(line);
    }
    return "";
  }

  // Reads the ledger every way there is, then checks every output of the
  // test, the ledger's files and the target's event mirror.
  void ExpectPasswordNowhere() {
    for (const char* format : {"table", "json", "jsonl", "csv"}) {
      EXPECT_EQ(Run({"audit", "log", "--format", format}).exit_code, 0);
    }
    EXPECT_EQ(Run({"audit", "state"}).exit_code, 0);
    RunResult jsonl = Run({"audit", "log", "--format", "jsonl"});
    // Every event that carries text from the command line or the database.
    for (const auto& line : Lines(jsonl.out)) {
      uint64_t seq = SequenceOf(line);
      if (seq && (Contains(line, "\"type\":\"run_") ||
                  Contains(line, "\"type\":\"step_started\"") ||
                  Contains(line, "\"type\":\"step_failed\""))) {
        Run({"audit", "show", std::to_string(seq)});
      }
    }
    EXPECT_EQ(
        Run({"audit", "export", "--format", "csv", "--out", dir_ / "x.csv"})
            .exit_code,
        0);
    EXPECT_EQ(LeakingLine(ReadFile(dir_ / "x.csv")), "");
    EXPECT_EQ(
        Run({"audit", "export", "--format", "html", "--out", dir_ / "x.html"})
            .exit_code,
        0);
    EXPECT_EQ(LeakingLine(ReadFile(dir_ / "x.html")), "");
    EXPECT_EQ(LeakingLine(ReadFile(dir_ / "migledger.toml")), "");

    for (const auto& [what, r] : runs_) {
      EXPECT_EQ(LeakingLine(r.out), "") << "stdout of: " << what;
      EXPECT_EQ(LeakingLine(r.err), "") << "stderr of: " << what;
    }
    // The ledger's files (stored uncompressed) and the mirror in the target.
    for (const auto& e :
         fs::recursive_directory_iterator(dir_ / ".migledger")) {
      if (!e.is_regular_file()) continue;
      EXPECT_FALSE(HoldsSecret(ReadFile(e.path().string())))
          << e.path().string();
    }
    for (const std::string& secret : secrets_) {
      PsqlResult mirror =
          RunPsql(db_->uri(),
                  "SELECT count(*) FROM migledger.events WHERE "
                  "position(convert_to('" +
                      secret + "', 'UTF8') in event_bytes) > 0;\n");
      EXPECT_EQ(mirror.exit_code, 0) << Redact(mirror.output);
      EXPECT_EQ(mirror.rows, Rows{"0"}) << Redact(mirror.output);
      if (store_) {
        PsqlResult store =
            RunPsql(store_->uri(),
                    "SELECT count(*) FROM migledger_store.events WHERE "
                    "position(convert_to('" +
                        secret + "', 'UTF8') in event_bytes) > 0;\n");
        EXPECT_EQ(store.exit_code, 0) << Redact(store.output);
        EXPECT_EQ(store.rows, Rows{"0"}) << Redact(store.output);
      }
    }
  }

  TempDir dir_;
  std::unique_ptr<PgDatabase> db_;
  std::string password_;
  std::string uri_;
  std::vector<std::string> secrets_;  // none may appear anywhere
  std::map<std::string, std::string> extra_env_;
  std::unique_ptr<PgDatabase> store_;  // the audit store, when one is used
  std::vector<std::pair<std::string, RunResult>> runs_;
};

TEST_F(CliPostgresSecretsTest, PasswordNeverAppearsInOutputOrLedger) {
  EXPECT_EQ(Run({"apply"}).exit_code, 3);              // 0002 fails
  EXPECT_EQ(Run({"apply", "-t", uri_}).exit_code, 3);  // URI as argument
  EXPECT_EQ(Run({"status"}).exit_code, 0);
  EXPECT_EQ(Run({"status", "--format", "json", "-t", uri_}).exit_code, 0);
  EXPECT_EQ(Run({"plan", "-t", uri_}).exit_code, 0);
  EXPECT_EQ(Run({"plan", "--sql", "--target", uri_}).exit_code, 0);
  EXPECT_EQ(Run({"validate", "--target", uri_}).exit_code, 0);
  WriteFile(dir_ / "migrations/0002_b.up.sql",
            "CREATE TABLE b (id INTEGER);\n");
  EXPECT_EQ(Run({"apply", "-t", uri_, "--reason", "fix"}).exit_code, 0);
  EXPECT_EQ(Run({"down", "--steps", "1", "--target", uri_}).exit_code, 0);
  EXPECT_EQ(Run({"recover", "-t", uri_}).exit_code, 0);
  // The key=value form of a connection string.
  const std::string port =
      uri_.substr(uri_.rfind(':') + 1, uri_.rfind('/') - uri_.rfind(':') - 1);
  const std::string conninfo = "host=127.0.0.1 port=" + port +
                               " dbname=" + uri_.substr(uri_.rfind('/') + 1) +
                               " user=migledger password=" + password_;
  EXPECT_EQ(Run({"status", "-t", conninfo}).exit_code, 0);
  EXPECT_EQ(Run({"apply", "-t", conninfo}).exit_code, 0);
  // Connection failures must not echo the password either.
  EXPECT_EQ(Run({"status", "-t", WithDatabase(uri_, "no_such_db")}).exit_code,
            7);
  EXPECT_EQ(Run({"apply", "-t", WithDatabase(uri_, "no_such_db")}).exit_code,
            7);
  ExpectPasswordNowhere();
}

// The option spellings "--target=URI" and "-tURI" are one argv element each;
// the command line recorded in RunStarted must be redacted for them too.
TEST_F(CliPostgresSecretsTest, PasswordInAttachedTargetValueIsRedacted) {
  WriteFile(dir_ / "migrations/0002_b.up.sql",
            "CREATE TABLE b (id INTEGER);\n");
  EXPECT_EQ(Run({"apply", "--to", "0001", "--target=" + uri_}).exit_code, 0);
  EXPECT_EQ(Run({"apply", "-t" + uri_}).exit_code, 0);
  EXPECT_EQ(Run({"down", "--steps=1", "--target=" + uri_}).exit_code, 0);
  RunResult started =
      Run({"audit", "log", "--format", "jsonl", "--type", "run_started"});
  ASSERT_EQ(started.exit_code, 0);
  EXPECT_EQ(Lines(started.out).size(), 3u);
  ExpectPasswordNowhere();
}

// issue 39: sslpassword was not redacted. Given in a socket URI on the
// command line, through url_env, in key=value conninfo and in the audit
// store's URL, it reached the target line, every event's redacted_uri, the
// mirror, the audit store and the HTML export.
TEST_F(CliPostgresSecretsTest,
       SslpasswordNeverReachesLedgerMirrorStoreOrOutput) {
  const std::string sslpassword = "sslpw-Xq7" + std::to_string(::getpid());
  secrets_.push_back(sslpassword);
  store_ = std::make_unique<PgDatabase>();
  ASSERT_TRUE(store_->ok()) << store_->error();
  const std::string db = uri_.substr(uri_.rfind('/') + 1);
  const std::string port =
      uri_.substr(uri_.rfind(':') + 1, uri_.rfind('/') - uri_.rfind(':') - 1);
  uri_ += "?sslpassword=" + sslpassword;  // the url_env of the config
  extra_env_["MIGLEDGER_TEST_STORE"] =
      WithPassword(store_->uri(), password_) + "?sslpassword=" + sslpassword;
  WriteFile(dir_ / "migledger.toml",
            "default_target = \"dev\"\nlock_timeout_ms = 2000\n"
            "audit_store_url_env = \"MIGLEDGER_TEST_STORE\"\n"
            "[targets.dev]\nurl_env = \"MIGLEDGER_TEST_URL\"\n");
  WriteFile(dir_ / "migrations/0002_b.up.sql",
            "CREATE TABLE b (id INTEGER);\n");
  const std::string socket_uri =
      "postgres:///" + db + "?host=" + Env("PGTEST_HOST") + "&port=" + port +
      "&user=migledger&password=" + password_ + "&sslpassword=" + sslpassword;
  const std::string conninfo = "host=127.0.0.1 port=" + port + " dbname=" + db +
                               " user=migledger password=" + password_ +
                               " sslpassword=" + sslpassword;
  EXPECT_EQ(Run({"apply", "--to", "0001"}).exit_code, 0);
  EXPECT_EQ(Run({"status"}).exit_code, 0);
  EXPECT_EQ(Run({"status", "-t", socket_uri}).exit_code, 0);
  EXPECT_EQ(Run({"apply", "-t", socket_uri}).exit_code, 0);
  EXPECT_EQ(Run({"down", "--steps", "1", "--target=" + conninfo}).exit_code, 0);
  EXPECT_EQ(Run({"apply", "-t", conninfo, "--reason", "again"}).exit_code, 0);
  EXPECT_EQ(Run({"--store", "audit", "log"}).exit_code, 0);
  // The store received the events: the check below has something to search.
  PsqlResult pushed = RunPsql(
      store_->uri(), "SELECT count(*) > 0 FROM migledger_store.events;\n");
  EXPECT_EQ(pushed.rows, Rows{"t"}) << pushed.output;
  // The target line shows the socket URI without its secrets.
  RunResult status = Run({"status", "-t", socket_uri});
  EXPECT_TRUE(Contains(status.out, "target: postgres://migledger@/" + db +
                                       "?host=" + Env("PGTEST_HOST") +
                                       "&port=" + port + "\n"))
      << Redact(status.out);
  // init refuses it (exit 2) and writes no migledger.toml.
  TempDir fresh;
  RunResult init = Run({"init", "--target", socket_uri}, fresh.path());
  EXPECT_EQ(init.exit_code, 2) << Redact(init.err);
  EXPECT_TRUE(Contains(init.err, "url_env")) << Redact(init.err);
  EXPECT_FALSE(fs::exists(fresh / "migledger.toml"));
  ExpectPasswordNowhere();
}

// issue 39's property: for every keyword libpq knows that redaction does
// not keep, random values given on the command line (key=value and URI) and
// through url_env reach no output, the ledger or the mirror, whether the
// connection works (sslpassword), is refused (password, options) or the
// value is invalid (replication).
TEST_F(CliPostgresSecretsTest, NoValueOfAnUnsafeKeywordAppearsAnywhere) {
  WriteFile(dir_ / "migrations/0002_b.up.sql",
            "CREATE TABLE b (id INTEGER);\n");
  const std::string db = uri_.substr(uri_.rfind('/') + 1);
  const std::string port =
      uri_.substr(uri_.rfind(':') + 1, uri_.rfind('/') - uri_.rfind(':') - 1);
  const std::string base = "host=127.0.0.1 port=" + port + " dbname=" + db +
                           " user=migledger password=" + password_;
  std::mt19937 rng(39);
  const std::string chars =
      "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  auto random_value = [&] {
    std::string v = "Zq";
    for (int i = 0; i < 10; ++i) v += chars[rng() % chars.size()];
    return v + "Qz";
  };
  size_t unsafe = 0;
  for (const std::string& keyword : KnownConninfoKeywords()) {
    if (IsDisplaySafeConninfoKeyword(keyword)) continue;
    ++unsafe;
    for (int round = 0; round < 2; ++round) {
      const std::string value = random_value();
      secrets_.push_back(value);
      const std::string conninfo = base + " " + keyword + "='" + value + "'";
      const std::string uri = uri_ + "?" + keyword + "=" + value;
      for (const auto& args : std::vector<std::vector<std::string>>{
               {"apply", "-t", conninfo},
               {"status", "-t", uri},
               {"down", "--steps", "1", "--target=" + uri}}) {
        RunResult r = Run(args);
        EXPECT_NE(r.exit_code, 1) << keyword << ": " << Redact(r.err);
      }
      extra_env_["MIGLEDGER_TEST_URL"] = uri;
      RunResult r = Run({"apply"});
      EXPECT_NE(r.exit_code, 1) << keyword << ": " << Redact(r.err);
      extra_env_.erase("MIGLEDGER_TEST_URL");
    }
  }
  EXPECT_GE(unsafe, 2u);  // at least password and sslpassword
  ExpectPasswordNowhere();
}

}  // namespace
}  // namespace migledger::testing
