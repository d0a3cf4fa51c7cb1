// Verifying the ledger: Verify and Digest on good and tampered ledgers,
// the cheap check of the tail on open, and the verified mark.
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/sha256.h"
#include "common/status.h"
#include "ledger/ledger.h"
#include "ledger/ledger_test_util.h"
#include "ledger/merkle.h"
#include "migledger/v1/event.pb.h"

namespace migledger {
namespace {

TEST_F(LedgerTest, VerifyOfGoodLedgerIsOkAndItsRootIsTheMerkleRoot) {
  std::vector<std::string> bytes = BuildLedger(Dir());
  ASSERT_EQ(bytes.size(), 10u);
  auto ledger = MustOpen(Dir(), Writable());
  ASSERT_TRUE(ledger);
  auto report = ledger->Verify();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->ok()) << report->problem;
  EXPECT_EQ(report->first_bad_sequence, 0u);
  EXPECT_EQ(report->events_checked, 10u);
  EXPECT_EQ(report->digest.ledger_id, ledger->ledger_id());
  EXPECT_EQ(report->digest.target_key, "");
  EXPECT_EQ(report->digest.size, 10u);
  std::vector<Digest32> leaves;
  for (const auto& b : bytes) leaves.push_back(MerkleLeafHash(b));
  EXPECT_EQ(report->digest.root, MerkleRoot(leaves));
}

TEST_F(LedgerTest, VerifyOfEmptyLedgerIsOk) {
  auto ledger = MustOpen(EmptyLedger(Dir()), Writable());
  ASSERT_TRUE(ledger);
  auto report = ledger->Verify();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->ok()) << report->problem;
  EXPECT_EQ(report->digest.size, 0u);
  EXPECT_EQ(report->digest.root, MerkleEmptyRoot());
}

TEST_F(LedgerTest, DigestOfPrefixesIsTheMerkleRootOfTheirLeaves) {
  std::vector<std::string> bytes = BuildLedger(Dir());
  auto ledger = MustOpen(Dir(), ReadOnly());
  ASSERT_TRUE(ledger);
  std::vector<Digest32> leaves;
  for (const auto& b : bytes) leaves.push_back(MerkleLeafHash(b));
  for (uint64_t m = 1; m <= leaves.size(); ++m) {
    auto d = ledger->Digest("", m);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ(d->size, m);
    EXPECT_EQ(d->ledger_id, ledger->ledger_id());
    EXPECT_EQ(d->root, MerkleRoot(std::vector<Digest32>(leaves.begin(),
                                                        leaves.begin() + m)))
        << "m=" << m;
  }
  auto all = ledger->Digest("", 0);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size, 10u);
  EXPECT_EQ(all->root, MerkleRoot(leaves));
  auto too_big = ledger->Digest("", 11);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().code(), Code::kInvalidInput);
}

TEST_F(LedgerTest, TargetDigestIsTheMerkleRootOfThatTargetsLeaves) {
  // Odd sequences are db-a, even ones db-b.
  std::vector<std::string> bytes = BuildLedger(Dir());
  auto ledger = MustOpen(Dir(), ReadOnly());
  ASSERT_TRUE(ledger);
  std::map<std::string, std::vector<Digest32>> leaves;
  for (size_t i = 0; i < bytes.size(); ++i) {
    leaves[i % 2 == 0 ? "sqlite:db-a" : "sqlite:db-b"].push_back(
        MerkleLeafHash(bytes[i]));
  }
  for (const auto& [key, target_leaves] : leaves) {
    auto d = ledger->Digest(key, 0);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ(d->target_key, key);
    EXPECT_EQ(d->size, target_leaves.size());
    EXPECT_EQ(d->root, MerkleRoot(target_leaves)) << key;
    for (uint64_t m = 1; m <= target_leaves.size(); ++m) {
      auto prefix = ledger->Digest(key, m);
      ASSERT_TRUE(prefix.ok()) << prefix.status().ToString();
      EXPECT_EQ(prefix->size, m);
      EXPECT_EQ(prefix->root,
                MerkleRoot(std::vector<Digest32>(target_leaves.begin(),
                                                 target_leaves.begin() + m)))
          << key << " m=" << m;
    }
  }
  auto unknown = ledger->Digest("sqlite:nope", 0);
  ASSERT_TRUE(unknown.ok()) << unknown.status().ToString();
  EXPECT_EQ(unknown->size, 0u);
  EXPECT_EQ(unknown->root, MerkleEmptyRoot());
}

