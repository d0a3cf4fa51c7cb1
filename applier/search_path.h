// search_path values, read as the PostgreSQL server reads them. Internal
// to applier/ (the PostgreSQL driver sets a session's path from them).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace migledger {

// A search_path value (as current_setting('search_path') prints it) as the
// list of a SET statement: each schema name as a string literal, so
// `SET search_path TO <list>` sets the same path. "" when an element is not
// one this copies exactly: an unquoted name that is not lower-case ASCII
// (the server folds its case by rules of its encoding), a quoted one holding
// ' or \, or a value that does not parse. The caller then keeps
// set_config().
//   public             -> 'public'
//   app, "My Schema"   -> 'app', 'My Schema'
//   "a""b"             -> 'a"b'
std::string SearchPathSetList(std::string_view search_path);

// A search_path value without its "$user" entries (quoted, or unquoted in
// any case), the other entries as written, joined by ", "; nullopt when the
// value does not parse.
//   "$user", public        -> public
//   "a, b", $USER, "x"     -> "a, b", "x"
//   "$user"                -> (empty)
std::optional<std::string> SearchPathWithoutUser(std::string_view search_path);

}  // namespace migledger
