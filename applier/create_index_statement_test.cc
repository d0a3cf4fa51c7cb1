#include "applier/create_index_statement.h"

#include <gtest/gtest.h>

namespace migledger {
namespace {

// The index and table a CREATE INDEX CONCURRENTLY names, as the server
// reads the names; nothing for other statements or an unnamed index.
TEST(ParseCreateIndexConcurrentlyTest, NamesIndexAndTable) {
  struct Case {
    const char* sql;
    const char* index;
    const char* table;
  };
  for (const Case& c : {
           Case{"CREATE INDEX CONCURRENTLY Idx ON t (a);", "idx", "\"t\""},
           Case{"create unique index concurrently if not exists \"A\"\"b\" "
                "on only App.\"T x\" using btree (a)",
                "A\"b", "\"app\".\"T x\""},
           Case{"CREATE INDEX /* c */ CONCURRENTLY i -- why\n ON s . t(a)", "i",
                "\"s\".\"t\""},
       }) {
    SCOPED_TRACE(c.sql);
    const auto parsed = ParseCreateIndexConcurrently(c.sql);
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(parsed->index, c.index);
    EXPECT_EQ(parsed->table, c.table);
  }
  for (const char* sql :
       {"CREATE INDEX i ON t (a);", "CREATE INDEX CONCURRENTLY ON t (a);",
        "DROP INDEX CONCURRENTLY i;", "CREATE TABLE t (a int);", ""}) {
    EXPECT_FALSE(ParseCreateIndexConcurrently(sql).has_value()) << sql;
  }
}

}  // namespace
}  // namespace migledger
