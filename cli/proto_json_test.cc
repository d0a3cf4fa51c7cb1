#include "cli/proto_json.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <random>

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

}  // namespace
}  // namespace migledger
