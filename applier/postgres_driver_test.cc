// Tests for the PostgreSQL driver against a real server.
//
// Needs PGTEST_URI (and PGTEST_PASSWORD), as exported by
//   scripts/pg-throwaway run -- <this test>
// Without PGTEST_URI every server test is skipped. The suite creates its own
// database (migledger_drvtest_<pid>) so it can run beside other suites on
// the same server, and drops it at the end.
#include "applier/postgres_driver.h"

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "applier/conninfo.h"
#include "applier/search_path.h"

namespace migledger {
namespace {

using std::chrono::milliseconds;

const char* TestUri() { return std::getenv("PGTEST_URI"); }

// `s` with every ASCII digit replaced by '9', for checking formats.
std::string Shape(std::string s) {
  for (char& c : s) {
    if (c >= '0' && c <= '9') c = '9';
  }
  return s;
}

// A key=value conninfo equal to `uri` but for dbname (and, if given, the
// password).
std::string WithDatabase(const std::string& uri, const std::string& dbname,
                         const std::string* password = nullptr) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(uri.c_str(), &err);
  if (opts == nullptr) {
    ADD_FAILURE() << "cannot parse " << uri << ": " << (err ? err : "");
    PQfreemem(err);
    return "";
  }
  auto quote = [](const std::string& v) {
    std::string out = "'";
    for (char c : v) {
      if (c == '\'' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    return out + "'";
  };
  std::string out;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
    std::string key = o->keyword;
    if (key == "dbname" || key == "password" || o->val == nullptr) continue;
    out += key + "=" + quote(o->val) + " ";
  }
  PQconninfoFree(opts);
  out += "dbname=" + quote(dbname);
  if (password != nullptr) out += " password=" + quote(*password);
  return out;
}

// A plain libpq connection for setting up and checking from the side.
class RawConn {
 public:
  explicit RawConn(const std::string& conninfo)
      : conn_(PQconnectdb(conninfo.c_str())) {
    PQsetNoticeProcessor(
        conn_, [](void*, const char*) {}, nullptr);
  }
  ~RawConn() { PQfinish(conn_); }
  bool ok() const { return PQstatus(conn_) == CONNECTION_OK; }
  std::string error() const { return PQerrorMessage(conn_); }

  // Runs `sql`; returns the first column of the first row ("" if none).
  std::string Query(const std::string& sql) {
    PGresult* res = PQexec(conn_, sql.c_str());
    std::string out;
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      ADD_FAILURE() << sql << ": " << PQresultErrorMessage(res);
    } else if (st == PGRES_TUPLES_OK && PQntuples(res) > 0) {
      out = PQgetvalue(res, 0, 0);
    }
    PQclear(res);
    return out;
  }

 private:
  PGconn* conn_;
};

class PostgresDriverTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (TestUri() == nullptr) return;
    if (const char* pw = std::getenv("PGTEST_PASSWORD")) {
      setenv("PGPASSWORD", pw, 1);
    }
    RawConn admin(TestUri());
    ASSERT_TRUE(admin.ok()) << admin.error();
    db_name_ = new std::string("migledger_drvtest_" +
                               std::to_string(static_cast<long>(getpid())));
    admin.Query("DROP DATABASE IF EXISTS \"" + *db_name_ + "\" WITH (FORCE)");
    admin.Query("CREATE DATABASE \"" + *db_name_ + "\"");
    conninfo_ = new std::string(WithDatabase(TestUri(), *db_name_));
  }

  static void TearDownTestSuite() {
    if (db_name_ == nullptr) return;
    RawConn admin(TestUri());
    if (admin.ok()) {
      admin.Query("DROP DATABASE IF EXISTS \"" + *db_name_ + "\" WITH (FORCE)");
    }
    delete db_name_;
    delete conninfo_;
    db_name_ = nullptr;
    conninfo_ = nullptr;
  }

  void SetUp() override {
    if (TestUri() == nullptr) {
      GTEST_SKIP() << "PGTEST_URI is not set (run under scripts/pg-throwaway)";
    }
    ASSERT_NE(conninfo_, nullptr);
    side_ = std::make_unique<RawConn>(*conninfo_);
    ASSERT_TRUE(side_->ok()) << side_->error();
    side_->Query("DROP SCHEMA IF EXISTS \"migledger\" CASCADE");
  }

  std::unique_ptr<Driver> Open() {
    auto driver = OpenPostgresDriver(*conninfo_);
    EXPECT_TRUE(driver.ok()) << driver.status().ToString();
    if (!driver.ok()) return nullptr;
    return std::move(driver).value();
  }

  // The test database's URI with `password` in the user info.
  static std::string UriWithPassword(const std::string& password) {
    std::string uri = TestUri();
    size_t scheme = uri.find("://");
    size_t at = uri.find('@', scheme);
    EXPECT_NE(at, std::string::npos) << uri;
    return uri.substr(0, at) + ":" + password + uri.substr(at);
  }

  static std::string* db_name_;
  static std::string* conninfo_;
  std::unique_ptr<RawConn> side_;
};

