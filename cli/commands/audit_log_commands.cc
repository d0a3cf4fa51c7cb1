// audit log and audit export: the selected events as a table, JSON, JSON
// lines, CSV (RFC 4180) or the HTML report.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "cli/command.h"
#include "cli/commands/audit_commands.h"
#include "cli/commands/audit_selection.h"
#include "cli/format.h"
#include "cli/html_report.h"
#include "common/atomic_file.h"
#include "common/sha256.h"
#include "common/time_util.h"
#include "ledger/digest.h"
#include "ledger/merkle.h"

namespace migledger {
namespace {

// RFC 4180: every record, the header too, ends with CRLF.
const char* kCsvHeader =
    "sequence,time,target,database_id,type,version,run_id,os_user,host,summary,"
    "leaf_hash\r\n";

std::string CsvRow(const LedgerEntry& e);

// Colour for people at a terminal only: never when stdout is a file or a
// pipe (tests and scripts capture it), nor with NO_COLOR set or TERM=dumb.
bool UseColour(std::FILE* out) {
  if (!isatty(fileno(out))) return false;
  const char* no_colour = std::getenv("NO_COLOR");
  if (no_colour && *no_colour) return false;
  const char* term = std::getenv("TERM");
  return !(term && std::string(term) == "dumb");
}

// ANSI colour of an event type in the table, nullptr for none.
const char* TypeColour(const std::string& type) {
  if (type == "step_applied") return "\033[32m";
  if (type == "step_failed") return "\033[31m";
  if (type == "step_recovered" || type == "drift_detected") return "\033[33m";
  return nullptr;
}

// PrintTable's layout, with the TYPE column coloured. Escape codes wrap the
// padded cell so they take no width.
void PrintColouredEventTable(
    std::FILE* out, const std::vector<std::string>& header,
    const std::vector<std::vector<std::string>>& rows) {
  const size_t type_column =
      std::find(header.begin(), header.end(), "TYPE") - header.begin();
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], r[i].size());
    }
  }
  auto line = [&](const std::vector<std::string>& r, bool colour) {
    std::string s;
    for (size_t i = 0; i < width.size(); ++i) {
      const std::string text = i < r.size() ? r[i] : "";
      const bool last = i + 1 == width.size();
      const char* c = colour && i == type_column ? TypeColour(text) : nullptr;
      s += c ? c + text + "\033[0m" : text;
      if (!last) s += std::string(width[i] - text.size(), ' ') + "  ";
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    s += '\n';
    std::fputs(s.c_str(), out);
  };
  line(header, false);
  for (const auto& r : rows) line(r, true);
}

Status WriteLog(Ledger* ledger, const LogFilters& f, const std::string& format,
                std::FILE* out) {
  // Bad filters are refused before a byte is written: a csv header or a
  // json "[" on stdout would look like the start of an empty answer.
  MIGLEDGER_RETURN_IF_ERROR(ToScanFilter(f).status());
  if (format == "table") {
    std::vector<std::vector<std::string>> rows;
    MIGLEDGER_RETURN_IF_ERROR(ForEachMatching(
        ledger, f, [&](const LedgerEntry& e) { rows.push_back(EventRow(e)); }));
    if (UseColour(out)) {
      PrintColouredEventTable(out, EventRowHeader(), rows);
    } else {
      PrintTable(out, EventRowHeader(), rows);
    }
    return Status::Ok();
  }
  if (format == "json") {
    bool first = true;
    std::string buf = "[";
    Status st = ForEachMatching(ledger, f, [&](const LedgerEntry& e) {
      buf += first ? "\n" : ",\n";
      first = false;
      Status s = AppendEventJson(e.sequence, e.bytes, &buf);
      (void)s;  // Scan decoded these bytes already
      if (buf.size() > (1 << 16)) {
        std::fwrite(buf.data(), 1, buf.size(), out);
        buf.clear();
      }
    });
    std::fwrite(buf.data(), 1, buf.size(), out);
    MIGLEDGER_RETURN_IF_ERROR(st);
    std::fputs("\n]\n", out);
    return Status::Ok();
  }
  if (format == "jsonl") {
    // The whole ledger (the export an audit asks for) is encoded on every
    // core; a filtered log is a scan of what matches.
    if (NoFilters(f)) return WriteEventsJsonl(ledger, out);
    std::string buf;
    Status st = ForEachMatching(ledger, f, [&](const LedgerEntry& e) {
      Status s = AppendEventJson(e.sequence, e.bytes, &buf);
      (void)s;  // Scan decoded these bytes already
      buf += '\n';
      if (buf.size() > (1 << 16)) {
        std::fwrite(buf.data(), 1, buf.size(), out);
        buf.clear();
      }
    });
    std::fwrite(buf.data(), 1, buf.size(), out);
    return st;
  }
  if (format == "csv") {
    std::fputs(kCsvHeader, out);
    MIGLEDGER_RETURN_IF_ERROR(
        ForEachMatching(ledger, f, [&](const LedgerEntry& e) {
          std::string row = CsvRow(e);
          std::fwrite(row.data(), 1, row.size(), out);
        }));
    return Status::Ok();
  }
  return InvalidInput("unknown format " + format);
}

