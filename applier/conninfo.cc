#include "applier/conninfo.h"

#include <libpq-fe.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <mutex>

#include "applier/libpq_loader.h"

namespace migledger {
namespace {

// Keywords whose values are names, addresses, paths, modes or timeouts:
// safe to show and to store. Only these survive redaction (and only when
// libpq does not mark them as secret or debug itself). Not here, so
// dropped: password, sslpassword, options (any server setting, so possibly
// a secret), replication, and every keyword a later libpq adds until it is
// reviewed and listed.
constexpr std::string_view kDisplaySafeKeywords[] = {
    "service",
    "user",
    "passfile",
    "channel_binding",
    "connect_timeout",
    "dbname",
    "host",
    "hostaddr",
    "port",
    "client_encoding",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "sslmode",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "require_auth",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "gssencmode",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "target_session_attrs",
    "load_balance_hosts",
};

// What libpq says about each keyword it knows: dispchar "" (show), "*"
// (password: hide), "D" (debug: do not show by default).
struct KeywordClasses {
  std::vector<std::string> all;
  std::vector<std::string> secret;  // "*"
  std::vector<std::string> shown;   // ""
};

const KeywordClasses& Classes() {
  static KeywordClasses classes;
  static std::once_flag once;
  if (!LoadLibpq().ok()) return classes;  // stays empty: nothing is safe
  std::call_once(once, [] {
    PQconninfoOption* defaults = PQconndefaults();
    if (defaults == nullptr) return;
    for (PQconninfoOption* o = defaults; o->keyword != nullptr; ++o) {
      classes.all.emplace_back(o->keyword);
      const char* d = o->dispchar != nullptr ? o->dispchar : "*";
      if (std::strchr(d, '*') != nullptr) {
        classes.secret.emplace_back(o->keyword);
      } else if (std::strchr(d, 'D') == nullptr) {
        classes.shown.emplace_back(o->keyword);
      }
    }
    PQconninfoFree(defaults);
  });
  return classes;
}

bool Contains(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

bool StartsWithNoCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) {
      return false;
    }
  }
  return true;
}

// Length of "postgresql://" or "postgres://" at the start, or 0.
size_t UriPrefixLength(std::string_view s) {
  for (std::string_view scheme : {"postgresql://", "postgres://"}) {
    if (StartsWithNoCase(s, scheme)) return scheme.size();
  }
  return 0;
}

// libpq's parse errors quote parts of the input (`invalid percent-encoded
// token: "p%zz"`, `missing "=" after "cret"`), which may be a password:
// keeps a quoted part only when it is a keyword libpq knows.
std::string SafeParseError(const char* raw) {
  std::string in = raw != nullptr ? raw : "out of memory";
  while (!in.empty() && (in.back() == '\n' || in.back() == ' ')) in.pop_back();
  std::string out;
  size_t i = 0;
  while (i < in.size()) {
    size_t open = in.find('"', i);
    if (open == std::string::npos) {
      out += in.substr(i);
      break;
    }
    size_t close = in.find('"', open + 1);
    if (close == std::string::npos) {
      out += in.substr(i, open - i) + "\"...\"";
      break;
    }
    std::string quoted = in.substr(open + 1, close - open - 1);
    out += in.substr(i, open - i);
    out += Contains(Classes().all, quoted) ? "\"" + quoted + "\"" : "\"...\"";
    i = close + 1;
  }
  for (char& c : out) {
    if (c == '\n') c = ' ';
  }
  return out;
}

bool Unreserved(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

// Percent-encodes all but unreserved characters and `also`.
std::string PercentEncode(std::string_view s, std::string_view also = "") {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    if (Unreserved(c) || also.find(c) != std::string_view::npos) {
      out.push_back(c);
    } else {
      auto u = static_cast<unsigned char>(c);
      out += {'%', kHex[u >> 4], kHex[u & 15]};
    }
  }
  return out;
}

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t comma = s.find(',', start);
    parts.push_back(s.substr(start, comma - start));
    if (comma == std::string::npos) return parts;
    start = comma + 1;
  }
}

// The user info, hosts and database of a URI rebuilt from options; the
// options it did not use stay in *rest for the query.
std::string UriAuthorityAndPath(std::vector<ConninfoOption>* rest) {
  auto take = [&](std::string_view keyword) {
    auto it = std::find_if(rest->begin(), rest->end(),
                           [&](const auto& o) { return o.keyword == keyword; });
    if (it == rest->end()) return std::string();
    std::string value = it->value;
    rest->erase(it);
    return value;
  };
  std::string out;
  std::string user = take("user");
  if (!user.empty()) out += PercentEncode(user) + "@";
  // Hosts go into the authority when each is a plain name or address (a
  // socket directory or anything odd stays a query parameter).
  auto host_it = std::find_if(rest->begin(), rest->end(), [](const auto& o) {
    return o.keyword == "host";
  });
  auto port_it = std::find_if(rest->begin(), rest->end(), [](const auto& o) {
    return o.keyword == "port";
  });
  std::vector<std::string> hosts, ports;
  if (host_it != rest->end()) hosts = SplitCommas(host_it->value);
  if (port_it != rest->end()) ports = SplitCommas(port_it->value);
  bool plain =
      host_it != rest->end() && (ports.empty() || ports.size() == hosts.size());
  for (const std::string& h : hosts) {
    if (h.empty() || !std::all_of(h.begin(), h.end(), [](char c) {
          return Unreserved(c) || c == ':';
        })) {
      plain = false;
    }
  }
  for (const std::string& p : ports) {
    if (!std::all_of(p.begin(), p.end(), [](char c) {
          return std::isdigit(static_cast<unsigned char>(c)) != 0;
        })) {
      plain = false;
    }
  }
  if (plain) {
    for (size_t i = 0; i < hosts.size(); ++i) {
      if (i > 0) out += ",";
      const std::string& h = hosts[i];
      out += h.find(':') != std::string::npos ? "[" + h + "]" : h;
      if (!ports.empty() && !ports[i].empty()) out += ":" + ports[i];
    }
    take("host");
    take("port");
  }
  std::string dbname = take("dbname");
  if (!dbname.empty() || !rest->empty()) out += "/" + PercentEncode(dbname);
  return out;
}

