// The documentation cannot drift from the tool. Every runnable example in
// README.md and docs/*.md runs against the built binary and must print what
// the text shows; the README's command table must list exactly the commands
// of `migledger --help`, with their summaries; every relative link must lead
// to a file; the README's speed table must be what bench/readme_speed makes
// of bench/RESULTS.md.
//
// How a runnable example is written (docs/guide.md, "How the examples are
// tested", says the same for writers):
// - a fenced block with the info string `console` is runnable; other fences
//   (`sh`, `toml`, none) are not;
// - `$ COMMAND` runs COMMAND with bash; lines starting with `> ` right after
//   it continue it (a here-document); a trailing `# exit N` (a comment to the
//   shell) says the command exits with N, otherwise it must exit with 0;
// - the lines up to the next `$ ` are its output, stdout and stderr as they
//   interleave, compared line by line after normalising (below). A line
//   `...` stands for any number of lines, and `...` inside a line for any
//   text;
// - all runnable blocks of one file run in order in one fresh directory (a
//   session: what the first block creates, the next one sees), with the
//   build's migledger first on PATH and MIGLEDGER_ACTOR=alice; each command
//   runs in a new shell started in that directory (no `cd`, no `export`).
//
// Normalising, applied alike to the text and to the real output, so that an
// example shows realistic values that change from run to run:
// - runs of blanks become one blank, trailing blanks go (tables pad columns
//   to their widest value);
// - an RFC 3339 time (2026-12-08T10:00:47.563953Z) matches any other;
// - a version made by `migledger new` (14 digits, 20YYMMDDhhmmss) any other;
// - a run of 12 or more lower-case hex digits (ids, hashes, a digest's root)
//   any other;
// - a duration in milliseconds (`34.5 ms`) any other;
// - the machine's host name is shown as `laptop` (alice@laptop).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace migledger::testing {
namespace {
namespace fs = std::filesystem;

const std::string kSource = MIGLEDGER_SOURCE_DIR;

// The files whose examples, links and tables are checked.
std::vector<std::string> DocumentFiles() {
  std::vector<std::string> files = {"README.md"};
  std::vector<std::string> docs;
  for (const auto& e : fs::directory_iterator(kSource + "/docs")) {
    if (e.path().extension() == ".md") {
      docs.push_back("docs/" + e.path().filename().string());
    }
  }
  std::sort(docs.begin(), docs.end());
  files.insert(files.end(), docs.begin(), docs.end());
  return files;
}

// ---- Runnable examples ------------------------------------------------

// README.md, and the files of docs/ that have a runnable example.
std::vector<std::string> ExampleFiles() {
  std::vector<std::string> files;
  for (const std::string& f : DocumentFiles()) {
    if (f == "README.md" ||
        ReadFile(kSource + "/" + f).find("\n```console\n") !=
            std::string::npos) {
      files.push_back(f);
    }
  }
  return files;
}

struct Command {
  int line = 0;  // in the Markdown file, 1-based
  std::string text;
  int exit_code = 0;
  std::vector<std::string> expected;
};

std::vector<Command> RunnableCommands(const std::string& markdown) {
  static const std::regex kExit(R"(\s#\s*exit\s+(\d+)\s*$)");
  std::vector<Command> commands;
  std::vector<std::string> lines = Lines(markdown);
  bool in_fence = false, runnable = false;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (l.rfind("```", 0) == 0) {
      runnable = !in_fence && l == "```console";
      in_fence = !in_fence;
      continue;
    }
    if (!runnable) continue;
    if (l.rfind("$ ", 0) == 0) {
      Command c;
      c.line = static_cast<int>(i + 1);
      c.text = l.substr(2);
      while (i + 1 < lines.size() && lines[i + 1].rfind("> ", 0) == 0) {
        c.text += "\n" + lines[++i].substr(2);
      }
      std::smatch m;
      // The marker is on the command's first line (a here-document's lines
      // are data).
      std::string first = c.text.substr(0, c.text.find('\n'));
      if (std::regex_search(first, m, kExit)) c.exit_code = std::stoi(m[1]);
      commands.push_back(c);
    } else if (commands.empty()) {
      ADD_FAILURE() << "a console block's line " << i + 1
                    << " comes before its first `$ ` command: " << l;
    } else {
      commands.back().expected.push_back(l);
    }
  }
  return commands;
}

std::string HostName() {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  return host;
}

