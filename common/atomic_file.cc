#include "common/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace migledger {
namespace {

std::string Errno() { return std::strerror(errno); }

// The directory part of `path` ("." when it has none) and the name.
void Split(const std::string& path, std::string* dir, std::string* name) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) {
    *dir = ".";
    *name = path;
  } else {
    *dir = slash == 0 ? "/" : path.substr(0, slash);
    *name = path.substr(slash + 1);
  }
}

Status SyncDirectory(const std::string& dir, const std::string& path) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError("cannot write " + path + ": " + Errno());
  int rc = ::fsync(fd);
  std::string why = rc != 0 ? Errno() : "";
  ::close(fd);
  // Some file systems cannot sync a directory (EINVAL); the rename stands.
  if (rc != 0 && why != std::strerror(EINVAL))
    return IoError("cannot write " + path + ": " + why);
  return Status::Ok();
}

// Gives the temporary file `tmp` the name `path` only if nothing has it.
// renameat2(RENAME_NOREPLACE) where the file system has it; else link(),
// which fails on any existing name just the same, and unlink().
int RenameNoReplace(const std::string& tmp, const std::string& path) {
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(),
                  RENAME_NOREPLACE) == 0) {
    return 0;
  }
  if (errno != EINVAL && errno != ENOSYS) return -1;
  if (::link(tmp.c_str(), path.c_str()) != 0) return -1;
  ::unlink(tmp.c_str());
  return 0;
}

}  // namespace

Status WriteFileAtomically(const std::string& path,
                           const std::function<Status(std::FILE*)>& write,
                           const WriteFileOptions& options) {
  std::string dir, name;
  Split(path, &dir, &name);
  if (name.empty() || name == "." || name == "..")
    return InvalidInput("cannot write " + path + ": not a file name");
  if (!options.replace) {
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0)
      return InvalidInput(path + " already exists");
  }
  std::string tmpl = (dir == "/" ? "" : dir) + "/." + name + ".tmp-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  int fd = ::mkostemp(buf.data(), O_CLOEXEC);
  if (fd < 0) return IoError("cannot write " + path + ": " + Errno());
  const std::string tmp = buf.data();
  auto fail = [&](Status st) {
    ::unlink(tmp.c_str());
    return st;
  };
  if (::fchmod(fd, options.mode) != 0) {
    Status st = IoError("cannot write " + path + ": " + Errno());
    ::close(fd);
    return fail(st);
  }
  std::FILE* file = ::fdopen(fd, "wb");
  if (file == nullptr) {
    Status st = IoError("cannot write " + path + ": " + Errno());
    ::close(fd);
    return fail(st);
  }
  Status st = write(file);
  if (st.ok() && (std::fflush(file) != 0 || ::fsync(fd) != 0))
    st = IoError("cannot write " + path + ": " + Errno());
  if (std::fclose(file) != 0 && st.ok())
    st = IoError("cannot write " + path + ": " + Errno());
  if (!st.ok()) return fail(st);
  if (options.replace) {
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      return fail(IoError("cannot write " + path + ": " + Errno()));
  } else if (RenameNoReplace(tmp, path) != 0) {
    Status why = errno == EEXIST
                     ? InvalidInput(path + " already exists")
                     : IoError("cannot write " + path + ": " + Errno());
    return fail(why);
  }
  return SyncDirectory(dir, path);
}

Status WriteFileAtomically(const std::string& path, std::string_view content,
                           const WriteFileOptions& options) {
  return WriteFileAtomically(
      path,
      [&](std::FILE* file) -> Status {
        if (!content.empty() && std::fwrite(content.data(), 1, content.size(),
                                            file) != content.size()) {
          return IoError("cannot write " + path + ": " + Errno());
        }
        return Status::Ok();
      },
      options);
}

}  // namespace migledger
