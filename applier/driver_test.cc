#include "applier/driver.h"

#include <gtest/gtest.h>

namespace migledger {
namespace {

// The marker row an offline script inserts: each driver's table and clock,
// the values quoted as standard SQL literals.
TEST(OfflineMarkerSqlTest, InsertsIntoEachDriversTableWithItsClock) {
  const MarkerRow row{"0002", "ab12", "offline:run-1", ""};
  EXPECT_EQ(OfflineMarkerSql(SqlDialect::kPostgres, row),
            "INSERT INTO \"migledger\".\"applied\" (version, checksum, "
            "attempt_id, applied_at) VALUES ('0002', 'ab12', 'offline:run-1', "
            "now());");
  EXPECT_EQ(OfflineMarkerSql(SqlDialect::kSqlite, row),
            "INSERT INTO \"migledger_applied\" (version, checksum, "
            "attempt_id, applied_at) VALUES ('0002', 'ab12', 'offline:run-1', "
            "strftime('%Y-%m-%dT%H:%M:%fZ','now'));");
}

TEST(StandardSqlLiteralTest, DoublesQuotesAndKeepsTheRest) {
  EXPECT_EQ(StandardSqlLiteral(""), "''");
  EXPECT_EQ(StandardSqlLiteral("it's"), "'it''s'");
  EXPECT_EQ(StandardSqlLiteral("a\\b\"c"), "'a\\b\"c'");
}

}  // namespace
}  // namespace migledger
