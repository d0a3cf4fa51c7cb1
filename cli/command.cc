#include "cli/command.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "applier/actor.h"
#include "applier/audit_store.h"
#include "cli/exit_codes.h"
#include "cli/format.h"
#include "common/file_modes.h"

namespace migledger {

namespace {

// "5s", "250ms", "2m", or a bare number of milliseconds.
StatusOr<std::chrono::milliseconds> ParseDuration(const std::string& text) {
  if (text.empty()) return InvalidInput("empty duration");
  size_t pos = 0;
  long long n = 0;
  try {
    n = std::stoll(text, &pos);
  } catch (...) {
    return InvalidInput("bad duration \"" + text + "\" (use 500ms, 10s, 2m)");
  }
  std::string unit = text.substr(pos);
  if (n < 0) return InvalidInput("negative duration \"" + text + "\"");
  if (unit.empty() || unit == "ms") return std::chrono::milliseconds(n);
  if (unit == "s") return std::chrono::milliseconds(n * 1000);
  if (unit == "m") return std::chrono::milliseconds(n * 60000);
  return InvalidInput("bad duration \"" + text + "\" (use 500ms, 10s, 2m)");
}

// Removes passwords from one command-line argument, whatever its spelling:
// a bare URI or conninfo, "--target=URI", or an attached "-tURI". The text
// of --reason (stored as it is in the run's event anyway) stays as written,
// though it may hold a '='. `previous` is the argument before `arg`.
std::string RedactArg(const std::string& arg, const std::string& previous) {
  if (previous == "--reason" || arg.rfind("--reason=", 0) == 0) return arg;
  if (arg.rfind("--", 0) == 0 && arg.find('=') != std::string::npos) {
    size_t eq = arg.find('=');
    return arg.substr(0, eq + 1) + RedactUri(arg.substr(eq + 1));
  }
  if (arg.size() > 2 && arg[0] == '-' && arg[1] != '-') {
    return arg.substr(0, 2) + RedactUri(arg.substr(2));
  }
  return RedactUri(arg);
}

std::string JoinArgs(int argc, char** argv) {
  std::string s = "migledger";
  for (int i = 1; i < argc; ++i) {
    std::string arg = RedactArg(argv[i], argv[i - 1]);
    s += " ";
    if (arg.find_first_of(" \t'\"") != std::string::npos || arg.empty()) {
      std::string q = "'";
      for (char c : arg)
        q += c == '\'' ? std::string("'\\''") : std::string(1, c);
      s += q + "'";
    } else {
      s += arg;
    }
  }
  return s;
}

}  // namespace

StatusOr<ApplierOptions> MakeApplierOptions(const GlobalOptions& g) {
  ApplierOptions o;
  bool found = false;
  MIGLEDGER_ASSIGN_OR_RETURN(o.config,
                             LoadProjectConfig(g.project_dir, &found));
  o.target = g.target;
  o.command_line = g.command_line;
  o.lock_timeout = std::chrono::milliseconds(o.config.lock_timeout_ms);
  o.allow_out_of_order = o.config.allow_out_of_order;
  if (!g.lock_timeout.empty()) {
    MIGLEDGER_ASSIGN_OR_RETURN(o.lock_timeout, ParseDuration(g.lock_timeout));
  }
  return o;
}

namespace {
// Temporary ledgers built from the audit store, removed at exit.
std::vector<std::string>& TemporaryLedgers() {
  static std::vector<std::string> dirs;
  return dirs;
}
void RemoveTemporaryLedgers() {
  for (const auto& d : TemporaryLedgers()) {
    std::error_code ec;
    std::filesystem::remove_all(d, ec);
  }
}
}  // namespace

StatusOr<std::unique_ptr<Ledger>> OpenProjectLedger(const GlobalOptions& g) {
  bool found = false;
  MIGLEDGER_ASSIGN_OR_RETURN(ProjectConfig c,
                             LoadProjectConfig(g.project_dir, &found));
  if (!g.use_store) {
    LedgerOptions lo;
    lo.read_only = true;
    // Reading is allowed, but say that another user could have changed it.
    if (Status st = CheckLedgerDirectory(c.ledger_dir); !st.ok())
      spdlog::warn("{}", st.message());
    return Ledger::Open(c.ledger_dir, lo);
  }
  std::string url = AuditStoreUrl(c.audit_store_url, c.audit_store_url_env);
  if (url.empty()) {
    return InvalidInput(
        "--store: no audit_store (or audit_store_url_env) in migledger.toml");
  }
  MIGLEDGER_ASSIGN_OR_RETURN(auto store, AuditStore::Open(url));
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl =
      std::string(tmp && *tmp ? tmp : "/tmp") + "/migledger-store-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data()))
    return IoError("cannot create a temporary directory");
  std::string dir = buf.data();
  if (TemporaryLedgers().empty()) std::atexit(RemoveTemporaryLedgers);
  TemporaryLedgers().push_back(dir);
  LedgerOptions lo;
  lo.create_if_missing = true;
  // The copy is named as the store, so its digest is the store's checkpoint.
  MIGLEDGER_ASSIGN_OR_RETURN(lo.new_ledger_id, store->StoreId());
  MIGLEDGER_ASSIGN_OR_RETURN(auto ledger, Ledger::Open(dir + "/ledger", lo));
  MIGLEDGER_ASSIGN_OR_RETURN(uint64_t n, store->PullAll(ledger.get()));
  spdlog::info("read {} event(s) from the audit store", n);
  return ledger;
}

namespace {

// "migledger --target prod plan": an option of the command given before
// it. CLI11 only says the arguments were not expected; say where they go.
std::string MisplacedOptionHint(CLI::App& app, int argc, char** argv) {
  std::vector<std::string> before;  // options seen before the command
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    for (CLI::App* command : app.get_subcommands({})) {
      if (!command->check_name(arg)) continue;
      for (const std::string& option : before) {
        if (app.get_option_no_throw(option) == nullptr &&
            command->get_option_no_throw(option) != nullptr) {
          return option + " is an option of the command: put it after " +
                 "the command name (migledger " + arg + " " + option + " ...)";
        }
      }
      return "";
    }
    if (arg.rfind("--", 0) == 0) before.push_back(arg.substr(0, arg.find('=')));
  }
  return "";
}

// Edit distance with adjacent transpositions (optimal string alignment):
// "statsu" is one step from "status".
size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1,
                                     std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] =
          std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

