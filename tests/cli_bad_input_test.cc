// Bad input on SQLite: broken migration files, unknown targets and flags, a
// busy or unusable ledger; each is refused with one error line and leaves
// the ledger as it was. The larger matrix is in bad_input_test.cc.
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

}  // namespace
}  // namespace migledger::testing
