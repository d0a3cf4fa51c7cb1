// The PostgreSQL driver's sessions: connecting one, the setup every work
// session runs first, and the reset between migrations.
#include "applier/postgres_driver_impl.h"
#include "applier/search_path.h"

namespace migledger {

Status PostgresDriver::ResetIfPending() {
  if (!reset_pending_ || PQtransactionStatus(conn_) != PQTRANS_IDLE)
    return Status::Ok();
  reset_pending_ = false;
  SqlError error;
  int results = 0;
  Status st = Exec(SessionReset(&results), &error);
  if (st.ok()) migration_state_ = false;
  return st.code() == Code::kMigrationFailed ? ResetFailed(error.message) : st;
}

Status PostgresDriver::ResetFailed(const std::string& message) {
  return TargetUnavailable(
      "cannot reset the session on " + Target() +
      " after a migration changed its settings: " + message);
}

void PostgresDriver::MakeSessionSetupReset(const std::string& search_path) {
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

std::string PostgresDriver::SessionReset(int* results) const {
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

PostgresDriver::Session PostgresDriver::ConnectSession(
    const std::string& conninfo) {
  Session out;
  // Later entries override earlier ones; the conninfo (expanded from
  // "dbname") may override connect_timeout and application_name.
  const char* keys[] = {"connect_timeout", "application_name", "dbname",
                        "client_encoding", nullptr};
  const char* values[] = {"10", "migledger", conninfo.c_str(), "UTF8", nullptr};
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

StatusOr<PGconn*> PostgresDriver::Connect(std::string* search_path) {
  Session session = ConnectSession(conninfo_);
  if (search_path != nullptr) *search_path = session.search_path;
  return Adopt(std::move(session));
}

StatusOr<PGconn*> PostgresDriver::Adopt(Session session) {
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

}  // namespace migledger
