#include "applier/migration_source.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/sha256.h"

namespace migledger {
namespace {
namespace fs = std::filesystem;

class MigrationSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/migledger-src-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& name, const std::string& content) {
    std::ofstream(dir_ + "/" + name, std::ios::binary) << content;
  }
  std::string dir_;
};

TEST_F(MigrationSourceTest, VersionsSortNumericallyAtAnyWidth) {
  Write("10_ten.up.sql", "SELECT 10;");
  Write("9_nine.up.sql", "SELECT 9;");
  Write("0100_hundred.up.sql", "SELECT 100;");
  Write("20261125120000_stamp.up.sql", "SELECT 1;");
  auto m = LoadMigrations(dir_);
  ASSERT_TRUE(m.ok()) << m.status().message();
  ASSERT_EQ(m->size(), 4u);
  EXPECT_EQ((*m)[0].version, "9");
  EXPECT_EQ((*m)[1].version, "10");
  EXPECT_EQ((*m)[2].version, "0100");
  EXPECT_EQ((*m)[3].version, "20261125120000");
}

TEST_F(MigrationSourceTest, VersionsLongerThanAWordSortNumericallyToo) {
  // Up to 19 digits a version is sorted as a number, past that by its
  // digits: both orders agree, and leading zeros never count.
  const std::vector<std::string> in_order = {
      "0",
      "7",
      "9999999999999999999",       // 19 digits: the largest sorted as a number
      "10000000000000000000",      // 20 digits
      "000010000000000000000001",  // 20 digits after its zeros
      "99999999999999999999",
      "123456789012345678901234567890",
  };
  for (size_t i = in_order.size(); i-- > 0;) {  // written in reverse
    Write(in_order[i] + "_m" + std::to_string(i) + ".up.sql", "SELECT 1;");
    Write(in_order[i] + "_m" + std::to_string(i) + ".down.sql", "SELECT 2;");
  }
  auto m = LoadMigrations(dir_);
  ASSERT_TRUE(m.ok()) << m.status().message();
  ASSERT_EQ(m->size(), in_order.size());
  for (size_t i = 0; i < in_order.size(); ++i) {
    EXPECT_EQ((*m)[i].version, in_order[i]);
    EXPECT_TRUE((*m)[i].has_down) << in_order[i];
    EXPECT_EQ((*m)[i].slug, "m" + std::to_string(i));
  }
  // The same number at two widths past 19 digits is still one version.
  Write("0099999999999999999999_again.up.sql", "SELECT 3;");
  auto dup = LoadMigrations(dir_);
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("duplicate migration version"),
            std::string::npos)
      << dup.status().message();
}

TEST_F(MigrationSourceTest, UpAndDownArePairedAndChecksummed) {
  Write("1_users.up.sql", "CREATE TABLE users(id int);");
  Write("1_users.down.sql", "DROP TABLE users;");
  Write("2_no_down.up.sql", "SELECT 1;");
  Write("README.md", "not a migration");
  auto m = LoadMigrations(dir_);
  ASSERT_TRUE(m.ok()) << m.status().message();
  ASSERT_EQ(m->size(), 2u);
  EXPECT_TRUE((*m)[0].has_down);
  EXPECT_FALSE((*m)[1].has_down);
  EXPECT_EQ((*m)[0].slug, "users");
  EXPECT_EQ((*m)[0].up.checksum, Sha256Hex("CREATE TABLE users(id int);"));
  EXPECT_EQ((*m)[0].down.sql, "DROP TABLE users;");
}

