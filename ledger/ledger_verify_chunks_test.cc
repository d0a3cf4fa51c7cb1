// Verify in chunks reports what one pass from sequence 1 reports, for every
// kind of tampering, and reads event envelopes exactly as Protobuf does.
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

// Tampering with one sequence of the template ledger, as RawDb sees it. The
// chained kinds rewrite the event and then every ledger hash from it on (and
// the head), the way an attacker who knows the format would.
enum class Tamper {
  kFlipByte,          // leaf no longer matches
  kDeleteEvent,       // event missing
  kDeleteHashes,      // stored hashes missing
  kStrayEventKey,     // a 9-byte key just before the event
  kStrayHashesKey,    // a 9-byte hashes key just before it
  kEditedChained,     // the target index still holds the old leaf
  kTargetSequence,    // re-encoded with the wrong target sequence, chained
  kUndecodable,       // bytes that are not an event, chained
  kEditedIndexChain,  // the event's target index entry, chain edited
  kDeletedIndex,      // the event's target index entry deleted
};

const Tamper kTampers[] = {
    Tamper::kFlipByte,       Tamper::kDeleteEvent,    Tamper::kDeleteHashes,
    Tamper::kStrayEventKey,  Tamper::kStrayHashesKey, Tamper::kEditedChained,
    Tamper::kTargetSequence, Tamper::kUndecodable,    Tamper::kEditedIndexChain,
    Tamper::kDeletedIndex,
};

// The template's target of sequence `seq` and its target sequence.
std::string TemplateTargetKey(uint64_t seq) {
  return seq % 2 ? "sqlite:db-a" : "sqlite:db-b";
}
uint64_t TemplateTargetSequence(uint64_t seq) { return (seq + 1) / 2; }

// Replaces event `seq` with `bytes` and recomputes the ledger chain from it.
void RewriteChained(RawDb* raw, uint64_t seq, const std::string& bytes,
                    uint64_t size) {
  raw->PutEvent(seq, bytes);
  Digest32 chain{};
  if (seq > 1) {
    std::string prev = raw->Get("hashes", Be64(seq - 1));
    std::memcpy(chain.data(), prev.data() + 32, 32);
  }
  for (uint64_t s = seq; s <= size; ++s) {
    Digest32 leaf = MerkleLeafHash(raw->GetEvent(s));
    chain = Sha256(AsBytes(chain), AsBytes(leaf));
    raw->Put("hashes", Be64(s), Raw(leaf) + Raw(chain));
  }
  raw->Put("meta", "head", Be64(size) + Raw(chain));
}

void ApplyTamper(RawDb* raw, Tamper t, uint64_t seq) {
  const std::string index_key =
      TemplateTargetKey(seq) + '\0' + Be64(TemplateTargetSequence(seq));
  switch (t) {
    case Tamper::kFlipByte: {
      std::string bytes = raw->GetEvent(seq);
      bytes[bytes.size() / 2] ^= 0x01;
      raw->PutEvent(seq, bytes);
      break;
    }
    case Tamper::kDeleteEvent:
      raw->Delete("events", Be64(seq));
      break;
    case Tamper::kDeleteHashes:
      raw->Delete("hashes", Be64(seq));
      break;
    case Tamper::kStrayEventKey:
      raw->Put("events", Be64(seq - 1) + "x", raw->GetEvent(seq));
      break;
    case Tamper::kStrayHashesKey:
      raw->Put("hashes", Be64(seq - 1) + "x", raw->Get("hashes", Be64(seq)));
      break;
    case Tamper::kEditedChained: {
      v1::Event e;
      ASSERT_TRUE(e.ParseFromString(raw->GetEvent(seq)));
      e.set_run_id("run-edited");
      RewriteChained(raw, seq, e.SerializeAsString(), 10);
      break;
    }
    case Tamper::kTargetSequence: {
      v1::Event e;
      ASSERT_TRUE(e.ParseFromString(raw->GetEvent(seq)));
      e.set_target_sequence(e.target_sequence() + 3);
      RewriteChained(raw, seq, e.SerializeAsString(), 10);
      break;
    }
    case Tamper::kUndecodable:
      RewriteChained(raw, seq, "\xff\xff\xff", 10);
      break;
    case Tamper::kEditedIndexChain: {
      std::string v = raw->Get("target_index", index_key);
      ASSERT_EQ(v.size(), 72u);
      v[20] ^= 0x01;
      raw->Put("target_index", index_key, v);
      break;
    }
    case Tamper::kDeletedIndex:
      raw->Delete("target_index", index_key);
      break;
  }
}