std::string* PostgresDriverTest::db_name_ = nullptr;
std::string* PostgresDriverTest::conninfo_ = nullptr;

// Restores an environment variable on scope exit.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// What the list names, the server also names: for each value the function
// copies, SET search_path TO <list> gives the session the same schemas as
// set_config() of the value itself.
TEST_F(PostgresDriverTest, SearchPathSetListNamesWhatSetConfigNames) {
  side_->Query(
      "CREATE SCHEMA IF NOT EXISTS app; CREATE SCHEMA IF NOT EXISTS \"My "
      "Schema\"; CREATE SCHEMA IF NOT EXISTS \"a\"\"b\"; CREATE SCHEMA IF NOT "
      "EXISTS \"s_1$x\"; CREATE SCHEMA IF NOT EXISTS \"user\"");
  for (const char* value :
       {"public", "app,public", " app , public ", "\"My Schema\", public",
        "\"a\"\"b\",app", "s_1$x,\"user\"", "user,app"}) {
    SCOPED_TRACE(value);
    const std::string list = SearchPathSetList(value);
    ASSERT_NE(list, "");
    const std::string by_set_config = side_->Query(
        "SELECT pg_catalog.set_config('search_path', '" + std::string(value) +
        "', false); SELECT pg_catalog.current_schemas(false)::text");
    const std::string by_set =
        side_->Query("SET search_path TO " + list +
                     "; SELECT pg_catalog.current_schemas(false)::text");
    EXPECT_EQ(by_set, by_set_config);
    EXPECT_NE(by_set, "{}");
  }
  side_->Query("RESET search_path");
}

TEST_F(PostgresDriverTest, IdentityHasSystemIdentifier) {
  auto driver = Open();
  ASSERT_NE(driver, nullptr);
  const TargetIdentity& id = driver->identity();
  EXPECT_EQ(driver->dialect(), SqlDialect::kPostgres);
  EXPECT_EQ(id.kind, "postgres");
  EXPECT_EQ(id.database_name, *db_name_);
  const size_t slash = id.database_id.find('/');
  ASSERT_NE(slash, std::string::npos) << id.database_id;
  EXPECT_GE(slash, 6u) << id.database_id;
  EXPECT_EQ(Shape(id.database_id.substr(0, slash)), std::string(slash, '9'))
      << id.database_id;
  EXPECT_EQ(id.database_id.substr(slash + 1), *db_name_);
  EXPECT_EQ(id.database_id.substr(0, id.database_id.find('/')),
            side_->Query("SELECT system_identifier::text FROM "
                         "pg_control_system()"));
  EXPECT_TRUE(Shape(id.server_version) == "99.99" ||
              Shape(id.server_version) == "99.9")
      << id.server_version;
  EXPECT_EQ(id.server_version.substr(0, 2), "15");
  EXPECT_EQ(id.Key(), "postgres:" + id.database_id);
  EXPECT_EQ(id.redacted_uri, RedactConninfo(*conninfo_));
  EXPECT_EQ(side_->Query("SELECT count(*) FROM pg_stat_activity WHERE "
                         "application_name = 'migledger' AND datname = '" +
                         *db_name_ + "'"),
            "1");
}

TEST_F(PostgresDriverTest, SocketUriReachesTheSameServer) {
  const char* socket_uri = std::getenv("PGTEST_SOCKET_URI");
  if (socket_uri == nullptr) GTEST_SKIP() << "PGTEST_SOCKET_URI is not set";
  auto tcp = Open();
  ASSERT_NE(tcp, nullptr);
  auto sock = OpenPostgresDriver(socket_uri);
  ASSERT_TRUE(sock.ok()) << sock.status().ToString();
  const std::string& a = tcp->identity().database_id;
  const std::string& b = (*sock)->identity().database_id;
  EXPECT_EQ(a.substr(0, a.find('/')), b.substr(0, b.find('/')));
}

