#include "applier/target_mirror.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

#include "applier/applier_impl.h"
#include "applier/audit_store.h"
#include "common/crash_points.h"
#include "common/sha256.h"
#include "ledger/merkle.h"

namespace migledger {
namespace {

const char kRefuse[] = "; refusing to continue until an operator resolves it";

std::string MirrorAt(size_t i) {
  return "the target's event mirror at target sequence " +
         std::to_string(i + 1);
}

}  // namespace

StatusOr<std::vector<MirrorRow>> TargetMirror::Outbox() {
  if (!outbox_) {
    std::vector<MirrorRow> rows;
    MIGLEDGER_RETURN_IF_ERROR(ledger_->ScanTarget(
        TargetKey(), head_,
        [&](const LedgerEntry& e, const Digest32& leaf, const Digest32& chain) {
          rows.push_back({e.event.target_sequence(), e.bytes,
                          std::string(AsBytes(leaf)),
                          std::string(AsBytes(chain))});
          return true;
        }));
    outbox_ = std::move(rows);
  }
  auto mirrored = std::find_if(
      outbox_->begin(), outbox_->end(),
      [&](const MirrorRow& r) { return r.target_sequence > head_; });
  outbox_->erase(outbox_->begin(), mirrored);
  return *outbox_;
}

Status TargetMirror::Flush() {
  MIGLEDGER_ASSIGN_OR_RETURN(auto rows, Outbox());
  if (rows.empty()) return Status::Ok();
  MIGLEDGER_RETURN_IF_ERROR(driver_->Begin());
  auto st = driver_->InsertMirrorRows(rows);
  if (st.ok()) {
    CrashPoint("mirror.before_commit");
    st = driver_->Commit();
  }
  if (!st.ok()) {
    (void)driver_->Rollback();
    return st;
  }
  head_ = rows.back().target_sequence;
  CrashPoint("mirror.after_commit");
  return Status::Ok();
}

StatusOr<std::vector<MirrorRow>> TargetMirror::ReadVerified(
    ProjectionCache* projection) {
  MIGLEDGER_ASSIGN_OR_RETURN(auto rows, driver_->ReadMirror(0));
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].target_sequence != i + 1) {
      return LedgerCorrupt(MirrorAt(i) + " is missing (rows deleted?)" +
                           kRefuse);
    }
  }
  LocalCheck local;
  if (ledger_) {
    MIGLEDGER_ASSIGN_OR_RETURN(local, VerifyLocalChain(rows, projection));
  }
  // The rows the local ledger does not hold, or from where they differ:
  // each must verify on its own, as the continuation of the common chain.
  size_t from = local.fork ? *local.fork : std::min(local.size, rows.size());
  MIGLEDGER_RETURN_IF_ERROR(VerifyNewRows(rows, from, local.common_chain));
  if (local.fork) {
    return Drift(
        "the target's event mirror forks from the local ledger at target "
        "sequence " +
        std::to_string(*local.fork + 1) +
        ": this ledger holds events the target does not (a run "
        "interrupted before its first commit, or events the target lost "
        "when it was restored from an older backup) and another ledger has "
        "since continued the target's history; keep this ledger for the "
        "audit, move it aside and run again (a new ledger pulls the "
        "target's history)");
  }
  return rows;
}

StatusOr<std::optional<std::string>> TargetMirror::SavedSnapshot(
    uint64_t head, SnapshotPoint* at) {
  const std::string key = TargetKey();
  auto saved = ledger_->GetDerived(ProjectionCache::SnapshotName(key));
  MIGLEDGER_RETURN_IF_ERROR(saved.status());
  if (saved->has_value() && ProjectionBuilder::Restore(**saved, at) &&
      at->target_key == key && at->target_size > 0 && at->target_size <= head) {
    return std::move(*saved);
  }
  return std::optional<std::string>();
}