// What must not depend on how Verify splits its work.
std::string Describe(const StatusOr<VerifyReport>& r) {
  if (!r.ok()) return "status: " + r.status().ToString();
  return "first_bad=" + std::to_string(r->first_bad_sequence) +
         " checked=" + std::to_string(r->events_checked) +
         " problem=" + r->problem + " size=" + std::to_string(r->digest.size) +
         " root=" + ToHex(r->digest.root);
}

VerifyOptions OnePass() {
  VerifyOptions o;
  o.threads = 1;
  o.chunk_events = uint64_t{1} << 40;
  return o;
}

TEST_F(LedgerTest, VerifyInChunksReportsWhatOnePassReports) {
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  auto ledger = MustOpen(Dir(), ReadOnly());
  ASSERT_TRUE(ledger);
  const std::string one_pass = Describe(ledger->Verify(OnePass()));
  EXPECT_TRUE(Contains(one_pass, "first_bad=0 checked=10")) << one_pass;
  for (unsigned threads : {1u, 2u, 3u}) {
    for (uint64_t chunk : {1, 2, 3, 4, 8, 16}) {
      VerifyOptions o;
      o.threads = threads;
      o.chunk_events = chunk;
      EXPECT_EQ(Describe(ledger->Verify(o)), one_pass)
          << "threads " << threads << " chunk " << chunk;
    }
  }
  EXPECT_EQ(Describe(ledger->Verify()), one_pass);
}

// Every kind of tampering at the start, the middle and the end of a chunk for
// some chunk size: the chunks, joined, name the same first bad sequence and
// problem as one pass from sequence 1.
TEST_F(LedgerTest, VerifyInChunksFindsTheFirstProblemOnePassFinds) {
  int compared = 0;
  for (Tamper t : kTampers) {
    // The first and last sequences, and both sides of the chunk boundaries
    // of chunks of 1, 2 and 4 (4 | 5) and of 8 (8 | 9).
    for (uint64_t seq : {1, 4, 5, 8, 9, 10}) {
      if ((t == Tamper::kStrayEventKey || t == Tamper::kStrayHashesKey) &&
          seq == 1) {
        continue;  // no key sorts before sequence 1's but after sequence 0's
      }
      const std::string dir = Dir("t" + std::to_string(static_cast<int>(t)) +
                                  "-" + std::to_string(seq));
      ASSERT_EQ(BuildLedger(dir).size(), 10u);
      {
        RawDb raw(dir);
        ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
        ApplyTamper(&raw, t, seq);
      }
      auto opened = Ledger::Open(dir, ReadOnly());
      if (!opened.ok()) {
        // A tampered tail is caught on open, before any verify.
        EXPECT_EQ(seq, 10u) << opened.status().ToString();
        continue;
      }
      Ledger* ledger = opened->get();
      const StatusOr<VerifyReport> one_pass = ledger->Verify(OnePass());
      ASSERT_TRUE(one_pass.ok()) << one_pass.status().ToString();
      EXPECT_EQ(one_pass->first_bad_sequence, seq)
          << "tamper " << static_cast<int>(t) << ": " << one_pass->problem;
      const std::string want = Describe(one_pass);
      for (unsigned threads : {1u, 2u}) {
        for (uint64_t chunk : {1, 2, 4, 8}) {
          VerifyOptions o;
          o.threads = threads;
          o.chunk_events = chunk;
          EXPECT_EQ(Describe(ledger->Verify(o)), want)
              << "tamper " << static_cast<int>(t) << " at " << seq
              << ", threads " << threads << " chunk " << chunk;
          ++compared;
        }
      }
    }
  }
  EXPECT_GT(compared, 400);
}

