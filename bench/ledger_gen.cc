// migledger_ledger_gen: writes a synthetic but realistic ledger for the audit
// benchmarks (bench/audit_bench), and optionally the same events as a SQLite
// table and as raw concatenated bytes.
//
//   migledger_ledger_gen --events N --ledger DIR [--sqlite FILE] [--raw FILE]
//                        [--seed S]
//
// The ledger is project-less (Ledger::Open with create_if_missing) and must
// not exist yet. Events come in runs, as `migledger apply` writes them:
//   run_started (with its plan)
//   per step: step_started, [statement_applied per statement for a
//             no-transaction step], step_applied | step_failed
//   run_finished (succeeded, or failed after a step_failed)
// over three targets (prod / staging on PostgreSQL, dev on SQLite), a few
// actors (people and CI), versions "0001".."9999" per target (wrapping), and
// strictly increasing times. Everything comes from a seeded PRNG, so the same
// arguments give the same event contents (the ledger id is random).
//
// Appends are unsynced, with one Sync at the end; the ledger is then closed
// and reopened once as a writer so that the WAL is flushed into tables.
//
// --sqlite FILE (replaced if it exists) gets, in one transaction:
//   events(sequence INTEGER PRIMARY KEY, time TEXT, target TEXT, type TEXT,
//          version TEXT, run_id TEXT, os_user TEXT, host TEXT, body BLOB)
// where body is the exact stored event bytes, plus an index on version, and
//   events_full(sequence INTEGER PRIMARY KEY, type, leaf_hash, <one column
//               per field of the event's JSON>)
// which holds every field `audit log --format jsonl` prints, one column each
// (NULL where the JSON leaves the field out; a run's plan, a list of
// messages, as JSON text): the fuller sqlite3 baseline of audit_bench.
// --raw FILE gets every event's bytes concatenated, in ledger order.
//
// Prints key=value lines on stdout: events, event_bytes, seconds, and a
// count per event type.
#include <sqlite3.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/sha256.h"
#include "common/time_util.h"
#include "ledger/ledger.h"
#include "ledger/merkle.h"
#include "migledger/v1/event.pb.h"

namespace {

using migledger::v1::Event;

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "migledger_ledger_gen: %s\n", msg.c_str());
  std::exit(1);
}

void Usage() {
  std::fprintf(
      stderr,
      "usage: migledger_ledger_gen --events N --ledger DIR [--sqlite FILE] "
      "[--raw FILE] [--seed S]\n");
  std::exit(2);
}

// ---- SQLite ---------------------------------------------------------------

// The columns of events_full after sequence, in the order the JSON prints the
// fields (envelope, then the union of the generated bodies' fields).
struct FullColumn {
  const char* name;
  const char* type;
};
const FullColumn kFullColumns[] = {
    {"type", "TEXT"},
    {"leaf_hash", "TEXT"},
    {"target_sequence", "INTEGER"},
    {"time", "TEXT"},
    {"run_id", "TEXT"},
    {"actor_os_user", "TEXT"},
    {"actor_host", "TEXT"},
    {"actor_pid", "INTEGER"},
    {"actor_tool_version", "TEXT"},
    {"actor_ci_job", "TEXT"},
    {"actor_git_commit", "TEXT"},
    {"target_name", "TEXT"},
    {"target_kind", "TEXT"},
    {"target_database_id", "TEXT"},
    {"target_database_name", "TEXT"},
    {"target_redacted_uri", "TEXT"},
    {"command", "TEXT"},
    {"reason", "TEXT"},
    {"plan", "TEXT"},
    {"version", "TEXT"},
    {"slug", "TEXT"},
    {"direction", "TEXT"},
    {"attempt_id", "TEXT"},
    {"checksum", "TEXT"},
    {"checksum_algorithm", "TEXT"},
    {"sql_blob_sha256", "TEXT"},
    {"tx_mode", "TEXT"},
    {"statement_count", "INTEGER"},
    {"file", "TEXT"},
    {"statement_index", "INTEGER"},
    {"statement_sha256", "TEXT"},
    {"duration_micros", "INTEGER"},
    {"rows_affected", "INTEGER"},
    {"sqlstate", "TEXT"},
    {"native_code", "INTEGER"},
    {"message", "TEXT"},
    {"detail", "TEXT"},
    {"hint", "TEXT"},
    {"file_line", "INTEGER"},
    {"rolled_back", "INTEGER"},
    {"outcome", "TEXT"},
    {"steps_done", "INTEGER"},
};

