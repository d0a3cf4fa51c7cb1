// RFC 6962 (Certificate Transparency) Merkle tree hashing and proofs.
//
// The ledger's history is committed to by the Merkle Tree Hash (MTH) of its
// entries' leaf hashes. Everything here follows RFC 6962 section 2.1 exactly
// (SHA-256, 0x00 leaf prefix, 0x01 interior-node prefix, split at the largest
// power of two smaller than the size), so roots and proofs interoperate with
// any other RFC 6962 / RFC 9162 implementation and match the published
// Certificate Transparency test vectors.
//
// Terminology: a "leaf hash" is MerkleLeafHash(entry bytes); the functions
// below that take `leaf_hashes` take already-hashed leaves, in log order.
// Tree sizes and indexes are 0-based counts / positions of leaves.
//
// Proof generators never fail: for arguments outside their domain they return
// an empty proof, which the matching verifier rejects for those arguments.
// Verifiers never throw and never read outside `proof`; they return false for
// any malformed input (wrong sizes, wrong proof length, wrong hashes).
//
// A tree head is the pair (size, root), and callers must authenticate both:
// proofs carry only hashes, and a verifier cannot tell a leaf hash from an
// interior node hash, so a valid proof does not by itself pin the tree size.
// E.g. the 4-leaf root H(H(L0,L1), H(L2,L3)) is also a "3-leaf root" whose
// third leaf hash is H(L2,L3), and the 4-leaf proofs for it also verify with
// n = 3. Never trust a size because a proof verified with it.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "common/sha256.h"

namespace migledger {

// RFC 6962 section 2.1: leaf hash = SHA-256(0x00 || bytes)
Digest32 MerkleLeafHash(std::string_view leaf_bytes);

// interior node = SHA-256(0x01 || left || right)
Digest32 MerkleNodeHash(const Digest32& left, const Digest32& right);

// The MTH of the empty tree: SHA-256("") =
// e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.
Digest32 MerkleEmptyRoot();

// Merkle Tree Hash of leaf hashes (MTH); empty tree = SHA-256("").
// A one-leaf tree's root is its leaf hash. Holds all leaf hashes in memory;
// uses O(log n) stack and exactly n - 1 node hashes.
Digest32 MerkleRoot(const std::vector<Digest32>& leaf_hashes);

// Streaming builder: O(log n) memory, for millions of leaves.
// Keeps the roots of the perfect subtrees that make up the tree so far (one
// per set bit of size()), so AddLeafHash is amortised O(1) node hashes and
// Root() is O(log n). Root() may be called at any time, any number of times,
// and always equals MerkleRoot() of the leaf hashes added so far.
class MerkleTreeBuilder {
 public:
  void AddLeafHash(const Digest32& leaf_hash);
  // Adds every leaf added to `right`, as if they were added here one by one,
  // in O(log n) node hashes: so disjoint runs of leaves can be built apart
  // (on several threads) and joined in order. REQUIRES: right.size() == 0 or
  // size() is a multiple of the largest power of two <= right.size() (true
  // when every run but the last holds the same power-of-two number of
  // leaves), so that right's perfect subtrees are also perfect subtrees of
  // the joined tree. Returns false, changing nothing, otherwise.
  bool Append(const MerkleTreeBuilder& right);
  uint64_t size() const { return size_; }
  Digest32 Root() const;  // MTH of all leaves added so far (same as MerkleRoot)

 private:
  // Adds a perfect subtree of 2^height leaves; REQUIRES size_ % 2^height == 0.
  void AddSubtree(const Digest32& root, unsigned height);

  uint64_t size_ = 0;
  // Perfect-subtree roots, left to right, strictly decreasing in size; the
  // subtree sizes are the set bits of size_, highest first.
  std::vector<Digest32> subtrees_;
};

// RFC 6962 2.1.2 consistency proof PROOF(m, D[n]) and its verification (RFC
// 9162 section 2.1.4.2 algorithm).
//
// ConsistencyProof proves that the tree of the first m leaf hashes is a prefix
// of the tree of all n = leaf_hashes.size() leaf hashes. For 0 < m < n it
// returns PROOF(m, D[n]) as defined by RFC 6962 (at most ~2*log2(n) hashes).
// For m == 0, m == n, or m > n it returns an empty proof.
std::vector<Digest32> ConsistencyProof(
    uint64_t m, const std::vector<Digest32>& leaf_hashes);

// Returns true iff `proof` shows that the tree of size m with root `old_root`
// is a prefix of the tree of size n with root `new_root`:
//  - m > n: false.
//  - m == n: true iff proof is empty and old_root == new_root (and, when
//    m == 0, both equal MerkleEmptyRoot()).
//  - m == 0 < n: true iff proof is empty and old_root == MerkleEmptyRoot()
//    (every tree extends the empty tree; new_root cannot be checked).
//  - 0 < m < n: the RFC 9162 2.1.4.2 algorithm; the proof must have exactly
//    the expected length and reproduce both roots.
bool VerifyConsistency(uint64_t m, const Digest32& old_root, uint64_t n,
                       const Digest32& new_root,
                       const std::vector<Digest32>& proof);

// RFC 6962 2.1.1 audit path (inclusion proof) and verification.
//
// InclusionProof returns PATH(index, D[n]) for the leaf at 0-based `index` in
// the tree of all n = leaf_hashes.size() leaf hashes (empty for n == 1).
// For index >= n it returns an empty proof.
std::vector<Digest32> InclusionProof(uint64_t index,
                                     const std::vector<Digest32>& leaf_hashes);

// Returns true iff `proof` shows that `leaf_hash` is the leaf at 0-based
// `index` in the tree of size n whose root is `root` (RFC 9162 2.1.3.2).
// False for index >= n, a proof of the wrong length, or any hash mismatch.
bool VerifyInclusion(uint64_t index, uint64_t n, const Digest32& leaf_hash,
                     const std::vector<Digest32>& proof, const Digest32& root);

}  // namespace migledger
