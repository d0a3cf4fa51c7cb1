// The bad-input matrix: every way the world hands migledger something broken
// (files, targets, servers, disks, ledgers) and what must happen then: a
// documented exit code, one clear "error: " line on stderr, a ledger that
// still verifies (unless the case is a broken ledger) and a target that is
// unchanged or consistent with the ledger.
//
// Every test runs the real binary on a fresh project. The PostgreSQL cases
// need scripts/pg-throwaway (PGTEST_* variables) and are skipped without it.
// The ledger cases edit the RocksDB files with RocksDB itself
// (ledger/FORMAT.md).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_util.h"

extern char** environ;

namespace migledger::testing {
namespace {

namespace fs = std::filesystem;
using Rows = std::vector<std::string>;

// ---- small helpers --------------------------------------------------------

std::string Lower(std::string s) {
  for (char& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool ContainsNoCase(const std::string& haystack, const std::string& needle) {
  return Contains(Lower(haystack), Lower(needle));
}

// stderr of a failed command whose failure was also logged as warnings on
// the way: "warning: " lines, then exactly one "error: " line, last.
void ExpectWarningsThenOneErrorLine(const RunResult& r) {
  std::vector<std::string> lines = Lines(r.err);
  ASSERT_FALSE(lines.empty()) << Describe(r);
  EXPECT_EQ(lines.back().rfind("error: ", 0), 0u) << Describe(r);
  for (size_t i = 0; i + 1 < lines.size(); ++i) {
    EXPECT_EQ(lines[i].rfind("warning: ", 0), 0u) << Describe(r);
  }
  EXPECT_TRUE(!r.err.empty() && r.err.back() == '\n') << Describe(r);
}

// A free TCP port on 127.0.0.1 (bound, read back, released: nothing
// listens there afterwards).
int UnusedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return 1;  // port 1: nothing listens there either
  }
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

// The "attempt_id" of one jsonl event line, or "".
std::string AttemptOf(const std::string& line) {
  const std::string key = "\"attempt_id\":\"";
  size_t pos = line.find(key);
  if (pos == std::string::npos) return "";
  pos += key.size();
  return line.substr(pos, line.find('"', pos) - pos);
}

std::string TypeOf(const std::string& line) {
  const std::string key = "\"type\":\"";
  size_t pos = line.find(key);
  if (pos == std::string::npos) return "";
  pos += key.size();
  return line.substr(pos, line.find('"', pos) - pos);
}

// ---- the ledger, opened with RocksDB itself (ledger/FORMAT.md) -------------

std::string Be64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i) {
    s[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return s;
}

uint64_t ReadBe64(const std::string& s) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8 && i < s.size(); ++i) {
    v = v << 8 | static_cast<uint8_t>(s[i]);
  }
  return v;
}

// Every column family of a ledger directory, opened read-write.
class RawLedger {
 public:
  explicit RawLedger(const std::string& dir) {
    rocksdb::DBOptions options;
    std::vector<std::string> names;
    rocksdb::Status s = rocksdb::DB::ListColumnFamilies(options, dir, &names);
    if (!s.ok()) throw std::runtime_error("list CFs: " + s.ToString());
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const auto& n : names)
      descriptors.emplace_back(n, rocksdb::ColumnFamilyOptions());
    s = rocksdb::DB::Open(options, dir, descriptors, &handles_, &db_);
    if (!s.ok()) throw std::runtime_error("open: " + s.ToString());
    for (size_t i = 0; i < names.size(); ++i) by_name_[names[i]] = handles_[i];
  }
  ~RawLedger() {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    delete db_;
  }
  // Tables as ledger/FORMAT.md names them: a column family each in format
  // 1, keys led by a tag byte in the default column family in format 2.
  rocksdb::ColumnFamilyHandle* Cf(const std::string& table) {
    auto it = by_name_.find(by_name_.count("events") ? table : "default");
    if (it == by_name_.end()) throw std::runtime_error("no CF " + table);
    return it->second;
  }
  std::string Key(const std::string& table, const std::string& key) {
    if (by_name_.count("events")) return key;
    static const std::map<std::string, char> tags = {
        {"events", 'e'},        {"hashes", 'h'},    {"target_index", 't'},
        {"version_index", 'v'}, {"run_index", 'r'}, {"time_index", 'i'},
        {"blobs", 'b'},         {"meta", 'm'}};
    return tags.at(table) + key;
  }
  std::string Get(const std::string& cf, const std::string& key) {
    std::string v;
    rocksdb::Status s = db_->Get({}, Cf(cf), Key(cf, key), &v);
    if (!s.ok()) throw std::runtime_error("get: " + s.ToString());
    return v;
  }
  void Put(const std::string& cf, const std::string& key,
           const std::string& value) {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    rocksdb::Status s = db_->Put(wo, Cf(cf), Key(cf, key), value);
    if (!s.ok()) throw std::runtime_error("put: " + s.ToString());
  }
  void Delete(const std::string& cf, const std::string& key) {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    rocksdb::Status s = db_->Delete(wo, Cf(cf), Key(cf, key));
    if (!s.ok()) throw std::runtime_error("delete: " + s.ToString());
  }
  void CreateCf(const std::string& name) {
    rocksdb::ColumnFamilyHandle* h = nullptr;
    rocksdb::Status s = db_->CreateColumnFamily({}, name, &h);
    if (!s.ok()) throw std::runtime_error("create CF: " + s.ToString());
    handles_.push_back(h);
    by_name_[name] = h;
  }
  uint64_t HeadSize() { return ReadBe64(Get("meta", "head")); }

