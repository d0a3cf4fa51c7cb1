// The HTML report's data: what it shows, gathered from the ledger in one
// scan of the selected events, then each target's state and each failing
// statement's text.
#include <algorithm>

#include "applier/planner.h"
#include "applier/sql_splitter.h"
#include "cli/format.h"
#include "cli/html_report_internal.h"

namespace migledger::html_report {
namespace {

int64_t MicrosOf(const v1::Event& e) {
  return e.time().seconds() * 1000000 + e.time().nanos() / 1000;
}

// Events a run (run_started .. run_finished) is made of. Other commands
// (validate, baseline, drift found by apply before it plans) have a run id
// too, but no run on the timeline.
bool PartOfRun(const v1::Event& e) {
  switch (e.body_case()) {
    case v1::Event::kRunStarted:
    case v1::Event::kRunFinished:
    case v1::Event::kStepStarted:
    case v1::Event::kStatementApplied:
    case v1::Event::kStepApplied:
    case v1::Event::kStepFailed:
    case v1::Event::kStepReverted:
    case v1::Event::kStepRecovered:
      return true;
    default:
      return false;
  }
}

class Collector {
 public:
  explicit Collector(Report* r) : r_(r) {}

  void Add(const LedgerEntry& entry) {
    const v1::Event& e = entry.event;
    const int64_t t = MicrosOf(e);
    r_->events++;
    TargetInfo& target = Target(e);
    target.events++;
    const std::string label = TargetLabel(e.target());
    if (!e.run_id().empty() && PartOfRun(e)) {
      RunInfo& run = Run(e, entry.sequence, label);
      run.first = std::min(run.first, t);
      run.last = std::max(run.last, t);
    }
    switch (e.body_case()) {
      case v1::Event::kRunStarted:
        AddRunStarted(entry, t, label, &target);
        break;
      case v1::Event::kRunFinished: {
        RunInfo& run = Run(e, entry.sequence, label);
        run.finished = t;
        run.outcome = e.run_finished().outcome();
        run.steps_done = e.run_finished().steps_done();
        run.message = e.run_finished().message();
        break;
      }
      case v1::Event::kStepStarted:
      case v1::Event::kStepApplied:
      case v1::Event::kStepReverted:
      case v1::Event::kStepRecovered:
        AddStep(entry, t);
        break;
      case v1::Event::kStepFailed:
        AddStepFailed(entry, t, label, &target);
        break;
      case v1::Event::kStatementApplied:
        break;  // progress inside a step: the step row covers it
      case v1::Event::kDriftDetected:
        r_->markers.push_back(
            {TargetKeyOf(e), t, false, "drift_detected: " + EventSummary(e)});
        [[fallthrough]];
      default:
        AddOther(entry, t, label);
    }
  }

 private:
  void AddRunStarted(const LedgerEntry& entry, int64_t t,
                     const std::string& label, TargetInfo* target) {
    const v1::Event& e = entry.event;
    RunInfo& run = Run(e, entry.sequence, label);
    run.started = t;
    run.actor = ActorText(e.actor());
    run.actor_details = ActorDetails(e.actor());
    run.command = e.run_started().command();
    run.reason = e.run_started().reason();
    run.planned = e.run_started().plan_size();
    target->runs++;
    if (!target->last_run || *target->last_run < t) target->last_run = t;
  }

