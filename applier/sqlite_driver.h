// SQLite target driver (sqlite3 C API). Internal to applier/.
#pragma once

#include <memory>
#include <string>

#include "applier/driver.h"

namespace migledger {

// `path` is a file path; the file is created only when create_if_missing.
StatusOr<std::unique_ptr<Driver>> OpenSqliteDriver(const std::string& path,
                                                   bool create_if_missing);

// OfflineMarkerSql (applier/driver.h) for a SQLite target.
std::string SqliteOfflineMarkerSql(const MarkerRow& row);

}  // namespace migledger
