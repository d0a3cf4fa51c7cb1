// Reading Protobuf's wire format by hand, for the hot paths that must not
// pay for a full parse (ledger verification, the JSON export). The cursor
// accepts exactly what Protobuf's own parser reads the same way and answers
// false for anything else (groups, oversized tags or lengths, truncation),
// so callers can fall back to Protobuf whenever it declines.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace migledger {

class ProtobufWireCursor {
 public:
  explicit ProtobufWireCursor(std::string_view bytes)
      : p_(reinterpret_cast<const uint8_t*>(bytes.data())),
        end_(p_ + bytes.size()) {}

  bool done() const { return p_ == end_; }

  // As Protobuf's parser reads a varint: at most 10 bytes, bits past 64
  // dropped.
  bool Varint(uint64_t* v) {
    if (p_ < end_ && *p_ < 0x80) {  // most tags and lengths: one byte
      *v = *p_++;
      return true;
    }
    uint64_t result = 0;
    for (int i = 0; i < 10 && p_ < end_; ++i) {
      const uint8_t b = *p_++;
      result |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if (b < 0x80) {
        *v = result;
        return true;
      }
    }
    return false;
  }

  // A tag of at most 5 bytes and 32 bits (Protobuf reads no more), of a
  // field number > 0 and wire type 0, 1, 2 or 5 (no groups).
  bool Tag(uint32_t* number, uint32_t* wire_type) {
    const uint8_t* start = p_;
    uint64_t tag = 0;
    if (!Varint(&tag) || p_ - start > 5 || tag > 0xffffffffu) return false;
    *number = static_cast<uint32_t>(tag >> 3);
    *wire_type = static_cast<uint32_t>(tag & 7);
    return *number != 0 && (*wire_type <= 2 || *wire_type == 5);
  }

  bool LengthDelimited(std::string_view* out) {
    const uint8_t* start = p_;
    uint64_t n = 0;
    if (!Varint(&n) || p_ - start > 5 || n > 0x7fffffff ||
        n > static_cast<uint64_t>(end_ - p_)) {
      return false;
    }
    *out = std::string_view(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return true;
  }

  // Skips the value of a field of `wire_type` (one Tag() accepted).
  bool Skip(uint32_t wire_type) {
    uint64_t ignored;
    std::string_view ignored_bytes;
    switch (wire_type) {
      case 0:
        return Varint(&ignored);
      case 1:
        return Advance(8);
      case 2:
        return LengthDelimited(&ignored_bytes);
      case 5:
        return Advance(4);
      default:
        return false;
    }
  }

 private:
  bool Advance(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) return false;
    p_ += n;
    return true;
  }

  const uint8_t* p_;
  const uint8_t* end_;
};

}  // namespace migledger
