// The history follows the database: runners that share a PostgreSQL target
// continue one verifiable chain through the target's event mirror; the
// central audit store gathers every target; fleets roll out in waves.
// Real PostgreSQL (scripts/pg-throwaway), real RocksDB, the real binary.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <set>
#include <sstream>

#include "common/sha256.h"
#include "ledger/merkle.h"
#include "migledger/v1/event.pb.h"
#include "tests/test_util.h"

namespace migledger::testing {
namespace {

std::string Migration(int i) {
  return "CREATE TABLE t" + std::to_string(i) +
         " (id SERIAL PRIMARY KEY, v TEXT);\nINSERT INTO t" +
         std::to_string(i) + " (v) VALUES ('x');\n";
}

std::string Version(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d", i);
  return buf;
}

void AddMigrations(const std::string& project, int from, int to) {
  for (int i = from; i <= to; ++i) {
    WriteFile(project + "/migrations/" + Version(i) + "_t" + std::to_string(i) +
                  ".up.sql",
              Migration(i));
  }
}

// The digest lines (size and root) of one target's chain in a project's ledger.
std::string TargetDigest(const std::string& project, const std::string& key) {
  RunResult r = RunMigledger({"audit", "digest", "--target-key", key}, project);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::string out;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("size: ", 0) == 0 || line.rfind("root: ", 0) == 0)
      out += line + "\n";
  }
  return out;
}

std::string TargetKey(const std::string& uri) {
  auto rows =
      PgServer::Query(uri, "SELECT system_identifier FROM pg_control_system()");
  auto db = PgServer::Query(uri, "SELECT current_database()");
  return "postgres:" + rows.at(0) + "/" + db.at(0);
}

int CountLines(const std::string& s, const std::string& needle) {
  int n = 0;
  for (size_t p = s.find(needle); p != std::string::npos;
       p = s.find(needle, p + 1))
    ++n;
  return n;
}

class SharedHistoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PgServer::Available())
      GTEST_SKIP() << "PGTEST_URI not set (run under scripts/pg-throwaway)";
    // Short names: PostgreSQL truncates identifiers at 63 bytes.
    static int counter = 0;
    db_ = "sh_" + std::to_string(getpid()) + "_" + std::to_string(++counter);
    uri_ = PgServer::CreateDatabase(db_);
  }
  void TearDown() override {
    if (!db_.empty()) PgServer::DropDatabase(db_);
  }
  std::string db_, uri_;
  TempDir dir_;
};

TEST_F(SharedHistoryTest, TwoRunnersAlternateAndTheirLedgersConverge) {
  std::string a = dir_ / "runner-a", b = dir_ / "runner-b";
  MakeProject(a, uri_);
  MakeProject(b, uri_);
  std::map<std::string, std::string> alice = {{"MIGLEDGER_ACTOR", "alice"}};
  std::map<std::string, std::string> bob = {{"MIGLEDGER_ACTOR", "bob"}};
  for (int round = 0; round < 3; ++round) {
    int base = round * 4;
    AddMigrations(a, base + 1, base + 2);
    AddMigrations(b, base + 1, base + 2);
    RunResult ra = RunMigledger({"apply"}, a, alice);
    ASSERT_EQ(ra.exit_code, 0) << ra.err;
    AddMigrations(a, base + 3, base + 4);
    AddMigrations(b, base + 3, base + 4);
    RunResult rb = RunMigledger({"apply"}, b, bob);
    ASSERT_EQ(rb.exit_code, 0) << rb.err;
    EXPECT_NE(rb.out.find("applied  " + Version(base + 3)), std::string::npos)
        << rb.out;
    EXPECT_EQ(rb.out.find("applied  " + Version(base + 1)), std::string::npos)
        << "runner b ran a migration runner a had applied:\n"
        << rb.out;
  }
  // Runner A catches up when it looks.
  RunResult st = RunMigledger({"status"}, a);
  ASSERT_EQ(st.exit_code, 0) << st.err;
  EXPECT_EQ(st.out.find("drift"), std::string::npos) << st.out;
  EXPECT_NE(st.out.find("12 applied, 0 pending"), std::string::npos) << st.out;
  std::string key = TargetKey(uri_);
  EXPECT_EQ(TargetDigest(a, key), TargetDigest(b, key));
  EXPECT_NE(TargetDigest(a, key).find("size: "), std::string::npos);
  EXPECT_EQ(RunMigledger({"audit", "verify"}, a).exit_code, 0);
  EXPECT_EQ(RunMigledger({"audit", "verify"}, b).exit_code, 0);
  EXPECT_EQ(
      PgServer::Query(uri_, "SELECT count(*) FROM migledger.applied").at(0),
      "12");
}

