#include "cli/proto_json.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "cli/format.h"
#include "common/status.h"
#include "ledger/ledger.h"
#include "migledger/v1/event.pb.h"

namespace migledger {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

std::string Official(const Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  std::string s;
  EXPECT_TRUE(google::protobuf::util::MessageToJsonString(m, &s, o).ok());
  return s;
}

// Fills every field of `m` (one oneof member) with random values; strings
// are printable ASCII plus the characters the encoder escapes.
void Fill(Message* m, std::mt19937* rng, int depth) {
  const auto* d = m->GetDescriptor();
  const auto* r = m->GetReflection();
  auto pick = [&](int n) { return static_cast<int>((*rng)() % n); };
  auto text = [&] {
    static const std::string alphabet =
        "abcXYZ019 _-:;,.'\"\\/<>&{}[]\n\t\r\b\f\x01\x1f\x7f";
    std::string s;
    for (int i = pick(12); i > 0; --i)
      s += alphabet[pick(static_cast<int>(alphabet.size()))];
    return s;
  };
  int chosen_oneof_field =
      d->oneof_decl_count() ? pick(d->oneof_decl(0)->field_count()) : -1;
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->containing_oneof() && f->index_in_oneof() != chosen_oneof_field)
      continue;
    if (pick(4) == 0) continue;  // leave some fields at their default
    int count = f->is_repeated() ? pick(3) : 1;
    for (int k = 0; k < count; ++k) {
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT32: {
          int32_t v = static_cast<int32_t>((*rng)()) % 100000 - 50000;
          f->is_repeated() ? r->AddInt32(m, f, v) : r->SetInt32(m, f, v);
          break;
        }
        case FieldDescriptor::CPPTYPE_INT64: {
          int64_t v = static_cast<int64_t>((*rng)()) * 977 - 1000000000LL;
          f->is_repeated() ? r->AddInt64(m, f, v) : r->SetInt64(m, f, v);
          break;
        }
        case FieldDescriptor::CPPTYPE_UINT64: {
          uint64_t v = (*rng)() * 1000003ULL;
          f->is_repeated() ? r->AddUInt64(m, f, v) : r->SetUInt64(m, f, v);
          break;
        }
        case FieldDescriptor::CPPTYPE_BOOL:
          f->is_repeated() ? r->AddBool(m, f, pick(2))
                           : r->SetBool(m, f, pick(2));
          break;
        case FieldDescriptor::CPPTYPE_ENUM: {
          const auto* e =
              f->enum_type()->value(pick(f->enum_type()->value_count()));
          f->is_repeated() ? r->AddEnum(m, f, e) : r->SetEnum(m, f, e);
          break;
        }
        case FieldDescriptor::CPPTYPE_STRING:
          f->is_repeated() ? r->AddString(m, f, text())
                           : r->SetString(m, f, text());
          break;
        case FieldDescriptor::CPPTYPE_MESSAGE: {
          if (depth > 3) break;
          Message* sub =
              f->is_repeated() ? r->AddMessage(m, f) : r->MutableMessage(m, f);
          if (f->message_type()->full_name() == "google.protobuf.Timestamp") {
            const auto* sd = sub->GetDescriptor();
            sub->GetReflection()->SetInt64(sub, sd->FindFieldByName("seconds"),
                                           1500000000 + pick(400000000));
            static const int kNanos[] = {0,         120000000, 123456000,
                                         123456789, 1000,      5};
            sub->GetReflection()->SetInt32(sub, sd->FindFieldByName("nanos"),
                                           kNanos[pick(6)]);
          } else {
            Fill(sub, rng, depth + 1);
          }
          break;
        }
        default:
          FAIL() << "field type not covered by the test: " << f->full_name();
      }
    }
  }
}

TEST(ProtoJsonTest, MatchesProtobufsPrinterForRandomEventsOfEveryKind) {
  std::mt19937 rng(20261125);
  for (int i = 0; i < 3000; ++i) {
    v1::Event e;
    Fill(&e, &rng, 0);
    std::string fast;
    ASSERT_TRUE(AppendProtoJson(e, &fast)) << e.DebugString();
    ASSERT_EQ(fast, Official(e)) << e.DebugString();
  }
}

