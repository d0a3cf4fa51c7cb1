// `audit show`, `audit digest` and `audit state --as-of` through a CLI
// scenario on both drivers (the filters and exports: audit_cli_test.cc).
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

}  // namespace
}  // namespace migledger::testing
