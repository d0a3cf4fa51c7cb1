#include "tests/test_util.h"

#include <fcntl.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace migledger::testing {
namespace fs = std::filesystem;
namespace pb = google::protobuf;

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl =
      std::string(base && *base ? base : "/tmp") + "/migledger-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  if (std::getenv("MIGLEDGER_KEEP_TEST_DIRS")) return;
  std::error_code ec;
  fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
  fs::remove_all(path_, ec);
}

std::string MigledgerBinary() {
  if (const char* b = std::getenv("MIGLEDGER_BINARY"); b && *b) return b;
  return MIGLEDGER_BINARY;
}

namespace {
std::string Slurp(int fd) {
  std::string s;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) s.append(buf, n);
  return s;
}
// The current environment with `env` added (replacing variables of the same
// name), as "KEY=value" strings; built before fork(), so that a child of a
// multi-threaded test allocates nothing.
std::vector<std::string> EnvironmentWith(
    const std::map<std::string, std::string>& env) {
  std::vector<std::string> out;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    if (!env.count(kv.substr(0, kv.find('=')))) out.push_back(kv);
  }
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

// Fills exit code, signal and output of a finished run from its wait
// status and capture files, and removes the files.
void CollectRun(int status, const std::string& out_path,
                const std::string& err_path, RunResult* r) {
  if (WIFEXITED(status)) r->exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r->signal = WTERMSIG(status);
  r->out = ReadFile(out_path);
  r->err = ReadFile(err_path);
  unlink(out_path.c_str());
  unlink(err_path.c_str());
}
}  // namespace

