#include "tests/test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

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
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  r.out = ReadFile(out_path);
  r.err = ReadFile(err_path);
  unlink(out_path.c_str());
  unlink(err_path.c_str());
  return r;
}

pid_t StartMigledger(const std::vector<std::string>& args,
                     const std::string& cwd,
                     const std::map<std::string, std::string>& env,
                     const std::string& err_path) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    if (!env.count(kv.substr(0, kv.find('=')))) env_strings.push_back(kv);
  }
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
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

}  // namespace migledger::testing

namespace migledger::testing {
namespace {
std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}
std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}
std::string SocketUri(const std::string& db) {
  return "postgresql:///" + db + "?host=" + Env("PGTEST_HOST") +
         "&port=" + Env("PGTEST_PORT") + "&user=migledger";
}
std::string RunPsql(const std::string& uri, const std::string& sql, int* rc) {
  char tmpl[] = "/tmp/migledger-psql-XXXXXX";
  int fd = mkstemp(tmpl);
  close(fd);
  std::string cmd = "psql -X -q -v ON_ERROR_STOP=1 -At " + ShellQuote(uri) +
                    " -c " + ShellQuote(sql) + " >" + tmpl + " 2>&1";
  *rc = std::system(cmd.c_str());
  std::string out = ReadFile(tmpl);
  unlink(tmpl);
  return out;
}
}  // namespace

bool PgServer::Available() { return !Env("PGTEST_URI").empty(); }

std::string PgServer::CreateDatabase(const std::string& name) {
  int rc = 0;
  RunPsql(SocketUri("postgres"),
          "DROP DATABASE IF EXISTS " + name + " WITH (FORCE)", &rc);
  std::string out =
      RunPsql(SocketUri("postgres"), "CREATE DATABASE " + name, &rc);
  if (rc != 0)
    throw std::runtime_error("CREATE DATABASE " + name + " failed: " + out);
  return SocketUri(name);
}

void PgServer::DropDatabase(const std::string& name) {
  int rc = 0;
  RunPsql(SocketUri("postgres"),
          "DROP DATABASE IF EXISTS " + name + " WITH (FORCE)", &rc);
}

std::vector<std::string> PgServer::Query(const std::string& uri,
                                         const std::string& sql) {
  int rc = 0;
  std::string out = RunPsql(uri, sql, &rc);
  if (rc != 0) throw std::runtime_error("psql failed: " + sql + ": " + out);
  std::vector<std::string> rows;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) rows.push_back(line);
  return rows;
}

}  // namespace migledger::testing
