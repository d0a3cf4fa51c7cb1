// The audit subcommands, one unit each, set up under `audit` by SetupAudit
// (audit_commands.cc). Each adds its subcommand to `audit` as a
// CommandSetup adds a command to the app. Internal to cli/commands/.
#pragma once

#include "cli/command.h"

namespace migledger {

void SetupAuditLog(CLI::App* audit, GlobalOptions* g, CommandAction* selected);
void SetupAuditShow(CLI::App* audit, GlobalOptions* g, CommandAction* selected);
void SetupAuditState(CLI::App* audit, GlobalOptions* g,
                     CommandAction* selected);
void SetupAuditVerify(CLI::App* audit, GlobalOptions* g,
                      CommandAction* selected);
void SetupAuditDigest(CLI::App* audit, GlobalOptions* g,
                      CommandAction* selected);
void SetupAuditExport(CLI::App* audit, GlobalOptions* g,
                      CommandAction* selected);

}  // namespace migledger