TEST_F(PostgresDriverTest, EnsureSchemaIsIdempotent) {
  auto driver = Open();
  ASSERT_NE(driver, nullptr);
  auto has = driver->HasSchema();
  ASSERT_TRUE(has.ok()) << has.status().ToString();
  EXPECT_FALSE(*has);
  ASSERT_TRUE(driver->EnsureSchema().ok());
  ASSERT_TRUE(driver->EnsureSchema().ok());
  has = driver->HasSchema();
  ASSERT_TRUE(has.ok());
  EXPECT_TRUE(*has);
  EXPECT_EQ(side_->Query("SELECT count(*) FROM pg_tables WHERE schemaname = "
                         "'migledger'"),
            "2");
  // Inside an open transaction it joins it.
  side_->Query("DROP SCHEMA \"migledger\" CASCADE");
  ASSERT_TRUE(driver->Begin().ok());
  ASSERT_TRUE(driver->EnsureSchema().ok());
  ASSERT_TRUE(driver->Rollback().ok());
  has = driver->HasSchema();
  ASSERT_TRUE(has.ok());
  EXPECT_FALSE(*has);
}

TEST_F(PostgresDriverTest, EnsureSchemaRaceBetweenTwoProcesses) {
  for (int round = 0; round < 5; ++round) {
    side_->Query("DROP SCHEMA IF EXISTS \"migledger\" CASCADE");
    auto a = Open();
    auto b = Open();
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    Status sa, sb;
    std::atomic<bool> go{false};
    std::thread ta([&] {
      while (!go) {
      }
      sa = a->EnsureSchema();
    });
    std::thread tb([&] {
      while (!go) {
      }
      sb = b->EnsureSchema();
    });
    go = true;
    ta.join();
    tb.join();
    EXPECT_TRUE(sa.ok()) << sa.ToString();
    EXPECT_TRUE(sb.ok()) << sb.ToString();
  }
}

TEST_F(PostgresDriverTest, SqlAndMarkerShareOneTransaction) {
  auto driver = Open();
  ASSERT_NE(driver, nullptr);
  ASSERT_TRUE(driver->EnsureSchema().ok());
  const MarkerRow marker{"20240101120000", std::string(64, 'a'), "attempt-1",
                         ""};

  ASSERT_TRUE(driver->Begin().ok());
  SqlError error;
  ASSERT_TRUE(driver->Exec("CREATE TABLE tx_users (id int)", &error).ok());
  ASSERT_TRUE(driver->InsertMarker(marker).ok());
  auto inside = driver->ReadMarkers();
  ASSERT_TRUE(inside.ok());
  EXPECT_EQ(inside->size(), 1u);
  ASSERT_TRUE(driver->Rollback().ok());
  auto markers = driver->ReadMarkers();
  ASSERT_TRUE(markers.ok()) << markers.status().ToString();
  EXPECT_TRUE(markers->empty());
  EXPECT_EQ(side_->Query("SELECT to_regclass('tx_users') IS NULL"), "t");

  ASSERT_TRUE(driver->Begin().ok());
  ASSERT_TRUE(driver->Exec("CREATE TABLE tx_users (id int)", &error).ok());
  ASSERT_TRUE(driver->InsertMarker(marker).ok());
  ASSERT_TRUE(driver->Commit().ok());
  EXPECT_EQ(side_->Query("SELECT to_regclass('tx_users') IS NULL"), "f");
  markers = driver->ReadMarkers();
  ASSERT_TRUE(markers.ok());
  ASSERT_EQ(markers->size(), 1u);
  EXPECT_EQ((*markers)[0].version, marker.version);
  EXPECT_EQ((*markers)[0].checksum, marker.checksum);
  EXPECT_EQ((*markers)[0].attempt_id, marker.attempt_id);
  EXPECT_EQ(Shape((*markers)[0].applied_at), "9999-99-99T99:99:99.999999Z")
      << (*markers)[0].applied_at;

  // A given applied_at is stored and read back in UTC.
  ASSERT_TRUE(driver
                  ->InsertMarker({"20240202000000", "cc", "",
                                  "2024-02-02T01:02:03.5+02:00"})
                  .ok());
  markers = driver->ReadMarkers();
  ASSERT_TRUE(markers.ok());
  ASSERT_EQ(markers->size(), 2u);
  EXPECT_EQ((*markers)[1].applied_at, "2024-02-01T23:02:03.500000Z");

  // A second marker for the same version is drift.
  Status dup = driver->InsertMarker(marker);
  EXPECT_EQ(dup.code(), Code::kDrift) << dup.ToString();

  ASSERT_TRUE(driver->DeleteMarker(marker.version).ok());
  ASSERT_TRUE(driver->DeleteMarker("20240202000000").ok());
  markers = driver->ReadMarkers();
  ASSERT_TRUE(markers.ok());
  EXPECT_TRUE(markers->empty());
}

