// The ledger in RocksDB: Ledger's implementation. Its member functions are
// defined by topic: the store, its heads, blobs and derived data in
// rocks_ledger.cc, appending in append.cc, reading in scan.cc, verification
// in verify.cc and the verified mark in verified_mark.cc; opening a ledger
// is in open.cc. Internal to ledger/.
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ledger/envelope_reader.h"
#include "ledger/ledger.h"
#include "ledger/merkle.h"
#include "ledger/tables.h"

namespace migledger::ledger_internal {

class RocksLedger final : public Ledger {
 public:
  // `cfs`: the default column family alone or all of kCfNames in order;
  // `format_2`: the tables live in the default family (see Ledger::Open).
  RocksLedger(rocksdb::DB *db, std::vector<rocksdb::ColumnFamilyHandle *> cfs,
              bool read_only, bool format_2)
      : db_(db),
        cfs_(std::move(cfs)),
        format_2_(format_2),
        read_only_(read_only) {
    for (int t = 0; t < kNumTables; ++t) {
      if (format_2_) {
        tables_[t] = {cfs_[0], std::string(1, kTableTags[t])};
      } else if (t == kTargetHeads) {
        tables_[t] = {cfs_[kMeta], "target_head/"};
      } else {
        tables_[t] = {cfs_[t], std::string()};
      }
    }
  }

  ~RocksLedger() override;

  using Ledger::Verify;  // Verify() with the default options

  // The version index's key up to the target key. Format 2 leads with the
  // canonical version's length (BE16), so numeric order is key order and
  // an apply's inserts ascend like the other tables'; format 1 has none.
  std::string VersionIndexPrefix(const std::string &version) const;

  // Table access (see kTableTags).
  std::string RowKey(int table, std::string_view key) const;
  void PutRow(rocksdb::WriteBatch *batch, int table, std::string_view key,
              const rocksdb::Slice &value) const;
  rocksdb::Status GetRow(int table, std::string_view key,
                         std::string *value) const;
  rocksdb::Iterator *NewTableIterator(const rocksdb::ReadOptions &ro,
                                      int table) const;

  // True when no table holds a single row (not even the format marker).
  StatusOr<bool> Empty() const;

  // `dir` names the ledger in messages; `new_ledger_id` as in LedgerOptions.
  Status Init(const std::string &dir, const std::string &new_ledger_id,
              bool verify_new_events);

  const std::string &ledger_id() const override { return ledger_id_; }
  bool read_only() const override { return read_only_; }
  uint64_t VerifiedOnOpen() const override { return verified_on_open_; }

  StatusOr<PreparedEvent> Prepare(v1::Event *event) override;

  StatusOr<PreparedEvent> PrepareAfter(v1::Event *event,
                                       const ChainHead &target_head) override;

  // Prepare() with the target chain's head given: `th` is ignored for an
  // event about no target.
  StatusOr<PreparedEvent> PrepareOn(v1::Event *event, const ChainHead &th);

  StatusOr<uint64_t> Append(const PreparedEvent &p, bool sync) override;

  StatusOr<uint64_t> AppendAll(std::span<const PreparedEvent> events,
                               bool sync) override;

  // One event's rows: the event at `head` (its sequence and the ledger
  // chain after it), its hashes, its indexes and its blobs.
  void AddToBatch(const PreparedEvent &p, const ChainHead &head,
                  rocksdb::WriteBatch *batch);

  StatusOr<PreparedEvent> AppendEvent(v1::Event *event, bool sync) override;

  Status AppendMirrored(const std::string &bytes, const std::string &leaf_hash,
                        const std::string &chain_head) override;

  Status PutDerived(const std::string &name, const std::string &value) override;

  StatusOr<std::optional<std::string>> GetDerived(
      const std::string &name) override;

  StatusOr<ChainHead> TargetHeadAt(const std::string &target_key,
                                   uint64_t size) override;

  Status Sync() override;

