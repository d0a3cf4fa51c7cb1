// RocksDB implementation of the ledger. Layout: ledger/FORMAT.md.
#include "ledger/ledger.h"

#include <fcntl.h>
#include <google/protobuf/arena.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/perf_level.h>
#include <rocksdb/slice.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <rocksdb/transaction_log.h>
#include <rocksdb/write_batch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <system_error>
#include <thread>

#include "common/crash_points.h"
#include "common/protobuf_wire.h"
#include "ledger/merkle.h"

namespace migledger {
namespace {

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
// The ledger head ("mhead") and each target's head ("n" ‖ target_key) are
// rewritten by every append: apart, each overwrite lands next to its own
// previous version, where the table's insert hint points.
const char kTableTags[kNumTables] = {'\0', 'e', 'h', 't', 'v',
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
  if (s.size() >= 32) std::memcpy(d.data(), s.data(), 32);
  return d;
}

std::string_view View(const rocksdb::Slice &s) {
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
int64_t MicrosOf(const v1::Event &e) {
  int64_t micros = 0;
  if (__builtin_mul_overflow(e.time().seconds(), int64_t{1000000}, &micros) ||
      __builtin_add_overflow(micros, int64_t{e.time().nanos() / 1000},
                             &micros)) {
    return e.time().seconds() < 0 ? INT64_MIN : INT64_MAX;
  }
  return micros;
}

}  // namespace

std::string TargetKey(std::string_view kind, std::string_view database_id) {
  std::string key;
  key.reserve(kind.size() + 1 + database_id.size());
  key.append(kind);
  key.push_back(':');
  key.append(database_id);
  return key;
}

std::string TargetKeyOf(const v1::Event &e) {
  if (!e.has_target() || e.target().database_id().empty()) return "";
  return TargetKey(e.target().kind(), e.target().database_id());
}

Digest32 ExtendChain(const Digest32 &chain, const Digest32 &leaf) {
  return Sha256(AsBytes(chain), AsBytes(leaf));
}

std::string EventVersion(const v1::Event &e) {
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
    case v1::Event::kOutcomeLearned:
      return e.outcome_learned().version();
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

namespace {

// The fields of `e` the ledger's indexes are keyed by.
void SetIndexFields(const v1::Event &e, PreparedEvent *p) {
  p->version = EventVersion(e);
  p->run_id = e.run_id();
  p->time_micros = MicrosOf(e);
  p->index_known = true;
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
  if (s.ok()) return Status::Ok();
  if (s.IsCorruption()) return LedgerCorrupt(what + ": " + s.ToString());
  if (s.IsNotFound()) return NotFound(what + ": " + s.ToString());
  return IoError(what + ": " + s.ToString());
}

std::string NewLedgerId() {
  std::random_device rd;
  std::string raw(16, '\0');
  for (auto &c : raw) c = static_cast<char>(rd());
  return ToHex(reinterpret_cast<const uint8_t *>(raw.data()), raw.size());
}

// ---- Verify's view of an event ---------------------------------------------
//
// Verify needs three envelope fields of every event. Parsing the bytes as an
// EventEnvelopeView costs more than hashing them (the body is copied into the
// unknown fields), so the usual encoding is read here by hand. The reader is
// exact only where it says so: for anything unusual (a field twice, a wire
// type a known field does not have, groups, non-ASCII text, a tag or size
// Protobuf may read differently) it answers kUnsure and the caller parses the
// bytes with Protobuf, which stays the judge of what "decodes" means.

struct EnvelopeFields {
  uint64_t target_sequence = 0;
  std::string_view kind;
  std::string_view database_id;
};

enum class WireRead { kOk, kUnsure };

bool IsAscii(std::string_view s) {
  // Eight bytes at a time: the envelope's text is read for every event.
  uint64_t high = 0;
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, s.data() + i, 8);
    high |= word;
  }
  if (i < s.size() && s.size() >= 8) {  // the last 8 bytes, overlapping
    uint64_t word;
    std::memcpy(&word, s.data() + s.size() - 8, 8);
    high |= word;
  } else {
    for (; i < s.size(); ++i) high |= static_cast<unsigned char>(s[i]);
  }
  return (high & 0x8080808080808080ull) == 0;
}

// A message every field of which Protobuf keeps as unknown (Timestamp's two
// varints read either way): only its structure needs checking.
bool WellFormedFields(std::string_view bytes) {
  ProtobufWireCursor c(bytes);
  uint32_t number, wire_type;
  while (!c.done()) {
    if (!c.Tag(&number, &wire_type) || !c.Skip(wire_type)) return false;
  }
  return true;
}

WireRead ReadTargetRef(std::string_view bytes, EnvelopeFields *out) {
  ProtobufWireCursor c(bytes);
  uint32_t seen = 0, number, wire_type;
  while (!c.done()) {
    if (!c.Tag(&number, &wire_type)) return WireRead::kUnsure;
    if (number < 1 || number > 5) {  // unknown to TargetRef
      if (!c.Skip(wire_type)) return WireRead::kUnsure;
      continue;
    }
    std::string_view s;
    if (wire_type != 2 || (seen >> number & 1) || !c.LengthDelimited(&s) ||
        !IsAscii(s)) {
      return WireRead::kUnsure;
    }
    seen |= 1u << number;
    if (number == 2) out->kind = s;
    if (number == 3) out->database_id = s;
  }
  return WireRead::kOk;
}

// What parsing `bytes` as an EventEnvelopeView would give, when kOk.
WireRead ReadEnvelope(std::string_view bytes, EnvelopeFields *out) {
  *out = EnvelopeFields{};
  ProtobufWireCursor c(bytes);
  uint32_t seen = 0, number, wire_type;
  while (!c.done()) {
    if (!c.Tag(&number, &wire_type)) return WireRead::kUnsure;
    switch (number) {
      case 1:  // target_sequence
        if (wire_type != 0 || (seen & 2) || !c.Varint(&out->target_sequence)) {
          return WireRead::kUnsure;
        }
        break;
      case 2:    // time
      case 3:    // run_id
      case 5: {  // target
        std::string_view s;
        if (wire_type != 2 || (seen >> number & 1) || !c.LengthDelimited(&s)) {
          return WireRead::kUnsure;
        }
        if (number == 2 && !WellFormedFields(s)) return WireRead::kUnsure;
        if (number == 3 && !IsAscii(s)) return WireRead::kUnsure;
        if (number == 5 && ReadTargetRef(s, out) != WireRead::kOk) {
          return WireRead::kUnsure;
        }
        break;
      }
      default:  // actor and the body: unknown fields of the view
        if (!c.Skip(wire_type)) return WireRead::kUnsure;
    }
    seen |= 1u << (number < 31 ? number : 31);
  }
  return WireRead::kOk;
}

// See ~RocksLedger.
constexpr uint64_t kMaxUnflushedBytes = 1 << 20;

// Meta keys of derived data (Ledger::PutDerived): "derived/<name>".
constexpr char kDerivedPrefix[] = "derived/";
// The ledger's own derived data: where the last full check ended.
constexpr char kVerifiedMarkKey[] = "derived/verified";

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

