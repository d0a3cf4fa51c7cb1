#include "applier/applier.h"

#include <spdlog/spdlog.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <future>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "applier/actor.h"
#include "applier/audit_store.h"
#include "applier/ledger_writer.h"
#include "applier/sql_splitter.h"
#include "common/crash_points.h"
#include "common/interrupt.h"
#include "common/sha256.h"
#include "common/time_util.h"
#include "ledger/merkle.h"

namespace migledger {
namespace fs = std::filesystem;

namespace {

// 96 random bits from the kernel (one getrandom() call; a
// std::random_device per id cost more than the rest of a step's bookkeeping).
std::string RandomId() {
  uint8_t raw[12];
  size_t got = 0;
  while (got < sizeof raw) {
    ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
    if (n > 0) {
      got += static_cast<size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      // No kernel entropy interface: fall back to the C++ library's.
      std::random_device rd;
      for (auto& b : raw) b = static_cast<uint8_t>(rd());
      break;
    }
  }
  return ToHex(raw, sizeof raw);
}

int64_t MonoMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

const char* DirName(v1::Direction d) {
  return d == v1::DIRECTION_DOWN ? "down" : "up";
}

// Splits a migration file and checks what can be checked before anything
// runs: the SQL splits (quotes, dollar quotes and comments are closed) and a
// transactional file does not control its own transaction. Errors name the
// file and line.
StatusOr<std::vector<SqlStatement>> CheckedStatements(const MigrationFile& f,
                                                      SqlDialect dialect) {
  auto statements = SplitMigrationFile(f.sql, dialect);
  if (!statements.ok()) {
    std::string msg = statements.status().message();
    std::string line;
    if (size_t at = msg.rfind("at line "); at != std::string::npos) {
      line = ":" + msg.substr(at + 8);
    }
    return InvalidInput(f.path + line + ": " + msg);
  }
  if (!f.no_transaction) {
    for (const auto& st : *statements) {
      if (IsTransactionControl(st.text)) {
        return InvalidInput(f.path + ":" + std::to_string(st.first_line) +
                            ": the migration controls its own transaction (" +
                            st.text.substr(0, 20) +
                            "); remove BEGIN/COMMIT (migledger wraps each "
                            "migration in a transaction) "
                            "or add `-- migledger:no-transaction` to run it "
                            "statement by statement");
      }
    }
  }
  return statements;
}

// The mirror row of an event prepared for the ledger.
MirrorRow MirrorRowOf(const PreparedEvent& p) {
  return {p.target_sequence, p.bytes, std::string(AsBytes(p.leaf_hash)),
          std::string(AsBytes(p.target_chain_head))};
}

}  // namespace

// The target as the helper thread of Applier::Open left it: opened and, for
// a read-only view, first read.
struct OpenedTarget {
  explicit OpenedTarget(StatusOr<std::unique_ptr<Driver>> opened)
      : driver(std::move(opened)) {}
  StatusOr<std::unique_ptr<Driver>> driver;
  std::optional<StatusOr<bool>> has_schema;
  std::optional<uint64_t> mirror_head;
  std::optional<std::vector<MarkerRow>> markers;
};

struct Applier::Impl {
  ApplierOptions options;
  AccessMode mode;
  std::string target_uri;
  std::string target_name;
  std::vector<Migration> migrations;
  std::shared_ptr<Ledger> ledger;  // shared by the targets of a fleet apply
  std::unique_ptr<Driver> driver;  // null: read mode and the target is absent
  bool target_has_schema = false;
  std::string run_id = RandomId();
  v1::Actor actor = CurrentActor();
  uint64_t mirror_head = 0;
  // Read mode: the size of the target's mirror as CatchUpForReading read it
  // when it pulled nothing (NothingToApply need not ask the target again).
  std::optional<uint64_t> mirror_size_seen;
  // Read mode: the first look at the target, taken on the helper thread that
  // opened it (the mirror's head, then the markers: the order the main path
  // reads them in), each used once.
  std::optional<uint64_t> prefetched_mirror_head;
  std::optional<std::vector<MarkerRow>> prefetched_markers;
  int pulled = 0;
  std::string attempt_started_at;  // RFC 3339 time of the running step's
                                   // StepStarted

  // ---- events ------------------------------------------------------------
  v1::Event NewEvent() {
    v1::Event e;
    int64_t now = NowMicros();
    e.mutable_time()->set_seconds(now / 1000000);
    e.mutable_time()->set_nanos(static_cast<int32_t>(now % 1000000) * 1000);
    e.set_run_id(run_id);
    *e.mutable_actor() = actor;
    const TargetIdentity& id = driver->identity();
    auto* t = e.mutable_target();
    t->set_name(target_name);
    t->set_kind(id.kind);
    t->set_database_id(id.database_id);
    t->set_database_name(id.database_name);
    t->set_redacted_uri(id.redacted_uri);
    return e;
  }

  std::string TargetKey() const { return driver->identity().Key(); }
  // The SQL dialect of the target, also when it could not be opened.
  SqlDialect Dialect() const {
    return target_uri.rfind("sqlite:", 0) == 0 ? SqlDialect::kSqlite
                                               : SqlDialect::kPostgres;
  }

  // Appends locally; the mirror is brought up to date by FlushMirror().
  // `blob`, if given, is stored in the same write (the SQL the event names).
  // Waits for the queued appends (DrainQueue) first, so the ledger's order
  // is the order events were recorded in.
  StatusOr<PreparedEvent> Record(v1::Event* e, bool sync,
                                 const std::string* blob = nullptr) {
    MIGLEDGER_RETURN_IF_ERROR(DrainQueue());
    MIGLEDGER_ASSIGN_OR_RETURN(PreparedEvent p, ledger->Prepare(e));
    if (blob) p.blobs.push_back(*blob);
    MIGLEDGER_RETURN_IF_ERROR(ledger->Append(p, sync).status());
    p.blobs.clear();
    AddToOutbox(p);
    return p;
  }

  void AddToOutbox(const PreparedEvent& p) {
    if (outbox && p.target_sequence > mirror_head &&
        p.target_key == TargetKey()) {
      outbox->push_back(MirrorRowOf(p));
    }
  }

  // ---- queued appends (applier/ledger_writer.h) --------------------------
  // While a plan runs, a transactional step's StepStarted and outcome are
  // appended on a helper thread as the step's SQL runs; `queued_head` is
  // this target's chain head after the last queued event (the base of the
  // next Prepare) while the queue may hold events.
  std::unique_ptr<LedgerWriter> writer;
  std::optional<ChainHead> queued_head;

  StatusOr<PreparedEvent> PrepareNext(v1::Event* e) {
    return queued_head ? ledger->PrepareAfter(e, *queued_head)
                       : ledger->Prepare(e);
  }

  // Appends `p` (prepared by PrepareNext) after everything queued before it,
  // unsynced; without a writer, at once.
  ::migledger::Status Enqueue(PreparedEvent p) {
    if (!writer) return ledger->Append(p, false).status();
    queued_head = ChainHead{p.target_sequence, p.target_chain_head};
    writer->Enqueue(std::move(p));
    return ::migledger::Status::Ok();
  }

  ::migledger::Status DrainQueue() {
    if (!writer) return ::migledger::Status::Ok();
    queued_head.reset();
    return writer->Drain();
  }

  // ---- mirror ------------------------------------------------------------
  // The local events about this target that its mirror lacks (target
  // sequence > mirror_head), in order. Read from the ledger once, then kept
  // up to date by Record(): a scan of the ledger per step cost more than the
  // step's own bookkeeping.
  std::optional<std::vector<MirrorRow>> outbox;

  StatusOr<std::vector<MirrorRow>> Outbox() {
    if (!outbox) {
      std::vector<MirrorRow> rows;
      MIGLEDGER_RETURN_IF_ERROR(ledger->ScanTarget(
          TargetKey(), mirror_head,
          [&](const LedgerEntry& e, const Digest32& leaf,
              const Digest32& chain) {
            rows.push_back({e.event.target_sequence(), e.bytes,
                            std::string(AsBytes(leaf)),
                            std::string(AsBytes(chain))});
            return true;
          }));
      outbox = std::move(rows);
    }
    auto mirrored = std::find_if(
        outbox->begin(), outbox->end(),
        [&](const MirrorRow& r) { return r.target_sequence > mirror_head; });
    outbox->erase(outbox->begin(), mirrored);
    return *outbox;
  }

  // Writes every local event the mirror lacks, in its own transaction.
  ::migledger::Status FlushMirror() {
    MIGLEDGER_ASSIGN_OR_RETURN(auto rows, Outbox());
    if (rows.empty()) return ::migledger::Status::Ok();
    MIGLEDGER_RETURN_IF_ERROR(driver->Begin());
    auto st = driver->InsertMirrorRows(rows);
    if (st.ok()) {
      CrashPoint("mirror.before_commit");
      st = driver->Commit();
    }
    if (!st.ok()) {
      (void)driver->Rollback();
      return st;
    }
    mirror_head = rows.back().target_sequence;
    CrashPoint("mirror.after_commit");
    return ::migledger::Status::Ok();
  }

