// audit state: which migrations each target had applied, as of a time or a
// ledger sequence.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>
#include <optional>

#include "applier/planner.h"
#include "cli/command.h"
#include "cli/commands/audit_commands.h"
#include "cli/commands/audit_selection.h"
#include "cli/format.h"
#include "common/time_util.h"

namespace migledger {
namespace {

// Where --as-of puts the end of the history: a ledger sequence
// (scan->max_sequence), or a time that cuts each target's chain (*cut).
Status ParseAsOf(Ledger* ledger, const std::string& as_of, ScanFilter* scan,
                 std::optional<std::map<std::string, uint64_t>>* cut) {
  if (as_of.empty()) return Status::Ok();
  bool digits = as_of.find_first_not_of("0123456789") == std::string::npos;
  if (digits && as_of.size() < 12) {
    scan->max_sequence = std::stoull(as_of);
  } else if (auto t = ParseTime(as_of)) {
    // Each target as its chain stood after its last event recorded
    // at or before that time (a date: by the end of that day).
    MIGLEDGER_ASSIGN_OR_RETURN(ChainTimes chains, ChainTimes::Read(ledger));
    *cut = chains.LastBefore(*t + (as_of.size() == 10 ? 86400000000LL : 1));
  } else {
    return InvalidInput("--as-of " + as_of +
                        ": not a time or a sequence number");
  }
  return Status::Ok();
}

// The state of one target (`name`, `key`): its applied versions.
void PrintTargetState(const std::string& name, const std::string& key,
                      const Projection& p) {
  std::vector<std::vector<std::string>> rows;
  std::string latest = "none";
  for (const auto& [v, h] : p.versions) {
    if (!h.applied) continue;
    rows.push_back({h.version, h.applied_at, h.checksum.substr(0, 12)});
    latest = h.version;
  }
  std::printf(
      "target %s (%s): schema version %s, %zu applied, %zu "
      "unfinished\n",
      OneLine(name).c_str(), OneLine(key).c_str(), OneLine(latest).c_str(),
      rows.size(), p.open_attempts.size());
  PrintTable(stdout, {"VERSION", "COMMITTED AT", "SHA256"}, rows);
}

Status PrintState(Ledger* ledger, const std::string& as_of,
                  const std::string& target) {
  ScanFilter s;
  std::optional<std::map<std::string, uint64_t>> cut;
  MIGLEDGER_RETURN_IF_ERROR(ParseAsOf(ledger, as_of, &s, &cut));
  LogFilters f;
  f.target = target;
  std::map<std::string, ProjectionBuilder> per_target;
  std::map<std::string, std::string> names;
  MIGLEDGER_RETURN_IF_ERROR(ledger->Scan(s, [&](const LedgerEntry& e) {
    if (!Matches(f, e)) return true;
    if (cut) {
      auto it = cut->find(TargetKeyOf(e.event));
      if (it == cut->end() || e.sequence > it->second) return true;
    }
    std::string key =
        TargetKey(e.event.target().kind(), e.event.target().database_id());
    per_target[key].Add(e.event);
    names[key] = e.event.target().name().empty()
                     ? e.event.target().redacted_uri()
                     : e.event.target().name();
    return true;
  }));
  if (per_target.empty()) {
    std::printf("no events%s\n", as_of.empty() ? "" : " at that point");
    return Status::Ok();
  }
  for (const auto& [key, b] : per_target) {
    PrintTargetState(names[key], key, b.projection());
  }
  return Status::Ok();
}

}  // namespace

// audit state: each target's applied migrations as the ledger recorded them.
void SetupAuditState(CLI::App* audit, GlobalOptions* g,
                     CommandAction* selected) {
  auto* cmd = audit->add_subcommand(
      "state", "Applied migrations as of a time or sequence");
  auto as_of = std::make_shared<std::string>();
  auto target = std::make_shared<std::string>();
  cmd->add_option("--as-of", *as_of,
                  "RFC 3339 time, date, or ledger sequence number");
  cmd->add_option("-t,--target", *target,
                  "Target name, redacted URI or database id");
  cmd->callback([=] {
    *selected = [=]() -> Status {
      MIGLEDGER_ASSIGN_OR_RETURN(auto ledger, OpenProjectLedger(*g));
      return PrintState(ledger.get(), *as_of, *target);
    };
  });
}

}  // namespace migledger