TEST(ProtoJsonTest, EmptyAndDefaultOnlyMessagesMatch) {
  v1::Event e;
  std::string fast;
  ASSERT_TRUE(AppendProtoJson(e, &fast));
  EXPECT_EQ(fast, Official(e));
  e.mutable_step_applied();  // a set oneof member with only defaults
  fast.clear();
  ASSERT_TRUE(AppendProtoJson(e, &fast));
  EXPECT_EQ(fast, Official(e));
}

TEST(ProtoJsonTest, NonAsciiTextFallsBackToProtobufsPrinter) {
  v1::Event e;
  e.set_run_id("caf\xc3\xa9 \xe2\x80\xa8 \xef\xbb\xbf");
  std::string fast;
  EXPECT_FALSE(AppendProtoJson(e, &fast));
  std::string out = "x";
  AppendProtoJsonOrFallback(e, &out);
  EXPECT_EQ(out, "x" + Official(e));
}

// ---- JSON straight from the wire bytes --------------------------------------

// The wire encoder's JSON of `bytes`, or "declined".
std::string FromWire(const std::string& bytes, int* member = nullptr) {
  std::string_view json;
  if (!ProtoJsonFromWire(v1::Event::descriptor(), bytes, &json, member)) {
    return "declined";
  }
  return std::string(json);
}

std::string Tag(int number, int wire_type) {
  std::string s;
  uint32_t tag = static_cast<uint32_t>(number) << 3 | wire_type;
  while (tag >= 0x80) {
    s += static_cast<char>(tag | 0x80);
    tag >>= 7;
  }
  s += static_cast<char>(tag);
  return s;
}

std::string Delimited(int number, const std::string& bytes) {
  return Tag(number, 2) + static_cast<char>(bytes.size()) + bytes;
}

TEST(ProtoJsonTest, WireEncoderMatchesProtobufsPrinterForRandomEvents) {
  std::mt19937 rng(20261201);
  for (int i = 0; i < 3000; ++i) {
    v1::Event e;
    Fill(&e, &rng, 0);
    int member = -1;
    const std::string bytes = e.SerializeAsString();
    ASSERT_EQ(FromWire(bytes, &member), Official(e)) << e.DebugString();
    EXPECT_EQ(member, static_cast<int>(e.body_case()));
    std::string appended = "x";
    ASSERT_TRUE(
        AppendProtoJsonFromWire(v1::Event::descriptor(), bytes, &appended));
    EXPECT_EQ(appended, "x" + Official(e));
  }
}