class SqliteOut {
 public:
  explicit SqliteOut(const std::string& path) {
    std::error_code ec;
    std::filesystem::remove(path, ec);
    std::filesystem::remove(path + "-journal", ec);
    std::filesystem::remove(path + "-wal", ec);
    if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) {
      Die("cannot open " + path + ": " + sqlite3_errmsg(db_));
    }
    // A scratch file written once: no journal, no fsync.
    Exec("PRAGMA journal_mode=OFF");
    Exec("PRAGMA synchronous=OFF");
    Exec("PRAGMA cache_size=-262144");
    Exec(
        "CREATE TABLE events(sequence INTEGER PRIMARY KEY, time TEXT, target "
        "TEXT, "
        "type TEXT, version TEXT, run_id TEXT, os_user TEXT, host TEXT, body "
        "BLOB)");
    std::string full = "CREATE TABLE events_full(sequence INTEGER PRIMARY KEY";
    std::string placeholders = "?";
    for (const FullColumn& c : kFullColumns) {
      full += std::string(", ") + c.name + " " + c.type;
      placeholders += ",?";
    }
    Exec((full + ")").c_str());
    Exec("BEGIN");
    if (sqlite3_prepare_v2(db_, "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)",
                           -1, &insert_, nullptr) != SQLITE_OK) {
      Die(std::string("prepare: ") + sqlite3_errmsg(db_));
    }
    const std::string insert_full =
        "INSERT INTO events_full VALUES (" + placeholders + ")";
    if (sqlite3_prepare_v2(db_, insert_full.c_str(), -1, &insert_full_,
                           nullptr) != SQLITE_OK) {
      Die(std::string("prepare: ") + sqlite3_errmsg(db_));
    }
  }
  ~SqliteOut() {
    sqlite3_finalize(insert_);
    sqlite3_finalize(insert_full_);
    sqlite3_close(db_);
  }

  void Add(uint64_t seq, const std::string& time, const std::string& target,
           const char* type, const std::string& version, const Event& e,
           const std::string& bytes) {
    sqlite3_bind_int64(insert_, 1, static_cast<sqlite3_int64>(seq));
    BindText(2, time);
    BindText(3, target);
    sqlite3_bind_text(insert_, 4, type, -1, SQLITE_STATIC);
    if (version.empty()) {
      sqlite3_bind_null(insert_, 5);
    } else {
      BindText(5, version);
    }
    BindText(6, e.run_id());
    BindText(7, e.actor().os_user());
    BindText(8, e.actor().host());
    sqlite3_bind_blob(insert_, 9, bytes.data(), static_cast<int>(bytes.size()),
                      SQLITE_STATIC);
    if (sqlite3_step(insert_) != SQLITE_DONE) {
      Die(std::string("insert: ") + sqlite3_errmsg(db_));
    }
    sqlite3_reset(insert_);
    AddFull(seq, type, e, bytes);
  }

  // One row of events_full: the fields the event's JSON prints, each in its
  // column (text as text, integers as integers, enums by name).
  void AddFull(uint64_t seq, const char* type, const Event& e,
               const std::string& bytes) {
    sqlite3_stmt* st = insert_full_;
    sqlite3_clear_bindings(st);  // NULL: a field the JSON leaves out
    auto column = [](const char* name) {
      for (size_t i = 0; i < std::size(kFullColumns); ++i) {
        if (std::strcmp(kFullColumns[i].name, name) == 0)
          return static_cast<int>(i) + 2;
      }
      Die(std::string("no column ") + name);
    };
    auto text = [&](const char* name, const std::string& v) {
      if (!v.empty()) {
        sqlite3_bind_text(st, column(name), v.data(),
                          static_cast<int>(v.size()), SQLITE_TRANSIENT);
      }
    };
    auto integer = [&](const char* name, int64_t v) {
      if (v != 0) sqlite3_bind_int64(st, column(name), v);
    };
    auto name_of = [&](const char* name,
                       const google::protobuf::EnumDescriptor* d, int v) {
      if (v != 0) text(name, d->FindValueByNumber(v)->name());
    };
    sqlite3_bind_int64(st, 1, static_cast<sqlite3_int64>(seq));
    text("type", type);
    text("leaf_hash", migledger::ToHex(migledger::MerkleLeafHash(bytes)));
    integer("target_sequence", static_cast<int64_t>(e.target_sequence()));
    text("time", migledger::FormatRfc3339(e.time().seconds() * 1000000 +
                                          e.time().nanos() / 1000));
    text("run_id", e.run_id());
    const auto& a = e.actor();
    text("actor_os_user", a.os_user());
    text("actor_host", a.host());
    integer("actor_pid", a.pid());
    text("actor_tool_version", a.tool_version());
    text("actor_ci_job", a.ci_job());
    text("actor_git_commit", a.git_commit());
    const auto& t = e.target();
    text("target_name", t.name());
    text("target_kind", t.kind());
    text("target_database_id", t.database_id());
    text("target_database_name", t.database_name());
    text("target_redacted_uri", t.redacted_uri());
    const auto* direction = migledger::v1::Direction_descriptor();
    const auto* tx_mode = migledger::v1::TxMode_descriptor();
    switch (e.body_case()) {
      case Event::kRunStarted: {
        const auto& r = e.run_started();
        text("command", r.command());
        text("reason", r.reason());
        std::string plan;
        for (const auto& p : r.plan()) {
          plan += plan.empty() ? "[" : ",";
          plan += "{\"version\":\"" + p.version() + "\",\"direction\":\"" +
                  migledger::v1::Direction_Name(p.direction()) +
                  "\",\"checksum\":\"" + p.checksum() + "\",\"tx_mode\":\"" +
                  migledger::v1::TxMode_Name(p.tx_mode()) + "\"}";
        }
        if (!plan.empty()) text("plan", plan + "]");
        break;
      }
      case Event::kStepStarted: {
        const auto& r = e.step_started();
        text("version", r.version());
        text("slug", r.slug());
        name_of("direction", direction, r.direction());
        text("attempt_id", r.attempt_id());
        text("checksum", r.checksum());
        text("checksum_algorithm", r.checksum_algorithm());
        text("sql_blob_sha256", r.sql_blob_sha256());
        name_of("tx_mode", tx_mode, r.tx_mode());
        integer("statement_count", r.statement_count());
        text("file", r.file());
        break;
      }
      case Event::kStatementApplied: {
        const auto& r = e.statement_applied();
        text("version", r.version());
        text("attempt_id", r.attempt_id());
        integer("statement_index", r.statement_index());
        text("statement_sha256", r.statement_sha256());
        integer("duration_micros", r.duration_micros());
        name_of("direction", direction, r.direction());
        break;
      }
      case Event::kStepApplied: {
        const auto& r = e.step_applied();
        text("version", r.version());
        text("attempt_id", r.attempt_id());
        integer("duration_micros", r.duration_micros());
        integer("rows_affected", r.rows_affected());
        break;
      }
      case Event::kStepFailed: {
        const auto& r = e.step_failed();
        text("version", r.version());
        text("attempt_id", r.attempt_id());
        name_of("direction", direction, r.direction());
        text("sqlstate", r.sqlstate());
        integer("native_code", r.native_code());
        text("message", r.message());
        text("detail", r.detail());
        text("hint", r.hint());
        integer("statement_index", r.statement_index());
        integer("file_line", r.file_line());
        text("file", r.file());
        integer("rolled_back", r.rolled_back());
        integer("duration_micros", r.duration_micros());
        break;
      }
      case Event::kRunFinished: {
        const auto& r = e.run_finished();
        name_of("outcome", migledger::v1::Outcome_descriptor(), r.outcome());
        text("message", r.message());
        integer("steps_done", r.steps_done());
        break;
      }
      default:
        Die("the generator writes no other event type");
    }
    if (sqlite3_step(st) != SQLITE_DONE) {
      Die(std::string("insert: ") + sqlite3_errmsg(db_));
    }
    sqlite3_reset(st);
  }

  void Finish() {
    Exec("CREATE INDEX events_version ON events(version)");
    Exec("COMMIT");
    Exec("ANALYZE");
  }

 private:
  void Exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string m = err ? err : "?";
      sqlite3_free(err);
      Die(std::string(sql) + ": " + m);
    }
  }
  void BindText(int i, const std::string& s) {
    sqlite3_bind_text(insert_, i, s.data(), static_cast<int>(s.size()),
                      SQLITE_STATIC);
  }

  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* insert_full_ = nullptr;
};

