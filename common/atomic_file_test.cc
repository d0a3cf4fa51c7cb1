// WriteFileAtomically on real files in a real directory.
#include "common/atomic_file.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace migledger {
namespace {

namespace fs = std::filesystem;

class AtomicFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") +
                       "/migledger-atomic-test-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    ASSERT_NE(mkdtemp(buf.data()), nullptr);
    dir_ = buf.data();
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  static void Write(const std::string& path, const std::string& content) {
    std::ofstream(path, std::ios::binary) << content;
  }
  // Names in the directory, sorted.
  std::vector<std::string> Names() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
  static mode_t Mode(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(0, ::lstat(path.c_str(), &st));
    return st.st_mode & 07777;
  }
  std::string dir_;
};

TEST_F(AtomicFileTest, WritesTheContentWithTheModeAsked) {
  ASSERT_TRUE(WriteFileAtomically(Path("out"), "hello\n", {0640, true}).ok());
  EXPECT_EQ(Read(Path("out")), "hello\n");
  EXPECT_EQ(Mode(Path("out")), 0640u);
  EXPECT_EQ(Names(), std::vector<std::string>{"out"});
}

TEST_F(AtomicFileTest, ReplacesAnExistingFile) {
  Write(Path("out"), "old content, longer than the new one");
  ASSERT_TRUE(WriteFileAtomically(Path("out"), "new").ok());
  EXPECT_EQ(Read(Path("out")), "new");
  EXPECT_EQ(Names(), std::vector<std::string>{"out"});
}

// The attack of issue 39: a symlink planted at the name the old code used
// for its temporary file (F.tmp), and one at F itself. Neither is followed.
TEST_F(AtomicFileTest, PlantedSymlinksAreNeverWrittenThrough) {
  Write(Path("victim"), "precious");
  ASSERT_EQ(0, ::symlink(Path("victim").c_str(), Path("out.tmp").c_str()));
  ASSERT_TRUE(WriteFileAtomically(Path("out"), "export").ok());
  EXPECT_EQ(Read(Path("victim")), "precious");
  EXPECT_EQ(Read(Path("out")), "export");

  ASSERT_EQ(0, ::symlink(Path("victim").c_str(), Path("link").c_str()));
  ASSERT_TRUE(WriteFileAtomically(Path("link"), "export").ok());
  EXPECT_EQ(Read(Path("victim")), "precious");
  EXPECT_FALSE(fs::is_symlink(Path("link")));
  EXPECT_EQ(Read(Path("link")), "export");
}

TEST_F(AtomicFileTest, NoReplaceNeverTouchesWhatIsThere) {
  Write(Path("existing"), "mine");
  Status st = WriteFileAtomically(Path("existing"), "theirs", {0644, false});
  EXPECT_EQ(st.code(), Code::kInvalidInput) << st.ToString();
  EXPECT_NE(st.message().find("already exists"), std::string::npos);
  EXPECT_EQ(Read(Path("existing")), "mine");
  // A dangling symlink is something too: its target is not created.
  ASSERT_EQ(0, ::symlink(Path("nowhere").c_str(), Path("dangling").c_str()));
  st = WriteFileAtomically(Path("dangling"), "x", {0644, false});
  EXPECT_EQ(st.code(), Code::kInvalidInput) << st.ToString();
  EXPECT_FALSE(fs::exists(Path("nowhere")));
  EXPECT_EQ(Names(), (std::vector<std::string>{"dangling", "existing"}));
  ASSERT_TRUE(WriteFileAtomically(Path("fresh"), "x", {0644, false}).ok());
  EXPECT_EQ(Read(Path("fresh")), "x");
}

TEST_F(AtomicFileTest, AFailedWriteLeavesTheOldFileAndNoTemporaryFile) {
  Write(Path("out"), "old");
  Status st = WriteFileAtomically(Path("out"), [](std::FILE* f) -> Status {
    std::fputs("half of it", f);
    return IoError("the writer failed");
  });
  EXPECT_EQ(st.code(), Code::kIo);
  EXPECT_EQ(Read(Path("out")), "old");
  EXPECT_EQ(Names(), std::vector<std::string>{"out"});
}

TEST_F(AtomicFileTest, AMissingDirectoryIsAFileSystemError) {
  Status st = WriteFileAtomically(Path("no/such/dir/out"), "x");
  EXPECT_EQ(st.code(), Code::kIo) << st.ToString();
  EXPECT_NE(st.message().find(Path("no/such/dir/out")), std::string::npos);
}

// Two writers to one path: the result is one of their files, never a mix.
TEST_F(AtomicFileTest, ConcurrentWritersLeaveOneWholeFile) {
  const std::string a(1 << 20, 'a'), b((1 << 20) + 7, 'b');
  for (int round = 0; round < 10; ++round) {
    Status sa, sb;
    std::thread ta([&] { sa = WriteFileAtomically(Path("out"), a); });
    std::thread tb([&] { sb = WriteFileAtomically(Path("out"), b); });
    ta.join();
    tb.join();
    ASSERT_TRUE(sa.ok() && sb.ok()) << sa.ToString() << sb.ToString();
    std::string got = Read(Path("out"));
    ASSERT_TRUE(got == a || got == b)
        << "round " << round << ": a file of " << got.size() << " bytes";
  }
  EXPECT_EQ(Names(), std::vector<std::string>{"out"});
}

}  // namespace
}  // namespace migledger
