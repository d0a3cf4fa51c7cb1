// The applier: the one algorithm that decides what to run on a target from
// the ledger checked against the target, runs it, and recovers from crashes.
// This header is the public API of applier/ (with config.h, driver.h for
// identities, migration_source.h and planner.h for the data it returns).
//
// Crash safety (see DESIGN.md "Crash-safe apply: the invariants"):
//  - before a step touches the target its intent is durable: a synced
//    RunStarted that lists the whole plan;
//  - a transactional step commits its marker row and its mirrored events in
//    the step's own transaction, so the marker is the ground truth;
//  - every command that may change a target first reconciles started steps
//    that have no terminal event (one StepRecovered each).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "applier/config.h"
#include "applier/driver.h"
#include "applier/migration_source.h"
#include "applier/planner.h"
#include "ledger/ledger.h"

namespace migledger {

struct ApplierOptions {
  ProjectConfig config;
  std::string target;        // --target (URI or name); "" = default target
  std::string command_line;  // recorded (redacted) in RunStarted
  std::string reason;        // --reason
  std::chrono::milliseconds lock_timeout{10000};
  // See ProjectConfig::allow_out_of_order.
  bool allow_out_of_order = false;
  // Set by `resolve`: kRestored skips the check that the target is not a
  // copy of another file holding the same database id (the operator says it
  // is the database, restored); kNewIdentity opens the target (locked)
  // without pulling or pushing its mirror, which holds the history of the
  // database it was copied from (see ResolveNewIdentity).
  enum class Resolving { kNo, kRestored, kNewIdentity };
  Resolving resolving = Resolving::kNo;
  // When set, use this open ledger instead of opening config.ledger_dir
  // (fleet apply: one ledger, many targets, one thread per target).
  std::shared_ptr<Ledger> shared_ledger;
};

enum class AccessMode {
  kRead,   // status, plan: never writes the target, never waits for locks
  kWrite,  // apply, down, recover, baseline...: locks ledger and target
};

struct StepReport {
  std::string version;
  std::string slug;
  v1::Direction direction = v1::DIRECTION_UP;
  // "applied", "reverted", "failed", or "unknown": the target went away
  // while the step's COMMIT (or a no-transaction statement) was in flight.
  std::string outcome;
  int64_t duration_micros = 0;
  std::string error;
};

struct RunReport {
  std::string run_id;
  std::vector<StepReport> steps;
  std::vector<std::string> recovered;    // human lines, one per StepRecovered
  std::vector<std::string> out_of_band;  // versions found applied offline
  int pulled_events = 0;                 // events caught up from the mirror
  // Not OK when a step failed: the steps before it are in `steps` and stay
  // applied; the failed one is last, with outcome "failed" (or "unknown":
  // kTargetUnavailable, nothing recorded as its result, see DESIGN.md
  // "Unknown outcomes"; the next run learns it from the target).
  ::migledger::Status failure;
};

struct StatusRow {
  std::string version;
  std::string slug;
  std::string state;  // "applied" | "pending" | "failed" | "missing file"
  std::string applied_at;
  std::string note;
};

struct StatusReport {
  TargetIdentity identity;  // database_id empty when never migrated
  std::vector<StatusRow> rows;
  std::vector<DriftItem> drift;
  std::vector<OpenAttempt> unfinished;
  // Only probed when there are unfinished steps: another migledger (apply,
  // down or recover) holds the target's lock now, so those steps are being
  // run, not left behind by a crash.
  bool running_elsewhere = false;
  uint64_t target_events = 0;
};

// What `resolve --new-identity` did.
struct NewIdentityReport {
  std::string old_database_id;  // the id the copy shared with its original
  std::string new_database_id;
  uint64_t inherited_events = 0;  // mirror rows kept as the inherited history
};

class Applier {
 public:
  // Loads migrations, opens the ledger and the target. In kWrite mode also
  // takes the target lock, creates the tool's tables and catches the local
  // ledger up with the target's mirror (and pushes what the mirror lacks).
  static StatusOr<std::unique_ptr<Applier>> Open(ApplierOptions options,
                                                 AccessMode mode);
  // `apply`: Open(kWrite) and Apply(to), unless a read-only first look
  // finds that Apply would change nothing (no unfinished step, no drift,
  // nothing applied out of band, the mirror in sync, no audit store to feed
  // and nothing pending). Most applies in CI find nothing to do: they then
  // take no ledger write lock and no fsync, and return a report with no
  // steps (and the outcomes the look learned from the target's mirror in
  // RunReport::recovered).
  static StatusOr<RunReport> OpenAndApply(ApplierOptions options,
                                          const std::string& to);
  ~Applier();

