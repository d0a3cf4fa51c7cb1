// PostgreSQL connection strings: what of them may be shown or stored.
//
// Every libpq URI ("postgres://", "postgresql://") and key=value conninfo
// is read by libpq's own parser (PQconninfoParse, through the dlopen()ed
// libpq of applier/libpq_loader.h), never by a scanner of our own, so what
// migledger redacts is exactly what libpq connects with.
//
// Redaction keeps only the keywords on an allow-list of libpq keywords known
// to hold no secret (host, port, dbname, user, sslmode, ...), and of those
// only the ones libpq itself does not mark as secret or debug
// (PQconndefaults' dispchar "" ). Every other keyword and its value is
// dropped: password and sslpassword, but also options (it may carry any
// setting) and whatever a newer libpq adds.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace migledger {

// True when `text` is meant as a PostgreSQL connection string: it starts
// with "postgres://" or "postgresql://" (any case) or holds a '='.
bool LooksLikePostgresConninfo(std::string_view text);

struct ConninfoOption {
  std::string keyword;
  std::string value;
};

// The options set in `conninfo` (URI or key=value), in libpq's order, as
// PQconninfoParse returns them (percent-decoding and quoting undone).
// A string libpq refuses gives kInvalidInput whose message quotes nothing of
// the input but libpq keyword names; a missing libpq gives
// kTargetUnavailable.
StatusOr<std::vector<ConninfoOption>> ParseConninfo(
    const std::string& conninfo);

// True for a keyword whose value may be shown and stored (the allow-list,
// intersected with what libpq does not mark as a password or debug option).
// REQUIRES: libpq loaded (LoadLibpq() succeeded); false otherwise.
bool IsDisplaySafeConninfoKeyword(std::string_view keyword);

// True for a keyword libpq marks as a password (PQconndefaults' dispchar
// "*": password, sslpassword, ...).
// REQUIRES: libpq loaded (LoadLibpq() succeeded); false otherwise.
bool IsSecretConninfoKeyword(std::string_view keyword);

// Every keyword libpq knows (PQconndefaults), for tests; empty without libpq.
std::vector<std::string> KnownConninfoKeywords();

// `conninfo` with only its display-safe options, in the form it was given:
//   postgresql://user:pw@host:5432/db?sslpassword=x  ->
//   postgresql://user@host:5432/db host=h password='p w' dbname=d -> dbname=d
//   host=h
// A dbname that is itself a connection string is redacted the same way. A
// string that is not a connection string (LooksLikePostgresConninfo) is
// returned unchanged; one libpq cannot parse (or no libpq) gives
// "postgresql://(unparsable)" or "(unparsable connection string)".
std::string RedactConninfo(const std::string& conninfo);

// The values redaction drops from `conninfo`, for scrubbing messages (a
// server that refuses `options` quotes them): every password and
// sslpassword, and values of 4 bytes or more of the other keywords that are
// not display-safe; each decoded and percent-encoded. Empty when it does not
// parse.
std::vector<std::string> ConninfoSecrets(const std::string& conninfo);

// kInvalidInput when `conninfo` holds a secret option (a password in the
// user info or a password/sslpassword parameter), naming `where` and the
// ways to pass one instead:
//   "<where> holds a password (sslpassword): keep it out of files and the
//    ledger: use url_env (an environment variable with the URI),
//    PGPASSWORD or ~/.pgpass"
// Also kInvalidInput when libpq cannot parse it. A string that is not a
// PostgreSQL connection string is Ok.
Status RefuseStoredSecret(const std::string& conninfo,
                          const std::string& where);

// Replaces every occurrence of each non-empty secret in `text` by "***".
std::string ScrubSecrets(std::string text,
                         const std::vector<std::string>& secrets);

}  // namespace migledger
