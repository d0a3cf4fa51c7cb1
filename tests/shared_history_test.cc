// The history follows the database: runners that share a PostgreSQL target
// continue one verifiable chain through the target's event mirror; the
// central audit store gathers every target; fleets roll out in waves.
// Real PostgreSQL (scripts/pg-throwaway), real RocksDB, the real binary.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "common/sha256.h"
#include "ledger/merkle.h"
#include "migledger/v1/event.pb.h"
#include "tests/test_util.h"

namespace migledger::testing {
namespace {

namespace fs = std::filesystem;

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
  // `code`: 6 for a mirror that does not verify, 4 (drift) for one that
  // verifies but forks from the local chain; `validate` gives the same.
  void ExpectRefused(const std::string& what, int code) {
    for (const char* command : {"apply", "validate"}) {
      RunResult r = RunMigledger({command}, project_);
      EXPECT_EQ(r.exit_code, code) << command << "\n" << r.out << r.err;
      EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
      EXPECT_EQ(CountLines(r.err, "\n"), 1) << "one clear error line:\n"
                                            << r.err;
    }
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
  ExpectRefused("target sequence 3 was edited", 6);
}

TEST_F(MirrorTamperTest, DeletedMirrorRowRefusesTheApply) {
  PgServer::Query(uri_,
                  "DELETE FROM migledger.events WHERE target_sequence = 4");
  ExpectRefused("target sequence 4 is missing", 6);
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
  ExpectRefused("forks from the local ledger at target sequence 5", 4);
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
    for (const auto& name : extra_dbs_) PgServer::DropDatabase(name);
    if (!store_db_.empty()) PgServer::DropDatabase(store_db_);
    SharedHistoryTest::TearDown();
  }
  void Configure(const std::string& project, const std::string& store_uri,
                 const std::string& target_uri = "") {
    fs::create_directories(project + "/migrations");
    WriteFile(project + "/migledger.toml",
              "audit_store = \"" + store_uri +
                  "\"\ndefault_target = \"dev\"\nlock_timeout_ms = "
                  "2000\n[targets.dev]\nurl = \"" +
                  (target_uri.empty() ? uri_ : target_uri) + "\"\n");
  }
  // A second target database on the same server, dropped with the test.
  // `prefix` makes its name (and so its target key) sort where a test needs.
  std::string OtherTarget(const std::string& prefix) {
    extra_dbs_.push_back(prefix + db_.substr(2));
    return PgServer::CreateDatabase(extra_dbs_.back());
  }
  // Runs `args` in `project` and expects exit 0.
  std::string MustRun(const std::vector<std::string>& args,
                      const std::string& project) {
    RunResult r = RunMigledger(args, project);
    EXPECT_EQ(r.exit_code, 0) << args.back() << ": " << r.out << r.err;
    return r.out;
  }
  std::vector<std::string> Store(const std::string& sql) {
    return PgServer::Query(store_uri_, sql);
  }
  std::string store_db_, store_uri_;
  std::vector<std::string> extra_dbs_;
};

// The first line of a command's stderr, and how many lines it has.
std::string OneErrorLine(const RunResult& r) {
  EXPECT_EQ(Lines(r.err).size(), 1u) << r.err;
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  return r.err;
}

// One row of `audit log --format csv`: its first seven columns (sequence,
// time, target, database_id, type, version, run_id, none of which holds a
// comma or a quote here) and its last one (leaf_hash).
struct CsvEvent {
  uint64_t sequence = 0;
  std::string time, database_id, run_id, leaf_hash;
};
std::vector<CsvEvent> ParseLogCsv(const std::string& csv) {
  std::vector<CsvEvent> events;
  std::vector<std::string> lines = Lines(csv);
  for (size_t i = 1; i < lines.size(); ++i) {  // after the header
    std::string line = lines[i];
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::vector<std::string> cells;
    std::istringstream in(line);
    for (std::string cell; cells.size() < 7 && std::getline(in, cell, ',');)
      cells.push_back(cell);
    if (cells.size() < 7) {
      ADD_FAILURE() << "not a csv event row: " << line;
      continue;
    }
    events.push_back({std::stoull(cells[0]), cells[1], cells[3], cells[6],
                      line.substr(line.rfind(',') + 1)});
  }
  return events;
}

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
      "3");
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