TEST_F(SharedHistoryTest, FreshRunnerContinuesTheSameHistory) {
  std::string a = dir_ / "old-runner", fresh = dir_ / "fresh-runner";
  MakeProject(a, uri_);
  AddMigrations(a, 1, 50);
  RunResult ra = RunMigledger({"apply"}, a, {{"MIGLEDGER_ACTOR", "alice"}});
  ASSERT_EQ(ra.exit_code, 0) << ra.err;

  MakeProject(fresh, uri_);
  AddMigrations(fresh, 1, 50);
  RunResult st = RunMigledger({"status"}, fresh, {{"MIGLEDGER_ACTOR", "bob"}});
  ASSERT_EQ(st.exit_code, 0) << st.err;
  EXPECT_NE(st.out.find("50 applied, 0 pending"), std::string::npos) << st.out;
  EXPECT_EQ(st.out.find("drift"), std::string::npos) << st.out;
  EXPECT_EQ(RunMigledger({"validate"}, fresh).exit_code, 0);
  RunResult log = RunMigledger({"audit", "log", "--format", "jsonl"}, fresh);
  ASSERT_EQ(log.exit_code, 0) << log.err;
  EXPECT_EQ(CountLines(log.out, "\"type\":\"step_applied\""), 50);
  EXPECT_EQ(CountLines(log.out, "\"os_user\":\"alice\""),
            CountLines(log.out, "\"type\""))
      << "the original actor must be kept";

  AddMigrations(fresh, 51, 51);
  RunResult next = RunMigledger({"apply"}, fresh, {{"MIGLEDGER_ACTOR", "bob"}});
  ASSERT_EQ(next.exit_code, 0) << next.err;
  EXPECT_NE(next.out.find("applied  0051"), std::string::npos) << next.out;
  EXPECT_EQ(CountLines(next.out, "applied  "), 1) << next.out;
  AddMigrations(a, 51, 51);
  ASSERT_EQ(RunMigledger({"status"}, a).exit_code, 0);
  std::string key = TargetKey(uri_);
  EXPECT_EQ(TargetDigest(a, key), TargetDigest(fresh, key));
  EXPECT_EQ(RunMigledger({"audit", "verify"}, fresh).exit_code, 0);
}

class MirrorTamperTest : public SharedHistoryTest {
 protected:
  void SetUp() override {
    SharedHistoryTest::SetUp();
    if (IsSkipped()) return;
    project_ = dir_ / "p";
    MakeProject(project_, uri_);
    AddMigrations(project_, 1, 3);
    RunResult r = RunMigledger({"apply"}, project_);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    AddMigrations(project_, 4, 4);
  }
  void ExpectRefused(const std::string& what) {
    RunResult r = RunMigledger({"apply"}, project_);
    EXPECT_EQ(r.exit_code, 4) << r.out << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
    EXPECT_EQ(CountLines(r.err, "\n"), 1) << "one clear error line:\n" << r.err;
    EXPECT_EQ(
        PgServer::Query(uri_, "SELECT to_regclass('public.t4') IS NULL").at(0),
        "t");
    EXPECT_EQ(RunMigledger({"audit", "verify"}, project_).exit_code, 0);
  }
  std::string project_;
};

TEST_F(MirrorTamperTest, EditedMirrorRowRefusesTheApply) {
  PgServer::Query(
      uri_,
      "UPDATE migledger.events SET event_bytes = overlay(event_bytes placing "
      "'\\x58'::bytea from 20 for 1) WHERE target_sequence = 3");
  ExpectRefused("target sequence 3 was edited");
}

TEST_F(MirrorTamperTest, DeletedMirrorRowRefusesTheApply) {
  PgServer::Query(uri_,
                  "DELETE FROM migledger.events WHERE target_sequence = 4");
  ExpectRefused("target sequence 4 is missing");
}