TEST_F(MigrationSourceTest, DownFilesCanBeListedAndReadLater) {
  Write("1_users.up.sql", "CREATE TABLE users(id int);");
  Write("1_users.down.sql", "-- migledger:no-transaction\nDROP TABLE users;");
  Write("2_bad.up.sql", "SELECT 2;");
  Write("2_bad.down.sql", "SELECT '\xff';");  // not UTF-8
  auto listed = LoadMigrations(dir_, /*read_down_files=*/false);
  ASSERT_TRUE(listed.ok()) << listed.status().message();
  ASSERT_EQ(listed->size(), 2u);
  MigrationFile& down = (*listed)[0].down;
  EXPECT_TRUE((*listed)[0].has_down);
  EXPECT_TRUE((*listed)[0].up.loaded);
  EXPECT_FALSE(down.loaded);
  EXPECT_TRUE(down.sql.empty());
  EXPECT_EQ(down.path, dir_ + "/1_users.down.sql");

  ASSERT_TRUE(ReadMigrationFile(&down).ok());
  EXPECT_TRUE(down.loaded);
  EXPECT_EQ(down.sql, "-- migledger:no-transaction\nDROP TABLE users;");
  EXPECT_EQ(down.checksum, Sha256Hex(down.sql));
  EXPECT_TRUE(down.no_transaction);
  EXPECT_TRUE(ReadMigrationFile(&down).ok());  // read once

  // Content errors of a listed file come when it is read, as LoadMigrations
  // reports them when it reads everything.
  Status bad = ReadMigrationFile(&(*listed)[1].down);
  EXPECT_EQ(bad.code(), Code::kInvalidInput);
  EXPECT_NE(bad.message().find("2_bad.down.sql: not valid UTF-8"),
            std::string::npos)
      << bad.message();
  auto all = LoadMigrations(dir_);
  ASSERT_FALSE(all.ok());
  EXPECT_EQ(all.status().message(), bad.message());
}

// A large project's files are read on two threads: everything is read, in
// version order, and a bad file in either half is reported.
TEST_F(MigrationSourceTest, LargeProjectsReadCompletelyOnTwoThreads) {
  constexpr int kCount = 1500;  // over the two-thread threshold
  auto sql = [](int i) {
    return "CREATE TABLE t" + std::to_string(i) + " (id INTEGER);\n";
  };
  for (int i = 1; i <= kCount; ++i) {
    Write(std::to_string(i) + "_t.up.sql", sql(i));
    if (i % 2 == 0) Write(std::to_string(i) + "_t.down.sql", "SELECT 1;");
  }
  auto m = LoadMigrations(dir_);
  ASSERT_TRUE(m.ok()) << m.status().message();
  ASSERT_EQ(m->size(), static_cast<size_t>(kCount));
  for (int i = 1; i <= kCount; ++i) {
    const Migration& x = (*m)[i - 1];
    ASSERT_EQ(x.version, std::to_string(i));
    ASSERT_EQ(x.up.sql, sql(i));
    ASSERT_EQ(x.up.checksum, Sha256Hex(sql(i)));
    ASSERT_EQ(x.has_down, i % 2 == 0);
    if (x.has_down) ASSERT_EQ(x.down.sql, "SELECT 1;");
  }
  for (int bad : {3, kCount - 3}) {
    Write(std::to_string(bad) + "_t.up.sql", "SELECT '\xff';");
    auto broken = LoadMigrations(dir_);
    ASSERT_FALSE(broken.ok());
    EXPECT_NE(broken.status().message().find("/" + std::to_string(bad) +
                                             "_t.up.sql: not valid UTF-8"),
              std::string::npos)
        << broken.status().message();
    Write(std::to_string(bad) + "_t.up.sql", sql(bad));
  }
}

TEST_F(MigrationSourceTest, DuplicateVersionsAcrossWidthsAreRejected) {
  Write("1_a.up.sql", "SELECT 1;");
  Write("001_b.up.sql", "SELECT 1;");
  auto m = LoadMigrations(dir_);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kInvalidInput);
  EXPECT_NE(m.status().message().find("duplicate migration version"),
            std::string::npos);
}

TEST_F(MigrationSourceTest, MalformedNamesAreRejectedWithTheFileName) {
  for (const char* name :
       {"abc.up.sql", "1.up.sql", "1_x.sql", "1_a b.up.sql", "x1_a.up.sql"}) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    Write(name, "SELECT 1;");
    auto m = LoadMigrations(dir_);
    ASSERT_FALSE(m.ok()) << name;
    EXPECT_NE(m.status().message().find(name), std::string::npos)
        << m.status().message();
  }
}

TEST_F(MigrationSourceTest, DownWithoutUpIsRejected) {
  Write("3_orphan.down.sql", "SELECT 1;");
  auto m = LoadMigrations(dir_);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("without its up file"),
            std::string::npos);
}

