// The target driver interface: the small per-database part of the applier.
//
// The applier (applier/applier.cc) owns the algorithm: ordering, events,
// crash points, recovery. A driver only knows how to talk to one kind of
// database: open it, lock it, run SQL, and read/write the tool's own tables
// (marker rows in `migledger_applied`, the event mirror).
//
// Tables the driver owns on the target:
//   SQLite:     migledger_applied, migledger_events, migledger_target
//   PostgreSQL: schema "migledger" with tables applied, events
// All identifiers the driver builds are quoted.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "applier/sql_splitter.h"
#include "common/status.h"
#include "ledger/ledger.h"

namespace migledger {

// Who the target database is, independent of how it was reached.
struct TargetIdentity {
  std::string kind;            // "sqlite" or "postgres"
  std::string database_id;     // stable id: SQLite: a UUID stored in the file;
                               // PostgreSQL: "<system_identifier>/<dbname>"
  std::string database_name;   // file path or database name
  std::string redacted_uri;    // the URI with any password removed
  std::string server_version;  // e.g. "3.40.1" or "15.18"
  // Key used for per-target chains in the ledger: "<kind>:<database_id>".
  std::string Key() const { return TargetKey(kind, database_id); }
};

// One row of migledger_applied: the ground truth of "did the step commit".
struct MarkerRow {
  std::string version;
  std::string checksum;    // hex SHA-256 of the up file
  std::string attempt_id;  // the StepStarted attempt that wrote it ("" offline)
  std::string applied_at;  // RFC 3339, as stored
};

// One mirrored ledger event: exact bytes plus the hashes the ledger holds.
struct MirrorRow {
  uint64_t target_sequence = 0;
  std::string event_bytes;  // serialized migledger.v1.Event, exactly
  std::string leaf_hash;    // 32 raw bytes
  std::string chain_head;   // 32 raw bytes: the target chain after this event
};

// What a failed statement told us. Filled by Exec on failure.
struct SqlError {
  std::string sqlstate;  // PostgreSQL SQLSTATE, "" for SQLite
  int native_code = 0;   // SQLite extended result code, 0 for PostgreSQL
  std::string message;
  std::string detail;
  std::string hint;
  // Byte offset inside the executed statement where the server says the
  // error is (PostgreSQL error position, 0-based), or -1 when unknown.
  int position = -1;
};

// One transactional step as the applier hands it to the driver: the
// migration's statements, then its marker row (inserted for an up step,
// deleted for a down step), inside one transaction.
struct StepBatch {
  // Not owned (a migration's statements can be 100 MB): must outlive the
  // ExecStep() call. Null for none.
  const std::vector<SqlStatement>* statements = nullptr;
  std::optional<MarkerRow> insert_marker;  // set for an up step
  std::string delete_marker;               // the version, for a down step
};

// Where ExecStep stopped.
struct StepBatchFailure {
  // Index into StepBatch::statements of the statement that failed, or -1
  // when the bookkeeping failed (or BEGIN).
  int statement_index = -1;
  SqlError error;
};

class Driver {
 public:
  virtual ~Driver() = default;

  virtual SqlDialect dialect() const = 0;
  // Valid after a successful OpenDriver().
  virtual const TargetIdentity& identity() const = 0;

  // Takes the exclusive applier lock for this target, waiting up to
  // `timeout`. PostgreSQL: advisory lock on a separate session, freed by the
  // server when the process dies; then, within the same timeout, waits until
  // no session of a killed migledger still runs a statement on the database
  // (the server goes on with it, even a COMMIT, after its client died).
  // SQLite: a write lock on a lock file next to the database (a killed
  // process takes its statement with it). Returns kLedgerBusy naming the
  // target, or the session to wait for, on timeout.
  virtual Status Lock(std::chrono::milliseconds timeout) = 0;
  virtual void Unlock() = 0;
  // A hint that Lock() follows soon: a driver may start connecting its lock
  // session in the background. Lock() reports any error.
  virtual void BeginLock() {}
  // True when another process holds the applier lock of this target now
  // (an apply, down or recover is running on it). A probe: it never waits
  // and never takes the lock, so it cannot delay or fail that process.
  // False when it cannot tell.
  virtual bool LockHeldElsewhere() { return false; }