  // Reads the target's whole mirror and checks it together with the local
  // copy of the target's chain, one SHA-256 per event for both: contiguous
  // target sequences from 1; every local event hashes to its leaf and links
  // the target chain up to its head (an edited local event is found here,
  // wherever it is, before a write command touches the target); a mirror
  // row the local ledger also holds must equal it; newer rows must hash to
  // their leaf, link the chain and be about this target. A ledger or a
  // mirror that does not verify is kLedgerCorrupt (exit 6) naming the first
  // bad sequence; a mirror that verifies but forks from the local chain (two
  // histories) is kDrift (exit 4).
  StatusOr<std::vector<MirrorRow>> ReadVerifiedMirror() {
    const std::string key = TargetKey();
    MIGLEDGER_ASSIGN_OR_RETURN(auto rows, driver->ReadMirror(0));
    const std::string refuse =
        "; refusing to continue until an operator resolves it";
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i].target_sequence != i + 1) {
        return LedgerCorrupt("the target's event mirror at target sequence " +
                             std::to_string(i + 1) +
                             " is missing (rows deleted?)" + refuse);
      }
    }
    const auto mirror_at = [](size_t i) {
      return "the target's event mirror at target sequence " +
             std::to_string(i + 1);
    };
    size_t i = 0;
    Digest32 chain{};            // the local chain after event i
    Digest32 common_chain{};     // ... after the last row both hold
    std::optional<size_t> fork;  // the first row that differs
    ::migledger::Status bad;
    if (ledger) {
      const ChainHead head = ledger->TargetHead(key);
      // The events are decoded here anyway: the projection is built from
      // them, and the saved snapshot (which status and a no-op apply trust)
      // is compared with it where it stands.
      ProjectionBuilder projection;
      std::optional<std::string> snapshot;
      SnapshotPoint snapshot_at;
      {
        auto saved = ledger->GetDerived(ProjectionSnapshotName());
        MIGLEDGER_RETURN_IF_ERROR(saved.status());
        if (saved->has_value() &&
            ProjectionBuilder::Restore(**saved, &snapshot_at) &&
            snapshot_at.target_key == key && snapshot_at.target_size > 0 &&
            snapshot_at.target_size <= head.size) {
          snapshot = std::move(**saved);
        }
      }
      bool snapshot_checked = false;
      MIGLEDGER_RETURN_IF_ERROR(ledger->ScanTarget(
          key, 0,
          [&](const LedgerEntry& e, const Digest32& leaf, const Digest32& c) {
            const std::string at = "the ledger does not verify: event " +
                                   std::to_string(e.sequence) +
                                   " (target sequence " +
                                   std::to_string(i + 1) + ")";
            if (e.event.target_sequence() != i + 1) {
              bad = LedgerCorrupt(at +
                                  " is out of order in the target index"
                                  "; run `migledger audit verify`");
              return false;
            }
            // Rows equal to the local event need no hash of their own.
            const bool same =
                i < rows.size() && !fork && rows[i].event_bytes == e.bytes;
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
            projection.Add(e.event);
            if (snapshot && i + 1 == snapshot_at.target_size &&
                AsBytes(chain) == snapshot_at.target_chain) {
              snapshot_checked = true;
              if (SnapshotOf(projection.projection(), snapshot_at) !=
                  *snapshot) {
                bad = LedgerCorrupt(
                    "the ledger's projection snapshot of " + key +
                    " (meta key derived/" + ProjectionSnapshotName() +
                    ", after target sequence " +
                    std::to_string(snapshot_at.target_size) +
                    ") does not match the events it summarises (edited?); "
                    "delete the key (it is rebuilt from the events) after "
                    "keeping a copy for the audit");
                return false;
              }
            }
            if (i < rows.size() && !fork) {
              const MirrorRow& r = rows[i];
              if (same) {
                if (r.leaf_hash != AsBytes(leaf)) {
                  bad = LedgerCorrupt(mirror_at(i) +
                                      " was edited (its hash does not match "
                                      "its bytes)" +
                                      refuse);
                  return false;
                }
                if (r.chain_head != AsBytes(chain)) {
                  bad = LedgerCorrupt(mirror_at(i) + " breaks the hash chain" +
                                      refuse);
                  return false;
                }
                common_chain = chain;
              } else {
                fork = i;
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
      projection_cache = std::move(projection).Take();
      projection_cache_head = head.size;
      // Saved again only when it lags by kProjectionSnapshotEvery events.
      projection_cache_from = snapshot_checked ? snapshot_at.target_size : 0;
    }
    // The rows the local ledger does not hold, or from where they differ:
    // each must verify on its own, as the continuation of the common chain.
    size_t from = fork ? *fork : std::min<size_t>(i, rows.size());
    chain = common_chain;
    for (size_t j = from; j < rows.size(); ++j) {
      const MirrorRow& r = rows[j];
      Digest32 leaf = MerkleLeafHash(r.event_bytes);
      if (r.leaf_hash != AsBytes(leaf)) {
        return LedgerCorrupt(mirror_at(j) +
                             " was edited (its bytes do not match its hash)" +
                             refuse);
      }
      chain = ExtendChain(chain, leaf);
      if (r.chain_head != AsBytes(chain))
        return LedgerCorrupt(mirror_at(j) + " breaks the hash chain" + refuse);
      v1::Event e;
      if (!e.ParseFromString(r.event_bytes) || e.target_sequence() != j + 1) {
        return LedgerCorrupt(mirror_at(j) +
                             " holds an event that is not this target's" +
                             refuse);
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
        return LedgerCorrupt(mirror_at(j) +
                             " holds an event that is not this target's" +
                             refuse);
      }
    }
    if (fork) {
      return Drift(
          "the target's event mirror forks from the local ledger at target "
          "sequence " +
          std::to_string(*fork + 1) +
          ": this ledger holds events the target does not (a run "
          "interrupted before its first commit, or events the target lost "
          "when it was restored from an older backup) and another ledger has "
          "since continued the target's history; keep this ledger for the "
          "audit, move it aside and run again (a new ledger pulls the "
          "target's history)");
    }
    return rows;
  }

  // Catches the local ledger up with the target's mirror, or pushes what the
  // mirror lacks (the outbox). A mirror that does not verify or that forks
  // from the local chain is drift: refuse, never silently pick a side.
  ::migledger::Status SyncMirror() {
    MIGLEDGER_ASSIGN_OR_RETURN(auto rows, ReadVerifiedMirror());
    ChainHead local = ledger->TargetHead(TargetKey());
    if (local.size > rows.size() &&
        options.resolving != ApplierOptions::Resolving::kRestored) {
      MIGLEDGER_RETURN_IF_ERROR(CheckNotACopy(local.size));
    }
    // This ledger's attempts without an outcome: one the mirror holds was
    // committed by a run that never heard its COMMIT's answer (the target
    // or the process died first).
    std::set<std::string> open;
    if (rows.size() > local.size) {
      MIGLEDGER_ASSIGN_OR_RETURN(const Projection* p, ProjectView());
      for (const auto& a : p->open_attempts) open.insert(a.attempt_id);
    }
    for (uint64_t i = local.size; i < rows.size(); ++i) {
      const auto& r = rows[i];
      outbox.reset();  // the ledger changed behind Record()
      MIGLEDGER_RETURN_IF_ERROR(
          ledger->AppendMirrored(r.event_bytes, r.leaf_hash, r.chain_head));
      ++pulled;
      if (!open.empty()) NoteOutcomeLearned(r, &open);
    }
    if (pulled > 0) {
      MIGLEDGER_RETURN_IF_ERROR(ledger->Sync());
      spdlog::info("caught up {} event(s) from the target's mirror", pulled);
    }
    mirror_head = rows.size();
    MIGLEDGER_RETURN_IF_ERROR(RecordOutcomesLearned());
    return FlushMirror();
  }

  // Before the mirror of a SQLite file is given the local events it lacks:
  // when the newest of them were recorded at another path, and the file
  // there holds a database of this very id, one file is a copy of the other
  // (`cp prod.db staging.db`) and those events are the other's history.
  // Returns kDrift saying so and what leads on; Ok otherwise (a file moved
  // or restored in place). `local_size`: the local chain's size (> 0).
  ::migledger::Status CheckNotACopy(uint64_t local_size) {
    const TargetIdentity& id = driver->identity();
    if (id.kind != "sqlite") return ::migledger::Status::Ok();
    std::string other;
    MIGLEDGER_RETURN_IF_ERROR(ledger->ScanTargetEvents(
        TargetKey(), local_size - 1, [&](const v1::Event& e) {
          other = e.target().database_name();
          return false;
        }));
    std::error_code ec;
    if (other.empty() || other == id.database_name ||
        fs::equivalent(other, id.database_name, ec)) {
      return ::migledger::Status::Ok();
    }
    auto twin = OpenDriver("sqlite:" + other, /*create_if_missing=*/false);
    if (!twin.ok() || (*twin)->identity().database_id != id.database_id)
      return ::migledger::Status::Ok();
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

  // One line per attempt of this ledger whose outcome event it pulled from
  // the target's mirror (RunReport::recovered).
  std::vector<std::string> learned;
  // The same, as the OutcomeLearned events a writer records (see
  // RecordOutcomesLearned).
  std::vector<v1::OutcomeLearned> learned_events;

  void NoteOutcomeLearned(const MirrorRow& r, std::set<std::string>* open) {
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
    learned_events.push_back(std::move(note));
    learned.push_back(std::move(line));
  }

  // A reader (status, apply's read-only first look) that learned outcomes
  // may not give a target sequence to an event (only the holder of the
  // target's lock may): it leaves them here for the next writer.
  std::string LearnedNotesName() { return "outcomes_learned:" + TargetKey(); }

  ::migledger::Status SaveLearnedNotes() {
    if (learned_events.empty()) return ::migledger::Status::Ok();
    MIGLEDGER_ASSIGN_OR_RETURN(auto saved,
                               ledger->GetDerived(LearnedNotesName()));
    std::string notes = saved.value_or("");
    for (const auto& n : learned_events) {
      const std::string bytes = n.SerializeAsString();
      notes +=
          ToHex(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()) +
          "\n";
    }
    return ledger->PutDerived(LearnedNotesName(), notes);
  }

  StatusOr<bool> HasLearnedNotes() {
    if (!learned_events.empty()) return true;
    MIGLEDGER_ASSIGN_OR_RETURN(auto saved,
                               ledger->GetDerived(LearnedNotesName()));
    return saved.has_value() && !saved->empty();
  }

  // Writer, target lock held and mirror in sync: one OutcomeLearned event per
  // outcome this run (or an earlier reader) learned from the mirror, unless
  // one is already recorded for that attempt (a crash between recording and
  // forgetting the notes).
  ::migledger::Status RecordOutcomesLearned() {
    std::vector<v1::OutcomeLearned> notes = std::move(learned_events);
    learned_events.clear();
    MIGLEDGER_ASSIGN_OR_RETURN(auto saved,
                               ledger->GetDerived(LearnedNotesName()));
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
    if (notes.empty()) return ::migledger::Status::Ok();
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
    return ledger->PutDerived(LearnedNotesName(), "");
  }

  // Read mode: when the target's mirror holds events the local ledger lacks
  // (a fresh runner, another operator's runs), pull them in under the
  // ledger's write lock. If another process holds the ledger, show the local
  // history and say so.
  ::migledger::Status CatchUpForReading() {
    if (!target_has_schema || driver->identity().database_id.empty()) {
      return ::migledger::Status::Ok();
    }
    uint64_t remote = 0;
    if (prefetched_mirror_head) {
      remote = *prefetched_mirror_head;
      prefetched_mirror_head.reset();
    } else {
      MIGLEDGER_ASSIGN_OR_RETURN(remote, driver->MirrorHead());
    }
    uint64_t local = ledger ? ledger->TargetHead(TargetKey()).size : 0;
    if (remote <= local) {
      mirror_size_seen = remote;
      return ::migledger::Status::Ok();
    }
    // This ledger's attempts without an outcome (see SyncMirror).
    std::set<std::string> open;
    if (ledger) {
      MIGLEDGER_ASSIGN_OR_RETURN(const Projection* p, ProjectView());
      for (const auto& a : p->open_attempts) open.insert(a.attempt_id);
    }
    LedgerOptions wo;
    wo.create_if_missing = true;
    wo.verify_new_events = true;
    ledger.reset();
    auto writer = Ledger::Open(options.config.ledger_dir, wo);
    if (!writer.ok()) {
      if (writer.status().code() != Code::kLedgerBusy) return writer.status();
      spdlog::warn(
          "the ledger is busy; showing its history without the target's newer "
          "events");
      LedgerOptions ro;
      ro.read_only = true;
      ro.verify_new_events = true;
      MIGLEDGER_ASSIGN_OR_RETURN(ledger,
                                 Ledger::Open(options.config.ledger_dir, ro));
      return ::migledger::Status::Ok();
    }
    ledger = std::move(writer).value();
    MIGLEDGER_ASSIGN_OR_RETURN(auto rows, ReadVerifiedMirror());
    for (uint64_t i = ledger->TargetHead(TargetKey()).size; i < rows.size();
         ++i) {
      const auto& r = rows[i];
      outbox.reset();  // the ledger changed behind Record()
      MIGLEDGER_RETURN_IF_ERROR(
          ledger->AppendMirrored(r.event_bytes, r.leaf_hash, r.chain_head));
      ++pulled;
      if (!open.empty()) NoteOutcomeLearned(r, &open);
    }
    spdlog::info("caught up {} event(s) from the target's mirror", pulled);
    MIGLEDGER_RETURN_IF_ERROR(SaveLearnedNotes());
    return ledger->Sync();
  }

  // Sends this ledger's new events to the central audit store, when one is
  // configured. A failure is a warning: the store's head is the outbox
  // pointer, so the next run sends what this one could not.
  void PushToAuditStore() {
    std::string url = AuditStoreUrl(options.config.audit_store_url,
                                    options.config.audit_store_url_env);
    if (url.empty() || !ledger || ledger->read_only()) return;
    auto store = AuditStore::Open(url);
    if (!store.ok()) {
      spdlog::warn("audit store not updated (will retry next run): {}",
                   store.status().message());
      return;
    }
    auto sent = (*store)->Push(ledger.get());
    if (!sent.ok()) {
      spdlog::warn("audit store not updated (will retry next run): {}",
                   sent.status().message());
      return;
    }
    if (*sent > 0) spdlog::info("sent {} event(s) to the audit store", *sent);
  }

  // ---- projection ----------------------------------------------------------
  // The projection of this target's chain, rebuilt only when the chain grew.
  StatusOr<Projection> Project() {
    MIGLEDGER_ASSIGN_OR_RETURN(const Projection* p, ProjectView());
    return *p;
  }
  // Project() without the copy, for readers that append nothing while they
  // use it (the next append-then-Project replaces what it points to).
  StatusOr<const Projection*> ProjectView() {
    uint64_t head = ledger && driver ? ledger->TargetHead(TargetKey()).size : 0;
    if (projection_cache && projection_cache_head == head)
      return &*projection_cache;
    ProjectionBuilder b;
    uint64_t from = 0;
    if (ledger && driver && !driver->identity().database_id.empty()) {
      // From the ledger's snapshot of the projection when it has one for
      // this chain, replaying only the events after it.
      if (auto restored = RestoreProjection(head)) {
        b = std::move(restored->first);
        from = restored->second;
      }
      MIGLEDGER_RETURN_IF_ERROR(
          ledger->ScanTargetEvents(TargetKey(), from, [&](const v1::Event& e) {
            b.Add(e);
            return true;
          }));
    }
    projection_cache = std::move(b).Take();
    projection_cache_head = head;
    projection_cache_from = from;
    if (ledger && !ledger->read_only()) SaveProjection(ledger.get());
    return &*projection_cache;
  }
  std::optional<Projection> projection_cache;
  uint64_t projection_cache_head = 0;
  // The target size of the snapshot the cache was built on or last saved as
  // (0: none): how much of it a new snapshot would save replaying.
  uint64_t projection_cache_from = 0;

  // ---- projection snapshots ------------------------------------------------
  // A projection that replayed this many events or more past its snapshot
  // is saved in the ledger (Ledger::PutDerived; at once by a writer, through
  // SaveUnsavedProjection by a no-op apply's read-only view), so the next
  // command, a no-op `apply` or a `status` after a long history, replays
  // only what came after it.
  static constexpr uint64_t kProjectionSnapshotEvery = 256;

  std::string ProjectionSnapshotName() { return "projection/" + TargetKey(); }

  // The snapshot and the target size it stands at, when there is one for
  // this very chain (its head matches the ledger's at that size) and no
  // newer than the ledger; otherwise nullopt, and the history is replayed.
  std::optional<std::pair<ProjectionBuilder, uint64_t>> RestoreProjection(
      uint64_t head) {
    auto bytes = ledger->GetDerived(ProjectionSnapshotName());
    if (!bytes.ok() || !bytes->has_value()) return std::nullopt;
    SnapshotPoint at;
    auto b = ProjectionBuilder::Restore(**bytes, &at);
    if (!b || at.target_key != TargetKey() || at.target_size > head ||
        at.target_size == 0) {
      return std::nullopt;
    }
    auto chain = ledger->TargetHeadAt(TargetKey(), at.target_size);
    if (!chain.ok() || AsBytes(chain->chain) != at.target_chain) {
      spdlog::debug("projection snapshot does not match the ledger; replaying");
      return std::nullopt;
    }
    return std::make_pair(std::move(*b), at.target_size);
  }

  // Saves the cached projection into `into` (this applier's ledger, or a
  // writable open of it) when it replayed kProjectionSnapshotEvery events
  // or more past the last snapshot. Best effort: without a snapshot the
  // next command replays the history.
  void SaveProjection(Ledger* into) {
    if (!projection_cache || projection_cache_head - projection_cache_from <
                                 kProjectionSnapshotEvery) {
      return;
    }
    const ChainHead th = ledger->TargetHead(TargetKey());
    if (th.size != projection_cache_head) return;
    SnapshotPoint at{TargetKey(), th.size, std::string(AsBytes(th.chain))};
    auto st = into->PutDerived(ProjectionSnapshotName(),
                               SnapshotOf(*projection_cache, at));
    if (!st.ok()) {
      spdlog::debug("projection snapshot not saved: {}", st.message());
      return;
    }
    projection_cache_from = projection_cache_head;
  }

  // A run this long (about twice as many events) replays its own events at
  // its end to leave a snapshot: the next command would replay them anyway,
  // and one replay of a few thousand events is small next to the run. A
  // shorter run leaves that to the next writer that replays them.
  static constexpr size_t kSnapshotAfterSteps = 2048;

  // The up steps to `to`, refused when one would run out of order (unless
  // the options allow it). RunPlan checks their files.
  StatusOr<std::vector<StepPlan>> PlanUpInOrder(const std::string& to) {
    MIGLEDGER_ASSIGN_OR_RETURN(auto markers, Markers());
    MIGLEDGER_ASSIGN_OR_RETURN(auto plan, PlanUp(migrations, markers, to));
    if (!options.allow_out_of_order) {
      MIGLEDGER_RETURN_IF_ERROR(CheckPlanInOrder(plan, markers));
    }
    return plan;
  }

  StatusOr<std::vector<MarkerRow>> Markers() {
    if (!driver || !target_has_schema) return std::vector<MarkerRow>{};
    if (prefetched_markers) {
      std::vector<MarkerRow> rows = std::move(*prefetched_markers);
      prefetched_markers.reset();
      return rows;
    }
    return driver->ReadMarkers();
  }

  const Migration* FindMigration(const std::string& version) {
    for (const auto& m : migrations) {
      if (CompareVersions(m.version, version) == 0) return &m;
    }
    return nullptr;
  }

  // ---- reconciliation -------------------------------------------------------
  ::migledger::Status Reconcile(RunReport* report) {
    MIGLEDGER_ASSIGN_OR_RETURN(Projection p, Project());
    if (p.open_attempts.empty()) return ::migledger::Status::Ok();
    MIGLEDGER_ASSIGN_OR_RETURN(auto markers, Markers());
    std::map<std::string, const MarkerRow*> by_version;
    for (const auto& m : markers) by_version[CanonicalVersion(m.version)] = &m;
    for (const auto& a : p.open_attempts) {
      auto it = by_version.find(CanonicalVersion(a.version));
      bool marker = it != by_version.end();
      v1::Event e = NewEvent();
      auto* r = e.mutable_step_recovered();
      r->set_version(a.version);
      r->set_attempt_id(a.attempt_id);
      r->set_direction(a.direction);
      bool up = a.direction != v1::DIRECTION_DOWN;
      if (marker == up) {
        r->set_outcome(v1::RECOVERED_COMMITTED);
        r->set_evidence(up ? "marker row present (attempt " +
                                 it->second->attempt_id + ", " +
                                 it->second->applied_at + ")"
                           : "marker row absent: the down step committed");
      } else if (a.tx_mode == v1::TX_MODE_NO_TRANSACTION) {
        auto prog = p.no_tx_progress.find(CanonicalVersion(a.version));
        int done = prog == p.no_tx_progress.end()
                       ? 0
                       : static_cast<int>(prog->second.statement_hashes.size());
        r->set_outcome(v1::RECOVERED_RESUMED);
        r->set_resume_at_statement(done);
        std::string evidence =
            "no marker row; " + std::to_string(done) + " of " +
            std::to_string(a.statement_count) +
            " statements acknowledged; will resume at statement " +
            std::to_string(done + 1);
        MIGLEDGER_ASSIGN_OR_RETURN(auto invalid, driver->InvalidIndexes());
        for (const auto& idx : invalid)
          evidence += "; invalid index " + idx + " found";
        r->set_evidence(evidence);
      } else {
        r->set_outcome(v1::RECOVERED_ROLLED_BACK);
        r->set_evidence(
            up ? "no marker row: the transaction never committed"
               : "marker row still present: the down step never committed");
      }
      report->recovered.push_back("version " + a.version + " (" +
                                  DirName(a.direction) + ", attempt " +
                                  a.attempt_id + "): " + r->evidence());
      spdlog::warn("recovered unfinished step {}: {}", a.version,
                   r->evidence());
      MIGLEDGER_RETURN_IF_ERROR(Record(&e, false).status());
    }
    MIGLEDGER_RETURN_IF_ERROR(ledger->Sync());
    return FlushMirror();
  }

  ::migledger::Status RecordOutOfBand(const std::vector<OutOfBandStep>& oob,
                                      RunReport* report) {
    for (const auto& s : oob) {
      v1::Event e = NewEvent();
      auto* o = e.mutable_applied_out_of_band();
      o->set_version(s.version);
      o->set_checksum(s.checksum);
      o->set_evidence(s.evidence);
      MIGLEDGER_RETURN_IF_ERROR(Record(&e, false).status());
      report->out_of_band.push_back(s.version);
      spdlog::info("version {} was applied out of band: {}", s.version,
                   s.evidence);
    }
    if (!oob.empty()) {
      MIGLEDGER_RETURN_IF_ERROR(ledger->Sync());
      MIGLEDGER_RETURN_IF_ERROR(FlushMirror());
    }
    return ::migledger::Status::Ok();
  }

  // Reconcile + out-of-band + drift check; the common start of every
  // command that changes the target.
  ::migledger::Status Prepare(RunReport* report) {
    MIGLEDGER_RETURN_IF_ERROR(Reconcile(report));
    MIGLEDGER_ASSIGN_OR_RETURN(Projection p, Project());
    MIGLEDGER_ASSIGN_OR_RETURN(auto markers, Markers());
    std::vector<DriftItem> drift;
    std::vector<OutOfBandStep> oob;
    CheckTarget(migrations, p, markers, &drift, &oob);
    MIGLEDGER_RETURN_IF_ERROR(RecordOutOfBand(oob, report));
    if (!drift.empty()) {
      for (const auto& d : drift) {
        v1::Event e = NewEvent();
        auto* dd = e.mutable_drift_detected();
        dd->set_version(d.version);
        dd->set_kind(d.kind);
        dd->set_details(d.details);
        MIGLEDGER_RETURN_IF_ERROR(Record(&e, false).status());
      }
      MIGLEDGER_RETURN_IF_ERROR(ledger->Sync());
      (void)FlushMirror();
      return DriftRefusal(drift);
    }
    return ::migledger::Status::Ok();
  }

  // The error apply stops with on `drift` (not empty).
  static ::migledger::Status DriftRefusal(const std::vector<DriftItem>& drift) {
    return Drift(DriftMessage(drift));
  }

  // The drift Prepare() would find, without writing anything: the
  // unfinished steps are taken as Reconcile() would record them (a marker
  // row present means an up step committed, absent a down step), so an
  // interrupted step is not mistaken for an unknown marker row.
  ::migledger::Status CheckDriftReadOnly() {
    MIGLEDGER_ASSIGN_OR_RETURN(const Projection* view, ProjectView());
    MIGLEDGER_ASSIGN_OR_RETURN(auto markers, Markers());
    std::optional<Projection> reconciled;
    if (!view->open_attempts.empty()) {
      reconciled = *view;
      std::set<std::string> marked;
      for (const auto& m : markers) marked.insert(CanonicalVersion(m.version));
      for (const auto& a : view->open_attempts) {
        const bool up = a.direction != v1::DIRECTION_DOWN;
        if (marked.count(CanonicalVersion(a.version)) != up) continue;
        VersionHistory& h = reconciled->versions[CanonicalVersion(a.version)];
        h.version = a.version;
        h.applied = up;
        if (up) h.checksum = a.checksum;
        h.last_error.clear();
      }
      view = &*reconciled;
    }
    std::vector<DriftItem> drift;
    std::vector<OutOfBandStep> oob;
    CheckTarget(migrations, *view, markers, &drift, &oob);
    if (!drift.empty()) return DriftRefusal(drift);
    return ::migledger::Status::Ok();
  }

  // ---- running steps
  // ----------------------------------------------------------

  // A migration file's path as events record it: relative to the project
  // directory, so a shared history does not carry each runner's layout.
  std::string ProjectRelative(const std::string& path) const {
    const std::string& root = options.config.root;
    if (root.empty()) return path;
    std::filesystem::path rel =
        std::filesystem::path(path).lexically_relative(root);
    return rel.empty() ? path : rel.generic_string();
  }

  struct StepOutcome {
    ::migledger::Status status;
    int64_t duration = 0;
  };

  // The error a statement that refuses to run inside a transaction block
  // gives: PostgreSQL's active_sql_transaction (CREATE INDEX CONCURRENTLY,
  // VACUUM, CREATE DATABASE...), SQLite's "cannot VACUUM from within a
  // transaction" and the like.
  static bool MustRunOutsideATransaction(const SqlError& err) {
    if (err.sqlstate == "25001") return true;
    return err.sqlstate.empty() &&
           err.message.find("from within a transaction") != std::string::npos;
  }

  static int LineOf(const SqlStatement& s, int position) {
    if (position < 0) return s.first_line;
    return s.first_line + LineOfOffset(s.text, static_cast<size_t>(position)) -
           1;
  }

  // Set when a step's outcome became unknown (UnknownOutcome): the run then
  // records nothing more about this target.
  bool outcome_unknown = false;

  // A step lost the target while its outcome was in flight: a COMMIT (with
  // the step's marker row and mirror rows) or a no-transaction statement
  // whose answer never arrived, or a mirror write of its progress. The
  // target may hold the result, and with it mirror rows at target sequences
  // this ledger has not appended: so nothing that claims a result is
  // recorded (no StepFailed, and no RunFinished, which would take one of
  // those sequences). The next run pulls what the mirror holds and
  // reconciles from the marker row (DESIGN.md "Unknown outcomes"). Any
  // other error is returned as it is.
  ::migledger::Status UnknownOutcome(const Migration& m, v1::Direction dir,
                                     const ::migledger::Status& st) {
    if (st.code() != Code::kTargetUnavailable) return st;
    outcome_unknown = true;
    return TargetUnavailable(
        "the outcome of migration " + m.version + " " + DirName(dir) +
        " is unknown: " + st.message() +
        "; it may have committed, so nothing was recorded as its result: the "
        "next `migledger apply` (or `recover`) learns it from the target's "
        "marker row and event mirror");
  }

  ::migledger::Status Fail(const Migration& m, const MigrationFile& f,
                           v1::Direction dir, const std::string& attempt,
                           int stmt_index, const SqlStatement* stmt,
                           const SqlError& err, const ::migledger::Status& st,
                           bool rolled_back, int64_t duration) {
    v1::Event e = NewEvent();
    auto* sf = e.mutable_step_failed();
    sf->set_version(m.version);
    sf->set_attempt_id(attempt);
    sf->set_direction(dir);
    sf->set_sqlstate(err.sqlstate);
    sf->set_native_code(err.native_code);
    sf->set_message(err.message.empty() ? st.message() : err.message);
    sf->set_detail(err.detail);
    sf->set_hint(err.hint);
    sf->set_statement_index(stmt_index);
    int line = stmt ? LineOf(*stmt, err.position) : 0;
    sf->set_file_line(line);
    sf->set_file(ProjectRelative(f.path));
    sf->set_rolled_back(rolled_back);
    sf->set_duration_micros(duration);
    MIGLEDGER_RETURN_IF_ERROR(Record(&e, true).status());
    auto flushed = FlushMirror();
    if (!flushed.ok())
      spdlog::warn("event mirror not updated: {}", flushed.message());
    // Without a statement the failure is not the file's (BEGIN, COMMIT,
    // migledger's own rows): no line to name.
    std::string msg =
        "migration " + m.version + " " + DirName(dir) + " failed " +
        (stmt ? "at " + f.path + ":" + std::to_string(line) + " (statement " +
                    std::to_string(stmt_index + 1) + ")"
              : "(" + f.path + ")") +
        ": " + sf->message();
    if (!err.sqlstate.empty()) msg += " [SQLSTATE " + err.sqlstate + "]";
    if (!err.detail.empty()) msg += " DETAIL: " + err.detail;
    if (!err.hint.empty()) msg += " HINT: " + err.hint;
    if (!f.no_transaction && MustRunOutsideATransaction(err))
      msg +=
          " (the statement cannot run in the migration's transaction: put "
          "`-- migledger:no-transaction` at the top of the file)";
    if (!rolled_back)
      msg += InterruptRequested()
                 ? " (no-transaction step stopped mid-way; apply again to "
                   "resume)"
                 : " (no-transaction step stopped mid-way; fix the file and "
                   "apply again to resume)";
    if (st.code() == Code::kTargetUnavailable) return TargetUnavailable(msg);
    return MigrationFailed(msg);
  }

  // `resuming`: an earlier attempt of this no-transaction step stopped
  // unfinished (possibly before any statement was acknowledged); this one
  // continues at statement `resume_at`.
  // `finishing`, for the plan's last step: a transactional step that commits
  // also commits the run's RunFinished (succeeded, `steps_done` steps) to the
  // mirror in its transaction and leaves it prepared there, for RunPlan to
  // append locally; the run then needs no mirror transaction of its own.
  // `retrying`: an earlier attempt of this step ended (failed, interrupted
  // or killed) without finishing it.
  StatusOr<StepReport> RunStep(
      const Migration& m, v1::Direction dir, bool resuming, bool retrying,
      int resume_at, const std::vector<std::string>& acked_hashes,
      std::optional<PreparedEvent>* finishing = nullptr, int steps_done = 0) {
    const MigrationFile& f = dir == v1::DIRECTION_DOWN ? m.down : m.up;
    StepReport report{m.version, m.slug, dir, "", 0, ""};
    MIGLEDGER_ASSIGN_OR_RETURN(auto statements,
                               CheckedStatements(f, driver->dialect()));
    bool no_tx = f.no_transaction;
    if (no_tx && resume_at > 0) {
      for (int i = 0; i < resume_at && i < static_cast<int>(statements.size());
           ++i) {
        if (i >= static_cast<int>(acked_hashes.size()) ||
            Sha256Hex(statements[i].text) != acked_hashes[i]) {
          return InvalidInput(
              f.path + ": statement " + std::to_string(i + 1) +
              " changed since it ran in an earlier, unfinished attempt; "
              "restore it so the step can resume at statement " +
              std::to_string(resume_at + 1));
        }
      }
    }
    // The file's checksum is the SHA-256 of its bytes: the key its SQL text
    // is stored under, in the same write as the StepStarted.
    const std::string& blob = f.checksum;
    const std::string attempt = RandomId();
    v1::Event started = NewEvent();
    // The marker row carries the time the step started, the same as its
    // StepStarted event (status shows it as STARTED AT); the outcome event
    // carries the time at the end of the step, just before its COMMIT.
    attempt_started_at = FormatRfc3339(started.time().seconds() * 1000000 +
                                       started.time().nanos() / 1000);
    auto* ss = started.mutable_step_started();
    ss->set_version(m.version);
    ss->set_slug(m.slug);
    ss->set_direction(dir);
    ss->set_attempt_id(attempt);
    ss->set_checksum(f.checksum);
    ss->set_checksum_algorithm("sha256");
    ss->set_sql_blob_sha256(blob);
    ss->set_tx_mode(no_tx ? v1::TX_MODE_NO_TRANSACTION
                          : v1::TX_MODE_TRANSACTION);
    ss->set_statement_count(static_cast<int>(statements.size()));
    ss->set_file(ProjectRelative(f.path));
    ss->set_resume_at_statement(no_tx ? resume_at : 0);
    // Intent: covered by the synced RunStarted that lists this step.
    if (no_tx) {
      // A no-transaction step changes the target statement by statement: its
      // attempt is in the ledger and the mirror before the first one runs.
      MIGLEDGER_RETURN_IF_ERROR(Record(&started, false, &f.sql).status());
      MIGLEDGER_RETURN_IF_ERROR(UnknownOutcome(m, dir, FlushMirror()));
    } else {
      // Appended while the statements run; in the ledger before COMMIT.
      MIGLEDGER_ASSIGN_OR_RETURN(PreparedEvent p, PrepareNext(&started));
      p.blobs.push_back(f.sql);
      AddToOutbox(p);
      MIGLEDGER_RETURN_IF_ERROR(Enqueue(std::move(p)));
    }
    CrashPoint("apply.after_step_started");
    spdlog::info("{} {} {}",
                 dir == v1::DIRECTION_DOWN ? "reverting" : "applying",
                 m.version, m.slug);
    const int64_t t0 = MonoMicros();
    if (no_tx)
      return RunNoTx(m, f, dir, attempt, statements, resuming,
                     resuming || retrying, resume_at, t0, report);

    // The statements and the marker row in one transaction (PostgreSQL: one
    // round trip); the crash points inside it all see an open, uncommitted
    // transaction, whatever the driver batched.
    StepBatch batch;
    batch.statements = &statements;
    if (dir == v1::DIRECTION_UP) {
      batch.insert_marker =
          MarkerRow{m.version, m.up.checksum, attempt, attempt_started_at};
    } else {
      batch.delete_marker = m.version;
    }
    StepBatchFailure failure;
    if (auto st = driver->ExecStep(batch, &failure); !st.ok()) {
      const int i = failure.statement_index;
      return Fail(m, f, dir, attempt, i, i >= 0 ? &statements[i] : nullptr,
                  failure.error, st, true, MonoMicros() - t0);
    }
    CrashPoint("apply.after_begin");
    for (size_t i = 0; i < statements.size(); ++i)
      CrashPoint("apply.after_statement");
    // The outcome event goes into the mirror inside the same transaction; it
    // is appended locally right after COMMIT. A crash in between is healed
    // by the next run pulling it back from the mirror.
    v1::Event outcome = NewEvent();
    int64_t duration = MonoMicros() - t0;
    if (dir == v1::DIRECTION_UP) {
      auto* a = outcome.mutable_step_applied();
      a->set_version(m.version);
      a->set_attempt_id(attempt);
      a->set_duration_micros(duration);
      a->set_rows_affected(-1);
    } else {
      auto* r = outcome.mutable_step_reverted();
      r->set_version(m.version);
      r->set_attempt_id(attempt);
      r->set_duration_micros(duration);
      r->set_rows_affected(-1);
    }
    auto prepared_or = PrepareNext(&outcome);
    if (!prepared_or.ok()) {
      (void)driver->Rollback();
      return prepared_or.status();
    }
    PreparedEvent prepared = std::move(prepared_or).value();
    // The StepStarted is in the ledger before the step can commit.
    ::migledger::Status st = DrainQueue();
    if (!st.ok()) {
      (void)driver->Rollback();
      return st;
    }
    std::optional<PreparedEvent> finished;
    if (finishing) {
      v1::Event fin = RunFinishedEvent(::migledger::Status::Ok(), steps_done);
      auto p = ledger->PrepareAfter(
          &fin,
          ChainHead{prepared.target_sequence, prepared.target_chain_head});
      if (!p.ok()) {
        (void)driver->Rollback();
        return p.status();
      }
      finished = std::move(p).value();
    }
    auto rows_or = Outbox();
    st = rows_or.status();
    if (st.ok()) {
      auto rows = std::move(rows_or).value();
      rows.push_back(MirrorRowOf(prepared));
      if (finished) rows.push_back(MirrorRowOf(*finished));
      CrashPoint("apply.before_commit");
      st = driver->CommitWithMirrorRows(rows);
    } else {
      (void)driver->Rollback();
    }
    if (!st.ok() && st.code() == Code::kTargetUnavailable) {
      // COMMIT's answer never arrived: the step may have committed.
      return UnknownOutcome(m, dir, st);
    }
    if (!st.ok()) {
      SqlError err;
      err.message = st.message();
      return Fail(m, f, dir, attempt, -1, nullptr, err, st, true,
                  MonoMicros() - t0);
    }
    mirror_head =
        finished ? finished->target_sequence : prepared.target_sequence;
    if (finishing) *finishing = std::move(finished);
    CrashPoint("apply.after_commit");
    // Appended while the next step starts (or by the next Record).
    MIGLEDGER_RETURN_IF_ERROR(Enqueue(std::move(prepared)));
    CrashPoint("apply.after_outcome");
    report.outcome = dir == v1::DIRECTION_UP ? "applied" : "reverted";
    report.duration_micros = MonoMicros() - t0;  // COMMIT included
    return report;
  }

  v1::Event RunFinishedEvent(const ::migledger::Status& failure,
                             int steps_done) {
    v1::Event e = NewEvent();
    auto* rf = e.mutable_run_finished();
    rf->set_outcome(failure.ok() ? v1::OUTCOME_SUCCEEDED : v1::OUTCOME_FAILED);
    rf->set_message(failure.message());
    rf->set_steps_done(steps_done);
    return e;
  }

  // Ends the transaction a no-transaction file opened, in place of the
  // file's plain COMMIT, with `acks` (the statements inside it and the COMMIT
  // itself) written to the target's mirror in that same transaction: they
  // are durable exactly when what they acknowledge is. Appended locally
  // right after; a crash in between is healed by the next run pulling them
  // back from the mirror.
  ::migledger::Status CommitFileTransaction(std::vector<v1::Event>* acks) {
    auto abandon = [&](::migledger::Status st) {
      (void)driver->Rollback();
      return st;
    };
    if (auto st = DrainQueue(); !st.ok()) return abandon(st);
    std::vector<PreparedEvent> prepared;
    for (v1::Event& e : *acks) {
      auto p = prepared.empty()
                   ? ledger->Prepare(&e)
                   : ledger->PrepareAfter(
                         &e, ChainHead{prepared.back().target_sequence,
                                       prepared.back().target_chain_head});
      if (!p.ok()) return abandon(p.status());
      prepared.push_back(std::move(p).value());
    }
    auto rows = Outbox();
    if (!rows.ok()) return abandon(rows.status());
    for (const PreparedEvent& p : prepared) {
      rows->push_back(MirrorRowOf(p));
    }
    CrashPoint("apply.before_commit_no_tx");
    MIGLEDGER_RETURN_IF_ERROR(driver->CommitWithMirrorRows(*rows));
    mirror_head = prepared.back().target_sequence;
    CrashPoint("apply.after_commit");
    MIGLEDGER_RETURN_IF_ERROR(ledger->AppendAll(prepared, true).status());
    acks->clear();
    return ::migledger::Status::Ok();
  }

  StatusOr<StepReport> RunNoTx(const Migration& m, const MigrationFile& f,
                               v1::Direction dir, const std::string& attempt,
                               const std::vector<SqlStatement>& statements,
                               bool resuming, bool retrying, int resume_at,
                               int64_t t0, StepReport report) {
    // The statements before `resume_at` ran in the session of an earlier
    // attempt, which ended with it (or was reset since): what they set for
    // the session (search_path, ROLE, a timeout) is set again first, so the
    // rest runs as it would have in one go. SETs inside a transaction the
    // file rolled back ended with it.
    if (resuming && resume_at > 0) {
      std::vector<int> replay, block;
      bool in_block = false;
      for (int i = 0; i < resume_at && i < static_cast<int>(statements.size());
           ++i) {
        const std::string& text = statements[i].text;
        if (OpensTransaction(text)) {
          in_block = true;
        } else if (in_block && IsTransactionControl(text)) {
          if (!IsRollback(text))
            replay.insert(replay.end(), block.begin(), block.end());
          block.clear();
          in_block = false;
        } else if (IsSessionSetting(text)) {
          (in_block ? block : replay).push_back(i);
        }
      }
      for (int i : replay) {
        SqlError err;
        spdlog::info("setting again what statement {} of {} set: {}", i + 1,
                     m.version, statements[i].text);
        auto st = driver->Exec(statements[i].text, &err);
        if (!st.ok()) {
          err.message = "cannot set again, before resuming at statement " +
                        std::to_string(resume_at + 1) +
                        ", what this statement set for the session: " +
                        (err.message.empty() ? st.message() : err.message);
          return Fail(m, f, dir, attempt, i, &statements[i], err, st, false,
                      MonoMicros() - t0);
        }
      }
    }
    // An earlier attempt that ended inside a CREATE INDEX CONCURRENTLY
    // (killed, interrupted, or failed on a duplicate key) left its index
    // behind, invalid: dropped before the statement runs again. Only the
    // index that statement names, on its table, and only after an earlier
    // attempt: we hold the target's lock, so it is that attempt's build,
    // never someone's build in progress.
    if (retrying && resume_at < static_cast<int>(statements.size())) {
      MIGLEDGER_ASSIGN_OR_RETURN(
          auto leftover,
          driver->LeftoverInvalidIndex(statements[resume_at].text));
      if (leftover) {
        SqlError err;
        spdlog::warn("dropping invalid index {} left by an earlier attempt",
                     *leftover);
        MIGLEDGER_RETURN_IF_ERROR(
            driver->Exec(driver->DropLeftoverIndexSql(*leftover), &err));
      }
    }
    // Each acknowledged statement reaches the mirror before the next one
    // runs, so any runner sharing the target resumes where this one stopped.
    // Statements between a BEGIN the file issues itself and the end of that
    // transaction are undone if the process dies before it ends: they are
    // acknowledged together when it ends, never one by one (a resume then
    // starts again at the BEGIN instead of skipping what was rolled back).
    std::vector<v1::Event> block_acks;
    size_t acked_upto = static_cast<size_t>(resume_at);  // durable acks
    auto ack = [&](size_t i, int64_t s0, const std::string& found_applied) {
      v1::Event e = NewEvent();
      auto* sa = e.mutable_statement_applied();
      sa->set_version(m.version);
      sa->set_attempt_id(attempt);
      sa->set_statement_index(static_cast<int>(i));
      sa->set_statement_sha256(Sha256Hex(statements[i].text));
      sa->set_duration_micros(MonoMicros() - s0);
      sa->set_direction(dir);
      sa->set_found_applied(found_applied);
      return e;
    };
    for (size_t i = static_cast<size_t>(resume_at); i < statements.size();
         ++i) {
      const int64_t s0 = MonoMicros();
      SqlError err;
      if (driver->InTransaction() && IsPlainCommit(statements[i].text)) {
        // The file's COMMIT: the block's acknowledgements go into the
        // mirror inside the transaction they acknowledge.
        block_acks.push_back(ack(i, s0, ""));
        if (auto st = CommitFileTransaction(&block_acks); !st.ok()) {
          if (st.code() == Code::kTargetUnavailable)
            return UnknownOutcome(m, dir, st);
          err.message = st.message();
          return Fail(m, f, dir, attempt, static_cast<int>(i), &statements[i],
                      err, st, acked_upto == 0, MonoMicros() - t0);
        }
        acked_upto = i + 1;
        continue;
      }
      auto st = driver->Exec(statements[i].text, &err);
      // The statement we resume at may have completed in the interrupted
      // attempt after all, just before its acknowledgement was written (or
      // in its orphaned server session): what it creates is there, or what
      // it drops is gone.
      std::string found_applied;
      if (!st.ok() && resuming && static_cast<int>(i) == resume_at &&
          st.code() == Code::kMigrationFailed && !driver->InTransaction() &&
          driver->ErrorShowsDone(err, statements[i].text)) {
        found_applied = err.message;
        spdlog::warn(
            "statement {} of {} was already applied by the interrupted "
            "attempt ({}); not running it again",
            i + 1, m.version, err.message);
        st = ::migledger::Status::Ok();
      }
      if (!st.ok() && st.code() == Code::kTargetUnavailable) {
        // The statement may have completed before the connection died.
        return UnknownOutcome(m, dir, st);
      }
      if (!st.ok()) {
        // A transaction the file opened dies with the step.
        if (driver->InTransaction()) (void)driver->Rollback();
        return Fail(m, f, dir, attempt, static_cast<int>(i), &statements[i],
                    err, st, acked_upto == 0, MonoMicros() - t0);
      }
      CrashPoint("apply.between_statements_no_tx");
      block_acks.push_back(ack(i, s0, found_applied));
      if (driver->InTransaction()) continue;  // inside the file's transaction
      // Synced: a resumed step must never run an acknowledged statement
      // again (a block the file ended with ROLLBACK, or with a COMMIT that
      // is more than a plain one, is acknowledged here, after it ended).
      for (v1::Event& e : block_acks) {
        MIGLEDGER_RETURN_IF_ERROR(
            Record(&e, &e == &block_acks.back()).status());
      }
      block_acks.clear();
      acked_upto = i + 1;
      MIGLEDGER_RETURN_IF_ERROR(UnknownOutcome(m, dir, FlushMirror()));
      CrashPoint("apply.after_statement_event_no_tx");
    }
    if (driver->InTransaction()) {
      (void)driver->Rollback();
      SqlError err;
      err.message =
          "the migration ends inside a transaction it opened itself (BEGIN "
          "without COMMIT); nothing of that transaction was kept: end it with "
          "COMMIT";
      return Fail(m, f, dir, attempt, static_cast<int>(statements.size()) - 1,
                  &statements.back(), err, MigrationFailed(err.message),
                  acked_upto == 0, MonoMicros() - t0);
    }
    // All statements ran: marker row (or its removal) and the outcome event
    // in one small transaction.
    v1::Event outcome = NewEvent();
    int64_t duration = MonoMicros() - t0;
    if (dir == v1::DIRECTION_UP) {
      auto* a = outcome.mutable_step_applied();
      a->set_version(m.version);
      a->set_attempt_id(attempt);
      a->set_duration_micros(duration);
      a->set_rows_affected(-1);
    } else {
      auto* r = outcome.mutable_step_reverted();
      r->set_version(m.version);
      r->set_attempt_id(attempt);
      r->set_duration_micros(duration);
      r->set_rows_affected(-1);
    }
    MIGLEDGER_ASSIGN_OR_RETURN(PreparedEvent prepared,
                               ledger->Prepare(&outcome));
    MIGLEDGER_ASSIGN_OR_RETURN(auto rows, Outbox());
    rows.push_back(MirrorRowOf(prepared));
    // The marker's transaction in a fresh session: what the statements set
    // (a role, a read-only default) is not the bookkeeping's.
    driver->StepDone();
    StepBatch batch;  // no statements: only the marker row
    if (dir == v1::DIRECTION_UP) {
      batch.insert_marker =
          MarkerRow{m.version, m.up.checksum, attempt, attempt_started_at};
    } else {
      batch.delete_marker = m.version;
    }
    StepBatchFailure failure;
    MIGLEDGER_RETURN_IF_ERROR(
        UnknownOutcome(m, dir, driver->ExecStep(batch, &failure)));
    CrashPoint("apply.before_commit_no_tx");
    MIGLEDGER_RETURN_IF_ERROR(
        UnknownOutcome(m, dir, driver->CommitWithMirrorRows(rows)));
    mirror_head = prepared.target_sequence;
    CrashPoint("apply.after_commit");
    MIGLEDGER_RETURN_IF_ERROR(ledger->Append(prepared, false).status());
    CrashPoint("apply.after_outcome");
    report.outcome = dir == v1::DIRECTION_UP ? "applied" : "reverted";
    report.duration_micros = MonoMicros() - t0;  // COMMIT included
    return report;
  }

  // The down files, which Open lists without reading: read (and checked)
  // by the commands that may run or check one.
  ::migledger::Status ReadDownFiles() {
    for (Migration& m : migrations) {
      if (m.has_down) MIGLEDGER_RETURN_IF_ERROR(ReadMigrationFile(&m.down));
    }
    return ::migledger::Status::Ok();
  }

  StatusOr<RunReport> RunPlan(const std::vector<StepPlan>& plan,
                              const std::string& command, RunReport report) {
    if (plan.empty()) return report;
    // Every file of the plan must be sound before the first step runs.
    for (const auto& s : plan) {
      const bool down = s.direction == v1::DIRECTION_DOWN;
      const MigrationFile& f = down ? s.migration->down : s.migration->up;
      MIGLEDGER_ASSIGN_OR_RETURN(auto statements,
                                 CheckedStatements(f, driver->dialect()));
      // A down file without a statement (the template `migledger new`
      // writes, say) would record a revert that changed nothing.
      if (down && statements.empty()) {
        return InvalidInput(f.path + ": the down file has no statements, so " +
                            s.migration->version +
                            " would be recorded reverted with nothing undone; "
                            "write the statements that revert it, or delete "
                            "the file if it cannot be reverted");
      }
    }
    MIGLEDGER_ASSIGN_OR_RETURN(Projection p, Project());
    v1::Event e = NewEvent();
    auto* rs = e.mutable_run_started();
    rs->set_command(options.command_line.empty() ? command
                                                 : options.command_line);
    rs->set_reason(options.reason);
    for (const auto& s : plan) {
      auto* ps = rs->add_plan();
      const MigrationFile& f = s.direction == v1::DIRECTION_DOWN
                                   ? s.migration->down
                                   : s.migration->up;
      ps->set_version(s.migration->version);
      ps->set_direction(s.direction);
      ps->set_checksum(f.checksum);
      ps->set_tx_mode(f.no_transaction ? v1::TX_MODE_NO_TRANSACTION
                                       : v1::TX_MODE_TRANSACTION);
    }
    // The durable intent of the whole plan: one fsync for every step. It
    // also goes to the target's mirror at once, so a runner sharing this
    // target sees the run even if this process dies before its first commit.
    MIGLEDGER_RETURN_IF_ERROR(Record(&e, true).status());
    MIGLEDGER_RETURN_IF_ERROR(FlushMirror());
    // From here a signal cancels the running statement and stops the plan
    // before its next step; before, it ends the process as a kill would.
    InterruptibleWork interruptible;
    CrashPoint("apply.after_run_started");
    // The steps' queued appends: drained by the next Record() (at the latest
    // RunFinished's) and when this scope ends, on every path.
    writer = std::make_unique<LedgerWriter>(ledger.get());
    SetCrashPointHook(
        [](void* w) { (void)static_cast<LedgerWriter*>(w)->Drain(); },
        writer.get());
    struct StopWriter {
      Impl* impl;
      ~StopWriter() {
        SetCrashPointHook(nullptr, nullptr);
        impl->queued_head.reset();
        impl->writer.reset();
      }
    } stop_writer{this};
    ::migledger::Status failure;
    int steps_done = 0;
    std::optional<PreparedEvent> finished;  // see RunStep's `finishing`
    for (const auto& s : plan) {
      if (InterruptRequested()) {
        failure = Interrupted(
            std::string(InterruptedBy()) + " before migration " +
            s.migration->version + " " + DirName(s.direction) + ": " +
            std::to_string(steps_done) + " of " + std::to_string(plan.size()) +
            " step(s) done, the rest not started");
        break;
      }
      const bool last = &s == &plan.back();
      bool resuming = false;
      int resume_at = 0;
      std::vector<std::string> acked;
      auto prog = p.no_tx_progress.find(CanonicalVersion(s.migration->version));
      const MigrationFile& f = s.direction == v1::DIRECTION_DOWN
                                   ? s.migration->down
                                   : s.migration->up;
      if (f.no_transaction && prog != p.no_tx_progress.end() &&
          prog->second.direction == s.direction) {
        resuming = true;
        acked = prog->second.statement_hashes;
        resume_at = static_cast<int>(acked.size());
      }
      // Its last attempt failed, rolled back or stopped at its first
      // statement (then there is no progress to resume).
      auto hist = p.versions.find(CanonicalVersion(s.migration->version));
      const bool retrying =
          hist != p.versions.end() && !hist->second.last_error.empty();
      auto step = RunStep(*s.migration, s.direction, resuming, retrying,
                          resume_at, acked, last ? &finished : nullptr,
                          static_cast<int>(report.steps.size()) + 1);
      driver->StepDone();
      if (!step.ok()) {
        failure = step.status();
        if (InterruptRequested()) {
          failure = Interrupted(std::string(InterruptedBy()) + ": " +
                                failure.message());
        }
        StepReport r{
            s.migration->version, s.migration->slug, s.direction, "failed", 0,
            failure.message()};
        report.steps.push_back(r);
        break;
      }
      report.steps.push_back(*step);
      ++steps_done;
    }
    if (outcome_unknown) {
      // What was appended stays (the target holds it or gets it from the
      // next run's outbox); nothing more about this target is recorded.
      MIGLEDGER_RETURN_IF_ERROR(DrainQueue());
      MIGLEDGER_RETURN_IF_ERROR(ledger->Sync());
      report.steps.back().outcome = "unknown";
      report.failure = failure;
      return report;
    }
    CrashPoint("apply.before_run_finished");
    // Terminal: durable before the command reports anything.
    if (finished) {
      // Already in the mirror, committed with the last step.
      MIGLEDGER_RETURN_IF_ERROR(DrainQueue());
      MIGLEDGER_RETURN_IF_ERROR(ledger->Append(*finished, true).status());
    } else {
      v1::Event fin = RunFinishedEvent(failure, steps_done);
      MIGLEDGER_RETURN_IF_ERROR(Record(&fin, true).status());
    }
    if (report.steps.size() >= kSnapshotAfterSteps) (void)ProjectView();
    auto flushed = FlushMirror();
    if (!flushed.ok()) {
      spdlog::warn("event mirror not updated (will retry next run): {}",
                   flushed.message());
    }
    PushToAuditStore();
    report.failure = failure;
    return report;
  }
};

Applier::Applier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Applier::~Applier() {
  if (impl_ && impl_->driver) impl_->driver->Unlock();
}

Ledger* Applier::ledger() { return impl_->ledger.get(); }
std::vector<std::string> Applier::TakeOutcomesLearned() {
  return std::move(impl_->learned);
}

std::vector<Migration> Applier::ReleaseMigrations() {
  return std::move(impl_->migrations);
}

std::unique_ptr<Driver> Applier::ReleaseDriver() {
  return std::move(impl_->driver);
}

StatusOr<std::unique_ptr<Applier>> Applier::Open(
    ApplierOptions options, AccessMode mode,
    std::unique_ptr<Driver> opened_driver) {
  // The lock session's connection can be made while the ledger opens.
  if (opened_driver && mode == AccessMode::kWrite) opened_driver->BeginLock();
  auto impl = std::make_unique<Impl>();
  std::optional<std::vector<Migration>> loaded =
      std::move(options.loaded_migrations);
  options.loaded_migrations.reset();
  impl->learned = std::move(options.outcomes_learned);
  options.outcomes_learned.clear();
  impl->options = options;
  impl->mode = mode;
  MIGLEDGER_ASSIGN_OR_RETURN(
      impl->target_uri,
      ResolveTarget(options.config, options.target, &impl->target_name));
  // Opening the target is mostly waiting (PostgreSQL: loading libpq, the
  // server's fork and authentication) or parsing (SQLite reads the whole
  // schema at the first query): done on a helper thread while the files are
  // read and the ledger opens. A SQLite target that apply may create is
  // opened after both, as before: a bad project must not create the file.
  // A read-only view also takes its first look at the target there.
  std::future<OpenedTarget> connecting;
  if (!opened_driver && (mode == AccessMode::kRead ||
                         impl->target_uri.rfind("sqlite:", 0) != 0)) {
    connecting = std::async(
        std::launch::async,
        [uri = impl->target_uri, write = mode == AccessMode::kWrite] {
          OpenedTarget t(OpenDriver(uri, write));
          if (!t.driver.ok()) return t;
          Driver& d = **t.driver;
          if (write) {
            d.BeginLock();
          } else {
            t.has_schema = d.HasSchema();
            if (t.has_schema->ok() && **t.has_schema &&
                !d.identity().database_id.empty()) {
              if (auto head = d.MirrorHead(); head.ok()) t.mirror_head = *head;
              if (auto rows = d.ReadMarkers(); rows.ok())
                t.markers = std::move(rows).value();
            }
          }
          return t;
        });
  }
  LedgerOptions lo;
  lo.read_only = mode == AccessMode::kRead;
  lo.lock_timeout = options.lock_timeout;
  // The applier decides from the events: those past the verified mark are
  // checked on open, the ones it reads as it reads them.
  lo.verify_new_events = true;
  // An existing ledger opens on a helper thread while the files are read
  // (RocksDB's first open is start-up work and, for a writer, a few
  // fsyncs). A new one is created only after the files proved sound, so a
  // bad project leaves no ledger behind; and the helper tries the writer's
  // lock once, so a bad project is reported at once, not after the lock
  // timeout: the wait for a busy ledger comes after the files.
  std::future<StatusOr<std::unique_ptr<Ledger>>> opening;
  if (!options.shared_ledger) {
    LedgerOptions once = lo;
    once.lock_timeout = std::chrono::milliseconds(0);
    opening =
        std::async(std::launch::async, [dir = options.config.ledger_dir, once] {
          return Ledger::Open(dir, once);
        });
  }
  if (loaded) {
    impl->migrations = std::move(*loaded);
  } else {
    MIGLEDGER_ASSIGN_OR_RETURN(impl->migrations,
                               LoadMigrations(options.config.migrations_dir,
                                              /*read_down_files=*/false));
  }
  if (options.shared_ledger) {
    impl->ledger = options.shared_ledger;
  } else {
    auto ledger = opening.get();
    if (!ledger.ok() && mode == AccessMode::kWrite &&
        (ledger.status().code() == Code::kNotFound ||
         ledger.status().code() == Code::kLedgerBusy)) {
      lo.create_if_missing = ledger.status().code() == Code::kNotFound;
      ledger = Ledger::Open(options.config.ledger_dir, lo);
    }
    if (!ledger.ok() && mode == AccessMode::kRead &&
        ledger.status().code() == Code::kNotFound) {
      // No ledger yet: read an empty one so status still works.
      impl->ledger = nullptr;
    } else if (!ledger.ok()) {
      return ledger.status();
    } else {
      impl->ledger = std::move(ledger).value();
      // A writer refuses such a directory (Ledger::Open); a reader says so.
      if (mode == AccessMode::kRead) {
        if (::migledger::Status st =
                CheckLedgerDirectory(options.config.ledger_dir);
            !st.ok()) {
          spdlog::warn("{}", st.message());
        }
      }
    }
  }
  OpenedTarget opened =
      opened_driver        ? OpenedTarget(std::move(opened_driver))
      : connecting.valid() ? connecting.get()
                           : OpenedTarget(OpenDriver(
                                 impl->target_uri, mode == AccessMode::kWrite));
  auto& driver = opened.driver;
  if (!driver.ok()) {
    if (mode == AccessMode::kRead &&
        driver.status().code() == Code::kTargetUnavailable &&
        impl->target_uri.rfind("sqlite:", 0) == 0) {
      // A SQLite target that does not exist yet: everything is pending.
      return std::unique_ptr<Applier>(new Applier(std::move(impl)));
    }
    return driver.status();
  }
  impl->driver = std::move(driver).value();
  if (mode == AccessMode::kWrite) {
    MIGLEDGER_RETURN_IF_ERROR(impl->driver->Lock(options.lock_timeout));
    MIGLEDGER_RETURN_IF_ERROR(impl->driver->EnsureSchema());
    impl->target_has_schema = true;
    if (options.resolving != ApplierOptions::Resolving::kNewIdentity)
      MIGLEDGER_RETURN_IF_ERROR(impl->SyncMirror());
  } else {
    MIGLEDGER_ASSIGN_OR_RETURN(impl->target_has_schema,
                               opened.has_schema ? std::move(*opened.has_schema)
                                                 : impl->driver->HasSchema());
    impl->prefetched_mirror_head = opened.mirror_head;
    impl->prefetched_markers = std::move(opened.markers);
    MIGLEDGER_RETURN_IF_ERROR(impl->CatchUpForReading());
  }
  return std::unique_ptr<Applier>(new Applier(std::move(impl)));
}

StatusOr<StatusReport> Applier::Status() {
  auto& d = *impl_;
  StatusReport report;
  if (d.driver)
    report.identity = d.driver->identity();
  else
    report.identity.redacted_uri = RedactUri(d.target_uri);
  const Projection no_ledger;
  const Projection* projected = &no_ledger;
  if (d.ledger) {
    MIGLEDGER_ASSIGN_OR_RETURN(projected, d.ProjectView());
  }
  const Projection& p = *projected;
  report.target_events = p.events;
  report.unfinished = p.open_attempts;
  if (!report.unfinished.empty() && d.driver)
    report.running_elsewhere = d.driver->LockHeldElsewhere();
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, d.Markers());
  // One index for the drift check and the rows; `on_disk`: which markers
  // have a file.
  const TargetIndex index = IndexTarget(d.migrations, p, markers);
  std::vector<OutOfBandStep> oob;
  CheckTarget(index, p, markers, &report.drift, &oob);
  std::vector<char> on_disk(markers.size(), 0);
  const MarkerRow* newest = NewestMarker(markers);  // "out of order" below it
  report.rows.reserve(d.migrations.size());
  for (const auto& m : d.migrations) {
    StatusRow row{m.version, m.slug, "pending", "", ""};
    const size_t* marker_index = index.markers.Find(m.version);
    const VersionHistory* const* h = index.ledger.Find(m.version);
    if (marker_index != nullptr) {
      on_disk[*marker_index] = 1;
      const MarkerRow* marker = &markers[*marker_index];
      row.state = "applied";
      row.applied_at = marker->applied_at;
      if (h == nullptr || !(*h)->applied) row.note = "not in ledger";
      if (marker->checksum != m.up.checksum &&
          (h == nullptr || (*h)->checksum != m.up.checksum)) {
        row.note = "checksum changed";
      }
    } else if (h != nullptr && !(*h)->last_error.empty() &&
               ((*h)->last_error_checksum.empty() ||
                (*h)->last_error_checksum == m.up.checksum)) {
      // The failure of this very file: one of a file since replaced (same
      // version, other content) says nothing about the file there now.
      row.state = "failed";
      row.note = (*h)->last_error;
    }
    if (marker_index == nullptr && newest != nullptr &&
        CompareVersions(m.version, newest->version) < 0) {
      row.note += row.note.empty() ? "out of order" : ", out of order";
    }
    if (m.up.no_transaction)
      row.note += row.note.empty() ? "no-transaction" : ", no-transaction";
    if (report.running_elsewhere) {
      for (const auto& a : report.unfinished) {
        if (CompareVersions(a.version, m.version) != 0) continue;
        const char* running = a.direction == v1::DIRECTION_DOWN
                                  ? "being reverted now"
                                  : "running now";
        row.note = row.note.empty() ? running : running + (", " + row.note);
      }
    }
    report.rows.push_back(std::move(row));
  }
  // Marker rows come in the target's string order: the rows of files gone
  // go after the files' rows in numeric version order.
  const size_t first_missing = report.rows.size();
  for (size_t i = 0; i < markers.size(); ++i) {
    if (!on_disk[i]) {
      const MarkerRow& m = markers[i];
      report.rows.push_back({m.version, "", "missing file", m.applied_at, ""});
    }
  }
  std::stable_sort(report.rows.begin() + first_missing, report.rows.end(),
                   [](const StatusRow& a, const StatusRow& b) {
                     return CompareVersions(a.version, b.version) < 0;
                   });
  return report;
}

StatusOr<std::vector<StepPlan>> Applier::PlanApply(const std::string& to) {
  // apply refuses on drift before it plans: so does its preview.
  if (impl_->ledger) MIGLEDGER_RETURN_IF_ERROR(impl_->CheckDriftReadOnly());
  MIGLEDGER_ASSIGN_OR_RETURN(auto plan, impl_->PlanUpInOrder(to));
  // What RunPlan checks before its first step, for a plan shown, not run.
  SqlDialect dialect =
      impl_->driver ? impl_->driver->dialect() : impl_->Dialect();
  for (const auto& s : plan) {
    MIGLEDGER_RETURN_IF_ERROR(
        CheckedStatements(s.migration->up, dialect).status());
  }
  return plan;
}

StatusOr<std::vector<StepPlan>> Applier::PlanDown(const std::string& to,
                                                  int steps) {
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, impl_->Markers());
  return ::migledger::PlanDown(impl_->migrations, markers, to, steps);
}

StatusOr<RunReport> Applier::Apply(const std::string& to) {
  RunReport report;
  report.run_id = impl_->run_id;
  report.pulled_events = impl_->pulled;
  report.recovered = impl_->learned;
  MIGLEDGER_RETURN_IF_ERROR(impl_->Prepare(&report));
  MIGLEDGER_ASSIGN_OR_RETURN(auto plan, impl_->PlanUpInOrder(to));
  if (plan.empty())
    impl_->PushToAuditStore();  // resend what an earlier run could not
  return impl_->RunPlan(plan, "apply", std::move(report));
}

void Applier::SaveUnsavedProjection() {
  auto& d = *impl_;
  if (!d.ledger || !d.ledger->read_only()) return;
  const bool projection =
      d.projection_cache && d.projection_cache_head - d.projection_cache_from >=
                                Impl::kProjectionSnapshotEvery;
  // A reader cannot move the ledger's verified mark: a writable open does,
  // when it closes, so the next command verifies less.
  const bool mark =
      d.ledger->VerifiedOnOpen() >= Impl::kProjectionSnapshotEvery;
  if (!projection && !mark) return;
  LedgerOptions lo;
  lo.lock_timeout = std::chrono::milliseconds(0);  // busy: someone is writing
  lo.verify_new_events = true;
  auto writable = Ledger::Open(d.options.config.ledger_dir, lo);
  if (writable.ok() && projection) d.SaveProjection(writable->get());
}

StatusOr<bool> Applier::NothingToApply(const std::string& to) {
  auto& d = *impl_;
  if (!d.driver || !d.ledger || !d.target_has_schema ||
      d.driver->identity().database_id.empty()) {
    return false;
  }
  if (!AuditStoreUrl(d.options.config.audit_store_url,
                     d.options.config.audit_store_url_env)
           .empty()) {
    return false;
  }
  uint64_t remote = 0;
  if (d.mirror_size_seen) {
    remote = *d.mirror_size_seen;
  } else {
    MIGLEDGER_ASSIGN_OR_RETURN(remote, d.driver->MirrorHead());
  }
  if (remote != d.ledger->TargetHead(d.TargetKey()).size) return false;
  // Outcomes learned from the mirror are recorded by a writer.
  MIGLEDGER_ASSIGN_OR_RETURN(bool notes, d.HasLearnedNotes());
  if (notes) return false;
  MIGLEDGER_ASSIGN_OR_RETURN(const Projection* projected, d.ProjectView());
  const Projection& p = *projected;
  if (!p.open_attempts.empty()) return false;
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, d.Markers());
  std::vector<DriftItem> drift;
  std::vector<OutOfBandStep> oob;
  CheckTarget(d.migrations, p, markers, &drift, &oob);
  if (!drift.empty() || !oob.empty()) return false;
  MIGLEDGER_ASSIGN_OR_RETURN(auto plan, PlanUp(d.migrations, markers, to));
  return plan.empty();
}

StatusOr<RunReport> Applier::Down(const std::string& to, int steps) {
  RunReport report;
  report.run_id = impl_->run_id;
  report.pulled_events = impl_->pulled;
  report.recovered = impl_->learned;
  MIGLEDGER_RETURN_IF_ERROR(impl_->ReadDownFiles());
  MIGLEDGER_RETURN_IF_ERROR(impl_->Prepare(&report));
  MIGLEDGER_ASSIGN_OR_RETURN(auto plan, PlanDown(to, steps));
  return impl_->RunPlan(plan, "down", std::move(report));
}

StatusOr<RunReport> Applier::Recover() {
  RunReport report;
  report.run_id = impl_->run_id;
  report.pulled_events = impl_->pulled;
  report.recovered = impl_->learned;
  MIGLEDGER_RETURN_IF_ERROR(impl_->Reconcile(&report));
  MIGLEDGER_ASSIGN_OR_RETURN(Projection p, impl_->Project());
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, impl_->Markers());
  std::vector<DriftItem> drift;
  std::vector<OutOfBandStep> oob;
  CheckTarget(impl_->migrations, p, markers, &drift, &oob);
  MIGLEDGER_RETURN_IF_ERROR(impl_->RecordOutOfBand(oob, &report));
  impl_->PushToAuditStore();
  return report;
}