RunResult RunMigledger(const std::vector<std::string>& args,
                       const std::string& cwd,
                       const std::map<std::string, std::string>& env) {
  RunResult r;
  std::string out_path = cwd + "/.run-out-" + std::to_string(getpid());
  std::string err_path = cwd + "/.run-err-" + std::to_string(getpid());
  pid_t pid = fork();
  if (pid == 0) {
    int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(out, 1);
    dup2(err, 2);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    if (chdir(cwd.c_str()) != 0) _exit(127);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::string bin = MigledgerBinary();
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(bin.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CollectRun(status, out_path, err_path, &r);
  return r;
}

TimedRun RunTimed(const std::vector<std::string>& args, const std::string& cwd,
                  const std::map<std::string, std::string>& env, int timeout_s,
                  const std::vector<std::string>& wrapper) {
  static std::atomic<int> counter{0};
  TimedRun r;
  const std::string tag =
      std::to_string(getpid()) + "-" + std::to_string(counter++);
  const std::string out_path = cwd + "/.timed-out-" + tag;
  const std::string err_path = cwd + "/.timed-err-" + tag;

  std::vector<std::string> env_strings = EnvironmentWith(env);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings = wrapper;
  argv_strings.push_back(MigledgerBinary());
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  const auto start = std::chrono::steady_clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0 || err < 0) _exit(127);
    dup2(out, 1);
    dup2(err, 2);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    if (chdir(cwd.c_str()) != 0) _exit(127);
    execvpe(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  if (pid < 0) return r;
  int status = 0;
  struct rusage ru {};
  for (;;) {
    pid_t got = wait4(pid, &status, WNOHANG, &ru);
    if (got == pid) break;
    if (got < 0 && errno != EINTR) break;
    auto elapsed = std::chrono::steady_clock::now() - start;
    if (!r.timed_out && elapsed > std::chrono::seconds(timeout_s)) {
      kill(pid, SIGKILL);
      r.timed_out = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  r.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  r.max_rss_kb = ru.ru_maxrss;
  CollectRun(status, out_path, err_path, &r);
  return r;
}

pid_t StartMigledger(const std::vector<std::string>& args,
                     const std::string& cwd,
                     const std::map<std::string, std::string>& env,
                     const std::string& err_path) {
  std::vector<std::string> env_strings = EnvironmentWith(env);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings = {MigledgerBinary()};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(err_path.empty()
             ? devnull
             : open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600),
         2);
    if (chdir(cwd.c_str()) != 0) _exit(127);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  return pid;
}

bool WaitUntil(const std::function<bool()>& ready, int seconds) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return ready();
}

bool WaitForExit(pid_t pid, int seconds, int* status) {
  if (WaitUntil([&] { return waitpid(pid, status, WNOHANG) == pid; },
                seconds)) {
    return true;
  }
  kill(pid, SIGKILL);
  waitpid(pid, status, 0);
  return false;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

void WriteFile(const std::string& path, const std::string& content) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out << content;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::vector<std::string> SqliteQuery(const std::string& db,
                                     const std::string& sql) {
  std::vector<std::string> rows;
  sqlite3* h = nullptr;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) !=
      SQLITE_OK) {
    sqlite3_close(h);
    return {"<cannot open " + db + ">"};
  }
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    rows.push_back(std::string("<error: ") + sqlite3_errmsg(h) + ">");
  } else {
    while (sqlite3_step(st) == SQLITE_ROW) {
      std::string row;
      for (int i = 0; i < sqlite3_column_count(st); ++i) {
        if (i) row += "|";
        const unsigned char* t = sqlite3_column_text(st, i);
        row += t ? reinterpret_cast<const char*>(t) : "";
      }
      rows.push_back(row);
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(h);
  return rows;
}

void MakeProject(const std::string& dir, const std::string& target_url) {
  WriteFile(dir + "/migledger.toml",
            "default_target = \"dev\"\nlock_timeout_ms = "
            "2000\n[targets.dev]\nurl = \"" +
                target_url + "\"\n");
  fs::create_directories(dir + "/migrations");
}

std::string SqliteExec(const std::string& db, const std::string& sql) {
  sqlite3* h = nullptr;
  if (sqlite3_open_v2(db.c_str(), &h,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                      nullptr) != SQLITE_OK) {
    std::string e = h ? sqlite3_errmsg(h) : "cannot open";
    sqlite3_close(h);
    return e;
  }
  sqlite3_busy_timeout(h, 2000);
  char* msg = nullptr;
  std::string error;
  if (sqlite3_exec(h, sql.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
    error = msg ? msg : "error";
  }
  sqlite3_free(msg);
  sqlite3_close(h);
  return error;
}

std::string Describe(const RunResult& r) {
  // Some runs print megabytes (a fuzzed file echoed back); the start says
  // enough.
  auto cut = [](const std::string& s) {
    return s.size() > 4000 ? s.substr(0, 4000) + "..." : s;
  };
  return "exit " + std::to_string(r.exit_code) + " signal " +
         std::to_string(r.signal) + "\n--- stdout:\n" + cut(r.out) +
         "--- stderr:\n" + cut(r.err);
}

void ExpectOneErrorLine(const RunResult& r) {
  EXPECT_EQ(Lines(r.err).size(), 1u) << Describe(r);
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << Describe(r);
  EXPECT_TRUE(!r.err.empty() && r.err.back() == '\n') << Describe(r);
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// ---- `audit log --format jsonl` -------------------------------------------

std::optional<pb::Struct> ParseJson(const std::string& text) {
  pb::Struct s;
  if (!pb::util::JsonStringToMessage(text, &s).ok()) return std::nullopt;
  return s;
}

std::string JsonField(const pb::Struct& s, const std::string& key) {
  auto it = s.fields().find(key);
  if (it == s.fields().end()) return "";
  if (it->second.has_string_value()) return it->second.string_value();
  if (it->second.has_number_value())
    return std::to_string(static_cast<uint64_t>(it->second.number_value()));
  return "";
}

const pb::Struct* JsonObject(const pb::Struct& s, const std::string& key) {
  auto it = s.fields().find(key);
  if (it == s.fields().end() || !it->second.has_struct_value()) return nullptr;
  return &it->second.struct_value();
}

std::string SortableTime(const std::string& t) {
  if (t.empty() || t.back() != 'Z') return t;
  size_t dot = t.find('.');
  std::string whole =
      dot == std::string::npos ? t.substr(0, t.size() - 1) : t.substr(0, dot);
  std::string frac =
      dot == std::string::npos ? "" : t.substr(dot + 1, t.size() - dot - 2);
  frac.resize(9, '0');
  return whole + "." + frac + "Z";
}

std::optional<LogEvent> ParseLogEvent(const std::string& line) {
  auto s = ParseJson(line);
  if (!s) return std::nullopt;
  const pb::Struct* ev = JsonObject(*s, "event");
  if (!ev) return std::nullopt;
  LogEvent e;
  e.sequence = std::stoull("0" + JsonField(*s, "sequence"));
  e.type = JsonField(*s, "type");
  e.target_sequence = std::stoull("0" + JsonField(*ev, "target_sequence"));
  e.time = JsonField(*ev, "time");
  e.sort_time = SortableTime(e.time);
  e.run_id = JsonField(*ev, "run_id");
  if (const pb::Struct* payload = JsonObject(*ev, e.type)) {
    e.version = JsonField(*payload, "version");
    e.attempt_id = JsonField(*payload, "attempt_id");
    e.direction = JsonField(*payload, "direction");
    e.tx_mode = JsonField(*payload, "tx_mode");
    e.outcome = JsonField(*payload, "outcome");
    e.resume_at = std::atoi(JsonField(*payload, "resume_at_statement").c_str());
  }
  return e;
}

std::vector<LogEvent> ReadAuditLog(
    const std::string& project, const std::vector<std::string>& filters,
    const std::map<std::string, std::string>& env) {
  std::vector<std::string> args = {"audit", "log", "--format", "jsonl"};
  args.insert(args.end(), filters.begin(), filters.end());
  RunResult r = RunMigledger(args, project, env);
  EXPECT_EQ(r.exit_code, 0) << "audit log: " << Describe(r);
  std::vector<LogEvent> events;
  for (const std::string& line : Lines(r.out)) {
    auto e = ParseLogEvent(line);
    EXPECT_TRUE(e.has_value()) << "not an event: " << line;
    if (e) events.push_back(*e);
  }
  return events;
}

bool IsTerminal(const std::string& type) {
  return type == "step_applied" || type == "step_failed" ||
         type == "step_reverted" || type == "step_recovered";
}

// ---- PostgreSQL -------------------------------------------------------------

std::string WithDatabase(const std::string& uri, const std::string& db) {
  size_t q = uri.find('?');
  std::string base = uri.substr(0, q);
  std::string rest = q == std::string::npos ? "" : uri.substr(q);
  size_t scheme = base.find("://");
  size_t slash = base.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  if (slash == std::string::npos) return base + "/" + db + rest;
  return base.substr(0, slash + 1) + db + rest;
}

PsqlResult RunPsqlFile(const std::string& uri, const std::string& file) {
  PsqlResult r;
  char err_path[] = "/tmp/migledger-psql-err-XXXXXX";
  int fd = mkstemp(err_path);
  if (fd < 0) return r;
  close(fd);
  // Notices (DROP ... IF EXISTS, CASCADE) would read as result rows.
  std::string cmd = "PGPASSWORD=" + ShellQuote(Env("PGTEST_PASSWORD")) +
                    " PGCONNECT_TIMEOUT=10"
                    " PGOPTIONS='-c client_min_messages=warning'"
                    " psql -X -A -t -q -v ON_ERROR_STOP=1 " +
                    ShellQuote(uri) + " -f " + ShellQuote(file) + " 2>" +
                    ShellQuote(err_path);
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    unlink(err_path);
    return r;
  }
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.rows = Lines(out);
  r.output = out + ReadFile(err_path);
  unlink(err_path);
  return r;
}

PsqlResult RunPsql(const std::string& uri, const std::string& sql) {
  char tmpl[] = "/tmp/migledger-psql-XXXXXX";
  int fd = mkstemp(tmpl);
  if (fd < 0) return {};
  close(fd);
  WriteFile(tmpl, sql);
  PsqlResult r = RunPsqlFile(uri, tmpl);
  unlink(tmpl);
  return r;
}

namespace {
std::string SocketUri(const std::string& db) {
  return "postgresql:///" + db + "?host=" + Env("PGTEST_HOST") +
         "&port=" + Env("PGTEST_PORT") + "&user=migledger";
}
}  // namespace

bool PgServer::Available() { return !Env("PGTEST_URI").empty(); }

std::string PgServer::CreateDatabase(const std::string& name) {
  RunPsql(SocketUri("postgres"),
          "DROP DATABASE IF EXISTS " + name + " WITH (FORCE);\n");
  PsqlResult r =
      RunPsql(SocketUri("postgres"), "CREATE DATABASE " + name + ";\n");
  if (r.exit_code != 0)
    throw std::runtime_error("CREATE DATABASE " + name +
                             " failed: " + r.output);
  return SocketUri(name);
}

void PgServer::DropDatabase(const std::string& name) {
  RunPsql(SocketUri("postgres"),
          "DROP DATABASE IF EXISTS " + name + " WITH (FORCE);\n");
}

std::vector<std::string> PgServer::Query(const std::string& uri,
                                         const std::string& sql) {
  PsqlResult r = RunPsql(uri, sql + "\n");
  if (r.exit_code != 0)
    throw std::runtime_error("psql failed: " + sql + ": " + r.output);
  return r.rows;
}

std::string NewDatabaseName() {
  static std::atomic<int> n{0};
  return "bi_" + std::to_string(getpid()) + "_" + std::to_string(n++);
}

std::vector<std::string> PgQuery(const std::string& uri,
                                 const std::string& sql) {
  try {
    return PgServer::Query(uri, sql);
  } catch (const std::exception& e) {
    return {std::string("<error: ") + e.what() + ">"};
  }
}

}  // namespace migledger::testing
