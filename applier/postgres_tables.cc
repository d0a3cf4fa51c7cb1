// The PostgreSQL driver's tables of the tool: the marker rows
// (migledger.applied) and the event mirror (migledger.events).
#include <algorithm>
#include <map>
#include <set>

#include "applier/postgres_driver_impl.h"
#include "common/crash_points.h"

namespace migledger {
namespace {

uint64_t DecodeBigEndian64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string HexPrefix(const std::string& bytes, size_t n = 8) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes.size() && i < n; ++i) {
    out.push_back(kHex[static_cast<unsigned char>(bytes[i]) >> 4]);
    out.push_back(kHex[static_cast<unsigned char>(bytes[i]) & 0xF]);
  }
  return out;
}

// Rows per INSERT statement for the mirror (4 parameters each; the protocol
// allows 65535 parameters).
constexpr size_t kMirrorRowsPerStatement = 500;

}  // namespace

// The mirror rows and COMMIT as one simple query: an error in the INSERT
// (a row that exists already, say) makes the server skip the COMMIT.
Status PostgresDriver::CommitWithMirrorRows(
    const std::vector<MirrorRow>& rows) {
  if (rows.empty() || rows.size() > kMirrorRowsPerStatement) {
    if (!rows.empty() && !tool_role_in_transaction_ && migration_state_ &&
        PQtransactionStatus(conn_) == PQTRANS_INTRANS) {
      Status st = Simple(kToolRoleForTransaction);
      if (!st.ok()) {
        (void)Rollback();
        return st;
      }
    }
    tool_role_in_transaction_ = false;
    return Driver::CommitWithMirrorRows(rows);
  }
  if (PQtransactionStatus(conn_) != PQTRANS_INTRANS) {
    return Driver::CommitWithMirrorRows(rows);  // reports the state
  }
  return CommitWithMirrorInsert(rows);
}

Status PostgresDriver::CommitWithMirrorInsert(
    const std::vector<MirrorRow>& rows) {
  std::string sql =
      "INSERT INTO \"migledger\".\"events\" (\"target_sequence\", "
      "\"event_bytes\", "
      "\"leaf_hash\", \"chain_head\") VALUES ";
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].target_sequence > static_cast<uint64_t>(kPostgresMaxSequence)) {
      (void)Rollback();
      return InvalidInput("target sequence " +
                          std::to_string(rows[i].target_sequence) +
                          " does not fit the mirror's bigint column");
    }
    if (i > 0) sql += ", ";
    sql += "(" + std::to_string(rows[i].target_sequence) + ", " +
           ByteaLiteral(rows[i].event_bytes) + ", " +
           ByteaLiteral(rows[i].leaf_hash) + ", " +
           ByteaLiteral(rows[i].chain_head) + ")";
  }
  sql += ";\nCOMMIT;";
  if (!tool_role_in_transaction_ && migration_state_) {
    sql.insert(0, kToolRoleForTransaction);
  }
  tool_role_in_transaction_ = false;
  if (PQsendQuery(conn_, sql.c_str()) == 0) {
    if (PQstatus(conn_) == CONNECTION_BAD)
      return LostConnection("COMMIT", nullptr);
    (void)Rollback();
    return Internal("cannot send COMMIT to " + Target() + ": " +
                    Scrub(LibpqMessage(PQerrorMessage(conn_))));
  }
  CrashPoint("postgres.commit_sent");
  PgResult failed;
  std::string last_tag;
  while (PGresult* raw = PQgetResult(conn_)) {
    PgResult res(raw);
    ExecStatusType st = PQresultStatus(raw);
    if (st == PGRES_COMMAND_OK) {
      last_tag = PQcmdStatus(raw);
    } else if (!failed) {
      failed = std::move(res);
    }
    if (PQstatus(conn_) == CONNECTION_BAD) break;
  }
  if (SessionLost(failed.get())) return LostConnection("COMMIT", failed.get());
  if (failed) {
    std::string sqlstate = ErrorField(failed.get(), PG_DIAG_SQLSTATE);
    std::string message = Scrub(PrimaryMessage(failed.get(), conn_));
    (void)Rollback();
    if (sqlstate == "23505") {
      return Drift("the event mirror of " + Target() +
                   " already holds target sequence " +
                   std::to_string(rows.front().target_sequence) +
                   " or a later one: another migledger wrote to it; nothing "
                   "was committed");
    }
    if (sqlstate == "25006") {  // read_only_sql_transaction
      return MigrationFailed(
          "the transaction is read-only (SET TRANSACTION READ ONLY, BEGIN "
          "READ ONLY), so migledger cannot record what it did in it: make "
          "it read-write; nothing was committed");
    }
    return MigrationFailed("writing migledger.events and COMMIT on " +
                           Target() + ": " + message);
  }
  if (last_tag != "COMMIT") {
    return MigrationFailed("COMMIT on " + Target() + " ended in " + last_tag);
  }
  return Status::Ok();
}