// One scan of the local chain does three checks, each event hashed once: the
// chain itself, the mirror rows that hold the same events, and the saved
// projection snapshot (which status and a no-op apply trust) against the
// projection rebuilt from the events where the snapshot stands. Kept as one
// function so the three share the scan's state.
StatusOr<TargetMirror::LocalCheck> TargetMirror::VerifyLocalChain(
    const std::vector<MirrorRow>& rows, ProjectionCache* projection) {
  const std::string key = TargetKey();
  const ChainHead head = ledger_->TargetHead(key);
  ProjectionBuilder builder;
  SnapshotPoint snapshot_at;
  MIGLEDGER_ASSIGN_OR_RETURN(std::optional<std::string> snapshot,
                             SavedSnapshot(head.size, &snapshot_at));
  LocalCheck out;
  size_t& i = out.size;
  Digest32 chain{};  // the local chain after event i
  bool snapshot_checked = false;
  Status bad;
  MIGLEDGER_RETURN_IF_ERROR(ledger_->ScanTarget(
      key, 0,
      [&](const LedgerEntry& e, const Digest32& leaf, const Digest32& c) {
        const std::string at =
            "the ledger does not verify: event " + std::to_string(e.sequence) +
            " (target sequence " + std::to_string(i + 1) + ")";
        if (e.event.target_sequence() != i + 1) {
          bad = LedgerCorrupt(at +
                              " is out of order in the target index"
                              "; run `migledger audit verify`");
          return false;
        }
        // Rows equal to the local event need no hash of their own.
        const bool same =
            i < rows.size() && !out.fork && rows[i].event_bytes == e.bytes;
        const Digest32 computed = MerkleLeafHash(e.bytes);
        if (computed != leaf) {
          bad = LedgerCorrupt(at +
                              " was edited (its bytes do not match its "
                              "hash); run `migledger audit verify`");
          return false;
        }
        chain = ExtendChain(chain, leaf);
        if (chain != c) {
          bad = LedgerCorrupt(at +
                              " breaks the target's hash chain; run "
                              "`migledger audit verify`");
          return false;
        }
        builder.Add(e.event);
        if (snapshot && i + 1 == snapshot_at.target_size &&
            AsBytes(chain) == snapshot_at.target_chain) {
          snapshot_checked = true;
          if (SnapshotOf(builder.projection(), snapshot_at) != *snapshot) {
            bad = LedgerCorrupt(
                "the ledger's projection snapshot of " + key +
                " (meta key derived/" + ProjectionCache::SnapshotName(key) +
                ", after target sequence " +
                std::to_string(snapshot_at.target_size) +
                ") does not match the events it summarises (edited?); "
                "delete the key (it is rebuilt from the events) after "
                "keeping a copy for the audit");
            return false;
          }
        }
        if (i < rows.size() && !out.fork) {
          const MirrorRow& r = rows[i];
          if (same) {
            if (r.leaf_hash != AsBytes(leaf)) {
              bad = LedgerCorrupt(MirrorAt(i) +
                                  " was edited (its hash does not match "
                                  "its bytes)" +
                                  kRefuse);
              return false;
            }
            if (r.chain_head != AsBytes(chain)) {
              bad = LedgerCorrupt(MirrorAt(i) + " breaks the hash chain" +
                                  kRefuse);
              return false;
            }
            out.common_chain = chain;
          } else {
            out.fork = i;
          }
        }
        ++i;
        return true;
      }));
  MIGLEDGER_RETURN_IF_ERROR(bad);
  if (i != head.size || chain != head.chain) {
    return LedgerCorrupt("the ledger does not verify: the head of target " +
                         key + " records " + std::to_string(head.size) +
                         " events but " + std::to_string(i) +
                         " link to it; run `migledger audit verify`");
  }
  // Saved again only when it lags by kSnapshotEvery events.
  projection->Adopt(std::move(builder).Take(), head.size,
                    snapshot_checked ? snapshot_at.target_size : 0);
  return out;
}