// ---- the synthetic history ----------------------------------------------
struct Target {
  std::string name, kind, database_id, database_name, redacted_uri;
  bool postgres = false;
  int next_version = 1;  // 1..9999, wraps
};

struct Person {
  std::string user, host, ci_job_prefix;
  bool ci = false;
};

const char* const kSlugs[] = {
    "create_users",       "add_orders_table",      "index_orders_created_at",
    "add_email_to_users", "backfill_order_totals", "drop_legacy_sessions",
    "create_invoices",    "add_status_enum",       "rename_customer_columns",
    "partition_events",   "add_fk_orders_users",   "create_audit_trigger",
};
constexpr int kNumSlugs = sizeof(kSlugs) / sizeof(kSlugs[0]);

const char* TypeName(const Event& e) {
  switch (e.body_case()) {
    case Event::kRunStarted:
      return "run_started";
    case Event::kRunFinished:
      return "run_finished";
    case Event::kStepStarted:
      return "step_started";
    case Event::kStatementApplied:
      return "statement_applied";
    case Event::kStepApplied:
      return "step_applied";
    case Event::kStepFailed:
      return "step_failed";
    default:
      return "other";
  }
}

class Generator {
 public:
  Generator(uint64_t seed, uint64_t n, migledger::Ledger* ledger,
            SqliteOut* sqlite, std::FILE* raw)
      : rng_(seed), n_(n), ledger_(ledger), sqlite_(sqlite), raw_(raw) {
    targets_ = {
        {"prod", "postgres", SystemId() + "/app", "app",
         "postgres://migrator@db-prod.internal:5432/app", true},
        {"staging", "postgres", SystemId() + "/app", "app",
         "postgres://migrator@db-staging.internal:5432/app", true},
        {"dev", "sqlite", UuidLike(), "main",
         "sqlite:/home/alice/src/shop/dev.db", false},
    };
    people_ = {
        {"alice", "alice-laptop", "", false},
        {"bob", "build-box-02", "", false},
        {"runner", "gh-runner-7", "", true},
        {"gitlab-runner", "ci-runner-3", "", true},
    };
    time_micros_ = 1704067200LL * 1000000;  // 2024-01-01T00:00:00Z
  }

