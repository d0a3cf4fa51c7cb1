// The ledger: an append-only, tamper-evident log of migledger events in
// RocksDB. This header is the public API of ledger/, with digest.h (a
// checkpoint's text and the check against it) and merkle.h (RFC 6962);
// everything else in the folder is internal. The on-disk format is in
// ledger/FORMAT.md.
//
// Every event is stored as the exact bytes it was serialized to, and those
// bytes are what is hashed (RFC 6962 leaf hash). Two hash chains run in the
// same WriteBatch as each event: the ledger-wide chain and the chain of the
// event's target, so one database's history can be verified (and mirrored)
// on its own. Events are never rewritten or deleted.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/sha256.h"
#include "common/status.h"
#include "migledger/v1/event.pb.h"

namespace migledger {

// One stored event as read back.
struct LedgerEntry {
  uint64_t sequence = 0;  // ledger-wide, 1-based
  std::string bytes;      // the exact stored bytes
  v1::Event event;        // decoded from bytes
};

// An event serialized and hashed, ready to append. Produced by Prepare();
// the same bytes can be written to the target's mirror before they are
// appended locally (the terminal event of a transactional step is written in
// the step's own transaction).
struct PreparedEvent {
  std::string target_key;  // "" for events about no target
  uint64_t target_sequence = 0;
  std::string bytes;
  Digest32 leaf_hash{};
  Digest32 target_chain_head{};  // the target's chain after this event
  // What the ledger's indexes need from the event, taken by Prepare() so
  // Append() does not decode `bytes` again. When `index_known` is false
  // Append() decodes them from `bytes`.
  bool index_known = false;
  std::string version;  // of a step event, "" otherwise
  std::string run_id;
  int64_t time_micros = 0;
  // Contents stored as blobs (keyed by their SHA-256) in the same atomic
  // write as the event, e.g. the SQL text a StepStarted names. Not owned:
  // they must outlive Append().
  std::vector<std::string_view> blobs;
};

struct ChainHead {
  uint64_t size = 0;
  Digest32 chain{};  // all zero for an empty chain
};

// A checkpoint a person can save: RFC 6962 tree head of the whole ledger, or
// of one target's chain when target_key is set.
struct LedgerDigest {
  std::string ledger_id;
  std::string target_key;
  uint64_t size = 0;
  Digest32 root{};
};

struct VerifyReport {
  uint64_t events_checked = 0;
  // 0 when everything verified; else the first ledger sequence found bad.
  uint64_t first_bad_sequence = 0;
  std::string problem;  // human description of what failed, "" when ok
  LedgerDigest digest;  // of the whole ledger as it verified
  bool ok() const { return first_bad_sequence == 0 && problem.empty(); }
};

// Which events a scan returns; empty fields match everything.
struct ScanFilter {
  std::string target_key;
  std::string version;  // numeric match ("0042" == "42"); uses an index
  std::string run_id;
  std::optional<int64_t> since_micros;  // inclusive, event time
  std::optional<int64_t> until_micros;  // exclusive
  uint64_t min_sequence = 0;            // inclusive
  uint64_t max_sequence = 0;            // inclusive; 0 = no limit
};

// How Verify spreads its work; the report is the same for every setting.
// The ledger is checked in chunks of consecutive sequences, each on its own
// (every link of a chain is checked against the stored hash before it), and
// the chunks' results are joined in ledger order.
struct VerifyOptions {
  // Threads that check chunks; 0 = one per core.
  unsigned threads = 0;
  // Sequences per chunk, rounded up to a power of two so that each full
  // chunk is a perfect subtree of the ledger's Merkle tree; 0 = the default.
  uint64_t chunk_events = 0;
};

struct LedgerOptions {
  bool read_only = false;
  bool create_if_missing = false;
  // How long a writer waits for another process to release the ledger.
  std::chrono::milliseconds lock_timeout{0};
  // Tests only: a new ledger gets the format-1 layout (one column family per
  // table), so tests can prove that such ledgers still open and extend.
  bool create_format_1 = false;
  // The id a ledger created by this open gets, instead of a random one: for
  // a ledger that is a copy of another history (the audit store's, built by
  // `--store` readers), so its digests name that history. Ignored when the
  // ledger exists. REQUIRES: empty or 32 lowercase hex characters.
  std::string new_ledger_id;
  // Verify on open every event after the ledger's verified mark (FORMAT.md,
  // "Derived data"): each one's bytes re-hashed, both chains and the target
  // index re-linked, the heads compared; the mark itself must stand on the
  // stored chain, else the whole ledger is verified. A ledger that does not
  // verify fails the open with kLedgerCorrupt. A writer that verified moves
  // the mark to its head when it closes. For commands that decide from the
  // events (the applier); the audit commands read without it.
  bool verify_new_events = false;
};

// The version a step-like event is about (as the version index keys it),
// "" for other events.
std::string EventVersion(const v1::Event& event);

// The key of a target's chain (FORMAT.md): "<kind>:<database_id>".
std::string TargetKey(std::string_view kind, std::string_view database_id);
// TargetKey of the event's target; "" for an event about no target (one
// without a database id).
std::string TargetKeyOf(const v1::Event& event);

// The hash-chain rule (FORMAT.md, "Hashes"): the chain after an event whose
// leaf hash is `leaf` = SHA-256(chain || leaf); the empty chain is all zero.
Digest32 ExtendChain(const Digest32& chain, const Digest32& leaf);

// Whether the ledger directory `dir` is safe to use (a missing one is fine:
// it is created private): owned by this process's user and writable by
// nobody else (group or others), as ssh wants of its keys. kIo saying what
// to do otherwise. Ledger::Open refuses a writer such a directory (and one
// it cannot write to); readers may call it to warn.
Status CheckLedgerDirectory(const std::string& dir);

class Ledger {
 public:
  // Opens the ledger in `dir`. A writer takes RocksDB's lock; a second
  // writer waits up to lock_timeout and then returns kLedgerBusy. A reader
  // never waits. On open the tail is checked cheaply (last event's hashes
  // against the stored head): a torn or edited tail is kLedgerCorrupt.
  static StatusOr<std::unique_ptr<Ledger>> Open(const std::string& dir,
                                                const LedgerOptions& options);
  virtual ~Ledger() = default;

