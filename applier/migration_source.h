// Migration files on disk: <version>_<slug>.up.sql and optional
// <version>_<slug>.down.sql in one directory.
//
// Versions are digits only and sort numerically at any width ("0002" and
// "2" are the same version, so both present is an error). Directives live in
// the leading comment block of a file:
//   -- migledger:no-transaction     run statements one by one in autocommit
//   -- migledger:requires <version> the step needs that version applied
// An unknown "-- migledger:" directive is an error, not ignored.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace migledger {

struct MigrationFile {
  std::string path;      // as found (directory + file name)
  std::string file;      // file name only
  std::string sql;       // the exact bytes
  std::string checksum;  // hex SHA-256 of the bytes
  bool no_transaction = false;
  std::vector<std::string> requires_versions;
  // False for a down file listed but not read yet (LoadMigrations with
  // read_down_files = false): sql, checksum and the directives are empty
  // until ReadMigrationFile fills them in.
  bool loaded = true;
};

struct Migration {
  std::string version;  // as written in the file name
  std::string slug;
  MigrationFile up;
  bool has_down = false;
  MigrationFile down;
};

// Negative, zero or positive as version a sorts before, with or after b.
int CompareVersions(const std::string& a, const std::string& b);
// Canonical form of a version (leading zeros removed, "0" for all zeros).
std::string CanonicalVersion(const std::string& version);
// CanonicalVersion() without the copy: a view into `version`.
std::string_view CanonicalDigits(std::string_view version);
// Whether canonical version a sorts before canonical version b (numeric
// order: the shorter first, then by digits), as CompareVersions does.
inline bool CanonicalLess(std::string_view a, std::string_view b) {
  return a.size() != b.size() ? a.size() < b.size() : a < b;
}
// Numeric version order for ordered containers keyed by version, in any
// spelling ("0002" and "2" are one key): std::map<std::string, T,
// VersionOrder> iterates 2 before 10, where the string order would not.
struct VersionOrder {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const {
    return CanonicalLess(CanonicalDigits(a), CanonicalDigits(b));
  }
};
// True for a non-empty string of ASCII digits.
bool IsValidVersion(std::string_view version);

// Reads every migration in `dir`, sorted by version. Files that do not end
// in ".sql" are ignored; ".sql" files with another name shape, duplicate
// versions, a down file without its up, unreadable files, non-UTF-8 files,
// symlinks that leave `dir` and unknown directives are kInvalidInput errors
// naming the file. With read_down_files = false the down files are only
// listed (names, pairing and symlinks checked; `loaded` false): the commands
// that never run one (status, plan, apply) skip half of a project's reads.
StatusOr<std::vector<Migration>> LoadMigrations(const std::string& dir,
                                                bool read_down_files = true);

// Reads a file LoadMigrations listed without reading (a no-op for one it
// read), with the checks LoadMigrations makes of a file's content.
Status ReadMigrationFile(MigrationFile* file);

// Parses the leading-comment directives of one file's text into `file`.
Status ParseDirectives(const std::string& text, MigrationFile* file);

}  // namespace migledger