TEST_F(MirrorTamperTest, ForkedMirrorChainRefusesTheApply) {
  // Rewrite the mirror from target sequence 5 on with a different but
  // internally consistent history, as another ledger would have written it.
  auto rows = PgServer::Query(
      uri_,
      "SELECT target_sequence, encode(event_bytes, 'hex'), "
      "encode(chain_head, 'hex') FROM migledger.events ORDER BY 1");
  ASSERT_GT(rows.size(), 6u);
  Digest32 chain{};
  for (const auto& row : rows) {
    std::string seq = row.substr(0, row.find('|'));
    std::string rest = row.substr(row.find('|') + 1);
    std::string hex = rest.substr(0, rest.find('|'));
    std::string bytes;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) {
      bytes += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
    }
    if (std::stoi(seq) >= 5) {
      v1::Event e;
      ASSERT_TRUE(e.ParseFromString(bytes));
      e.set_run_id("forked-" + e.run_id());
      bytes = e.SerializeAsString();
    }
    Digest32 leaf = MerkleLeafHash(bytes);
    chain = Sha256(AsBytes(chain), AsBytes(leaf));
    if (std::stoi(seq) >= 5) {
      PgServer::Query(uri_,
                      "UPDATE migledger.events SET event_bytes = '\\x" +
                          ToHex(reinterpret_cast<const uint8_t*>(bytes.data()),
                                bytes.size()) +
                          "', leaf_hash = '\\x" + ToHex(leaf) +
                          "', chain_head = '\\x" + ToHex(chain) +
                          "' WHERE target_sequence = " + seq);
    }
  }
  ExpectRefused("forks from the local ledger at target sequence 5");
}

// Ctrl-C during a fleet apply: the running target's statement is cancelled
// and rolled back, no other target starts, the summary says so, exit 130;
// the rerun finishes every target.
TEST_F(SharedHistoryTest, InterruptedFleetStopsStartingTargets) {
  std::string p = dir_ / "fleet";
  std::string toml =
      "lock_timeout_ms = 5000\n[groups]\nall = [\"db1\", \"db2\", \"db3\"]\n";
  std::vector<std::string> uris;
  for (int i = 1; i <= 3; ++i) {
    uris.push_back(PgServer::CreateDatabase(db_ + "_i" + std::to_string(i)));
    toml += "[targets.db" + std::to_string(i) + "]\nurl = \"" + uris.back() +
            "\"\n";
  }
  WriteFile(p + "/migledger.toml", toml);
  WriteFile(p + "/migrations/0001_slow.up.sql",
            "CREATE TABLE slow (v text);\nINSERT INTO slow SELECT "
            "pg_sleep(600)::text;\n");
  const std::string err_path = p + "/apply.err";
  pid_t pid = StartMigledger({"apply", "--group", "all", "--parallel", "1"}, p,
                             {}, err_path);
  ASSERT_GT(pid, 0);
  const bool sleeping = WaitUntil(
      [&] {
        return !PgServer::Query(uris[0],
                                "SELECT pid FROM pg_stat_activity WHERE "
                                "wait_event = 'PgSleep' "
                                "AND datname = current_database()")
                    .empty();
      },
      60);
  if (!sleeping) kill(pid, SIGKILL);
  ASSERT_TRUE(sleeping) << ReadFile(err_path);
  kill(pid, SIGINT);
  int status = 0;
  ASSERT_TRUE(WaitForExit(pid, 60, &status))
      << "apply went on after SIGINT: " << ReadFile(err_path);
  ASSERT_TRUE(WIFSIGNALED(status)) << "exited " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGINT);
  const std::string err = ReadFile(err_path);
  EXPECT_EQ(CountLines(err, "error: "), 1) << err;
  EXPECT_NE(err.find("error: interrupted by SIGINT: target db1 failed (2 "
                     "target(s) not started)"),
            std::string::npos)
      << err;
  for (const auto& u : uris) {
    EXPECT_EQ(
        PgServer::Query(u, "SELECT to_regclass('public.slow') IS NULL").at(0),
        "t")
        << u;
  }
  EXPECT_EQ(RunMigledger({"audit", "verify"}, p).exit_code, 0);

  WriteFile(p + "/migrations/0001_slow.up.sql",
            "CREATE TABLE slow (v text);\n");
  RunResult rerun =
      RunMigledger({"apply", "--group", "all", "--parallel", "2"}, p);
  ASSERT_EQ(rerun.exit_code, 0) << rerun.out << rerun.err;
  for (const auto& u : uris) {
    EXPECT_EQ(
        PgServer::Query(u, "SELECT count(*) FROM migledger.applied").at(0), "1")
        << u;
  }
  for (int i = 1; i <= 3; ++i)
    PgServer::DropDatabase(db_ + "_i" + std::to_string(i));
}