 private:
  rocksdb::DB* db_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::map<std::string, rocksdb::ColumnFamilyHandle*> by_name_;
};

// The WAL files of a ledger, oldest first.
std::vector<fs::path> WalFiles(const std::string& ledger_dir) {
  std::vector<fs::path> logs;
  for (const auto& e : fs::directory_iterator(ledger_dir)) {
    if (e.path().extension() == ".log") logs.push_back(e.path());
  }
  std::sort(logs.begin(), logs.end());  // zero-padded numbers
  return logs;
}

// ---- PostgreSQL -----------------------------------------------------------

bool HavePostgres() { return PgServer::Available(); }

// ---- fixtures -------------------------------------------------------------

// What every project fixture can do.
class ProjectTest : public ::testing::Test {
 protected:
  TimedRun Run(const std::vector<std::string>& args, int timeout_s = 120) {
    return RunTimed(args, dir_.path(), env_, timeout_s);
  }
  void Migration(const std::string& file, const std::string& sql) {
    WriteFile(dir_ / ("migrations/" + file), sql);
  }
  std::string LedgerDir() const { return dir_ / ".migledger"; }
  size_t EventCount() {
    TimedRun r = Run({"audit", "log", "--format", "jsonl"});
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    return Lines(r.out).size();
  }
  std::vector<std::string> EventLines(const std::vector<std::string>& filter) {
    std::vector<std::string> args = {"audit", "log", "--format", "jsonl"};
    args.insert(args.end(), filter.begin(), filter.end());
    TimedRun r = Run(args);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    return Lines(r.out);
  }
  void ExpectLedgerVerifies() {
    TimedRun v = Run({"audit", "verify"});
    EXPECT_EQ(v.exit_code, 0) << Describe(v);
    EXPECT_TRUE(Contains(v.out, "events verified")) << Describe(v);
  }
  void ExpectValidates() {
    TimedRun v = Run({"validate"});
    EXPECT_EQ(v.exit_code, 0) << Describe(v);
  }

  TempDir dir_;
  std::map<std::string, std::string> env_;
};

// A SQLite project with 0001 applied, so there is a ledger that must
// survive every bad command unchanged and verifiable.
class SqliteBadInputTest : public ProjectTest {
 protected:
  void SetUp() override {
    MakeProject(dir_.path());
    Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
    Migration("0001_a.down.sql", "DROP TABLE a;\n");
    TimedRun r = Run({"apply"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    events_before_ = EventCount();
  }
  std::string Db() const { return dir_ / "app.db"; }
  Rows Markers() {
    return SqliteQuery(
        Db(), "SELECT version FROM migledger_applied ORDER BY version");
  }
  bool TableExists(const std::string& name) {
    return SqliteQuery(Db(),
                       "SELECT count(*) FROM sqlite_master WHERE type = "
                       "'table' AND name = '" +
                           name + "'") == Rows{"1"};
  }
  // The bad command changed nothing and the ledger verifies.
  void ExpectUntouched() {
    EXPECT_EQ(Markers(), Rows{"0001"});
    EXPECT_EQ(EventCount(), events_before_);
    ExpectLedgerVerifies();
  }
  // Runs `args` expecting exit `code` and every one of `texts` in the one
  // error line, nothing on stdout.
  TimedRun ExpectFails(const std::vector<std::string>& args, int code,
                       const std::vector<std::string>& texts) {
    TimedRun r = Run(args);
    EXPECT_EQ(r.exit_code, code) << Describe(r);
    ExpectOneErrorLine(r);
    for (const auto& t : texts)
      EXPECT_TRUE(Contains(r.err, t)) << t << "\n" << Describe(r);
    EXPECT_TRUE(r.out.empty()) << Describe(r);
    return r;
  }

  size_t events_before_ = 0;
};

// A PostgreSQL project on a fresh database (socket URI, trusted), 0001
// applied.
class PgBadInputTest : public ProjectTest {
 protected:
  void SetUp() override {
    if (!HavePostgres()) {
      GTEST_SKIP() << "PGTEST_URI is not set (run under scripts/pg-throwaway)";
    }
    db_name_ = NewDatabaseName();
    uri_ = PgServer::CreateDatabase(db_name_);
    MakeProject(dir_.path(), uri_);
    Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
    TimedRun r = Run({"apply"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    events_before_ = EventCount();
  }
  void TearDown() override {
    if (!db_name_.empty() && !std::getenv("MIGLEDGER_KEEP_TEST_DIRS")) {
      PgServer::DropDatabase(db_name_);
    }
  }
  Rows Markers() {
    return PgQuery(uri_,
                   "SELECT version FROM migledger.applied ORDER BY version");
  }
  bool TableExists(const std::string& name) {
    return PgQuery(uri_, "SELECT to_regclass('public." + name +
                             "') IS NOT NULL") == Rows{"t"};
  }

  std::string db_name_;
  std::string uri_;
  size_t events_before_ = 0;
};

// ---- migration files ------------------------------------------------------

TEST_F(SqliteBadInputTest, NonUtf8MigrationIsBadInputNamingTheFile) {
  // Latin-1 "café": 0xE9 is not UTF-8.
  Migration("0002_b.up.sql",
            "CREATE TABLE b (name TEXT);\nINSERT INTO b VALUES ('caf\xe9');\n");
  ExpectFails({"apply"}, 2, {"0002_b.up.sql", "UTF-8"});
  EXPECT_FALSE(TableExists("b"));
  ExpectFails({"status"}, 2, {"0002_b.up.sql", "UTF-8"});
  ExpectUntouched();
}

// Root reads every file whatever its mode; run the binary without the
// capabilities that allow it (setpriv from util-linux), so a mode of 000
// means for root what it means for everybody else.
std::vector<std::string> WithoutFilePermissionOverride() {
  if (geteuid() != 0) return {};
  return {"setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"};
}

TEST_F(SqliteBadInputTest, UnreadableMigrationsDirIsIoErrorNamingIt) {
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  const std::string migrations = dir_ / "migrations";
  ASSERT_EQ(chmod(migrations.c_str(), 0), 0);
  for (const char* command : {"apply", "status", "plan", "validate"}) {
    TimedRun r = RunTimed({command}, dir_.path(), env_, 60,
                          WithoutFilePermissionOverride());
    EXPECT_EQ(r.exit_code, 9) << command << "\n" << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "cannot read migrations directory " +
                                    migrations + ": Permission denied"))
        << Describe(r);
    EXPECT_TRUE(r.out.empty()) << Describe(r);
  }
  ASSERT_EQ(chmod(migrations.c_str(), 0755), 0);
  EXPECT_FALSE(TableExists("b"));
  ExpectUntouched();
}

TEST_F(SqliteBadInputTest, UnreadableMigrationFileRefusesTheWholeRun) {
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  Migration("0003_c.up.sql", "CREATE TABLE c (id INTEGER);\n");
  const std::string file = dir_ / "migrations/0003_c.up.sql";
  ASSERT_EQ(chmod(file.c_str(), 0), 0);
  TimedRun r = RunTimed({"apply"}, dir_.path(), env_, 60,
                        WithoutFilePermissionOverride());
  EXPECT_EQ(r.exit_code, 9) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, file + ": cannot read file: Permission denied"))
      << Describe(r);
  // Nothing ran, not even the readable 0002 before it.
  EXPECT_FALSE(TableExists("b"));
  ASSERT_EQ(chmod(file.c_str(), 0644), 0);
  ExpectUntouched();
  TimedRun ok = Run({"apply"});
  EXPECT_EQ(ok.exit_code, 0) << Describe(ok);
  EXPECT_EQ(Markers(), (Rows{"0001", "0002", "0003"}));
}

