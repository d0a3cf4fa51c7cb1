// Planning: what the ledger says happened to a target (a projection of its
// events), checked against the target's marker rows and the files on disk.
// Pure functions over data; no I/O, so they are unit-tested directly.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "applier/driver.h"
#include "applier/migration_source.h"
#include "migledger/v1/event.pb.h"

namespace migledger {

// What the ledger knows about one version on one target.
struct VersionHistory {
  std::string version;
  bool applied = false;
  std::string checksum;    // checksum applied (or accepted later)
  std::string applied_at;  // RFC 3339 of the terminal event
  std::string last_error;  // message of the last failure, if the last
                           // attempt failed
  std::vector<std::string> accepted_checksums;
};

// A started step with no terminal event yet (a crash or a kill).
struct OpenAttempt {
  std::string version;
  std::string attempt_id;
  v1::Direction direction = v1::DIRECTION_UP;
  v1::TxMode tx_mode = v1::TX_MODE_TRANSACTION;
  std::string checksum;
  int statement_count = 0;
};

// Progress of a no-transaction step across attempts: hashes of the
// statements acknowledged so far, in order.
struct NoTxProgress {
  v1::Direction direction = v1::DIRECTION_UP;
  std::vector<std::string> statement_hashes;
};

struct Projection {
  std::map<std::string, VersionHistory> versions;  // canonical version ->
  std::vector<OpenAttempt> open_attempts;
  std::map<std::string, NoTxProgress> no_tx_progress;  // canonical version ->
  uint64_t events = 0;
  int64_t last_event_micros = 0;  // time of the newest event
};

// Where a projection snapshot stands in its target's chain.
struct SnapshotPoint {
  std::string target_key;
  uint64_t target_size = 0;  // the target's events 1..target_size folded in
  std::string target_chain;  // 32 bytes: the target chain head after them
};

// Feeds a target's events in target order.
class ProjectionBuilder {
 public:
  void Add(const v1::Event& event);
  const Projection& projection() const { return p_; }
  Projection Take() && { return std::move(p_); }

  // A builder continuing from a SnapshotOf() the projection it had built,
  // and where that stands; nullopt when `bytes` do not decode or were
  // written by another revision of the projection code. The caller checks
  // `at` against its ledger.
  static std::optional<ProjectionBuilder> Restore(const std::string& bytes,
                                                  SnapshotPoint* at);

 private:
  void Close(const std::string& attempt_id);
  Projection p_;
  std::map<std::string, OpenAttempt> open_;  // attempt id -> attempt
  std::vector<std::string> open_order_;
};

// `p` as bytes (a v1::ProjectionSnapshot) standing at `at`: everything a
// builder needs to go on with the events after it (ProjectionBuilder::
// Restore).
std::string SnapshotOf(const Projection& p, const SnapshotPoint& at);

struct DriftItem {
  std::string version;
  std::string kind;  // unknown_marker | missing_marker | checksum_changed |
                     // missing_file
  std::string details;
};

struct OutOfBandStep {
  std::string version;
  std::string checksum;
  std::string evidence;
};

// Compares ledger, target and files. Markers written by an offline script
// (attempt id "" or "offline:...") that the ledger does not know yet are
// out-of-band applications, not drift, when their checksum matches the file.
void CheckTarget(const std::vector<Migration>& migrations,
                 const Projection& projection,
                 const std::vector<MarkerRow>& markers,
                 std::vector<DriftItem>* drift,
                 std::vector<OutOfBandStep>* out_of_band);

struct StepPlan {
  const Migration* migration = nullptr;
  v1::Direction direction = v1::DIRECTION_UP;
};

// The error for a version flag (--to, --version) that names no migration
// file: "not a version" when it is not digits at all.
Status NoSuchVersion(const std::string& flag, const std::string& version);

// Versions on disk without a marker row, in order, up to and including
// `to` (all when empty). Returns kInvalidInput when `to` names no file.
StatusOr<std::vector<StepPlan>> PlanUp(const std::vector<Migration>& migrations,
                                       const std::vector<MarkerRow>& markers,
                                       const std::string& to);

// Applied versions to revert, newest first: the last `steps`, or all above
// `to`. A step without a down file is kInvalidInput naming it.
StatusOr<std::vector<StepPlan>> PlanDown(
    const std::vector<Migration>& migrations,
    const std::vector<MarkerRow>& markers, const std::string& to, int steps);

}  // namespace migledger