  ~RocksLedger() override {
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

  using Ledger::Verify;  // Verify() with the default options

  // The version index's key up to the target key. Format 2 leads with the
  // canonical version's length (BE16), so numeric order is key order and
  // an apply's inserts ascend like the other tables'; format 1 has none.
  std::string VersionIndexPrefix(const std::string &version) const {
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
  std::string RowKey(int table, std::string_view key) const {
    std::string k = tables_[table].prefix;
    k.append(key);
    return k;
  }
  void PutRow(rocksdb::WriteBatch *batch, int table, std::string_view key,
              const rocksdb::Slice &value) const {
    // Tag and key as two parts: no string built per key on the append path.
    const rocksdb::Slice parts[2] = {tables_[table].prefix,
                                     rocksdb::Slice(key.data(), key.size())};
    batch->Put(tables_[table].cf, rocksdb::SliceParts(parts, 2),
               rocksdb::SliceParts(&value, 1));
  }
  rocksdb::Status GetRow(int table, std::string_view key,
                         std::string *value) const {
    return db_->Get({}, tables_[table].cf, RowKey(table, key), value);
  }
  rocksdb::Iterator *NewTableIterator(const rocksdb::ReadOptions &ro,
                                      int table) const {
    return new TableIterator(db_, ro, tables_[table].cf, tables_[table].prefix);
  }

  // True when no table holds a single row (not even the format marker).
  StatusOr<bool> Empty() const {
    for (auto *cf : cfs_) {
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, cf));
      it->SeekToFirst();
      if (it->Valid()) return false;
      MIGLEDGER_RETURN_IF_ERROR(FromRocks(it->status(), "reading ledger"));
    }
    return true;
  }

