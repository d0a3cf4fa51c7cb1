// Running a plan's steps: RunPlan, one transactional step (RunStep), the
// failure and unknown-outcome recording; the no-transaction steps are in
// step_runner_no_tx.cc. Every apply crash point sits in these two files.
#include <spdlog/spdlog.h>

#include <filesystem>

#include "applier/applier_impl.h"
#include "common/crash_points.h"
#include "common/interrupt.h"
#include "common/sha256.h"
#include "common/time_util.h"

namespace migledger {
namespace {

// The error a statement that refuses to run inside a transaction block
// gives: PostgreSQL's active_sql_transaction (CREATE INDEX CONCURRENTLY,
// VACUUM, CREATE DATABASE...), SQLite's "cannot VACUUM from within a
// transaction" and the like.
bool MustRunOutsideATransaction(const SqlError& err) {
  if (err.sqlstate == "25001") return true;
  return err.sqlstate.empty() &&
         err.message.find("from within a transaction") != std::string::npos;
}

int LineOf(const SqlStatement& s, int position) {
  if (position < 0) return s.first_line;
  return s.first_line + LineOfOffset(s.text, static_cast<size_t>(position)) - 1;
}

}  // namespace

std::string Applier::Impl::ProjectRelative(const std::string& path) const {
  const std::string& root = options.config.root;
  if (root.empty()) return path;
  std::filesystem::path rel =
      std::filesystem::path(path).lexically_relative(root);
  return rel.empty() ? path : rel.generic_string();
}

// A step lost the target while its outcome was in flight: a COMMIT (with
// the step's marker row and mirror rows) or a no-transaction statement
// whose answer never arrived, or a mirror write of its progress. The
// target may hold the result, and with it mirror rows at target sequences
// this ledger has not appended: so nothing that claims a result is
// recorded (no StepFailed, and no RunFinished, which would take one of
// those sequences). The next run pulls what the mirror holds and
// reconciles from the marker row (DESIGN.md "Unknown outcomes"). Any
// other error is returned as it is.
Status Applier::Impl::UnknownOutcome(const StepContext& step,
                                     const Status& st) {
  if (st.code() != Code::kTargetUnavailable) return st;
  outcome_unknown = true;
  return TargetUnavailable(
      "the outcome of migration " + step.migration.version + " " +
      DirName(step.direction) + " is unknown: " + st.message() +
      "; it may have committed, so nothing was recorded as its result: the "
      "next `migledger apply` (or `recover`) learns it from the target's "
      "marker row and event mirror");
}

// Records the StepFailed (synced, then in the mirror) and returns the error
// the run stops with.
Status Applier::Impl::Fail(const StepContext& step,
                           const StepFailure& failure) {
  const int64_t duration = MonoMicros() - step.started_micros;
  const Migration& m = step.migration;
  const MigrationFile& f = step.file;
  const SqlError& err = failure.error;
  const SqlStatement* stmt = failure.statement;
  v1::Event e = NewEvent();
  auto* sf = e.mutable_step_failed();
  sf->set_version(m.version);
  sf->set_attempt_id(step.attempt);
  sf->set_direction(step.direction);
  sf->set_sqlstate(err.sqlstate);
  sf->set_native_code(err.native_code);
  sf->set_message(err.message.empty() ? failure.status.message() : err.message);
  sf->set_detail(err.detail);
  sf->set_hint(err.hint);
  sf->set_statement_index(failure.statement_index);
  int line = stmt ? LineOf(*stmt, err.position) : 0;
  sf->set_file_line(line);
  sf->set_file(ProjectRelative(f.path));
  sf->set_rolled_back(failure.rolled_back);
  sf->set_duration_micros(duration);
  MIGLEDGER_RETURN_IF_ERROR(Record(&e, true).status());
  auto flushed = mirror.Flush();
  if (!flushed.ok())
    spdlog::warn("event mirror not updated: {}", flushed.message());
  // Without a statement the failure is not the file's (BEGIN, COMMIT,
  // migledger's own rows): no line to name.
  std::string msg =
      "migration " + m.version + " " + DirName(step.direction) + " failed " +
      (stmt ? "at " + f.path + ":" + std::to_string(line) + " (statement " +
                  std::to_string(failure.statement_index + 1) + ")"
            : "(" + f.path + ")") +
      ": " + sf->message();
  if (!err.sqlstate.empty()) msg += " [SQLSTATE " + err.sqlstate + "]";
  if (!err.detail.empty()) msg += " DETAIL: " + err.detail;
  if (!err.hint.empty()) msg += " HINT: " + err.hint;
  if (!f.no_transaction && MustRunOutsideATransaction(err))
    msg +=
        " (the statement cannot run in the migration's transaction: put "
        "`-- migledger:no-transaction` at the top of the file)";
  if (!failure.rolled_back)
    msg += InterruptRequested()
               ? " (no-transaction step stopped mid-way; apply again to "
                 "resume)"
               : " (no-transaction step stopped mid-way; fix the file and "
                 "apply again to resume)";
  if (failure.status.code() == Code::kTargetUnavailable)
    return TargetUnavailable(msg);
  return MigrationFailed(msg);
}

// The StepApplied (up) or StepReverted (down) event of a step whose
// statements all ran; its time is the end of the step, just before COMMIT.
v1::Event Applier::Impl::OutcomeEvent(const StepContext& step) {
  v1::Event outcome = NewEvent();
  const int64_t duration = MonoMicros() - step.started_micros;
  auto fill = [&](auto* o) {
    o->set_version(step.migration.version);
    o->set_attempt_id(step.attempt);
    o->set_duration_micros(duration);
    o->set_rows_affected(-1);
  };
  if (step.direction == v1::DIRECTION_UP) {
    fill(outcome.mutable_step_applied());
  } else {
    fill(outcome.mutable_step_reverted());
  }
  return outcome;
}

StepBatch Applier::Impl::MarkerBatch(const StepContext& step) const {
  StepBatch batch;
  const Migration& m = step.migration;
  if (step.direction == v1::DIRECTION_UP) {
    batch.insert_marker =
        MarkerRow{m.version, m.up.checksum, step.attempt, attempt_started_at};
  } else {
    batch.delete_marker = m.version;
  }
  return batch;
}

StepReport Applier::Impl::DoneReport(const StepContext& step) const {
  const Migration& m = step.migration;
  StepReport report{m.version, m.slug, step.direction, "", 0, ""};
  report.outcome = step.direction == v1::DIRECTION_UP ? "applied" : "reverted";
  report.duration_micros = MonoMicros() - step.started_micros;  // COMMIT too
  return report;
}

v1::Event Applier::Impl::RunFinishedEvent(const Status& failure,
                                          int steps_done) {
  v1::Event e = NewEvent();
  auto* rf = e.mutable_run_finished();
  rf->set_outcome(failure.ok() ? v1::OUTCOME_SUCCEEDED : v1::OUTCOME_FAILED);
  rf->set_message(failure.message());
  rf->set_steps_done(steps_done);
  return e;
}

// Records the step's StepStarted: at once (ledger and mirror) for a
// no-transaction step, which changes the target statement by statement;
// queued for a transactional one, in the ledger before its COMMIT. Returns
// the attempt id.
StatusOr<std::string> Applier::Impl::RecordStepStarted(const Migration& m,
                                                       const MigrationFile& f,
                                                       v1::Direction dir,
                                                       int statements,
                                                       int resume_at) {
  // The file's checksum is the SHA-256 of its bytes: the key its SQL text
  // is stored under, in the same write as the StepStarted.
  const std::string& blob = f.checksum;
  std::string attempt = RandomId();
  v1::Event started = NewEvent();
  // The marker row carries the time the step started, the same as its
  // StepStarted event (status shows it as STARTED AT); the outcome event
  // carries the time at the end of the step, just before its COMMIT.
  attempt_started_at = FormatRfc3339(started.time().seconds() * 1000000 +
                                     started.time().nanos() / 1000);
  const bool no_tx = f.no_transaction;
  auto* ss = started.mutable_step_started();
  ss->set_version(m.version);
  ss->set_slug(m.slug);
  ss->set_direction(dir);
  ss->set_attempt_id(attempt);
  ss->set_checksum(f.checksum);
  ss->set_checksum_algorithm("sha256");
  ss->set_sql_blob_sha256(blob);
  ss->set_tx_mode(no_tx ? v1::TX_MODE_NO_TRANSACTION : v1::TX_MODE_TRANSACTION);
  ss->set_statement_count(statements);
  ss->set_file(ProjectRelative(f.path));
  ss->set_resume_at_statement(no_tx ? resume_at : 0);
  // Intent: covered by the synced RunStarted that lists this step.
  if (no_tx) {
    MIGLEDGER_RETURN_IF_ERROR(Record(&started, false, &f.sql).status());
  } else {
    // Appended while the statements run; in the ledger before COMMIT.
    MIGLEDGER_ASSIGN_OR_RETURN(PreparedEvent p, PrepareNext(&started));
    p.blobs.push_back(f.sql);
    mirror.Add(p);
    MIGLEDGER_RETURN_IF_ERROR(Enqueue(std::move(p)));
  }
  return attempt;
}

// `start.resuming`: an earlier attempt of this no-transaction step stopped
// unfinished (possibly before any statement was acknowledged); this one
// continues at statement `start.resume_at`.
// `finishing`, for the plan's last step: a transactional step that commits
// also commits the run's RunFinished (succeeded, `steps_done` steps) to the
// mirror in its transaction and leaves it prepared there, for RunPlan to
// append locally; the run then needs no mirror transaction of its own.
// `start.retrying`: an earlier attempt of this step ended (failed,
// interrupted or killed) without finishing it.
StatusOr<StepReport> Applier::Impl::RunStep(
    const Migration& m, v1::Direction dir, const StepStart& start,
    std::optional<PreparedEvent>* finishing, int steps_done) {
  const MigrationFile& f = dir == v1::DIRECTION_DOWN ? m.down : m.up;
  MIGLEDGER_ASSIGN_OR_RETURN(auto statements,
                             CheckedStatements(f, driver->dialect()));
  const bool no_tx = f.no_transaction;
  const int resume_at = start.resume_at;
  if (no_tx && resume_at > 0) {
    const std::vector<std::string>& acked = *start.acked_hashes;
    for (int i = 0; i < resume_at && i < static_cast<int>(statements.size());
         ++i) {
      if (i >= static_cast<int>(acked.size()) ||
          Sha256Hex(statements[i].text) != acked[i]) {
        return InvalidInput(
            f.path + ": statement " + std::to_string(i + 1) +
            " changed since it ran in an earlier, unfinished attempt; "
            "restore it so the step can resume at statement " +
            std::to_string(resume_at + 1));
      }
    }
  }
  MIGLEDGER_ASSIGN_OR_RETURN(
      const std::string attempt,
      RecordStepStarted(m, f, dir, static_cast<int>(statements.size()),
                        resume_at));
  StepContext step{m, f, dir, attempt, statements, 0};
  // A no-transaction step's attempt is in the ledger and the mirror before
  // its first statement runs.
  if (no_tx) MIGLEDGER_RETURN_IF_ERROR(UnknownOutcome(step, mirror.Flush()));
  CrashPoint("apply.after_step_started");
  spdlog::info("{} {} {}", dir == v1::DIRECTION_DOWN ? "reverting" : "applying",
               m.version, m.slug);
  step.started_micros = MonoMicros();
  if (no_tx) {
    return RunNoTx(step, start.resuming, start.resuming || start.retrying,
                   resume_at);
  }
  return RunInTransaction(step, finishing, steps_done);
}

// The statements and the marker row in one transaction (PostgreSQL: one
// round trip), with the outcome event (and, for the plan's last step, the
// RunFinished) written to the mirror in it; the crash points inside it all
// see an open, uncommitted transaction, whatever the driver batched.
StatusOr<StepReport> Applier::Impl::RunInTransaction(
    const StepContext& step, std::optional<PreparedEvent>* finishing,
    int steps_done) {
  StepBatch batch = MarkerBatch(step);
  batch.statements = &step.statements;
  StepBatchFailure failure;
  if (auto st = driver->ExecStep(batch, &failure); !st.ok()) {
    const int i = failure.statement_index;
    return Fail(step, {i, i >= 0 ? &step.statements[i] : nullptr, failure.error,
                       st, true});
  }
  CrashPoint("apply.after_begin");
  for (size_t i = 0; i < step.statements.size(); ++i)
    CrashPoint("apply.after_statement");
  // The outcome event goes into the mirror inside the same transaction; it
  // is appended locally right after COMMIT. A crash in between is healed
  // by the next run pulling it back from the mirror.
  v1::Event outcome = OutcomeEvent(step);
  auto prepared_or = PrepareNext(&outcome);
  if (!prepared_or.ok()) {
    (void)driver->Rollback();
    return prepared_or.status();
  }
  PreparedEvent prepared = std::move(prepared_or).value();
  // The StepStarted is in the ledger before the step can commit.
  Status st = DrainQueue();
  if (!st.ok()) {
    (void)driver->Rollback();
    return st;
  }
  std::optional<PreparedEvent> finished;
  if (finishing) {
    v1::Event fin = RunFinishedEvent(Status::Ok(), steps_done);
    auto p = ledger->PrepareAfter(
        &fin, ChainHead{prepared.target_sequence, prepared.target_chain_head});
    if (!p.ok()) {
      (void)driver->Rollback();
      return p.status();
    }
    finished = std::move(p).value();
  }
  auto rows_or = mirror.Outbox();
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
    return UnknownOutcome(step, st);
  }
  if (!st.ok()) {
    SqlError err;
    err.message = st.message();
    return Fail(step, {-1, nullptr, err, st, true});
  }
  mirror.set_head(finished ? finished->target_sequence
                           : prepared.target_sequence);
  if (finishing) *finishing = std::move(finished);
  CrashPoint("apply.after_commit");
  // Appended while the next step starts (or by the next Record).
  MIGLEDGER_RETURN_IF_ERROR(Enqueue(std::move(prepared)));
  CrashPoint("apply.after_outcome");
  return DoneReport(step);
}

