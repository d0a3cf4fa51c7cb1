// PostgreSQL only: a migration's tables, session settings and session
// authorization stay the migration's (search_path, SET, SET ROLE).
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

}  // namespace
}  // namespace migledger::testing
