// The printer's plans, one per message type, made from its descriptor.
#include <algorithm>
#include <map>
#include <memory>
#include <mutex>

#include "cli/proto_json_internal.h"

namespace migledger::proto_json_internal {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

class PlanBook {
 public:
  // The plan of `d` (and of the messages it holds), made on first use.
  const MessagePlan* For(const Descriptor* d) {
    std::lock_guard<std::mutex> lock(mu_);
    return Make(d);
  }

 private:
  const MessagePlan* Make(const Descriptor* d) {
    auto found = plans_.find(d);
    if (found != plans_.end()) return found->second.get();
    auto owned = std::make_unique<MessagePlan>();
    MessagePlan* plan = owned.get();
    plan->memo_slot = plans_.size();
    plans_.emplace(d, std::move(owned));  // before the fields: recursion
    int max_number = 0;
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      if (f->number() <= max_number || f->name().size() + 4 > kKeyRoom) {
        plan->usable = false;
      }
      max_number = std::max(max_number, f->number());
    }
    if (max_number > 4096 || d->oneof_decl_count() > 32) plan->usable = false;
    if (!plan->usable) return plan;
    plan->fields.resize(max_number + 1);
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      FieldPlan& fp = plan->fields[f->number()];
      fp.repeated = f->is_repeated();
      fp.presence = !fp.repeated && f->has_presence();
      fp.oneof = static_cast<int8_t>(
          f->containing_oneof() ? f->containing_oneof()->index() : -1);
      const std::string key = ",\"" + f->name() + "\":";
      fp.key_at = static_cast<uint32_t>(plan->keys.size());
      fp.key_size = static_cast<uint8_t>(key.size());
      plan->keys += key;
      fp.kind = KindOf(f);
      fp.length_delimited = fp.kind == WireKind::kString ||
                            fp.kind == WireKind::kMessage ||
                            fp.kind == WireKind::kTimestamp;
      if (fp.kind == WireKind::kEnum) {
        const auto* e = f->enum_type();
        auto& names = plan->enums.emplace_back();
        for (int k = 0; k < e->value_count(); ++k) {
          std::string quoted;
          if (!AppendString(e->value(k)->name(), &quoted)) {
            fp.kind = WireKind::kUnsupported;
            break;
          }
          names.emplace_back(e->value(k)->number(), std::move(quoted));
        }
        fp.enum_names = &names;
      }
      if (fp.kind == WireKind::kMessage) fp.message = Make(f->message_type());
      // Repeated scalars are packed on the wire; not in the schema.
      if (fp.repeated && fp.kind != WireKind::kString &&
          fp.kind != WireKind::kMessage && fp.kind != WireKind::kTimestamp) {
        fp.kind = WireKind::kUnsupported;
      }
      // Proto2 scalars (presence outside a oneof) may have defaults other
      // than zero; the schema is proto3.
      if (fp.presence && fp.oneof < 0 && fp.kind != WireKind::kMessage &&
          fp.kind != WireKind::kTimestamp) {
        fp.kind = WireKind::kUnsupported;
      }
    }
    plan->keys.append(kKeyRoom, '\0');
    return plan;
  }

  static WireKind KindOf(const FieldDescriptor* f) {
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        return WireKind::kInt32;
      case FieldDescriptor::CPPTYPE_INT64:
        return WireKind::kInt64;
      case FieldDescriptor::CPPTYPE_UINT32:
        return WireKind::kUInt32;
      case FieldDescriptor::CPPTYPE_UINT64:
        return WireKind::kUInt64;
      case FieldDescriptor::CPPTYPE_BOOL:
        return WireKind::kBool;
      case FieldDescriptor::CPPTYPE_ENUM:
        return WireKind::kEnum;
      case FieldDescriptor::CPPTYPE_STRING:
        return f->type() == FieldDescriptor::TYPE_BYTES ? WireKind::kUnsupported
                                                        : WireKind::kString;
      case FieldDescriptor::CPPTYPE_MESSAGE: {
        const Descriptor* m = f->message_type();
        if (m->full_name() == "google.protobuf.Timestamp") {
          return WireKind::kTimestamp;
        }
        if (m->file()->package() == "google.protobuf" || f->is_map() ||
            f->type() == FieldDescriptor::TYPE_GROUP) {
          return WireKind::kUnsupported;  // AppendValue declines them too
        }
        return WireKind::kMessage;
      }
      default:  // float, double
        return WireKind::kUnsupported;
    }
  }

  std::mutex mu_;
  std::map<const Descriptor*, std::unique_ptr<MessagePlan>> plans_;
};

}  // namespace

const MessagePlan* PlanFor(const Descriptor* d) {
  static PlanBook* book = new PlanBook();  // never destroyed: used at exit
  return book->For(d);
}

}  // namespace migledger::proto_json_internal
