#include "applier/conninfo.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "applier/driver.h"

namespace migledger {
namespace {

TEST(RedactConninfoTest, DropsPasswordsFromUris) {
  EXPECT_EQ(RedactConninfo("postgresql://user:pw@host/db"),
            "postgresql://user@host/db");
  EXPECT_EQ(RedactConninfo("postgres://user:pw@host:5432/db?sslmode=off"),
            "postgres://user@host:5432/db?sslmode=off");
  EXPECT_EQ(RedactConninfo("postgresql://user@host/db"),
            "postgresql://user@host/db");
  EXPECT_EQ(RedactConninfo("postgresql://user:p%40ss@h1,h2:5433/db"),
            "postgresql://user@h1,h2:5433/db");
  EXPECT_EQ(RedactConninfo("postgresql://user:@host/db"),
            "postgresql://user@host/db");
  EXPECT_EQ(RedactConninfo("postgresql://host/db?password=pw&user=u"),
            "postgresql://u@host/db");
  EXPECT_EQ(RedactConninfo("postgresql://host/db?password=pw"),
            "postgresql://host/db");
  EXPECT_EQ(RedactConninfo("postgresql://u:a@h/db?password=b&sslmode=require"),
            "postgresql://u@h/db?sslmode=require");
  EXPECT_EQ(RedactConninfo("postgresql:///db?host=/tmp/x&port=5432&user=u"),
            "postgresql://u@/db?host=/tmp/x&port=5432");
  EXPECT_EQ(RedactConninfo("postgresql://"), "postgresql://");
  EXPECT_EQ(RedactConninfo("postgresql://[::1]:5432/db"),
            "postgresql://[::1]:5432/db");
  EXPECT_EQ(RedactConninfo("postgresql://u:pw@[::1]:5432/db"),
            "postgresql://u@[::1]:5432/db");
  // libpq takes only a lower-case scheme; nothing of this one is shown.
  EXPECT_EQ(RedactConninfo("POSTGRES://u:pw@h/db"), "POSTGRES://(unparsable)");
}

TEST(RedactConninfoTest, KeepsSeveralHostsAndTheirPorts) {
  EXPECT_EQ(RedactConninfo("postgresql://u:pw@h1:1,h2:2/db"),
            "postgresql://u@h1:1,h2:2/db");
  // One port for several hosts applies to each: it stays a parameter.
  EXPECT_EQ(RedactConninfo("postgresql://h1,h2/db?port=5432&password=pw"),
            "postgresql:///db?host=h1,h2&port=5432");
  EXPECT_EQ(RedactConninfo("host=h1,h2 port=5432 password=pw"),
            "host=h1,h2 port=5432");
  EXPECT_EQ(RedactConninfo("postgresql://u@h/my%20db?application_name=a%26b"),
            "postgresql://u@h/my%20db?application_name=a%26b");
}

// issue 39: sslpassword reached every event's redacted_uri.
TEST(RedactConninfoTest, DropsSslpasswordAndEveryKeywordNotKnownSafe) {
  EXPECT_EQ(RedactConninfo("postgres:///db?host=/run/pg&sslpassword=X1y2"),
            "postgres:///db?host=/run/pg");
  EXPECT_EQ(RedactConninfo("host=h sslpassword=X1y2 dbname=d"),
            "dbname=d host=h");
  EXPECT_EQ(RedactConninfo("host=h options='-c app.key=K3y'"), "host=h");
}

TEST(RedactConninfoTest, DropsPasswordsFromKeyValueConninfo) {
  EXPECT_EQ(RedactConninfo("host=h password=pw dbname=d"), "dbname=d host=h");
  EXPECT_EQ(RedactConninfo("password='p w\\'x' host=h"), "host=h");
  EXPECT_EQ(RedactConninfo("host=h port=5432 password = secret"),
            "host=h port=5432");
  EXPECT_EQ(RedactConninfo("host=h dbname='my db'"), "dbname='my db' host=h");
  std::string nested =
      RedactConninfo("dbname=postgresql://u:hunter2@h/db user=u");
  EXPECT_EQ(nested.find("hunter2"), std::string::npos) << nested;
  EXPECT_NE(nested.find("postgresql://u@h/db"), std::string::npos) << nested;
}

TEST(RedactConninfoTest, LeavesWhatIsNotAConnectionStringAndHidesUnparsable) {
  EXPECT_EQ(RedactConninfo("mydb"), "mydb");
  EXPECT_EQ(RedactConninfo(""), "");
  EXPECT_EQ(RedactConninfo("sqlite:app.db"), "sqlite:app.db");
  // libpq refuses these; nothing of them is shown.
  EXPECT_EQ(RedactConninfo("PASSWORD=pw host=h"),
            "(unparsable connection string)");
  EXPECT_EQ(RedactConninfo("password=se cret"),
            "(unparsable connection string)");
  EXPECT_EQ(RedactConninfo("postgresql://u:p%zzw@h/db"),
            "postgresql://(unparsable)");
}

TEST(RedactUriTest, HidesPasswordsOfEveryScheme) {
  EXPECT_EQ(RedactUri("sqlite:a=b.db"), "sqlite:a=b.db");
  EXPECT_EQ(RedactUri("postgres://u:pw@h/db"), "postgres://u@h/db");
  EXPECT_EQ(RedactUri("mysql://u:pw@h:3306/db"), "mysql://u@h:3306/db");
  EXPECT_EQ(RedactUri("mysql://u:p@w@h/db"), "mysql://u@h/db");
  EXPECT_EQ(RedactUri("see https://example.com/a:b@c"),
            "see https://example.com/a:b@c");
  EXPECT_EQ(RedactUri("0003"), "0003");
}

TEST(ParseConninfoTest, ErrorsQuoteOnlyKeywordNames) {
  auto a = ParseConninfo("password=se cret");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), Code::kInvalidInput);
  EXPECT_EQ(a.status().message().find("cret"), std::string::npos)
      << a.status().message();
  auto b = ParseConninfo("postgresql://u:s3cr%zz@h/db");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().message().find("s3cr"), std::string::npos)
      << b.status().message();
  auto c = ParseConninfo("host=h bogus=1");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("invalid connection option"),
            std::string::npos)
      << c.status().message();
}

