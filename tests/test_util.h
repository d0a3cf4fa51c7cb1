// Helpers for tests that run the real migledger binary on real files.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace migledger::testing {

// A fresh directory under $TMPDIR, removed when the object dies (unless
// MIGLEDGER_KEEP_TEST_DIRS is set).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const {
    return path_ + "/" + name;
  }

 private:
  std::string path_;
};

struct RunResult {
  int exit_code = -1;  // -1: killed by a signal (see signal)
  int signal = 0;
  std::string out;
  std::string err;
};

// Runs the migledger binary with `args` in `cwd`, with extra environment
// variables (added to the current environment). Never throws.
RunResult RunMigledger(const std::vector<std::string>& args,
                       const std::string& cwd,
                       const std::map<std::string, std::string>& env = {});

// Starts the migledger binary in the background (stdin /dev/null, stdout
// discarded, stderr to `err_path` if given, else discarded), with extra
// environment variables; returns its pid (waitpid() it), or -1.
pid_t StartMigledger(const std::vector<std::string>& args,
                     const std::string& cwd,
                     const std::map<std::string, std::string>& env = {},
                     const std::string& err_path = "");

// Polls `ready` every 50 ms until it returns true (then true) or `seconds`
// pass (then false).
bool WaitUntil(const std::function<bool()>& ready, int seconds);

// Waits up to `seconds` for `pid` to end and stores its wait status; when it
// does not end in time, kills it (SIGKILL), reaps it and returns false.
bool WaitForExit(pid_t pid, int seconds, int* status);

// Path of the migledger binary under test.
std::string MigledgerBinary();

bool Contains(const std::string& haystack, const std::string& needle);
// `text` split at '\n' (a final newline ends the last line; no empty line
// after it).
std::vector<std::string> Lines(const std::string& text);

void WriteFile(const std::string& path, const std::string& content);
std::string ReadFile(const std::string& path);

// Runs one SQL query on a SQLite file and returns the rows, cells joined by
// '|' (like the sqlite3 shell).
std::vector<std::string> SqliteQuery(const std::string& db,
                                     const std::string& sql);

// A project directory with migledger.toml pointing at `target_url`
// (default: sqlite:app.db in the project) and an empty migrations/.
void MakeProject(const std::string& dir,
                 const std::string& target_url = "sqlite:app.db");

}  // namespace migledger::testing

namespace migledger::testing {

// A throwaway PostgreSQL server started by scripts/pg-throwaway (PGTEST_*
// variables). Databases are created and dropped with the psql client.
class PgServer {
 public:
  // False when PGTEST_URI is not set (then tests GTEST_SKIP()).
  static bool Available();
  // Creates a fresh database and returns its socket URI (no password needed).
  static std::string CreateDatabase(const std::string& name);
  static void DropDatabase(const std::string& name);
  // Runs SQL with psql; returns rows (cells joined by '|'). Fails the
  // current test on error.
  static std::vector<std::string> Query(const std::string& uri,
                                        const std::string& sql);
};

}  // namespace migledger::testing