TEST_F(SqliteBadInputTest, SymlinkOutsideTheProjectIsBadInput) {
  TempDir elsewhere;
  WriteFile(elsewhere / "evil.sql", "CREATE TABLE evil (id INTEGER);\n");
  fs::create_symlink(elsewhere / "evil.sql",
                     dir_ / "migrations/0002_evil.up.sql");
  ExpectFails({"apply"}, 2, {"0002_evil.up.sql", "symlink"});
  EXPECT_FALSE(TableExists("evil"));
  ExpectUntouched();

  // Relative, to a file of the project outside migrations/: refused too.
  fs::remove(dir_ / "migrations/0002_evil.up.sql");
  WriteFile(dir_ / "evil.sql", "CREATE TABLE evil (id INTEGER);\n");
  fs::create_symlink("../evil.sql", dir_ / "migrations/0002_evil.up.sql");
  ExpectFails({"apply"}, 2, {"0002_evil.up.sql", "symlink"});
  EXPECT_FALSE(TableExists("evil"));
  ExpectUntouched();
}

TEST_F(SqliteBadInputTest, UnterminatedQuoteIsBadInputNamingTheLine) {
  Migration("0002_b.up.sql",
            "CREATE TABLE b (id INTEGER, s TEXT);\n"
            "\n"
            "INSERT INTO b VALUES (1, 'oops);\n"
            "CREATE TABLE c (id INTEGER);\n");
  ExpectFails({"apply"}, 2, {"0002_b.up.sql", "line 3", "unterminated"});
  EXPECT_FALSE(TableExists("b"));
  EXPECT_FALSE(TableExists("c"));
  ExpectUntouched();
}

// A bad file later in the plan is bad input found before anything runs:
// the good migration before it is not applied either.
TEST_F(SqliteBadInputTest, UnterminatedQuoteInLaterFileRefusesTheWholeRun) {
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  Migration("0003_c.up.sql",
            "CREATE TABLE c (id INTEGER, s TEXT);\n"
            "INSERT INTO c VALUES (1, 'oops);\n");
  ExpectFails({"apply"}, 2, {"0003_c.up.sql", "line 2", "unterminated"});
  EXPECT_FALSE(TableExists("b"));
  EXPECT_FALSE(TableExists("c"));
  ExpectUntouched();
}

TEST_F(PgBadInputTest, UnterminatedDollarQuoteIsBadInputNamingTheLine) {
  Migration("0002_b.up.sql",
            "CREATE TABLE b (id INTEGER);\n"
            "\n"
            "CREATE FUNCTION f() RETURNS integer LANGUAGE sql AS $body$\n"
            "  SELECT 1;\n"
            "$bodY$;\n");
  TimedRun r = Run({"apply"});
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "0002_b.up.sql")) << Describe(r);
  EXPECT_TRUE(Contains(r.err, "line 3")) << Describe(r);
  EXPECT_TRUE(Contains(r.err, "unterminated")) << Describe(r);
  EXPECT_FALSE(TableExists("b"));
  EXPECT_EQ(Markers(), Rows{"0001"});
  EXPECT_EQ(EventCount(), events_before_);
  ExpectLedgerVerifies();
}

