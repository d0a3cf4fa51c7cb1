// Integration tests of `migledger audit log` and `audit export`: the filters
// (--since, --until, --actor, --run, --version, --type, alone and combined),
// RFC 4180 CSV, and the actor recorded with every event (OS user override,
// CI job and git commit from the environment, the --reason of a run).
//
// Every test makes a SQLite project in a fresh TempDir and runs the real
// binary. Event times are pinned with MIGLEDGER_FAKE_TIME so that filters by
// time select known events without any timing assumption; one test uses the
// real clock and takes the times back from the jsonl export.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/time_util.h"
#include "tests/test_util.h"

namespace migledger::testing {
namespace {

using Env = std::map<std::string, std::string>;

// ---- small helpers --------------------------------------------------------

// The decoded value of the first string member `"key":"..."` of a compact
// JSON line (the jsonl export), or nullopt when there is none. Handles the
// escapes protobuf's JSON printer writes for the text in these tests.
std::optional<std::string> JsonString(const std::string& line,
                                      const std::string& key) {
  const std::string open = "\"" + key + "\":\"";
  size_t pos = line.find(open);
  if (pos == std::string::npos) return std::nullopt;
  std::string value;
  for (pos += open.size(); pos < line.size(); ++pos) {
    char c = line[pos];
    if (c == '"') return value;
    if (c != '\\') {
      value += c;
      continue;
    }
    if (++pos >= line.size()) return std::nullopt;
    switch (line[pos]) {
      case 'n':
        value += '\n';
        break;
      case 'r':
        value += '\r';
        break;
      case 't':
        value += '\t';
        break;
      case 'u': {
        // Only ASCII escapes (\u00XX) occur in these tests.
        if (pos + 4 >= line.size()) return std::nullopt;
        value +=
            static_cast<char>(std::stoi(line.substr(pos + 1, 4), nullptr, 16));
        pos += 4;
        break;
      }
      default:
        value += line[pos];
        break;  // \" \\ \/
    }
  }
  return std::nullopt;
}

// The "sequence" of one jsonl event line, or 0.
uint64_t SequenceOf(const std::string& line) {
  const std::string key = "{\"sequence\":";
  if (line.rfind(key, 0) != 0) return 0;
  return std::strtoull(line.c_str() + key.size(), nullptr, 10);
}

std::vector<uint64_t> Range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> v;
  for (uint64_t s = first; s <= last; ++s) v.push_back(s);
  return v;
}

// A strict RFC 4180 reader: records end with CRLF (the last one may end the
// file instead), fields are separated by commas, a field holding a comma, a
// double quote, CR or LF must be enclosed in double quotes with its quotes
// doubled. Returns the records, or nullopt and sets *error.
std::optional<std::vector<std::vector<std::string>>> ParseCsv(
    const std::string& text, std::string* error) {
  std::vector<std::vector<std::string>> records;
  std::vector<std::string> record;
  size_t i = 0;
  auto fail = [&](const std::string& what) {
    *error = what + " at byte " + std::to_string(i) + " (record " +
             std::to_string(records.size() + 1) + ")";
    return std::nullopt;
  };
  while (i < text.size()) {
    std::string field;
    if (text[i] == '"') {
      ++i;
      for (;;) {
        if (i >= text.size()) return fail("unterminated quoted field");
        if (text[i] == '"') {
          if (i + 1 < text.size() && text[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        field += text[i++];
      }
    } else {
      while (i < text.size() && text[i] != ',' && text[i] != '\r' &&
             text[i] != '\n') {
        if (text[i] == '"') return fail("double quote in unquoted field");
        field += text[i++];
      }
    }
    record.push_back(field);
    if (i == text.size()) break;
    if (text[i] == ',') {
      ++i;
      if (i == text.size()) record.push_back("");
      continue;
    }
    if (text.compare(i, 2, "\r\n") != 0) {
      return fail("record not ended by CRLF");
    }
    i += 2;
    records.push_back(record);
    record.clear();
  }
  if (!record.empty()) records.push_back(record);
  return records;
}

const std::vector<std::string> kCsvHeader = {
    "sequence", "time",    "target", "database_id", "type",     "version",
    "run_id",   "os_user", "host",   "summary",     "leaf_hash"};

// The environment variables CurrentActor() reads for the CI job and commit.
const std::vector<std::string> kCiVariables = {"MIGLEDGER_CI_JOB",
                                               "GITHUB_RUN_ID",
                                               "CI_JOB_ID",
                                               "BUILD_ID",
                                               "BUILDKITE_JOB_ID",
                                               "CIRCLE_WORKFLOW_JOB_ID",
                                               "MIGLEDGER_GIT_COMMIT",
                                               "GIT_COMMIT",
                                               "GITHUB_SHA",
                                               "CI_COMMIT_SHA",
                                               "BUILDKITE_COMMIT",
                                               "CIRCLE_SHA1"};

// ---- the fixture ----------------------------------------------------------

class AuditCliTest : public ::testing::Test {
 protected:
  void SetUp() override { MakeProject(dir_.path()); }

  // Runs migledger in the project. The CI variables are blanked (an empty
  // value counts as unset) so that the job running the tests does not leak
  // into the events; `env` goes on top.
  RunResult Run(const std::vector<std::string>& args, const Env& env = {}) {
    Env full;
    for (const auto& name : kCiVariables) full[name] = "";
    full["MIGLEDGER_ACTOR"] = "";
    full["MIGLEDGER_FAKE_TIME"] = "";
    for (const auto& [k, v] : env) full[k] = v;
    return RunMigledger(args, dir_.path(), full);
  }

  void Migration(const std::string& file, const std::string& sql) {
    WriteFile(dir_ / ("migrations/" + file), sql);
  }

  void ThreeMigrations() {
    Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER PRIMARY KEY);\n");
    Migration("0001_a.down.sql", "DROP TABLE a;\n");
    Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
    Migration("0002_b.down.sql", "DROP TABLE b;\n");
    Migration("0003_c.up.sql", "CREATE TABLE c (id INTEGER);\n");
    Migration("0003_c.down.sql", "DROP TABLE c;\n");
  }

  // Two runs, told apart by time, actor and run id:
  //   alice, 2026-03-01T10:00:00Z, apply --to 0002: sequences 1-6
  //     1 run_started, 2 step_started 0001, 3 step_applied 0001,
  //     4 step_started 0002, 5 step_applied 0002, 6 run_finished
  //   bob, 2026-03-05T10:00:00Z, apply: sequences 7-10
  //     7 run_started, 8 step_started 0003, 9 step_applied 0003,
  //     10 run_finished
  void TwoRunsByAliceAndBob() {
    ThreeMigrations();
    RunResult a = Run({"apply", "--to", "0002"},
                      {{"MIGLEDGER_ACTOR", "alice"},
                       {"MIGLEDGER_FAKE_TIME", "2026-03-01T10:00:00Z"}});
    ASSERT_EQ(a.exit_code, 0) << Describe(a);
    RunResult b =
        Run({"apply"}, {{"MIGLEDGER_ACTOR", "bob"},
                        {"MIGLEDGER_FAKE_TIME", "2026-03-05T10:00:00Z"}});
    ASSERT_EQ(b.exit_code, 0) << Describe(b);
    std::vector<std::string> all = Jsonl({});
    ASSERT_EQ(all.size(), 10u);
    for (size_t i = 0; i < all.size(); ++i) {
      ASSERT_EQ(SequenceOf(all[i]), i + 1) << all[i];
      const bool first_run = i < 6;
      ASSERT_EQ(JsonString(all[i], "time"),
                first_run ? "2026-03-01T10:00:00Z" : "2026-03-05T10:00:00Z");
      ASSERT_EQ(JsonString(all[i], "os_user"), first_run ? "alice" : "bob");
    }
    alice_run_ = *JsonString(all[0], "run_id");
    bob_run_ = *JsonString(all[6], "run_id");
    host_ = *JsonString(all[0], "host");
    ASSERT_FALSE(alice_run_.empty());
    ASSERT_NE(alice_run_, bob_run_);
    ASSERT_EQ(JsonString(all[5], "run_id"), alice_run_);
    ASSERT_EQ(JsonString(all[9], "run_id"), bob_run_);
  }

  // `audit log --format jsonl` with `filters`: the event lines.
  std::vector<std::string> Jsonl(const std::vector<std::string>& filters) {
    std::vector<std::string> args = {"audit", "log", "--format", "jsonl"};
    args.insert(args.end(), filters.begin(), filters.end());
    RunResult r = Run(args);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.err, "") << Describe(r);
    return Lines(r.out);
  }

  // The sequences `audit log` selects with `filters`, read from the jsonl
  // output and, as a cross-check, from the csv output.
  std::vector<uint64_t> Selected(const std::vector<std::string>& filters) {
    std::vector<uint64_t> from_jsonl;
    for (const auto& line : Jsonl(filters))
      from_jsonl.push_back(SequenceOf(line));
    std::vector<std::string> args = {"audit", "log", "--format", "csv"};
    args.insert(args.end(), filters.begin(), filters.end());
    RunResult r = Run(args);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    std::string error;
    auto records = ParseCsv(r.out, &error);
    EXPECT_TRUE(records) << error << "\n" << r.out;
    std::vector<uint64_t> from_csv;
    if (records && !records->empty()) {
      EXPECT_EQ(records->front(), kCsvHeader);
      for (size_t i = 1; i < records->size(); ++i) {
        from_csv.push_back(std::stoull((*records)[i][0]));
      }
    }
    EXPECT_EQ(from_csv, from_jsonl) << "csv and jsonl disagree";
    return from_jsonl;
  }

  TempDir dir_;
  std::string alice_run_, bob_run_, host_;
};

// ---- --since / --until ----------------------------------------------------

TEST_F(AuditCliTest, SinceIsInclusiveAndUntilExclusiveAtTheRecordedTime) {
  TwoRunsByAliceAndBob();
  EXPECT_EQ(Selected({"--since", "2026-03-05T10:00:00Z"}), Range(7, 10));
  EXPECT_EQ(Selected({"--until", "2026-03-05T10:00:00Z"}), Range(1, 6));
  EXPECT_EQ(Selected({"--since", "2026-03-05T10:00:00.000001Z"}),
            std::vector<uint64_t>{});
  EXPECT_EQ(Selected({"--until", "2026-03-01T10:00:00.000001Z"}), Range(1, 6));
  EXPECT_EQ(Selected({"--until", "2026-03-01T10:00:00Z"}),
            std::vector<uint64_t>{});
  // A time between the two runs splits them.
  EXPECT_EQ(Selected({"--since", "2026-03-03T12:30:00Z"}), Range(7, 10));
  EXPECT_EQ(Selected({"--until", "2026-03-03T12:30:00Z"}), Range(1, 6));
  EXPECT_EQ(Selected({"--since", "2026-03-01T10:00:00Z", "--until",
                      "2026-03-05T10:00:00Z"}),
            Range(1, 6));
}

TEST_F(AuditCliTest, SinceAndUntilHonourRfc3339OffsetsAndFractions) {
  TwoRunsByAliceAndBob();
  // 11:00+01:00 and 05:00-05:00 are bob's 10:00Z.
  EXPECT_EQ(Selected({"--since", "2026-03-05T11:00:00+01:00"}), Range(7, 10));
  EXPECT_EQ(Selected({"--since", "2026-03-05T05:00:00-05:00"}), Range(7, 10));
  EXPECT_EQ(Selected({"--since", "2026-03-05T11:00:00.5+01:00"}),
            std::vector<uint64_t>{});
  EXPECT_EQ(Selected({"--until", "2026-03-05T05:00:00-05:00"}), Range(1, 6));
  EXPECT_EQ(Selected({"--since", "2026-03-05t10:00:00z"}), Range(7, 10));
}

TEST_F(AuditCliTest, PlainDatesMeanMidnightUtc) {
  TwoRunsByAliceAndBob();
  EXPECT_EQ(Selected({"--since", "2026-03-05"}), Range(7, 10));
  EXPECT_EQ(Selected({"--since", "2026-03-06"}), std::vector<uint64_t>{});
  EXPECT_EQ(Selected({"--until", "2026-03-05"}), Range(1, 6));
  EXPECT_EQ(Selected({"--until", "2026-03-01"}), std::vector<uint64_t>{});
  EXPECT_EQ(Selected({"--since", "2026-03-01", "--until", "2026-03-02"}),
            Range(1, 6));
  EXPECT_EQ(Selected({"--since", "2026-03-02", "--until", "2026-03-05"}),
            std::vector<uint64_t>{});
}

TEST_F(AuditCliTest, DateInThePastSelectsEverythingAndInTheFutureNothing) {
  TwoRunsByAliceAndBob();
  EXPECT_EQ(Selected({"--since", "2000-01-01"}), Range(1, 10));
  EXPECT_EQ(Selected({"--until", "2999-12-31"}), Range(1, 10));
  EXPECT_EQ(Selected({"--since", "2999-12-31"}), std::vector<uint64_t>{});
  EXPECT_EQ(Selected({"--until", "2000-01-01T00:00:00Z"}),
            std::vector<uint64_t>{});

  // The csv of nothing is the header alone.
  RunResult r =
      Run({"audit", "log", "--format", "csv", "--since", "2999-12-31"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::string error;
  auto records = ParseCsv(r.out, &error);
  ASSERT_TRUE(records) << error;
  EXPECT_EQ(*records, std::vector<std::vector<std::string>>{kCsvHeader});
}

TEST_F(AuditCliTest, TimesReadBackFromJsonlSplitTwoRunsOnTheRealClock) {
  ThreeMigrations();
  RunResult a = Run({"apply", "--to", "0001"});
  ASSERT_EQ(a.exit_code, 0) << Describe(a);
  RunResult b = Run({"apply"});
  ASSERT_EQ(b.exit_code, 0) << Describe(b);
  std::vector<std::string> all = Jsonl({});
  // 4 events for one step, 6 for two.
  ASSERT_EQ(all.size(), 10u);
  const std::string second_run = *JsonString(all[4], "run_id");
  ASSERT_EQ(JsonString(all[3], "type"), "run_finished");
  ASSERT_EQ(JsonString(all[4], "type"), "run_started");
  const std::string t_last_of_first = *JsonString(all[3], "time");
  const std::string t_first_of_second = *JsonString(all[4], "time");

  EXPECT_EQ(Selected({"--since", t_first_of_second}), Range(5, 10));
  EXPECT_EQ(Selected({"--until", t_first_of_second}), Range(1, 4));
  EXPECT_EQ(
      Selected({"--since", t_last_of_first, "--until", t_first_of_second}),
      std::vector<uint64_t>{4});
  for (const auto& line : Jsonl({"--since", t_first_of_second})) {
    EXPECT_EQ(JsonString(line, "run_id"), second_run) << line;
  }
}

TEST_F(AuditCliTest, BadSinceOrUntilIsOneErrorLineWithBadInputExitCode) {
  TwoRunsByAliceAndBob();
  const std::vector<std::string> bad = {
      "yesterday",
      "2026-13-01",                 // no month 13
      "2026-02-30",                 // no 30 February
      "2025-02-29",                 // not a leap year
      "2026-03-05T24:00:00Z",       // no hour 24
      "2026-03-05T10:00Z",          // seconds are required
      "2026-03-05T10:00:00.Z",      // a fraction needs a digit
      "2026-03-05T10:00:00+99:00",  // no such offset
      "2026-03-05T10:00:00+0100",   // offsets are +HH:MM
      "2026-03-05T10:00:00Z junk",
      "+202-03-05",
      "20260305",
  };
  for (const std::string flag : {"--since", "--until"}) {
    for (const auto& value : bad) {
      for (const std::string format : {"jsonl", "json", "csv", "table"}) {
        RunResult r = Run({"audit", "log", "--format", format, flag, value});
        EXPECT_EQ(r.exit_code, 2) << flag << " " << value << "\n"
                                  << Describe(r);
        EXPECT_EQ(r.err, "error: " + flag + " " + value +
                             ": not a time (use RFC 3339 or YYYY-MM-DD)\n")
            << Describe(r);
        EXPECT_EQ(r.out, "") << Describe(r);
      }
      RunResult e = Run({"audit", "export", "--format", "csv", "--out",
                         dir_ / "x.csv", flag, value});
      EXPECT_EQ(e.exit_code, 2) << Describe(e);
      EXPECT_EQ(Lines(e.err).size(), 1u) << Describe(e);
      EXPECT_EQ(e.err.rfind("error: " + flag + " ", 0), 0u) << Describe(e);
      EXPECT_FALSE(std::ifstream(dir_ / "x.csv").good()) << "export written";
      for (const auto& e : std::filesystem::directory_iterator(dir_.path()))
        EXPECT_NE(e.path().filename().string().rfind(".x.csv.tmp", 0), 0u)
            << "tmp left: " << e.path();
    }
  }
  // The good neighbours of the bad values still parse.
  EXPECT_EQ(Selected({"--since", "2024-02-29"}), Range(1, 10));
  EXPECT_EQ(Selected({"--since", "2026-03-05T23:59:60Z"}),
            std::vector<uint64_t>{});
  EXPECT_EQ(Selected({"--since", "2026-03-05T10:00:00+00:00"}), Range(7, 10));
}

// ---- --actor, --run, --version, --type ------------------------------------

TEST_F(AuditCliTest, ActorFilterMatchesOsUserOrUserAtHost) {
  TwoRunsByAliceAndBob();
  EXPECT_EQ(Selected({"--actor", "alice"}), Range(1, 6));
  EXPECT_EQ(Selected({"--actor", "bob"}), Range(7, 10));
  EXPECT_EQ(Selected({"--actor", "alice@" + host_}), Range(1, 6));
  EXPECT_EQ(Selected({"--actor", "bob@" + host_}), Range(7, 10));
  EXPECT_EQ(Selected({"--actor", "alice@not-" + host_}),
            std::vector<uint64_t>{});
  EXPECT_EQ(Selected({"--actor", "carol"}), std::vector<uint64_t>{});
  EXPECT_EQ(Selected({"--actor", "ali"}), std::vector<uint64_t>{});
}

TEST_F(AuditCliTest, RunFilterSelectsExactlyOneRunById) {
  TwoRunsByAliceAndBob();
  EXPECT_EQ(Selected({"--run", alice_run_}), Range(1, 6));
  EXPECT_EQ(Selected({"--run", bob_run_}), Range(7, 10));
  EXPECT_EQ(Selected({"--run", alice_run_.substr(0, 8)}),
            std::vector<uint64_t>{});
  EXPECT_EQ(Selected({"--run", "no-such-run"}), std::vector<uint64_t>{});
}

TEST_F(AuditCliTest, VersionAndTypeCombineWithTimeActorAndRun) {
  TwoRunsByAliceAndBob();
  // Versions compare numerically: 2 is 0002.
  EXPECT_EQ(Selected({"--version", "0002"}), (std::vector<uint64_t>{4, 5}));
  EXPECT_EQ(Selected({"--version", "2"}), (std::vector<uint64_t>{4, 5}));
  EXPECT_EQ(Selected({"--type", "step_applied"}),
            (std::vector<uint64_t>{3, 5, 9}));
  EXPECT_EQ(Selected({"--type", "run_started"}), (std::vector<uint64_t>{1, 7}));
  EXPECT_EQ(Selected({"--version", "0002", "--type", "step_applied"}),
            std::vector<uint64_t>{5});
  EXPECT_EQ(Selected({"--type", "step_applied", "--actor", "bob"}),
            std::vector<uint64_t>{9});
  EXPECT_EQ(Selected({"--type", "run_started", "--since", "2026-03-05"}),
            std::vector<uint64_t>{7});
  EXPECT_EQ(Selected({"--type", "step_started", "--until", "2026-03-05",
                      "--actor", "alice"}),
            (std::vector<uint64_t>{2, 4}));
  EXPECT_EQ(Selected({"--type", "run_finished", "--run", bob_run_}),
            std::vector<uint64_t>{10});
  EXPECT_EQ(Selected({"--version", "0003", "--run", bob_run_, "--since",
                      "2026-03-05T10:00:00Z", "--actor", "bob"}),
            (std::vector<uint64_t>{8, 9}));
  // Each of these contradicts the others: nothing matches.
  EXPECT_EQ(Selected({"--version", "0001", "--run", bob_run_}),
            std::vector<uint64_t>{});
  EXPECT_EQ(Selected({"--version", "0003", "--actor", "alice"}),
            std::vector<uint64_t>{});
  EXPECT_EQ(Selected({"--version", "0002", "--since", "2026-03-05"}),
            std::vector<uint64_t>{});
  EXPECT_EQ(Selected({"--type", "step_failed"}), std::vector<uint64_t>{});
  EXPECT_EQ(Selected({"--version", "0009"}), std::vector<uint64_t>{});
}

TEST_F(AuditCliTest, ExportAppliesTheSameFiltersAsLog) {
  TwoRunsByAliceAndBob();
  const std::vector<std::string> filters = {
      "--type", "step_applied", "--since", "2026-03-01", "--actor", "alice"};
  for (const std::string format : {"jsonl", "csv"}) {
    std::vector<std::string> log = {"audit", "log", "--format", format};
    log.insert(log.end(), filters.begin(), filters.end());
    RunResult shown = Run(log);
    ASSERT_EQ(shown.exit_code, 0) << Describe(shown);

    const std::string out = dir_ / ("export." + format);
    std::vector<std::string> exp = {"audit", "export", "--format",
                                    format,  "--out",  out};
    exp.insert(exp.end(), filters.begin(), filters.end());
    RunResult written = Run(exp);
    ASSERT_EQ(written.exit_code, 0) << Describe(written);
    EXPECT_EQ(written.out, "wrote " + out + "\n");
    EXPECT_EQ(ReadFile(out), shown.out) << format;
  }
  std::vector<std::string> lines = Lines(ReadFile(dir_ / "export.jsonl"));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(SequenceOf(lines[0]), 3u);
  EXPECT_EQ(SequenceOf(lines[1]), 5u);
}

// ---- CSV ------------------------------------------------------------------

// A reason, an OS user and an SQLite error message holding a comma, double
// quotes and a newline.
TEST_F(AuditCliTest, CsvQuotesCommasQuotesAndNewlinesPerRfc4180) {
  const std::string reason = "hotfix, \"ticket 7\"\nsecond line";
  const std::string user = "ops, \"night\"";
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  // The second CREATE fails: SQLite's message quotes the name, which holds
  // a comma, quotes and a newline.
  Migration("0002_b.up.sql",
            "CREATE TABLE \"x, \"\"y\"\"\nz\" (id INTEGER);\n"
            "CREATE TABLE \"x, \"\"y\"\"\nz\" (id INTEGER);\n");
  RunResult a = Run({"apply", "--reason", reason}, {{"MIGLEDGER_ACTOR", user}});
  ASSERT_EQ(a.exit_code, 3) << Describe(a);
  // The message has a line break; the error stays one line on stderr.
  std::vector<std::string> err_lines = Lines(a.err);
  ASSERT_FALSE(err_lines.empty()) << Describe(a);
  EXPECT_EQ(err_lines.back().rfind("error: ", 0), 0u) << Describe(a);
  EXPECT_TRUE(Contains(err_lines.back(), "x, \"\"y\"\" / z")) << Describe(a);
  for (size_t i = 0; i + 1 < err_lines.size(); ++i)
    EXPECT_NE(err_lines[i].rfind("error", 0), 0u) << Describe(a);

  std::vector<std::string> jsonl = Jsonl({});
  // run_started, 0001 started + applied, 0002 started + failed, run_finished
  ASSERT_EQ(jsonl.size(), 6u);
  std::string failed_line;
  for (const auto& line : jsonl) {
    if (JsonString(line, "type") == "step_failed") failed_line = line;
  }
  ASSERT_FALSE(failed_line.empty());
  const std::string message = *JsonString(failed_line, "message");
  ASSERT_TRUE(Contains(message, ",") && Contains(message, "\"") &&
              Contains(message, "\n"))
      << message;

  for (const std::string source : {"log", "export"}) {
    std::string text;
    if (source == "log") {
      RunResult r = Run({"audit", "log", "--format", "csv"});
      ASSERT_EQ(r.exit_code, 0) << Describe(r);
      text = r.out;
    } else {
      RunResult r =
          Run({"audit", "export", "--format", "csv", "--out", dir_ / "a.csv"});
      ASSERT_EQ(r.exit_code, 0) << Describe(r);
      text = ReadFile(dir_ / "a.csv");
    }
    SCOPED_TRACE("audit " + source);
    // Quotes inside a field are doubled in the raw text.
    EXPECT_TRUE(Contains(text, "\"ops, \"\"night\"\"\"")) << text;

    std::string error;
    auto records = ParseCsv(text, &error);
    ASSERT_TRUE(records) << error << "\n" << text;
    ASSERT_EQ(records->size(), 1 + jsonl.size());
    EXPECT_EQ(records->front(), kCsvHeader);
    for (size_t i = 1; i < records->size(); ++i) {
      const auto& rec = (*records)[i];
      ASSERT_EQ(rec.size(), kCsvHeader.size()) << "record " << i;
      const std::string& line = jsonl[i - 1];
      EXPECT_EQ(rec[0], std::to_string(i));
      EXPECT_EQ(rec[4], *JsonString(line, "type"));
      EXPECT_EQ(rec[6], *JsonString(line, "run_id"));
      EXPECT_EQ(rec[7], user);  // os_user round-trips
      EXPECT_EQ(rec[10], *JsonString(line, "leaf_hash"));
    }
    const auto& run_started = (*records)[1];
    EXPECT_EQ(run_started[4], "run_started");
    const std::string suffix = " (2 step(s) planned) reason: " + reason;
    ASSERT_GE(run_started[9].size(), suffix.size());
    EXPECT_EQ(run_started[9].substr(run_started[9].size() - suffix.size()),
              suffix)
        << run_started[9];
    const auto& step_failed = (*records)[5];
    EXPECT_EQ(step_failed[4], "step_failed");
    EXPECT_EQ(step_failed[5], "0002");
    EXPECT_EQ(step_failed[9], "up failed at line 3: " + message);
  }

  // The table keeps one line per event: line breaks show as " / ".
  RunResult table = Run({"audit", "log"});
  ASSERT_EQ(table.exit_code, 0) << Describe(table);
  EXPECT_EQ(Lines(table.out).size(), 1 + jsonl.size()) << table.out;
  EXPECT_TRUE(Contains(table.out, "hotfix, \"ticket 7\" / second line"))
      << table.out;
}

TEST_F(AuditCliTest, CsvFieldsWithoutSpecialCharactersStayUnquoted) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}, {{"MIGLEDGER_ACTOR", "plain"}}).exit_code, 0);
  RunResult r =
      Run({"audit", "log", "--format", "csv", "--type", "step_applied"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<std::string> raw = Lines(r.out);
  ASSERT_EQ(raw.size(), 2u) << r.out;
  EXPECT_EQ(raw[0],
            "sequence,time,target,database_id,type,version,run_id,os_user,"
            "host,summary,leaf_hash\r");
  EXPECT_EQ(raw[1].find('"'), std::string::npos) << raw[1];
  EXPECT_TRUE(Contains(raw[1], ",step_applied,0001,")) << raw[1];
  EXPECT_TRUE(Contains(raw[1], ",plain,")) << raw[1];
}

// ---- actor: CI job, git commit, --reason ----------------------------------

// The ci_job and git_commit of every event of the last run, from jsonl, and
// of its run_started from `audit show`.
struct RecordedIdentity {
  std::vector<std::optional<std::string>> ci_job, git_commit;
  std::string shown;  // `audit show` of the run's first event
};

class AuditActorTest : public AuditCliTest {
 protected:
  // Applies one new migration with `env` and reads back its run.
  RecordedIdentity ApplyWith(const Env& env) {
    ++migrations_;
    char name[32];
    std::snprintf(name, sizeof name, "%04d_m%d.up.sql", migrations_,
                  migrations_);
    Migration(name, "CREATE TABLE m" + std::to_string(migrations_) +
                        " (id INTEGER);\n");
    RecordedIdentity id;
    RunResult a = Run({"apply"}, env);
    EXPECT_EQ(a.exit_code, 0) << Describe(a);
    std::vector<std::string> started = Jsonl({"--type", "run_started"});
    EXPECT_EQ(started.size(), static_cast<size_t>(migrations_));
    if (started.empty()) return id;
    const std::string run = *JsonString(started.back(), "run_id");
    std::vector<std::string> events = Jsonl({"--run", run});
    EXPECT_EQ(events.size(),
              4u);  // run_started, step_started, step_applied, run_finished
    for (const auto& line : events) {
      id.ci_job.push_back(JsonString(line, "ci_job"));
      id.git_commit.push_back(JsonString(line, "git_commit"));
    }
    RunResult show =
        Run({"audit", "show", std::to_string(SequenceOf(started.back()))});
    EXPECT_EQ(show.exit_code, 0) << Describe(show);
    id.shown = show.out;
    return id;
  }

  int migrations_ = 0;
};

TEST_F(AuditActorTest, GithubRunIdAndShaAreRecordedInEveryEventOfTheRun) {
  const std::string sha = "0123456789abcdef0123456789abcdef01234567";
  RecordedIdentity id =
      ApplyWith({{"GITHUB_RUN_ID", "12345"}, {"GITHUB_SHA", sha}});
  ASSERT_EQ(id.ci_job.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(id.ci_job[i], "12345") << "event " << i;
    EXPECT_EQ(id.git_commit[i], sha) << "event " << i;
  }
  EXPECT_TRUE(Contains(id.shown, "\"ci_job\": \"12345\"")) << id.shown;
  EXPECT_TRUE(Contains(id.shown, "\"git_commit\": \"" + sha + "\""))
      << id.shown;
}

TEST_F(AuditActorTest, OtherCiSystemsVariablesAreRecordedToo) {
  struct Case {
    Env env;
    std::string job, commit;
  };
  const std::vector<Case> cases = {
      {{{"CI_JOB_ID", "gl-77"}, {"CI_COMMIT_SHA", "gl-sha"}},
       "gl-77",
       "gl-sha"},
      {{{"BUILD_ID", "jenkins-5"}, {"GIT_COMMIT", "jk-sha"}},
       "jenkins-5",
       "jk-sha"},
      {{{"BUILDKITE_JOB_ID", "bk-1"}, {"BUILDKITE_COMMIT", "bk-sha"}},
       "bk-1",
       "bk-sha"},
      {{{"CIRCLE_WORKFLOW_JOB_ID", "cc-9"}, {"CIRCLE_SHA1", "cc-sha"}},
       "cc-9",
       "cc-sha"},
  };
  for (const auto& c : cases) {
    RecordedIdentity id = ApplyWith(c.env);
    ASSERT_EQ(id.ci_job.size(), 4u);
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(id.ci_job[i], c.job);
      EXPECT_EQ(id.git_commit[i], c.commit);
    }
  }
}

TEST_F(AuditActorTest, MigledgerVariablesTakePrecedenceOverCiVariables) {
  RecordedIdentity id = ApplyWith({{"MIGLEDGER_CI_JOB", "release-42"},
                                   {"GITHUB_RUN_ID", "12345"},
                                   {"CI_JOB_ID", "999"},
                                   {"MIGLEDGER_GIT_COMMIT", "feedface"},
                                   {"GIT_COMMIT", "c0ffee"},
                                   {"GITHUB_SHA", "abc"}});
  ASSERT_EQ(id.ci_job.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(id.ci_job[i], "release-42");
    EXPECT_EQ(id.git_commit[i], "feedface");
  }
  EXPECT_TRUE(Contains(id.shown, "\"ci_job\": \"release-42\"")) << id.shown;
  EXPECT_FALSE(Contains(id.shown, "12345")) << id.shown;
  EXPECT_FALSE(Contains(id.shown, "c0ffee")) << id.shown;

  // Among CI variables, the first in CurrentActor's list wins.
  id = ApplyWith({{"GITHUB_RUN_ID", "12345"},
                  {"CI_JOB_ID", "999"},
                  {"GIT_COMMIT", "c0ffee"},
                  {"GITHUB_SHA", "abc"}});
  ASSERT_EQ(id.ci_job.size(), 4u);
  EXPECT_EQ(id.ci_job[0], "12345");
  EXPECT_EQ(id.git_commit[0], "c0ffee");
}

TEST_F(AuditActorTest, WithoutCiVariablesCiJobAndGitCommitAreAbsent) {
  RecordedIdentity id = ApplyWith({});
  ASSERT_EQ(id.ci_job.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(id.ci_job[i], std::nullopt);
    EXPECT_EQ(id.git_commit[i], std::nullopt);
  }
  EXPECT_FALSE(Contains(id.shown, "ci_job")) << id.shown;
  EXPECT_FALSE(Contains(id.shown, "git_commit")) << id.shown;
  EXPECT_TRUE(Contains(id.shown, "\"os_user\": \"")) << id.shown;
}

TEST_F(AuditActorTest, ReasonOfApplyAndDownIsRecordedWithTheirRunStarted) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  Migration("0001_a.down.sql", "DROP TABLE a;\n");
  RunResult up = Run({"apply", "--reason", "deploy 42"});
  ASSERT_EQ(up.exit_code, 0) << Describe(up);
  RunResult down =
      Run({"down", "--steps", "1", "--reason", "rollback: bad index"});
  ASSERT_EQ(down.exit_code, 0) << Describe(down);
  RunResult again = Run({"apply"});
  ASSERT_EQ(again.exit_code, 0) << Describe(again);

