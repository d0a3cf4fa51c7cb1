// Reconciliation: what the ledger recorded as intended against what the
// target holds. Unfinished attempts are settled from the marker rows
// (Reconcile), versions applied outside migledger are recorded
// (RecordOutOfBand), and any other difference is drift that stops a command
// that would change the target (Prepare, CheckDriftReadOnly).
#include <spdlog/spdlog.h>

#include <map>
#include <set>

#include "applier/applier_impl.h"

namespace migledger {
namespace {

// The StepRecovered of unfinished attempt `a`: its outcome from the marker
// row (`marker`: the row of its version, null when absent) and the
// no-transaction progress in `p`.
StatusOr<v1::StepRecovered> RecoveredStep(const OpenAttempt& a,
                                          const MarkerRow* marker,
                                          const Projection& p, Driver* driver) {
  v1::StepRecovered r;
  r.set_version(a.version);
  r.set_attempt_id(a.attempt_id);
  r.set_direction(a.direction);
  bool up = a.direction != v1::DIRECTION_DOWN;
  if ((marker != nullptr) == up) {
    r.set_outcome(v1::RECOVERED_COMMITTED);
    r.set_evidence(up ? "marker row present (attempt " + marker->attempt_id +
                            ", " + marker->applied_at + ")"
                      : "marker row absent: the down step committed");
  } else if (a.tx_mode == v1::TX_MODE_NO_TRANSACTION) {
    auto prog = p.no_tx_progress.find(CanonicalVersion(a.version));
    int done = prog == p.no_tx_progress.end()
                   ? 0
                   : static_cast<int>(prog->second.statement_hashes.size());
    r.set_outcome(v1::RECOVERED_RESUMED);
    r.set_resume_at_statement(done);
    std::string evidence = "no marker row; " + std::to_string(done) + " of " +
                           std::to_string(a.statement_count) +
                           " statements acknowledged; will resume at "
                           "statement " +
                           std::to_string(done + 1);
    MIGLEDGER_ASSIGN_OR_RETURN(auto invalid, driver->InvalidIndexes());
    for (const auto& idx : invalid)
      evidence += "; invalid index " + idx + " found";
    r.set_evidence(evidence);
  } else {
    r.set_outcome(v1::RECOVERED_ROLLED_BACK);
    r.set_evidence(
        up ? "no marker row: the transaction never committed"
           : "marker row still present: the down step never committed");
  }
  return r;
}

}  // namespace

Status Applier::Impl::Reconcile(RunReport* report) {
  MIGLEDGER_ASSIGN_OR_RETURN(Projection p, projection.Copy());
  if (p.open_attempts.empty()) return Status::Ok();
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, Markers());
  std::map<std::string, const MarkerRow*> by_version;
  for (const auto& m : markers) by_version[CanonicalVersion(m.version)] = &m;
  for (const auto& a : p.open_attempts) {
    auto it = by_version.find(CanonicalVersion(a.version));
    const MarkerRow* marker = it != by_version.end() ? it->second : nullptr;
    v1::Event e = NewEvent();
    MIGLEDGER_ASSIGN_OR_RETURN(*e.mutable_step_recovered(),
                               RecoveredStep(a, marker, p, driver.get()));
    const std::string& evidence = e.step_recovered().evidence();
    report->recovered.push_back("version " + a.version + " (" +
                                DirName(a.direction) + ", attempt " +
                                a.attempt_id + "): " + evidence);
    spdlog::warn("recovered unfinished step {}: {}", a.version, evidence);
    MIGLEDGER_RETURN_IF_ERROR(Record(&e, false).status());
  }
  MIGLEDGER_RETURN_IF_ERROR(ledger->Sync());
  return mirror.Flush();
}

Status Applier::Impl::RecordOutOfBand(const std::vector<OutOfBandStep>& oob,
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
    MIGLEDGER_RETURN_IF_ERROR(mirror.Flush());
  }
  return Status::Ok();
}

Status Applier::Impl::Prepare(RunReport* report) {
  MIGLEDGER_RETURN_IF_ERROR(Reconcile(report));
  MIGLEDGER_ASSIGN_OR_RETURN(Projection p, projection.Copy());
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
    (void)mirror.Flush();
    return Drift(DriftMessage(drift));
  }
  return Status::Ok();
}

// The unfinished steps are taken as Reconcile() would record them (a marker
// row present means an up step committed, absent a down step), so an
// interrupted step is not mistaken for an unknown marker row.
Status Applier::Impl::CheckDriftReadOnly() {
  MIGLEDGER_ASSIGN_OR_RETURN(const Projection* view, projection.View());
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
  if (!drift.empty()) return Drift(DriftMessage(drift));
  return Status::Ok();
}

}  // namespace migledger
