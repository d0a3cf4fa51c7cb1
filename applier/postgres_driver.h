// The PostgreSQL target driver, on libpq.
//
// Sessions. A driver holds up to two server sessions made from the same
// conninfo: the work session (opened by OpenPostgresDriver, runs migrations
// and reads/writes the tool's tables) and the lock session (opened by
// Lock(), closed by Unlock() or the destructor). The applier lock is a
// session-level advisory lock on the lock session, so the server frees it
// when the process dies or the connection drops.
//
// Lock keys. Advisory locks are per database, so one fixed key serves every
// target:
//   kPostgresApplierLockKey = first 8 bytes of SHA-256("migledger") read as a
//     big-endian signed 64-bit integer: 0x086ca742434dd1be
//     (607043952827027902). Held by Lock() on the lock session.
//   kPostgresSchemaLockKey = kPostgresApplierLockKey + 1. A transaction-level
//     advisory lock EnsureSchema() takes on the work session, so that two
//     processes creating the schema at once do not collide. It differs from
//     the applier key so that EnsureSchema() after Lock() in the same process
//     does not wait for itself.
//
// Session settings made on connect: application_name=migledger (unless the
// conninfo names one), client_encoding=UTF8, client_min_messages=warning,
// and a notice processor that discards what still arrives. Passwords come
// from the conninfo, PGPASSWORD or ~/.pgpass (libpq reads them); no Status
// this driver returns contains the password.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "applier/driver.h"
#include "common/status.h"

namespace migledger {

inline constexpr int64_t kPostgresApplierLockKey = 0x086ca742434dd1be;
inline constexpr int64_t kPostgresSchemaLockKey = kPostgresApplierLockKey + 1;

// Opens the work session for `conninfo`: a libpq URI ("postgres://",
// "postgresql://") or key=value conninfo, and reads the target's identity.
// A server that cannot be reached, or refuses the login, gives
// kTargetUnavailable ("cannot connect to <redacted uri>: <reason>"); a
// conninfo libpq cannot parse gives kInvalidInput.
StatusOr<std::unique_ptr<Driver>> OpenPostgresDriver(
    const std::string& conninfo);

// OfflineMarkerSql (applier/driver.h) for a PostgreSQL target.
std::string PostgresOfflineMarkerSql(const MarkerRow& row);

}  // namespace migledger
