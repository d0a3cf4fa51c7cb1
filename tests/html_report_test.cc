// `migledger audit export --format html`: exports a real project's ledger
// with the real binary, checks the page is self-contained, escaped and
// carries the same checkpoint as `migledger audit digest`, then renders it
// in headless Chromium (screenshot + DOM).
//
// Chromium: /usr/bin/chromium (Debian package `chromium`), or
// MIGLEDGER_CHROMIUM. When it is missing the browser tests fail with a clear
// message unless MIGLEDGER_SKIP_BROWSER_TESTS is set; nothing is installed
// here. MIGLEDGER_KEEP_TEST_DIRS keeps the report and the screenshot.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace migledger::testing {
namespace {

namespace fs = std::filesystem;

const char* kEvil = "<script>alert(1)</script>";
const char* kEscapedEvil = "&lt;script&gt;alert(1)&lt;/script&gt;";

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs argv[0] (looked up in PATH) with `args` in `cwd`; stdout and stderr
// go through files in `cwd`.
CommandResult RunCommand(const std::vector<std::string>& args,
                         const std::string& cwd,
                         const std::map<std::string, std::string>& env = {}) {
  CommandResult r;
  std::string out_path = cwd + "/.cmd-out", err_path = cwd + "/.cmd-err";
  pid_t pid = fork();
  if (pid == 0) {
    int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(out, 1);
    dup2(err, 2);
    dup2(devnull, 0);
    if (chdir(cwd.c_str()) != 0) _exit(127);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(out_path);
  r.err = ReadFile(err_path);
  unlink(out_path.c_str());
  unlink(err_path.c_str());
  return r;
}

// Runs the migledger binary with its stdout on a new pseudo-terminal and
// returns what it printed there.
std::string RunOnTerminal(const std::vector<std::string>& args,
                          const std::string& cwd,
                          const std::map<std::string, std::string>& env = {}) {
  int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0)
    return "<no pty>";
  std::string slave_name = ptsname(master);
  // Kept open here too, so reading never fails while the child exits.
  int slave = open(slave_name.c_str(), O_RDWR | O_NOCTTY);
  std::string bin = MigledgerBinary();
  pid_t pid = fork();
  if (pid == 0) {
    setsid();
    int tty = open(slave_name.c_str(), O_RDWR);
    int devnull = open("/dev/null", O_RDWR);
    dup2(tty, 1);
    dup2(devnull, 0);
    dup2(devnull, 2);
    if (chdir(cwd.c_str()) != 0) _exit(127);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> argv = {const_cast<char*>(bin.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  fcntl(master, F_SETFL, O_NONBLOCK);
  std::string out;
  char buf[4096];
  bool exited = false;
  for (int rounds = 0; rounds < 600; ++rounds) {  // at most a minute
    pollfd p = {master, POLLIN, 0};
    poll(&p, 1, 100);
    ssize_t n;
    while ((n = read(master, buf, sizeof buf)) > 0) out.append(buf, n);
    if (exited) break;
    int status;
    exited = waitpid(pid, &status, WNOHANG) == pid;  // one more drain after
  }
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  close(slave);
  close(master);
  return out;
}

std::string Between(const std::string& s, const std::string& open,
                    const std::string& close) {
  size_t a = s.find(open);
  if (a == std::string::npos) return "<no " + open + ">";
  a += open.size();
  size_t b = s.find(close, a);
  if (b == std::string::npos) return "<no " + close + ">";
  return s.substr(a, b - a);
}

// A project with three migrations, on three days: 0001-0002 applied, 0003
// failing with an error message that carries HTML, then 0002 reverted.
class HtmlReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MakeProject(dir_.path());
    WriteFile(dir_ / "migrations/0001_create_accounts.up.sql",
              "CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT NOT "
              "NULL);\n");
    WriteFile(dir_ / "migrations/0001_create_accounts.down.sql",
              "DROP TABLE accounts;\n");
    WriteFile(
        dir_ / "migrations/0002_create_orders.up.sql",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, account_id "
        "INTEGER);\nCREATE INDEX orders_account ON orders(account_id);\n");
    WriteFile(dir_ / "migrations/0002_create_orders.down.sql",
              "DROP TABLE orders;\n");
    WriteFile(dir_ / "migrations/0003_audit_trail.up.sql",
              "CREATE TABLE audit_trail (id INTEGER PRIMARY KEY);\n"
              "-- the next table does not exist: the step fails\n"
              "INSERT INTO \"" +
                  std::string(kEvil) + "\" VALUES (1);\n");
    WriteFile(dir_ / "migrations/0003_audit_trail.down.sql",
              "DROP TABLE audit_trail;\n");

    Run({"apply", "--to", "0002", "--reason", "initial <deploy> & \"go\""},
        "2026-03-02T09:15:00Z", 0);
    Run({"apply", "--reason", "add audit trail"}, "2026-03-03T14:40:00Z", 3);
    Run({"down", "--steps", "1", "--reason", "roll back orders"},
        "2026-03-05T10:05:00Z", 0);
  }

  void Run(const std::vector<std::string>& args, const std::string& when,
           int want_exit) {
    RunResult r =
        RunMigledger(args, dir_.path(), {{"MIGLEDGER_FAKE_TIME", when}});
    ASSERT_EQ(r.exit_code, want_exit) << r.out << r.err;
  }

  // No temporary file of an export to `name` (common/atomic_file.h) is
  // left in the directory.
  bool NoTemporaryFileOf(const std::string& name) {
    for (const auto& e : fs::directory_iterator(dir_.path())) {
      if (e.path().filename().string().rfind("." + name + ".tmp", 0) == 0)
        return false;
    }
    return true;
  }

  // Exports the HTML report (with extra filter flags) and returns its text.
  std::string Export(const std::string& name,
                     const std::vector<std::string>& filters = {}) {
    std::vector<std::string> args = {"audit", "export", "--format",
                                     "html",  "--out",  dir_ / name};
    args.insert(args.end(), filters.begin(), filters.end());
    RunResult r = RunMigledger(
        args, dir_.path(), {{"MIGLEDGER_FAKE_TIME", "2026-03-06T08:00:00Z"}});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("wrote"), std::string::npos) << r.out;
    EXPECT_TRUE(NoTemporaryFileOf(name));
    return ReadFile(dir_ / name);
  }

  std::string Digest() {
    RunResult r = RunMigledger({"audit", "digest"}, dir_.path());
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  }

  TempDir dir_;
};

TEST_F(HtmlReportTest, SelfContainedEscapedAndCarriesTheCheckpoint) {
  std::string html = Export("report.html");
  ASSERT_GT(html.size(), 2000u);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);