std::string QuoteKeyValue(const std::string& v) {
  bool plain = !v.empty() && std::none_of(v.begin(), v.end(), [](char c) {
    return std::isspace(static_cast<unsigned char>(c)) || c == '\'' ||
           c == '\\';
  });
  if (plain) return v;
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "'";
}

std::string RedactDepth(const std::string& conninfo, int depth) {
  if (!LooksLikePostgresConninfo(conninfo)) return conninfo;
  const size_t prefix = UriPrefixLength(conninfo);
  auto parsed = ParseConninfo(conninfo);
  if (!parsed.ok()) {
    return prefix > 0 ? conninfo.substr(0, prefix) + "(unparsable)"
                      : "(unparsable connection string)";
  }
  std::vector<ConninfoOption> kept;
  for (ConninfoOption& o : *parsed) {
    if (!IsDisplaySafeConninfoKeyword(o.keyword)) continue;
    if (o.keyword == "dbname" && LooksLikePostgresConninfo(o.value)) {
      // Not expanded by libpq here, but it reads like a connection string.
      o.value = depth > 0 ? RedactDepth(o.value, depth - 1) : "(redacted)";
    }
    kept.push_back(std::move(o));
  }
  std::string out;
  if (prefix > 0) {
    out = conninfo.substr(0, prefix) + UriAuthorityAndPath(&kept);
    for (size_t i = 0; i < kept.size(); ++i) {
      out += i == 0 ? "?" : "&";
      out += kept[i].keyword + "=" + PercentEncode(kept[i].value, "/:,");
    }
    return out;
  }
  for (const ConninfoOption& o : kept) {
    if (!out.empty()) out += " ";
    out += o.keyword + "=" + QuoteKeyValue(o.value);
  }
  return out;
}

}  // namespace

bool LooksLikePostgresConninfo(std::string_view text) {
  return UriPrefixLength(text) > 0 || text.find('=') != std::string_view::npos;
}

StatusOr<std::vector<ConninfoOption>> ParseConninfo(
    const std::string& conninfo) {
  MIGLEDGER_RETURN_IF_ERROR(LoadLibpq());
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts == nullptr) {
    std::string message = SafeParseError(err);
    if (err != nullptr) PQfreemem(err);
    return InvalidInput("invalid PostgreSQL connection string: " + message);
  }
  std::vector<ConninfoOption> out;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
    if (o->val != nullptr) out.push_back({o->keyword, o->val});
  }
  PQconninfoFree(opts);
  return out;
}

bool IsDisplaySafeConninfoKeyword(std::string_view keyword) {
  return std::find(std::begin(kDisplaySafeKeywords),
                   std::end(kDisplaySafeKeywords),
                   keyword) != std::end(kDisplaySafeKeywords) &&
         Contains(Classes().shown, keyword);
}

bool IsSecretConninfoKeyword(std::string_view keyword) {
  return Contains(Classes().secret, keyword);
}

std::vector<std::string> KnownConninfoKeywords() { return Classes().all; }

std::string RedactConninfo(const std::string& conninfo) {
  return RedactDepth(conninfo, 2);
}

std::vector<std::string> ConninfoSecrets(const std::string& conninfo) {
  std::vector<std::string> secrets;
  if (!LooksLikePostgresConninfo(conninfo)) return secrets;
  auto parsed = ParseConninfo(conninfo);
  if (!parsed.ok()) return secrets;
  for (const ConninfoOption& o : *parsed) {
    if (IsDisplaySafeConninfoKeyword(o.keyword) || o.value.empty()) continue;
    // A short value of a keyword that is not a password ("replication=1")
    // would blank out every "1" of a message.
    if (!IsSecretConninfoKeyword(o.keyword) && o.value.size() < 4) continue;
    secrets.push_back(o.value);
    std::string encoded = PercentEncode(o.value);
    if (encoded != o.value) secrets.push_back(std::move(encoded));
  }
  return secrets;
}

Status RefuseStoredSecret(const std::string& conninfo,
                          const std::string& where) {
  if (!LooksLikePostgresConninfo(conninfo)) return Status::Ok();
  auto parsed = ParseConninfo(conninfo);
  if (!parsed.ok()) {
    return InvalidInput(where + ": " + parsed.status().message());
  }
  std::vector<std::string> found;
  for (const ConninfoOption& o : *parsed) {
    // libpq keeps an empty password ("user:@host") as set: refused too.
    if (IsSecretConninfoKeyword(o.keyword)) found.push_back(o.keyword);
  }
  if (found.empty()) return Status::Ok();
  std::string names;
  for (const std::string& k : found) names += (names.empty() ? "" : ", ") + k;
  return InvalidInput(where + " holds a password (" + names +
                      "): keep it out of files and the ledger: use url_env "
                      "(an environment variable with the URI), PGPASSWORD or "
                      "~/.pgpass");
}

std::string ScrubSecrets(std::string text,
                         const std::vector<std::string>& secrets) {
  for (const std::string& secret : secrets) {
    if (secret.empty()) continue;
    size_t pos = 0;
    while ((pos = text.find(secret, pos)) != std::string::npos) {
      text.replace(pos, secret.size(), "***");
      pos += 3;
    }
  }
  return text;
}

}  // namespace migledger
