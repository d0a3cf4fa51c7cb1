#include "applier/projection_cache.h"

#include <spdlog/spdlog.h>

namespace migledger {

StatusOr<const Projection*> ProjectionCache::View() {
  uint64_t head =
      ledger_ && driver_ ? ledger_->TargetHead(TargetKey()).size : 0;
  if (cache_ && head_ == head) return &*cache_;
  ProjectionBuilder b;
  uint64_t from = 0;
  if (ledger_ && driver_ && !driver_->identity().database_id.empty()) {
    // From the ledger's snapshot of the projection when it has one for
    // this chain, replaying only the events after it.
    if (auto restored = Restore(head)) {
      b = std::move(restored->first);
      from = restored->second;
    }
    MIGLEDGER_RETURN_IF_ERROR(
        ledger_->ScanTargetEvents(TargetKey(), from, [&](const v1::Event& e) {
          b.Add(e);
          return true;
        }));
  }
  cache_ = std::move(b).Take();
  head_ = head;
  from_ = from;
  if (ledger_ && !ledger_->read_only()) Save(ledger_.get());
  return &*cache_;
}

std::optional<std::pair<ProjectionBuilder, uint64_t>> ProjectionCache::Restore(
    uint64_t head) {
  auto bytes = ledger_->GetDerived(SnapshotName(TargetKey()));
  if (!bytes.ok() || !bytes->has_value()) return std::nullopt;
  SnapshotPoint at;
  auto b = ProjectionBuilder::Restore(**bytes, &at);
  if (!b || at.target_key != TargetKey() || at.target_size > head ||
      at.target_size == 0) {
    return std::nullopt;
  }
  auto chain = ledger_->TargetHeadAt(TargetKey(), at.target_size);
  if (!chain.ok() || AsBytes(chain->chain) != at.target_chain) {
    spdlog::debug("projection snapshot does not match the ledger; replaying");
    return std::nullopt;
  }
  return std::make_pair(std::move(*b), at.target_size);
}

void ProjectionCache::Save(Ledger* into) {
  if (!Unsaved()) return;
  const ChainHead th = ledger_->TargetHead(TargetKey());
  if (th.size != head_) return;
  SnapshotPoint at{TargetKey(), th.size, std::string(AsBytes(th.chain))};
  auto st =
      into->PutDerived(SnapshotName(TargetKey()), SnapshotOf(*cache_, at));
  if (!st.ok()) {
    spdlog::debug("projection snapshot not saved: {}", st.message());
    return;
  }
  from_ = head_;
}

}  // namespace migledger
