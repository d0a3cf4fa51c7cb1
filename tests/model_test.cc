// A model-based test of every answer the audit trail gives.
//
// A seeded random sequence of operations drives the real binary: new files
// (some failing, some no-transaction, random version spellings), apply, down,
// kills at named crash points, fixes of failing files, out-of-order files,
// baseline, edits of applied files and accept-checksum, and a second runner
// whose ledger starts empty (a fresh CI job) or is thrown away again. A small
// model written here, which never calls the applier's or the planner's code,
// tracks what must be true; after every operation the test compares it with
// `status --format json`, `validate`, `audit verify`, `audit log` (all events
// and each filter), `audit state --as-of` at earlier points (ledger sequences
// and times between events), the HTML report's summary, and the tables the
// migrations really created in the target.
//
// A failure prints the seed and the operation log. Rerun one case with
//   MIGLEDGER_MODEL_SEED=<seed> build/tests/migledger_model_tests
// and run longer (any seed, minutes) with
//   MIGLEDGER_MODEL_OPS=2000 build/tests/migledger_model_tests
// (PostgreSQL cases need the PGTEST_* variables: scripts/pg-throwaway run --);
// MIGLEDGER_MODEL_VERBOSE=1 prints the operations of a passing run too.
#include <google/protobuf/struct.pb.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/crash_points.h"
#include "tests/test_util.h"

namespace migledger::testing {
namespace {

namespace fs = std::filesystem;
namespace pb = google::protobuf;

// ---- the model's own idea of versions ---------------------------------------

// Versions are compared as numbers (leading zeros do not count): the model's
// versions are uint64 numbers; spellings are how the files write them.
uint64_t NumberOf(const std::string& spelling) {
  return std::stoull(spelling.empty() ? "0" : spelling);
}

struct FileModel {
  uint64_t number = 0;
  std::string spelling;  // as in the file name, e.g. "7", "0007", "000007"
  bool fails = false;    // the up file fails (its effect rolls back)
  bool no_transaction = false;
  int edits = 0;  // comment lines appended after it was applied
};

// What a target must hold, after every operation.
struct Model {
  std::map<uint64_t, FileModel> files;
  std::set<uint64_t> applied;
  std::set<uint64_t> failed;  // last attempt failed, not applied since
  // For each applied version, the revision of its file (FileModel::edits)
  // that ran or that an operator accepted; another revision is drift.
  std::map<uint64_t, int> applied_edits;
  // ... the revision that ran (or was baselined): what its marker row's
  // checksum records, also after an operator accepted another.
  std::map<uint64_t, int> ran_edits;

  std::set<uint64_t> Drift() const {
    std::set<uint64_t> out;
    for (uint64_t n : applied)
      if (applied_edits.at(n) != files.at(n).edits) out.insert(n);
    return out;
  }
  // The target's history at the end of each operation: its last target
  // sequence and the versions applied then.
  struct Boundary {
    uint64_t target_sequence;
    std::set<uint64_t> applied;
  };
  std::vector<Boundary> boundaries;

