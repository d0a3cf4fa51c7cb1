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
#pragma once

#include <google/protobuf/message.h>

#include <string>

namespace migledger {

// Appends the compact JSON of `message` to *out. Returns false (leaving
// *out unspecified) when the message holds something it does not encode.
bool AppendProtoJson(const google::protobuf::Message& message,
                     std::string* out);

// AppendProtoJson, or Protobuf's MessageToJsonString when it declines.
void AppendProtoJsonOrFallback(const google::protobuf::Message& message,
                               std::string* out);

}  // namespace migledger
