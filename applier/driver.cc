#include "applier/driver.h"

#include <algorithm>
#include <cctype>

#include "applier/conninfo.h"
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

Status Driver::ExecStep(const StepBatch& batch, StepBatchFailure* failure) {
  *failure = StepBatchFailure{};
  MIGLEDGER_RETURN_IF_ERROR(Begin());
  auto fail = [&](Status st) {
    (void)Rollback();
    return st;
  };
  const size_t n = batch.statements ? batch.statements->size() : 0;
  for (size_t i = 0; i < n; ++i) {
    Status st = Exec((*batch.statements)[i].text, &failure->error);
    if (!st.ok()) {
      failure->statement_index = static_cast<int>(i);
      return fail(st);
    }
  }
  failure->statement_index = -1;
  Status st = Status::Ok();
  if (batch.insert_marker) {
    st = InsertMarker(*batch.insert_marker);
  } else if (!batch.delete_marker.empty()) {
    st = DeleteMarker(batch.delete_marker);
  }
  if (!st.ok()) {
    failure->error.message = st.message();
    return fail(st);
  }
  return Status::Ok();
}

Status Driver::CommitWithMirrorRows(const std::vector<MirrorRow>& rows) {
  Status st = rows.empty() ? Status::Ok() : InsertMirrorRows(rows);
  if (st.ok()) st = Commit();
  if (!st.ok()) (void)Rollback();
  return st;
}

Status Driver::AdoptIdentity(const std::string& new_database_id,
                             const std::string& inherited_from,
                             const std::vector<MirrorRow>& rows) {
  MIGLEDGER_RETURN_IF_ERROR(Begin());
  Status st = SetAsideInheritedHistory(new_database_id, inherited_from);
  if (st.ok()) st = InsertMirrorRows(rows);
  if (!st.ok()) {
    (void)Rollback();
    return st;
  }
  MIGLEDGER_RETURN_IF_ERROR(Commit());
  SetDatabaseId(new_database_id);
  return Status::Ok();
}

std::string OfflineMarkerSql(SqlDialect dialect, const MarkerRow& row) {
  return dialect == SqlDialect::kPostgres ? PostgresOfflineMarkerSql(row)
                                          : SqliteOfflineMarkerSql(row);
}

std::string StandardSqlLiteral(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

std::string RedactUri(const std::string& uri) {
  if (uri.rfind("sqlite:", 0) == 0) return uri;
  if (LooksLikePostgresConninfo(uri)) return RedactConninfo(uri);
  // Another scheme (a mistaken mysql://user:pw@host): no password either.
  const size_t scheme = uri.find("://");
  if (scheme == std::string::npos || scheme == 0 ||
      !std::all_of(uri.begin(), uri.begin() + scheme, [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '+' ||
               c == '-' || c == '.';
      })) {
    return uri;
  }
  const size_t authority = scheme + 3;
  const size_t end = std::min(uri.find_first_of("/?#", authority), uri.size());
  const size_t at = uri.rfind('@', end - 1);
  if (at == std::string::npos || at < authority) return uri;
  const size_t colon = uri.find(':', authority);
  if (colon == std::string::npos || colon > at) return uri;
  return uri.substr(0, colon) + uri.substr(at);
}

}  // namespace migledger
