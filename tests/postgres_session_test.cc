// Each migration in a clean session (PostgreSQL), through the real binary on
// a real server: what one migration leaves in the session (temporary tables,
// prepared statements, advisory locks, cursors, settings, a role) never
// reaches the next, so a migration behaves the same in one apply, in two, or
// after a kill; a resumed no-transaction step sets again what its earlier
// statements set; migledger's own rows are written as migledger's role; a
// failed or interrupted CREATE INDEX CONCURRENTLY is dropped before it runs
// again. Run under scripts/pg-throwaway (PGTEST_* variables).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "common/crash_points.h"
#include "tests/test_util.h"

namespace migledger::testing {
namespace {

using Rows = std::vector<std::string>;

// A fresh database and a project that targets it; both go at the end.
class PgSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PgServer::Available()) GTEST_SKIP() << "PGTEST_URI is not set";
    static std::atomic<int> counter{0};
    suffix_ = std::to_string(::getpid()) + "_" + std::to_string(counter++);
    db_ = "mlsess_" + suffix_;
    uri_ = PgServer::CreateDatabase(db_);
    MakeProject(dir_.path(), uri_);
  }
  void TearDown() override {
    if (db_.empty()) return;
    for (const std::string& role : roles_) {
      Query("DROP OWNED BY " + role + "; DROP ROLE " + role);
    }
    PgServer::DropDatabase(db_);
  }

  // A role of this test's own (roles belong to the whole server).
  std::string Role(const std::string& name) {
    std::string role = name + "_" + suffix_;
    roles_.push_back(role);
    Query("CREATE ROLE " + role + " NOLOGIN");
    return role;
  }

  Rows Query(const std::string& sql) { return PgServer::Query(uri_, sql); }

  void Write(const std::string& name, const std::string& sql) {
    WriteFile(dir_ / ("migrations/" + name), sql);
  }

  RunResult Run(const std::vector<std::string>& args,
                const std::map<std::string, std::string>& env = {}) {
    return RunMigledger(args, dir_.path(), env);
  }

  TempDir dir_;
  std::string suffix_;
  std::string db_;
  std::string uri_;
  std::vector<std::string> roles_;
};

enum class Runs { kOneApply, kOneApplyPerMigration, kKilledThenApply };

const char* Name(Runs runs) {
  switch (runs) {
    case Runs::kOneApply:
      return "one apply";
    case Runs::kOneApplyPerMigration:
      return "one apply per migration";
    case Runs::kKilledThenApply:
      return "killed after the second migration committed, then apply";
  }
  return "";
}

// Runs the project's three migrations the way `runs` says.
template <typename RunFn>
void ApplyThree(Runs runs, const RunFn& run) {
  switch (runs) {
    case Runs::kOneApply: {
      RunResult r = run({"apply"}, {});
      ASSERT_EQ(r.exit_code, 0) << Describe(r);
      break;
    }
    case Runs::kOneApplyPerMigration:
      for (const char* to : {"0001", "0002", "0003"}) {
        RunResult r = run({"apply", "--to", to}, {});
        ASSERT_EQ(r.exit_code, 0) << Describe(r);
      }
      break;
    case Runs::kKilledThenApply: {
      RunResult killed =
          run({"apply"}, {{"MIGLEDGER_CRASH_AT", "apply.after_outcome:2"}});
      ASSERT_EQ(killed.signal, 9) << Describe(killed);
      RunResult r = run({"apply"}, {});
      ASSERT_EQ(r.exit_code, 0) << Describe(r);
      break;
    }
  }
}

