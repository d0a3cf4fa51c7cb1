#include "applier/config.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace migledger {
namespace {

TEST(ConfigTest, DefaultsAnchorPathsAtTheProjectRoot) {
  auto c = ParseProjectConfig("", "/srv/app");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->migrations_dir, "/srv/app/migrations");
  EXPECT_EQ(c->ledger_dir, "/srv/app/.migledger");
  EXPECT_EQ(c->lock_timeout_ms, 10000);
}

TEST(ConfigTest, AllowOutOfOrderIsABooleanOffByDefault) {
  auto off = ParseProjectConfig("", "/srv/app");
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->allow_out_of_order);
  auto on = ParseProjectConfig("allow_out_of_order = true\n", "/srv/app");
  ASSERT_TRUE(on.ok()) << on.status().message();
  EXPECT_TRUE(on->allow_out_of_order);
  auto bad = ParseProjectConfig("allow_out_of_order = \"yes\"\n", "/srv/app");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(
      bad.status().message().find("allow_out_of_order must be true or false"),
      std::string::npos)
      << bad.status().message();
}

TEST(ConfigTest, NamedTargetsResolveLiteralAndEnvironmentUrls) {
  auto c = ParseProjectConfig(
      "default_target = \"dev\"\n[targets.dev]\nurl = \"sqlite:dev.db\"\n"
      "[targets.prod]\nurl_env = \"MIGLEDGER_TEST_PROD_URL\"\n",
      "/srv/app");
  ASSERT_TRUE(c.ok()) << c.status().message();
  std::string name;
  auto dev = ResolveTarget(*c, "", &name);
  ASSERT_TRUE(dev.ok());
  EXPECT_EQ(*dev, "sqlite:/srv/app/dev.db");
  EXPECT_EQ(name, "dev");
  unsetenv("MIGLEDGER_TEST_PROD_URL");
  auto missing = ResolveTarget(*c, "prod", &name);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("MIGLEDGER_TEST_PROD_URL"),
            std::string::npos);
  setenv("MIGLEDGER_TEST_PROD_URL", "postgresql://u@h/db", 1);
  auto prod = ResolveTarget(*c, "prod", &name);
  ASSERT_TRUE(prod.ok());
  EXPECT_EQ(*prod, "postgresql://u@h/db");
  EXPECT_EQ(name, "prod");
}

TEST(ConfigTest, BareUrisPassThroughAndUnknownNamesFail) {
  auto c = ParseProjectConfig("", "/p");
  ASSERT_TRUE(c.ok());
  std::string name;
  EXPECT_EQ(*ResolveTarget(*c, "sqlite:x.db", &name), "sqlite:/p/x.db");
  EXPECT_EQ(*ResolveTarget(*c, "sqlite:/abs/x.db", &name), "sqlite:/abs/x.db");
  EXPECT_EQ(*ResolveTarget(*c, "host=h dbname=d", &name), "host=h dbname=d");
  auto unknown = ResolveTarget(*c, "staging", &name);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), Code::kInvalidInput);
  auto none = ResolveTarget(*c, "", &name);
  ASSERT_FALSE(none.ok());
}

TEST(ConfigTest, SyntaxErrorsNameTheLine) {
  auto c = ParseProjectConfig("a = 1\nb = = 2\n", "/p");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("migledger.toml:2"), std::string::npos)
      << c.status().message();
}

TEST(ConfigTest, TargetNeedsExactlyOneOfUrlAndUrlEnv) {
  auto c = ParseProjectConfig(
      "[targets.x]\nurl = \"sqlite:a\"\nurl_env = \"B\"\n", "/p");
  ASSERT_FALSE(c.ok());
  auto d = ParseProjectConfig("[targets.x]\n", "/p");
  ASSERT_FALSE(d.ok());
  auto e = ParseProjectConfig("lock_timeout_ms = \"soon\"\n", "/p");
  ASSERT_FALSE(e.ok());
}

// fuzz/regressions/fuzz_config/lock-timeout-float-out-of-int64-range
TEST(ConfigTest, LockTimeoutMustBeAnIntegerNotAFloat) {
  auto huge = ParseProjectConfig("lock_timeout_ms = 3e93\n", "/p");
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.status().message().find("non-negative integer"),
            std::string::npos);
  EXPECT_FALSE(ParseProjectConfig("lock_timeout_ms = 2.5\n", "/p").ok());
  EXPECT_FALSE(ParseProjectConfig("lock_timeout_ms = -1\n", "/p").ok());
  auto ok = ParseProjectConfig("lock_timeout_ms = 2500\n", "/p");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->lock_timeout_ms, 2500);
}

TEST(ConfigTest, GroupsListTargetNames) {
  auto c = ParseProjectConfig("[groups]\nfleet = [\"a\", \"b\"]\n", "/p");
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->groups["fleet"].size(), 2u);
}

// issue 30 item 9: a misspelt key was ignored silently.
TEST(ConfigTest, UnknownKeysAreRefusedWithTheirLine) {
  auto top =
      ParseProjectConfig("migrations_dir = \"m\"\nlock_timout_ms = 5\n", "/p");
  ASSERT_FALSE(top.ok());
  EXPECT_EQ(top.status().code(), Code::kInvalidInput);
  EXPECT_NE(top.status().message().find("migledger.toml:2: unknown key "
                                        "\"lock_timout_ms\""),
            std::string::npos)
      << top.status().message();
  auto target = ParseProjectConfig(
      "[targets.dev]\nurl = \"sqlite:a.db\"\n\nurl_evn = \"X\"\n", "/p");
  ASSERT_FALSE(target.ok());
  EXPECT_NE(target.status().message().find(
                "migledger.toml:4: unknown key \"targets.dev.url_evn\""),
            std::string::npos)
      << target.status().message();
  EXPECT_NE(target.status().message().find("url_env"), std::string::npos);
}

// issue 30 item 2: a password in migledger.toml is refused, never used.
TEST(ConfigTest, APasswordInTheFileIsRefusedWithItsLine) {
  for (const std::string url :
       {"postgres://app:s3cret@host/db", "host=h password=s3cret",
        "postgres:///db?host=/run&sslpassword=s3cret"}) {
    auto c = ParseProjectConfig(
        "default_target = \"prod\"\n[targets.prod]\nurl = \"" + url + "\"\n",
        "/p");
    ASSERT_FALSE(c.ok()) << url;
    EXPECT_EQ(c.status().code(), Code::kInvalidInput);
    const std::string& m = c.status().message();
    EXPECT_EQ(m.find("s3cret"), std::string::npos) << m;
    EXPECT_NE(m.find("migledger.toml:3: targets.prod.url holds a password"),
              std::string::npos)
        << m;
    for (const char* word : {"url_env", "PGPASSWORD", ".pgpass"}) {
      EXPECT_NE(m.find(word), std::string::npos) << m;
    }
  }
  auto store = ParseProjectConfig(
      "audit_store = \"postgresql://audit:s3cret@db/audit\"\n", "/p");
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("audit_store holds a password"),
            std::string::npos)
      << store.status().message();
  EXPECT_EQ(store.status().message().find("s3cret"), std::string::npos);
  // Without a password, and through url_env (the place for one), it loads.
  auto fine = ParseProjectConfig(
      "audit_store = \"postgresql://audit@db/audit\"\n"
      "[targets.prod]\nurl_env = \"DATABASE_URL\"\n"
      "[targets.dev]\nurl = \"postgres://app@host/db?sslmode=require\"\n",
      "/p");
  EXPECT_TRUE(fine.ok()) << fine.status().message();
}

}  // namespace
}  // namespace migledger
