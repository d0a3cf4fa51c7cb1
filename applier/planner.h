// Planning: what the ledger says happened to a target (a projection of its
// events), checked against the target's marker rows and the files on disk.
// Pure functions over data; no I/O, so they are unit-tested directly.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "applier/driver.h"
#include "applier/migration_source.h"
#include "migledger/v1/event.pb.h"

namespace migledger {

// What the ledger knows about one version on one target.
struct VersionHistory {
  std::string version;
  bool applied = false;
  std::string checksum;             // checksum applied (or accepted later)
  std::string applied_at;           // RFC 3339 of the terminal event
  std::string last_error;           // message of the last failure, if the last
                                    // attempt failed
  std::string last_error_checksum;  // checksum of the file that failed so
                                    // ("" when the attempt is unknown)
  std::vector<std::string> accepted_checksums;
};

// A started step with no terminal event yet (a crash or a kill).
struct OpenAttempt {
  std::string version;
  std::string attempt_id;
  v1::Direction direction = v1::DIRECTION_UP;
  v1::TxMode tx_mode = v1::TX_MODE_TRANSACTION;
  std::string checksum;
  int statement_count = 0;
};

// Progress of a no-transaction step across attempts: hashes of the
// statements acknowledged so far, in order.
struct NoTxProgress {
  v1::Direction direction = v1::DIRECTION_UP;
  std::vector<std::string> statement_hashes;
};

struct Projection {
  // canonical version -> its history, in numeric version order
  std::map<std::string, VersionHistory, VersionOrder> versions;
  std::vector<OpenAttempt> open_attempts;
  // canonical version -> the progress of its no-transaction step
  std::map<std::string, NoTxProgress, VersionOrder> no_tx_progress;
  uint64_t events = 0;
  int64_t last_event_micros = 0;  // time of the newest event
};

// Where a projection snapshot stands in its target's chain.
struct SnapshotPoint {
  std::string target_key;
  uint64_t target_size = 0;  // the target's events 1..target_size folded in
  std::string target_chain;  // 32 bytes: the target chain head after them
};

// Feeds a target's events in target order.
class ProjectionBuilder {
 public:
  void Add(const v1::Event& event);
  const Projection& projection() const { return p_; }
  Projection Take() && { return std::move(p_); }

  // A builder continuing from a SnapshotOf() the projection it had built,
  // and where that stands; nullopt when `bytes` do not decode or were
  // written by another revision of the projection code. The caller checks
  // `at` against its ledger.
  static std::optional<ProjectionBuilder> Restore(const std::string& bytes,
                                                  SnapshotPoint* at);

 private:
  void Close(const std::string& attempt_id);
  Projection p_;
  std::map<std::string, OpenAttempt> open_;  // attempt id -> attempt
  std::vector<std::string> open_order_;
};

// `p` as bytes (a v1::ProjectionSnapshot) standing at `at`: everything a
// builder needs to go on with the events after it (ProjectionBuilder::
// Restore).
std::string SnapshotOf(const Projection& p, const SnapshotPoint& at);

// Values looked up by version, in whatever form the version is written
// ("0002" finds "2"), without allocating: (canonical version, value) pairs
// in version order, searched by bisection. For the joins of files, marker
// rows and ledger versions over a whole project (10,000 versions: a hash
// map's node per entry cost more than the searches). The views point into
// the strings given to Add, which must outlive the index.
template <typename T>
class ByVersion {
 public:
  explicit ByVersion(size_t expected = 0) { entries_.reserve(expected); }
  void Add(std::string_view version, T value) {
    entries_.emplace_back(CanonicalDigits(version), std::move(value));
  }
  void Add(std::string&& temporary, T value) = delete;  // would dangle
  // Call once after the Adds. Input in version order (files, a Projection's
  // versions) costs one pass; input in string order (rows ORDER BY version)
  // one counting sort by length, which leaves it in version order.
  void Sort() {
    auto less = [](const Entry& a, const Entry& b) {
      return CanonicalLess(a.first, b.first);
    };
    if (std::is_sorted(entries_.begin(), entries_.end(), less)) return;
    size_t longest = 0;
    for (const Entry& e : entries_) longest = std::max(longest, e.first.size());
    std::vector<size_t> next(longest + 2, 0);  // first slot of each length
    for (const Entry& e : entries_) ++next[e.first.size() + 1];
    for (size_t i = 1; i < next.size(); ++i) next[i] += next[i - 1];
    std::vector<Entry> by_length(entries_.size());
    for (Entry& e : entries_) by_length[next[e.first.size()]++] = std::move(e);
    entries_.swap(by_length);
    if (!std::is_sorted(entries_.begin(), entries_.end(), less))
      std::stable_sort(entries_.begin(), entries_.end(), less);
  }
  // The value added last for this version, or nullptr. Lookups in version
  // order (a walk over the files) find their entry next to the previous
  // one's without a search. Moves a cursor: one thread at a time.
  const T* Find(std::string_view version) const {
    const std::string_view key = CanonicalDigits(version);
    auto last_of = [&](size_t i) {  // i: an entry with `key`
      while (i + 1 < entries_.size() && entries_[i + 1].first == key) ++i;
      cursor_ = i + 1;
      return &entries_[i].second;
    };
    for (size_t i = cursor_; i < entries_.size() && i < cursor_ + 2; ++i) {
      if (entries_[i].first == key) return last_of(i);
      if (CanonicalLess(key, entries_[i].first)) break;
    }
    auto it = std::upper_bound(entries_.begin(), entries_.end(), key,
                               [](std::string_view k, const Entry& e) {
                                 return CanonicalLess(k, e.first);
                               });
    if (it == entries_.begin() || (it - 1)->first != key) return nullptr;
    return last_of(static_cast<size_t>(it - 1 - entries_.begin()));
  }

