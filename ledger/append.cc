// Appending: events prepared (serialized, hashed, chained) and written with
// their hashes, indexes and heads in one atomic WriteBatch.
#include "ledger/rocks_ledger.h"

namespace migledger::ledger_internal {

StatusOr<PreparedEvent> RocksLedger::Prepare(v1::Event *event) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return PrepareOn(event, TargetHead(TargetKeyOf(*event)));
}

StatusOr<PreparedEvent> RocksLedger::PrepareAfter(
    v1::Event *event, const ChainHead &target_head) {
  return PrepareOn(event, target_head);
}

// Prepare() with the target chain's head given: `th` is ignored for an
// event about no target.
StatusOr<PreparedEvent> RocksLedger::PrepareOn(v1::Event *event,
                                               const ChainHead &th) {
  PreparedEvent p;
  p.target_key = TargetKeyOf(*event);
  if (!p.target_key.empty()) {
    event->set_target_sequence(th.size + 1);
    p.target_sequence = th.size + 1;
  } else {
    event->set_target_sequence(0);
  }
  if (!event->SerializeToString(&p.bytes)) {
    return Internal("cannot serialize event");
  }
  p.leaf_hash = MerkleLeafHash(p.bytes);
  p.target_chain_head =
      ExtendChain(p.target_key.empty() ? Digest32{} : th.chain, p.leaf_hash);
  SetIndexFields(*event, &p);
  return p;
}

StatusOr<uint64_t> RocksLedger::Append(const PreparedEvent &p, bool sync) {
  return AppendAll({&p, 1}, sync);
}

StatusOr<uint64_t> RocksLedger::AppendAll(std::span<const PreparedEvent> events,
                                          bool sync) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (read_only_) return Internal("ledger opened read-only");
  rocksdb::WriteBatch batch;
  ChainHead head = head_;
  // Each target's head after this batch's events so far (usually one).
  std::map<std::string, ChainHead> moved;
  for (const PreparedEvent &prepared : events) {
    PreparedEvent decoded;
    const PreparedEvent *p = &prepared;
    if (!p->index_known) {
      v1::Event event;
      if (!event.ParseFromString(p->bytes)) {
        return InvalidInput("event bytes do not decode");
      }
      decoded = prepared;
      SetIndexFields(event, &decoded);
      p = &decoded;
    }
    if (!p->target_key.empty()) {
      auto it = moved.find(p->target_key);
      const ChainHead th =
          it != moved.end() ? it->second : TargetHead(p->target_key);
      if (p->target_sequence != th.size + 1) {
        return Internal("target chain moved between Prepare and Append");
      }
      moved[p->target_key] =
          ChainHead{p->target_sequence, p->target_chain_head};
    }
    head = ChainHead{head.size + 1, ExtendChain(head.chain, p->leaf_hash)};
    AddToBatch(*p, head, &batch);
  }
  if (events.empty()) return head_.size;
  // Each head once per batch: its value after the batch's last event.
  std::string head_value = Be64(head.size);
  head_value.append(AsBytes(head.chain));
  PutRow(&batch, kMeta, "head", head_value);
  for (const auto &entry : moved) {
    std::string target_head = Be64(entry.second.size);
    target_head.append(AsBytes(entry.second.chain));
    PutRow(&batch, kTargetHeads, entry.first, target_head);
  }
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  MIGLEDGER_RETURN_IF_ERROR(
      FromRocks(db_->Write(wo, &batch), "appending to ledger"));
  head_ = head;
  for (auto &[key, th] : moved) target_heads_[key] = th;
  return head_.size;
}

// One event's rows: the event at `head` (its sequence and the ledger
// chain after it), its hashes, its indexes and its blobs.
void RocksLedger::AddToBatch(const PreparedEvent &p, const ChainHead &head,
                             rocksdb::WriteBatch *batch) {
  const std::string seq_key = Be64(head.size);
  PutRow(batch, kEvents, seq_key, p.bytes);
  std::string hashes(reinterpret_cast<const char *>(p.leaf_hash.data()), 32);
  hashes.append(AsBytes(head.chain));
  PutRow(batch, kHashes, seq_key, hashes);
  if (!p.target_key.empty()) {
    std::string v = seq_key;
    v.append(AsBytes(p.target_chain_head));
    v.append(AsBytes(p.leaf_hash));  // so target scans never rehash
    PutRow(batch, kTargetIndex, p.target_key + '\0' + Be64(p.target_sequence),
           v);
    if (!p.version.empty()) {
      PutRow(batch, kVersionIndex,
             VersionIndexPrefix(p.version) + p.target_key + '\0' + seq_key, "");
    }
  }
  if (!p.run_id.empty()) {
    PutRow(batch, kRunIndex, p.run_id + '\0' + seq_key, "");
  }
  PutRow(batch, kTimeIndex, TimeKey(p.time_micros, head.size), "");
  for (std::string_view blob : p.blobs) {
    // Rewriting an existing blob stores the same bytes under the same key.
    PutRow(batch, kBlobs, Sha256Hex(blob),
           rocksdb::Slice(blob.data(), blob.size()));
  }
}

StatusOr<PreparedEvent> RocksLedger::AppendEvent(v1::Event *event, bool sync) {
  MIGLEDGER_ASSIGN_OR_RETURN(PreparedEvent p, Prepare(event));
  MIGLEDGER_ASSIGN_OR_RETURN(uint64_t seq, Append(p, sync));
  (void)seq;
  return p;
}

Status RocksLedger::AppendMirrored(const std::string &bytes,
                                   const std::string &leaf_hash,
                                   const std::string &chain_head) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  v1::Event event;
  if (!event.ParseFromString(bytes)) {
    return LedgerCorrupt("mirrored event does not decode");
  }
  PreparedEvent p;
  p.target_key = TargetKeyOf(event);
  p.target_sequence = event.target_sequence();
  p.bytes = bytes;
  p.leaf_hash = MerkleLeafHash(bytes);
  SetIndexFields(event, &p);
  const std::string at =
      " (target sequence " + std::to_string(p.target_sequence) + ")";
  if (p.target_key.empty()) {
    return LedgerCorrupt("mirrored event has no target" + at);
  }
  ChainHead th = TargetHead(p.target_key);
  if (p.target_sequence != th.size + 1) {
    return LedgerCorrupt(
        "mirrored event out of order: expected target sequence " +
        std::to_string(th.size + 1) + at);
  }
  if (leaf_hash.size() != 32 || ToDigest(leaf_hash) != p.leaf_hash) {
    return LedgerCorrupt("mirrored event bytes do not match their leaf hash" +
                         at);
  }
  p.target_chain_head = ExtendChain(th.chain, p.leaf_hash);
  if (chain_head.size() != 32 || ToDigest(chain_head) != p.target_chain_head) {
    return LedgerCorrupt("mirrored event does not extend the local chain" + at);
  }
  MIGLEDGER_ASSIGN_OR_RETURN(uint64_t seq, Append(p, false));
  (void)seq;
  return Status::Ok();
}

}  // namespace migledger::ledger_internal
