// The audit commands' filters and the selection they make
// (cli/commands/audit_selection.h).
#include "cli/commands/audit_selection.h"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <limits>

#include "applier/planner.h"
#include "cli/format.h"
#include "common/time_util.h"

namespace migledger {
namespace {

// A recorded time in microseconds, saturated: a mirrored event may carry any
// time (as the ledger reads it).
int64_t SaturatedMicros(int64_t seconds, int32_t nanos) {
  int64_t micros = 0;
  if (__builtin_mul_overflow(seconds, int64_t{1000000}, &micros) ||
      __builtin_add_overflow(micros, int64_t{nanos / 1000}, &micros)) {
    return seconds < 0 ? std::numeric_limits<int64_t>::min()
                       : std::numeric_limits<int64_t>::max();
  }
  return micros;
}

// `--since` / `--until` as positions: per target, the events after the
// since cut and up to the until cut.
struct TimeSelection {
  bool since = false, until = false;
  std::map<std::string, uint64_t> since_cut, until_cut;
  bool Contains(const LedgerEntry& e) const {
    if (!since && !until) return true;
    const std::string key = TargetKeyOf(e.event);
    if (since) {
      auto it = since_cut.find(key);
      if (it != since_cut.end() && e.sequence <= it->second) return false;
    }
    if (until) {
      auto it = until_cut.find(key);
      if (it == until_cut.end() || e.sequence > it->second) return false;
    }
    return true;
  }
};

// Resolves the bounds and narrows `scan` to the sequences they can select.
StatusOr<TimeSelection> SelectTimes(Ledger* ledger,
                                    const std::optional<int64_t>& since,
                                    const std::optional<int64_t>& until,
                                    ScanFilter* scan) {
  TimeSelection t;
  if (!since && !until) return t;
  MIGLEDGER_ASSIGN_OR_RETURN(ChainTimes chains, ChainTimes::Read(ledger));
  constexpr uint64_t kNothing = std::numeric_limits<uint64_t>::max();
  if (since) {
    t.since = true;
    t.since_cut = chains.LastBefore(*since);
    scan->min_sequence = chains.FirstAfter(t.since_cut).value_or(kNothing);
  }
  if (until) {
    t.until = true;
    t.until_cut = chains.LastBefore(*until);
    uint64_t last = 0;
    for (const auto& [key, seq] : t.until_cut) last = std::max(last, seq);
    if (last == 0) {
      scan->min_sequence = kNothing;
    } else {
      scan->max_sequence = last;
    }
  }
  return t;
}

}  // namespace

void AddFilterFlags(CLI::App* cmd, LogFilters* f) {
  cmd->add_option("--since", f->since,
                  "Events at or after (RFC 3339 or YYYY-MM-DD)");
  cmd->add_option("--until", f->until,
                  "Events before (RFC 3339 or YYYY-MM-DD)");
  cmd->add_option("-t,--target", f->target,
                  "Target name, redacted URI or database id");
  cmd->add_option("--version", f->version, "Migration version");
  cmd->add_option("--type", f->type, "Event type, e.g. step_failed");
  cmd->add_option("--run", f->run, "Run id");
  cmd->add_option("--actor", f->actor, "OS user (or user@host)");
}

StatusOr<ScanFilter> ToScanFilter(const LogFilters& f,
                                  std::optional<int64_t>* since,
                                  std::optional<int64_t>* until) {
  ScanFilter s;
  if (!f.since.empty()) {
    auto t = ParseTime(f.since);
    if (!t)
      return InvalidInput("--since " + f.since +
                          ": not a time (use RFC 3339 or YYYY-MM-DD)");
    if (since) *since = *t;
  }
  if (!f.until.empty()) {
    auto t = ParseTime(f.until);
    if (!t)
      return InvalidInput("--until " + f.until +
                          ": not a time (use RFC 3339 or YYYY-MM-DD)");
    if (until) *until = *t;
  }
  if (!f.type.empty()) {
    const std::vector<std::string> types = EventTypeNames();
    if (std::find(types.begin(), types.end(), f.type) == types.end()) {
      std::string known;
      for (const auto& t : types) known += (known.empty() ? "" : ", ") + t;
      return InvalidInput("--type " + f.type +
                          ": not an event type (known: " + known + ")");
    }
  }
  s.run_id = f.run;
  s.version = f.version;  // the version index narrows the scan
  return s;
}

StatusOr<ChainTimes> ChainTimes::Read(Ledger* ledger) {
  ChainTimes c;
  v1::EventEnvelopeView view;
  Status parse = Status::Ok();
  MIGLEDGER_RETURN_IF_ERROR(
      ledger->ScanBytes(1, 0, [&](uint64_t seq, std::string_view bytes) {
        view.Clear();
        if (!view.ParseFromArray(bytes.data(),
                                 static_cast<int>(bytes.size()))) {
          parse = LedgerCorrupt("event " + std::to_string(seq) +
                                " does not decode");
          return false;
        }
        std::string key;
        if (!view.target().database_id().empty())
          key = TargetKey(view.target().kind(), view.target().database_id());
        const int64_t micros =
            SaturatedMicros(view.time().seconds(), view.time().nanos());
        Chain& chain = c.chains_[key];
        if (!chain.events.empty() && !chain.backwards_at &&
            micros < chain.events.back().micros) {
          chain.backwards_at = seq;
          chain.backwards_after = chain.events.back();
          chain.backwards_micros = micros;
        }
        chain.events.push_back({seq, micros});
        return true;
      }));
  MIGLEDGER_RETURN_IF_ERROR(parse);
  for (const auto& [key, chain] : c.chains_) {
    if (!chain.backwards_at) continue;
    spdlog::warn(
        "event times go backwards in the chain of target {}: sequence {} "
        "({}) comes after sequence {} ({}); the runners' clocks disagree, "
        "so a time selects the events up to the last one recorded before "
        "it in chain order",
        key.empty() ? "(none)" : key, chain.backwards_at,
        FormatRfc3339(chain.backwards_micros), chain.backwards_after.sequence,
        FormatRfc3339(chain.backwards_after.micros));
  }
  return c;
}

std::optional<uint64_t> ChainTimes::FirstAfter(
    const std::map<std::string, uint64_t>& cut) const {
  std::optional<uint64_t> first;
  for (const auto& [key, chain] : chains_) {
    auto c = cut.find(key);
    const uint64_t after = c == cut.end() ? 0 : c->second;
    auto it = std::upper_bound(
        chain.events.begin(), chain.events.end(), after,
        [](uint64_t s, const Timed& t) { return s < t.sequence; });
    if (it != chain.events.end() && (!first || it->sequence < *first))
      first = it->sequence;
  }
  return first;
}

std::map<std::string, uint64_t> ChainTimes::LastBefore(int64_t micros) const {
  std::map<std::string, uint64_t> cut;
  for (const auto& [key, chain] : chains_) {
    for (auto it = chain.events.rbegin(); it != chain.events.rend(); ++it) {
      if (it->micros < micros) {
        cut[key] = it->sequence;
        break;
      }
    }
  }
  return cut;
}

bool Matches(const LogFilters& f, const LedgerEntry& e) {
  const auto& ev = e.event;
  if (!f.target.empty()) {
    const auto& t = ev.target();
    std::string key = TargetKey(t.kind(), t.database_id());
    if (f.target != t.name() && f.target != t.redacted_uri() &&
        f.target != key && f.target != t.database_id()) {
      return false;
    }
  }
  if (!f.version.empty() && CompareVersions(EventVersion(ev), f.version) != 0)
    return false;
  if (!f.version.empty() && EventVersion(ev).empty()) return false;
  if (!f.type.empty() && EventType(ev) != f.type) return false;
  if (!f.actor.empty() && ev.actor().os_user() != f.actor &&
      ev.actor().os_user() + "@" + ev.actor().host() != f.actor) {
    return false;
  }
  return true;
}

Status Selection(Ledger* ledger, const LogFilters& f, ScanFilter* scan,
                 std::function<bool(const LedgerEntry&)>* matches) {
  std::optional<int64_t> since, until;
  MIGLEDGER_ASSIGN_OR_RETURN(*scan, ToScanFilter(f, &since, &until));
  MIGLEDGER_ASSIGN_OR_RETURN(TimeSelection times,
                             SelectTimes(ledger, since, until, scan));
  *matches = [f, times = std::move(times)](const LedgerEntry& e) {
    return Matches(f, e) && times.Contains(e);
  };
  return Status::Ok();
}

Status ForEachMatching(Ledger* ledger, const LogFilters& f,
                       const std::function<void(const LedgerEntry&)>& fn) {
  ScanFilter s;
  std::function<bool(const LedgerEntry&)> matches;
  MIGLEDGER_RETURN_IF_ERROR(Selection(ledger, f, &s, &matches));
  return ledger->Scan(s, [&](const LedgerEntry& e) {
    if (matches(e)) fn(e);
    return true;
  });
}

bool NoFilters(const LogFilters& f) {
  return f.since.empty() && f.until.empty() && f.target.empty() &&
         f.version.empty() && f.type.empty() && f.run.empty() &&
         f.actor.empty();
}

std::string DescribeFilters(const LogFilters& f) {
  std::string s;
  auto add = [&](const char* flag, const std::string& value) {
    if (value.empty()) return;
    if (!s.empty()) s += ' ';
    s += flag;
    s += ' ';
    s += value.find_first_of(" \t'\"") == std::string::npos ? value
                                                            : "'" + value + "'";
  };
  add("--since", f.since);
  add("--until", f.until);
  add("--target", f.target);
  add("--version", f.version);
  add("--type", f.type);
  add("--run", f.run);
  add("--actor", f.actor);
  return s;
}

}  // namespace migledger
