// The ledger's store: opening its tables, its heads, blobs and derived data.
#include "ledger/rocks_ledger.h"

#include <rocksdb/transaction_log.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "common/crash_points.h"

namespace migledger::ledger_internal {

RocksLedger::~RocksLedger() {
  SaveMark();
  // Every open replays the write-ahead log into memory, readers' too, so a
  // writer leaves little there: past kMaxUnflushedBytes of log, the
  // memtables go to table files, which keeps `status` fast however long
  // the history grows.
  uint64_t unflushed = 0;
  rocksdb::VectorLogPtr logs;
  if (!read_only_ && db_->GetSortedWalFiles(logs).ok()) {
    for (const auto &log : logs) unflushed += log->SizeFileBytes();
  }
  if (unflushed > kMaxUnflushedBytes) {
    rocksdb::FlushOptions fo;
    fo.wait = true;
    (void)db_->Flush(fo, cfs_);  // on failure the log still holds it all
  }
  for (auto *cf : cfs_) db_->DestroyColumnFamilyHandle(cf);
  delete db_;
}

// The version index's key up to the target key. Format 2 leads with the
// canonical version's length (BE16), so numeric order is key order and
// an apply's inserts ascend like the other tables'; format 1 has none.
std::string RocksLedger::VersionIndexPrefix(const std::string &version) const {
  std::string canonical = CanonicalVersionKey(version);
  std::string key;
  if (format_2_) {
    const size_t n = std::min<size_t>(canonical.size(), 0xffff);
    key.push_back(static_cast<char>(n >> 8));
    key.push_back(static_cast<char>(n & 0xff));
  }
  key += canonical;
  key.push_back('\0');
  return key;
}

// Table access (see kTableTags).
std::string RocksLedger::RowKey(int table, std::string_view key) const {
  std::string k = tables_[table].prefix;
  k.append(key);
  return k;
}

void RocksLedger::PutRow(rocksdb::WriteBatch *batch, int table,
                         std::string_view key,
                         const rocksdb::Slice &value) const {
  // Tag and key as two parts: no string built per key on the append path.
  const rocksdb::Slice parts[2] = {tables_[table].prefix,
                                   rocksdb::Slice(key.data(), key.size())};
  batch->Put(tables_[table].cf, rocksdb::SliceParts(parts, 2),
             rocksdb::SliceParts(&value, 1));
}

rocksdb::Status RocksLedger::GetRow(int table, std::string_view key,
                                    std::string *value) const {
  return db_->Get({}, tables_[table].cf, RowKey(table, key), value);
}

rocksdb::Iterator *RocksLedger::NewTableIterator(const rocksdb::ReadOptions &ro,
                                                 int table) const {
  return new TableIterator(db_, ro, tables_[table].cf, tables_[table].prefix);
}

// True when no table holds a single row (not even the format marker).
StatusOr<bool> RocksLedger::Empty() const {
  for (auto *cf : cfs_) {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, cf));
    it->SeekToFirst();
    if (it->Valid()) return false;
    MIGLEDGER_RETURN_IF_ERROR(FromRocks(it->status(), "reading ledger"));
  }
  return true;
}

