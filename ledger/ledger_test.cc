// Tests of the RocksDB ledger through its public API (ledger/ledger.h), on
// real RocksDB directories. Tampering is done with plain RocksDB on the
// closed ledger, the way an attacker (or a bad disk) would.
#include "ledger/ledger.h"

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
#include "ledger/merkle.h"
#include "migledger/v1/event.pb.h"

namespace migledger {
namespace {

namespace fs = std::filesystem;

// A fresh directory from mkdtemp, removed with everything in it at the end.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") +
                       "/migledger-ledger-test-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) != nullptr) path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string Be64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i) {
    s[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return s;
}

std::string Raw(const Digest32& d) { return std::string(AsBytes(d)); }

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// An event about target `kind:db_id` ("" db_id: about no target), at
// `micros` since the epoch. With a version it is a step_started event (so it
// is in the version index), else a run_started one.
v1::Event MakeEvent(const std::string& kind, const std::string& db_id,
                    const std::string& run_id, int64_t micros,
                    const std::string& version = "") {
  v1::Event e;
  int64_t seconds = micros / 1000000;
  int64_t rest = micros % 1000000;
  if (rest < 0) {
    rest += 1000000;
    seconds -= 1;
  }
  e.mutable_time()->set_seconds(seconds);
  e.mutable_time()->set_nanos(static_cast<int32_t>(rest * 1000));
  e.set_run_id(run_id);
  e.mutable_actor()->set_os_user("tester");
  if (!db_id.empty()) {
    e.mutable_target()->set_kind(kind);
    e.mutable_target()->set_database_id(db_id);
    e.mutable_target()->set_name(db_id + "-name");
  }
  if (version.empty()) {
    e.mutable_run_started()->set_command("apply");
  } else {
    e.mutable_step_started()->set_version(version);
    e.mutable_step_started()->set_slug("step-" + version);
  }
  return e;
}

LedgerOptions Writable() {
  LedgerOptions o;
  o.create_if_missing = true;
  return o;
}

LedgerOptions ReadOnly() {
  LedgerOptions o;
  o.read_only = true;
  return o;
}

std::unique_ptr<Ledger> MustOpen(const std::string& dir,
                                 const LedgerOptions& options) {
  auto l = Ledger::Open(dir, options);
  EXPECT_TRUE(l.ok()) << l.status().ToString();
  if (!l.ok()) return nullptr;
  return std::move(l).value();
}

uint64_t MustAppend(Ledger* ledger, v1::Event event,
                    PreparedEvent* prepared = nullptr) {
  auto p = ledger->Prepare(&event);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  if (!p.ok()) return 0;
  auto seq = ledger->Append(*p, /*sync=*/false);
  EXPECT_TRUE(seq.ok()) << seq.status().ToString();
  if (!seq.ok()) return 0;
  if (prepared != nullptr) *prepared = *p;
  return *seq;
}

std::vector<LedgerEntry> ScanAll(Ledger* ledger, const ScanFilter& filter) {
  std::vector<LedgerEntry> out;
  Status s = ledger->Scan(filter, [&](const LedgerEntry& e) {
    out.push_back(e);
    return true;
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

std::vector<uint64_t> Sequences(const std::vector<LedgerEntry>& entries) {
  std::vector<uint64_t> out;
  for (const auto& e : entries) out.push_back(e.sequence);
  return out;
}

// The tag byte that leads a table's keys in a format-2 ledger (see
// ledger/FORMAT.md); format 1 kept each table in its own column family.
char TableTag(const std::string& table) {
  static const std::map<std::string, char> tags = {
      {"events", 'e'},        {"hashes", 'h'},    {"target_index", 't'},
      {"version_index", 'v'}, {"run_index", 'r'}, {"time_index", 'i'},
      {"blobs", 'b'},         {"meta", 'm'},      {"target_heads", 'n'}};
  return tags.at(table);
}

// The ledger's RocksDB opened directly, with every column family; tables are
// named as in ledger/FORMAT.md whichever the format.
class RawDb {
 public:
  explicit RawDb(const std::string& dir) {
    std::vector<std::string> names;
    status_ = rocksdb::DB::ListColumnFamilies({}, dir, &names);
    if (!status_.ok()) return;
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const auto& name : names) {
      descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
    }
    rocksdb::DBOptions options;
    // Tampered keys stay in the WAL, which the next open replays: closing
    // without writing (and syncing) a table keeps the many tampering tests
    // fast.
    options.avoid_flush_during_shutdown = true;
    status_ = rocksdb::DB::Open(options, dir, descriptors, &handles_, &db_);
    for (size_t i = 0; i < handles_.size(); ++i) {
      by_name_[descriptors[i].name] = handles_[i];
    }
  }
  ~RawDb() {
    for (auto* h : handles_) (void)db_->DestroyColumnFamilyHandle(h);
    delete db_;
  }
  const rocksdb::Status& status() const { return status_; }

  std::string Get(const std::string& table, const std::string& key) {
    std::string v;
    rocksdb::Status s = db_->Get({}, Cf(table), Key(table, key), &v);
    EXPECT_TRUE(s.ok()) << table << ": " << s.ToString();
    return v;
  }
  void Put(const std::string& table, const std::string& key,
           const std::string& value) {
    rocksdb::Status s = db_->Put({}, Cf(table), Key(table, key), value);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  void Delete(const std::string& table, const std::string& key) {
    rocksdb::Status s = db_->Delete({}, Cf(table), Key(table, key));
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  uint64_t LatestSequence() { return db_->GetLatestSequenceNumber(); }
  size_t CountKeys(const std::string& table) {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, Cf(table)));
    const std::string prefix = Key(table, "");
    size_t n = 0;
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
         it->Next())
      ++n;
    EXPECT_TRUE(it->status().ok()) << it->status().ToString();
    return n;
  }
  void CreateColumnFamily(const std::string& name) {
    rocksdb::ColumnFamilyHandle* h = nullptr;
    rocksdb::Status s = db_->CreateColumnFamily({}, name, &h);
    ASSERT_TRUE(s.ok()) << s.ToString();
    handles_.push_back(h);
  }
  std::string GetEvent(uint64_t seq) { return Get("events", Be64(seq)); }
  void PutEvent(uint64_t seq, const std::string& bytes) {
    Put("events", Be64(seq), bytes);
  }
  bool Format1() const { return by_name_.count("events") != 0; }

 private:
  rocksdb::Status status_;
  rocksdb::DB* db_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* Cf(const std::string& table) {
    return Format1() ? by_name_.at(table) : by_name_.at("default");
  }
  std::string Key(const std::string& table, const std::string& key) const {
    return Format1() ? key : TableTag(table) + key;
  }
  std::map<std::string, rocksdb::ColumnFamilyHandle*> by_name_;
};

class LedgerTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(tmp_.path().empty()) << "mkdtemp"; }

