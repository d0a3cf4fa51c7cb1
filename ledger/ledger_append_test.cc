// Appending to the ledger: sequences and chains, prepared events, derived
// data, blobs, and events pulled from a target's mirror.
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

TEST_F(LedgerTest, AppendAssignsLedgerAndPerTargetSequences) {
  auto ledger = MustOpen(Dir(), Writable());
  ASSERT_TRUE(ledger);
  EXPECT_FALSE(ledger->read_only());
  EXPECT_EQ(ledger->ledger_id().size(), 32u);
  EXPECT_EQ(ledger->Head().size, 0u);
  EXPECT_EQ(ledger->Head().chain, Digest32{});

  // a, b, a, (none), b, a, b, b: interleaved targets and one targetless event.
  const std::vector<std::string> targets = {"db-a", "db-b", "db-a", "",
                                            "db-b", "db-a", "db-b", "db-b"};
  std::vector<std::string> bytes;
  std::map<std::string, uint64_t> per_target;
  for (size_t i = 0; i < targets.size(); ++i) {
    v1::Event e = MakeEvent("postgres", targets[i], "run-1",
                            1700000000000000 + static_cast<int64_t>(i));
    auto p = ledger->Prepare(&e);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    uint64_t want_tseq = targets[i].empty() ? 0 : ++per_target[targets[i]];
    EXPECT_EQ(p->target_sequence, want_tseq);
    EXPECT_EQ(e.target_sequence(), want_tseq);
    EXPECT_EQ(p->target_key,
              targets[i].empty() ? "" : "postgres:" + targets[i]);
    EXPECT_EQ(p->leaf_hash, MerkleLeafHash(p->bytes));
    auto seq = ledger->Append(*p, /*sync=*/i == targets.size() - 1);
    ASSERT_TRUE(seq.ok()) << seq.status().ToString();
    EXPECT_EQ(*seq, i + 1);
    bytes.push_back(p->bytes);
  }
  EXPECT_EQ(ledger->Head().size, 8u);
  EXPECT_EQ(ledger->TargetHead("postgres:db-a").size, 3u);
  EXPECT_EQ(ledger->TargetHead("postgres:db-b").size, 4u);
  EXPECT_EQ(ledger->TargetHead("postgres:db-c").size, 0u);
  EXPECT_EQ(ledger->TargetKeys(),
            (std::vector<std::string>{"postgres:db-a", "postgres:db-b"}));

  // Get and Scan return exactly the stored bytes.
  for (uint64_t seq = 1; seq <= bytes.size(); ++seq) {
    auto e = ledger->Get(seq);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    EXPECT_EQ(e->sequence, seq);
    EXPECT_EQ(e->bytes, bytes[seq - 1]);
    EXPECT_EQ(
        e->event.target_sequence(),
        targets[seq - 1].empty()
            ? 0u
            : static_cast<uint64_t>(std::count(
                  targets.begin(), targets.begin() + seq, targets[seq - 1])));
  }
  auto missing = ledger->Get(9);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  std::vector<LedgerEntry> all = ScanAll(ledger.get(), {});
  ASSERT_EQ(all.size(), bytes.size());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].sequence, i + 1);
    EXPECT_EQ(all[i].bytes, bytes[i]);
  }

  // Heads survive a reopen, and appends continue from them.
  const ChainHead head = ledger->Head();
  const ChainHead head_a = ledger->TargetHead("postgres:db-a");
  const std::string id = ledger->ledger_id();
  ledger.reset();
  ledger = MustOpen(Dir(), Writable());
  ASSERT_TRUE(ledger);
  EXPECT_EQ(ledger->ledger_id(), id);
  EXPECT_EQ(ledger->Head().size, head.size);
  EXPECT_EQ(ledger->Head().chain, head.chain);
  EXPECT_EQ(ledger->TargetHead("postgres:db-a").chain, head_a.chain);
  PreparedEvent p;
  EXPECT_EQ(
      MustAppend(ledger.get(), MakeEvent("postgres", "db-a", "run-2", 1), &p),
      9u);
  EXPECT_EQ(p.target_sequence, 4u);
}

TEST_F(LedgerTest, AppendRejectsStalePreparedEvent) {
  auto ledger = MustOpen(EmptyLedger(Dir()), Writable());
  ASSERT_TRUE(ledger);
  v1::Event first = MakeEvent("sqlite", "db-a", "run-1", 1);
  v1::Event second = MakeEvent("sqlite", "db-a", "run-1", 2);
  auto p1 = ledger->Prepare(&first);
  auto p2 = ledger->Prepare(&second);
  ASSERT_TRUE(p1.ok() && p2.ok());
  ASSERT_TRUE(ledger->Append(*p1, false).ok());
  // p2 was prepared for target sequence 1, which is now taken.
  EXPECT_FALSE(ledger->Append(*p2, false).ok());
  EXPECT_EQ(ledger->Head().size, 1u);
  EXPECT_EQ(ledger->TargetHead("sqlite:db-a").size, 1u);
}