TEST_F(PostgresDriverTest, TransactionControlMisuse) {
  auto driver = Open();
  ASSERT_NE(driver, nullptr);
  EXPECT_EQ(driver->Commit().code(), Code::kInternal);
  EXPECT_TRUE(driver->Rollback().ok());
  ASSERT_TRUE(driver->Begin().ok());
  EXPECT_EQ(driver->Begin().code(), Code::kInternal);
  ASSERT_TRUE(driver->Rollback().ok());
}

TEST_F(PostgresDriverTest, CommitAfterAnErrorDoesNotPretendToCommit) {
  auto driver = Open();
  ASSERT_NE(driver, nullptr);
  ASSERT_TRUE(driver->Begin().ok());
  SqlError error;
  ASSERT_TRUE(driver->Exec("CREATE TABLE half_done (id int)", &error).ok());
  EXPECT_EQ(driver->Exec("SELECT * FROM no_such_table", &error).code(),
            Code::kMigrationFailed);
  Status commit = driver->Commit();
  EXPECT_EQ(commit.code(), Code::kMigrationFailed) << commit.ToString();
  EXPECT_EQ(side_->Query("SELECT to_regclass('half_done') IS NULL"), "t");
  // The session is usable again.
  EXPECT_TRUE(driver->Exec("SELECT 1", &error).ok());
}

TEST_F(PostgresDriverTest, ErrorFillsSqlstateMessageAndBytePosition) {
  auto driver = Open();
  ASSERT_NE(driver, nullptr);
  // Multi-byte characters before the error: the server counts characters,
  // the driver reports bytes.
  const std::string sql = "SELECT 'ééé€' AS x, FROM nowhere";
  SqlError error;
  Status st = driver->Exec(sql, &error);
  EXPECT_EQ(st.code(), Code::kMigrationFailed);
  EXPECT_EQ(error.sqlstate, "42601");
  EXPECT_NE(error.message.find("syntax error"), std::string::npos)
      << error.message;
  EXPECT_EQ(st.message(), error.message);
  EXPECT_EQ(error.native_code, 0);
  EXPECT_EQ(error.position, static_cast<int>(sql.find("FROM")));

  const std::string missing = "SELECT 'ü' || name FROM missing_table";
  st = driver->Exec(missing, &error);
  EXPECT_EQ(st.code(), Code::kMigrationFailed);
  EXPECT_EQ(error.sqlstate, "42P01");
  EXPECT_EQ(error.position, static_cast<int>(missing.find("missing_table")));

  // Detail and hint.
  ASSERT_TRUE(driver
                  ->Exec("CREATE TABLE uniq (a int PRIMARY KEY); "
                         "INSERT INTO uniq VALUES (1)",
                         &error)
                  .ok());
  st = driver->Exec("INSERT INTO uniq VALUES (1)", &error);
  EXPECT_EQ(error.sqlstate, "23505");
  EXPECT_NE(error.detail.find("(a)=(1)"), std::string::npos) << error.detail;
  EXPECT_EQ(error.position, -1);
  st = driver->Exec("SELECT 'a'::text + 1", &error);
  EXPECT_EQ(error.sqlstate, "42883");
  EXPECT_FALSE(error.hint.empty());

  // End of input: position one past the last byte.
  const std::string truncated = "SELECT 'é' +";
  st = driver->Exec(truncated, &error);
  EXPECT_EQ(error.sqlstate, "42601");
  EXPECT_EQ(error.position, static_cast<int>(truncated.size()));

  // Success clears the error.
  ASSERT_TRUE(driver->Exec("SELECT 1", &error).ok());
  EXPECT_TRUE(error.sqlstate.empty());
  EXPECT_EQ(error.position, -1);
  // A null error pointer is allowed.
  EXPECT_EQ(driver->Exec("SELEC 1", nullptr).code(), Code::kMigrationFailed);
}

