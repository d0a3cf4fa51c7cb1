// Time helpers: the clock comes in through Clock so tests can pin it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace migledger {

// Microseconds since the Unix epoch. MIGLEDGER_FAKE_TIME (RFC 3339 or
// micros) pins the clock for tests of time travel.
int64_t NowMicros();

// "2026-11-25T12:00:00.123456Z"
std::string FormatRfc3339(int64_t micros);
// Accepts RFC 3339 ("2026-11-25T12:00:00Z", with fraction and offset),
// "2026-11-25 12:00:00" and a bare date "2026-11-25" (midnight UTC).
// nullopt for anything else, including times that do not exist (2026-02-30,
// 24:00:00, an offset of +24:00).
std::optional<int64_t> ParseTime(std::string_view text);

}  // namespace migledger