TEST_F(LedgerTest, PrepareAfterAndAppendAllChainEventsNotYetAppended) {
  // Five events, three of them about db-a, prepared one after the other
  // without appending (each db-a event after the previous one's head), then
  // appended in one AppendAll: the same ledger as five single appends.
  const std::vector<std::string> targets = {"db-a", "", "db-a", "db-b", "db-a"};
  auto batched = MustOpen(Dir("batched"), Writable());
  auto single = MustOpen(Dir("single"), Writable());
  ASSERT_TRUE(batched && single);
  std::vector<PreparedEvent> prepared;
  std::map<std::string, ChainHead> queued;
  for (size_t i = 0; i < targets.size(); ++i) {
    v1::Event e = MakeEvent("sqlite", targets[i], "run-1",
                            1700000000000000 + static_cast<int64_t>(i));
    v1::Event copy = e;
    const std::string key = targets[i].empty() ? "" : "sqlite:" + targets[i];
    auto p = queued.count(key) ? batched->PrepareAfter(&e, queued[key])
                               : batched->Prepare(&e);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    if (!key.empty()) queued[key] = {p->target_sequence, p->target_chain_head};
    prepared.push_back(*p);
    PreparedEvent one;
    ASSERT_EQ(MustAppend(single.get(), copy, &one), i + 1);
    EXPECT_EQ(p->bytes, one.bytes) << "event " << i + 1;
    EXPECT_EQ(p->target_chain_head, one.target_chain_head) << "event " << i + 1;
  }
  EXPECT_EQ(prepared[4].target_sequence, 3u);
  auto last = batched->AppendAll(prepared, /*sync=*/true);
  ASSERT_TRUE(last.ok()) << last.status().ToString();
  EXPECT_EQ(*last, 5u);
  EXPECT_EQ(batched->Head().size, 5u);
  EXPECT_EQ(batched->Head().chain, single->Head().chain);
  EXPECT_EQ(batched->TargetHead("sqlite:db-a").size, 3u);
  EXPECT_EQ(batched->TargetHead("sqlite:db-a").chain,
            single->TargetHead("sqlite:db-a").chain);
  EXPECT_EQ(batched->TargetHead("sqlite:db-b").size, 1u);
  auto report = batched->Verify();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->ok()) << report->problem;
  EXPECT_EQ(report->digest.root, single->Verify()->digest.root);
  // The heads written in the batch are the ones a reopen reads.
  batched.reset();
  batched = MustOpen(Dir("batched"), Writable());
  ASSERT_TRUE(batched);
  EXPECT_EQ(batched->Head().chain, single->Head().chain);
  EXPECT_EQ(batched->TargetHead("sqlite:db-a").chain,
            single->TargetHead("sqlite:db-a").chain);
  EXPECT_EQ(batched->TargetHead("sqlite:db-b").chain,
            single->TargetHead("sqlite:db-b").chain);
}

TEST_F(LedgerTest, AppendAllOfEventsThatDoNotChainWritesNone) {
  auto ledger = MustOpen(EmptyLedger(Dir()), Writable());
  ASSERT_TRUE(ledger);
  v1::Event first = MakeEvent("sqlite", "db-a", "run-1", 1);
  v1::Event second = MakeEvent("sqlite", "db-a", "run-1", 2);
  auto p1 = ledger->Prepare(&first);
  auto p2 = ledger->Prepare(&second);  // also target sequence 1
  ASSERT_TRUE(p1.ok() && p2.ok());
  std::vector<PreparedEvent> both = {*p1, *p2};
  EXPECT_FALSE(ledger->AppendAll(both, false).ok());
  EXPECT_EQ(ledger->Head().size, 0u);
  EXPECT_EQ(ledger->TargetHead("sqlite:db-a").size, 0u);
  EXPECT_FALSE(ledger->Get(1).ok());
}

