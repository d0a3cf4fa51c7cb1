// Helpers for tests that run the real migledger binary on real files.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace google::protobuf {
class Struct;
}

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

// A run of the binary with a wall-clock limit and the child's own resource
// usage (wait4).
struct TimedRun : RunResult {
  bool timed_out = false;
  double seconds = 0;
  long max_rss_kb = 0;
};

// Runs the migledger binary like RunMigledger, but kills it after
// `timeout_s` seconds and reports its peak RSS. The environment is built
// before fork(), so the call is safe from several threads at once.
// `wrapper` (a command and its arguments, found on PATH) runs the binary.
TimedRun RunTimed(const std::vector<std::string>& args, const std::string& cwd,
                  const std::map<std::string, std::string>& env = {},
                  int timeout_s = 120,
                  const std::vector<std::string>& wrapper = {});

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

// Describes a run for assertion messages (each stream cut at 4,000 bytes).
std::string Describe(const RunResult& r);

// Checks that stderr of a failed command is exactly one line, "error: ...".
void ExpectOneErrorLine(const RunResult& r);

// The value of an environment variable, "" when unset.
std::string Env(const char* name);

// `s` quoted for /bin/sh.
std::string ShellQuote(const std::string& s);

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

// Runs SQL that changes a SQLite file (waiting up to 2 s for its lock);
// returns "" or the error.
std::string SqliteExec(const std::string& db, const std::string& sql);

// A project directory with migledger.toml pointing at `target_url`
// (default: sqlite:app.db in the project) and an empty migrations/.
void MakeProject(const std::string& dir,
                 const std::string& target_url = "sqlite:app.db");

// ---- `audit log --format jsonl` -------------------------------------------

// One line of `audit log --format jsonl`, the fields the tests look at.
// Fields the event does not carry stay empty (or 0: proto3 JSON omits zero
// values).
struct LogEvent {
  uint64_t sequence = 0;         // ledger sequence
  uint64_t target_sequence = 0;  // the event's place in the target's chain
  std::string type;              // "step_started", "run_finished"...
  std::string time;              // as recorded (RFC 3339)
  std::string sort_time;         // SortableTime(time)
  std::string run_id;
  // From the payload (the object named after `type`):
  std::string version;
  std::string attempt_id;
  std::string direction;  // "DIRECTION_DOWN"...
  std::string tx_mode;    // "TX_MODE_NO_TRANSACTION"...
  std::string outcome;    // step_recovered: "RECOVERED_COMMITTED"...
  int resume_at = 0;      // step_started / step_recovered resume_at_statement
};

// Parses one line; nullopt when it is not an event.
std::optional<LogEvent> ParseLogEvent(const std::string& line);

// Runs `audit log --format jsonl` with `filters` in `project` and parses
// every line; an exit code other than 0, or a line that is not an event,
// fails the current test.
std::vector<LogEvent> ReadAuditLog(
    const std::string& project, const std::vector<std::string>& filters = {},
    const std::map<std::string, std::string>& env = {});

// True for the events that end a step attempt: step_applied, step_failed,
// step_reverted, step_recovered.
bool IsTerminal(const std::string& type);

// An RFC 3339 UTC time as protobuf's JSON mapping writes it (0, 3, 6 or 9
// fractional digits) with 9 digits, so that times compare as strings.
std::string SortableTime(const std::string& t);

// A JSON object (one jsonl line, `status --format json`), or nullopt.
std::optional<google::protobuf::Struct> ParseJson(const std::string& text);
// The string (or integral number, as decimal) member `key` of `s`, or "".
std::string JsonField(const google::protobuf::Struct& s,
                      const std::string& key);
// The object member `key` of `s`, or null.
const google::protobuf::Struct* JsonObject(const google::protobuf::Struct& s,
                                           const std::string& key);

// ---- PostgreSQL -------------------------------------------------------------

// `uri` (postgresql://user@host:port/db?params) with its database replaced.
std::string WithDatabase(const std::string& uri, const std::string& db);

struct PsqlResult {
  int exit_code = -1;
  std::vector<std::string> rows;  // stdout lines, cells joined by '|'
  std::string output;             // stdout and stderr, for messages
};

// Runs an SQL script with psql on `uri` (each statement in its own
// transaction; the first error stops it), with PGTEST_PASSWORD as password
// and notices below WARNING left out. Never throws.
PsqlResult RunPsql(const std::string& uri, const std::string& sql);
// The same, the script read from `file`.
PsqlResult RunPsqlFile(const std::string& uri, const std::string& file);

// A database name no other test process uses ("bi_<pid>_<n>").
std::string NewDatabaseName();

// PgServer::Query that does not throw: rows, or one "<error: ...>" row.
std::vector<std::string> PgQuery(const std::string& uri,
                                 const std::string& sql);

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
