// RocksDB implementation of the ledger. Layout: ledger/FORMAT.md.
#include "ledger/ledger.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/table.h>
#include <rocksdb/transaction_log.h>
#include <rocksdb/write_batch.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "ledger/merkle.h"

namespace migledger {
namespace {

constexpr char kFormatVersion[] = "1";
constexpr int kFormatVersionNumber = 1;

// Column families, in the order they are opened.
enum Cf {
  kDefault = 0,
  kEvents,       // BE64(seq) -> event bytes
  kHashes,       // BE64(seq) -> leaf hash (32) || ledger chain head (32)
  kTargetIndex,  // target_key \0 BE64(tseq) -> BE64(seq) || target chain (32)
  kVersionIndex, // canonical version \0 target_key \0 BE64(seq) -> ""
  kRunIndex,     // run_id \0 BE64(seq) -> ""
  kTimeIndex,    // BE64(micros + 2^63) BE64(seq) -> ""
  kBlobs,        // hex sha256 -> content
  kMeta,         // see FORMAT.md
  kNumCfs
};
const char *const kCfNames[kNumCfs] = {
    rocksdb::kDefaultColumnFamilyName.c_str(),
    "events",
    "hashes",
    "target_index",
    "version_index",
    "run_index",
    "time_index",
    "blobs",
    "meta"};

std::string Be64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i) {
    s[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return s;
}

uint64_t ReadBe64(std::string_view s) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8 && i < s.size(); ++i) {
    v = v << 8 | static_cast<uint8_t>(s[i]);
  }
  return v;
}

Digest32 ToDigest(std::string_view s) {
  Digest32 d{};
  if (s.size() >= 32)
    std::memcpy(d.data(), s.data(), 32);
  return d;
}

Digest32 ChainNext(const Digest32 &prev, const Digest32 &leaf) {
  return Sha256(AsBytes(prev), AsBytes(leaf));
}

std::string TargetKeyOf(const v1::Event &e) {
  if (!e.has_target() || e.target().database_id().empty())
    return "";
  return e.target().kind() + ":" + e.target().database_id();
}

// Saturates instead of overflowing: a mirrored event may carry any time.
int64_t MicrosOf(const v1::Event &e) {
  int64_t micros = 0;
  if (__builtin_mul_overflow(e.time().seconds(), int64_t{1000000}, &micros) ||
      __builtin_add_overflow(micros, int64_t{e.time().nanos() / 1000}, &micros)) {
    return e.time().seconds() < 0 ? INT64_MIN : INT64_MAX;
  }
  return micros;
}

// Version string of a step-like event, "" for others.
std::string VersionOf(const v1::Event &e) {
  switch (e.body_case()) {
  case v1::Event::kStepStarted:
    return e.step_started().version();
  case v1::Event::kStatementApplied:
    return e.statement_applied().version();
  case v1::Event::kStepApplied:
    return e.step_applied().version();
  case v1::Event::kStepFailed:
    return e.step_failed().version();
  case v1::Event::kStepReverted:
    return e.step_reverted().version();
  case v1::Event::kStepRecovered:
    return e.step_recovered().version();
  case v1::Event::kAppliedOutOfBand:
    return e.applied_out_of_band().version();
  case v1::Event::kDriftDetected:
    return e.drift_detected().version();
  case v1::Event::kBaselined:
    return e.baselined().version();
  case v1::Event::kChecksumAccepted:
    return e.checksum_accepted().version();
  default:
    return "";
  }
}

// Versions compare numerically ("0042" == "42"): index them without
// leading zeros.
std::string CanonicalVersionKey(const std::string &v) {
  size_t i = v.find_first_not_of('0');
  if (v.empty()) return v;
  return i == std::string::npos ? "0" : v.substr(i);
}

std::string TimeKey(int64_t micros, uint64_t seq) {
  return Be64(static_cast<uint64_t>(micros) ^ (1ull << 63)) + Be64(seq);
}

Status FromRocks(const rocksdb::Status &s, const std::string &what) {
  if (s.ok())
    return Status::Ok();
  if (s.IsCorruption())
    return LedgerCorrupt(what + ": " + s.ToString());
  if (s.IsNotFound())
    return NotFound(what + ": " + s.ToString());
  return IoError(what + ": " + s.ToString());
}

