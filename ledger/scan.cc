// Reading: scans by index (run, version, time) or in ledger order, a
// target's events in target order, and digests.
#include <google/protobuf/arena.h>

#include <algorithm>

#include "ledger/rocks_ledger.h"

namespace migledger::ledger_internal {

Status RocksLedger::ScanBytes(
    uint64_t first, uint64_t last,
    const std::function<bool(uint64_t, std::string_view)> &fn) {
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;  // a pass over many events: caching only evicts
  std::string upper;
  rocksdb::Slice upper_slice;
  if (last != 0 && last != UINT64_MAX) {
    upper = Be64(last + 1);
    upper_slice = upper;
    ro.iterate_upper_bound = &upper_slice;
  }
  NoPerfCounters no_perf_counters;
  std::unique_ptr<rocksdb::Iterator> it(NewTableIterator(ro, kEvents));
  for (it->Seek(Be64(first)); it->Valid(); it->Next()) {
    if (!fn(ReadBe64(View(it->key())), View(it->value()))) break;
  }
  return FromRocks(it->status(), "scanning ledger");
}

namespace {

// Whether `e` is one the filter selects.
bool Selects(const ScanFilter &f, const LedgerEntry &e) {
  if (e.sequence < f.min_sequence) return false;
  if (f.max_sequence && e.sequence > f.max_sequence) return false;
  if (!f.target_key.empty() && TargetKeyOf(e.event) != f.target_key)
    return false;
  if (!f.version.empty() && CanonicalVersionKey(EventVersion(e.event)) !=
                                CanonicalVersionKey(f.version))
    return false;
  if (!f.run_id.empty() && e.event.run_id() != f.run_id) return false;
  int64_t t = MicrosOf(e.event);
  if (f.since_micros && t < *f.since_micros) return false;
  if (f.until_micros && t >= *f.until_micros) return false;
  return true;
}

}  // namespace

StatusOr<std::optional<std::vector<uint64_t>>> RocksLedger::IndexedSequences(
    const ScanFilter &f) {
  std::vector<uint64_t> seqs;
  std::string prefix;
  int index = -1;
  if (!f.run_id.empty()) {
    index = kRunIndex;
    prefix = f.run_id + '\0';
  } else if (!f.version.empty()) {
    index = kVersionIndex;
    prefix = VersionIndexPrefix(f.version);
    if (!f.target_key.empty()) prefix += f.target_key + '\0';
  }
  if (index >= 0) {
    std::unique_ptr<rocksdb::Iterator> it(NewTableIterator({}, index));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
         it->Next()) {
      std::string_view k(it->key().data(), it->key().size());
      seqs.push_back(ReadBe64(k.substr(k.size() - 8)));
    }
    MIGLEDGER_RETURN_IF_ERROR(FromRocks(it->status(), "scanning ledger index"));
    return std::optional(std::move(seqs));
  }
  if (!f.since_micros && !f.until_micros) {
    return std::optional<std::vector<uint64_t>>();
  }
  std::unique_ptr<rocksdb::Iterator> it(NewTableIterator({}, kTimeIndex));
  it->Seek(f.since_micros ? TimeKey(*f.since_micros, 0) : std::string());
  const std::string end =
      f.until_micros ? TimeKey(*f.until_micros, 0) : std::string();
  for (; it->Valid(); it->Next()) {
    if (!end.empty() && it->key().compare(end) >= 0) break;
    seqs.push_back(ReadBe64(
        std::string_view(it->key().data(), it->key().size()).substr(8)));
  }
  MIGLEDGER_RETURN_IF_ERROR(FromRocks(it->status(), "scanning time index"));
  return std::optional(std::move(seqs));
}

