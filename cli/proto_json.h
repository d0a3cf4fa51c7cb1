// A fast encoder for the Protobuf JSON mapping (proto3, original field
// names, default values omitted), producing exactly what
// google::protobuf::util::MessageToJsonString produces for our event schema.
//
// MessageToJsonString re-serializes the message and converts the binary form
// through a type resolver: about 20 us per event, which made exporting a
// million-event ledger take minutes. This encoder walks the message by
// reflection instead. It covers the field types the schema uses (integers,
// bool, enums, strings, Timestamp, nested and repeated messages); for
// anything else, and for strings with non-ASCII text (where Protobuf escapes
// a table of Unicode format characters), it reports false and the caller
// uses Protobuf's own printer. tests check the two agree on every event kind.
//
// AppendProtoJsonFromWire prints the same JSON straight from the serialized
// bytes, for the usual case of bytes written by Protobuf's serializer.
#pragma once

#include <google/protobuf/message.h>

#include <string>
#include <string_view>

namespace migledger {

// Appends the compact JSON of `message` to *out. Returns false (leaving
// *out unspecified) when the message holds something it does not encode.
bool AppendProtoJson(const google::protobuf::Message& message,
                     std::string* out);

// AppendProtoJson, or Protobuf's MessageToJsonString when it declines.
void AppendProtoJsonOrFallback(const google::protobuf::Message& message,
                               std::string* out);

// Appends what AppendProtoJson prints for the message of type `type` whose
// serialized bytes are `wire`, reading the bytes directly instead of parsing
// them into a message first (exporting a ledger spends most of its time
// here). It takes only bytes in the form Protobuf's serializer writes: each
// field in field-number order and once (a repeated field's elements next to
// each other, strings and messages only), at most one member of each oneof,
// no unknown fields, text in ASCII, and nothing AppendProtoJson declines.
// Bytes it takes are bytes that parse, and the JSON is exactly the parsed
// message's. For anything else it returns false, leaving *out unspecified:
// parse the bytes and use AppendProtoJsonOrFallback.
// When `oneof_member` is not null it receives the field number of the set
// member of the message's first oneof, 0 when none is set.
bool AppendProtoJsonFromWire(const google::protobuf::Descriptor* type,
                             std::string_view wire, std::string* out,
                             int* oneof_member = nullptr);

// AppendProtoJsonFromWire without the copy: on success *json views the JSON
// in a buffer of the calling thread, valid until its next call.
bool ProtoJsonFromWire(const google::protobuf::Descriptor* type,
                       std::string_view wire, std::string_view* json,
                       int* oneof_member = nullptr);

}  // namespace migledger
