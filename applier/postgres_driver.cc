// The PostgreSQL driver: opening it, the target's identity, and the catalog
// checks recovery of no-transaction steps asks for. The class and its other
// parts: applier/postgres_driver_impl.h.
#include "applier/postgres_driver.h"

#include <algorithm>
#include <cstring>
#include <random>

#include "applier/conninfo.h"
#include "applier/create_index_statement.h"
#include "applier/libpq_loader.h"
#include "applier/postgres_driver_impl.h"
#include "applier/sql_splitter.h"
#include "common/sha256.h"

namespace migledger {

PostgresDriver::~PostgresDriver() {
  if (pending_lock_session_.valid()) {
    Session unused = pending_lock_session_.get();
    if (unused.conn != nullptr) PQfinish(unused.conn);
  }
  Unlock();
  canceller_.reset();  // before what it cancels goes
  if (cancel_ != nullptr) PQfreeCancel(cancel_);
  if (conn_ != nullptr) PQfinish(conn_);
}

Status PostgresDriver::Init() {
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

// The system identifier and name, and a random part of its own.
StatusOr<std::string> PostgresDriver::NewDatabaseId() {
  const std::string& id = identity_.database_id;
  std::random_device rd;
  uint8_t raw[16];
  for (auto& b : raw) b = static_cast<uint8_t>(rd());
  return id.substr(0, id.find('/') + 1) + identity_.database_name + "/" +
         ToHex(raw, sizeof raw);
}

StatusOr<std::vector<std::string>> PostgresDriver::InvalidIndexes() {
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

StatusOr<std::optional<std::string>> PostgresDriver::LeftoverInvalidIndex(
    std::string_view statement) {
  const auto target = ParseCreateIndexConcurrently(statement);
  if (!target) return std::optional<std::string>();
  // The table resolves through the migration's search_path.
  auto res =
      Run("looking for an invalid index left by an earlier attempt",
          "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) "
          "FROM pg_catalog.pg_index i "
          "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
          "JOIN pg_catalog.pg_class t ON t.oid = i.indrelid "
          "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
          "WHERE t.oid = pg_catalog.to_regclass($1) "
          "AND c.relnamespace = t.relnamespace AND c.relname = $2 "
          "AND NOT i.indisvalid",
          {{target->table}, {target->index}}, false, Code::kTargetUnavailable);
  if (!res.ok()) return res.status();
  if (PQntuples(res->get()) != 1) return std::optional<std::string>();
  return std::optional<std::string>(PQgetvalue(res->get(), 0, 0));
}

bool PostgresDriver::ErrorShowsDone(const SqlError& error,
                                    std::string_view statement) const {
  // duplicate_column, _database, _function, _schema, _table (also an
  // index or a sequence), _object (a type, a constraint, an enum value);
  // for a DROP: undefined_table (also a view or a sequence), _object (an
  // index, a type), _function, invalid_schema_name, invalid_catalog_name
  static const std::vector<std::string_view> kExists = {
      "42701", "42P04", "42723", "42P06", "42P07", "42710"};
  static const std::vector<std::string_view> kGone = {"42P01", "42704", "42883",
                                                      "3F000", "3D000"};
  const auto& codes = IsDropStatement(statement) ? kGone : kExists;
  return std::find(codes.begin(), codes.end(), error.sqlstate) != codes.end();
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