// `dir` names the ledger in messages; `new_ledger_id` as in LedgerOptions.
Status RocksLedger::Init(const std::string &dir,
                         const std::string &new_ledger_id,
                         bool verify_new_events) {
  std::string value;
  const std::string creating = dir + "/" + kCreatingFile;
  // Decide "new ledger" under RocksDB's lock, not from a look before it:
  // two first runs can both see no ledger, and the second must not
  // re-initialize (a new ledger id) what the first already wrote. A
  // ledger without the marker, without any row and with the creator's
  // kCreatingFile is one whose creator was killed after RocksDB created
  // it (CURRENT is there) and before the marker was written: nothing was
  // ever recorded in it, so it is initialized like a new one, not
  // refused. Without that file it is a ledger whose log was lost or
  // removed (or no ledger at all): refused.
  auto marker = GetRow(kMeta, "format", &value);
  if (marker.IsNotFound()) {
    MIGLEDGER_ASSIGN_OR_RETURN(bool empty, Empty());
    struct stat st;
    if (!empty || ::lstat(creating.c_str(), &st) != 0) {
      return LedgerCorrupt(
          "ledger " + dir +
          " has no format marker (not a migledger ledger, or its log was "
          "removed?)");
    }
    // For a reader it is what it was an instant before RocksDB created
    // it: no ledger yet (it has no identity before the marker).
    if (read_only_) {
      return NotFound("no ledger at " + dir +
                      " yet (its creation has not finished; the next "
                      "command that writes finishes it)");
    }
    CrashPoint("ledger.before_format_marker");
    rocksdb::WriteBatch batch;
    PutRow(&batch, kMeta, "format", format_2_ ? kFormatVersion : "1");
    ledger_id_ = new_ledger_id.empty() ? NewLedgerId() : new_ledger_id;
    PutRow(&batch, kMeta, "ledger_id", ledger_id_);
    rocksdb::WriteOptions wo;
    wo.sync = true;
    MIGLEDGER_RETURN_IF_ERROR(
        FromRocks(db_->Write(wo, &batch), "initializing ledger"));
  }
  // Created: the evidence is no longer needed (losing this unlink in a
  // power cut is harmless, the marker is durable).
  if (!read_only_) ::unlink(creating.c_str());
  auto s = GetRow(kMeta, "format", &value);
  MIGLEDGER_RETURN_IF_ERROR(FromRocks(s, "reading ledger format"));
  if (std::atoi(value.c_str()) > kFormatVersionNumber) {
    return Unsupported("ledger format " + value +
                       " is newer than this migledger supports (" +
                       kFormatVersion + "); upgrade migledger");
  }
  MIGLEDGER_RETURN_IF_ERROR(
      FromRocks(GetRow(kMeta, "ledger_id", &ledger_id_), "reading ledger id"));
  s = GetRow(kMeta, "head", &value);
  if (s.ok()) {
    head_.size = ReadBe64(value);
    head_.chain = ToDigest(std::string_view(value).substr(8));
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "reading ledger head");
  }
  // Per-target heads.
  std::unique_ptr<rocksdb::Iterator> it(NewTableIterator({}, kTargetHeads));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string key = it->key().ToString();
    std::string_view v(it->value().data(), it->value().size());
    target_heads_[key] = ChainHead{ReadBe64(v), ToDigest(v.substr(8))};
  }
  MIGLEDGER_RETURN_IF_ERROR(CheckTail());
  if (verify_new_events) MIGLEDGER_RETURN_IF_ERROR(VerifySinceMark());
  return Status::Ok();
}

// The cheap check on open: the last event's bytes hash to the stored leaf,
// and the stored chain entry equals the head in meta.
Status RocksLedger::CheckTail() {
  std::unique_ptr<rocksdb::Iterator> ev(NewTableIterator({}, kEvents));
  ev->SeekToLast();
  MIGLEDGER_RETURN_IF_ERROR(FromRocks(ev->status(), "reading ledger tail"));
  uint64_t last =
      ev->Valid() ? ReadBe64(std::string_view(ev->key().data(), 8)) : 0;
  if (last != head_.size) {
    return LedgerCorrupt("ledger tail is torn: head records " +
                         std::to_string(head_.size) +
                         " events, last stored is " + std::to_string(last) +
                         "; run `migledger audit verify`");
  }
  if (last == 0) return Status::Ok();
  std::string hashes;
  MIGLEDGER_RETURN_IF_ERROR(
      FromRocks(GetRow(kHashes, Be64(last), &hashes), "reading tail hashes"));
  Digest32 leaf =
      MerkleLeafHash(std::string_view(ev->value().data(), ev->value().size()));
  if (hashes.size() != 64 || ToDigest(hashes) != leaf ||
      ToDigest(std::string_view(hashes).substr(32)) != head_.chain) {
    return LedgerCorrupt("ledger tail does not match its head at sequence " +
                         std::to_string(last) +
                         "; run `migledger audit verify`");
  }
  return Status::Ok();
}

