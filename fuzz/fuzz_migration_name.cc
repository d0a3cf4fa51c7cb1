// Fuzzes migration file names and directive text through LoadMigrations and
// ParseDirectives.
//
// Input: the first line lists directory entries to create, separated by '/'
// (the one byte a file name cannot hold); the rest of the input is the
// content of every file. An entry "NAME=TARGET" is a symlink NAME -> TARGET
// (a backslash in TARGET stands for '/'), and "NAME=" an empty directory, so
// the symlink and "not a regular file" paths are reached too. The entries are
// created in a scratch migrations directory (emptied for every input),
// LoadMigrations reads it, and ParseDirectives runs on the content. Errors
// are fine; crashes are not.
//
// Checks on success: migrations come sorted by version with no duplicates,
// names parse back to the version and slug, each regular file's bytes and
// checksum are what was written, and the directives agree with
// ParseDirectives on the same text.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "applier/migration_source.h"
#include "common/sha256.h"
#include "fuzz_util.h"

namespace {

namespace fs = std::filesystem;
using migledger::CanonicalVersion;
using migledger::CompareVersions;
using migledger::IsValidVersion;

constexpr size_t kMaxEntries = 8;

const std::string& MigrationsDir() {
  static const std::string dir = migledger_fuzz::ScratchDir() + "/migrations";
  return dir;
}

void ResetDir() {
  std::error_code ec;
  fs::remove_all(MigrationsDir(), ec);
  fs::create_directory(MigrationsDir(), ec);
}

bool WriteFile(const std::string& path, std::string_view content) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0644);
  if (fd < 0) return false;
  bool ok = write(fd, content.data(), content.size()) ==
            static_cast<ssize_t>(content.size());
  close(fd);
  return ok;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.substr(s.size() - suffix.size()) == suffix;
}

void CheckVersionOrder(const std::string& a, const std::string& b) {
  const int ab = CompareVersions(a, b);
  const int ba = CompareVersions(b, a);
  FUZZ_CHECK((ab < 0) == (ba > 0) && (ab == 0) == (ba == 0));
  FUZZ_CHECK((ab == 0) == (CanonicalVersion(a) == CanonicalVersion(b)));
}

void CheckFile(const migledger::MigrationFile& f, const std::string& version,
               const std::string& slug, std::string_view suffix,
               const std::set<std::string>& regular_files,
               std::string_view content) {
  FUZZ_CHECK(f.file == version + "_" + slug + std::string(suffix));
  FUZZ_CHECK(f.checksum == migledger::Sha256Hex(f.sql));
  if (regular_files.count(f.file)) FUZZ_CHECK(f.sql == content);
  migledger::MigrationFile again;
  FUZZ_CHECK(migledger::ParseDirectives(f.sql, &again).ok());
  FUZZ_CHECK(again.no_transaction == f.no_transaction);
  FUZZ_CHECK(again.requires_versions == f.requires_versions);
  for (const std::string& v : f.requires_versions) {
    FUZZ_CHECK(IsValidVersion(v));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = migledger_fuzz::AsView(data, size);
  const size_t nl = in.find('\n');
  const std::string_view names = in.substr(0, nl);
  const std::string_view content =
      nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);

  ResetDir();
  std::set<std::string> regular_files;
  size_t entries = 0;
  for (size_t pos = 0; pos <= names.size() && entries < kMaxEntries;) {
    size_t slash = names.find('/', pos);
    if (slash == std::string_view::npos) slash = names.size();
    std::string entry(names.substr(pos, slash - pos));
    pos = slash + 1;
    std::string name = entry, target;
    bool special = false;
    if (size_t eq = entry.find('='); eq != std::string::npos) {
      name = entry.substr(0, eq);
      target = entry.substr(eq + 1);
      special = true;
    }
    // Names the file system cannot hold are skipped, not fuzzed.
    if (name.empty() || name == "." || name == ".." ||
        name.find('\0') != std::string::npos || name.size() > 255) {
      continue;
    }
    ++entries;
    const std::string path = MigrationsDir() + "/" + name;
    if (!special) {
      if (WriteFile(path, content)) regular_files.insert(name);
    } else if (target.empty()) {
      (void)mkdir(path.c_str(), 0755);
    } else if (target.find('\0') == std::string::npos) {
      std::replace(target.begin(), target.end(), '\\', '/');
      (void)symlink(target.c_str(), path.c_str());
    }
  }

  auto loaded = migledger::LoadMigrations(MigrationsDir());
  if (loaded.ok()) {
    const std::vector<migledger::Migration>& ms = *loaded;
    for (size_t i = 0; i < ms.size(); ++i) {
      const migledger::Migration& m = ms[i];
      FUZZ_CHECK(IsValidVersion(m.version));
      FUZZ_CHECK(!m.slug.empty());
      CheckFile(m.up, m.version, m.slug, ".up.sql", regular_files, content);
      if (m.has_down) {
        CheckFile(m.down, m.version, m.slug, ".down.sql", regular_files,
                  content);
      }
      if (i > 0) {
        FUZZ_CHECK(CompareVersions(ms[i - 1].version, m.version) < 0);
        CheckVersionOrder(ms[i - 1].version, m.version);
      }
    }
    // Every regular *.up.sql we wrote is loaded (or LoadMigrations failed).
    size_t ups = 0;
    for (const std::string& r : regular_files) {
      if (EndsWith(r, ".up.sql")) ++ups;
    }
    FUZZ_CHECK(ms.size() >= ups);
  }

  migledger::MigrationFile file;
  file.file = "fuzz.up.sql";
  (void)migledger::ParseDirectives(std::string(content), &file);
  migledger::MigrationFile whole;
  (void)migledger::ParseDirectives(std::string(in), &whole);

  // Version helpers on the raw first line.
  const std::string first(names);
  (void)IsValidVersion(first);
  CheckVersionOrder(first, std::string(content.substr(0, 32)));
  FUZZ_CHECK(CanonicalVersion(CanonicalVersion(first)) ==
             CanonicalVersion(first));
  return 0;
}