std::string Normalise(std::string line) {
  static const std::vector<std::pair<std::regex, std::string>> kRules = {
      {std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d))"),
       "<time>"},
      {std::regex(R"((^|[^0-9])20\d{12}(?![0-9]))"), "$1<version>"},
      {std::regex(R"((^|[^0-9a-zA-Z])[0-9a-f]{12,}(?![0-9a-zA-Z]))"),
       "$1<hex>"},
      {std::regex(R"((^|[^0-9.])\d+(\.\d+)? ms\b)"), "$1<n> ms"},
      {std::regex(R"([ \t]+)"), " "},
  };
  for (const auto& [pattern, replacement] : kRules) {
    line = std::regex_replace(line, pattern, replacement);
  }
  while (!line.empty() && line.back() == ' ') line.pop_back();
  return line;
}

// `...` inside `pattern` matches any text.
bool LineMatches(const std::string& pattern, const std::string& line) {
  std::vector<std::string> parts;
  for (size_t from = 0;;) {
    size_t at = pattern.find("...", from);
    parts.push_back(pattern.substr(from, at - from));
    if (at == std::string::npos) break;
    from = at + 3;
  }
  if (parts.size() == 1) return pattern == line;
  if (line.rfind(parts.front(), 0) != 0) return false;
  size_t pos = parts.front().size();
  for (size_t i = 1; i + 1 < parts.size(); ++i) {
    pos = line.find(parts[i], pos);
    if (pos == std::string::npos) return false;
    pos += parts[i].size();
  }
  const std::string& last = parts.back();
  return line.size() >= pos + last.size() &&
         line.compare(line.size() - last.size(), last.size(), last) == 0;
}

// A line `...` matches any number of lines.
bool OutputMatches(const std::vector<std::string>& expected, size_t e,
                   const std::vector<std::string>& actual, size_t a) {
  if (e == expected.size()) return a == actual.size();
  if (expected[e] == "...") {
    for (size_t skip = a; skip <= actual.size(); ++skip) {
      if (OutputMatches(expected, e + 1, actual, skip)) return true;
    }
    return false;
  }
  return a < actual.size() && LineMatches(expected[e], actual[a]) &&
         OutputMatches(expected, e + 1, actual, a + 1);
}

struct ShellResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr, interleaved
};

ShellResult RunShell(const std::string& command, const std::string& cwd,
                     const std::string& scratch) {
  const std::string script = scratch + "/command.sh";
  const std::string out = scratch + "/output";
  WriteFile(script, command + "\n");
  const std::string path =
      fs::path(MigledgerBinary()).parent_path().string() + ":" +
      (std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin");
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    if (chdir(cwd.c_str()) != 0) _exit(127);
    setenv("PATH", path.c_str(), 1);
    setenv("MIGLEDGER_ACTOR", "alice", 1);
    // What the examples show must not depend on the CI that runs them.
    for (const char* v :
         {"MIGLEDGER_CI_JOB", "GITHUB_RUN_ID", "CI_JOB_ID", "BUILD_ID",
          "BUILDKITE_JOB_ID", "CIRCLE_WORKFLOW_JOB_ID", "MIGLEDGER_GIT_COMMIT",
          "GIT_COMMIT", "GITHUB_SHA", "CI_COMMIT_SHA", "BUILDKITE_COMMIT",
          "CIRCLE_SHA1", "MIGLEDGER_CRASH_AT", "MIGLEDGER_CRASH_RUN"}) {
      unsetenv(v);
    }
    execl("/bin/bash", "bash", "--noprofile", "--norc", script.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ShellResult r;
  r.exit_code =
      WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.output = ReadFile(out);
  return r;
}

class RunnableExamplesTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RunnableExamplesTest, PrintWhatTheTextShows) {
  const std::string file = GetParam();
  const std::vector<Command> commands =
      RunnableCommands(ReadFile(kSource + "/" + file));
  ASSERT_FALSE(commands.empty()) << file << " has no runnable example";
  TempDir dir;
  const std::string session = dir / "project";
  const std::string scratch = dir / "scratch";
  fs::create_directory(session);
  fs::create_directory(scratch);
  const std::string host = "@" + HostName();
  for (const Command& c : commands) {
    SCOPED_TRACE(file + ":" + std::to_string(c.line) + ": $ " + c.text);
    ShellResult r = RunShell(c.text, session, scratch);
    std::vector<std::string> actual, expected;
    for (std::string l : Lines(r.output)) {
      for (size_t at; (at = l.find(host)) != std::string::npos;) {
        l.replace(at, host.size(), "@laptop");
      }
      actual.push_back(Normalise(l));
    }
    for (const std::string& l : c.expected) expected.push_back(Normalise(l));
    EXPECT_EQ(r.exit_code, c.exit_code) << r.output;
    EXPECT_TRUE(OutputMatches(expected, 0, actual, 0))
        << "expected (normalised):\n"
        << ::testing::PrintToString(expected) << "\nactual (normalised):\n"
        << ::testing::PrintToString(actual) << "\nactual:\n"
        << r.output;
    if (HasFailure()) break;  // the next commands build on this one
  }
}

std::string TestName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Docs, RunnableExamplesTest,
                         ::testing::ValuesIn(ExampleFiles()), TestName);