Status RocksLedger::Scan(const ScanFilter &f,
                         const std::function<bool(const LedgerEntry &)> &fn) {
  MIGLEDGER_ASSIGN_OR_RETURN(std::optional<std::vector<uint64_t>> seqs,
                             IndexedSequences(f));
  if (seqs) {
    // Index scans collect sequences, then read events in ledger order.
    std::sort(seqs->begin(), seqs->end());
    for (uint64_t seq : *seqs) {
      MIGLEDGER_ASSIGN_OR_RETURN(LedgerEntry e, Get(seq));
      if (Selects(f, e) && !fn(e)) break;
    }
    return Status::Ok();
  }
  rocksdb::ReadOptions ro;
  ro.readahead_size = 2 << 20;
  std::unique_ptr<rocksdb::Iterator> it(NewTableIterator(ro, kEvents));
  LedgerEntry e;
  for (it->Seek(Be64(std::max<uint64_t>(f.min_sequence, 1))); it->Valid();
       it->Next()) {
    e.sequence = ReadBe64(std::string_view(it->key().data(), it->key().size()));
    if (f.max_sequence && e.sequence > f.max_sequence) break;
    e.bytes.assign(it->value().data(), it->value().size());
    if (!e.event.ParseFromString(e.bytes)) {
      return LedgerCorrupt("event " + std::to_string(e.sequence) +
                           " does not decode");
    }
    if (Selects(f, e) && !fn(e)) break;
  }
  return FromRocks(it->status(), "scanning ledger");
}

// Walks the target index of `key` after target sequence `after`, handing
// `fn` each event's ledger sequence, stored bytes and index value
// (BE64(seq) || target chain || leaf); fn returns false to stop.
template <typename Fn>
Status RocksLedger::WalkTarget(const std::string &key, uint64_t after,
                               Fn &&fn) {
  const std::string prefix = key + '\0';
  std::unique_ptr<rocksdb::Iterator> it(NewTableIterator({}, kTargetIndex));
  // Events of one target are mostly consecutive in the ledger: walk them
  // with a second iterator (Next) instead of a point lookup per event.
  std::unique_ptr<rocksdb::Iterator> ev(NewTableIterator({}, kEvents));
  for (it->Seek(prefix + Be64(after + 1));
       it->Valid() && it->key().starts_with(prefix); it->Next()) {
    // key + '\0' + Be64(seq): a longer key belongs to another target whose
    // key starts with this one and a NUL.
    if (it->key().size() != prefix.size() + 8) continue;
    std::string_view v(it->value().data(), it->value().size());
    uint64_t seq = ReadBe64(v);
    const std::string want = Be64(seq);
    if (ev->Valid() &&
        ReadBe64(std::string_view(ev->key().data(), ev->key().size())) + 1 ==
            seq) {
      ev->Next();
    }
    if (!ev->Valid() || ev->key() != want) ev->Seek(want);
    if (!ev->Valid() || ev->key() != want) {
      MIGLEDGER_RETURN_IF_ERROR(FromRocks(ev->status(), "reading event"));
      return LedgerCorrupt("target index of " + key + " names missing event " +
                           std::to_string(seq));
    }
    if (v.size() != 72) {
      return LedgerCorrupt("target index entry of " + key + " is malformed");
    }
    MIGLEDGER_ASSIGN_OR_RETURN(bool more, fn(seq, ev->value(), v));
    if (!more) break;
  }
  return FromRocks(it->status(), "scanning target chain");
}

Status RocksLedger::ScanTarget(
    const std::string &key, uint64_t after,
    const std::function<bool(const LedgerEntry &, const Digest32 &,
                             const Digest32 &)> &fn) {
  LedgerEntry e;
  return WalkTarget(key, after,
                    [&](uint64_t seq, rocksdb::Slice bytes,
                        std::string_view index_value) -> StatusOr<bool> {
                      e.sequence = seq;
                      e.bytes.assign(bytes.data(), bytes.size());
                      if (!e.event.ParseFromString(e.bytes)) {
                        return LedgerCorrupt("event " + std::to_string(seq) +
                                             " does not decode");
                      }
                      return fn(e, ToDigest(index_value.substr(40)),
                                ToDigest(index_value.substr(8)));
                    });
}