// 0002 leaves everything a session can hold; 0003 must see none of it: its
// INSERT goes into the real table (not 0002's temporary one), its PREPARE
// of the same name works, and it finds no lock, cursor, prepared statement,
// temporary object or setting of 0002's.
TEST_F(PgSessionTest, EachMigrationStartsInAFreshSession) {
  if (!CrashPointsEnabled()) GTEST_SKIP() << "built without crash points";
  const std::string first_db = db_;
  for (Runs runs :
       {Runs::kOneApply, Runs::kOneApplyPerMigration, Runs::kKilledThenApply}) {
    SCOPED_TRACE(Name(runs));
    if (runs != Runs::kOneApply) {  // a fresh database and ledger each time
      PgServer::DropDatabase(db_);
      uri_ = PgServer::CreateDatabase(db_);
      std::filesystem::remove_all(dir_ / ".migledger");
    }
    Write("0001_staging.up.sql", "CREATE TABLE staging (id integer);\n");
    Write("0002_session.up.sql",
          "CREATE TEMP TABLE staging (id integer);\n"
          "PREPARE p AS SELECT 1;\n"
          "SELECT pg_advisory_lock(42);\n"
          "DECLARE c CURSOR WITH HOLD FOR SELECT 1;\n"
          "CREATE SEQUENCE s;\n"
          "SELECT nextval('s');\n"
          "SET statement_timeout = '17s';\n");
    Write("0003_use.up.sql",
          "INSERT INTO staging VALUES (1);\n"
          "PREPARE p AS SELECT 2;\n"
          "CREATE TABLE seen AS SELECT\n"
          "  (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'\n"
          "   AND pid = pg_backend_pid()) AS advisory_locks,\n"
          "  (SELECT count(*) FROM pg_cursors) AS cursors,\n"
          "  (SELECT count(*) FROM pg_prepared_statements) AS prepared,\n"
          "  pg_my_temp_schema() = 0 OR NOT EXISTS (SELECT FROM pg_class\n"
          "    WHERE relnamespace = pg_my_temp_schema()) AS no_temp,\n"
          "  current_setting('statement_timeout') AS timeout;\n");
    ASSERT_NO_FATAL_FAILURE(
        ApplyThree(runs, [&](const std::vector<std::string>& args,
                             const std::map<std::string, std::string>& env) {
          return Run(args, env);
        }));
    EXPECT_EQ(Query("SELECT count(*) FROM public.staging"), Rows{"1"});
    EXPECT_EQ(Query("SELECT * FROM seen"), Rows{"0|0|1|t|0"});
    EXPECT_EQ(Query("SELECT tableowner = session_user FROM pg_tables WHERE "
                    "tablename = 'seen'"),
              Rows{"t"});
    RunResult verify = Run({"audit", "verify"});
    EXPECT_EQ(verify.exit_code, 0) << Describe(verify);
  }
  EXPECT_EQ(db_, first_db);
}