  void Run() {
    while (count_ < n_) OneRun();
  }

  uint64_t count() const { return count_; }
  uint64_t bytes() const { return bytes_; }
  const std::map<std::string, uint64_t>& per_type() const { return per_type_; }

 private:
  uint64_t Rand(uint64_t n) { return rng_() % n; }
  bool Chance(int per_mille) {
    return static_cast<int>(Rand(1000)) < per_mille;
  }

  std::string Hex(size_t bytes) {
    static const char kHex[] = "0123456789abcdef";
    std::string s(bytes * 2, '0');
    for (size_t i = 0; i < s.size(); i += 16) {
      uint64_t r = rng_();
      for (size_t j = i; j < s.size() && j < i + 16; ++j, r >>= 4)
        s[j] = kHex[r & 0xf];
    }
    return s;
  }
  // A PostgreSQL system identifier: 19 decimal digits.
  std::string SystemId() {
    return std::to_string(7000000000000000000ULL + Rand(1ULL << 61));
  }
  std::string UuidLike() {
    std::string h = Hex(16);
    return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" +
           h.substr(16, 4) + "-" + h.substr(20, 12);
  }
  static std::string Version(int v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%04d", v);
    return buf;
  }

  // The envelope of every event of the current run.
  void Envelope(Event* e) {
    e->Clear();
    time_micros_ += 200 + static_cast<int64_t>(Rand(400000));  // within a run
    e->mutable_time()->set_seconds(time_micros_ / 1000000);
    e->mutable_time()->set_nanos(static_cast<int32_t>(time_micros_ % 1000000) *
                                 1000);
    e->set_run_id(run_id_);
    *e->mutable_actor() = actor_;
    auto* t = e->mutable_target();
    t->set_name(target_->name);
    t->set_kind(target_->kind);
    t->set_database_id(target_->database_id);
    t->set_database_name(target_->database_name);
    t->set_redacted_uri(target_->redacted_uri);
  }

