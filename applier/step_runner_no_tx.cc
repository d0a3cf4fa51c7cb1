// Running a no-transaction step (`-- migledger:no-transaction`): statement
// by statement, each acknowledged in the ledger and the target's mirror
// before the next runs, so an interrupted step resumes where it stopped.
#include <spdlog/spdlog.h>

#include "applier/applier_impl.h"
#include "common/crash_points.h"
#include "common/sha256.h"

namespace migledger {

// The statements before `resume_at` ran in the session of an earlier
// attempt, which ended with it (or was reset since): what they set for the
// session (search_path, ROLE, a timeout) is set again first, so the rest
// runs as it would have in one go. SETs inside a transaction the file
// rolled back ended with it.
Status Applier::Impl::ReplaySessionSettings(const StepContext& step,
                                            int resume_at) {
  const std::vector<SqlStatement>& statements = step.statements;
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
                 step.migration.version, statements[i].text);
    auto st = driver->Exec(statements[i].text, &err);
    if (!st.ok()) {
      err.message = "cannot set again, before resuming at statement " +
                    std::to_string(resume_at + 1) +
                    ", what this statement set for the session: " +
                    (err.message.empty() ? st.message() : err.message);
      return Fail(step, {i, &statements[i], err, st, false});
    }
  }
  return Status::Ok();
}

// An earlier attempt that ended inside a CREATE INDEX CONCURRENTLY (killed,
// interrupted, or failed on a duplicate key) left its index behind,
// invalid: dropped before the statement runs again. Only the index that
// statement names, on its table, and only after an earlier attempt: we hold
// the target's lock, so it is that attempt's build, never someone's build
// in progress.
Status Applier::Impl::DropLeftoverIndex(const SqlStatement& next) {
  MIGLEDGER_ASSIGN_OR_RETURN(auto leftover,
                             driver->LeftoverInvalidIndex(next.text));
  if (leftover) {
    SqlError err;
    spdlog::warn("dropping invalid index {} left by an earlier attempt",
                 *leftover);
    MIGLEDGER_RETURN_IF_ERROR(
        driver->Exec(driver->DropLeftoverIndexSql(*leftover), &err));
  }
  return Status::Ok();
}

v1::Event Applier::Impl::StatementAppliedEvent(
    const StepContext& step, size_t i, int64_t duration,
    const std::string& found_applied) {
  v1::Event e = NewEvent();
  auto* sa = e.mutable_statement_applied();
  sa->set_version(step.migration.version);
  sa->set_attempt_id(step.attempt);
  sa->set_statement_index(static_cast<int>(i));
  sa->set_statement_sha256(Sha256Hex(step.statements[i].text));
  sa->set_duration_micros(duration);
  sa->set_direction(step.direction);
  sa->set_found_applied(found_applied);
  return e;
}