std::string NewLedgerId() {
  std::random_device rd;
  std::string raw(16, '\0');
  for (auto &c : raw)
    c = static_cast<char>(rd());
  return ToHex(reinterpret_cast<const uint8_t *>(raw.data()), raw.size());
}

// See ~RocksLedger.
constexpr uint64_t kMaxUnflushedBytes = 1 << 20;

class RocksLedger final : public Ledger {
public:
  RocksLedger(rocksdb::DB *db, std::vector<rocksdb::ColumnFamilyHandle *> cfs,
              bool read_only)
      : db_(db), cfs_(std::move(cfs)), read_only_(read_only) {}

  ~RocksLedger() override {
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
    for (auto *cf : cfs_)
      db_->DestroyColumnFamilyHandle(cf);
    delete db_;
  }

  Status Init(bool fresh) {
    std::string value;
    // Decide "new ledger" under RocksDB's lock, not from a look before it:
    // two first runs can both see no ledger, and the second must not
    // re-initialize (a new ledger id) what the first already wrote.
    if (fresh && !read_only_ &&
        db_->Get({}, cfs_[kMeta], "format", &value).IsNotFound()) {
      rocksdb::WriteBatch batch;
      batch.Put(cfs_[kMeta], "format", kFormatVersion);
      ledger_id_ = NewLedgerId();
      batch.Put(cfs_[kMeta], "ledger_id", ledger_id_);
      rocksdb::WriteOptions wo;
      wo.sync = true;
      MIGLEDGER_RETURN_IF_ERROR(
          FromRocks(db_->Write(wo, &batch), "initializing ledger"));
    }
    auto s = db_->Get({}, cfs_[kMeta], "format", &value);
    if (s.IsNotFound()) {
      return LedgerCorrupt(
          "ledger has no format marker (not a migledger ledger?)");
    }
    MIGLEDGER_RETURN_IF_ERROR(FromRocks(s, "reading ledger format"));
    if (std::atoi(value.c_str()) > kFormatVersionNumber) {
      return Unsupported("ledger format " + value +
                         " is newer than this migledger supports (" +
                         kFormatVersion + "); upgrade migledger");
    }
    MIGLEDGER_RETURN_IF_ERROR(
        FromRocks(db_->Get({}, cfs_[kMeta], "ledger_id", &ledger_id_),
                  "reading ledger id"));
    s = db_->Get({}, cfs_[kMeta], "head", &value);
    if (s.ok()) {
      head_.size = ReadBe64(value);
      head_.chain = ToDigest(std::string_view(value).substr(8));
    } else if (!s.IsNotFound()) {
      return FromRocks(s, "reading ledger head");
    }
    // Per-target heads.
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, cfs_[kMeta]));
    for (it->Seek("target_head/");
         it->Valid() && it->key().starts_with("target_head/"); it->Next()) {
      std::string key = it->key().ToString().substr(strlen("target_head/"));
      std::string_view v(it->value().data(), it->value().size());
      target_heads_[key] = ChainHead{ReadBe64(v), ToDigest(v.substr(8))};
    }
    return CheckTail();
  }

  const std::string &ledger_id() const override { return ledger_id_; }
  bool read_only() const override { return read_only_; }

  StatusOr<PreparedEvent> Prepare(v1::Event *event) override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    PreparedEvent p;
    p.target_key = TargetKeyOf(*event);
    ChainHead th;
    if (!p.target_key.empty()) {
      th = TargetHead(p.target_key);
      event->set_target_sequence(th.size + 1);
      p.target_sequence = th.size + 1;
    } else {
      event->set_target_sequence(0);
    }
    if (!event->SerializeToString(&p.bytes)) {
      return Internal("cannot serialize event");
    }
    p.leaf_hash = MerkleLeafHash(p.bytes);
    p.target_chain_head = ChainNext(th.chain, p.leaf_hash);
    return p;
  }

  StatusOr<uint64_t> Append(const PreparedEvent &p, bool sync) override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (read_only_)
      return Internal("ledger opened read-only");
    v1::Event event;
    if (!event.ParseFromString(p.bytes)) {
      return InvalidInput("event bytes do not decode");
    }
    if (!p.target_key.empty()) {
      ChainHead th = TargetHead(p.target_key);
      if (p.target_sequence != th.size + 1) {
        return Internal("target chain moved between Prepare and Append");
      }
    }
    uint64_t seq = head_.size + 1;
    Digest32 chain = ChainNext(head_.chain, p.leaf_hash);
    rocksdb::WriteBatch batch;
    const std::string seq_key = Be64(seq);
    batch.Put(cfs_[kEvents], seq_key, p.bytes);
    std::string hashes(reinterpret_cast<const char *>(p.leaf_hash.data()), 32);
    hashes.append(AsBytes(chain));
    batch.Put(cfs_[kHashes], seq_key, hashes);
    if (!p.target_key.empty()) {
      std::string v = seq_key;
      v.append(AsBytes(p.target_chain_head));
      v.append(AsBytes(p.leaf_hash));  // so target scans never rehash
      batch.Put(cfs_[kTargetIndex],
                p.target_key + '\0' + Be64(p.target_sequence), v);
      std::string head = Be64(p.target_sequence);
      head.append(AsBytes(p.target_chain_head));
      batch.Put(cfs_[kMeta], "target_head/" + p.target_key, head);
      std::string version = VersionOf(event);
      if (!version.empty()) {
        batch.Put(cfs_[kVersionIndex],
                  CanonicalVersionKey(version) + '\0' + p.target_key + '\0' + seq_key, "");
      }
    }
    if (!event.run_id().empty()) {
      batch.Put(cfs_[kRunIndex], event.run_id() + '\0' + seq_key, "");
    }
    batch.Put(cfs_[kTimeIndex], TimeKey(MicrosOf(event), seq), "");
    std::string head = seq_key;
    head.append(AsBytes(chain));
    batch.Put(cfs_[kMeta], "head", head);
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    MIGLEDGER_RETURN_IF_ERROR(
        FromRocks(db_->Write(wo, &batch), "appending to ledger"));
    head_ = ChainHead{seq, chain};
    if (!p.target_key.empty()) {
      target_heads_[p.target_key] =
          ChainHead{p.target_sequence, p.target_chain_head};
    }
    return seq;
  }

  StatusOr<PreparedEvent> AppendEvent(v1::Event *event, bool sync) override {
    MIGLEDGER_ASSIGN_OR_RETURN(PreparedEvent p, Prepare(event));
    MIGLEDGER_ASSIGN_OR_RETURN(uint64_t seq, Append(p, sync));
    (void)seq;
    return p;
  }

  Status AppendMirrored(const std::string &bytes, const std::string &leaf_hash,
                        const std::string &chain_head) override {
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
    p.target_chain_head = ChainNext(th.chain, p.leaf_hash);
    if (chain_head.size() != 32 ||
        ToDigest(chain_head) != p.target_chain_head) {
      return LedgerCorrupt("mirrored event does not extend the local chain" +
                           at);
    }
    MIGLEDGER_ASSIGN_OR_RETURN(uint64_t seq, Append(p, false));
    (void)seq;
    return Status::Ok();
  }

  Status Sync() override {
    if (read_only_)
      return Status::Ok();
    return FromRocks(db_->FlushWAL(true), "syncing ledger");
  }

  StatusOr<std::string> PutBlob(const std::string &content) override {
    std::string key = Sha256Hex(content);
    std::string existing;
    auto s = db_->Get({}, cfs_[kBlobs], key, &existing);
    if (s.ok())
      return key; // deduplicated
    if (!s.IsNotFound())
      return FromRocks(s, "reading blob");
    if (read_only_)
      return Internal("ledger opened read-only");
    MIGLEDGER_RETURN_IF_ERROR(
        FromRocks(db_->Put({}, cfs_[kBlobs], key, content), "writing blob"));
    return key;
  }

  StatusOr<std::string> GetBlob(const std::string &sha256_hex) override {
    std::string content;
    auto s = db_->Get({}, cfs_[kBlobs], sha256_hex, &content);
    if (s.IsNotFound())
      return NotFound("no SQL text with sha256 " + sha256_hex);
    MIGLEDGER_RETURN_IF_ERROR(FromRocks(s, "reading blob"));
    if (Sha256Hex(content) != sha256_hex) {
      return LedgerCorrupt("blob " + sha256_hex + " does not match its hash");
    }
    return content;
  }

  ChainHead Head() const override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    return head_;
  }

  ChainHead TargetHead(const std::string &key) const override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    auto it = target_heads_.find(key);
    return it == target_heads_.end() ? ChainHead{} : it->second;
  }

  std::vector<std::string> TargetKeys() const override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    std::vector<std::string> keys;
    for (const auto &[k, v] : target_heads_)
      keys.push_back(k);
    return keys;
  }

  StatusOr<LedgerEntry> Get(uint64_t sequence) override {
    LedgerEntry e;
    e.sequence = sequence;
    auto s = db_->Get({}, cfs_[kEvents], Be64(sequence), &e.bytes);
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

  Status Scan(const ScanFilter &f,
              const std::function<bool(const LedgerEntry &)> &fn) override {
    auto matches = [&](const LedgerEntry &e) {
      if (e.sequence < f.min_sequence)
        return false;
      if (f.max_sequence && e.sequence > f.max_sequence)
        return false;
      if (!f.target_key.empty() && TargetKeyOf(e.event) != f.target_key)
        return false;
      if (!f.version.empty() &&
          CanonicalVersionKey(VersionOf(e.event)) != CanonicalVersionKey(f.version))
        return false;
      if (!f.run_id.empty() && e.event.run_id() != f.run_id)
        return false;
      int64_t t = MicrosOf(e.event);
      if (f.since_micros && t < *f.since_micros)
        return false;
      if (f.until_micros && t >= *f.until_micros)
        return false;
      return true;
    };
    // Index scans collect sequences, then read events in ledger order.
    std::string prefix;
    int index = -1;
    if (!f.run_id.empty()) {
      index = kRunIndex;
      prefix = f.run_id + '\0';
    } else if (!f.version.empty()) {
      index = kVersionIndex;
      prefix = CanonicalVersionKey(f.version) + '\0';
      if (!f.target_key.empty()) prefix += f.target_key + '\0';
    }
    if (index >= 0) {
      std::vector<uint64_t> seqs;
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, cfs_[index]));
      for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
           it->Next()) {
        std::string_view k(it->key().data(), it->key().size());
        seqs.push_back(ReadBe64(k.substr(k.size() - 8)));
      }
      MIGLEDGER_RETURN_IF_ERROR(FromRocks(it->status(), "scanning ledger index"));
      std::sort(seqs.begin(), seqs.end());
      for (uint64_t seq : seqs) {
        MIGLEDGER_ASSIGN_OR_RETURN(LedgerEntry e, Get(seq));
        if (matches(e) && !fn(e))
          break;
      }
      return Status::Ok();
    }
    if (f.since_micros || f.until_micros) {
      std::unique_ptr<rocksdb::Iterator> it(
          db_->NewIterator({}, cfs_[kTimeIndex]));
      it->Seek(f.since_micros ? TimeKey(*f.since_micros, 0) : std::string());
      std::vector<uint64_t> seqs;
      const std::string end =
          f.until_micros ? TimeKey(*f.until_micros, 0) : std::string();
      for (; it->Valid(); it->Next()) {
        if (!end.empty() && it->key().compare(end) >= 0)
          break;
        seqs.push_back(ReadBe64(
            std::string_view(it->key().data(), it->key().size()).substr(8)));
      }
      MIGLEDGER_RETURN_IF_ERROR(FromRocks(it->status(), "scanning time index"));
      std::sort(seqs.begin(), seqs.end());
      for (uint64_t seq : seqs) {
        MIGLEDGER_ASSIGN_OR_RETURN(LedgerEntry e, Get(seq));
        if (matches(e) && !fn(e))
          break;
      }
      return Status::Ok();
    }
    rocksdb::ReadOptions ro;
    ro.readahead_size = 2 << 20;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cfs_[kEvents]));
    LedgerEntry e;
    for (it->Seek(Be64(std::max<uint64_t>(f.min_sequence, 1))); it->Valid();
         it->Next()) {
      e.sequence =
          ReadBe64(std::string_view(it->key().data(), it->key().size()));
      if (f.max_sequence && e.sequence > f.max_sequence)
        break;
      e.bytes.assign(it->value().data(), it->value().size());
      if (!e.event.ParseFromString(e.bytes)) {
        return LedgerCorrupt("event " + std::to_string(e.sequence) +
                             " does not decode");
      }
      if (matches(e) && !fn(e))
        break;
    }
    return FromRocks(it->status(), "scanning ledger");
  }

  Status
  ScanTarget(const std::string &key, uint64_t after,
             const std::function<bool(const LedgerEntry &, const Digest32 &,
                                      const Digest32 &)> &fn) override {
    const std::string prefix = key + '\0';
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator({}, cfs_[kTargetIndex]));
    // Events of one target are mostly consecutive in the ledger: walk them
    // with a second iterator (Next) instead of a point lookup per event.
    std::unique_ptr<rocksdb::Iterator> ev(db_->NewIterator({}, cfs_[kEvents]));
    LedgerEntry e;
    for (it->Seek(prefix + Be64(after + 1));
         it->Valid() && it->key().starts_with(prefix); it->Next()) {
      // key + '\0' + Be64(seq): a longer key belongs to another target whose
      // key starts with this one and a NUL.
      if (it->key().size() != prefix.size() + 8) continue;
      std::string_view v(it->value().data(), it->value().size());
      uint64_t seq = ReadBe64(v);
      const std::string want = Be64(seq);
      if (ev->Valid() && ReadBe64(std::string_view(ev->key().data(), ev->key().size())) + 1 == seq) {
        ev->Next();
      }
      if (!ev->Valid() || ev->key() != want) ev->Seek(want);
      if (!ev->Valid() || ev->key() != want) {
        MIGLEDGER_RETURN_IF_ERROR(FromRocks(ev->status(), "reading event"));
        return LedgerCorrupt("target index of " + key + " names missing event " +
                             std::to_string(seq));
      }
      e.sequence = seq;
      e.bytes.assign(ev->value().data(), ev->value().size());
      if (!e.event.ParseFromString(e.bytes)) {
        return LedgerCorrupt("event " + std::to_string(seq) + " does not decode");
      }
      if (v.size() != 72) {
        return LedgerCorrupt("target index entry of " + key + " is malformed");
      }
      if (!fn(e, ToDigest(v.substr(40)), ToDigest(v.substr(8))))
        break;
    }
    return FromRocks(it->status(), "scanning target chain");
  }

  StatusOr<VerifyReport> Verify() override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    VerifyReport r;
    r.digest.ledger_id = ledger_id_;
    MerkleTreeBuilder tree;
    Digest32 chain{};
    std::map<std::string, ChainHead> targets;
    uint64_t expected = 1;
    auto fail = [&](uint64_t seq, std::string why) {
      r.first_bad_sequence = seq;
      r.problem = "sequence " + std::to_string(seq) + ": " + why;
    };
    rocksdb::ReadOptions ro;
    ro.readahead_size = 4 << 20;
    std::unique_ptr<rocksdb::Iterator> ev(db_->NewIterator(ro, cfs_[kEvents]));
    std::unique_ptr<rocksdb::Iterator> hs(db_->NewIterator(ro, cfs_[kHashes]));
    hs->SeekToFirst();
    // One iterator per target over its index entries: they come in target
    // order, so each advances with Next() as its target's events come by.
    std::map<std::string, std::unique_ptr<rocksdb::Iterator>> index_its;
    v1::EventEnvelopeView event;
    for (ev->SeekToFirst(); ev->Valid(); ev->Next(), hs->Next(), ++expected) {
      uint64_t seq =
          ReadBe64(std::string_view(ev->key().data(), ev->key().size()));
      if (ev->key().size() != 8 || seq != expected) {
        fail(expected, "event missing (next stored event is " +
                           std::to_string(seq) + ")");
        return r;
      }
      if (!hs->Valid() || hs->key() != ev->key() || hs->value().size() != 64) {
        fail(seq, "stored hashes missing");
        return r;
      }
      std::string_view bytes(ev->value().data(), ev->value().size());
      Digest32 leaf = MerkleLeafHash(bytes);
      std::string_view stored(hs->value().data(), 64);
      if (ToDigest(stored) != leaf) {
        fail(seq,
             "event bytes do not match their leaf hash (edited or reordered)");
        return r;
      }
      chain = ChainNext(chain, leaf);
      if (ToDigest(stored.substr(32)) != chain) {
        fail(seq, "ledger hash chain broken");
        return r;
      }
      if (!event.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
        fail(seq, "event does not decode");
        return r;
      }
      std::string key = event.target().database_id().empty()
                            ? std::string()
                            : event.target().kind() + ":" + event.target().database_id();
      if (!key.empty()) {
        ChainHead &th = targets[key];
        if (event.target_sequence() != th.size + 1) {
          fail(seq, "target " + key + " sequence " +
                        std::to_string(event.target_sequence()) + " where " +
                        std::to_string(th.size + 1) + " was expected");
          return r;
        }
        th.size++;
        th.chain = ChainNext(th.chain, leaf);
        auto &it = index_its[key];
        const std::string want = key + '\0' + Be64(th.size);
        if (!it) {
          it.reset(db_->NewIterator(ro, cfs_[kTargetIndex]));
          it->Seek(want);
        } else {
          it->Next();
        }
        std::string_view v = it->Valid() && it->key() == want
                                 ? std::string_view(it->value().data(), it->value().size())
                                 : std::string_view();
        if (v.size() != 72 || ReadBe64(v) != seq || ToDigest(v.substr(8)) != th.chain ||
            ToDigest(v.substr(40)) != leaf) {
          fail(seq, "target " + key + " chain index does not match");
          return r;
        }
      }
      tree.AddLeafHash(leaf);
      r.events_checked++;
    }
    MIGLEDGER_RETURN_IF_ERROR(FromRocks(ev->status(), "reading ledger"));
    if (r.events_checked != head_.size || chain != head_.chain) {
      fail(r.events_checked + 1 <= head_.size ? r.events_checked + 1
                                              : head_.size,
           "ledger head records " + std::to_string(head_.size) +
               " events but " + std::to_string(r.events_checked) +
               " verify (truncated or edited ledger)");
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
    r.digest.size = tree.size();
    r.digest.root = tree.Root();
    return r;
  }

  StatusOr<LedgerDigest> Digest(const std::string &target_key,
                                uint64_t size) override {
    LedgerDigest d;
    d.ledger_id = ledger_id_;
    d.target_key = target_key;
    MerkleTreeBuilder tree;
    if (target_key.empty()) {
      uint64_t limit = size ? size : head_.size;
      if (limit > head_.size) {
        return InvalidInput("the ledger has only " +
                            std::to_string(head_.size) + " events, not " +
                            std::to_string(limit));
      }
      std::unique_ptr<rocksdb::Iterator> hs(
          db_->NewIterator({}, cfs_[kHashes]));
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

private:
  // The cheap check on open: the last event's bytes hash to the stored leaf,
  // and the stored chain entry equals the head in meta.
  Status CheckTail() {
    std::unique_ptr<rocksdb::Iterator> ev(db_->NewIterator({}, cfs_[kEvents]));
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
    if (last == 0)
      return Status::Ok();
    std::string hashes;
    MIGLEDGER_RETURN_IF_ERROR(
        FromRocks(db_->Get({}, cfs_[kHashes], Be64(last), &hashes),
                  "reading tail hashes"));
    Digest32 leaf = MerkleLeafHash(
        std::string_view(ev->value().data(), ev->value().size()));
    if (hashes.size() != 64 || ToDigest(hashes) != leaf ||
        ToDigest(std::string_view(hashes).substr(32)) != head_.chain) {
      return LedgerCorrupt("ledger tail does not match its head at sequence " +
                           std::to_string(last) +
                           "; run `migledger audit verify`");
    }
    return Status::Ok();
  }

  rocksdb::DB *db_;
  std::vector<rocksdb::ColumnFamilyHandle *> cfs_;
  bool read_only_;
  std::string ledger_id_;
  ChainHead head_;
  std::map<std::string, ChainHead> target_heads_;
  // Guards head_ and target_heads_: one ledger may serve several targets'
  // appliers at once (fleet apply), each appending to its own target chain.
  mutable std::recursive_mutex mu_;
};

// RocksDB's own diagnostics are not written into the ledger directory: on a
// full disk, logging the write error would fail too (and Debian's build
// asserts on that). Errors reach the caller as Status instead.
class SilentLogger final : public rocksdb::Logger {
 public:
  using rocksdb::Logger::Logv;
  void Logv(const char*, va_list) override {}
};

rocksdb::Options LedgerDbOptions() {
  rocksdb::Options o;
  static std::shared_ptr<rocksdb::Logger> silent = std::make_shared<SilentLogger>();
  o.info_log = silent;
  // A ledger is small and written by one short-lived process: keep memory and
  // background work low so the tool starts fast and stays light.
  o.write_buffer_size = 4 << 20;
  o.max_write_buffer_number = 2;
  o.max_background_jobs = 2;
  o.keep_log_file_num = 2;
  o.max_manifest_file_size = 4 << 20;
  o.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  o.max_open_files = 256;
  // One thread: the default (16 per column family) spawns ~150 threads on
  // every open, which costs more than the file opening it parallelizes.
  o.max_file_opening_threads = 1;
  o.compression = rocksdb::kNoCompression;
  o.recycle_log_file_num = 0;
  // A writer's open does not turn the recovered log into a table file (a
  // write and an fsync on every apply); ~RocksLedger flushes when it grew.
  o.avoid_flush_during_recovery = true;
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = nullptr;
  t.no_block_cache = false;
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  return o;
}

} // namespace