  void Emit(Event* e) {
    if (count_ >= n_) return;
    auto p = ledger_->AppendEvent(e, /*sync=*/false);
    if (!p.ok()) Die("append: " + p.status().ToString());
    ++count_;
    bytes_ += p->bytes.size();
    const char* type = TypeName(*e);
    ++per_type_[type];
    if (raw_ && std::fwrite(p->bytes.data(), 1, p->bytes.size(), raw_) !=
                    p->bytes.size()) {
      Die("cannot write the raw file");
    }
    if (sqlite_) {
      sqlite_->Add(count_, migledger::FormatRfc3339(time_micros_),
                   target_->name, type, migledger::EventVersion(*e), *e,
                   p->bytes);
    }
  }

  void OneRun() {
    // Runs are minutes to hours apart.
    time_micros_ += 60LL * 1000000 * (1 + static_cast<int64_t>(Rand(240)));
    uint64_t t = Rand(10);
    target_ = &targets_[t < 3 ? 0 : t < 6 ? 1 : 2];
    const Person& who = people_[target_->postgres ? 2 + Rand(2) : Rand(2)];
    actor_.Clear();
    actor_.set_os_user(who.user);
    actor_.set_host(who.host);
    actor_.set_pid(1000 + static_cast<int64_t>(Rand(60000)));
    actor_.set_tool_version("0.1.0");
    if (who.ci) {
      actor_.set_ci_job(std::to_string(8000000000ULL + Rand(1000000000)));
      actor_.set_git_commit(Hex(20));
    }
    run_id_ = Hex(12);

    struct Step {
      std::string version, slug, checksum;
      bool no_tx;
      int statements;
    };
    std::vector<Step> plan;
    int k = 1 + static_cast<int>(Rand(4));
    for (int i = 0; i < k; ++i) {
      int v = target_->next_version + i;
      if (v > 9999) v -= 9999;
      Step s;
      s.version = Version(v);
      s.slug = kSlugs[v % kNumSlugs];
      s.checksum = Hex(32);
      s.no_tx = target_->postgres &&
                Chance(50);  // CREATE INDEX CONCURRENTLY and friends
      s.statements = 1 + static_cast<int>(Rand(s.no_tx ? 3 : 8));
      plan.push_back(std::move(s));
    }

    Event e;
    Envelope(&e);
    auto* rs = e.mutable_run_started();
    rs->set_command("migledger apply --target " + target_->name);
    if (Chance(200))
      rs->set_reason("release " + std::to_string(2000 + count_ / 1000));
    for (const Step& s : plan) {
      auto* ps = rs->add_plan();
      ps->set_version(s.version);
      ps->set_direction(migledger::v1::DIRECTION_UP);
      ps->set_checksum(s.checksum);
      ps->set_tx_mode(s.no_tx ? migledger::v1::TX_MODE_NO_TRANSACTION
                              : migledger::v1::TX_MODE_TRANSACTION);
    }
    Emit(&e);

    int done = 0;
    bool failed = false;
    for (const Step& s : plan) {
      const std::string attempt = Hex(12);
      const std::string file =
          "migrations/" + s.version + "_" + s.slug + ".up.sql";
      Envelope(&e);
      auto* ss = e.mutable_step_started();
      ss->set_version(s.version);
      ss->set_slug(s.slug);
      ss->set_direction(migledger::v1::DIRECTION_UP);
      ss->set_attempt_id(attempt);
      ss->set_checksum(s.checksum);
      ss->set_checksum_algorithm("sha256");
      ss->set_sql_blob_sha256(s.checksum);
      ss->set_tx_mode(s.no_tx ? migledger::v1::TX_MODE_NO_TRANSACTION
                              : migledger::v1::TX_MODE_TRANSACTION);
      ss->set_statement_count(s.statements);
      ss->set_file(file);
      Emit(&e);

      int64_t duration = 0;
      if (s.no_tx) {
        for (int i = 0; i < s.statements; ++i) {
          Envelope(&e);
          auto* sa = e.mutable_statement_applied();
          int64_t d = 100 + static_cast<int64_t>(Rand(2000000));
          duration += d;
          sa->set_version(s.version);
          sa->set_attempt_id(attempt);
          sa->set_statement_index(i);
          sa->set_statement_sha256(Hex(32));
          sa->set_duration_micros(d);
          sa->set_direction(migledger::v1::DIRECTION_UP);
          Emit(&e);
        }
      }
      duration += 500 + static_cast<int64_t>(Rand(300000));

      Envelope(&e);
      if (Chance(20)) {  // 2% of steps fail; the version is retried next run
        auto* sf = e.mutable_step_failed();
        int stmt = static_cast<int>(Rand(s.statements));
        sf->set_version(s.version);
        sf->set_attempt_id(attempt);
        sf->set_direction(migledger::v1::DIRECTION_UP);
        if (target_->postgres) {
          sf->set_sqlstate("42P07");
          sf->set_message("relation \"orders_" + s.version +
                          "\" already exists");
          sf->set_hint("drop the table or baseline the version");
        } else {
          sf->set_native_code(1);
          sf->set_message("table orders_" + s.version + " already exists");
        }
        sf->set_statement_index(stmt);
        sf->set_file_line(1 + stmt * 4);
        sf->set_file(file);
        sf->set_rolled_back(!s.no_tx);
        sf->set_duration_micros(duration);
        Emit(&e);
        failed = true;
        break;
      }
      auto* sa = e.mutable_step_applied();
      sa->set_version(s.version);
      sa->set_attempt_id(attempt);
      sa->set_duration_micros(duration);
      sa->set_rows_affected(-1);
      Emit(&e);
      ++done;
      target_->next_version = target_->next_version % 9999 + 1;
    }

    Envelope(&e);
    auto* rf = e.mutable_run_finished();
    rf->set_outcome(failed ? migledger::v1::OUTCOME_FAILED
                           : migledger::v1::OUTCOME_SUCCEEDED);
    if (failed) rf->set_message("stopped at the first failed step");
    rf->set_steps_done(done);
    Emit(&e);
  }

