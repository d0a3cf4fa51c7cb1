// The applier's side of a target's event mirror (Driver::ReadMirror): the
// outbox of local events the mirror lacks, the verified read of the whole
// mirror against the local chain, the outcomes a run learns from it, and the
// push of new events to the central audit store. Internal to applier/.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "applier/config.h"
#include "applier/driver.h"
#include "applier/projection_cache.h"
#include "ledger/ledger.h"

namespace migledger {

// The mirror row of an event prepared for the ledger.
inline MirrorRow MirrorRowOf(const PreparedEvent& p) {
  return {p.target_sequence, p.bytes, std::string(AsBytes(p.leaf_hash)),
          std::string(AsBytes(p.target_chain_head))};
}

class TargetMirror {
 public:
  // `ledger` and `driver` are the owner's: they may be replaced or be null
  // and must outlive this. The methods below need both, unless they say.
  TargetMirror(const std::shared_ptr<Ledger>& ledger,
               const std::unique_ptr<Driver>& driver)
      : ledger_(ledger), driver_(driver) {}

  // The mirror's size as last read or written (its target sequence head).
  uint64_t head() const { return head_; }
  void set_head(uint64_t head) { head_ = head; }

  // ---- outbox
  // Adds an event just appended (or about to be) to the outbox when the
  // mirror lacks it and the outbox has been read.
  void Add(const PreparedEvent& p) {
    if (outbox_ && p.target_sequence > head_ && p.target_key == TargetKey()) {
      outbox_->push_back(MirrorRowOf(p));
    }
  }
  // The local events about this target that its mirror lacks (target
  // sequence > head()), in order. Read from the ledger once, then kept up
  // to date by Add(): a scan of the ledger per step cost more than the
  // step's own bookkeeping.
  StatusOr<std::vector<MirrorRow>> Outbox();
  // The ledger changed other than through Add(): read it again.
  void ForgetOutbox() { outbox_.reset(); }
  // Writes every local event the mirror lacks, in its own transaction.
  Status Flush();

  // ---- verified read
  // Reads the target's whole mirror and checks it together with the local
  // copy of the target's chain, one SHA-256 per event for both: contiguous
  // target sequences from 1; every local event hashes to its leaf and links
  // the target chain up to its head (an edited local event is found here,
  // wherever it is, before a write command touches the target); a mirror
  // row the local ledger also holds must equal it; newer rows must hash to
  // their leaf, link the chain and be about this target. A ledger or a
  // mirror that does not verify is kLedgerCorrupt (exit 6) naming the first
  // bad sequence; a mirror that verifies but forks from the local chain (two
  // histories) is kDrift (exit 4). The local events replayed on the way
  // refill `projection` (and check its saved snapshot). The ledger may be
  // null.
  StatusOr<std::vector<MirrorRow>> ReadVerified(ProjectionCache* projection);

  // Appends `rows` from index `from` (a verified read's rows the ledger
  // lacks) to the ledger, counting them in `*pulled`; unsynced. `open`: this
  // ledger's attempts without an outcome: one whose outcome is pulled is
  // noted as learned (see learned()) and erased.
  Status Pull(const std::vector<MirrorRow>& rows, uint64_t from,
              std::set<std::string>* open, int* pulled);

  // Before the mirror of a SQLite file is given the local events it lacks:
  // when the newest of them were recorded at another path, and the file
  // there holds a database of this very id, one file is a copy of the other
  // (`cp prod.db staging.db`) and those events are the other's history.
  // Returns kDrift saying so and what leads on; Ok otherwise (a file moved
  // or restored in place). `local_size`: the local chain's size (> 0).
  Status CheckNotACopy(uint64_t local_size);

  // ---- outcomes learned
  // One line per attempt of this ledger whose outcome event it pulled from
  // the target's mirror (RunReport::recovered).
  std::vector<std::string>& learned() { return learned_; }
  // A reader (status, apply's read-only first look) that learned outcomes
  // may not give a target sequence to an event (only the holder of the
  // target's lock may): it leaves them in the ledger for the next writer.
  Status SaveLearnedNotes();
  // Whether notes are waiting to be recorded, here or saved by a reader.
  StatusOr<bool> HasLearnedNotes();
  // The notes learned here and those saved by readers, moved out (the saved
  // ones stay saved until ForgetSavedNotes).
  StatusOr<std::vector<v1::OutcomeLearned>> TakeLearnedNotes();
  Status ForgetSavedNotes() { return ledger_->PutDerived(NotesName(), ""); }

  // ---- audit store
  // Sends the ledger's new events to the central audit store, when `config`
  // names one. A failure is a warning: the store's head is the outbox
  // pointer, so the next run sends what this one could not. Needs only the
  // ledger (may be null).
  void PushToAuditStore(const ProjectConfig& config);

  // ---- read mode
  // The size of the target's mirror as a read-only view read it when it
  // pulled nothing (NothingToApply need not ask the target again).
  std::optional<uint64_t> size_seen;
  // The mirror's head read on the thread that opened the target, used once.
  std::optional<uint64_t> prefetched_head;

 private:
  std::string TargetKey() const { return driver_->identity().Key(); }
  std::string NotesName() const { return "outcomes_learned:" + TargetKey(); }
  void NoteOutcomeLearned(const MirrorRow& r, std::set<std::string>* open);
  // The two halves of ReadVerified: the local chain (with the projection)
  // against the rows both hold, then the rows from `from` on alone.
  struct LocalCheck {
    size_t size = 0;             // local events checked
    Digest32 common_chain{};     // the chain after the last row both hold
    std::optional<size_t> fork;  // the first row that differs
  };
  StatusOr<LocalCheck> VerifyLocalChain(const std::vector<MirrorRow>& rows,
                                        ProjectionCache* projection);
  // The saved projection snapshot of this chain and where it stands, when
  // it is one of this target no longer than `head` events.
  StatusOr<std::optional<std::string>> SavedSnapshot(uint64_t head,
                                                     SnapshotPoint* at);
  Status VerifyNewRows(const std::vector<MirrorRow>& rows, size_t from,
                       Digest32 chain);

  const std::shared_ptr<Ledger>& ledger_;
  const std::unique_ptr<Driver>& driver_;
  std::optional<std::vector<MirrorRow>> outbox_;
  uint64_t head_ = 0;
  std::vector<std::string> learned_;
  // The same, as the OutcomeLearned events a writer records.
  std::vector<v1::OutcomeLearned> learned_events_;
};

}  // namespace migledger
