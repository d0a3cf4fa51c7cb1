// The Protobuf JSON encoder's internals (cli/proto_json.h): the JSON string
// escaping both printers share, and the plans the printer from wire bytes
// follows. Internal to cli/.
#pragma once

#include <google/protobuf/descriptor.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

namespace migledger::proto_json_internal {

// Appends `s` quoted and escaped as Protobuf's JSON printer escapes ASCII
// text; false on non-ASCII (*out is then unspecified).
bool AppendString(const std::string& s, std::string* out);

// ---- plans for printing from wire bytes
// --------------------------------------
//
// A plan per message type, made once from its descriptor, says for each field
// number how to print it; the bytes are then read in one pass and the JSON
// written through a raw pointer into a per-thread buffer (each field first
// makes room for the most it can print), which is what makes exporting a
// ledger about as fast as reading it. Whatever the plan or the bytes hold
// that the reflection encoder would not print the same way makes the walk
// return false.

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

// The plan of `d` (and of the messages it holds), made on first use and
// kept for the life of the process. Thread-safe.
const MessagePlan* PlanFor(const google::protobuf::Descriptor* d);

}  // namespace migledger::proto_json_internal
