// Ctrl-C (SIGINT) and SIGTERM, handled so that nothing is left half done.
//
// While a plan runs (an InterruptibleWork is alive) the first signal marks
// the process interrupted and asks every registered target session to cancel
// its running statement (PostgreSQL: a cancel request; SQLite:
// sqlite3_interrupt). The step then fails and rolls back like any failed
// step, the ledger records it, and the applier starts no further step.
// Outside such work, or on a second signal, the process ends at once by the
// signal, as without a handler: nothing was started then that a crash would
// not also leave consistent. After an interrupted plan, main() ends the
// process by the same signal once the error is printed
// (EndByInterruptSignal), so a calling shell sees the interrupt and stops
// too, as it would for any other program.
//
// The signals are blocked in every thread and taken by one watcher thread
// (sigwait), so the cancellers run in normal thread context under a mutex:
// a session cannot be freed while its canceller runs.
#pragma once

namespace migledger {

// Blocks SIGINT and SIGTERM and starts the watcher. Call once, first thing
// in main, before any other thread exists (threads inherit the mask).
void InstallInterruptHandlers();

// True once a signal arrived during an InterruptibleWork.
bool InterruptRequested();
// "interrupted by SIGINT" (or SIGTERM) after InterruptRequested(), else "":
// how every error the interrupt causes begins.
const char* InterruptedBy();

// After InterruptRequested(): ends the process by that signal (default
// action). Returns at once otherwise.
void EndByInterruptSignal();

// Marks a plan running: signals cancel instead of ending the process.
class InterruptibleWork {
 public:
  InterruptibleWork();
  ~InterruptibleWork();
  InterruptibleWork(const InterruptibleWork&) = delete;
  InterruptibleWork& operator=(const InterruptibleWork&) = delete;
};

// Registers `cancel(arg)` to run (on the watcher thread) when a signal
// interrupts the work; unregistered, and never called again, once the
// destructor returns.
class InterruptCanceller {
 public:
  InterruptCanceller(void (*cancel)(void*), void* arg);
  ~InterruptCanceller();
  InterruptCanceller(const InterruptCanceller&) = delete;
  InterruptCanceller& operator=(const InterruptCanceller&) = delete;

 private:
  void (*cancel_)(void*);
  void* arg_;
};

}  // namespace migledger
