#include "applier/libpq_secrets.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>

#include "applier/libpq_loader.h"

namespace migledger {
namespace {

class LibpqSecretsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!LoadLibpq().ok()) GTEST_SKIP() << "libpq is not installed";
  }
};

TEST_F(LibpqSecretsTest, ConninfoPasswordsAreScrubbed) {
  const LibpqSecrets secrets(
      "postgresql://app:hunter2@db.example/prod?sslpassword=keyphrase");
  EXPECT_EQ(secrets.Scrub("password hunter2 and key keyphrase refused"),
            "password *** and key *** refused");
  EXPECT_EQ(secrets.Scrub("nothing secret here"), "nothing secret here");
}

TEST_F(LibpqSecretsTest, PgpasswordIsScrubbedAsItIsWhenScrubbing) {
  const LibpqSecrets secrets("host=db.example dbname=prod");
  const char* set = std::getenv("PGPASSWORD");
  const std::optional<std::string> old =
      set ? std::optional<std::string>(set) : std::nullopt;
  ::setenv("PGPASSWORD", "from-the-env", 1);
  const std::string scrubbed = secrets.Scrub("auth failed: from-the-env");
  if (old) {
    ::setenv("PGPASSWORD", old->c_str(), 1);
  } else {
    ::unsetenv("PGPASSWORD");
  }
  EXPECT_EQ(scrubbed, "auth failed: ***");
}

// A connection that failed (no server behind the socket path) still names
// the password it tried, and the secret options it was given.
TEST_F(LibpqSecretsTest, LearnsWhatTheConnectionUsed) {
  LibpqSecrets secrets("");
  PGconn* conn = PQconnectdb(
      "host=/nonexistent-migledger-socket-dir port=1 user=u "
      "password=tried-this sslpassword=and-this connect_timeout=1");
  ASSERT_NE(conn, nullptr);
  EXPECT_EQ(secrets.Scrub("tried-this and-this"), "tried-this and-this");
  secrets.Learn(conn);
  PQfinish(conn);
  EXPECT_EQ(secrets.Scrub("tried-this and-this"), "*** ***");
}

}  // namespace
}  // namespace migledger