TEST(RefuseStoredSecretTest, NamesTheKeywordAndTheWaysToPassAPassword) {
  EXPECT_TRUE(RefuseStoredSecret("postgres://app@host/db", "x").ok());
  EXPECT_TRUE(RefuseStoredSecret("sqlite:app.db", "x").ok());
  EXPECT_TRUE(RefuseStoredSecret("host=h dbname=d", "x").ok());
  for (const char* uri :
       {"postgres://app:s3cret@host/db", "postgresql://host/db?password=s3cret",
        "host=h password=s3cret", "host=h sslpassword=s3cret",
        "postgres:///db?sslpassword=s3cret"}) {
    Status st = RefuseStoredSecret(uri, "targets.dev.url");
    ASSERT_FALSE(st.ok()) << uri;
    EXPECT_EQ(st.code(), Code::kInvalidInput);
    EXPECT_EQ(st.message().find("s3cret"), std::string::npos) << st.message();
    for (const char* word :
         {"targets.dev.url", "url_env", "PGPASSWORD", ".pgpass", "password"}) {
      EXPECT_NE(st.message().find(word), std::string::npos)
          << word << " in " << st.message();
    }
  }
  Status bad = RefuseStoredSecret("password=se cret", "audit_store");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.message().find("cret"), std::string::npos) << bad.message();
}

TEST(ConninfoSecretsTest, AreTheValuesOfSecretKeywords) {
  auto s = ConninfoSecrets("postgres://u:p%40ss@h/db?sslpassword=k%20y");
  EXPECT_NE(std::find(s.begin(), s.end(), "p@ss"), s.end());
  EXPECT_NE(std::find(s.begin(), s.end(), "k y"), s.end());
  EXPECT_EQ(std::find(s.begin(), s.end(), "u"), s.end());
  EXPECT_EQ(ScrubSecrets("login p@ss failed", s), "login *** failed");
}

