// Verify: every hash, both chains and the Merkle tree recomputed from the
// stored bytes, in chunks checked on several threads and joined in order.
#include <algorithm>
#include <atomic>
#include <bit>
#include <system_error>
#include <thread>

#include "ledger/envelope_reader.h"
#include "ledger/rocks_ledger.h"

namespace migledger::ledger_internal {

StatusOr<VerifyReport> RocksLedger::Verify(const VerifyOptions &options) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  const uint64_t chunk = std::bit_ceil(
      options.chunk_events ? options.chunk_events : kVerifyChunkEvents);
  // The last chunk has no upper bound: a pass from sequence 1 would also
  // check events stored past the head (and then fail on the head).
  const uint64_t chunks =
      std::max<uint64_t>(1, (head_.size + chunk - 1) / chunk);
  std::vector<ChunkResult> results(chunks);
  std::atomic<uint64_t> next{0};
  // The first chunk that stopped early: nothing after it is looked at.
  std::atomic<uint64_t> stop{chunks};
  auto work = [&] {
    for (uint64_t i; (i = next.fetch_add(1)) < chunks;) {
      if (i > stop.load()) continue;
      ChunkResult &c = results[i];
      VerifyChunk(1 + i * chunk, i + 1 == chunks ? 0 : (i + 1) * chunk, &c);
      if (c.problem.sequence != 0 || !c.status.ok() ||
          (c.exhausted && i + 1 < chunks)) {
        uint64_t s = stop.load();
        while (i < s && !stop.compare_exchange_weak(s, i)) {
        }
      }
    }
  };
  unsigned threads = options.threads
                         ? options.threads
                         : std::min(8u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::clamp<uint64_t>(threads, 1, chunks));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) {
    try {
      pool.emplace_back(work);
    } catch (const std::system_error &) {
      break;  // fewer threads, same result
    }
  }
  work();
  for (auto &t : pool) t.join();
  return JoinChunks(results);
}

// Sets run->want to the index key of the run's target sequence `tseq`,
// in place: this runs once per event.
void RocksLedger::SetIndexKey(TargetRun *run, uint64_t tseq) {
  run->want.resize(run->key.size() + 9);
  run->want[run->key.size()] = '\0';
  for (int i = 7; i >= 0; --i) {
    run->want[run->key.size() + 1 + i] = static_cast<char>(tseq & 0xff);
    tseq >>= 8;
  }
}

// The targets a chunk has met: an iterator over each one's index entries,
// in the order of ChunkResult::targets, and the one of the last event.
struct RocksLedger::ChunkTargets {
  rocksdb::ReadOptions ro;
  std::vector<std::unique_ptr<rocksdb::Iterator>> index_its;
  size_t last = 0;
};

void RocksLedger::Fail(ChunkResult *r, uint64_t seq, Check check,
                       std::string what) {
  r->problem = Problem{seq, check, std::move(what)};
  r->next = seq;
}

bool RocksLedger::StartChunk(uint64_t first, rocksdb::Iterator *ev,
                             rocksdb::Iterator *hs, ChunkResult *r) {
  // Both iterators start where a pass from sequence 1 has them after
  // first - 1, so that a stray key between two sequences is seen as it
  // would be there.
  if (first == 1) {
    ev->SeekToFirst();
    hs->SeekToFirst();
    return true;
  }
  const std::string prev = Be64(first - 1);
  ev->Seek(prev);
  hs->Seek(prev);
  if (!ev->Valid() || ev->key() != prev || !hs->Valid() || hs->key() != prev ||
      hs->value().size() != 64) {
    // Then a problem at or before first - 1 is found by the chunk
    // before, which is the one reported.
    if (!ev->status().ok()) {
      r->status = FromRocks(ev->status(), "reading ledger");
    } else {
      Fail(r, first, Check::kEventMissing, "event missing");
    }
    return false;
  }
  r->chain = ToDigest(View(hs->value()).substr(32));
  ev->Next();
  hs->Next();
  return true;
}