TEST_F(SharedHistoryTest, KillDuringTheMirrorWriteLosesAndDoublesNothing) {
  std::string p = dir_ / "p";
  MakeProject(p, uri_);
  AddMigrations(p, 1, 3);
  RunResult killed = RunMigledger(
      {"apply"}, p, {{"MIGLEDGER_CRASH_AT", "mirror.before_commit"}});
  ASSERT_EQ(killed.signal, 9) << killed.out << killed.err;
  AddMigrations(p, 4, 4);
  RunResult r = RunMigledger({"apply"}, p);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("applied  0004"), std::string::npos) << r.out;
  EXPECT_EQ(
      PgServer::Query(uri_, "SELECT count(*) FROM migledger.applied").at(0),
      "4");
  // Every local event of the target is mirrored exactly once, in order.
  std::string key = TargetKey(uri_);
  RunResult log = RunMigledger({"audit", "log", "--format", "jsonl"}, p);
  int local = CountLines(log.out, "\"type\"");
  auto mirrored = PgServer::Query(uri_,
                                  "SELECT count(*), count(DISTINCT "
                                  "target_sequence), max(target_sequence) FROM "
                                  "migledger.events");
  EXPECT_EQ(mirrored.at(0), std::to_string(local) + "|" +
                                std::to_string(local) + "|" +
                                std::to_string(local));
  EXPECT_EQ(RunMigledger({"audit", "verify"}, p).exit_code, 0);
}

class AuditStoreTest : public SharedHistoryTest {
 protected:
  void SetUp() override {
    SharedHistoryTest::SetUp();
    if (IsSkipped()) return;
    store_db_ = db_ + "_store";
    store_uri_ = PgServer::CreateDatabase(store_db_);
  }
  void TearDown() override {
    if (!store_db_.empty()) PgServer::DropDatabase(store_db_);
    SharedHistoryTest::TearDown();
  }
  void Configure(const std::string& project, const std::string& store_uri) {
    WriteFile(project + "/migledger.toml",
              "audit_store = \"" + store_uri +
                  "\"\ndefault_target = \"dev\"\nlock_timeout_ms = "
                  "2000\n[targets.dev]\nurl = \"" +
                  uri_ + "\"\n");
  }
  std::string store_db_, store_uri_;
};

TEST_F(AuditStoreTest, StoreDownThenUpReceivesEverythingOnce) {
  std::string p = dir_ / "p";
  MakeProject(p, uri_);
  AddMigrations(p, 1, 3);
  Configure(p, "postgresql://migledger@127.0.0.1:1/nowhere?connect_timeout=2");
  RunResult down = RunMigledger({"apply"}, p);
  ASSERT_EQ(down.exit_code, 0)
      << "a store that is down must not fail the apply: " << down.err;
  EXPECT_NE(down.err.find("audit store not updated"), std::string::npos)
      << down.err;
  Configure(p, store_uri_);
  RunResult kill = RunMigledger(
      {"apply"}, p, {{"MIGLEDGER_CRASH_AT", "store.before_commit"}});
  ASSERT_EQ(kill.signal, 9) << kill.out << kill.err;
  EXPECT_EQ(
      PgServer::Query(store_uri_, "SELECT count(*) FROM migledger_store.events")
          .at(0),
      "0");
  RunResult up = RunMigledger({"apply"}, p);
  ASSERT_EQ(up.exit_code, 0) << up.err;
  RunResult log = RunMigledger({"audit", "log", "--format", "jsonl"}, p);
  int local = CountLines(log.out, "\"type\"");
  EXPECT_EQ(
      PgServer::Query(store_uri_, "SELECT count(*) FROM migledger_store.events")
          .at(0),
      std::to_string(local));
  RunResult again = RunMigledger({"apply"}, p);
  ASSERT_EQ(again.exit_code, 0);
  EXPECT_EQ(
      PgServer::Query(store_uri_, "SELECT count(*) FROM migledger_store.events")
          .at(0),
      std::to_string(local));
  RunResult store_log =
      RunMigledger({"--store", "audit", "log", "--format", "jsonl"}, p);
  ASSERT_EQ(store_log.exit_code, 0) << store_log.err;
  EXPECT_EQ(CountLines(store_log.out, "\"type\""), local);
  EXPECT_EQ(RunMigledger({"--store", "audit", "verify"}, p).exit_code, 0);
  EXPECT_EQ(
      PgServer::Query(store_uri_,
                      "SELECT max(version) FROM migledger_store.schema_history")
          .at(0),
      "2");
}

