// Verify's view of an event: the envelope read by hand. Internal to ledger/.
//
// Verify needs three envelope fields of every event. Parsing the bytes as an
// EventEnvelopeView costs more than hashing them (the body is copied into the
// unknown fields), so the usual encoding is read here by hand. The reader is
// exact only where it says so: for anything unusual (a field twice, a wire
// type a known field does not have, groups, non-ASCII text, a tag or size
// Protobuf may read differently) it answers kUnsure and the caller parses the
// bytes with Protobuf, which stays the judge of what "decodes" means.
#pragma once

#include <cstdint>
#include <string_view>

namespace migledger::ledger_internal {

struct EnvelopeFields {
  uint64_t target_sequence = 0;
  std::string_view kind;
  std::string_view database_id;
};

enum class WireRead { kOk, kUnsure };

// What parsing `bytes` as an EventEnvelopeView would give, when kOk.
WireRead ReadEnvelope(std::string_view bytes, EnvelopeFields *out);

}  // namespace migledger::ledger_internal