StatusOr<std::vector<DriftItem>> Applier::Validate() {
  auto& d = *impl_;
  MIGLEDGER_RETURN_IF_ERROR(d.ReadDownFiles());
  SqlDialect dialect = d.driver ? d.driver->dialect() : d.Dialect();
  for (const auto& m : d.migrations) {
    MIGLEDGER_RETURN_IF_ERROR(CheckedStatements(m.up, dialect).status());
    if (m.has_down)
      MIGLEDGER_RETURN_IF_ERROR(CheckedStatements(m.down, dialect).status());
  }
  // Everything, not from the verified mark: the whole ledger, the target's
  // whole mirror against it, and the projection snapshot against a replay.
  if (d.ledger) {
    MIGLEDGER_ASSIGN_OR_RETURN(VerifyReport r, d.ledger->Verify());
    if (!r.ok()) {
      return LedgerCorrupt("the ledger does not verify: " + r.problem +
                           "; run `migledger audit verify`");
    }
  }
  const bool has_target = d.driver && d.target_has_schema &&
                          !d.driver->identity().database_id.empty();
  // (ReadVerifiedMirror also replays the projection and compares the
  // snapshot with it.)
  if (has_target) MIGLEDGER_RETURN_IF_ERROR(d.ReadVerifiedMirror().status());
  MIGLEDGER_ASSIGN_OR_RETURN(StatusReport s, Status());
  return s.drift;
}