// One INSERT with a 100 MB string literal: applied in reasonable time and
// memory (the ledger keeps the SQL text, so it is stored once there too).
TEST_F(SqliteBadInputTest, HundredMegabyteMigrationAppliesWithinLimits) {
  constexpr size_t kLiteral = 100u << 20;
  {
    std::ofstream f(dir_ / "migrations/0002_big.up.sql", std::ios::binary);
    f << "CREATE TABLE big (v TEXT);\nINSERT INTO big VALUES ('";
    std::string chunk(1 << 20, 'x');
    for (size_t i = 0; i < kLiteral / chunk.size(); ++i) f << chunk;
    f << "');\n";
  }  // nothing big stays in this process (the child's RSS starts at fork)
  TimedRun r = Run({"apply"}, 120);
  ASSERT_FALSE(r.timed_out) << "apply of a 100 MB migration took > 120 s";
  EXPECT_EQ(r.signal, 0) << Describe(r);
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  // AddressSanitizer's redzones and its quarantine of freed memory (256 MB)
  // inflate the peak of a build with it.
#if defined(__SANITIZE_ADDRESS__)
  constexpr long kMaxRssKb = 2048L * 1024;
#else
  constexpr long kMaxRssKb = 1024L * 1024;
#endif
  EXPECT_LT(r.max_rss_kb, kMaxRssKb) << "peak RSS " << r.max_rss_kb << " KB";
  std::fprintf(stderr, "[ info ] 100 MB apply: %.1f s, peak RSS %ld MB\n",
               r.seconds, r.max_rss_kb / 1024);
  EXPECT_EQ(Markers(), (Rows{"0001", "0002"}));
  EXPECT_EQ(SqliteQuery(Db(), "SELECT count(*), length(v) FROM big"),
            Rows{"1|" + std::to_string(kLiteral)});
  ExpectLedgerVerifies();
}

// ---- targets that cannot be reached ---------------------------------------

TEST_F(SqliteBadInputTest, PostgresServerDownIsTargetUnavailableQuickly) {
  const std::string uri =
      "postgresql://migledger@127.0.0.1:" + std::to_string(UnusedPort()) +
      "/nodb?connect_timeout=2";
  for (const char* command : {"apply", "status"}) {
    TimedRun r = Run({command, "--target", uri}, 30);
    EXPECT_EQ(r.exit_code, 7) << command << "\n" << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "127.0.0.1")) << Describe(r);
    EXPECT_LT(r.seconds, 10) << command << " took " << r.seconds << " s";
  }
  ExpectUntouched();
}

TEST_F(PgBadInputTest, WrongPasswordIsTargetUnavailableWithoutThePassword) {
  const std::string right = Env("PGTEST_PASSWORD");
  ASSERT_FALSE(right.empty());
  const std::string wrong = "wr0ng-Pa55word-bi";
  // Over TCP, where the role must give its password.
  const std::string tcp = WithDatabase(Env("PGTEST_URI"), db_name_);
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  for (const char* command : {"apply", "status"}) {
    TimedRun r =
        RunTimed({command, "--target", tcp}, dir_.path(),
                 {{"PGPASSWORD", wrong}, {"PGCONNECT_TIMEOUT", "5"}}, 30);
    EXPECT_EQ(r.exit_code, 7) << command << "\n" << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "authentication failed")) << Describe(r);
    EXPECT_FALSE(Contains(r.out + r.err, wrong)) << Describe(r);
    EXPECT_FALSE(Contains(r.out + r.err, right)) << Describe(r);
  }
  EXPECT_FALSE(TableExists("b"));
  EXPECT_EQ(Markers(), Rows{"0001"});
  EXPECT_EQ(EventCount(), events_before_);
  ExpectLedgerVerifies();
  // The right password works on the same URI.
  TimedRun ok =
      RunTimed({"apply", "--target", tcp}, dir_.path(),
               {{"PGPASSWORD", right}, {"PGCONNECT_TIMEOUT", "5"}}, 60);
  EXPECT_EQ(ok.exit_code, 0) << Describe(ok);
  EXPECT_EQ(Markers(), (Rows{"0001", "0002"}));
}