TEST_F(AuditStoreTest,
       FleetOfTwentyStopsAtTheFailingTargetAndResumesAfterTheFix) {
  const int kTargets = 20, kFailing = 8;
  std::string p = dir_ / "fleet";
  std::string toml = "audit_store = \"" + store_uri_ +
                     "\"\nlock_timeout_ms = 5000\n[groups]\nall = [";
  std::vector<std::string> dbs;
  for (int i = 1; i <= kTargets; ++i)
    toml += (i > 1 ? ", " : "") + ("\"db" + std::to_string(i) + "\"");
  toml += "]\n";
  for (int i = 1; i <= kTargets; ++i) {
    std::string name = db_ + "_f" + std::to_string(i);
    dbs.push_back(name);
    toml += "[targets.db" + std::to_string(i) + "]\nurl = \"" +
            PgServer::CreateDatabase(name) + "\"\n";
  }
  WriteFile(p + "/migledger.toml", toml);
  AddMigrations(p, 1, 3);
  std::string failing_uri = "postgresql:///" + dbs[kFailing - 1] +
                            "?host=" + std::string(std::getenv("PGTEST_HOST")) +
                            "&port=" + std::getenv("PGTEST_PORT") +
                            "&user=migledger";
  PgServer::Query(failing_uri, "CREATE TABLE t2 (conflict int)");

  RunResult r = RunMigledger(
      {"apply", "--group", "all", "--parallel", "3", "--canary", "2"}, p);
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  std::map<std::string, std::string> outcome;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    std::istringstream cells(line);
    std::string target, word;
    cells >> target;
    std::string rest = line;
    for (const char* o : {"not started", "applied", "failed", "up to date"}) {
      if (line.find(std::string("  ") + o) != std::string::npos) {
        outcome[target] = o;
        break;
      }
    }
  }
  EXPECT_EQ(outcome["db1"], "applied") << r.out;
  EXPECT_EQ(outcome["db2"], "applied") << r.out;
  EXPECT_EQ(outcome["db" + std::to_string(kFailing)], "failed") << r.out;
  for (int i = 1; i < kFailing; ++i)
    EXPECT_EQ(outcome["db" + std::to_string(i)], "applied") << i;
  int not_started = 0;
  for (int i = kFailing + 1; i <= kTargets; ++i) {
    not_started += outcome["db" + std::to_string(i)] == "not started";
  }
  EXPECT_GE(not_started, kTargets - kFailing - 3) << r.out;
  EXPECT_NE(r.err.find("db" + std::to_string(kFailing)), std::string::npos)
      << r.err;

  PgServer::Query(failing_uri, "DROP TABLE t2");
  RunResult rerun =
      RunMigledger({"apply", "--group", "all", "--parallel", "4"}, p);
  ASSERT_EQ(rerun.exit_code, 0) << rerun.out << rerun.err;
  for (const auto& name : dbs) {
    std::string u = "postgresql:///" + name +
                    "?host=" + std::getenv("PGTEST_HOST") +
                    "&port=" + std::getenv("PGTEST_PORT") + "&user=migledger";
    EXPECT_EQ(
        PgServer::Query(u, "SELECT count(*) FROM migledger.applied").at(0), "3")
        << name;
  }
  EXPECT_EQ(RunMigledger({"audit", "verify"}, p).exit_code, 0);
  RunResult store = RunMigledger(
      {"--store", "audit", "log", "--target", "db3", "--format", "csv"}, p);
  ASSERT_EQ(store.exit_code, 0) << store.err;
  EXPECT_NE(store.out.find("step_applied"), std::string::npos);
  EXPECT_EQ(RunMigledger({"--store", "audit", "verify"}, p).exit_code, 0);
  for (const auto& name : dbs) PgServer::DropDatabase(name);
}

}  // namespace
}  // namespace migledger::testing
