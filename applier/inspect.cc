// Applier::Inspect: what `status` shows of a target.
#include <algorithm>

#include "applier/applier_impl.h"

namespace migledger {
namespace {

// The status row of migration file `m`; marks its marker row (if any) in
// `on_disk`. `newest`: the newest marker row ("out of order" below it).
StatusRow RowOf(const Migration& m, const TargetIndex& index,
                const std::vector<MarkerRow>& markers, const MarkerRow* newest,
                const StatusReport& report, std::vector<char>* on_disk) {
  StatusRow row{m.version, m.slug, "pending", "", ""};
  const size_t* marker_index = index.markers.Find(m.version);
  const VersionHistory* const* h = index.ledger.Find(m.version);
  if (marker_index != nullptr) {
    (*on_disk)[*marker_index] = 1;
    const MarkerRow* marker = &markers[*marker_index];
    row.state = "applied";
    row.applied_at = marker->applied_at;
    if (h == nullptr || !(*h)->applied) row.note = "not in ledger";
    if (marker->checksum != m.up.checksum &&
        (h == nullptr || (*h)->checksum != m.up.checksum)) {
      row.note = "checksum changed";
    }
  } else if (h != nullptr && !(*h)->last_error.empty() &&
             ((*h)->last_error_checksum.empty() ||
              (*h)->last_error_checksum == m.up.checksum)) {
    // The failure of this very file: one of a file since replaced (same
    // version, other content) says nothing about the file there now.
    row.state = "failed";
    row.note = (*h)->last_error;
  }
  if (marker_index == nullptr && newest != nullptr &&
      CompareVersions(m.version, newest->version) < 0) {
    row.note += row.note.empty() ? "out of order" : ", out of order";
  }
  if (m.up.no_transaction)
    row.note += row.note.empty() ? "no-transaction" : ", no-transaction";
  if (report.running_elsewhere) {
    for (const auto& a : report.unfinished) {
      if (CompareVersions(a.version, m.version) != 0) continue;
      const char* running = a.direction == v1::DIRECTION_DOWN
                                ? "being reverted now"
                                : "running now";
      row.note = row.note.empty() ? running : running + (", " + row.note);
    }
  }
  return row;
}

}  // namespace

StatusOr<StatusReport> Applier::Inspect() {
  auto& d = *impl_;
  StatusReport report;
  if (d.driver)
    report.identity = d.driver->identity();
  else
    report.identity.redacted_uri = RedactUri(d.target_uri);
  const Projection no_ledger;
  const Projection* projected = &no_ledger;
  if (d.ledger) {
    MIGLEDGER_ASSIGN_OR_RETURN(projected, d.projection.View());
  }
  const Projection& p = *projected;
  report.target_events = p.events;
  report.unfinished = p.open_attempts;
  if (!report.unfinished.empty() && d.driver)
    report.running_elsewhere = d.driver->LockHeldElsewhere();
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, d.Markers());
  // One index for the drift check and the rows; `on_disk`: which markers
  // have a file.
  const TargetIndex index = IndexTarget(d.migrations, p, markers);
  std::vector<OutOfBandStep> oob;
  CheckTarget(index, p, markers, &report.drift, &oob);
  std::vector<char> on_disk(markers.size(), 0);
  const MarkerRow* newest = NewestMarker(markers);
  report.rows.reserve(d.migrations.size());
  for (const auto& m : d.migrations) {
    report.rows.push_back(RowOf(m, index, markers, newest, report, &on_disk));
  }
  // Marker rows come in the target's string order: the rows of files gone
  // go after the files' rows in numeric version order.
  const size_t first_missing = report.rows.size();
  for (size_t i = 0; i < markers.size(); ++i) {
    if (!on_disk[i]) {
      const MarkerRow& m = markers[i];
      report.rows.push_back({m.version, "", "missing file", m.applied_at, ""});
    }
  }
  std::stable_sort(report.rows.begin() + first_missing, report.rows.end(),
                   [](const StatusRow& a, const StatusRow& b) {
                     return CompareVersions(a.version, b.version) < 0;
                   });
  return report;
}

}  // namespace migledger
