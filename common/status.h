// One error model for every module boundary: Status and StatusOr<T>.
//
// A Status carries a code (what kind of failure, which decides the exit
// code) and a human message that already names the migration version and
// file where one is involved. Both types are [[nodiscard]]: a failure
// cannot be dropped silently. RocksDB, libpq and SQLite errors are
// converted to a Status at the edge of the module that calls them.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace migledger {

// Each code means one thing; cli/exit_codes.cc maps them to exit codes.
enum class Code {
  kOk = 0,
  kInvalidInput,       // bad flags, malformed files, unknown target name
  kNotFound,           // a thing asked for does not exist (file, sequence)
  kIo,                 // file system error outside the ledger
  kLedgerCorrupt,      // the ledger or a target's event mirror does not
                       // verify, or cannot be decoded
  kLedgerBusy,         // another process holds the ledger or the target lock
  kMigrationFailed,    // a migration's SQL failed on the target
  kDrift,              // the target disagrees with the ledger
  kTargetUnavailable,  // cannot connect to / open the target
  kUnsupported,        // newer ledger format, unsupported feature
  kInternal,           // a bug
  kInterrupted,        // SIGINT or SIGTERM stopped the run (common/interrupt.h)
};

const char* CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // Returns a copy whose message is "<context>: <message>".
  Status WithContext(const std::string& context) const {
    if (ok()) return *this;
    return Status(code_, context + ": " + message_);
  }
  std::string ToString() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status InvalidInput(std::string m) {
  return Status(Code::kInvalidInput, std::move(m));
}
inline Status NotFound(std::string m) {
  return Status(Code::kNotFound, std::move(m));
}
inline Status IoError(std::string m) { return Status(Code::kIo, std::move(m)); }
inline Status LedgerCorrupt(std::string m) {
  return Status(Code::kLedgerCorrupt, std::move(m));
}
inline Status LedgerBusy(std::string m) {
  return Status(Code::kLedgerBusy, std::move(m));
}
inline Status MigrationFailed(std::string m) {
  return Status(Code::kMigrationFailed, std::move(m));
}
inline Status Drift(std::string m) {
  return Status(Code::kDrift, std::move(m));
}
inline Status TargetUnavailable(std::string m) {
  return Status(Code::kTargetUnavailable, std::move(m));
}
inline Status Unsupported(std::string m) {
  return Status(Code::kUnsupported, std::move(m));
}
inline Status Interrupted(std::string m) {
  return Status(Code::kInterrupted, std::move(m));
}
inline Status Internal(std::string m) {
  return Status(Code::kInternal, std::move(m));
}

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT
    assert(!status_.ok() && "StatusOr built from an OK status");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & {
    assert(ok());
    return *value_;
  }
  const T& value() const& {
    assert(ok());
    return *value_;
  }
  T&& value() && {
    assert(ok());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace migledger

// Returns early from the calling function when `expr` is not OK.
#define MIGLEDGER_RETURN_IF_ERROR(expr) \
  do {                                  \
    ::migledger::Status _st = (expr);   \
    if (!_st.ok()) return _st;          \
  } while (0)

#define MIGLEDGER_CONCAT_INNER(a, b) a##b
#define MIGLEDGER_CONCAT(a, b) MIGLEDGER_CONCAT_INNER(a, b)
// Declares `lhs` from a StatusOr expression or returns its error.
#define MIGLEDGER_ASSIGN_OR_RETURN(lhs, expr)         \
  auto MIGLEDGER_CONCAT(_so_, __LINE__) = (expr);     \
  if (!MIGLEDGER_CONCAT(_so_, __LINE__).ok())         \
    return MIGLEDGER_CONCAT(_so_, __LINE__).status(); \
  lhs = std::move(MIGLEDGER_CONCAT(_so_, __LINE__)).value()
