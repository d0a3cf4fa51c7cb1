#include "common/sha256.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

namespace migledger {

Digest32 Sha256(std::string_view data) { return Sha256({}, data); }

Digest32 Sha256(std::string_view prefix, std::string_view data) {
  // The low-level SHA256_* calls are deprecated in OpenSSL 3 but are several
  // times faster than EVP for short inputs (no context allocation, no
  // algorithm fetch: the one-shot SHA256() goes through EVP_Q_digest), which
  // matters when verifying millions of ledger entries or hashing thousands
  // of migration files.
  SHA256_CTX ctx;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  SHA256_Init(&ctx);
  SHA256_Update(&ctx, prefix.data(), prefix.size());
  SHA256_Update(&ctx, data.data(), data.size());
  Digest32 out;
  SHA256_Final(out.data(), &ctx);
#pragma GCC diagnostic pop
  return out;
}

std::string ToHex(const uint8_t* data, size_t size) {
  static const char kHex[] = "0123456789abcdef";
  std::string s(size * 2, '0');
  for (size_t i = 0; i < size; ++i) {
    s[2 * i] = kHex[data[i] >> 4];
    s[2 * i + 1] = kHex[data[i] & 0xf];
  }
  return s;
}

std::string Sha256Hex(std::string_view data) { return ToHex(Sha256(data)); }

bool FromHex(std::string_view hex, Digest32* out) {
  if (hex.size() != 64) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < 32; ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

}  // namespace migledger