// The backend running a migration is terminated mid-statement: a clean
// failure, one outcome per attempt, and the next apply finishes the job.
TEST_F(PgBadInputTest, ServerGoingAwayMidMigrationFailsCleanlyAndRecovers) {
  Migration("0002_sleep.up.sql", "SELECT pg_sleep(30);\n");
  TimedRun r;
  std::thread apply([&] { r = Run({"apply"}, 90); });
  Rows killed;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    killed =
        PgQuery(uri_,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'migledger' AND query LIKE "
                "'%pg_sleep%' AND pid <> pg_backend_pid() "
                "AND datname = current_database()");  // not other tests'
    if (!killed.empty() && killed[0] != "0") break;
  }
  apply.join();
  ASSERT_EQ(killed, Rows{"1"}) << "the migration's backend was never seen";
  ASSERT_FALSE(r.timed_out) << Describe(r);
  EXPECT_EQ(r.signal, 0) << Describe(r);
  EXPECT_TRUE(r.exit_code == 7 || r.exit_code == 3) << Describe(r);
  ExpectWarningsThenOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "0002")) << Describe(r);
  EXPECT_LT(r.seconds, 25) << "apply waited for the whole pg_sleep";
  ExpectLedgerVerifies();
  EXPECT_EQ(Markers(), Rows{"0001"});

  // At most one outcome for the attempt so far.
  auto outcomes = [&](Rows lines) {
    std::map<std::string, std::vector<std::string>> by_attempt;
    for (const auto& l : lines) {
      std::string type = TypeOf(l);
      if (type == "step_started") by_attempt[AttemptOf(l)];
      if (type == "step_applied" || type == "step_failed" ||
          type == "step_recovered") {
        by_attempt[AttemptOf(l)].push_back(type);
      }
    }
    return by_attempt;
  };
  auto first = outcomes(EventLines({"--version", "0002"}));
  ASSERT_EQ(first.size(), 1u);
  EXPECT_LE(first.begin()->second.size(), 1u);
  const std::string attempt = first.begin()->first;

  // A failed step is not applied, so its file may change; the next apply
  // must not hang and finishes the job.
  Migration("0002_sleep.up.sql", "SELECT 1;\n");
  TimedRun again = Run({"apply"}, 60);
  ASSERT_FALSE(again.timed_out);
  EXPECT_EQ(again.exit_code, 0) << Describe(again);
  EXPECT_EQ(Markers(), (Rows{"0001", "0002"}));
  auto all = outcomes(EventLines({"--version", "0002"}));
  EXPECT_EQ(all.size(), 2u);
  for (const auto& [id, types] : all) {
    EXPECT_EQ(types.size(), 1u) << "attempt " << id;
    if (id == attempt && types.size() == 1) {
      EXPECT_NE(types[0], "step_applied");
    }
  }
  ExpectLedgerVerifies();
  ExpectValidates();
}

// ---- a full disk under the ledger -----------------------------------------

class FullDiskTest : public ProjectTest {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
    mnt_ = dir_ / "mnt";
    fs::create_directories(mnt_);
    if (mount("tmpfs", mnt_.c_str(), "tmpfs", 0, "size=2m,mode=0700") != 0) {
      GTEST_SKIP() << "cannot mount a 2 MB tmpfs: " << std::strerror(errno);
    }
    mounted_ = true;
    WriteFile(
        dir_ / "migledger.toml",
        "ledger_dir = \"" + mnt_ +
            "/ledger\"\ndefault_target = \"dev\"\n"
            "lock_timeout_ms = 2000\n[targets.dev]\nurl = \"sqlite:app.db\"\n");
    fs::create_directories(dir_ / "migrations");
  }
  void TearDown() override {
    if (mounted_ && umount2(mnt_.c_str(), MNT_DETACH) != 0) {
      ADD_FAILURE() << "umount " << mnt_ << ": " << std::strerror(errno);
    }
  }
  uint64_t FreeBytes() {
    struct statvfs st {};
    if (statvfs(mnt_.c_str(), &st) != 0) return 0;
    return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  }
  std::string LedgerDir() const { return mnt_ + "/ledger"; }

  std::string mnt_;
  bool mounted_ = false;
};

TEST_F(FullDiskTest, FullDiskFailsCleanlyAndTheNextApplyFinishes) {
  Migration("0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  TimedRun first = Run({"apply"});
  ASSERT_EQ(first.exit_code, 0) << Describe(first);

  // Five migrations whose SQL text (kept in the ledger) needs more room
  // than is left.
  const std::string padding = "-- " + std::string(200, 'p') + "\n";
  for (int v = 2; v <= 6; ++v) {
    std::string sql;
    for (int i = 0; i < 300; ++i) sql += padding;  // ~60 KB
    sql += "CREATE TABLE t" + std::to_string(v) + " (id INTEGER);\n";
    Migration("000" + std::to_string(v) + "_t" + std::to_string(v) + ".up.sql",
              sql);
  }
  const uint64_t free_bytes = FreeBytes();
  ASSERT_GT(free_bytes, 150u << 10) << "the ledger alone filled the tmpfs";
  {
    std::ofstream filler(mnt_ + "/filler", std::ios::binary);
    std::string zeros(4096, '\0');
    for (uint64_t n = 0; n + (100u << 10) < free_bytes; n += zeros.size()) {
      filler << zeros;
    }
  }
  ASSERT_LT(FreeBytes(), 150u << 10);

  TimedRun full = Run({"apply"}, 60);
  ASSERT_FALSE(full.timed_out) << Describe(full);
  EXPECT_EQ(full.signal, 0) << Describe(full);
  EXPECT_EQ(full.exit_code, 9) << Describe(full);
  ExpectOneErrorLine(full);
  EXPECT_TRUE(ContainsNoCase(full.err, "no space left")) << Describe(full);

  fs::remove(mnt_ + "/filler");
  TimedRun after = Run({"apply"}, 60);
  EXPECT_EQ(after.exit_code, 0) << Describe(after);
  ExpectLedgerVerifies();
  ExpectValidates();
  EXPECT_EQ(SqliteQuery(dir_ / "app.db",
                        "SELECT version, count(*) FROM migledger_applied "
                        "GROUP BY version ORDER BY version"),
            (Rows{"0001|1", "0002|1", "0003|1", "0004|1", "0005|1", "0006|1"}));
}

// ---- broken ledgers -------------------------------------------------------

TEST_F(SqliteBadInputTest, NewerLedgerFormatIsRefusedByEveryCommand) {
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  {
    RawLedger raw(LedgerDir());
    ASSERT_EQ(raw.Get("meta", "format"), "2");
    raw.Put("meta", "format", "3");
  }
  const std::string out = dir_ / "export.jsonl";
  const std::vector<std::vector<std::string>> commands = {
      {"apply"},
      {"status"},
      {"plan"},
      {"validate"},
      {"recover"},
      {"down", "--steps", "1"},
      {"baseline", "--version", "0002", "--reason", "x"},
      {"accept-checksum", "--version", "0001", "--reason", "x"},
      {"audit", "log"},
      {"audit", "show", "1"},
      {"audit", "state"},
      {"audit", "digest"},
      {"audit", "verify"},
      {"audit", "export", "--format", "jsonl", "--out", out},
  };
  for (const auto& args : commands) {
    TimedRun r = Run(args);
    std::string line;
    for (const auto& a : args) line += a + " ";
    EXPECT_EQ(r.exit_code, 8) << line << "\n" << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "newer")) << line << "\n" << Describe(r);
  }
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(Markers(), Rows{"0001"});
  EXPECT_FALSE(TableExists("b"));
  {
    RawLedger raw(LedgerDir());
    EXPECT_EQ(raw.Get("meta", "format"), "3");  // nobody "repaired" it
  }
}