// "migledger statsu", "migledger audit lgo": a word where a command name
// belongs that names none. Says which word, and the closest command (or
// the list of commands there). "" when every command word is known.
std::string UnknownCommandHint(CLI::App& app, int argc, char** argv) {
  CLI::App* level = &app;
  std::string path = "migledger";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") return "";
    if (arg.rfind("-", 0) == 0) {
      // The only option that takes a value before a command name.
      if (arg == "-C" || arg == "--project") ++i;
      continue;
    }
    std::vector<CLI::App*> commands = level->get_subcommands({});
    if (commands.empty()) return "";
    CLI::App* next = nullptr;
    for (CLI::App* c : commands) {
      if (c->check_name(arg)) next = c;
    }
    if (next != nullptr) {
      level = next;
      path += " " + arg;
      continue;
    }
    std::string best, names;
    size_t best_distance = std::string::npos;
    for (CLI::App* c : commands) {
      const std::string& name = c->get_name();
      names += (names.empty() ? "" : ", ") + name;
      const size_t d = EditDistance(arg, name);
      if (d < best_distance) {
        best_distance = d;
        best = name;
      }
    }
    std::string hint = "unknown command \"" + arg + "\" of " + path;
    if (best_distance <= std::max<size_t>(2, arg.size() / 3)) {
      return hint + " (did you mean \"" + best + "\"?)";
    }
    return hint + " (commands: " + names + ")";
  }
  return "";
}