std::string CsvRow(const LedgerEntry& e) {
  const auto& ev = e.event;
  std::vector<std::string> cells = {std::to_string(e.sequence),
                                    EventTime(ev),
                                    ev.target().name().empty()
                                        ? ev.target().redacted_uri()
                                        : ev.target().name(),
                                    ev.target().database_id(),
                                    EventType(ev),
                                    EventVersion(ev),
                                    ev.run_id(),
                                    ev.actor().os_user(),
                                    ev.actor().host(),
                                    EventSummary(ev),
                                    ToHex(MerkleLeafHash(e.bytes))};
  std::string row;
  for (size_t i = 0; i < cells.size(); ++i) {
    if (i) row += ',';
    row += CsvField(cells[i]);
  }
  row += "\r\n";
  return row;
}

// The HTML report of the selected events, made from the checkpoint of the
// whole ledger as it is now (the same text `audit digest` prints).
Status WriteHtml(Ledger* ledger, const LogFilters& f, std::FILE* out) {
  HtmlReportOptions o;
  MIGLEDGER_ASSIGN_OR_RETURN(o.checkpoint, ledger->Digest("", 0));
  o.checkpoint_text = FormatDigest(o.checkpoint);
  MIGLEDGER_RETURN_IF_ERROR(Selection(ledger, f, &o.scan, &o.matches));
  o.filter_description = DescribeFilters(f);
  o.generated_at_micros = NowMicros();
  return WriteHtmlReport(ledger, o, out);
}

}  // namespace

// audit log: events, oldest first.
void SetupAuditLog(CLI::App* audit, GlobalOptions* g, CommandAction* selected) {
  auto* cmd = audit->add_subcommand("log", "List events, oldest first");
  auto f = std::make_shared<LogFilters>();
  auto format = std::make_shared<std::string>("table");
  AddFilterFlags(cmd, f.get());
  cmd->add_option("--format", *format, "table, json, jsonl or csv")
      ->check(CLI::IsMember({"table", "json", "jsonl", "csv"}))
      ->capture_default_str();
  cmd->callback([=] {
    *selected = [=]() -> Status {
      MIGLEDGER_ASSIGN_OR_RETURN(auto ledger, OpenProjectLedger(*g));
      return WriteLog(ledger.get(), *f, *format, stdout);
    };
  });
}

// audit export: a compliance export written whole or not at all.
void SetupAuditExport(CLI::App* audit, GlobalOptions* g,
                      CommandAction* selected) {
  auto* cmd = audit->add_subcommand(
      "export", "Write a compliance export (jsonl, csv, html report)");
  auto f = std::make_shared<LogFilters>();
  auto format = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  AddFilterFlags(cmd, f.get());
  cmd->add_option(
         "--format", *format,
         "jsonl, csv, or html (a self-contained report with the checkpoint)")
      ->check(CLI::IsMember({"jsonl", "csv", "html"}))
      ->required();
  cmd->add_option("--out", *out, "Output file")->required();
  cmd->callback([=] {
    *selected = [=]() -> Status {
      MIGLEDGER_ASSIGN_OR_RETURN(auto ledger, OpenProjectLedger(*g));
      // Whole or not at all, through a unique temporary file beside it
      // (common/atomic_file.h): nothing planted there is followed.
      MIGLEDGER_RETURN_IF_ERROR(
          WriteFileAtomically(*out, [&](std::FILE* file) -> Status {
            return *format == "html"
                       ? WriteHtml(ledger.get(), *f, file)
                       : WriteLog(ledger.get(), *f, *format, file);
          }));
      std::printf("wrote %s\n", OneLine(*out).c_str());
      return Status::Ok();
    };
  });
}

}  // namespace migledger