  uint64_t NewestApplied() const {
    return applied.empty() ? 0 : *applied.rbegin();
  }
  std::vector<uint64_t> Pending() const {
    std::vector<uint64_t> out;
    for (const auto& [n, f] : files)
      if (!applied.count(n)) out.push_back(n);
    return out;
  }
  bool HasOutOfOrder() const {
    for (uint64_t n : Pending())
      if (n < NewestApplied()) return true;
    return false;
  }
};

// ---- parsing the binary's answers -------------------------------------------

// The versions listed by `audit state` (a header line, a column header, then
// one row per applied version starting with the version).
std::set<uint64_t> ParseStateVersions(const std::string& out) {
  std::set<uint64_t> v;
  for (const std::string& line : Lines(out)) {
    if (line.empty() || !isdigit(static_cast<unsigned char>(line[0]))) continue;
    v.insert(NumberOf(line.substr(0, line.find(' '))));
  }
  return v;
}

std::string Join(const std::set<uint64_t>& s) {
  std::string out;
  for (uint64_t n : s) out += (out.empty() ? "" : ",") + std::to_string(n);
  return "{" + out + "}";
}

// ---- the target, as the test sees it without migledger ----------------------

class Target {
 public:
  virtual ~Target() = default;
  virtual std::string Uri() const = 0;
  // Versions whose table m_<n> exists: the migrations' real effect.
  virtual std::set<uint64_t> CreatedTables() = 0;
  virtual void Exec(const std::string& sql) = 0;
  virtual std::string Name() const = 0;
  // A backup of the database as it is now, and its restore in place (same
  // path or name: the same database, in an older state).
  virtual bool Exists() const = 0;
  virtual void Backup() = 0;
  virtual void Restore() = 0;
};

class SqliteTarget : public Target {
 public:
  explicit SqliteTarget(std::string path) : path_(std::move(path)) {}
  std::string Uri() const override { return "sqlite:" + path_; }
  std::string Name() const override { return "sqlite"; }
  std::set<uint64_t> CreatedTables() override {
    std::set<uint64_t> out;
    if (!fs::exists(path_)) return out;
    for (const std::string& name : SqliteQuery(
             path_, "SELECT name FROM sqlite_master WHERE type = 'table'")) {
      Add(name, &out);
    }
    return out;
  }
  void Exec(const std::string& sql) override {
    sqlite3* h = nullptr;
    int rc = sqlite3_open_v2(
        path_.c_str(), &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
    char* error = nullptr;
    if (rc == SQLITE_OK)
      rc = sqlite3_exec(h, sql.c_str(), nullptr, nullptr, &error);
    EXPECT_EQ(rc, SQLITE_OK)
        << sql << ": " << (error ? error : sqlite3_errmsg(h));
    sqlite3_free(error);
    sqlite3_close(h);
  }
  bool Exists() const override { return fs::exists(path_); }
  void Backup() override {
    fs::copy_file(path_, path_ + ".backup",
                  fs::copy_options::overwrite_existing);
  }
  void Restore() override {
    fs::remove(path_ + "-journal");
    fs::copy_file(path_ + ".backup", path_,
                  fs::copy_options::overwrite_existing);
  }

  static void Add(const std::string& name, std::set<uint64_t>* out) {
    if (name.rfind("m_", 0) != 0) return;
    std::string rest = name.substr(2);
    if (rest.empty() || rest.find_first_not_of("0123456789") != rest.npos)
      return;  // m_<n>_a is a no-transaction file's first table
    out->insert(std::stoull(rest));
  }

 private:
  std::string path_;
};

class PostgresTarget : public Target {
 public:
  explicit PostgresTarget(std::string db)
      : db_(std::move(db)), uri_(PgServer::CreateDatabase(db_)) {}
  ~PostgresTarget() override {
    PgServer::DropDatabase(db_);
    PgServer::DropDatabase(db_ + "_backup");
  }
  std::string Uri() const override { return uri_; }
  std::string Name() const override { return "postgres"; }
  std::set<uint64_t> CreatedTables() override {
    std::set<uint64_t> out;
    for (const std::string& name :
         PgServer::Query(uri_,
                         "SELECT tablename FROM pg_tables WHERE schemaname = "
                         "'public'")) {
      SqliteTarget::Add(name, &out);
    }
    return out;
  }
  void Exec(const std::string& sql) override { PgServer::Query(uri_, sql); }
  // CREATE DATABASE ... TEMPLATE: a copy with the same system identifier;
  // recreated under the same name it is the same database, restored.
  bool Exists() const override { return true; }
  void Backup() override {
    Admin("DROP DATABASE IF EXISTS " + db_ + "_backup WITH (FORCE)");
    Admin("CREATE DATABASE " + db_ + "_backup TEMPLATE " + db_);
  }
  void Restore() override {
    Admin("DROP DATABASE " + db_ + " WITH (FORCE)");
    Admin("CREATE DATABASE " + db_ + " TEMPLATE " + db_ + "_backup");
  }

 private:
  void Admin(const std::string& sql) {
    std::string admin = uri_;
    admin.replace(admin.find("/" + db_ + "?"), db_.size() + 2, "/postgres?");
    PgServer::Query(admin, sql);
  }

  std::string db_;
  std::string uri_;
};

// ---- the test ---------------------------------------------------------------

class ModelRun {
 public:
  ModelRun(uint64_t seed, Target* target, const std::string& root)
      : rng_(seed), seed_(seed), target_(target), root_(root) {
    runners_[0] = root_ + "/runner-a";
    runners_[1] = root_ + "/runner-b";
    for (const auto& dir : runners_) MakeRunner(dir);
    spelling_style_ = Pick(3);
  }

  // Runs `ops` random operations, checking every answer after each.
  void Run(int ops) {
    for (int i = 0; i < ops && !::testing::Test::HasFailure(); ++i) {
      Step();
      active_since_restore_[active_] = true;
      if (::testing::Test::HasFailure()) break;
      if (after_kill_ == KillState::kNone) {
        CheckEverything();
      } else {
        // Killed: the outcome is the next run's to find; the ledger must
        // verify and keep its shape now (if the run got as far as making
        // one).
        RunResult v = Cli({"audit", "verify"});
        if (v.exit_code == 2 && Contains(v.err, "no ledger at")) continue;
        EXPECT_EQ(v.exit_code, 0) << "after a kill: " << Describe(v);
        CheckLogShape(ReadLog({}));
      }
    }
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "seed " << seed_
                    << " (rerun: MIGLEDGER_MODEL_SEED=" << seed_
                    << "); operations:\n"
                    << log_;
    }
    if (std::getenv("MIGLEDGER_MODEL_VERBOSE")) std::cout << log_;
  }

 private:
  using Env = std::map<std::string, std::string>;

  size_t Pick(size_t n) {
    return std::uniform_int_distribution<size_t>(0, n - 1)(rng_);
  }
  bool Chance(int percent) { return Pick(100) < static_cast<size_t>(percent); }

  const std::string& Dir() const { return runners_[active_]; }

  void MakeRunner(const std::string& dir) {
    fs::create_directories(dir + "/migrations");
    WriteFile(dir + "/migledger.toml",
              "default_target = \"db\"\nlock_timeout_ms = 5000\n"
              "[targets.db]\nurl = \"" +
                  target_->Uri() + "\"\n");
  }

  RunResult Cli(const std::vector<std::string>& args, const Env& env = {}) {
    RunResult r = RunMigledger(args, Dir(), env);
    std::string line = "  [" + std::string(active_ ? "b" : "a") + "]";
    for (const auto& a : args) line += " " + a;
    for (const auto& [k, v] : env) line = k + "=" + v + " " + line;
    log_ += line + " -> " +
            (r.exit_code >= 0 ? "exit " + std::to_string(r.exit_code)
                              : "signal " + std::to_string(r.signal)) +
            "\n";
    return r;
  }

