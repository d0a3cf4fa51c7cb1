#include "common/status.h"

namespace migledger {

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kInvalidInput:
      return "invalid input";
    case Code::kNotFound:
      return "not found";
    case Code::kIo:
      return "I/O error";
    case Code::kLedgerCorrupt:
      return "ledger corrupt";
    case Code::kLedgerBusy:
      return "busy";
    case Code::kMigrationFailed:
      return "migration failed";
    case Code::kDrift:
      return "drift";
    case Code::kTargetUnavailable:
      return "target unavailable";
    case Code::kUnsupported:
      return "unsupported";
    case Code::kInternal:
      return "internal error";
    case Code::kInterrupted:
      return "interrupted";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return message_;
}

}  // namespace migledger
