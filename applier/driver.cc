#include "applier/driver.h"

#include "applier/postgres_driver.h"
#include "applier/sqlite_driver.h"

namespace migledger {

StatusOr<std::unique_ptr<Driver>> OpenDriver(const std::string& uri,
                                             bool create_if_missing) {
  if (uri.rfind("sqlite:", 0) == 0) {
    std::string path = uri.substr(7);
    if (path.rfind("//", 0) == 0) path = path.substr(2);
    return OpenSqliteDriver(path, create_if_missing);
  }
  if (uri.rfind("postgres://", 0) == 0 || uri.rfind("postgresql://", 0) == 0 ||
      uri.find('=') != std::string::npos) {
    return OpenPostgresDriver(uri);
  }
  return InvalidInput("unsupported target \"" + RedactUri(uri) +
                      "\": use sqlite:PATH or postgres://...");
}

std::string RedactUri(const std::string& uri) {
  if (uri.rfind("sqlite:", 0) == 0) return uri;
  return RedactPostgresUri(uri);
}

}  // namespace migledger
