// Fuzzes SplitSql (both dialects), LineOfOffset and IsTransactionControl.
//
// Besides "never crashes, never reads out of bounds", checks what the header
// promises about every split:
//   - statements come in input order and do not overlap;
//   - text is input.substr(offset, text.size()), non-empty, and starts at a
//     significant character (not whitespace, a comment or a ';');
//   - first_line == LineOfOffset(input, offset);
//   - what lies between and after the statements is insignificant: split on
//     its own it gives no statements and no error;
//   - splitting is idempotent: a statement's text split again is exactly one
//     statement, itself, at offset 0 line 1.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "applier/sql_splitter.h"
#include "fuzz_util.h"

namespace {

using migledger::IsTransactionControl;
using migledger::LineOfOffset;
using migledger::SplitSql;
using migledger::SqlDialect;

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}

void CheckInsignificant(std::string_view gap, SqlDialect dialect) {
  if (gap.empty()) return;
  auto r = SplitSql(gap, dialect);
  FUZZ_CHECK(r.ok());
  FUZZ_CHECK(r->empty());
}

void CheckSplit(std::string_view in, SqlDialect dialect) {
  auto r = SplitSql(in, dialect);
  if (!r.ok()) {
    FUZZ_CHECK(r.status().code() == migledger::Code::kInvalidInput);
    FUZZ_CHECK(!r.status().message().empty());
    return;
  }
  size_t prev_end = 0;
  for (const migledger::SqlStatement& st : *r) {
    FUZZ_CHECK(!st.text.empty());
    FUZZ_CHECK(st.offset >= prev_end);
    FUZZ_CHECK(st.offset <= in.size());
    FUZZ_CHECK(st.text.size() <= in.size() - st.offset);
    FUZZ_CHECK(in.substr(st.offset, st.text.size()) == st.text);
    FUZZ_CHECK(st.first_line == LineOfOffset(in, st.offset));
    FUZZ_CHECK(!IsSpace(st.text[0]) && st.text[0] != ';');
    FUZZ_CHECK(st.text.rfind("--", 0) != 0 && st.text.rfind("/*", 0) != 0);
    CheckInsignificant(in.substr(prev_end, st.offset - prev_end), dialect);

    auto again = SplitSql(st.text, dialect);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(again->size() == 1);
    FUZZ_CHECK((*again)[0].text == st.text);
    FUZZ_CHECK((*again)[0].offset == 0);
    FUZZ_CHECK((*again)[0].first_line == 1);

    (void)IsTransactionControl(st.text);
    prev_end = st.offset + st.text.size();
  }
  CheckInsignificant(in.substr(prev_end), dialect);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = migledger_fuzz::AsView(data, size);
  CheckSplit(in, SqlDialect::kPostgres);
  CheckSplit(in, SqlDialect::kSqlite);

  (void)IsTransactionControl(in);
  // LineOfOffset clamps offsets past the end.
  FUZZ_CHECK(LineOfOffset(in, size) == LineOfOffset(in, size + 7));
  FUZZ_CHECK(LineOfOffset(in, 0) == 1);
  return 0;
}