  virtual const std::string& ledger_id() const = 0;
  virtual bool read_only() const = 0;
  // With LedgerOptions::verify_new_events: how many events past the
  // verified mark the open verified (all of them when the mark was absent
  // or did not stand). A reader cannot move the mark, so a large number
  // tells the caller a writable open would save the next command that work.
  virtual uint64_t VerifiedOnOpen() const = 0;

  // Serializes `event` (after setting its target_sequence from the target
  // chain head when it has a target) and hashes it. Does not write.
  virtual StatusOr<PreparedEvent> Prepare(v1::Event* event) = 0;
  // Prepare() as the next event of its target's chain after `target_head`:
  // the head an event prepared but not appended yet will leave (appends
  // queued in order, applier/ledger_writer.h). `target_head` must be of the
  // event's own target; it is ignored for an event about no target.
  virtual StatusOr<PreparedEvent> PrepareAfter(
      v1::Event* event, const ChainHead& target_head) = 0;
  // Appends a prepared event in one atomic WriteBatch with its indexes and
  // both chain heads. REQUIRES: nothing was appended to its target since
  // Prepare(). With `sync` the WAL is fsynced before returning, which also
  // makes every earlier unsynced append durable.
  virtual StatusOr<uint64_t> Append(const PreparedEvent& prepared,
                                    bool sync) = 0;
  // Appends prepared events in order, all in one atomic WriteBatch (each as
  // Append() would; the chain heads written once). REQUIRES: each is the
  // next event of its target after those before it. Returns the sequence
  // of the last one (the ledger's size).
  virtual StatusOr<uint64_t> AppendAll(std::span<const PreparedEvent> events,
                                       bool sync) = 0;
  // Prepare + Append.
  virtual StatusOr<PreparedEvent> AppendEvent(v1::Event* event, bool sync) = 0;
  // Appends an event pulled from a target's mirror: decodes it, checks that
  // it is the next event of its target and that its hashes match
  // `leaf_hash` / `chain_head`. Returns kLedgerCorrupt otherwise.
  virtual Status AppendMirrored(const std::string& bytes,
                                const std::string& leaf_hash,
                                const std::string& chain_head) = 0;
  // Makes every append so far durable.
  virtual Status Sync() = 0;