Status Applier::Baseline(const std::string& version,
                         const std::string& reason) {
  auto& d = *impl_;
  if (reason.empty()) return InvalidInput("baseline needs --reason");
  if (!d.FindMigration(version)) return NoSuchVersion("--version", version);
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, d.Markers());
  std::set<std::string> marked;
  for (const auto& m : markers) marked.insert(CanonicalVersion(m.version));
  v1::Event e = d.NewEvent();
  auto* b = e.mutable_baselined();
  b->set_version(version);
  b->set_reason(reason);
  std::vector<const Migration*> covered;
  for (const auto& m : d.migrations) {
    if (CompareVersions(m.version, version) > 0) break;
    b->add_versions(m.version);
    covered.push_back(&m);
  }
  MIGLEDGER_ASSIGN_OR_RETURN(PreparedEvent prepared, d.ledger->Prepare(&e));
  // Marker rows for the covered versions and the event in one transaction.
  MIGLEDGER_RETURN_IF_ERROR(d.driver->Begin());
  ::migledger::Status st;
  for (const auto* m : covered) {
    if (marked.count(CanonicalVersion(m->version))) continue;
    st = d.driver->InsertMarker({m->version, m->up.checksum,
                                 "baseline:" + d.run_id,
                                 FormatRfc3339(NowMicros())});
    if (!st.ok()) break;
  }
  if (st.ok()) {
    MIGLEDGER_ASSIGN_OR_RETURN(auto rows, d.Outbox());
    rows.push_back(MirrorRowOf(prepared));
    st = d.driver->InsertMirrorRows(rows);
  }
  if (st.ok()) st = d.driver->Commit();
  if (!st.ok()) {
    (void)d.driver->Rollback();
    return st;
  }
  d.mirror_head = prepared.target_sequence;
  MIGLEDGER_RETURN_IF_ERROR(d.ledger->Append(prepared, true).status());
  d.PushToAuditStore();
  return ::migledger::Status::Ok();
}

