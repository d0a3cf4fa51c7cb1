#include "cli/proto_json.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <google/protobuf/descriptor.h>
#include <google/protobuf/timestamp.pb.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>
#include <utility>
#include <vector>

#include "common/protobuf_wire.h"

namespace migledger {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

bool AppendEscaped(unsigned char c, std::string* out);

// Escapes like Protobuf's JSON printer for ASCII text; false on non-ASCII.
bool NeedsEscape(unsigned char c) {
  return c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c >= 0x7f;
}

bool AppendString(const std::string& s, std::string* out) {
  out->push_back('"');
  size_t i = 0;
  while (i < s.size()) {
    // Copy the run of characters that need no escaping in one go.
    size_t j = i;
    while (j < s.size() && !NeedsEscape(static_cast<unsigned char>(s[j]))) ++j;
    out->append(s, i, j - i);
    if (j == s.size()) break;
    if (!AppendEscaped(static_cast<unsigned char>(s[j]), out)) return false;
    i = j + 1;
  }
  out->push_back('"');
  return true;
}

bool AppendEscaped(unsigned char c, std::string* out) {
  {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '<':
        out->append("\\u003c");
        break;
      case '>':
        out->append("\\u003e");
        break;
      default:
        if (c >= 0x80) return false;
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out->append(buf);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  return true;
}

// RFC 3339 with 0, 3, 6 or 9 fractional digits, as Protobuf prints it.
bool AppendTimestamp(const Message& m, std::string* out) {
  const auto* ts = dynamic_cast<const google::protobuf::Timestamp*>(&m);
  if (ts == nullptr) return false;
  time_t secs = static_cast<time_t>(ts->seconds());
  struct tm tm;
  if (gmtime_r(&secs, &tm) == nullptr || tm.tm_year + 1900 < 1 ||
      tm.tm_year + 1900 > 9999) {
    return false;
  }
  char buf[64];
  int n = std::snprintf(buf, sizeof buf, "\"%04d-%02d-%02dT%02d:%02d:%02d",
                        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                        tm.tm_hour, tm.tm_min, tm.tm_sec);
  out->append(buf, n);
  int32_t nanos = ts->nanos();
  if (nanos < 0 || nanos > 999999999) return false;
  if (nanos != 0) {
    if (nanos % 1000000 == 0) {
      n = std::snprintf(buf, sizeof buf, ".%03d", nanos / 1000000);
    } else if (nanos % 1000 == 0) {
      n = std::snprintf(buf, sizeof buf, ".%06d", nanos / 1000);
    } else {
      n = std::snprintf(buf, sizeof buf, ".%09d", nanos);
    }
    out->append(buf, n);
  }
  out->append("Z\"");
  return true;
}

bool AppendMessage(const Message& m, std::string* out);

bool AppendValue(const Message& m, const Reflection* r,
                 const FieldDescriptor* f, int index, std::string* out) {
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      out->append(std::to_string(rep ? r->GetRepeatedInt32(m, f, index)
                                     : r->GetInt32(m, f)));
      return true;
    case FieldDescriptor::CPPTYPE_UINT32:
      out->append(std::to_string(rep ? r->GetRepeatedUInt32(m, f, index)
                                     : r->GetUInt32(m, f)));
      return true;
    case FieldDescriptor::CPPTYPE_INT64:
      out->push_back('"');
      out->append(std::to_string(rep ? r->GetRepeatedInt64(m, f, index)
                                     : r->GetInt64(m, f)));
      out->push_back('"');
      return true;
    case FieldDescriptor::CPPTYPE_UINT64:
      out->push_back('"');
      out->append(std::to_string(rep ? r->GetRepeatedUInt64(m, f, index)
                                     : r->GetUInt64(m, f)));
      out->push_back('"');
      return true;
    case FieldDescriptor::CPPTYPE_BOOL:
      out->append((rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f))
                      ? "true"
                      : "false");
      return true;
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* v = rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f);
      return AppendString(v->name(), out);
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      if (f->type() == FieldDescriptor::TYPE_BYTES) return false;
      std::string scratch;
      const std::string& s =
          rep ? r->GetRepeatedStringReference(m, f, index, &scratch)
              : r->GetStringReference(m, f, &scratch);
      return AppendString(s, out);
    }
    case FieldDescriptor::CPPTYPE_MESSAGE: {
      const Message& sub =
          rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f);
      if (sub.GetDescriptor()->full_name() == "google.protobuf.Timestamp") {
        return AppendTimestamp(sub, out);
      }
      if (sub.GetDescriptor()->file()->package() == "google.protobuf")
        return false;
      return AppendMessage(sub, out);
    }
    default:
      return false;  // float, double: not in the schema
  }
}