StatusOr<std::vector<MarkerRow>> PostgresDriver::ReadMarkers() {
  auto res = Run("reading migledger.applied",
                 "SELECT \"version\", \"checksum\", \"attempt_id\", "
                 "pg_catalog.to_char(\"applied_at\" AT TIME ZONE 'UTC', "
                 "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
                 "FROM \"migledger\".\"applied\" "
                 "ORDER BY \"version\" COLLATE \"C\"",
                 {}, false, Code::kTargetUnavailable);
  if (!res.ok()) return res.status();
  PGresult* r = res->get();
  std::vector<MarkerRow> rows;
  rows.reserve(PQntuples(r));
  for (int i = 0; i < PQntuples(r); ++i) {
    rows.push_back(MarkerRow{PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                             PQgetvalue(r, i, 2), PQgetvalue(r, i, 3)});
  }
  return rows;
}

Status PostgresDriver::InsertMarker(const MarkerRow& row) {
  std::string sqlstate;
  auto res =
      Run("writing the marker for version " + row.version,
          "INSERT INTO \"migledger\".\"applied\" "
          "(\"version\", \"checksum\", \"attempt_id\", \"applied_at\") "
          "VALUES ($1, $2, $3, "
          "COALESCE(NULLIF($4::text, '')::timestamptz, now()))",
          {{row.version}, {row.checksum}, {row.attempt_id}, {row.applied_at}},
          false, Code::kMigrationFailed, &sqlstate);
  if (!res.ok()) {
    if (sqlstate == "23505") {
      return Drift("a marker for version " + row.version +
                   " already exists in migledger.applied on " + Target());
    }
    return res.status();
  }
  return Status::Ok();
}

Status PostgresDriver::DeleteMarker(const std::string& version) {
  auto res = Run("deleting the marker for version " + version,
                 "DELETE FROM \"migledger\".\"applied\" WHERE \"version\" = "
                 "$1",
                 {{version}}, false, Code::kMigrationFailed);
  return res.ok() ? Status::Ok() : res.status();
}

Status PostgresDriver::InsertMirrorRows(const std::vector<MirrorRow>& input) {
  // Validate and drop exact duplicates within the batch.
  std::map<uint64_t, const MirrorRow*> by_sequence;
  for (const MirrorRow& row : input) {
    if (row.target_sequence > static_cast<uint64_t>(kPostgresMaxSequence)) {
      return InvalidInput("target sequence " +
                          std::to_string(row.target_sequence) +
                          " does not fit the mirror's bigint column");
    }
    auto [it, inserted] = by_sequence.emplace(row.target_sequence, &row);
    if (!inserted && !SameRow(*it->second, row)) {
      return Internal("two different events for target sequence " +
                      std::to_string(row.target_sequence) +
                      " in one mirror batch");
    }
  }
  std::vector<const MirrorRow*> rows;
  rows.reserve(by_sequence.size());
  for (auto& [seq, row] : by_sequence) rows.push_back(row);

  for (size_t begin = 0; begin < rows.size();
       begin += kMirrorRowsPerStatement) {
    size_t end = std::min(rows.size(), begin + kMirrorRowsPerStatement);
    MIGLEDGER_RETURN_IF_ERROR(InsertMirrorChunk(rows, begin, end));
  }
  return Status::Ok();
}