// The advisory lock a push holds (kStoreAppendLockKey in
// applier/audit_store.cc, "MLSTOREA"), as pg_locks shows it.
constexpr uint64_t kPushLockKey = 0x4d4c53544f524541;
const std::string kPushLock =
    "locktype = 'advisory' AND classid = " +
    std::to_string(kPushLockKey >> 32) +
    " AND objid = " + std::to_string(kPushLockKey & 0xffffffff) +
    " AND objsubid = 1";

// Holds the store's push lock as a pusher does, from a psql session of its
// own, until Release(): pushers that come meanwhile wait.
class HeldStoreLock {
 public:
  explicit HeldStoreLock(const std::string& uri) {
    // A psql that stopped on an error must fail the test, not kill it.
    std::signal(SIGPIPE, SIG_IGN);
    psql_ = popen(
        ("psql -X -q -v ON_ERROR_STOP=1 '" + uri + "' >/dev/null").c_str(),
        "w");
    if (psql_ == nullptr) return;
    std::fputs(("BEGIN;\nSELECT pg_advisory_xact_lock(" +
                std::to_string(static_cast<int64_t>(kPushLockKey)) + ");\n")
                   .c_str(),
               psql_);
    std::fflush(psql_);
  }
  ~HeldStoreLock() { Release(); }
  bool started() const { return psql_ != nullptr; }
  void Release() {
    if (psql_ == nullptr) return;
    std::fputs("COMMIT;\n", psql_);
    pclose(psql_);
    psql_ = nullptr;
  }

 private:
  std::FILE* psql_ = nullptr;
};

// Sessions holding (granted) or waiting for (not granted) the push lock.
int PushLocks(const std::string& store_uri, bool granted) {
  return std::stoi(
      PgServer::Query(store_uri,
                      "SELECT count(*) FROM pg_locks WHERE " + kPushLock +
                          " AND database = (SELECT oid FROM pg_database "
                          "WHERE datname = current_database()) AND granted = " +
                          std::string(granted ? "true" : "false"))
          .at(0));
}

// Every row has a store sequence 1..N with no gap, and each target's rows
// come in target order 1, 2, 3... along it.
void ExpectDenseStoreOrder(const std::string& store_uri) {
  EXPECT_EQ(PgServer::Query(
                store_uri,
                "SELECT count(*) = max(store_sequence) AND min(store_sequence) "
                "= 1 FROM migledger_store.events")
                .at(0),
            "t");
  EXPECT_EQ(PgServer::Query(
                store_uri,
                "SELECT count(*) FROM (SELECT target_sequence, row_number() "
                "OVER (PARTITION BY target_key ORDER BY store_sequence) AS n "
                "FROM migledger_store.events) x WHERE target_sequence <> n")
                .at(0),
            "0");
}

class StoreHistoryTest : public AuditStoreTest {
 protected:
  // Runs from two ledgers on the first target (a: 1-2, b: 1-4, a: 3-6),
  // then from a third on a new target whose key sorts before the first's
  // (c: 1). `checkpoint` runs after the first run. Sets early_uri_.
  void BuildHistory(const std::function<void()>& checkpoint) {
    Configure(a_, store_uri_);
    Configure(b_, store_uri_);
    AddMigrations(a_, 1, 2);
    MustRun({"apply"}, a_);
    checkpoint();
    AddMigrations(b_, 1, 4);
    MustRun({"apply"}, b_);
    AddMigrations(a_, 3, 6);
    MustRun({"apply"}, a_);
    early_uri_ = OtherTarget("sa");
    ASSERT_LT(TargetKey(early_uri_), TargetKey(uri_));
    Configure(c_, store_uri_, early_uri_);
    AddMigrations(c_, 1, 1);
    MustRun({"apply"}, c_);
  }
  std::string a_ = dir_ / "a", b_ = dir_ / "b", c_ = dir_ / "c";
  std::string early_uri_;
};