TEST_F(PostgresDriverTest, MultiStatementExec) {
  auto driver = Open();
  ASSERT_NE(driver, nullptr);
  SqlError error;
  Status st = driver->Exec(
      "CREATE TABLE multi (a int);\n"
      "INSERT INTO multi VALUES (1);\n"
      "INSERT INTO multi VALUES (2);\n"
      "SELECT count(*) FROM multi;",
      &error);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(side_->Query("SELECT count(*) FROM multi"), "2");

  // The error position is in the whole text, and the server stops there; as
  // one implicit transaction, the statements before it are undone too.
  const std::string sql =
      "INSERT INTO multi VALUES (3);\n"
      "INSERT INTO multi VALUES ('é', bogus_column);\n"
      "INSERT INTO multi VALUES (4);";
  st = driver->Exec(sql, &error);
  EXPECT_EQ(st.code(), Code::kMigrationFailed);
  EXPECT_EQ(error.sqlstate, "42703");
  EXPECT_EQ(error.position, static_cast<int>(sql.find("bogus_column")));
  EXPECT_EQ(side_->Query("SELECT count(*) FROM multi"), "2");

  // Dollar quoting and notices (which must not reach stderr).
  testing::internal::CaptureStderr();
  st = driver->Exec(
      "DO $$ BEGIN RAISE NOTICE 'hello; notice'; RAISE WARNING 'careful'; "
      "END $$; SELECT 1;",
      &error);
  std::string stderr_text = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(stderr_text.find("hello"), std::string::npos) << stderr_text;
  EXPECT_EQ(stderr_text.find("careful"), std::string::npos) << stderr_text;

  // COPY FROM STDIN fails instead of hanging; COPY TO STDOUT is drained.
  st = driver->Exec("COPY multi FROM STDIN", &error);
  EXPECT_EQ(st.code(), Code::kMigrationFailed);
  EXPECT_TRUE(driver->Exec("COPY multi TO STDOUT; SELECT 1", &error).ok());
  EXPECT_TRUE(driver->Exec("SELECT 1", &error).ok());

  // Empty and comment-only text.
  EXPECT_TRUE(driver->Exec("", &error).ok());
  EXPECT_TRUE(driver->Exec("-- nothing", &error).ok());
}

TEST_F(PostgresDriverTest, LostConnectionIsTargetUnavailable) {
  auto driver = Open();
  ASSERT_NE(driver, nullptr);
  SqlError error;
  Status st =
      driver->Exec("SELECT pg_terminate_backend(pg_backend_pid())", &error);
  EXPECT_EQ(st.code(), Code::kTargetUnavailable) << st.ToString();
  EXPECT_EQ(driver->Exec("SELECT 1", &error).code(), Code::kTargetUnavailable);
  EXPECT_EQ(driver->ReadMarkers().status().code(), Code::kTargetUnavailable);
  EXPECT_EQ(driver->Begin().code(), Code::kTargetUnavailable);
}

std::string Bytes(std::initializer_list<int> values) {
  std::string s;
  for (int v : values) s.push_back(static_cast<char>(v));
  return s;
}

MirrorRow Row(uint64_t seq, std::string bytes) {
  MirrorRow row;
  row.target_sequence = seq;
  row.event_bytes = std::move(bytes);
  row.leaf_hash = std::string(32, static_cast<char>(seq));
  row.chain_head = std::string(31, '\xff') + static_cast<char>(seq);
  return row;
}

bool SameRows(const std::vector<MirrorRow>& a,
              const std::vector<MirrorRow>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].target_sequence != b[i].target_sequence ||
        a[i].event_bytes != b[i].event_bytes ||
        a[i].leaf_hash != b[i].leaf_hash ||
        a[i].chain_head != b[i].chain_head) {
      return false;
    }
  }
  return true;
}

