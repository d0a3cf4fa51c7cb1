// The PostgreSQL driver's applier lock: a session-level advisory lock on a
// session of its own, which the server frees when the process dies.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "applier/postgres_driver_impl.h"

namespace migledger {

// Opens the lock session on a helper thread (a backend start costs the
// server a few ms), so it overlaps the caller's other work; Lock() joins.
void PostgresDriver::BeginLock() {
  if (lock_conn_ != nullptr || pending_lock_session_.valid()) return;
  pending_lock_session_ =
      std::async(std::launch::async, ConnectSession, conninfo_);
}

Status PostgresDriver::Lock(std::chrono::milliseconds timeout) {
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
              ? TargetUnavailable("lost the lock session to " + Target() +
                                  ": " +
                                  Scrub(PrimaryMessage(res.get(), lock_conn_)))
              : TargetUnavailable("cannot take the migledger lock on " +
                                  Target() + ": " +
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
bool PostgresDriver::LockHeldElsewhere() {
  const uint64_t key = static_cast<uint64_t>(kPostgresApplierLockKey);
  auto res = Run("probing the migledger lock",
                 "SELECT pg_catalog.count(*)::text FROM pg_catalog.pg_locks "
                 "WHERE locktype = 'advisory' AND granted "
                 "AND objsubid = 1 AND classid::bigint = $1::bigint "
                 "AND objid::bigint = $2::bigint AND database = "
                 "(SELECT oid FROM pg_catalog.pg_database "
                 "WHERE datname = pg_catalog.current_database()) "
                 "AND pid <> pg_catalog.pg_backend_pid()",
                 {PgParam{std::to_string(key >> 32)},
                  PgParam{std::to_string(key & 0xffffffffu)}},
                 false, Code::kTargetUnavailable);
  return res.ok() && PQntuples(res->get()) == 1 &&
         std::strcmp(PQgetvalue(res->get(), 0, 0), "0") != 0;
}

Status PostgresDriver::WaitForEarlierSessions(
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
            {PgParam{lock_pid}}, false, Code::kTargetUnavailable);
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

void PostgresDriver::Unlock() {
  if (lock_conn_ == nullptr) return;
  if (lock_held_ && PQstatus(lock_conn_) == CONNECTION_OK) {
    const std::string sql = "SELECT pg_catalog.pg_advisory_unlock(" +
                            std::to_string(kPostgresApplierLockKey) + ")";
    PgResult res(PQexec(lock_conn_, sql.c_str()));
    // Closing the session below frees the lock in any case.
  }
  CloseLockSession();
}

void PostgresDriver::CloseLockSession() {
  if (lock_conn_ != nullptr) PQfinish(lock_conn_);
  lock_conn_ = nullptr;
  lock_held_ = false;
}

}  // namespace migledger