TEST_F(SqliteBadInputTest, UnknownColumnFamilyIsRefusedAsNewer) {
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  {
    RawLedger raw(LedgerDir());
    raw.CreateCf("future_index");
  }
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"apply"}, {"status"}, {"audit", "verify"}, {"audit", "log"}}) {
    TimedRun r = Run(args);
    EXPECT_EQ(r.exit_code, 8) << args[0] << " " << args.back() << "\n"
                              << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "newer")) << Describe(r);
  }
  EXPECT_EQ(Markers(), Rows{"0001"});
  EXPECT_FALSE(TableExists("b"));
}

TEST_F(SqliteBadInputTest, DeletedLastEventIsCorruptAndNothingRuns) {
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  {
    RawLedger raw(LedgerDir());
    uint64_t head = raw.HeadSize();
    ASSERT_EQ(head, events_before_);
    raw.Delete("events", Be64(head));
  }
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"audit", "verify"}, {"apply"}, {"status"}}) {
    TimedRun r = Run(args);
    EXPECT_EQ(r.exit_code, 6) << args[0] << "\n" << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "ledger")) << Describe(r);
  }
  EXPECT_EQ(Markers(), Rows{"0001"});
  EXPECT_FALSE(TableExists("b"));
}

TEST_F(SqliteBadInputTest, DeletedWalIsCorruptAndNothingRuns) {
  // The whole ledger (one run) is in its only WAL file.
  std::vector<fs::path> logs = WalFiles(LedgerDir());
  ASSERT_FALSE(logs.empty());
  fs::remove(logs.back());
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"audit", "verify"}, {"apply"}, {"status"}}) {
    TimedRun r = Run(args);
    EXPECT_EQ(r.exit_code, 6) << args[0] << "\n" << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "ledger")) << Describe(r);
  }
  EXPECT_EQ(Markers(), Rows{"0001"});
  EXPECT_FALSE(TableExists("b"));
}

// A WAL cut in half at the end loses whole events (RocksDB recovers to the
// last complete batch): the ledger alone cannot tell, but a saved digest
// does, and the target's mirror gives the lost events back without running
// anything twice.
TEST_F(SqliteBadInputTest, TruncatedWalIsCaughtByDigestAndNothingRunsTwice) {
  Migration("0002_b.up.sql",
            "CREATE TABLE b (id INTEGER);\nINSERT INTO b VALUES (1);\n");
  TimedRun second = Run({"apply"});
  ASSERT_EQ(second.exit_code, 0) << Describe(second);
  TimedRun digest = Run({"audit", "digest"});
  ASSERT_EQ(digest.exit_code, 0) << Describe(digest);
  WriteFile(dir_ / "digest.txt", digest.out);

  std::vector<fs::path> logs = WalFiles(LedgerDir());
  ASSERT_FALSE(logs.empty());
  fs::resize_file(logs.back(), fs::file_size(logs.back()) / 2);

  TimedRun check = Run({"audit", "verify", "--digest", dir_ / "digest.txt"});
  EXPECT_EQ(check.exit_code, 6) << Describe(check);
  ExpectOneErrorLine(check);

  Migration("0003_c.up.sql", "CREATE TABLE c (id INTEGER);\n");
  TimedRun r = Run({"apply"});
  EXPECT_EQ(r.signal, 0) << Describe(r);
  if (r.exit_code == 6) {
    ExpectOneErrorLine(r);
    EXPECT_EQ(Markers(), (Rows{"0001", "0002"}));
    EXPECT_FALSE(TableExists("c"));
  } else {
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(Markers(), (Rows{"0001", "0002", "0003"}));
    ExpectLedgerVerifies();
    ExpectValidates();
    // The mirror gave the lost events back: the saved digest is a prefix
    // again.
    TimedRun again = Run({"audit", "verify", "--digest", dir_ / "digest.txt"});
    EXPECT_EQ(again.exit_code, 0) << Describe(again);
  }
  EXPECT_EQ(SqliteQuery(Db(), "SELECT count(*) FROM b"), Rows{"1"});
}