TEST_F(StoreHistoryTest, SavedStoreDigestVerifiesAfterMoreRunsAndANewTarget) {
  std::string saved;
  BuildHistory([&] {
    saved = MustRun({"--store", "audit", "digest"}, a_);
    EXPECT_EQ(MustRun({"--store", "audit", "digest"}, a_), saved)
        << "the store's checkpoint is the same each time it is asked for";
    EXPECT_EQ(MustRun({"--store", "audit", "digest"}, b_), saved)
        << "and the same whoever asks";
    WriteFile(dir_ / "saved.digest", saved);
  });
  ASSERT_EQ(Lines(saved).size(), 4u) << saved;
  EXPECT_EQ(Lines(saved)[1],
            "ledger_id: " +
                Store("SELECT store_id FROM migledger_store.identity").at(0));

  for (const std::string& project : {a_, b_, c_}) {
    RunResult v = RunMigledger(
        {"--store", "audit", "verify", "--digest", dir_ / "saved.digest"},
        project);
    EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
    EXPECT_TRUE(Contains(v.out, "is a prefix of this ledger")) << v.out;
  }
  const std::string now = MustRun({"--store", "audit", "digest"}, c_);
  ASSERT_EQ(Lines(now).size(), 4u) << now;
  EXPECT_EQ(Lines(now)[1], Lines(saved)[1]) << "the store keeps its id";
  EXPECT_GT(std::stoull(Lines(now)[2].substr(6)),
            std::stoull(Lines(saved)[2].substr(6)));
  // The local ledger's digest is not the store's checkpoint.
  RunResult other =
      RunMigledger({"audit", "verify", "--digest", dir_ / "saved.digest"}, a_);
  EXPECT_EQ(other.exit_code, 6) << other.out << other.err;
  EXPECT_TRUE(Contains(OneErrorLine(other), "of another ledger"));
}

TEST_F(StoreHistoryTest, StoreLogIsOldestFirstInStoreOrder) {
  BuildHistory([] {});
  std::vector<CsvEvent> events =
      ParseLogCsv(MustRun({"--store", "audit", "log", "--format", "csv"}, a_));
  std::vector<std::string> rows = Store(
      "SELECT store_sequence, encode(leaf_hash, 'hex') FROM "
      "migledger_store.events ORDER BY store_sequence");
  ASSERT_EQ(events.size(), rows.size());
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence, i + 1);
    EXPECT_EQ(rows[i], std::to_string(i + 1) + "|" + events[i].leaf_hash);
  }
  // The four runs, each one's events together, in the order they ran.
  std::vector<CsvEvent> runs;
  std::set<std::string> seen;
  for (const CsvEvent& e : events) {
    if (!runs.empty() && runs.back().run_id == e.run_id) continue;
    EXPECT_TRUE(seen.insert(e.run_id).second)
        << "the events of run " << e.run_id << " are not together";
    runs.push_back(e);
  }
  ASSERT_EQ(runs.size(), 4u);
  for (size_t i = 1; i < runs.size(); ++i)
    EXPECT_LT(runs[i - 1].time, runs[i].time) << i;
  EXPECT_EQ("postgres:" + runs.back().database_id, TargetKey(early_uri_));
  ExpectDenseStoreOrder(store_uri_);
}