Status Applier::AcceptChecksum(const std::string& version,
                               const std::string& reason) {
  auto& d = *impl_;
  if (reason.empty()) return InvalidInput("accept-checksum needs --reason");
  const Migration* m = d.FindMigration(version);
  if (!m) return NoSuchVersion("--version", version);
  MIGLEDGER_ASSIGN_OR_RETURN(Projection p, d.Project());
  auto h = p.versions.find(CanonicalVersion(version));
  if (h == p.versions.end() || !h->second.applied) {
    return InvalidInput("version " + version +
                        " is not applied; nothing to accept");
  }
  v1::Event e = d.NewEvent();
  auto* c = e.mutable_checksum_accepted();
  c->set_version(m->version);
  c->set_old_checksum(h->second.checksum);
  c->set_new_checksum(m->up.checksum);
  c->set_reason(reason);
  MIGLEDGER_RETURN_IF_ERROR(d.Record(&e, true).status());
  MIGLEDGER_RETURN_IF_ERROR(d.FlushMirror());
  d.PushToAuditStore();
  return ::migledger::Status::Ok();
}

StatusOr<std::vector<v1::ResolvedVersion>> Applier::ResolveRestored(
    const std::string& reason) {
  auto& d = *impl_;
  if (reason.empty()) return InvalidInput("resolve needs --reason");
  RunReport report;
  // Steps a crash left open are settled against the restored target first:
  // their outcome is what its marker rows say.
  MIGLEDGER_RETURN_IF_ERROR(d.Reconcile(&report));
  MIGLEDGER_ASSIGN_OR_RETURN(Projection p, d.Project());
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, d.Markers());
  std::vector<DriftItem> drift;
  std::vector<OutOfBandStep> oob;
  CheckTarget(d.migrations, p, markers, &drift, &oob);
  MIGLEDGER_RETURN_IF_ERROR(d.RecordOutOfBand(oob, &report));
  std::map<std::string, const MarkerRow*> by_version;
  for (const auto& m : markers) by_version[CanonicalVersion(m.version)] = &m;
  std::vector<v1::ResolvedVersion> changed;
  for (const auto& item : drift) {
    v1::ResolvedVersion v;
    v.set_version(item.version);
    if (item.kind == "missing_marker") {
      v.set_applied(false);
    } else if (item.kind == "unknown_marker") {
      v.set_applied(true);
      v.set_checksum(by_version.at(CanonicalVersion(item.version))->checksum);
    } else {
      continue;  // a changed or missing file has its own remedies
    }
    changed.push_back(std::move(v));
  }
  if (changed.empty()) {
    return InvalidInput(
        "nothing to resolve: the target's marker rows agree with the ledger");
  }
  std::sort(changed.begin(), changed.end(),
            [](const v1::ResolvedVersion& a, const v1::ResolvedVersion& b) {
              return CompareVersions(a.version(), b.version()) < 0;
            });
  std::string undone, kept;
  for (const auto& v : changed) {
    std::string& list = v.applied() ? kept : undone;
    list += (list.empty() ? "" : ", ") + v.version();
  }
  std::string decision = "restored: the target's marker rows are its state";
  if (!undone.empty()) decision += "; no longer applied: " + undone;
  if (!kept.empty()) decision += "; applied: " + kept;
  v1::Event e = d.NewEvent();
  auto* r = e.mutable_resolved();
  r->set_subject("restored");
  r->set_decision(decision);
  r->set_reason(reason);
  for (const auto& v : changed) *r->add_versions() = v;
  // Like every operator decision: durable here, then in the target's mirror
  // (the next run sends it there if this one cannot).
  MIGLEDGER_RETURN_IF_ERROR(d.Record(&e, true).status());
  MIGLEDGER_RETURN_IF_ERROR(d.FlushMirror());
  d.PushToAuditStore();
  return changed;
}