  // ---- files --------------------------------------------------------------

  // A version number as a file names it: timestamps in one project of three,
  // small numbers with random zero padding in the others.
  std::string Spell(uint64_t n) {
    static const int widths[] = {1, 4, 6};
    std::string s = std::to_string(n);
    int width = widths[Pick(3)];
    if (static_cast<int>(s.size()) < width) s.insert(0, width - s.size(), '0');
    return s;
  }

  uint64_t NumberOfSpelling(const FileModel& f) const {
    return NumberOf(f.spelling);
  }

  std::string UpSql(const FileModel& f) const {
    const std::string t = "m_" + std::to_string(NumberOfSpelling(f));
    std::string sql;
    if (f.no_transaction) {
      sql = "-- migledger:no-transaction\nCREATE TABLE IF NOT EXISTS " + t +
            "_a (x INTEGER);\n";
      if (f.fails) sql += "INSERT INTO no_such_table VALUES (1);\n";
      sql += "CREATE TABLE IF NOT EXISTS " + t + " (x INTEGER);\n";
    } else {
      sql = "CREATE TABLE " + t + " (x INTEGER);\nINSERT INTO " + t +
            " VALUES (1);\n";
      if (f.fails) sql += "INSERT INTO no_such_table VALUES (1);\n";
    }
    for (int i = 0; i < f.edits; ++i)
      sql += "-- edited " + std::to_string(i) + "\n";
    return sql;
  }

  std::string DownSql(const FileModel& f) const {
    const std::string t = "m_" + std::to_string(NumberOfSpelling(f));
    return "DROP TABLE IF EXISTS " + t + ";\nDROP TABLE IF EXISTS " + t +
           "_a;\n";
  }

  std::string FileBase(const FileModel& f) const {
    return f.spelling + "_m" + std::to_string(NumberOfSpelling(f));
  }

  // Every runner has its own checkout of the same migrations.
  void WriteMigration(const FileModel& f) {
    for (const auto& dir : runners_) {
      WriteFile(dir + "/migrations/" + FileBase(f) + ".up.sql", UpSql(f));
      WriteFile(dir + "/migrations/" + FileBase(f) + ".down.sql", DownSql(f));
    }
  }

  void RemoveMigration(const FileModel& f) {
    for (const auto& dir : runners_) {
      fs::remove(dir + "/migrations/" + FileBase(f) + ".up.sql");
      fs::remove(dir + "/migrations/" + FileBase(f) + ".down.sql");
    }
  }

  // ---- operations ---------------------------------------------------------

  void Step() {
    if (after_kill_ == KillState::kApply) return OpApply("after a kill");
    if (after_kill_ == KillState::kDown) return OpRecoverAfterDown();
    if (restored_) return OpAfterRestore();
    size_t roll = Pick(100);
    if (roll < 22) return OpNewFile();
    if (roll < 45) return OpApply("");
    if (roll < 51) return OpApplyKilled();
    if (roll < 55) return OpApplyKilledAnywhere();
    if (roll < 63) return OpDown(false);
    if (roll < 67) return OpDown(true);
    if (roll < 72) return OpFixFailing();
    if (roll < 77) return OpOutOfOrder();
    if (roll < 81) return OpBaseline();
    if (roll < 86) return OpEditApplied();
    if (roll < 90) return OpAcceptChecksum();
    if (roll < 93) return OpBackup();
    if (roll < 96) return OpRestore();
    return OpSwitchRunner();
  }

  void Note(const std::string& what) { log_ += what + "\n"; }

  void OpNewFile() {
    FileModel f;
    next_number_ += 1 + Pick(3);
    f.number = next_number_ * 10 + (spelling_style_ == 2 ? kTimestamp : 0);
    f.spelling = Spell(f.number);
    f.fails = Chance(15);
    f.no_transaction = Chance(25);
    Note("new file " + f.spelling + (f.fails ? " (fails)" : "") +
         (f.no_transaction ? " (no-transaction)" : ""));
    WriteMigration(f);
    model_.files[NumberOf(f.spelling)] = f;
  }

  // A file whose version lies below the newest applied one (a branch merged
  // late), with a free number between two others.
  void OpOutOfOrder() {
    uint64_t newest = model_.NewestApplied();
    uint64_t oldest = model_.files.empty() ? 0 : model_.files.begin()->first;
    if (newest < oldest + 2) return OpNewFile();
    uint64_t n = 0;
    for (int tries = 0; tries < 20 && n == 0; ++tries) {
      uint64_t candidate = oldest + 1 + Pick(newest - oldest - 1);
      if (!model_.files.count(candidate) && candidate % 10 != 0) n = candidate;
    }
    if (n == 0) return OpNewFile();
    FileModel f;
    f.number = n;
    f.spelling = Spell(n);
    f.no_transaction = Chance(20);
    Note("new out-of-order file " + f.spelling);
    WriteMigration(f);
    model_.files[NumberOf(f.spelling)] = f;
  }

  // The steps `apply` runs: pending files in version order up to the first
  // failing one; nothing when an out-of-order file is pending (refused).
  std::vector<uint64_t> ApplyPlan() const {
    std::vector<uint64_t> plan;
    for (uint64_t n : model_.Pending()) {
      plan.push_back(n);
      if (model_.files.at(n).fails) break;
    }
    return plan;
  }

