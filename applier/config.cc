#include "applier/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <utility>

#include "applier/conninfo.h"

namespace migledger {
namespace fs = std::filesystem;

namespace {

std::string Anchor(const std::string& root, const std::string& path) {
  if (path.empty() || fs::path(path).is_absolute()) return path;
  return (fs::path(root) / path).lexically_normal().string();
}

bool LooksLikeUri(const std::string& t) {
  return t.rfind("sqlite:", 0) == 0 || t.rfind("postgres://", 0) == 0 ||
         t.rfind("postgresql://", 0) == 0 || t.find('=') != std::string::npos;
}

// kInvalidInput naming the first key of `table` not in `known`, with its
// line: a misspelt key would otherwise be ignored silently.
Status RefuseUnknownKeys(const toml::table& table, const std::string& prefix,
                         std::initializer_list<std::string_view> known) {
  for (const auto& [key, node] : table) {
    if (std::find(known.begin(), known.end(), key.str()) != known.end()) {
      continue;
    }
    std::string known_list;
    for (std::string_view k : known) {
      known_list += (known_list.empty() ? "" : ", ") + std::string(k);
    }
    return InvalidInput(std::string(kConfigFileName) + ":" +
                        std::to_string(key.source().begin.line) +
                        ": unknown key \"" + prefix + std::string(key.str()) +
                        "\" (known: " + known_list + ")");
  }
  return Status::Ok();
}

// A connection string written in the file must not hold a password
// (applier/conninfo.h); `key` names where it is, with its line.
Status RefusePasswordIn(const toml::node_view<const toml::node>& node,
                        const std::string& key, const std::string& value) {
  if (value.rfind("sqlite:", 0) == 0 || !LooksLikePostgresConninfo(value)) {
    return Status::Ok();
  }
  const auto line = node.node() ? node.node()->source().begin.line : 0;
  return RefuseStoredSecret(value, std::string(kConfigFileName) + ":" +
                                       std::to_string(line) + ": " + key);
}

}  // namespace

StatusOr<ProjectConfig> ParseProjectConfig(const std::string& text,
                                           const std::string& root) {
  ProjectConfig c;
  c.root = root;
  toml::table tbl;
  try {
    tbl = toml::parse(text, std::string_view(kConfigFileName));
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << kConfigFileName << ":" << e.source().begin.line << ": "
        << e.description();
    return InvalidInput(msg.str());
  }
  auto str = [&](toml::node_view<toml::node> n, const char* key,
                 std::string* out) -> Status {
    if (!n) return Status::Ok();
    if (auto v = n.value<std::string>()) {
      *out = *v;
      return Status::Ok();
    }
    return InvalidInput(std::string(kConfigFileName) + ": " + key +
                        " must be a string");
  };
  MIGLEDGER_RETURN_IF_ERROR(
      RefuseUnknownKeys(tbl, "",
                        {"migrations_dir", "ledger_dir", "default_target",
                         "lock_timeout_ms", "allow_out_of_order", "targets",
                         "groups", "audit_store", "audit_store_url_env"}));
  std::string migrations = "migrations", ledger = ".migledger";
  MIGLEDGER_RETURN_IF_ERROR(
      str(tbl["migrations_dir"], "migrations_dir", &migrations));
  MIGLEDGER_RETURN_IF_ERROR(str(tbl["ledger_dir"], "ledger_dir", &ledger));
  MIGLEDGER_RETURN_IF_ERROR(
      str(tbl["default_target"], "default_target", &c.default_target));
  MIGLEDGER_RETURN_IF_ERROR(
      str(tbl["audit_store"], "audit_store", &c.audit_store_url));
  MIGLEDGER_RETURN_IF_ERROR(str(tbl["audit_store_url_env"],
                                "audit_store_url_env", &c.audit_store_url_env));
  MIGLEDGER_RETURN_IF_ERROR(RefusePasswordIn(std::as_const(tbl)["audit_store"],
                                             "audit_store", c.audit_store_url));
  if (auto n = tbl["lock_timeout_ms"]) {
    // Only a TOML integer: toml++ would convert a float such as 3e93 to
    // int64_t itself, which overflows (undefined behaviour).
    auto v = n.is_integer() ? n.value<int64_t>() : std::nullopt;
    if (!v || *v < 0) {
      return InvalidInput(std::string(kConfigFileName) +
                          ": lock_timeout_ms must be a non-negative integer");
    }
    c.lock_timeout_ms = *v;
  }
  if (auto b = tbl["allow_out_of_order"]) {
    auto v = b.value<bool>();
    if (!b.is_boolean() || !v) {
      return InvalidInput(std::string(kConfigFileName) +
                          ": allow_out_of_order must be true or false");
    }
    c.allow_out_of_order = *v;
  }
  c.migrations_dir = Anchor(root, migrations);
  c.ledger_dir = Anchor(root, ledger);
  if (auto targets = tbl["targets"]) {
    auto* t = targets.as_table();
    if (!t)
      return InvalidInput(std::string(kConfigFileName) +
                          ": [targets] must be a table");
    for (auto& [key, node] : *t) {
      TargetConfig tc;
      tc.name = std::string(key.str());
      auto* entry = node.as_table();
      if (!entry) {
        return InvalidInput(std::string(kConfigFileName) + ": targets." +
                            tc.name + " must be a table with url or url_env");
      }
      MIGLEDGER_RETURN_IF_ERROR(RefuseUnknownKeys(
          *entry, "targets." + tc.name + ".", {"url", "url_env"}));
      toml::node_view<toml::node> view(*entry);
      MIGLEDGER_RETURN_IF_ERROR(str(view["url"], "url", &tc.url));
      MIGLEDGER_RETURN_IF_ERROR(str(view["url_env"], "url_env", &tc.url_env));
      MIGLEDGER_RETURN_IF_ERROR(RefusePasswordIn(
          std::as_const(*entry)["url"], "targets." + tc.name + ".url", tc.url));
      if (tc.url.empty() == tc.url_env.empty()) {
        return InvalidInput(std::string(kConfigFileName) + ": targets." +
                            tc.name + " needs exactly one of url or url_env");
      }
      c.targets[tc.name] = tc;
    }
  }
  if (auto groups = tbl["groups"]) {
    auto* g = groups.as_table();
    if (!g)
      return InvalidInput(std::string(kConfigFileName) +
                          ": [groups] must be a table");
    for (auto& [key, node] : *g) {
      auto* arr = node.as_array();
      if (!arr) {
        return InvalidInput(std::string(kConfigFileName) + ": groups." +
                            std::string(key.str()) +
                            " must be a list of target names");
      }
      std::vector<std::string> members;
      for (auto& m : *arr) {
        auto v = m.value<std::string>();
        if (!v)
          return InvalidInput(std::string(kConfigFileName) +
                              ": group members must be strings");
        members.push_back(*v);
      }
      c.groups[std::string(key.str())] = members;
    }
  }
  return c;
}

StatusOr<ProjectConfig> LoadProjectConfig(const std::string& root,
                                          bool* found) {
  fs::path path = fs::path(root) / kConfigFileName;
  std::error_code ec;
  std::string abs_root = fs::absolute(root, ec).lexically_normal().string();
  if (!abs_root.empty() && abs_root.back() == '/' && abs_root.size() > 1)
    abs_root.pop_back();
  if (!fs::exists(path, ec)) {
    *found = false;
    return ParseProjectConfig("", abs_root);
  }
  *found = true;
  std::ifstream in(path);
  if (!in) return IoError("cannot read " + path.string());
  std::ostringstream buf;
  buf << in.rdbuf();
  return ParseProjectConfig(buf.str(), abs_root);
}

StatusOr<std::string> ResolveTarget(const ProjectConfig& config,
                                    const std::string& target,
                                    std::string* name) {
  std::string t = target.empty() ? config.default_target : target;
  if (t.empty()) {
    return InvalidInput(
        "no target given: use --target URI|NAME or set default_target in " +
        std::string(kConfigFileName));
  }
  name->clear();
  if (LooksLikeUri(t)) {
    if (t.rfind("sqlite:", 0) == 0) {
      std::string path = t.substr(strlen("sqlite:"));
      if (path.rfind("//", 0) == 0) path = path.substr(2);
      if (path.empty())
        return InvalidInput("sqlite: target needs a path (sqlite:PATH)");
      return "sqlite:" + Anchor(config.root, path);
    }
    return t;
  }
  auto it = config.targets.find(t);
  if (it == config.targets.end()) {
    return InvalidInput("unknown target \"" + t + "\": not a URI and not in " +
                        std::string(kConfigFileName));
  }
  *name = t;
  std::string url = it->second.url;
  if (url.empty()) {
    const char* v = std::getenv(it->second.url_env.c_str());
    if (v == nullptr || *v == '\0') {
      return InvalidInput("target " + t + ": environment variable " +
                          it->second.url_env + " is not set");
    }
    url = v;
  }
  std::string ignored;
  ProjectConfig anchored = config;
  anchored.default_target.clear();
  if (!LooksLikeUri(url)) {
    return InvalidInput(
        "target " + t + ": \"" + url.substr(0, 0) +
        "\" URL must start with sqlite:, postgres:// or postgresql://");
  }
  return ResolveTarget(anchored, url, &ignored);
}

}  // namespace migledger