 private:
  using Entry = std::pair<std::string_view, T>;
  std::vector<Entry> entries_;
  mutable size_t cursor_ = 0;  // just past the last entry found
};

// The three sides of a target check by version, indexed once: the files,
// the ledger's versions and the target's marker rows (their index in the
// vector given). Points into its arguments, which must outlive it.
struct TargetIndex {
  ByVersion<const Migration*> files;
  ByVersion<const VersionHistory*> ledger;
  ByVersion<size_t> markers;
};
TargetIndex IndexTarget(const std::vector<Migration>& migrations,
                        const Projection& projection,
                        const std::vector<MarkerRow>& markers);

struct DriftItem {
  std::string version;
  std::string kind;  // unknown_marker | missing_marker | checksum_changed |
                     // missing_file
  std::string details;
};

// The advice for marker rows that disagree with the ledger (drift kinds
// missing_marker and unknown_marker: a database restored from an older
// backup, or a copy of another one): a clause naming the `migledger
// resolve` commands that lead on, or "" when `drift` has no such item.
std::string ResolveHint(const std::vector<DriftItem>& drift);

// The one line a command refused on `drift` (not empty) reports: what
// differs and what leads on. Marker rows that disagree with the ledger are
// told as one restore (the versions the target lost and gained), with
// ResolveHint()'s advice.
std::string DriftMessage(const std::vector<DriftItem>& drift);

struct OutOfBandStep {
  std::string version;
  std::string checksum;
  std::string evidence;
};

// Compares ledger, target and files. Markers written by an offline script
// (attempt id "" or "offline:...") that the ledger does not know yet are
// out-of-band applications, not drift, when their checksum matches the file.
void CheckTarget(const std::vector<Migration>& migrations,
                 const Projection& projection,
                 const std::vector<MarkerRow>& markers,
                 std::vector<DriftItem>* drift,
                 std::vector<OutOfBandStep>* out_of_band);
// The same with the index already built (of these very arguments).
void CheckTarget(const TargetIndex& index, const Projection& projection,
                 const std::vector<MarkerRow>& markers,
                 std::vector<DriftItem>* drift,
                 std::vector<OutOfBandStep>* out_of_band);

struct StepPlan {
  const Migration* migration = nullptr;
  v1::Direction direction = v1::DIRECTION_UP;
};

// The error for a version flag (--to, --version) that names no migration
// file: "not a version" when it is not digits at all.
Status NoSuchVersion(const std::string& flag, const std::string& version);

// Versions on disk without a marker row, in order, up to and including
// `to` (all when empty). Returns kInvalidInput when `to` names no file.
StatusOr<std::vector<StepPlan>> PlanUp(const std::vector<Migration>& migrations,
                                       const std::vector<MarkerRow>& markers,
                                       const std::string& to);

// The marker row of the highest version (numerically), or null for none.
const MarkerRow* NewestMarker(const std::vector<MarkerRow>& markers);

// kInvalidInput naming the first up step of `plan` whose version is older
// than the newest applied one (a marker row): it would run out of order,
// against a schema its author never saw.
Status CheckPlanInOrder(const std::vector<StepPlan>& plan,
                        const std::vector<MarkerRow>& markers);

// Applied versions to revert, newest first: the last `steps`, or all above
// `to`. A step without a down file is kInvalidInput naming it.
StatusOr<std::vector<StepPlan>> PlanDown(
    const std::vector<Migration>& migrations,
    const std::vector<MarkerRow>& markers, const std::string& to, int steps);

}  // namespace migledger
