// The ledger's tables in RocksDB (FORMAT.md): their tags and column
// families, an iterator confined to one table, and the encodings of keys and
// values. Internal to ledger/.
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/perf_level.h>
#include <rocksdb/slice.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "common/sha256.h"
#include "common/status.h"
#include "ledger/ledger.h"

namespace migledger::ledger_internal {

constexpr char kFormatVersion[] = "2";
// Created in the ledger directory before RocksDB creates the ledger there,
// removed once the format marker is durable (see Init).
constexpr char kCreatingFile[] = "MIGLEDGER-CREATING";
constexpr int kFormatVersionNumber = 2;

// The ledger's tables. Format 2 keeps them all in RocksDB's default column
// family, each key led by the table's tag byte (kTableTags); format 1 gave
// each its own column family (kCfNames, in this order), which made every
// open write and re-parse an options file nine column families long.
enum Cf {
  kDefault = 0,
  kEvents,        // BE64(seq) -> event bytes
  kHashes,        // BE64(seq) -> leaf hash (32) || ledger chain head (32)
  kTargetIndex,   // target_key \0 BE64(tseq) -> BE64(seq) || target chain (32)
  kVersionIndex,  // VersionIndexPrefix(version) target_key \0 BE64(seq) -> ""
  kRunIndex,      // run_id \0 BE64(seq) -> ""
  kTimeIndex,     // BE64(micros + 2^63) BE64(seq) -> ""
  kBlobs,         // hex sha256 -> content
  kMeta,          // see FORMAT.md
  kNumCfs,
  // Not a column family in format 1: the meta family's "target_head/" keys.
  kTargetHeads = kNumCfs,  // target_key -> BE64(size) || target chain (32)
  kNumTables
};
inline const char *const kCfNames[kNumCfs] = {
    rocksdb::kDefaultColumnFamilyName.c_str(),
    "events",
    "hashes",
    "target_index",
    "version_index",
    "run_index",
    "time_index",
    "blobs",
    "meta"};
// The ledger head ("mhead") and each target's head ("n" ‖ target_key) are
// rewritten by every append: apart, each overwrite lands next to its own
// previous version, where the table's insert hint points.
inline constexpr char kTableTags[kNumTables] = {'\0', 'e', 'h', 't', 'v',
                                                'r',  'i', 'b', 'm', 'n'};

// An iterator over one table: keys without the table's tag, confined to the
// table by iterate bounds (the caller's upper bound, if any, is kept).
class TableIterator final : public rocksdb::Iterator {
 public:
  TableIterator(rocksdb::DB *db, rocksdb::ReadOptions ro,
                rocksdb::ColumnFamilyHandle *cf, std::string prefix)
      : prefix_(std::move(prefix)) {
    if (ro.iterate_upper_bound != nullptr) {
      upper_ = prefix_ + ro.iterate_upper_bound->ToString();
    } else if (!prefix_.empty()) {
      upper_ = prefix_;
      upper_.back() = static_cast<char>(upper_.back() + 1);
    }
    if (!prefix_.empty()) {
      lower_slice_ = prefix_;
      ro.iterate_lower_bound = &lower_slice_;
    }
    upper_slice_ = upper_;
    if (!upper_.empty()) ro.iterate_upper_bound = &upper_slice_;
    it_.reset(db->NewIterator(ro, cf));
  }

  bool Valid() const override { return it_->Valid(); }
  void SeekToFirst() override {
    if (prefix_.empty()) {
      it_->SeekToFirst();
    } else {
      it_->Seek(prefix_);
    }
  }
  void SeekToLast() override {
    if (upper_.empty()) {
      it_->SeekToLast();
      return;
    }
    it_->SeekForPrev(upper_);
    if (it_->Valid() && it_->key() == rocksdb::Slice(upper_)) it_->Prev();
  }
  void Seek(const rocksdb::Slice &target) override {
    it_->Seek(prefix_ + target.ToString());
  }
  void SeekForPrev(const rocksdb::Slice &target) override {
    it_->SeekForPrev(prefix_ + target.ToString());
  }
  void Next() override { it_->Next(); }
  void Prev() override { it_->Prev(); }
  rocksdb::Slice key() const override {
    rocksdb::Slice k = it_->key();
    k.remove_prefix(prefix_.size());
    return k;
  }
  rocksdb::Slice value() const override { return it_->value(); }
  rocksdb::Status status() const override { return it_->status(); }

 private:
  std::string prefix_, upper_;
  rocksdb::Slice lower_slice_, upper_slice_;
  std::unique_ptr<rocksdb::Iterator> it_;
};

inline std::string Be64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i) {
    s[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return s;
}

inline uint64_t ReadBe64(std::string_view s) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8 && i < s.size(); ++i) {
    v = v << 8 | static_cast<uint8_t>(s[i]);
  }
  return v;
}

inline Digest32 ToDigest(std::string_view s) {
  Digest32 d{};
  if (s.size() >= 32) std::memcpy(d.data(), s.data(), 32);
  return d;
}

inline std::string_view View(const rocksdb::Slice &s) {
  return std::string_view(s.data(), s.size());
}

// Turns RocksDB's per-thread perf counters off for a long scan, and back to
// what they were after: with them on, every Next() bumps several
// thread-local counters nobody reads here (measured: 6% of an iteration).
class NoPerfCounters {
 public:
  NoPerfCounters() : saved_(rocksdb::GetPerfLevel()) {
    rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
  }
  ~NoPerfCounters() { rocksdb::SetPerfLevel(saved_); }
  NoPerfCounters(const NoPerfCounters &) = delete;
  NoPerfCounters &operator=(const NoPerfCounters &) = delete;

 private:
  rocksdb::PerfLevel saved_;
};

// Verify's unit of work (see VerifyOptions): large enough that seeking to a
// chunk's start costs nothing next to checking it, small enough that two
// threads finish close together.
constexpr uint64_t kVerifyChunkEvents = uint64_t{1} << 15;

// Saturates instead of overflowing: a mirrored event may carry any time.
int64_t MicrosOf(const v1::Event &e);

// The fields of `e` the ledger's indexes are keyed by.
void SetIndexFields(const v1::Event &e, PreparedEvent *p);

// Versions compare numerically ("0042" == "42"): index them without
// leading zeros.
std::string CanonicalVersionKey(const std::string &v);

// The time index's key: BE64(micros XOR 2^63) BE64(seq), so that key order
// is time order, negative times too.
std::string TimeKey(int64_t micros, uint64_t seq);

// RocksDB's status as the ledger's, `what` saying what was being done.
Status FromRocks(const rocksdb::Status &s, const std::string &what);

// A new ledger's random id: 32 hex characters.
std::string NewLedgerId();

// See ~RocksLedger.
constexpr uint64_t kMaxUnflushedBytes = 1 << 20;

// Meta keys of derived data (Ledger::PutDerived): "derived/<name>".
constexpr char kDerivedPrefix[] = "derived/";
// The ledger's own derived data: where the last full check ended.
constexpr char kVerifiedMarkKey[] = "derived/verified";

}  // namespace migledger::ledger_internal