StatusOr<NewIdentityReport> Applier::ResolveNewIdentity(
    const std::string& reason) {
  auto& d = *impl_;
  if (reason.empty()) return InvalidInput("resolve needs --reason");
  if (d.options.resolving != ApplierOptions::Resolving::kNewIdentity) {
    return Internal("ResolveNewIdentity: not opened for it");
  }
  NewIdentityReport report;
  report.old_database_id = d.driver->identity().database_id;
  std::string old_key = d.TargetKey();
  // The inherited history must be a whole, verified chain of one database:
  // it is kept as the copy's provenance.
  MIGLEDGER_ASSIGN_OR_RETURN(auto inherited, d.driver->ReadMirror(0));
  Digest32 chain{};
  for (size_t i = 0; i < inherited.size(); ++i) {
    const MirrorRow& row = inherited[i];
    const std::string at =
        "the target's event mirror at target sequence " + std::to_string(i + 1);
    const Digest32 leaf = MerkleLeafHash(row.event_bytes);
    chain = ExtendChain(chain, leaf);
    v1::Event e;
    if (row.target_sequence != i + 1 || row.leaf_hash != AsBytes(leaf) ||
        row.chain_head != AsBytes(chain) ||
        !e.ParseFromString(row.event_bytes) ||
        e.target().database_id().empty()) {
      return Drift(at +
                   " does not verify; refusing to give the database a new "
                   "identity over a history that was edited");
    }
    const std::string key =
        TargetKey(e.target().kind(), e.target().database_id());
    if (i == 0) {
      old_key = key;
      report.old_database_id = e.target().database_id();
    } else if (key != old_key) {
      return Drift(at + " is about " + key + ", not " + old_key +
                   " as the rows before it");
    }
  }
  // A copy under another name (CREATE DATABASE ... TEMPLATE, a dump loaded
  // elsewhere) already has an id of its own; one that has its original's
  // (a copied SQLite file, a PostgreSQL base backup) takes a new one.
  if (report.old_database_id != d.driver->identity().database_id) {
    report.new_database_id = d.driver->identity().database_id;
  } else {
    MIGLEDGER_ASSIGN_OR_RETURN(report.new_database_id,
                               d.driver->NewDatabaseId());
  }
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, d.Markers());
  std::sort(markers.begin(), markers.end(),
            [](const MarkerRow& a, const MarkerRow& b) {
              return CompareVersions(a.version, b.version) < 0;
            });
  v1::Event e = d.NewEvent();
  e.mutable_target()->set_database_id(report.new_database_id);
  auto* r = e.mutable_resolved();
  r->set_subject("new_identity");
  r->set_decision("new identity: a copy of " + report.old_database_id +
                  " becomes " + report.new_database_id + " with " +
                  std::to_string(markers.size()) + " version(s) applied");
  r->set_reason(reason);
  for (const auto& m : markers) {
    auto* v = r->add_versions();
    v->set_version(m.version);
    v->set_applied(true);
    v->set_checksum(m.checksum);
  }
  r->set_old_database_id(report.old_database_id);
  r->set_new_database_id(report.new_database_id);
  r->set_old_target_size(inherited.size());
  r->set_old_target_chain(ToHex(chain));
  MIGLEDGER_ASSIGN_OR_RETURN(PreparedEvent prepared, d.ledger->Prepare(&e));
  // The new chain from its start: what the local ledger already holds under
  // the new id (a database of that name seen before), then this event.
  std::vector<MirrorRow> rows;
  MIGLEDGER_RETURN_IF_ERROR(d.ledger->ScanTarget(
      prepared.target_key, 0,
      [&](const LedgerEntry& le, const Digest32& leaf, const Digest32& c) {
        rows.push_back({le.event.target_sequence(), le.bytes,
                        std::string(AsBytes(leaf)), std::string(AsBytes(c))});
        return true;
      }));
  rows.push_back(MirrorRowOf(prepared));
  MIGLEDGER_RETURN_IF_ERROR(d.driver->AdoptIdentity(
      report.new_database_id, report.old_database_id, rows));
  // A crash here is healed by the next run, which pulls the new chain's
  // first event back from the target's mirror.
  MIGLEDGER_RETURN_IF_ERROR(d.ledger->Append(prepared, true).status());
  d.outbox.reset();
  d.mirror_head = prepared.target_sequence;
  d.PushToAuditStore();
  report.inherited_events = inherited.size();
  return report;
}

