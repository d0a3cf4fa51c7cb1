// The central audit store: a PostgreSQL database (audit_store in
// migledger.toml) that gathers every target's events from every runner, so a
// fleet's whole history can be audited in one place.
//
// Rows are keyed by (target key, target sequence) and hold the exact event
// bytes with their leaf hash and target chain head, as the targets' mirrors
// do. Pushing is idempotent: the store's head per target is the outbox
// pointer, so a push interrupted by a network failure resumes on the next
// run, and a row that exists with other bytes is a fork (kDrift). The
// store's schema is created and upgraded by the tool itself, from its own
// list of migrations recorded in migledger_store.schema_history.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "ledger/ledger.h"

namespace migledger {

class AuditStore {
 public:
  // Connects and brings the store's schema up to date.
  static StatusOr<std::unique_ptr<AuditStore>> Open(const std::string& conninfo);
  virtual ~AuditStore() = default;

  // Sends every event of every target in `ledger` that the store lacks.
  // Returns the number of events sent.
  virtual StatusOr<uint64_t> Push(Ledger* ledger) = 0;
  // Appends every stored event into `ledger` (normally a fresh one),
  // verifying every hash and chain link (kLedgerCorrupt otherwise).
  virtual StatusOr<uint64_t> PullAll(Ledger* ledger) = 0;
  // The store schema version.
  virtual int schema_version() const = 0;
};

// The store URL from the project config (audit_store or the variable named
// by audit_store_url_env), or "" when none is configured.
std::string AuditStoreUrl(const std::string& literal, const std::string& env_name);

}  // namespace migledger
