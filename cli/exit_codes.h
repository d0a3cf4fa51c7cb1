// The documented, stable exit codes (README "Exit codes"). The one place
// where error codes become exit codes.
#pragma once

#include "common/status.h"

namespace migledger {

enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,           // a bug or an unexpected failure
  kExitBadInput = 2,           // bad flags, files, config or target name
  kExitMigrationFailed = 3,    // a migration's SQL failed (rolled back)
  kExitDrift = 4,              // target and ledger disagree; nothing was run
  kExitBusy = 5,               // ledger or target locked by another process
  kExitLedgerCorrupt = 6,      // the ledger, a target's mirror or a digest
                               // does not verify
  kExitTargetUnavailable = 7,  // cannot reach or open the target
  kExitUnsupported = 8,        // e.g. a ledger from a newer migledger
  kExitIo = 9,                 // file system error (permissions, disk full)
  // SIGINT/SIGTERM: the running step rolled back. main() then ends the
  // process by the signal itself (common/interrupt.h); this is the fallback.
  kExitInterrupted = 130,
};

int ExitCodeFor(const Status& status);

}  // namespace migledger
