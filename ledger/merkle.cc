#include "ledger/merkle.h"

#include <openssl/sha.h>

#include <array>
#include <bit>
#include <cstring>
#include <span>

namespace migledger {
namespace {

using LeafSpan = std::span<const Digest32>;

// Largest power of two strictly smaller than n; requires n >= 2. This is the
// RFC 6962 split point k (k < n <= 2k).
uint64_t SplitPoint(uint64_t n) { return std::bit_floor(n - 1); }

// MTH(D[n]) by the RFC 6962 recursive definition.
Digest32 SubtreeRoot(LeafSpan leaves) {
  if (leaves.empty()) return MerkleEmptyRoot();
  if (leaves.size() == 1) return leaves[0];
  const uint64_t k = SplitPoint(leaves.size());
  return MerkleNodeHash(SubtreeRoot(leaves.first(k)),
                        SubtreeRoot(leaves.subspan(k)));
}

// PATH(m, D[n]) from RFC 6962 2.1.1, appended to `out` leaf-to-root.
// Requires m < leaves.size().
void AppendPath(uint64_t m, LeafSpan leaves, std::vector<Digest32>* out) {
  const uint64_t n = leaves.size();
  if (n <= 1) return;
  const uint64_t k = SplitPoint(n);
  if (m < k) {
    AppendPath(m, leaves.first(k), out);
    out->push_back(SubtreeRoot(leaves.subspan(k)));
  } else {
    AppendPath(m - k, leaves.subspan(k), out);
    out->push_back(SubtreeRoot(leaves.first(k)));
  }
}

// SUBPROOF(m, D[n], b) from RFC 6962 2.1.2, appended to `out`.
// Requires 0 < m <= leaves.size().
void AppendSubproof(uint64_t m, LeafSpan leaves, bool b,
                    std::vector<Digest32>* out) {
  const uint64_t n = leaves.size();
  if (m == n) {
    if (!b) out->push_back(SubtreeRoot(leaves));
    return;
  }
  const uint64_t k = SplitPoint(n);
  if (m <= k) {
    AppendSubproof(m, leaves.first(k), b, out);
    out->push_back(SubtreeRoot(leaves.subspan(k)));
  } else {
    AppendSubproof(m - k, leaves.subspan(k), false, out);
    out->push_back(SubtreeRoot(leaves.first(k)));
  }
}

}  // namespace

Digest32 MerkleLeafHash(std::string_view leaf_bytes) {
  return Sha256(std::string_view("\x00", 1), leaf_bytes);
}

Digest32 MerkleNodeHash(const Digest32& left, const Digest32& right) {
  std::array<unsigned char, 1 + 2 * sizeof(Digest32)> buf;
  buf[0] = 0x01;
  std::memcpy(buf.data() + 1, left.data(), left.size());
  std::memcpy(buf.data() + 1 + left.size(), right.data(), right.size());
  // Not OpenSSL 3's one-shot SHA256(): it fetches an EVP method on every
  // call, 3 to 4 times the cost of hashing these 65 bytes (verify hashes a
  // node per event). The low-level calls, deprecated in OpenSSL 3 but
  // supported, go straight to the block function (SHA-NI where present).
  Digest32 out;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  SHA256_Update(&ctx, buf.data(), buf.size());
  SHA256_Final(out.data(), &ctx);
#pragma GCC diagnostic pop
  return out;
}

Digest32 MerkleEmptyRoot() {
  static const Digest32 kRoot = Sha256(std::string_view());
  return kRoot;
}

Digest32 MerkleRoot(const std::vector<Digest32>& leaf_hashes) {
  return SubtreeRoot(leaf_hashes);
}

void MerkleTreeBuilder::AddLeafHash(const Digest32& leaf_hash) {
  // Adding a leaf is binary increment: each trailing 1 bit of size_ is a
  // perfect subtree that merges with the new (equal-sized) one on its right.
  Digest32 cur = leaf_hash;
  for (uint64_t s = size_; s & 1; s >>= 1) {
    cur = MerkleNodeHash(subtrees_.back(), cur);
    subtrees_.pop_back();
  }
  subtrees_.push_back(cur);
  ++size_;
}

void MerkleTreeBuilder::AddSubtree(const Digest32& root, unsigned height) {
  // AddLeafHash one level up: the carries start at bit `height`.
  Digest32 cur = root;
  for (uint64_t s = size_ >> height; s & 1; s >>= 1) {
    cur = MerkleNodeHash(subtrees_.back(), cur);
    subtrees_.pop_back();
  }
  subtrees_.push_back(cur);
  size_ += uint64_t{1} << height;
}

bool MerkleTreeBuilder::Append(const MerkleTreeBuilder& right) {
  if (right.size_ == 0) return true;
  if (size_ % std::bit_floor(right.size_) != 0) return false;
  // right's subtrees, largest first, are its size's set bits, highest first.
  size_t i = 0;
  for (int bit = 63; bit >= 0; --bit) {
    if (right.size_ >> bit & 1) {
      AddSubtree(right.subtrees_[i++], static_cast<unsigned>(bit));
    }
  }
  return true;
}

Digest32 MerkleTreeBuilder::Root() const {
  if (subtrees_.empty()) return MerkleEmptyRoot();
  // The RFC 6962 split of a size that is not a power of two is exactly "the
  // largest perfect subtree on the left, the rest on the right", so the root
  // is the right fold of the perfect-subtree roots.
  Digest32 root = subtrees_.back();
  for (size_t i = subtrees_.size() - 1; i-- > 0;) {
    root = MerkleNodeHash(subtrees_[i], root);
  }
  return root;
}

std::vector<Digest32> ConsistencyProof(
    uint64_t m, const std::vector<Digest32>& leaf_hashes) {
  std::vector<Digest32> proof;
  if (m == 0 || m >= leaf_hashes.size()) return proof;
  AppendSubproof(m, leaf_hashes, /*b=*/true, &proof);
  return proof;
}

bool VerifyConsistency(uint64_t m, const Digest32& old_root, uint64_t n,
                       const Digest32& new_root,
                       const std::vector<Digest32>& proof) {
  if (m > n) return false;
  if (m == 0) {
    if (!proof.empty() || old_root != MerkleEmptyRoot()) return false;
    return n != 0 || new_root == old_root;
  }
  if (m == n) return proof.empty() && old_root == new_root;

  // RFC 9162 section 2.1.4.2, for 0 < m < n.
  if (proof.empty()) return false;  // Step 1.
  // Step 2: if m is a power of two, old_root is the implicit first element.
  size_t next = 0;
  Digest32 fr, sr;
  if (std::has_single_bit(m)) {
    fr = sr = old_root;
  } else {
    fr = sr = proof[next++];  // Step 5.
  }
  uint64_t fn = m - 1, sn = n - 1;  // Step 3.
  while (fn & 1) {                  // Step 4.
    fn >>= 1;
    sn >>= 1;
  }
  for (; next < proof.size(); ++next) {  // Step 6.
    const Digest32& c = proof[next];
    if (sn == 0) return false;
    if ((fn & 1) || fn == sn) {
      fr = MerkleNodeHash(c, fr);
      sr = MerkleNodeHash(c, sr);
      while (!(fn & 1) && fn != 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      sr = MerkleNodeHash(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && fr == old_root && sr == new_root;  // Step 7.
}

std::vector<Digest32> InclusionProof(uint64_t index,
                                     const std::vector<Digest32>& leaf_hashes) {
  std::vector<Digest32> proof;
  if (index >= leaf_hashes.size()) return proof;
  AppendPath(index, leaf_hashes, &proof);
  return proof;
}

bool VerifyInclusion(uint64_t index, uint64_t n, const Digest32& leaf_hash,
                     const std::vector<Digest32>& proof, const Digest32& root) {
  // RFC 9162 section 2.1.3.2.
  if (index >= n) return false;
  uint64_t fn = index, sn = n - 1;
  Digest32 r = leaf_hash;
  for (const Digest32& p : proof) {
    if (sn == 0) return false;
    if ((fn & 1) || fn == sn) {
      r = MerkleNodeHash(p, r);
      while (!(fn & 1) && fn != 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      r = MerkleNodeHash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && r == root;
}

}  // namespace migledger
