// The printer from wire bytes: AppendProtoJsonFromWire and ProtoJsonFromWire
// (cli/proto_json.h), following each message type's plan
// (proto_json_internal.h).
#include "cli/proto_json.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <string_view>
#include <vector>

#include "cli/proto_json_internal.h"
#include "common/protobuf_wire.h"

namespace migledger {
namespace {

using google::protobuf::Descriptor;
using proto_json_internal::FieldPlan;
using proto_json_internal::kKeyRoom;
using proto_json_internal::MessagePlan;
using proto_json_internal::WireKind;

// The per-thread output buffer. Writers take and return the write position
// as a plain pointer (kept in a register: stores through a char* held in
// memory would make the compiler reload it after every byte), and ask Room
// for what they may write first, plus the slack of their fixed-size copies.
class JsonSink {
 public:
  char* begin() { return buf_.get(); }

  // Makes room for n bytes at p (a position in the buffer) and returns p,
  // moved if the buffer had to grow.
  char* Room(char* p, size_t n) {
    if (static_cast<size_t>(end_ - p) >= n) return p;
    const size_t used = static_cast<size_t>(p - buf_.get());
    const size_t cap = std::max<size_t>(2 * (used + n), 4096);
    std::unique_ptr<char[]> bigger(new char[cap]);
    if (used) std::memcpy(bigger.get(), buf_.get(), used);
    buf_ = std::move(bigger);
    end_ = buf_.get() + cap;
    return buf_.get() + used;
  }

 private:
  std::unique_ptr<char[]> buf_;
  char* end_ = nullptr;
};

// Escape class of a byte inside a JSON string, as AppendString escapes it:
// 0 copied, 1 escaped, 2 non-ASCII (declined).
struct EscapeTable {
  uint8_t cls[256];
  constexpr EscapeTable() : cls() {
    for (int c = 0; c < 256; ++c) {
      cls[c] = c >= 0x80 ? 2 : NeedsEscapeChar(c) ? 1 : 0;
    }
  }
  static constexpr bool NeedsEscapeChar(int c) {
    return c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' ||
           c == 0x7f;
  }
};
constexpr EscapeTable kEscape;

#ifdef __SSE2__
// Bit i set when byte i of x needs escaping or is not ASCII (as signed
// bytes, those >= 0x80 are below 0x20 too).
inline unsigned EscapeMask(__m128i x) {
  // x + 1 < 0x21 (signed) holds for the control characters, DEL (0x7f + 1
  // is negative) and every byte >= 0x80 (negative, or 0 for 0xff); '<' and
  // '>' are the two bytes whose value | 2 is '>'.
  const __m128i control =
      _mm_cmplt_epi8(_mm_add_epi8(x, _mm_set1_epi8(1)), _mm_set1_epi8(0x21));
  const __m128i angle =
      _mm_cmpeq_epi8(_mm_or_si128(x, _mm_set1_epi8(2)), _mm_set1_epi8('>'));
  const __m128i quote = _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                                     _mm_cmpeq_epi8(x, _mm_set1_epi8('\\')));
  return static_cast<unsigned>(
      _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(control, angle), quote)));
}
#endif

// Writes `s` at p quoted and escaped as AppendString does and returns the
// end, or nullptr on non-ASCII text. `readable` is where the bytes around `s`
// end (the whole message's end): bytes up to it may be loaded, never used.
// REQUIRES: room for 6 * s.size() + 32 bytes.
char* WriteString(std::string_view s, const char* readable, char* p) {
  *p++ = '"';
  const char* in = s.data();
  const char* const end = in + s.size();
  for (;;) {
#ifdef __SSE2__
    // Most text (ids, names, paths) has nothing to escape: 16 bytes a step,
    // stored whole (the room covers the overshoot), the last step masked to
    // the string when the bytes after it are still the message's.
    while (in < end && readable - in >= 16) {
      const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in));
      unsigned mask = EscapeMask(x);
      const ptrdiff_t left = end - in;
      if (left < 16) mask |= ~0u << left;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), x);
      if (mask != 0) {
        const int k = std::countr_zero(mask);
        in += k;
        p += k;
        break;
      }
      in += 16;
      p += 16;
    }