  std::string Dir(const std::string& name = "ledger") const {
    return tmp_.path() + "/" + name;
  }

  // The suite's templates: an empty ledger, and one with 10 events alternating
  // between sqlite:db-a (odd sequences) and sqlite:db-b (even ones), built once
  // and closed.
  static void SetUpTestSuite() {
    template_dir_ = new TempDir();
    template_bytes_ = new std::vector<std::string>();
    MustOpen(template_dir_->path() + "/empty", Writable());
    auto ledger = MustOpen(template_dir_->path() + "/ledger", Writable());
    if (!ledger) return;
    for (int i = 1; i <= 10; ++i) {
      PreparedEvent p;
      MustAppend(ledger.get(),
                 MakeEvent("sqlite", i % 2 ? "db-a" : "db-b", "run-1",
                           1700000000000000 + i * 1000, std::to_string(i)),
                 &p);
      template_bytes_->push_back(p.bytes);
    }
  }
  static void TearDownTestSuite() {
    delete template_dir_;
    template_dir_ = nullptr;
    delete template_bytes_;
    template_bytes_ = nullptr;
  }

  // Copies the empty template ledger to `dir` and returns `dir`: faster than
  // creating one, for tests that do not care about creation.
  std::string EmptyLedger(const std::string& dir) {
    std::error_code ec;
    fs::copy(template_dir_->path() + "/empty", dir, fs::copy_options::recursive,
             ec);
    EXPECT_FALSE(ec) << ec.message();
    return dir;
  }