TEST_F(SqliteBadInputTest, HandEditedEventIsNamedByVerify) {
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  {
    RawLedger raw(LedgerDir());
    ASSERT_GT(raw.HeadSize(), 4u);
    std::string bytes = raw.Get("events", Be64(3));
    // A plausible forgery: another version, still a valid event.
    size_t pos = bytes.find("0001");
    if (pos != std::string::npos) {
      bytes.replace(pos, 4, "0009");
    } else {
      bytes.back() ^= 0x01;
    }
    raw.Put("events", Be64(3), bytes);
  }
  TimedRun v = Run({"audit", "verify"});
  EXPECT_EQ(v.exit_code, 6) << Describe(v);
  ExpectOneErrorLine(v);
  EXPECT_TRUE(Contains(v.err, "sequence 3")) << Describe(v);
  EXPECT_FALSE(Contains(v.out, "events verified")) << Describe(v);
}

// ---- file modes -----------------------------------------------------------

TEST_F(SqliteBadInputTest, LedgerDirectoryIsPrivateAndItsFiles0600) {
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  const std::string out = dir_ / "export.jsonl";
  ASSERT_EQ(
      Run({"audit", "export", "--format", "jsonl", "--out", out}).exit_code, 0);
  struct stat st {};
  ASSERT_EQ(stat(LedgerDir().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  size_t files = 0;
  for (const auto& e : fs::recursive_directory_iterator(LedgerDir())) {
    ASSERT_EQ(lstat(e.path().c_str(), &st), 0);
    if (S_ISDIR(st.st_mode)) {
      EXPECT_EQ(st.st_mode & 07777, 0700u) << e.path();
    } else {
      ++files;
      EXPECT_EQ(st.st_mode & 07777, 0600u) << e.path();
    }
  }
  EXPECT_GT(files, 3u);
  ASSERT_EQ(stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u) << out;
}

// ---- files the tool writes, and the ledger directory ---------------------

// Names in `dir` starting with `prefix`: a temporary file left behind.
std::vector<std::string> NamesStartingWith(const std::string& dir,
                                           const std::string& prefix) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0) names.push_back(name);
  }
  return names;
}

// Issue 39: the export wrote to the fixed name F.tmp (following a symlink
// planted there) and renamed it to F. A root export in a shared directory
// could so overwrite any file.
TEST_F(SqliteBadInputTest, ExportNeverWritesThroughAPlantedSymlink) {
  const std::string victim = dir_ / "victim";
  WriteFile(victim, "precious\n");
  const std::string out = dir_ / "audit.jsonl";
  ASSERT_EQ(symlink(victim.c_str(), (out + ".tmp").c_str()), 0);
  TimedRun r = Run({"audit", "export", "--format", "jsonl", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(ReadFile(victim), "precious\n");
  EXPECT_EQ(Lines(ReadFile(out)).size(), events_before_);
  // A symlink at F itself is replaced, not written through.
  const std::string linked = dir_ / "linked.csv";
  ASSERT_EQ(symlink(victim.c_str(), linked.c_str()), 0);
  r = Run({"audit", "export", "--format", "csv", "--out", linked});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(ReadFile(victim), "precious\n");
  EXPECT_FALSE(fs::is_symlink(linked));
  EXPECT_EQ(NamesStartingWith(dir_.path(), ".audit.jsonl.tmp"),
            std::vector<std::string>{});
  EXPECT_EQ(NamesStartingWith(dir_.path(), ".linked.csv.tmp"),
            std::vector<std::string>{});
}

// The SQLite target's lock file was opened with O_CREAT through a symlink
// planted at its name: root's apply created a file wherever it pointed.
TEST_F(SqliteBadInputTest, SymlinkAtTheTargetsLockFileIsRefusedNotFollowed) {
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  const std::string lock = Db() + ".migledger-lock";
  std::remove(lock.c_str());
  const std::string planted = dir_ / "planted";
  ASSERT_EQ(symlink(planted.c_str(), lock.c_str()), 0);
  TimedRun r = Run({"apply"});
  EXPECT_EQ(r.exit_code, 7) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "it is a symbolic link")) << Describe(r);
  EXPECT_FALSE(fs::exists(planted));
  EXPECT_FALSE(TableExists("b"));
  ExpectUntouched();
}

// init wrote migledger.toml through whatever was at that name when it did
// not "exist" (a dangling symlink): root's init could create any file.
TEST(ProjectFilesTest, InitNeverWritesThroughADanglingSymlink) {
  TempDir dir;
  const std::string project = dir / "project";
  fs::create_directories(project);
  fs::create_directories(dir / "elsewhere");
  const std::string planted = dir / "elsewhere/planted";
  ASSERT_EQ(symlink(planted.c_str(), (project + "/migledger.toml").c_str()), 0);
  TimedRun r = RunTimed({"init"}, project);
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  ExpectOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "migledger.toml already exists")) << Describe(r);
  EXPECT_FALSE(fs::exists(planted));
}

