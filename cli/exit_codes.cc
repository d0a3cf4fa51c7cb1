#include "cli/exit_codes.h"

namespace migledger {

int ExitCodeFor(const Status& status) {
  switch (status.code()) {
    case Code::kOk:
      return kExitOk;
    case Code::kInvalidInput:
    case Code::kNotFound:
      return kExitBadInput;
    case Code::kMigrationFailed:
      return kExitMigrationFailed;
    case Code::kDrift:
      return kExitDrift;
    case Code::kLedgerBusy:
      return kExitBusy;
    case Code::kLedgerCorrupt:
      return kExitLedgerCorrupt;
    case Code::kTargetUnavailable:
      return kExitTargetUnavailable;
    case Code::kUnsupported:
      return kExitUnsupported;
    case Code::kIo:
      return kExitIo;
    case Code::kInternal:
      return kExitInternal;
    case Code::kInterrupted:
      return kExitInterrupted;
  }
  return kExitInternal;
}

}  // namespace migledger