#endif
    while (in < end && kEscape.cls[static_cast<unsigned char>(*in)] == 0) {
      *p++ = *in++;
    }
    if (in == end) break;
    const unsigned char c = static_cast<unsigned char>(*in++);
    switch (c) {
      case '"':
        std::memcpy(p, "\\\"", 2);
        p += 2;
        break;
      case '\\':
        std::memcpy(p, "\\\\", 2);
        p += 2;
        break;
      case '\b':
        std::memcpy(p, "\\b", 2);
        p += 2;
        break;
      case '\f':
        std::memcpy(p, "\\f", 2);
        p += 2;
        break;
      case '\n':
        std::memcpy(p, "\\n", 2);
        p += 2;
        break;
      case '\r':
        std::memcpy(p, "\\r", 2);
        p += 2;
        break;
      case '\t':
        std::memcpy(p, "\\t", 2);
        p += 2;
        break;
      default: {
        if (c >= 0x80) return nullptr;
        // <, >, DEL and the other control characters, as AppendEscaped.
        static const char kHex[] = "0123456789abcdef";
        std::memcpy(p, "\\u00", 4);
        p[4] = kHex[c >> 4];
        p[5] = kHex[c & 0xf];
        p += 6;
      }
    }
  }
  *p++ = '"';
  return p;
}

// REQUIRES: room for 24 bytes at p (std::to_chars writes two digits a step).
char* WriteDecimal(uint64_t v, char* p) {
  return std::to_chars(p, p + 24, v).ptr;
}

char* WriteSigned(int64_t v, char* p) {
  return std::to_chars(p, p + 24, v).ptr;
}

// "00" to "99": two digits per step for the timestamp's fields.
struct DigitPairs {
  char pair[100][2];
  constexpr DigitPairs() : pair() {
    for (int i = 0; i < 100; ++i) {
      pair[i][0] = static_cast<char>('0' + i / 10);
      pair[i][1] = static_cast<char>('0' + i % 10);
    }
  }
};
constexpr DigitPairs kDigitPairs;

// Writes v as exactly `width` digits (zero-padded) at `at`.
void WriteDigits(uint32_t v, int width, char* at) {
  int i = width;
  for (; i >= 2; i -= 2) {
    std::memcpy(at + i - 2, kDigitPairs.pair[v % 100], 2);
    v /= 100;
  }
  if (i == 1) at[0] = static_cast<char>('0' + v % 10);
}

// AppendTimestamp for a Timestamp's bytes, by civil-from-days arithmetic
// (proleptic Gregorian, like gmtime_r) instead of a libc call per event.
// Returns the end, or nullptr when AppendTimestamp would decline.
// REQUIRES: room for 48 bytes at p.
char* WriteTimestamp(std::string_view wire, char* p) {
  ProtobufWireCursor r(wire);
  int64_t seconds = 0;
  int32_t nanos = 0;
  uint32_t prev = 0, number, wire_type;
  while (!r.done()) {
    uint64_t v;
    if (!r.Tag(&number, &wire_type) || number <= prev || number > 2 ||
        wire_type != 0 || !r.Varint(&v)) {
      return nullptr;
    }
    prev = number;
    if (number == 1) seconds = static_cast<int64_t>(v);
    if (number == 2) nanos = static_cast<int32_t>(static_cast<uint32_t>(v));
  }
  // 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z, AppendTimestamp's range.
  if (seconds < -62135596800LL || seconds > 253402300799LL || nanos < 0 ||
      nanos > 999999999) {
    return nullptr;
  }
  int64_t days = seconds / 86400;
  int64_t rest = seconds % 86400;
  if (rest < 0) {
    rest += 86400;
    days -= 1;
  }
  // Howard Hinnant's civil_from_days.
  const int64_t z = days + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int64_t day = doy - (153 * mp + 2) / 5 + 1;
  const int64_t month = mp < 10 ? mp + 3 : mp - 9;
  const int64_t year = yoe + era * 400 + (month <= 2);
  std::memcpy(p, "\"0000-00-00T00:00:00", 20);
  WriteDigits(static_cast<uint32_t>(year), 4, p + 1);
  WriteDigits(static_cast<uint32_t>(month), 2, p + 6);
  WriteDigits(static_cast<uint32_t>(day), 2, p + 9);
  WriteDigits(static_cast<uint32_t>(rest / 3600), 2, p + 12);
  WriteDigits(static_cast<uint32_t>(rest / 60 % 60), 2, p + 15);
  WriteDigits(static_cast<uint32_t>(rest % 60), 2, p + 18);
  p += 20;
  if (nanos != 0) {
    *p++ = '.';
    if (nanos % 1000000 == 0) {
      WriteDigits(static_cast<uint32_t>(nanos / 1000000), 3, p);
      p += 3;
    } else if (nanos % 1000 == 0) {
      WriteDigits(static_cast<uint32_t>(nanos / 1000), 6, p);
      p += 6;
    } else {
      WriteDigits(static_cast<uint32_t>(nanos), 9, p);
      p += 9;
    }
  }
  std::memcpy(p, "Z\"", 2);
  return p + 2;
}

