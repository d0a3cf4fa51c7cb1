// Reading the ledger: scans by run, target and version, time and sequence,
// and a target's events in target order.
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

// Fixture data for the scan tests: 12 events over two targets and three runs.
// The scan tests share one ledger (they only read): 12 events over two
// targets and three runs.
class LedgerScanTest : public ::testing::Test {
 protected:
  static constexpr int64_t kBase = 1700000000000000;

  static void SetUpTestSuite() {
    dir_ = new TempDir();
    auto ledger = MustOpen(dir_->path() + "/ledger", Writable());
    if (!ledger) return;
    struct Spec {
      const char* db;
      const char* run;
      int64_t micros;
      const char* version;
    };
    // Times are not in ledger order on purpose (seq 4 is earliest, seq 12 is
    // before the epoch); "r1" must not match "r10", nor "1" match "10".
    const Spec specs[] = {
        {"db-a", "r1", kBase + 10, "1"},    // 1
        {"db-b", "r1", kBase + 20, "1"},    // 2
        {"db-a", "r10", kBase + 30, "10"},  // 3
        {"", "r10", kBase + 5, ""},         // 4
        {"db-a", "r1", kBase + 40, "1"},    // 5
        {"db-b", "r2", kBase + 40, "10"},   // 6
        {"db-a", "r2", kBase + 50, ""},     // 7
        {"db-a", "r2", kBase + 60, "2"},    // 8
        {"db-b", "r2", kBase + 70, "2"},    // 9
        {"db-a", "r1", kBase + 80, "10"},   // 10
        {"db-b", "", kBase + 90, "1"},      // 11
        {"db-a", "", -1500000, "3"},        // 12
    };
    for (const Spec& s : specs) {
      MustAppend(ledger.get(),
                 MakeEvent("sqlite", s.db, s.run, s.micros, s.version));
    }
    ledger_ = ledger.release();
  }
  static void TearDownTestSuite() {
    delete ledger_;
    ledger_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(ledger_, nullptr);
    ASSERT_EQ(ledger_->Head().size, 12u);
  }

  std::vector<uint64_t> Scan(const ScanFilter& f) {
    return Sequences(ScanAll(ledger_, f));
  }

  static inline TempDir* dir_ = nullptr;
  static inline Ledger* ledger_ = nullptr;
};

using Seqs = std::vector<uint64_t>;