TEST(RunnableExamplesMatcherTest, EllipsisAndNormalisingMatchWhatTheySay) {
  EXPECT_TRUE(
      LineMatches("created .../migrations/", "created /tmp/x/migrations/"));
  EXPECT_FALSE(
      LineMatches("created .../migrations/", "created /tmp/x/ledger/"));
  EXPECT_TRUE(OutputMatches({"a", "...", "d"}, 0, {"a", "b", "c", "d"}, 0));
  EXPECT_TRUE(OutputMatches({"a", "...", "d"}, 0, {"a", "d"}, 0));
  EXPECT_FALSE(OutputMatches({"a", "d"}, 0, {"a", "b", "d"}, 0));
  EXPECT_EQ(Normalise("20261208000036  add_users  applied  "
                      "2026-12-08T00:00:47.563953Z"),
            "<version> add_users applied <time>");
  EXPECT_EQ(Normalise("up add_users sha256:49a1c490ab57 (34.5 ms)"),
            "up add_users sha256:<hex> (<n> ms)");
  EXPECT_EQ(Normalise("0001 2 step(s)"), "0001 2 step(s)");
}

// ---- The command table ------------------------------------------------

// The subcommands `migledger ARGS --help` lists, with their summaries.
std::map<std::string, std::string> Subcommands(
    const std::vector<std::string>& args, const std::string& cwd) {
  std::vector<std::string> a = args;
  a.push_back("--help");
  RunResult r = RunMigledger(a, cwd);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::map<std::string, std::string> out;
  bool in = false;
  static const std::regex kRow(R"(^  ([a-z][a-z-]*)\s+(.*\S)\s*$)");
  for (const std::string& l : Lines(r.out)) {
    if (l == "Subcommands:") {
      in = true;
      continue;
    }
    std::smatch m;
    if (in && std::regex_match(l, m, kRow)) out[m[1]] = m[2];
  }
  return out;
}

// Every command the binary has, with subcommands expanded ("audit log").
void LeafCommands(const std::vector<std::string>& prefix,
                  const std::string& cwd,
                  std::map<std::string, std::string>* leaves) {
  for (const auto& [name, summary] : Subcommands(prefix, cwd)) {
    std::vector<std::string> path = prefix;
    path.push_back(name);
    if (Subcommands(path, cwd).empty()) {
      std::string key;
      for (const std::string& w : path) key += (key.empty() ? "" : " ") + w;
      (*leaves)[key] = summary;
    } else {
      LeafCommands(path, cwd, leaves);
    }
  }
}

struct TableRow {
  std::string synopsis;  // `migledger audit log [--since T] ...`
  std::string summary;   // backticks removed
};

// The README's command table: the table whose header starts
// `| command | what it does |`. Its first cell is a code span starting with
// `migledger `; the command is the lower-case words that follow.
std::map<std::string, TableRow> CommandTable(const std::string& readme) {
  std::map<std::string, TableRow> rows;
  bool in = false;
  for (const std::string& l : Lines(readme)) {
    if (l.rfind("| command | what it does |", 0) == 0) {
      in = true;
      continue;
    }
    if (!in) continue;
    if (l.rfind("|", 0) != 0) break;
    if (l.rfind("| ---", 0) == 0) continue;
    std::vector<std::string> cells;
    std::string cell;
    for (size_t i = 1; i < l.size(); ++i) {
      if (l[i] == '\\' && i + 1 < l.size() && l[i + 1] == '|') {
        cell += '|';
        ++i;
      } else if (l[i] == '|') {
        cells.push_back(cell);
        cell.clear();
      } else {
        cell += l[i];
      }
    }
    EXPECT_EQ(cells.size(), 2u) << l;
    if (cells.size() != 2) continue;
    auto strip = [](std::string s) {
      s.erase(std::remove(s.begin(), s.end(), '`'), s.end());
      size_t b = s.find_first_not_of(' '), e = s.find_last_not_of(' ');
      return b == std::string::npos ? "" : s.substr(b, e - b + 1);
    };
    TableRow row{strip(cells[0]), strip(cells[1])};
    std::istringstream words(row.synopsis);
    std::string w, key;
    words >> w;
    EXPECT_EQ(w, "migledger") << l;
    while (words >> w && std::regex_match(w, std::regex("[a-z][a-z-]*"))) {
      key += (key.empty() ? "" : " ") + w;
    }
    EXPECT_EQ(rows.count(key), 0u) << "listed twice: " << key;
    rows[key] = row;
  }
  return rows;
}