  std::vector<std::string> started = Jsonl({"--type", "run_started"});
  ASSERT_EQ(started.size(), 3u);
  EXPECT_EQ(JsonString(started[0], "reason"), "deploy 42");
  EXPECT_EQ(JsonString(started[1], "reason"), "rollback: bad index");
  EXPECT_EQ(JsonString(started[2], "reason"), std::nullopt);

  // Only run_started carries the reason, and the table shows it.
  EXPECT_EQ(Jsonl({}).size(), 12u);
  for (const auto& line : Jsonl({})) {
    if (JsonString(line, "type") != "run_started") {
      EXPECT_EQ(JsonString(line, "reason"), std::nullopt) << line;
    }
  }
  RunResult table = Run({"audit", "log", "--type", "run_started"});
  ASSERT_EQ(table.exit_code, 0) << Describe(table);
  std::vector<std::string> rows = Lines(table.out);
  ASSERT_EQ(rows.size(), 4u) << table.out;
  EXPECT_TRUE(Contains(rows[1], "reason: deploy 42")) << rows[1];
  EXPECT_TRUE(Contains(rows[2], "reason: rollback: bad index")) << rows[2];
  EXPECT_FALSE(Contains(rows[3], "reason:")) << rows[3];

  for (size_t i = 0; i < 2; ++i) {
    RunResult show =
        Run({"audit", "show", std::to_string(SequenceOf(started[i]))});
    ASSERT_EQ(show.exit_code, 0) << Describe(show);
    EXPECT_TRUE(Contains(show.out, i == 0
                                       ? "\"reason\": \"deploy 42\""
                                       : "\"reason\": \"rollback: bad index\""))
        << show.out;
  }
}