  // `dir` names the ledger in messages; `new_ledger_id` as in LedgerOptions.
  Status Init(const std::string &dir, const std::string &new_ledger_id,
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
    MIGLEDGER_RETURN_IF_ERROR(FromRocks(GetRow(kMeta, "ledger_id", &ledger_id_),
                                        "reading ledger id"));
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

  const std::string &ledger_id() const override { return ledger_id_; }
  bool read_only() const override { return read_only_; }
  uint64_t VerifiedOnOpen() const override { return verified_on_open_; }

  StatusOr<PreparedEvent> Prepare(v1::Event *event) override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    return PrepareOn(event, TargetHead(TargetKeyOf(*event)));
  }

  StatusOr<PreparedEvent> PrepareAfter(v1::Event *event,
                                       const ChainHead &target_head) override {
    return PrepareOn(event, target_head);
  }

  // Prepare() with the target chain's head given: `th` is ignored for an
  // event about no target.
  StatusOr<PreparedEvent> PrepareOn(v1::Event *event, const ChainHead &th) {
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

  StatusOr<uint64_t> Append(const PreparedEvent &p, bool sync) override {
    return AppendAll({&p, 1}, sync);
  }

  StatusOr<uint64_t> AppendAll(std::span<const PreparedEvent> events,
                               bool sync) override {
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
  void AddToBatch(const PreparedEvent &p, const ChainHead &head,
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
               VersionIndexPrefix(p.version) + p.target_key + '\0' + seq_key,
               "");
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
    if (chain_head.size() != 32 ||
        ToDigest(chain_head) != p.target_chain_head) {
      return LedgerCorrupt("mirrored event does not extend the local chain" +
                           at);
    }
    MIGLEDGER_ASSIGN_OR_RETURN(uint64_t seq, Append(p, false));
    (void)seq;
    return Status::Ok();
  }

  Status PutDerived(const std::string &name,
                    const std::string &value) override {
    if (read_only_) return Internal("ledger opened read-only");
    return FromRocks(db_->Put({}, tables_[kMeta].cf,
                              RowKey(kMeta, kDerivedPrefix + name), value),
                     "writing derived data");
  }

  StatusOr<std::optional<std::string>> GetDerived(
      const std::string &name) override {
    std::string value;
    auto s = GetRow(kMeta, kDerivedPrefix + name, &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    MIGLEDGER_RETURN_IF_ERROR(FromRocks(s, "reading derived data"));
    return std::optional<std::string>(std::move(value));
  }

  StatusOr<ChainHead> TargetHeadAt(const std::string &target_key,
                                   uint64_t size) override {
    if (size == 0) return ChainHead{};
    std::string value;
    auto s = GetRow(kTargetIndex, target_key + '\0' + Be64(size), &value);
    if (s.IsNotFound()) {
      return NotFound("target " + target_key + " has fewer than " +
                      std::to_string(size) + " events");
    }
    MIGLEDGER_RETURN_IF_ERROR(FromRocks(s, "reading target index"));
    if (value.size() < 8 + 32) {
      return LedgerCorrupt("target index entry " + std::to_string(size) +
                           " of " + target_key + " is too short");
    }
    ChainHead head{size, {}};
    std::memcpy(head.chain.data(), value.data() + 8, 32);
    return head;
  }

  Status Sync() override {
    if (read_only_) return Status::Ok();
    return FromRocks(db_->FlushWAL(true), "syncing ledger");
  }

  StatusOr<std::string> PutBlob(const std::string &content) override {
    std::string key = Sha256Hex(content);
    std::string existing;
    auto s = GetRow(kBlobs, key, &existing);
    if (s.ok()) return key;  // deduplicated
    if (!s.IsNotFound()) return FromRocks(s, "reading blob");
    if (read_only_) return Internal("ledger opened read-only");
    MIGLEDGER_RETURN_IF_ERROR(FromRocks(
        db_->Put({}, tables_[kBlobs].cf, RowKey(kBlobs, key), content),
        "writing blob"));
    return key;
  }

  StatusOr<std::string> GetBlob(const std::string &sha256_hex) override {
    std::string content;
    auto s = GetRow(kBlobs, sha256_hex, &content);
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
    for (const auto &[k, v] : target_heads_) keys.push_back(k);
    return keys;
  }

  StatusOr<LedgerEntry> Get(uint64_t sequence) override {
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

  Status ScanBytes(
      uint64_t first, uint64_t last,
      const std::function<bool(uint64_t, std::string_view)> &fn) override {
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

  Status Scan(const ScanFilter &f,
              const std::function<bool(const LedgerEntry &)> &fn) override {
    auto matches = [&](const LedgerEntry &e) {
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
    };
    // Index scans collect sequences, then read events in ledger order.
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
      std::vector<uint64_t> seqs;
      std::unique_ptr<rocksdb::Iterator> it(NewTableIterator({}, index));
      for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
           it->Next()) {
        std::string_view k(it->key().data(), it->key().size());
        seqs.push_back(ReadBe64(k.substr(k.size() - 8)));
      }
      MIGLEDGER_RETURN_IF_ERROR(
          FromRocks(it->status(), "scanning ledger index"));
      std::sort(seqs.begin(), seqs.end());
      for (uint64_t seq : seqs) {
        MIGLEDGER_ASSIGN_OR_RETURN(LedgerEntry e, Get(seq));
        if (matches(e) && !fn(e)) break;
      }
      return Status::Ok();
    }
    if (f.since_micros || f.until_micros) {
      std::unique_ptr<rocksdb::Iterator> it(NewTableIterator({}, kTimeIndex));
      it->Seek(f.since_micros ? TimeKey(*f.since_micros, 0) : std::string());
      std::vector<uint64_t> seqs;
      const std::string end =
          f.until_micros ? TimeKey(*f.until_micros, 0) : std::string();
      for (; it->Valid(); it->Next()) {
        if (!end.empty() && it->key().compare(end) >= 0) break;
        seqs.push_back(ReadBe64(
            std::string_view(it->key().data(), it->key().size()).substr(8)));
      }
      MIGLEDGER_RETURN_IF_ERROR(FromRocks(it->status(), "scanning time index"));
      std::sort(seqs.begin(), seqs.end());
      for (uint64_t seq : seqs) {
        MIGLEDGER_ASSIGN_OR_RETURN(LedgerEntry e, Get(seq));
        if (matches(e) && !fn(e)) break;
      }
      return Status::Ok();
    }
    rocksdb::ReadOptions ro;
    ro.readahead_size = 2 << 20;
    std::unique_ptr<rocksdb::Iterator> it(NewTableIterator(ro, kEvents));
    LedgerEntry e;
    for (it->Seek(Be64(std::max<uint64_t>(f.min_sequence, 1))); it->Valid();
         it->Next()) {
      e.sequence =
          ReadBe64(std::string_view(it->key().data(), it->key().size()));
      if (f.max_sequence && e.sequence > f.max_sequence) break;
      e.bytes.assign(it->value().data(), it->value().size());
      if (!e.event.ParseFromString(e.bytes)) {
        return LedgerCorrupt("event " + std::to_string(e.sequence) +
                             " does not decode");
      }
      if (matches(e) && !fn(e)) break;
    }
    return FromRocks(it->status(), "scanning ledger");
  }

  Status ScanTarget(
      const std::string &key, uint64_t after,
      const std::function<bool(const LedgerEntry &, const Digest32 &,
                               const Digest32 &)> &fn) override {
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

  Status ScanTargetEvents(
      const std::string &key, uint64_t after,
      const std::function<bool(const v1::Event &)> &fn) override {
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
          auto *event =
              google::protobuf::Arena::CreateMessage<v1::Event>(&arena);
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

  // Walks the target index of `key` after target sequence `after`, handing
  // `fn` each event's ledger sequence, stored bytes and index value
  // (BE64(seq) || target chain || leaf); fn returns false to stop.
  template <typename Fn>
  Status WalkTarget(const std::string &key, uint64_t after, Fn &&fn) {
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
        return LedgerCorrupt("target index of " + key +
                             " names missing event " + std::to_string(seq));
      }
      if (v.size() != 72) {
        return LedgerCorrupt("target index entry of " + key + " is malformed");
      }
      MIGLEDGER_ASSIGN_OR_RETURN(bool more, fn(seq, ev->value(), v));
      if (!more) break;
    }
    return FromRocks(it->status(), "scanning target chain");
  }

  StatusOr<VerifyReport> Verify(const VerifyOptions &options) override {
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
  static void SetIndexKey(TargetRun *run, uint64_t tseq) {
    run->want.resize(run->key.size() + 9);
    run->want[run->key.size()] = '\0';
    for (int i = 7; i >= 0; --i) {
      run->want[run->key.size() + 1 + i] = static_cast<char>(tseq & 0xff);
      tseq >>= 8;
    }
  }

  // Checks sequences first..last (last = 0: to the end) into *r.
  void VerifyChunk(uint64_t first, uint64_t last, ChunkResult *r) {
    auto fail = [&](uint64_t seq, Check check, std::string what) {
      r->problem = Problem{seq, check, std::move(what)};
      r->next = seq;
    };
    NoPerfCounters no_perf_counters;
    rocksdb::ReadOptions ro;
    ro.fill_cache = false;  // one pass over everything: caching only evicts
    std::unique_ptr<rocksdb::Iterator> ev(NewTableIterator(ro, kEvents));
    std::unique_ptr<rocksdb::Iterator> hs(NewTableIterator(ro, kHashes));
    // Both iterators start where a pass from sequence 1 has them after
    // first - 1, so that a stray key between two sequences is seen as it
    // would be there.
    if (first == 1) {
      ev->SeekToFirst();
      hs->SeekToFirst();
    } else {
      const std::string prev = Be64(first - 1);
      ev->Seek(prev);
      hs->Seek(prev);
      if (!ev->Valid() || ev->key() != prev || !hs->Valid() ||
          hs->key() != prev || hs->value().size() != 64) {
        // Then a problem at or before first - 1 is found by the chunk
        // before, which is the one reported.
        if (!ev->status().ok()) {
          r->status = FromRocks(ev->status(), "reading ledger");
        } else {
          fail(first, Check::kEventMissing, "event missing");
        }
        return;
      }
      r->chain = ToDigest(View(hs->value()).substr(32));
      ev->Next();
      hs->Next();
    }
    std::vector<std::unique_ptr<rocksdb::Iterator>> index_its;
    size_t last_target = 0;
    EnvelopeFields env;
    v1::EventEnvelopeView view;  // for what ReadEnvelope leaves to Protobuf
    uint64_t expected = first;
    for (; ev->Valid(); ev->Next(), hs->Next(), ++expected) {
      if (last != 0 && expected > last) break;
      const std::string_view key = View(ev->key());
      const uint64_t seq = ReadBe64(key);
      if (key.size() != 8 || seq != expected) {
        fail(
            expected, Check::kEventMissing,
            "event missing (next stored event is " + std::to_string(seq) + ")");
        return;
      }
      if (!hs->Valid() || hs->key() != ev->key() || hs->value().size() != 64) {
        fail(seq, Check::kHashesMissing, "stored hashes missing");
        return;
      }
      const std::string_view bytes = View(ev->value());
      const std::string_view stored = View(hs->value());
      const Digest32 leaf = MerkleLeafHash(bytes);
      if (ToDigest(stored) != leaf) {
        fail(seq, Check::kLeaf,
             "event bytes do not match their leaf hash (edited or reordered)");
        return;
      }
      const Digest32 chain = ExtendChain(r->chain, leaf);
      if (ToDigest(stored.substr(32)) != chain) {
        fail(seq, Check::kChain, "ledger hash chain broken");
        return;
      }
      r->chain = chain;
      if (ReadEnvelope(bytes, &env) != WireRead::kOk) {
        if (!view.ParseFromArray(bytes.data(),
                                 static_cast<int>(bytes.size()))) {
          fail(seq, Check::kDecode, "event does not decode");
          return;
        }
        env.target_sequence = view.target_sequence();
        env.kind = view.target().kind();
        env.database_id = view.target().database_id();
      }
      if (!env.database_id.empty()) {
        auto is = [&](const TargetRun &t) {
          const std::string &k = t.key;
          return k.size() == env.kind.size() + 1 + env.database_id.size() &&
                 k.compare(0, env.kind.size(), env.kind) == 0 &&
                 k[env.kind.size()] == ':' &&
                 k.compare(env.kind.size() + 1, std::string::npos,
                           env.database_id) == 0;
        };
        if (last_target >= r->targets.size() || !is(r->targets[last_target])) {
          last_target = 0;
          while (last_target < r->targets.size() &&
                 !is(r->targets[last_target])) {
            ++last_target;
          }
        }
        if (last_target == r->targets.size()) {
          // The target's first event in the chunk: whether its target
          // sequence is right is known when the chunks are joined.
          TargetRun t;
          t.key = TargetKey(env.kind, env.database_id);
          t.want = t.key;
          t.first_sequence = seq;
          t.first_target_sequence = env.target_sequence;
          r->targets.push_back(std::move(t));
          index_its.emplace_back(NewTableIterator(ro, kTargetIndex));
          TargetRun &run = r->targets.back();
          rocksdb::Iterator *it = index_its.back().get();
          if (env.target_sequence == 0) {  // the join names what was expected
            fail(seq, Check::kTargetSequence, "");
            return;
          }
          run.size = env.target_sequence - 1;
          if (run.size == 0) {
            SetIndexKey(&run, 1);
            it->Seek(run.want);
          } else {
            // The chain so far is the stored one before this event.
            SetIndexKey(&run, run.size);
            it->Seek(run.want);
            if (!it->Valid() || View(it->key()) != run.want ||
                it->value().size() != 72) {
              fail(seq, Check::kTargetIndex,
                   "target " + run.key + " chain index does not match");
              return;
            }
            run.chain = ToDigest(View(it->value()).substr(8));
            it->Next();
          }
        } else {
          TargetRun &run = r->targets[last_target];
          if (env.target_sequence != run.size + 1) {
            fail(seq, Check::kTargetSequence,
                 "target " + run.key + " sequence " +
                     std::to_string(env.target_sequence) + " where " +
                     std::to_string(run.size + 1) + " was expected");
            return;
          }
          index_its[last_target]->Next();
        }
        TargetRun &run = r->targets[last_target];
        rocksdb::Iterator *it = index_its[last_target].get();
        run.size++;
        run.chain = ExtendChain(run.chain, leaf);
        SetIndexKey(&run, run.size);
        const std::string_view v = it->Valid() && View(it->key()) == run.want
                                       ? View(it->value())
                                       : std::string_view();
        if (v.size() != 72 || ReadBe64(v) != seq ||
            ToDigest(v.substr(8)) != run.chain ||
            ToDigest(v.substr(40)) != leaf) {
          fail(seq, Check::kTargetIndex,
               "target " + run.key + " chain index does not match");
          return;
        }
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
  StatusOr<VerifyReport> JoinChunks(const std::vector<ChunkResult> &chunks) {
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

  static std::string EncodeMark(const Mark &m) {
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

  static std::optional<Mark> DecodeMark(std::string_view v) {
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
  bool MarkStands(const Mark &m) {
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

  Status VerifySinceMark() {
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
          return corrupt(
              "sequence " + std::to_string(c.problem.sequence) + ": " +
              (c.problem.what.empty() ? "target sequence out of order"
                                      : c.problem.what));
        }
        MIGLEDGER_RETURN_IF_ERROR(c.status);
        if (c.next - 1 != head_.size) {
          return corrupt("the ledger head records " +
                         std::to_string(head_.size) + " events but " +
                         std::to_string(c.next - 1) + " are stored");
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
  void SaveMark() {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (read_only_ || !mark_ok_) return;
    const std::string value = EncodeMark(Mark{head_, target_heads_});
    if (value == mark_value_) return;
    (void)db_->Put({}, tables_[kMeta].cf, RowKey(kMeta, kVerifiedMarkKey),
                   value);
  }

  // The cheap check on open: the last event's bytes hash to the stored leaf,
  // and the stored chain entry equals the head in meta.
  Status CheckTail() {
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

// RocksDB's own diagnostics are not written into the ledger directory: on a
// full disk, logging the write error would fail too (and Debian's build
// asserts on that). Errors reach the caller as Status instead.
class SilentLogger final : public rocksdb::Logger {
 public:
  using rocksdb::Logger::Logv;
  void Logv(const char *, va_list) override {}
};

rocksdb::Options LedgerDbOptions(bool read_only) {
  rocksdb::Options o;
  static std::shared_ptr<rocksdb::Logger> silent =
      std::make_shared<SilentLogger>();
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
  // One append puts keys into several tables of the one column family; each
  // table's keys mostly ascend (sequence numbers, times). An insert hint per
  // table (its tag byte) lets the memtable insert next to that table's
  // previous key instead of searching the skip list from the top: measured,
  // a third of the memtable's cost per append.
  o.memtable_insert_with_hint_prefix_extractor.reset(
      rocksdb::NewFixedPrefixTransform(1));
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = nullptr;
  t.no_block_cache = false;
  if (read_only) {
    // Readers (the audit commands) mostly scan the whole ledger once.
    // Mapped table files let a block be read in place: no copy out of the
    // page cache, no allocation per block, no block cache to fill and evict
    // (measured: scanning the events, hashes and target index of a
    // million-event ledger takes ~40% less CPU). Block checksums are still
    // verified. Table files are never rewritten in place, so a mapping
    // cannot change under the reader.
    o.allow_mmap_reads = true;
    t.no_block_cache = true;
  }
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  return o;
}

}  // namespace

namespace {

// A new ledger: open with the default column family only, then create the
// others in one call. DB::Open's create_missing_column_families creates them
// one at a time and rewrites (and re-reads) the OPTIONS file after each: 9
// OPTIONS files and ~35 fsyncs, the bulk of a fresh runner's first apply.
// A crash in between leaves a ledger without some families, which the next
// open creates (create_missing_column_families) before Init() runs.
rocksdb::Status CreateWithColumnFamilies(
    const rocksdb::DBOptions &db_options,
    const rocksdb::ColumnFamilyOptions &cf_options, const std::string &dir,
    std::vector<rocksdb::ColumnFamilyHandle *> *handles, rocksdb::DB **db) {
  std::vector<rocksdb::ColumnFamilyDescriptor> just_default = {
      {rocksdb::kDefaultColumnFamilyName, cf_options}};
  std::vector<rocksdb::ColumnFamilyHandle *> opened;
  rocksdb::DB *raw = nullptr;
  rocksdb::Status s =
      rocksdb::DB::Open(db_options, dir, just_default, &opened, &raw);
  if (s.IsInvalidArgument() &&
      s.ToString().find("olumn families not opened") != std::string::npos) {
    // Another process created the ledger while this one waited for its
    // lock: open it like any existing ledger.
    std::vector<rocksdb::ColumnFamilyDescriptor> all;
    for (const char *name : kCfNames) all.emplace_back(name, cf_options);
    return rocksdb::DB::Open(db_options, dir, all, handles, db);
  }
  if (!s.ok()) return s;
  std::vector<std::string> names(std::begin(kCfNames) + 1, std::end(kCfNames));
  std::vector<rocksdb::ColumnFamilyHandle *> created;
  s = raw->CreateColumnFamilies(cf_options, names, &created);
  if (!s.ok()) {
    for (auto *h : created) raw->DestroyColumnFamilyHandle(h);
    raw->DestroyColumnFamilyHandle(opened[0]);
    delete raw;
    return s;
  }
  handles->clear();
  handles->push_back(opened[0]);
  handles->insert(handles->end(), created.begin(), created.end());
  *db = raw;
  return s;
}

}  // namespace

Status CheckLedgerDirectory(const std::string &dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();  // created private on demand
    return IoError("cannot open ledger " + dir + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode))
    return IoError("cannot open ledger " + dir + ": not a directory");
  const uid_t me = ::geteuid();
  if (st.st_uid != me) {
    return IoError("ledger directory " + dir + " is owned by uid " +
                   std::to_string(st.st_uid) + ", not by you (uid " +
                   std::to_string(me) +
                   "): run migledger as its owner, or chown it to yourself");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    return IoError(
        "ledger directory " + dir + " is writable by " +
        ((st.st_mode & S_IWOTH) != 0 ? "every user" : "its group") + " (mode " +
        mode + "), so another user could replace its files: chmod 700 " + dir);
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<Ledger>> Ledger::Open(const std::string &dir,
                                               const LedgerOptions &options) {
  namespace fs = std::filesystem;
  const std::string &id = options.new_ledger_id;
  if (!id.empty() &&
      (id.size() != 32 ||
       id.find_first_not_of("0123456789abcdef") != std::string::npos)) {
    return InvalidInput("a ledger id is 32 lowercase hex characters, not \"" +
                        id + "\"");
  }
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    return IoError("cannot open ledger " + dir + ": not a directory");
  }
  // A writer refuses a directory another user can change (as ssh refuses
  // such keys): they could move the log away or plant files in it.
  if (!options.read_only) {
    MIGLEDGER_RETURN_IF_ERROR(CheckLedgerDirectory(dir));
    if (::access(dir.c_str(), W_OK) != 0 && errno == EACCES) {
      return IoError("cannot open ledger " + dir +
                     ": permission denied (the directory is not writable)");
    }
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
    // Evidence that this is a creation: a ledger that a kill leaves without
    // its marker is then initialized by the next writer (Init). RocksDB
    // syncs the directory when it writes CURRENT, which makes this entry
    // durable first.
    const std::string creating = dir + "/" + kCreatingFile;
    int fd = ::open(creating.c_str(),
                    O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
      return IoError("cannot create ledger " + dir + ": " +
                     std::strerror(errno));
    }
    ::close(fd);
  }
  rocksdb::DBOptions db_options(LedgerDbOptions(options.read_only));
  db_options.create_if_missing = !exists;
  rocksdb::ColumnFamilyOptions cf_options(LedgerDbOptions(options.read_only));
  // Format 2 lives in the default column family; format 1 needs all of
  // kCfNames opened (RocksDB refuses a writer that leaves one out; a reader
  // lists the families first, see below).
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = {
      {rocksdb::kDefaultColumnFamilyName, cf_options}};
  const bool create_format_1 = !exists && options.create_format_1;
  std::vector<rocksdb::ColumnFamilyHandle *> handles;
  rocksdb::DB *db = nullptr;
  rocksdb::Status s;
  auto open_db = [&]() -> Status {
    auto deadline = std::chrono::steady_clock::now() + options.lock_timeout;
    for (;;) {
      if (options.read_only) {
        s = rocksdb::DB::OpenForReadOnly(db_options, dir, descriptors, &handles,
                                         &db);
      } else if (create_format_1) {
        s = CreateWithColumnFamilies(db_options, cf_options, dir, &handles,
                                     &db);
      } else {
        s = rocksdb::DB::Open(db_options, dir, descriptors, &handles, &db);
      }
      // Busy only when another process holds the lock (EAGAIN from fcntl,
      // or this process itself): a LOCK file that cannot be opened
      // ("Permission denied", a read-only file system) is not "in use".
      const std::string why = s.ToString();
      bool locked =
          s.IsIOError() &&
          (why.find("Resource temporarily") != std::string::npos ||
           why.find("lock hold by current process") != std::string::npos);
      if (!locked || std::chrono::steady_clock::now() >= deadline) {
        if (locked) {
          return LedgerBusy("the ledger " + dir +
                            " is in use by another migledger process");
        }
        return Status::Ok();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  };
  // Switches `descriptors` to the format-1 families when the directory has
  // them, keeps the default family alone when that is all there is, and
  // refuses any family it does not know (a newer format).
  auto choose_layout = [&]() -> Status {
    std::vector<std::string> names;
    rocksdb::Status ls =
        rocksdb::DB::ListColumnFamilies(db_options, dir, &names);
    // Unlistable: let the open itself report why (permissions...).
    if (!ls.ok()) return Status::Ok();
    for (const auto &name : names) {
      if (std::find(std::begin(kCfNames), std::end(kCfNames), name) ==
          std::end(kCfNames)) {
        return Unsupported("ledger " + dir +
                           " was written by a newer migledger (unknown "
                           "column family \"" +
                           name + "\"); upgrade migledger");
      }
    }
    if (names.size() == 1) return Status::Ok();  // format 2 after all
    descriptors.clear();
    for (const char *name : kCfNames)
      descriptors.emplace_back(name, cf_options);
    // A format-1 ledger torn while its families were created gets the rest.
    db_options.create_missing_column_families = !options.read_only;
    return Status::Ok();
  };
  if (exists && options.read_only) {
    // A reader opens only the families it names, so it looks first: a
    // format-1 ledger needs them all, an unknown one is a newer format.
    MIGLEDGER_RETURN_IF_ERROR(choose_layout());
  }
  MIGLEDGER_RETURN_IF_ERROR(open_db());
  if (!s.ok() && s.IsInvalidArgument() &&
      s.ToString().find("olumn families not opened") != std::string::npos) {
    // A writer learns it from RocksDB's refusal: no listing on every open.
    MIGLEDGER_RETURN_IF_ERROR(choose_layout());
    MIGLEDGER_RETURN_IF_ERROR(open_db());
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
  // An older migledger that opened a format-2 ledger for writing created the
  // format-1 families (empty) before it refused the missing marker: the
  // marker in the default family says which layout holds the tables.
  bool format_2 = handles.size() == 1;
  if (!format_2) {
    std::string marker;
    format_2 = db->Get({}, handles[0],
                       std::string(1, kTableTags[kMeta]) + "format", &marker)
                   .ok();
  }
  auto ledger = std::make_unique<RocksLedger>(db, std::move(handles),
                                              options.read_only, format_2);
  MIGLEDGER_RETURN_IF_ERROR(
      ledger->Init(dir, options.new_ledger_id, options.verify_new_events));
  return std::unique_ptr<Ledger>(std::move(ledger));
}

}  // namespace migledger