Status RocksLedger::PutDerived(const std::string &name,
                               const std::string &value) {
  if (read_only_) return Internal("ledger opened read-only");
  return FromRocks(db_->Put({}, tables_[kMeta].cf,
                            RowKey(kMeta, kDerivedPrefix + name), value),
                   "writing derived data");
}

StatusOr<std::optional<std::string>> RocksLedger::GetDerived(
    const std::string &name) {
  std::string value;
  auto s = GetRow(kMeta, kDerivedPrefix + name, &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  MIGLEDGER_RETURN_IF_ERROR(FromRocks(s, "reading derived data"));
  return std::optional<std::string>(std::move(value));
}

StatusOr<ChainHead> RocksLedger::TargetHeadAt(const std::string &target_key,
                                              uint64_t size) {
  if (size == 0) return ChainHead{};
  std::string value;
  auto s = GetRow(kTargetIndex, target_key + '\0' + Be64(size), &value);
  if (s.IsNotFound()) {
    return NotFound("target " + target_key + " has fewer than " +
                    std::to_string(size) + " events");
  }
  MIGLEDGER_RETURN_IF_ERROR(FromRocks(s, "reading target index"));
  if (value.size() < 8 + 32) {
    return LedgerCorrupt("target index entry " + std::to_string(size) + " of " +
                         target_key + " is too short");
  }
  ChainHead head{size, {}};
  std::memcpy(head.chain.data(), value.data() + 8, 32);
  return head;
}

Status RocksLedger::Sync() {
  if (read_only_) return Status::Ok();
  return FromRocks(db_->FlushWAL(true), "syncing ledger");
}

StatusOr<std::string> RocksLedger::PutBlob(const std::string &content) {
  std::string key = Sha256Hex(content);
  std::string existing;
  auto s = GetRow(kBlobs, key, &existing);
  if (s.ok()) return key;  // deduplicated
  if (!s.IsNotFound()) return FromRocks(s, "reading blob");
  if (read_only_) return Internal("ledger opened read-only");
  MIGLEDGER_RETURN_IF_ERROR(
      FromRocks(db_->Put({}, tables_[kBlobs].cf, RowKey(kBlobs, key), content),
                "writing blob"));
  return key;
}

StatusOr<std::string> RocksLedger::GetBlob(const std::string &sha256_hex) {
  std::string content;
  auto s = GetRow(kBlobs, sha256_hex, &content);
  if (s.IsNotFound()) return NotFound("no SQL text with sha256 " + sha256_hex);
  MIGLEDGER_RETURN_IF_ERROR(FromRocks(s, "reading blob"));
  if (Sha256Hex(content) != sha256_hex) {
    return LedgerCorrupt("blob " + sha256_hex + " does not match its hash");
  }
  return content;
}

ChainHead RocksLedger::Head() const {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return head_;
}

ChainHead RocksLedger::TargetHead(const std::string &key) const {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  auto it = target_heads_.find(key);
  return it == target_heads_.end() ? ChainHead{} : it->second;
}

std::vector<std::string> RocksLedger::TargetKeys() const {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  std::vector<std::string> keys;
  for (const auto &[k, v] : target_heads_) keys.push_back(k);
  return keys;
}

StatusOr<LedgerEntry> RocksLedger::Get(uint64_t sequence) {
  LedgerEntry e;
  e.sequence = sequence;
  auto s = GetRow(kEvents, Be64(sequence), &e.bytes);
  if (s.IsNotFound()) {
    return NotFound("no event with sequence " + std::to_string(sequence));
  }
  MIGLEDGER_RETURN_IF_ERROR(FromRocks(s, "reading event"));
  if (!e.event.ParseFromString(e.bytes)) {
    return LedgerCorrupt("event " + std::to_string(sequence) +
                         " does not decode");
  }
  return e;
}

}  // namespace migledger::ledger_internal