// ---- clocks that go backwards
// ------------------------------------------------

// Two runners whose clocks disagree: the first (clock right) applies
// 0001-0002 at 2026-03-05T10:00Z, events 1-6; the second (clock four days
// behind) applies 0003-0004 after it, events 7-12 recorded at
// 2026-03-01T10:00Z. A time selects a position in the chain (the last event
// recorded before it, in chain order), never events on both sides of an
// earlier one, and the commands warn about the clocks.
class AuditSkewedClockTest : public AuditCliTest {
 protected:
  void SetUp() override {
    AuditCliTest::SetUp();
    for (int i = 1; i <= 4; ++i) {
      Migration("000" + std::to_string(i) + "_t.up.sql",
                "CREATE TABLE t" + std::to_string(i) + " (id INTEGER);\n");
    }
    RunResult a = Run({"apply", "--to", "0002"},
                      {{"MIGLEDGER_FAKE_TIME", "2026-03-05T10:00:00Z"}});
    ASSERT_EQ(a.exit_code, 0) << Describe(a);
    RunResult b =
        Run({"apply"}, {{"MIGLEDGER_FAKE_TIME", "2026-03-01T10:00:00Z"}});
    ASSERT_EQ(b.exit_code, 0) << Describe(b);
  }

  // The sequences `audit log` selects; expects the clock warning.
  std::vector<uint64_t> SelectedWarning(
      const std::vector<std::string>& filters) {
    std::vector<std::string> args = {"audit", "log", "--format", "jsonl"};
    args.insert(args.end(), filters.begin(), filters.end());
    RunResult r = Run(args);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    ExpectClockWarning(r);
    std::vector<uint64_t> seqs;
    for (const auto& line : Lines(r.out)) seqs.push_back(SequenceOf(line));
    return seqs;
  }

