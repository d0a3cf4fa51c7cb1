// The PostgreSQL target driver's class, shared by its source files. Internal
// to applier/: everything else reaches it through OpenPostgresDriver()
// (applier/postgres_driver.h) and the Driver interface.
//
// One file per part:
//   postgres_driver.cc   opening, identity, recovery's catalog checks
//   postgres_session.cc  connecting a session, its setup and reset
//   postgres_lock.cc     the applier lock on the lock session
//   postgres_exec.cc     transactions, statements, steps, error mapping
//   postgres_tables.cc   the marker rows and the event mirror
//   postgres_schema.cc   the tool's schema and the inherited history
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <cstdint>
#include <future>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "applier/driver.h"
#include "applier/libpq_result.h"
#include "applier/libpq_secrets.h"
#include "applier/postgres_driver.h"
#include "common/interrupt.h"
#include "common/status.h"

namespace migledger {

// The largest target sequence the mirror's bigint column holds.
inline constexpr int64_t kPostgresMaxSequence = INT64_MAX;

// A query parameter: text unless `binary`.
struct PgParam {
  std::string value;
  bool binary = false;
  bool null = false;
};

// True when `s` is a whole unsigned decimal number, stored in *out.
bool ParsePgUint64(std::string_view s, uint64_t* out);

class PostgresDriver final : public Driver {
 public:
  explicit PostgresDriver(std::string conninfo)
      : conninfo_(std::move(conninfo)), secrets_(conninfo_) {}
  ~PostgresDriver() override;

  PostgresDriver(const PostgresDriver&) = delete;
  PostgresDriver& operator=(const PostgresDriver&) = delete;

  // Connects the work session and reads the identity.
  Status Init();

  SqlDialect dialect() const override { return SqlDialect::kPostgres; }
  const TargetIdentity& identity() const override { return identity_; }

  // postgres_lock.cc
  void BeginLock() override;
  Status Lock(std::chrono::milliseconds timeout) override;
  bool LockHeldElsewhere() override;
  void Unlock() override;

  // postgres_schema.cc
  Status EnsureSchema() override;
  StatusOr<bool> HasSchema() override;

  // postgres_exec.cc
  Status Begin() override;
  Status Commit() override;
  Status Rollback() override;
  bool InTransaction() override;
  void StepDone() override { reset_pending_ = true; }
  Status Exec(const std::string& sql, SqlError* error) override;
  Status ExecStep(const StepBatch& batch, StepBatchFailure* failure) override;

  // postgres_tables.cc
  Status CommitWithMirrorRows(const std::vector<MirrorRow>& rows) override;
  StatusOr<std::vector<MarkerRow>> ReadMarkers() override;
  Status InsertMarker(const MarkerRow& row) override;
  Status DeleteMarker(const std::string& version) override;
  Status InsertMirrorRows(const std::vector<MirrorRow>& input) override;
  StatusOr<std::vector<MirrorRow>> ReadMirror(uint64_t after) override;
  StatusOr<uint64_t> MirrorHead() override;

  // postgres_driver.cc
  StatusOr<std::string> NewDatabaseId() override;
  StatusOr<std::vector<std::string>> InvalidIndexes() override;
  StatusOr<std::optional<std::string>> LeftoverInvalidIndex(
      std::string_view statement) override;
  // CONCURRENTLY: the table stays writable while the index goes.
  std::string DropLeftoverIndexSql(const std::string& index) const override {
    return "DROP INDEX CONCURRENTLY IF EXISTS " + index;
  }
  bool ErrorShowsDone(const SqlError& error,
                      std::string_view statement) const override;

 protected:
  // postgres_schema.cc
  Status SetAsideInheritedHistory(const std::string& new_database_id,
                                  const std::string& inherited_from) override;
  void SetDatabaseId(const std::string& database_id) override {
    identity_.database_id = database_id;
  }

 private:
  const std::string& Target() const { return identity_.redacted_uri; }

  // Scrubs every password this driver knows of from `text`.
  std::string Scrub(std::string text) const {
    return secrets_.Scrub(std::move(text));
  }

  // --- postgres_session.cc
  // A connected, set-up session, or the error line. Touches no member but
  // the (immutable) conninfo, so a helper thread may run it (BeginLock).
  struct Session {
    PGconn* conn = nullptr;
    std::string error;  // unscrubbed: Scrub() it on the owning thread
    bool setup_failed = false;
    // The path the setup set, "" when it kept the session's own.
    std::string search_path;
  };
  static Session ConnectSession(const std::string& conninfo);
  StatusOr<PGconn*> Connect(std::string* search_path = nullptr);
  // Turns a session from ConnectSession into a connection or the error,
  // learning its password for redaction either way.
  StatusOr<PGconn*> Adopt(Session session);

