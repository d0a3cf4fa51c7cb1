// Fuzzes the intake of events pulled from a target's mirror: decoding
// migledger.v1.Event from untrusted bytes, MerkleLeafHash, and
// Ledger::AppendMirrored on a real RocksDB ledger in a scratch directory.
//
// Input: byte 0 selects a mode (low 2 bits) and options; the rest is the
// payload.
//   mode 0 "raw":    payload = event bytes || leaf(32) || chain(32); the hashes
//                    are taken as given, so almost every input is refused.
//                    One that is accepted must carry its real leaf hash.
//   mode 1 "single": payload = event bytes, appended as an honest mirror
//                    would send them (see AppendHonestly): a decodable event
//                    with a target must be accepted, anything else refused.
//   mode 2 "chain":  payload = events separated by kSeparator, each appended as
//                    in mode 1; then the target heads, ScanTarget, Digest and
//                    the version index must agree with what was appended.
//   mode 3 "scan":   as mode 2, plus Scan by run id and by time.
//   option bit 2:    keep the event's own target_sequence (mostly refused as
//                    out of order) instead of making it the next one.
//   option bit 3:    keep the event's own target key (see below).
//
// One ledger serves the whole process: opening a RocksDB ledger costs far
// more than an input (and Verify grows with the ledger), so the ledger is
// only replaced every kResetAfterEvents events, after a close, a reopen (the
// tail check on open) and a full Verify and Digest. A failure there may need
// several inputs to reproduce: they are written to ./event-history-*.
// To keep each input reproducible on its own despite the shared ledger, the
// harness moves every input's events to targets and runs of their own: it
// appends a TargetRef whose database_id is "<input number>|<fuzzed id>" and a
// run_id "<input number>|<fuzzed run_id>" (protobuf merges a repeated message
// field and the last value of a string wins), so the fuzzed bytes are kept
// and only prefixed.
#include <google/protobuf/stubs/logging.h>
#include <openssl/crypto.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "applier/migration_source.h"
#include "common/sha256.h"
#include "fuzz_util.h"
#include "ledger/ledger.h"
#include "ledger/merkle.h"
#include "migledger/v1/event.pb.h"