TEST_F(AuditStoreTest, EditedStoreFailsVerificationWithExit6) {
  std::string a = dir_ / "a", b = dir_ / "b";
  Configure(a, store_uri_);
  AddMigrations(a, 1, 2);
  MustRun({"apply"}, a);
  Configure(b, store_uri_, OtherTarget("sb"));
  AddMigrations(b, 1, 1);
  MustRun({"apply"}, b);
  WriteFile(dir_ / "saved.digest", MustRun({"--store", "audit", "digest"}, a));
  const std::vector<std::string> verify = {"--store", "audit", "verify"};
  const std::vector<std::string> verify_digest = {
      "--store", "audit", "verify", "--digest", dir_ / "saved.digest"};
  ASSERT_EQ(RunMigledger(verify_digest, a).exit_code, 0);

  // The last row of the first target and the first of the second swapped
  // in the store's order: each target's chain still verifies, the saved
  // checkpoint does not.
  const std::string x =
      Store(
          "SELECT max(store_sequence) FROM migledger_store.events WHERE "
          "target_key = '" +
          TargetKey(uri_) + "'")
          .at(0);
  const std::string y = std::to_string(std::stoull(x) + 1);
  const std::string swap =
      "UPDATE migledger_store.events SET store_sequence = 1000000 WHERE "
      "store_sequence = " +
      x + "; UPDATE migledger_store.events SET store_sequence = " + x +
      " WHERE store_sequence = " + y +
      "; UPDATE migledger_store.events SET store_sequence = " + y +
      " WHERE store_sequence = 1000000";
  Store(swap);
  EXPECT_EQ(RunMigledger(verify, a).exit_code, 0);
  RunResult swapped = RunMigledger(verify_digest, a);
  EXPECT_EQ(swapped.exit_code, 6) << swapped.out << swapped.err;
  EXPECT_TRUE(Contains(OneErrorLine(swapped), "not an append-only extension"));
  Store(swap);
  ASSERT_EQ(RunMigledger(verify_digest, a).exit_code, 0);

  // An edited event.
  const std::string bytes =
      Store(
          "SELECT encode(event_bytes, 'hex') FROM migledger_store.events "
          "WHERE store_sequence = 3")
          .at(0);
  Store(
      "UPDATE migledger_store.events SET event_bytes = overlay(event_bytes "
      "placing '\\x58'::bytea from 20 for 1) WHERE store_sequence = 3");
  for (const auto& args :
       {verify, verify_digest,
        std::vector<std::string>{"--store", "audit", "log"}}) {
    RunResult edited = RunMigledger(args, a);
    EXPECT_EQ(edited.exit_code, 6) << edited.out << edited.err;
    EXPECT_TRUE(Contains(OneErrorLine(edited), "at store sequence 3"));
  }
  Store("UPDATE migledger_store.events SET event_bytes = decode('" + bytes +
        "', 'hex') WHERE store_sequence = 3");
  ASSERT_EQ(RunMigledger(verify_digest, a).exit_code, 0);

  // Another identity, then none.
  Store("UPDATE migledger_store.identity SET store_id = repeat('0', 32)");
  RunResult renamed = RunMigledger(verify_digest, a);
  EXPECT_EQ(renamed.exit_code, 6) << renamed.out << renamed.err;
  EXPECT_TRUE(Contains(OneErrorLine(renamed), "of another ledger"));
  Store("DELETE FROM migledger_store.identity");
  RunResult anonymous = RunMigledger(verify, a);
  EXPECT_EQ(anonymous.exit_code, 6) << anonymous.out << anonymous.err;
  EXPECT_TRUE(Contains(OneErrorLine(anonymous), "no valid identity row"));
  Store("INSERT INTO migledger_store.identity (store_id) VALUES ('" +
        Lines(ReadFile(dir_ / "saved.digest")).at(1).substr(11) + "')");
  ASSERT_EQ(RunMigledger(verify_digest, a).exit_code, 0);

  // A removed row.
  Store("DELETE FROM migledger_store.events WHERE store_sequence = 2");
  RunResult removed = RunMigledger(verify, a);
  EXPECT_EQ(removed.exit_code, 6) << removed.out << removed.err;
  EXPECT_TRUE(Contains(OneErrorLine(removed), "no store sequence 2"));
}

