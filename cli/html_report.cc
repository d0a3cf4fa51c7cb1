// The HTML report's page: its sections, made from the report's data
// (html_report_internal.h), in one self-contained document.
#include "cli/html_report.h"

#include <algorithm>
#include <cstdio>

#include "applier/actor.h"
#include "cli/format.h"
#include "cli/html_report_internal.h"
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

namespace html_report {

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

Html TimeCell(int64_t micros) {
  std::string full = FormatRfc3339(micros);
  return "<time datetime=\"" + E(full) + "\" title=\"" + E(full) + "\">" +
         E(ShortTime(micros)) + "</time>";
}

namespace {

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

// The whole page.
Html Page(const Report& report, const HtmlReportOptions& options) {
  Html page =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src "
      "'none'; style-src 'unsafe-inline'\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, "
      "initial-scale=1\">\n"
      "<meta name=\"generator\" content=\"migledger " +
      E(ToolVersion()) + "\">\n<title>Migration audit report &mdash; ledger " +
      E(options.checkpoint.ledger_id) + "</title>\n<style>" + kReportCss +
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
  return page;
}

}  // namespace
}  // namespace html_report

Status WriteHtmlReport(Ledger* ledger, const HtmlReportOptions& options,
                       std::FILE* out) {
  html_report::Report report;
  MIGLEDGER_RETURN_IF_ERROR(
      html_report::GatherReport(ledger, options, &report));
  const std::string page = html_report::Page(report, options);
  if (std::fwrite(page.data(), 1, page.size(), out) != page.size()) {
    return IoError("cannot write the HTML report");
  }
  return Status::Ok();
}

}  // namespace migledger