  // Copies the template ledger (closed) to `dir` and returns its events'
  // bytes (index 0 = sequence 1). Copying is much faster than building.
  std::vector<std::string> BuildLedger(const std::string& dir) {
    std::error_code ec;
    fs::copy(template_dir_->path() + "/ledger", dir,
             fs::copy_options::recursive, ec);
    EXPECT_FALSE(ec) << ec.message();
    if (ec) return {};
    return *template_bytes_;
  }

  // Reopens a tampered ledger read-only and verifies it.
  VerifyReport VerifyTampered(const std::string& dir) {
    auto ledger = MustOpen(dir, ReadOnly());
    if (!ledger) return VerifyReport{};
    auto report = ledger->Verify();
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    if (!report.ok()) return VerifyReport{};
    return *report;
  }

  TempDir tmp_;
  static inline TempDir* template_dir_ = nullptr;
  static inline std::vector<std::string>* template_bytes_ = nullptr;
};

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

TEST_F(LedgerTest, ReadOnlyOpenWorksWhileAWriterHoldsTheLedger) {
  auto writer = MustOpen(EmptyLedger(Dir()), Writable());
  ASSERT_TRUE(writer);
  for (int i = 1; i <= 3; ++i) {
    MustAppend(writer.get(), MakeEvent("sqlite", "db-a", "run-1", i, "1"));
  }
  ASSERT_TRUE(writer->Sync().ok());
  auto reader = MustOpen(Dir(), ReadOnly());
  ASSERT_TRUE(reader);
  EXPECT_TRUE(reader->read_only());
  EXPECT_EQ(reader->ledger_id(), writer->ledger_id());
  EXPECT_EQ(reader->Head().size, 3u);
  EXPECT_EQ(reader->Head().chain, writer->Head().chain);
  auto report = reader->Verify();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->ok()) << report->problem;
  // A reader cannot write.
  v1::Event e = MakeEvent("sqlite", "db-a", "run-1", 9);
  auto p = reader->Prepare(&e);
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(reader->Append(*p, false).ok());
  EXPECT_FALSE(reader->PutBlob("select 1;").ok());
  EXPECT_EQ(reader->Head().size, 3u);
  // The writer keeps writing while the reader is open.
  EXPECT_EQ(MustAppend(writer.get(), MakeEvent("sqlite", "db-a", "run-1", 4)),
            4u);
}

TEST_F(LedgerTest, SecondWriterIsBusyAfterLockTimeout) {
  auto writer = MustOpen(EmptyLedger(Dir()), Writable());
  ASSERT_TRUE(writer);
  LedgerOptions second = Writable();
  second.lock_timeout = std::chrono::milliseconds(100);
  auto start = std::chrono::steady_clock::now();
  auto busy = Ledger::Open(Dir(), second);
  auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.status().code(), Code::kLedgerBusy)
      << busy.status().ToString();
  EXPECT_GE(waited, std::chrono::milliseconds(100));
  EXPECT_LT(waited, std::chrono::seconds(2));

  // Without a timeout it does not wait.
  auto busy_now = Ledger::Open(Dir(), Writable());
  ASSERT_FALSE(busy_now.ok());
  EXPECT_EQ(busy_now.status().code(), Code::kLedgerBusy);

  // Once the first writer is gone the ledger opens again.
  writer.reset();
  auto again = MustOpen(Dir(), second);
  EXPECT_TRUE(again);
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

