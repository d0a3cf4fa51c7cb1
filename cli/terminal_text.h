// Text from users, files and databases, made safe to show on a terminal.
//
// A --reason, MIGLEDGER_ACTOR, a target or file name or a database's error
// text can hold ESC sequences (which erase or rewrite lines on the
// auditor's screen) or bidi controls (U+202E shows text reversed). The
// ledger keeps the exact bytes; every table, plain-text line and error line
// of cli/ goes through TerminalText() when it prints them. HTML, CSV and
// JSON have escaping of their own.
#pragma once

#include <string>
#include <string_view>

namespace migledger {

// `text` with every character that can change what a terminal shows
// written as a visible escape, everything else unchanged:
//   C0 controls and DEL  -> \n \r \t \e, other \xNN (e.g. \x1b is "\e")
//   C1 controls (U+0080-U+009F), bidi and line-separator characters
//   (U+061C, U+200E-U+200F, U+2028-U+202E, U+2066-U+2069) -> \u202e
//   bytes that are not UTF-8 -> \xNN
// A backslash stays as it is (Windows paths read normally).
std::string TerminalText(std::string_view text);

// TerminalText for text shown as several lines (SQL, pretty JSON): line
// feeds and tabs stay, every other control is escaped as above.
std::string TerminalLines(std::string_view text);

// True when TerminalText(text) differs from `text` (a fast scan).
bool NeedsTerminalEscaping(std::string_view text);

}  // namespace migledger
