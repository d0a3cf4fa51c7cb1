// The verified mark (FORMAT.md, "Derived data"): where a verifying open
// may start, checked against the stored chains before it is trusted.
#include "ledger/rocks_ledger.h"

namespace migledger::ledger_internal {

std::string RocksLedger::EncodeMark(const Mark &m) {
  std::string out = Be64(m.head.size);
  out.append(AsBytes(m.head.chain));
  for (const auto &[key, th] : m.targets) {
    out.push_back(static_cast<char>(key.size() >> 8 & 0xff));
    out.push_back(static_cast<char>(key.size() & 0xff));
    out += key;
    out += Be64(th.size);
    out.append(AsBytes(th.chain));
  }
  return out;
}

std::optional<RocksLedger::Mark> RocksLedger::DecodeMark(std::string_view v) {
  Mark m;
  if (v.size() < 40) return std::nullopt;
  m.head = ChainHead{ReadBe64(v), ToDigest(v.substr(8, 32))};
  v.remove_prefix(40);
  while (!v.empty()) {
    if (v.size() < 2) return std::nullopt;
    const size_t n =
        static_cast<uint8_t>(v[0]) << 8 | static_cast<uint8_t>(v[1]);
    if (v.size() < 2 + n + 40) return std::nullopt;
    std::string key(v.substr(2, n));
    v.remove_prefix(2 + n);
    m.targets[key] = ChainHead{ReadBe64(v), ToDigest(v.substr(8, 32))};
    v.remove_prefix(40);
  }
  return m;
}

// Whether `m` names values the stored chains hold.
bool RocksLedger::MarkStands(const Mark &m) {
  if (m.head.size > head_.size) return false;
  if (m.head.size > 0) {
    std::string hashes;
    if (!GetRow(kHashes, Be64(m.head.size), &hashes).ok() ||
        hashes.size() != 64 ||
        ToDigest(std::string_view(hashes).substr(32)) != m.head.chain) {
      return false;
    }
  }
  for (const auto &[key, th] : m.targets) {
    auto at = TargetHeadAt(key, th.size);
    if (!at.ok() || at->chain != th.chain) return false;
  }
  return true;
}

Status RocksLedger::VerifySinceMark() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  const auto corrupt = [](const std::string &what) {
    return LedgerCorrupt("the ledger does not verify: " + what +
                         "; run `migledger audit verify`");
  };
  std::string value;
  auto s = GetRow(kMeta, kVerifiedMarkKey, &value);
  if (!s.ok() && !s.IsNotFound()) {
    return FromRocks(s, "reading the ledger's verified mark");
  }
  std::optional<Mark> mark;
  if (s.ok()) mark = DecodeMark(value);
  if (!mark || !MarkStands(*mark)) {
    MIGLEDGER_ASSIGN_OR_RETURN(VerifyReport r, Verify());
    if (!r.ok()) return corrupt(r.problem);
    verified_on_open_ = head_.size;
  } else {
    std::map<std::string, ChainHead> expected = mark->targets;
    Digest32 chain = mark->head.chain;
    if (mark->head.size < head_.size) {
      ChunkResult c;
      VerifyChunk(mark->head.size + 1, 0, &c);
      if (c.problem.sequence != 0) {
        return corrupt("sequence " + std::to_string(c.problem.sequence) + ": " +
                       (c.problem.what.empty() ? "target sequence out of order"
                                               : c.problem.what));
      }
      MIGLEDGER_RETURN_IF_ERROR(c.status);
      if (c.next - 1 != head_.size) {
        return corrupt("the ledger head records " + std::to_string(head_.size) +
                       " events but " + std::to_string(c.next - 1) +
                       " are stored");
      }
      for (const TargetRun &t : c.targets) {
        const ChainHead base = expected[t.key];
        if (t.first_target_sequence != base.size + 1) {
          return corrupt("sequence " + std::to_string(t.first_sequence) +
                         ": target " + t.key + " sequence " +
                         std::to_string(t.first_target_sequence) + " where " +
                         std::to_string(base.size + 1) + " was expected");
        }
        expected[t.key] = ChainHead{t.size, t.chain};
      }
      chain = c.chain;
      verified_on_open_ = head_.size - mark->head.size;
    }
    if (chain != head_.chain) {
      return corrupt("the ledger head does not match its events");
    }
    std::erase_if(expected, [](const auto &e) { return e.second.size == 0; });
    for (const auto &[key, th] : target_heads_) {
      auto it = expected.find(key);
      if (it == expected.end() || it->second.size != th.size ||
          it->second.chain != th.chain) {
        return corrupt("the head of target " + key +
                       " does not match its events");
      }
    }
    if (expected.size() != target_heads_.size()) {
      return corrupt("a target's head is missing");
    }
  }
  mark_ok_ = true;
  if (mark && verified_on_open_ == 0) mark_value_ = value;
  return Status::Ok();
}

// A writer whose open verified everything up to its head moves the mark
// to the head it leaves (its own appends were made here). Unsynced: a
// lost mark only means more to verify next time.
void RocksLedger::SaveMark() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (read_only_ || !mark_ok_) return;
  const std::string value = EncodeMark(Mark{head_, target_heads_});
  if (value == mark_value_) return;
  (void)db_->Put({}, tables_[kMeta].cf, RowKey(kMeta, kVerifiedMarkKey), value);
}

}  // namespace migledger::ledger_internal