TEST_F(LedgerTest, NewerFormatIsUnsupported) {
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    EXPECT_EQ(raw.Get("meta", "format"), "2");
    raw.Put("meta", "format", "99");
  }
  for (const LedgerOptions& options : {ReadOnly(), Writable()}) {
    auto ledger = Ledger::Open(Dir(), options);
    ASSERT_FALSE(ledger.ok());
    EXPECT_EQ(ledger.status().code(), Code::kUnsupported)
        << ledger.status().ToString();
  }
}

// Format 1 (one column family per table) is what earlier builds wrote: such a
// ledger opens for reading and writing, verifies, scans by every index, and
// stays format 1 when extended. A new ledger is format 2: one column family.
TEST_F(LedgerTest, FormatOneLedgersStillOpenVerifyAndExtend) {
  auto count_matches = [](Ledger* ledger, const ScanFilter& f) {
    size_t n = 0;
    Status s = ledger->Scan(f, [&](const LedgerEntry&) {
      ++n;
      return true;
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return n;
  };
  // Opens the ledger, checks its size on both chains, verifies it and counts
  // the events of `run`.
  auto check = [&](const LedgerOptions& options, uint64_t size,
                   const std::string& run, size_t in_run) {
    auto ledger = MustOpen(Dir(), options);
    EXPECT_TRUE(ledger);
    if (!ledger) return ledger;
    EXPECT_EQ(ledger->Head().size, size);
    EXPECT_EQ(ledger->TargetHead("sqlite:db-a").size, size);
    auto report = ledger->Verify();
    EXPECT_TRUE(report.ok() && report->ok())
        << (report.ok() ? report->problem : report.status().ToString());
    ScanFilter by_run;
    by_run.run_id = run;
    EXPECT_EQ(count_matches(ledger.get(), by_run), in_run);
    return ledger;
  };
  auto append = [](Ledger* ledger, int from, int to) {
    for (int i = from; i < to; ++i) {
      v1::Event e = MakeEvent("sqlite", "db-a", i < 3 ? "run-1" : "run-2",
                              1700000000000000 + i, std::to_string(i + 1));
      auto p = ledger->Prepare(&e);
      ASSERT_TRUE(p.ok()) << p.status().ToString();
      ASSERT_TRUE(ledger->Append(*p, /*sync=*/true).ok());
    }
  };
  std::string blob;
  {
    LedgerOptions legacy = Writable();
    legacy.create_format_1 = true;
    auto ledger = MustOpen(Dir(), legacy);
    ASSERT_TRUE(ledger);
    append(ledger.get(), 0, 5);
    auto key = ledger->PutBlob("CREATE TABLE t (id INTEGER);");
    ASSERT_TRUE(key.ok()) << key.status().ToString();
    blob = *key;
  }
  std::vector<std::string> names;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies({}, Dir(), &names).ok());
  EXPECT_EQ(names.size(), 9u);
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    EXPECT_TRUE(raw.Format1());
    EXPECT_EQ(raw.Get("meta", "format"), "1");
  }
  for (const LedgerOptions& options : {ReadOnly(), Writable()}) {
    auto ledger = check(options, 5, "run-1", 3);
    ASSERT_TRUE(ledger);
    ScanFilter by_version;
    by_version.version = "0004";
    EXPECT_EQ(count_matches(ledger.get(), by_version), 1u);
    ScanFilter by_time;
    by_time.since_micros = 1700000000000001;
    by_time.until_micros = 1700000000000003;
    EXPECT_EQ(count_matches(ledger.get(), by_time), 2u);
    auto got = ledger->GetBlob(blob);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, "CREATE TABLE t (id INTEGER);");
  }
  {
    auto ledger = MustOpen(Dir(), Writable());
    ASSERT_TRUE(ledger);
    append(ledger.get(), 5, 8);
  }
  EXPECT_TRUE(check(ReadOnly(), 8, "run-2", 5));
  RawDb raw(Dir());
  ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
  EXPECT_TRUE(raw.Format1());
  EXPECT_EQ(raw.Get("meta", "format"), "1");
}

