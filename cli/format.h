// Output formatting shared by commands: aligned tables, CSV (RFC 4180),
// and one-line summaries / JSON of ledger events.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "ledger/ledger.h"

namespace migledger {

// `text` on one line and safe for a terminal: each run of line breaks
// becomes " / " (none at the end), tabs become spaces, and every other
// control character is escaped (TerminalText, cli/terminal_text.h). For
// error lines and table cells.
std::string OneLine(const std::string& text);

// Prints rows under a header, columns padded to their widest cell; cells
// are shown OneLine().
void PrintTable(std::FILE* out, const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows);

// RFC 4180 field: quoted when it holds a comma, quote, CR or LF.
std::string CsvField(const std::string& field);

// "step_applied", "run_started", ... for an event's body.
std::string EventType(const v1::Event& event);
// Every event type EventType() can return, in schema order.
std::vector<std::string> EventTypeNames();
// EventVersion (the version an event is about): ledger/ledger.h.
// A short human summary of the event body ("applied in 3.2 ms", ...).
std::string EventSummary(const v1::Event& event);
// RFC 3339 time of the event.
std::string EventTime(const v1::Event& event);

// The event as one JSON object (Protobuf JSON mapping) with the ledger
// sequence, type and leaf hash added:
// {"sequence":N,"type":"..","leaf_hash":"..","event":{..}}
std::string EventJson(const LedgerEntry& entry, bool pretty);

// EventJson(entry, false) of the event stored as `bytes` at `sequence`,
// appended to *out: printed from the bytes directly when they are in
// Protobuf's usual form (AppendProtoJsonFromWire), else parsed first.
// kLedgerCorrupt when the bytes do not decode (nothing is appended).
Status AppendEventJson(uint64_t sequence, std::string_view bytes,
                       std::string* out);

// Writes AppendEventJson of every event in the ledger, one per line, in
// ledger order: the bytes `audit log --format jsonl` writes without filters.
// Chunks of consecutive events are encoded on `threads` threads (0 = one per
// core) while this thread writes finished chunks in order, so the output is
// the same for any setting. On an error, what comes before the bad event is
// written and the error returned.
Status WriteEventsJsonl(Ledger* ledger, std::FILE* out, unsigned threads = 0,
                        uint64_t chunk_events = 0);

// Adds the human columns of an event to a row: seq, time, target, type,
// version, actor, summary; each cell OneLine() (safe for a terminal).
std::vector<std::string> EventRow(const LedgerEntry& entry);
const std::vector<std::string>& EventRowHeader();

}  // namespace migledger
