// The digest's text form and the check that a ledger extends a saved one.
#include "ledger/digest.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/sha256.h"
#include "common/status.h"
#include "ledger/ledger_test_util.h"
#include "ledger/merkle.h"

namespace migledger {
namespace {

using DigestTest = LedgerTest;

LedgerDigest SomeDigest() {
  LedgerDigest d;
  d.ledger_id = "0123456789abcdef0123456789abcdef";
  d.size = 42;
  for (size_t i = 0; i < d.root.size(); ++i) {
    d.root[i] = static_cast<uint8_t>(i * 7);
  }
  return d;
}

TEST(DigestTextTest, FormatPrintsTheFieldsInOrder) {
  const LedgerDigest d = SomeDigest();
  EXPECT_EQ(FormatDigest(d), "migledger-digest v1\nledger_id: " + d.ledger_id +
                                 "\nsize: 42\nroot: " + ToHex(d.root) + "\n");
  LedgerDigest t = d;
  t.target_key = "sqlite:db-a";
  EXPECT_EQ(FormatDigest(t), "migledger-digest v1\nledger_id: " + d.ledger_id +
                                 "\ntarget: sqlite:db-a\nsize: 42\nroot: " +
                                 ToHex(d.root) + "\n");
}

TEST(DigestTextTest, ParseReadsWhatFormatWrites) {
  for (const std::string target : {"", "postgres:7301/app"}) {
    LedgerDigest d = SomeDigest();
    d.target_key = target;
    auto parsed = ParseDigest(FormatDigest(d));
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    EXPECT_EQ(parsed->ledger_id, d.ledger_id);
    EXPECT_EQ(parsed->target_key, target);
    EXPECT_EQ(parsed->size, d.size);
    EXPECT_EQ(parsed->root, d.root);
  }
}

TEST(DigestTextTest, ParseIgnoresLinesItDoesNotKnow) {
  const LedgerDigest d = SomeDigest();
  auto parsed = ParseDigest("# saved before the release\n" + FormatDigest(d) +
                            "note: kept offline\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->size, 42u);
  EXPECT_EQ(parsed->root, d.root);
}

TEST(DigestTextTest, ParseRefusesTextWithoutHeaderSizeOrRoot) {
  const LedgerDigest d = SomeDigest();
  const std::string text = FormatDigest(d);
  const std::vector<std::string> lines = {"migledger-digest v1\n", "size: 42\n",
                                          "root: " + ToHex(d.root) + "\n"};
  for (const std::string& line : lines) {
    std::string without = text;
    without.erase(without.find(line), line.size());
    auto parsed = ParseDigest(without);
    ASSERT_FALSE(parsed.ok()) << "without " << line;
    EXPECT_EQ(parsed.status().code(), Code::kInvalidInput);
  }
  EXPECT_FALSE(ParseDigest(text.substr(0, text.find("size: ")) +
                           "size: many\nroot: " + ToHex(d.root) + "\n")
                   .ok());
  EXPECT_FALSE(
      ParseDigest(text.substr(0, text.find("root: ")) + "root: 12\n").ok());
}

TEST_F(DigestTest, ALedgerExtendsItsOwnEarlierDigests) {
  BuildLedger(Dir());
  auto ledger = MustOpen(Dir(), ReadOnly());
  ASSERT_TRUE(ledger);
  for (const std::string target : {"", "sqlite:db-a"}) {
    for (uint64_t size : {1, 3, 5}) {
      auto d = ledger->Digest(target, size);
      ASSERT_TRUE(d.ok()) << d.status().ToString();
      Status s = CheckExtendsDigest(ledger.get(), *d);
      EXPECT_TRUE(s.ok()) << target << " " << size << ": " << s.ToString();
    }
  }
  LedgerDigest empty;
  empty.ledger_id = ledger->ledger_id();
  empty.root = MerkleEmptyRoot();
  EXPECT_TRUE(CheckExtendsDigest(ledger.get(), empty).ok());
}

TEST_F(DigestTest, ADigestOfAnotherLedgerIsRefused) {
  BuildLedger(Dir());
  auto ledger = MustOpen(Dir(), ReadOnly());
  ASSERT_TRUE(ledger);
  auto d = ledger->Digest("", 4);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  d->ledger_id = "ffffffffffffffffffffffffffffffff";
  Status s = CheckExtendsDigest(ledger.get(), *d);
  EXPECT_EQ(s.code(), Code::kLedgerCorrupt);
  EXPECT_TRUE(Contains(s.message(), "another ledger")) << s.ToString();
}

TEST_F(DigestTest, ADigestOfMoreEventsThanTheLedgerHoldsNamesTheFirstMissing) {
  BuildLedger(Dir());
  auto ledger = MustOpen(Dir(), ReadOnly());
  ASSERT_TRUE(ledger);
  auto d = ledger->Digest("sqlite:db-b", 0);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  d->size = 7;  // db-b has 5 events
  Status s = CheckExtendsDigest(ledger.get(), *d);
  EXPECT_EQ(s.code(), Code::kLedgerCorrupt);
  EXPECT_TRUE(Contains(s.message(), "first missing sequence 6"))
      << s.ToString();
}

TEST_F(DigestTest, AnEditedEventBeforeTheDigestBreaksTheExtension) {
  std::vector<std::string> bytes = BuildLedger(Dir());
  LedgerDigest saved;
  {
    auto ledger = MustOpen(Dir(), ReadOnly());
    ASSERT_TRUE(ledger);
    auto d = ledger->Digest("", 6);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    saved = *d;
  }
  {
    // The hashes are rewritten with the event, as a careful editor would.
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    std::string edited = bytes[2];
    edited.back() ^= 1;
    raw.PutEvent(3, edited);
    std::string hashes = raw.Get("hashes", Be64(3));
    hashes.replace(0, 32, Raw(MerkleLeafHash(edited)));
    raw.Put("hashes", Be64(3), hashes);
  }
  auto ledger = MustOpen(Dir(), ReadOnly());
  ASSERT_TRUE(ledger);
  Status s = CheckExtendsDigest(ledger.get(), saved);
  EXPECT_EQ(s.code(), Code::kLedgerCorrupt);
  EXPECT_TRUE(Contains(s.message(), "not an append-only extension"))
      << s.ToString();
}

}  // namespace
}  // namespace migledger
