// The HTML report's parts (cli/html_report.h): what the report shows,
// gathered from the ledger in one scan (html_report_data.cc), and the page
// made from it: the timeline's SVG (html_report_timeline.cc), the style
// sheet (html_report_style.cc) and the sections (html_report.cc). Internal
// to cli/.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cli/html_report.h"
#include "common/status.h"
#include "ledger/ledger.h"

namespace migledger::html_report {

using Html = std::string;
// Short alias: every piece of text that reaches the page goes through E().
inline std::string E(std::string_view s) { return HtmlEscape(s); }

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

// Reads the events `options` select up to its checkpoint into *r, with each
// target's state as of the checkpoint and each failing statement's text.
Status GatherReport(Ledger* ledger, const HtmlReportOptions& options,
                    Report* r);

// ---- text shared by the data and the page -----------------------------------

const char* RunOutcomeName(const RunInfo& r);
// The CSS class of a run's outcome: ok, bad or muted.
const char* RunOutcomeClass(const RunInfo& r);
// The target's name, else its redacted URI.
std::string TargetLabel(const v1::TargetRef& t);
// user@host, "" when neither is known.
std::string ActorText(const v1::Actor& a);
// pid, tool version, CI job and commit: the hover text of an actor.
std::string ActorDetails(const v1::Actor& a);
// "2026-11-25 12:48:33" (UTC).
std::string ShortTime(int64_t micros);
// "3.2 ms", "1m 05s", ...
std::string Duration(int64_t micros);
const char* DirName(v1::Direction d);
// <time> element: short UTC text, full RFC 3339 in the title.
Html TimeCell(int64_t micros);

// ---- the page
// ----------------------------------------------------------------

// The page's style sheet.
extern const char kReportCss[];
// The runs, failures and drift of every target on one time axis.
Html TimelineSvg(const Report& r);

}  // namespace migledger::html_report