bool RocksLedger::CheckLedgerLinks(uint64_t expected,
                                   const rocksdb::Iterator &ev,
                                   const rocksdb::Iterator &hs, ChunkResult *r,
                                   Digest32 *leaf) {
  const std::string_view key = View(ev.key());
  const uint64_t seq = ReadBe64(key);
  if (key.size() != 8 || seq != expected) {
    Fail(r, expected, Check::kEventMissing,
         "event missing (next stored event is " + std::to_string(seq) + ")");
    return false;
  }
  if (!hs.Valid() || hs.key() != ev.key() || hs.value().size() != 64) {
    Fail(r, seq, Check::kHashesMissing, "stored hashes missing");
    return false;
  }
  const std::string_view stored = View(hs.value());
  *leaf = MerkleLeafHash(View(ev.value()));
  if (ToDigest(stored) != *leaf) {
    Fail(r, seq, Check::kLeaf,
         "event bytes do not match their leaf hash (edited or reordered)");
    return false;
  }
  const Digest32 chain = ExtendChain(r->chain, *leaf);
  if (ToDigest(stored.substr(32)) != chain) {
    Fail(r, seq, Check::kChain, "ledger hash chain broken");
    return false;
  }
  r->chain = chain;
  return true;
}

bool RocksLedger::StartTargetRun(const EnvelopeFields &env, uint64_t seq,
                                 ChunkTargets *targets, ChunkResult *r) {
  // The target's first event in the chunk: whether its target
  // sequence is right is known when the chunks are joined.
  TargetRun t;
  t.key = TargetKey(env.kind, env.database_id);
  t.want = t.key;
  t.first_sequence = seq;
  t.first_target_sequence = env.target_sequence;
  r->targets.push_back(std::move(t));
  targets->index_its.emplace_back(NewTableIterator(targets->ro, kTargetIndex));
  TargetRun &run = r->targets.back();
  rocksdb::Iterator *it = targets->index_its.back().get();
  if (env.target_sequence == 0) {  // the join names what was expected
    Fail(r, seq, Check::kTargetSequence, "");
    return false;
  }
  run.size = env.target_sequence - 1;
  if (run.size == 0) {
    SetIndexKey(&run, 1);
    it->Seek(run.want);
    return true;
  }
  // The chain so far is the stored one before this event.
  SetIndexKey(&run, run.size);
  it->Seek(run.want);
  if (!it->Valid() || View(it->key()) != run.want || it->value().size() != 72) {
    Fail(r, seq, Check::kTargetIndex,
         "target " + run.key + " chain index does not match");
    return false;
  }
  run.chain = ToDigest(View(it->value()).substr(8));
  it->Next();
  return true;
}

bool RocksLedger::CheckTargetLinks(const EnvelopeFields &env, uint64_t seq,
                                   const Digest32 &leaf, ChunkTargets *targets,
                                   ChunkResult *r) {
  // Compared in place: this runs once per event.
  auto is = [&](const TargetRun &t) {
    const std::string &k = t.key;
    return k.size() == env.kind.size() + 1 + env.database_id.size() &&
           k.compare(0, env.kind.size(), env.kind) == 0 &&
           k[env.kind.size()] == ':' &&
           k.compare(env.kind.size() + 1, std::string::npos, env.database_id) ==
               0;
  };
  size_t &last = targets->last;
  if (last >= r->targets.size() || !is(r->targets[last])) {
    last = 0;
    while (last < r->targets.size() && !is(r->targets[last])) ++last;
  }
  if (last == r->targets.size()) {
    if (!StartTargetRun(env, seq, targets, r)) return false;
  } else {
    TargetRun &run = r->targets[last];
    if (env.target_sequence != run.size + 1) {
      Fail(r, seq, Check::kTargetSequence,
           "target " + run.key + " sequence " +
               std::to_string(env.target_sequence) + " where " +
               std::to_string(run.size + 1) + " was expected");
      return false;
    }
    targets->index_its[last]->Next();
  }
  TargetRun &run = r->targets[last];
  rocksdb::Iterator *it = targets->index_its[last].get();
  run.size++;
  run.chain = ExtendChain(run.chain, leaf);
  SetIndexKey(&run, run.size);
  const std::string_view v = it->Valid() && View(it->key()) == run.want
                                 ? View(it->value())
                                 : std::string_view();
  if (v.size() != 72 || ReadBe64(v) != seq ||
      ToDigest(v.substr(8)) != run.chain || ToDigest(v.substr(40)) != leaf) {
    Fail(r, seq, Check::kTargetIndex,
         "target " + run.key + " chain index does not match");
    return false;
  }
  return true;
}

