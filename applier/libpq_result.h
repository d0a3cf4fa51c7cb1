// libpq results and error text as the PostgreSQL code of applier/ reads
// them (the target driver and the audit store). Internal to applier/.
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <string>

namespace migledger {

struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
// Owns a PGresult; null when libpq returned none.
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

// libpq's message text (which ends in '\n' and may hold several lines: one
// per host tried, plus indented hints) as one line: the unindented lines
// joined by "; ". "unknown libpq error" when there is none.
std::string LibpqMessage(const char* raw);

// A field of a failed result (PG_DIAG_SQLSTATE...), "" when absent or when
// `res` is null.
std::string ErrorField(const PGresult* res, int field);

// The primary message of a failed result, else libpq's message for the
// result, else the connection's.
std::string PrimaryMessage(const PGresult* res, PGconn* conn);

// A notice processor that drops what the server still sends.
void DiscardNotice(void* arg, const char* message);

}  // namespace migledger
