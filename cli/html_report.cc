#include "cli/html_report.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <map>
#include <optional>
#include <vector>

#include "applier/actor.h"
#include "applier/planner.h"
#include "applier/sql_splitter.h"
#include "cli/format.h"
#include "common/time_util.h"

namespace migledger {

std::string HtmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      case '\t':
      case '\n':
      case '\r':
        out += c;
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          out += "&#xFFFD;";
        } else {
          out += c;
        }
    }
  }
  return out;
}

namespace {

using Html = std::string;
// Short alias: every piece of text that reaches the page goes through E().
std::string E(std::string_view s) { return HtmlEscape(s); }

int64_t MicrosOf(const v1::Event& e) {
  return e.time().seconds() * 1000000 + e.time().nanos() / 1000;
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

// pid, tool version, CI job and commit: the hover text of an actor.
std::string ActorDetails(const v1::Actor& a) {
  std::string s = "pid " + std::to_string(a.pid());
  if (!a.tool_version().empty()) s += ", migledger " + a.tool_version();
  if (!a.ci_job().empty()) s += ", CI job " + a.ci_job();
  if (!a.git_commit().empty()) s += ", commit " + a.git_commit();
  return s;
}

// "2026-11-25 12:48:33" (UTC).
std::string ShortTime(int64_t micros) {
  std::string t = FormatRfc3339(micros);
  return t.substr(0, 10) + " " + t.substr(11, 8);
}

std::string Duration(int64_t micros) {
  char buf[48];
  if (micros < 0) micros = 0;
  if (micros < 1000) {
    std::snprintf(buf, sizeof buf, "%lld µs", static_cast<long long>(micros));
  } else if (micros < 1000000) {
    std::snprintf(buf, sizeof buf, "%.1f ms", micros / 1000.0);
  } else if (micros < 60000000) {
    std::snprintf(buf, sizeof buf, "%.2f s", micros / 1e6);
  } else if (micros < 3600000000LL) {
    long long s = micros / 1000000;
    std::snprintf(buf, sizeof buf, "%lldm %02llds", s / 60, s % 60);
  } else {
    long long m = micros / 60000000;
    std::snprintf(buf, sizeof buf, "%lldh %02lldm", m / 60, m % 60);
  }
  return buf;
}

const char* DirName(v1::Direction d) {
  return d == v1::DIRECTION_DOWN ? "down" : "up";
}

// <time> element: short UTC text, full RFC 3339 in the title.
Html TimeCell(int64_t micros) {
  std::string full = FormatRfc3339(micros);
  return "<time datetime=\"" + E(full) + "\" title=\"" + E(full) + "\">" +
         E(ShortTime(micros)) + "</time>";
}

// ---- what the report shows, gathered in one scan ---------------------------

struct TargetInfo {
  std::string key;
  v1::TargetRef ref;
  uint64_t events = 0;
  uint64_t failures = 0;
  uint64_t runs = 0;
  std::optional<int64_t> last_run;
  // As of the checkpoint, from the target's whole history.
  std::vector<std::string> applied;
  size_t unfinished = 0;
};

struct FailureInfo {
  uint64_t sequence = 0;
  int64_t time = 0;
  std::string target_label, target_kind, run_id, actor;
  v1::StepFailed f;
  std::string slug;            // of the migration, when its start is known
  std::string statement_text;  // the failing statement, when known
};

struct AttemptInfo {
  std::string attempt_id;
  uint64_t sequence = 0;  // of its first event in the selection
  std::string target_label, target_kind, version, slug, actor, actor_details,
      checksum, sql_blob;
  v1::Direction direction = v1::DIRECTION_UP;
  std::optional<int64_t> started;
  std::optional<int64_t> duration;
  std::string outcome;        // applied, reverted, failed, recovered (...)
  std::string outcome_class;  // ok, warn, bad, muted
  uint64_t failure_sequence = 0;
};

struct RunInfo {
  std::string run_id;
  std::string target_key, target_label;
  std::string actor, actor_details, command, reason, message;
  uint64_t sequence = 0;
  int64_t first = 0, last = 0;  // event times seen in the selection
  std::optional<int64_t> started, finished;
  v1::Outcome outcome = v1::OUTCOME_UNSPECIFIED;
  int planned = 0, steps_done = 0;
};

struct Marker {  // a failure or drift on the timeline
  std::string target_key;
  int64_t time = 0;
  bool failure = true;
  std::string text;
};

struct OtherEvent {
  uint64_t sequence = 0;
  int64_t time = 0;
  std::string target_label, type, version, actor, summary;
};

struct Report {
  std::vector<std::string> target_order;
  std::map<std::string, TargetInfo> targets;
  std::vector<RunInfo> runs;
  std::map<std::string, size_t> run_index;
  std::vector<AttemptInfo> attempts;
  std::map<std::string, size_t> attempt_index;
  std::vector<FailureInfo> failures;
  std::vector<Marker> markers;
  std::vector<OtherEvent> others;
  uint64_t events = 0;
};

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
      case v1::Event::kRunStarted: {
        RunInfo& run = Run(e, entry.sequence, label);
        run.started = t;
        run.actor = ActorText(e.actor());
        run.actor_details = ActorDetails(e.actor());
        run.command = e.run_started().command();
        run.reason = e.run_started().reason();
        run.planned = e.run_started().plan_size();
        target.runs++;
        if (!target.last_run || *target.last_run < t) target.last_run = t;
        break;
      }
      case v1::Event::kRunFinished: {
        RunInfo& run = Run(e, entry.sequence, label);
        run.finished = t;
        run.outcome = e.run_finished().outcome();
        run.steps_done = e.run_finished().steps_done();
        run.message = e.run_finished().message();
        break;
      }
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
      case v1::Event::kStepFailed: {
        const auto& s = e.step_failed();
        AttemptInfo& a =
            Attempt(e, s.attempt_id(), s.version(), entry.sequence);
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
                                   DirName(s.direction()) + ": " +
                                   s.message()});
        target.failures++;
        break;
      }
      case v1::Event::kStepRecovered: {
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
        break;
      }
      case v1::Event::kStatementApplied:
        break;  // progress inside a step: the step row covers it
      case v1::Event::kDriftDetected:
        r_->markers.push_back(
            {TargetKeyOf(e), t, false, "drift_detected: " + EventSummary(e)});
        [[fallthrough]];
      default: {
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
    }
  }

 private:
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