  // What `status` shows: each migration's state, drift, unfinished steps.
  StatusOr<StatusReport> Inspect();
  // The steps apply / down would run now (no reconciliation, no writes).
  StatusOr<std::vector<StepPlan>> PlanApply(const std::string& to);
  StatusOr<std::vector<StepPlan>> PlanDown(const std::string& to, int steps);

  // Reconciles, refuses on drift, then applies pending migrations up to
  // `to`. A failed migration is reported in RunReport::failure
  // (kMigrationFailed with the version, file, line and database message);
  // everything before it stays applied.
  StatusOr<RunReport> Apply(const std::string& to);
  StatusOr<RunReport> Down(const std::string& to, int steps);
  // Only reconciliation (and out-of-band detection).
  StatusOr<RunReport> Recover();
  // Drift between ledger, target and files; records nothing.
  StatusOr<std::vector<DriftItem>> Validate();
  // Audited operator decisions: new events, never edits.
  ::migledger::Status Baseline(const std::string& version,
                               const std::string& reason);
  ::migledger::Status AcceptChecksum(const std::string& version,
                                     const std::string& reason);
  // `resolve --restored`: the target was restored from an older backup (or
  // its marker rows were changed by hand): its marker rows are its state
  // from now on. Records a Resolved event (in the ledger and the target's
  // mirror) listing each version whose state changes: those the ledger had
  // applied that the target lacks (`apply` runs them again) and those the
  // target has that the ledger had not (applied, with the marker's
  // checksum). kInvalidInput when the marker rows agree with the ledger.
  StatusOr<std::vector<v1::ResolvedVersion>> ResolveRestored(
      const std::string& reason);
  // `resolve --new-identity`: the target is a copy of another database (a
  // copied SQLite file, a PostgreSQL CREATE DATABASE ... TEMPLATE) and
  // starts a history of its own: it takes a new id, the mirror rows it
  // inherited are kept apart (Driver::AdoptIdentity), and a Resolved event
  // naming the old id and chain and listing its marker rows starts its new
  // chain. REQUIRES: opened with Resolving::kNewIdentity. kUnsupported for
  // a PostgreSQL clone that has its original's system identifier and name.
  StatusOr<NewIdentityReport> ResolveNewIdentity(const std::string& reason);
  // The offline script for the pending plan (marker inserts included) and a
  // PlanExported event with its hash.
  StatusOr<std::string> ExportPlanSql(const std::string& to);

 private:
  struct Impl;
  // What a read-only view hands to the writer of the same command
  // (OpenAndApply): neither the files nor the target connection twice.
  struct Handoff;
  static StatusOr<std::unique_ptr<Applier>> OpenWith(ApplierOptions options,
                                                     AccessMode mode,
                                                     Handoff handoff);
  // True when Apply(to) would change nothing. REQUIRES: opened in kRead
  // mode.
  StatusOr<bool> NothingToApply(const std::string& to);
  // A read-only applier that replayed a long history keeps a snapshot of its
  // projection; this opens the ledger for writing (without waiting for its
  // lock) and saves it, so the next command replays less. Best effort.
  void SaveUnsavedProjection();

  explicit Applier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace migledger