TEST_F(LedgerTest, DerivedDataIsKeptButNeverPartOfTheChain) {
  auto ledger = MustOpen(Dir(), Writable());
  ASSERT_TRUE(ledger);
  std::vector<PreparedEvent> prepared(3);
  for (int i = 0; i < 3; ++i) {
    MustAppend(ledger.get(), MakeEvent("sqlite", "db-a", "run-1", 1 + i),
               &prepared[i]);
  }
  const ChainHead head = ledger->Head();
  auto none = ledger->GetDerived("projection/sqlite:db-a");
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_FALSE(none->has_value());
  const std::string value("snapshot \0 bytes", 16);
  ASSERT_TRUE(ledger->PutDerived("projection/sqlite:db-a", value).ok());
  ASSERT_TRUE(ledger->PutDerived("projection/sqlite:db-a", value).ok());
  // The chain and its heads do not move; Verify does not see it.
  EXPECT_EQ(ledger->Head().size, head.size);
  EXPECT_EQ(ledger->Head().chain, head.chain);
  auto report = ledger->Verify();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->ok()) << report->problem;
  // The target's chain head after each of its events, from the index.
  for (uint64_t size = 1; size <= 3; ++size) {
    auto at = ledger->TargetHeadAt("sqlite:db-a", size);
    ASSERT_TRUE(at.ok()) << at.status().ToString();
    EXPECT_EQ(at->size, size);
    EXPECT_EQ(at->chain, prepared[size - 1].target_chain_head);
  }
  auto empty = ledger->TargetHeadAt("sqlite:db-a", 0);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->chain, Digest32{});
  EXPECT_EQ(ledger->TargetHeadAt("sqlite:db-a", 4).status().code(),
            Code::kNotFound);
  EXPECT_EQ(ledger->TargetHeadAt("sqlite:db-b", 1).status().code(),
            Code::kNotFound);
  // A reader sees it too, and cannot write any.
  ledger.reset();
  auto reader = MustOpen(Dir(), ReadOnly());
  ASSERT_TRUE(reader);
  auto got = reader->GetDerived("projection/sqlite:db-a");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, value);
  EXPECT_FALSE(reader->PutDerived("projection/sqlite:db-a", "x").ok());
}

TEST_F(LedgerTest, BlobsAreContentAddressedAndStoredOnce) {
  const std::string sql = "CREATE TABLE t (id INTEGER PRIMARY KEY);\n";
  std::string key;
  {
    auto ledger = MustOpen(EmptyLedger(Dir()), Writable());
    ASSERT_TRUE(ledger);
    auto k1 = ledger->PutBlob(sql);
    ASSERT_TRUE(k1.ok()) << k1.status().ToString();
    key = *k1;
    EXPECT_EQ(key, Sha256Hex(sql));
    auto got = ledger->GetBlob(key);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, sql);
    auto unknown = ledger->GetBlob(Sha256Hex("never stored"));
    ASSERT_FALSE(unknown.ok());
    EXPECT_EQ(unknown.status().code(), Code::kNotFound);
  }
  uint64_t writes_before = 0;
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    EXPECT_EQ(raw.Get("blobs", key), sql);
    writes_before = raw.LatestSequence();
  }
  {
    auto ledger = MustOpen(Dir(), Writable());
    ASSERT_TRUE(ledger);
    for (int i = 0; i < 2; ++i) {
      auto again = ledger->PutBlob(sql);
      ASSERT_TRUE(again.ok()) << again.status().ToString();
      EXPECT_EQ(*again, key);
    }
    auto other = ledger->PutBlob("");
    ASSERT_TRUE(other.ok()) << other.status().ToString();
    EXPECT_EQ(*other, Sha256Hex(""));
    auto got_other = ledger->GetBlob(*other);
    ASSERT_TRUE(got_other.ok()) << got_other.status().ToString();
    EXPECT_EQ(*got_other, "");
  }
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    // Only the new content was written; the repeated PutBlob wrote nothing.
    EXPECT_EQ(raw.LatestSequence(), writes_before + 1);
    EXPECT_EQ(raw.CountKeys("blobs"), 2u);
    // Edit the stored blob behind the ledger's back.
    raw.Put("blobs", key, "DROP TABLE t;");
  }
  auto ledger = MustOpen(Dir(), ReadOnly());
  ASSERT_TRUE(ledger);
  auto edited = ledger->GetBlob(key);
  ASSERT_FALSE(edited.ok());
  EXPECT_EQ(edited.status().code(), Code::kLedgerCorrupt);
}