bool IsDefault(const Message& m, const Reflection* r,
               const FieldDescriptor* f) {
  if (f->is_repeated()) return r->FieldSize(m, f) == 0;
  if (f->has_presence()) return !r->HasField(m, f);
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return r->GetInt32(m, f) == 0;
    case FieldDescriptor::CPPTYPE_UINT32:
      return r->GetUInt32(m, f) == 0;
    case FieldDescriptor::CPPTYPE_INT64:
      return r->GetInt64(m, f) == 0;
    case FieldDescriptor::CPPTYPE_UINT64:
      return r->GetUInt64(m, f) == 0;
    case FieldDescriptor::CPPTYPE_BOOL:
      return !r->GetBool(m, f);
    case FieldDescriptor::CPPTYPE_ENUM:
      return r->GetEnumValue(m, f) == 0;
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string scratch;
      return r->GetStringReference(m, f, &scratch).empty();
    }
    default:
      return false;
  }
}

bool AppendMessage(const Message& m, std::string* out) {
  const Descriptor* d = m.GetDescriptor();
  const Reflection* r = m.GetReflection();
  if (!r->GetUnknownFields(m).empty()) return false;
  out->push_back('{');
  bool first = true;
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->is_map()) return false;
    if (IsDefault(m, r, f)) continue;
    if (!first) out->push_back(',');
    first = false;
    out->push_back('"');
    out->append(f->name());
    out->append("\":");
    if (f->is_repeated()) {
      out->push_back('[');
      for (int k = 0; k < r->FieldSize(m, f); ++k) {
        if (k) out->push_back(',');
        if (!AppendValue(m, r, f, k, out)) return false;
      }
      out->push_back(']');
    } else if (!AppendValue(m, r, f, 0, out)) {
      return false;
    }
  }
  out->push_back('}');
  return true;
}

}  // namespace

bool AppendProtoJson(const Message& message, std::string* out) {
  return AppendMessage(message, out);
}

void AppendProtoJsonOrFallback(const Message& message, std::string* out) {
  size_t mark = out->size();
  if (AppendProtoJson(message, out)) return;
  out->resize(mark);
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  std::string body;
  (void)google::protobuf::util::MessageToJsonString(message, &body, o);
  out->append(body);
}

// ---- JSON straight from the wire bytes --------------------------------------
//
// A plan per message type, made once from its descriptor, says for each field
// number how to print it; the bytes are then read in one pass and the JSON
// written through a raw pointer into a per-thread buffer (each field first
// makes room for the most it can print), which is what makes exporting a
// ledger about as fast as reading it. Whatever the plan or the bytes hold
// that the reflection encoder would not print the same way makes the walk
// return false.

namespace {

enum class WireKind {
  kInt32,
  kInt64,
  kUInt32,
  kUInt64,
  kBool,
  kEnum,
  kString,
  kMessage,
  kTimestamp,
  kUnsupported,  // present on the wire: decline
};

struct MessagePlan;

// Keys are written with one fixed-size copy (31 or 63 bytes) out of their
// plan's key text, which is padded for it.
constexpr size_t kKeyRoom = 64;

// 32 bytes: a message's field plans share a few cache lines.
struct FieldPlan {
  WireKind kind = WireKind::kUnsupported;
  bool repeated = false;
  bool presence = false;          // printed even when zero: a oneof member
  bool length_delimited = false;  // string or message on the wire
  int8_t oneof = -1;  // index of its oneof in the message, -1 for none
  uint8_t key_size = 0;
  // ",\"name\":" at keys[key_at] (the comma is skipped for the first field
  // printed).
  uint32_t key_at = 0;
  const MessagePlan* message = nullptr;  // kMessage
  // kEnum: the quoted JSON of each value's name, by number.
  const std::vector<std::pair<int, std::string>>* enum_names = nullptr;
};

struct MessagePlan {
  // False when fields are declared out of number order (the JSON follows
  // declaration order, the wire number order), are numbered too high for
  // the table, or a name is too long for kKeyRoom.
  bool usable = true;
  size_t memo_slot = 0;           // this type's entry in each thread's memo
  std::vector<FieldPlan> fields;  // by field number, kUnsupported for gaps
  std::string keys;               // every field's key, then kKeyRoom of slack
  std::deque<std::vector<std::pair<int, std::string>>> enums;  // stable
};

class PlanBook {
 public:
  // The plan of `d` (and of the messages it holds), made on first use.
  const MessagePlan* For(const Descriptor* d) {
    std::lock_guard<std::mutex> lock(mu_);
    return Make(d);
  }

