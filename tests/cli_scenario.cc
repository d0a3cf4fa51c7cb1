#include "tests/cli_scenario.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <random>

namespace migledger::testing {

size_t CountOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos;
       pos = text.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

bool LooksLikeJsonObject(const std::string& line) {
  if (line.size() < 2 || line.front() != '{' || line.back() != '}') {
    return false;
  }
  std::vector<char> stack;
  bool in_string = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      } else if (static_cast<unsigned char>(c) < 0x20) {
        return false;  // raw control character inside a string
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '{':
      case '[':
        stack.push_back(c);
        break;
      case '}':
        if (stack.empty() || stack.back() != '{') return false;
        stack.pop_back();
        if (stack.empty() && i + 1 != line.size()) return false;
        break;
      case ']':
        if (stack.empty() || stack.back() != '[') return false;
        stack.pop_back();
        break;
      default:
        break;
    }
  }
  return !in_string && stack.empty();
}

uint64_t SequenceOf(const std::string& line) {
  const std::string key = "\"sequence\":";
  size_t pos = line.find(key);
  if (pos == std::string::npos) return 0;
  return std::strtoull(line.c_str() + pos + key.size(), nullptr, 10);
}

std::string WithPassword(const std::string& uri, const std::string& password) {
  size_t scheme = uri.find("://");
  size_t at = uri.find('@', scheme + 3);
  if (scheme == std::string::npos || at == std::string::npos) return uri;
  std::string user = uri.substr(scheme + 3, at - scheme - 3);
  user = user.substr(0, user.find(':'));
  return uri.substr(0, scheme + 3) + user + ":" + password + uri.substr(at);
}

bool HavePostgres() { return !Env("PGTEST_URI").empty(); }

namespace {

// Databases on the PGTEST_URI server, one per test at a time. Creating and
// dropping a database costs about two seconds (DROP DATABASE checkpoints),
// so a released database is wiped (its schemas dropped, an empty "public"
// recreated) and handed to the next test; all of them are dropped when the
// test program ends.
class PgDatabasePool : public ::testing::Environment {
 public:
  static PgDatabasePool* Get() {
    static PgDatabasePool* pool = static_cast<PgDatabasePool*>(
        ::testing::AddGlobalTestEnvironment(new PgDatabasePool));
    return pool;
  }

  // The name of an empty database, or "" with *error set.
  std::string Acquire(std::string* error) {
    if (!free_.empty()) {
      std::string name = free_.back();
      free_.pop_back();
      return name;
    }
    static std::atomic<int> counter{0};
    std::random_device rd;
    std::string name = "mlcli_" + std::to_string(getpid()) + "_" +
                       std::to_string(counter++) + "_" +
                       std::to_string(rd() % 100000);
    PsqlResult r =
        RunPsql(Env("PGTEST_URI"), "CREATE DATABASE \"" + name + "\";\n");
    if (r.exit_code != 0) {
      *error = r.output;
      return "";
    }
    all_.push_back(name);
    return name;
  }

  void Release(const std::string& name) {
    if (std::getenv("MIGLEDGER_KEEP_TEST_DIRS")) return;  // keep for a look
    PsqlResult r = RunPsql(WithDatabase(Env("PGTEST_URI"), name),
                           "DO $$ BEGIN EXECUTE format('ALTER ROLE %I IN "
                           "DATABASE %I RESET ALL', current_user, "
                           "current_database()); END $$;\n"
                           "DO $$ DECLARE s name; BEGIN FOR s IN SELECT "
                           "nspname FROM pg_namespace WHERE nspname NOT LIKE "
                           "'pg\\_%' AND nspname <> 'information_schema' LOOP "
                           "EXECUTE format('DROP SCHEMA %I CASCADE', s); END "
                           "LOOP; END $$;\n"
                           "CREATE SCHEMA public;\n");
    if (r.exit_code == 0) free_.push_back(name);
  }

  void TearDown() override {
    if (all_.empty() || std::getenv("MIGLEDGER_KEEP_TEST_DIRS")) return;
    std::string sql;
    for (const auto& name : all_) {
      sql += "DROP DATABASE IF EXISTS \"" + name + "\" WITH (FORCE);\n";
    }
    RunPsql(Env("PGTEST_URI"), sql);
    all_.clear();
    free_.clear();
  }

 private:
  std::vector<std::string> all_;
  std::vector<std::string> free_;
};

// Registered before main() runs, so its TearDown drops the databases.
[[maybe_unused]] ::testing::Environment* const kPgDatabasePool =
    PgDatabasePool::Get();

}  // namespace

PgDatabase::PgDatabase() : name_(PgDatabasePool::Get()->Acquire(&error_)) {}
PgDatabase::~PgDatabase() {
  if (ok()) PgDatabasePool::Get()->Release(name_);
}

namespace {

std::string KindName(const ::testing::TestParamInfo<std::string>& info) {
  return info.param == "postgres" ? "Postgres" : "Sqlite";
}

INSTANTIATE_TEST_SUITE_P(Drivers, CoreScenarioTest,
                         ::testing::Values("sqlite", "postgres"), KindName);

}  // namespace
}  // namespace migledger::testing
