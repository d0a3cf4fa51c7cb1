// The state one Applier shares among its parts, and the parts' entry points:
// the target mirror (target_mirror.h) and projection cache
// (projection_cache.h) own their state; target_mirror.cc, reconciler.cc,
// step_runner.cc (with step_runner_no_tx.cc), inspect.cc and resolve.cc
// define the members declared here under their headings.
// Internal to applier/.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "applier/actor.h"
#include "applier/applier.h"
#include "applier/ledger_writer.h"
#include "applier/projection_cache.h"
#include "applier/sql_splitter.h"
#include "applier/step_runner.h"
#include "applier/target_mirror.h"

namespace migledger {

// 96 random bits from the kernel, in hex.
std::string RandomId();

inline int64_t MonoMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline const char* DirName(v1::Direction d) {
  return d == v1::DIRECTION_DOWN ? "down" : "up";
}

// Splits a migration file and checks what can be checked before anything
// runs: the SQL splits (quotes, dollar quotes and comments are closed) and a
// transactional file does not control its own transaction. Errors name the
// file and line.
StatusOr<std::vector<SqlStatement>> CheckedStatements(const MigrationFile& f,
                                                      SqlDialect dialect);

struct OpenedTarget;  // applier.cc

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
  int pulled = 0;  // events caught up from the mirror
  TargetMirror mirror{ledger, driver};
  ProjectionCache projection{ledger, driver};
  // Read mode: the markers read on the thread that opened the target (after
  // the mirror's head: the order the main path reads them in), used once.
  std::optional<std::vector<MarkerRow>> prefetched_markers;

  // ---- opening (applier.cc)
  // Takes the ledger Applier::Open's helper thread opened (`opened`),
  // opening it again with `lo` where the helper could not.
  Status AdoptLedger(StatusOr<std::unique_ptr<Ledger>> opened,
                     LedgerOptions lo);
  // Takes the target connection and, as the mode requires, locks it and
  // syncs its mirror (kWrite) or takes a first look (kRead).
  Status AttachTarget(OpenedTarget* opened);

  // ---- events (applier.cc)
  v1::Event NewEvent();
  std::string TargetKey() const { return driver->identity().Key(); }
  // The SQL dialect of the target, also when it could not be opened.
  SqlDialect Dialect() const {
    return target_uri.rfind("sqlite:", 0) == 0 ? SqlDialect::kSqlite
                                               : SqlDialect::kPostgres;
  }
  // Appends locally; the mirror is brought up to date by mirror.Flush().
  // `blob`, if given, is stored in the same write (the SQL the event names).
  // Waits for the queued appends (DrainQueue) first, so the ledger's order
  // is the order events were recorded in.
  StatusOr<PreparedEvent> Record(v1::Event* e, bool sync,
                                 const std::string* blob = nullptr);
  StatusOr<std::vector<MarkerRow>> Markers();
  const Migration* FindMigration(const std::string& version);
  // The up steps to `to`, refused when one would run out of order (unless
  // the options allow it). RunPlan checks their files.
  StatusOr<std::vector<StepPlan>> PlanUpInOrder(const std::string& to);
  // The down files, which Open lists without reading: read (and checked)
  // by the commands that may run or check one.
  Status ReadDownFiles();
  RunReport NewRunReport();

  // ---- queued appends (applier/ledger_writer.h)
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
  Status Enqueue(PreparedEvent p) {
    if (!writer) return ledger->Append(p, false).status();
    queued_head = ChainHead{p.target_sequence, p.target_chain_head};
    writer->Enqueue(std::move(p));
    return Status::Ok();
  }
  Status DrainQueue() {
    if (!writer) return Status::Ok();
    queued_head.reset();
    return writer->Drain();
  }

