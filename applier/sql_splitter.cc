// Statement splitter for migration files.
//
// One linear pass over the bytes. Quoted strings, quoted identifiers, dollar
// quotes and comments are skipped as units (semicolons inside them are text);
// everything else is split into small tokens (words, single punctuation
// characters) that drive the per-dialect rules deciding whether a ';' ends
// the statement:
//
// PostgreSQL mirrors psql's lexer (src/fe_utils/psqlscan.l):
//   - a ';' inside parentheses does not end the statement
//     (CREATE RULE ... DO ALSO (INSERT ...; INSERT ...));
//   - in a statement that starts CREATE [OR REPLACE] FUNCTION|PROCEDURE,
//     BEGIN ... END outside parentheses nests (SQL-standard BEGIN ATOMIC
//     bodies), and CASE ... END inside such a body counts as well;
//   - E'...' strings take backslash escapes; plain '...' strings do not
//     (standard_conforming_strings = on, the default since 9.1);
//   - dollar quotes $tag$...$tag$ where the tag is empty or an identifier
//     without '$' (letters, digits, '_', bytes >= 0x80; not starting with a
//     digit). A '$' that continues an identifier (foo$$) or starts a
//     parameter ($1) is not a dollar quote. Inside a dollar quote only the
//     exact opening tag closes it;
//   - /* */ comments nest.
//
// SQLite mirrors sqlite3_complete() (src/complete.c), which is what the
// sqlite3 shell uses to decide where a statement ends:
//   - a statement that starts [EXPLAIN] CREATE [TEMP|TEMPORARY] TRIGGER only
//     ends at the ';' of a "; END ;" sequence (whitespace and comments
//     allowed in between). Trigger body statements always end with ';' and
//     never start with END, so CASE ... END inside the body and columns named
//     "end" cannot close the trigger early;
//   - [bracket] and `backtick` identifiers; no E'' strings, no dollar quotes;
//   - /* */ comments do not nest: the first */ closes.
//
// Both dialects: '' and "" (and `` in SQLite) double to escape themselves;
// -- comments run to the end of the line. Bytes are bytes: nothing here
// assumes UTF-8, and every read is bounds-checked so arbitrary input is safe.
#include "applier/sql_splitter.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace migledger {
namespace {

constexpr size_t kNpos = std::string_view::npos;

inline bool IsSpace(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}
inline bool IsDigit(unsigned char c) { return c >= '0' && c <= '9'; }
inline bool IsAlpha(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}
// PostgreSQL ident_start / dolq_start: [A-Za-z\200-\377_].
inline bool IsIdentStart(unsigned char c) {
  return IsAlpha(c) || c == '_' || c >= 0x80;
}
// PostgreSQL dolq_cont: [A-Za-z\200-\377_0-9].
inline bool IsDolqCont(unsigned char c) {
  return IsIdentStart(c) || IsDigit(c);
}
// PostgreSQL ident_cont: [A-Za-z\200-\377_0-9\$]; also SQLite's IdChar().
inline bool IsIdentCont(unsigned char c) { return IsDolqCont(c) || c == '$'; }

inline char ToLowerAscii(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// Case-insensitive comparison of `word` with the lowercase ASCII `lower`.
bool WordIs(std::string_view word, std::string_view lower) {
  if (word.size() != lower.size()) return false;
  for (size_t i = 0; i < word.size(); ++i) {
    if (ToLowerAscii(word[i]) != lower[i]) return false;
  }
  return true;
}

// Finds `needle` in `hay` at or after `from`. Short needles use the library
// search (memchr for the first byte); long ones use Knuth-Morris-Pratt so a
// hostile dollar-quote tag cannot make the scan O(n * tag length).
size_t FindLinear(std::string_view hay, std::string_view needle, size_t from) {
  if (needle.size() <= 16) return hay.find(needle, from);
  const size_t m = needle.size();
  std::vector<size_t> fail(m, 0);
  for (size_t i = 1, k = 0; i < m; ++i) {
    while (k > 0 && needle[i] != needle[k]) k = fail[k - 1];
    if (needle[i] == needle[k]) ++k;
    fail[i] = k;
  }
  for (size_t i = from, k = 0; i < hay.size(); ++i) {
    while (k > 0 && hay[i] != needle[k]) k = fail[k - 1];
    if (hay[i] == needle[k]) ++k;
    if (k == m) return i + 1 - m;
  }
  return kNpos;
}

// sqlite3_complete() states and tokens (src/complete.c). The whitespace token
// is a self-loop in every state, so it is never fed.
enum LiteState : uint8_t {
  kLiteInvalid = 0,
  kLiteStart,
  kLiteNormal,
  kLiteExplain,
  kLiteCreate,
  kLiteTrigger,
  kLiteSemi,
  kLiteEnd,
};
enum LiteToken : uint8_t {
  kTkSemi = 0,
  kTkWs,
  kTkOther,
  kTkExplain,
  kTkCreate,
  kTkTemp,
  kTkTrigger,
  kTkEnd,
};
constexpr uint8_t kLiteTrans[8][8] = {
    // SEMI WS OTHER EXPLAIN CREATE TEMP TRIGGER END
    {1, 0, 2, 3, 4, 2, 2, 2},  // INVALID
    {1, 1, 2, 3, 4, 2, 2, 2},  // START
    {1, 2, 2, 2, 2, 2, 2, 2},  // NORMAL
    {1, 3, 3, 2, 4, 2, 2, 2},  // EXPLAIN
    {1, 4, 2, 2, 2, 4, 5, 2},  // CREATE
    {6, 5, 5, 5, 5, 5, 5, 5},  // TRIGGER
    {6, 6, 5, 5, 5, 5, 5, 7},  // SEMI
    {1, 7, 5, 5, 5, 5, 5, 5},  // END
};

LiteToken ClassifyLiteWord(std::string_view w) {
  switch (w.size()) {
    case 3:
      if (WordIs(w, "end")) return kTkEnd;
      break;
    case 4:
      if (WordIs(w, "temp")) return kTkTemp;
      break;
    case 6:
      if (WordIs(w, "create")) return kTkCreate;
      break;
    case 7:
      if (WordIs(w, "explain")) return kTkExplain;
      if (WordIs(w, "trigger")) return kTkTrigger;
      break;
    case 9:
      if (WordIs(w, "temporary")) return kTkTemp;
      break;
    default:
      break;
  }
  return kTkOther;
}

std::string AtLine(std::string_view what, std::string_view sql, size_t pos) {
  return "unterminated " + std::string(what) + " starting at line " +
         std::to_string(LineOfOffset(sql, pos));
}

class Splitter {
 public:
  Splitter(std::string_view sql, SqlDialect dialect)
      : s_(sql), n_(sql.size()), pg_(dialect == SqlDialect::kPostgres) {}

  StatusOr<std::vector<SqlStatement>> Run() {
    size_t i = 0;
    while (i < n_) {
      const unsigned char c = static_cast<unsigned char>(s_[i]);
      if (IsSpace(c)) {
        ++i;
        continue;
      }
      if (c == '-' && i + 1 < n_ && s_[i + 1] == '-') {
        i = SkipLineComment(i + 2);
        continue;
      }
      if (c == '/' && i + 1 < n_ && s_[i + 1] == '*') {
        const size_t end = pg_ ? SkipNestedComment(i) : SkipFlatComment(i);
        if (end == kNpos) {
          return InvalidInput(AtLine("block comment", s_, i));
        }
        i = end;
        continue;
      }
      if (c == ';') {
        ++i;
        if (stmt_start_ == kNpos) continue;  // empty statement: nothing
        last_end_ = i;
        if (SemicolonEndsStatement()) Emit(i);
        continue;
      }

      // A significant token starts at i.
      if (stmt_start_ == kNpos) stmt_start_ = i;
      const size_t next = pg_ ? PgNext(i) : LiteNext(i);
      if (next == kNpos) return status_;
      i = next;
      last_end_ = i;
    }
    if (stmt_start_ != kNpos) Emit(last_end_);
    return std::move(out_);
  }

 private:
  // ---- Shared lexical helpers. Each returns the index just past the
  // construct, or kNpos when it is unterminated (status_ is then set by the
  // caller-facing token functions).

  size_t SkipLineComment(size_t i) const {
    // PostgreSQL ends a -- comment at \n or \r, sqlite at \n; either way the
    // terminator is whitespace and is left for the main loop.
    if (pg_) {
      while (i < n_ && s_[i] != '\n' && s_[i] != '\r') ++i;
      return i;
    }
    const void* p = std::memchr(s_.data() + i, '\n', n_ - i);
    return p == nullptr
               ? n_
               : static_cast<size_t>(static_cast<const char*>(p) - s_.data());
  }

  // PostgreSQL: /* nests. `i` is at the opening "/*".
  size_t SkipNestedComment(size_t i) const {
    size_t depth = 1;
    size_t j = i + 2;
    while (j + 1 < n_) {
      if (s_[j] == '/' && s_[j + 1] == '*') {
        ++depth;
        j += 2;
      } else if (s_[j] == '*' && s_[j + 1] == '/') {
        j += 2;
        if (--depth == 0) return j;
      } else {
        ++j;
      }
    }
    return kNpos;
  }

  // SQLite: the first */ after the opening "/*" closes.
  size_t SkipFlatComment(size_t i) const {
    const size_t close = s_.find("*/", i + 2);
    return close == kNpos ? kNpos : close + 2;
  }

  // A quoted run opened by s_[i] and closed by `close`; a doubled `close`
  // stands for itself. Used for '', "", `` and (with doubling irrelevant) [].
  size_t SkipQuoted(size_t i, char close) const {
    size_t j = i + 1;
    while (j < n_) {
      const void* p = std::memchr(s_.data() + j, close, n_ - j);
      if (p == nullptr) return kNpos;
      const size_t k =
          static_cast<size_t>(static_cast<const char*>(p) - s_.data());
      if (k + 1 < n_ && s_[k + 1] == close) {
        j = k + 2;
        continue;
      }
      return k + 1;
    }
    return kNpos;
  }

  // PostgreSQL E'...': backslash escapes the next byte, '' is a quote.
  size_t SkipEString(size_t i) const {
    size_t j = i + 1;
    while (j < n_) {
      const char c = s_[j];
      if (c == '\\') {
        j += 2;
      } else if (c == '\'') {
        if (j + 1 < n_ && s_[j + 1] == '\'') {
          j += 2;
        } else {
          return j + 1;
        }
      } else {
        ++j;
      }
    }
    return kNpos;
  }

  size_t Fail(std::string_view what, size_t pos) {
    status_ = InvalidInput(AtLine(what, s_, pos));
    return kNpos;
  }

  // ---- PostgreSQL tokens. Returns the index after the token.
  size_t PgNext(size_t i) {
    const unsigned char c = static_cast<unsigned char>(s_[i]);
    switch (c) {
      case '\'': {
        const size_t end = SkipQuoted(i, '\'');
        return end == kNpos ? Fail("quoted string", i) : end;
      }
      case '"': {
        const size_t end = SkipQuoted(i, '"');
        return end == kNpos ? Fail("quoted identifier", i) : end;
      }
      case '$':
        return PgDollar(i);
      case '(':
        ++paren_depth_;
        return i + 1;
      case ')':
        if (paren_depth_ > 0) --paren_depth_;
        return i + 1;
      default:
        break;
    }
    if (IsIdentStart(c)) return PgWord(i);
    if (IsDigit(c)) {
      // Numbers (and PG16's "junk" like 1abc): digits and '_' then an
      // optional identifier tail. A '$' right after digits is not consumed,
      // so "1$$" is a number followed by a dollar quote, as in the server.
      size_t j = i + 1;
      while (j < n_ && (IsDigit(s_[j]) || s_[j] == '_')) ++j;
      if (j < n_ && IsIdentStart(s_[j])) {
        while (j < n_ && IsIdentCont(s_[j])) ++j;
      }
      return j;
    }
    return i + 1;  // operator or other punctuation: one byte at a time
  }

  size_t PgDollar(size_t i) {
    size_t j = i + 1;
    if (j < n_ && IsIdentStart(s_[j])) {
      ++j;
      while (j < n_ && IsDolqCont(s_[j])) ++j;
    }
    if (j >= n_ || s_[j] != '$') {
      // $1 parameter, or "$abc" without a closing '$': psql treats the '$'
      // alone as an operator character and lexes the rest normally.
      return i + 1;
    }
    const std::string_view tag = s_.substr(i, j + 1 - i);
    const size_t close = FindLinear(s_, tag, j + 1);
    if (close == kNpos) return Fail("dollar-quoted string", i);
    return close + tag.size();
  }

  size_t PgWord(size_t i) {
    size_t j = i + 1;
    while (j < n_ && IsIdentCont(s_[j])) ++j;
    if (j - i == 1 && j < n_) {
      const char letter = ToLowerAscii(s_[i]);
      if (s_[j] == '\'') {
        if (letter == 'e') {
          const size_t end = SkipEString(j);
          return end == kNpos ? Fail("quoted string", i) : end;
        }
        if (letter == 'b' || letter == 'x' || letter == 'n') {
          // B'..', X'..', N'..': prefix of a plain string, not an identifier.
          const size_t end = SkipQuoted(j, '\'');
          return end == kNpos ? Fail("quoted string", i) : end;
        }
      } else if (letter == 'u' && s_[j] == '&' && j + 1 < n_ &&
                 (s_[j + 1] == '\'' || s_[j + 1] == '"')) {
        // U&'..' / U&"..": the main loop lexes '&' and the quote next.
        return j;
      }
    }
    OnPgIdentifier(s_.substr(i, j - i));
    return j;
  }

  // psql's BEGIN ... END heuristic for SQL-standard routine bodies.
  void OnPgIdentifier(std::string_view w) {
    if (ident_count_ < sizeof(idents_)) {
      char mark = 0;
      if (WordIs(w, "create")) {
        mark = 'c';
      } else if (WordIs(w, "function")) {
        mark = 'f';
      } else if (WordIs(w, "procedure")) {
        mark = 'p';
      } else if (WordIs(w, "or")) {
        mark = 'o';
      } else if (WordIs(w, "replace")) {
        mark = 'r';
      }
      idents_[ident_count_] = mark;
    }
    if (ident_count_ <= sizeof(idents_)) ++ident_count_;  // saturates
    const bool create_routine =
        idents_[0] == 'c' && (idents_[1] == 'f' || idents_[1] == 'p' ||
                              (idents_[1] == 'o' && idents_[2] == 'r' &&
                               (idents_[3] == 'f' || idents_[3] == 'p')));
    if (!create_routine || paren_depth_ != 0) return;
    if (w.size() == 5 && WordIs(w, "begin")) {
      ++begin_depth_;
    } else if (w.size() == 4 && WordIs(w, "case")) {
      // CASE also ends with END; only matters inside a BEGIN.
      if (begin_depth_ >= 1) ++begin_depth_;
    } else if (w.size() == 3 && WordIs(w, "end")) {
      if (begin_depth_ > 0) --begin_depth_;
    }
  }

  // ---- SQLite tokens. Returns the index after the token.
  size_t LiteNext(size_t i) {
    const unsigned char c = static_cast<unsigned char>(s_[i]);
    size_t end = i + 1;
    LiteToken token = kTkOther;
    switch (c) {
      case '\'':
        end = SkipQuoted(i, '\'');
        if (end == kNpos) return Fail("quoted string", i);
        break;
      case '"':
        end = SkipQuoted(i, '"');
        if (end == kNpos) return Fail("quoted identifier", i);
        break;
      case '`':
        end = SkipQuoted(i, '`');
        if (end == kNpos) return Fail("quoted identifier", i);
        break;
      case '[': {
        const void* p = std::memchr(s_.data() + i + 1, ']', n_ - i - 1);
        if (p == nullptr) return Fail("quoted identifier", i);
        end = static_cast<size_t>(static_cast<const char*>(p) - s_.data()) + 1;
        break;
      }
      default:
        if (IsIdentCont(c)) {
          while (end < n_ && IsIdentCont(s_[end])) ++end;
          token = ClassifyLiteWord(s_.substr(i, end - i));
        }
        break;
    }
    lite_ = static_cast<LiteState>(kLiteTrans[lite_][token]);
    return end;
  }

  bool SemicolonEndsStatement() {
    if (pg_) return paren_depth_ == 0 && begin_depth_ == 0;
    lite_ = static_cast<LiteState>(kLiteTrans[lite_][kTkSemi]);
    return lite_ == kLiteStart;
  }

  void Emit(size_t end) {
    SqlStatement st;
    st.text.assign(s_.data() + stmt_start_, end - stmt_start_);
    st.offset = stmt_start_;
    // Statement starts only move forward, so line counting stays linear.
    line_ += std::count(s_.data() + line_pos_, s_.data() + stmt_start_, '\n');
    line_pos_ = stmt_start_;
    st.first_line = static_cast<int>(
        std::min<int64_t>(line_, std::numeric_limits<int>::max()));
    out_.push_back(std::move(st));

    stmt_start_ = kNpos;
    paren_depth_ = 0;
    begin_depth_ = 0;
    ident_count_ = 0;
    std::memset(idents_, 0, sizeof(idents_));
    lite_ = kLiteStart;
  }

  const std::string_view s_;
  const size_t n_;
  const bool pg_;
  Status status_;

  size_t stmt_start_ = kNpos;  // first significant byte of the statement
  size_t last_end_ = 0;        // end of the last significant token
  size_t line_pos_ = 0;        // line_ is the line of byte line_pos_
  int64_t line_ = 1;

  // PostgreSQL (psql) state.
  size_t paren_depth_ = 0;
  size_t begin_depth_ = 0;
  size_t ident_count_ = 0;
  char idents_[4] = {0, 0, 0, 0};

  // SQLite (sqlite3_complete) state.
  LiteState lite_ = kLiteStart;

  std::vector<SqlStatement> out_;
};

}  // namespace

size_t SkipSpaceAndComments(std::string_view s, size_t i) {
  const size_t n = s.size();
  while (i < n) {
    if (IsSpace(static_cast<unsigned char>(s[i]))) {
      ++i;
    } else if (s[i] == '-' && i + 1 < n && s[i + 1] == '-') {
      while (i < n && s[i] != '\n') ++i;
    } else if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
      size_t depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (i + 1 < n && s[i] == '/' && s[i + 1] == '*') {
          ++depth;
          i += 2;
        } else if (i + 1 < n && s[i] == '*' && s[i + 1] == '/') {
          --depth;
          i += 2;
        } else {
          ++i;
        }
      }
    } else {
      break;
    }
  }
  return i;
}