TEST(CommandTableTest, ListsEveryCommandOfHelpWithItsSummaryAndFlags) {
  TempDir dir;
  std::map<std::string, std::string> help;
  LeafCommands({}, dir.path(), &help);
  ASSERT_GT(help.size(), 10u);
  const std::map<std::string, TableRow> table =
      CommandTable(ReadFile(kSource + "/README.md"));
  for (const auto& [command, summary] : help) {
    auto row = table.find(command);
    if (row == table.end()) {
      ADD_FAILURE() << "`migledger " << command
                    << "` is in --help but not in README.md's command table";
      continue;
    }
    EXPECT_EQ(row->second.summary, summary) << command;
    // The command's own --help: the same summary, and every flag the table
    // shows.
    std::vector<std::string> args;
    std::istringstream words(command);
    for (std::string w; words >> w;) args.push_back(w);
    args.push_back("--help");
    RunResult r = RunMigledger(args, dir.path());
    ASSERT_EQ(r.exit_code, 0) << command << ": " << r.err;
    EXPECT_EQ(Lines(r.out).at(0), summary) << command;
    static const std::regex kFlag(R"(--[a-z][a-z-]*)");
    const std::string& synopsis = row->second.synopsis;
    for (auto it =
             std::sregex_iterator(synopsis.begin(), synopsis.end(), kFlag);
         it != std::sregex_iterator(); ++it) {
      EXPECT_TRUE(std::regex_search(
          r.out, std::regex("(^|[ ,])" + it->str() + "([ ,=]|$)",
                            std::regex::multiline)))
          << "`migledger " << command << "` has no " << it->str()
          << " (README's command table)";
    }
  }
  for (const auto& [command, row] : table) {
    EXPECT_EQ(help.count(command), 1u)
        << "README.md's command table lists `migledger " << command
        << "`, which --help does not";
  }
}

// ---- Links ------------------------------------------------------------

// The anchors GitHub gives the headings of a Markdown file: lower case,
// punctuation dropped, blanks as hyphens.
std::set<std::string> HeadingAnchors(const std::string& markdown) {
  std::set<std::string> anchors;
  bool in_fence = false;
  for (const std::string& l : Lines(markdown)) {
    if (l.rfind("```", 0) == 0) in_fence = !in_fence;
    if (in_fence || l.empty() || l[0] != '#') continue;
    std::string anchor;
    for (char c : l.substr(l.find_first_not_of('#'))) {
      const unsigned char u = static_cast<unsigned char>(c);
      if (std::isalnum(u) || c == '_' || c == '-') {
        anchor += static_cast<char>(std::tolower(u));
      } else if (c == ' ') {
        anchor += '-';
      }
    }
    anchors.insert(anchor.substr(anchor.find_first_not_of('-')));
  }
  return anchors;
}

TEST(DocumentLinksTest, EveryRelativeLinkLeadsToAFile) {
  static const std::regex kLink(R"(\]\(([^)\s]+)\))");
  for (const std::string& file : DocumentFiles()) {
    const std::string text = ReadFile(kSource + "/" + file);
    const fs::path base = fs::path(kSource) / fs::path(file).parent_path();
    int checked = 0;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), kLink);
         it != std::sregex_iterator(); ++it) {
      const std::string link = (*it)[1];
      if (link.find("://") != std::string::npos ||
          link.rfind("mailto:", 0) == 0) {
        continue;
      }
      const size_t hash = link.find('#');
      const std::string target = link.substr(0, hash);
      const fs::path path =
          target.empty() ? fs::path(kSource) / file : base / target;
      ++checked;
      if (!fs::exists(path)) {
        ADD_FAILURE() << file << " links to " << target
                      << ", which does not exist";
        continue;
      }
      if (hash != std::string::npos && path.extension() == ".md") {
        const std::string anchor = link.substr(hash + 1);
        EXPECT_EQ(HeadingAnchors(ReadFile(path.string())).count(anchor), 1u)
            << file << " links to " << link << ": " << path.filename().string()
            << " has no heading #" << anchor;
      }
    }
    if (file == "README.md") {
      EXPECT_GT(checked, 3) << "links not found";
    }
  }
}

// ---- The speed table --------------------------------------------------

TEST(SpeedTableTest, ReadmeShowsWhatBenchResultsSay) {
  const std::string cmd = "python3 '" + kSource +
                          "/bench/readme_speed' --check '" + kSource +
                          "/README.md' '" + kSource + "/bench/RESULTS.md' 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  int status = pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << out
      << "\n(regenerate it: bench/readme_speed README.md bench/RESULTS.md)";
}

}  // namespace
}  // namespace migledger::testing