// Pushers from two processes at once, with rows in common, queue on the
// store's lock and each appends what the store lacks after the other's
// rows: the order stays dense, every target's rows stay in target order,
// and each event is there once. Runner a has the first target's history
// and the start of the second's; runner c, a second ledger on the second
// target, has all of that one's.
TEST_F(AuditStoreTest, ConcurrentPushersFromTwoProcessesGiveADenseOrder) {
  std::string a = dir_ / "a", c = dir_ / "c";
  const std::string other = OtherTarget("sc");
  auto configure_a = [&](const std::string& store) {
    WriteFile(a + "/migledger.toml",
              "audit_store = \"" + store +
                  "\"\ndefault_target = \"dev\"\nlock_timeout_ms = 2000\n"
                  "[targets.dev]\nurl = \"" +
                  uri_ + "\"\n[targets.other]\nurl = \"" + other + "\"\n");
  };
  // The histories are made while the store is down.
  const std::string nowhere =
      "postgresql://migledger@127.0.0.1:1/nowhere?connect_timeout=2";
  Configure(c, nowhere, other);
  configure_a(nowhere);
  AddMigrations(a, 1, 2);
  MustRun({"apply", "--target", "other"}, a);
  MustRun({"apply", "--target", "dev"}, a);
  AddMigrations(c, 1, 3);
  MustRun({"apply"}, c);
  Configure(c, store_uri_, other);
  configure_a(store_uri_);
  MustRun({"--store", "audit", "verify"}, a);  // creates the store's schema
  // A store whose sessions start in REPEATABLE READ: a pusher must still
  // see, once it has the lock, the rows of the pusher before it.
  Store("ALTER DATABASE " + store_db_ +
        " SET default_transaction_isolation = 'repeatable read'");

  HeldStoreLock lock(store_uri_);
  ASSERT_TRUE(lock.started());
  ASSERT_TRUE(WaitUntil([&] { return PushLocks(store_uri_, true) == 1; }, 60));
  const std::vector<std::string> projects = {a, c};
  std::vector<pid_t> pids;
  for (const std::string& project : projects) {
    pids.push_back(StartMigledger({"apply"}, project, {}, project + ".err"));
    ASSERT_GT(pids.back(), 0);
  }
  EXPECT_TRUE(WaitUntil([&] { return PushLocks(store_uri_, false) == 2; }, 120))
      << "both pushers wait for the store's push lock";
  lock.Release();
  for (size_t i = 0; i < pids.size(); ++i) {
    int status = 0;
    ASSERT_TRUE(WaitForExit(pids[i], 120, &status));
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    const std::string err = ReadFile(projects[i] + ".err");
    EXPECT_FALSE(Contains(err, "audit store not updated")) << err;
  }
  ExpectDenseStoreOrder(store_uri_);
  // Each target's events once, as the ledger that has all of them holds
  // them.
  for (const auto& [project, key] :
       std::vector<std::pair<std::string, std::string>>{
           {a, TargetKey(uri_)}, {c, TargetKey(other)}}) {
    RunResult store_digest =
        RunMigledger({"--store", "audit", "digest", "--target-key", key}, a);
    ASSERT_EQ(store_digest.exit_code, 0) << store_digest.err;
    std::string size_and_root;
    for (const std::string& line : Lines(store_digest.out)) {
      if (line.rfind("size: ", 0) == 0 || line.rfind("root: ", 0) == 0)
        size_and_root += line + "\n";
    }
    EXPECT_EQ(size_and_root, TargetDigest(project, key)) << key;
  }
  EXPECT_EQ(
      Store("SELECT count(*) FROM migledger_store.events").at(0),
      std::to_string(CountLines(MustRun({"audit", "log", "--format", "jsonl",
                                         "--target", TargetKey(uri_)},
                                        a),
                                "\"type\"") +
                     CountLines(MustRun({"audit", "log", "--format", "jsonl",
                                         "--target", TargetKey(other)},
                                        c),
                                "\"type\"")));
  EXPECT_EQ(RunMigledger({"--store", "audit", "verify"}, a).exit_code, 0);
}