// Protobuf's serializer leaves defaults out, other writers may not: a zero
// on the wire prints as the parsed message prints it (not at all, except in
// a oneof or a message).
TEST(ProtoJsonTest, WireEncoderPrintsExplicitDefaultsAsTheParsedMessage) {
  const std::string cases[] = {
      Tag(1, 0) + std::string(1, '\0'),  // target_sequence 0
      Delimited(3, ""),                  // run_id ""
      Delimited(2, ""),                  // time: the epoch
      Delimited(2, Tag(1, 0) + std::string(1, '\0') + Tag(2, 0) +
                       std::string(1, '\0')),              // time 0, explicitly
      Delimited(4, ""),                                    // actor: {}
      Delimited(4, Tag(3, 0) + std::string(1, '\0')),      // actor.pid 0
      Delimited(24, ""),                                   // step_applied: {}
      Delimited(22, Tag(3, 0) + std::string(1, '\0')),     // direction 0
      Delimited(20, Delimited(3, "")),                     // plan: [{}]
      Delimited(31, Delimited(3, "") + Delimited(3, "")),  // versions ["",""]
      // int32 -1 as ten bytes, and an overlong 1.
      Delimited(21, Tag(3, 0) + "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
      Tag(1, 0) + std::string("\x81\x80\x80\x00", 4),
  };
  for (const std::string& bytes : cases) {
    v1::Event e;
    ASSERT_TRUE(e.ParseFromString(bytes));
    EXPECT_EQ(FromWire(bytes), Official(e)) << e.DebugString();
  }
}

TEST(ProtoJsonTest, WireEncoderDeclinesBytesItCannotPrintAsTheParsedMessage) {
  const std::string run = Delimited(3, "r");
  const std::string seq = Tag(1, 0) + "\x05";
  const std::string cases[] = {
      run + seq,                              // out of number order
      seq + seq,                              // a singular field twice
      Delimited(24, "") + Delimited(25, ""),  // two oneof members
      Tag(15, 0) + "\x01",                    // an unknown field
      Delimited(3, "caf\xc3\xa9"),            // non-ASCII text
      Delimited(22, Tag(3, 0) + "\x09"),      // an enum value it lacks
      Tag(3, 0) + "\x01",                     // run_id as a varint
      Delimited(3, "abc").substr(0, 3),       // cut short
      Tag(6, 3) + Tag(6, 4),                  // a group
      Delimited(2, Tag(1, 0) +                // the year 10000
                       std::string("\x80\xf0\xb3\xe0\xbd\x07", 6)),
      Delimited(2, Tag(2, 0) + "\x01" + Tag(1, 0) + "\x01"),  // nanos first
      Tag(0, 0) + "\x01",                                     // field number 0
  };
  for (const std::string& bytes : cases) {
    EXPECT_EQ(FromWire(bytes), "declined") << testing::PrintToString(bytes);
  }
}

// The promise callers rely on: bytes the wire encoder takes parse, and print
// exactly as the parsed message prints. Random edits of real events' bytes
// make every kind of odd input.
TEST(ProtoJsonTest, WireEncoderTakesOnlyBytesThatParseToTheSameJson) {
  std::mt19937 rng(7);
  int taken = 0, declined = 0;
  for (int i = 0; i < 60000; ++i) {
    v1::Event e;
    Fill(&e, &rng, 0);
    std::string bytes = e.SerializeAsString();
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < edits && !bytes.empty(); ++k) {
      const size_t at = rng() % bytes.size();
      switch (rng() % 4) {
        case 0:
          bytes[at] = static_cast<char>(rng());
          break;
        case 1:
          bytes.erase(at, 1 + rng() % 4);
          break;
        case 2:
          bytes.insert(at, 1, static_cast<char>(rng()));
          break;
        default:
          bytes += bytes.substr(at, 1 + rng() % 8);
      }
    }
    const std::string json = FromWire(bytes);
    if (json == "declined") {
      ++declined;
      continue;
    }
    ++taken;
    v1::Event parsed;
    ASSERT_TRUE(parsed.ParseFromString(bytes)) << testing::PrintToString(bytes);
    ASSERT_EQ(json, Official(parsed)) << testing::PrintToString(bytes);
  }
  // Both sides of the promise were exercised.
  EXPECT_GT(taken, 1000);
  EXPECT_GT(declined, 1000);
}

// Events repeat nested messages verbatim (a run's actor and target), which
// the wire encoder prints once and then copies: a repeat must print the
// same, and a message that differs in any byte must be printed afresh.
TEST(ProtoJsonTest, WireEncoderPrintsRepeatedNestedMessagesAsTheFirstTime) {
  v1::Event a;
  a.mutable_actor()->set_os_user("alice");
  a.mutable_actor()->set_host("laptop");
  a.mutable_actor()->set_pid(4242);
  a.mutable_target()->set_name("prod");
  a.mutable_step_applied()->set_version("0001");
  v1::Event b = a;
  b.mutable_actor()->set_pid(4243);  // the last byte of the actor differs
  b.mutable_step_applied()->set_version("0002");
  v1::Event c = a;
  c.mutable_actor()->set_host("lapt\xc3\xb6p");  // declined: non-ASCII
  v1::Event d = a;
  d.mutable_target()->set_name("prod2");
  for (const v1::Event* e : {&a, &a, &b, &a, &c, &a, &d, &b, &d}) {
    const std::string bytes = e->SerializeAsString();
    if (e == &c) {
      EXPECT_EQ(FromWire(bytes), "declined");
    } else {
      EXPECT_EQ(FromWire(bytes), Official(*e)) << e->DebugString();
    }
  }
}

LedgerEntry Entry(uint64_t sequence, const v1::Event& e) {
  LedgerEntry entry;
  entry.sequence = sequence;
  entry.bytes = e.SerializeAsString();
  entry.event = e;
  return entry;
}

TEST(ProtoJsonTest, EventJsonFromBytesIsEventJson) {
  std::mt19937 rng(11);
  for (int i = 0; i < 500; ++i) {
    v1::Event e;
    Fill(&e, &rng, 0);
    if (i % 10 == 0) e.set_run_id("caf\xc3\xa9");  // the parsing path
    const LedgerEntry entry = Entry(i + 1, e);
    std::string out = "x";
    ASSERT_TRUE(AppendEventJson(entry.sequence, entry.bytes, &out).ok());
    EXPECT_EQ(out, "x" + EventJson(entry, false));
  }
  std::string out = "x";
  Status s = AppendEventJson(7, "\xff\xff\xff", &out);
  EXPECT_EQ(s.code(), Code::kLedgerCorrupt);
  EXPECT_NE(s.message().find("event 7 does not decode"), std::string::npos);
  EXPECT_EQ(out, "x");
}