  // Creates the tool's tables if they do not exist (idempotent, own
  // transaction).
  virtual Status EnsureSchema() = 0;
  // True when the tool's tables exist (no side effects).
  virtual StatusOr<bool> HasSchema() = 0;

  // Transaction control on the work session.
  virtual Status Begin() = 0;
  virtual Status Commit() = 0;
  virtual Status Rollback() = 0;
  // True while a transaction is open on the work session (also one opened
  // by a no-transaction migration's own BEGIN statement).
  virtual bool InTransaction() = 0;

  // Called after each migration step, whatever its outcome. What a
  // migration left in the session (PostgreSQL: SET search_path, SET ROLE,
  // statement_timeout, temporary tables, prepared statements, advisory
  // locks...) must not reach the next migration, which would otherwise
  // behave differently in one run than in two (or after a crash, in a new
  // session): the PostgreSQL driver resets the session, as DISCARD ALL
  // would, before the work session runs anything else. SQLite: nothing (see
  // the README).
  virtual void StepDone() {}

  // Runs one statement (or, for PostgreSQL, several as one simple query) on
  // the work session. On SQL failure returns kMigrationFailed and fills
  // *error; on a lost connection returns kTargetUnavailable.
  virtual Status Exec(const std::string& sql, SqlError* error) = 0;

  // Opens a transaction and runs `batch` in it, leaving it open for
  // CommitWithMirrorRows() or Commit(). On failure the transaction is rolled
  // back and *failure says where; returns kMigrationFailed for a statement
  // (kDrift for a marker that already exists, kTargetUnavailable for a lost
  // connection). The default runs Begin, Exec per statement and the marker
  // call; PostgreSQL sends the whole batch as one simple query (one round
  // trip, where the statements would otherwise cost one each).
  virtual Status ExecStep(const StepBatch& batch, StepBatchFailure* failure);
  // Inserts `rows` into the mirror and commits the open transaction.
  // REQUIRES: the rows are new (target sequences above MirrorHead(), which
  // the target lock guarantees); on any error, including an existing row,
  // nothing commits and the transaction is rolled back. The default calls
  // InsertMirrorRows and Commit; PostgreSQL sends both as one simple query.
  virtual Status CommitWithMirrorRows(const std::vector<MirrorRow>& rows);

  // Marker rows, on the work session (inside the caller's transaction, if
  // one is open).
  virtual StatusOr<std::vector<MarkerRow>> ReadMarkers() = 0;
  virtual Status InsertMarker(const MarkerRow& row) = 0;
  virtual Status DeleteMarker(const std::string& version) = 0;

  // The event mirror, on the work session. Insert is idempotent: a row whose
  // target_sequence exists with identical bytes is skipped; one with
  // different bytes returns kDrift (a fork).
  virtual Status InsertMirrorRows(const std::vector<MirrorRow>& rows) = 0;
  // Rows with target_sequence > after, in order.
  virtual StatusOr<std::vector<MirrorRow>> ReadMirror(uint64_t after) = 0;
  // Highest mirrored target_sequence, 0 when none.
  virtual StatusOr<uint64_t> MirrorHead() = 0;

  // A new id for this database when it turns out to be a copy holding its
  // original's id: SQLite a random one; PostgreSQL its system identifier and
  // name with a random part ("<system_identifier>/<dbname>/<hex>"), which
  // AdoptIdentity keeps in migledger.identity, read back only by a database
  // of that system identifier and name (a TEMPLATE clone or a dump loaded
  // into another cluster copies the row but keeps its own default id).
  virtual StatusOr<std::string> NewDatabaseId() = 0;
  // Gives a copy of another database an identity of its own, in one
  // transaction: the mirror's rows (the history of `inherited_from`, the id
  // it was copied from) move to the inherited-events table (SQLite
  // migledger_events_inherited, PostgreSQL migledger.events_inherited,
  // created when missing; columns database_id + the mirror's), the database
  // takes `new_database_id` (from NewDatabaseId(), or identity()'s own when
  // that already differs from `inherited_from`), and `rows`, the new
  // chain from target sequence 1, fill the emptied mirror. On success
  // identity() has the new id; on error nothing changed.
  Status AdoptIdentity(const std::string& new_database_id,
                       const std::string& inherited_from,
                       const std::vector<MirrorRow>& rows);

