// The HTML report's style sheet: inline in the page, as its
// Content-Security-Policy allows no other.
#include "cli/html_report_internal.h"

namespace migledger::html_report {

const char kReportCss[] = R"CSS(
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

}  // namespace migledger::html_report
