#include "applier/search_path.h"

#include <vector>

namespace migledger {
namespace {

// One entry of a search_path value, read as the server reads it
// (SplitIdentifierString): names separated by commas, blanks around them,
// "..." quoting with "" for ".
struct SearchPathEntry {
  std::string_view text;  // as written, without the blanks around it
  std::string name;       // quotes removed, "" read as "
  bool quoted = false;
};

bool SearchPathBlank(char c) {  // the server's scanner_isspace()
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

// The entries of `value` in order, or nullopt when it does not parse. An
// empty value (or only blanks) has none.
std::optional<std::vector<SearchPathEntry>> SplitSearchPath(
    std::string_view value) {
  std::vector<SearchPathEntry> entries;
  size_t i = 0;
  const size_t n = value.size();
  while (i < n && SearchPathBlank(value[i])) ++i;
  if (i == n) return entries;
  for (;;) {
    SearchPathEntry entry;
    const size_t begin = i;
    if (value[i] == '"') {
      entry.quoted = true;
      for (++i;; ++i) {
        if (i >= n) return std::nullopt;  // unterminated
        if (value[i] == '"') {
          if (i + 1 < n && value[i + 1] == '"') {
            entry.name += '"';
            ++i;
            continue;
          }
          ++i;
          break;
        }
        entry.name += value[i];
      }
    } else {
      while (i < n && value[i] != ',' && !SearchPathBlank(value[i])) {
        entry.name += value[i++];
      }
    }
    if (entry.name.empty()) return std::nullopt;
    entry.text = value.substr(begin, i - begin);
    entries.push_back(std::move(entry));
    while (i < n && SearchPathBlank(value[i])) ++i;
    if (i == n) return entries;
    if (value[i] != ',') return std::nullopt;
    ++i;
    while (i < n && SearchPathBlank(value[i])) ++i;
    if (i == n) return std::nullopt;  // a trailing comma
  }
}

}  // namespace

std::string SearchPathSetList(std::string_view search_path) {
  const auto entries = SplitSearchPath(search_path);
  if (!entries || entries->empty()) return "";
  std::string out;
  for (const SearchPathEntry& entry : *entries) {
    const std::string& name = entry.name;
    if (entry.quoted) {
      for (char c : name) {
        if (c == '\'' || c == '\\' || c == '\0') return "";
      }
    } else {
      // Lower-case ASCII only: the server folds the case of other names.
      for (size_t k = 0; k < name.size(); ++k) {
        const char c = name[k];
        const bool lower = c >= 'a' && c <= 'z';
        const bool other =
            c == '_' || (k > 0 && ((c >= '0' && c <= '9') || c == '$'));
        if (!lower && !other) return "";
      }
    }
    if (!out.empty()) out += ", ";
    out += "'" + name + "'";
  }
  return out;
}

std::optional<std::string> SearchPathWithoutUser(std::string_view search_path) {
  const auto entries = SplitSearchPath(search_path);
  if (!entries) return std::nullopt;
  std::string out;
  for (const SearchPathEntry& entry : *entries) {
    std::string folded = entry.name;
    if (!entry.quoted) {  // the server folds unquoted names' ASCII letters
      for (char& c : folded) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      }
    }
    if (folded == "$user") continue;
    if (!out.empty()) out += ", ";
    out += entry.text;
  }
  return out;
}

}  // namespace migledger