TEST_F(MigrationSourceTest, DirectivesAreParsedFromTheLeadingComments) {
  Write("0_base.up.sql", "SELECT 0;");
  Write("1_idx.up.sql",
        "-- a comment\n-- migledger:no-transaction\n--   migledger:requires "
        "0\n\nCREATE INDEX x;\n"
        "-- migledger:not-a-directive-after-sql\n");
  auto m = LoadMigrations(dir_);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_TRUE((*m)[1].up.no_transaction);
  ASSERT_EQ((*m)[1].up.requires_versions.size(), 1u);
  EXPECT_EQ((*m)[1].up.requires_versions[0], "0");
}

// A dependency on a version no file has is a typo, not a dependency: the
// error names the file and the version. Any spelling of an existing version
// is fine.
TEST_F(MigrationSourceTest, RequiresOfAVersionWithoutAFileIsRejected) {
  Write("0001_base.up.sql", "SELECT 1;");
  Write("0003_next.up.sql", "-- migledger:requires 1\nSELECT 3;");
  ASSERT_TRUE(LoadMigrations(dir_).ok());
  Write("0004_typo.up.sql", "-- migledger:requires 0002\nSELECT 4;");
  auto m = LoadMigrations(dir_);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kInvalidInput);
  EXPECT_NE(m.status().message().find("0004_typo.up.sql"), std::string::npos)
      << m.status().message();
  EXPECT_NE(m.status().message().find("no migration has version 0002"),
            std::string::npos)
      << m.status().message();
}

// A UTF-8 byte order mark before the first line does not hide a directive
// (nor the first statement: the checksum still covers the exact bytes).
TEST_F(MigrationSourceTest, DirectiveAfterAByteOrderMarkIsParsed) {
  const std::string text =
      "\xEF\xBB\xBF-- migledger:no-transaction\r\nCREATE INDEX x;\r\n";
  Write("1_idx.up.sql", text);
  auto m = LoadMigrations(dir_);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_TRUE((*m)[0].up.no_transaction);
  EXPECT_EQ((*m)[0].up.sql, text);
  EXPECT_EQ((*m)[0].up.checksum, Sha256Hex(text));
  Write("2_x.up.sql", "\xEF\xBB\xBF-- migledger:no-transactoin\nSELECT 1;");
  auto bad = LoadMigrations(dir_);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("2_x.up.sql:1"), std::string::npos)
      << bad.status().message();
}

TEST_F(MigrationSourceTest, UnknownDirectiveIsAnErrorNamingFileAndLine) {
  Write("1_x.up.sql", "\n-- migledger:no-transactoin\nSELECT 1;");
  auto m = LoadMigrations(dir_);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("1_x.up.sql:2"), std::string::npos)
      << m.status().message();
  EXPECT_NE(m.status().message().find("unknown directive"), std::string::npos);
}

TEST_F(MigrationSourceTest, NonUtf8FileIsRejected) {
  Write("1_x.up.sql", std::string("SELECT '\xff\xfe';"));
  auto m = LoadMigrations(dir_);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("UTF-8"), std::string::npos);
}

TEST_F(MigrationSourceTest, SymlinkLeavingTheDirectoryIsRejected) {
  char tmpl[] = "/tmp/migledger-outside-XXXXXX";
  std::string outside = mkdtemp(tmpl);
  std::ofstream(outside + "/secret.sql") << "SELECT 1;";
  fs::create_symlink(outside + "/secret.sql", dir_ + "/1_x.up.sql");
  auto m = LoadMigrations(dir_);
  fs::remove_all(outside);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("outside the migrations directory"),
            std::string::npos);
}

TEST_F(MigrationSourceTest, MissingDirectoryIsAClearError) {
  auto m = LoadMigrations(dir_ + "/nope");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kInvalidInput);
  EXPECT_NE(m.status().message().find("does not exist"), std::string::npos);
}

TEST(CompareVersionsTest, NumericOrderIgnoresLeadingZeros) {
  EXPECT_LT(CompareVersions("9", "10"), 0);
  EXPECT_EQ(CompareVersions("0010", "10"), 0);
  EXPECT_GT(CompareVersions("20261125120000", "9999"), 0);
  EXPECT_EQ(CanonicalVersion("000"), "0");
  EXPECT_FALSE(IsValidVersion("1a"));
  EXPECT_FALSE(IsValidVersion(""));
}

}  // namespace
}  // namespace migledger