  // A step's start, or an outcome other than a failure.
  void AddStep(const LedgerEntry& entry, int64_t t) {
    const v1::Event& e = entry.event;
    switch (e.body_case()) {
      case v1::Event::kStepStarted: {
        const auto& s = e.step_started();
        AttemptInfo& a =
            Attempt(e, s.attempt_id(), s.version(), entry.sequence);
        a.started = t;
        a.slug = s.slug();
        a.direction = s.direction();
        a.checksum = s.checksum();
        a.sql_blob = s.sql_blob_sha256();
        break;
      }
      case v1::Event::kStepApplied: {
        const auto& s = e.step_applied();
        AttemptInfo& a =
            Attempt(e, s.attempt_id(), s.version(), entry.sequence);
        a.duration = s.duration_micros();
        a.outcome = "applied";
        a.outcome_class = "ok";
        break;
      }
      case v1::Event::kStepReverted: {
        const auto& s = e.step_reverted();
        AttemptInfo& a =
            Attempt(e, s.attempt_id(), s.version(), entry.sequence);
        a.duration = s.duration_micros();
        a.direction = v1::DIRECTION_DOWN;
        a.outcome = "reverted";
        a.outcome_class = "info";
        break;
      }
      default: {  // kStepRecovered
        const auto& s = e.step_recovered();
        AttemptInfo& a =
            Attempt(e, s.attempt_id(), s.version(), entry.sequence);
        a.direction = s.direction();
        const char* o = s.outcome() == v1::RECOVERED_COMMITTED ? "committed"
                        : s.outcome() == v1::RECOVERED_ROLLED_BACK
                            ? "rolled back"
                            : "resumed";
        a.outcome = std::string("recovered (") + o + ")";
        a.outcome_class = "warn";
      }
    }
  }

  void AddStepFailed(const LedgerEntry& entry, int64_t t,
                     const std::string& label, TargetInfo* target) {
    const v1::Event& e = entry.event;
    const auto& s = e.step_failed();
    AttemptInfo& a = Attempt(e, s.attempt_id(), s.version(), entry.sequence);
    a.duration = s.duration_micros();
    a.direction = s.direction();
    a.outcome = "failed";
    a.outcome_class = "bad";
    a.failure_sequence = entry.sequence;
    FailureInfo f;
    f.sequence = entry.sequence;
    f.time = t;
    f.target_label = label;
    f.target_kind = e.target().kind();
    f.run_id = e.run_id();
    f.actor = ActorText(e.actor());
    f.f = s;
    r_->failures.push_back(std::move(f));
    r_->markers.push_back({TargetKeyOf(e), t, true,
                           "step_failed " + s.version() + " " +
                               DirName(s.direction()) + ": " + s.message()});
    target->failures++;
  }

  void AddOther(const LedgerEntry& entry, int64_t t, const std::string& label) {
    const v1::Event& e = entry.event;
    OtherEvent o;
    o.sequence = entry.sequence;
    o.time = t;
    o.target_label = label;
    o.type = EventType(e);
    o.version = EventVersion(e);
    o.actor = ActorText(e.actor());
    o.summary = EventSummary(e);
    r_->others.push_back(std::move(o));
  }

  TargetInfo& Target(const v1::Event& e) {
    std::string key = TargetKeyOf(e);
    auto [it, inserted] = r_->targets.try_emplace(key);
    if (inserted) {
      it->second.key = key;
      r_->target_order.push_back(key);
    }
    if (e.has_target()) it->second.ref = e.target();  // latest name wins
    return it->second;
  }

  RunInfo& Run(const v1::Event& e, uint64_t sequence,
               const std::string& label) {
    auto [it, inserted] =
        r_->run_index.try_emplace(e.run_id(), r_->runs.size());
    if (inserted) {
      RunInfo run;
      run.run_id = e.run_id();
      run.sequence = sequence;
      run.target_key = TargetKeyOf(e);
      run.target_label = label;
      run.first = run.last = MicrosOf(e);
      run.actor = ActorText(e.actor());
      run.actor_details = ActorDetails(e.actor());
      r_->runs.push_back(std::move(run));
    }
    return r_->runs[it->second];
  }

  AttemptInfo& Attempt(const v1::Event& e, const std::string& attempt_id,
                       const std::string& version, uint64_t sequence) {
    std::string id =
        attempt_id.empty() ? "seq:" + std::to_string(sequence) : attempt_id;
    auto [it, inserted] =
        r_->attempt_index.try_emplace(id, r_->attempts.size());
    if (inserted) {
      AttemptInfo a;
      a.attempt_id = attempt_id;
      a.sequence = sequence;
      a.target_label = TargetLabel(e.target());
      a.target_kind = e.target().kind();
      a.version = version;
      a.actor = ActorText(e.actor());
      a.actor_details = ActorDetails(e.actor());
      a.outcome = "unfinished";
      a.outcome_class = "muted";
      r_->attempts.push_back(std::move(a));
    }
    return r_->attempts[it->second];
  }

