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

namespace {

// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
// civil_from_days).
void CivilFromDays(int64_t z, int64_t* year, unsigned* month, unsigned* day) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *day = doy - (153 * mp + 2) / 5 + 1;
  *month = mp < 10 ? mp + 3 : mp - 9;
  *year = static_cast<int64_t>(yoe) + era * 400 + (*month <= 2 ? 1 : 0);
}

// Writes `v` as exactly `n` digits ending just before `end`.
void PutDigits(char* end, unsigned long long v, int n) {
  for (int i = 0; i < n; ++i) {
    *--end = static_cast<char>('0' + v % 10);
    v /= 10;
  }
}

}  // namespace

// Status lists, the audit table and reports format one time per event: done
// by hand rather than with gmtime_r + snprintf (~20x the instructions).
std::string FormatRfc3339(int64_t micros) {
  int64_t secs = micros / 1000000;
  int64_t frac = micros % 1000000;
  if (frac < 0) {
    frac += 1000000;
    secs -= 1;
  }
  int64_t days = secs / 86400;
  int64_t sod = secs % 86400;
  if (sod < 0) {
    sod += 86400;
    days -= 1;
  }
  int64_t year = 0;
  unsigned month = 0, day = 0;
  CivilFromDays(days, &year, &month, &day);
  if (year < 0 || year > 9999) {
    // Outside four-digit years: what the C library prints.
    time_t t = static_cast<time_t>(secs);
    struct tm tm;
    gmtime_r(&t, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                  tm.tm_min, tm.tm_sec, static_cast<long long>(frac));
    return buf;
  }
  // YYYY-MM-DDTHH:MM:SS.ffffffZ
  std::string out(27, '\0');
  char* p = out.data();
  PutDigits(p + 4, static_cast<unsigned long long>(year), 4);
  p[4] = '-';
  PutDigits(p + 7, month, 2);
  p[7] = '-';
  PutDigits(p + 10, day, 2);
  p[10] = 'T';
  PutDigits(p + 13, static_cast<unsigned long long>(sod / 3600), 2);
  p[13] = ':';
  PutDigits(p + 16, static_cast<unsigned long long>(sod / 60 % 60), 2);
  p[16] = ':';
  PutDigits(p + 19, static_cast<unsigned long long>(sod % 60), 2);
  p[19] = '.';
  PutDigits(p + 26, static_cast<unsigned long long>(frac), 6);
  p[26] = 'Z';
  return out;
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