TEST_F(PostgresDriverTest, MirrorIsIdempotentAndDetectsForks) {
  auto driver = Open();
  ASSERT_NE(driver, nullptr);
  ASSERT_TRUE(driver->EnsureSchema().ok());
  auto head = driver->MirrorHead();
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(*head, 0u);

  std::vector<MirrorRow> rows = {Row(1, Bytes({0, 1, 2, 0xff, 0})),
                                 Row(2, Bytes({'\\', 'x', 0, 0x80})),
                                 Row(3, "")};
  ASSERT_TRUE(driver->InsertMirrorRows(rows).ok());
  Status again = driver->InsertMirrorRows(rows);
  EXPECT_TRUE(again.ok()) << again.ToString();
  // Overlapping batch: old rows skipped, new one added.
  std::vector<MirrorRow> more = {rows[2], Row(4, "four")};
  ASSERT_TRUE(driver->InsertMirrorRows(more).ok());
  rows.push_back(more[1]);

  auto all = driver->ReadMirror(0);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_TRUE(SameRows(*all, rows));
  auto tail = driver->ReadMirror(2);
  ASSERT_TRUE(tail.ok());
  EXPECT_TRUE(SameRows(*tail, {rows[2], rows[3]}));
  head = driver->MirrorHead();
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(*head, 4u);
  auto none = driver->ReadMirror(UINT64_MAX);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  // A different event at an existing sequence is a fork.
  Status fork = driver->InsertMirrorRows({Row(5, "five"), Row(2, "other")});
  EXPECT_EQ(fork.code(), Code::kDrift) << fork.ToString();
  EXPECT_NE(fork.message().find("mirror fork at target sequence 2"),
            std::string::npos)
      << fork.message();
  // Same bytes, different hash: also a fork.
  MirrorRow odd = rows[0];
  odd.leaf_hash[0] ^= 1;
  EXPECT_EQ(driver->InsertMirrorRows({odd}).code(), Code::kDrift);

  // Many rows in one call (more than one statement's worth).
  side_->Query("DELETE FROM migledger.events");
  std::vector<MirrorRow> many;
  for (uint64_t s = 1; s <= 1234; ++s) {
    many.push_back(Row(s, "event-" + std::to_string(s)));
  }
  ASSERT_TRUE(driver->InsertMirrorRows(many).ok());
  ASSERT_TRUE(driver->InsertMirrorRows(many).ok());
  head = driver->MirrorHead();
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(*head, 1234u);
  all = driver->ReadMirror(0);
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(SameRows(*all, many));
  many[1000].event_bytes = "changed";
  fork = driver->InsertMirrorRows(many);
  EXPECT_EQ(fork.code(), Code::kDrift);
  EXPECT_NE(fork.message().find("target sequence 1001"), std::string::npos)
      << fork.message();
}

TEST_F(PostgresDriverTest, LockIsExclusiveAndFreedWhenTheHolderGoes) {
  auto first = Open();
  auto second = Open();
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(first->Lock(milliseconds(1000)).ok());
  EXPECT_TRUE(first->Lock(milliseconds(0)).ok());  // already held
  // The schema lock is a different key: no self-deadlock.
  ASSERT_TRUE(first->EnsureSchema().ok());

  auto start = std::chrono::steady_clock::now();
  Status busy = second->Lock(milliseconds(300));
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(busy.code(), Code::kLedgerBusy) << busy.ToString();
  EXPECT_NE(busy.message().find("another migledger process holds the lock"),
            std::string::npos);
  EXPECT_NE(busy.message().find(second->identity().redacted_uri),
            std::string::npos);
  EXPECT_NE(busy.message().find("300 ms"), std::string::npos);
  EXPECT_GE(waited, milliseconds(300));
  EXPECT_LT(waited, milliseconds(3000));
  // The second driver's work session still works.
  SqlError error;
  EXPECT_TRUE(second->Exec("SELECT 1", &error).ok());

  // Unlock + relock.
  first->Unlock();
  ASSERT_TRUE(second->Lock(milliseconds(2000)).ok());
  EXPECT_EQ(first->Lock(milliseconds(0)).code(), Code::kLedgerBusy);
  second->Unlock();
  ASSERT_TRUE(first->Lock(milliseconds(2000)).ok());

  // The holder goes away without Unlock: the server frees the lock.
  first.reset();
  Status taken = second->Lock(milliseconds(5000));
  EXPECT_TRUE(taken.ok()) << taken.ToString();
  second->Unlock();
  second->Unlock();  // idempotent
}

