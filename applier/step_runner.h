// The types of the step runner (Applier::Impl::RunPlan and the functions it
// calls, in step_runner.cc and step_runner_no_tx.cc): how a step starts and
// what its failure recording needs. Internal to applier/.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "applier/driver.h"
#include "applier/migration_source.h"
#include "applier/sql_splitter.h"

namespace migledger {

// How one step of a plan starts (see Applier::Impl::RunStep).
struct StepStart {
  bool resuming = false;
  bool retrying = false;
  int resume_at = 0;
  // The hashes of the statements an earlier attempt acknowledged.
  const std::vector<std::string>* acked_hashes = nullptr;
};

// The step being run, as the step runner's functions share it.
struct StepContext {
  const Migration& migration;
  const MigrationFile& file;  // the up or down file that runs
  v1::Direction direction;
  const std::string& attempt;
  const std::vector<SqlStatement>& statements;
  int64_t started_micros;  // MonoMicros() when the statements began
};

// Where a statement failed, as Impl::Fail records it.
struct StepFailure {
  int statement_index = -1;  // -1: not a statement of the file
  const SqlStatement* statement = nullptr;
  SqlError error;
  Status status;
  bool rolled_back = true;  // false: a no-transaction step stopped mid-way
};

}  // namespace migledger
