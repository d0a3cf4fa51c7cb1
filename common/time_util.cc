#include "common/time_util.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace migledger {

int64_t NowMicros() {
  if (const char* fake = std::getenv("MIGLEDGER_FAKE_TIME"); fake && *fake) {
    if (auto t = ParseTime(fake)) return *t;
  }
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string FormatRfc3339(int64_t micros) {
  time_t secs = static_cast<time_t>(micros / 1000000);
  int64_t frac = micros % 1000000;
  if (frac < 0) {
    frac += 1000000;
    secs -= 1;
  }
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, static_cast<long long>(frac));
  return buf;
}

namespace {

// The number written by the `n` ASCII digits at s[pos], if they are digits.
std::optional<int> Digits(const std::string& s, size_t pos, size_t n) {
  if (pos + n > s.size()) return std::nullopt;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

int DaysInMonth(int year, int month) {
  static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : kDays[month - 1];
}

}  // namespace

std::optional<int64_t> ParseTime(std::string_view text) {
  std::string s(text);
  if (!s.empty() && s.find_first_not_of("0123456789") == std::string::npos &&
      s.size() > 10) {
    return std::atoll(s.c_str());  // raw micros
  }
  // Every field is checked digit by digit and against the calendar: a time
  // that does not exist (2026-02-30, 25:00, an offset of +99:00) is an
  // error, never silently moved to another instant.
  auto y = Digits(s, 0, 4), mo = Digits(s, 5, 2), d = Digits(s, 8, 2);
  if (!y || !mo || !d || s[4] != '-' || s[7] != '-') return std::nullopt;
  if (*mo < 1 || *mo > 12 || *d < 1 || *d > DaysInMonth(*y, *mo)) {
    return std::nullopt;
  }
  int h = 0, mi = 0, sec = 0;
  int64_t frac_micros = 0;
  int64_t offset_secs = 0;
  size_t pos = 10;
  if (pos < s.size()) {
    if (s[pos] != 'T' && s[pos] != 't' && s[pos] != ' ') return std::nullopt;
    auto hh = Digits(s, 11, 2), mm = Digits(s, 14, 2), ss = Digits(s, 17, 2);
    if (!hh || !mm || !ss || s[13] != ':' || s[16] != ':') return std::nullopt;
    h = *hh;
    mi = *mm;
    sec = *ss;
    if (h > 23 || mi > 59 || sec > 60) return std::nullopt;
    pos = 19;
    if (pos < s.size() && s[pos] == '.') {
      ++pos;
      const size_t first_digit = pos;
      int64_t scale = 100000;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
        frac_micros += (s[pos] - '0') * scale;
        scale /= 10;
        ++pos;
      }
      if (pos == first_digit) return std::nullopt;  // "." needs a digit
    }
    if (pos < s.size()) {
      if (s[pos] == 'Z' || s[pos] == 'z') {
        ++pos;
      } else if (s[pos] == '+' || s[pos] == '-') {
        auto oh = Digits(s, pos + 1, 2), om = Digits(s, pos + 4, 2);
        if (!oh || !om || s[pos + 3] != ':' || *oh > 23 || *om > 59) {
          return std::nullopt;
        }
        offset_secs = (*oh * 3600 + *om * 60) * (s[pos] == '+' ? 1 : -1);
        pos += 6;
      }
    }
    if (pos != s.size()) return std::nullopt;
  }
  struct tm tm {};
  tm.tm_year = *y - 1900;
  tm.tm_mon = *mo - 1;
  tm.tm_mday = *d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  int64_t secs = static_cast<int64_t>(timegm(&tm)) - offset_secs;
  return secs * 1000000 + frac_micros;
}

}  // namespace migledger