// The "%*" of the log pattern: the message OneLine() (control characters
// escaped), as every other line on stderr.
class TerminalSafeMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const std::string text =
        OneLine(std::string(msg.payload.data(), msg.payload.size()));
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<TerminalSafeMessage>();
  }
};

}  // namespace

int RunCli(int argc, char** argv) {
  MakeNewFilesPrivate();  // the ledger and exports are 0600 (dir 0700)
  auto logger = spdlog::stderr_color_mt("migledger");
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<TerminalSafeMessage>('*').set_pattern("%^%l%$: %*");
  logger->set_formatter(std::move(formatter));
  spdlog::set_default_logger(logger);

  CLI::App app{
      "migledger: database migrations with an append-only, tamper-evident "
      "ledger.\n"
      "Exit codes: 0 ok, 1 internal, 2 bad input, 3 migration failed, 4 "
      "drift (the target\n"
      "disagrees with a history that verifies), 5 busy (locked), 6 does not "
      "verify (the\n"
      "ledger, the target's event mirror or a digest), 7 target unavailable "
      "(also when\n"
      "lost mid-step: the outcome is unknown, the next apply finds it), 8 "
      "unsupported, 9 I/O,\n"
      "130/143 interrupted by SIGINT/SIGTERM (the running step rolled back)."};
  app.require_subcommand(1);
  app.set_version_flag("--version", ToolVersion());
  GlobalOptions g;
  g.command_line = JoinArgs(argc, argv);
  app.add_option("-C,--project", g.project_dir,
                 "Project directory (holds migledger.toml)")
      ->capture_default_str();
  app.add_flag("-v,--verbose", g.verbose,
               "More logging on stderr (-vv for debug)");
  app.add_flag("-q,--quiet", g.quiet, "Only errors on stderr");
  app.add_flag("--store", g.use_store,
               "audit commands: read the whole fleet's history from the "
               "central audit store");
  app.fallthrough();

  std::vector<CommandSetup> table;
  RegisterProjectCommands(&table);
  RegisterApplyCommands(&table);
  RegisterAuditCommands(&table);
  CommandAction selected;
  for (CommandSetup setup : table) setup(&app, &g, &selected);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string hint = MisplacedOptionHint(app, argc, argv);
    if (hint.empty()) hint = UnknownCommandHint(app, argc, argv);
    std::fprintf(stderr, "error: %s (see --help)\n",
                 OneLine(hint.empty() ? e.what() : hint).c_str());
    return kExitBadInput;
  }
  if (g.quiet) {
    spdlog::set_level(spdlog::level::err);
  } else if (g.verbose >= 2) {
    spdlog::set_level(spdlog::level::debug);
  } else if (g.verbose == 1) {
    spdlog::set_level(spdlog::level::info);
  } else {
    spdlog::set_level(spdlog::level::warn);
  }
  if (!selected) {
    std::fprintf(stderr, "error: no command given (see --help)\n");
    return kExitBadInput;
  }
  if (g.use_store && !app.got_subcommand("audit")) {
    // Only the audit commands read the store; any other would silently
    // answer from the local ledger and the target instead.
    std::string command;
    for (const CLI::App* c : app.get_subcommands()) command = c->get_name();
    std::fprintf(stderr,
                 "error: --store reads the central audit store and goes with "
                 "the audit commands (migledger --store audit "
                 "log|show|state|verify|digest|export), not with %s\n",
                 command.c_str());
    return kExitBadInput;
  }
  Status st;
  try {
    st = selected();
  } catch (const std::exception& e) {
    st = Internal(std::string("unexpected exception: ") + e.what());
  }
  std::fflush(stdout);
  if (!st.ok()) {
    // One line whatever the database put in its message (the ledger keeps
    // the message as it was).
    std::fprintf(stderr, "error: %s\n", OneLine(st.message()).c_str());
    return ExitCodeFor(st);
  }
  return kExitOk;
}

}  // namespace migledger
