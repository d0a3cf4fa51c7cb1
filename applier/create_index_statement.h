// What a CREATE INDEX CONCURRENTLY statement names, read as the PostgreSQL
// server reads names. Internal to applier/ (the PostgreSQL driver finds the
// invalid index an interrupted build left with it).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace migledger {

// What a CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name ON [ONLY]
// table ... statement names: the index (as the server stores the name:
// unquoted names folded to lower case) and the table, as a qualified name
// whose parts are quoted, for to_regclass(). nullopt for any other
// statement, and for one that leaves the index's name to the server.
//   CREATE INDEX CONCURRENTLY Idx ON app.t (a)   -> {"idx", "\"app\".\"t\""}
struct CreateIndexConcurrently {
  std::string index;
  std::string table;
};
std::optional<CreateIndexConcurrently> ParseCreateIndexConcurrently(
    std::string_view statement);

}  // namespace migledger