  StatusOr<std::string> PutBlob(const std::string &content) override;

  StatusOr<std::string> GetBlob(const std::string &sha256_hex) override;

  ChainHead Head() const override;

  ChainHead TargetHead(const std::string &key) const override;

  std::vector<std::string> TargetKeys() const override;

  StatusOr<LedgerEntry> Get(uint64_t sequence) override;

  Status ScanBytes(
      uint64_t first, uint64_t last,
      const std::function<bool(uint64_t, std::string_view)> &fn) override;

  Status Scan(const ScanFilter &f,
              const std::function<bool(const LedgerEntry &)> &fn) override;
  // The sequences of the events an index narrows the filter to (unsorted),
  // nullopt when no index applies.
  StatusOr<std::optional<std::vector<uint64_t>>> IndexedSequences(
      const ScanFilter &f);

  Status ScanTarget(
      const std::string &key, uint64_t after,
      const std::function<bool(const LedgerEntry &, const Digest32 &,
                               const Digest32 &)> &fn) override;

  Status ScanTargetEvents(
      const std::string &key, uint64_t after,
      const std::function<bool(const v1::Event &)> &fn) override;

  // Walks the target index of `key` after target sequence `after`, handing
  // `fn` each event's ledger sequence, stored bytes and index value
  // (BE64(seq) || target chain || leaf); fn returns false to stop.
  template <typename Fn>
  Status WalkTarget(const std::string &key, uint64_t after, Fn &&fn);

  StatusOr<VerifyReport> Verify(const VerifyOptions &options) override;

  StatusOr<LedgerDigest> Digest(const std::string &target_key,
                                uint64_t size) override;

 private:
  // ---- Verify, chunk by chunk ----------------------------------------------
  //
  // A chunk of consecutive sequences is checked on its own: each link of the
  // ledger chain against the stored chain value before it (the previous
  // chunk checks that value), each target's first event in the chunk against
  // the stored target index entry before it. What only the events before the
  // chunk can tell (how many events each target had) is checked when the
  // chunks are joined in ledger order. A pass from sequence 1 finds the same
  // first problem: up to it every stored value equals the recomputed one.

  // The checks, in the order a pass from sequence 1 runs them on one event:
  // when two problems name the same sequence, the earlier check's is the one
  // reported.
  enum class Check {
    kEventMissing,
    kHashesMissing,
    kLeaf,
    kChain,
    kDecode,
    kTargetSequence,
    kTargetIndex,
  };

  struct Problem {
    uint64_t sequence = 0;  // 0: none
    Check check = Check::kEventMissing;
    std::string what;
    bool Before(const Problem &other) const {
      if (sequence == 0) return false;
      if (other.sequence == 0) return true;
      if (sequence != other.sequence) return sequence < other.sequence;
      return check < other.check;
    }
  };

  // A target's events inside one chunk.
  struct TargetRun {
    std::string key;
    uint64_t first_sequence = 0;         // its first event in the chunk
    uint64_t first_target_sequence = 0;  // as that event says
    uint64_t size = 0;  // target sequence of the last event checked
    Digest32 chain{};   // the target chain after it
    std::string want;   // the index key looked for: key \0 BE64(size)
  };

  struct ChunkResult {
    Problem problem;                 // the first found in the chunk alone
    Status status;                   // a read error, where the chunk stopped
    bool exhausted = false;          // no event at `next` or after
    uint64_t next = 0;               // the first sequence not checked
    Digest32 chain{};                // the ledger chain at next - 1
    MerkleTreeBuilder tree;          // of the leaves checked
    std::vector<TargetRun> targets;  // in order of first appearance
  };

  // Sets run->want to the index key of the run's target sequence `tseq`,
  // in place: this runs once per event.
  static void SetIndexKey(TargetRun *run, uint64_t tseq);

