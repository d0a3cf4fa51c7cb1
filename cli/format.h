// Output formatting shared by commands: aligned tables, CSV (RFC 4180),
// and one-line summaries / JSON of ledger events.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "ledger/ledger.h"

namespace migledger {

// Prints rows under a header, columns padded to their widest cell.
void PrintTable(std::FILE* out, const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows);

// RFC 4180 field: quoted when it holds a comma, quote, CR or LF.
std::string CsvField(const std::string& field);

// "step_applied", "run_started", ... for an event's body.
std::string EventType(const v1::Event& event);
// The version an event is about, "" when none.
std::string EventVersion(const v1::Event& event);
// A short human summary of the event body ("applied in 3.2 ms", ...).
std::string EventSummary(const v1::Event& event);
// RFC 3339 time of the event.
std::string EventTime(const v1::Event& event);

// The event as one JSON object (Protobuf JSON mapping) with the ledger
// sequence and the leaf hash added: {"sequence":N,"leafHash":"..","event":{..}}
std::string EventJson(const LedgerEntry& entry, bool pretty);

// Adds the human columns of an event to a row: seq, time, target, type,
// version, actor, summary.
std::vector<std::string> EventRow(const LedgerEntry& entry);
const std::vector<std::string>& EventRowHeader();

}  // namespace migledger
