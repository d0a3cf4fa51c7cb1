// The PostgreSQL driver's work session: transactions, statements, a step
// sent as one query, and how the server's errors map to a Status.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

#include "applier/postgres_driver_impl.h"
#include "common/crash_points.h"

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

}  // namespace

bool ParsePgUint64(std::string_view s, uint64_t* out) {
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

Status PostgresDriver::Begin() {
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

bool PostgresDriver::InTransaction() {
  const PGTransactionStatusType ts = PQtransactionStatus(conn_);
  return ts != PQTRANS_IDLE && ts != PQTRANS_UNKNOWN;
}

Status PostgresDriver::Commit() {
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

Status PostgresDriver::Rollback() {
  tool_role_in_transaction_ = false;
  PGTransactionStatusType ts = PQtransactionStatus(conn_);
  if (ts == PQTRANS_IDLE) return Status::Ok();
  if (ts == PQTRANS_UNKNOWN) return LostConnection("ROLLBACK", nullptr);
  return Simple("ROLLBACK");
}

Status PostgresDriver::Exec(const std::string& sql, SqlError* error) {
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
Status PostgresDriver::ExecStep(const StepBatch& batch,
                                StepBatchFailure* failure) {
  *failure = StepBatchFailure{};
  if (PQtransactionStatus(conn_) != PQTRANS_IDLE) {
    return Internal("ExecStep: a transaction is already open on " + Target());
  }
  const StepQuery query = BuildStepQuery(batch);
  if (PQsendQuery(conn_, query.sql.c_str()) == 0) {
    if (PQstatus(conn_) == CONNECTION_BAD)
      return LostConnection("sending a step", nullptr);
    return Internal("cannot send a step to " + Target() + ": " +
                    Scrub(LibpqMessage(PQerrorMessage(conn_))));
  }
  int done = 0;  // results before the first error: BEGIN, statements...
  PgResult failed = DrainResults(&done);
  const bool has_statements =
      batch.statements != nullptr && !batch.statements->empty();
  tool_role_in_transaction_ = !failed && query.switch_results > 0;
  if (!failed && query.reset_results > 0) migration_state_ = false;
  if (has_statements) migration_state_ = true;
  // The reset is part of the query's transaction: undone if it failed.
  if (failed && query.reset_results > 0) reset_pending_ = true;
  // No error, but the session gone before the last result: outcome unknown.
  if (!failed && PQstatus(conn_) != CONNECTION_BAD) return Status::Ok();
  return StepFailed(batch, query, failed.get(), done, failure);
}

PostgresDriver::StepQuery PostgresDriver::BuildStepQuery(
    const StepBatch& batch) {
  StepQuery q;
  // After an earlier step: the session's settings reset first, in the
  // same round trip.
  if (reset_pending_) q.sql = SessionReset(&q.reset_results) + "\n";
  q.reset_end = static_cast<int>(q.sql.size());
  reset_pending_ = false;
  q.sql += "BEGIN;\n";
  static const std::vector<SqlStatement> kNone;
  const std::vector<SqlStatement>& statements =
      batch.statements ? *batch.statements : kNone;
  q.offsets.reserve(statements.size());
  for (const SqlStatement& statement : statements) {
    q.offsets.push_back(q.sql.size());
    // The newline ends a trailing -- comment; an empty statement (";;")
    // is skipped by the server and yields no result.
    q.sql += statement.text;
    q.sql += "\n;\n";
  }
  q.statements_end = q.sql.size();
  // The bookkeeping runs as the tool's own role whatever role the
  // migration took (SET ROLE app_owner is the usual way to give the
  // application's role what a migration creates), for this transaction
  // only: LOCAL, so a no-transaction file's session keeps its role.
  if (!statements.empty() || (migration_state_ && q.reset_results == 0)) {
    q.sql += kToolRoleForTransaction;
    q.switch_results = kToolRoleForTransactionResults;
  }
  if (batch.insert_marker) {
    const MarkerRow& m = *batch.insert_marker;
    q.sql +=
        "INSERT INTO \"migledger\".\"applied\" (\"version\", \"checksum\", "
        "\"attempt_id\", \"applied_at\") VALUES (" +
        Literal(m.version) + ", " + Literal(m.checksum) + ", " +
        Literal(m.attempt_id) + ", " +
        (m.applied_at.empty() ? std::string("now()")
                              : Literal(m.applied_at) + "::timestamptz") +
        ");";
  } else if (!batch.delete_marker.empty()) {
    q.sql += "DELETE FROM \"migledger\".\"applied\" WHERE \"version\" = " +
             Literal(batch.delete_marker) + ";";
  }
  return q;
}

Status PostgresDriver::StepFailed(const StepBatch& batch,
                                  const StepQuery& query,
                                  const PGresult* failed, int done,
                                  StepBatchFailure* failure) {
  static const std::vector<SqlStatement> kNone;
  const std::vector<SqlStatement>& statements =
      batch.statements ? *batch.statements : kNone;
  if (failed != nullptr && done < query.reset_results &&
      PQstatus(conn_) != CONNECTION_BAD) {
    // Nothing of the step ran: the reset itself failed, or the server
    // found a syntax error in the step before running any of the query.
    FillSqlError(query.sql, failed, &failure->error);
    if (failure->error.position < query.reset_end) {
      (void)Rollback();
      return ResetFailed(failure->error.message);
    }
    done = query.reset_results;
  }
  done -= query.reset_results;
  const int n = static_cast<int>(statements.size());
  // done == 0: BEGIN failed; 1..n: statement done-1 failed; then the role
  // switch, then the marker.
  failure->statement_index = done >= 1 && done <= n ? done - 1 : -1;
  const bool bookkeeping_failed = done > n;
  if (SessionLost(failed)) return LostConnection("running a step", failed);
  FillSqlError(query.sql, failed, &failure->error);
  // The server parses the whole query before it runs any of it, so a
  // syntax error comes before any result: its position (counted from the
  // start of the whole query) names the statement then.
  int& pos = failure->error.position;
  if (pos >= 0) {
    failure->statement_index = -1;
    for (int i = 0; i < n; ++i) {
      const int begin = static_cast<int>(query.offsets[i]);
      const int end = static_cast<int>(i + 1 < n ? query.offsets[i + 1]
                                                 : query.statements_end);
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
  const bool marker_failed = done == n + 1 + query.switch_results;
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
        " in migledger.applied) on " + Target() + ": " + failure->error.message;
  }
  return MigrationFailed(failure->error.message);
}

int PostgresDriver::ReadOnlyStatement(
    const std::vector<SqlStatement>& statements) {
  for (size_t i = 0; i < statements.size(); ++i) {
    std::string text;  // lower case, each run of blanks one space
    for (char c : statements[i].text) {
      if (std::isspace(static_cast<unsigned char>(c))) {
        if (text.empty() || text.back() != ' ') text += ' ';
      } else {
        text += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
    }
    if (text.find("read only") != std::string::npos ||
        text.find("transaction_read_only") != std::string::npos) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

PgResult PostgresDriver::DrainResults(int* succeeded) {
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

std::string PostgresDriver::Literal(const std::string& value) const {
  char* quoted = PQescapeLiteral(conn_, value.data(), value.size());
  if (quoted == nullptr) return "NULL";  // out of memory: the INSERT fails
  std::string out(quoted);
  PQfreemem(quoted);
  return out;
}

bool PostgresDriver::SessionLost(const PGresult* failed) const {
  if (PQstatus(conn_) == CONNECTION_BAD) return true;
  if (failed == nullptr) return false;
  const std::string sqlstate = ErrorField(failed, PG_DIAG_SQLSTATE);
  return sqlstate.empty() || sqlstate.rfind("08", 0) == 0 ||
         sqlstate.rfind("57P0", 0) == 0;
}

Status PostgresDriver::LostConnection(const std::string& what,
                                      const PGresult* res) {
  std::string message = res != nullptr ? PrimaryMessage(res, conn_)
                                       : LibpqMessage(PQerrorMessage(conn_));
  return TargetUnavailable("lost the connection to " + Target() + " while " +
                           what + ": " + Scrub(message));
}

Status PostgresDriver::Simple(const char* sql) {
  PgResult res(PQexec(conn_, sql));
  if (PQresultStatus(res.get()) == PGRES_COMMAND_OK) return Status::Ok();
  if (SessionLost(res.get())) return LostConnection(sql, res.get());
  return MigrationFailed(std::string(sql) + " failed on " + Target() + ": " +
                         Scrub(PrimaryMessage(res.get(), conn_)));
}

StatusOr<PgResult> PostgresDriver::Run(const std::string& what,
                                       const std::string& sql,
                                       const std::vector<PgParam>& params,
                                       bool binary_result, Code sql_error_code,
                                       std::string* sqlstate) {
  MIGLEDGER_RETURN_IF_ERROR(ResetIfPending());
  std::vector<const char*> values(params.size());
  std::vector<int> lengths(params.size());
  std::vector<int> formats(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    values[i] = params[i].null ? nullptr : params[i].value.data();
    lengths[i] = static_cast<int>(params[i].value.size());
    formats[i] = params[i].binary ? 1 : 0;
  }
  PgResult res(PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()),
                            nullptr, values.data(), lengths.data(),
                            formats.data(), binary_result ? 1 : 0));
  ExecStatusType st = PQresultStatus(res.get());
  if (res && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)) return res;
  if (SessionLost(res.get())) return LostConnection(what, res.get());
  if (sqlstate != nullptr) *sqlstate = ErrorField(res.get(), PG_DIAG_SQLSTATE);
  return Status(sql_error_code, what + " on " + Target() + ": " +
                                    Scrub(PrimaryMessage(res.get(), conn_)));
}

void PostgresDriver::FillSqlError(const std::string& sql, const PGresult* res,
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
  if (ParsePgUint64(position, &pos) &&
      pos <= static_cast<uint64_t>(INT32_MAX)) {
    error->position =
        PositionToByteOffset(sql, static_cast<int>(pos), !server_counts_bytes_);
  }
}

}  // namespace migledger