// What an older migledger leaves when it opens a format-2 ledger for writing:
// the nine format-1 families, created empty before it refused the ledger.
// The marker in the default family still says where the tables are.
TEST_F(LedgerTest, FormatTwoLedgerPaddedWithEmptyFormatOneFamiliesStillOpens) {
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    for (const char* name :
         {"events", "hashes", "target_index", "version_index", "run_index",
          "time_index", "blobs", "meta"}) {
      raw.CreateColumnFamily(name);
    }
  }
  for (const LedgerOptions& options : {ReadOnly(), Writable()}) {
    auto ledger = MustOpen(Dir(), options);
    ASSERT_TRUE(ledger);
    EXPECT_EQ(ledger->Head().size, 10u);
    auto report = ledger->Verify();
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_TRUE(report->ok()) << report->problem;
  }
  auto ledger = MustOpen(Dir(), Writable());
  ASSERT_TRUE(ledger);
  v1::Event e = MakeEvent("sqlite", "db-a", "run-9", 1700000000000999, "11");
  auto appended = ledger->AppendEvent(&e, /*sync=*/true);
  ASSERT_TRUE(appended.ok()) << appended.status().ToString();
  EXPECT_EQ(ledger->Head().size, 11u);
  auto report = ledger->Verify();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->ok()) << report->problem;
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

TEST_F(LedgerTest, NewLedgerIsFormatTwoInOneColumnFamily) {
  {
    auto ledger = MustOpen(Dir(), Writable());
    ASSERT_TRUE(ledger);
    v1::Event e = MakeEvent("sqlite", "db-a", "run-1", 1700000000000000, "1");
    ASSERT_TRUE(ledger->AppendEvent(&e, /*sync=*/true).ok());
  }
  std::vector<std::string> names;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies({}, Dir(), &names).ok());
  EXPECT_EQ(names, std::vector<std::string>{"default"});
  RawDb raw(Dir());
  ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
  EXPECT_FALSE(raw.Format1());
  EXPECT_EQ(raw.Get("meta", "format"), "2");
  EXPECT_EQ(raw.CountKeys("events"), 1u);
  EXPECT_EQ(raw.CountKeys("hashes"), 1u);
  EXPECT_EQ(raw.CountKeys("time_index"), 1u);
}

TEST_F(LedgerTest, OpenMissingDirectoryWithoutCreateIsNotFound) {
  LedgerOptions options;
  auto ledger = Ledger::Open(Dir("missing"), options);
  ASSERT_FALSE(ledger.ok());
  EXPECT_EQ(ledger.status().code(), Code::kNotFound);
  auto reader = Ledger::Open(Dir("missing"), ReadOnly());
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), Code::kNotFound);
  // Read-only never creates, even when asked to.
  LedgerOptions ro_create = ReadOnly();
  ro_create.create_if_missing = true;
  auto ro = Ledger::Open(Dir("missing"), ro_create);
  ASSERT_FALSE(ro.ok());
  EXPECT_EQ(ro.status().code(), Code::kNotFound);
  EXPECT_FALSE(fs::exists(Dir("missing")));
}

TEST_F(LedgerTest, CreateIfMissingMakesAPrivateDirectory) {
  const std::string dir = Dir("new");
  auto ledger = MustOpen(dir, Writable());
  ASSERT_TRUE(ledger);
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_EQ(ledger->Head().size, 0u);
  const std::string id = ledger->ledger_id();
  ledger.reset();
  // Reopening does not make a new ledger.
  auto again = MustOpen(dir, Writable());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->ledger_id(), id);
}

