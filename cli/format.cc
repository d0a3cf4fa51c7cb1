#include "cli/format.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>

#include "cli/proto_json.h"
#include "cli/terminal_text.h"
#include "common/sha256.h"
#include "common/time_util.h"
#include "ledger/merkle.h"

namespace migledger {

std::string OneLine(const std::string& text) {
  if (!NeedsTerminalEscaping(text)) return text;
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\r' || c == '\n') {
      while (i + 1 < text.size() &&
             (text[i + 1] == '\r' || text[i + 1] == '\n'))
        ++i;
      if (i + 1 < text.size()) out += " / ";
    } else {
      out += c == '\t' ? ' ' : c;
    }
  }
  return TerminalText(out);
}

void PrintTable(std::FILE* out, const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& raw_rows) {
  // One line per row: line breaks in a cell (an error message, a reason)
  // are shown as " / " and control characters escaped (OneLine); the other
  // formats keep them. The rows are copied
  // only when a cell needs it (an audit table can be a million rows).
  auto multiline = [](const std::string& c) {
    return NeedsTerminalEscaping(c);
  };
  const bool flatten =
      std::any_of(raw_rows.begin(), raw_rows.end(), [&](const auto& r) {
        return std::any_of(r.begin(), r.end(), multiline);
      });
  std::vector<std::vector<std::string>> flattened;
  if (flatten) {
    flattened = raw_rows;
    for (auto& r : flattened)
      for (auto& c : r) c = OneLine(c);
  }
  const auto& rows = flatten ? flattened : raw_rows;
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], r[i].size());
    }
  }
  std::string s;  // one line, reused: no copy of any cell
  auto line = [&](const std::vector<std::string>& r) {
    s.clear();
    for (size_t i = 0; i < width.size(); ++i) {
      if (i < r.size()) s += r[i];
      if (i + 1 < width.size()) {
        const size_t cell = i < r.size() ? r[i].size() : 0;
        s.append(width[i] - std::min(cell, width[i]) + 2, ' ');
      }
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    s += '\n';
    std::fwrite(s.data(), 1, s.size(), out);
  };
  line(header);
  for (const auto& r : rows) line(r);
}

std::string CsvField(const std::string& f) {
  if (f.find_first_of(",\"\r\n") == std::string::npos) return f;
  std::string q = "\"";
  for (char c : f) {
    if (c == '"') q += '"';
    q += c;
  }
  return q + "\"";
}

namespace {
// The names `type` shows: the body's field name in the schema.
const char* EventTypeName(v1::Event::BodyCase body) {
  switch (body) {
    case v1::Event::kRunStarted:
      return "run_started";
    case v1::Event::kRunFinished:
      return "run_finished";
    case v1::Event::kStepStarted:
      return "step_started";
    case v1::Event::kStatementApplied:
      return "statement_applied";
    case v1::Event::kStepApplied:
      return "step_applied";
    case v1::Event::kStepFailed:
      return "step_failed";
    case v1::Event::kStepReverted:
      return "step_reverted";
    case v1::Event::kStepRecovered:
      return "step_recovered";
    case v1::Event::kPlanExported:
      return "plan_exported";
    case v1::Event::kAppliedOutOfBand:
      return "applied_out_of_band";
    case v1::Event::kDriftDetected:
      return "drift_detected";
    case v1::Event::kBaselined:
      return "baselined";
    case v1::Event::kChecksumAccepted:
      return "checksum_accepted";
    case v1::Event::kResolved:
      return "resolved";
    case v1::Event::kOutcomeLearned:
      return "outcome_learned";
    case v1::Event::BODY_NOT_SET:
      break;
  }
  return "unknown";
}
}  // namespace

std::string EventType(const v1::Event& e) {
  return EventTypeName(e.body_case());
}

std::vector<std::string> EventTypeNames() {
  std::vector<std::string> names;
  const auto* body = v1::Event::descriptor()->FindOneofByName("body");
  for (int i = 0; i < body->field_count(); ++i) {
    names.push_back(EventTypeName(
        static_cast<v1::Event::BodyCase>(body->field(i)->number())));
  }
  return names;
}

namespace {
std::string Ms(int64_t micros) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f ms",
                static_cast<double>(micros) / 1000.0);
  return buf;
}
const char* Dir(v1::Direction d) {
  return d == v1::DIRECTION_DOWN ? "down" : "up";
}
}  // namespace

