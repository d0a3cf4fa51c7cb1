// The reflection encoder: AppendProtoJson walks a message by reflection.
// The printer from wire bytes is in proto_json_wire.cc.
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

#include "cli/proto_json_internal.h"

namespace migledger {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using proto_json_internal::AppendString;

bool AppendEscaped(unsigned char c, std::string* out);

// Escapes like Protobuf's JSON printer for ASCII text; false on non-ASCII.
bool NeedsEscape(unsigned char c) {
  return c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c >= 0x7f;
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

namespace proto_json_internal {

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

}  // namespace proto_json_internal

}  // namespace migledger