StatusOr<std::vector<MirrorRow>> PostgresDriver::ReadMirror(uint64_t after) {
  std::vector<MirrorRow> rows;
  if (after >= static_cast<uint64_t>(kPostgresMaxSequence)) return rows;
  auto res = Run("reading migledger.events",
                 "SELECT \"target_sequence\", \"event_bytes\", "
                 "\"leaf_hash\", \"chain_head\" "
                 "FROM \"migledger\".\"events\" "
                 "WHERE \"target_sequence\" > $1::bigint "
                 "ORDER BY \"target_sequence\"",
                 {{std::to_string(after)}}, true, Code::kTargetUnavailable);
  if (!res.ok()) return res.status();
  PGresult* r = res->get();
  rows.reserve(PQntuples(r));
  for (int i = 0; i < PQntuples(r); ++i) {
    auto row = DecodeMirrorRow(r, i);
    if (!row.ok()) return row.status();
    rows.push_back(std::move(row).value());
  }
  return rows;
}

StatusOr<uint64_t> PostgresDriver::MirrorHead() {
  auto res = Run("reading migledger.events",
                 "SELECT COALESCE(max(\"target_sequence\"), 0)::text "
                 "FROM \"migledger\".\"events\"",
                 {}, false, Code::kTargetUnavailable);
  if (!res.ok()) return res.status();
  uint64_t head = 0;
  if (!ParsePgUint64(PQgetvalue(res->get(), 0, 0), &head)) {
    return Internal("bad mirror head from " + Target());
  }
  return head;
}

std::string PostgresDriver::ByteaLiteral(const std::string& bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  static constexpr std::string_view kOpen = "E'\\\\x", kClose = "'::bytea";
  std::string out(kOpen.size() + bytes.size() * 2 + kClose.size(), '\0');
  char* p = std::copy(kOpen.begin(), kOpen.end(), out.data());
  for (unsigned char c : bytes) {
    *p++ = kHex[c >> 4];
    *p++ = kHex[c & 15];
  }
  std::copy(kClose.begin(), kClose.end(), p);
  return out;
}

bool PostgresDriver::SameRow(const MirrorRow& a, const MirrorRow& b) {
  return a.event_bytes == b.event_bytes && a.leaf_hash == b.leaf_hash &&
         a.chain_head == b.chain_head;
}

StatusOr<MirrorRow> PostgresDriver::DecodeMirrorRow(const PGresult* r,
                                                    int i) const {
  if (PQgetlength(r, i, 0) != 8) {
    return Internal("bad target_sequence from " + Target());
  }
  MirrorRow row;
  row.target_sequence = DecodeBigEndian64(PQgetvalue(r, i, 0));
  row.event_bytes.assign(PQgetvalue(r, i, 1), PQgetlength(r, i, 1));
  row.leaf_hash.assign(PQgetvalue(r, i, 2), PQgetlength(r, i, 2));
  row.chain_head.assign(PQgetvalue(r, i, 3), PQgetlength(r, i, 3));
  return row;
}