std::string EventSummary(const v1::Event& e) {
  switch (e.body_case()) {
    case v1::Event::kRunStarted: {
      const auto& r = e.run_started();
      std::string s = r.command() + " (" + std::to_string(r.plan_size()) +
                      " step(s) planned)";
      if (!r.reason().empty()) s += " reason: " + r.reason();
      return s;
    }
    case v1::Event::kRunFinished: {
      const auto& r = e.run_finished();
      std::string s =
          r.outcome() == v1::OUTCOME_SUCCEEDED ? "succeeded" : "failed";
      s += ", " + std::to_string(r.steps_done()) + " step(s) done";
      if (!r.message().empty()) s += ": " + r.message();
      return s;
    }
    case v1::Event::kStepStarted: {
      const auto& s = e.step_started();
      std::string out = std::string(Dir(s.direction())) + " " + s.slug() +
                        " sha256:" + s.checksum().substr(0, 12);
      if (s.tx_mode() == v1::TX_MODE_NO_TRANSACTION) out += " no-transaction";
      if (s.resume_at_statement() > 0) {
        out += " resuming at statement " +
               std::to_string(s.resume_at_statement() + 1);
      }
      return out;
    }
    case v1::Event::kStatementApplied: {
      const auto& s = e.statement_applied();
      const std::string n = std::to_string(s.statement_index() + 1);
      if (!s.found_applied().empty()) {
        return "statement " + n +
               " found applied by the interrupted attempt: " +
               s.found_applied();
      }
      return "statement " + n + " in " + Ms(s.duration_micros());
    }
    case v1::Event::kStepApplied:
      return "applied in " + Ms(e.step_applied().duration_micros());
    case v1::Event::kStepReverted:
      return "reverted in " + Ms(e.step_reverted().duration_micros());
    case v1::Event::kStepFailed: {
      const auto& f = e.step_failed();
      std::string s = std::string(Dir(f.direction())) + " failed at line " +
                      std::to_string(f.file_line()) + ": " + f.message();
      if (!f.sqlstate().empty()) s += " [" + f.sqlstate() + "]";
      return s;
    }
    case v1::Event::kStepRecovered: {
      const auto& r = e.step_recovered();
      const char* o = r.outcome() == v1::RECOVERED_COMMITTED     ? "committed"
                      : r.outcome() == v1::RECOVERED_ROLLED_BACK ? "rolled back"
                                                                 : "resumed";
      return std::string(o) + ": " + r.evidence();
    }
    case v1::Event::kPlanExported:
      return "offline script sha256:" +
             e.plan_exported().script_sha256().substr(0, 12) + " (" +
             std::to_string(e.plan_exported().plan_size()) + " step(s))";
    case v1::Event::kAppliedOutOfBand:
      return e.applied_out_of_band().evidence();
    case v1::Event::kDriftDetected:
      return e.drift_detected().kind() + ": " + e.drift_detected().details();
    case v1::Event::kBaselined:
      return "baseline of " + std::to_string(e.baselined().versions_size()) +
             " version(s): " + e.baselined().reason();
    case v1::Event::kChecksumAccepted:
      return "checksum " + e.checksum_accepted().new_checksum().substr(0, 12) +
             " accepted: " + e.checksum_accepted().reason();
    case v1::Event::kResolved:
      return e.resolved().decision() + ": " + e.resolved().reason();
    case v1::Event::kOutcomeLearned:
      return "outcome learned: " + e.outcome_learned().evidence();
    default:
      return "";
  }
}

std::string EventTime(const v1::Event& e) {
  return FormatRfc3339(e.time().seconds() * 1000000 + e.time().nanos() / 1000);
}

std::string EventJson(const LedgerEntry& entry, bool pretty) {
  std::string s = "{\"sequence\":" + std::to_string(entry.sequence) +
                  ",\"type\":\"" + EventType(entry.event) +
                  "\",\"leaf_hash\":\"" + ToHex(MerkleLeafHash(entry.bytes)) +
                  "\",\"event\":";
  if (pretty) {
    google::protobuf::util::JsonPrintOptions o;
    o.add_whitespace = true;
    o.preserve_proto_field_names = true;
    std::string body;
    (void)google::protobuf::util::MessageToJsonString(entry.event, &body, o);
    s += body;
  } else {
    AppendProtoJsonOrFallback(entry.event, &s);
  }
  s += "}";
  return s;
}

namespace {
// The two lower-case hex digits of each byte value.
struct HexPairs {
  char pair[256][2];
  constexpr HexPairs() : pair() {
    const char* digits = "0123456789abcdef";
    for (int i = 0; i < 256; ++i) {
      pair[i][0] = digits[i >> 4];
      pair[i][1] = digits[i & 0xf];
    }
  }
};
constexpr HexPairs kHexPairs;
}  // namespace

Status AppendEventJson(uint64_t sequence, std::string_view bytes,
                       std::string* out) {
  // The event's JSON comes first: the type printed before it is known once
  // its bytes are read.
  std::string_view body;
  int member = 0;
  if (!ProtoJsonFromWire(v1::Event::descriptor(), bytes, &body, &member)) {
    LedgerEntry e;
    e.sequence = sequence;
    e.bytes.assign(bytes.data(), bytes.size());
    if (!e.event.ParseFromString(e.bytes)) {
      return LedgerCorrupt("event " + std::to_string(sequence) +
                           " does not decode");
    }
    out->append(EventJson(e, false));
    return Status::Ok();
  }
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, sequence);
  (void)ec;  // 24 characters hold any uint64_t
  out->append("{\"sequence\":");
  out->append(digits, end - digits);
  out->append(",\"type\":\"");
  out->append(EventTypeName(static_cast<v1::Event::BodyCase>(member)));
  out->append("\",\"leaf_hash\":\"");
  const Digest32 leaf = MerkleLeafHash(bytes);
  char hex[64];
  for (size_t i = 0; i < leaf.size(); ++i) {
    std::memcpy(hex + 2 * i, kHexPairs.pair[leaf[i]], 2);
  }
  out->append(hex, sizeof hex);
  out->append("\",\"event\":");
  out->append(body);
  out->push_back('}');
  return Status::Ok();
}