  Report* r_;
};

// The failing statement's text, from the SQL blob of its attempt.
void FillStatements(Ledger* ledger, Report* r) {
  for (FailureInfo& f : r->failures) {
    auto it = r->attempt_index.find(f.f.attempt_id());
    if (it == r->attempt_index.end()) continue;
    const AttemptInfo& a = r->attempts[it->second];
    f.slug = a.slug;
    if (a.sql_blob.empty() || f.f.statement_index() < 0) continue;
    auto sql = ledger->GetBlob(a.sql_blob);
    if (!sql.ok()) continue;
    auto statements = SplitMigrationFile(*sql, f.target_kind == "postgres"
                                                   ? SqlDialect::kPostgres
                                                   : SqlDialect::kSqlite);
    if (!statements.ok()) continue;
    size_t i = static_cast<size_t>(f.f.statement_index());
    if (i >= statements->size()) continue;
    f.statement_text = (*statements)[i].text;
    if (f.statement_text.size() > 4000) {
      f.statement_text.resize(4000);
      f.statement_text += "\n-- ... (truncated; see `migledger audit show`)";
    }
  }
}

// "Applied now": each target's whole history up to the checkpoint.
Status ProjectTargets(Ledger* ledger, uint64_t max_sequence, Report* r) {
  for (auto& [key, target] : r->targets) {
    if (key.empty()) continue;
    ProjectionBuilder b;
    MIGLEDGER_RETURN_IF_ERROR(ledger->ScanTarget(
        key, 0, [&](const LedgerEntry& e, const Digest32&, const Digest32&) {
          if (e.sequence <= max_sequence) b.Add(e.event);
          return true;
        }));
    for (const auto& [v, h] : b.projection().versions) {
      if (h.applied) target.applied.push_back(h.version);
    }
    target.unfinished = b.projection().open_attempts.size();
  }
  return Status::Ok();
}

}  // namespace

const char* RunOutcomeName(const RunInfo& r) {
  if (!r.finished) return "unfinished";
  switch (r.outcome) {
    case v1::OUTCOME_SUCCEEDED:
      return "succeeded";
    case v1::OUTCOME_FAILED:
      return "failed";
    case v1::OUTCOME_NOTHING_TO_DO:
      return "nothing to do";
    default:
      return "finished";
  }
}

const char* RunOutcomeClass(const RunInfo& r) {
  if (!r.finished) return "muted";
  return r.outcome == v1::OUTCOME_FAILED ? "bad" : "ok";
}

std::string TargetLabel(const v1::TargetRef& t) {
  if (!t.name().empty()) return t.name();
  if (!t.redacted_uri().empty()) return t.redacted_uri();
  return "(no target)";
}

std::string ActorText(const v1::Actor& a) {
  if (a.os_user().empty() && a.host().empty()) return "";
  return a.os_user() + "@" + a.host();
}

std::string ActorDetails(const v1::Actor& a) {
  std::string s = "pid " + std::to_string(a.pid());
  if (!a.tool_version().empty()) s += ", migledger " + a.tool_version();
  if (!a.ci_job().empty()) s += ", CI job " + a.ci_job();
  if (!a.git_commit().empty()) s += ", commit " + a.git_commit();
  return s;
}

const char* DirName(v1::Direction d) {
  return d == v1::DIRECTION_DOWN ? "down" : "up";
}

Status GatherReport(Ledger* ledger, const HtmlReportOptions& options,
                    Report* r) {
  Collector collector(r);
  ScanFilter scan = options.scan;
  const uint64_t size = options.checkpoint.size;
  if (scan.max_sequence == 0 || scan.max_sequence > size) {
    scan.max_sequence = size;
  }
  if (size > 0) {
    MIGLEDGER_RETURN_IF_ERROR(ledger->Scan(scan, [&](const LedgerEntry& e) {
      if (e.sequence > size) return false;
      if (!options.matches || options.matches(e)) collector.Add(e);
      return true;
    }));
  }
  MIGLEDGER_RETURN_IF_ERROR(ProjectTargets(ledger, size, r));
  FillStatements(ledger, r);
  return Status::Ok();
}

}  // namespace migledger::html_report