namespace {

// Reads the next word (identifier characters) after whitespace/comments.
std::string_view NextWord(std::string_view s, size_t* pos) {
  size_t i = SkipSpaceAndComments(s, *pos);
  const size_t start = i;
  while (i < s.size() && IsIdentCont(static_cast<unsigned char>(s[i]))) ++i;
  *pos = i;
  return s.substr(start, i - start);
}

}  // namespace

StatusOr<std::vector<SqlStatement>> SplitSql(std::string_view sql,
                                             SqlDialect dialect) {
  return Splitter(sql, dialect).Run();
}

StatusOr<std::vector<SqlStatement>> SplitMigrationFile(std::string_view text,
                                                       SqlDialect dialect) {
  if (!StartsWithUtf8Bom(text)) return SplitSql(text, dialect);
  auto statements = SplitSql(text.substr(3), dialect);
  if (statements.ok()) {
    for (SqlStatement& s : *statements) s.offset += 3;
  }
  return statements;
}

int LineOfOffset(std::string_view text, size_t offset) {
  const size_t end = std::min(offset, text.size());
  const auto newlines = std::count(text.data(), text.data() + end, '\n');
  return static_cast<int>(std::min<int64_t>(int64_t{1} + newlines,
                                            std::numeric_limits<int>::max()));
}

