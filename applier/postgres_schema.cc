// The PostgreSQL driver's schema "migledger": created on first use, and the
// history a copied database inherited set aside when it takes an identity
// of its own (migledger.identity, migledger.events_inherited).
#include <cstring>

#include "applier/postgres_driver_impl.h"

namespace migledger {

Status PostgresDriver::EnsureSchema() {
  // Fast path without side effects (and without needing CREATE rights)
  // when everything is there.
  {
    auto res = Run("checking the migledger schema",
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
  return TargetUnavailable("cannot create the migledger schema on " + Target() +
                           ": " + message);
}

StatusOr<bool> PostgresDriver::HasSchema() {
  auto res = Run("checking the migledger schema",
                 "SELECT pg_catalog.to_regclass('\"migledger\".\"applied\"') "
                 "IS NOT NULL",
                 {}, false, Code::kTargetUnavailable);
  if (!res.ok()) return res.status();
  return std::strcmp(PQgetvalue(res->get(), 0, 0), "t") == 0;
}

// The id goes into migledger.identity only when it is not the default
// one Init() reads (`resolve --new-identity` of a TEMPLATE clone).
Status PostgresDriver::SetAsideInheritedHistory(
    const std::string& new_database_id, const std::string& inherited_from) {
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

}  // namespace migledger
