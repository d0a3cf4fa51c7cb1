#include "applier/sql_splitter.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace migledger {
namespace {

// gtest-only substring check (the test binary does not link gmock).
::testing::AssertionResult Contains(const std::string& haystack,
                                    const std::string& needle) {
  if (haystack.find(needle) != std::string::npos) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << '"' << haystack << "\" does not contain \"" << needle << '"';
}

constexpr SqlDialect kPg = SqlDialect::kPostgres;
constexpr SqlDialect kLite = SqlDialect::kSqlite;

// Checks the invariants every successful split must satisfy and returns the
// statement texts.
std::vector<std::string> Split(std::string_view sql, SqlDialect dialect) {
  auto result = SplitSql(sql, dialect);
  EXPECT_TRUE(result.ok()) << result.status().ToString();
  if (!result.ok()) return {};
  std::vector<std::string> texts;
  size_t previous_end = 0;
  for (const SqlStatement& st : *result) {
    EXPECT_FALSE(st.text.empty());
    EXPECT_LE(previous_end, st.offset);
    EXPECT_LE(st.offset + st.text.size(), sql.size());
    EXPECT_EQ(sql.substr(st.offset, st.text.size()), st.text);
    EXPECT_EQ(st.first_line, LineOfOffset(sql, st.offset));
    previous_end = st.offset + st.text.size();
    texts.push_back(st.text);
  }
  return texts;
}

using Texts = std::vector<std::string>;

// Returns the error message of a split that must fail with kInvalidInput.
std::string SplitError(std::string_view sql, SqlDialect dialect) {
  auto result = SplitSql(sql, dialect);
  EXPECT_FALSE(result.ok());
  if (result.ok()) return "";
  EXPECT_EQ(result.status().code(), Code::kInvalidInput);
  return result.status().message();
}

// ---------------------------------------------------------------------------
// Both dialects: basics.

class BothDialects : public ::testing::TestWithParam<SqlDialect> {};

INSTANTIATE_TEST_SUITE_P(Dialects, BothDialects, ::testing::Values(kPg, kLite),
                         [](const auto& info) {
                           return info.param == kPg ? std::string("Postgres")
                                                    : std::string("Sqlite");
                         });

TEST_P(BothDialects, EmptyInputGivesNoStatements) {
  EXPECT_EQ(Split("", GetParam()), Texts{});
}

TEST_P(BothDialects, WhitespaceOnlyInputGivesNoStatements) {
  EXPECT_EQ(Split(" \t\r\n\f\v\n  ", GetParam()), Texts{});
}

// A UTF-8 byte order mark at the start of a migration file is skipped (psql
// skips it too); the statement's offset still counts it. SplitSql itself
// leaves bytes alone: a statement's text split again is that statement.
TEST_P(BothDialects, LeadingByteOrderMarkIsNotPartOfTheFirstStatement) {
  const std::string sql =
      "\xEF\xBB\xBF"
      "CREATE TABLE a (id int);\r\nSELECT 1;";
  auto statements = SplitMigrationFile(sql, GetParam());
  ASSERT_TRUE(statements.ok());
  ASSERT_EQ(statements->size(), 2u);
  EXPECT_EQ((*statements)[0].text, "CREATE TABLE a (id int);");
  EXPECT_EQ((*statements)[0].offset, 3u);
  EXPECT_EQ((*statements)[0].first_line, 1);
  EXPECT_EQ((*statements)[1].text, "SELECT 1;");
  EXPECT_EQ(sql.substr((*statements)[1].offset, 9), "SELECT 1;");
  EXPECT_EQ((*statements)[1].first_line, 2);
  auto only_mark = SplitMigrationFile("\xEF\xBB\xBF", GetParam());
  ASSERT_TRUE(only_mark.ok());
  EXPECT_TRUE(only_mark->empty());
  // SplitSql keeps the bytes, and so does a mark that is not at the start.
  EXPECT_EQ(Split(sql, GetParam()), (Texts{"\xEF\xBB\xBF"
                                           "CREATE TABLE a (id int);",
                                           "SELECT 1;"}));
  auto later = SplitMigrationFile("SELECT 1;\xEF\xBB\xBFSELECT 2;", GetParam());
  ASSERT_TRUE(later.ok());
  ASSERT_EQ(later->size(), 2u);
  EXPECT_EQ((*later)[1].text, "\xEF\xBB\xBFSELECT 2;");
}

TEST_P(BothDialects, CommentOnlyInputGivesNoStatements) {
  EXPECT_EQ(Split("-- one\n/* two; */\n-- three;", GetParam()), Texts{});
}

TEST_P(BothDialects, BareSemicolonsGiveNoStatements) {
  EXPECT_EQ(Split(";;\n ; -- x\n;/* y */;", GetParam()), Texts{});
}

TEST_P(BothDialects, EmptyStatementsBetweenRealOnesAreDropped) {
  EXPECT_EQ(Split("SELECT 1;;; SELECT 2;", GetParam()),
            (Texts{"SELECT 1;", "SELECT 2;"}));
}

TEST_P(BothDialects, SplitsSimpleStatements) {
  EXPECT_EQ(Split("CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n",
                  GetParam()),
            (Texts{"CREATE TABLE a (id int);", "INSERT INTO a VALUES (1);"}));
}

TEST_P(BothDialects, LastStatementWithoutSemicolonIsKept) {
  EXPECT_EQ(Split("SELECT 1; SELECT 2", GetParam()),
            (Texts{"SELECT 1;", "SELECT 2"}));
}

TEST_P(BothDialects,
       TrailingWhitespaceAndCommentsAfterLastStatementAreDropped) {
  EXPECT_EQ(Split("SELECT 2  \n-- done\n/* really */\n", GetParam()),
            (Texts{"SELECT 2"}));
}

TEST_P(BothDialects, LeadingCommentsAreNotPartOfStatement) {
  EXPECT_EQ(Split("-- header;\n/* block; */\n  SELECT 1;", GetParam()),
            (Texts{"SELECT 1;"}));
}

TEST_P(BothDialects, CommentsInsideStatementAreKept) {
  EXPECT_EQ(Split("SELECT 1 -- one;\n + /* two; */ 2;\nSELECT 3;", GetParam()),
            (Texts{"SELECT 1 -- one;\n + /* two; */ 2;", "SELECT 3;"}));
}

TEST_P(BothDialects, CommentBetweenStatementsBelongsToNeither) {
  EXPECT_EQ(Split("SELECT 1; -- about two\nSELECT 2;", GetParam()),
            (Texts{"SELECT 1;", "SELECT 2;"}));
}

TEST_P(BothDialects, OffsetAndFirstLinePointAtFirstSignificantChar) {
  const std::string sql = "-- c\n\n  SELECT 1;\n/* x\n */ SELECT\n2;";
  auto result = SplitSql(sql, GetParam());
  ASSERT_TRUE(result.ok());
  ASSERT_EQ(result->size(), 2u);
  EXPECT_EQ((*result)[0].offset, sql.find("SELECT 1"));
  EXPECT_EQ((*result)[0].first_line, 3);
  EXPECT_EQ((*result)[1].offset, sql.find("SELECT\n2"));
  EXPECT_EQ((*result)[1].first_line, 5);
  EXPECT_EQ((*result)[1].text, "SELECT\n2;");
}

TEST_P(BothDialects, FirstLineCountsCrLfLineEndings) {
  const std::string sql = "SELECT 1;\r\n\r\nSELECT 2;\r\n";
  auto result = SplitSql(sql, GetParam());
  ASSERT_TRUE(result.ok());
  ASSERT_EQ(result->size(), 2u);
  EXPECT_EQ((*result)[1].first_line, 3);
  EXPECT_EQ((*result)[1].text, "SELECT 2;");
}

TEST_P(BothDialects, SemicolonInsideSingleQuotesDoesNotSplit) {
  EXPECT_EQ(Split("INSERT INTO t VALUES ('a;b'); SELECT 1;", GetParam()),
            (Texts{"INSERT INTO t VALUES ('a;b');", "SELECT 1;"}));
}

TEST_P(BothDialects, DoubledSingleQuoteDoesNotEndString) {
  EXPECT_EQ(Split("SELECT 'it''s; fine'; SELECT 2;", GetParam()),
            (Texts{"SELECT 'it''s; fine';", "SELECT 2;"}));
}

TEST_P(BothDialects, BackslashIsNotAnEscapeInPlainString) {
  EXPECT_EQ(Split("SELECT 'C:\\'; SELECT 'x;';", GetParam()),
            (Texts{"SELECT 'C:\\';", "SELECT 'x;';"}));
}

TEST_P(BothDialects, SemicolonInsideDoubleQuotedIdentifierDoesNotSplit) {
  EXPECT_EQ(
      Split("CREATE TABLE \"a;b\" (\"c\"\"d;\" int); SELECT 1;", GetParam()),
      (Texts{"CREATE TABLE \"a;b\" (\"c\"\"d;\" int);", "SELECT 1;"}));
}

TEST_P(BothDialects, CommentMarkersInsideStringsAreText) {
  EXPECT_EQ(Split("SELECT '--', '/*'; SELECT 2;", GetParam()),
            (Texts{"SELECT '--', '/*';", "SELECT 2;"}));
}

TEST_P(BothDialects, QuotesInsideCommentsAreText) {
  EXPECT_EQ(Split("SELECT 1; -- don't\n/* \"oops */ SELECT 2;", GetParam()),
            (Texts{"SELECT 1;", "SELECT 2;"}));
}

TEST_P(BothDialects, LineCommentHidesSemicolon) {
  EXPECT_EQ(Split("SELECT 1 -- ; not the end\n;", GetParam()),
            (Texts{"SELECT 1 -- ; not the end\n;"}));
}

TEST_P(BothDialects, SingleDashAndSlashAreOperators) {
  EXPECT_EQ(Split("SELECT 4 - 2 / 1; SELECT -1;", GetParam()),
            (Texts{"SELECT 4 - 2 / 1;", "SELECT -1;"}));
}

TEST_P(BothDialects, CommentOnLastLineWithoutNewline) {
  EXPECT_EQ(Split("SELECT 1; -- tail", GetParam()), (Texts{"SELECT 1;"}));
}

TEST_P(BothDialects, UnterminatedSingleQuoteNamesItsLine) {
  const std::string msg =
      SplitError("SELECT 1;\nSELECT 2;\nSELECT 'oops;\n\n", GetParam());
  EXPECT_TRUE(Contains(msg, "unterminated quoted string"));
  EXPECT_TRUE(Contains(msg, "line 3"));
}

TEST_P(BothDialects, UnterminatedDoubleQuoteNamesItsLine) {
  const std::string msg = SplitError("\nSELECT \"oops;\n", GetParam());
  EXPECT_TRUE(Contains(msg, "unterminated quoted identifier"));
  EXPECT_TRUE(Contains(msg, "line 2"));
}

TEST_P(BothDialects, UnterminatedBlockCommentNamesItsLine) {
  const std::string msg = SplitError("SELECT 1;\n\n/* oops\n;", GetParam());
  EXPECT_EQ(msg, "unterminated block comment starting at line 3");
}

TEST_P(BothDialects, SlashStarSlashDoesNotCloseComment) {
  EXPECT_TRUE(Contains(SplitError("/*/ SELECT 1;", GetParam()),
                       "unterminated block comment"));
}

TEST_P(BothDialects, StarsBeforeCloseAreFine) {
  EXPECT_EQ(Split("/***/ SELECT 1; /** doc **/ SELECT 2;", GetParam()),
            (Texts{"SELECT 1;", "SELECT 2;"}));
}

TEST_P(BothDialects, NonUtf8BytesAreJustBytes) {
  const std::string sql = "SELECT '\xff\xfe;\x80'; SELECT \xc3\xa9\xfe;\xa0";
  EXPECT_EQ(Split(sql, GetParam()),
            (Texts{"SELECT '\xff\xfe;\x80';", "SELECT \xc3\xa9\xfe;", "\xa0"}));
}

TEST_P(BothDialects, NulBytesAreJustBytes) {
  const std::string sql("SELECT '\0;'; SELECT \0;", 22);
  EXPECT_EQ(Split(sql, GetParam()), (Texts{std::string("SELECT '\0;';", 12),
                                           std::string("SELECT \0;", 9)}));
}

TEST_P(BothDialects, KeywordsInsideLongerIdentifiersAreIgnored) {
  EXPECT_EQ(Split("CREATE TABLE trigger_begin_end (begin_at int, "
                  "backend text); SELECT 1;",
                  GetParam()),
            (Texts{"CREATE TABLE trigger_begin_end (begin_at int, "
                   "backend text);",
                   "SELECT 1;"}));
}

TEST_P(BothDialects, TransactionControlStatementsAreSeparate) {
  EXPECT_EQ(Split("BEGIN;\nCREATE TABLE t (x int);\nCOMMIT;\nEND;", GetParam()),
            (Texts{"BEGIN;", "CREATE TABLE t (x int);", "COMMIT;", "END;"}));
}

// ---------------------------------------------------------------------------
// PostgreSQL.

TEST(SplitSqlPostgres, EStringBackslashEscapesQuote) {
  EXPECT_EQ(Split("SELECT E'it\\'s;'; SELECT 2;", kPg),
            (Texts{"SELECT E'it\\'s;';", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, LowercaseEStringBackslashEscapesQuote) {
  EXPECT_EQ(Split("SELECT e'a\\';b'; SELECT 2;", kPg),
            (Texts{"SELECT e'a\\';b';", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, EStringEscapedBackslashBeforeClosingQuote) {
  EXPECT_EQ(Split("SELECT E'dir\\\\'; SELECT 2;", kPg),
            (Texts{"SELECT E'dir\\\\';", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, EStringAcceptsDoubledQuoteToo) {
  EXPECT_EQ(Split("SELECT E'a''b\\';c'; SELECT 2;", kPg),
            (Texts{"SELECT E'a''b\\';c';", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, IdentifierEndingInEIsNotAnEStringPrefix) {
  // "typE" is an identifier; the string after it is a plain string.
  EXPECT_EQ(Split("SELECT typE'a\\'; SELECT 2;", kPg),
            (Texts{"SELECT typE'a\\';", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, OtherStringPrefixesArePlainStrings) {
  EXPECT_EQ(Split("SELECT B'1;', X'ff;', N'n\\', U&'\\0041;'; SELECT 2;", kPg),
            (Texts{"SELECT B'1;', X'ff;', N'n\\', U&'\\0041;';", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, UnterminatedEStringWithEscapedQuoteIsAnError) {
  EXPECT_EQ(SplitError("SELECT 1;\nSELECT E'abc\\';", kPg),
            "unterminated quoted string starting at line 2");
}

TEST(SplitSqlPostgres, DollarQuotedFunctionBodyKeepsInnerSemicolons) {
  const std::string fn =
      "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n"
      "BEGIN\n  PERFORM 1;\n  RETURN 2;\nEND;\n$$;";
  EXPECT_EQ(Split(fn + "\nSELECT f();", kPg), (Texts{fn, "SELECT f();"}));
}

TEST(SplitSqlPostgres, TaggedDollarQuoteKeepsInnerSemicolons) {
  const std::string fn =
      "CREATE OR REPLACE FUNCTION g() RETURNS void AS $body$\n"
      "BEGIN RAISE NOTICE 'x;'; END;\n$body$ LANGUAGE plpgsql;";
  EXPECT_EQ(Split(fn + "SELECT 1;", kPg), (Texts{fn, "SELECT 1;"}));
}

TEST(SplitSqlPostgres, DifferentTagInsideDollarQuoteIsJustText) {
  const std::string fn =
      "CREATE FUNCTION h() RETURNS void AS $body$\n"
      "BEGIN\n"
      "  EXECUTE $fn$ CREATE FUNCTION i() RETURNS int AS $$ SELECT 1; $$ "
      "LANGUAGE sql; $fn$;\n"
      "END;\n"
      "$body$ LANGUAGE plpgsql;";
  EXPECT_EQ(Split(fn + "\nSELECT 1;", kPg), (Texts{fn, "SELECT 1;"}));
}

TEST(SplitSqlPostgres, EmptyTagDoesNotCloseTaggedDollarQuote) {
  EXPECT_EQ(Split("SELECT $a$ $$; $a$; SELECT 2;", kPg),
            (Texts{"SELECT $a$ $$; $a$;", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, TaggedDollarQuoteInsideEmptyTagIsJustText) {
  EXPECT_EQ(Split("SELECT $$ $x$; $$; SELECT 2;", kPg),
            (Texts{"SELECT $$ $x$; $$;", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, DollarQuoteTagIsCaseSensitive) {
  EXPECT_EQ(Split("SELECT $Tag$ $tag$; $TAG$; $Tag$; SELECT 2;", kPg),
            (Texts{"SELECT $Tag$ $tag$; $TAG$; $Tag$;", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, DollarQuoteClosesAtTagPrecededByOtherDollarTag) {
  // "$a$b$" holds the closing "$b$" after a different delimiter "$a$".
  EXPECT_EQ(Split("SELECT $b$ x $a$b$; SELECT 2;", kPg),
            (Texts{"SELECT $b$ x $a$b$;", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, QuotesAndCommentsInsideDollarQuoteAreText) {
  EXPECT_EQ(Split("SELECT $$ ' \" /* -- ; $$; SELECT 2;", kPg),
            (Texts{"SELECT $$ ' \" /* -- ; $$;", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, DollarQuoteWithUnderscoreAndDigitTag) {
  EXPECT_EQ(Split("SELECT $_f1$ ; $_f1$; SELECT 2;", kPg),
            (Texts{"SELECT $_f1$ ; $_f1$;", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, PositionalParametersAreNotDollarQuotes) {
  EXPECT_EQ(Split("PREPARE p AS SELECT $1 + $2; EXECUTE p(1, 2);", kPg),
            (Texts{"PREPARE p AS SELECT $1 + $2;", "EXECUTE p(1, 2);"}));
}

TEST(SplitSqlPostgres, ParameterFollowedByLettersIsNotADollarQuote) {
  EXPECT_EQ(Split("SELECT $1abc$; SELECT 2;", kPg),
            (Texts{"SELECT $1abc$;", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, DollarInsideIdentifierIsNotADollarQuote) {
  EXPECT_EQ(Split("SELECT foo$$bar; SELECT x$y$; SELECT 3;", kPg),
            (Texts{"SELECT foo$$bar;", "SELECT x$y$;", "SELECT 3;"}));
}

TEST(SplitSqlPostgres, DollarWithoutClosingDollarIsAnOperatorChar) {
  EXPECT_EQ(Split("SELECT $abc; SELECT 2;", kPg),
            (Texts{"SELECT $abc;", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, DollarQuoteRightAfterNumber) {
  EXPECT_EQ(Split("SELECT 1$$;$$; SELECT 2;", kPg),
            (Texts{"SELECT 1$$;$$;", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, DoBlockIsOneStatement) {
  const std::string block =
      "DO $$\nDECLARE n int;\nBEGIN\n  SELECT count(*) INTO n FROM t;\n"
      "  IF n = 0 THEN INSERT INTO t VALUES (1); END IF;\nEND\n$$;";
  EXPECT_EQ(Split("SET x = 1;\n" + block + "\nSELECT 1;", kPg),
            (Texts{"SET x = 1;", block, "SELECT 1;"}));
}

TEST(SplitSqlPostgres, DoBlockWithLanguageAfterBody) {
  const std::string block = "DO LANGUAGE plpgsql $do$ BEGIN NULL; END $do$;";
  EXPECT_EQ(Split(block, kPg), (Texts{block}));
}

TEST(SplitSqlPostgres, DoBlockInSingleQuotes) {
  const std::string block = "DO 'BEGIN RAISE NOTICE ''hi;''; END';";
  EXPECT_EQ(Split(block + " SELECT 1;", kPg), (Texts{block, "SELECT 1;"}));
}

TEST(SplitSqlPostgres, UnterminatedDollarQuoteNamesItsLine) {
  const std::string sql =
      "SELECT 1;\n\nCREATE FUNCTION f() RETURNS int AS $body$\n"
      "BEGIN RETURN 1; END;\n$bod$ LANGUAGE plpgsql;\n";
  EXPECT_EQ(SplitError(sql, kPg),
            "unterminated dollar-quoted string starting at line 3");
}

TEST(SplitSqlPostgres, UnterminatedEmptyTagDollarQuoteIsAnError) {
  EXPECT_TRUE(Contains(SplitError("DO $$ BEGIN NULL; END $;", kPg),
                       "unterminated dollar-quoted string"));
}

TEST(SplitSqlPostgres, LongDollarTagIsFound) {
  const std::string tag = "$" + std::string(100, 't') + "$";
  const std::string stmt =
      "SELECT " + tag + " $" + std::string(99, 't') + "$ ; " + tag + ";";
  EXPECT_EQ(Split(stmt + " SELECT 2;", kPg), (Texts{stmt, "SELECT 2;"}));
}

TEST(SplitSqlPostgres, HighBitBytesAreTagCharacters) {
  // psql's dolq_start/dolq_cont include bytes 0x80-0xFF.
  EXPECT_EQ(Split("SELECT $\xc3\xa9$ ; $\xc3\xa9$; SELECT 2;", kPg),
            (Texts{"SELECT $\xc3\xa9$ ; $\xc3\xa9$;", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, BlockCommentsNest) {
  EXPECT_EQ(Split("/* a /* b; */ still comment; */ SELECT 1; /* /* */ */", kPg),
            (Texts{"SELECT 1;"}));
}

TEST(SplitSqlPostgres, NestedBlockCommentInsideStatementIsKept) {
  EXPECT_EQ(Split("SELECT /* a /* b */ ; */ 1; SELECT 2;", kPg),
            (Texts{"SELECT /* a /* b */ ; */ 1;", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, UnclosedOuterOfNestedCommentIsAnError) {
  EXPECT_EQ(SplitError("SELECT 1;\n/* outer\n/* inner */\nSELECT 2;\n", kPg),
            "unterminated block comment starting at line 2");
}

TEST(SplitSqlPostgres, LineCommentEndsAtCarriageReturn) {
  EXPECT_EQ(Split("-- old mac\rSELECT 1;", kPg), (Texts{"SELECT 1;"}));
}

TEST(SplitSqlPostgres, SemicolonInsideParenthesesDoesNotSplit) {
  // Multi-action rules: psql keeps everything inside parentheses together.
  const std::string rule =
      "CREATE RULE r AS ON INSERT TO t DO ALSO (\n"
      "  INSERT INTO log VALUES (1);\n  INSERT INTO log VALUES (2)\n);";
  EXPECT_EQ(Split(rule + "\nSELECT 1;", kPg), (Texts{rule, "SELECT 1;"}));
}

TEST(SplitSqlPostgres, StrayCloseParenDoesNotBlockSplitting) {
  EXPECT_EQ(Split("SELECT 1); SELECT 2;", kPg),
            (Texts{"SELECT 1);", "SELECT 2;"}));
}

TEST(SplitSqlPostgres, UnbalancedOpenParenRunsToEndOfInput) {
  // psql sends the rest of the file as one statement; the server rejects it.
  EXPECT_EQ(Split("SELECT (1; SELECT 2;", kPg),
            (Texts{"SELECT (1; SELECT 2;"}));
}

TEST(SplitSqlPostgres, ParensInsideQuotesAndCommentsAreIgnored) {
  EXPECT_EQ(
      Split("SELECT '(' /* ( */ -- (\n; SELECT \"(\"; SELECT 3;", kPg),
      (Texts{"SELECT '(' /* ( */ -- (\n;", "SELECT \"(\";", "SELECT 3;"}));
}

TEST(SplitSqlPostgres, BeginAtomicFunctionBodyIsOneStatement) {
  const std::string fn =
      "CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql\n"
      "BEGIN ATOMIC\n  SELECT a + b;\nEND;";
  EXPECT_EQ(Split(fn + "\nSELECT add(1, 2);", kPg),
            (Texts{fn, "SELECT add(1, 2);"}));
}

TEST(SplitSqlPostgres, BeginAtomicProcedureWithSeveralStatements) {
  const std::string proc =
      "CREATE PROCEDURE ins() LANGUAGE sql\nBEGIN ATOMIC\n"
      "  INSERT INTO t VALUES (1);\n  INSERT INTO t VALUES (2);\nEND;";
  EXPECT_EQ(Split(proc + "\nCALL ins();", kPg), (Texts{proc, "CALL ins();"}));
}

TEST(SplitSqlPostgres, CreateOrReplaceFunctionBeginAtomic) {
  const std::string fn =
      "create or replace function f() returns int language sql\n"
      "begin atomic select 1; select 2; end;";
  EXPECT_EQ(Split(fn + "select 3;", kPg), (Texts{fn, "select 3;"}));
}

TEST(SplitSqlPostgres, CreateOrReplaceProcedureBeginAtomic) {
  const std::string fn =
      "CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC DELETE FROM t; END;";
  EXPECT_EQ(Split(fn + " CALL p();", kPg), (Texts{fn, "CALL p();"}));
}

TEST(SplitSqlPostgres, CaseEndInsideBeginAtomicDoesNotCloseBody) {
  const std::string fn =
      "CREATE FUNCTION sign_of(x int) RETURNS text LANGUAGE sql\n"
      "BEGIN ATOMIC\n"
      "  SELECT CASE WHEN x < 0 THEN 'neg;' WHEN x = 0 THEN 'zero' "
      "ELSE 'pos' END;\n"
      "  SELECT CASE x WHEN 1 THEN 'one' END;\n"
      "END;";
  EXPECT_EQ(Split(fn + "\nSELECT 1;", kPg), (Texts{fn, "SELECT 1;"}));
}

TEST(SplitSqlPostgres, CaseInsideParenthesesInBeginAtomicIsBalanced) {
  const std::string fn =
      "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC "
      "SELECT (CASE WHEN x > 0 THEN 1 END); END;";
  EXPECT_EQ(Split(fn + " SELECT 2;", kPg), (Texts{fn, "SELECT 2;"}));
}

TEST(SplitSqlPostgres, CaseOutsideBeginInCreateFunctionIsIgnored) {
  const std::string fn =
      "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql "
      "RETURN CASE WHEN x > 0 THEN 1 ELSE 0 END;";
  EXPECT_EQ(Split(fn + " SELECT 2;", kPg), (Texts{fn, "SELECT 2;"}));
}

TEST(SplitSqlPostgres, BeginInsideFunctionParameterListIsIgnored) {
  const std::string fn =
      "CREATE FUNCTION f(begin int, \"end\" int) RETURNS int LANGUAGE sql "
      "RETURN 1;";
  EXPECT_EQ(Split(fn + " SELECT 2;", kPg), (Texts{fn, "SELECT 2;"}));
}

TEST(SplitSqlPostgres, BareBeginWordInCreateFunctionNestsLikePsql) {
  // psql's heuristic counts any BEGIN outside parentheses in CREATE FUNCTION,
  // so "RETURN begin" swallows the rest of the file, exactly as psql would
  // send it (the server then reports the error).
  const std::string sql =
      "CREATE FUNCTION f(begin int) RETURNS int LANGUAGE sql RETURN begin; "
      "SELECT 2;";
  EXPECT_EQ(Split(sql, kPg), (Texts{sql}));
}

TEST(SplitSqlPostgres, BeginEndKeywordsInQuotedBodiesAreIgnored) {
  const std::string fn =
      "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
      "NULL; END $$;";
  EXPECT_EQ(Split(fn + " SELECT 2;", kPg), (Texts{fn, "SELECT 2;"}));
}

TEST(SplitSqlPostgres, BeginOutsideCreateFunctionIsATransaction) {
  EXPECT_EQ(Split("BEGIN; SELECT 1; END;", kPg),
            (Texts{"BEGIN;", "SELECT 1;", "END;"}));
}

TEST(SplitSqlPostgres, CreateFunctionMustBeAtStatementStart) {
  EXPECT_EQ(Split("COMMENT ON FUNCTION f() IS 'x'; BEGIN; SELECT 1;", kPg),
            (Texts{"COMMENT ON FUNCTION f() IS 'x';", "BEGIN;", "SELECT 1;"}));
}

TEST(SplitSqlPostgres, StatementAfterBeginAtomicStartsFresh) {
  const std::string fn = "CREATE FUNCTION f() BEGIN ATOMIC SELECT 1; END;";
  EXPECT_EQ(Split(fn + " BEGIN; CASE; END;", kPg),
            (Texts{fn, "BEGIN;", "CASE;", "END;"}));
}

TEST(SplitSqlPostgres, CreateTriggerHasNoSpecialMeaning) {
  const std::string trig =
      "CREATE TRIGGER t AFTER INSERT ON x FOR EACH ROW EXECUTE FUNCTION f();";
  EXPECT_EQ(Split(trig + " SELECT 1;", kPg), (Texts{trig, "SELECT 1;"}));
}

TEST(SplitSqlPostgres, BracketsAndBackticksAreNotQuotes) {
  EXPECT_EQ(Split("SELECT a[1]; SELECT `; SELECT 3;", kPg),
            (Texts{"SELECT a[1];", "SELECT `;", "SELECT 3;"}));
}

TEST(SplitSqlPostgres, UnicodeEscapeIdentifier) {
  EXPECT_EQ(Split("SELECT U&\"d\\0061t;a\"; SELECT 2;", kPg),
            (Texts{"SELECT U&\"d\\0061t;a\";", "SELECT 2;"}));
}

// ---------------------------------------------------------------------------
// SQLite.

TEST(SplitSqlSqlite, TriggerBodyIsOneStatement) {
  const std::string trig =
      "CREATE TRIGGER log_insert AFTER INSERT ON t\nBEGIN\n"
      "  INSERT INTO log VALUES (new.id);\n"
      "  UPDATE counts SET n = n + 1;\nEND;";
  EXPECT_EQ(Split(trig + "\nSELECT 1;", kLite), (Texts{trig, "SELECT 1;"}));
}

TEST(SplitSqlSqlite, TempTriggerBodyIsOneStatement) {
  const std::string trig =
      "CREATE TEMP TRIGGER a AFTER DELETE ON t BEGIN DELETE FROM u; END;";
  EXPECT_EQ(Split(trig + " SELECT 1;", kLite), (Texts{trig, "SELECT 1;"}));
}

TEST(SplitSqlSqlite, TemporaryTriggerBodyIsOneStatement) {
  const std::string trig =
      "create temporary trigger if not exists a before update on t "
      "begin select raise(abort, 'no;'); end;";
  EXPECT_EQ(Split(trig + " select 1;", kLite), (Texts{trig, "select 1;"}));
}

TEST(SplitSqlSqlite, CaseEndInsideTriggerBodyDoesNotCloseTrigger) {
  const std::string trig =
      "CREATE TRIGGER t1 AFTER UPDATE ON t BEGIN\n"
      "  UPDATE t SET kind = CASE WHEN new.x > 0 THEN 'pos' ELSE 'neg' END;\n"
      "  SELECT CASE new.x WHEN 1 THEN 1 END, CASE WHEN 1 THEN 2 END;\n"
      "END;";
  EXPECT_EQ(Split(trig + "\nSELECT 1;", kLite), (Texts{trig, "SELECT 1;"}));
}

TEST(SplitSqlSqlite, TriggerWhenClauseWithCaseEnd) {
  const std::string trig =
      "CREATE TRIGGER t1 AFTER UPDATE ON t "
      "WHEN CASE WHEN new.x THEN 1 END BEGIN SELECT 1; END;";
  EXPECT_EQ(Split(trig + " SELECT 2;", kLite), (Texts{trig, "SELECT 2;"}));
}

TEST(SplitSqlSqlite, ColumnNamedEndInsideTriggerBodyDoesNotCloseTrigger) {
  const std::string trig =
      "CREATE TRIGGER t1 AFTER INSERT ON t BEGIN\n"
      "  UPDATE spans SET end = new.ts WHERE end IS NULL;\n"
      "  INSERT INTO spans(begin, end) VALUES (1, 2);\nEND;";
  EXPECT_EQ(Split(trig + "\nSELECT 1;", kLite), (Texts{trig, "SELECT 1;"}));
}

TEST(SplitSqlSqlite, TriggerEndMayBeSeparatedByComments) {
  const std::string trig =
      "CREATE TRIGGER t1 AFTER INSERT ON t BEGIN SELECT 1; -- x;\n"
      "/* y; */ END /* z */ ;";
  EXPECT_EQ(Split(trig + " SELECT 2;", kLite), (Texts{trig, "SELECT 2;"}));
}

TEST(SplitSqlSqlite, KeywordsInsideQuotesDoNotCloseTrigger) {
  const std::string trig =
      "CREATE TRIGGER t1 AFTER INSERT ON t BEGIN\n"
      "  INSERT INTO log VALUES ('; END;', \"end\", [end;], `; end ;`);\nEND;";
  EXPECT_EQ(Split(trig + "\nSELECT 1;", kLite), (Texts{trig, "SELECT 1;"}));
}

TEST(SplitSqlSqlite, ExplainCreateTriggerIsOneStatement) {
  const std::string trig =
      "EXPLAIN CREATE TRIGGER t1 AFTER INSERT ON t BEGIN SELECT 1; END;";
  EXPECT_EQ(Split(trig + " SELECT 2;", kLite), (Texts{trig, "SELECT 2;"}));
}

TEST(SplitSqlSqlite, TwoTriggersInARow) {
  const std::string a =
      "CREATE TRIGGER a AFTER INSERT ON t BEGIN SELECT 1; END;";
  const std::string b =
      "CREATE TRIGGER b AFTER INSERT ON t BEGIN SELECT 2; SELECT 3; END;";
  EXPECT_EQ(Split(a + "\n" + b, kLite), (Texts{a, b}));
}

TEST(SplitSqlSqlite, TriggerWithoutFinalSemicolonIsKeptAtEndOfInput) {
  const std::string trig =
      "CREATE TRIGGER a AFTER INSERT ON t BEGIN SELECT 1; END";
  EXPECT_EQ(Split("SELECT 0;\n" + trig + "\n-- bye\n", kLite),
            (Texts{"SELECT 0;", trig}));
}

TEST(SplitSqlSqlite, CreateTableNamedLikeTriggerIsNotATrigger) {
  EXPECT_EQ(
      Split("CREATE TABLE triggers (x); CREATE TABLE \"trigger\" (y); "
            "CREATE TEMP TABLE z (w); SELECT 1;",
            kLite),
      (Texts{"CREATE TABLE triggers (x);", "CREATE TABLE \"trigger\" (y);",
             "CREATE TEMP TABLE z (w);", "SELECT 1;"}));
}

TEST(SplitSqlSqlite, TriggerKeywordLaterInStatementIsNotATrigger) {
  EXPECT_EQ(Split("DROP TRIGGER IF EXISTS t; SELECT 1;", kLite),
            (Texts{"DROP TRIGGER IF EXISTS t;", "SELECT 1;"}));
}

TEST(SplitSqlSqlite, BlockCommentsDoNotNest) {
  EXPECT_EQ(Split("/* outer /* inner */ SELECT 1; SELECT 2;", kLite),
            (Texts{"SELECT 1;", "SELECT 2;"}));
}

TEST(SplitSqlSqlite, SecondCommentCloserIsCode) {
  EXPECT_EQ(Split("/* a /* b */ SELECT 1 */;", kLite), (Texts{"SELECT 1 */;"}));
}

TEST(SplitSqlSqlite, BracketIdentifierHidesSemicolon) {
  EXPECT_EQ(Split("CREATE TABLE [a;b] ([c;] int); SELECT 1;", kLite),
            (Texts{"CREATE TABLE [a;b] ([c;] int);", "SELECT 1;"}));
}

TEST(SplitSqlSqlite, BacktickIdentifierHidesSemicolon) {
  EXPECT_EQ(Split("CREATE TABLE `a;b` (`c``;` int); SELECT 1;", kLite),
            (Texts{"CREATE TABLE `a;b` (`c``;` int);", "SELECT 1;"}));
}

TEST(SplitSqlSqlite, UnterminatedBracketIdentifierIsAnError) {
  EXPECT_EQ(SplitError("SELECT 1;\nSELECT [a;\n", kLite),
            "unterminated quoted identifier starting at line 2");
}

TEST(SplitSqlSqlite, UnterminatedBacktickIdentifierIsAnError) {
  EXPECT_TRUE(Contains(SplitError("SELECT `a;", kLite),
                       "unterminated quoted identifier"));
}

TEST(SplitSqlSqlite, EPrefixIsNotAnEscapeString) {
  EXPECT_EQ(Split("SELECT E'a\\'; SELECT 2;", kLite),
            (Texts{"SELECT E'a\\';", "SELECT 2;"}));
}

TEST(SplitSqlSqlite, DollarSignsAreNotQuotes) {
  EXPECT_EQ(Split("SELECT $$; SELECT $a$; SELECT $x;", kLite),
            (Texts{"SELECT $$;", "SELECT $a$;", "SELECT $x;"}));
}

TEST(SplitSqlSqlite, ParenthesesDoNotHideSemicolons) {
  // sqlite3_complete() does not track parentheses.
  EXPECT_EQ(Split("SELECT (1; SELECT 2);", kLite),
            (Texts{"SELECT (1;", "SELECT 2);"}));
}

TEST(SplitSqlSqlite, BeginAtomicHasNoSpecialMeaning) {
  EXPECT_EQ(Split("CREATE FUNCTION f() BEGIN ATOMIC SELECT 1; END;", kLite),
            (Texts{"CREATE FUNCTION f() BEGIN ATOMIC SELECT 1;", "END;"}));
}

TEST(SplitSqlSqlite, BracketsInsideCommentsAreIgnored) {
  EXPECT_EQ(Split("SELECT 1; -- [\n/* ` */ SELECT 2;", kLite),
            (Texts{"SELECT 1;", "SELECT 2;"}));
}

// ---------------------------------------------------------------------------
// Robustness and speed.

TEST(SplitSqlRobustness, RandomBytesNeverCrash) {
  std::mt19937 rng(12345);
  const std::string alphabet =
      "';\"$`[]()-/*\\eEbBuU&atomicbeginendcasecreatetriggerfunction \n\r"
      "\x80\xff\x00";
  for (int iteration = 0; iteration < 20000; ++iteration) {
    const size_t len = rng() % 64;
    std::string sql;
    for (size_t i = 0; i < len; ++i) {
      sql.push_back(rng() % 4 == 0 ? static_cast<char>(rng() & 0xff)
                                   : alphabet[rng() % alphabet.size()]);
    }
    for (SqlDialect dialect : {kPg, kLite}) {
      auto result = SplitSql(sql, dialect);
      if (!result.ok()) {
        EXPECT_EQ(result.status().code(), Code::kInvalidInput);
        EXPECT_TRUE(Contains(result.status().message(), "line "));
        continue;
      }
      size_t previous_end = 0;
      for (const SqlStatement& st : *result) {
        ASSERT_FALSE(st.text.empty());
        ASSERT_LE(previous_end, st.offset);
        ASSERT_LE(st.offset + st.text.size(), sql.size());
        ASSERT_EQ(std::string_view(sql).substr(st.offset, st.text.size()),
                  st.text);
        ASSERT_EQ(st.first_line, LineOfOffset(sql, st.offset));
        previous_end = st.offset + st.text.size();
      }
    }
  }
}

TEST(SplitSqlRobustness, EveryPrefixOfAMigrationSplitsOrFailsCleanly) {
  const std::string sql =
      "-- header\nCREATE TABLE t (a int, b text DEFAULT E'x\\'y');\n"
      "/* c /* d */ */ DO $do$ BEGIN PERFORM $$;$$; END $do$;\n"
      "CREATE FUNCTION f() BEGIN ATOMIC SELECT CASE WHEN 1 THEN 2 END; END;\n"
      "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT [x]; END;\n";
  for (size_t n = 0; n <= sql.size(); ++n) {
    for (SqlDialect dialect : {kPg, kLite}) {
      auto result = SplitSql(std::string_view(sql).substr(0, n), dialect);
      if (!result.ok()) {
        EXPECT_EQ(result.status().code(), Code::kInvalidInput);
      }
    }
  }
}

TEST(SplitSqlRobustness, LongDollarTagNearMissesStayLinear) {
  // A naive substring search would be O(body * tag) here.
  const std::string tag = "$" + std::string(20000, 'a') + "$";
  std::string sql = "SELECT " + tag;
  const std::string near_miss = "$" + std::string(19999, 'a') + "b";
  while (sql.size() < (4u << 20)) sql += near_miss;
  sql += tag + "; SELECT 2;";
  const auto start = std::chrono::steady_clock::now();
  auto result = SplitSql(sql, kPg);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(result.ok());
  ASSERT_EQ(result->size(), 2u);
  EXPECT_EQ((*result)[1].text, "SELECT 2;");
  EXPECT_LT(elapsed, std::chrono::seconds(20));
}

TEST(SplitSqlRobustness, ManyStatementsAndDeepNesting) {
  std::string sql;
  for (int i = 0; i < 50000; ++i) sql += "INSERT INTO t VALUES (1, 'a;b');\n";
  sql += std::string(100000, '(') + ";" + std::string(100000, ')') + ";";
  sql += "/*" + std::string(1000, ' ');
  for (int i = 0; i < 50000; ++i) sql += "/*";
  for (int i = 0; i < 50001; ++i) sql += "*/";
  sql += "SELECT 1;";
  auto result = SplitSql(sql, kPg);
  ASSERT_TRUE(result.ok());
  ASSERT_EQ(result->size(), 50002u);
  EXPECT_EQ(result->back().text, "SELECT 1;");
  EXPECT_EQ(result->front().first_line, 1);
  EXPECT_EQ((*result)[49999].first_line, 50000);
}

// ---------------------------------------------------------------------------
// LineOfOffset.

TEST(LineOfOffset, FirstByteIsLineOne) {
  EXPECT_EQ(LineOfOffset("abc", 0), 1);
  EXPECT_EQ(LineOfOffset("", 0), 1);
}

TEST(LineOfOffset, CountsNewlinesBeforeOffset) {
  const std::string_view text = "a\nb\n\nc";
  EXPECT_EQ(LineOfOffset(text, 1), 1);  // the '\n' itself is on line 1
  EXPECT_EQ(LineOfOffset(text, 2), 2);
  EXPECT_EQ(LineOfOffset(text, 4), 3);
  EXPECT_EQ(LineOfOffset(text, 5), 4);
}

TEST(LineOfOffset, OffsetPastEndIsClamped) {
  EXPECT_EQ(LineOfOffset("a\nb\n", 1000), 3);
}

// ---------------------------------------------------------------------------
// IsTransactionControl.

TEST(IsTransactionControl, RecognisesTransactionStatements) {
  for (const char* sql : {"BEGIN",
                          "BEGIN;",
                          "begin;",
                          "BEGIN TRANSACTION;",
                          "BEGIN WORK;",
                          "BEGIN ISOLATION LEVEL SERIALIZABLE;",
                          "START TRANSACTION;",
                          "start transaction read only;",
                          "COMMIT;",
                          "COMMIT WORK;",
                          "COMMIT AND CHAIN;",
                          "END;",
                          "END TRANSACTION;",
                          "ROLLBACK;",
                          "ROLLBACK WORK;",
                          "ROLLBACK TRANSACTION;",
                          "ROLLBACK AND CHAIN;",
                          "ABORT;",
                          "BEGIN IMMEDIATE;",
                          "BEGIN EXCLUSIVE;",
                          "BEGIN DEFERRED;",
                          "begin immediate transaction;"}) {
    EXPECT_TRUE(IsTransactionControl(sql)) << sql;
  }
}

TEST(IsTransactionControl, RejectsSavepointsAndOtherStatements) {
  for (const char* sql : {"ROLLBACK TO SAVEPOINT x;",
                          "ROLLBACK TO x;",
                          "ROLLBACK WORK TO SAVEPOINT x;",
                          "rollback transaction to x;",
                          "SAVEPOINT x;",
                          "RELEASE x;",
                          "RELEASE SAVEPOINT x;",
                          "BEGIN ATOMIC",
                          "begin atomic select 1; end;",
                          "SELECT 1;",
                          "START;",
                          "STARTUP;",
                          "BEGINNING;",
                          "COMMITTED;",
                          "ENDING;",
                          "ABORTED;",
                          "CREATE TABLE begin (x int);",
                          "",
                          "   ",
                          "-- BEGIN\n",
                          "/* COMMIT; */",
                          "'BEGIN';",
                          "\"COMMIT\";",
                          "ROLLBACKS;"}) {
    EXPECT_FALSE(IsTransactionControl(sql)) << sql;
  }
}

TEST(IsTransactionControl, IgnoresLeadingCommentsAndWhitespace) {
  EXPECT_TRUE(IsTransactionControl("  -- note\n /* a /* b */ */\n\tCOMMIT;"));
  EXPECT_TRUE(IsTransactionControl("/* x */BEGIN/* y */;"));
  EXPECT_FALSE(IsTransactionControl("/* x */ BEGIN /* y */ ATOMIC"));
  EXPECT_FALSE(
      IsTransactionControl("ROLLBACK -- to where?\n TO SAVEPOINT before;"));
}

TEST(IsTransactionControl, HandlesArbitraryBytes) {
  EXPECT_FALSE(IsTransactionControl(std::string_view("\0BEGIN", 6)));
  EXPECT_FALSE(IsTransactionControl("\xff\xfe"));
  EXPECT_FALSE(IsTransactionControl("/* unterminated BEGIN"));
  EXPECT_TRUE(IsTransactionControl("BEGIN\n\xff"));
  EXPECT_FALSE(IsTransactionControl("BEGIN\xff"));  // one identifier
}

}  // namespace
// ---------------------------------------------------------------------------
// IsDropStatement.

TEST(IsDropStatement, RecognisesDropsOnly) {
  for (const char* sql :
       {"DROP TABLE a;", "drop index concurrently a_id;", "DROP\nVIEW v;",
        "  DROP SCHEMA s CASCADE;", "Drop Type mood;"}) {
    EXPECT_TRUE(IsDropStatement(sql)) << sql;
  }
  for (const char* sql :
       {"ALTER TABLE a DROP COLUMN b;", "DROPS;", "SELECT 'DROP TABLE a';",
        "-- DROP TABLE a\n", "", "CREATE TABLE drop_me (x int);"}) {
    EXPECT_FALSE(IsDropStatement(sql)) << sql;
  }
}

TEST(IsPlainCommit, RecognisesCommitsThatOnlyCommit) {
  for (const char* sql :
       {"COMMIT", "commit;", "COMMIT WORK", "COMMIT TRANSACTION;", "END",
        "end transaction", "COMMIT AND NO CHAIN", "/* done */ COMMIT -- now\n",
        "  Commit ;  "}) {
    EXPECT_TRUE(IsPlainCommit(sql)) << sql;
  }
  for (const char* sql : {"COMMIT AND CHAIN", "COMMIT PREPARED 'x'", "ROLLBACK",
                          "BEGIN", "END IF", "COMMIT; SELECT 1", "committed",
                          "-- COMMIT\n", "", "SELECT 'COMMIT'"}) {
    EXPECT_FALSE(IsPlainCommit(sql)) << sql;
  }
}

TEST(IsSessionSetting, RecognisesWhatOutlivesTheTransaction) {
  for (const char* sql :
       {"SET search_path = app;", "set role app_owner;",
        "SET SESSION statement_timeout = '5s'",
        "SET SESSION AUTHORIZATION other;",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY;",
        "RESET search_path;", "/* c */ RESET ALL"}) {
    EXPECT_TRUE(IsSessionSetting(sql)) << sql;
  }
  for (const char* sql :
       {"SET LOCAL search_path = app;", "SET TRANSACTION READ ONLY;",
        "SET CONSTRAINTS ALL DEFERRED;",
        "SELECT set_config('a.b', 'c', false);", "-- SET search_path = app\n",
        "SETTLE;", ""}) {
    EXPECT_FALSE(IsSessionSetting(sql)) << sql;
  }
  EXPECT_TRUE(OpensTransaction("BEGIN;"));
  EXPECT_TRUE(OpensTransaction("start transaction read only"));
  EXPECT_FALSE(OpensTransaction("COMMIT;"));
  EXPECT_TRUE(IsRollback("ROLLBACK;"));
  EXPECT_TRUE(IsRollback("abort"));
  EXPECT_FALSE(IsRollback("ROLLBACK TO SAVEPOINT a;"));
  EXPECT_FALSE(IsRollback("COMMIT;"));
}

}  // namespace migledger
