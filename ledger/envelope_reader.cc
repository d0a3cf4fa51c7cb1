#include "ledger/envelope_reader.h"

#include <cstring>

#include "common/protobuf_wire.h"

namespace migledger::ledger_internal {
namespace {

bool IsAscii(std::string_view s) {
  // Eight bytes at a time: the envelope's text is read for every event.
  uint64_t high = 0;
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, s.data() + i, 8);
    high |= word;
  }
  if (i < s.size() && s.size() >= 8) {  // the last 8 bytes, overlapping
    uint64_t word;
    std::memcpy(&word, s.data() + s.size() - 8, 8);
    high |= word;
  } else {
    for (; i < s.size(); ++i) high |= static_cast<unsigned char>(s[i]);
  }
  return (high & 0x8080808080808080ull) == 0;
}

// A message every field of which Protobuf keeps as unknown (Timestamp's two
// varints read either way): only its structure needs checking.
bool WellFormedFields(std::string_view bytes) {
  ProtobufWireCursor c(bytes);
  uint32_t number, wire_type;
  while (!c.done()) {
    if (!c.Tag(&number, &wire_type) || !c.Skip(wire_type)) return false;
  }
  return true;
}

WireRead ReadTargetRef(std::string_view bytes, EnvelopeFields *out) {
  ProtobufWireCursor c(bytes);
  uint32_t seen = 0, number, wire_type;
  while (!c.done()) {
    if (!c.Tag(&number, &wire_type)) return WireRead::kUnsure;
    if (number < 1 || number > 5) {  // unknown to TargetRef
      if (!c.Skip(wire_type)) return WireRead::kUnsure;
      continue;
    }
    std::string_view s;
    if (wire_type != 2 || (seen >> number & 1) || !c.LengthDelimited(&s) ||
        !IsAscii(s)) {
      return WireRead::kUnsure;
    }
    seen |= 1u << number;
    if (number == 2) out->kind = s;
    if (number == 3) out->database_id = s;
  }
  return WireRead::kOk;
}

}  // namespace

// What parsing `bytes` as an EventEnvelopeView would give, when kOk.
WireRead ReadEnvelope(std::string_view bytes, EnvelopeFields *out) {
  *out = EnvelopeFields{};
  ProtobufWireCursor c(bytes);
  uint32_t seen = 0, number, wire_type;
  while (!c.done()) {
    if (!c.Tag(&number, &wire_type)) return WireRead::kUnsure;
    switch (number) {
      case 1:  // target_sequence
        if (wire_type != 0 || (seen & 2) || !c.Varint(&out->target_sequence)) {
          return WireRead::kUnsure;
        }
        break;
      case 2:    // time
      case 3:    // run_id
      case 5: {  // target
        std::string_view s;
        if (wire_type != 2 || (seen >> number & 1) || !c.LengthDelimited(&s)) {
          return WireRead::kUnsure;
        }
        if (number == 2 && !WellFormedFields(s)) return WireRead::kUnsure;
        if (number == 3 && !IsAscii(s)) return WireRead::kUnsure;
        if (number == 5 && ReadTargetRef(s, out) != WireRead::kOk) {
          return WireRead::kUnsure;
        }
        break;
      }
      default:  // actor and the body: unknown fields of the view
        if (!c.Skip(wire_type)) return WireRead::kUnsure;
    }
    seen |= 1u << (number < 31 ? number : 31);
  }
  return WireRead::kOk;
}

}  // namespace migledger::ledger_internal
