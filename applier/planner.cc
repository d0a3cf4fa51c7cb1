#include "applier/planner.h"

#include <google/protobuf/arena.h>

#include <algorithm>
#include <set>

#include "common/time_util.h"
#include "migledger/v1/projection.pb.h"

namespace migledger {

namespace {
std::string TimeOf(const v1::Event& e) {
  return FormatRfc3339(e.time().seconds() * 1000000 + e.time().nanos() / 1000);
}
}  // namespace

// Revision of what Add() computes. Bump it with any change to Add() or to
// the Projection it builds: snapshots of another revision are then ignored
// and the history is replayed once with the new code.
constexpr uint32_t kProjectionLogic = 3;  // 3: Resolved

std::string SnapshotOf(const Projection& p, const SnapshotPoint& at) {
  v1::ProjectionSnapshot s;
  s.set_logic(kProjectionLogic);
  s.set_target_key(at.target_key);
  s.set_target_size(at.target_size);
  s.set_target_chain(at.target_chain);
  s.set_events(p.events);
  s.set_last_event_micros(p.last_event_micros);
  for (const auto& [canonical, h] : p.versions) {
    auto* v = s.add_versions();
    v->set_canonical(canonical);
    v->set_version(h.version);
    v->set_applied(h.applied);
    v->set_checksum(h.checksum);
    v->set_applied_at(h.applied_at);
    v->set_last_error(h.last_error);
    v->set_last_error_checksum(h.last_error_checksum);
    for (const auto& c : h.accepted_checksums) v->add_accepted_checksums(c);
  }
  for (const auto& a : p.open_attempts) {
    auto* o = s.add_open_attempts();
    o->set_version(a.version);
    o->set_attempt_id(a.attempt_id);
    o->set_direction(a.direction);
    o->set_tx_mode(a.tx_mode);
    o->set_checksum(a.checksum);
    o->set_statement_count(a.statement_count);
  }
  for (const auto& [canonical, prog] : p.no_tx_progress) {
    auto* n = s.add_no_tx_progress();
    n->set_canonical(canonical);
    n->set_direction(prog.direction);
    for (const auto& h : prog.statement_hashes) n->add_statement_hashes(h);
  }
  return s.SerializeAsString();
}

std::optional<ProjectionBuilder> ProjectionBuilder::Restore(
    const std::string& bytes, SnapshotPoint* at) {
  // In an arena: a snapshot of a long history is thousands of messages,
  // freed at once.
  google::protobuf::Arena arena;
  auto& s =
      *google::protobuf::Arena::CreateMessage<v1::ProjectionSnapshot>(&arena);
  if (!s.ParseFromString(bytes) || s.logic() != kProjectionLogic) {
    return std::nullopt;
  }
  ProjectionBuilder b;
  at->target_key = s.target_key();
  at->target_size = s.target_size();
  at->target_chain = s.target_chain();
  b.p_.events = s.events();
  b.p_.last_event_micros = s.last_event_micros();
  // The strings are moved out of the parsed message (their buffers are
  // the heap's, whatever owns the message): a snapshot of 10,000 versions
  // is 40,000 strings.
  for (auto& v : *s.mutable_versions()) {
    VersionHistory h;
    h.version = std::move(*v.mutable_version());
    h.applied = v.applied();
    h.checksum = std::move(*v.mutable_checksum());
    h.applied_at = std::move(*v.mutable_applied_at());
    h.last_error = std::move(*v.mutable_last_error());
    h.last_error_checksum = std::move(*v.mutable_last_error_checksum());
    h.accepted_checksums.assign(v.accepted_checksums().begin(),
                                v.accepted_checksums().end());
    b.p_.versions.emplace_hint(b.p_.versions.end(),
                               std::move(*v.mutable_canonical()), std::move(h));
  }
  for (const auto& o : s.open_attempts()) {
    OpenAttempt a;
    a.version = o.version();
    a.attempt_id = o.attempt_id();
    a.direction = o.direction();
    a.tx_mode = o.tx_mode();
    a.checksum = o.checksum();
    a.statement_count = o.statement_count();
    b.open_order_.push_back(a.attempt_id);
    b.open_[a.attempt_id] = a;
    b.p_.open_attempts.push_back(std::move(a));
  }
  for (const auto& n : s.no_tx_progress()) {
    NoTxProgress prog;
    prog.direction = n.direction();
    prog.statement_hashes.assign(n.statement_hashes().begin(),
                                 n.statement_hashes().end());
    b.p_.no_tx_progress.emplace_hint(b.p_.no_tx_progress.end(), n.canonical(),
                                     std::move(prog));
  }
  return b;
}

void ProjectionBuilder::Close(const std::string& attempt_id) {
  open_.erase(attempt_id);
}

void ProjectionBuilder::Add(const v1::Event& e) {
  p_.events++;
  // Kept as a number: formatting it for every event costs more than the
  // rest of Add().
  p_.last_event_micros = e.time().seconds() * 1000000 + e.time().nanos() / 1000;
  auto history = [&](const std::string& version) -> VersionHistory& {
    VersionHistory& h = p_.versions[CanonicalVersion(version)];
    h.version = version;
    return h;
  };
  switch (e.body_case()) {
    case v1::Event::kStepStarted: {
      const auto& s = e.step_started();
      OpenAttempt a;
      a.version = s.version();
      a.attempt_id = s.attempt_id();
      a.direction = s.direction();
      a.tx_mode = s.tx_mode();
      a.checksum = s.checksum();
      a.statement_count = s.statement_count();
      open_[a.attempt_id] = a;
      open_order_.push_back(a.attempt_id);
      auto& prog = p_.no_tx_progress[CanonicalVersion(s.version())];
      if (prog.direction != s.direction() ||
          s.tx_mode() != v1::TX_MODE_NO_TRANSACTION ||
          s.resume_at_statement() == 0) {
        prog = NoTxProgress{s.direction(), {}};
      }
      break;
    }
    case v1::Event::kStatementApplied: {
      const auto& s = e.statement_applied();
      auto& prog = p_.no_tx_progress[CanonicalVersion(s.version())];
      if (static_cast<int>(prog.statement_hashes.size()) ==
          s.statement_index()) {
        prog.statement_hashes.push_back(s.statement_sha256());
      }
      break;
    }
    case v1::Event::kStepApplied: {
      const auto& s = e.step_applied();
      auto& h = history(s.version());
      h.applied = true;
      auto it = open_.find(s.attempt_id());
      if (it != open_.end()) h.checksum = it->second.checksum;
      h.applied_at = TimeOf(e);
      h.last_error.clear();
      h.last_error_checksum.clear();
      p_.no_tx_progress.erase(CanonicalVersion(s.version()));
      Close(s.attempt_id());
      break;
    }
    case v1::Event::kStepReverted: {
      const auto& s = e.step_reverted();
      auto& h = history(s.version());
      h.applied = false;
      h.applied_at.clear();
      h.last_error.clear();
      h.last_error_checksum.clear();
      p_.no_tx_progress.erase(CanonicalVersion(s.version()));
      Close(s.attempt_id());
      break;
    }
    case v1::Event::kStepFailed: {
      const auto& s = e.step_failed();
      auto& h = history(s.version());
      h.last_error = s.message();
      auto it = open_.find(s.attempt_id());
      h.last_error_checksum = it != open_.end() ? it->second.checksum : "";
      if (s.rolled_back())
        p_.no_tx_progress.erase(CanonicalVersion(s.version()));
      Close(s.attempt_id());
      break;
    }
    case v1::Event::kStepRecovered: {
      const auto& s = e.step_recovered();
      auto& h = history(s.version());
      auto it = open_.find(s.attempt_id());
      if (s.outcome() == v1::RECOVERED_COMMITTED) {
        h.applied = s.direction() != v1::DIRECTION_DOWN;
        if (h.applied && it != open_.end()) h.checksum = it->second.checksum;
        h.applied_at = h.applied ? TimeOf(e) : "";
        h.last_error.clear();
        h.last_error_checksum.clear();
        p_.no_tx_progress.erase(CanonicalVersion(s.version()));
      } else if (s.outcome() == v1::RECOVERED_ROLLED_BACK) {
        p_.no_tx_progress.erase(CanonicalVersion(s.version()));
      }
      Close(s.attempt_id());
      break;
    }
    case v1::Event::kAppliedOutOfBand: {
      const auto& s = e.applied_out_of_band();
      auto& h = history(s.version());
      h.applied = true;
      h.checksum = s.checksum();
      h.applied_at = TimeOf(e);
      break;
    }
    case v1::Event::kBaselined: {
      for (const auto& v : e.baselined().versions()) {
        auto& h = history(v);
        h.applied = true;
        h.applied_at = TimeOf(e);
      }
      break;
    }
    case v1::Event::kResolved: {
      // The operator's word on what the target holds from now on.
      for (const auto& v : e.resolved().versions()) {
        auto& h = history(v.version());
        h.applied = v.applied();
        h.applied_at = v.applied() ? TimeOf(e) : "";
        if (v.applied()) h.checksum = v.checksum();
        h.last_error.clear();
        p_.no_tx_progress.erase(CanonicalVersion(v.version()));
      }
      break;
    }
    case v1::Event::kChecksumAccepted: {
      const auto& s = e.checksum_accepted();
      auto& h = history(s.version());
      h.checksum = s.new_checksum();
      h.accepted_checksums.push_back(s.new_checksum());
      break;
    }
    default:
      break;
  }
  p_.open_attempts.clear();
  for (const auto& id : open_order_) {
    auto it = open_.find(id);
    if (it != open_.end()) p_.open_attempts.push_back(it->second);
  }
  if (open_order_.size() > 64 && open_.size() < open_order_.size() / 2) {
    std::vector<std::string> kept;
    for (const auto& id : open_order_) {
      if (open_.count(id)) kept.push_back(id);
    }
    open_order_ = std::move(kept);
  }
}

TargetIndex IndexTarget(const std::vector<Migration>& migrations,
                        const Projection& projection,
                        const std::vector<MarkerRow>& markers) {
  TargetIndex index{
      ByVersion<const Migration*>(migrations.size()),
      ByVersion<const VersionHistory*>(projection.versions.size()),
      ByVersion<size_t>(markers.size())};
  for (const auto& m : migrations) index.files.Add(m.version, &m);
  for (const auto& [key, h] : projection.versions) index.ledger.Add(key, &h);
  for (size_t i = 0; i < markers.size(); ++i)
    index.markers.Add(markers[i].version, i);
  index.files.Sort();
  index.ledger.Sort();
  index.markers.Sort();
  return index;
}

void CheckTarget(const std::vector<Migration>& migrations,
                 const Projection& projection,
                 const std::vector<MarkerRow>& markers,
                 std::vector<DriftItem>* drift,
                 std::vector<OutOfBandStep>* out_of_band) {
  CheckTarget(IndexTarget(migrations, projection, markers), projection, markers,
              drift, out_of_band);
}

void CheckTarget(const TargetIndex& index, const Projection& projection,
                 const std::vector<MarkerRow>& markers,
                 std::vector<DriftItem>* drift,
                 std::vector<OutOfBandStep>* out_of_band) {
  const ByVersion<const Migration*>& files = index.files;
  const ByVersion<const VersionHistory*>& ledger = index.ledger;
  for (const auto& row : markers) {
    const VersionHistory* const* h = ledger.Find(row.version);
    const bool known = h != nullptr && (*h)->applied;
    const Migration* const* f = files.Find(row.version);
    if (!known) {
      bool offline =
          row.attempt_id.empty() || row.attempt_id.rfind("offline:", 0) == 0;
      if (offline && f != nullptr && (*f)->up.checksum == row.checksum) {
        out_of_band->push_back(
            {row.version, row.checksum,
             "marker row written at " + row.applied_at +
                 " by an offline script (attempt " +
                 (row.attempt_id.empty() ? "none" : row.attempt_id) + ")"});
        continue;
      }
      drift->push_back({row.version, "unknown_marker",
                        "the target has a marker row for version " +
                            row.version + " (attempt " + row.attempt_id + ", " +
                            row.applied_at +
                            ") that the ledger does not record as applied"});
      continue;
    }
    if (f == nullptr) {
      drift->push_back({row.version, "missing_file",
                        "version " + row.version +
                            " is applied but its migration file is gone"});
      continue;
    }
    const std::string& applied =
        (*h)->checksum.empty() ? row.checksum : (*h)->checksum;
    if ((*f)->up.checksum != applied) {
      drift->push_back(
          {row.version, "checksum_changed",
           (*f)->up.path + " changed after it was applied (applied " +
               applied.substr(0, 12) + ", file now " +
               (*f)->up.checksum.substr(0, 12) +
               "); restore the file or run `migledger accept-checksum`"});
    }
  }
  for (const auto& [key, h] : projection.versions) {
    if (h.applied && index.markers.Find(key) == nullptr) {
      drift->push_back(
          {h.version, "missing_marker",
           "the ledger records version " + h.version +
               " as applied but the target has no marker row (database "
               "restored to an older state? see `migledger resolve`)"});
    }
  }
}

namespace {
// The versions of `drift` items of `kind`, in version order, joined by ", ".
std::string VersionsOf(const std::vector<DriftItem>& drift,
                       const std::string& kind) {
  std::vector<std::string> versions;
  for (const auto& d : drift) {
    if (d.kind == kind) versions.push_back(d.version);
  }
  std::sort(versions.begin(), versions.end(),
            [](const std::string& a, const std::string& b) {
              return CompareVersions(a, b) < 0;
            });
  std::string out;
  for (const auto& v : versions) out += (out.empty() ? "" : ", ") + v;
  return out;
}
}  // namespace

std::string ResolveHint(const std::vector<DriftItem>& drift) {
  const std::string undone = VersionsOf(drift, "missing_marker");
  if (undone.empty() && VersionsOf(drift, "unknown_marker").empty()) return "";
  return "if the database was restored from a backup, `migledger resolve "
         "--restored --reason TEXT` accepts its marker rows as its state" +
         (undone.empty() ? std::string()
                         : " (then `apply` runs " + undone + " again)") +
         "; if it is a copy of another database, `migledger resolve "
         "--new-identity --reason TEXT` gives it an id and a history of its "
         "own";
}

std::string DriftMessage(const std::vector<DriftItem>& drift) {
  const std::string undone = VersionsOf(drift, "missing_marker");
  const std::string gained = VersionsOf(drift, "unknown_marker");
  size_t others = 0;
  const DriftItem* first_other = nullptr;
  for (const auto& d : drift) {
    if (d.kind == "missing_marker" || d.kind == "unknown_marker") continue;
    if (!first_other) first_other = &d;
    ++others;
  }
  if (first_other == nullptr) {
    std::string msg = "drift: the target";
    if (!undone.empty()) {
      msg += " has no marker row for " + undone +
             ", which the ledger records as applied";
    }
    if (!gained.empty()) {
      msg += std::string(undone.empty() ? "" : ", and") +
             " has marker rows for " + gained +
             ", which the ledger does not record as applied";
    }
    return msg + " (restored from an older backup, or a copy?); " +
           ResolveHint(drift);
  }
  std::string msg = "drift: " + first_other->details;
  if (drift.size() > 1) {
    msg += " (and " + std::to_string(drift.size() - 1) +
           " more; run `migledger validate`)";
  }
  const std::string hint = ResolveHint(drift);
  return hint.empty() ? msg : msg + "; " + hint;
}

Status NoSuchVersion(const std::string& flag, const std::string& version) {
  if (!IsValidVersion(version)) {
    return InvalidInput(flag + " " + version +
                        ": not a version (versions are digits, as in the "
                        "migration file names)");
  }
  return InvalidInput(flag + " " + version + ": no migration has that version");
}

StatusOr<std::vector<StepPlan>> PlanUp(const std::vector<Migration>& migrations,
                                       const std::vector<MarkerRow>& markers,
                                       const std::string& to) {
  std::set<std::string> applied;
  for (const auto& r : markers) applied.insert(CanonicalVersion(r.version));
  if (!to.empty() && std::none_of(migrations.begin(), migrations.end(),
                                  [&](const Migration& m) {
                                    return CompareVersions(m.version, to) == 0;
                                  })) {
    return NoSuchVersion("--to", to);
  }
  std::vector<StepPlan> plan;
  for (const auto& m : migrations) {
    if (!to.empty() && CompareVersions(m.version, to) > 0) break;
    if (applied.count(CanonicalVersion(m.version))) continue;
    plan.push_back({&m, v1::DIRECTION_UP});
  }
  return plan;
}

const MarkerRow* NewestMarker(const std::vector<MarkerRow>& markers) {
  const MarkerRow* newest = nullptr;
  for (const auto& r : markers) {
    if (newest == nullptr || CompareVersions(r.version, newest->version) > 0)
      newest = &r;
  }
  return newest;
}

Status CheckPlanInOrder(const std::vector<StepPlan>& plan,
                        const std::vector<MarkerRow>& markers) {
  const MarkerRow* newest = NewestMarker(markers);
  if (newest == nullptr) return Status::Ok();
  for (const auto& s : plan) {
    if (s.direction != v1::DIRECTION_UP) continue;
    if (CompareVersions(s.migration->version, newest->version) < 0) {
      return InvalidInput(
          "migration " + s.migration->version + " (" + s.migration->up.file +
          ") is older than " + newest->version +
          ", which is applied: it would run out of order; give it a version "
          "after " +
          newest->version +
          ", or apply it as it is with --allow-out-of-order "
          "(allow_out_of_order = true in migledger.toml)");
    }
  }
  return Status::Ok();
}

StatusOr<std::vector<StepPlan>> PlanDown(
    const std::vector<Migration>& migrations,
    const std::vector<MarkerRow>& markers, const std::string& to, int steps) {
  std::set<std::string> applied;
  for (const auto& r : markers) applied.insert(CanonicalVersion(r.version));
  if (!to.empty() && to != "0" &&
      std::none_of(migrations.begin(), migrations.end(),
                   [&](const Migration& m) {
                     return CompareVersions(m.version, to) == 0;
                   })) {
    return NoSuchVersion("--to", to);
  }
  std::vector<StepPlan> plan;
  for (auto it = migrations.rbegin(); it != migrations.rend(); ++it) {
    if (!applied.count(CanonicalVersion(it->version))) continue;
    if (!to.empty()) {
      if (CompareVersions(it->version, to) <= 0) break;
    } else if (static_cast<int>(plan.size()) >= steps) {
      break;
    }
    if (!it->has_down) {
      return InvalidInput("version " + it->version + " (" + it->up.file +
                          ") has no down migration; cannot revert it");
    }
    plan.push_back({&*it, v1::DIRECTION_DOWN});
  }
  return plan;
}

}  // namespace migledger