  // Self-contained: no reference to anything outside the file, no scripts.
  for (const char* banned : {"http://", "https://", "src=", "url(", "@import",
                             "<link", "<script", "<iframe", "<object"}) {
    EXPECT_EQ(html.find(banned), std::string::npos) << "found " << banned;
  }
  EXPECT_EQ(html.find("href=\"h"), std::string::npos);

  // The checkpoint is exactly what `migledger audit digest` prints, and the
  // digest verifies against the ledger.
  std::string digest = Digest();
  ASSERT_NE(digest.find("root: "), std::string::npos) << digest;
  EXPECT_EQ(Between(html, "<pre id=\"checkpoint\">", "</pre>"), digest);
  WriteFile(dir_ / "checkpoint.txt",
            Between(html, "<pre id=\"checkpoint\">", "</pre>"));
  RunResult verify = RunMigledger(
      {"audit", "verify", "--digest", dir_ / "checkpoint.txt"}, dir_.path());
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  std::string ledger_id = Between(digest, "ledger_id: ", "\n");
  EXPECT_NE(html.find("<code id=\"ledger-id\">" + ledger_id + "</code>"),
            std::string::npos);

  // Sections and their content.
  for (const char* id : {"id=\"summary\"", "id=\"timeline-svg\"",
                         "id=\"steps-table\"", "id=\"failures\"", "<svg"}) {
    EXPECT_NE(html.find(id), std::string::npos) << id;
  }
  for (const char* text :
       {"0001", "0002", "0003", "create_accounts", "create_orders",
        "audit_trail", ">applied<", ">reverted<", ">failed<", "sqlite",
        "2026-03-06 08:00:00"}) {
    EXPECT_NE(html.find(text), std::string::npos) << text;
  }
  // The failure: file:line, statement and message, all escaped.
  EXPECT_NE(html.find("0003_audit_trail.up.sql:3"), std::string::npos);
  EXPECT_NE(html.find(std::string("no such table: ") + kEscapedEvil),
            std::string::npos);
  EXPECT_NE(html.find(std::string("INSERT INTO &quot;") + kEscapedEvil),
            std::string::npos);
  EXPECT_EQ(html.find("<script>alert"), std::string::npos);
  EXPECT_EQ(html.find(kEvil), std::string::npos);
  EXPECT_NE(html.find("initial &lt;deploy&gt; &amp; &quot;go&quot;"),
            std::string::npos);
  EXPECT_EQ(html.find("initial <deploy>"), std::string::npos);
}

