// The passwords a PostgreSQL connection may echo in its messages, and their
// removal from any text the tool shows or stores. Internal to applier/ (the
// target driver and the audit store); what a conninfo may show is
// applier/conninfo.h's.
#pragma once

#include <libpq-fe.h>

#include <string>
#include <vector>

namespace migledger {

class LibpqSecrets {
 public:
  // Starts with the values redaction drops from `conninfo`
  // (ConninfoSecrets).
  explicit LibpqSecrets(const std::string& conninfo);

  // Remembers the password libpq used for `conn` (from the conninfo,
  // PGPASSWORD or ~/.pgpass), and every other secret option (sslpassword).
  // A connection that failed still tells which password it tried.
  void Learn(PGconn* conn);

  // `text` with every secret learned so far, and PGPASSWORD as it is set
  // now, replaced by "***".
  std::string Scrub(std::string text) const;

 private:
  void Add(const char* secret);

  std::vector<std::string> secrets_;
};

}  // namespace migledger
