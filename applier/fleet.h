// Fleet apply: one plan rolled out to a group of targets (migledger.toml
// [groups]), canaries first, then the rest with N at a time, stopping new
// targets at the first failure. Each target keeps its own lock, chain and
// state, so a rerun after a crash or a fix resumes where each target is.
#pragma once

#include <string>
#include <vector>

#include "applier/applier.h"

namespace migledger {

struct FleetOptions {
  std::string group;
  int parallel = 1;  // targets applied at the same time
  int canary = 1;    // targets applied (and required to succeed) first
  std::string to;
};

struct FleetRow {
  std::string target;
  std::string from_version;  // highest applied before ("" = none)
  std::string to_version;    // highest applied after
  std::string outcome;       // "applied", "up to date", "failed", "not started"
  int64_t duration_micros = 0;
  std::string message;  // the error, for a failed target
  bool canary = false;
};

struct FleetReport {
  std::vector<FleetRow> rows;  // in group order
  // Not OK when a target failed (its error; the others are in rows).
  Status failure;
};

// Applies `fleet.to` (or everything) to every target of the group with one
// shared ledger. `base` supplies the config, reason and lock timeout.
StatusOr<FleetReport> ApplyFleet(const ApplierOptions& base, const FleetOptions& fleet);

}  // namespace migledger
