// Fuzzes migledger.toml parsing (ParseProjectConfig) and target resolution
// (ResolveTarget) on arbitrary text.
//
// Two environment variables exist for url_env targets to find: one holding a
// URI and one holding something that is not. Checks on success: the lock
// timeout is not negative, every target has exactly one of url / url_env,
// and a resolved target is a URI.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "applier/config.h"
#include "fuzz_util.h"

namespace {

bool LooksResolved(const std::string& uri) {
  return uri.rfind("sqlite:", 0) == 0 || uri.rfind("postgres://", 0) == 0 ||
         uri.rfind("postgresql://", 0) == 0 ||
         uri.find('=') != std::string::npos;
}

void Resolve(const migledger::ProjectConfig& config, const std::string& t) {
  std::string name = "stale";
  auto r = migledger::ResolveTarget(config, t, &name);
  if (!r.ok()) return;
  FUZZ_CHECK(LooksResolved(*r));
  if (!name.empty()) FUZZ_CHECK(config.targets.count(name) == 1);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("MIGLEDGER_FUZZ_URL", "postgres://app@db.internal:5432/shop", 1);
  setenv("MIGLEDGER_FUZZ_SQLITE", "sqlite:../data/app.db", 1);
  setenv("MIGLEDGER_FUZZ_BAD", "not a uri", 1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(migledger_fuzz::AsView(data, size));
  for (const char* root : {"/srv/project", ""}) {
    auto parsed = migledger::ParseProjectConfig(text, root);
    if (!parsed.ok()) {
      FUZZ_CHECK(parsed.status().code() == migledger::Code::kInvalidInput);
      continue;
    }
    const migledger::ProjectConfig& c = *parsed;
    FUZZ_CHECK(c.root == root);
    FUZZ_CHECK(c.lock_timeout_ms >= 0);
    std::vector<std::string> names = {"",
                                      "dev",
                                      "prod",
                                      "sqlite:app.db",
                                      "sqlite://",
                                      "sqlite:///abs.db",
                                      "postgres://u@h/db",
                                      "host=h dbname=d"};
    for (const auto& [name, t] : c.targets) {
      FUZZ_CHECK(t.name == name);
      FUZZ_CHECK(t.url.empty() != t.url_env.empty());
      names.push_back(name);
    }
    for (const auto& [group, members] : c.groups) {
      names.push_back(group);
      for (const std::string& m : members) names.push_back(m);
    }
    for (const std::string& n : names) Resolve(c, n);
  }
  return 0;
}
