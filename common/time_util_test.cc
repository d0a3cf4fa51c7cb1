#include "common/time_util.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <ctime>
#include <random>
#include <string>

namespace migledger {
namespace {

// What FormatRfc3339 printed before it formatted by hand: the C library.
std::string LibcRfc3339(int64_t micros) {
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

constexpr int64_t kYear0 = -62167219200LL * 1000000;      // 0000-01-01
constexpr int64_t kYear10000 = 253402300800LL * 1000000;  // 10000-01-01

TEST(TimeUtilTest, FormatsKnownInstants) {
  EXPECT_EQ(FormatRfc3339(0), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(FormatRfc3339(-1), "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(FormatRfc3339(951782400LL * 1000000 + 7),
            "2000-02-29T00:00:00.000007Z");
  EXPECT_EQ(FormatRfc3339(1796083199LL * 1000000 + 999999),
            "2026-11-30T23:59:59.999999Z");
  EXPECT_EQ(FormatRfc3339(kYear0), "0000-01-01T00:00:00.000000Z");
  EXPECT_EQ(FormatRfc3339(kYear10000 - 1), "9999-12-31T23:59:59.999999Z");
}

TEST(TimeUtilTest, FormatMatchesTheCLibraryEverywhere) {
  std::mt19937_64 rng(20261201);
  std::uniform_int_distribution<int64_t> any(
      kYear0 - 86400LL * 1000000 * 800, kYear10000 + 86400LL * 1000000 * 800);
  std::uniform_int_distribution<int64_t> near_epoch(-86400LL * 1000000 * 3,
                                                    86400LL * 1000000 * 3);
  for (int i = 0; i < 200000; ++i) {
    const int64_t t = i % 2 ? any(rng) : near_epoch(rng);
    ASSERT_EQ(FormatRfc3339(t), LibcRfc3339(t)) << t;
  }
  // Day and year boundaries, leap and century years.
  for (int64_t day = -800000; day <= 3000000; day += 997) {
    for (int64_t edge : {0LL, 1LL, 86399999999LL}) {
      const int64_t t = day * 86400LL * 1000000 + edge;
      ASSERT_EQ(FormatRfc3339(t), LibcRfc3339(t)) << t;
    }
  }
}

TEST(TimeUtilTest, ParseReadsBackWhatFormatWrites) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int64_t> any(kYear0, kYear10000 - 1);
  for (int i = 0; i < 20000; ++i) {
    const int64_t t = any(rng);
    auto back = ParseTime(FormatRfc3339(t));
    ASSERT_TRUE(back.has_value()) << FormatRfc3339(t);
    EXPECT_EQ(*back, t) << FormatRfc3339(t);
  }
}

}  // namespace
}  // namespace migledger
