#include "applier/fleet.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "common/interrupt.h"

namespace migledger {
namespace {

std::string HighestApplied(const StatusReport& s) {
  std::string v;
  for (const auto& r : s.rows) {
    if (r.state == "applied") v = r.version;
  }
  return v;
}

// Applies to one target; fills its row. Never throws.
void ApplyOne(const ApplierOptions& base, const std::string& target,
              const std::string& to, FleetRow* row) {
  auto t0 = std::chrono::steady_clock::now();
  ApplierOptions o = base;
  o.target = target;
  auto finish = [&](const std::string& outcome, const std::string& message) {
    row->outcome = outcome;
    row->message = message;
    row->duration_micros =
        std::chrono::duration_cast<std::chrono::microseconds>(
            std::chrono::steady_clock::now() - t0)
            .count();
  };
  auto applier = Applier::Open(o, AccessMode::kWrite);
  if (!applier.ok()) return finish("failed", applier.status().message());
  auto before = (*applier)->Inspect();
  if (before.ok()) row->from_version = HighestApplied(*before);
  auto report = (*applier)->Apply(to);
  if (!report.ok()) return finish("failed", report.status().message());
  auto after = (*applier)->Inspect();
  if (after.ok()) row->to_version = HighestApplied(*after);
  if (!report->failure.ok()) return finish("failed", report->failure.message());
  finish(report->steps.empty() ? "up to date" : "applied", "");
}

}  // namespace

StatusOr<FleetReport> ApplyFleet(const ApplierOptions& base,
                                 const FleetOptions& fleet) {
  auto group = base.config.groups.find(fleet.group);
  if (group == base.config.groups.end()) {
    return InvalidInput("unknown group \"" + fleet.group +
                        "\" (define it under [groups] in " +
                        std::string(kConfigFileName) + ")");
  }
  const std::vector<std::string>& targets = group->second;
  if (targets.empty())
    return InvalidInput("group \"" + fleet.group + "\" has no targets");
  for (const auto& t : targets) {
    if (!base.config.targets.count(t)) {
      return InvalidInput("group \"" + fleet.group +
                          "\" names unknown target \"" + t + "\"");
    }
  }
  if (fleet.parallel < 1) return InvalidInput("--parallel must be at least 1");
  if (fleet.canary < 0) return InvalidInput("--canary must not be negative");

  // One ledger for every target: each target appends to its own chain.
  LedgerOptions lo;
  lo.create_if_missing = true;
  lo.lock_timeout = base.lock_timeout;
  lo.verify_new_events = true;  // as Applier::Open's
  MIGLEDGER_ASSIGN_OR_RETURN(std::unique_ptr<Ledger> owned,
                             Ledger::Open(base.config.ledger_dir, lo));
  ApplierOptions shared = base;
  shared.shared_ledger = std::shared_ptr<Ledger>(std::move(owned));

  FleetReport report;
  report.rows.resize(targets.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    report.rows[i].target = targets[i];
    report.rows[i].outcome = "not started";
    report.rows[i].canary = static_cast<int>(i) < fleet.canary;
  }
  std::atomic<bool> failed{false};
  // A signal now stops the fleet: running targets cancel their statement,
  // no new target starts, and the summary is still printed.
  InterruptibleWork interruptible;
  // Runs rows [begin, end) with up to `parallel` workers; a worker starts no
  // new target once any target failed.
  auto run_stage = [&](size_t begin, size_t end) {
    std::atomic<size_t> next{begin};
    std::vector<std::thread> workers;
    size_t n =
        std::min<size_t>(static_cast<size_t>(fleet.parallel), end - begin);
    for (size_t w = 0; w < n; ++w) {
      workers.emplace_back([&] {
        for (;;) {
          if (failed.load() || InterruptRequested()) return;
          size_t i = next.fetch_add(1);
          if (i >= end) return;
          ApplyOne(shared, targets[i], fleet.to, &report.rows[i]);
          if (report.rows[i].outcome == "failed") {
            spdlog::info("target {} failed: {}", targets[i],
                         report.rows[i].message);
            failed.store(true);
          }
        }
      });
    }
    for (auto& t : workers) t.join();
  };
  size_t canaries =
      std::min<size_t>(static_cast<size_t>(fleet.canary), targets.size());
  if (canaries > 0) run_stage(0, canaries);
  if (!failed.load() && canaries < targets.size())
    run_stage(canaries, targets.size());
  size_t not_started = 0;
  for (const auto& x : report.rows) not_started += x.outcome == "not started";
  const std::string not_started_text =
      std::to_string(not_started) + " target(s) not started";
  const std::string interrupted =
      InterruptRequested() ? std::string(InterruptedBy()) + ": " : "";
  for (const auto& r : report.rows) {
    if (r.outcome == "failed") {
      std::string message = r.message;
      if (!interrupted.empty() && message.rfind(interrupted, 0) == 0) {
        message.erase(0, interrupted.size());
      }
      const std::string text = "target " + r.target + " failed (" +
                               not_started_text + "): " + message;
      report.failure = interrupted.empty() ? MigrationFailed(text)
                                           : Interrupted(interrupted + text);
      break;
    }
  }
  if (report.failure.ok() && !interrupted.empty()) {
    report.failure = Interrupted(interrupted + not_started_text);
  }
  return report;
}

}  // namespace migledger
