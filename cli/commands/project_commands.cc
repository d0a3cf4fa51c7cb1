// init and new: create a project and its migration files.
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <filesystem>

#include "applier/conninfo.h"
#include "cli/command.h"
#include "cli/format.h"
#include "common/atomic_file.h"
#include "common/file_modes.h"
#include "common/time_util.h"

namespace migledger {
namespace fs = std::filesystem;

namespace {

// Project files belong to the project, not to the ledger: the user's usual
// mode. Written whole or not at all, and never over anything already there
// (an existing migration is never overwritten).
Status WriteNewFile(const fs::path& path, const std::string& content) {
  return WriteFileAtomically(path.string(), content,
                             {static_cast<mode_t>(0666 & ~OriginalUmask()),
                              /*replace=*/false});
}

// `s` as a TOML basic string: quoted, with \\, " and control characters
// escaped.
std::string TomlString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

void SetupInit(CLI::App* app, GlobalOptions* g, CommandAction* selected) {
  auto* cmd = app->add_subcommand(
      "init", "Create migledger.toml, migrations/ and the ledger");
  auto target = std::make_shared<std::string>("sqlite:app.db");
  cmd->add_option(
         "--target", *target,
         "Default target URI (sqlite:PATH or postgres://...; no password: "
         "use url_env, PGPASSWORD or .pgpass)")
      ->capture_default_str();
  cmd->callback([=] {
    *selected = [=]() -> Status {
      fs::path root(g->project_dir);
      std::error_code ec;
      fs::create_directories(root, ec);
      if (ec)
        return IoError("cannot create " + root.string() + ": " + ec.message());
      fs::path config = root / kConfigFileName;
      if (!fs::exists(config, ec)) {
        std::string url = *target;
        std::string text =
            "# migledger project: see README.md\n"
            "migrations_dir = \"migrations\"\n"
            "ledger_dir = \".migledger\"\n"
            "default_target = \"dev\"\n"
            "lock_timeout_ms = 10000\n\n"
            "[targets.dev]\n";
        // migledger.toml is usually committed: a password stays out of it
        // (applier/conninfo.h parses the URI as libpq does).
        MIGLEDGER_RETURN_IF_ERROR(RefuseStoredSecret(url, "--target"));
        text += "url = " + TomlString(url) + "\n";
        MIGLEDGER_RETURN_IF_ERROR(WriteNewFile(config, text));
        std::printf("created %s\n", OneLine(config.string()).c_str());
      }
      bool found = false;
      MIGLEDGER_ASSIGN_OR_RETURN(ProjectConfig c,
                                 LoadProjectConfig(root.string(), &found));
      if (!fs::exists(c.migrations_dir, ec)) {
        fs::create_directories(c.migrations_dir, ec);
        if (ec)
          return IoError("cannot create " + c.migrations_dir + ": " +
                         ec.message());
        ::chmod(c.migrations_dir.c_str(), 0777 & ~OriginalUmask());
        std::printf("created %s/\n", OneLine(c.migrations_dir).c_str());
      }
      LedgerOptions lo;
      lo.create_if_missing = true;
      MIGLEDGER_ASSIGN_OR_RETURN(auto ledger, Ledger::Open(c.ledger_dir, lo));
      std::printf("ledger %s (id %s)\n", OneLine(c.ledger_dir).c_str(),
                  ledger->ledger_id().c_str());
      return Status::Ok();
    };
  });
}

// `version` + 1 in decimal, at least as wide (leading zeros kept), at any
// length.
std::string NextNumber(std::string version) {
  size_t i = version.size();
  while (i > 0 && version[i - 1] == '9') version[--i] = '0';
  if (i == 0) return "1" + version;
  ++version[i - 1];
  return version;
}

// A UTC time as the 14-digit version migledger new writes.
std::string Timestamp(std::time_t t) {
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d%H%M%S", &tm);
  return buf;
}

void SetupNew(CLI::App* app, GlobalOptions* g, CommandAction* selected) {
  auto* cmd = app->add_subcommand(
      "new", "Create the next <version>_<slug>.up.sql / .down.sql");
  auto slug = std::make_shared<std::string>();
  auto no_tx = std::make_shared<bool>(false);
  cmd->add_option("slug", *slug, "Short name: letters, digits, _ and -")
      ->required();
  cmd->add_flag("--no-transaction", *no_tx,
                "Add the -- migledger:no-transaction directive");
  cmd->callback([=] {
    *selected = [=]() -> Status {
      for (char c : *slug) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' &&
            c != '-') {
          return InvalidInput("slug \"" + *slug +
                              "\": use letters, digits, _ and -");
        }
      }
      bool found = false;
      MIGLEDGER_ASSIGN_OR_RETURN(ProjectConfig c,
                                 LoadProjectConfig(g->project_dir, &found));
      MIGLEDGER_ASSIGN_OR_RETURN(auto migrations,
                                 LoadMigrations(c.migrations_dir));
      // Sequential numbering when the project already uses short numbers
      // (0001_...), otherwise a UTC timestamp (merges well across branches).
      std::string version;
      if (!migrations.empty() && migrations.back().version.size() < 14) {
        version = NextNumber(migrations.back().version);
      } else {
        version = Timestamp(NowMicros() / 1000000);
        if (!migrations.empty() &&
            CompareVersions(version, migrations.back().version) <= 0) {
          // Several in one second, or a clock behind the newest file: the
          // second after the newest, still a timestamp when it is one.
          const std::string& last = migrations.back().version;
          std::tm tm{};
          const char* end = last.size() == 14
                                ? strptime(last.c_str(), "%Y%m%d%H%M%S", &tm)
                                : nullptr;
          version = end != nullptr && *end == '\0' ? Timestamp(timegm(&tm) + 1)
                                                   : NextNumber(last);
        }
      }
      fs::path dir(c.migrations_dir);
      fs::path up = dir / (version + "_" + *slug + ".up.sql");
      fs::path down = dir / (version + "_" + *slug + ".down.sql");
      std::string header = *no_tx ? "-- migledger:no-transaction\n" : "";
      MIGLEDGER_RETURN_IF_ERROR(
          WriteNewFile(up, header + "-- " + *slug + ": up\n"));
      MIGLEDGER_RETURN_IF_ERROR(
          WriteNewFile(down, header + "-- " + *slug +
                                 ": down (the statements that revert the up "
                                 "file; `down` refuses a file without any)\n"));
      std::printf("%s\n%s\n", OneLine(up.string()).c_str(),
                  OneLine(down.string()).c_str());
      return Status::Ok();
    };
  });
}

}  // namespace

void RegisterProjectCommands(std::vector<CommandSetup>* table) {
  table->push_back(&SetupInit);
  table->push_back(&SetupNew);
}

}  // namespace migledger
