// libpq, loaded when the first PostgreSQL connection is made rather than at
// program start.
//
// libpq pulls in about twenty shared libraries (GnuTLS, Kerberos, LDAP,
// SASL...) whose loading and initialisation cost every migledger process
// about 7 ms, SQLite-only runs included. So the binary does not link libpq:
// applier/libpq_loader.cc defines the libpq functions the drivers call as
// small forwarders to libpq.so.5, which LoadLibpq() opens with dlopen().
// Call sites use the ordinary libpq API (libpq-fe.h).
#pragma once

#include "common/status.h"

namespace migledger {

// Opens libpq.so.5 once (thread-safe) and resolves every function the
// drivers use. Must succeed before any PQ* call. A missing library or
// symbol gives kTargetUnavailable naming the library and what to install.
Status LoadLibpq();

}  // namespace migledger