// SET ROLE app_owner, the usual way to make the application's role own what
// a migration creates, in a transactional and in a no-transaction
// migration: the migration's objects belong to that role, and migledger's
// own rows (marker, mirror), which that role may not touch, are still
// written.
TEST_F(PgSessionTest, MigrationThatSetsARoleIsRecorded) {
  const std::string owner = Role("app_owner");
  Query("GRANT CREATE, USAGE ON SCHEMA public TO " + owner);
  Write("0001_owned.up.sql",
        "SET ROLE " + owner + ";\nCREATE TABLE owned (id integer);\n");
  Write("0002_owned_no_tx.up.sql",
        "-- migledger:no-transaction\n"
        "SET ROLE " +
            owner +
            ";\n"
            "CREATE TABLE owned2 (id integer);\n"
            "CREATE INDEX CONCURRENTLY owned2_id ON owned2 (id);\n");
  RunResult r = Run({"apply"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Query("SELECT tablename || ':' || tableowner FROM pg_tables WHERE "
                  "tablename LIKE 'owned%' ORDER BY tablename"),
            (Rows{"owned:" + owner, "owned2:" + owner}));
  EXPECT_EQ(Query("SELECT version FROM migledger.applied ORDER BY 1"),
            (Rows{"0001", "0002"}));
  RunResult status = Run({"validate"});
  EXPECT_EQ(status.exit_code, 0) << Describe(status);
}

// A migration that makes its own transaction read-only cannot be recorded
// in it: refused as a failed migration naming the statement's file and
// line, nothing of it kept.
TEST_F(PgSessionTest, ReadOnlyTransactionIsRefusedNamingTheLine) {
  Write("0001_check.up.sql",
        "CREATE TABLE t (id integer);\n"
        "SET TRANSACTION READ ONLY;\n"
        "SELECT 1;\n");
  RunResult r = Run({"apply"});
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_EQ(Lines(r.err).size(), 1u) << r.err;
  EXPECT_TRUE(Contains(r.err, "error: migration 0001 up failed at ")) << r.err;
  EXPECT_TRUE(Contains(r.err, "0001_check.up.sql:2 (statement 2)")) << r.err;
  EXPECT_TRUE(Contains(r.err, "read-only")) << r.err;
  EXPECT_EQ(Query("SELECT to_regclass('public.t') IS NULL"), Rows{"t"});
  EXPECT_EQ(Query("SELECT count(*) FROM migledger.applied"), Rows{"0"});
}

// The same in a no-transaction file's own transaction: the acknowledgements
// of its statements go into the mirror inside it, so it is refused at its
// COMMIT, nothing of it kept.
TEST_F(PgSessionTest, ReadOnlyFileTransactionIsRefusedAtItsCommit) {
  Write("0001_check.up.sql",
        "-- migledger:no-transaction\n"
        "BEGIN READ ONLY;\n"
        "SELECT 1;\n"
        "COMMIT;\n");
  RunResult r = Run({"apply"});
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_EQ(Lines(r.err).size(), 1u) << r.err;
  EXPECT_TRUE(Contains(r.err, "0001_check.up.sql:4 (statement 3)")) << r.err;
  EXPECT_TRUE(Contains(r.err, "read-only")) << r.err;
  EXPECT_TRUE(Contains(r.err, "make it read-write")) << r.err;
  EXPECT_EQ(Query("SELECT count(*) FROM migledger.applied"), Rows{"0"});
}

// A no-transaction step killed after its SET search_path and SET ROLE were
// acknowledged resumes in a session where both hold again: the rest of it
// builds what it builds where, and as whom, one uninterrupted apply does.
TEST_F(PgSessionTest, ResumedNoTransactionStepSetsItsSessionAgain) {
  if (!CrashPointsEnabled()) GTEST_SKIP() << "built without crash points";
  const std::string weak = Role("weak");
  for (bool killed : {false, true}) {
    SCOPED_TRACE(killed ? "killed after statement 2, then apply" : "one apply");
    PgServer::DropDatabase(db_);
    uri_ = PgServer::CreateDatabase(db_);
    std::filesystem::remove_all(dir_ / ".migledger");
    Query("CREATE SCHEMA app; GRANT CREATE, USAGE ON SCHEMA app TO " + weak +
          "; CREATE TABLE public.accounts (id integer); "
          "CREATE TABLE app.accounts (id integer); "
          "ALTER TABLE app.accounts OWNER TO " +
          weak);
    Write("0001_index.up.sql",
          "-- migledger:no-transaction\n"
          "SET search_path = app;\n"
          "SET ROLE " +
              weak +
              ";\n"
              "CREATE TABLE made_after (id integer);\n"
              "CREATE INDEX CONCURRENTLY accounts_id ON accounts (id);\n");
    if (killed) {
      RunResult k =
          Run({"apply"},
              {{"MIGLEDGER_CRASH_AT", "apply.after_statement_event_no_tx:2"}});
      ASSERT_EQ(k.signal, 9) << Describe(k);
    }
    RunResult r = Run({"apply"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(Query("SELECT schemaname || '.' || tablename || ':' || "
                    "(tableowner = '" +
                    weak + "') FROM pg_tables WHERE tablename = 'made_after'"),
              Rows{"app.made_after:true"});
    EXPECT_EQ(Query("SELECT schemaname || '.' || indexname FROM pg_indexes "
                    "WHERE indexname = 'accounts_id'"),
              Rows{"app.accounts_id"});
    RunResult validate = Run({"validate"});
    EXPECT_EQ(validate.exit_code, 0) << Describe(validate);
  }
}

// A CREATE UNIQUE INDEX CONCURRENTLY that fails on a duplicate key leaves
// an invalid index; once the data is fixed, the next apply drops that index
// (only it: an invalid index of the same name on another schema's table
// stays) and builds it again instead of failing on "already exists".
TEST_F(PgSessionTest, FailedConcurrentIndexIsDroppedBeforeTheRetry) {
  Query(
      "CREATE SCHEMA app; "
      "CREATE TABLE app.accounts (id integer, email text); "
      "INSERT INTO app.accounts VALUES (1, 'a'), (2, 'a'); "
      "CREATE TABLE public.accounts (id integer, email text); "
      "INSERT INTO public.accounts VALUES (1, 'b'), (2, 'b');");
  // Someone else's failed build, in another schema, with the same name.
  EXPECT_ANY_THROW(
      Query("CREATE UNIQUE INDEX CONCURRENTLY accounts_email "
            "ON public.accounts (email)"));
  Write("0001_email.up.sql",
        "-- migledger:no-transaction\n"
        "CREATE UNIQUE INDEX CONCURRENTLY accounts_email\n"
        "  ON app.accounts (email);\n");
  RunResult failed = Run({"apply"});
  ASSERT_EQ(failed.exit_code, 3) << Describe(failed);
  EXPECT_TRUE(Contains(failed.err, "0001_email.up.sql:2")) << failed.err;
  Query("DELETE FROM app.accounts WHERE id = 2");
  RunResult r = Run({"apply"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Query("SELECT n.nspname || '.' || c.relname || ':' || "
                  "i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = "
                  "i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                  "WHERE c.relname = 'accounts_email' ORDER BY 1"),
            (Rows{"app.accounts_email:true", "public.accounts_email:false"}));
}

// Ctrl-C while a CREATE INDEX CONCURRENTLY builds: the statement is
// cancelled and leaves its index invalid; the next apply drops it and builds
// it again instead of failing on "already exists".
TEST_F(PgSessionTest, InterruptedConcurrentIndexIsDroppedBeforeTheRetry) {
  // The build calls slow_key() once per row; it sleeps only in sessions
  // that set mltest.sleep (the interrupted run).
  Query(
      "CREATE TABLE big (id integer NOT NULL);\n"
      "INSERT INTO big SELECT g FROM generate_series(1, 400) AS g;\n"
      "CREATE FUNCTION slow_key(i integer) RETURNS integer\n"
      "LANGUAGE plpgsql IMMUTABLE AS $fn$\n"
      "BEGIN\n"
      "  PERFORM pg_sleep(coalesce(nullif(current_setting('mltest.sleep', "
      "true), ''), '0')::float8);\n"
      "  RETURN i;\n"
      "END\n"
      "$fn$;");
  Write("0001_slow_index.up.sql",
        "-- migledger:no-transaction\n"
        "CREATE INDEX CONCURRENTLY big_slow_idx ON big (slow_key(id));\n");
  const std::string err_path = dir_ / "apply.err";
  pid_t pid = StartMigledger({"apply"}, dir_.path(),
                             {{"PGOPTIONS", "-c mltest.sleep=0.05"}}, err_path);
  ASSERT_GT(pid, 0);
  const bool building = WaitUntil(
      [&] {
        return !Query(
                    "SELECT a.pid FROM pg_stat_activity a JOIN "
                    "pg_stat_progress_create_index p ON p.pid = a.pid "
                    "WHERE p.phase LIKE 'building index%' AND "
                    "a.datname = current_database()")
                    .empty();
      },
      60);
  if (!building) kill(pid, SIGKILL);
  ASSERT_TRUE(building) << ReadFile(err_path);
  kill(pid, SIGINT);
  int status = 0;
  ASSERT_TRUE(WaitForExit(pid, 60, &status)) << ReadFile(err_path);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT)
      << ReadFile(err_path);
  ASSERT_EQ(Query("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON "
                  "c.oid = i.indexrelid WHERE c.relname = 'big_slow_idx'"),
            Rows{"f"});
  RunResult r = Run({"apply"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Query("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON "
                  "c.oid = i.indexrelid WHERE c.relname = 'big_slow_idx'"),
            Rows{"t"});
}

}  // namespace
}  // namespace migledger::testing