// Every file of the plan must be sound before the first step runs.
static Status CheckPlanFiles(const std::vector<StepPlan>& plan,
                             SqlDialect dialect) {
  for (const auto& s : plan) {
    const bool down = s.direction == v1::DIRECTION_DOWN;
    const MigrationFile& f = down ? s.migration->down : s.migration->up;
    MIGLEDGER_ASSIGN_OR_RETURN(auto statements, CheckedStatements(f, dialect));
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
  return Status::Ok();
}

// The RunStarted event that lists the whole plan.
v1::Event Applier::Impl::RunStartedEvent(const std::vector<StepPlan>& plan,
                                         const std::string& command) {
  v1::Event e = NewEvent();
  auto* rs = e.mutable_run_started();
  rs->set_command(options.command_line.empty() ? command
                                               : options.command_line);
  rs->set_reason(options.reason);
  for (const auto& s : plan) {
    auto* ps = rs->add_plan();
    const MigrationFile& f =
        s.direction == v1::DIRECTION_DOWN ? s.migration->down : s.migration->up;
    ps->set_version(s.migration->version);
    ps->set_direction(s.direction);
    ps->set_checksum(f.checksum);
    ps->set_tx_mode(f.no_transaction ? v1::TX_MODE_NO_TRANSACTION
                                     : v1::TX_MODE_TRANSACTION);
  }
  return e;
}

// How step `s` starts, from the projection before the run: whether a
// no-transaction step resumes an unfinished attempt, and whether the last
// attempt failed, rolled back or stopped at its first statement (then there
// is no progress to resume).
static StepStart StepStartOf(const Projection& p, const StepPlan& s) {
  StepStart start;
  auto prog = p.no_tx_progress.find(CanonicalVersion(s.migration->version));
  const MigrationFile& f =
      s.direction == v1::DIRECTION_DOWN ? s.migration->down : s.migration->up;
  if (f.no_transaction && prog != p.no_tx_progress.end() &&
      prog->second.direction == s.direction) {
    start.resuming = true;
    start.acked_hashes = &prog->second.statement_hashes;
    start.resume_at = static_cast<int>(prog->second.statement_hashes.size());
  }
  auto hist = p.versions.find(CanonicalVersion(s.migration->version));
  start.retrying = hist != p.versions.end() && !hist->second.last_error.empty();
  return start;
}

StatusOr<RunReport> Applier::Impl::RunPlan(const std::vector<StepPlan>& plan,
                                           const std::string& command,
                                           RunReport report) {
  if (plan.empty()) return report;
  MIGLEDGER_RETURN_IF_ERROR(CheckPlanFiles(plan, driver->dialect()));
  MIGLEDGER_ASSIGN_OR_RETURN(Projection p, projection.Copy());
  v1::Event e = RunStartedEvent(plan, command);
  // The durable intent of the whole plan: one fsync for every step. It
  // also goes to the target's mirror at once, so a runner sharing this
  // target sees the run even if this process dies before its first commit.
  MIGLEDGER_RETURN_IF_ERROR(Record(&e, true).status());
  MIGLEDGER_RETURN_IF_ERROR(mirror.Flush());
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
  Status failure;
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
    auto step = RunStep(*s.migration, s.direction, StepStartOf(p, s),
                        last ? &finished : nullptr,
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
  return FinishRun(std::move(report), failure, steps_done, &finished);
}

// The end of a run whose steps ran (or stopped): its RunFinished, durable
// before the command reports anything; nothing more when a step's outcome
// became unknown.
StatusOr<RunReport> Applier::Impl::FinishRun(
    RunReport report, const Status& failure, int steps_done,
    std::optional<PreparedEvent>* finished) {
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
  if (*finished) {
    // Already in the mirror, committed with the last step.
    MIGLEDGER_RETURN_IF_ERROR(DrainQueue());
    MIGLEDGER_RETURN_IF_ERROR(ledger->Append(**finished, true).status());
  } else {
    v1::Event fin = RunFinishedEvent(failure, steps_done);
    MIGLEDGER_RETURN_IF_ERROR(Record(&fin, true).status());
  }
  if (report.steps.size() >= kSnapshotAfterSteps) (void)projection.View();
  auto flushed = mirror.Flush();
  if (!flushed.ok()) {
    spdlog::warn("event mirror not updated (will retry next run): {}",
                 flushed.message());
  }
  mirror.PushToAuditStore(options.config);
  report.failure = failure;
  return report;
}

}  // namespace migledger
