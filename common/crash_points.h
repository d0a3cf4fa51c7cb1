// Named crash points for the crash tests.
//
// Production code calls CrashPoint("apply.after_commit") at the places where
// a crash would leave ledger and target in an interesting state. When the
// binary is built with MIGLEDGER_CRASH_POINTS and the environment variable
// MIGLEDGER_CRASH_AT names the point (optionally "name:N" for its N-th hit,
// 1-based), the process kills itself with SIGKILL there. Release builds
// compile the check away.
//
// Every point is listed in kCrashPoints so the crash tests can enumerate them.
#pragma once

#include <string_view>

namespace migledger {

inline constexpr const char* kCrashPoints[] = {
    "apply.after_run_started",   // RunStarted (the plan's intent) durable
    "apply.after_step_started",  // StepStarted appended
    "apply.after_begin",         // BEGIN on the target
    "apply.after_statement",     // after each statement of a step
    "apply.before_commit",       // statements and marker row done
    "apply.after_commit",        // committed, outcome event not yet written
                                 // (also a no-tx file's own COMMIT, its
                                 // acknowledgements not yet appended)
    "apply.after_outcome",       // StepApplied/StepReverted appended
    "apply.between_statements_no_tx",  // no-tx step: statement done, event not
                                       // yet
    "apply.after_statement_event_no_tx",  // no-tx: StatementApplied appended
    "apply.before_run_finished",  // all steps done, RunFinished not written
    "mirror.before_commit",       // outbox rows inserted in the target, not
                                  // committed
    "store.before_commit",        // audit store rows inserted, not committed
};

// Kills the process if MIGLEDGER_CRASH_AT selects `name` (see above).
void CrashPoint(std::string_view name);

// Runs `hook(arg)` on this thread right before one of its crash points kills
// the process (nullptr: none). The applier drains its queued ledger appends
// there (applier/ledger_writer.h), so each point shows the state its comment
// above names; a crash before the queue drained equals a crash at an
// earlier point.
using CrashPointHook = void (*)(void* arg);
void SetCrashPointHook(CrashPointHook hook, void* arg);

// True when this build honours MIGLEDGER_CRASH_AT.
bool CrashPointsEnabled();

}  // namespace migledger
