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
//
// With MIGLEDGER_CRASH_RUN set as well, the selected point does not kill the
// process: it runs that shell command (once, and waits for it) and goes on.
// The server-stop tests (tests/server_kill_test.cc) stop the PostgreSQL
// server there, so the client sees its connection die at that very point.
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
    // A new ledger: RocksDB has created it (CURRENT), its format marker and
    // ledger id are not written yet.
    "ledger.before_format_marker",
};

// Points only the server-stop tests use: there a client kill is the same as
// one at a neighbouring point above, but a server that dies there is a
// different case (an answer the client never reads).
inline constexpr const char* kServerStopPoints[] = {
    "apply.before_commit_no_tx",  // no-tx step: its marker row (or the
                                  // file's own block) ready, before COMMIT
    "mirror.after_commit",        // outbox rows committed (own transaction)
    "postgres.commit_sent",       // COMMIT sent, its answer not read yet
    "postgres.statement_sent",    // a statement sent, its answer not read
};

// Kills the process if MIGLEDGER_CRASH_AT selects `name` (or runs
// MIGLEDGER_CRASH_RUN there, see above).
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
