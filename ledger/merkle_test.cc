#include "ledger/merkle.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/sha256.h"

namespace migledger {
namespace {

Digest32 D(std::string_view hex) {
  Digest32 d{};
  EXPECT_TRUE(FromHex(hex, &d)) << hex;
  return d;
}

std::vector<std::string> Hexes(const std::vector<Digest32>& v) {
  std::vector<std::string> out;
  for (const Digest32& d : v) out.push_back(ToHex(d));
  return out;
}

// The Certificate Transparency reference leaves
// (google/certificate-transparency merkle_tree_test.cc; transparency-dev/merkle
// testonly/constants.go).
std::vector<std::string> CtLeafInputs() {
  using namespace std::string_literals;
  return {""s,
          "\x00"s,
          "\x10"s,
          "\x20\x21"s,
          "\x30\x31"s,
          "\x40\x41\x42\x43"s,
          "\x50\x51\x52\x53\x54\x55\x56\x57"s,
          "\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"s};
}

std::vector<Digest32> CtLeafHashes() {
  std::vector<Digest32> out;
  for (const std::string& s : CtLeafInputs()) out.push_back(MerkleLeafHash(s));
  return out;
}

// Published roots for the first 0..8 CT leaves (transparency-dev/merkle
// testonly/constants.go RootHashes()); also re-derived independently.
const char* const kCtRoots[] = {
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
};

std::vector<Digest32> Prefix(const std::vector<Digest32>& v, uint64_t n) {
  return std::vector<Digest32>(v.begin(), v.begin() + n);
}

// Distinct synthetic leaf hashes (the leaf data is the two bytes i, 7*i).
std::vector<Digest32> SyntheticLeafHashes(int n) {
  std::vector<Digest32> out;
  for (int i = 0; i < n; ++i) {
    const char bytes[2] = {static_cast<char>(i & 0xff),
                           static_cast<char>((i * 7) & 0xff)};
    out.push_back(MerkleLeafHash(std::string_view(bytes, 2)));
  }
  return out;
}

TEST(MerkleTest, LeafAndNodeHashUseRfc6962Prefixes) {
  EXPECT_EQ(ToHex(MerkleLeafHash("")), kCtRoots[1]);
  const std::string zero("\x00", 1), one("\x01", 1);
  EXPECT_EQ(MerkleLeafHash("abc"), Sha256(zero, "abc"));
  const Digest32 a = MerkleLeafHash("a"), b = MerkleLeafHash("b");
  EXPECT_EQ(MerkleNodeHash(a, b),
            Sha256(one + std::string(AsBytes(a)) + std::string(AsBytes(b))));
  EXPECT_NE(MerkleNodeHash(a, b), MerkleNodeHash(b, a));
  const std::vector<Digest32> ct = CtLeafHashes();
  EXPECT_EQ(ToHex(MerkleNodeHash(ct[0], ct[1])), kCtRoots[2]);
}

TEST(MerkleTest, EmptyTreeIsSha256OfEmptyString) {
  EXPECT_EQ(ToHex(MerkleEmptyRoot()), kCtRoots[0]);
  EXPECT_EQ(ToHex(MerkleRoot({})), kCtRoots[0]);
  MerkleTreeBuilder builder;
  EXPECT_EQ(builder.size(), 0u);
  EXPECT_EQ(ToHex(builder.Root()), kCtRoots[0]);
}

TEST(MerkleTest, RootsMatchCertificateTransparencyVectors) {
  const std::vector<Digest32> leaves = CtLeafHashes();
  MerkleTreeBuilder builder;
  for (uint64_t n = 0; n <= leaves.size(); ++n) {
    EXPECT_EQ(ToHex(MerkleRoot(Prefix(leaves, n))), kCtRoots[n]) << n;
    EXPECT_EQ(builder.size(), n);
    EXPECT_EQ(ToHex(builder.Root()), kCtRoots[n]) << n;
    if (n < leaves.size()) builder.AddLeafHash(leaves[n]);
  }
}

TEST(MerkleTest, InclusionProofsMatchPublishedVectors) {
  // transparency-dev/merkle proof/verify_test.go inclusionProofs (there the
  // leaf numbers are 1-based; here the indexes are 0-based).
  struct Vector {
    uint64_t index, n;
    std::vector<const char*> proof;
  };
  const std::vector<Vector> vectors = {
      {0, 1, {}},
      {0,
       8,
       {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
      {5,
       8,
       {"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
      {2,
       3,
       {"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"}},
      {1,
       5,
       {"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
  };
  const std::vector<Digest32> leaves = CtLeafHashes();
  for (const Vector& v : vectors) {
    SCOPED_TRACE("index " + std::to_string(v.index) + " n " +
                 std::to_string(v.n));
    const std::vector<Digest32> proof =
        InclusionProof(v.index, Prefix(leaves, v.n));
    EXPECT_EQ(Hexes(proof),
              std::vector<std::string>(v.proof.begin(), v.proof.end()));
    EXPECT_TRUE(VerifyInclusion(v.index, v.n, leaves[v.index], proof,
                                D(kCtRoots[v.n])));
  }
}

TEST(MerkleTest, ConsistencyProofsMatchPublishedVectors) {
  // transparency-dev/merkle proof/verify_test.go consistencyProofs.
  struct Vector {
    uint64_t m, n;
    std::vector<const char*> proof;
  };
  const std::vector<Vector> vectors = {
      {1, 1, {}},
      {1,
       8,
       {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
      {6,
       8,
       {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
      {2,
       5,
       {"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
      {6,
       7,
       {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
  };
  const std::vector<Digest32> leaves = CtLeafHashes();
  for (const Vector& v : vectors) {
    SCOPED_TRACE("m " + std::to_string(v.m) + " n " + std::to_string(v.n));
    const std::vector<Digest32> proof =
        ConsistencyProof(v.m, Prefix(leaves, v.n));
    EXPECT_EQ(Hexes(proof),
              std::vector<std::string>(v.proof.begin(), v.proof.end()));
    EXPECT_TRUE(
        VerifyConsistency(v.m, D(kCtRoots[v.m]), v.n, D(kCtRoots[v.n]), proof));
  }
}

TEST(MerkleTest, ProofsMatchIndependentReferenceImplementation) {
  // SHA-256 over every consistency proof (1 <= m <= n) and every inclusion
  // proof (0 <= index < n), n = 1..40, in that order, for
  // SyntheticLeafHashes. Computed by a separate Python implementation written
  // straight from the RFC 6962 recursive definitions (which also reproduces
  // all the published vectors above).
  const std::vector<Digest32> all = SyntheticLeafHashes(40);
  std::string concat;
  for (uint64_t n = 1; n <= 40; ++n) {
    const std::vector<Digest32> leaves = Prefix(all, n);
    for (uint64_t m = 1; m <= n; ++m) {
      for (const Digest32& d : ConsistencyProof(m, leaves))
        concat += AsBytes(d);
    }
    for (uint64_t i = 0; i < n; ++i) {
      for (const Digest32& d : InclusionProof(i, leaves)) concat += AsBytes(d);
    }
  }
  EXPECT_EQ(Sha256Hex(concat),
            "3de154d101846204e3dbdea188fdc8ce869eb68233ac1d49ca533d9d5472c692");
}

TEST(MerkleTest, BuilderMatchesMerkleRootForSizes0To300) {
  const std::vector<Digest32> all = SyntheticLeafHashes(300);
  MerkleTreeBuilder builder;
  for (uint64_t n = 0; n <= all.size(); ++n) {
    ASSERT_EQ(builder.size(), n);
    const Digest32 root = builder.Root();
    ASSERT_EQ(root, MerkleRoot(Prefix(all, n))) << n;
    ASSERT_EQ(builder.Root(), root) << "Root() must not change the builder";
    if (n < all.size()) builder.AddLeafHash(all[n]);
  }
}

TEST(MerkleTest, BuilderMatchesMerkleRootAroundPowersOfTwo) {
  const std::vector<Digest32> all = SyntheticLeafHashes(4097);
  MerkleTreeBuilder builder;
  for (uint64_t n = 0; n <= all.size(); ++n) {
    if (n > 2 && ((n & (n - 1)) == 0 || ((n - 1) & (n - 2)) == 0 ||
                  ((n + 1) & n) == 0)) {
      ASSERT_EQ(builder.Root(), MerkleRoot(Prefix(all, n))) << n;
    }
    if (n < all.size()) builder.AddLeafHash(all[n]);
  }
}

// Verify builds one tree per chunk of the ledger, on several threads, and
// joins them: the joined tree must be the tree of all leaves in order.
TEST(MerkleTest, BuildersOfEqualPowerOfTwoRunsJoinIntoTheWholeTree) {
  const std::vector<Digest32> all = SyntheticLeafHashes(300);
  for (uint64_t run : {1, 2, 4, 8, 16, 64, 256, 512}) {
    for (uint64_t n : {0, 1, 2, 3, 5, 8, 15, 16, 17, 100, 255, 256, 257, 300}) {
      MerkleTreeBuilder joined;
      for (uint64_t start = 0; start < n; start += run) {
        MerkleTreeBuilder part;
        for (uint64_t i = start; i < std::min(n, start + run); ++i) {
          part.AddLeafHash(all[i]);
        }
        ASSERT_TRUE(joined.Append(part)) << "run " << run << " n " << n;
      }
      ASSERT_EQ(joined.size(), n);
      ASSERT_EQ(joined.Root(), MerkleRoot(Prefix(all, n)))
          << "run " << run << " n " << n;
      // And it keeps growing like any builder.
      if (n < all.size()) {
        joined.AddLeafHash(all[n]);
        ASSERT_EQ(joined.Root(), MerkleRoot(Prefix(all, n + 1)));
      }
    }
  }
}

TEST(MerkleTest, AppendJoinsAnyRightRunAtAMultipleOfItsLargestSubtree) {
  // Each run starts at a multiple of the largest power of two <= its size.
  const std::vector<Digest32> all = SyntheticLeafHashes(28);
  MerkleTreeBuilder joined;
  uint64_t at = 0;
  for (uint64_t size : {8, 5, 1, 2, 8, 3, 1}) {
    MerkleTreeBuilder part;
    for (uint64_t i = at; i < at + size; ++i) part.AddLeafHash(all[i]);
    ASSERT_TRUE(joined.Append(part)) << at;
    at += size;
    ASSERT_EQ(joined.Root(), MerkleRoot(Prefix(all, at))) << at;
  }
}

TEST(MerkleTest, AppendRefusesARunItsPerfectSubtreesWouldStraddle) {
  const std::vector<Digest32> all = SyntheticLeafHashes(8);
  MerkleTreeBuilder left, right;
  for (int i = 0; i < 3; ++i) left.AddLeafHash(all[i]);
  for (int i = 3; i < 5; ++i) right.AddLeafHash(all[i]);
  const Digest32 before = left.Root();
  EXPECT_FALSE(left.Append(right));  // 3 is not a multiple of 2
  EXPECT_EQ(left.size(), 3u);
  EXPECT_EQ(left.Root(), before);
  MerkleTreeBuilder empty;
  EXPECT_TRUE(left.Append(empty));
  EXPECT_EQ(left.Root(), before);
}

TEST(MerkleTest, ConsistencyProofsVerifyForAllSizesUpTo40) {
  const std::vector<Digest32> all = SyntheticLeafHashes(40);
  std::vector<Digest32> roots;
  for (uint64_t n = 0; n <= all.size(); ++n) {
    roots.push_back(MerkleRoot(Prefix(all, n)));
  }
  for (uint64_t n = 1; n <= all.size(); ++n) {
    const std::vector<Digest32> leaves = Prefix(all, n);
    for (uint64_t m = 1; m <= n; ++m) {
      SCOPED_TRACE("m " + std::to_string(m) + " n " + std::to_string(n));
      const std::vector<Digest32> proof = ConsistencyProof(m, leaves);
      ASSERT_TRUE(VerifyConsistency(m, roots[m], n, roots[n], proof));
      if (m == n) {
        EXPECT_TRUE(proof.empty());
        continue;
      }
      EXPECT_FALSE(proof.empty());
      // Swapped roots, and any edited, truncated or extended
      // proof are all rejected.
      EXPECT_FALSE(VerifyConsistency(m, roots[n], n, roots[m], proof));
      EXPECT_FALSE(VerifyConsistency(m, roots[m], n, roots[m], proof));
      EXPECT_FALSE(VerifyConsistency(m, roots[n], n, roots[n], proof));
      EXPECT_FALSE(VerifyConsistency(m, roots[m], n, roots[n], {}));
      for (size_t i = 0; i < proof.size(); ++i) {
        std::vector<Digest32> bad = proof;
        bad[i][31] ^= 1;
        EXPECT_FALSE(VerifyConsistency(m, roots[m], n, roots[n], bad)) << i;
        bad = proof;
        bad.erase(bad.begin() + i);
        EXPECT_FALSE(VerifyConsistency(m, roots[m], n, roots[n], bad)) << i;
      }
      std::vector<Digest32> longer = proof;
      longer.push_back(roots[n]);
      EXPECT_FALSE(VerifyConsistency(m, roots[m], n, roots[n], longer));
      longer = proof;
      longer.insert(longer.begin(), roots[m]);
      EXPECT_FALSE(VerifyConsistency(m, roots[m], n, roots[n], longer));
    }
  }
}

// A log that rewrote its history between the old and the new tree head: the
// proof from the rewritten tree (and the honest proof) must not verify
// against the old head.
void ExpectRewriteDetected(const std::vector<Digest32>& original, uint64_t m,
                           const std::vector<Digest32>& rewritten) {
  const Digest32 old_root = MerkleRoot(Prefix(original, m));
  const uint64_t n = rewritten.size();
  const Digest32 new_root = MerkleRoot(rewritten);
  EXPECT_FALSE(VerifyConsistency(m, old_root, n, new_root,
                                 ConsistencyProof(m, rewritten)));
  EXPECT_FALSE(VerifyConsistency(m, old_root, n, new_root,
                                 ConsistencyProof(m, original)));
}

TEST(MerkleTest, TamperedLeafFailsConsistency) {
  const std::vector<Digest32> all = SyntheticLeafHashes(24);
  for (uint64_t n = 2; n <= all.size(); ++n) {
    for (uint64_t m = 1; m < n; ++m) {
      for (uint64_t j = 0; j < m; ++j) {
        SCOPED_TRACE("m " + std::to_string(m) + " n " + std::to_string(n) +
                     " j " + std::to_string(j));
        std::vector<Digest32> tampered = Prefix(all, n);
        tampered[j] = MerkleLeafHash("tampered");
        ExpectRewriteDetected(Prefix(all, n), m, tampered);
      }
    }
  }
}

TEST(MerkleTest, RemovedLeafFailsConsistency) {
  const std::vector<Digest32> all = SyntheticLeafHashes(25);
  for (uint64_t n = 2; n <= 24; ++n) {
    for (uint64_t m = 1; m < n; ++m) {
      for (uint64_t j = 0; j < m; ++j) {
        SCOPED_TRACE("m " + std::to_string(m) + " n " + std::to_string(n) +
                     " j " + std::to_string(j));
        // Leaf j removed; the new tree is one shorter...
        std::vector<Digest32> removed = Prefix(all, n);
        removed.erase(removed.begin() + j);
        ExpectRewriteDetected(Prefix(all, n), m, removed);
        // ...or the gap is hidden by appending another leaf.
        removed.push_back(all[n]);
        ExpectRewriteDetected(Prefix(all, n), m, removed);
      }
    }
  }
}

TEST(MerkleTest, SwappedLeavesFailConsistency) {
  const std::vector<Digest32> all = SyntheticLeafHashes(20);
  for (uint64_t n = 2; n <= all.size(); ++n) {
    for (uint64_t m = 1; m < n; ++m) {
      for (uint64_t j = 0; j < m; ++j) {
        for (uint64_t k = j + 1; k < n; ++k) {
          SCOPED_TRACE("m " + std::to_string(m) + " n " + std::to_string(n) +
                       " swap " + std::to_string(j) + "," + std::to_string(k));
          std::vector<Digest32> swapped = Prefix(all, n);
          std::swap(swapped[j], swapped[k]);
          ExpectRewriteDetected(Prefix(all, n), m, swapped);
        }
      }
    }
  }
}

TEST(MerkleTest, WrongOldSizeFailsConsistency) {
  const std::vector<Digest32> all = SyntheticLeafHashes(24);
  for (uint64_t n = 2; n <= all.size(); ++n) {
    const std::vector<Digest32> leaves = Prefix(all, n);
    const Digest32 new_root = MerkleRoot(leaves);
    for (uint64_t m = 1; m < n; ++m) {
      const Digest32 old_root = MerkleRoot(Prefix(all, m));
      const std::vector<Digest32> proof = ConsistencyProof(m, leaves);
      for (uint64_t wrong_m = 0; wrong_m <= n + 1; ++wrong_m) {
        if (wrong_m == m) continue;
        SCOPED_TRACE("m " + std::to_string(m) + " n " + std::to_string(n) +
                     " claimed m " + std::to_string(wrong_m));
        // The right proof and old root, but the wrong old size.
        EXPECT_FALSE(VerifyConsistency(wrong_m, old_root, n, new_root, proof));
        // A genuine proof for the claimed size cannot vouch for the old root.
        EXPECT_FALSE(VerifyConsistency(wrong_m, old_root, n, new_root,
                                       ConsistencyProof(wrong_m, leaves)));
      }
    }
  }
}

// Documents a property of RFC 6962 proofs that callers must rely on: a
// verifier sees only hashes and cannot tell a leaf hash from an interior node
// hash, so MTH of 4 leaves, H(H(L0,L1), H(L2,L3)), is also the root of a
// 3-leaf tree whose third leaf hash is H(L2,L3). A proof therefore does not
// pin the tree size; sizes must be authenticated together with roots.
TEST(MerkleTest, ProofsDoNotBindTheTreeSizeByThemselves) {
  const std::vector<Digest32> leaves = SyntheticLeafHashes(4);
  const Digest32 root1 = leaves[0], root4 = MerkleRoot(leaves);
  EXPECT_TRUE(
      VerifyConsistency(1, root1, 4, root4, ConsistencyProof(1, leaves)));
  EXPECT_TRUE(
      VerifyConsistency(1, root1, 3, root4, ConsistencyProof(1, leaves)));
  EXPECT_TRUE(
      VerifyInclusion(0, 4, leaves[0], InclusionProof(0, leaves), root4));
  EXPECT_TRUE(
      VerifyInclusion(0, 3, leaves[0], InclusionProof(0, leaves), root4));
}

TEST(MerkleTest, ConsistencyEdgeCases) {
  const std::vector<Digest32> leaves = SyntheticLeafHashes(5);
  const Digest32 empty = MerkleEmptyRoot();
  const Digest32 root5 = MerkleRoot(leaves);
  const Digest32 root3 = MerkleRoot(Prefix(leaves, 3));
  // m == 0: the empty tree is a prefix of every tree, with an empty proof.
  EXPECT_TRUE(ConsistencyProof(0, leaves).empty());
  EXPECT_TRUE(VerifyConsistency(0, empty, 5, root5, {}));
  EXPECT_TRUE(VerifyConsistency(0, empty, 0, empty, {}));
  EXPECT_FALSE(VerifyConsistency(0, root3, 5, root5, {}));
  EXPECT_FALSE(VerifyConsistency(0, empty, 5, root5, {empty}));
  EXPECT_FALSE(VerifyConsistency(0, empty, 0, root5, {}));
  // m == n: equal roots and an empty proof.
  EXPECT_TRUE(ConsistencyProof(5, leaves).empty());
  EXPECT_TRUE(VerifyConsistency(5, root5, 5, root5, {}));
  EXPECT_FALSE(VerifyConsistency(5, root5, 5, root3, {}));
  EXPECT_FALSE(VerifyConsistency(5, root5, 5, root5, {root5}));
  // m > n: never consistent.
  EXPECT_TRUE(ConsistencyProof(6, leaves).empty());
  EXPECT_FALSE(VerifyConsistency(5, root5, 3, root3, {}));
  EXPECT_FALSE(
      VerifyConsistency(5, root5, 3, root3, ConsistencyProof(3, leaves)));
  // Huge sizes do not overflow or loop.
  EXPECT_FALSE(VerifyConsistency(UINT64_MAX - 1, root3, UINT64_MAX, root5,
                                 ConsistencyProof(3, leaves)));
}

TEST(MerkleTest, InclusionProofsVerifyForAllIndexes) {
  const std::vector<Digest32> all = SyntheticLeafHashes(70);
  const Digest32 wrong_leaf = MerkleLeafHash("not in the tree");
  for (uint64_t n = 1; n <= all.size(); ++n) {
    const std::vector<Digest32> leaves = Prefix(all, n);
    const Digest32 root = MerkleRoot(leaves);
    for (uint64_t i = 0; i < n; ++i) {
      SCOPED_TRACE("index " + std::to_string(i) + " n " + std::to_string(n));
      const std::vector<Digest32> proof = InclusionProof(i, leaves);
      ASSERT_TRUE(VerifyInclusion(i, n, leaves[i], proof, root));
      EXPECT_FALSE(VerifyInclusion(i, n, wrong_leaf, proof, root));
      EXPECT_FALSE(VerifyInclusion(i, n, leaves[i], proof, wrong_leaf));
      // Another leaf of the same tree, with this leaf's proof.
      if (n > 1) {
        EXPECT_FALSE(VerifyInclusion(i, n, leaves[(i + 1) % n], proof, root));
      }
      for (uint64_t j = 0; j < n + 2; ++j) {
        if (j == i) continue;
        EXPECT_FALSE(VerifyInclusion(j, n, leaves[i], proof, root)) << j;
      }
      for (size_t k = 0; k < proof.size(); ++k) {
        std::vector<Digest32> bad = proof;
        bad[k][0] ^= 8;
        EXPECT_FALSE(VerifyInclusion(i, n, leaves[i], bad, root)) << k;
        bad = proof;
        bad.erase(bad.begin() + k);
        EXPECT_FALSE(VerifyInclusion(i, n, leaves[i], bad, root)) << k;
      }
      std::vector<Digest32> longer = proof;
      longer.push_back(root);
      EXPECT_FALSE(VerifyInclusion(i, n, leaves[i], longer, root));
    }
  }
}

TEST(MerkleTest, InclusionEdgeCases) {
  const std::vector<Digest32> leaves = SyntheticLeafHashes(4);
  const Digest32 root = MerkleRoot(leaves);
  EXPECT_TRUE(InclusionProof(0, {}).empty());
  EXPECT_TRUE(InclusionProof(4, leaves).empty());
  EXPECT_FALSE(VerifyInclusion(0, 0, leaves[0], {}, MerkleEmptyRoot()));
  EXPECT_FALSE(
      VerifyInclusion(4, 4, leaves[0], InclusionProof(0, leaves), root));
  // A one-leaf tree: the root is the leaf hash and the proof is empty.
  EXPECT_TRUE(InclusionProof(0, Prefix(leaves, 1)).empty());
  EXPECT_TRUE(VerifyInclusion(0, 1, leaves[0], {}, leaves[0]));
  EXPECT_FALSE(VerifyInclusion(0, 1, leaves[1], {}, leaves[0]));
  EXPECT_FALSE(VerifyInclusion(0, 2, leaves[0], {}, leaves[0]));
}

}  // namespace
}  // namespace migledger
