#include "applier/create_index_statement.h"

#include <cctype>

#include "applier/sql_splitter.h"

namespace migledger {
namespace {

// One identifier or keyword: a "quoted" one as written inside its quotes
// ("" read as "), an unquoted one folded to lower case (ASCII letters, as
// the server folds them in UTF-8). Sets *quoted; "" at anything else.
std::string NextIdentifier(std::string_view s, size_t* pos, bool* quoted) {
  size_t i = SkipSpaceAndComments(s, *pos);
  std::string out;
  *quoted = false;
  if (i < s.size() && s[i] == '"') {
    *quoted = true;
    for (++i; i < s.size(); ++i) {
      if (s[i] == '"') {
        if (i + 1 < s.size() && s[i + 1] == '"') {
          out += '"';
          ++i;
          continue;
        }
        *pos = i + 1;
        return out;
      }
      out += s[i];
    }
    return "";  // unterminated
  }
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (!(std::isalnum(c) || c == '_' || c == '$' || c >= 0x80)) break;
    out += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    ++i;
  }
  *pos = i;
  return out;
}

std::string QuoteIdentifier(const std::string& name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::optional<CreateIndexConcurrently> ParseCreateIndexConcurrently(
    std::string_view statement) {
  size_t pos = 0;
  bool quoted = false;
  auto keyword = [&](const char* word) {
    size_t at = pos;
    bool q = false;
    if (NextIdentifier(statement, &at, &q) != word || q) return false;
    pos = at;
    return true;
  };
  if (!keyword("create")) return std::nullopt;
  (void)keyword("unique");
  if (!keyword("index") || !keyword("concurrently")) return std::nullopt;
  if (keyword("if")) {
    if (!keyword("not") || !keyword("exists")) return std::nullopt;
  }
  CreateIndexConcurrently out;
  {
    size_t at = pos;
    out.index = NextIdentifier(statement, &at, &quoted);
    if (out.index.empty() || (!quoted && out.index == "on")) {
      return std::nullopt;  // no name: the server makes one up
    }
    pos = at;
  }
  if (!keyword("on")) return std::nullopt;
  (void)keyword("only");
  for (;;) {
    std::string part = NextIdentifier(statement, &pos, &quoted);
    if (part.empty()) return std::nullopt;
    if (!out.table.empty()) out.table += '.';
    out.table += QuoteIdentifier(part);
    pos = SkipSpaceAndComments(statement, pos);
    if (pos >= statement.size() || statement[pos] != '.') break;
    ++pos;
  }
  return out;
}

}  // namespace migledger