TEST(ConninfoKeywordsTest, PasswordsAreSecretAndNeverDisplaySafe) {
  const auto all = KnownConninfoKeywords();
  ASSERT_FALSE(all.empty());
  for (const char* k : {"password", "sslpassword"}) {
    EXPECT_TRUE(IsSecretConninfoKeyword(k)) << k;
    EXPECT_FALSE(IsDisplaySafeConninfoKeyword(k)) << k;
  }
  for (const char* k : {"host", "port", "dbname", "user", "sslmode"}) {
    EXPECT_TRUE(IsDisplaySafeConninfoKeyword(k)) << k;
  }
  EXPECT_FALSE(IsDisplaySafeConninfoKeyword("options"));
  EXPECT_FALSE(IsDisplaySafeConninfoKeyword("no_such_keyword"));
}

// A value that cannot occur by chance in a redacted string: letters
// no keyword or scheme holds in this order, then random bytes libpq
// accepts, quoting and percent-encoding included.
std::string RandomValue(std::mt19937_64& rng) {
  static const std::string kChars =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
      " '\\%&=@/:?#,;+\"";
  std::uniform_int_distribution<size_t> pick(0, kChars.size() - 1);
  std::uniform_int_distribution<int> len(1, 12);
  std::string v = "Zq";
  for (int i = len(rng); i > 0; --i) v += kChars[pick(rng)];
  return v + "Qz";
}

std::string KeyValueQuote(const std::string& v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

std::string UriEncode(const std::string& v) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : v) {
    if (std::isalnum(c)) {
      out += static_cast<char>(c);
    } else {
      out += {'%', kHex[c >> 4], kHex[c & 15]};
    }
  }
  return out;
}

std::map<std::string, std::string> Reparsed(const std::string& redacted) {
  std::map<std::string, std::string> out;
  auto parsed = ParseConninfo(redacted);
  EXPECT_TRUE(parsed.ok()) << redacted << ": " << parsed.status().message();
  if (parsed.ok()) {
    for (auto& o : *parsed) out[o.keyword] = o.value;
  }
  return out;
}

// issue 39: for every keyword libpq knows and random values, in both forms,
// alone and all together: no value of a keyword that is not display-safe
// appears in the redacted string (raw or percent-encoded), and what is kept
// reads back, through libpq, as what was given.
TEST(RedactConninfoTest, PropertyNoValueOfAnUnsafeKeywordSurvives) {
  const auto keywords = KnownConninfoKeywords();
  ASSERT_GT(keywords.size(), 20u);
  std::mt19937_64 rng(20261207);
  for (int round = 0; round < 40; ++round) {
    std::map<std::string, std::string> values;
    for (const auto& k : keywords) values[k] = RandomValue(rng);
    auto check = [&](const std::string& conninfo,
                     const std::vector<std::string>& used) {
      const std::string redacted = RedactConninfo(conninfo);
      SCOPED_TRACE(conninfo + "  ->  " + redacted);
      ASSERT_EQ(redacted.find("unparsable"), std::string::npos);
      auto back = Reparsed(redacted);
      for (const auto& k : used) {
        const std::string& v = values[k];
        if (IsDisplaySafeConninfoKeyword(k)) {
          if (k == "dbname" && LooksLikePostgresConninfo(v)) continue;
          EXPECT_EQ(back[k], v) << k;
        } else {
          EXPECT_EQ(redacted.find(v), std::string::npos) << k;
          EXPECT_EQ(redacted.find(UriEncode(v)), std::string::npos) << k;
          EXPECT_EQ(redacted.find(v.substr(0, 6)), std::string::npos) << k;
          EXPECT_EQ(back.count(k), 0u) << k;
        }
      }
    };
    std::string kv, query;
    for (const auto& k : keywords) {
      const std::string& v = values[k];
      check(k + "=" + KeyValueQuote(v), {k});
      check("postgresql://h/d?" + k + "=" + UriEncode(v), {k});
      kv += k + "=" + KeyValueQuote(v) + " ";
      query += (query.empty() ? "?" : "&") + k + "=" + UriEncode(v);
    }
    check(kv, keywords);
    check("postgres://" + query, keywords);
    // A password in the user info, too.
    check("postgresql://" + UriEncode(values["user"]) + ":" +
              UriEncode(values["password"]) + "@h/d",
          {"user", "password"});
  }
}

}  // namespace
}  // namespace migledger
