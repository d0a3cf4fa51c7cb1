// The projection of one target's chain in the ledger (planner.h), cached
// between commands as a snapshot in the ledger. Internal to applier/.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "applier/driver.h"
#include "applier/planner.h"
#include "ledger/ledger.h"

namespace migledger {

class ProjectionCache {
 public:
  // A projection that replayed this many events or more past its snapshot
  // is saved in the ledger (Ledger::PutDerived; at once by a writer, through
  // SaveUnsaved by a no-op apply's read-only view), so the next command, a
  // no-op `apply` or a `status` after a long history, replays only what came
  // after it.
  static constexpr uint64_t kSnapshotEvery = 256;

  // `ledger` and `driver` are the owner's: they may be replaced or be null
  // (no ledger yet, a target that does not exist) and must outlive this.
  ProjectionCache(const std::shared_ptr<Ledger>& ledger,
                  const std::unique_ptr<Driver>& driver)
      : ledger_(ledger), driver_(driver) {}

  // The meta key (Ledger::GetDerived) of the snapshot of `target_key`.
  static std::string SnapshotName(const std::string& target_key) {
    return "projection/" + target_key;
  }

  // The projection of this target's chain, rebuilt only when the chain
  // grew. The pointer stays valid until the next call after an append.
  StatusOr<const Projection*> View();
  // View() copied, for callers that append while they use it.
  StatusOr<Projection> Copy() {
    MIGLEDGER_ASSIGN_OR_RETURN(const Projection* p, View());
    return *p;
  }

  // Takes `projection`, built (and checked against the saved snapshot,
  // which stands at `snapshot_size`, 0 for none) from the `head` events of
  // the chain by a verifying reader of the whole chain.
  void Adopt(Projection projection, uint64_t head, uint64_t snapshot_size) {
    cache_ = std::move(projection);
    head_ = head;
    from_ = snapshot_size;
  }

  // True when the cache replayed kSnapshotEvery events or more past the
  // last snapshot: a snapshot would save the next command that replay.
  bool Unsaved() const { return cache_ && head_ - from_ >= kSnapshotEvery; }

  // Saves the cached projection into `into` (the owner's ledger, or a
  // writable open of it) when Unsaved(). Best effort: without a snapshot the
  // next command replays the history.
  void Save(Ledger* into);

 private:
  std::string TargetKey() const { return driver_->identity().Key(); }
  // The snapshot and the target size it stands at, when there is one for
  // this very chain (its head matches the ledger's at that size) and no
  // newer than the ledger; otherwise nullopt, and the history is replayed.
  std::optional<std::pair<ProjectionBuilder, uint64_t>> Restore(uint64_t head);

  const std::shared_ptr<Ledger>& ledger_;
  const std::unique_ptr<Driver>& driver_;
  std::optional<Projection> cache_;
  uint64_t head_ = 0;
  // The target size of the snapshot the cache was built on or last saved as
  // (0: none): how much of it a new snapshot would save replaying.
  uint64_t from_ = 0;
};

}  // namespace migledger