  // Checks sequences first..last (last = 0: to the end) into *r.
  void VerifyChunk(uint64_t first, uint64_t last, ChunkResult *r);
  // VerifyChunk's steps; each returns false when the chunk stops there (*r
  // says why).
  struct ChunkTargets;
  static void Fail(ChunkResult *r, uint64_t seq, Check check, std::string what);
  // Positions `ev` and `hs` after first - 1 and r->chain at that sequence.
  bool StartChunk(uint64_t first, rocksdb::Iterator *ev, rocksdb::Iterator *hs,
                  ChunkResult *r);
  // The event under `ev` is `expected`, its bytes hash to the stored leaf
  // (*leaf) and its chain value links from r->chain (moved past it).
  bool CheckLedgerLinks(uint64_t expected, const rocksdb::Iterator &ev,
                        const rocksdb::Iterator &hs, ChunkResult *r,
                        Digest32 *leaf);
  // The event `seq` of target env links that target's chain and index.
  bool CheckTargetLinks(const EnvelopeFields &env, uint64_t seq,
                        const Digest32 &leaf, ChunkTargets *targets,
                        ChunkResult *r);
  // The first event of a target in the chunk: its run starts from the
  // stored index entry before it.
  bool StartTargetRun(const EnvelopeFields &env, uint64_t seq,
                      ChunkTargets *targets, ChunkResult *r);

  // Joins the chunks' results in ledger order into what a pass from
  // sequence 1 reports.
  StatusOr<VerifyReport> JoinChunks(const std::vector<ChunkResult> &chunks);

  // ---- the verified mark ---------------------------------------------------
  //
  // meta "derived/verified" (FORMAT.md): the ledger head and every target's
  // head as of the last open that verified everything up to its head. Like
  // all derived data it proves nothing by itself: it only says where the
  // next verification may start. It is re-checked against the stored chains
  // (the ledger chain at its size, each target's index entry at its size)
  // and ignored when it does not stand on them (the whole ledger is then
  // verified). An event edited before it is not looked at on open: readers
  // re-hash the events they decide from (ScanTargetEvents), `validate` and
  // `audit verify` check everything.
  struct Mark {
    ChainHead head;
    std::map<std::string, ChainHead> targets;
  };

  // The mark as stored (FORMAT.md), and back; nullopt for a malformed one.
  static std::string EncodeMark(const Mark &m);
  static std::optional<Mark> DecodeMark(std::string_view v);

  // Whether `m` names values the stored chains hold.
  bool MarkStands(const Mark &m);

  // LedgerOptions::verify_new_events on open: every event after the mark
  // (after none when the mark does not stand) verified as `audit verify`
  // would, and both heads compared; kLedgerCorrupt when they do not verify.
  Status VerifySinceMark();

  // A writer whose open verified everything up to its head moves the mark
  // to the head it leaves (its own appends were made here). Unsynced: a
  // lost mark only means more to verify next time.
  void SaveMark();

  // The cheap check on open: the last event's bytes hash to the stored leaf,
  // and the stored chain entry equals the head in meta.
  Status CheckTail();

  rocksdb::DB *db_;
  std::vector<rocksdb::ColumnFamilyHandle *> cfs_;
  bool format_2_;
  struct Table {
    rocksdb::ColumnFamilyHandle *cf = nullptr;
    std::string prefix;  // the tag byte (format 2) or empty (format 1)
  };
  Table tables_[kNumTables];
  bool read_only_;
  std::string ledger_id_;
  ChainHead head_;
  std::map<std::string, ChainHead> target_heads_;
  // The verified mark (see VerifySinceMark);
  // `mark_ok_`: every event up to the head was verified on open, so a
  // writer may move the mark to its head when it closes.
  std::string mark_value_;  // as stored, when it stood and nothing followed
  bool mark_ok_ = false;
  uint64_t verified_on_open_ = 0;
  // Guards head_ and target_heads_: one ledger may serve several targets'
  // appliers at once (fleet apply), each appending to its own target chain.
  mutable std::recursive_mutex mu_;
};

}  // namespace migledger::ledger_internal