// A writer's bytes are Protobuf's, but a mirror or an older tool may have
// stored others that decode the same: Verify reads envelopes the way
// Protobuf parses them, whatever shortcut it takes for the usual bytes.
TEST_F(LedgerTest, VerifyReadsUnusualButValidEncodingsAsProtobufDoes) {
  auto ledger = MustOpen(EmptyLedger(Dir()), Writable());
  ASSERT_TRUE(ledger);
  auto append_bytes = [&](const std::string& bytes) {
    v1::EventEnvelopeView view;
    ASSERT_TRUE(view.ParseFromString(bytes));
    PreparedEvent p;
    if (!view.target().database_id().empty()) {
      p.target_key = view.target().kind() + ":" + view.target().database_id();
    }
    p.bytes = bytes;
    p.leaf_hash = MerkleLeafHash(bytes);
    ChainHead th = ledger->TargetHead(p.target_key);
    p.target_sequence = th.size + 1;
    ASSERT_EQ(view.target_sequence(), p.target_key.empty() ? 0 : th.size + 1);
    p.target_chain_head = Sha256(AsBytes(th.chain), AsBytes(p.leaf_hash));
    auto seq = ledger->Append(p, /*sync=*/false);
    ASSERT_TRUE(seq.ok()) << seq.status().ToString();
  };
  auto field = [](int number, int wire_type) {
    return std::string(1, static_cast<char>(number << 3 | wire_type));
  };
  auto target = [&](const std::string& kind, const std::string& id) {
    v1::TargetRef t;
    t.set_kind(kind);
    t.set_database_id(id);
    std::string b = t.SerializeAsString();
    return field(5, 2) + static_cast<char>(b.size()) + b;
  };
  v1::Event base = MakeEvent("sqlite", "db-a", "run", 1700000000000000, "1");
  base.set_target_sequence(1);
  // 1: Protobuf's own bytes.
  append_bytes(base.SerializeAsString());
  // 2: a second target field: Protobuf merges them (db-b wins).
  base.set_target_sequence(1);
  append_bytes(base.SerializeAsString() + target("sqlite", "db-b"));
  // 3: target sequence as an overlong varint, after the target.
  base.clear_target_sequence();
  append_bytes(base.SerializeAsString() + field(1, 0) +
               std::string("\x82\x80\x80\x00", 4));
  // 4: the target field as a varint: an unknown field, so no target.
  v1::Event no_target = base;
  no_target.clear_target();
  append_bytes(no_target.SerializeAsString() + field(5, 0) + "\x07");
  // 5: non-ASCII (valid UTF-8) text in the target, and an unknown field.
  v1::Event accented = base;
  accented.mutable_target()->set_name("caf\xc3\xa9");
  accented.set_target_sequence(3);
  append_bytes(accented.SerializeAsString() + field(15, 0) + "\x01");
  // 6: the target sequence twice: the last one counts.
  base.set_target_sequence(4);
  append_bytes(field(1, 0) + "\x09" + base.SerializeAsString());
  ASSERT_EQ(ledger->Head().size, 6u);
  ASSERT_EQ(ledger->TargetHead("sqlite:db-a").size, 4u);
  ASSERT_EQ(ledger->TargetHead("sqlite:db-b").size, 1u);
  for (uint64_t chunk : {1, 2, 4, 1024}) {
    VerifyOptions o;
    o.chunk_events = chunk;
    auto report = ledger->Verify(o);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_TRUE(report->ok()) << "chunk " << chunk << ": " << report->problem;
    EXPECT_EQ(report->events_checked, 6u);
  }
}

