// Commands: each is a small unit (name, help, flags, run) registered in the
// one table in cli/command.cc. Commands hold no SQL and no ledger logic:
// they parse flags, call the applier or the ledger, and format output.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "applier/applier.h"
#include "common/status.h"

namespace CLI {
class App;
}

namespace migledger {

// Flags every command understands.
struct GlobalOptions {
  std::string project_dir = ".";
  std::string target;
  std::string lock_timeout = "";  // "" = from config; "5s", "200ms", "0"
  bool use_store = false;         // audit commands read the central audit store
  int verbose = 0;
  bool quiet = false;
  std::string command_line;  // argv joined, passwords redacted
};

// Loads migledger.toml from the project dir and builds applier options.
StatusOr<ApplierOptions> MakeApplierOptions(const GlobalOptions& g);
// Opens the ledger of the project read-only (audit commands). With
// use_store, the whole fleet's history is pulled from the central audit
// store into a temporary ledger (every hash verified) and that is returned:
// its sequence N is store sequence N and its id is the store's, so its
// digests are checkpoints of the store.
StatusOr<std::unique_ptr<Ledger>> OpenProjectLedger(const GlobalOptions& g);

using CommandAction = std::function<Status()>;

// Adds one command's subcommand and flags to `app`. When the command is
// selected on the command line it stores its action in *selected (the flags
// it captured are filled by then). `g` outlives the action.
using CommandSetup = void (*)(CLI::App* app, GlobalOptions* g,
                              CommandAction* selected);

// Registration functions, one per file in cli/commands/; each adds its
// commands to the table.
void RegisterProjectCommands(std::vector<CommandSetup>* table);
void RegisterApplyCommands(std::vector<CommandSetup>* table);
void RegisterAuditCommands(std::vector<CommandSetup>* table);

// Runs the CLI: parses argv, runs the command, prints one error line on
// failure, returns the exit code.
int RunCli(int argc, char** argv);

}  // namespace migledger