 private:
  const MessagePlan* Make(const Descriptor* d) {
    auto found = plans_.find(d);
    if (found != plans_.end()) return found->second.get();
    auto owned = std::make_unique<MessagePlan>();
    MessagePlan* plan = owned.get();
    plan->memo_slot = plans_.size();
    plans_.emplace(d, std::move(owned));  // before the fields: recursion
    int max_number = 0;
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      if (f->number() <= max_number || f->name().size() + 4 > kKeyRoom) {
        plan->usable = false;
      }
      max_number = std::max(max_number, f->number());
    }
    if (max_number > 4096 || d->oneof_decl_count() > 32) plan->usable = false;
    if (!plan->usable) return plan;
    plan->fields.resize(max_number + 1);
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      FieldPlan& fp = plan->fields[f->number()];
      fp.repeated = f->is_repeated();
      fp.presence = !fp.repeated && f->has_presence();
      fp.oneof = static_cast<int8_t>(
          f->containing_oneof() ? f->containing_oneof()->index() : -1);
      const std::string key = ",\"" + f->name() + "\":";
      fp.key_at = static_cast<uint32_t>(plan->keys.size());
      fp.key_size = static_cast<uint8_t>(key.size());
      plan->keys += key;
      fp.kind = KindOf(f);
      fp.length_delimited = fp.kind == WireKind::kString ||
                            fp.kind == WireKind::kMessage ||
                            fp.kind == WireKind::kTimestamp;
      if (fp.kind == WireKind::kEnum) {
        const auto* e = f->enum_type();
        auto& names = plan->enums.emplace_back();
        for (int k = 0; k < e->value_count(); ++k) {
          std::string quoted;
          if (!AppendString(e->value(k)->name(), &quoted)) {
            fp.kind = WireKind::kUnsupported;
            break;
          }
          names.emplace_back(e->value(k)->number(), std::move(quoted));
        }
        fp.enum_names = &names;
      }
      if (fp.kind == WireKind::kMessage) fp.message = Make(f->message_type());
      // Repeated scalars are packed on the wire; not in the schema.
      if (fp.repeated && fp.kind != WireKind::kString &&
          fp.kind != WireKind::kMessage && fp.kind != WireKind::kTimestamp) {
        fp.kind = WireKind::kUnsupported;
      }
      // Proto2 scalars (presence outside a oneof) may have defaults other
      // than zero; the schema is proto3.
      if (fp.presence && fp.oneof < 0 && fp.kind != WireKind::kMessage &&
          fp.kind != WireKind::kTimestamp) {
        fp.kind = WireKind::kUnsupported;
      }
    }
    plan->keys.append(kKeyRoom, '\0');
    return plan;
  }

  static WireKind KindOf(const FieldDescriptor* f) {
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        return WireKind::kInt32;
      case FieldDescriptor::CPPTYPE_INT64:
        return WireKind::kInt64;
      case FieldDescriptor::CPPTYPE_UINT32:
        return WireKind::kUInt32;
      case FieldDescriptor::CPPTYPE_UINT64:
        return WireKind::kUInt64;
      case FieldDescriptor::CPPTYPE_BOOL:
        return WireKind::kBool;
      case FieldDescriptor::CPPTYPE_ENUM:
        return WireKind::kEnum;
      case FieldDescriptor::CPPTYPE_STRING:
        return f->type() == FieldDescriptor::TYPE_BYTES ? WireKind::kUnsupported
                                                        : WireKind::kString;
      case FieldDescriptor::CPPTYPE_MESSAGE: {
        const Descriptor* m = f->message_type();
        if (m->full_name() == "google.protobuf.Timestamp") {
          return WireKind::kTimestamp;
        }
        if (m->file()->package() == "google.protobuf" || f->is_map() ||
            f->type() == FieldDescriptor::TYPE_GROUP) {
          return WireKind::kUnsupported;  // AppendValue declines them too
        }
        return WireKind::kMessage;
      }
      default:  // float, double
        return WireKind::kUnsupported;
    }
  }

  std::mutex mu_;
  std::map<const Descriptor*, std::unique_ptr<MessagePlan>> plans_;
};

PlanBook& Plans() {
  static PlanBook* book = new PlanBook();  // never destroyed: used at exit
  return *book;
}

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
      const size_t skip = printed ? 0 : 1;  // no comma before the first
      printed = true;
      const char* key = keys + f.key_at + skip;
      if (f.key_size <= 32) {  // most names: two 16-byte moves
        std::memcpy(p, key, 31);
      } else {
        std::memcpy(p, key, kKeyRoom - 1);
      }
      p += f.key_size - skip;
      if (f.repeated) {
        *p++ = '[';
        in_array = true;
      }
    }
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
    last_plan = Plans().For(type);
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
