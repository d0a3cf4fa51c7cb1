#include "applier/libpq_secrets.h"

#include <cstdlib>
#include <utility>

#include "applier/conninfo.h"

namespace migledger {

LibpqSecrets::LibpqSecrets(const std::string& conninfo)
    : secrets_(ConninfoSecrets(conninfo)) {}

void LibpqSecrets::Add(const char* secret) {
  if (secret != nullptr && *secret != '\0') secrets_.emplace_back(secret);
}

void LibpqSecrets::Learn(PGconn* conn) {
  Add(PQpass(conn));
  if (PQconninfoOption* opts = PQconninfo(conn)) {
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
      if (o->val != nullptr && IsSecretConninfoKeyword(o->keyword)) {
        Add(o->val);
      }
    }
    PQconninfoFree(opts);
  }
}

std::string LibpqSecrets::Scrub(std::string text) const {
  std::vector<std::string> secrets = secrets_;
  if (const char* env = std::getenv("PGPASSWORD"); env && *env) {
    secrets.emplace_back(env);
  }
  return ScrubSecrets(std::move(text), secrets);
}

}  // namespace migledger