TEST_F(LedgerTest, VerifyReportsFlippedByteAtItsSequence) {
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    std::string bytes = raw.GetEvent(5);
    ASSERT_GT(bytes.size(), 10u);
    bytes[bytes.size() / 2] ^= 0x01;
    raw.PutEvent(5, bytes);
  }
  VerifyReport r = VerifyTampered(Dir());
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.first_bad_sequence, 5u) << r.problem;
  EXPECT_EQ(r.events_checked, 4u);
  EXPECT_FALSE(r.problem.empty());
}

TEST_F(LedgerTest, VerifyReportsDeletedEventAtItsSequence) {
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    raw.Delete("events", Be64(5));
  }
  VerifyReport r = VerifyTampered(Dir());
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.first_bad_sequence, 5u) << r.problem;
  EXPECT_TRUE(Contains(r.problem, "missing")) << r.problem;
}

TEST_F(LedgerTest, VerifyReportsSwappedEventsAtTheFirstOfThem) {
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    std::string five = raw.GetEvent(5);
    std::string six = raw.GetEvent(6);
    ASSERT_NE(five, six);
    raw.PutEvent(5, six);
    raw.PutEvent(6, five);
  }
  VerifyReport r = VerifyTampered(Dir());
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.first_bad_sequence, 5u) << r.problem;
}

TEST_F(LedgerTest, VerifyReportsEditedStoredHashes) {
  // Rewriting event 5 together with its leaf hash still breaks the chain.
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    std::string bytes = raw.GetEvent(5);
    bytes[bytes.size() / 2] ^= 0x01;
    raw.PutEvent(5, bytes);
    std::string hashes = raw.Get("hashes", Be64(5));
    ASSERT_EQ(hashes.size(), 64u);
    raw.Put("hashes", Be64(5), Raw(MerkleLeafHash(bytes)) + hashes.substr(32));
  }
  VerifyReport r = VerifyTampered(Dir());
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.first_bad_sequence, 5u) << r.problem;
}

TEST_F(LedgerTest, TornTailIsReportedOnOpen) {
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    raw.Delete("events", Be64(10));
  }
  for (const LedgerOptions& options : {ReadOnly(), Writable()}) {
    auto ledger = Ledger::Open(Dir(), options);
    ASSERT_FALSE(ledger.ok());
    EXPECT_EQ(ledger.status().code(), Code::kLedgerCorrupt);
    EXPECT_TRUE(Contains(ledger.status().message(), "torn"))
        << ledger.status().ToString();
  }
}

TEST_F(LedgerTest, EditedTailIsReportedOnOpen) {
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    std::string bytes = raw.GetEvent(10);
    bytes[bytes.size() / 2] ^= 0x01;
    raw.PutEvent(10, bytes);
  }
  auto ledger = Ledger::Open(Dir(), ReadOnly());
  ASSERT_FALSE(ledger.ok());
  EXPECT_EQ(ledger.status().code(), Code::kLedgerCorrupt)
      << ledger.status().ToString();
  EXPECT_TRUE(Contains(ledger.status().message(), "sequence 10"))
      << ledger.status().ToString();
}

// ---- the verified mark (LedgerOptions::verify_new_events) -----------------

LedgerOptions Verifying(LedgerOptions o) {
  o.verify_new_events = true;
  return o;
}