Status TargetMirror::VerifyNewRows(const std::vector<MirrorRow>& rows,
                                   size_t from, Digest32 chain) {
  const std::string key = TargetKey();
  for (size_t j = from; j < rows.size(); ++j) {
    const MirrorRow& r = rows[j];
    Digest32 leaf = MerkleLeafHash(r.event_bytes);
    if (r.leaf_hash != AsBytes(leaf)) {
      return LedgerCorrupt(MirrorAt(j) +
                           " was edited (its bytes do not match its hash)" +
                           kRefuse);
    }
    chain = ExtendChain(chain, leaf);
    if (r.chain_head != AsBytes(chain))
      return LedgerCorrupt(MirrorAt(j) + " breaks the hash chain" + kRefuse);
    v1::Event e;
    if (!e.ParseFromString(r.event_bytes) || e.target_sequence() != j + 1) {
      return LedgerCorrupt(
          MirrorAt(j) + " holds an event that is not this target's" + kRefuse);
    }
    const std::string other =
        migledger::TargetKey(e.target().kind(), e.target().database_id());
    if (other != key) {
      if (j == 0 && !e.target().database_id().empty()) {
        // A verified chain of another database: the database was copied
        // with its mirror (CREATE DATABASE ... TEMPLATE, a restored dump).
        // A history that verifies, not this target's: drift.
        return Drift(
            "the target's event mirror holds the history of another "
            "database (" +
            other + ", reached as " + e.target().redacted_uri() +
            "): this database is a copy of it (CREATE DATABASE ... "
            "TEMPLATE, a copied file or dump); give it an id and a history "
            "of its own with `migledger resolve --new-identity --reason "
            "TEXT`");
      }
      return LedgerCorrupt(
          MirrorAt(j) + " holds an event that is not this target's" + kRefuse);
    }
  }
  return Status::Ok();
}

Status TargetMirror::Pull(const std::vector<MirrorRow>& rows, uint64_t from,
                          std::set<std::string>* open, int* pulled) {
  for (uint64_t i = from; i < rows.size(); ++i) {
    const auto& r = rows[i];
    outbox_.reset();  // the ledger changed behind Add()
    MIGLEDGER_RETURN_IF_ERROR(
        ledger_->AppendMirrored(r.event_bytes, r.leaf_hash, r.chain_head));
    ++*pulled;
    if (!open->empty()) NoteOutcomeLearned(r, open);
  }
  return Status::Ok();
}

Status TargetMirror::CheckNotACopy(uint64_t local_size) {
  const TargetIdentity& id = driver_->identity();
  if (id.kind != "sqlite") return Status::Ok();
  std::string other;
  MIGLEDGER_RETURN_IF_ERROR(ledger_->ScanTargetEvents(
      TargetKey(), local_size - 1, [&](const v1::Event& e) {
        other = e.target().database_name();
        return false;
      }));
  std::error_code ec;
  if (other.empty() || other == id.database_name ||
      std::filesystem::equivalent(other, id.database_name, ec)) {
    return Status::Ok();
  }
  auto twin = OpenDriver("sqlite:" + other, /*create_if_missing=*/false);
  if (!twin.ok() || (*twin)->identity().database_id != id.database_id)
    return Status::Ok();
  return Drift("sqlite:" + id.database_name + " and sqlite:" + other +
               " are one database id (" + id.database_id +
               "): one file is a copy of the other, and this ledger's newer "
               "events are about sqlite:" +
               other +
               "; give the copy an id and a history of its own with "
               "`migledger resolve --new-identity --reason TEXT` (on the "
               "copy), or, if this file is that database restored and the "
               "other is stale, `migledger resolve --restored --reason "
               "TEXT`");
}

