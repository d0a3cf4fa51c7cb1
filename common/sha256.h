// SHA-256 through OpenSSL libcrypto.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace migledger {

using Digest32 = std::array<uint8_t, 32>;

Digest32 Sha256(std::string_view data);
// SHA-256 of `prefix` followed by `data`, without copying them together.
Digest32 Sha256(std::string_view prefix, std::string_view data);
std::string ToHex(const uint8_t* data, size_t size);
inline std::string ToHex(const Digest32& d) { return ToHex(d.data(), d.size()); }
// Lower-case hex SHA-256 of `data`.
std::string Sha256Hex(std::string_view data);
// Parses 64 hex characters; returns false on anything else.
bool FromHex(std::string_view hex, Digest32* out);
inline std::string_view AsBytes(const Digest32& d) {
  return std::string_view(reinterpret_cast<const char*>(d.data()), d.size());
}

}  // namespace migledger