TEST_F(LedgerTest, VerifiedMarkLetsAnOpenVerifyOnlyWhatCameAfterIt) {
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  {
    // No mark yet: everything is verified, and the writer leaves the mark.
    auto ledger = MustOpen(Dir(), Verifying(Writable()));
    ASSERT_TRUE(ledger);
    EXPECT_EQ(ledger->VerifiedOnOpen(), 10u);
  }
  {
    auto ledger = MustOpen(Dir(), Verifying(ReadOnly()));
    ASSERT_TRUE(ledger);
    EXPECT_EQ(ledger->VerifiedOnOpen(), 0u);
  }
  {
    // A writer that did not verify on open does not move the mark.
    auto ledger = MustOpen(Dir(), Writable());
    ASSERT_TRUE(ledger);
    MustAppend(ledger.get(), MakeEvent("sqlite", "db-a", "run-2", 1));
    MustAppend(ledger.get(), MakeEvent("sqlite", "db-c", "run-2", 2));
  }
  {
    auto ledger = MustOpen(Dir(), Verifying(Writable()));
    ASSERT_TRUE(ledger);
    EXPECT_EQ(ledger->VerifiedOnOpen(), 2u);
    MustAppend(ledger.get(), MakeEvent("sqlite", "db-b", "run-3", 3));
  }
  auto ledger = MustOpen(Dir(), Verifying(ReadOnly()));
  ASSERT_TRUE(ledger);
  EXPECT_EQ(ledger->VerifiedOnOpen(), 0u);
}

TEST_F(LedgerTest, EditsPastTheMarkFailAVerifyingOpen) {
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  MustOpen(Dir(), Verifying(Writable()));  // the mark at 10
  {
    auto ledger = MustOpen(Dir(), Writable());
    ASSERT_TRUE(ledger);
    for (int i = 0; i < 3; ++i)
      MustAppend(ledger.get(), MakeEvent("sqlite", "db-a", "run-2", i));
  }
  // Event 11 (not the tail, which every open checks), the target head of
  // db-b (no event after the mark), the mark on another chain.
  struct Case {
    const char* what;
    std::string table, key;
    size_t byte;
    bool corrupt;  // else: the whole ledger is verified, and it does
  };
  const std::vector<Case> cases = {
      {"event 11", "events", Be64(11), 12, true},
      {"target head", "target_heads", "sqlite:db-b", 20, true},
      {"mark", "meta", "derived/verified", 20, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    std::string original;
    {
      RawDb raw(Dir());
      ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
      original = raw.Get(c.table, c.key);
      ASSERT_GT(original.size(), c.byte);
      std::string forged = original;
      forged[c.byte] ^= 0x01;
      raw.Put(c.table, c.key, forged);
    }
    EXPECT_TRUE(Ledger::Open(Dir(), ReadOnly()).ok());  // not looked at
    auto ledger = Ledger::Open(Dir(), Verifying(ReadOnly()));
    if (c.corrupt) {
      ASSERT_FALSE(ledger.ok());
      EXPECT_EQ(ledger.status().code(), Code::kLedgerCorrupt)
          << ledger.status().ToString();
    } else {
      ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
      EXPECT_EQ((*ledger)->VerifiedOnOpen(), 13u);
    }
    ledger = StatusOr<std::unique_ptr<Ledger>>(Internal("closed"));
    RawDb raw(Dir());
    raw.Put(c.table, c.key, original);
  }
}

TEST_F(LedgerTest, ScanTargetEventsRefusesAnEditedEventBeforeHandingItOut) {
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    std::string bytes = raw.GetEvent(5);  // db-a's third event
    bytes[bytes.size() / 2] ^= 0x01;
    raw.PutEvent(5, bytes);
  }
  auto ledger = MustOpen(Dir(), ReadOnly());
  ASSERT_TRUE(ledger);
  int seen = 0;
  Status s = ledger->ScanTargetEvents("sqlite:db-a", 0, [&](const v1::Event&) {
    ++seen;
    return true;
  });
  EXPECT_EQ(s.code(), Code::kLedgerCorrupt) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "event 5")) << s.ToString();
  EXPECT_EQ(seen, 2);
  // Past it, and on the other target, the events verify.
  seen = 0;
  EXPECT_TRUE(ledger
                  ->ScanTargetEvents("sqlite:db-a", 3,
                                     [&](const v1::Event&) {
                                       ++seen;
                                       return true;
                                     })
                  .ok());
  EXPECT_EQ(seen, 2);
  EXPECT_TRUE(ledger
                  ->ScanTargetEvents("sqlite:db-b", 0,
                                     [&](const v1::Event&) { return true; })
                  .ok());
}

// ---- Verify in chunks, on several threads -----------------------------------

}  // namespace
}  // namespace migledger
