// migledger.toml: where the migrations and the ledger are, and named
// targets. Example:
//
//   migrations_dir = "migrations"        # default
//   ledger_dir = ".migledger"            # default
//   default_target = "dev"
//   lock_timeout_ms = 10000
//   [targets.dev]
//   url = "sqlite:dev.db"
//   [targets.prod]
//   url_env = "DATABASE_URL"             # the URL is read from this variable
//
// Relative paths are relative to the directory holding migledger.toml.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace migledger {

struct TargetConfig {
  std::string name;
  std::string url;      // literal URL, or "" when url_env is used
  std::string url_env;  // environment variable that holds the URL
};

struct ProjectConfig {
  std::string root;  // directory of migledger.toml (absolute)
  std::string migrations_dir;
  std::string ledger_dir;
  std::string default_target;
  int64_t lock_timeout_ms = 10000;
  // Apply a pending migration older than the newest applied one (a branch
  // merged late) instead of refusing; also `apply --allow-out-of-order`.
  bool allow_out_of_order = false;
  std::map<std::string, TargetConfig> targets;
  std::map<std::string, std::vector<std::string>> groups;
  std::string audit_store_url;
  std::string audit_store_url_env;
};

inline constexpr char kConfigFileName[] = "migledger.toml";

// Reads `root`/migledger.toml. When the file does not exist returns the
// defaults with found=false so commands can still run on bare URIs.
StatusOr<ProjectConfig> LoadProjectConfig(const std::string& root, bool* found);

// Parses the TOML text (for tests and fuzzing); `root` anchors paths.
StatusOr<ProjectConfig> ParseProjectConfig(const std::string& text,
                                           const std::string& root);

// Resolves a --target value: a URI ("sqlite:...", "postgres://...",
// "postgresql://...", "key=value ...") is returned as is (relative SQLite
// paths anchored at the project root); a name is looked up in the config.
// Empty means the default target. *name receives the target's name or "".
StatusOr<std::string> ResolveTarget(const ProjectConfig& config,
                                    const std::string& target,
                                    std::string* name);

}  // namespace migledger