// Runs the statements from `resume_at`. Each acknowledged statement
// reaches the mirror before the next one runs, so any runner sharing the
// target resumes where this one stopped. Statements between a BEGIN the
// file issues itself and the end of that transaction are undone if the
// process dies before it ends: they are acknowledged together when it ends,
// never one by one (a resume then starts again at the BEGIN instead of
// skipping what was rolled back). The loop keeps the acknowledgement state
// of that block, so it stays one function.
StatusOr<StepReport> Applier::Impl::RunNoTx(const StepContext& step,
                                            bool resuming, bool retrying,
                                            int resume_at) {
  const std::vector<SqlStatement>& statements = step.statements;
  if (resuming && resume_at > 0)
    MIGLEDGER_RETURN_IF_ERROR(ReplaySessionSettings(step, resume_at));
  if (retrying && resume_at < static_cast<int>(statements.size()))
    MIGLEDGER_RETURN_IF_ERROR(DropLeftoverIndex(statements[resume_at]));
  std::vector<v1::Event> block_acks;
  size_t acked_upto = static_cast<size_t>(resume_at);  // durable acks
  auto ack = [&](size_t i, int64_t s0, const std::string& found_applied) {
    return StatementAppliedEvent(step, i, MonoMicros() - s0, found_applied);
  };
  for (size_t i = static_cast<size_t>(resume_at); i < statements.size(); ++i) {
    const int64_t s0 = MonoMicros();
    SqlError err;
    if (driver->InTransaction() && IsPlainCommit(statements[i].text)) {
      // The file's COMMIT: the block's acknowledgements go into the
      // mirror inside the transaction they acknowledge.
      block_acks.push_back(ack(i, s0, ""));
      if (auto st = CommitFileTransaction(&block_acks); !st.ok()) {
        if (st.code() == Code::kTargetUnavailable)
          return UnknownOutcome(step, st);
        err.message = st.message();
        return Fail(step, {static_cast<int>(i), &statements[i], err, st,
                           acked_upto == 0});
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
          i + 1, step.migration.version, err.message);
      st = Status::Ok();
    }
    if (!st.ok() && st.code() == Code::kTargetUnavailable) {
      // The statement may have completed before the connection died.
      return UnknownOutcome(step, st);
    }
    if (!st.ok()) {
      // A transaction the file opened dies with the step.
      if (driver->InTransaction()) (void)driver->Rollback();
      return Fail(step, {static_cast<int>(i), &statements[i], err, st,
                         acked_upto == 0});
    }
    CrashPoint("apply.between_statements_no_tx");
    block_acks.push_back(ack(i, s0, found_applied));
    if (driver->InTransaction()) continue;  // inside the file's transaction
    // Synced: a resumed step must never run an acknowledged statement
    // again (a block the file ended with ROLLBACK, or with a COMMIT that
    // is more than a plain one, is acknowledged here, after it ended).
    for (v1::Event& e : block_acks) {
      MIGLEDGER_RETURN_IF_ERROR(Record(&e, &e == &block_acks.back()).status());
    }
    block_acks.clear();
    acked_upto = i + 1;
    MIGLEDGER_RETURN_IF_ERROR(UnknownOutcome(step, mirror.Flush()));
    CrashPoint("apply.after_statement_event_no_tx");
  }
  if (driver->InTransaction()) {
    (void)driver->Rollback();
    SqlError err;
    err.message =
        "the migration ends inside a transaction it opened itself (BEGIN "
        "without COMMIT); nothing of that transaction was kept: end it with "
        "COMMIT";
    return Fail(
        step, {static_cast<int>(statements.size()) - 1, &statements.back(), err,
               MigrationFailed(err.message), acked_upto == 0});
  }
  return CommitNoTxOutcome(step);
}

// All statements ran: marker row (or its removal) and the outcome event in
// one small transaction.
StatusOr<StepReport> Applier::Impl::CommitNoTxOutcome(const StepContext& step) {
  v1::Event outcome = OutcomeEvent(step);
  MIGLEDGER_ASSIGN_OR_RETURN(PreparedEvent prepared, ledger->Prepare(&outcome));
  MIGLEDGER_ASSIGN_OR_RETURN(auto rows, mirror.Outbox());
  rows.push_back(MirrorRowOf(prepared));
  // The marker's transaction in a fresh session: what the statements set
  // (a role, a read-only default) is not the bookkeeping's.
  driver->StepDone();
  StepBatch batch = MarkerBatch(step);  // no statements: only the marker row
  StepBatchFailure failure;
  MIGLEDGER_RETURN_IF_ERROR(
      UnknownOutcome(step, driver->ExecStep(batch, &failure)));
  CrashPoint("apply.before_commit_no_tx");
  MIGLEDGER_RETURN_IF_ERROR(
      UnknownOutcome(step, driver->CommitWithMirrorRows(rows)));
  mirror.set_head(prepared.target_sequence);
  CrashPoint("apply.after_commit");
  MIGLEDGER_RETURN_IF_ERROR(ledger->Append(prepared, false).status());
  CrashPoint("apply.after_outcome");
  return DoneReport(step);
}

// Ends the transaction a no-transaction file opened, in place of the file's
// plain COMMIT, with `acks` (the statements inside it and the COMMIT itself)
// written to the target's mirror in that same transaction: they are durable
// exactly when what they acknowledge is. Appended locally right after; a
// crash in between is healed by the next run pulling them back from the
// mirror.
Status Applier::Impl::CommitFileTransaction(std::vector<v1::Event>* acks) {
  auto abandon = [&](Status st) {
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
  auto rows = mirror.Outbox();
  if (!rows.ok()) return abandon(rows.status());
  for (const PreparedEvent& p : prepared) {
    rows->push_back(MirrorRowOf(p));
  }
  CrashPoint("apply.before_commit_no_tx");
  MIGLEDGER_RETURN_IF_ERROR(driver->CommitWithMirrorRows(*rows));
  mirror.set_head(prepared.back().target_sequence);
  CrashPoint("apply.after_commit");
  MIGLEDGER_RETURN_IF_ERROR(ledger->AppendAll(prepared, true).status());
  acks->clear();
  return Status::Ok();
}

}  // namespace migledger