  // When both a drift and an out-of-order file stand in the way, the test
  // never runs the command (either refusal would be right).
  bool TwoRefusals(bool allow_out_of_order) const {
    return !model_.Drift().empty() && model_.HasOutOfOrder() &&
           !allow_out_of_order;
  }

  int ExpectedApplyExit(bool allow_out_of_order) const {
    if (!model_.Drift().empty()) return 4;
    if (model_.HasOutOfOrder() && !allow_out_of_order) return 2;
    for (uint64_t n : ApplyPlan())
      if (model_.files.at(n).fails) return 3;
    return 0;
  }

  void ModelApply() {
    for (uint64_t n : ApplyPlan()) {
      if (model_.files.at(n).fails) {
        model_.failed.insert(n);
        break;
      }
      model_.applied.insert(n);
      model_.applied_edits[n] = model_.files.at(n).edits;
      model_.ran_edits[n] = model_.files.at(n).edits;
      model_.failed.erase(n);
    }
  }

  void OpApply(const std::string& why) {
    // After a kill the next apply takes the killed run's flags.
    bool allow = after_kill_ == KillState::kApply
                     ? killed_allow_
                     : model_.HasOutOfOrder() && Chance(50);
    if (TwoRefusals(allow)) allow = true;
    if (!why.empty()) Note("apply " + why);
    std::vector<std::string> args = {"apply"};
    if (allow) args.push_back("--allow-out-of-order");
    int expected = ExpectedApplyExit(allow);
    RunResult r = Cli(args);
    ASSERT_EQ(r.exit_code, expected) << Describe(r);
    if (expected == 0 || expected == 3) ModelApply();
    if (expected != 0) {
      int errors = 0;
      for (const std::string& line : Lines(r.err))
        errors += line.rfind("error: ", 0) == 0;
      ASSERT_EQ(errors, 1) << "one error line: " << r.err;
    }
    after_kill_ = KillState::kNone;
    RecordBoundary();
  }

  // apply killed at a random crash point (or not, when the point is not
  // reached); the next operation is an apply, which must finish the job.
  void OpApplyKilled() {
    if (!CrashPointsEnabled()) return OpApply("");
    std::vector<std::string> points;
    for (const char* p : kCrashPoints) {
      std::string name = p;
      if (name.rfind("apply.", 0) == 0 || name.rfind("mirror.", 0) == 0)
        points.push_back(name);
    }
    std::string at =
        points[Pick(points.size())] + ":" + std::to_string(1 + Pick(3));
    bool allow = model_.HasOutOfOrder() && Chance(50);
    if (TwoRefusals(allow)) allow = true;
    std::vector<std::string> args = {"apply"};
    if (allow) args.push_back("--allow-out-of-order");
    int expected = ExpectedApplyExit(allow);
    RunResult r = Cli(args, {{"MIGLEDGER_CRASH_AT", at}});
    if (r.signal == 9) {
      // The run's outcome is up to the next apply; the ledger verifies now.
      RunResult v = Cli({"audit", "verify"});
      ASSERT_EQ(v.exit_code, 0)
          << "after a kill at " << at << ": " << Describe(v);
      after_kill_ = KillState::kApply;
      killed_allow_ = allow;
      return;
    }
    ASSERT_EQ(r.exit_code, expected) << Describe(r);
    if (expected == 0 || expected == 3) ModelApply();
    RecordBoundary();
  }

