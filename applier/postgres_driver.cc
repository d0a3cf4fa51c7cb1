#include "applier/postgres_driver.h"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <future>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "applier/conninfo.h"
#include "applier/create_index_statement.h"
#include "applier/libpq_loader.h"
#include "applier/libpq_result.h"
#include "applier/libpq_secrets.h"
#include "applier/search_path.h"
#include "common/crash_points.h"
#include "common/interrupt.h"
#include "common/sha256.h"

namespace migledger {
namespace {

// Converts PostgreSQL's 1-based character position in `sql` to a 0-based
// byte offset. `utf8` is false when the server counts bytes (SQL_ASCII).
int PositionToByteOffset(const std::string& sql, int position, bool utf8) {
  if (position <= 0) return -1;
  size_t chars_to_skip = static_cast<size_t>(position - 1);
  if (!utf8) {
    return chars_to_skip <= sql.size() ? static_cast<int>(chars_to_skip) : -1;
  }
  size_t i = 0;
  while (chars_to_skip > 0) {
    if (i >= sql.size()) return -1;
    ++i;  // the lead byte
    while (i < sql.size() &&
           (static_cast<unsigned char>(sql[i]) & 0xC0) == 0x80) {
      ++i;
    }
    --chars_to_skip;
  }
  return static_cast<int>(i);
}

bool ParseUint64(std::string_view s, uint64_t* out) {
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

uint64_t DecodeBigEndian64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string HexPrefix(const std::string& bytes, size_t n = 8) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes.size() && i < n; ++i) {
    out.push_back(kHex[static_cast<unsigned char>(bytes[i]) >> 4]);
    out.push_back(kHex[static_cast<unsigned char>(bytes[i]) & 0xF]);
  }
  return out;
}

constexpr int64_t kMaxSequence = INT64_MAX;
// Rows per INSERT statement for the mirror (4 parameters each; the protocol
// allows 65535 parameters).
constexpr size_t kMirrorRowsPerStatement = 500;

// A query parameter: text unless `binary`.
struct Param {
  std::string value;
  bool binary = false;
  bool null = false;
};

// ---------------------------------------------------------------------------
// The driver

class PostgresDriver final : public Driver {
 public:
  explicit PostgresDriver(std::string conninfo)
      : conninfo_(std::move(conninfo)), secrets_(conninfo_) {}

  ~PostgresDriver() override {
    if (pending_lock_session_.valid()) {
      Session unused = pending_lock_session_.get();
      if (unused.conn != nullptr) PQfinish(unused.conn);
    }
    Unlock();
    canceller_.reset();  // before what it cancels goes
    if (cancel_ != nullptr) PQfreeCancel(cancel_);
    if (conn_ != nullptr) PQfinish(conn_);
  }

  PostgresDriver(const PostgresDriver&) = delete;
  PostgresDriver& operator=(const PostgresDriver&) = delete;