TEST_F(LedgerTest, MirroredEventsReproduceTheTargetChain) {
  auto a = MustOpen(EmptyLedger(Dir("a")), Writable());
  auto b = MustOpen(EmptyLedger(Dir("b")), Writable());
  ASSERT_TRUE(a && b);
  std::vector<PreparedEvent> prepared;
  for (int i = 1; i <= 5; ++i) {
    PreparedEvent p;
    MustAppend(a.get(),
               MakeEvent("postgres", "db-t", "run-a", i, std::to_string(i)),
               &p);
    prepared.push_back(p);
    // Another target interleaved in A only.
    MustAppend(a.get(), MakeEvent("postgres", "db-u", "run-a", i));
  }
  const std::string key = "postgres:db-t";
  ASSERT_EQ(a->TargetHead(key).size, 5u);

  // Out of order: event 2 before event 1.
  Status s = b->AppendMirrored(prepared[1].bytes, Raw(prepared[1].leaf_hash),
                               Raw(prepared[1].target_chain_head));
  EXPECT_EQ(s.code(), Code::kLedgerCorrupt) << s.ToString();
  // Wrong leaf hash.
  Digest32 bad_leaf = prepared[0].leaf_hash;
  bad_leaf[0] ^= 0x80;
  s = b->AppendMirrored(prepared[0].bytes, Raw(bad_leaf),
                        Raw(prepared[0].target_chain_head));
  EXPECT_EQ(s.code(), Code::kLedgerCorrupt) << s.ToString();
  // Wrong chain head.
  Digest32 bad_chain = prepared[0].target_chain_head;
  bad_chain[31] ^= 0x01;
  s = b->AppendMirrored(prepared[0].bytes, Raw(prepared[0].leaf_hash),
                        Raw(bad_chain));
  EXPECT_EQ(s.code(), Code::kLedgerCorrupt) << s.ToString();
  // Hashes of the wrong length.
  s = b->AppendMirrored(prepared[0].bytes, "short",
                        Raw(prepared[0].target_chain_head));
  EXPECT_EQ(s.code(), Code::kLedgerCorrupt) << s.ToString();
  // Bytes that do not decode.
  s = b->AppendMirrored("\xff\xff\xff", Raw(prepared[0].leaf_hash),
                        Raw(prepared[0].target_chain_head));
  EXPECT_EQ(s.code(), Code::kLedgerCorrupt) << s.ToString();
  EXPECT_EQ(b->Head().size, 0u);
  EXPECT_EQ(b->TargetHead(key).size, 0u);

  for (const PreparedEvent& p : prepared) {
    Status ok =
        b->AppendMirrored(p.bytes, Raw(p.leaf_hash), Raw(p.target_chain_head));
    ASSERT_TRUE(ok.ok()) << ok.ToString();
  }
  EXPECT_EQ(b->TargetHead(key).size, a->TargetHead(key).size);
  EXPECT_EQ(b->TargetHead(key).chain, a->TargetHead(key).chain);
  EXPECT_EQ(b->Head().size, 5u);
  EXPECT_EQ(b->TargetKeys(), std::vector<std::string>{key});
  for (uint64_t seq = 1; seq <= 5; ++seq) {
    auto e = b->Get(seq);
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(e->bytes, prepared[seq - 1].bytes);
  }
  auto da = a->Digest(key, 0);
  auto db = b->Digest(key, 0);
  ASSERT_TRUE(da.ok() && db.ok());
  EXPECT_EQ(da->root, db->root);
  auto report = b->Verify();
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok()) << report->problem;

  // Replaying an already mirrored event is out of order.
  s = b->AppendMirrored(prepared[4].bytes, Raw(prepared[4].leaf_hash),
                        Raw(prepared[4].target_chain_head));
  EXPECT_EQ(s.code(), Code::kLedgerCorrupt) << s.ToString();
  EXPECT_EQ(b->Head().size, 5u);

  // A ScanTarget of A is exactly what a mirror carries.
  auto c = MustOpen(EmptyLedger(Dir("c")), Writable());
  ASSERT_TRUE(c);
  s = a->ScanTarget(
      key, 0,
      [&](const LedgerEntry& e, const Digest32& leaf, const Digest32& chain) {
        Status st = c->AppendMirrored(e.bytes, Raw(leaf), Raw(chain));
        EXPECT_TRUE(st.ok()) << st.ToString();
        return st.ok();
      });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c->TargetHead(key).chain, a->TargetHead(key).chain);
}

TEST_F(LedgerTest, MirroredEventWithoutTargetIsRejected) {
  auto a = MustOpen(EmptyLedger(Dir("a")), Writable());
  auto b = MustOpen(EmptyLedger(Dir("b")), Writable());
  ASSERT_TRUE(a && b);
  PreparedEvent p;
  MustAppend(a.get(), MakeEvent("", "", "run-a", 1), &p);
  Status s =
      b->AppendMirrored(p.bytes, Raw(p.leaf_hash), Raw(p.target_chain_head));
  EXPECT_EQ(s.code(), Code::kLedgerCorrupt) << s.ToString();
  EXPECT_EQ(b->Head().size, 0u);
}

}  // namespace
}  // namespace migledger