void TargetMirror::NoteOutcomeLearned(const MirrorRow& r,
                                      std::set<std::string>* open) {
  v1::Event e;
  if (!e.ParseFromString(r.event_bytes)) return;
  std::string version, attempt, what;
  v1::Direction direction = v1::DIRECTION_UP;
  switch (e.body_case()) {
    case v1::Event::kStepApplied:
      version = e.step_applied().version();
      attempt = e.step_applied().attempt_id();
      what = "committed (step_applied";
      break;
    case v1::Event::kStepReverted:
      version = e.step_reverted().version();
      attempt = e.step_reverted().attempt_id();
      what = "committed (step_reverted";
      direction = v1::DIRECTION_DOWN;
      break;
    default:
      return;
  }
  if (open->erase(attempt) == 0) return;
  std::string line = "version " + version + " (attempt " + attempt +
                     "): " + what + " at target sequence " +
                     std::to_string(r.target_sequence) +
                     " found in the target's event mirror, written in the "
                     "step's own transaction; its run never heard the "
                     "COMMIT's answer";
  spdlog::warn("outcome learned from the target: {}", line);
  v1::OutcomeLearned note;
  note.set_version(version);
  note.set_attempt_id(attempt);
  note.set_direction(direction);
  note.set_outcome_target_sequence(r.target_sequence);
  note.set_evidence(line);
  learned_events_.push_back(std::move(note));
  learned_.push_back(std::move(line));
}

Status TargetMirror::SaveLearnedNotes() {
  if (learned_events_.empty()) return Status::Ok();
  MIGLEDGER_ASSIGN_OR_RETURN(auto saved, ledger_->GetDerived(NotesName()));
  std::string notes = saved.value_or("");
  for (const auto& n : learned_events_) {
    const std::string bytes = n.SerializeAsString();
    notes +=
        ToHex(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()) +
        "\n";
  }
  return ledger_->PutDerived(NotesName(), notes);
}

StatusOr<bool> TargetMirror::HasLearnedNotes() {
  if (!learned_events_.empty()) return true;
  MIGLEDGER_ASSIGN_OR_RETURN(auto saved, ledger_->GetDerived(NotesName()));
  return saved.has_value() && !saved->empty();
}