  // Connects the work session and reads the identity.
  Status Init() {
    identity_.kind = "postgres";
    identity_.redacted_uri = RedactConninfo(conninfo_);
    std::string search_path;
    auto conn = Connect(&search_path);
    if (!conn.ok()) return conn.status();
    conn_ = *conn;
    // Ctrl-C sends the server a cancel request for the running statement
    // (common/interrupt.h).
    cancel_ = PQgetCancel(conn_);
    if (cancel_ != nullptr) {
      canceller_.emplace(
          [](void* cancel) {
            char error[256];
            (void)PQcancel(static_cast<PGcancel*>(cancel), error, sizeof error);
          },
          cancel_);
    }
    MakeSessionSetupReset(search_path);

    const char* encoding = PQparameterStatus(conn_, "server_encoding");
    server_counts_bytes_ =
        encoding != nullptr && std::strcmp(encoding, "SQL_ASCII") == 0;

    auto res = Run(
        "reading the target's identity",
        "SELECT (SELECT system_identifier FROM pg_catalog.pg_control_system())"
        "::text, pg_catalog.current_database(), "
        "pg_catalog.current_setting('server_version'), "
        "pg_catalog.to_regclass('\"migledger\".\"identity\"') IS NOT NULL",
        {}, false, Code::kTargetUnavailable);
    if (!res.ok()) return res.status();
    PGresult* r = res->get();
    if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0)) {
      return TargetUnavailable("cannot read the system identifier of " +
                               Target());
    }
    identity_.database_name = PQgetvalue(r, 0, 1);
    identity_.database_id =
        std::string(PQgetvalue(r, 0, 0)) + "/" + identity_.database_name;
    if (std::strcmp(PQgetvalue(r, 0, 3), "t") == 0) {
      // An id of its own, taken by `resolve --new-identity` (AdoptIdentity):
      // only for this very database. A TEMPLATE clone (another name) or a
      // dump loaded into another cluster (another system identifier) copies
      // the row but is not that database, and keeps its own default id.
      auto own = Run("reading the target's identity",
                     "SELECT \"database_id\" FROM \"migledger\".\"identity\" "
                     "WHERE \"database_name\" = "
                     "pg_catalog.current_database()",
                     {}, false, Code::kTargetUnavailable);
      if (!own.ok()) return own.status();
      if (PQntuples(own->get()) == 1) {
        const std::string id = PQgetvalue(own->get(), 0, 0);
        if (id.rfind(identity_.database_id + "/", 0) == 0)
          identity_.database_id = id;
      }
    }
    // "15.18 (Debian 15.18-0+deb12u1)" -> "15.18"
    std::string version = PQgetvalue(r, 0, 2);
    size_t space = version.find(' ');
    if (space != std::string::npos) version.resize(space);
    identity_.server_version = version;
    return Status::Ok();
  }

  SqlDialect dialect() const override { return SqlDialect::kPostgres; }

  // Opens the lock session on a helper thread (a backend start costs the
  // server a few ms), so it overlaps the caller's other work; Lock() joins.
  void BeginLock() override {
    if (lock_conn_ != nullptr || pending_lock_session_.valid()) return;
    pending_lock_session_ =
        std::async(std::launch::async, ConnectSession, conninfo_);
  }
  const TargetIdentity& identity() const override { return identity_; }

  Status Lock(std::chrono::milliseconds timeout) override {
    if (lock_held_) return Status::Ok();
    if (lock_conn_ == nullptr && pending_lock_session_.valid()) {
      auto conn = Adopt(pending_lock_session_.get());
      if (!conn.ok()) return conn.status();
      lock_conn_ = *conn;
    }
    if (lock_conn_ == nullptr) {
      auto conn = Connect();
      if (!conn.ok()) return conn.status();
      lock_conn_ = *conn;
    }
    const std::string sql = "SELECT pg_catalog.pg_try_advisory_lock(" +
                            std::to_string(kPostgresApplierLockKey) + ")";
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      PgResult res(PQexec(lock_conn_, sql.c_str()));
      if (PQresultStatus(res.get()) != PGRES_TUPLES_OK ||
          PQntuples(res.get()) != 1) {
        Status st =
            PQstatus(lock_conn_) == CONNECTION_BAD
                ? TargetUnavailable(
                      "lost the lock session to " + Target() + ": " +
                      Scrub(PrimaryMessage(res.get(), lock_conn_)))
                : TargetUnavailable(
                      "cannot take the migledger lock on " + Target() + ": " +
                      Scrub(PrimaryMessage(res.get(), lock_conn_)));
        CloseLockSession();
        return st;
      }
      if (std::strcmp(PQgetvalue(res.get(), 0, 0), "t") == 0) {
        lock_held_ = true;
        Status st = WaitForEarlierSessions(deadline);
        if (!st.ok()) Unlock();
        return st;
      }
      auto now = std::chrono::steady_clock::now();
      if (now >= deadline) break;
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
          std::chrono::milliseconds(50), deadline - now));
    }
    CloseLockSession();
    return LedgerBusy("another migledger process holds the lock on target " +
                      Target() + "; gave up after " +
                      std::to_string(timeout.count()) + " ms");
  }

  // The applier lock as pg_locks shows a bigint advisory key: its high and
  // low 32 bits in classid and objid, objsubid 1.
  bool LockHeldElsewhere() override {
    const uint64_t key = static_cast<uint64_t>(kPostgresApplierLockKey);
    auto res = Run("probing the migledger lock",
                   "SELECT pg_catalog.count(*)::text FROM pg_catalog.pg_locks "
                   "WHERE locktype = 'advisory' AND granted "
                   "AND objsubid = 1 AND classid::bigint = $1::bigint "
                   "AND objid::bigint = $2::bigint AND database = "
                   "(SELECT oid FROM pg_catalog.pg_database "
                   "WHERE datname = pg_catalog.current_database()) "
                   "AND pid <> pg_catalog.pg_backend_pid()",
                   {Param{std::to_string(key >> 32)},
                    Param{std::to_string(key & 0xffffffffu)}},
                   false, Code::kTargetUnavailable);
    return res.ok() && PQntuples(res->get()) == 1 &&
           std::strcmp(PQgetvalue(res->get(), 0, 0), "0") != 0;
  }

  // Holding the lock, waits until deadline for sessions of another
  // migledger on this database that are not idle: only a killed applier's
  // can be, and its statement may yet commit a step or finish an index.
  Status WaitForEarlierSessions(
      std::chrono::steady_clock::time_point deadline) {
    const std::string lock_pid = std::to_string(PQbackendPID(lock_conn_));
    bool told = false;
    for (;;) {
      auto res =
          Run("looking for sessions of a killed migledger",
              "SELECT pid::text, pg_catalog.to_char(query_start AT TIME ZONE "
              "'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
              "FROM pg_catalog.pg_stat_activity "
              "WHERE datname = pg_catalog.current_database() "
              "AND application_name = 'migledger' AND state <> 'idle' "
              "AND pid <> pg_catalog.pg_backend_pid() AND pid <> $1::integer "
              "ORDER BY query_start, pid LIMIT 1",
              {Param{lock_pid}}, false, Code::kTargetUnavailable);
      if (!res.ok()) return res.status();
      if (PQntuples(res->get()) == 0) return Status::Ok();
      const std::string pid = PQgetvalue(res->get(), 0, 0);
      const std::string since = PQgetvalue(res->get(), 0, 1);
      if (std::chrono::steady_clock::now() >= deadline) {
        return LedgerBusy(
            "a session of a killed migledger is still running a statement "
            "on " +
            Target() + " (server session " + pid + ", since " + since +
            "): run the command again once it has finished, or end it first "
            "with SELECT pg_cancel_backend(" +
            pid + ")");
      }
      if (!told) {
        spdlog::warn(
            "waiting for server session {} of a killed migledger, still "
            "running a statement since {}",
            pid, since);
        told = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  void Unlock() override {
    if (lock_conn_ == nullptr) return;
    if (lock_held_ && PQstatus(lock_conn_) == CONNECTION_OK) {
      const std::string sql = "SELECT pg_catalog.pg_advisory_unlock(" +
                              std::to_string(kPostgresApplierLockKey) + ")";
      PgResult res(PQexec(lock_conn_, sql.c_str()));
      // Closing the session below frees the lock in any case.
    }
    CloseLockSession();
  }

  Status EnsureSchema() override {
    // Fast path without side effects (and without needing CREATE rights)
    // when everything is there.
    {
      auto res =
          Run("checking the migledger schema",
              "SELECT pg_catalog.to_regclass('\"migledger\".\"applied\"')"
              " IS NOT NULL AND pg_catalog.to_regclass("
              "'\"migledger\".\"events\"') IS NOT NULL",
              {}, false, Code::kTargetUnavailable);
      if (!res.ok()) return res.status();
      if (std::strcmp(PQgetvalue(res->get(), 0, 0), "t") == 0) {
        return Status::Ok();
      }
    }
    const std::string body =
        "SELECT pg_catalog.pg_advisory_xact_lock(" +
        std::to_string(kPostgresSchemaLockKey) +
        ");\n"
        "CREATE SCHEMA IF NOT EXISTS \"migledger\";\n"
        "CREATE TABLE IF NOT EXISTS \"migledger\".\"applied\" (\n"
        "  \"version\" text PRIMARY KEY,\n"
        "  \"checksum\" text NOT NULL,\n"
        "  \"attempt_id\" text NOT NULL,\n"
        "  \"applied_at\" timestamptz NOT NULL DEFAULT now()\n"
        ");\n"
        "CREATE TABLE IF NOT EXISTS \"migledger\".\"events\" (\n"
        "  \"target_sequence\" bigint PRIMARY KEY,\n"
        "  \"event_bytes\" bytea NOT NULL,\n"
        "  \"leaf_hash\" bytea NOT NULL,\n"
        "  \"chain_head\" bytea NOT NULL\n"
        ");\n";
    // Own transaction when none is open; inside the caller's otherwise.
    const bool own = PQtransactionStatus(conn_) == PQTRANS_IDLE;
    const std::string sql = own ? "BEGIN;\n" + body + "COMMIT;" : body;
    PgResult res(PQexec(conn_, sql.c_str()));
    ExecStatusType st = PQresultStatus(res.get());
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
      return Status::Ok();
    }
    if (PQstatus(conn_) == CONNECTION_BAD) {
      return LostConnection("creating the migledger schema", res.get());
    }
    std::string message = Scrub(PrimaryMessage(res.get(), conn_));
    if (own && PQtransactionStatus(conn_) != PQTRANS_IDLE) {
      PgResult rb(PQexec(conn_, "ROLLBACK"));
    }
    return TargetUnavailable("cannot create the migledger schema on " +
                             Target() + ": " + message);
  }

  StatusOr<bool> HasSchema() override {
    auto res = Run("checking the migledger schema",
                   "SELECT pg_catalog.to_regclass('\"migledger\".\"applied\"') "
                   "IS NOT NULL",
                   {}, false, Code::kTargetUnavailable);
    if (!res.ok()) return res.status();
    return std::strcmp(PQgetvalue(res->get(), 0, 0), "t") == 0;
  }

  Status Begin() override {
    PGTransactionStatusType ts = PQtransactionStatus(conn_);
    if (ts == PQTRANS_UNKNOWN) return LostConnection("BEGIN", nullptr);
    if (ts != PQTRANS_IDLE) {
      return Internal("Begin: a transaction is already open on " + Target());
    }
    MIGLEDGER_RETURN_IF_ERROR(ResetIfPending());
    if (!migration_state_) return Simple("BEGIN");
    // Between a no-transaction migration's statements (the mirror rows that
    // acknowledge them): migledger's own transaction, read-write and as its
    // own role whatever the migration set for the session, which keeps the
    // rest of what it set.
    MIGLEDGER_RETURN_IF_ERROR(Simple(
        (std::string("BEGIN READ WRITE; ") + kToolRoleForTransaction).c_str()));
    tool_role_in_transaction_ = true;
    return Status::Ok();
  }

  bool InTransaction() override {
    const PGTransactionStatusType ts = PQtransactionStatus(conn_);
    return ts != PQTRANS_IDLE && ts != PQTRANS_UNKNOWN;
  }

  Status Commit() override {
    tool_role_in_transaction_ = false;
    switch (PQtransactionStatus(conn_)) {
      case PQTRANS_UNKNOWN:
        return LostConnection("COMMIT", nullptr);
      case PQTRANS_IDLE:
        return Internal("Commit: no transaction is open on " + Target());
      case PQTRANS_INERROR: {
        // COMMIT would silently roll back; say so instead.
        Status rb = Simple("ROLLBACK");
        if (!rb.ok()) return rb;
        return MigrationFailed(
            "the transaction on " + Target() +
            " was aborted by an earlier error; rolled back instead of "
            "committing");
      }
      default:
        break;
    }
    // PQexec, with a crash point between sending COMMIT and reading its
    // answer (the server may die there: then the outcome is unknown).
    if (PQsendQuery(conn_, "COMMIT") == 0) {
      if (PQstatus(conn_) == CONNECTION_BAD)
        return LostConnection("COMMIT", nullptr);
      return Internal("cannot send COMMIT to " + Target() + ": " +
                      Scrub(LibpqMessage(PQerrorMessage(conn_))));
    }
    CrashPoint("postgres.commit_sent");
    PgResult res;
    while (PGresult* raw = PQgetResult(conn_)) res.reset(raw);
    if (PQresultStatus(res.get()) != PGRES_COMMAND_OK) {
      if (SessionLost(res.get())) {
        return LostConnection("COMMIT", res.get());
      }
      return MigrationFailed("COMMIT failed on " + Target() + ": " +
                             Scrub(PrimaryMessage(res.get(), conn_)));
    }
    if (std::strcmp(PQcmdStatus(res.get()), "COMMIT") != 0) {
      return MigrationFailed("COMMIT on " + Target() + " ended in " +
                             PQcmdStatus(res.get()));
    }
    return Status::Ok();
  }

  Status Rollback() override {
    tool_role_in_transaction_ = false;
    PGTransactionStatusType ts = PQtransactionStatus(conn_);
    if (ts == PQTRANS_IDLE) return Status::Ok();
    if (ts == PQTRANS_UNKNOWN) return LostConnection("ROLLBACK", nullptr);
    return Simple("ROLLBACK");
  }

  void StepDone() override { reset_pending_ = true; }

  // The reset StepDone() asked for, before the session runs anything else
  // outside a transaction (ExecStep sends it with the step instead).
  Status ResetIfPending() {
    if (!reset_pending_ || PQtransactionStatus(conn_) != PQTRANS_IDLE)
      return Status::Ok();
    reset_pending_ = false;
    SqlError error;
    int results = 0;
    Status st = Exec(SessionReset(&results), &error);
    if (st.ok()) migration_state_ = false;
    return st.code() == Code::kMigrationFailed ? ResetFailed(error.message)
                                               : st;
  }

  Status ResetFailed(const std::string& message) {
    return TargetUnavailable(
        "cannot reset the session on " + Target() +
        " after a migration changed its settings: " + message);
  }

  Status Exec(const std::string& sql, SqlError* error) override {
    if (error != nullptr) *error = SqlError{};
    MIGLEDGER_RETURN_IF_ERROR(ResetIfPending());
    migration_state_ = true;
    if (PQsendQuery(conn_, sql.c_str()) == 0) {
      if (PQstatus(conn_) == CONNECTION_BAD) {
        return LostConnection("sending a statement", nullptr);
      }
      return Internal("cannot send a statement to " + Target() + ": " +
                      Scrub(LibpqMessage(PQerrorMessage(conn_))));
    }
    CrashPoint("postgres.statement_sent");
    // A simple query may hold several statements: one result each, and the
    // server stops at the first error.
    PgResult failed = DrainResults(nullptr);
    if (SessionLost(failed.get())) {
      if (error != nullptr && failed) FillSqlError(sql, failed.get(), error);
      return LostConnection("running a statement", failed.get());
    }
    if (!failed) return Status::Ok();
    SqlError local;
    SqlError* e = error != nullptr ? error : &local;
    FillSqlError(sql, failed.get(), e);
    return MigrationFailed(e->message);
  }

  // BEGIN, the statements and the marker row as one simple query: the
  // server runs them in order and stops at the first error, and libpq hands
  // back one result per statement, so the failing one is known by count.
  Status ExecStep(const StepBatch& batch, StepBatchFailure* failure) override {
    *failure = StepBatchFailure{};
    if (PQtransactionStatus(conn_) != PQTRANS_IDLE) {
      return Internal("ExecStep: a transaction is already open on " + Target());
    }
    // After an earlier step: the session's settings reset first, in the
    // same round trip.
    int reset_results = 0;
    std::string sql =
        reset_pending_ ? SessionReset(&reset_results) + "\n" : std::string();
    const int reset_end = static_cast<int>(sql.size());
    reset_pending_ = false;
    sql += "BEGIN;\n";
    std::vector<size_t> offsets;  // of each statement inside `sql`
    static const std::vector<SqlStatement> kNone;
    const std::vector<SqlStatement>& statements =
        batch.statements ? *batch.statements : kNone;
    offsets.reserve(statements.size());
    for (const SqlStatement& statement : statements) {
      const std::string& text = statement.text;
      offsets.push_back(sql.size());
      // The newline ends a trailing -- comment; an empty statement (";;")
      // is skipped by the server and yields no result.
      sql += text;
      sql += "\n;\n";
    }
    const size_t statements_end = sql.size();
    // The bookkeeping runs as the tool's own role whatever role the
    // migration took (SET ROLE app_owner is the usual way to give the
    // application's role what a migration creates), for this transaction
    // only: LOCAL, so a no-transaction file's session keeps its role.
    int switch_results = 0;
    if (!statements.empty() || (migration_state_ && reset_results == 0)) {
      sql += kToolRoleForTransaction;
      switch_results = kToolRoleForTransactionResults;
    }
    if (batch.insert_marker) {
      const MarkerRow& m = *batch.insert_marker;
      sql +=
          "INSERT INTO \"migledger\".\"applied\" (\"version\", \"checksum\", "
          "\"attempt_id\", \"applied_at\") VALUES (" +
          Literal(m.version) + ", " + Literal(m.checksum) + ", " +
          Literal(m.attempt_id) + ", " +
          (m.applied_at.empty() ? std::string("now()")
                                : Literal(m.applied_at) + "::timestamptz") +
          ");";
    } else if (!batch.delete_marker.empty()) {
      sql += "DELETE FROM \"migledger\".\"applied\" WHERE \"version\" = " +
             Literal(batch.delete_marker) + ";";
    }
    if (PQsendQuery(conn_, sql.c_str()) == 0) {
      if (PQstatus(conn_) == CONNECTION_BAD)
        return LostConnection("sending a step", nullptr);
      return Internal("cannot send a step to " + Target() + ": " +
                      Scrub(LibpqMessage(PQerrorMessage(conn_))));
    }
    int done = 0;  // results before the first error: BEGIN, statements...
    PgResult failed = DrainResults(&done);
    tool_role_in_transaction_ = !failed && switch_results > 0;
    if (!failed && reset_results > 0) migration_state_ = false;
    if (!statements.empty()) migration_state_ = true;
    // The reset is part of the query's transaction: undone if it failed.
    if (failed && reset_results > 0) reset_pending_ = true;
    if (failed && done < reset_results && PQstatus(conn_) != CONNECTION_BAD) {
      // Nothing of the step ran: the reset itself failed, or the server
      // found a syntax error in the step before running any of the query.
      FillSqlError(sql, failed.get(), &failure->error);
      if (failure->error.position < reset_end) {
        (void)Rollback();
        return ResetFailed(failure->error.message);
      }
      done = reset_results;
    }
    done -= reset_results;
    const int n = static_cast<int>(statements.size());
    // done == 0: BEGIN failed; 1..n: statement done-1 failed; then the role
    // switch, then the marker.
    failure->statement_index = done >= 1 && done <= n ? done - 1 : -1;
    const bool bookkeeping_failed = done > n;
    if (SessionLost(failed.get())) {
      return LostConnection("running a step", failed.get());
    }
    if (!failed) return Status::Ok();
    FillSqlError(sql, failed.get(), &failure->error);
    // The server parses the whole query before it runs any of it, so a
    // syntax error comes before any result: its position (counted from the
    // start of the whole query) names the statement then.
    int& pos = failure->error.position;
    if (pos >= 0) {
      failure->statement_index = -1;
      for (int i = 0; i < n; ++i) {
        const int begin = static_cast<int>(offsets[i]);
        const int end =
            static_cast<int>(i + 1 < n ? offsets[i + 1] : statements_end);
        const int len = static_cast<int>(statements[i].text.size());
        if (pos >= begin && pos < end) {
          failure->statement_index = i;
          pos = std::min(pos - begin, std::max(0, len - 1));
          break;
        }
      }
      if (failure->statement_index < 0) pos = -1;
    }
    const std::string sqlstate = failure->error.sqlstate;
    (void)Rollback();
    const bool marker_failed = done == n + 1 + switch_results;
    if (failure->statement_index < 0 && marker_failed && batch.insert_marker &&
        sqlstate == "23505") {
      return Drift("a marker for version " + batch.insert_marker->version +
                   " already exists in migledger.applied on " + Target());
    }
    if (bookkeeping_failed && failure->statement_index < 0) {
      // read_only_sql_transaction: a transaction made read-only cannot take
      // the marker row that records it. Name the statement that did it.
      const int read_only =
          sqlstate == "25006" ? ReadOnlyStatement(statements) : -1;
      if (read_only >= 0) {
        failure->statement_index = read_only;
        failure->error.position = -1;
        failure->error.message =
            "the migration makes its own transaction read-only, so migledger "
            "cannot write the marker row that records it in that "
            "transaction: remove this statement (a migration runs in a "
            "read-write transaction, even one that only checks something)";
        return MigrationFailed(failure->error.message);
      }
      failure->error.message =
          "migledger could not write its own bookkeeping (" +
          std::string(batch.insert_marker ? "the marker row"
                                          : "the removal of the marker row") +
          " in migledger.applied) on " + Target() + ": " +
          failure->error.message;
    }
    return MigrationFailed(failure->error.message);
  }

  // The mirror rows and COMMIT as one simple query: an error in the INSERT
  // (a row that exists already, say) makes the server skip the COMMIT.
  Status CommitWithMirrorRows(const std::vector<MirrorRow>& rows) override {
    if (rows.empty() || rows.size() > kMirrorRowsPerStatement) {
      if (!rows.empty() && !tool_role_in_transaction_ && migration_state_ &&
          PQtransactionStatus(conn_) == PQTRANS_INTRANS) {
        Status st = Simple(kToolRoleForTransaction);
        if (!st.ok()) {
          (void)Rollback();
          return st;
        }
      }
      tool_role_in_transaction_ = false;
      return Driver::CommitWithMirrorRows(rows);
    }
    if (PQtransactionStatus(conn_) != PQTRANS_INTRANS) {
      return Driver::CommitWithMirrorRows(rows);  // reports the state
    }
    std::string sql =
        "INSERT INTO \"migledger\".\"events\" (\"target_sequence\", "
        "\"event_bytes\", "
        "\"leaf_hash\", \"chain_head\") VALUES ";
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i].target_sequence > static_cast<uint64_t>(kMaxSequence)) {
        (void)Rollback();
        return InvalidInput("target sequence " +
                            std::to_string(rows[i].target_sequence) +
                            " does not fit the mirror's bigint column");
      }
      if (i > 0) sql += ", ";
      sql += "(" + std::to_string(rows[i].target_sequence) + ", " +
             ByteaLiteral(rows[i].event_bytes) + ", " +
             ByteaLiteral(rows[i].leaf_hash) + ", " +
             ByteaLiteral(rows[i].chain_head) + ")";
    }
    sql += ";\nCOMMIT;";
    if (!tool_role_in_transaction_ && migration_state_) {
      sql.insert(0, kToolRoleForTransaction);
    }
    tool_role_in_transaction_ = false;
    if (PQsendQuery(conn_, sql.c_str()) == 0) {
      if (PQstatus(conn_) == CONNECTION_BAD)
        return LostConnection("COMMIT", nullptr);
      (void)Rollback();
      return Internal("cannot send COMMIT to " + Target() + ": " +
                      Scrub(LibpqMessage(PQerrorMessage(conn_))));
    }
    CrashPoint("postgres.commit_sent");
    PgResult failed;
    std::string last_tag;
    while (PGresult* raw = PQgetResult(conn_)) {
      PgResult res(raw);
      ExecStatusType st = PQresultStatus(raw);
      if (st == PGRES_COMMAND_OK) {
        last_tag = PQcmdStatus(raw);
      } else if (!failed) {
        failed = std::move(res);
      }
      if (PQstatus(conn_) == CONNECTION_BAD) break;
    }
    if (SessionLost(failed.get()))
      return LostConnection("COMMIT", failed.get());
    if (failed) {
      std::string sqlstate = ErrorField(failed.get(), PG_DIAG_SQLSTATE);
      std::string message = Scrub(PrimaryMessage(failed.get(), conn_));
      (void)Rollback();
      if (sqlstate == "23505") {
        return Drift("the event mirror of " + Target() +
                     " already holds target sequence " +
                     std::to_string(rows.front().target_sequence) +
                     " or a later one: another migledger wrote to it; nothing "
                     "was committed");
      }
      if (sqlstate == "25006") {  // read_only_sql_transaction
        return MigrationFailed(
            "the transaction is read-only (SET TRANSACTION READ ONLY, BEGIN "
            "READ ONLY), so migledger cannot record what it did in it: make "
            "it read-write; nothing was committed");
      }
      return MigrationFailed("writing migledger.events and COMMIT on " +
                             Target() + ": " + message);
    }
    if (last_tag != "COMMIT") {
      return MigrationFailed("COMMIT on " + Target() + " ended in " + last_tag);
    }
    return Status::Ok();
  }

  StatusOr<std::vector<MarkerRow>> ReadMarkers() override {
    auto res = Run("reading migledger.applied",
                   "SELECT \"version\", \"checksum\", \"attempt_id\", "
                   "pg_catalog.to_char(\"applied_at\" AT TIME ZONE 'UTC', "
                   "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
                   "FROM \"migledger\".\"applied\" "
                   "ORDER BY \"version\" COLLATE \"C\"",
                   {}, false, Code::kTargetUnavailable);
    if (!res.ok()) return res.status();
    PGresult* r = res->get();
    std::vector<MarkerRow> rows;
    rows.reserve(PQntuples(r));
    for (int i = 0; i < PQntuples(r); ++i) {
      rows.push_back(MarkerRow{PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                               PQgetvalue(r, i, 2), PQgetvalue(r, i, 3)});
    }
    return rows;
  }

  Status InsertMarker(const MarkerRow& row) override {
    std::string sqlstate;
    auto res =
        Run("writing the marker for version " + row.version,
            "INSERT INTO \"migledger\".\"applied\" "
            "(\"version\", \"checksum\", \"attempt_id\", \"applied_at\") "
            "VALUES ($1, $2, $3, "
            "COALESCE(NULLIF($4::text, '')::timestamptz, now()))",
            {{row.version}, {row.checksum}, {row.attempt_id}, {row.applied_at}},
            false, Code::kMigrationFailed, &sqlstate);
    if (!res.ok()) {
      if (sqlstate == "23505") {
        return Drift("a marker for version " + row.version +
                     " already exists in migledger.applied on " + Target());
      }
      return res.status();
    }
    return Status::Ok();
  }

  Status DeleteMarker(const std::string& version) override {
    auto res = Run("deleting the marker for version " + version,
                   "DELETE FROM \"migledger\".\"applied\" WHERE \"version\" = "
                   "$1",
                   {{version}}, false, Code::kMigrationFailed);
    return res.ok() ? Status::Ok() : res.status();
  }

  Status InsertMirrorRows(const std::vector<MirrorRow>& input) override {
    // Validate and drop exact duplicates within the batch.
    std::map<uint64_t, const MirrorRow*> by_sequence;
    for (const MirrorRow& row : input) {
      if (row.target_sequence > static_cast<uint64_t>(kMaxSequence)) {
        return InvalidInput("target sequence " +
                            std::to_string(row.target_sequence) +
                            " does not fit the mirror's bigint column");
      }
      auto [it, inserted] = by_sequence.emplace(row.target_sequence, &row);
      if (!inserted && !SameRow(*it->second, row)) {
        return Internal("two different events for target sequence " +
                        std::to_string(row.target_sequence) +
                        " in one mirror batch");
      }
    }
    std::vector<const MirrorRow*> rows;
    rows.reserve(by_sequence.size());
    for (auto& [seq, row] : by_sequence) rows.push_back(row);

    for (size_t begin = 0; begin < rows.size();
         begin += kMirrorRowsPerStatement) {
      size_t end = std::min(rows.size(), begin + kMirrorRowsPerStatement);
      MIGLEDGER_RETURN_IF_ERROR(InsertMirrorChunk(rows, begin, end));
    }
    return Status::Ok();
  }

  // The system identifier and name, and a random part of its own.
  StatusOr<std::string> NewDatabaseId() override {
    const std::string& id = identity_.database_id;
    std::random_device rd;
    uint8_t raw[16];
    for (auto& b : raw) b = static_cast<uint8_t>(rd());
    return id.substr(0, id.find('/') + 1) + identity_.database_name + "/" +
           ToHex(raw, sizeof raw);
  }

  // The id goes into migledger.identity only when it is not the default
  // one Init() reads (`resolve --new-identity` of a TEMPLATE clone).
  Status SetAsideInheritedHistory(const std::string& new_database_id,
                                  const std::string& inherited_from) override {
    if (new_database_id != identity_.database_id) {
      MIGLEDGER_RETURN_IF_ERROR(
          Run("writing the database id",
              "CREATE TABLE IF NOT EXISTS \"migledger\".\"identity\" (\n"
              "  \"database_name\" text PRIMARY KEY,\n"
              "  \"database_id\" text NOT NULL\n"
              ");\n",
              {}, false, Code::kTargetUnavailable)
              .status());
      MIGLEDGER_RETURN_IF_ERROR(
          Run("writing the database id",
              "INSERT INTO \"migledger\".\"identity\" VALUES "
              "(pg_catalog.current_database(), $1) ON CONFLICT "
              "(\"database_name\") DO UPDATE SET \"database_id\" = "
              "EXCLUDED.\"database_id\"",
              {{new_database_id}}, false, Code::kTargetUnavailable)
              .status());
    }
    MIGLEDGER_RETURN_IF_ERROR(
        Run("creating migledger.events_inherited",
            "CREATE TABLE IF NOT EXISTS \"migledger\".\"events_inherited\" (\n"
            "  \"database_id\" text NOT NULL,\n"
            "  \"target_sequence\" bigint NOT NULL,\n"
            "  \"event_bytes\" bytea NOT NULL,\n"
            "  \"leaf_hash\" bytea NOT NULL,\n"
            "  \"chain_head\" bytea NOT NULL,\n"
            "  PRIMARY KEY (\"database_id\", \"target_sequence\")\n"
            ")",
            {}, false, Code::kTargetUnavailable)
            .status());
    MIGLEDGER_RETURN_IF_ERROR(
        Run("keeping the inherited events",
            "INSERT INTO \"migledger\".\"events_inherited\" SELECT $1::text, "
            "\"target_sequence\", \"event_bytes\", \"leaf_hash\", "
            "\"chain_head\" FROM \"migledger\".\"events\"",
            {{inherited_from}}, false, Code::kTargetUnavailable)
            .status());
    return Run("emptying migledger.events",
               "DELETE FROM \"migledger\".\"events\"", {}, false,
               Code::kTargetUnavailable)
        .status();
  }

  void SetDatabaseId(const std::string& database_id) override {
    identity_.database_id = database_id;
  }

  StatusOr<std::vector<MirrorRow>> ReadMirror(uint64_t after) override {
    std::vector<MirrorRow> rows;
    if (after >= static_cast<uint64_t>(kMaxSequence)) return rows;
    auto res = Run("reading migledger.events",
                   "SELECT \"target_sequence\", \"event_bytes\", "
                   "\"leaf_hash\", \"chain_head\" "
                   "FROM \"migledger\".\"events\" "
                   "WHERE \"target_sequence\" > $1::bigint "
                   "ORDER BY \"target_sequence\"",
                   {{std::to_string(after)}}, true, Code::kTargetUnavailable);
    if (!res.ok()) return res.status();
    PGresult* r = res->get();
    rows.reserve(PQntuples(r));
    for (int i = 0; i < PQntuples(r); ++i) {
      auto row = DecodeMirrorRow(r, i);
      if (!row.ok()) return row.status();
      rows.push_back(std::move(row).value());
    }
    return rows;
  }

  StatusOr<uint64_t> MirrorHead() override {
    auto res = Run("reading migledger.events",
                   "SELECT COALESCE(max(\"target_sequence\"), 0)::text "
                   "FROM \"migledger\".\"events\"",
                   {}, false, Code::kTargetUnavailable);
    if (!res.ok()) return res.status();
    uint64_t head = 0;
    if (!ParseUint64(PQgetvalue(res->get(), 0, 0), &head)) {
      return Internal("bad mirror head from " + Target());
    }
    return head;
  }

  StatusOr<std::vector<std::string>> InvalidIndexes() override {
    auto res = Run("listing invalid indexes",
                   "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) "
                   "FROM pg_catalog.pg_index i "
                   "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
                   "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE NOT i.indisvalid "
                   "AND n.nspname <> 'information_schema' "
                   "AND n.nspname !~ '^pg_' "
                   "ORDER BY 1",
                   {}, false, Code::kTargetUnavailable);
    if (!res.ok()) return res.status();
    std::vector<std::string> names;
    for (int i = 0; i < PQntuples(res->get()); ++i) {
      names.emplace_back(PQgetvalue(res->get(), i, 0));
    }
    return names;
  }

  StatusOr<std::optional<std::string>> LeftoverInvalidIndex(
      std::string_view statement) override {
    const auto target = ParseCreateIndexConcurrently(statement);
    if (!target) return std::optional<std::string>();
    // The table resolves through the migration's search_path.
    auto res = Run("looking for an invalid index left by an earlier attempt",
                   "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) "
                   "FROM pg_catalog.pg_index i "
                   "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
                   "JOIN pg_catalog.pg_class t ON t.oid = i.indrelid "
                   "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE t.oid = pg_catalog.to_regclass($1) "
                   "AND c.relnamespace = t.relnamespace AND c.relname = $2 "
                   "AND NOT i.indisvalid",
                   {{target->table}, {target->index}}, false,
                   Code::kTargetUnavailable);
    if (!res.ok()) return res.status();
    if (PQntuples(res->get()) != 1) return std::optional<std::string>();
    return std::optional<std::string>(PQgetvalue(res->get(), 0, 0));
  }

  // CONCURRENTLY: the table stays writable while the index goes.
  std::string DropLeftoverIndexSql(const std::string& index) const override {
    return "DROP INDEX CONCURRENTLY IF EXISTS " + index;
  }

  bool ErrorShowsDone(const SqlError& error,
                      std::string_view statement) const override {
    // duplicate_column, _database, _function, _schema, _table (also an
    // index or a sequence), _object (a type, a constraint, an enum value);
    // for a DROP: undefined_table (also a view or a sequence), _object (an
    // index, a type), _function, invalid_schema_name, invalid_catalog_name
    static const std::vector<std::string_view> kExists = {
        "42701", "42P04", "42723", "42P06", "42P07", "42710"};
    static const std::vector<std::string_view> kGone = {
        "42P01", "42704", "42883", "3F000", "3D000"};
    const auto& codes = IsDropStatement(statement) ? kGone : kExists;
    return std::find(codes.begin(), codes.end(), error.sqlstate) != codes.end();
  }

 private:
  const std::string& Target() const { return identity_.redacted_uri; }

  // Scrubs every password this driver knows of from `text`.
  std::string Scrub(std::string text) const {
    return secrets_.Scrub(std::move(text));
  }

  // What every work session runs first (one result per statement): its
  // search_path when the role is named like the tool's schema (below).
  static constexpr const char* kSessionSetup =
      "SET client_min_messages = warning; "
      "SELECT CASE WHEN current_user = 'migledger' THEN "
      "pg_catalog.current_setting('search_path') END;";
  // Between migrations: the session as fresh as a new connection, as
  // DISCARD ALL would leave it (cursors, role, settings, prepared
  // statements, LISTEN, advisory locks, cached plans, temporary objects,
  // sequence caches), then what the setup changed, as constants: the
  // search_path the setup chose when it dropped "$user"
  // (Session::search_path), computed once per connection rather than before
  // every migration (that expression, planned and run each time, was most of
  // the reset's cost on the server). DISCARD ALL itself refuses to run
  // inside a transaction block, which a query of several statements is, so
  // the reset is its parts, sent in the step's own query. The applier lock
  // is on the lock session, so pg_advisory_unlock_all() on this one frees
  // only what migrations took. RESET SESSION AUTHORIZATION is sent only when
  // the server reported (ParameterStatus) a session_authorization other than
  // the connection's own.
  void MakeSessionSetupReset(const std::string& search_path) {
    const char* auth = PQparameterStatus(conn_, "session_authorization");
    session_authorization_ = auth != nullptr ? auth : "";
    search_path_reset_.clear();
    if (search_path.empty()) return;
    // SET is a utility statement: cheaper on the server, before every
    // migration, than a SELECT of set_config(), which stays for the paths
    // SET cannot copy exactly.
    const std::string list = SearchPathSetList(search_path);
    search_path_reset_ = list.empty()
                             ? " SELECT pg_catalog.set_config('search_path', " +
                                   Literal(search_path) + ", false);"
                             : " SET search_path TO " + list + ";";
  }

  // In a transaction on the work session, before the tool's own rows: the
  // session's own role until the transaction ends (SET LOCAL), whatever SET
  // ROLE or SET SESSION AUTHORIZATION the migration ran. "role TO DEFAULT"
  // is what RESET ROLE gives: the role the role's, the database's or the
  // conninfo's settings name (ALTER ROLE deployer SET role = app_owner),
  // else the login role. Results: 2.
  static constexpr const char* kToolRoleForTransaction =
      "SET LOCAL SESSION AUTHORIZATION DEFAULT; SET LOCAL role TO DEFAULT;\n";
  static constexpr int kToolRoleForTransactionResults = 2;

  // The index of the first of `statements` that makes the transaction
  // read-only (SET TRANSACTION READ ONLY, SET transaction_read_only), or -1.
  static int ReadOnlyStatement(const std::vector<SqlStatement>& statements) {
    for (size_t i = 0; i < statements.size(); ++i) {
      std::string text;  // lower case, each run of blanks one space
      for (char c : statements[i].text) {
        if (std::isspace(static_cast<unsigned char>(c))) {
          if (text.empty() || text.back() != ' ') text += ' ';
        } else {
          text +=
              static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        }
      }
      if (text.find("read only") != std::string::npos ||
          text.find("transaction_read_only") != std::string::npos) {
        return static_cast<int>(i);
      }
    }
    return -1;
  }

  // DISCARD ALL's parts (without SET SESSION AUTHORIZATION, see above) and
  // the setup's message level, and how many results they return.
  static constexpr const char* kDiscardAllButLocks =
      "CLOSE ALL; RESET ROLE; RESET ALL; DEALLOCATE ALL; UNLISTEN *; "
      "SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD PLANS; "
      "DISCARD TEMP; DISCARD SEQUENCES; SET client_min_messages = warning;";
  static constexpr int kDiscardAllButLocksResults = 10;

  // The reset to send now, and the number of results it returns.
  std::string SessionReset(int* results) const {
    std::string sql;
    *results = kDiscardAllButLocksResults;
    const char* auth = PQparameterStatus(conn_, "session_authorization");
    if (session_authorization_.empty() || auth == nullptr ||
        session_authorization_ != auth) {
      sql = "RESET SESSION AUTHORIZATION; ";
      ++*results;
    }
    sql += kDiscardAllButLocks;
    if (!search_path_reset_.empty()) {
      sql += search_path_reset_;
      ++*results;
    }
    return sql;
  }

  // A connected, set-up session, or the error line. Touches no member but
  // the (immutable) conninfo, so a helper thread may run it (BeginLock).
  struct Session {
    PGconn* conn = nullptr;
    std::string error;  // unscrubbed: Scrub() it on the owning thread
    bool setup_failed = false;
    // The path the setup set, "" when it kept the session's own.
    std::string search_path;
  };
  static Session ConnectSession(const std::string& conninfo) {
    Session out;
    // Later entries override earlier ones; the conninfo (expanded from
    // "dbname") may override connect_timeout and application_name.
    const char* keys[] = {"connect_timeout", "application_name", "dbname",
                          "client_encoding", nullptr};
    const char* values[] = {"10", "migledger", conninfo.c_str(), "UTF8",
                            nullptr};
    out.conn = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
    if (out.conn == nullptr) {
      out.error = "out of memory";
      return out;
    }
    if (PQstatus(out.conn) != CONNECTION_OK) {
      out.error = LibpqMessage(PQerrorMessage(out.conn));
      return out;
    }
    PQsetNoticeProcessor(out.conn, DiscardNotice, nullptr);
    // A role named like the tool's schema would resolve "$user" in the
    // default search_path to that schema, so the migrations' own tables
    // would land next to ours: drop "$user" from this session's path then
    // (every table of the tool is schema-qualified anyway). The path is
    // split here, as the server splits it, so a quoted name keeps its
    // commas and blanks; the other entries are sent back as written.
    PgResult res(PQexec(out.conn, kSessionSetup));
    if (PQresultStatus(res.get()) != PGRES_TUPLES_OK) {
      out.error = PrimaryMessage(res.get(), out.conn);
      out.setup_failed = true;
      return out;
    }
    if (PQntuples(res.get()) != 1 || PQgetisnull(res.get(), 0, 0)) return out;
    const std::string path = PQgetvalue(res.get(), 0, 0);
    // A value the server holds always parses; were it not to, it stays.
    // Without "$user" the path stays as it is, and RESET ALL between
    // migrations gives it back; otherwise the reset sets the new one again.
    const std::optional<std::string> kept = SearchPathWithoutUser(path);
    if (!kept || *kept == path) return out;
    // A path of nothing but "$user" becomes public, the server's default.
    out.search_path = kept->empty() ? "public" : *kept;
    const char* set_values[] = {out.search_path.c_str()};
    PgResult set(PQexecParams(
        out.conn, "SELECT pg_catalog.set_config('search_path', $1, false)", 1,
        nullptr, set_values, nullptr, nullptr, 0));
    if (PQresultStatus(set.get()) != PGRES_TUPLES_OK) {
      out.error = PrimaryMessage(set.get(), out.conn);
      out.setup_failed = true;
    }
    return out;
  }

  StatusOr<PGconn*> Connect(std::string* search_path = nullptr) {
    Session session = ConnectSession(conninfo_);
    if (search_path != nullptr) *search_path = session.search_path;
    return Adopt(std::move(session));
  }

  // Turns a session from ConnectSession into a connection or the error,
  // learning its password for redaction either way.
  StatusOr<PGconn*> Adopt(Session session) {
    if (session.conn == nullptr) {
      return TargetUnavailable("cannot connect to " + Target() + ": " +
                               session.error);
    }
    secrets_.Learn(session.conn);
    if (!session.error.empty()) {
      PQfinish(session.conn);
      return TargetUnavailable((session.setup_failed
                                    ? "cannot set up the session on "
                                    : "cannot connect to ") +
                               Target() + ": " + Scrub(session.error));
    }
    return session.conn;
  }

  void CloseLockSession() {
    if (lock_conn_ != nullptr) PQfinish(lock_conn_);
    lock_conn_ = nullptr;
    lock_held_ = false;
  }

  // Reads every result of a sent simple query (one per statement; the
  // server stops at the first error) and returns the first error, or none.
  // *succeeded (optional) counts the results before it. COPY is refused.
  PgResult DrainResults(int* succeeded) {
    PgResult failed;
    while (PGresult* raw = PQgetResult(conn_)) {
      PgResult res(raw);
      switch (PQresultStatus(raw)) {
        case PGRES_COPY_IN:
          PQputCopyEnd(conn_,
                       "migledger does not supply data to COPY FROM STDIN");
          break;
        case PGRES_COPY_OUT: {
          char* buf = nullptr;
          while (PQgetCopyData(conn_, &buf, 0) > 0) PQfreemem(buf);
          break;
        }
        case PGRES_FATAL_ERROR:
        case PGRES_BAD_RESPONSE:
        case PGRES_NONFATAL_ERROR:
          if (!failed) failed = std::move(res);
          break;
        default:
          if (!failed && succeeded != nullptr) ++*succeeded;
          break;
      }
      if (PQstatus(conn_) == CONNECTION_BAD) break;
    }
    return failed;
  }

  // A quoted SQL string literal, safe for any content and setting.
  std::string Literal(const std::string& value) const {
    char* quoted = PQescapeLiteral(conn_, value.data(), value.size());
    if (quoted == nullptr) return "NULL";  // out of memory: the INSERT fails
    std::string out(quoted);
    PQfreemem(quoted);
    return out;
  }

  // A bytea literal in hex form; E'' so it reads the same whatever
  // standard_conforming_strings says.
  static std::string ByteaLiteral(const std::string& bytes) {
    static constexpr char kHex[] = "0123456789abcdef";
    static constexpr std::string_view kOpen = "E'\\\\x", kClose = "'::bytea";
    std::string out(kOpen.size() + bytes.size() * 2 + kClose.size(), '\0');
    char* p = std::copy(kOpen.begin(), kOpen.end(), out.data());
    for (unsigned char c : bytes) {
      *p++ = kHex[c >> 4];
      *p++ = kHex[c & 15];
    }
    std::copy(kClose.begin(), kClose.end(), p);
    return out;
  }

  // True when the work session is gone, so an error's outcome is unknown:
  // libpq says so, or `failed` (the error result, or null when none) is an
  // error libpq made itself (no SQLSTATE: no answer from the server; after
  // a write to a dead socket the connection may not be marked bad yet), or
  // the server ended the session (class 08, or 57P01-57P04: shut down).
  bool SessionLost(const PGresult* failed) const {
    if (PQstatus(conn_) == CONNECTION_BAD) return true;
    if (failed == nullptr) return false;
    const std::string sqlstate = ErrorField(failed, PG_DIAG_SQLSTATE);
    return sqlstate.empty() || sqlstate.rfind("08", 0) == 0 ||
           sqlstate.rfind("57P0", 0) == 0;
  }

  Status LostConnection(const std::string& what, const PGresult* res) {
    std::string message = res != nullptr ? PrimaryMessage(res, conn_)
                                         : LibpqMessage(PQerrorMessage(conn_));
    return TargetUnavailable("lost the connection to " + Target() + " while " +
                             what + ": " + Scrub(message));
  }

  // Runs a statement without parameters or rows (transaction control).
  Status Simple(const char* sql) {
    PgResult res(PQexec(conn_, sql));
    if (PQresultStatus(res.get()) == PGRES_COMMAND_OK) return Status::Ok();
    if (SessionLost(res.get())) return LostConnection(sql, res.get());
    return MigrationFailed(std::string(sql) + " failed on " + Target() + ": " +
                           Scrub(PrimaryMessage(res.get(), conn_)));
  }

  // Runs one parameterized statement on the work session. A SQL error gives
  // `sql_error_code` ("<what> on <target>: <message>") and its SQLSTATE in
  // *sqlstate; a lost connection gives kTargetUnavailable.
  StatusOr<PgResult> Run(const std::string& what, const std::string& sql,
                         const std::vector<Param>& params, bool binary_result,
                         Code sql_error_code, std::string* sqlstate = nullptr) {
    MIGLEDGER_RETURN_IF_ERROR(ResetIfPending());
    std::vector<const char*> values(params.size());
    std::vector<int> lengths(params.size());
    std::vector<int> formats(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      values[i] = params[i].null ? nullptr : params[i].value.data();
      lengths[i] = static_cast<int>(params[i].value.size());
      formats[i] = params[i].binary ? 1 : 0;
    }
    PgResult res(PQexecParams(
        conn_, sql.c_str(), static_cast<int>(params.size()), nullptr,
        values.data(), lengths.data(), formats.data(), binary_result ? 1 : 0));
    ExecStatusType st = PQresultStatus(res.get());
    if (res && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)) return res;
    if (SessionLost(res.get())) return LostConnection(what, res.get());
    if (sqlstate != nullptr)
      *sqlstate = ErrorField(res.get(), PG_DIAG_SQLSTATE);
    return Status(sql_error_code, what + " on " + Target() + ": " +
                                      Scrub(PrimaryMessage(res.get(), conn_)));
  }

  void FillSqlError(const std::string& sql, const PGresult* res,
                    SqlError* error) const {
    error->sqlstate = ErrorField(res, PG_DIAG_SQLSTATE);
    error->native_code = 0;
    error->message = Scrub(ErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
    if (error->message.empty()) {
      error->message = Scrub(LibpqMessage(PQresultErrorMessage(res)));
    }
    error->detail = Scrub(ErrorField(res, PG_DIAG_MESSAGE_DETAIL));
    error->hint = Scrub(ErrorField(res, PG_DIAG_MESSAGE_HINT));
    error->position = -1;
    std::string position = ErrorField(res, PG_DIAG_STATEMENT_POSITION);
    uint64_t pos = 0;
    if (ParseUint64(position, &pos) &&
        pos <= static_cast<uint64_t>(INT32_MAX)) {
      error->position = PositionToByteOffset(sql, static_cast<int>(pos),
                                             !server_counts_bytes_);
    }
  }

  static bool SameRow(const MirrorRow& a, const MirrorRow& b) {
    return a.event_bytes == b.event_bytes && a.leaf_hash == b.leaf_hash &&
           a.chain_head == b.chain_head;
  }

  StatusOr<MirrorRow> DecodeMirrorRow(const PGresult* r, int i) const {
    if (PQgetlength(r, i, 0) != 8) {
      return Internal("bad target_sequence from " + Target());
    }
    MirrorRow row;
    row.target_sequence = DecodeBigEndian64(PQgetvalue(r, i, 0));
    row.event_bytes.assign(PQgetvalue(r, i, 1), PQgetlength(r, i, 1));
    row.leaf_hash.assign(PQgetvalue(r, i, 2), PQgetlength(r, i, 2));
    row.chain_head.assign(PQgetvalue(r, i, 3), PQgetlength(r, i, 3));
    return row;
  }

  Status InsertMirrorChunk(const std::vector<const MirrorRow*>& rows,
                           size_t begin, size_t end) {
    std::string sql =
        "INSERT INTO \"migledger\".\"events\" (\"target_sequence\", "
        "\"event_bytes\", \"leaf_hash\", \"chain_head\") VALUES ";
    std::vector<Param> params;
    params.reserve((end - begin) * 4);
    for (size_t i = begin; i < end; ++i) {
      size_t p = params.size();
      if (i > begin) sql += ", ";
      sql += "($" + std::to_string(p + 1) + "::bigint, $" +
             std::to_string(p + 2) + "::bytea, $" + std::to_string(p + 3) +
             "::bytea, $" + std::to_string(p + 4) + "::bytea)";
      params.push_back({std::to_string(rows[i]->target_sequence)});
      params.push_back({rows[i]->event_bytes, /*binary=*/true});
      params.push_back({rows[i]->leaf_hash, /*binary=*/true});
      params.push_back({rows[i]->chain_head, /*binary=*/true});
    }
    sql +=
        " ON CONFLICT (\"target_sequence\") DO NOTHING "
        "RETURNING \"target_sequence\"";
    auto res = Run("writing migledger.events", sql, params, false,
                   Code::kMigrationFailed);
    if (!res.ok()) return res.status();

    std::set<uint64_t> inserted;
    for (int i = 0; i < PQntuples(res->get()); ++i) {
      uint64_t seq = 0;
      if (ParseUint64(PQgetvalue(res->get(), i, 0), &seq)) inserted.insert(seq);
    }
    if (inserted.size() == end - begin) return Status::Ok();

    // The rest already existed: they must be byte-for-byte the same. This
    // is a separate statement so that it sees rows committed concurrently.
    std::map<uint64_t, const MirrorRow*> wanted;
    std::string array = "{";
    for (size_t i = begin; i < end; ++i) {
      if (inserted.count(rows[i]->target_sequence) != 0) continue;
      if (!wanted.empty()) array += ",";
      array += std::to_string(rows[i]->target_sequence);
      wanted.emplace(rows[i]->target_sequence, rows[i]);
    }
    array += "}";
    auto existing = Run("reading migledger.events",
                        "SELECT \"target_sequence\", \"event_bytes\", "
                        "\"leaf_hash\", \"chain_head\" "
                        "FROM \"migledger\".\"events\" "
                        "WHERE \"target_sequence\" = ANY ($1::bigint[]) "
                        "ORDER BY \"target_sequence\"",
                        {{array}}, true, Code::kTargetUnavailable);
    if (!existing.ok()) return existing.status();
    PGresult* r = existing->get();
    for (int i = 0; i < PQntuples(r); ++i) {
      auto found = DecodeMirrorRow(r, i);
      if (!found.ok()) return found.status();
      auto it = wanted.find(found->target_sequence);
      if (it == wanted.end()) continue;
      const MirrorRow& ours = *it->second;
      if (!SameRow(*found, ours)) {
        std::string what =
            found->event_bytes != ours.event_bytes
                ? "the target holds different event bytes (" +
                      std::to_string(found->event_bytes.size()) +
                      " bytes, leaf " + HexPrefix(found->leaf_hash) +
                      ") than the ledger (" +
                      std::to_string(ours.event_bytes.size()) +
                      " bytes, leaf " + HexPrefix(ours.leaf_hash) + ")"
                : "the event bytes match but the stored hashes differ";
        return Drift("mirror fork at target sequence " +
                     std::to_string(ours.target_sequence) + " on " + Target() +
                     ": " + what);
      }
      wanted.erase(it);
    }
    if (!wanted.empty()) {
      return Internal("mirror row for target sequence " +
                      std::to_string(wanted.begin()->first) + " on " +
                      Target() + " was neither inserted nor found");
    }
    return Status::Ok();
  }

  std::string conninfo_;
  LibpqSecrets secrets_;
  TargetIdentity identity_;
  PGconn* conn_ = nullptr;      // the work session
  PGcancel* cancel_ = nullptr;  // its cancel handle, for canceller_
  std::optional<InterruptCanceller> canceller_;
  PGconn* lock_conn_ = nullptr;  // the lock session, while Lock() holds it
  std::future<Session> pending_lock_session_;  // from BeginLock()
  bool lock_held_ = false;
  bool server_counts_bytes_ = false;  // SQL_ASCII database
  bool reset_pending_ = false;        // a step ran since the last reset
  // Statements of a migration ran on the work session since its last reset.
  bool migration_state_ = false;
  // The open transaction runs as the tool's role (kToolRoleForTransaction).
  bool tool_role_in_transaction_ = false;
  // MakeSessionSetupReset(): the connection's session_authorization and
  // the reset's search_path statement ("" for none).
  std::string session_authorization_;
  std::string search_path_reset_;
};

}  // namespace

std::string PostgresOfflineMarkerSql(const MarkerRow& row) {
  return "INSERT INTO \"migledger\".\"applied\" (version, checksum, "
         "attempt_id, applied_at) VALUES (" +
         StandardSqlLiteral(row.version) + ", " +
         StandardSqlLiteral(row.checksum) + ", " +
         StandardSqlLiteral(row.attempt_id) + ", now());";
}

StatusOr<std::unique_ptr<Driver>> OpenPostgresDriver(
    const std::string& conninfo) {
  MIGLEDGER_RETURN_IF_ERROR(LoadLibpq());
  // Reject what libpq cannot parse before connecting (a plain database name
  // is not a conninfo, libpq takes it as dbname).
  if (LooksLikePostgresConninfo(conninfo)) {
    MIGLEDGER_RETURN_IF_ERROR(ParseConninfo(conninfo).status());
  }
  auto driver = std::make_unique<PostgresDriver>(conninfo);
  MIGLEDGER_RETURN_IF_ERROR(driver->Init());
  return std::unique_ptr<Driver>(std::move(driver));
}

}  // namespace migledger
