// The central audit store: a PostgreSQL database (audit_store in
// migledger.toml) that gathers every target's events from every runner, so a
// fleet's whole history can be audited in one place.
//
// Rows are keyed by (target key, target sequence) and hold the exact event
// bytes with their leaf hash and target chain head, as the targets' mirrors
// do. Each row also has a store sequence: 1, 2, 3, ... in the order rows
// arrived, with no gaps, assigned while the pusher holds the store's push
// lock (so pushes are serialized and a reader sees a dense prefix). That
// order, never changed, is the store's history: `--store` readers rebuild it
// as a ledger whose sequence N is store sequence N and whose id is the
// store's own (created once, migledger_store.identity), so a digest saved
// from the store is a prefix of every later state of it.
//
// Pushing is idempotent: the store's head per target is the outbox pointer,
// so a push interrupted by a network failure resumes on the next run, and a
// store whose chain differs from the ledger's is a fork (kDrift). The
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
  static StatusOr<std::unique_ptr<AuditStore>> Open(
      const std::string& conninfo);
  virtual ~AuditStore() = default;

  // Sends every event of every target in `ledger` that the store lacks, in
  // one transaction that appends them to the store's order. Returns the
  // number of events sent.
  virtual StatusOr<uint64_t> Push(Ledger* ledger) = 0;
  // Appends every stored event into `ledger` in store order (REQUIRES: an
  // empty ledger, so its sequence N is store sequence N), verifying every
  // hash and chain link and that the order has no gap (kLedgerCorrupt
  // otherwise).
  virtual StatusOr<uint64_t> PullAll(Ledger* ledger) = 0;
  // The store's id: 32 lowercase hex characters, created with the store's
  // schema and never changed. kLedgerCorrupt when it is missing or malformed.
  virtual StatusOr<std::string> StoreId() = 0;
  // The store schema version.
  virtual int schema_version() const = 0;
};

// The store URL from the project config (audit_store or the variable named
// by audit_store_url_env), or "" when none is configured.
std::string AuditStoreUrl(const std::string& literal,
                          const std::string& env_name);

}  // namespace migledger