// Checks sequences first..last (last = 0: to the end) into *r.
void RocksLedger::VerifyChunk(uint64_t first, uint64_t last, ChunkResult *r) {
  NoPerfCounters no_perf_counters;
  ChunkTargets targets;
  targets.ro.fill_cache = false;  // one pass over everything: caching evicts
  std::unique_ptr<rocksdb::Iterator> ev(NewTableIterator(targets.ro, kEvents));
  std::unique_ptr<rocksdb::Iterator> hs(NewTableIterator(targets.ro, kHashes));
  if (!StartChunk(first, ev.get(), hs.get(), r)) return;
  EnvelopeFields env;
  v1::EventEnvelopeView view;  // for what ReadEnvelope leaves to Protobuf
  uint64_t expected = first;
  for (; ev->Valid(); ev->Next(), hs->Next(), ++expected) {
    if (last != 0 && expected > last) break;
    Digest32 leaf;
    if (!CheckLedgerLinks(expected, *ev, *hs, r, &leaf)) return;
    const std::string_view bytes = View(ev->value());
    if (ReadEnvelope(bytes, &env) != WireRead::kOk) {
      if (!view.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
        Fail(r, expected, Check::kDecode, "event does not decode");
        return;
      }
      env.target_sequence = view.target_sequence();
      env.kind = view.target().kind();
      env.database_id = view.target().database_id();
    }
    if (!env.database_id.empty() &&
        !CheckTargetLinks(env, expected, leaf, &targets, r)) {
      return;
    }
    r->tree.AddLeafHash(leaf);
  }
  r->next = expected;
  if (!ev->Valid()) {
    if (!ev->status().ok()) {
      r->status = FromRocks(ev->status(), "reading ledger");
    } else {
      r->exhausted = true;
    }
  }
}

// Joins the chunks' results in ledger order into what a pass from
// sequence 1 reports.
StatusOr<VerifyReport> RocksLedger::JoinChunks(
    const std::vector<ChunkResult> &chunks) {
  VerifyReport r;
  r.digest.ledger_id = ledger_id_;
  auto report = [&](const Problem &p) {
    r.first_bad_sequence = p.sequence;
    r.problem = "sequence " + std::to_string(p.sequence) + ": " + p.what;
    r.events_checked = p.sequence - 1;
    return r;
  };
  MerkleTreeBuilder tree;
  bool joined = true;
  Digest32 chain{};
  uint64_t checked = 0;
  std::map<std::string, ChainHead> targets;
  for (const ChunkResult &c : chunks) {
    Problem p;
    for (const TargetRun &t : c.targets) {
      ChainHead &th = targets[t.key];
      if (t.first_target_sequence != th.size + 1) {
        Problem q{t.first_sequence, Check::kTargetSequence,
                  "target " + t.key + " sequence " +
                      std::to_string(t.first_target_sequence) + " where " +
                      std::to_string(th.size + 1) + " was expected"};
        if (q.Before(p)) p = std::move(q);
      }
      th = ChainHead{t.size, t.chain};
    }
    if (c.problem.Before(p)) p = c.problem;
    if (p.sequence != 0) return report(p);
    MIGLEDGER_RETURN_IF_ERROR(c.status);
    joined = joined && tree.Append(c.tree);
    chain = c.chain;
    checked = c.next - 1;
    if (c.exhausted) break;
  }
  r.events_checked = checked;
  if (checked != head_.size || chain != head_.chain) {
    const uint64_t at = checked + 1 <= head_.size ? checked + 1 : head_.size;
    r.first_bad_sequence = at;
    r.problem = "sequence " + std::to_string(at) + ": ledger head records " +
                std::to_string(head_.size) + " events but " +
                std::to_string(checked) +
                " verify (truncated or edited ledger)";
    return r;
  }
  for (const auto &[key, th] : targets) {
    ChainHead stored = TargetHead(key);
    if (stored.size != th.size || stored.chain != th.chain) {
      r.problem = "target " + key + " head does not match its events";
      r.first_bad_sequence = head_.size;
      return r;
    }
  }
  // Every chunk but the last holds the same power of two of events, so
  // the join cannot fail once the head matched.
  if (!joined) return Internal("verify: chunk trees do not join");
  r.digest.size = tree.size();
  r.digest.root = tree.Root();
  return r;
}

}  // namespace migledger::ledger_internal
