#include "applier/libpq_result.h"

#include <string_view>

namespace migledger {

std::string LibpqMessage(const char* raw) {
  std::string out;
  std::string_view s = raw ? raw : "";
  size_t start = 0;
  while (start < s.size()) {
    size_t nl = s.find('\n', start);
    if (nl == std::string_view::npos) nl = s.size();
    std::string_view line = s.substr(start, nl - start);
    start = nl + 1;
    if (line.empty() || line[0] == '\t' || line[0] == ' ') continue;
    if (!out.empty()) out += "; ";
    out += line;
  }
  if (out.empty()) out = "unknown libpq error";
  return out;
}

std::string ErrorField(const PGresult* res, int field) {
  const char* v = res ? PQresultErrorField(res, field) : nullptr;
  return v ? v : "";
}

std::string PrimaryMessage(const PGresult* res, PGconn* conn) {
  std::string m = ErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  if (m.empty() && res) m = LibpqMessage(PQresultErrorMessage(res));
  if (m.empty() || m == "unknown libpq error")
    m = LibpqMessage(PQerrorMessage(conn));
  return m;
}

void DiscardNotice(void*, const char*) {}

}  // namespace migledger