  void ExpectClockWarning(const RunResult& r) {
    EXPECT_EQ(Lines(r.err).size(), 1u) << Describe(r);
    EXPECT_TRUE(Contains(r.err,
                         "warning: event times go backwards in the chain of "
                         "target sqlite:"))
        << Describe(r);
    EXPECT_TRUE(Contains(r.err,
                         "sequence 7 (2026-03-01T10:00:00.000000Z) comes after "
                         "sequence 6 (2026-03-05T10:00:00.000000Z)"))
        << Describe(r);
  }
};

TEST_F(AuditSkewedClockTest, AsOfATimeBuildsAStateThatExisted) {
  // Between the two clocks: the chain up to its last event recorded before
  // the time, i.e. all four, never 0003-0004 without 0001-0002.
  RunResult r = Run({"audit", "state", "--as-of", "2026-03-03T00:00:00Z"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  ExpectClockWarning(r);
  EXPECT_TRUE(Contains(r.out, "schema version 0004, 4 applied")) << r.out;
  RunResult date = Run({"audit", "state", "--as-of", "2026-03-02"});
  ASSERT_EQ(date.exit_code, 0) << Describe(date);
  EXPECT_TRUE(Contains(date.out, "schema version 0004, 4 applied")) << date.out;
  RunResult before = Run({"audit", "state", "--as-of", "2026-02-28"});
  ASSERT_EQ(before.exit_code, 0) << Describe(before);
  EXPECT_EQ(before.out, "no events at that point\n");
  // By sequence, as always.
  RunResult seq = Run({"audit", "state", "--as-of", "6"});
  ASSERT_EQ(seq.exit_code, 0) << Describe(seq);
  EXPECT_TRUE(Contains(seq.out, "schema version 0002, 2 applied")) << seq.out;
}

TEST_F(AuditSkewedClockTest, SinceAndUntilSelectContiguousStretchesOfTheChain) {
  // The last event recorded before 03-03 is 12: until selects 1-12 (not
  // 7-12), since selects what comes after it (nothing, not 1-6).
  EXPECT_EQ(SelectedWarning({"--until", "2026-03-03T00:00:00Z"}), Range(1, 12));
  EXPECT_EQ(SelectedWarning({"--since", "2026-03-03T00:00:00Z"}),
            std::vector<uint64_t>{});
  EXPECT_EQ(SelectedWarning({"--until", "2026-03-01T10:00:00Z"}),
            std::vector<uint64_t>{});
  EXPECT_EQ(SelectedWarning({"--since", "2026-03-01T10:00:00Z"}), Range(1, 12));
  EXPECT_EQ(SelectedWarning({"--since", "2026-02-01", "--until", "2026-04-01"}),
            Range(1, 12));
  // The HTML report selects the same way.
  RunResult html = Run({"audit", "export", "--format", "html", "--out",
                        dir_ / "r.html", "--until", "2026-03-03"});
  EXPECT_EQ(html.exit_code, 0) << Describe(html);
  ExpectClockWarning(html);
}

// ---- which time is which
// ------------------------------------------------------

// On the real clock: `status` shows when the step started (STARTED AT: the
// marker row, the same time as its step_started event), `audit state` when
// it committed (COMMITTED AT: its step_applied event, written just before
// the COMMIT).
TEST_F(AuditCliTest, StatusShowsTheStartAndAuditStateTheCommitOfAStep) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  RunResult a = Run({"apply"});
  ASSERT_EQ(a.exit_code, 0) << Describe(a);
  std::vector<std::string> started = Jsonl({"--type", "step_started"});
  std::vector<std::string> applied = Jsonl({"--type", "step_applied"});
  ASSERT_EQ(started.size(), 1u);
  ASSERT_EQ(applied.size(), 1u);
  auto start = ParseTime(*JsonString(started[0], "time"));
  auto commit = ParseTime(*JsonString(applied[0], "time"));
  ASSERT_TRUE(start && commit);

  RunResult status = Run({"status"});
  ASSERT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_TRUE(Contains(status.out, "STARTED AT")) << status.out;
  RunResult json = Run({"status", "--format", "json"});
  ASSERT_EQ(json.exit_code, 0) << Describe(json);
  auto marker = ParseTime(*JsonString(json.out, "applied_at"));
  ASSERT_TRUE(marker) << json.out;
  EXPECT_EQ(*marker, *start) << json.out << started[0];

  RunResult state = Run({"audit", "state"});
  ASSERT_EQ(state.exit_code, 0) << Describe(state);
  EXPECT_TRUE(Contains(state.out, "COMMITTED AT")) << state.out;
  std::optional<int64_t> shown;
  for (const auto& line : Lines(state.out)) {
    if (line.rfind("0001 ", 0) == 0) {
      size_t from = line.find_first_not_of(' ', 4);
      shown = ParseTime(line.substr(from, line.find(' ', from) - from));
    }
  }
  ASSERT_TRUE(shown) << state.out;
  EXPECT_EQ(*shown, *commit) << state.out << applied[0];
}

// ---- --type -----------------------------------------------------------------

// A type no event has is a typo: one error line listing the types, nothing
// on stdout, for log and export alike.
TEST_F(AuditCliTest, UnknownTypeIsBadInputListingTheTypes) {
  TwoRunsByAliceAndBob();
  for (const std::string& format : {"table", "jsonl", "csv"}) {
    RunResult r = Run({"audit", "log", "--format", format, "--type", "bogus"});
    EXPECT_EQ(r.exit_code, 2) << Describe(r);
    EXPECT_EQ(r.out, "") << Describe(r);
    EXPECT_EQ(Lines(r.err).size(), 1u) << Describe(r);
    EXPECT_EQ(r.err.rfind("error: --type bogus: not an event type (known: "
                          "run_started, run_finished, step_started, ",
                          0),
              0u)
        << Describe(r);
    EXPECT_TRUE(Contains(r.err, "step_failed")) << r.err;
  }
  RunResult e = Run({"audit", "export", "--format", "csv", "--out",
                     dir_ / "out.csv", "--type", "step_faild"});
  EXPECT_EQ(e.exit_code, 2) << Describe(e);
  EXPECT_FALSE(std::ifstream(dir_ / "out.csv").good());
  EXPECT_EQ(Selected({"--type", "step_applied"}),
            (std::vector<uint64_t>{3, 5, 9}));
}

// ---- audit state ----------------------------------------------------------

// Versions sort numerically everywhere: 0010 comes after 0009, not after
// 0001, and the newest applied version of 0001..0012 is 0012.
TEST_F(AuditCliTest, AuditStateOrdersVersionsNumerically) {
  for (int i = 1; i <= 12; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "%04d_t%d.up.sql", i, i);
    Migration(name, "CREATE TABLE t" + std::to_string(i) + " (id INTEGER);\n");
  }
  RunResult a = Run({"apply"});
  ASSERT_EQ(a.exit_code, 0) << Describe(a);
  RunResult state = Run({"audit", "state"});
  ASSERT_EQ(state.exit_code, 0) << Describe(state);
  EXPECT_TRUE(Contains(state.out, "schema version 0012, 12 applied"))
      << state.out;
  std::vector<std::string> listed;
  for (const auto& line : Lines(state.out)) {
    if (line.size() >= 4 && line[0] == '0') listed.push_back(line.substr(0, 4));
  }
  std::vector<std::string> want;
  for (int i = 1; i <= 12; ++i) {
    char v[8];
    std::snprintf(v, sizeof v, "%04d", i);
    want.push_back(v);
  }
  EXPECT_EQ(listed, want) << state.out;
}