namespace {

using migledger::ChainHead;
using migledger::Digest32;
using migledger::Ledger;
using migledger::LedgerEntry;
using migledger::MerkleLeafHash;
namespace v1 = migledger::v1;

constexpr std::string_view kSeparator = "MLGSEP";
constexpr size_t kMaxEventsPerInput = 64;
constexpr uint64_t kResetAfterEvents = 20000;

std::unique_ptr<Ledger> g_ledger;
int g_generation = 0;
uint64_t g_input_number = 0;
// The inputs appended to the current ledger, written out if the ledger fails
// its checks at reset time (a failure that may need several inputs).
std::vector<std::string> g_history;

std::string LedgerDir() {
  return migledger_fuzz::ScratchDir() + "/ledger" +
         std::to_string(g_generation);
}

std::unique_ptr<Ledger> OpenLedger(bool create) {
  migledger::LedgerOptions o;
  o.create_if_missing = create;
  auto l = Ledger::Open(LedgerDir(), o);
  if (!l.ok()) {
    std::fprintf(stderr, "cannot open fuzz ledger %s: %s\n",
                 LedgerDir().c_str(), l.status().ToString().c_str());
    return nullptr;
  }
  return std::move(l).value();
}

std::string Bytes(const Digest32& d) {
  return std::string(migledger::AsBytes(d));
}

// The ledger's target key: "<kind>:<database_id>" (ledger/FORMAT.md), "" when
// the event is about no target.
std::string TargetKeyOf(const v1::Event& e) {
  if (!e.has_target() || e.target().database_id().empty()) return "";
  return e.target().kind() + ":" + e.target().database_id();
}

// `s` with bytes outside printable ASCII as \xNN, for messages.
std::string Escaped(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[5];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

void AppendVarint(std::string* s, uint64_t v) {
  while (v >= 0x80) {
    s->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  s->push_back(static_cast<char>(v));
}

// Appends a length-delimited field.
void AppendField(std::string* s, int field, std::string_view value) {
  AppendVarint(s, static_cast<uint64_t>(field) << 3 | 2);
  AppendVarint(s, value.size());
  s->append(value);
}

// What one input appended, for the checks after it.
struct Appended {
  std::map<std::string, uint64_t> per_target;  // target key -> events
  std::vector<uint64_t> sequences;             // ledger sequences
};

// Appends `bytes` as an honest mirror would send them: with their real leaf
// hash and the chain head that extends the local target chain, after moving
// the event to this input's own target (unless keep_key) and making it the
// target's next event (unless keep_sequence). Checks that the ledger accepts
// exactly the decodable events with a target that come in order.
void AppendHonestly(std::string bytes, bool keep_sequence, bool keep_key,
                    Appended* out) {
  v1::Event event;
  const bool decodes = event.ParseFromString(bytes);
  if (decodes && !keep_key) {
    const std::string prefix = std::to_string(g_input_number) + "|";
    if (!TargetKeyOf(event).empty()) {
      std::string target;
      AppendField(&target, 3, prefix + event.target().database_id());
      AppendField(&bytes, 5, target);
    }
    if (!event.run_id().empty()) {
      AppendField(&bytes, 3, prefix + event.run_id());
    }
    FUZZ_CHECK(event.ParseFromString(bytes));
  }
  const std::string key = decodes ? TargetKeyOf(event) : "";
  const ChainHead before = g_ledger->TargetHead(key);
  const ChainHead head_before = g_ledger->Head();
  if (decodes && !key.empty() && !keep_sequence) {
    AppendVarint(&bytes, 1 << 3);  // target_sequence, varint
    AppendVarint(&bytes, before.size + 1);
    FUZZ_CHECK(event.ParseFromString(bytes));
    FUZZ_CHECK(event.target_sequence() == before.size + 1);
  }
  const Digest32 leaf = MerkleLeafHash(bytes);
  const Digest32 chain = migledger::Sha256(migledger::AsBytes(before.chain),
                                           migledger::AsBytes(leaf));
  migledger::Status s =
      g_ledger->AppendMirrored(bytes, Bytes(leaf), Bytes(chain));
  const bool acceptable =
      decodes && !key.empty() && event.target_sequence() == before.size + 1;
  if (!acceptable) {
    FUZZ_CHECK(!s.ok());
    FUZZ_CHECK(s.code() == migledger::Code::kLedgerCorrupt);
    FUZZ_CHECK(g_ledger->Head().size == head_before.size);
    return;
  }
  if (!s.ok()) {
    std::fprintf(stderr, "refused an honest mirrored event: %s\n",
                 s.ToString().c_str());
  }
  FUZZ_CHECK(s.ok());
  const ChainHead after = g_ledger->TargetHead(key);
  FUZZ_CHECK(after.size == before.size + 1);
  FUZZ_CHECK(after.chain == chain);
  FUZZ_CHECK(g_ledger->Head().size == head_before.size + 1);
  auto stored = g_ledger->Get(g_ledger->Head().size);
  FUZZ_CHECK(stored.ok());
  FUZZ_CHECK(stored->bytes == bytes);
  FUZZ_CHECK(stored->event.target_sequence() == after.size);
  ++out->per_target[key];
  out->sequences.push_back(g_ledger->Head().size);
}

// Verify and Digest agree with each other and with the head.
bool Verifies() {
  auto report = g_ledger->Verify();
  if (!report.ok()) {
    std::fprintf(stderr, "verify: %s\n", report.status().ToString().c_str());
    return false;
  }
  if (!report->ok()) {
    std::fprintf(stderr, "verify: %s\n", report->problem.c_str());
    return false;
  }
  auto digest = g_ledger->Digest("", 0);
  return report->events_checked == g_ledger->Head().size && digest.ok() &&
         digest->size == report->digest.size &&
         digest->root == report->digest.root;
}

// Every target this input appended to: ScanTarget returns exactly its
// events, in target order, with the hashes the mirror stores; Digest and the
// version index (which matches versions numerically: "0042" == "42") agree.
void CheckTargets(const Appended& appended) {
  for (const auto& entry : appended.per_target) {
    const std::string& key = entry.first;
    const uint64_t count = entry.second;
    const ChainHead th = g_ledger->TargetHead(key);
    FUZZ_CHECK(th.size == count);
    uint64_t seen = 0;
    Digest32 chain{};
    std::map<std::string, uint64_t> versions;
    migledger::Status s = g_ledger->ScanTarget(
        key, 0,
        [&](const LedgerEntry& e, const Digest32& leaf,
            const Digest32& stored_chain) {
          ++seen;
          if (TargetKeyOf(e.event) != key) {
            std::fprintf(stderr,
                         "ScanTarget(\"%s\") returned ledger event %llu of "
                         "target \"%s\"\n",
                         Escaped(key).c_str(),
                         static_cast<unsigned long long>(e.sequence),
                         Escaped(TargetKeyOf(e.event)).c_str());
          }
          FUZZ_CHECK(TargetKeyOf(e.event) == key);
          FUZZ_CHECK(e.event.target_sequence() == seen);
          FUZZ_CHECK(leaf == MerkleLeafHash(e.bytes));
          chain = migledger::Sha256(migledger::AsBytes(chain),
                                    migledger::AsBytes(leaf));
          FUZZ_CHECK(stored_chain == chain);
          if (std::string v = migledger::EventVersion(e.event); !v.empty()) {
            ++versions[migledger::CanonicalVersion(v)];
          }
          return true;
        });
    FUZZ_CHECK(s.ok());
    FUZZ_CHECK(seen == count);
    FUZZ_CHECK(chain == th.chain);
    auto td = g_ledger->Digest(key, 0);
    FUZZ_CHECK(td.ok());
    FUZZ_CHECK(td->size == count);

    for (const auto& version_count : versions) {
      const std::string& version = version_count.first;
      const uint64_t n = version_count.second;
      migledger::ScanFilter f;
      f.target_key = key;
      f.version = version;
      uint64_t found = 0;
      FUZZ_CHECK(g_ledger
                     ->Scan(f,
                            [&](const LedgerEntry& e) {
                              FUZZ_CHECK(TargetKeyOf(e.event) == key);
                              FUZZ_CHECK(migledger::CanonicalVersion(
                                             migledger::EventVersion(
                                                 e.event)) == version);
                              ++found;
                              return true;
                            })
                     .ok());
      FUZZ_CHECK(found == n);
    }
  }
}

// Scan by run id and by event time finds every event this input appended.
void CheckScans(const Appended& appended) {
  for (uint64_t seq : appended.sequences) {
    auto got = g_ledger->Get(seq);
    FUZZ_CHECK(got.ok());
    const v1::Event& ev = got->event;
    if (!ev.run_id().empty()) {
      migledger::ScanFilter f;
      f.run_id = ev.run_id();
      f.min_sequence = seq;
      f.max_sequence = seq;
      uint64_t found = 0;
      FUZZ_CHECK(g_ledger
                     ->Scan(f,
                            [&](const LedgerEntry& e) {
                              FUZZ_CHECK(e.event.run_id() == ev.run_id());
                              found += e.sequence == seq;
                              return true;
                            })
                     .ok());
      FUZZ_CHECK(found == 1);
    }
    // The ledger's notion of event time, in microseconds. Computed in
    // 128 bits here so the harness itself cannot overflow.
    const __int128 micros =
        static_cast<__int128>(ev.time().seconds()) * 1000000 +
        ev.time().nanos() / 1000;
    if (micros > std::numeric_limits<int64_t>::min() &&
        micros < std::numeric_limits<int64_t>::max()) {
      migledger::ScanFilter f;
      f.since_micros = static_cast<int64_t>(micros);
      f.until_micros = static_cast<int64_t>(micros) + 1;
      uint64_t found = 0;
      FUZZ_CHECK(g_ledger
                     ->Scan(f,
                            [&](const LedgerEntry& e) {
                              found += e.sequence == seq;
                              return true;
                            })
                     .ok());
      FUZZ_CHECK(found == 1);
    }
  }
}

// Writes the inputs of the current ledger next to the crash artifacts.
void DumpHistory() {
  for (size_t i = 0; i < g_history.size(); ++i) {
    const std::string name = "event-history-" + std::to_string(g_generation) +
                             "-" + std::to_string(i);
    std::ofstream(name, std::ios::binary) << g_history[i];
  }
  std::fprintf(stderr,
               "the ledger failed after %zu inputs; they are in "
               "./event-history-%d-*; replay them in order\n",
               g_history.size(), g_generation);
}

// Closes the current ledger and checks that it opens again with the same
// head and verifies.
void CheckReopenAndVerify() {
  const ChainHead head = g_ledger->Head();
  g_ledger.reset();
  g_ledger = OpenLedger(/*create=*/false);
  if (g_ledger == nullptr || g_ledger->Head().size != head.size ||
      g_ledger->Head().chain != head.chain) {
    DumpHistory();
    FUZZ_CHECK(!"the ledger reopens with the same head");
  }
  if (!Verifies()) {
    DumpHistory();
    FUZZ_CHECK(!"the ledger verifies");
  }
}

// Checks the current ledger (if any) and starts an empty one in a new
// directory.
void ReplaceLedger() {
  if (g_ledger != nullptr) {
    CheckReopenAndVerify();
    g_ledger.reset();
    std::error_code ec;
    std::filesystem::remove_all(LedgerDir(), ec);
  }
  ++g_generation;
  g_history.clear();
  g_ledger = OpenLedger(/*create=*/true);
  FUZZ_CHECK(g_ledger != nullptr);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs every string field that is not UTF-8; that is expected here.
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  // The exit handler below still hashes: keep OpenSSL from cleaning up in
  // an exit handler of its own, which may run first.
  OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, nullptr);
  ReplaceLedger();
  // At the end of a run (or of a replay), the last ledger gets the same
  // checks as a replaced one; then it is closed before ScratchDir()'s
  // handler (registered earlier, so run later) removes its directory.
  std::atexit([] {
    if (g_ledger != nullptr && g_ledger->Head().size > 0) {
      CheckReopenAndVerify();
    }
    g_ledger.reset();
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  ++g_input_number;
  const uint8_t selector = data[0];
  const std::string_view payload = migledger_fuzz::AsView(data + 1, size - 1);
  const int mode = selector & 3;
  const bool keep_sequence = (selector & 4) != 0;
  const bool keep_key = (selector & 8) != 0;

  // Whatever decodes re-encodes and decodes again.
  {
    v1::Event event;
    if (event.ParseFromArray(payload.data(),
                             static_cast<int>(payload.size()))) {
      std::string again;
      FUZZ_CHECK(event.SerializeToString(&again));
      v1::Event reparsed;
      FUZZ_CHECK(reparsed.ParseFromString(again));
    }
    (void)MerkleLeafHash(payload);
  }

  if (g_ledger->Head().size >= kResetAfterEvents) ReplaceLedger();
  const uint64_t size_before = g_ledger->Head().size;
  Appended appended;
  if (mode == 0) {
    std::string_view bytes = payload, leaf, chain;
    if (payload.size() >= 64) {
      bytes = payload.substr(0, payload.size() - 64);
      leaf = payload.substr(payload.size() - 64, 32);
      chain = payload.substr(payload.size() - 32);
    }
    migledger::Status s = g_ledger->AppendMirrored(
        std::string(bytes), std::string(leaf), std::string(chain));
    if (s.ok()) {
      FUZZ_CHECK(Bytes(MerkleLeafHash(bytes)) == leaf);
      FUZZ_CHECK(g_ledger->Head().size == size_before + 1);
    } else {
      FUZZ_CHECK(s.code() == migledger::Code::kLedgerCorrupt);
      FUZZ_CHECK(g_ledger->Head().size == size_before);
    }
  } else if (mode == 1) {
    AppendHonestly(std::string(payload), keep_sequence, keep_key, &appended);
  } else {
    size_t events = 0;
    for (size_t pos = 0; pos <= payload.size() && events < kMaxEventsPerInput;
         ++events) {
      size_t end = payload.find(kSeparator, pos);
      if (end == std::string_view::npos) end = payload.size();
      AppendHonestly(std::string(payload.substr(pos, end - pos)), keep_sequence,
                     keep_key, &appended);
      pos = end + kSeparator.size();
    }
    if (!keep_key) CheckTargets(appended);
    if (mode == 3) CheckScans(appended);
  }
  if (g_ledger->Head().size != size_before)
    g_history.emplace_back(reinterpret_cast<const char*>(data), size);
  return 0;
}
