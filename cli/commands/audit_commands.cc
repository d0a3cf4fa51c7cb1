// audit: read the ledger for people who must know what happened. One unit
// per subcommand: show, verify and digest here, log and export in
// audit_log_commands.cc, state in audit_state_command.cc.
#include "cli/commands/audit_commands.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>

#include "cli/command.h"
#include "cli/format.h"
#include "cli/terminal_text.h"
#include "common/sha256.h"
#include "ledger/digest.h"

namespace migledger {
namespace {

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

}  // namespace

// audit show SEQ: one event in full, with the SQL its attempt ran.
void SetupAuditShow(CLI::App* audit, GlobalOptions* g,
                    CommandAction* selected) {
  auto* cmd =
      audit->add_subcommand("show", "One event in full, with the SQL that ran");
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
      const std::string& key = started->event.step_started().sql_blob_sha256();
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

// audit verify: every hash recomputed; optionally a saved digest checked.
void SetupAuditVerify(CLI::App* audit, GlobalOptions* g,
                      CommandAction* selected) {
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
        return LedgerCorrupt("ledger does not verify: first bad " + r.problem);
      }
      if (!digest_file->empty()) {
        std::ifstream in(*digest_file);
        if (!in) return InvalidInput("cannot read digest file " + *digest_file);
        std::stringstream buf;
        buf << in.rdbuf();
        MIGLEDGER_ASSIGN_OR_RETURN(LedgerDigest saved, ParseDigest(buf.str()));
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

// audit digest: a checkpoint to save.
void SetupAuditDigest(CLI::App* audit, GlobalOptions* g,
                      CommandAction* selected) {
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

namespace {

void SetupAudit(CLI::App* app, GlobalOptions* g, CommandAction* selected) {
  auto* audit =
      app->add_subcommand("audit", "Inspect, verify and export the ledger");
  audit->require_subcommand(1);
  for (CommandSetup setup :
       {&SetupAuditLog, &SetupAuditShow, &SetupAuditState, &SetupAuditVerify,
        &SetupAuditDigest, &SetupAuditExport}) {
    setup(audit, g, selected);
  }
}

}  // namespace

void RegisterAuditCommands(std::vector<CommandSetup>* table) {
  table->push_back(&SetupAudit);
}

}  // namespace migledger