// ---- audit show -------------------------------------------------------------

// An auditor starts from the outcome: `audit show` of a step_applied or a
// step_failed prints the SQL its attempt ran, found through the attempt id.
TEST_F(AuditCliTest, ShowOfAnOutcomeEventPrintsTheSqlOfItsAttempt) {
  Migration("0001_a.up.sql", "CREATE TABLE shown_a (id INTEGER);\n");
  Migration("0002_b.up.sql", "INSERT INTO no_such_table VALUES (1);\n");
  RunResult a = Run({"apply"});
  ASSERT_EQ(a.exit_code, 3) << Describe(a);
  std::vector<std::string> applied = Jsonl({"--type", "step_applied"});
  std::vector<std::string> failed = Jsonl({"--type", "step_failed"});
  std::vector<std::string> started = Jsonl({"--type", "step_started"});
  ASSERT_EQ(applied.size(), 1u);
  ASSERT_EQ(failed.size(), 1u);
  ASSERT_EQ(started.size(), 2u);
  struct Case {
    std::string outcome, start, sql;
  };
  for (const Case& c :
       {Case{applied[0], started[0], "CREATE TABLE shown_a (id INTEGER);\n"},
        Case{failed[0], started[1],
             "INSERT INTO no_such_table VALUES (1);\n"}}) {
    RunResult show =
        Run({"audit", "show", std::to_string(SequenceOf(c.outcome))});
    ASSERT_EQ(show.exit_code, 0) << Describe(show);
    EXPECT_TRUE(Contains(show.out, "-- SQL (sha256 ")) << show.out;
    EXPECT_TRUE(Contains(show.out, c.sql)) << show.out;
    EXPECT_TRUE(Contains(
        show.out, "started at sequence " + std::to_string(SequenceOf(c.start))))
        << show.out;
  }
  // Events of no attempt show no SQL.
  RunResult run = Run({"audit", "show", "1"});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_FALSE(Contains(run.out, "-- SQL")) << run.out;
}

}  // namespace
}  // namespace migledger::testing
