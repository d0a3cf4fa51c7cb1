// Splits a migration file into statements the way psql / sqlite3 would.
//
// Knows single and double quotes, E'' strings with backslash escapes,
// dollar quoting with tags (PostgreSQL), -- and nested /* */ comments,
// semicolons inside any of these, and SQLite trigger bodies
// (CREATE TRIGGER ... BEGIN ...; ...; END;). A last statement without a
// trailing semicolon is kept; empty and comment-only input gives no
// statements.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace migledger {

enum class SqlDialect { kPostgres, kSqlite };

// True when `text` begins with the UTF-8 byte order mark (EF BB BF).
inline bool StartsWithUtf8Bom(std::string_view text) {
  return text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF";
}

struct SqlStatement {
  // The statement text from its first significant character through its
  // terminating semicolon (inclusive) or end of input. Comments that precede
  // the statement are not part of it; comments inside it are kept.
  std::string text;
  size_t offset = 0;   // byte offset of text[0] in the input
  int first_line = 1;  // 1-based line of text[0] in the input
};

// On success returns the statements in order. Returns kInvalidInput naming
// the line where an unterminated quote, dollar quote or comment starts.
StatusOr<std::vector<SqlStatement>> SplitSql(std::string_view sql,
                                             SqlDialect dialect);

// SplitSql of a migration file's text. A UTF-8 byte order mark at its start
// (editors on Windows write one) is not SQL and is skipped, as psql skips
// it; the statements' offsets still count it.
StatusOr<std::vector<SqlStatement>> SplitMigrationFile(std::string_view text,
                                                       SqlDialect dialect);

// 1-based line number of byte `offset` in `text`.
int LineOfOffset(std::string_view text, size_t offset);

// True when the statement is transaction control that a migration must not
// issue itself inside the tool's transaction: BEGIN, START TRANSACTION,
// COMMIT, END, ROLLBACK (not ROLLBACK TO SAVEPOINT), ABORT. Case-insensitive,
// leading comments/whitespace ignored. "BEGIN" as the start of a PL/pgSQL or
// trigger body is not a statement of its own, so it never reaches here.
bool IsTransactionControl(std::string_view statement);

// True when the statement ends the open transaction by committing it and
// does nothing else: COMMIT or END [WORK | TRANSACTION] [AND NO CHAIN] (not
// COMMIT AND CHAIN, COMMIT PREPARED). Same rules as IsTransactionControl.
bool IsPlainCommit(std::string_view statement);

// True when the statement is a DROP of some object (DROP TABLE, DROP INDEX
// CONCURRENTLY...). Same rules as IsTransactionControl.
bool IsDropStatement(std::string_view statement);

// True when the statement changes the session beyond its transaction
// (PostgreSQL): SET [SESSION] ..., SET ROLE, SET SESSION AUTHORIZATION,
// SET SESSION CHARACTERISTICS, RESET ...; not SET LOCAL, SET TRANSACTION
// or SET CONSTRAINTS. Same rules as IsTransactionControl.
bool IsSessionSetting(std::string_view statement);

// The offset of the first byte at or after `i` in `s` that is neither
// whitespace nor inside a comment (-- to the end of the line, /* */ nested
// as PostgreSQL reads them; an unterminated one runs to the end).
size_t SkipSpaceAndComments(std::string_view s, size_t i);

// True for BEGIN / START TRANSACTION (a transaction opens), and for
// ROLLBACK / ABORT that end one (not ROLLBACK TO SAVEPOINT).
bool OpensTransaction(std::string_view statement);
bool IsRollback(std::string_view statement);

}  // namespace migledger