TEST_F(HtmlReportTest, FiltersSelectEventsAsForOtherFormats) {
  std::string html = Export("v2.html", {"--version", "0002"});
  EXPECT_NE(html.find("<code>--version 0002</code>"), std::string::npos);
  EXPECT_NE(html.find("create_orders"), std::string::npos);
  EXPECT_EQ(html.find("create_accounts"), std::string::npos);
  EXPECT_EQ(html.find("&lt;script&gt;"), std::string::npos);
  // The checkpoint is of the whole ledger, whatever the filters.
  EXPECT_EQ(Between(html, "<pre id=\"checkpoint\">", "</pre>"), Digest());

  std::string failed = Export("failed.html", {"--type", "step_failed"});
  EXPECT_NE(failed.find(std::string("no such table: ") + kEscapedEvil),
            std::string::npos);
  EXPECT_EQ(failed.find(">applied<"), std::string::npos);

  RunResult bad = RunMigledger({"audit", "export", "--format", "html", "--out",
                                dir_ / "bad.html", "--since", "soon"},
                               dir_.path());
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_FALSE(fs::exists(dir_ / "bad.html"));
  EXPECT_TRUE(NoTemporaryFileOf("bad.html"));
}

TEST_F(HtmlReportTest, AuditLogHasNoColourWhenNotATerminal) {
  RunResult r = RunMigledger({"audit", "log"}, dir_.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("step_failed"), std::string::npos);
  EXPECT_EQ(r.out.find('\033'), std::string::npos);
}

TEST_F(HtmlReportTest, AuditLogColoursTypesOnlyOnATerminal) {
  std::string tty = RunOnTerminal({"audit", "log"}, dir_.path());
  EXPECT_NE(tty.find("\033[32mstep_applied\033[0m"), std::string::npos) << tty;
  EXPECT_NE(tty.find("\033[31mstep_failed\033[0m"), std::string::npos) << tty;
  EXPECT_NE(tty.find("run_started"), std::string::npos) << tty;
  EXPECT_EQ(tty.find("\033[32mrun_started"), std::string::npos) << tty;
  // The columns still line up: the same text as without colour.
  std::string plain;
  for (size_t i = 0; i < tty.size(); ++i) {
    if (tty[i] == '\033') {
      i = tty.find('m', i);
      if (i == std::string::npos) break;
    } else if (tty[i] != '\r') {
      plain += tty[i];
    }
  }
  EXPECT_EQ(plain, RunMigledger({"audit", "log"}, dir_.path()).out);

  std::string no_colour =
      RunOnTerminal({"audit", "log"}, dir_.path(), {{"NO_COLOR", "1"}});
  EXPECT_NE(no_colour.find("step_failed"), std::string::npos);
  EXPECT_EQ(no_colour.find('\033'), std::string::npos);
}

std::string Chromium() {
  const char* env = std::getenv("MIGLEDGER_CHROMIUM");
  return env && *env ? env : "/usr/bin/chromium";
}

// Skips (MIGLEDGER_SKIP_BROWSER_TESTS) or fails when there is no browser.
#define REQUIRE_CHROMIUM()                                                    \
  do {                                                                        \
    if (std::getenv("MIGLEDGER_SKIP_BROWSER_TESTS")) {                        \
      GTEST_SKIP() << "MIGLEDGER_SKIP_BROWSER_TESTS is set";                  \
    }                                                                         \
    if (access(Chromium().c_str(), X_OK) != 0) {                              \
      FAIL()                                                                  \
          << "headless Chromium not found at " << Chromium()                  \
          << ": install the Debian package `chromium` (scripts/deps), point " \
             "MIGLEDGER_CHROMIUM at a browser, or set "                       \
             "MIGLEDGER_SKIP_BROWSER_TESTS=1 to skip the browser tests";      \
    }                                                                         \
  } while (0)