// A store made by an earlier migledger (schema 2: no store order, no
// identity) gets both when this one first opens it. The rows it holds are
// numbered once, by arrival, a row counting as arrived no later than the
// later rows of its target (two pushes of one target could start in one
// order and commit in the other), so each target stays in target order;
// the same rows get the same numbers every time.
TEST_F(AuditStoreTest, StoreOfSchema2GetsItsOrderOnceTheSameEveryTime) {
  std::string a = dir_ / "a", b = dir_ / "b";
  Configure(a, store_uri_);
  AddMigrations(a, 1, 2);
  MustRun({"apply"}, a);
  const std::string other = OtherTarget("sd");
  Configure(b, store_uri_, other);
  AddMigrations(b, 1, 1);
  MustRun({"apply"}, b);
  const std::string first = TargetKey(uri_), second = TargetKey(other);
  ASSERT_LT(second, first);
  auto to_schema_2 = [&] {
    Store(
        "DROP TABLE migledger_store.identity; ALTER TABLE "
        "migledger_store.events DROP COLUMN store_sequence; DELETE FROM "
        "migledger_store.schema_history WHERE version = 3");
    // The first target's last row arrived before its other rows; the
    // second target's rows in between.
    Store(
        "UPDATE migledger_store.events SET received_at = CASE WHEN "
        "target_key = '" +
        second +
        "' THEN timestamptz '2026-01-01 00:00:07+00' WHEN target_sequence = "
        "(SELECT max(target_sequence) FROM migledger_store.events WHERE "
        "target_key = '" +
        first +
        "') THEN timestamptz '2026-01-01 00:00:05+00' ELSE timestamptz "
        "'2026-01-01 00:00:10+00' END");
  };
  const std::string order =
      "SELECT store_sequence, target_key, target_sequence FROM "
      "migledger_store.events ORDER BY store_sequence";
  to_schema_2();
  const std::string digest = MustRun({"--store", "audit", "digest"}, a);
  EXPECT_EQ(
      Store("SELECT max(version) FROM migledger_store.schema_history").at(0),
      "3");
  ExpectDenseStoreOrder(store_uri_);
  const std::vector<std::string> numbered = Store(order);
  const int first_rows = std::stoi(
      Store("SELECT count(*) FROM migledger_store.events WHERE target_key = '" +
            first + "'")
          .at(0));
  ASSERT_GT(numbered.size(), static_cast<size_t>(first_rows));
  for (size_t i = 0; i < numbered.size(); ++i) {
    const bool of_first = i < static_cast<size_t>(first_rows);
    EXPECT_EQ(numbered[i],
              std::to_string(i + 1) + "|" + (of_first ? first : second) + "|" +
                  std::to_string(of_first ? i + 1 : i + 1 - first_rows));
  }
  EXPECT_EQ(RunMigledger({"--store", "audit", "verify"}, a).exit_code, 0);

  to_schema_2();
  const std::string again = MustRun({"--store", "audit", "digest"}, a);
  EXPECT_EQ(Store(order), numbered);
  EXPECT_EQ(Lines(again).at(2), Lines(digest).at(2));  // size
  EXPECT_EQ(Lines(again).at(3), Lines(digest).at(3));  // root

  // New rows go after the numbered ones.
  WriteFile(dir_ / "saved.digest", again);
  AddMigrations(a, 3, 3);
  MustRun({"apply"}, a);
  ExpectDenseStoreOrder(store_uri_);
  EXPECT_EQ(
      RunMigledger(
          {"--store", "audit", "verify", "--digest", dir_ / "saved.digest"}, a)
          .exit_code,
      0);
}
}  // namespace
}  // namespace migledger::testing