StatusOr<std::vector<v1::OutcomeLearned>> TargetMirror::TakeLearnedNotes() {
  std::vector<v1::OutcomeLearned> notes = std::move(learned_events_);
  learned_events_.clear();
  MIGLEDGER_ASSIGN_OR_RETURN(auto saved, ledger_->GetDerived(NotesName()));
  if (saved) {
    size_t at = 0;
    while (at < saved->size()) {
      size_t end = saved->find('\n', at);
      if (end == std::string::npos) end = saved->size();
      std::string bytes;
      const std::string hex = saved->substr(at, end - at);
      for (size_t i = 0; i + 1 < hex.size(); i += 2)
        bytes.push_back(
            static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
      v1::OutcomeLearned n;
      if (!hex.empty() && n.ParseFromString(bytes)) notes.push_back(n);
      at = end + 1;
    }
  }
  return notes;
}

void TargetMirror::PushToAuditStore(const ProjectConfig& config) {
  std::string url =
      AuditStoreUrl(config.audit_store_url, config.audit_store_url_env);
  if (url.empty() || !ledger_ || ledger_->read_only()) return;
  auto store = AuditStore::Open(url);
  if (!store.ok()) {
    spdlog::warn("audit store not updated (will retry next run): {}",
                 store.status().message());
    return;
  }
  auto sent = (*store)->Push(ledger_.get());
  if (!sent.ok()) {
    spdlog::warn("audit store not updated (will retry next run): {}",
                 sent.status().message());
    return;
  }
  if (*sent > 0) spdlog::info("sent {} event(s) to the audit store", *sent);
}

// ---- Applier::Impl: catching up with the mirror --------------------------

Status Applier::Impl::SyncMirror() {
  MIGLEDGER_ASSIGN_OR_RETURN(auto rows, mirror.ReadVerified(&projection));
  ChainHead local = ledger->TargetHead(TargetKey());
  if (local.size > rows.size() &&
      options.resolving != ApplierOptions::Resolving::kRestored) {
    MIGLEDGER_RETURN_IF_ERROR(mirror.CheckNotACopy(local.size));
  }
  // This ledger's attempts without an outcome: one the mirror holds was
  // committed by a run that never heard its COMMIT's answer (the target
  // or the process died first).
  std::set<std::string> open;
  if (rows.size() > local.size) {
    MIGLEDGER_ASSIGN_OR_RETURN(const Projection* p, projection.View());
    for (const auto& a : p->open_attempts) open.insert(a.attempt_id);
  }
  MIGLEDGER_RETURN_IF_ERROR(mirror.Pull(rows, local.size, &open, &pulled));
  if (pulled > 0) {
    MIGLEDGER_RETURN_IF_ERROR(ledger->Sync());
    spdlog::info("caught up {} event(s) from the target's mirror", pulled);
  }
  mirror.set_head(rows.size());
  MIGLEDGER_RETURN_IF_ERROR(RecordOutcomesLearned());
  return mirror.Flush();
}

Status Applier::Impl::RecordOutcomesLearned() {
  MIGLEDGER_ASSIGN_OR_RETURN(std::vector<v1::OutcomeLearned> notes,
                             mirror.TakeLearnedNotes());
  if (notes.empty()) return Status::Ok();
  std::set<std::string> recorded;
  MIGLEDGER_RETURN_IF_ERROR(ledger->ScanTargetEvents(
      TargetKey(), notes.front().outcome_target_sequence(),
      [&](const v1::Event& e) {
        if (e.has_outcome_learned())
          recorded.insert(e.outcome_learned().attempt_id());
        return true;
      }));
  for (const auto& n : notes) {
    if (!recorded.insert(n.attempt_id()).second) continue;
    v1::Event e = NewEvent();
    *e.mutable_outcome_learned() = n;
    MIGLEDGER_RETURN_IF_ERROR(Record(&e, true).status());
  }
  return mirror.ForgetSavedNotes();
}

Status Applier::Impl::CatchUpForReading() {
  if (!target_has_schema || driver->identity().database_id.empty()) {
    return Status::Ok();
  }
  uint64_t remote = 0;
  if (mirror.prefetched_head) {
    remote = *mirror.prefetched_head;
    mirror.prefetched_head.reset();
  } else {
    MIGLEDGER_ASSIGN_OR_RETURN(remote, driver->MirrorHead());
  }
  uint64_t local = ledger ? ledger->TargetHead(TargetKey()).size : 0;
  if (remote <= local) {
    mirror.size_seen = remote;
    return Status::Ok();
  }
  // This ledger's attempts without an outcome (see SyncMirror).
  std::set<std::string> open;
  if (ledger) {
    MIGLEDGER_ASSIGN_OR_RETURN(const Projection* p, projection.View());
    for (const auto& a : p->open_attempts) open.insert(a.attempt_id);
  }
  LedgerOptions wo;
  wo.create_if_missing = true;
  wo.verify_new_events = true;
  ledger.reset();
  auto writable = Ledger::Open(options.config.ledger_dir, wo);
  if (!writable.ok()) {
    if (writable.status().code() != Code::kLedgerBusy) return writable.status();
    spdlog::warn(
        "the ledger is busy; showing its history without the target's newer "
        "events");
    LedgerOptions ro;
    ro.read_only = true;
    ro.verify_new_events = true;
    MIGLEDGER_ASSIGN_OR_RETURN(ledger,
                               Ledger::Open(options.config.ledger_dir, ro));
    return Status::Ok();
  }
  ledger = std::move(writable).value();
  MIGLEDGER_ASSIGN_OR_RETURN(auto rows, mirror.ReadVerified(&projection));
  MIGLEDGER_RETURN_IF_ERROR(
      mirror.Pull(rows, ledger->TargetHead(TargetKey()).size, &open, &pulled));
  spdlog::info("caught up {} event(s) from the target's mirror", pulled);
  MIGLEDGER_RETURN_IF_ERROR(mirror.SaveLearnedNotes());
  return ledger->Sync();
}

}  // namespace migledger