Status RocksLedger::ScanTargetEvents(
    const std::string &key, uint64_t after,
    const std::function<bool(const v1::Event &)> &fn) {
  // Decoding into an arena replaces the event's few dozen small
  // allocations and frees with pointer bumps; the arena is reset every
  // kEventsPerArena events to bound its memory.
  constexpr int kEventsPerArena = 256;
  google::protobuf::Arena arena;
  int in_arena = 0;
  // The reader decides from these events: each is re-hashed and linked
  // into the target chain before `fn` sees it (a SHA-256 of the bytes and
  // one of 64 bytes: a few percent of decoding it).
  const ChainHead head = TargetHead(key);
  if (after >= head.size) return Status::Ok();
  MIGLEDGER_ASSIGN_OR_RETURN(ChainHead at, TargetHeadAt(key, after));
  Digest32 chain = at.chain;
  uint64_t tseq = after;
  bool stopped = false;
  const auto bad = [&](uint64_t seq, const std::string &what) {
    return LedgerCorrupt("the ledger does not verify: event " +
                         std::to_string(seq) + " (target sequence " +
                         std::to_string(tseq) + " of " + key + ") " + what +
                         "; run `migledger audit verify`");
  };
  MIGLEDGER_RETURN_IF_ERROR(WalkTarget(
      key, after,
      [&](uint64_t seq, rocksdb::Slice bytes,
          std::string_view index_value) -> StatusOr<bool> {
        ++tseq;
        const Digest32 leaf = MerkleLeafHash(View(bytes));
        if (leaf != ToDigest(index_value.substr(40))) {
          return bad(seq, "was edited (its bytes do not match its hash)");
        }
        chain = ExtendChain(chain, leaf);
        if (chain != ToDigest(index_value.substr(8))) {
          return bad(seq, "breaks the target's hash chain");
        }
        if (++in_arena > kEventsPerArena) {
          arena.Reset();
          in_arena = 1;
        }
        auto *event = google::protobuf::Arena::CreateMessage<v1::Event>(&arena);
        if (!event->ParseFromArray(bytes.data(),
                                   static_cast<int>(bytes.size()))) {
          return bad(seq, "does not decode");
        }
        if (event->target_sequence() != tseq) {
          return bad(seq, "says it is target sequence " +
                              std::to_string(event->target_sequence()));
        }
        stopped = !fn(*event);
        return !stopped;
      }));
  if (!stopped && (tseq != head.size || chain != head.chain)) {
    return LedgerCorrupt("the ledger does not verify: the head of target " +
                         key + " records " + std::to_string(head.size) +
                         " events but " + std::to_string(tseq) +
                         " link to it; run `migledger audit verify`");
  }
  return Status::Ok();
}

StatusOr<LedgerDigest> RocksLedger::Digest(const std::string &target_key,
                                           uint64_t size) {
  LedgerDigest d;
  d.ledger_id = ledger_id_;
  d.target_key = target_key;
  MerkleTreeBuilder tree;
  if (target_key.empty()) {
    uint64_t limit = size ? size : head_.size;
    if (limit > head_.size) {
      return InvalidInput("the ledger has only " + std::to_string(head_.size) +
                          " events, not " + std::to_string(limit));
    }
    std::unique_ptr<rocksdb::Iterator> hs(NewTableIterator({}, kHashes));
    for (hs->SeekToFirst(); hs->Valid() && tree.size() < limit; hs->Next()) {
      tree.AddLeafHash(ToDigest(std::string_view(hs->value().data(), 32)));
    }
    MIGLEDGER_RETURN_IF_ERROR(FromRocks(hs->status(), "reading hashes"));
  } else {
    ChainHead th = TargetHead(target_key);
    uint64_t limit = size ? size : th.size;
    if (limit > th.size) {
      return InvalidInput("target " + target_key + " has only " +
                          std::to_string(th.size) + " events, not " +
                          std::to_string(limit));
    }
    MIGLEDGER_RETURN_IF_ERROR(ScanTarget(
        target_key, 0,
        [&](const LedgerEntry &, const Digest32 &leaf, const Digest32 &) {
          tree.AddLeafHash(leaf);
          return tree.size() < limit;
        }));
  }
  d.size = tree.size();
  d.root = tree.Root();
  return d;
}

}  // namespace migledger::ledger_internal