  std::mt19937_64 rng_;
  uint64_t n_;
  migledger::Ledger* ledger_;
  SqliteOut* sqlite_;
  std::FILE* raw_;
  std::vector<Target> targets_;
  std::vector<Person> people_;
  Target* target_ = nullptr;
  migledger::v1::Actor actor_;
  std::string run_id_;
  int64_t time_micros_ = 0;
  uint64_t count_ = 0, bytes_ = 0;
  std::map<std::string, uint64_t> per_type_;
};

uint64_t ParseCount(const char* flag, const char* v) {
  char* end = nullptr;
  errno = 0;
  unsigned long long n = std::strtoull(v, &end, 10);
  if (errno || end == v || *end || v[0] == '-') {
    Die(std::string(flag) + " needs a non-negative integer, not \"" + v + "\"");
  }
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t n = 0, seed = 42;
  bool have_n = false;
  std::string ledger_dir, sqlite_path, raw_path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) Usage();
      return argv[++i];
    };
    if (a == "--events") {
      n = ParseCount("--events", value());
      have_n = true;
    } else if (a == "--ledger") {
      ledger_dir = value();
    } else if (a == "--sqlite") {
      sqlite_path = value();
    } else if (a == "--raw") {
      raw_path = value();
    } else if (a == "--seed") {
      seed = ParseCount("--seed", value());
    } else if (a == "-h" || a == "--help") {
      Usage();
    } else {
      std::fprintf(stderr, "migledger_ledger_gen: unknown argument %s\n",
                   a.c_str());
      Usage();
    }
  }
  if (!have_n || ledger_dir.empty()) Usage();
  {
    std::error_code ec;
    if (std::filesystem::exists(std::filesystem::path(ledger_dir) / "CURRENT",
                                ec)) {
      Die("a ledger already exists in " + ledger_dir +
          " (give a fresh directory)");
    }
  }

  auto t0 = std::chrono::steady_clock::now();
  migledger::LedgerOptions lo;
  lo.create_if_missing = true;
  auto ledger = migledger::Ledger::Open(ledger_dir, lo);
  if (!ledger.ok()) Die(ledger.status().ToString());

  std::unique_ptr<SqliteOut> sqlite;
  if (!sqlite_path.empty()) sqlite = std::make_unique<SqliteOut>(sqlite_path);
  std::FILE* raw = nullptr;
  if (!raw_path.empty()) {
    raw = std::fopen(raw_path.c_str(), "wb");
    if (!raw) Die("cannot write " + raw_path);
    static char buf[1 << 20];
    std::setvbuf(raw, buf, _IOFBF, sizeof buf);
  }

  Generator gen(seed, n, ledger->get(), sqlite.get(), raw);
  gen.Run();

  migledger::Status st = (*ledger)->Sync();
  if (!st.ok()) Die("sync: " + st.ToString());
  if ((*ledger)->Head().size != gen.count()) {
    Die("ledger head has " + std::to_string((*ledger)->Head().size) +
        " events, expected " + std::to_string(gen.count()));
  }
  ledger->reset();
  // Reopen once as a writer, as the next `migledger apply` would: RocksDB
  // recovers the WAL into level-0 tables, so readers (which replay the WAL
  // on every read-only open) see a ledger in its usual resting state.
  {
    auto again =
        migledger::Ledger::Open(ledger_dir, migledger::LedgerOptions{});
    if (!again.ok()) Die("reopen: " + again.status().ToString());
  }
  if (raw && std::fclose(raw) != 0) Die("cannot write " + raw_path);
  if (sqlite) {
    sqlite->Finish();
    sqlite.reset();
  }
  double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  std::printf("events=%" PRIu64 "\n", gen.count());
  std::printf("event_bytes=%" PRIu64 "\n", gen.bytes());
  std::printf("seconds=%.2f\n", secs);
  for (const auto& [type, c] : gen.per_type()) {
    std::printf("type.%s=%" PRIu64 "\n", type.c_str(), c);
  }
  return 0;
}