StatusOr<std::string> Applier::ExportPlanSql(const std::string& to) {
  auto& d = *impl_;
  MIGLEDGER_ASSIGN_OR_RETURN(auto plan, PlanApply(to));
  bool pg = d.driver && d.driver->dialect() == SqlDialect::kPostgres;
  std::string script =
      "-- migledger offline upgrade script\n-- target: " +
      (d.driver ? d.driver->identity().redacted_uri : RedactUri(d.target_uri)) +
      "\n-- run id: " + d.run_id + "\n";
  for (const auto& s : plan) {
    const Migration& m = *s.migration;
    script += "\n-- " + m.version + " " + m.slug + " (" + m.up.file +
              ", sha256 " + m.up.checksum + ")\n";
    if (!m.up.no_transaction) script += "BEGIN;\n";
    // psql skips a byte order mark only at the start of its input.
    script += StartsWithUtf8Bom(m.up.sql) ? m.up.sql.substr(3) : m.up.sql;
    if (!m.up.sql.empty() && m.up.sql.back() != '\n') script += "\n";
    // A last statement without its semicolon must not swallow the marker
    // insert (an empty statement is harmless on both databases).
    auto statements = SplitMigrationFile(
        m.up.sql, pg ? SqlDialect::kPostgres : SqlDialect::kSqlite);
    if (statements.ok() && !statements->empty() &&
        statements->back().text.back() != ';') {
      script += ";\n";
    }
    script += OfflineMarkerSql(pg ? SqlDialect::kPostgres : SqlDialect::kSqlite,
                               MarkerRow{m.version, m.up.checksum,
                                         "offline:" + d.run_id, ""}) +
              "\n";
    if (!m.up.no_transaction) script += "COMMIT;\n";
  }
  if (d.ledger && !d.ledger->read_only() && d.driver &&
      !d.driver->identity().database_id.empty()) {
    v1::Event e = d.NewEvent();
    auto* pe = e.mutable_plan_exported();
    pe->set_script_sha256(Sha256Hex(script));
    for (const auto& s : plan) {
      auto* ps = pe->add_plan();
      ps->set_version(s.migration->version);
      ps->set_direction(v1::DIRECTION_UP);
      ps->set_checksum(s.migration->up.checksum);
      ps->set_tx_mode(s.migration->up.no_transaction
                          ? v1::TX_MODE_NO_TRANSACTION
                          : v1::TX_MODE_TRANSACTION);
    }
    MIGLEDGER_RETURN_IF_ERROR(d.Record(&e, true).status());
    (void)d.FlushMirror();
  }
  return script;
}

}  // namespace migledger