char* WriteMessage(const MessagePlan& plan, std::string_view wire,
                   const char* readable, JsonSink* sink, char* p,
                   int* oneof_member);

// The last JSON printed for a nested message of each type, on this thread,
// with the exact bytes it was printed from. The JSON of a message is a
// function of its bytes alone, and events repeat nested messages verbatim
// (every event of a run has the same actor and target), so printing those
// again is a compare and a copy.
struct Memo {
  std::string wire;
  std::string json;
};
thread_local std::vector<Memo> memos;

// WriteMessage for a nested message, through the memo.
char* WriteNested(const MessagePlan& plan, std::string_view wire,
                  const char* readable, JsonSink* sink, char* p) {
  if (plan.memo_slot >= memos.size()) memos.resize(plan.memo_slot + 1);
  {
    const Memo& memo = memos[plan.memo_slot];
    if (!memo.json.empty() && memo.wire == wire) {
      p = sink->Room(p, memo.json.size());
      std::memcpy(p, memo.json.data(), memo.json.size());
      return p + memo.json.size();
    }
  }
  // Offsets, not pointers, across the call: the buffer may move while the
  // message is written, and `memos` grow (a message it holds has its own).
  const size_t start = static_cast<size_t>(p - sink->begin());
  p = WriteMessage(plan, wire, readable, sink, p, nullptr);
  if (p == nullptr) return nullptr;
  Memo& memo = memos[plan.memo_slot];
  memo.wire.assign(wire);
  memo.json.assign(sink->begin() + start, p);
  return p;
}

// Writes field `f`'s value at p: `s` for a string or message (whose bytes
// end at `readable`), `v` for a varint. Returns the end, or nullptr to
// decline. REQUIRES: the room WriteMessage makes for a value.
inline char* WriteValue(const FieldPlan& f, std::string_view s, uint64_t v,
                        const char* readable, JsonSink* sink, char* p) {
  switch (f.kind) {
    case WireKind::kString:
      p = WriteString(s, readable, p);
      break;
    case WireKind::kTimestamp:
      p = WriteTimestamp(s, p);
      break;
    case WireKind::kMessage:
      p = WriteNested(*f.message, s, readable, sink, p);
      break;
    case WireKind::kInt32:
      p = WriteSigned(static_cast<int32_t>(static_cast<uint32_t>(v)), p);
      break;
    case WireKind::kUInt32:
      p = WriteDecimal(static_cast<uint32_t>(v), p);
      break;
    case WireKind::kInt64:
      *p++ = '"';
      p = WriteSigned(static_cast<int64_t>(v), p);
      *p++ = '"';
      break;
    case WireKind::kUInt64:
      *p++ = '"';
      p = WriteDecimal(v, p);
      *p++ = '"';
      break;
    case WireKind::kBool:
      if (v != 0) {
        std::memcpy(p, "true", 4);
        p += 4;
      } else {
        std::memcpy(p, "false", 5);
        p += 5;
      }
      break;
    case WireKind::kEnum: {
      const int32_t x = static_cast<int32_t>(static_cast<uint32_t>(v));
      const std::string* name = nullptr;
      for (const auto& [value, quoted] : *f.enum_names) {
        if (value == x) {
          name = &quoted;
          break;
        }
      }
      if (name == nullptr) return nullptr;  // a value the enum lacks
      p = sink->Room(p, name->size());
      std::memcpy(p, name->data(), name->size());
      p += name->size();
      break;
    }
    default:
      return nullptr;
  }
  return p;
}

// Writes field `f`'s key at p ("\"name\":", after a comma unless it is the
// first field printed) and returns the end.
inline char* WriteKey(const FieldPlan& f, const char* keys, bool first,
                      char* p) {
  const size_t skip = first ? 1 : 0;  // no comma before the first
  const char* key = keys + f.key_at + skip;
  if (f.key_size <= 32) {  // most names: two 16-byte moves
    std::memcpy(p, key, 31);
  } else {
    std::memcpy(p, key, kKeyRoom - 1);
  }
  return p + f.key_size - skip;
}