TEST_F(LedgerTest, NewLedgerIdNamesTheLedgerItCreatesOnly) {
  // A copy of another history (the audit store's) carries that history's id
  // into its digests; an existing ledger keeps its own.
  LedgerOptions named = Writable();
  named.new_ledger_id = "0123456789abcdef0123456789abcdef";
  auto ledger = MustOpen(Dir(), named);
  ASSERT_TRUE(ledger);
  EXPECT_EQ(ledger->ledger_id(), named.new_ledger_id);
  auto digest = ledger->Digest("", 0);
  ASSERT_TRUE(digest.ok()) << digest.status().ToString();
  EXPECT_EQ(digest->ledger_id, named.new_ledger_id);
  ledger.reset();
  named.new_ledger_id = "fedcba9876543210fedcba9876543210";
  auto again = MustOpen(Dir(), named);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->ledger_id(), "0123456789abcdef0123456789abcdef");
  again.reset();
  for (const char* bad : {"0123", "0123456789ABCDEF0123456789ABCDEF",
                          "0123456789abcdef0123456789abcde\n"}) {
    LedgerOptions o = Writable();
    o.new_ledger_id = bad;
    auto refused = Ledger::Open(Dir("other"), o);
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_EQ(refused.status().code(), Code::kInvalidInput) << bad;
  }
}

TEST_F(LedgerTest, RocksDbThatIsNotALedgerIsCorrupt) {
  // A RocksDB database without the ledger's column families or format.
  {
    rocksdb::Options o;
    o.create_if_missing = true;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, Dir("other"), &db).ok());
    delete db;
  }
  for (const LedgerOptions& options : {ReadOnly(), Writable()}) {
    auto ledger = Ledger::Open(Dir("other"), options);
    ASSERT_FALSE(ledger.ok());
    EXPECT_EQ(ledger.status().code(), Code::kLedgerCorrupt)
        << ledger.status().ToString();
    EXPECT_FALSE(Contains(ledger.status().message(), "newer"))
        << ledger.status().ToString();
  }
}

// What a first run killed after RocksDB created the ledger (CURRENT is
// there) and before it wrote the format marker leaves: the creator's
// MIGLEDGER-CREATING file and no row. Nothing was ever recorded, so the next
// writer initializes it (and removes the file); a reader sees no ledger yet.
// The same RocksDB without that file is refused (the test above): a ledger
// whose log was removed looks empty too.
TEST_F(LedgerTest, LedgerKilledBeforeItsFormatMarkerIsInitializedNotRefused) {
  {
    rocksdb::Options o;
    o.create_if_missing = true;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, Dir(), &db).ok());
    delete db;
  }
  ASSERT_TRUE(fs::exists(Dir() + "/CURRENT"));
  std::ofstream(Dir() + "/MIGLEDGER-CREATING").close();
  auto reader = Ledger::Open(Dir(), ReadOnly());
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), Code::kNotFound)
      << reader.status().ToString();
  std::string id;
  {
    auto ledger = MustOpen(Dir(), Writable());
    ASSERT_TRUE(ledger);
    id = ledger->ledger_id();
    EXPECT_EQ(id.size(), 32u);
    v1::Event e = MakeEvent("sqlite", "db-a", "run-1", 1700000000000000, "1");
    ASSERT_TRUE(ledger->AppendEvent(&e, /*sync=*/true).ok());
  }
  EXPECT_FALSE(fs::exists(Dir() + "/MIGLEDGER-CREATING"));
  auto again = MustOpen(Dir(), ReadOnly());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->ledger_id(), id);
  EXPECT_EQ(again->Head().size, 1u);
  auto report = again->Verify();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->ok()) << report->problem;
}

TEST_F(LedgerTest, UnknownColumnFamilyIsUnsupportedForAWriter) {
  ASSERT_EQ(BuildLedger(Dir()).size(), 10u);
  {
    RawDb raw(Dir());
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    raw.CreateColumnFamily("from_the_future");
  }
  auto ledger = Ledger::Open(Dir(), Writable());
  ASSERT_FALSE(ledger.ok());
  EXPECT_EQ(ledger.status().code(), Code::kUnsupported)
      << ledger.status().ToString();
}

}  // namespace
}  // namespace migledger