TEST_F(LedgerScanTest, FullScanIsInLedgerOrder) {
  EXPECT_EQ(Scan({}), (Seqs{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
}

TEST_F(LedgerScanTest, ScanStopsWhenCallbackReturnsFalse) {
  Seqs seen;
  ASSERT_TRUE(ledger_
                  ->Scan({},
                         [&](const LedgerEntry& e) {
                           seen.push_back(e.sequence);
                           return seen.size() < 3;
                         })
                  .ok());
  EXPECT_EQ(seen, (Seqs{1, 2, 3}));
}

TEST_F(LedgerScanTest, ScanByRunId) {
  ScanFilter f;
  f.run_id = "r1";
  EXPECT_EQ(Scan(f), (Seqs{1, 2, 5, 10}));
  f.run_id = "r10";
  EXPECT_EQ(Scan(f), (Seqs{3, 4}));
  f.run_id = "r2";
  EXPECT_EQ(Scan(f), (Seqs{6, 7, 8, 9}));
  f.run_id = "r";
  EXPECT_EQ(Scan(f), Seqs{});
  // Combined with other fields, the run index is filtered further.
  f.run_id = "r2";
  f.target_key = "sqlite:db-a";
  EXPECT_EQ(Scan(f), (Seqs{7, 8}));
  f.target_key.clear();
  f.min_sequence = 7;
  f.max_sequence = 8;
  EXPECT_EQ(Scan(f), (Seqs{7, 8}));
}

TEST_F(LedgerScanTest, ScanByTargetAndVersion) {
  ScanFilter f;
  f.target_key = "sqlite:db-a";
  f.version = "1";
  EXPECT_EQ(Scan(f), (Seqs{1, 5}));
  f.version = "10";
  EXPECT_EQ(Scan(f), (Seqs{3, 10}));
  f.target_key = "sqlite:db-b";
  EXPECT_EQ(Scan(f), (Seqs{6}));
  f.version = "3";
  EXPECT_EQ(Scan(f), Seqs{});
  // Target alone, and version alone (filtered full scans).
  ScanFilter target_only;
  target_only.target_key = "sqlite:db-b";
  EXPECT_EQ(Scan(target_only), (Seqs{2, 6, 9, 11}));
  ScanFilter version_only;
  version_only.version = "1";
  EXPECT_EQ(Scan(version_only), (Seqs{1, 2, 5, 11}));
}

TEST_F(LedgerScanTest, ScanByTimeRangeIsSinceInclusiveUntilExclusive) {
  ScanFilter f;
  f.since_micros = kBase + 20;
  f.until_micros = kBase + 50;
  // 2 (at since) .. 6, not 7 (at until); 4 is before since.
  EXPECT_EQ(Scan(f), (Seqs{2, 3, 5, 6}));
  ScanFilter since_only;
  since_only.since_micros = kBase + 70;
  EXPECT_EQ(Scan(since_only), (Seqs{9, 10, 11}));
  ScanFilter until_only;
  until_only.until_micros = kBase + 10;
  EXPECT_EQ(Scan(until_only), (Seqs{4, 12}));
  ScanFilter before_epoch;
  before_epoch.until_micros = 0;
  EXPECT_EQ(Scan(before_epoch), (Seqs{12}));
  ScanFilter around;
  around.since_micros = -1500000;
  around.until_micros = -1499999;
  EXPECT_EQ(Scan(around), (Seqs{12}));
  ScanFilter empty;
  empty.since_micros = kBase + 41;
  empty.until_micros = kBase + 50;
  EXPECT_EQ(Scan(empty), Seqs{});
  // With a sequence range and a target.
  f.min_sequence = 3;
  f.max_sequence = 5;
  EXPECT_EQ(Scan(f), (Seqs{3, 5}));
  f.target_key = "sqlite:db-a";
  f.min_sequence = 0;
  f.max_sequence = 0;
  EXPECT_EQ(Scan(f), (Seqs{3, 5}));
}

TEST_F(LedgerScanTest, ScanBySequenceRange) {
  ScanFilter f;
  f.min_sequence = 4;
  f.max_sequence = 7;
  EXPECT_EQ(Scan(f), (Seqs{4, 5, 6, 7}));
  f.max_sequence = 0;
  f.min_sequence = 11;
  EXPECT_EQ(Scan(f), (Seqs{11, 12}));
  f.min_sequence = 13;
  EXPECT_EQ(Scan(f), Seqs{});
  f.min_sequence = 0;
  f.max_sequence = 1;
  EXPECT_EQ(Scan(f), (Seqs{1}));
}

TEST_F(LedgerScanTest, ScanTargetReturnsTargetOrderWithMirrorHashes) {
  Seqs seqs;
  std::vector<uint64_t> tseqs;
  Digest32 chain{};
  Status s = ledger_->ScanTarget(
      "sqlite:db-b", 1,
      [&](const LedgerEntry& e, const Digest32& leaf, const Digest32& head) {
        seqs.push_back(e.sequence);
        tseqs.push_back(e.event.target_sequence());
        EXPECT_EQ(leaf, MerkleLeafHash(e.bytes));
        chain = head;
        return true;
      });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(seqs, (Seqs{6, 9, 11}));
  EXPECT_EQ(tseqs, (std::vector<uint64_t>{2, 3, 4}));
  EXPECT_EQ(chain, ledger_->TargetHead("sqlite:db-b").chain);
}

// The decode-only scan (the projection's) sees exactly the events ScanTarget
// does, in the same order, from any starting point, and stops when asked.
TEST_F(LedgerScanTest, ScanTargetEventsMatchesScanTarget) {
  auto with_bytes = [&](const std::string& key, uint64_t after, size_t stop) {
    std::vector<std::string> out;
    Status s = ledger_->ScanTarget(
        key, after,
        [&](const LedgerEntry& e, const Digest32&, const Digest32&) {
          out.push_back(e.bytes);
          return out.size() < stop;
        });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  };
  auto decoded = [&](const std::string& key, uint64_t after, size_t stop) {
    std::vector<std::string> out;
    Status s =
        ledger_->ScanTargetEvents(key, after, [&](const v1::Event& event) {
          out.push_back(event.SerializeAsString());
          return out.size() < stop;
        });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  };
  for (const std::string key : {"sqlite:db-a", "sqlite:db-b", "sqlite:none"}) {
    for (uint64_t after : {0, 1, 3, 100}) {
      for (size_t stop : {size_t{1}, size_t{2}, SIZE_MAX}) {
        EXPECT_EQ(decoded(key, after, stop), with_bytes(key, after, stop))
            << key << " after " << after << " stop " << stop;
      }
    }
  }
  EXPECT_EQ(decoded("sqlite:db-b", 0, SIZE_MAX).size(), 4u);
}

TEST_F(LedgerScanTest, ScanBytesReturnsTheStoredBytesOfARange) {
  std::vector<LedgerEntry> all = ScanAll(ledger_, {});
  Seqs seen;
  Status s = ledger_->ScanBytes(4, 9, [&](uint64_t seq, std::string_view b) {
    seen.push_back(seq);
    EXPECT_EQ(std::string(b), all[seq - 1].bytes) << seq;
    return true;
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(seen, (Seqs{4, 5, 6, 7, 8, 9}));
  seen.clear();
  s = ledger_->ScanBytes(11, 0, [&](uint64_t seq, std::string_view) {
    seen.push_back(seq);
    return true;
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(seen, (Seqs{11, 12}));
  seen.clear();
  s = ledger_->ScanBytes(1, 0, [&](uint64_t seq, std::string_view) {
    seen.push_back(seq);
    return seen.size() < 2;
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(seen, (Seqs{1, 2}));
}

// ScanTargetEvents past several resets of its arena (every 256 events).
TEST_F(LedgerTest, ScanTargetEventsDecodesEveryEventAcrossArenaResets) {
  auto ledger = MustOpen(Dir(), Writable());
  ASSERT_TRUE(ledger);
  std::vector<std::string> want;
  for (int i = 0; i < 600; ++i) {
    v1::Event e = MakeEvent("sqlite", "db-c", "run-big", 1800000000000000 + i,
                            std::to_string(i + 1));
    auto p = ledger->AppendEvent(&e, /*sync=*/i == 599);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    want.push_back(p->bytes);
  }
  std::vector<std::string> got;
  Status s =
      ledger->ScanTargetEvents("sqlite:db-c", 0, [&](const v1::Event& e) {
        got.push_back(e.SerializeAsString());
        return true;
      });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace migledger