// Writes the JSON of `wire` at p and returns the end, or nullptr to decline.
char* WriteMessage(const MessagePlan& plan, std::string_view wire,
                   const char* readable, JsonSink* sink, char* p,
                   int* oneof_member) {
  if (!plan.usable) return nullptr;
  ProtobufWireCursor r(wire);
  p = sink->Room(p, 1);
  *p++ = '{';
  bool printed = false;  // the next field needs a comma
  bool in_array = false;
  uint32_t prev = 0, oneofs_seen = 0, number, wire_type;
  const size_t table = plan.fields.size();
  const FieldPlan* const fields = plan.fields.data();
  const char* const keys = plan.keys.data();
  while (!r.done()) {
    if (!r.Tag(&number, &wire_type) || number < prev || number >= table) {
      return nullptr;
    }
    const FieldPlan& f = fields[number];
    if (f.kind == WireKind::kUnsupported) return nullptr;
    const bool next_element = number == prev;
    if (next_element && !f.repeated) return nullptr;  // a field twice
    if (!next_element) {
      if (in_array) {
        p = sink->Room(p, 1);
        *p++ = ']';
        in_array = false;
      }
      if (f.oneof >= 0) {
        if (oneofs_seen >> f.oneof & 1) return nullptr;  // two members
        oneofs_seen |= 1u << f.oneof;
        if (oneof_member != nullptr && f.oneof == 0) {
          *oneof_member = static_cast<int>(number);
        }
      }
    }
    prev = number;
    std::string_view s;
    uint64_t v = 0;
    if (f.length_delimited) {
      if (wire_type != 2 || !r.LengthDelimited(&s)) return nullptr;
      // A singular string that is empty is its default: not printed.
      if (f.kind == WireKind::kString && s.empty() && !f.repeated &&
          !f.presence) {
        continue;
      }
    } else {
      if (wire_type != 0 || !r.Varint(&v)) return nullptr;
      // Zero is every scalar's default (an int32 or enum varint of 2^32 is
      // zero too once truncated, as Protobuf truncates it).
      const bool zero = f.kind == WireKind::kInt32 ||
                                f.kind == WireKind::kUInt32 ||
                                f.kind == WireKind::kEnum
                            ? static_cast<uint32_t>(v) == 0
                            : v == 0;
      if (zero && !f.presence) continue;
    }
    // Room for the key, the value's fixed-size writes and their slack.
    p = sink->Room(
        p, kKeyRoom + 64 + (f.kind == WireKind::kString ? 6 * s.size() : 0));
    if (next_element) {
      *p++ = ',';
    } else {
      p = WriteKey(f, keys, !printed, p);
      printed = true;
      if (f.repeated) {
        *p++ = '[';
        in_array = true;
      }
    }
    p = WriteValue(f, s, v, readable, sink, p);
    if (p == nullptr) return nullptr;
  }
  p = sink->Room(p, 2);
  if (in_array) *p++ = ']';
  *p++ = '}';
  return p;
}

}  // namespace

bool ProtoJsonFromWire(const Descriptor* type, std::string_view wire,
                       std::string_view* json, int* oneof_member) {
  // One plan lookup per thread and type, not a lock per message.
  thread_local const Descriptor* last_type = nullptr;
  thread_local const MessagePlan* last_plan = nullptr;
  thread_local JsonSink sink;
  if (type != last_type) {
    last_plan = proto_json_internal::PlanFor(type);
    last_type = type;
  }
  if (oneof_member != nullptr) *oneof_member = 0;
  char* end = WriteMessage(*last_plan, wire, wire.data() + wire.size(), &sink,
                           sink.Room(sink.begin(), 1), oneof_member);
  if (end == nullptr) return false;
  *json = std::string_view(sink.begin(), end - sink.begin());
  return true;
}

bool AppendProtoJsonFromWire(const Descriptor* type, std::string_view wire,
                             std::string* out, int* oneof_member) {
  std::string_view json;
  if (!ProtoJsonFromWire(type, wire, &json, oneof_member)) return false;
  out->append(json);
  return true;
}

}  // namespace migledger