  // Derived data kept next to the events under `name` (e.g. the applier's
  // projection of a target): never hashed, verified or mirrored, so whoever
  // reads it checks what it was derived from. PutDerived is unsynced and
  // fails on a read-only ledger; GetDerived returns nullopt for none.
  virtual Status PutDerived(const std::string& name,
                            const std::string& value) = 0;
  virtual StatusOr<std::optional<std::string>> GetDerived(
      const std::string& name) = 0;
  // The target's chain head after its first `size` events (size 0: the
  // empty chain); kNotFound when the target has fewer.
  virtual StatusOr<ChainHead> TargetHeadAt(const std::string& target_key,
                                           uint64_t size) = 0;

  // Content-addressed blobs (SQL text). Returns the hex SHA-256 key.
  virtual StatusOr<std::string> PutBlob(const std::string& content) = 0;
  virtual StatusOr<std::string> GetBlob(const std::string& sha256_hex) = 0;

  virtual ChainHead Head() const = 0;
  virtual ChainHead TargetHead(const std::string& target_key) const = 0;
  virtual std::vector<std::string> TargetKeys() const = 0;

  // Calls `fn` for every matching event in ledger order until it returns
  // false. Uses the run, target+version or time index when the filter
  // allows.
  virtual Status Scan(const ScanFilter& filter,
                      const std::function<bool(const LedgerEntry&)>& fn) = 0;
  // The target's events with target_sequence > after, in target order, with
  // the hashes the mirror stores.
  virtual Status ScanTarget(
      const std::string& target_key, uint64_t after,
      const std::function<bool(const LedgerEntry&, const Digest32& leaf,
                               const Digest32& chain)>& fn) = 0;
  // The same events, decoded only (no bytes, no hashes): for readers such as
  // the projection. Decodes into an arena, so it costs less per event; the
  // event is only valid during the call. Every event handed out was checked
  // first: its bytes hash to its leaf in the target index and the target
  // chain links from the index entry at `after`; a walk to the end also
  // ends at the target's head. Otherwise kLedgerCorrupt naming the event,
  // and `fn` has not seen it.
  virtual Status ScanTargetEvents(
      const std::string& target_key, uint64_t after,
      const std::function<bool(const v1::Event&)>& fn) = 0;
  virtual StatusOr<LedgerEntry> Get(uint64_t sequence) = 0;
  // Calls `fn` with the sequence and the exact stored bytes of every event
  // with first <= sequence <= last (last = 0: no upper bound), in ledger
  // order, until it returns false. Nothing is decoded or checked, and
  // `bytes` is only valid during the call: for exports that encode the bytes
  // themselves. May be called from several threads at once.
  virtual Status ScanBytes(
      uint64_t first, uint64_t last,
      const std::function<bool(uint64_t sequence, std::string_view bytes)>&
          fn) = 0;

  // Recomputes every hash, both chains and the Merkle tree from the stored
  // bytes and reports the first bad sequence.
  virtual StatusOr<VerifyReport> Verify(const VerifyOptions& options) = 0;
  StatusOr<VerifyReport> Verify() { return Verify(VerifyOptions{}); }
  // RFC 6962 tree head over the first `size` events (0 = all) of the whole
  // ledger, or of one target's chain when target_key is not empty.
  virtual StatusOr<LedgerDigest> Digest(const std::string& target_key,
                                        uint64_t size) = 0;
};

}  // namespace migledger
