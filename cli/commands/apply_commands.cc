// Commands that read or change a target: status, plan, apply, down,
// recover, validate, baseline, accept-checksum, resolve.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "applier/fleet.h"
#include "cli/command.h"
#include "cli/format.h"
#include "common/keep_until_exit.h"
#include "common/sha256.h"

namespace migledger {
namespace {

void AddTargetFlags(CLI::App* cmd, GlobalOptions* g, bool locks) {
  cmd->add_option("-t,--target", g->target,
                  "Target URI (sqlite:PATH, postgres://...) or name");
  if (locks) {
    cmd->add_option(
        "--lock-timeout", g->lock_timeout,
        "How long to wait for another migledger (e.g. 500ms, 10s; default "
        "lock_timeout_ms)");
  }
}

StatusOr<std::unique_ptr<Applier>> OpenApplier(
    const GlobalOptions& g, AccessMode mode, const std::string& reason = "",
    bool allow_out_of_order = false) {
  MIGLEDGER_ASSIGN_OR_RETURN(ApplierOptions o, MakeApplierOptions(g));
  o.reason = reason;
  if (allow_out_of_order) o.allow_out_of_order = true;
  return Applier::Open(std::move(o), mode);
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

void PrintRunReport(const RunReport& r, const char* nothing) {
  for (const auto& line : r.recovered)
    std::printf("recovered %s\n", OneLine(line).c_str());
  for (const auto& v : r.out_of_band)
    std::printf("recorded out-of-band application of %s\n", OneLine(v).c_str());
  if (r.steps.empty() && r.failure.ok()) {
    std::printf("%s\n", nothing);
    return;
  }
  for (const auto& s : r.steps) {
    // The error line tells these.
    if (s.outcome == "failed" || s.outcome == "unknown") continue;
    std::printf("%-8s %s %s (%.1f ms)\n", s.outcome.c_str(),
                OneLine(s.version).c_str(), OneLine(s.slug).c_str(),
                static_cast<double>(s.duration_micros) / 1000.0);
  }
}

void SetupStatus(CLI::App* app, GlobalOptions* g, CommandAction* selected) {
  auto* cmd = app->add_subcommand(
      "status", "Show applied and pending migrations of a target");
  AddTargetFlags(cmd, g, false);
  auto format = std::make_shared<std::string>("table");
  cmd->add_option("--format", *format, "table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  cmd->callback([=] {
    *selected = [=]() -> Status {
      MIGLEDGER_ASSIGN_OR_RETURN(auto applier,
                                 OpenApplier(*g, AccessMode::kRead));
      MIGLEDGER_ASSIGN_OR_RETURN(StatusReport s, applier->Inspect());
      if (*format == "json") {
        std::string out =
            "{\"target\":" + JsonString(s.identity.redacted_uri) +
            ",\"database_id\":" + JsonString(s.identity.database_id) +
            ",\"migrations\":[";
        for (size_t i = 0; i < s.rows.size(); ++i) {
          const auto& r = s.rows[i];
          out += (i ? "," : "") + std::string("{\"version\":") +
                 JsonString(r.version) + ",\"slug\":" + JsonString(r.slug) +
                 ",\"state\":" + JsonString(r.state) +
                 ",\"applied_at\":" + JsonString(r.applied_at) +
                 ",\"note\":" + JsonString(r.note) + "}";
        }
        out += "],\"drift\":[";
        for (size_t i = 0; i < s.drift.size(); ++i) {
          out += (i ? "," : "") + std::string("{\"version\":") +
                 JsonString(s.drift[i].version) +
                 ",\"kind\":" + JsonString(s.drift[i].kind) +
                 ",\"details\":" + JsonString(s.drift[i].details) + "}";
        }
        out += "],\"unfinished_steps\":" + std::to_string(s.unfinished.size()) +
               ",\"running_elsewhere\":" +
               (s.running_elsewhere ? "true" : "false") + "}\n";
        std::fputs(out.c_str(), stdout);
        return Status::Ok();
      }
      int applied = 0, pending = 0;
      std::vector<std::vector<std::string>> rows;
      rows.reserve(s.rows.size());
      for (auto& r : s.rows) {
        applied += r.state == "applied";
        pending += r.state == "pending" || r.state == "failed";
        auto& row = rows.emplace_back();
        row.reserve(5);
        for (std::string* cell :
             {&r.version, &r.slug, &r.state, &r.applied_at, &r.note})
          row.push_back(std::move(*cell));
      }
      std::printf("target: %s\n", OneLine(s.identity.redacted_uri).c_str());
      PrintTable(stdout, {"VERSION", "NAME", "STATE", "STARTED AT", "NOTE"},
                 rows);
      std::printf("%d applied, %d pending", applied, pending);
      if (!s.unfinished.empty() && s.running_elsewhere) {
        // Not a crash's leftovers: the process that started them runs them.
        std::printf(
            ", %zu step(s) running: another migledger (apply, down or "
            "recover) holds the lock on this target and is running them",
            s.unfinished.size());
      } else if (!s.unfinished.empty()) {
        std::printf(
            ", %zu unfinished step(s) (the next apply or `migledger recover` "
            "finishes them)",
            s.unfinished.size());
      }
      std::printf("\n");
      for (const auto& d : s.drift)
        std::printf("drift: %s\n", OneLine(d.details).c_str());
      if (const std::string hint = ResolveHint(s.drift); !hint.empty()) {
        std::printf("to lead on: %s\n", OneLine(hint).c_str());
      }
      KeepUntilExit(std::move(applier));
      KeepUntilExit(std::make_unique<StatusReport>(std::move(s)));
      KeepUntilExit(std::make_unique<decltype(rows)>(std::move(rows)));
      return Status::Ok();
    };
  });
}

void SetupPlan(CLI::App* app, GlobalOptions* g, CommandAction* selected) {
  auto* cmd = app->add_subcommand(
      "plan", "Show what apply would do (--sql: the offline script)");
  AddTargetFlags(cmd, g, true);
  auto to = std::make_shared<std::string>();
  auto sql = std::make_shared<bool>(false);
  auto out_of_order = std::make_shared<bool>(false);
  cmd->add_option("--to", *to, "Stop at this version (inclusive)");
  cmd->add_flag("--allow-out-of-order", *out_of_order,
                "Plan pending migrations older than the newest applied one "
                "too, as apply --allow-out-of-order would");
  cmd->add_flag("--sql", *sql,
                "Print the SQL script apply would run, marker rows included, "
                "and record it "
                "in the ledger (PlanExported)");
  cmd->callback([=] {
    *selected = [=]() -> Status {
      if (*sql) {
        MIGLEDGER_ASSIGN_OR_RETURN(
            auto applier,
            OpenApplier(*g, AccessMode::kWrite, "", *out_of_order));
        MIGLEDGER_ASSIGN_OR_RETURN(std::string script,
                                   applier->ExportPlanSql(*to));
        std::fputs(script.c_str(), stdout);
        return Status::Ok();
      }
      MIGLEDGER_ASSIGN_OR_RETURN(
          auto applier, OpenApplier(*g, AccessMode::kRead, "", *out_of_order));
      MIGLEDGER_ASSIGN_OR_RETURN(auto plan, applier->PlanApply(*to));
      if (plan.empty()) {
        std::printf("nothing to apply\n");
        return Status::Ok();
      }
      std::vector<std::vector<std::string>> rows;
      for (const auto& s : plan) {
        rows.push_back(
            {s.migration->version, s.migration->slug, "up",
             s.migration->up.no_transaction ? "no-transaction" : "transaction",
             s.migration->up.checksum.substr(0, 12)});
      }
      PrintTable(stdout, {"VERSION", "NAME", "DIRECTION", "MODE", "SHA256"},
                 rows);
      std::printf("%zu migration(s) to apply\n", plan.size());
      KeepUntilExit(std::move(applier));
      return Status::Ok();
    };
  });
}

void SetupApply(CLI::App* app, GlobalOptions* g, CommandAction* selected) {
  auto* cmd = app->add_subcommand(
      "apply", "Apply pending migrations (recovering first if needed)");
  AddTargetFlags(cmd, g, true);
  auto to = std::make_shared<std::string>();
  auto reason = std::make_shared<std::string>();
  auto fleet = std::make_shared<FleetOptions>();
  auto out_of_order = std::make_shared<bool>(false);
  cmd->add_option("--to", *to, "Stop at this version (inclusive)");
  cmd->add_option("--reason", *reason,
                  "Why: recorded with the run in the ledger");
  cmd->add_flag("--allow-out-of-order", *out_of_order,
                "Apply pending migrations older than the newest applied one "
                "(refused otherwise)");
  auto* group =
      cmd->add_option("--group", fleet->group,
                      "Apply to every target of this group in migledger.toml");
  cmd->add_option("--parallel", fleet->parallel,
                  "Targets of the group applied at once")
      ->needs(group)
      ->capture_default_str();
  cmd->add_option("--canary", fleet->canary,
                  "Targets of the group applied first; the rest start only if "
                  "they succeed")
      ->needs(group)
      ->capture_default_str();
  cmd->callback([=] {
    *selected = [=]() -> Status {
      if (!fleet->group.empty()) {
        if (!g->target.empty())
          return InvalidInput("--group and --target exclude each other");
        MIGLEDGER_ASSIGN_OR_RETURN(ApplierOptions o, MakeApplierOptions(*g));
        o.reason = *reason;
        if (*out_of_order) o.allow_out_of_order = true;
        fleet->to = *to;
        MIGLEDGER_ASSIGN_OR_RETURN(FleetReport report, ApplyFleet(o, *fleet));
        std::vector<std::vector<std::string>> rows;
        for (const auto& r : report.rows) {
          char ms[32];
          std::snprintf(ms, sizeof ms, "%.0f ms",
                        static_cast<double>(r.duration_micros) / 1000.0);
          rows.push_back({r.target + (r.canary ? " (canary)" : ""),
                          r.from_version.empty() ? "-" : r.from_version,
                          r.to_version.empty() ? "-" : r.to_version, r.outcome,
                          r.outcome == "not started" ? "" : ms, r.message});
        }
        PrintTable(stdout,
                   {"TARGET", "FROM", "TO", "OUTCOME", "DURATION", "ERROR"},
                   rows);
        return report.failure;
      }
      MIGLEDGER_ASSIGN_OR_RETURN(ApplierOptions options,
                                 MakeApplierOptions(*g));
      options.reason = *reason;
      if (*out_of_order) options.allow_out_of_order = true;
      MIGLEDGER_ASSIGN_OR_RETURN(
          RunReport report, Applier::OpenAndApply(std::move(options), *to));
      PrintRunReport(report, "nothing to apply");
      return report.failure;
    };
  });
}

void SetupDown(CLI::App* app, GlobalOptions* g, CommandAction* selected) {
  auto* cmd = app->add_subcommand(
      "down", "Revert applied migrations (--steps N or --to V)");
  AddTargetFlags(cmd, g, true);
  auto to = std::make_shared<std::string>();
  auto steps = std::make_shared<int>(0);
  auto reason = std::make_shared<std::string>();
  auto* to_opt = cmd->add_option(
      "--to", *to, "Revert everything above this version (0: all)");
  auto* steps_opt =
      cmd->add_option("--steps", *steps, "Revert the last N applied migrations")
          ->check(CLI::PositiveNumber);
  to_opt->excludes(steps_opt);
  cmd->add_option("--reason", *reason,
                  "Why: recorded with the run in the ledger");
  cmd->callback([=] {
    *selected = [=]() -> Status {
      if (to->empty() && *steps == 0)
        return InvalidInput("down needs --steps N or --to V");
      MIGLEDGER_ASSIGN_OR_RETURN(auto applier,
                                 OpenApplier(*g, AccessMode::kWrite, *reason));
      MIGLEDGER_ASSIGN_OR_RETURN(RunReport report, applier->Down(*to, *steps));
      PrintRunReport(report, "nothing to revert");
      return report.failure;
    };
  });
}

void SetupRecover(CLI::App* app, GlobalOptions* g, CommandAction* selected) {
  auto* cmd = app->add_subcommand(
      "recover",
      "Finish the bookkeeping of interrupted steps (apply does this too)");
  AddTargetFlags(cmd, g, true);
  cmd->callback([=] {
    *selected = [=]() -> Status {
      MIGLEDGER_ASSIGN_OR_RETURN(auto applier,
                                 OpenApplier(*g, AccessMode::kWrite));
      MIGLEDGER_ASSIGN_OR_RETURN(RunReport report, applier->Recover());
      if (report.recovered.empty() && report.out_of_band.empty()) {
        std::printf("nothing to recover\n");
      }
      for (const auto& line : report.recovered)
        std::printf("recovered %s\n", OneLine(line).c_str());
      for (const auto& v : report.out_of_band) {
        std::printf("recorded out-of-band application of %s\n",
                    OneLine(v).c_str());
      }
      return Status::Ok();
    };
  });
}

void SetupValidate(CLI::App* app, GlobalOptions* g, CommandAction* selected) {
  auto* cmd = app->add_subcommand(
      "validate",
      "Check files, ledger and target in full: exit 4 on drift, 6 when the "
      "ledger or the target's event mirror does not verify");
  AddTargetFlags(cmd, g, false);
  cmd->callback([=] {
    *selected = [=]() -> Status {
      MIGLEDGER_ASSIGN_OR_RETURN(auto applier,
                                 OpenApplier(*g, AccessMode::kRead));
      MIGLEDGER_ASSIGN_OR_RETURN(auto drift, applier->Validate());
      if (drift.empty()) {
        std::printf("ok: files, ledger and target agree\n");
        return Status::Ok();
      }
      std::vector<std::vector<std::string>> rows;
      for (const auto& d : drift)
        rows.push_back({d.version, d.kind, d.details});
      PrintTable(stdout, {"VERSION", "DRIFT", "DETAILS"}, rows);
      const std::string hint = ResolveHint(drift);
      return Drift(std::to_string(drift.size()) + " drift item(s) found" +
                   (hint.empty() ? "" : "; " + hint));
    };
  });
}

void SetupBaseline(CLI::App* app, GlobalOptions* g, CommandAction* selected) {
  auto* cmd = app->add_subcommand(
      "baseline",
      "Record that an existing database already has migrations up to V");
  AddTargetFlags(cmd, g, true);
  auto version = std::make_shared<std::string>();
  auto reason = std::make_shared<std::string>();
  cmd->add_option("--version", *version, "Last version already present")
      ->required();
  cmd->add_option("--reason", *reason, "Why (recorded)")->required();
  cmd->callback([=] {
    *selected = [=]() -> Status {
      MIGLEDGER_ASSIGN_OR_RETURN(auto applier,
                                 OpenApplier(*g, AccessMode::kWrite, *reason));
      MIGLEDGER_RETURN_IF_ERROR(applier->Baseline(*version, *reason));
      std::printf("baselined at %s\n", OneLine(*version).c_str());
      return Status::Ok();
    };
  });
}

void SetupAcceptChecksum(CLI::App* app, GlobalOptions* g,
                         CommandAction* selected) {
  auto* cmd = app->add_subcommand(
      "accept-checksum",
      "Accept the current file of an applied migration (audited)");
  AddTargetFlags(cmd, g, true);
  auto version = std::make_shared<std::string>();
  auto reason = std::make_shared<std::string>();
  cmd->add_option("--version", *version,
                  "The applied version whose file changed")
      ->required();
  cmd->add_option("--reason", *reason, "Why (recorded)")->required();
  cmd->callback([=] {
    *selected = [=]() -> Status {
      MIGLEDGER_ASSIGN_OR_RETURN(auto applier,
                                 OpenApplier(*g, AccessMode::kWrite, *reason));
      MIGLEDGER_RETURN_IF_ERROR(applier->AcceptChecksum(*version, *reason));
      std::printf("accepted the current checksum of %s\n",
                  OneLine(*version).c_str());
      return Status::Ok();
    };
  });
}

void SetupResolve(CLI::App* app, GlobalOptions* g, CommandAction* selected) {
  auto* cmd = app->add_subcommand(
      "resolve",
      "Lead on after a restore or a copy of the target (audited): "
      "--restored accepts its marker rows as its state, --new-identity gives "
      "a copy its own id");
  AddTargetFlags(cmd, g, true);
  auto restored = std::make_shared<bool>(false);
  auto new_identity = std::make_shared<bool>(false);
  auto reason = std::make_shared<std::string>();
  auto* r = cmd->add_flag(
      "--restored", *restored,
      "The target was restored from an older backup: its marker rows are its "
      "state from now on (apply then runs again what the restore undid)");
  auto* n = cmd->add_flag(
      "--new-identity", *new_identity,
      "The target is a copy of another database (a copied SQLite file, "
      "CREATE DATABASE ... TEMPLATE): give it an id and a history of its own");
  r->excludes(n);
  cmd->add_option("--reason", *reason, "Why (recorded)")->required();
  cmd->callback([=] {
    *selected = [=]() -> Status {
      if (*restored == *new_identity) {
        return InvalidInput(
            "resolve needs --restored (the target was restored from a backup) "
            "or --new-identity (the target is a copy of another database)");
      }
      MIGLEDGER_ASSIGN_OR_RETURN(ApplierOptions o, MakeApplierOptions(*g));
      o.reason = *reason;
      o.resolving = *restored ? ApplierOptions::Resolving::kRestored
                              : ApplierOptions::Resolving::kNewIdentity;
      MIGLEDGER_ASSIGN_OR_RETURN(
          auto applier, Applier::Open(std::move(o), AccessMode::kWrite));
      if (*restored) {
        MIGLEDGER_ASSIGN_OR_RETURN(auto changed,
                                   applier->ResolveRestored(*reason));
        for (const auto& v : changed) {
          std::printf("%s  %s\n", v.version().c_str(),
                      v.applied() ? "applied (the target has it)"
                                  : "no longer applied (apply runs it again)");
        }
        std::printf("resolved: the target's marker rows are its state\n");
        return Status::Ok();
      }
      MIGLEDGER_ASSIGN_OR_RETURN(auto report,
                                 applier->ResolveNewIdentity(*reason));
      std::printf(
          "resolved: the target is now database %s (a copy of %s; the %llu "
          "event(s) it inherited are kept apart)\n",
          report.new_database_id.c_str(), report.old_database_id.c_str(),
          static_cast<unsigned long long>(report.inherited_events));
      return Status::Ok();
    };
  });
}

}  // namespace

void RegisterApplyCommands(std::vector<CommandSetup>* table) {
  table->push_back(&SetupStatus);
  table->push_back(&SetupPlan);
  table->push_back(&SetupApply);
  table->push_back(&SetupDown);
  table->push_back(&SetupRecover);
  table->push_back(&SetupValidate);
  table->push_back(&SetupBaseline);
  table->push_back(&SetupAcceptChecksum);
  table->push_back(&SetupResolve);
}

}  // namespace migledger