bool IsTransactionControl(std::string_view statement) {
  size_t pos = 0;
  const std::string_view first = NextWord(statement, &pos);
  if (WordIs(first, "begin")) {
    // BEGIN [WORK|TRANSACTION] [modes], SQLite BEGIN DEFERRED|IMMEDIATE|
    // EXCLUSIVE: all open a transaction. BEGIN ATOMIC opens a routine body.
    return !WordIs(NextWord(statement, &pos), "atomic");
  }
  if (WordIs(first, "start")) {
    return WordIs(NextWord(statement, &pos), "transaction");
  }
  if (WordIs(first, "commit") || WordIs(first, "end") ||
      WordIs(first, "abort")) {
    return true;
  }
  if (WordIs(first, "rollback")) {
    // ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] x only rewinds a savepoint.
    std::string_view next = NextWord(statement, &pos);
    if (WordIs(next, "work") || WordIs(next, "transaction")) {
      next = NextWord(statement, &pos);
    }
    return !WordIs(next, "to");
  }
  return false;
}

bool IsPlainCommit(std::string_view statement) {
  size_t pos = 0;
  const std::string_view first = NextWord(statement, &pos);
  if (!WordIs(first, "commit") && !WordIs(first, "end")) return false;
  std::string_view next = NextWord(statement, &pos);
  if (WordIs(next, "work") || WordIs(next, "transaction")) {
    next = NextWord(statement, &pos);
  }
  if (WordIs(next, "and")) {
    if (!WordIs(NextWord(statement, &pos), "no") ||
        !WordIs(NextWord(statement, &pos), "chain")) {
      return false;
    }
    next = NextWord(statement, &pos);
  }
  if (!next.empty()) return false;
  pos = SkipSpaceAndComments(statement, pos);
  if (pos < statement.size() && statement[pos] == ';') {
    pos = SkipSpaceAndComments(statement, pos + 1);
  }
  return pos >= statement.size();
}

bool IsDropStatement(std::string_view statement) {
  size_t pos = 0;
  return WordIs(NextWord(statement, &pos), "drop");
}

bool IsSessionSetting(std::string_view statement) {
  size_t pos = 0;
  const std::string_view first = NextWord(statement, &pos);
  if (WordIs(first, "reset")) return true;
  if (!WordIs(first, "set")) return false;
  const std::string_view next = NextWord(statement, &pos);
  return !WordIs(next, "local") && !WordIs(next, "transaction") &&
         !WordIs(next, "constraints");
}

bool OpensTransaction(std::string_view statement) {
  size_t pos = 0;
  const std::string_view first = NextWord(statement, &pos);
  return IsTransactionControl(statement) &&
         (WordIs(first, "begin") || WordIs(first, "start"));
}

bool IsRollback(std::string_view statement) {
  size_t pos = 0;
  const std::string_view first = NextWord(statement, &pos);
  return IsTransactionControl(statement) &&
         (WordIs(first, "rollback") || WordIs(first, "abort"));
}

}  // namespace migledger