TEST_F(PostgresDriverTest, WrongPasswordIsTargetUnavailableAndNotEchoed) {
  const std::string password = "wrong-pw-Zq9";
  // In the URI.
  auto driver = OpenPostgresDriver(UriWithPassword(password));
  ASSERT_FALSE(driver.ok());
  EXPECT_EQ(driver.status().code(), Code::kTargetUnavailable);
  EXPECT_EQ(driver.status().message().find(password), std::string::npos)
      << driver.status().message();
  EXPECT_NE(driver.status().message().find("cannot connect to"),
            std::string::npos)
      << driver.status().message();
  EXPECT_NE(driver.status().message().find("password authentication failed"),
            std::string::npos)
      << driver.status().message();

  // In key=value form.
  driver = OpenPostgresDriver(WithDatabase(TestUri(), *db_name_, &password));
  ASSERT_FALSE(driver.ok());
  EXPECT_EQ(driver.status().code(), Code::kTargetUnavailable);
  EXPECT_EQ(driver.status().message().find(password), std::string::npos)
      << driver.status().message();

  // From PGPASSWORD.
  {
    ScopedEnv env("PGPASSWORD", password.c_str());
    driver = OpenPostgresDriver(TestUri());
    ASSERT_FALSE(driver.ok());
    EXPECT_EQ(driver.status().code(), Code::kTargetUnavailable);
    EXPECT_EQ(driver.status().message().find(password), std::string::npos)
        << driver.status().message();
  }

  // The right password in the URI works and is not in the identity.
  const char* right = std::getenv("PGTEST_PASSWORD");
  ASSERT_NE(right, nullptr);
  {
    ScopedEnv env("PGPASSWORD", nullptr);
    auto ok = OpenPostgresDriver(UriWithPassword(right));
    ASSERT_TRUE(ok.ok()) << ok.status().ToString();
    EXPECT_EQ((*ok)->identity().redacted_uri.find(right), std::string::npos);
    EXPECT_EQ((*ok)->identity().redacted_uri, TestUri());
    // Errors from a session opened with a password do not echo it either.
    SqlError error;
    Status st = (*ok)->Exec(std::string("SELECT '") + right + "'::int", &error);
    EXPECT_EQ(st.code(), Code::kMigrationFailed);
    EXPECT_EQ(st.message().find(right), std::string::npos) << st.message();
  }
}

TEST_F(PostgresDriverTest, UnreachableServerIsTargetUnavailable) {
  // Port 1 on 127.0.0.1: refused at once.
  auto driver = OpenPostgresDriver(
      "postgresql://u:topsecret@127.0.0.1:1/db?connect_timeout=3");
  ASSERT_FALSE(driver.ok());
  EXPECT_EQ(driver.status().code(), Code::kTargetUnavailable);
  EXPECT_NE(driver.status().message().find(
                "cannot connect to postgresql://u@127.0.0.1:1/db"),
            std::string::npos)
      << driver.status().message();
  EXPECT_EQ(driver.status().message().find("topsecret"), std::string::npos);

  auto bad = OpenPostgresDriver("postgresql://u:topsecret@host/db?nosuch=1");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kInvalidInput);
  EXPECT_EQ(bad.status().message().find("topsecret"), std::string::npos)
      << bad.status().message();
}

TEST_F(PostgresDriverTest, InvalidIndexesAreListedQuoted) {
  auto driver = Open();
  ASSERT_NE(driver, nullptr);
  auto before = driver->InvalidIndexes();
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  EXPECT_TRUE(before->empty());
  SqlError error;
  ASSERT_TRUE(driver
                  ->Exec("CREATE SCHEMA \"Odd Schema\"; "
                         "CREATE TABLE \"Odd Schema\".dup (a int); "
                         "INSERT INTO \"Odd Schema\".dup VALUES (1), (1)",
                         &error)
                  .ok());
  // CONCURRENTLY must run alone, outside a transaction; it fails on the
  // duplicate and leaves an invalid index behind.
  Status st = driver->Exec(
      "CREATE UNIQUE INDEX CONCURRENTLY \"Odd Idx\" ON \"Odd Schema\".dup (a)",
      &error);
  EXPECT_EQ(st.code(), Code::kMigrationFailed);
  EXPECT_EQ(error.sqlstate, "23505");
  auto after = driver->InvalidIndexes();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, std::vector<std::string>{"\"Odd Schema\".\"Odd Idx\""});
  ASSERT_TRUE(driver->Exec("DROP SCHEMA \"Odd Schema\" CASCADE", &error).ok());
}

}  // namespace
}  // namespace migledger