Status WriteEventsJsonl(Ledger* ledger, std::FILE* out, unsigned threads,
                        uint64_t chunk_events) {
  // About 3 MB of JSON per chunk: big writes, and a few chunks in flight
  // keep both cores busy without holding the export in memory.
  const uint64_t chunk = chunk_events ? chunk_events : 4096;
  const uint64_t head = ledger->Head().size;
  // The last chunk has no upper bound, as a scan to the end has none.
  const uint64_t chunks = std::max<uint64_t>(1, (head + chunk - 1) / chunk);
  if (threads == 0)
    threads = std::max(1u, std::min(8u, std::thread::hardware_concurrency()));
  threads = static_cast<unsigned>(std::min<uint64_t>(threads, chunks));
  const uint64_t window = 2 * static_cast<uint64_t>(threads) + 1;

  // Encodes chunk i into *text.
  auto encode_chunk = [&](uint64_t i, std::string* text) {
    text->clear();
    Status bad = Status::Ok();
    Status st =
        ledger->ScanBytes(1 + i * chunk, i + 1 == chunks ? 0 : (i + 1) * chunk,
                          [&](uint64_t seq, std::string_view bytes) {
                            bad = AppendEventJson(seq, bytes, text);
                            if (!bad.ok()) return false;
                            text->push_back('\n');
                            return true;
                          });
    return bad.ok() ? st : bad;
  };

  struct Piece {
    std::string text;
    Status status;
    bool done = false;
  };
  std::vector<Piece> pieces(chunks);
  std::vector<std::string> spare;  // written buffers, kept for their capacity
  std::mutex mu;
  std::condition_variable cv;
  uint64_t claimed = 0, written = 0;
  bool stop = false;
  auto encoder = [&] {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      cv.wait(lock, [&] {
        return stop || claimed >= chunks || claimed < written + window;
      });
      if (stop || claimed >= chunks) return;
      const uint64_t i = claimed++;
      std::string text;
      if (!spare.empty()) {
        text = std::move(spare.back());
        spare.pop_back();
      }
      lock.unlock();
      Status st = encode_chunk(i, &text);
      lock.lock();
      pieces[i].text = std::move(text);
      pieces[i].status = std::move(st);
      pieces[i].done = true;
      cv.notify_all();
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    try {
      pool.emplace_back(encoder);
    } catch (const std::system_error&) {
      break;  // fewer threads, same output
    }
  }
  if (pool.empty()) {
    std::string text;
    for (uint64_t i = 0; i < chunks; ++i) {
      Status st = encode_chunk(i, &text);
      std::fwrite(text.data(), 1, text.size(), out);
      MIGLEDGER_RETURN_IF_ERROR(st);
    }
    return Status::Ok();
  }
  Status result = Status::Ok();
  {
    std::unique_lock<std::mutex> lock(mu);
    for (uint64_t i = 0; i < chunks && result.ok(); ++i) {
      cv.wait(lock, [&] { return pieces[i].done; });
      std::string text = std::move(pieces[i].text);
      result = std::move(pieces[i].status);
      lock.unlock();
      std::fwrite(text.data(), 1, text.size(), out);
      lock.lock();
      spare.push_back(std::move(text));
      ++written;
      if (!result.ok()) stop = true;
      cv.notify_all();
    }
  }
  for (auto& t : pool) t.join();
  return result;
}

const std::vector<std::string>& EventRowHeader() {
  static const std::vector<std::string> h = {
      "SEQ", "TIME", "TARGET", "TYPE", "VERSION", "ACTOR", "DETAILS"};
  return h;
}

std::vector<std::string> EventRow(const LedgerEntry& entry) {
  const v1::Event& e = entry.event;
  std::string target =
      e.target().name().empty() ? e.target().redacted_uri() : e.target().name();
  std::string actor = e.actor().os_user() + "@" + e.actor().host();
  std::string t = EventTime(e);
  t = t.substr(0, 19) + "Z";
  std::vector<std::string> row = {std::to_string(entry.sequence),
                                  t,
                                  std::move(target),
                                  EventType(e),
                                  EventVersion(e),
                                  std::move(actor),
                                  EventSummary(e)};
  // Every cell as a terminal shows it (OneLine): the coloured table of
  // `audit log` prints these without PrintTable. Copied only when needed.
  for (std::string& cell : row) {
    if (NeedsTerminalEscaping(cell)) cell = OneLine(cell);
  }
  return row;
}

}  // namespace migledger
