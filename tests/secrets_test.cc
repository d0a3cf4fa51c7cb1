// Secrets on PostgreSQL: a password in the target URL (or an unsafe
// connection keyword) never appears in output, ledger, mirror or store, nor
// with verbose logging in any export.
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

// A PostgreSQL URI with the password in it, verbose logging, every output
// and export: the password is nowhere.
TEST(PgSecretsTest, PasswordNeverLeaksWithVerboseLoggingAndEveryExport) {
  if (!HavePostgres()) GTEST_SKIP() << "PGTEST_URI is not set";
  const std::string password = Env("PGTEST_PASSWORD");
  ASSERT_FALSE(password.empty());
  const std::string db_name = NewDatabaseName();
  const std::string socket_uri = PgServer::CreateDatabase(db_name);
  struct Drop {
    std::string name;
    ~Drop() { PgServer::DropDatabase(name); }
  } drop{db_name};
  const std::string uri = "postgresql://migledger:" + password +
                          "@127.0.0.1:" + Env("PGTEST_PORT") + "/" + db_name;
  TempDir dir;
  WriteFile(dir / "migledger.toml",
            "default_target = \"dev\"\nlock_timeout_ms = 2000\n"
            "[targets.dev]\nurl_env = \"BI_TEST_URL\"\n");
  WriteFile(dir / "migrations/0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  WriteFile(dir / "migrations/0001_a.down.sql", "DROP TABLE a;\n");
  WriteFile(dir / "migrations/0002_b.up.sql",
            "CREATE TABLEE b (id INTEGER);\n");
  const std::map<std::string, std::string> env = {
      {"BI_TEST_URL", uri}, {"PGPASSWORD", ""}, {"PGCONNECT_TIMEOUT", "10"}};
  auto redact = [&](std::string text) {
    for (size_t p = text.find(password); p != std::string::npos;
         p = text.find(password, p)) {
      text.replace(p, password.size(), "<password>");
    }
    return text;
  };
  std::vector<std::pair<std::string, TimedRun>> runs;
  auto run = [&](std::vector<std::string> args) {
    TimedRun r = RunTimed(args, dir.path(), env, 60);
    std::string line = "migledger";
    for (const auto& a : args) line += " " + a;
    runs.emplace_back(redact(line), r);
    return r;
  };
  EXPECT_EQ(run({"-v", "-v", "apply"}).exit_code, 3);  // 0002 fails
  EXPECT_EQ(run({"-v", "-v", "apply", "--target", uri}).exit_code, 3);
  WriteFile(dir / "migrations/0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  EXPECT_EQ(run({"-v", "-v", "apply", "--reason", "fixed"}).exit_code, 0);
  EXPECT_EQ(run({"-v", "-v", "status"}).exit_code, 0);
  EXPECT_EQ(
      run({"-v", "-v", "status", "--format", "json", "-t", uri}).exit_code, 0);
  EXPECT_EQ(run({"-v", "-v", "plan", "--sql", "-t", uri}).exit_code, 0);
  EXPECT_EQ(run({"-v", "-v", "validate", "-t", uri}).exit_code, 0);
  // Errors: a missing database and a wrong password given in the URI.
  EXPECT_EQ(run({"-v", "-v", "apply", "-t", WithDatabase(uri, "no_such_db")})
                .exit_code,
            7);
  std::string wrong_uri = uri;
  wrong_uri.replace(wrong_uri.find(password), password.size(),
                    "Wr0ng-" + password);
  EXPECT_EQ(run({"-v", "-v", "status", "-t", wrong_uri}).exit_code, 7);
  for (const char* format : {"table", "json", "jsonl", "csv"}) {
    EXPECT_EQ(run({"-v", "-v", "audit", "log", "--format", format}).exit_code,
              0);
  }
  TimedRun log = run({"audit", "log", "--format", "jsonl"});
  for (size_t seq = 1; seq <= Lines(log.out).size(); ++seq) {
    run({"-v", "-v", "audit", "show", std::to_string(seq)});
  }
  EXPECT_EQ(run({"-v", "-v", "audit", "state"}).exit_code, 0);
  EXPECT_EQ(run({"-v", "-v", "audit", "digest"}).exit_code, 0);
  EXPECT_EQ(run({"-v", "-v", "audit", "verify"}).exit_code, 0);
  std::vector<std::string> exports;
  for (const char* format : {"jsonl", "csv", "html"}) {
    std::string out = dir / (std::string("export.") + format);
    EXPECT_EQ(
        run({"-v", "-v", "audit", "export", "--format", format, "--out", out})
            .exit_code,
        0);
    exports.push_back(out);
  }

  for (const auto& [what, r] : runs) {
    EXPECT_FALSE(Contains(r.out, password)) << "stdout of: " << what;
    EXPECT_FALSE(Contains(r.err, password)) << "stderr of: " << what << "\n"
                                            << redact(r.err);
    EXPECT_EQ(r.signal, 0) << what;
  }
  for (const auto& file : exports) {
    std::string content = ReadFile(file);
    EXPECT_FALSE(content.empty()) << file;
    EXPECT_FALSE(Contains(content, password)) << file;
  }
  size_t ledger_files = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir / ".migledger")) {
    if (!e.is_regular_file()) continue;
    ++ledger_files;
    EXPECT_FALSE(Contains(ReadFile(e.path().string()), password)) << e.path();
  }
  EXPECT_GT(ledger_files, 0u);
  EXPECT_NE(PgQuery(socket_uri, "SELECT count(*) FROM migledger.events"),
            Rows{"0"});
  EXPECT_EQ(PgQuery(socket_uri,
                    "SELECT count(*) FROM migledger.events WHERE "
                    "position(convert_to('" +
                        password + "', 'UTF8') in event_bytes) > 0"),
            Rows{"0"});
}

}  // namespace
}  // namespace migledger::testing
