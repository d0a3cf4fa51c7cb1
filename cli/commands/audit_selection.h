// What the audit commands select from the ledger: the filter flags
// (--since, --until, --target, ...) and the selection they make, with times
// resolved to positions in each target's chain (ChainTimes). Internal to
// cli/commands/.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "ledger/ledger.h"

namespace CLI {
class App;
}

namespace migledger {

// The filter flags as typed; empty = no filter.
struct LogFilters {
  std::string since, until, target, version, type, run, actor;
};

// Adds the filter flags to `cmd`, filling *f.
void AddFilterFlags(CLI::App* cmd, LogFilters* f);

// Builds the ledger scan filter for what the indexes select. Times are
// checked and returned in *since / *until (when given) but left out of the
// filter: they select positions in the chains (see ChainTimes).
StatusOr<ScanFilter> ToScanFilter(const LogFilters& f,
                                  std::optional<int64_t>* since = nullptr,
                                  std::optional<int64_t>* until = nullptr);

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
  static StatusOr<ChainTimes> Read(Ledger* ledger);

  // The first ledger sequence of any chain past its cut (`cut`: as
  // LastBefore returns; a chain without a cut is past it from its start);
  // nullopt when every chain ends at its cut.
  std::optional<uint64_t> FirstAfter(
      const std::map<std::string, uint64_t>& cut) const;

  // Per target key: the ledger sequence of its last event, in chain order,
  // whose time is before `micros` (targets without one are left out).
  std::map<std::string, uint64_t> LastBefore(int64_t micros) const;

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

// Whether the event matches the filters other than the times (those select
// positions: Selection).
bool Matches(const LogFilters& f, const LedgerEntry& e);

// The selection of `f`: what the ledger's indexes narrow (*scan) and the
// predicate for the rest (*matches).
Status Selection(Ledger* ledger, const LogFilters& f, ScanFilter* scan,
                 std::function<bool(const LedgerEntry&)>* matches);

// Calls `fn` with every event the filters select, in ledger order.
Status ForEachMatching(Ledger* ledger, const LogFilters& f,
                       const std::function<void(const LedgerEntry&)>& fn);

// True when no filter is given.
bool NoFilters(const LogFilters& f);

// The filters as typed, for the header of the HTML report.
std::string DescribeFilters(const LogFilters& f);

}  // namespace migledger
