// The CLI's first steps: `init`, `new`, migledger.toml checks, terminal
// escaping, and usage errors (a misplaced or mistyped command or option).
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

}  // namespace
}  // namespace migledger::testing