  // Catalog checks used by recovery of no-transaction steps. Returns the
  // names of invalid indexes (PostgreSQL: pg_index.indisvalid = false) in
  // the search path; SQLite has none.
  virtual StatusOr<std::vector<std::string>> InvalidIndexes() = 0;
  // The invalid index an earlier attempt of `statement` left when it ended
  // mid-build (killed, interrupted, or failed on a duplicate key): for a
  // CREATE INDEX CONCURRENTLY, the index of the name it gives, on the table
  // it names (resolved as the work session resolves it, so after a
  // migration's SET search_path), when it exists and is invalid, as
  // "schema.name" quoted for SQL; nullopt otherwise. SQLite: nullopt.
  virtual StatusOr<std::optional<std::string>> LeftoverInvalidIndex(
      std::string_view /*statement*/) {
    return std::optional<std::string>();
  }
  // The statement that drops `index`, an invalid index LeftoverInvalidIndex()
  // returned, before the statement that left it runs again (PostgreSQL:
  // without blocking writes to its table).
  virtual std::string DropLeftoverIndexSql(const std::string& index) const = 0;
  // True when `error`, from running `statement` again on resume, shows the
  // statement's work already done: what it creates (a table, an index, a
  // column, an enum value...) exists, or what its DROP names is gone.
  virtual bool ErrorShowsDone(const SqlError& error,
                              std::string_view statement) const = 0;

 protected:
  // AdoptIdentity's own SQL, inside its transaction: the mirror's rows
  // copied to the inherited-events table (created when missing) under
  // `inherited_from`, the mirror emptied, and `new_database_id` stored as
  // the database's id.
  virtual Status SetAsideInheritedHistory(
      const std::string& new_database_id,
      const std::string& inherited_from) = 0;
  // Called once AdoptIdentity committed: identity() has `database_id` from
  // now on.
  virtual void SetDatabaseId(const std::string& database_id) = 0;
};

struct DriverOptions {
  // Name given in migledger.toml, or "" for a bare URI.
  std::string target_name;
};

// Opens a driver for `uri`: "sqlite:PATH" (PATH may be relative) or a
// libpq URI ("postgres://", "postgresql://") or key=value conninfo
// ("host=... dbname=..."). For SQLite the file is created if missing only
// when `create_if_missing`; otherwise a missing file is kTargetUnavailable.
StatusOr<std::unique_ptr<Driver>> OpenDriver(const std::string& uri,
                                             bool create_if_missing);

// The statement an offline script (`plan --sql`) runs after a migration's
// own to record it: `row`'s marker inserted into the tool's table of
// `dialect`'s driver, stamped with the database's clock when the script runs
// (row.applied_at is not used). Needs no connection: each driver writes its
// own (PostgresOfflineMarkerSql, SqliteOfflineMarkerSql).
std::string OfflineMarkerSql(SqlDialect dialect, const MarkerRow& row);

// `value` as a string literal in standard SQL: in single quotes, each '
// doubled. SQLite reads it so, and PostgreSQL with standard_conforming_strings
// on (its default); for text that goes into a script, not through a session.
std::string StandardSqlLiteral(std::string_view value);

// A target URI / conninfo as it may be shown and stored: "sqlite:..." as it
// is, a PostgreSQL one through RedactConninfo (applier/conninfo.h: only
// display-safe keywords kept), any other "scheme://user:pw@..." without
// ":pw"; other text unchanged.
std::string RedactUri(const std::string& uri);

}  // namespace migledger