// ---- the page ---------------------------------------------------------------

const char* kCss = R"CSS(
:root {
  --fg: #1f2328; --muted: #59636e; --faint: #818b98; --line: #d1d9e0;
  --soft: #f6f8fa; --accent: #0b5cad; --bg: #ffffff;
  --ok: #1a7f37; --ok-bg: #dafbe1; --bad: #cf222e; --bad-bg: #ffebe9;
  --warn: #9a6700; --warn-bg: #fff8c5; --info: #0969da; --info-bg: #ddf4ff;
  --grey: #8c959f; --grey-bg: #eff2f5;
  --mono: ui-monospace, SFMono-Regular, "DejaVu Sans Mono", Menlo, Consolas,
          "Liberation Mono", monospace;
}
* { box-sizing: border-box; }
html { background: #eef1f4; }
body {
  margin: 0; color: var(--fg); line-height: 1.45; font-size: 14px;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans",
               "Helvetica Neue", Arial, "Liberation Sans", sans-serif;
}
main { max-width: 1200px; margin: 24px auto; background: var(--bg);
       border: 1px solid var(--line); border-radius: 10px; overflow: hidden; }
section { padding: 22px 32px; border-top: 1px solid var(--line); }
h1 { font-size: 26px; margin: 2px 0 14px; font-weight: 650; letter-spacing: -0.01em; }
h2 { font-size: 18px; margin: 0 0 12px; font-weight: 650; }
h2 .count { color: var(--muted); font-weight: 400; font-size: 14px; margin-left: 6px; }
p { margin: 0 0 10px; }
code, pre, .mono { font-family: var(--mono); font-size: 12.5px; }
.muted { color: var(--muted); }
.report-header { padding: 26px 32px 22px; border-top: 0;
  background: linear-gradient(180deg, #f3f6fa 0%, #ffffff 100%); }
.eyebrow { text-transform: uppercase; letter-spacing: 0.08em; font-size: 11.5px;
  color: var(--accent); font-weight: 650; }
.header-grid { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1.1fr);
  gap: 28px; align-items: start; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 6px 16px; margin: 0; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
.checkpoint { border: 1px solid var(--line); border-radius: 8px; background: #fff; }
.checkpoint h3 { margin: 0; padding: 9px 14px; font-size: 13px; font-weight: 650;
  border-bottom: 1px solid var(--line); background: var(--soft);
  border-radius: 8px 8px 0 0; }
.checkpoint pre { margin: 0; padding: 10px 14px; white-space: pre-wrap;
  overflow-wrap: anywhere; }
.checkpoint p { padding: 0 14px 10px; margin: 0; color: var(--muted); font-size: 12.5px; }
.stats { display: grid; grid-template-columns: repeat(5, 1fr); gap: 14px; }
.stat { border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
.stat .n { font-size: 26px; font-weight: 650; line-height: 1.1; }
.stat .l { color: var(--muted); font-size: 12.5px; }
.stat.bad .n { color: var(--bad); }
.stat.ok .n { color: var(--ok); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em;
  color: var(--muted); font-weight: 600; background: var(--soft);
  border-bottom: 1px solid var(--line); white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.nowrap { white-space: nowrap; }
td.wrap { overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; border: 1px solid var(--line); border-radius: 8px; }
.table-wrap table tr:last-child td { border-bottom: 0; }
.versions { color: var(--muted); font-family: var(--mono); font-size: 12px;
  margin-top: 2px; overflow-wrap: anywhere; }
.slug { color: var(--muted); }
.badge { display: inline-block; padding: 1px 9px; border-radius: 999px;
  font-size: 12px; font-weight: 600; white-space: nowrap; text-decoration: none;
  border: 1px solid transparent; }
.badge.ok { color: var(--ok); background: var(--ok-bg); border-color: #aceebb; }
.badge.bad { color: var(--bad); background: var(--bad-bg); border-color: #ffcecb; }
.badge.warn { color: var(--warn); background: var(--warn-bg); border-color: #f5e0a0; }
.badge.info { color: var(--info); background: var(--info-bg); border-color: #b6e3ff; }
.badge.muted { color: #57606a; background: var(--grey-bg); border-color: #d8dee4; }
a.badge:hover { text-decoration: underline; }
.dir { font-size: 12px; font-weight: 600; }
.dir.down { color: var(--warn); }
.legend { display: flex; gap: 18px; flex-wrap: wrap; margin: 0 0 10px;
  color: var(--muted); font-size: 12.5px; }
.legend span { display: inline-flex; align-items: center; gap: 6px; }
.swatch { width: 18px; height: 10px; border-radius: 3px; display: inline-block; }
.timeline { border: 1px solid var(--line); border-radius: 8px; padding: 8px 6px 2px;
  margin-bottom: 16px; }
.timeline svg { display: block; width: 100%; height: auto; }
.timeline text { font-family: system-ui, -apple-system, "Segoe UI", Roboto,
  "Noto Sans", Arial, "Liberation Sans", sans-serif; }
.empty { color: var(--muted); font-style: italic; }
.failure { border: 1px solid #ffcecb; border-left: 4px solid var(--bad);
  border-radius: 8px; margin: 0 0 14px; overflow: hidden; }
.failure > header { background: var(--bad-bg); padding: 9px 14px;
  display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; }
.failure > header .what { font-weight: 650; }
.failure > header .where { color: var(--muted); font-size: 12.5px; }
.failure dl { display: grid; grid-template-columns: 110px minmax(0, 1fr);
  gap: 6px 14px; margin: 0; padding: 12px 14px; }
.failure dt { color: var(--muted); font-size: 12.5px; padding-top: 1px; }
.failure dd { margin: 0; overflow-wrap: anywhere; }
.failure .message { font-weight: 600; white-space: pre-wrap; }
.failure pre { margin: 0; padding: 8px 10px; background: var(--soft);
  border: 1px solid var(--line); border-radius: 6px; white-space: pre-wrap;
  overflow-wrap: anywhere; }
footer { padding: 14px 32px 18px; border-top: 1px solid var(--line);
  color: var(--faint); font-size: 12px; background: var(--soft); }
@media (max-width: 900px) {
  .header-grid { grid-template-columns: 1fr; }
  .stats { grid-template-columns: repeat(2, 1fr); }
  section, .report-header { padding-left: 16px; padding-right: 16px; }
}
@media print {
  html { background: #fff; }
  main { margin: 0; border: 0; max-width: none; }
  section { break-inside: auto; }
  .failure, tr { break-inside: avoid; }
}
)CSS";

// Colours of the SVG marks (the CSS variables do not reach SVG attributes in
// every viewer, so they are literal).
const char* RunFill(const RunInfo& r) {
  if (!r.finished) return "#afb8c1";
  return r.outcome == v1::OUTCOME_FAILED ? "#cf222e" : "#2da44e";
}

struct TickStep {
  int64_t micros;
  int kind;  // 0: sub-second, 1: seconds, 2: minutes/hours, 3: days
};

std::string TickLabel(int64_t t, const TickStep& step, bool multi_day) {
  std::string s = FormatRfc3339(t);  // YYYY-MM-DDTHH:MM:SS.ffffffZ
  switch (step.kind) {
    case 0:
      return s.substr(11, 12);  // HH:MM:SS.mmm
    case 1:
      return s.substr(11, 8);
    case 2:
      return multi_day ? s.substr(5, 5) + " " + s.substr(11, 5)
                       : s.substr(11, 5);
    default:
      return s.substr(0, 10);
  }
}

Html TimelineSvg(const Report& r) {
  // Lanes: one per target that has runs or markers, in order of appearance.
  std::vector<std::string> lanes;
  auto lane_of = [&](const std::string& key) {
    auto it = std::find(lanes.begin(), lanes.end(), key);
    if (it != lanes.end()) return static_cast<size_t>(it - lanes.begin());
    lanes.push_back(key);
    return lanes.size() - 1;
  };
  int64_t lo = LLONG_MAX, hi = LLONG_MIN;
  for (const RunInfo& run : r.runs) {
    lane_of(run.target_key);
    lo = std::min(lo, run.started.value_or(run.first));
    hi = std::max(hi, run.finished.value_or(run.last));
  }
  for (const Marker& m : r.markers) {
    lane_of(m.target_key);
    lo = std::min(lo, m.time);
    hi = std::max(hi, m.time);
  }
  if (lanes.empty()) return "";
  if (hi - lo < 1000) {  // one instant: show a second around it
    lo -= 500000;
    hi += 500000;
  }
  int64_t pad = (hi - lo) / 25;
  lo -= pad;
  hi += pad;
  const double kWidth = 1100, kLeft = 168, kRight = 20, kTop = 8, kLane = 46,
               kAxis = 34;
  const double plot = kWidth - kLeft - kRight;
  const double height = kTop + kLane * lanes.size() + kAxis;
  auto x_of = [&](int64_t t) {
    return kLeft +
           plot * static_cast<double>(t - lo) / static_cast<double>(hi - lo);
  };
  char buf[512];
  Html svg;
  std::snprintf(buf, sizeof buf,
                "<svg id=\"timeline-svg\" viewBox=\"0 0 %.0f %.0f\" "
                "role=\"img\" aria-label=\"Runs over time\">\n",
                kWidth, height);
  svg += buf;
  // Lane backgrounds and labels.
  for (size_t i = 0; i < lanes.size(); ++i) {
    double y = kTop + kLane * i;
    auto it = r.targets.find(lanes[i]);
    std::string label =
        it == r.targets.end() ? "(no target)" : TargetLabel(it->second.ref);
    std::string shown = label.size() > 22 ? label.substr(0, 21) + "…" : label;
    std::snprintf(buf, sizeof buf,
                  "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                  "fill=\"%s\"/>\n",
                  kLeft, y, plot, kLane, i % 2 ? "#ffffff" : "#f6f8fa");
    svg += buf;
    std::snprintf(buf, sizeof buf,
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" "
                  "font-size=\"13\" fill=\"#1f2328\">",
                  kLeft - 12, y + kLane / 2 + 4.5);
    svg += buf;
    svg += "<title>" + E(label) + "</title>" + E(shown) + "</text>\n";
  }
  // Grid and axis.
  static const TickStep kSteps[] = {
      {1000, 0},          {2000, 0},          {5000, 0},
      {10000, 0},         {20000, 0},         {50000, 0},
      {100000, 0},        {200000, 0},        {500000, 0},
      {1000000, 1},       {2000000, 1},       {5000000, 1},
      {10000000, 1},      {15000000, 1},      {30000000, 1},
      {60000000, 2},      {120000000, 2},     {300000000, 2},
      {600000000, 2},     {900000000, 2},     {1800000000, 2},
      {3600000000, 2},    {7200000000, 2},    {10800000000, 2},
      {21600000000, 2},   {43200000000, 2},   {86400000000, 3},
      {172800000000, 3},  {604800000000, 3},  {1209600000000, 3},
      {2592000000000, 3}, {7776000000000, 3}, {31536000000000, 3}};
  TickStep step = kSteps[std::size(kSteps) - 1];
  for (const TickStep& s : kSteps) {
    if ((hi - lo) / s.micros <= 9) {
      step = s;
      break;
    }
  }
  const bool multi_day = lo / 86400000000LL != hi / 86400000000LL;
  const double axis_y = kTop + kLane * lanes.size();
  int64_t first =
      (lo / step.micros + (lo % step.micros > 0 ? 1 : 0)) * step.micros;
  for (int64_t t = first; t <= hi; t += step.micros) {
    double x = x_of(t);
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                  "stroke=\"#d8dee4\" stroke-width=\"1\"/>\n",
                  x, kTop, x, axis_y + 5);
    svg += buf;
    std::string label = TickLabel(t, step, multi_day);
    double half = 3.4 * label.size();  // about half the label's width
    if (x - half < kLeft - 4 || x + half > kWidth - 2) continue;
    std::snprintf(buf, sizeof buf,
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
                  "font-size=\"11.5\" fill=\"#59636e\">",
                  x, axis_y + 19);
    svg += buf;
    svg += E(label) + "</text>\n";
  }
  std::snprintf(buf, sizeof buf,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                "stroke=\"#8c959f\" stroke-width=\"1\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" "
                "font-size=\"11.5\" fill=\"#818b98\">UTC</text>\n",
                kLeft, axis_y, kWidth - kRight, axis_y, kLeft - 12,
                axis_y + 19);
  svg += buf;
  // One bar per run.
  for (const RunInfo& run : r.runs) {
    size_t lane = lane_of(run.target_key);
    int64_t start = run.started.value_or(run.first);
    int64_t end = run.finished.value_or(run.last);
    double x1 = x_of(start), x2 = x_of(end);
    double w = x2 - x1;
    if (w < 8) {  // too short to see: an 8 px mark centred on the run
      x1 = (x1 + x2) / 2 - 4;
      w = 8;
    }
    x1 = std::max(x1, kLeft);
    if (x1 + w > kWidth - kRight) x1 = kWidth - kRight - w;
    double y = kTop + kLane * lane + kLane / 2 - 2;
    std::string title = std::string("Run ") + RunOutcomeName(run) + " — " +
                        run.target_label + "\n" + ShortTime(start) + " UTC";
    if (run.finished)
      title += " → " + ShortTime(end) + " (" + Duration(end - start) + ")";
    if (!run.actor.empty()) title += "\nby " + run.actor;
    if (!run.command.empty()) title += "\n" + run.command;
    if (!run.reason.empty()) title += "\nreason: " + run.reason;
    if (!run.message.empty()) title += "\n" + run.message;
    title += "\nrun " + run.run_id;
    std::snprintf(
        buf, sizeof buf,
        "<rect class=\"run %s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
        "height=\"14\" rx=\"3\" fill=\"%s\"%s>",
        RunOutcomeClass(run), x1, y, w, RunFill(run),
        run.finished ? "" : " stroke=\"#6e7781\" stroke-dasharray=\"3 2\"");
    svg += buf;
    svg += "<title>" + E(title) + "</title></rect>\n";
  }
  // Failures (red diamonds) and drift (amber triangles): pins above the
  // run they happened in.
  for (const Marker& m : r.markers) {
    size_t lane = lane_of(m.target_key);
    double x = std::clamp(x_of(m.time), kLeft + 6, kWidth - kRight - 6);
    double top = kTop + kLane * lane + 4;  // marker top; bar starts at +21
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                  "stroke=\"%s\" stroke-width=\"1.5\"/>\n",
                  x, top + 10, x, top + 18, m.failure ? "#82071e" : "#bf8700");
    svg += buf;
    if (m.failure) {
      std::snprintf(buf, sizeof buf,
                    "<path class=\"failure-mark\" d=\"M%.1f %.1fl6.5 6.5-6.5 "
                    "6.5-6.5-6.5z\" fill=\"#82071e\" stroke=\"#ffffff\" "
                    "stroke-width=\"1\">",
                    x, top);
    } else {
      std::snprintf(buf, sizeof buf,
                    "<path class=\"drift-mark\" d=\"M%.1f %.1fl7 12h-14z\" "
                    "fill=\"#d4a72c\" stroke=\"#ffffff\" stroke-width=\"1\">",
                    x, top);
    }
    svg += buf;
    svg += "<title>" + E(ShortTime(m.time) + " UTC\n" + m.text) +
           "</title></path>\n";
  }
  svg += "</svg>\n";
  return svg;
}

Html Badge(const std::string& cls, const std::string& text) {
  return "<span class=\"badge " + cls + "\">" + E(text) + "</span>";
}

Html HeaderSection(const Report& r, const HtmlReportOptions& o) {
  const LedgerDigest& d = o.checkpoint;
  Html h = "<header class=\"report-header\">\n";
  h += "<div class=\"eyebrow\">migledger &middot; audit report</div>\n";
  h += "<h1>Database migration audit report</h1>\n";
  h += "<div class=\"header-grid\">\n<dl class=\"meta\">\n";
  h += "<dt>Ledger id</dt><dd><code id=\"ledger-id\">" + E(d.ledger_id) +
       "</code></dd>\n";
  h += "<dt>Generated</dt><dd>" + TimeCell(o.generated_at_micros) +
       " UTC</dd>\n";
  h += "<dt>Checkpoint</dt><dd>" + std::to_string(d.size) +
       " events, RFC 6962 root <code title=\"" + E(ToHex(d.root)) + "\">" +
       E(ToHex(d.root).substr(0, 16)) + "…</code></dd>\n";
  h += "<dt>Selection</dt><dd>" +
       (o.filter_description.empty()
            ? std::string("all events")
            : "<code>" + E(o.filter_description) + "</code>") +
       " &mdash; " + std::to_string(r.events) + " of " +
       std::to_string(d.size) + " events</dd>\n";
  h += "<dt>Tool</dt><dd>migledger " + E(ToolVersion()) + "</dd>\n";
  h += "</dl>\n";
  h += "<div class=\"checkpoint\"><h3>Checkpoint (<code>migledger audit "
       "digest</code>)</h3>\n";
  h += "<pre id=\"checkpoint\">" + E(o.checkpoint_text) + "</pre>\n";
  h += "<p>This report covers ledger events 1&ndash;" + std::to_string(d.size) +
       ". To check it against the ledger, save the block above to a file and "
       "run <code>migledger audit verify --digest FILE</code>.</p></div>\n";
  h += "</div>\n</header>\n";
  return h;
}

Html StatsSection(const Report& r) {
  size_t ok = 0, failed = 0;
  for (const RunInfo& run : r.runs) {
    if (run.finished && run.outcome == v1::OUTCOME_FAILED) {
      failed++;
    } else if (run.finished) {
      ok++;
    }
  }
  auto stat = [](const char* cls, size_t n, const std::string& label) {
    return "<div class=\"stat " + std::string(cls) + "\"><div class=\"n\">" +
           std::to_string(n) + "</div><div class=\"l\">" + label +
           "</div></div>\n";
  };
  Html h = "<section class=\"stats\" aria-label=\"Totals\">\n";
  h += stat("", r.targets.size(), "targets");
  h += stat("", r.runs.size(),
            "runs (" + std::to_string(ok) + " succeeded, " +
                std::to_string(failed) + " failed)");
  h += stat("", r.attempts.size(), "step attempts");
  h += stat(r.failures.empty() ? "ok" : "bad", r.failures.size(), "failures");
  h += stat("", r.events, "events in selection");
  h += "</section>\n";
  return h;
}

Html TargetsSection(const Report& r) {
  Html h = "<section id=\"targets\">\n<h2>Targets</h2>\n";
  if (r.targets.empty()) {
    return h +
           "<p class=\"empty\">No events in this selection.</p>\n</section>\n";
  }
  h += "<div class=\"table-wrap\"><table id=\"summary\" class=\"summary\">\n"
       "<thead><tr><th>Target</th><th>Redacted URI</th><th>Kind</th>"
       "<th>Database id</th><th class=\"num\">Events</th><th>Applied now</th>"
       "<th class=\"num\">Failures</th><th>Last run (UTC)</th></tr></thead>\n"
       "<tbody>\n";
  for (const std::string& key : r.target_order) {
    const TargetInfo& t = r.targets.at(key);
    h += "<tr><td><b>" + E(t.ref.name().empty() ? "(unnamed)" : t.ref.name()) +
         "</b></td>";
    h += "<td class=\"wrap\"><code>" + E(t.ref.redacted_uri()) + "</code></td>";
    h += "<td>" + E(t.ref.kind()) + "</td>";
    h += "<td class=\"wrap\"><code>" + E(t.ref.database_id()) + "</code></td>";
    h += "<td class=\"num\">" + std::to_string(t.events) + "</td>";
    h += "<td>";
    if (key.empty()) {
      h += "&mdash;";
    } else {
      std::string all;
      for (const auto& v : t.applied) all += (all.empty() ? "" : ", ") + v;
      h += "<b>" + std::to_string(t.applied.size()) + "</b> applied";
      if (!t.applied.empty()) {
        h += ", latest <code>" + E(t.applied.back()) + "</code>";
      }
      if (t.applied.size() > 1) {
        h += "<div class=\"versions\" title=\"" + E(all) + "\">";
        if (t.applied.size() <= 24) {
          h += E(all);
        } else {
          h += E(t.applied.front()) + " &hellip; " + E(t.applied.back());
        }
        h += "</div>";
      }
      if (t.unfinished) {
        h += " " + Badge("warn", std::to_string(t.unfinished) + " unfinished");
      }
    }
    h += "</td>";
    h += "<td class=\"num\">" +
         (t.failures ? "<span class=\"badge bad\">" +
                           std::to_string(t.failures) + "</span>"
                     : std::string("0")) +
         "</td>";
    h += "<td class=\"nowrap\">" +
         (t.last_run ? TimeCell(*t.last_run) : std::string("&mdash;")) +
         "</td></tr>\n";
  }
  h += "</tbody></table></div>\n</section>\n";
  return h;
}

Html TimelineSection(const Report& r) {
  Html h = "<section id=\"timeline\">\n<h2>Timeline<span class=\"count\">" +
           std::to_string(r.runs.size()) + " run(s)</span></h2>\n";
  Html svg = TimelineSvg(r);
  if (svg.empty()) {
    return h +
           "<p class=\"empty\">No runs in this selection.</p>\n</section>\n";
  }
  h += "<div class=\"legend\">"
       "<span><i class=\"swatch\" style=\"background:#2da44e\"></i>run "
       "succeeded</span>"
       "<span><i class=\"swatch\" style=\"background:#cf222e\"></i>run "
       "failed</span>"
       "<span><i class=\"swatch\" style=\"background:#afb8c1;border:1px dashed "
       "#6e7781\"></i>unfinished</span>"
       "<span><svg width=\"14\" height=\"14\" viewBox=\"0 0 14 14\"><path "
       "d=\"M7 0l7 7-7 7-7-7z\" fill=\"#82071e\"/></svg>step failed</span>"
       "<span><svg width=\"14\" height=\"14\" viewBox=\"0 0 14 14\"><path "
       "d=\"M7 0l7 13H0z\" fill=\"#d4a72c\"/></svg>drift detected</span>"
       "</div>\n";
  h += "<div class=\"timeline\">\n" + svg + "</div>\n";
  h += "<div class=\"table-wrap\"><table id=\"runs\">\n<thead><tr>"
       "<th class=\"num\">Seq</th><th>Started (UTC)</th><th>Target</th>"
       "<th>Actor</th><th>Command</th><th class=\"num\">Steps</th>"
       "<th>Duration</th><th>Outcome</th></tr></thead>\n<tbody>\n";
  for (const RunInfo& run : r.runs) {
    int64_t start = run.started.value_or(run.first);
    h += "<tr><td class=\"num\">" + std::to_string(run.sequence) + "</td>";
    h += "<td class=\"nowrap\">" + TimeCell(start) + "</td>";
    h += "<td>" + E(run.target_label) + "</td>";
    h += "<td class=\"nowrap\" title=\"" + E(run.actor_details) + "\">" +
         E(run.actor) + "</td>";
    h += "<td class=\"wrap\"><code>" + E(run.command) + "</code>";
    if (!run.reason.empty()) {
      h += "<div class=\"muted\">reason: " + E(run.reason) + "</div>";
    }
    h += "</td>";
    h += "<td class=\"num\">" +
         (run.finished ? std::to_string(run.steps_done) + " / " +
                             std::to_string(run.planned)
                       : "? / " + std::to_string(run.planned)) +
         "</td>";
    h += "<td class=\"nowrap\">" +
         (run.finished ? E(Duration(*run.finished - start))
                       : std::string("&mdash;")) +
         "</td>";
    h += "<td>" + Badge(RunOutcomeClass(run), RunOutcomeName(run)) +
         "</td></tr>\n";
  }
  h += "</tbody></table></div>\n</section>\n";
  return h;
}

Html StepsSection(const Report& r) {
  Html h = "<section id=\"steps\">\n<h2>Steps<span class=\"count\">" +
           std::to_string(r.attempts.size()) + " attempt(s)</span></h2>\n";
  if (r.attempts.empty()) {
    return h +
           "<p class=\"empty\">No steps in this selection.</p>\n</section>\n";
  }
  h += "<div class=\"table-wrap\"><table id=\"steps-table\">\n<thead><tr>"
       "<th class=\"num\">Seq</th><th>Target</th><th>Version</th>"
       "<th>Direction</th><th>Actor</th><th>Started (UTC)</th>"
       "<th class=\"num\">Duration</th><th>Checksum</th><th>Outcome</th>"
       "</tr></thead>\n<tbody>\n";
  for (const AttemptInfo& a : r.attempts) {
    const char* dir = DirName(a.direction);
    h += "<tr><td class=\"num\" title=\"attempt " + E(a.attempt_id) + "\">" +
         std::to_string(a.sequence) + "</td>";
    h += "<td>" + E(a.target_label) + "</td>";
    h += "<td class=\"nowrap\"><b class=\"mono\">" + E(a.version) + "</b>";
    if (!a.slug.empty()) h += " <span class=\"slug\">" + E(a.slug) + "</span>";
    h += "</td>";
    h += "<td><span class=\"dir " + std::string(dir) + "\">" +
         (a.direction == v1::DIRECTION_DOWN ? "&darr; down" : "&uarr; up") +
         "</span></td>";
    h += "<td class=\"nowrap\" title=\"" + E(a.actor_details) + "\">" +
         E(a.actor) + "</td>";
    h += "<td class=\"nowrap\">" +
         (a.started ? TimeCell(*a.started) : std::string("&mdash;")) + "</td>";
    h += "<td class=\"num nowrap\">" +
         (a.duration ? E(Duration(*a.duration)) : std::string("&mdash;")) +
         "</td>";
    h += "<td>" +
         (a.checksum.empty() ? std::string("&mdash;")
                             : "<code title=\"sha256:" + E(a.checksum) + "\">" +
                                   E(a.checksum.substr(0, 12)) + "</code>") +
         "</td>";
    if (a.failure_sequence) {
      h += "<td><a class=\"badge bad\" href=\"#failure-" +
           std::to_string(a.failure_sequence) + "\">failed</a></td>";
    } else {
      h += "<td>" + Badge(a.outcome_class, a.outcome) + "</td>";
    }
    h += "</tr>\n";
  }
  h += "</tbody></table></div>\n</section>\n";
  return h;
}

Html FailuresSection(const Report& r) {
  Html h = "<section id=\"failures\">\n<h2>Failures<span class=\"count\">" +
           std::to_string(r.failures.size()) + "</span></h2>\n";
  if (r.failures.empty()) {
    return h +
           "<p class=\"empty\">No failed steps in this selection.</p>\n"
           "</section>\n";
  }
  for (const FailureInfo& fi : r.failures) {
    const v1::StepFailed& f = fi.f;
    h += "<article class=\"failure\" id=\"failure-" +
         std::to_string(fi.sequence) + "\">\n<header>" +
         Badge("bad", "failed") + "<span class=\"what\">" + E(f.version()) +
         (fi.slug.empty() ? "" : " " + E(fi.slug)) + " &middot; " +
         DirName(f.direction()) + "</span><span class=\"where\">target " +
         E(fi.target_label) + " &middot; " + TimeCell(fi.time) +
         " UTC &middot; seq " + std::to_string(fi.sequence) +
         (fi.actor.empty() ? "" : " &middot; " + E(fi.actor)) +
         "</span></header>\n<dl>\n";
    std::string location = f.file();
    if (f.file_line() > 0) location += ":" + std::to_string(f.file_line());
    h += "<dt>Location</dt><dd><code>" +
         (location.empty() ? std::string("unknown") : E(location)) + "</code>";
    if (f.statement_index() >= 0) {
      h += " &mdash; statement " + std::to_string(f.statement_index() + 1);
    }
    h += "</dd>\n";
    if (!fi.statement_text.empty()) {
      h += "<dt>Statement</dt><dd><pre>" + E(fi.statement_text) +
           "</pre></dd>\n";
    }
    std::string code;
    if (!f.sqlstate().empty()) code = "SQLSTATE " + f.sqlstate();
    if (f.native_code() != 0) {
      code += (code.empty() ? "" : ", ") +
              std::string(fi.target_kind == "sqlite" ? "SQLite code "
                                                     : "native code ") +
              std::to_string(f.native_code());
    }
    h += "<dt>Code</dt><dd><code>" +
         (code.empty() ? std::string("&mdash;") : E(code)) + "</code></dd>\n";
    h += "<dt>Message</dt><dd class=\"message\">" + E(f.message()) + "</dd>\n";
    if (!f.detail().empty()) {
      h += "<dt>Detail</dt><dd>" + E(f.detail()) + "</dd>\n";
    }
    if (!f.hint().empty()) h += "<dt>Hint</dt><dd>" + E(f.hint()) + "</dd>\n";
    h += "<dt>Effect</dt><dd>" +
         std::string(f.rolled_back()
                         ? "rolled back (nothing of this step remains)"
                         : "no-transaction step stopped mid-way (statements "
                           "before this one stay applied)") +
         ", after " + E(Duration(f.duration_micros())) + "</dd>\n";
    h += "<dt>Attempt</dt><dd><code>" + E(f.attempt_id()) +
         "</code> in run <code>" + E(fi.run_id) + "</code></dd>\n";
    h += "</dl>\n</article>\n";
  }
  h += "</section>\n";
  return h;
}

Html OthersSection(const Report& r) {
  if (r.others.empty()) return "";
  Html h =
      "<section id=\"other-events\">\n<h2>Other ledger events"
      "<span class=\"count\">" +
      std::to_string(r.others.size()) + "</span></h2>\n";
  h += "<div class=\"table-wrap\"><table>\n<thead><tr><th class=\"num\">Seq"
       "</th><th>Time (UTC)</th><th>Target</th><th>Type</th><th>Version</th>"
       "<th>Actor</th><th>Details</th></tr></thead>\n<tbody>\n";
  for (const OtherEvent& o : r.others) {
    std::string cls = o.type == "drift_detected" ? "warn" : "muted";
    h += "<tr><td class=\"num\">" + std::to_string(o.sequence) + "</td>";
    h += "<td class=\"nowrap\">" + TimeCell(o.time) + "</td>";
    h += "<td>" + E(o.target_label) + "</td>";
    h += "<td>" + Badge(cls, o.type) + "</td>";
    h += "<td class=\"mono\">" + E(o.version) + "</td>";
    h += "<td class=\"nowrap\">" + E(o.actor) + "</td>";
    h += "<td class=\"wrap\">" + E(o.summary) + "</td></tr>\n";
  }
  h += "</tbody></table></div>\n</section>\n";
  return h;
}

}  // namespace

Status WriteHtmlReport(Ledger* ledger, const HtmlReportOptions& options,
                       std::FILE* out) {
  Report report;
  Collector collector(&report);
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
  MIGLEDGER_RETURN_IF_ERROR(ProjectTargets(ledger, size, &report));
  FillStatements(ledger, &report);

  Html page =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src "
      "'none'; style-src 'unsafe-inline'\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, "
      "initial-scale=1\">\n"
      "<meta name=\"generator\" content=\"migledger " +
      E(ToolVersion()) + "\">\n<title>Migration audit report &mdash; ledger " +
      E(options.checkpoint.ledger_id) + "</title>\n<style>" + kCss +
      "</style>\n</head>\n<body>\n<main>\n";
  page += HeaderSection(report, options);
  page += StatsSection(report);
  page += TargetsSection(report);
  page += TimelineSection(report);
  page += StepsSection(report);
  page += FailuresSection(report);
  page += OthersSection(report);
  page += "<footer>Generated by migledger " + E(ToolVersion()) + " on " +
          E(FormatRfc3339(options.generated_at_micros)) + " from ledger " +
          E(options.checkpoint.ledger_id) +
          ". Times are UTC. Event text is shown as recorded.</footer>\n";
  page += "</main>\n</body>\n</html>\n";
  if (std::fwrite(page.data(), 1, page.size(), out) != page.size()) {
    return IoError("cannot write the HTML report");
  }
  return Status::Ok();
}

}  // namespace migledger