  // apply killed by SIGKILL after a random delay, wherever it is then.
  void OpApplyKilledAnywhere() {
    bool allow = model_.HasOutOfOrder() && Chance(50);
    if (TwoRefusals(allow)) allow = true;
    std::vector<std::string> args = {"apply"};
    if (allow) args.push_back("--allow-out-of-order");
    int delay_ms = static_cast<int>(Pick(120));
    pid_t pid = StartMigledger(args, Dir());
    ASSERT_GT(pid, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    kill(pid, SIGKILL);
    int status = 0;
    ASSERT_TRUE(WaitForExit(pid, 60, &status));
    Note("  [" + std::string(active_ ? "b" : "a") + "] apply" +
         (allow ? " --allow-out-of-order" : "") + " killed after " +
         std::to_string(delay_ms) + " ms");
    if (WIFSIGNALED(status)) {
      after_kill_ = KillState::kApply;
      killed_allow_ = allow;
      return;
    }
    int expected = ExpectedApplyExit(allow);
    ASSERT_EQ(WEXITSTATUS(status), expected);
    if (expected == 0 || expected == 3) ModelApply();
    RecordBoundary();
  }

  void OpDown(bool killed) {
    if (model_.applied.empty()) return OpApply("");
    size_t steps = 1 + Pick(std::min<size_t>(3, model_.applied.size()));
    Env env;
    if (killed && CrashPointsEnabled()) {
      static const char* points[] = {
          "apply.after_step_started", "apply.before_commit",
          "apply.after_commit", "apply.after_outcome", "mirror.before_commit"};
      env["MIGLEDGER_CRASH_AT"] =
          std::string(points[Pick(5)]) + ":" + std::to_string(1 + Pick(2));
    }
    RunResult r = Cli({"down", "--steps", std::to_string(steps)}, env);
    if (r.signal == 9) {
      after_kill_ = KillState::kDown;
      return;
    }
    int expected = model_.Drift().empty() ? 0 : 4;
    ASSERT_EQ(r.exit_code, expected) << Describe(r);
    if (expected == 0) {
      for (size_t i = 0; i < steps; ++i) {
        uint64_t newest = model_.NewestApplied();
        model_.applied.erase(newest);
        model_.applied_edits.erase(newest);
      }
    }
    RecordBoundary();
  }

  // After a killed down, `recover` settles each step from the target; the
  // model learns what happened from the tables the down files dropped.
  void OpRecoverAfterDown() {
    RunResult r = Cli({"recover"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    std::set<uint64_t> tables = target_->CreatedTables();
    std::set<uint64_t> still;
    for (uint64_t n : model_.applied)
      if (tables.count(n)) still.insert(n);
    for (auto it = model_.applied_edits.begin();
         it != model_.applied_edits.end();) {
      it = still.count(it->first) ? std::next(it)
                                  : model_.applied_edits.erase(it);
    }
    // A down step drops the table: gone means reverted, but only the newest
    // ones can have been reverted, in order.
    model_.applied = still;
    after_kill_ = KillState::kNone;
    RecordBoundary();
  }

  void OpFixFailing() {
    for (auto& [n, f] : model_.files) {
      if (f.fails && !model_.applied.count(n)) {
        f.fails = false;
        // The failure was of another file: status shows the new one pending.
        model_.failed.erase(n);
        Note("fix file " + f.spelling);
        WriteMigration(f);
        return;
      }
    }
    return OpNewFile();
  }

  // Records that the database already has the migrations up to a pending
  // version V: the test runs their SQL itself first, as another tool did.
  void OpBaseline() {
    if (!model_.Drift().empty() || model_.HasOutOfOrder()) return OpApply("");
    std::vector<uint64_t> candidates;
    for (uint64_t n : model_.Pending()) {
      if (model_.files.at(n).fails) break;
      candidates.push_back(n);
    }
    if (candidates.empty()) return OpNewFile();
    uint64_t v = candidates[Pick(candidates.size())];
    for (uint64_t n : candidates) {
      if (n > v) break;
      target_->Exec("CREATE TABLE IF NOT EXISTS m_" + std::to_string(n) +
                    " (x INTEGER)");
    }
    RunResult r = Cli({"baseline", "--version", model_.files.at(v).spelling,
                       "--reason", "model baseline"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    for (uint64_t n : candidates) {
      if (n > v) break;
      model_.applied.insert(n);
      model_.applied_edits[n] = model_.files.at(n).edits;
      model_.ran_edits[n] = model_.files.at(n).edits;
      model_.failed.erase(n);
    }
    RecordBoundary();
  }

  void OpEditApplied() {
    if (model_.applied.empty()) return OpNewFile();
    auto it = model_.applied.begin();
    std::advance(it, Pick(model_.applied.size()));
    FileModel& f = model_.files.at(*it);
    f.edits++;
    Note("edit applied file " + f.spelling);
    WriteMigration(f);
  }

  void OpAcceptChecksum() {
    if (model_.Drift().empty()) return OpEditApplied();
    uint64_t n = *model_.Drift().begin();
    RunResult r =
        Cli({"accept-checksum", "--version", model_.files.at(n).spelling,
             "--reason", "model accepts the edit"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    model_.applied_edits[n] = model_.files.at(n).edits;
    RecordBoundary();
  }

  void OpBackup() {
    if (!target_->Exists()) return OpNewFile();  // nothing to back up yet
    target_->Backup();
    backup_ = model_.applied;
    backup_head_ = LedgerHead(active_);
    backup_edits_ = model_.ran_edits;
    Note("backup of the target");
  }

  // The target goes back to the backup. When that changes which versions it
  // holds, every command that changes the target refuses (drift) until an
  // operator runs `resolve --restored`.
  void OpRestore() {
    if (!backup_) return OpBackup();
    if (!model_.Drift().empty()) return OpAcceptChecksum();
    uint64_t heads[2] = {LedgerHead(0), LedgerHead(1)};
    target_->Restore();
    Note("target restored from its backup " + Join(*backup_));
    if (*backup_ != model_.applied) restored_ = true;
    // The events written since the backup are gone from the target; the
    // ledgers that hold them push them back when they write next, unless
    // another ledger continues the target's history first.
    for (int r = 0; r < 2; ++r) {
      if (heads[r] > backup_head_) {
        may_fork_.insert(r);
        active_since_restore_[0] = active_since_restore_[1] = false;
      }
    }
  }

  // The target's last sequence as the ledger of runner `r` knows it.
  uint64_t LedgerHead(int r) {
    uint64_t last = 0;
    if (!fs::exists(runners_[r] + "/.migledger")) return last;
    for (const auto& e : ReadLog({}, runners_[r]))
      last = std::max(last, e.target_sequence);
    return last;
  }

  // Back on a runner whose ledger holds events a restore took from the
  // target, after the other runner has run: the other may have continued
  // the target's history without them. Then (and only then) every command
  // refuses, naming the fork, and the operator moves the ledger aside as
  // the refusal says; a new ledger pulls the target's history.
  void CheckForkAfterRestore() {
    if (!may_fork_.count(active_) || !active_since_restore_[1 - active_])
      return;
    RunResult st = Cli({"status"});
    if (st.exit_code == 0) return;
    ASSERT_EQ(st.exit_code, 4) << Describe(st);
    ASSERT_TRUE(Contains(st.err, "forks from the local ledger") &&
                Contains(st.err, "restored from an older backup"))
        << Describe(st);
    fs::rename(Dir() + "/.migledger",
               Dir() + "/.migledger-forked-" + std::to_string(++forked_));
    may_fork_.erase(active_);
    Note(
        "runner's ledger forked from the target after the restore: moved "
        "aside");
  }

  void OpAfterRestore() {
    if (Chance(40)) {
      RunResult r = Cli({"apply"});
      ASSERT_EQ(r.exit_code, 4) << Describe(r);
      ASSERT_TRUE(Contains(r.err, "resolve --restored")) << Describe(r);
      return;
    }
    RunResult r =
        Cli({"resolve", "--restored", "--reason", "restored from a backup"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    // A version the restore brought back carries the revision that ran
    // then (its marker row's checksum), not one accepted later; one applied
    // on both sides keeps the ledger's record, accepted checksums included.
    std::map<uint64_t, int> edits;
    for (uint64_t n : *backup_) {
      edits[n] = model_.applied.count(n) ? model_.applied_edits.at(n)
                                         : backup_edits_.at(n);
    }
    model_.applied = *backup_;
    model_.applied_edits = edits;
    for (uint64_t n : *backup_) model_.ran_edits[n] = backup_edits_.at(n);
    for (uint64_t n : model_.applied) model_.failed.erase(n);
    restored_ = false;
    RecordBoundary();
  }

  // Moves to the other runner; the second one sometimes starts again with an
  // empty ledger, as a fresh CI job does.
  void OpSwitchRunner() {
    active_ = 1 - active_;
    if (active_ == 1 && Chance(40)) {
      fs::remove_all(Dir() + "/.migledger");
      may_fork_.erase(1);
      Note("runner b starts with an empty ledger");
    }
    Note("switch to runner " + std::string(active_ ? "b" : "a"));
    CheckForkAfterRestore();
  }

  // The target's last sequence now, as the model's boundary.
  void RecordBoundary() {
    std::vector<LogEvent> events = ReadLog({});
    uint64_t last = 0;
    for (const auto& e : events) last = std::max(last, e.target_sequence);
    if (!model_.boundaries.empty() &&
        model_.boundaries.back().target_sequence == last) {
      model_.boundaries.back().applied = model_.applied;
      return;
    }
    model_.boundaries.push_back({last, model_.applied});
  }

  // ---- checks -------------------------------------------------------------

  std::vector<LogEvent> ReadLog(const std::vector<std::string>& filters,
                                const std::string& dir = "") {
    return ReadAuditLog(dir.empty() ? Dir() : dir, filters);
  }

  static std::vector<uint64_t> Sequences(const std::vector<LogEvent>& es) {
    std::vector<uint64_t> out;
    for (const auto& e : es) out.push_back(e.sequence);
    return out;
  }

  // Restored, not yet resolved: the target holds the backup's versions and
  // every answer names the drift.
  void CheckRestored() {
    std::set<uint64_t> tables = target_->CreatedTables();
    std::set<uint64_t> known;
    for (uint64_t n : tables)
      if (model_.files.count(n)) known.insert(n);
    ASSERT_EQ(Join(known), Join(*backup_));
    RunResult st = Cli({"status", "--format", "json"});
    ASSERT_EQ(st.exit_code, 0) << Describe(st);
    EXPECT_TRUE(Contains(st.out, "\"drift\":[{")) << st.out;
    RunResult v = Cli({"validate"});
    EXPECT_EQ(v.exit_code, 4) << Describe(v);
    RunResult p = Cli({"plan"});
    EXPECT_EQ(p.exit_code, 4) << Describe(p);
    RunResult a = Cli({"audit", "verify"});
    EXPECT_EQ(a.exit_code, 0) << Describe(a);
  }

  void CheckEverything() {
    if (restored_) return CheckRestored();
    CheckTargetTables();
    CheckStatus();
    if (!fs::exists(Dir() + "/.migledger")) {
      // A runner that has only read (status) keeps no ledger of its own:
      // the audit commands say so.
      RunResult a = Cli({"audit", "verify"});
      EXPECT_EQ(a.exit_code, 2) << Describe(a);
      EXPECT_TRUE(Contains(a.err, "no ledger")) << Describe(a);
      return;
    }
    CheckValidateAndVerify();
    std::vector<LogEvent> all = ReadLog({});
    CheckLogShape(all);
    CheckLogFilters(all);
    CheckStateAsOf(all);
    if (++checks_ % 8 == 0) CheckHtmlSummary();
  }

  // The migrations' real effect: a table per applied version (baselined
  // ones were created by the test itself), never one for a pending version.
  void CheckTargetTables() {
    std::set<uint64_t> tables = target_->CreatedTables();
    std::set<uint64_t> applied_tables;
    for (uint64_t n : tables)
      if (model_.files.count(n)) applied_tables.insert(n);
    ASSERT_EQ(Join(applied_tables), Join(model_.applied))
        << "the target's tables disagree with the model";
  }

  void CheckStatus() {
    RunResult r = Cli({"status", "--format", "json"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    auto s = ParseJson(r.out);
    ASSERT_TRUE(s.has_value()) << r.out;
    std::map<uint64_t, std::string> states;
    auto rows = s->fields().find("migrations");
    ASSERT_NE(rows, s->fields().end()) << r.out;
    for (const auto& row : rows->second.list_value().values()) {
      const pb::Struct& m = row.struct_value();
      uint64_t n = NumberOf(JsonField(m, "version"));
      EXPECT_EQ(states.count(n), 0u) << "listed twice: " << n;
      states[n] = JsonField(m, "state");
    }
    for (const auto& [n, f] : model_.files) {
      std::string want = model_.applied.count(n)  ? "applied"
                         : model_.failed.count(n) ? "failed"
                                                  : "pending";
      EXPECT_EQ(states[n], want) << "status of " << f.spelling << "\n" << r.out;
    }
    EXPECT_EQ(states.size(), model_.files.size()) << r.out;
    auto drift = s->fields().find("drift");
    size_t drift_items = drift == s->fields().end()
                             ? 0
                             : drift->second.list_value().values_size();
    EXPECT_EQ(drift_items > 0, !model_.Drift().empty()) << r.out;
  }

  void CheckValidateAndVerify() {
    RunResult v = Cli({"validate"});
    EXPECT_EQ(v.exit_code, model_.Drift().empty() ? 0 : 4) << Describe(v);
    RunResult a = Cli({"audit", "verify"});
    EXPECT_EQ(a.exit_code, 0) << Describe(a);
    if (TwoRefusals(false)) return;
    RunResult p = Cli({"plan"});
    int want = ExpectedApplyExit(false);
    EXPECT_EQ(p.exit_code, want == 3 ? 0 : want) << Describe(p);
  }

  // Ledger sequences 1..n, the target's own sequences 1..m, times never
  // going backwards (one clock in this test).
  void CheckLogShape(const std::vector<LogEvent>& all) {
    uint64_t target_seq = 0;
    for (size_t i = 0; i < all.size(); ++i) {
      ASSERT_EQ(all[i].sequence, i + 1) << "ledger sequences have a gap";
      if (all[i].target_sequence == 0) continue;
      ASSERT_EQ(all[i].target_sequence, target_seq + 1)
          << "target sequences have a gap at ledger sequence "
          << all[i].sequence;
      target_seq = all[i].target_sequence;
    }
  }

  void ExpectFilter(const std::vector<std::string>& filter,
                    const std::vector<LogEvent>& expected) {
    std::vector<LogEvent> got = ReadLog(filter);
    std::string what;
    for (const auto& f : filter) what += f + " ";
    EXPECT_EQ(Sequences(got), Sequences(expected)) << "audit log " << what;
  }

  void CheckLogFilters(const std::vector<LogEvent>& all) {
    if (all.empty()) return;
    const LogEvent& probe = all[Pick(all.size())];
    // --type
    std::vector<LogEvent> want;
    for (const auto& e : all)
      if (e.type == probe.type) want.push_back(e);
    ExpectFilter({"--type", probe.type}, want);
    // --run
    want.clear();
    for (const auto& e : all)
      if (e.run_id == probe.run_id) want.push_back(e);
    if (!probe.run_id.empty()) ExpectFilter({"--run", probe.run_id}, want);
    // --version, spelled another way than the files do (numeric match)
    if (!model_.files.empty()) {
      auto it = model_.files.begin();
      std::advance(it, Pick(model_.files.size()));
      want.clear();
      for (const auto& e : all)
        if (!e.version.empty() && NumberOf(e.version) == it->first)
          want.push_back(e);
      std::string spelled = "00" + std::to_string(it->first);
      ExpectFilter({"--version", spelled}, want);
    }
    // --since (inclusive) / --until (exclusive) between two recorded times
    const LogEvent* a = &all[Pick(all.size())];
    const LogEvent* b = &all[Pick(all.size())];
    if (b->sort_time < a->sort_time) std::swap(a, b);
    want.clear();
    for (const auto& e : all)
      if (e.sort_time >= a->sort_time && e.sort_time < b->sort_time)
        want.push_back(e);
    ExpectFilter({"--since", a->time, "--until", b->time}, want);
  }

  // `audit state --as-of` at the end of earlier operations (by the ledger
  // sequence of the boundary's last event, and by its time when the next
  // event came later), and now.
  void CheckStateAsOf(const std::vector<LogEvent>& all) {
    std::map<uint64_t, size_t> by_target_seq;  // target seq -> index in all
    for (size_t i = 0; i < all.size(); ++i)
      if (all[i].target_sequence) by_target_seq[all[i].target_sequence] = i;
    std::vector<const Model::Boundary*> probes;
    if (!model_.boundaries.empty()) probes.push_back(&model_.boundaries.back());
    for (int k = 0; k < 3 && !model_.boundaries.empty(); ++k)
      probes.push_back(&model_.boundaries[Pick(model_.boundaries.size())]);
    for (const Model::Boundary* b : probes) {
      if (b->target_sequence == 0) continue;
      auto it = by_target_seq.find(b->target_sequence);
      if (it == by_target_seq.end()) continue;  // not pulled by this runner
      const LogEvent& e = all[it->second];
      RunResult r =
          Cli({"audit", "state", "--as-of", std::to_string(e.sequence)});
      ASSERT_EQ(r.exit_code, 0) << Describe(r);
      EXPECT_EQ(Join(ParseStateVersions(r.out)), Join(b->applied))
          << "audit state --as-of " << e.sequence << "\n"
          << r.out;
      bool next_is_later = it->second + 1 >= all.size() ||
                           all[it->second + 1].sort_time > e.sort_time;
      bool same_time_before =
          it->second > 0 && all[it->second - 1].sort_time == e.sort_time;
      if (next_is_later && !same_time_before) {
        RunResult t = Cli({"audit", "state", "--as-of", e.time});
        ASSERT_EQ(t.exit_code, 0) << Describe(t);
        EXPECT_EQ(Join(ParseStateVersions(t.out)), Join(b->applied))
            << "audit state --as-of " << e.time << "\n"
            << t.out;
      }
    }
    RunResult now = Cli({"audit", "state"});
    ASSERT_EQ(now.exit_code, 0) << Describe(now);
    EXPECT_EQ(Join(ParseStateVersions(now.out)), Join(model_.applied))
        << now.out;
    if (!model_.applied.empty()) {
      const std::string& newest =
          model_.files.at(model_.NewestApplied()).spelling;
      EXPECT_TRUE(Contains(Lines(now.out)[0], "schema version " + newest))
          << now.out;
    }
  }

  void CheckHtmlSummary() {
    std::string out = Dir() + "/report.html";
    RunResult r = Cli({"audit", "export", "--format", "html", "--out", out});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    std::string html = ReadFile(out);
    if (!model_.applied.empty()) {
      const std::string& newest =
          model_.files.at(model_.NewestApplied()).spelling;
      EXPECT_TRUE(Contains(html, "latest <code>" + newest + "</code>"))
          << "the HTML summary's latest version is not " << newest;
    }
  }

  enum class KillState { kNone, kApply, kDown };
  static constexpr uint64_t kTimestamp = 20261207120000ULL;

  std::mt19937_64 rng_;
  uint64_t seed_;
  Target* target_;
  std::string root_;
  std::string runners_[2];
  int active_ = 0;
  size_t spelling_style_ = 0;
  uint64_t next_number_ = 0;
  Model model_;
  KillState after_kill_ = KillState::kNone;
  bool killed_allow_ = false;
  std::optional<std::set<uint64_t>> backup_;  // applied when backed up
  std::map<uint64_t, int> backup_edits_;      // ran_edits when backed up
  bool restored_ = false;     // restored to a state the ledger has not accepted
  uint64_t backup_head_ = 0;  // the target's last sequence when backed up
  std::set<int> may_fork_;    // runners holding events a restore took away
  bool active_since_restore_[2] = {true, true};
  int forked_ = 0;
  int checks_ = 0;
  std::string log_;
};

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

// A kept seed runs itself; the random case takes MIGLEDGER_MODEL_SEED
// (scripts/test derives one from the commit, so a CI run can be repeated)
// or a new one.
uint64_t SeedFor(uint64_t fixed) {
  if (fixed) return fixed;
  if (const char* v = std::getenv("MIGLEDGER_MODEL_SEED"); v && *v)
    return std::stoull(v);
  return std::random_device{}() * 0x9E3779B97F4A7C15ULL ^
         std::random_device{}();
}

std::unique_ptr<Target> MakeTarget(const std::string& kind,
                                   const std::string& dir, uint64_t seed) {
  if (kind == "sqlite") return std::make_unique<SqliteTarget>(dir + "/app.db");
  return std::make_unique<PostgresTarget>("model_" +
                                          std::to_string(seed % 1000000));
}

void RunCase(const std::string& kind, uint64_t fixed_seed, int ops) {
  if (kind == "postgres" && !PgServer::Available())
    GTEST_SKIP() << "PGTEST_URI not set (scripts/pg-throwaway run --)";
  uint64_t seed = SeedFor(fixed_seed);
  std::cout << "model test on " << kind << ", seed " << seed
            << " (MIGLEDGER_MODEL_SEED=" << seed << " reruns it)\n";
  TempDir dir;
  auto target = MakeTarget(kind, dir.path(), seed);
  ModelRun run(seed, target.get(), dir.path());
  run.Run(ops);
}

class ModelTest : public ::testing::TestWithParam<std::string> {};

// A new seed each run (printed).
TEST_P(ModelTest, RandomOperationsAgreeWithTheModel) {
  RunCase(GetParam(), 0,
          EnvInt("MIGLEDGER_MODEL_OPS", GetParam() == "sqlite" ? 200 : 100));
}

// Seeds that once found a defect, kept as regression cases:
// 8890899381505717228 `plan` exited 0 on a drift that `apply` refused;
// 5647277479309145263 `audit state` ordered versions as text (0010 < 0009);
// 4061353303846413501 (200 operations) a restore took events from the
// target, another runner continued its history, and the first runner's
// refusal said its events had never reached the target;
// 746321162210679848 (200 operations) a restore brought back a version whose
// edit had been accepted before the backup: its marker row still names the
// revision that ran, so the edit is drift again.
// The long ones run on SQLite only (the suite's time; the model is the same).
TEST_P(ModelTest, KeptSeedsAgreeWithTheModel) {
  const std::pair<uint64_t, int> kept[] = {{8890899381505717228ULL, 30},
                                           {5647277479309145263ULL, 30},
                                           {4061353303846413501ULL, 200},
                                           {746321162210679848ULL, 200}};
  for (const auto& [seed, ops] : kept) {
    if (ops > 30 && GetParam() != "sqlite") continue;
    // MIGLEDGER_MODEL_OPS caps them too (scripts/test's sanitizer pass).
    RunCase(GetParam(), seed,
            std::min(ops, EnvInt("MIGLEDGER_MODEL_OPS", ops)));
    if (::testing::Test::HasFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, ModelTest,
                         ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace migledger::testing