Status PostgresDriver::InsertMirrorChunk(
    const std::vector<const MirrorRow*>& rows, size_t begin, size_t end) {
  std::string sql =
      "INSERT INTO \"migledger\".\"events\" (\"target_sequence\", "
      "\"event_bytes\", \"leaf_hash\", \"chain_head\") VALUES ";
  std::vector<PgParam> params;
  params.reserve((end - begin) * 4);
  for (size_t i = begin; i < end; ++i) {
    size_t p = params.size();
    if (i > begin) sql += ", ";
    sql += "($" + std::to_string(p + 1) + "::bigint, $" +
           std::to_string(p + 2) + "::bytea, $" + std::to_string(p + 3) +
           "::bytea, $" + std::to_string(p + 4) + "::bytea)";
    params.push_back({std::to_string(rows[i]->target_sequence)});
    params.push_back({rows[i]->event_bytes, /*binary=*/true});
    params.push_back({rows[i]->leaf_hash, /*binary=*/true});
    params.push_back({rows[i]->chain_head, /*binary=*/true});
  }
  sql +=
      " ON CONFLICT (\"target_sequence\") DO NOTHING "
      "RETURNING \"target_sequence\"";
  auto res = Run("writing migledger.events", sql, params, false,
                 Code::kMigrationFailed);
  if (!res.ok()) return res.status();

  std::set<uint64_t> inserted;
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    uint64_t seq = 0;
    if (ParsePgUint64(PQgetvalue(res->get(), i, 0), &seq)) inserted.insert(seq);
  }
  if (inserted.size() == end - begin) return Status::Ok();
  return CheckExistingMirrorRows(rows, begin, end, inserted);
}

// A separate statement from the INSERT, so that it sees rows committed
// concurrently.
Status PostgresDriver::CheckExistingMirrorRows(
    const std::vector<const MirrorRow*>& rows, size_t begin, size_t end,
    const std::set<uint64_t>& inserted) {
  std::map<uint64_t, const MirrorRow*> wanted;
  std::string array = "{";
  for (size_t i = begin; i < end; ++i) {
    if (inserted.count(rows[i]->target_sequence) != 0) continue;
    if (!wanted.empty()) array += ",";
    array += std::to_string(rows[i]->target_sequence);
    wanted.emplace(rows[i]->target_sequence, rows[i]);
  }
  array += "}";
  auto existing = Run("reading migledger.events",
                      "SELECT \"target_sequence\", \"event_bytes\", "
                      "\"leaf_hash\", \"chain_head\" "
                      "FROM \"migledger\".\"events\" "
                      "WHERE \"target_sequence\" = ANY ($1::bigint[]) "
                      "ORDER BY \"target_sequence\"",
                      {{array}}, true, Code::kTargetUnavailable);
  if (!existing.ok()) return existing.status();
  PGresult* r = existing->get();
  for (int i = 0; i < PQntuples(r); ++i) {
    auto found = DecodeMirrorRow(r, i);
    if (!found.ok()) return found.status();
    auto it = wanted.find(found->target_sequence);
    if (it == wanted.end()) continue;
    const MirrorRow& ours = *it->second;
    if (!SameRow(*found, ours)) {
      std::string what =
          found->event_bytes != ours.event_bytes
              ? "the target holds different event bytes (" +
                    std::to_string(found->event_bytes.size()) +
                    " bytes, leaf " + HexPrefix(found->leaf_hash) +
                    ") than the ledger (" +
                    std::to_string(ours.event_bytes.size()) + " bytes, leaf " +
                    HexPrefix(ours.leaf_hash) + ")"
              : "the event bytes match but the stored hashes differ";
      return Drift("mirror fork at target sequence " +
                   std::to_string(ours.target_sequence) + " on " + Target() +
                   ": " + what);
    }
    wanted.erase(it);
  }
  if (!wanted.empty()) {
    return Internal("mirror row for target sequence " +
                    std::to_string(wanted.begin()->first) + " on " + Target() +
                    " was neither inserted nor found");
  }
  return Status::Ok();
}

std::string PostgresOfflineMarkerSql(const MarkerRow& row) {
  return "INSERT INTO \"migledger\".\"applied\" (version, checksum, "
         "attempt_id, applied_at) VALUES (" +
         StandardSqlLiteral(row.version) + ", " +
         StandardSqlLiteral(row.checksum) + ", " +
         StandardSqlLiteral(row.attempt_id) + ", now());";
}

}  // namespace migledger