TEST_F(LedgerTest, VerifyReportsEnvelopesProtobufCannotParse) {
  auto field = [](int number, int wire_type) {
    return std::string(1, static_cast<char>(number << 3 | wire_type));
  };
  const std::string cases[] = {
      field(3, 2) + "\x02\xc3\x28",                         // run_id not UTF-8
      field(5, 2) + "\x04" + field(3, 2) + "\x02\xff\xfe",  // database_id
      field(3, 2) + "\x09" + "short",                       // cut short
      field(1, 7) + "\x01",                                 // wire type 7
      field(2, 2) + "\x02" + field(1, 0) + "\x80",          // time cut inside
      field(6, 3) + field(7, 4),  // a group closed wrong
  };
  int n = 0;
  for (const std::string& bytes : cases) {
    v1::EventEnvelopeView view;
    ASSERT_FALSE(view.ParseFromString(bytes)) << n;
    const std::string dir = Dir("bad" + std::to_string(n++));
    ASSERT_EQ(BuildLedger(dir).size(), 10u);
    {
      RawDb raw(dir);
      ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
      RewriteChained(&raw, 5, bytes, 10);
    }
    auto ledger = MustOpen(dir, ReadOnly());
    ASSERT_TRUE(ledger);
    for (uint64_t chunk : {1, 4, 1024}) {
      VerifyOptions o;
      o.chunk_events = chunk;
      auto r = ledger->Verify(o);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ(r->first_bad_sequence, 5u) << n << ": " << r->problem;
      EXPECT_TRUE(Contains(r->problem, "does not decode")) << r->problem;
    }
  }
}

// Random edits of real events' bytes, kept when Protobuf still parses them
// into an event that continues its target's chain, appended with the hashes
// Protobuf's reading implies: Verify must find nothing wrong, however the
// edits encode the envelope.
TEST_F(LedgerTest, VerifyAcceptsEveryEncodingProtobufAccepts) {
  auto ledger = MustOpen(EmptyLedger(Dir()), Writable());
  ASSERT_TRUE(ledger);
  std::mt19937 rng(3);
  const char* const ids[] = {"db-a", "db-b", "db-c"};
  int appended = 0;
  for (int i = 0; i < 10000; ++i) {
    v1::Event e =
        MakeEvent("sqlite", ids[rng() % 3], "run-" + std::to_string(i),
                  1700000000000000 + i, std::to_string(i));
    e.set_target_sequence(
        ledger->TargetHead("sqlite:" + e.target().database_id()).size + 1);
    std::string bytes = e.SerializeAsString();
    const int edits = 1 + static_cast<int>(rng() % 2);
    for (int k = 0; k < edits; ++k) {
      const size_t at = rng() % bytes.size();
      switch (rng() % 3) {
        case 0:
          bytes[at] = static_cast<char>(rng());
          break;
        case 1:
          bytes.insert(at, 1, static_cast<char>(rng()));
          break;
        default:
          bytes += bytes.substr(at, 1 + rng() % 12);
      }
    }
    v1::Event event;
    v1::EventEnvelopeView view;
    if (!event.ParseFromString(bytes) || !view.ParseFromString(bytes)) continue;
    PreparedEvent p;
    if (!view.target().database_id().empty()) {
      p.target_key = view.target().kind() + ":" + view.target().database_id();
    }
    const ChainHead th = ledger->TargetHead(p.target_key);
    if (!p.target_key.empty() && view.target_sequence() != th.size + 1) {
      continue;
    }
    p.bytes = bytes;
    p.target_sequence = th.size + 1;
    p.leaf_hash = MerkleLeafHash(bytes);
    p.target_chain_head = Sha256(AsBytes(th.chain), AsBytes(p.leaf_hash));
    auto seq = ledger->Append(p, /*sync=*/false);
    ASSERT_TRUE(seq.ok()) << seq.status().ToString();
    ++appended;
  }
  EXPECT_GT(appended, 400);
  for (uint64_t chunk : {1, 7, 64, 1 << 20}) {
    VerifyOptions o;
    o.chunk_events = chunk;
    auto r = ledger->Verify(o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(r->ok()) << "chunk " << chunk << ": " << r->problem;
    EXPECT_EQ(r->events_checked, static_cast<uint64_t>(appended));
  }
}

}  // namespace
}  // namespace migledger
