#include "applier/migration_source.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <future>
#include <string_view>

#include "applier/sql_splitter.h"
#include "common/sha256.h"

namespace migledger {
namespace fs = std::filesystem;

bool IsValidVersion(std::string_view v) {
  return !v.empty() && std::all_of(v.begin(), v.end(),
                                   [](char c) { return c >= '0' && c <= '9'; });
}

std::string_view CanonicalDigits(std::string_view v) {
  const size_t i = v.find_first_not_of('0');
  return i == std::string_view::npos ? std::string_view("0") : v.substr(i);
}

std::string CanonicalVersion(const std::string& v) {
  return std::string(CanonicalDigits(v));
}

int CompareVersions(const std::string& a, const std::string& b) {
  const std::string_view ca = CanonicalDigits(a), cb = CanonicalDigits(b);
  if (ca.size() != cb.size()) return ca.size() < cb.size() ? -1 : 1;
  return ca.compare(cb);
}

namespace {

// Returns the offset of the first invalid UTF-8 byte, or npos.
size_t FirstInvalidUtf8(const std::string& s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c >> 5) == 0x6 && c >= 0xc2) {
      len = 2;
    } else if ((c >> 4) == 0xe) {
      len = 3;
    } else if ((c >> 3) == 0x1e && c <= 0xf4) {
      len = 4;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return i;
    }
    i += len;
  }
  return std::string::npos;
}

