// The encodings of the ledger's keys and index fields, and the format rules
// ledger.h exports (target keys, the hash chain, an event's version).
#include "ledger/tables.h"

#include <random>

namespace migledger {

std::string TargetKey(std::string_view kind, std::string_view database_id) {
  std::string key;
  key.reserve(kind.size() + 1 + database_id.size());
  key.append(kind);
  key.push_back(':');
  key.append(database_id);
  return key;
}

std::string TargetKeyOf(const v1::Event &e) {
  if (!e.has_target() || e.target().database_id().empty()) return "";
  return TargetKey(e.target().kind(), e.target().database_id());
}

Digest32 ExtendChain(const Digest32 &chain, const Digest32 &leaf) {
  return Sha256(AsBytes(chain), AsBytes(leaf));
}

std::string EventVersion(const v1::Event &e) {
  switch (e.body_case()) {
    case v1::Event::kStepStarted:
      return e.step_started().version();
    case v1::Event::kStatementApplied:
      return e.statement_applied().version();
    case v1::Event::kStepApplied:
      return e.step_applied().version();
    case v1::Event::kStepFailed:
      return e.step_failed().version();
    case v1::Event::kStepReverted:
      return e.step_reverted().version();
    case v1::Event::kStepRecovered:
      return e.step_recovered().version();
    case v1::Event::kOutcomeLearned:
      return e.outcome_learned().version();
    case v1::Event::kAppliedOutOfBand:
      return e.applied_out_of_band().version();
    case v1::Event::kDriftDetected:
      return e.drift_detected().version();
    case v1::Event::kBaselined:
      return e.baselined().version();
    case v1::Event::kChecksumAccepted:
      return e.checksum_accepted().version();
    default:
      return "";
  }
}

namespace ledger_internal {

// Saturates instead of overflowing: a mirrored event may carry any time.
int64_t MicrosOf(const v1::Event &e) {
  int64_t micros = 0;
  if (__builtin_mul_overflow(e.time().seconds(), int64_t{1000000}, &micros) ||
      __builtin_add_overflow(micros, int64_t{e.time().nanos() / 1000},
                             &micros)) {
    return e.time().seconds() < 0 ? INT64_MIN : INT64_MAX;
  }
  return micros;
}

// The fields of `e` the ledger's indexes are keyed by.
void SetIndexFields(const v1::Event &e, PreparedEvent *p) {
  p->version = EventVersion(e);
  p->run_id = e.run_id();
  p->time_micros = MicrosOf(e);
  p->index_known = true;
}

// Versions compare numerically ("0042" == "42"): index them without
// leading zeros.
std::string CanonicalVersionKey(const std::string &v) {
  size_t i = v.find_first_not_of('0');
  if (v.empty()) return v;
  return i == std::string::npos ? "0" : v.substr(i);
}

std::string TimeKey(int64_t micros, uint64_t seq) {
  return Be64(static_cast<uint64_t>(micros) ^ (1ull << 63)) + Be64(seq);
}

Status FromRocks(const rocksdb::Status &s, const std::string &what) {
  if (s.ok()) return Status::Ok();
  if (s.IsCorruption()) return LedgerCorrupt(what + ": " + s.ToString());
  if (s.IsNotFound()) return NotFound(what + ": " + s.ToString());
  return IoError(what + ": " + s.ToString());
}

std::string NewLedgerId() {
  std::random_device rd;
  std::string raw(16, '\0');
  for (auto &c : raw) c = static_cast<char>(rd());
  return ToHex(reinterpret_cast<const uint8_t *>(raw.data()), raw.size());
}

}  // namespace ledger_internal
}  // namespace migledger
