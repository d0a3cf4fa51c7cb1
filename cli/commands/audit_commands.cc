// audit: read the ledger for people who must know what happened.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include "applier/planner.h"
#include "cli/command.h"
#include "cli/format.h"
#include "cli/html_report.h"
#include "cli/terminal_text.h"
#include "common/atomic_file.h"
#include "common/sha256.h"
#include "common/time_util.h"
#include "ledger/digest.h"
#include "ledger/merkle.h"

namespace migledger {
namespace {

struct LogFilters {
  std::string since, until, target, version, type, run, actor;
};

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

// Builds the ledger scan filter for what the indexes select. Times are
// checked and returned in *since / *until (when given) but left out of the
// filter: they select positions in the chains (see ChainTimes).
StatusOr<ScanFilter> ToScanFilter(const LogFilters& f,
                                  std::optional<int64_t>* since = nullptr,
                                  std::optional<int64_t>* until = nullptr) {
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

// A time resolves to a position in each target's chain: the last event, in
// chain order, recorded before it. Runners' clocks disagree (CI machines
// sharing a target's mirror), so recorded times can go backwards along a
// chain; comparing each event's own time with a bound would then select
// events on both sides of an earlier one, and build states that never
// existed. Positions keep every selection a contiguous stretch of each
// chain, and agree with the recorded times whenever these only go forward.
class ChainTimes {
 public:
  // Reads the time of every event (the envelope only). Warns on stderr, once
  // per target, when its times go backwards.
  static StatusOr<ChainTimes> Read(Ledger* ledger) {
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

  // The first ledger sequence of any chain past its cut (`cut`: as
  // LastBefore returns; a chain without a cut is past it from its start);
  // nullopt when every chain ends at its cut.
  std::optional<uint64_t> FirstAfter(
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

  // Per target key: the ledger sequence of its last event, in chain order,
  // whose time is before `micros` (targets without one are left out).
  std::map<std::string, uint64_t> LastBefore(int64_t micros) const {
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

 private:
  struct Timed {
    uint64_t sequence = 0;
    int64_t micros = 0;
  };
  struct Chain {
    std::vector<Timed> events;  // in chain (= ledger) order
    uint64_t backwards_at = 0;  // first event older than the one before it
    Timed backwards_after;
    int64_t backwards_micros = 0;
  };
  std::map<std::string, Chain> chains_;
};

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

// The selection of `f`: what the ledger's indexes narrow (*scan) and the
// predicate for the rest (*matches).
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

// The attempt id of a step's event (started, statement, outcome), "" for
// other events.
std::string AttemptIdOf(const v1::Event& ev) {
  switch (ev.body_case()) {
    case v1::Event::kStepStarted:
      return ev.step_started().attempt_id();
    case v1::Event::kStatementApplied:
      return ev.statement_applied().attempt_id();
    case v1::Event::kStepApplied:
      return ev.step_applied().attempt_id();
    case v1::Event::kStepFailed:
      return ev.step_failed().attempt_id();
    case v1::Event::kStepReverted:
      return ev.step_reverted().attempt_id();
    case v1::Event::kStepRecovered:
      return ev.step_recovered().attempt_id();
    default:
      return "";
  }
}

// The StepStarted of the attempt `e` belongs to (`e` itself for a
// StepStarted), found among the events of its target and version; nullopt
// for an event of no attempt, or one whose start is not in this ledger.
StatusOr<std::optional<LedgerEntry>> StartOfAttempt(Ledger* ledger,
                                                    const LedgerEntry& e) {
  if (e.event.has_step_started()) return std::optional<LedgerEntry>(e);
  const std::string attempt = AttemptIdOf(e.event);
  if (attempt.empty()) return std::optional<LedgerEntry>();
  ScanFilter s;
  s.version = EventVersion(e.event);
  s.target_key = TargetKeyOf(e.event);
  s.max_sequence = e.sequence;
  std::optional<LedgerEntry> found;
  MIGLEDGER_RETURN_IF_ERROR(ledger->Scan(s, [&](const LedgerEntry& c) {
    if (c.event.has_step_started() &&
        c.event.step_started().attempt_id() == attempt) {
      found = c;
      return false;
    }
    return true;
  }));
  return found;
}

// The filters as typed, for the header of the HTML report.
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

void SetupAudit(CLI::App* app, GlobalOptions* g, CommandAction* selected) {
  auto* audit =
      app->add_subcommand("audit", "Inspect, verify and export the ledger");
  audit->require_subcommand(1);

  // audit log
  {
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
  // audit show SEQ
  {
    auto* cmd = audit->add_subcommand(
        "show", "One event in full, with the SQL that ran");
    auto seq = std::make_shared<uint64_t>(0);
    cmd->add_option("sequence", *seq, "Ledger sequence number")->required();
    cmd->callback([=] {
      *selected = [=]() -> Status {
        MIGLEDGER_ASSIGN_OR_RETURN(auto ledger, OpenProjectLedger(*g));
        MIGLEDGER_ASSIGN_OR_RETURN(LedgerEntry e, ledger->Get(*seq));
        std::printf("%s\n", TerminalLines(EventJson(e, true)).c_str());
        MIGLEDGER_ASSIGN_OR_RETURN(std::optional<LedgerEntry> started,
                                   StartOfAttempt(ledger.get(), e));
        if (!started) return Status::Ok();
        if (started->sequence != e.sequence) {
          std::printf("-- attempt %s started at sequence %llu (%s)\n",
                      started->event.step_started().attempt_id().c_str(),
                      static_cast<unsigned long long>(started->sequence),
                      OneLine(started->event.step_started().file()).c_str());
        }
        const std::string& key =
            started->event.step_started().sql_blob_sha256();
        auto sql = ledger->GetBlob(key);
        if (sql.ok()) {
          std::printf("-- SQL (sha256 %s)\n%s", key.c_str(),
                      TerminalLines(*sql).c_str());
          if (!sql->empty() && sql->back() != '\n') std::printf("\n");
        } else {
          std::printf("-- SQL text unavailable: %s\n",
                      OneLine(sql.status().message()).c_str());
        }
        return Status::Ok();
      };
    });
  }
  // audit state
  {
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
        ScanFilter s;
        std::optional<std::map<std::string, uint64_t>> cut;
        if (!as_of->empty()) {
          bool digits =
              as_of->find_first_not_of("0123456789") == std::string::npos;
          if (digits && as_of->size() < 12) {
            s.max_sequence = std::stoull(*as_of);
          } else if (auto t = ParseTime(*as_of)) {
            // Each target as its chain stood after its last event recorded
            // at or before that time (a date: by the end of that day).
            MIGLEDGER_ASSIGN_OR_RETURN(ChainTimes chains,
                                       ChainTimes::Read(ledger.get()));
            cut = chains.LastBefore(*t +
                                    (as_of->size() == 10 ? 86400000000LL : 1));
          } else {
            return InvalidInput("--as-of " + *as_of +
                                ": not a time or a sequence number");
          }
        }
        LogFilters f;
        f.target = *target;
        std::map<std::string, ProjectionBuilder> per_target;
        std::map<std::string, std::string> names;
        MIGLEDGER_RETURN_IF_ERROR(ledger->Scan(s, [&](const LedgerEntry& e) {
          if (!Matches(f, e)) return true;
          if (cut) {
            auto it = cut->find(TargetKeyOf(e.event));
            if (it == cut->end() || e.sequence > it->second) return true;
          }
          std::string key = TargetKey(e.event.target().kind(),
                                      e.event.target().database_id());
          per_target[key].Add(e.event);
          names[key] = e.event.target().name().empty()
                           ? e.event.target().redacted_uri()
                           : e.event.target().name();
          return true;
        }));
        if (per_target.empty()) {
          std::printf("no events%s\n", as_of->empty() ? "" : " at that point");
          return Status::Ok();
        }
        for (const auto& [key, b] : per_target) {
          const Projection& p = b.projection();
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
              OneLine(names[key]).c_str(), OneLine(key).c_str(),
              OneLine(latest).c_str(), rows.size(), p.open_attempts.size());
          PrintTable(stdout, {"VERSION", "COMMITTED AT", "SHA256"}, rows);
        }
        return Status::Ok();
      };
    });
  }
  // audit verify
  {
    auto* cmd = audit->add_subcommand(
        "verify", "Recompute every hash; optionally check a digest");
    auto digest_file = std::make_shared<std::string>();
    cmd->add_option("--digest", *digest_file,
                    "A file saved from `migledger audit digest`");
    cmd->callback([=] {
      *selected = [=]() -> Status {
        MIGLEDGER_ASSIGN_OR_RETURN(auto ledger, OpenProjectLedger(*g));
        MIGLEDGER_ASSIGN_OR_RETURN(VerifyReport r, ledger->Verify());
        if (!r.ok()) {
          return LedgerCorrupt("ledger does not verify: first bad " +
                               r.problem);
        }
        if (!digest_file->empty()) {
          std::ifstream in(*digest_file);
          if (!in)
            return InvalidInput("cannot read digest file " + *digest_file);
          std::stringstream buf;
          buf << in.rdbuf();
          MIGLEDGER_ASSIGN_OR_RETURN(LedgerDigest saved,
                                     ParseDigest(buf.str()));
          MIGLEDGER_RETURN_IF_ERROR(CheckExtendsDigest(ledger.get(), saved));
          std::printf(
              "ok: the digest of %llu events is a prefix of this ledger\n",
              static_cast<unsigned long long>(saved.size));
        }
        std::printf("ok: %llu events verified, root %s\n",
                    static_cast<unsigned long long>(r.events_checked),
                    ToHex(r.digest.root).c_str());
        return Status::Ok();
      };
    });
  }
  // audit digest
  {
    auto* cmd = audit->add_subcommand(
        "digest", "Print a checkpoint (size + RFC 6962 root) to save");
    auto target = std::make_shared<std::string>();
    cmd->add_option("--target-key", *target,
                    "Digest of one target's chain (kind:database_id)");
    cmd->callback([=] {
      *selected = [=]() -> Status {
        MIGLEDGER_ASSIGN_OR_RETURN(auto ledger, OpenProjectLedger(*g));
        MIGLEDGER_ASSIGN_OR_RETURN(LedgerDigest d, ledger->Digest(*target, 0));
        std::fputs(FormatDigest(d).c_str(), stdout);
        return Status::Ok();
      };
    });
  }
  // audit export
  {
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
}

}  // namespace

void RegisterAuditCommands(std::vector<CommandSetup>* table) {
  table->push_back(&SetupAudit);
}

}  // namespace migledger