std::string Trim(std::string s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// Parses "<version>_<slug>.<up|down>.sql"; `version` and `slug` point into
// `name`.
bool ParseName(std::string_view name, std::string_view* version,
               std::string_view* slug, bool* up) {
  constexpr std::string_view kExt = ".sql", kUp = ".up", kDown = ".down";
  if (name.size() <= kExt.size() || name.substr(name.size() - 4) != kExt) {
    return false;
  }
  std::string_view stem = name.substr(0, name.size() - kExt.size());
  if (stem.size() > kUp.size() && stem.substr(stem.size() - 3) == kUp) {
    *up = true;
    stem.remove_suffix(kUp.size());
  } else if (stem.size() > kDown.size() &&
             stem.substr(stem.size() - 5) == kDown) {
    *up = false;
    stem.remove_suffix(kDown.size());
  } else {
    return false;
  }
  size_t us = stem.find('_');
  if (us == std::string_view::npos || us == 0 || us + 1 >= stem.size())
    return false;
  *version = stem.substr(0, us);
  *slug = stem.substr(us + 1);
  if (!IsValidVersion(*version)) return false;
  return std::all_of(slug->begin(), slug->end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

}  // namespace

Status ParseDirectives(const std::string& text, MigrationFile* file) {
  // Only the leading comment lines can hold directives: stop at the first
  // line that is neither blank nor a -- comment.
  std::string_view rest(text);
  if (StartsWithUtf8Bom(rest)) rest.remove_prefix(3);  // not part of line 1
  int line_no = 0;
  while (!rest.empty()) {
    ++line_no;
    const size_t eol = rest.find('\n');
    std::string_view raw = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view()
                                         : rest.substr(eol + 1);
    std::string t = Trim(std::string(raw));
    if (t.empty()) continue;
    if (t.rfind("--", 0) != 0) break;  // first statement: directives end
    std::string body = Trim(t.substr(2));
    const std::string prefix = "migledger:";
    if (body.rfind(prefix, 0) != 0) continue;
    std::string directive = Trim(body.substr(prefix.size()));
    std::string word = directive.substr(0, directive.find_first_of(" \t"));
    std::string arg = Trim(directive.substr(word.size()));
    if (word == "no-transaction" && arg.empty()) {
      file->no_transaction = true;
    } else if (word == "requires" && IsValidVersion(arg)) {
      file->requires_versions.push_back(arg);
    } else {
      return InvalidInput(file->file + ":" + std::to_string(line_no) +
                          ": unknown directive \"-- migledger:" + directive +
                          "\" (known: no-transaction, requires <version>)");
    }
  }
  return Status::Ok();
}

namespace {

// The whole file in one read where it can (a status over thousands of
// migrations spends its time here; iostreams cost several times more).
// Reads `name` in the directory `dir_fd` (`path` names it in errors).
Status ReadWholeFile(int dir_fd, const char* name, const std::string& path,
                     std::string* out) {
  int fd = ::openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return IoError(path + ": cannot read file: " + std::strerror(errno));
  struct stat st {};
  out->clear();
  // One byte more than the file, so that one read can return it all. Once
  // the size fstat reported has been read the file is complete (as of that
  // fstat): no further read to find its end, a tenth of a status of 10,000
  // migrations. A file of unknown size is read until read() returns 0.
  const bool sized = ::fstat(fd, &st) == 0 && st.st_size > 0;
  const size_t expected = sized ? static_cast<size_t>(st.st_size) : 0;
  out->reserve(sized ? expected + 1 : 4096);
  for (;;) {
    // Straight into the string: its spare capacity, or 4 KiB more.
    size_t have = out->size();
    size_t room = out->capacity() - have;
    if (room == 0) room = 4096;
    out->resize(have + room);
    ssize_t n = ::read(fd, out->data() + have, room);
    if (n < 0 && errno == EINTR) {
      out->resize(have);
      continue;
    }
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return IoError(path + ": read error: " + std::strerror(err));
    }
    out->resize(have + static_cast<size_t>(n));
    if (n == 0 || (sized && out->size() == expected)) break;
  }
  ::close(fd);
  return Status::Ok();
}

// Reads `name` in `dir_fd` into f->sql and fills in what is derived from
// the bytes (checksum, directives), with their checks; `dir` names the
// migrations directory in errors.
Status ReadAndCheck(int dir_fd, const char* name, const std::string& dir,
                    MigrationFile* f) {
  MIGLEDGER_RETURN_IF_ERROR(ReadWholeFile(dir_fd, name, f->path, &f->sql));
  if (size_t bad = FirstInvalidUtf8(f->sql); bad != std::string::npos) {
    return InvalidInput(f->path + ": not valid UTF-8 (byte offset " +
                        std::to_string(bad) + ")");
  }
  f->checksum = Sha256Hex(f->sql);
  MIGLEDGER_RETURN_IF_ERROR(ParseDirectives(f->sql, f).WithContext(dir));
  f->loaded = true;
  return Status::Ok();
}

}  // namespace

Status ReadMigrationFile(MigrationFile* file) {
  if (file->loaded) return Status::Ok();
  return ReadAndCheck(AT_FDCWD, file->path.c_str(),
                      fs::path(file->path).parent_path().string(), file);
}

StatusOr<std::vector<Migration>> LoadMigrations(const std::string& dir,
                                                bool read_down_files) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return InvalidInput("migrations directory " + dir +
                        " does not exist (run `migledger init` or set "
                        "migrations_dir in migledger.toml)");
  }
  fs::path root = fs::canonical(dir, ec);
  if (ec)
    return IoError("cannot read migrations directory " + dir + ": " +
                   ec.message());
  // 1. List: names and symlinks, on the directory's order. Names are parsed
  // in place (a project can hold thousands of files, and every command
  // lists them all).
  struct Entry {
    std::string name;
    size_t version_size = 0, slug_size = 0;  // name: version _ slug .up.sql
    size_t zeros = 0;  // leading zeros of the version, not canonical
    bool up = false;
    std::string_view version() const {
      return std::string_view(name).substr(0, version_size);
    }
    std::string_view canonical() const {
      return std::string_view(name).substr(zeros, version_size - zeros);
    }
    std::string_view slug() const {
      return std::string_view(name).substr(version_size + 1, slug_size);
    }
  };
  std::vector<Entry> entries;
  // readdir and openat rather than std::filesystem, for the same reason.
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return IoError("cannot read migrations directory " + dir + ": " +
                   std::strerror(errno));
  }
  struct CloseDir {
    DIR* d;
    ~CloseDir() { ::closedir(d); }
  } close_dir{d};
  const std::string prefix = dir.back() == '/' ? dir : dir + "/";
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(d);
    if (entry == nullptr) {
      if (errno != 0) {
        return IoError("cannot read migrations directory " + dir + ": " +
                       std::strerror(errno));
      }
      break;
    }
    std::string_view raw(entry->d_name);
    if (raw.size() < 4 || raw.substr(raw.size() - 4) != ".sql") continue;
    Entry e;
    e.name = std::string(raw);
    std::string_view version, slug;
    if (!ParseName(e.name, &version, &slug, &e.up)) {
      return InvalidInput(
          dir + "/" + e.name +
          ": file name must look like <version>_<slug>.up.sql or "
          "<version>_<slug>.down.sql (version: digits; slug: "
          "letters, digits, _ and -)");
    }
    e.version_size = version.size();
    e.slug_size = slug.size();
    e.zeros = version.size() - CanonicalDigits(version).size();
    bool symlink = entry->d_type == DT_LNK;
    if (entry->d_type == DT_UNKNOWN) {
      struct stat st {};
      symlink = ::fstatat(::dirfd(d), e.name.c_str(), &st,
                          AT_SYMLINK_NOFOLLOW) == 0 &&
                S_ISLNK(st.st_mode);
    }
    if (symlink) {
      const std::string path = prefix + e.name;
      fs::path real = fs::canonical(path, ec);
      if (ec)
        return IoError(path + ": cannot resolve symlink: " + ec.message());
      auto rel = real.lexically_relative(root);
      if (rel.empty() || *rel.begin() == "..") {
        return InvalidInput(
            path + ": symlink points outside the migrations directory (" +
            real.string() + ")");
      }
    }
    entries.push_back(std::move(e));
  }

  // 2. Pair the up and down files: sorted by version (CompareVersions order:
  // shorter canonical versions first, then by digits), each version's up
  // file before its down file, so a migration's files are neighbours.
  // What is sorted is a small key per name, made once per name (not per
  // comparison: 300,000 of them for 20,000 files), holding the canonical
  // version as a number when it fits one, and the entry's index, so the
  // sort neither parses a version nor moves a string.
  struct SortKey {
    uint64_t number;        // the canonical version's value when size <= 19
    const char* canonical;  // into the entry's name (entries stay put)
    uint32_t size;
    uint32_t index;
    bool up;
  };
  constexpr uint32_t kNumberDigits = 19;  // 10^19 - 1 < 2^64
  std::vector<SortKey> order;
  order.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string_view c = entries[i].canonical();
    SortKey key{0, c.data(), static_cast<uint32_t>(c.size()),
                static_cast<uint32_t>(i), entries[i].up};
    if (key.size <= kNumberDigits)
      for (char digit : c) key.number = key.number * 10 + (digit - '0');
    order.push_back(key);
  }
  std::sort(order.begin(), order.end(),
            [&](const SortKey& a, const SortKey& b) {
              if (a.size <= kNumberDigits && b.size <= kNumberDigits) {
                if (a.number != b.number) return a.number < b.number;
              } else if (a.size != b.size) {
                return a.size < b.size;
              } else if (int c = std::memcmp(a.canonical, b.canonical, a.size);
                         c != 0) {
                return c < 0;
              }
              if (a.up != b.up) return a.up;
              return entries[a.index].name < entries[b.index].name;
            });
  std::vector<Migration> out;
  out.reserve(static_cast<size_t>(std::count_if(
      entries.begin(), entries.end(), [](const Entry& e) { return e.up; })));
  auto file_of = [&](Entry& e) {
    MigrationFile f;
    f.path = prefix + e.name;
    f.loaded = false;
    f.file = std::move(e.name);
    return f;
  };
  for (const SortKey& key : order) {
    Entry& e = entries[key.index];
    const bool same_as_last =
        !out.empty() && CanonicalDigits(out.back().version) == e.canonical();
    if (e.up) {
      if (same_as_last) {
        return InvalidInput("duplicate migration version " +
                            std::string(e.version()) + ": " +
                            out.back().up.path + " and " + prefix + e.name);
      }
      Migration& m = out.emplace_back();
      m.version = std::string(e.version());
      m.slug = std::string(e.slug());
      m.up = file_of(e);
      continue;
    }
    const std::string version(e.version()), slug(e.slug());
    if (!same_as_last) {
      return InvalidInput(prefix + e.name +
                          ": down migration without its up file (" + version +
                          "_" + slug + ".up.sql)");
    }
    Migration& m = out.back();
    if (m.version != version || m.slug != slug) {
      return InvalidInput(prefix + e.name + ": does not match its up file " +
                          m.up.path);
    }
    if (m.has_down) {
      return InvalidInput("duplicate down migration for version " + version);
    }
    m.has_down = true;
    m.down = file_of(e);
  }

  // 3. Read and check the contents, in place. A large project's files are
  // read on two threads (opening and reading a file is mostly system time,
  // and a status of 10,000 migrations is mostly this); the first failing
  // file in version order is the one reported.
  std::vector<MigrationFile*> to_read;
  to_read.reserve(entries.size());
  for (Migration& m : out) {
    to_read.push_back(&m.up);
    if (m.has_down && read_down_files) to_read.push_back(&m.down);
  }
  const int dir_fd = ::dirfd(d);
  auto read_range = [&](size_t from, size_t to) -> Status {
    for (size_t i = from; i < to; ++i) {
      MigrationFile& f = *to_read[i];
      MIGLEDGER_RETURN_IF_ERROR(ReadAndCheck(dir_fd, f.file.c_str(), dir, &f));
    }
    return Status::Ok();
  };
  constexpr size_t kFilesPerThread = 512;
  if (to_read.size() < 2 * kFilesPerThread) {
    MIGLEDGER_RETURN_IF_ERROR(read_range(0, to_read.size()));
  } else {
    const size_t half = to_read.size() / 2;
    auto second =
        std::async(std::launch::async, read_range, half, to_read.size());
    Status first = read_range(0, half);
    Status rest = second.get();
    MIGLEDGER_RETURN_IF_ERROR(first);
    MIGLEDGER_RETURN_IF_ERROR(rest);
  }

  // 4. A dependency names a migration of this directory: a typo in it would
  // document a dependency on nothing.
  for (const MigrationFile* f : to_read) {
    for (const std::string& required : f->requires_versions) {
      auto it = std::lower_bound(out.begin(), out.end(), required,
                                 [](const Migration& m, const std::string& v) {
                                   return CompareVersions(m.version, v) < 0;
                                 });
      if (it == out.end() || CompareVersions(it->version, required) != 0) {
        return InvalidInput(f->path + ": -- migledger:requires " + required +
                            ": no migration has version " + required + " in " +
                            dir);
      }
    }
  }
  return out;
}

}  // namespace migledger