  // ---- catching up with the target's mirror (target_mirror.cc)
  // Catches the local ledger up with the target's mirror, or pushes what the
  // mirror lacks (the outbox). A mirror that does not verify or that forks
  // from the local chain is drift: refuse, never silently pick a side.
  Status SyncMirror();
  // Read mode: when the target's mirror holds events the local ledger lacks
  // (a fresh runner, another operator's runs), pull them in under the
  // ledger's write lock. If another process holds the ledger, show the local
  // history and say so.
  Status CatchUpForReading();
  // Writer, target lock held and mirror in sync: one OutcomeLearned event per
  // outcome this run (or an earlier reader) learned from the mirror, unless
  // one is already recorded for that attempt (a crash between recording and
  // forgetting the notes).
  Status RecordOutcomesLearned();

  // ---- reconciliation (reconciler.cc)
  // One StepRecovered per unfinished attempt, from the target's marker rows.
  Status Reconcile(RunReport* report);
  Status RecordOutOfBand(const std::vector<OutOfBandStep>& oob,
                         RunReport* report);
  // Reconcile + out-of-band + drift check; the common start of every
  // command that changes the target.
  Status Prepare(RunReport* report);
  // The drift Prepare() would find, without writing anything.
  Status CheckDriftReadOnly();

  // ---- running steps (step_runner.cc)
  StatusOr<RunReport> RunPlan(const std::vector<StepPlan>& plan,
                              const std::string& command, RunReport report);
  // A run this long (about twice as many events) replays its own events at
  // its end to leave a snapshot: the next command would replay them anyway,
  // and one replay of a few thousand events is small next to the run. A
  // shorter run leaves that to the next writer that replays them.
  static constexpr size_t kSnapshotAfterSteps = 2048;

  v1::Event RunStartedEvent(const std::vector<StepPlan>& plan,
                            const std::string& command);
  StatusOr<RunReport> FinishRun(RunReport report, const Status& failure,
                                int steps_done,
                                std::optional<PreparedEvent>* finished);
  StatusOr<StepReport> RunStep(const Migration& m, v1::Direction dir,
                               const StepStart& start,
                               std::optional<PreparedEvent>* finishing,
                               int steps_done);
  StatusOr<std::string> RecordStepStarted(const Migration& m,
                                          const MigrationFile& f,
                                          v1::Direction dir, int statements,
                                          int resume_at);
  StatusOr<StepReport> RunInTransaction(const StepContext& step,
                                        std::optional<PreparedEvent>* finishing,
                                        int steps_done);
  StatusOr<StepReport> RunNoTx(const StepContext& step, bool resuming,
                               bool retrying, int resume_at);
  Status ReplaySessionSettings(const StepContext& step, int resume_at);
  Status DropLeftoverIndex(const SqlStatement& next);
  // The acknowledgement of statement `i`, which ran in `duration` micros
  // (`found_applied`: why it was taken as already applied, or "").
  v1::Event StatementAppliedEvent(const StepContext& step, size_t i,
                                  int64_t duration,
                                  const std::string& found_applied);
  StatusOr<StepReport> CommitNoTxOutcome(const StepContext& step);
  Status CommitFileTransaction(std::vector<v1::Event>* acks);
  // The outcome event (StepApplied up, StepReverted down) of a step whose
  // statements all ran; its time is the end of the step, before COMMIT.
  v1::Event OutcomeEvent(const StepContext& step);
  // The step's marker row insert (up) or delete (down), without statements.
  StepBatch MarkerBatch(const StepContext& step) const;
  // The report of a step that committed, its COMMIT included.
  StepReport DoneReport(const StepContext& step) const;
  v1::Event RunFinishedEvent(const Status& failure, int steps_done);
  Status Fail(const StepContext& step, const StepFailure& failure);
  Status UnknownOutcome(const StepContext& step, const Status& st);
  // A migration file's path as events record it: relative to the project
  // directory, so a shared history does not carry each runner's layout.
  std::string ProjectRelative(const std::string& path) const;
  // RFC 3339 time of the running step's StepStarted.
  std::string attempt_started_at;
  // Set when a step's outcome became unknown (UnknownOutcome): the run then
  // records nothing more about this target.
  bool outcome_unknown = false;
};

}  // namespace migledger