// A ledger directory another user can change is refused to writers (they
// could move the log away or plant files in it) and reported to readers.
TEST_F(SqliteBadInputTest, LedgerDirectoryWritableByOthersIsRefusedToWriters) {
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  for (mode_t mode : {0777, 0770, 0702}) {
    ASSERT_EQ(chmod(LedgerDir().c_str(), mode), 0);
    for (const char* command : {"apply", "recover"}) {
      TimedRun r = Run({command});
      EXPECT_EQ(r.exit_code, 9) << command << "\n" << Describe(r);
      ExpectWarningsThenOneErrorLine(r);
      EXPECT_TRUE(Contains(r.err, "chmod 700 " + LedgerDir())) << Describe(r);
      EXPECT_TRUE(r.out.empty()) << Describe(r);
    }
    TimedRun v = Run({"audit", "verify"});
    EXPECT_EQ(v.exit_code, 0) << Describe(v);
    EXPECT_EQ(v.err.rfind("warning: ledger directory " + LedgerDir(), 0), 0u)
        << Describe(v);
    struct stat st {};
    ASSERT_EQ(stat(LedgerDir().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, mode) << "the tool changed nothing";
  }
  ASSERT_EQ(chmod(LedgerDir().c_str(), 0700), 0);
  EXPECT_FALSE(TableExists("b"));
  ExpectUntouched();
  ASSERT_EQ(Run({"apply"}).exit_code, 0);
  EXPECT_TRUE(TableExists("b"));
}

TEST_F(SqliteBadInputTest, LedgerDirectoryOfAnotherUserIsRefusedToWriters) {
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  const uid_t other = geteuid() == 65534 ? 65533 : 65534;
  ASSERT_EQ(chown(LedgerDir().c_str(), other, static_cast<gid_t>(-1)), 0)
      << "chown needs root: " << std::strerror(errno);
  TimedRun r = Run({"apply"});
  EXPECT_EQ(r.exit_code, 9) << Describe(r);
  ExpectWarningsThenOneErrorLine(r);
  EXPECT_TRUE(Contains(r.err, "is owned by uid " + std::to_string(other)))
      << Describe(r);
  ASSERT_EQ(chown(LedgerDir().c_str(), geteuid(), static_cast<gid_t>(-1)), 0);
  EXPECT_FALSE(TableExists("b"));
  ExpectUntouched();
}

// Issue 39: a ledger its user cannot write was reported as "in use by
// another migledger process" (exit 5, after the lock timeout): it is a
// permission problem (exit 9). Run as an unprivileged user who owns the
// project, with the ledger's LOCK file, then the directory, read-only.
TEST_F(SqliteBadInputTest, UnwritableLedgerIsAPermissionErrorNotBusy) {
  ASSERT_EQ(geteuid(), 0u) << "the test switches to the user nobody";
  Migration("0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  const uid_t nobody = 65534;
  const gid_t nogroup = 65534;
  for (const auto& e : fs::recursive_directory_iterator(dir_.path()))
    ASSERT_EQ(lchown(e.path().c_str(), nobody, nogroup), 0) << e.path();
  ASSERT_EQ(chown(dir_.path().c_str(), nobody, nogroup), 0);
  const std::vector<std::string> as_nobody = {"runuser", "-u", "nobody", "--"};
  const std::string lock = LedgerDir() + "/LOCK";
  struct Case {
    std::string what, path;
    mode_t mode, restore;
  };
  for (const Case& c : {Case{"LOCK file read-only", lock, 0400, 0600},
                        Case{"directory read-only", LedgerDir(), 0500, 0700}}) {
    ASSERT_EQ(chmod(c.path.c_str(), c.mode), 0);
    TimedRun r = RunTimed({"apply"}, dir_.path(), env_, 60, as_nobody);
    EXPECT_EQ(r.exit_code, 9) << c.what << "\n" << Describe(r);
    ExpectOneErrorLine(r);
    EXPECT_TRUE(Contains(r.err, "permission denied")) << Describe(r);
    EXPECT_FALSE(Contains(r.err, "in use")) << Describe(r);
    ASSERT_EQ(chmod(c.path.c_str(), c.restore), 0);
  }
  TimedRun ok = RunTimed({"apply"}, dir_.path(), env_, 60, as_nobody);
  EXPECT_EQ(ok.exit_code, 0) << Describe(ok);
  EXPECT_TRUE(TableExists("b"));
}

// ---- identifiers and paths ------------------------------------------------

TEST(QuotingTest, SqliteTargetPathWithQuotesAndSpacesWorks) {
  TempDir dir;
  const std::string file = "it's a \"db\".db";
  WriteFile(dir / "migledger.toml",
            "default_target = \"dev\"\nlock_timeout_ms = 2000\n[targets.dev]\n"
            "url = \"sqlite:it's a \\\"db\\\".db\"\n");
  WriteFile(dir / "migrations/0001_a.up.sql", "CREATE TABLE a (id INTEGER);\n");
  WriteFile(dir / "migrations/0001_a.down.sql", "DROP TABLE a;\n");
  WriteFile(dir / "migrations/0002_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
  WriteFile(dir / "migrations/0002_b.down.sql", "DROP TABLE b;\n");
  auto run = [&](const std::vector<std::string>& args) {
    TimedRun r = RunTimed(args, dir.path());
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    return r;
  };
  run({"apply"});
  ASSERT_TRUE(fs::exists(dir / file));
  const std::string db = dir / file;
  EXPECT_EQ(
      SqliteQuery(db, "SELECT version FROM migledger_applied ORDER BY version"),
      (Rows{"0001", "0002"}));
  run({"status"});
  run({"validate"});
  run({"down", "--steps", "1"});
  EXPECT_EQ(
      SqliteQuery(db, "SELECT version FROM migledger_applied ORDER BY version"),
      Rows{"0001"});
  // The same database named on the command line.
  run({"apply", "--target", "sqlite:" + db});
  EXPECT_EQ(
      SqliteQuery(db, "SELECT version FROM migledger_applied ORDER BY version"),
      (Rows{"0001", "0002"}));
  run({"audit", "verify"});
  run({"validate"});
  TimedRun log = run({"audit", "log", "--format", "jsonl"});
  EXPECT_TRUE(Contains(log.out, "it's a \\\"db\\\".db")) << log.out;
}

}  // namespace
}  // namespace migledger::testing