std::vector<std::string> ChromiumArgs(const std::string& profile) {
  return {"timeout",
          "60",
          Chromium(),
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
          "--user-data-dir=" + profile};
}

TEST_F(HtmlReportTest, RendersInHeadlessChromium) {
  REQUIRE_CHROMIUM();
  std::string report = dir_ / "report.html";
  std::string html = Export("report.html");
  ASSERT_FALSE(html.empty());
  fs::create_directories(dir_ / "home");
  std::map<std::string, std::string> env = {{"HOME", dir_ / "home"}};

  std::string shot = dir_ / "shot.png";
  std::vector<std::string> args = ChromiumArgs(dir_ / "profile-shot");
  args.insert(args.end(), {"--screenshot=" + shot, "--window-size=1280,2000",
                           "file://" + report});
  CommandResult r = RunCommand(args, dir_.path(), env);
  ASSERT_EQ(r.exit_code, 0) << "chromium --screenshot failed (124: timed out)\n"
                            << r.err;
  ASSERT_TRUE(fs::exists(shot)) << r.err;
  EXPECT_GT(fs::file_size(shot), 10u * 1024) << "the screenshot looks empty";
  EXPECT_EQ(ReadFile(shot).substr(1, 3), "PNG");
  if (std::getenv("MIGLEDGER_KEEP_TEST_DIRS"))
    std::cout << "screenshot: " << shot << "\n";

  args = ChromiumArgs(dir_ / "profile-dom");
  args.insert(args.end(), {"--dump-dom", "file://" + report});
  r = RunCommand(args, dir_.path(), env);
  ASSERT_EQ(r.exit_code, 0) << "chromium --dump-dom failed (124: timed out)\n"
                            << r.err;
  const std::string& dom = r.out;
  ASSERT_NE(dom.find("</html>"), std::string::npos) << dom.substr(0, 2000);
  // The summary table as the browser parsed it.
  std::string summary = Between(dom, "<table id=\"summary\"", "</table>");
  for (const char* text :
       {"Target", "Redacted URI", "Database id", "Applied now", "Failures",
        "dev", "sqlite", "2026-03-05 10:05:00"}) {
    EXPECT_NE(summary.find(text), std::string::npos)
        << text << " in " << summary;
  }
  EXPECT_NE(dom.find("<svg id=\"timeline-svg\""), std::string::npos);
  EXPECT_NE(dom.find("class=\"run bad\""), std::string::npos);
  EXPECT_NE(dom.find("class=\"failure-mark\""), std::string::npos);
  // Escaped text stays text: the DOM has no script element.
  EXPECT_NE(dom.find(kEscapedEvil), std::string::npos);
  EXPECT_EQ(dom.find("<script"), std::string::npos);
}

// The summary's newest applied version is the numerically newest one.
TEST(HtmlReportVersionOrder, LatestAppliedVersionIsNumericallyNewest) {
  TempDir dir;
  MakeProject(dir.path());
  for (int i = 1; i <= 12; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "migrations/%04d_t%d.up.sql", i, i);
    WriteFile(dir / name,
              "CREATE TABLE t" + std::to_string(i) + " (id INTEGER);\n");
  }
  RunResult a = RunMigledger({"apply"}, dir.path());
  ASSERT_EQ(a.exit_code, 0) << a.out << a.err;
  RunResult r = RunMigledger(
      {"audit", "export", "--format", "html", "--out", dir / "r.html"},
      dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::string html = ReadFile(dir / "r.html");
  EXPECT_NE(html.find("latest <code>0012</code>"), std::string::npos);
  EXPECT_EQ(html.find("latest <code>0009</code>"), std::string::npos);
  EXPECT_NE(html.find("0001, 0002, 0003, 0004, 0005, 0006, 0007, 0008, "
                      "0009, 0010, 0011, 0012"),
            std::string::npos);
}

}  // namespace
}  // namespace migledger::testing
