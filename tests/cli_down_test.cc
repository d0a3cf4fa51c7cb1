// `down --steps` and `down --to` on both drivers.
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

}  // namespace
}  // namespace migledger::testing
