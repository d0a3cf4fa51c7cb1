#include "cli/terminal_text.h"

#include <gtest/gtest.h>

namespace migledger {
namespace {

TEST(TerminalTextTest, PlainTextAndUtf8AreUnchanged) {
  for (const char* s : {"", "apply 0001_create_users", "C:\\migrations\\x",
                        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"}) {
    EXPECT_FALSE(NeedsTerminalEscaping(s)) << s;
    EXPECT_EQ(TerminalText(s), s);
  }
}

// issue 39: an ESC sequence in a --reason erased the lines above it.
TEST(TerminalTextTest, ControlCharactersBecomeVisibleEscapes) {
  EXPECT_EQ(TerminalText("ok\x1b[2K\x1b[1Aforged"), "ok\\e[2K\\e[1Aforged");
  EXPECT_EQ(TerminalText("a\nb\rc\td"), "a\\nb\\rc\\td");
  EXPECT_EQ(TerminalText(std::string("nul\0bel\x07", 8) + "\x7f"),
            "nul\\x00bel\\x07\\x7f");
  // C1 controls (the 8-bit CSI U+009B) and bidi overrides.
  EXPECT_EQ(TerminalText("\xc2\x9b"
                         "2J"),
            "\\u009b2J");
  EXPECT_EQ(TerminalText("file\xe2\x80\xaegpj.sql"), "file\\u202egpj.sql");
  EXPECT_EQ(TerminalText("\xe2\x81\xa6x\xe2\x81\xa9"), "\\u2066x\\u2069");
  EXPECT_EQ(TerminalText("line\xe2\x80\xa8sep"), "line\\u2028sep");
  EXPECT_TRUE(NeedsTerminalEscaping("\xe2\x80\x8f"));
}

TEST(TerminalTextTest, BytesThatAreNotUtf8AreEscapedOneByOne) {
  EXPECT_EQ(TerminalText("a\xff"
                         "b"),
            "a\\xffb");
  EXPECT_EQ(TerminalText("\xc3"), "\\xc3");                    // truncated
  EXPECT_EQ(TerminalText("\xc0\xaf"), "\\xc0\\xaf");           // overlong
  EXPECT_EQ(TerminalText("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // surrogate
}

TEST(TerminalTextTest, TerminalLinesKeepsLineFeedsAndTabsOnly) {
  EXPECT_EQ(TerminalLines("SELECT 1;\n\tSELECT 2;\n"),
            "SELECT 1;\n\tSELECT 2;\n");
  EXPECT_EQ(TerminalLines("-- \x1b]0;x\x07\r\nSELECT '\xe2\x80\xae';\n"),
            "-- \\e]0;x\\x07\\r\nSELECT '\\u202e';\n");
}

}  // namespace
}  // namespace migledger
