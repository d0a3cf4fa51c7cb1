#include "applier/sqlite_journal_vfs.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

namespace migledger {
namespace {

// A VFS over the default one that records the flags of every main-journal
// open for writing (the pager also opens an existing journal read-only to
// see whether it is hot), so the tests see what the kept-journal VFS asks
// of the real one.
std::vector<int> journal_opens;
sqlite3_vfs watching;

int WatchingOpen(sqlite3_vfs* vfs, const char* name, sqlite3_file* file,
                 int flags, int* out_flags) {
  if ((flags & SQLITE_OPEN_MAIN_JOURNAL) && (flags & SQLITE_OPEN_READWRITE)) {
    journal_opens.push_back(flags);
  }
  return sqlite3_vfs_find(nullptr)->xOpen(vfs, name, file, flags, out_flags);
}

const char* KeptOverWatching() {
  static const char* name = [] {
    watching = *sqlite3_vfs_find(nullptr);
    watching.zName = "test-watching";
    watching.pNext = nullptr;
    watching.xOpen = WatchingOpen;
    sqlite3_vfs_register(&watching, 0);
    RegisterKeptJournalVfs("test-kept-over-watching", &watching);
    return "test-kept-over-watching";
  }();
  return name;
}

class KeptJournalVfsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/migledger-vfs-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    db_path_ = dir_ + "/app.db";
    ASSERT_EQ(sqlite3_open_v2(db_path_.c_str(), &db_,
                              SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                              KeptOverWatching()),
              SQLITE_OK);
    journal_opens.clear();
  }
  void TearDown() override {
    sqlite3_close(db_);
    std::filesystem::remove_all(dir_);
  }
  void Exec(sqlite3* db, const std::string& sql) {
    char* err = nullptr;
    ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK)
        << (err ? err : "");
  }
  void Write(int i) {
    Exec(db_, "BEGIN IMMEDIATE; CREATE TABLE t" + std::to_string(i) +
                  " (id INTEGER); INSERT INTO t" + std::to_string(i) +
                  " VALUES (1); COMMIT;");
  }
  // For each recorded journal open: whether it asked for CREATE.
  static std::vector<bool> Creates() {
    std::vector<bool> v;
    for (int flags : journal_opens) v.push_back(flags & SQLITE_OPEN_CREATE);
    return v;
  }
  std::string dir_, db_path_;
  sqlite3* db_ = nullptr;
};

TEST_F(KeptJournalVfsTest, AKeptJournalIsOpenedWithoutCreateOnceItIsPinned) {
  Exec(db_, "PRAGMA journal_mode=PERSIST");
  for (int i = 1; i <= 4; ++i) Write(i);
  // Created by the first transaction; found by the second, which pins it
  // after syncing its directory; the rest reuse it.
  EXPECT_EQ(Creates(), (std::vector<bool>{true, true, false, false}));
  EXPECT_TRUE(std::filesystem::exists(db_path_ + "-journal"));
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(db_path_.c_str(), &other), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(other,
                               "SELECT (SELECT count(*) FROM t4), "
                               "(SELECT integrity_check FROM "
                               "pragma_integrity_check)",
                               -1, &st, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), 1);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 1)), "ok");
  sqlite3_finalize(st);
  sqlite3_close(other);
}

TEST_F(KeptJournalVfsTest, DeleteModeJournalsAreAlwaysCreated) {
  for (int i = 1; i <= 3; ++i) Write(i);
  EXPECT_EQ(Creates(), (std::vector<bool>{true, true, true}));
  EXPECT_FALSE(std::filesystem::exists(db_path_ + "-journal"));
}

TEST_F(KeptJournalVfsTest,
       AJournalReplacedByAnotherConnectionIsOpenedNormally) {
  Exec(db_, "PRAGMA journal_mode=PERSIST");
  for (int i = 1; i <= 3; ++i) Write(i);
  // Another connection, in the default DELETE mode, commits: it deletes the
  // kept journal, so the next one is a new file.
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(db_path_.c_str(), &other), SQLITE_OK);
  Exec(other, "INSERT INTO t1 VALUES (2)");
  sqlite3_close(other);
  EXPECT_FALSE(std::filesystem::exists(db_path_ + "-journal"));
  journal_opens.clear();
  for (int i = 4; i <= 6; ++i) Write(i);
  EXPECT_EQ(Creates(), (std::vector<bool>{true, true, false}));
}

}  // namespace
}  // namespace migledger