  // What every work session runs first (one result per statement): its
  // search_path when the role is named like the tool's schema (see
  // ConnectSession).
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
  void MakeSessionSetupReset(const std::string& search_path);
  // DISCARD ALL's parts (without SET SESSION AUTHORIZATION, see above) and
  // the setup's message level, and how many results they return.
  static constexpr const char* kDiscardAllButLocks =
      "CLOSE ALL; RESET ROLE; RESET ALL; DEALLOCATE ALL; UNLISTEN *; "
      "SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD PLANS; "
      "DISCARD TEMP; DISCARD SEQUENCES; SET client_min_messages = warning;";
  static constexpr int kDiscardAllButLocksResults = 10;
  // The reset to send now, and the number of results it returns.
  std::string SessionReset(int* results) const;
  // The reset StepDone() asked for, before the session runs anything else
  // outside a transaction (ExecStep sends it with the step instead).
  Status ResetIfPending();
  Status ResetFailed(const std::string& message);

  // --- postgres_lock.cc
  // Holding the lock, waits until deadline for sessions of another
  // migledger on this database that are not idle: only a killed applier's
  // can be, and its statement may yet commit a step or finish an index.
  Status WaitForEarlierSessions(std::chrono::steady_clock::time_point deadline);
  void CloseLockSession();

  // --- postgres_exec.cc
  // In a transaction on the work session, before the tool's own rows: the
  // session's own role until the transaction ends (SET LOCAL), whatever SET
  // ROLE or SET SESSION AUTHORIZATION the migration ran. "role TO DEFAULT"
  // is what RESET ROLE gives: the role the role's, the database's or the
  // conninfo's settings name (ALTER ROLE deployer SET role = app_owner),
  // else the login role. Results: 2.
  static constexpr const char* kToolRoleForTransaction =
      "SET LOCAL SESSION AUTHORIZATION DEFAULT; SET LOCAL role TO DEFAULT;\n";
  static constexpr int kToolRoleForTransactionResults = 2;

  // Where the parts of a step's query (ExecStep) sit and how many results
  // each returns.
  struct StepQuery {
    std::string sql;
    int reset_results = 0;        // the session reset first, when one is due
    int reset_end = 0;            // its end in `sql`
    std::vector<size_t> offsets;  // of each statement in `sql`
    size_t statements_end = 0;
    int switch_results = 0;  // the switch to the tool's role
  };
  StepQuery BuildStepQuery(const StepBatch& batch);
  // What a step's failed query means, from `done`, the results before the
  // error (`failed`, null when the session went without one); rolls back.
  Status StepFailed(const StepBatch& batch, const StepQuery& query,
                    const PGresult* failed, int done,
                    StepBatchFailure* failure);
  // The index of the first of `statements` that makes the transaction
  // read-only (SET TRANSACTION READ ONLY, SET transaction_read_only), or -1.
  static int ReadOnlyStatement(const std::vector<SqlStatement>& statements);
  // Reads every result of a sent simple query (one per statement; the
  // server stops at the first error) and returns the first error, or none.
  // *succeeded (optional) counts the results before it. COPY is refused.
  PgResult DrainResults(int* succeeded);
  // A quoted SQL string literal, safe for any content and setting.
  std::string Literal(const std::string& value) const;
  // True when the work session is gone, so an error's outcome is unknown:
  // libpq says so, or `failed` (the error result, or null when none) is an
  // error libpq made itself (no SQLSTATE: no answer from the server; after
  // a write to a dead socket the connection may not be marked bad yet), or
  // the server ended the session (class 08, or 57P01-57P04: shut down).
  bool SessionLost(const PGresult* failed) const;
  Status LostConnection(const std::string& what, const PGresult* res);
  // Runs a statement without parameters or rows (transaction control).
  Status Simple(const char* sql);
  // Runs one parameterized statement on the work session. A SQL error gives
  // `sql_error_code` ("<what> on <target>: <message>") and its SQLSTATE in
  // *sqlstate; a lost connection gives kTargetUnavailable.
  StatusOr<PgResult> Run(const std::string& what, const std::string& sql,
                         const std::vector<PgParam>& params, bool binary_result,
                         Code sql_error_code, std::string* sqlstate = nullptr);
  void FillSqlError(const std::string& sql, const PGresult* res,
                    SqlError* error) const;

  // --- postgres_tables.cc
  // CommitWithMirrorRows for a batch that fits one INSERT.
  Status CommitWithMirrorInsert(const std::vector<MirrorRow>& rows);
  // A bytea literal in hex form; E'' so it reads the same whatever
  // standard_conforming_strings says.
  static std::string ByteaLiteral(const std::string& bytes);
  static bool SameRow(const MirrorRow& a, const MirrorRow& b);
  StatusOr<MirrorRow> DecodeMirrorRow(const PGresult* r, int i) const;
  Status InsertMirrorChunk(const std::vector<const MirrorRow*>& rows,
                           size_t begin, size_t end);
  // Rows [begin, end) of `rows` not in `inserted` exist already: each must
  // be byte-for-byte the one the mirror holds.
  Status CheckExistingMirrorRows(const std::vector<const MirrorRow*>& rows,
                                 size_t begin, size_t end,
                                 const std::set<uint64_t>& inserted);

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

}  // namespace migledger
