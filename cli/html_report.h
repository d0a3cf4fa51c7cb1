// The HTML audit report (`migledger audit export --format html`): one
// self-contained page for people who must sign off on what happened to a
// database. Inline CSS and inline SVG only: no scripts, fonts, images or
// style sheets from anywhere (a Content-Security-Policy forbids them), so the
// file can be archived, mailed and opened offline.
//
// Every piece of event text is untrusted (SQL error messages, reasons,
// commands) and is HTML-escaped.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "ledger/ledger.h"

namespace migledger {

struct HtmlReportOptions {
  // The checkpoint the report is made from. Only events with a sequence up to
  // checkpoint.size are read, so the report and the checkpoint printed in it
  // agree even while others append to the ledger.
  LedgerDigest checkpoint;
  // Exactly what `migledger audit digest` prints for `checkpoint`; shown
  // verbatim in <pre id="checkpoint"> so an auditor can save it and run
  // `migledger audit verify --digest FILE`.
  std::string checkpoint_text;
  // Which events the report covers: what the ledger index can select, and a
  // predicate for the rest (null: every event the scan returns).
  ScanFilter scan;
  std::function<bool(const LedgerEntry&)> matches;
  // The filters as the user gave them ("--target dev --since 2026-01-01"),
  // shown in the header; "" when none.
  std::string filter_description;
  // When the report was made (microseconds since the Unix epoch).
  int64_t generated_at_micros = 0;
};

// Reads the selected events and writes the whole page to `out`. Per-target
// "applied now" state is projected from each target's full history up to the
// checkpoint, whatever the filters.
Status WriteHtmlReport(Ledger* ledger, const HtmlReportOptions& options,
                       std::FILE* out);

// Escapes text for HTML element content and quoted attribute values (& < > "
// '); control characters other than tab, CR and LF become U+FFFD.
std::string HtmlEscape(std::string_view text);

}  // namespace migledger