StatusOr<std::unique_ptr<Ledger>> Ledger::Open(const std::string &dir,
                                               const LedgerOptions &options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    return IoError("cannot open ledger " + dir + ": not a directory");
  }
  bool exists = fs::exists(fs::path(dir) / "CURRENT", ec);
  if (!exists) {
    if (options.read_only || !options.create_if_missing) {
      return NotFound("no ledger at " + dir + " (run `migledger init` first)");
    }
    if (!fs::exists(dir, ec)) {
      // The ledger holds who ran what: private to its owner.
      if (!fs::create_directories(dir, ec) && ec) {
        return IoError("cannot create ledger directory " + dir + ": " +
                       ec.message());
      }
      ::chmod(dir.c_str(), 0700);
    }
  }
  rocksdb::DBOptions db_options(LedgerDbOptions());
  db_options.create_if_missing = !exists;
  db_options.create_missing_column_families = !options.read_only;
  rocksdb::ColumnFamilyOptions cf_options(LedgerDbOptions());
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const char *name : kCfNames)
    descriptors.emplace_back(name, cf_options);
  std::vector<rocksdb::ColumnFamilyHandle *> handles;
  rocksdb::DB *db = nullptr;
  rocksdb::Status s;
  if (exists) {
    // Refuse a ledger with column families this version does not know (a
    // newer format), for readers too: a read-only open would ignore them.
    std::vector<std::string> names;
    if (rocksdb::DB::ListColumnFamilies(db_options, dir, &names).ok()) {
      for (const auto &name : names) {
        if (std::find(std::begin(kCfNames), std::end(kCfNames), name) == std::end(kCfNames)) {
          return Unsupported("ledger " + dir + " was written by a newer migledger (unknown "
                             "column family \"" + name + "\"); upgrade migledger");
        }
      }
    }
  }
  auto deadline = std::chrono::steady_clock::now() + options.lock_timeout;
  for (;;) {
    if (options.read_only) {
      s = rocksdb::DB::OpenForReadOnly(db_options, dir, descriptors, &handles,
                                       &db);
    } else {
      s = rocksdb::DB::Open(db_options, dir, descriptors, &handles, &db);
    }
    bool locked =
        s.IsIOError() &&
        (s.ToString().find("lock") != std::string::npos ||
         s.ToString().find("Resource temporarily") != std::string::npos);
    if (!locked || std::chrono::steady_clock::now() >= deadline) {
      if (locked) {
        return LedgerBusy("the ledger " + dir +
                          " is in use by another migledger process");
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!s.ok()) {
    // RocksDB refuses a writer that does not open every column family in
    // the directory ("Column families not opened: x"): a newer format. A
    // reader asking for a family the directory lacks gets "Column family
    // not found": not (a complete) ledger.
    if (s.IsInvalidArgument() &&
        s.ToString().find("olumn families not opened") != std::string::npos) {
      return Unsupported("ledger " + dir +
                         " was written by a newer migledger (unknown column "
                         "families); upgrade migledger");
    }
    if (s.IsInvalidArgument() &&
        s.ToString().find("olumn family not found") != std::string::npos) {
      return LedgerCorrupt("ledger " + dir +
                           " is missing column families (not a migledger "
                           "ledger?): " +
                           s.ToString());
    }
    if (s.IsIOError() &&
        s.ToString().find("ermission denied") != std::string::npos) {
      return IoError("cannot open ledger " + dir + ": permission denied");
    }
    return FromRocks(s, "cannot open ledger " + dir);
  }
  auto ledger =
      std::make_unique<RocksLedger>(db, std::move(handles), options.read_only);
  MIGLEDGER_RETURN_IF_ERROR(ledger->Init(!exists));
  return std::unique_ptr<Ledger>(std::move(ledger));
}

} // namespace migledger
