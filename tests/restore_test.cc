// A target restored from an older backup, or copied (a copied SQLite file,
// CREATE DATABASE ... TEMPLATE): the refusal names what happened and the
// command that leads on, and `migledger resolve` records an audited way
// forward that the ledger, the target's mirror, a fresh runner and the audit
// store all follow. Real SQLite files, a real PostgreSQL server
// (scripts/pg-throwaway; those tests skip without it), the real binary.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace migledger::testing {
namespace {

namespace fs = std::filesystem;

int Count(const std::string& s, const std::string& needle) {
  int n = 0;
  for (size_t p = s.find(needle); p != std::string::npos;
       p = s.find(needle, p + 1))
    ++n;
  return n;
}

// One project (its own ledger) with migrations 0001.. creating t1..
class Project {
 public:
  Project(std::string dir, const std::string& toml,
          std::map<std::string, std::string> env = {})
      : dir_(std::move(dir)), env_(std::move(env)) {
    fs::create_directories(dir_ + "/migrations");
    WriteFile(dir_ + "/migledger.toml", toml);
  }
  void AddMigrations(int from, int to) {
    for (int i = from; i <= to; ++i) {
      char v[8];
      std::snprintf(v, sizeof v, "%04d", i);
      const std::string t = "t" + std::to_string(i);
      WriteFile(dir_ + "/migrations/" + v + "_" + t + ".up.sql",
                "CREATE TABLE " + t + " (id INTEGER);\n");
      WriteFile(dir_ + "/migrations/" + v + "_" + t + ".down.sql",
                "DROP TABLE " + t + ";\n");
    }
  }
  RunResult Run(const std::vector<std::string>& args) {
    return RunMigledger(args, dir_, env_);
  }
  // `audit log --format jsonl` lines, with filters.
  std::vector<std::string> Log(const std::vector<std::string>& filters) {
    std::vector<std::string> args = {"audit", "log", "--format", "jsonl"};
    args.insert(args.end(), filters.begin(), filters.end());
    RunResult r = Run(args);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    return Lines(r.out);
  }
  // status --format json of a target.
  std::string StatusJson(const std::string& target) {
    RunResult r = Run({"status", "--format", "json", "--target", target});
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    return r.out;
  }
  void ExpectConsistent(const std::string& target) {
    RunResult v = Run({"validate", "--target", target});
    EXPECT_EQ(v.exit_code, 0) << Describe(v);
    RunResult a = Run({"audit", "verify"});
    EXPECT_EQ(a.exit_code, 0) << Describe(a);
  }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::map<std::string, std::string> env_;
};

std::string SqliteToml(const std::vector<std::string>& names) {
  std::string toml =
      "default_target = \"" + names[0] + "\"\nlock_timeout_ms = 2000\n";
  for (const auto& n : names)
    toml += "[targets." + n + "]\nurl = \"sqlite:" + n + ".db\"\n";
  return toml;
}

// ---- SQLite ---------------------------------------------------------------

TEST(RestoreSqliteTest, OlderCopyRestoredInPlaceIsResolvedAndReapplied) {
  TempDir tmp;
  Project p(tmp / "p", SqliteToml({"prod"}), {{"MIGLEDGER_ACTOR", "olga"}});
  p.AddMigrations(1, 1);
  ASSERT_EQ(p.Run({"apply"}).exit_code, 0);
  fs::copy_file(p.dir() + "/prod.db", tmp / "backup.db");
  p.AddMigrations(2, 3);
  ASSERT_EQ(p.Run({"apply"}).exit_code, 0);
  fs::copy_file(tmp / "backup.db", p.dir() + "/prod.db",
                fs::copy_options::overwrite_existing);

  // The refusal says what happened and what leads on, in one line.
  RunResult refused = p.Run({"apply"});
  EXPECT_EQ(refused.exit_code, 4) << Describe(refused);
  ExpectOneErrorLine(refused);
  EXPECT_TRUE(Contains(refused.err, "no marker row for 0002, 0003"))
      << refused.err;
  EXPECT_TRUE(Contains(refused.err, "migledger resolve --restored --reason"))
      << refused.err;
  EXPECT_TRUE(Contains(refused.err, "runs 0002, 0003 again")) << refused.err;
  EXPECT_TRUE(Contains(refused.err, "resolve --new-identity")) << refused.err;
  RunResult v = p.Run({"validate"});
  EXPECT_EQ(v.exit_code, 4) << Describe(v);
  EXPECT_TRUE(Contains(v.err, "resolve --restored")) << v.err;
  RunResult st = p.Run({"status"});
  EXPECT_TRUE(Contains(st.out, "to lead on: if the database was restored"))
      << st.out;

  // A reason is required; a resolve changes nothing else.
  RunResult no_reason = p.Run({"resolve", "--restored"});
  EXPECT_EQ(no_reason.exit_code, 2) << Describe(no_reason);
  ExpectOneErrorLine(no_reason);
  RunResult r = p.Run({"resolve", "--restored", "--reason", "nightly restore"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(Contains(r.out, "0002  no longer applied")) << r.out;
  auto resolved = p.Log({"--type", "resolved"});
  ASSERT_EQ(resolved.size(), 1u);
  EXPECT_TRUE(Contains(resolved[0], "\"subject\":\"restored\"")) << resolved[0];
  EXPECT_TRUE(Contains(resolved[0], "\"reason\":\"nightly restore\""))
      << resolved[0];
  EXPECT_TRUE(Contains(resolved[0], "\"os_user\":\"olga\"")) << resolved[0];
  EXPECT_EQ(Count(resolved[0], "\"version\":\"000"), 2) << resolved[0];
  EXPECT_TRUE(p.StatusJson("prod").find("\"state\":\"pending\"") !=
              std::string::npos);

  // Apply runs again what the restore undid, and everything agrees.
  RunResult again = p.Run({"apply"});
  ASSERT_EQ(again.exit_code, 0) << Describe(again);
  EXPECT_TRUE(Contains(again.out, "applied  0002")) << again.out;
  EXPECT_TRUE(Contains(again.out, "applied  0003")) << again.out;
  EXPECT_EQ(SqliteQuery(p.dir() + "/prod.db",
                        "SELECT count(*) FROM sqlite_master WHERE name IN "
                        "('t1','t2','t3')"),
            std::vector<std::string>{"3"});
  p.ExpectConsistent("prod");
  RunResult state = p.Run({"audit", "state"});
  EXPECT_TRUE(Contains(state.out, "3 applied")) << state.out;
  RunResult nothing = p.Run({"resolve", "--restored", "--reason", "again"});
  EXPECT_EQ(nothing.exit_code, 2) << Describe(nothing);
  EXPECT_TRUE(Contains(nothing.err, "nothing to resolve")) << nothing.err;

  // The mirror carries the decision: a runner with an empty ledger pulls it
  // and sees the same state, with no drift.
  EXPECT_EQ(SqliteQuery(p.dir() + "/prod.db",
                        "SELECT count(*) FROM migledger_events"),
            std::vector<std::string>{std::to_string(p.Log({}).size())});
  Project fresh(tmp / "fresh",
                "default_target = \"prod\"\n[targets.prod]\nurl = \"sqlite:" +
                    p.dir() + "/prod.db\"\n");
  fresh.AddMigrations(1, 3);
  RunResult fresh_st = fresh.Run({"status"});
  ASSERT_EQ(fresh_st.exit_code, 0) << Describe(fresh_st);
  EXPECT_TRUE(Contains(fresh_st.out, "3 applied, 0 pending")) << fresh_st.out;
  EXPECT_FALSE(Contains(fresh_st.out, "drift")) << fresh_st.out;
  EXPECT_EQ(fresh.Log({"--type", "resolved"}).size(), 1u);
  fresh.ExpectConsistent("prod");
}

TEST(RestoreSqliteTest, RestoreThatBringsBackARevertedVersionIsResolved) {
  TempDir tmp;
  Project p(tmp / "p", SqliteToml({"prod"}));
  p.AddMigrations(1, 2);
  ASSERT_EQ(p.Run({"apply"}).exit_code, 0);
  fs::copy_file(p.dir() + "/prod.db", tmp / "backup.db");
  ASSERT_EQ(p.Run({"down", "--steps", "1"}).exit_code, 0);
  fs::copy_file(tmp / "backup.db", p.dir() + "/prod.db",
                fs::copy_options::overwrite_existing);

  RunResult refused = p.Run({"apply"});
  EXPECT_EQ(refused.exit_code, 4) << Describe(refused);
  ExpectOneErrorLine(refused);
  EXPECT_TRUE(Contains(refused.err, "has marker rows for 0002")) << refused.err;
  RunResult r = p.Run({"resolve", "--restored", "--reason", "rolled back"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(Contains(r.out, "0002  applied")) << r.out;
  RunResult again = p.Run({"apply"});
  EXPECT_EQ(again.exit_code, 0) << Describe(again);
  EXPECT_TRUE(Contains(again.out, "nothing to apply")) << again.out;
  p.ExpectConsistent("prod");
}

TEST(RestoreSqliteTest, CopiedFileIsToldApartAndTakesItsOwnIdentity) {
  TempDir tmp;
  Project p(tmp / "p", SqliteToml({"prod", "staging"}),
            {{"MIGLEDGER_ACTOR", "olga"}});
  p.AddMigrations(1, 2);
  ASSERT_EQ(p.Run({"apply"}).exit_code, 0);
  fs::copy_file(p.dir() + "/prod.db", p.dir() + "/staging.db");
  const std::string copied =
      SqliteQuery(p.dir() + "/staging.db",
                  "SELECT count(*) FROM migledger_events")
          .at(0);
  p.AddMigrations(3, 3);
  ASSERT_EQ(p.Run({"apply"}).exit_code, 0);
  const size_t prod_events = p.Log({"--target", "prod"}).size();

  // Not "restored to an older state": one id at two paths, said so, and
  // nothing of prod's history is written into the copy or recorded.
  RunResult refused = p.Run({"apply", "--target", "staging"});
  EXPECT_EQ(refused.exit_code, 4) << Describe(refused);
  ExpectOneErrorLine(refused);
  EXPECT_TRUE(Contains(refused.err, "staging.db and sqlite:")) << refused.err;
  EXPECT_TRUE(Contains(refused.err, "copy")) << refused.err;
  EXPECT_TRUE(Contains(refused.err, "resolve --new-identity")) << refused.err;
  EXPECT_FALSE(Contains(refused.err, "older state")) << refused.err;
  EXPECT_EQ(p.Log({}).size(), prod_events);
  EXPECT_EQ(SqliteQuery(p.dir() + "/staging.db",
                        "SELECT count(*) FROM migledger_events"),
            std::vector<std::string>{copied});

  RunResult r = p.Run({"resolve", "--new-identity", "--reason",
                       "staging is a copy of prod", "--target", "staging"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const std::string prod_id =
      SqliteQuery(p.dir() + "/prod.db", "SELECT id FROM migledger_target")
          .at(0);
  const std::string staging_id =
      SqliteQuery(p.dir() + "/staging.db", "SELECT id FROM migledger_target")
          .at(0);
  EXPECT_NE(prod_id, staging_id);
  EXPECT_TRUE(Contains(r.out, staging_id)) << r.out;
  // The inherited history is kept apart, under the id it belongs to.
  EXPECT_EQ(SqliteQuery(p.dir() + "/staging.db",
                        "SELECT database_id, count(*) FROM "
                        "migledger_events_inherited GROUP BY 1"),
            std::vector<std::string>{prod_id + "|" + copied});
  // The copy's new chain starts with the decision.
  auto staging_log = p.Log({"--target", "staging"});
  ASSERT_EQ(staging_log.size(), 1u);
  EXPECT_TRUE(Contains(staging_log[0], "\"subject\":\"new_identity\""))
      << staging_log[0];
  EXPECT_TRUE(Contains(staging_log[0], "\"oldDatabaseId\":\"" + prod_id) ||
              Contains(staging_log[0], "\"old_database_id\":\"" + prod_id))
      << staging_log[0];
  EXPECT_TRUE(Contains(staging_log[0], "\"os_user\":\"olga\""))
      << staging_log[0];

  RunResult applied = p.Run({"apply", "--target", "staging"});
  ASSERT_EQ(applied.exit_code, 0) << Describe(applied);
  EXPECT_TRUE(Contains(applied.out, "applied  0003")) << applied.out;
  EXPECT_FALSE(Contains(applied.out, "applied  0001")) << applied.out;
  RunResult prod = p.Run({"apply"});
  EXPECT_EQ(prod.exit_code, 0) << Describe(prod);
  EXPECT_TRUE(Contains(prod.out, "nothing to apply")) << prod.out;
  EXPECT_EQ(p.Log({"--target", "prod"}).size(), prod_events);
  p.ExpectConsistent("staging");
  p.ExpectConsistent("prod");
  RunResult state = p.Run({"audit", "state", "--target", "staging"});
  EXPECT_TRUE(Contains(state.out, "3 applied")) << state.out;

  // A runner with an empty ledger continues the copy's own history.
  Project fresh(tmp / "fresh",
                "default_target = \"staging\"\n"
                "[targets.staging]\nurl = \"sqlite:" +
                    p.dir() + "/staging.db\"\n");
  fresh.AddMigrations(1, 3);
  RunResult st = fresh.Run({"status"});
  ASSERT_EQ(st.exit_code, 0) << Describe(st);
  EXPECT_TRUE(Contains(st.out, "3 applied, 0 pending")) << st.out;
  EXPECT_FALSE(Contains(st.out, "drift")) << st.out;
  fresh.ExpectConsistent("staging");
}

TEST(RestoreSqliteTest, ResolveNeedsExactlyOneDecision) {
  TempDir tmp;
  Project p(tmp / "p", SqliteToml({"prod"}));
  p.AddMigrations(1, 1);
  ASSERT_EQ(p.Run({"apply"}).exit_code, 0);
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"resolve", "--reason", "x"},
           {"resolve", "--restored", "--new-identity", "--reason", "x"}}) {
    RunResult r = p.Run(args);
    EXPECT_EQ(r.exit_code, 2) << Describe(r);
    ExpectOneErrorLine(r);
  }
  RunResult help = p.Run({"resolve", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_TRUE(Contains(help.out, "--restored")) << help.out;
  EXPECT_TRUE(Contains(help.out, "--new-identity")) << help.out;
}

// ---- PostgreSQL -----------------------------------------------------------

class RestorePostgresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PgServer::Available())
      GTEST_SKIP() << "PGTEST_URI not set (run under scripts/pg-throwaway)";
    static int counter = 0;
    prefix_ =
        "rs_" + std::to_string(getpid()) + "_" + std::to_string(++counter);
  }
  void TearDown() override {
    for (const auto& db : created_) PgServer::DropDatabase(db);
  }
  std::string Db(const std::string& name) {
    created_.push_back(prefix_ + "_" + name);
    return created_.back();
  }
  // CREATE DATABASE `name` TEMPLATE `from`.
  void Clone(const std::string& from, const std::string& name) {
    PgServer::Query(Uri("postgres"),
                    "CREATE DATABASE " + name + " TEMPLATE " + from);
  }
  static std::string Uri(const std::string& db) {
    return "postgresql:///" + db + "?host=" + std::getenv("PGTEST_HOST") +
           "&port=" + std::getenv("PGTEST_PORT") + "&user=migledger";
  }
  std::string Toml(const std::map<std::string, std::string>& targets,
                   const std::string& store = "") {
    std::string toml = "lock_timeout_ms = 5000\n";
    if (!store.empty()) toml += "audit_store = \"" + Uri(store) + "\"\n";
    toml += "default_target = \"" + targets.begin()->first + "\"\n";
    for (const auto& [name, db] : targets)
      toml += "[targets." + name + "]\nurl = \"" + Uri(db) + "\"\n";
    return toml;
  }
  std::string prefix_;
  std::vector<std::string> created_;
  TempDir tmp_;
};

TEST_F(RestorePostgresTest, TemplateCloneTakesItsOwnIdentity) {
  const std::string app = Db("app"), clone = Db("clone"), store = Db("store");
  PgServer::CreateDatabase(app);
  PgServer::CreateDatabase(store);
  Project p(tmp_ / "p", Toml({{"app", app}, {"clone", clone}}, store));
  p.AddMigrations(1, 2);
  ASSERT_EQ(p.Run({"apply"}).exit_code, 0);
  Clone(app, clone);
  const std::string inherited =
      PgServer::Query(Uri(clone), "SELECT count(*) FROM migledger.events")
          .at(0);

  RunResult refused = p.Run({"apply", "--target", "clone"});
  EXPECT_EQ(refused.exit_code, 4) << Describe(refused);
  ExpectOneErrorLine(refused);
  EXPECT_TRUE(Contains(refused.err, "history of another database"))
      << refused.err;
  EXPECT_TRUE(Contains(refused.err, "/" + app)) << refused.err;
  EXPECT_TRUE(Contains(refused.err, "resolve --new-identity")) << refused.err;

  RunResult r = p.Run({"resolve", "--new-identity", "--reason",
                       "clone for a load test", "--target", "clone"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(Contains(r.out, "/" + clone)) << r.out;
  EXPECT_EQ(PgServer::Query(Uri(clone),
                            "SELECT count(*) FROM migledger.events_inherited")
                .at(0),
            inherited);
  EXPECT_EQ(PgServer::Query(Uri(clone), "SELECT count(*) FROM migledger.events")
                .at(0),
            "1");

  p.AddMigrations(3, 3);
  RunResult applied = p.Run({"apply", "--target", "clone"});
  ASSERT_EQ(applied.exit_code, 0) << Describe(applied);
  EXPECT_TRUE(Contains(applied.out, "applied  0003")) << applied.out;
  EXPECT_FALSE(Contains(applied.out, "applied  0001")) << applied.out;
  ASSERT_EQ(p.Run({"apply"}).exit_code, 0);
  p.ExpectConsistent("clone");
  p.ExpectConsistent("app");
  // The audit store follows both chains.
  RunResult store_verify = p.Run({"--store", "audit", "verify"});
  EXPECT_EQ(store_verify.exit_code, 0) << Describe(store_verify);
  RunResult store_log = p.Run(
      {"--store", "audit", "log", "--format", "jsonl", "--type", "resolved"});
  EXPECT_EQ(store_log.exit_code, 0) << Describe(store_log);
  EXPECT_EQ(Lines(store_log.out).size(), 1u) << store_log.out;
}

TEST_F(RestorePostgresTest,
       RestoreFromAnEarlierTemplateIsResolvedAndReapplied) {
  const std::string app = Db("app"), snap = Db("snap"), store = Db("store");
  PgServer::CreateDatabase(app);
  PgServer::CreateDatabase(store);
  Project p(tmp_ / "p", Toml({{"app", app}}, store),
            {{"MIGLEDGER_ACTOR", "olga"}});
  p.AddMigrations(1, 1);
  ASSERT_EQ(p.Run({"apply"}).exit_code, 0);
  Clone(app, snap);  // the backup
  p.AddMigrations(2, 3);
  ASSERT_EQ(p.Run({"apply"}).exit_code, 0);
  PgServer::DropDatabase(app);
  Clone(snap, app);  // the restore

  RunResult refused = p.Run({"apply"});
  EXPECT_EQ(refused.exit_code, 4) << Describe(refused);
  ExpectOneErrorLine(refused);
  EXPECT_TRUE(Contains(refused.err, "no marker row for 0002, 0003"))
      << refused.err;
  EXPECT_TRUE(Contains(refused.err, "resolve --restored")) << refused.err;

  RunResult r = p.Run({"resolve", "--restored", "--reason", "PITR drill"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  RunResult again = p.Run({"apply"});
  ASSERT_EQ(again.exit_code, 0) << Describe(again);
  EXPECT_TRUE(Contains(again.out, "applied  0002")) << again.out;
  EXPECT_TRUE(Contains(again.out, "applied  0003")) << again.out;
  EXPECT_EQ(
      PgServer::Query(Uri(app), "SELECT to_regclass('t3') IS NOT NULL").at(0),
      "t");
  p.ExpectConsistent("app");
  // The target's mirror holds the whole chain the ledger holds.
  EXPECT_EQ(
      PgServer::Query(Uri(app), "SELECT count(*) FROM migledger.events").at(0),
      std::to_string(p.Log({}).size()));
  // The audit store follows, and its state agrees.
  EXPECT_EQ(p.Run({"--store", "audit", "verify"}).exit_code, 0);
  RunResult store_state = p.Run({"--store", "audit", "state"});
  EXPECT_EQ(store_state.exit_code, 0) << Describe(store_state);
  EXPECT_TRUE(Contains(store_state.out, "3 applied")) << store_state.out;
  // A fresh runner pulls the decision and agrees.
  Project fresh(tmp_ / "fresh", Toml({{"app", app}}));
  fresh.AddMigrations(1, 3);
  RunResult st = fresh.Run({"status"});
  ASSERT_EQ(st.exit_code, 0) << Describe(st);
  EXPECT_TRUE(Contains(st.out, "3 applied, 0 pending")) << st.out;
  EXPECT_EQ(fresh.Log({"--type", "resolved"}).size(), 1u);
  fresh.ExpectConsistent("app");
}

// A copy with its original's system identifier and name (a base backup
// started as another server; here the database restored in place stands in
// for it, as the server cannot hold two databases of one name) takes an id
// of its own, which a TEMPLATE clone of it does not inherit.
TEST_F(RestorePostgresTest, SameNameCopyTakesAnIdOfItsOwn) {
  const std::string app = Db("app"), snap = Db("snap"), clone = Db("clone");
  PgServer::CreateDatabase(app);
  Project p(tmp_ / "p", Toml({{"app", app}, {"clone", clone}}));
  p.AddMigrations(1, 1);
  ASSERT_EQ(p.Run({"apply"}).exit_code, 0);
  Clone(app, snap);
  p.AddMigrations(2, 2);
  ASSERT_EQ(p.Run({"apply"}).exit_code, 0);
  PgServer::DropDatabase(app);
  Clone(snap, app);

  RunResult refused = p.Run({"apply"});
  EXPECT_EQ(refused.exit_code, 4) << Describe(refused);
  EXPECT_TRUE(Contains(refused.err, "resolve --new-identity")) << refused.err;
  RunResult r =
      p.Run({"resolve", "--new-identity", "--reason", "a base backup of prod"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const std::string system_id = PgServer::Query(Uri(app),
                                                "SELECT system_identifier FROM "
                                                "pg_control_system()")
                                    .at(0);
  const std::string own =
      PgServer::Query(Uri(app), "SELECT database_id FROM migledger.identity")
          .at(0);
  EXPECT_EQ(own.rfind(system_id + "/" + app + "/", 0), 0u) << own;
  EXPECT_TRUE(Contains(r.out, own)) << r.out;
  EXPECT_TRUE(Contains(p.StatusJson("app"), own));
  RunResult applied = p.Run({"apply"});
  ASSERT_EQ(applied.exit_code, 0) << Describe(applied);
  EXPECT_TRUE(Contains(applied.out, "applied  0002")) << applied.out;
  p.ExpectConsistent("app");

  // A TEMPLATE clone copies the identity row, not the identity.
  Clone(app, clone);
  RunResult clone_refused = p.Run({"apply", "--target", "clone"});
  EXPECT_EQ(clone_refused.exit_code, 4) << Describe(clone_refused);
  EXPECT_TRUE(Contains(clone_refused.err, own)) << clone_refused.err;
  ASSERT_EQ(p.Run({"resolve", "--new-identity", "--reason", "clone", "--target",
                   "clone"})
                .exit_code,
            0);
  EXPECT_TRUE(Contains(p.StatusJson("clone"),
                       "\"database_id\":\"" + system_id + "/" + clone + "\""));
  p.ExpectConsistent("clone");
}

}  // namespace
}  // namespace migledger::testing