// A ledger of random events in a temporary directory.
class JsonlExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") +
                       "/migledger-jsonl-test-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    ASSERT_NE(mkdtemp(buf.data()), nullptr);
    dir_ = buf.data();
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::unique_ptr<Ledger> Build(int n) {
    LedgerOptions o;
    o.create_if_missing = true;
    auto ledger = Ledger::Open(dir_ + "/ledger", o);
    EXPECT_TRUE(ledger.ok()) << ledger.status().ToString();
    if (!ledger.ok()) return nullptr;
    std::mt19937 rng(5);
    for (int i = 0; i < n; ++i) {
      v1::Event e;
      Fill(&e, &rng, 0);
      if (i % 7 == 0) e.set_run_id("caf\xc3\xa9");  // the parsing path
      auto p = (*ledger)->AppendEvent(&e, /*sync=*/false);
      EXPECT_TRUE(p.ok()) << p.status().ToString();
    }
    return std::move(ledger).value();
  }

  // What `audit log --format jsonl` wrote before: one Scan, EventJson each.
  static std::string OneLoop(Ledger* ledger) {
    std::string out;
    Status s = ledger->Scan({}, [&](const LedgerEntry& e) {
      out += EventJson(e, false) + "\n";
      return true;
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  static std::string Export(Ledger* ledger, unsigned threads, uint64_t chunk,
                            Status* status) {
    std::FILE* f = std::tmpfile();
    EXPECT_NE(f, nullptr);
    *status = WriteEventsJsonl(ledger, f, threads, chunk);
    std::string out;
    std::rewind(f);
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) {
      out.append(buf, n);
    }
    std::fclose(f);
    return out;
  }

  std::string dir_;
};

TEST_F(JsonlExportTest, ParallelExportWritesWhatOneLoopWrites) {
  auto ledger = Build(60);
  ASSERT_TRUE(ledger);
  const std::string want = OneLoop(ledger.get());
  ASSERT_EQ(std::count(want.begin(), want.end(), '\n'), 60);
  for (unsigned threads : {0u, 1u, 2u, 3u}) {
    for (uint64_t chunk : {0, 1, 3, 7, 60, 1000}) {
      Status s;
      EXPECT_EQ(Export(ledger.get(), threads, chunk, &s), want)
          << "threads " << threads << " chunk " << chunk;
      EXPECT_TRUE(s.ok()) << s.ToString();
    }
  }
}

TEST_F(JsonlExportTest, EmptyLedgerExportsNothing) {
  auto ledger = Build(0);
  ASSERT_TRUE(ledger);
  Status s;
  EXPECT_EQ(Export(ledger.get(), 2, 3, &s), "");
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST_F(JsonlExportTest, UndecodableEventStopsTheExportAfterWhatPrecedesIt) {
  std::string want;
  {
    auto ledger = Build(30);
    ASSERT_TRUE(ledger);
    const std::string all = OneLoop(ledger.get());
    size_t end = 0;
    for (int line = 0; line < 16; ++line) end = all.find('\n', end) + 1;
    want = all.substr(0, end);  // events 1..16
  }
  {
    // Event 17 replaced by bytes that do not decode, with plain RocksDB
    // (ledger/FORMAT.md: the events table's keys are 'e' BE64(seq)).
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(
        rocksdb::DB::Open(rocksdb::Options(), dir_ + "/ledger", &db).ok());
    const char key[9] = {'e', 0, 0, 0, 0, 0, 0, 0, 17};
    EXPECT_TRUE(db->Put({}, rocksdb::Slice(key, 9), "\xff\xff\xff").ok());
    delete db;
  }
  LedgerOptions ro;
  ro.read_only = true;
  auto ledger = Ledger::Open(dir_ + "/ledger", ro);
  ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
  for (unsigned threads : {1u, 2u}) {
    for (uint64_t chunk : {1, 4, 5, 100}) {
      Status s;
      EXPECT_EQ(Export(ledger->get(), threads, chunk, &s), want)
          << "threads " << threads << " chunk " << chunk;
      EXPECT_EQ(s.code(), Code::kLedgerCorrupt) << s.ToString();
    }
  }
}

}  // namespace
}  // namespace migledger
