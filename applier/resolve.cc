// The operator's audited decisions about a target: baseline,
// accept-checksum, resolve --restored and resolve --new-identity. Each is a
// new event, never an edit.
#include <algorithm>
#include <map>
#include <set>

#include "applier/applier_impl.h"
#include "common/sha256.h"
#include "common/time_util.h"
#include "ledger/merkle.h"

namespace migledger {
namespace {

// The history a copied database inherited in its mirror: a whole, verified
// chain of one database, kept as the copy's provenance.
struct InheritedHistory {
  std::string key;          // kind:database_id of the original
  std::string database_id;  // empty when the mirror is empty
  Digest32 chain{};
};

StatusOr<InheritedHistory> VerifyInherited(const std::vector<MirrorRow>& rows,
                                           std::string key) {
  InheritedHistory h;
  h.key = std::move(key);
  for (size_t i = 0; i < rows.size(); ++i) {
    const MirrorRow& row = rows[i];
    const std::string at =
        "the target's event mirror at target sequence " + std::to_string(i + 1);
    const Digest32 leaf = MerkleLeafHash(row.event_bytes);
    h.chain = ExtendChain(h.chain, leaf);
    v1::Event e;
    if (row.target_sequence != i + 1 || row.leaf_hash != AsBytes(leaf) ||
        row.chain_head != AsBytes(h.chain) ||
        !e.ParseFromString(row.event_bytes) ||
        e.target().database_id().empty()) {
      return Drift(at +
                   " does not verify; refusing to give the database a new "
                   "identity over a history that was edited");
    }
    const std::string row_key =
        migledger::TargetKey(e.target().kind(), e.target().database_id());
    if (i == 0) {
      h.key = row_key;
      h.database_id = e.target().database_id();
    } else if (row_key != h.key) {
      return Drift(at + " is about " + row_key + ", not " + h.key +
                   " as the rows before it");
    }
  }
  return h;
}

// The version state changes `resolve --restored` records: the drift between
// ledger and marker rows that the marker rows settle.
std::vector<v1::ResolvedVersion> RestoredChanges(
    const std::vector<DriftItem>& drift,
    const std::vector<MarkerRow>& markers) {
  std::map<std::string, const MarkerRow*> by_version;
  for (const auto& m : markers) by_version[CanonicalVersion(m.version)] = &m;
  std::vector<v1::ResolvedVersion> changed;
  for (const auto& item : drift) {
    v1::ResolvedVersion v;
    v.set_version(item.version);
    if (item.kind == "missing_marker") {
      v.set_applied(false);
    } else if (item.kind == "unknown_marker") {
      v.set_applied(true);
      v.set_checksum(by_version.at(CanonicalVersion(item.version))->checksum);
    } else {
      continue;  // a changed or missing file has its own remedies
    }
    changed.push_back(std::move(v));
  }
  std::sort(changed.begin(), changed.end(),
            [](const v1::ResolvedVersion& a, const v1::ResolvedVersion& b) {
              return CompareVersions(a.version(), b.version()) < 0;
            });
  return changed;
}

}  // namespace

Status Applier::Baseline(const std::string& version,
                         const std::string& reason) {
  auto& d = *impl_;
  if (reason.empty()) return InvalidInput("baseline needs --reason");
  if (!d.FindMigration(version)) return NoSuchVersion("--version", version);
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, d.Markers());
  std::set<std::string> marked;
  for (const auto& m : markers) marked.insert(CanonicalVersion(m.version));
  v1::Event e = d.NewEvent();
  auto* b = e.mutable_baselined();
  b->set_version(version);
  b->set_reason(reason);
  std::vector<const Migration*> covered;
  for (const auto& m : d.migrations) {
    if (CompareVersions(m.version, version) > 0) break;
    b->add_versions(m.version);
    covered.push_back(&m);
  }
  MIGLEDGER_ASSIGN_OR_RETURN(PreparedEvent prepared, d.ledger->Prepare(&e));
  // Marker rows for the covered versions and the event in one transaction.
  MIGLEDGER_RETURN_IF_ERROR(d.driver->Begin());
  Status st;
  for (const auto* m : covered) {
    if (marked.count(CanonicalVersion(m->version))) continue;
    st = d.driver->InsertMarker({m->version, m->up.checksum,
                                 "baseline:" + d.run_id,
                                 FormatRfc3339(NowMicros())});
    if (!st.ok()) break;
  }
  if (st.ok()) {
    MIGLEDGER_ASSIGN_OR_RETURN(auto rows, d.mirror.Outbox());
    rows.push_back(MirrorRowOf(prepared));
    st = d.driver->InsertMirrorRows(rows);
  }
  if (st.ok()) st = d.driver->Commit();
  if (!st.ok()) {
    (void)d.driver->Rollback();
    return st;
  }
  d.mirror.set_head(prepared.target_sequence);
  MIGLEDGER_RETURN_IF_ERROR(d.ledger->Append(prepared, true).status());
  d.mirror.PushToAuditStore(d.options.config);
  return Status::Ok();
}

Status Applier::AcceptChecksum(const std::string& version,
                               const std::string& reason) {
  auto& d = *impl_;
  if (reason.empty()) return InvalidInput("accept-checksum needs --reason");
  const Migration* m = d.FindMigration(version);
  if (!m) return NoSuchVersion("--version", version);
  MIGLEDGER_ASSIGN_OR_RETURN(Projection p, d.projection.Copy());
  auto h = p.versions.find(CanonicalVersion(version));
  if (h == p.versions.end() || !h->second.applied) {
    return InvalidInput("version " + version +
                        " is not applied; nothing to accept");
  }
  v1::Event e = d.NewEvent();
  auto* c = e.mutable_checksum_accepted();
  c->set_version(m->version);
  c->set_old_checksum(h->second.checksum);
  c->set_new_checksum(m->up.checksum);
  c->set_reason(reason);
  MIGLEDGER_RETURN_IF_ERROR(d.Record(&e, true).status());
  MIGLEDGER_RETURN_IF_ERROR(d.mirror.Flush());
  d.mirror.PushToAuditStore(d.options.config);
  return Status::Ok();
}

StatusOr<std::vector<v1::ResolvedVersion>> Applier::ResolveRestored(
    const std::string& reason) {
  auto& d = *impl_;
  if (reason.empty()) return InvalidInput("resolve needs --reason");
  RunReport report;
  // Steps a crash left open are settled against the restored target first:
  // their outcome is what its marker rows say.
  MIGLEDGER_RETURN_IF_ERROR(d.Reconcile(&report));
  MIGLEDGER_ASSIGN_OR_RETURN(Projection p, d.projection.Copy());
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, d.Markers());
  std::vector<DriftItem> drift;
  std::vector<OutOfBandStep> oob;
  CheckTarget(d.migrations, p, markers, &drift, &oob);
  MIGLEDGER_RETURN_IF_ERROR(d.RecordOutOfBand(oob, &report));
  std::vector<v1::ResolvedVersion> changed = RestoredChanges(drift, markers);
  if (changed.empty()) {
    return InvalidInput(
        "nothing to resolve: the target's marker rows agree with the ledger");
  }
  std::string undone, kept;
  for (const auto& v : changed) {
    std::string& list = v.applied() ? kept : undone;
    list += (list.empty() ? "" : ", ") + v.version();
  }
  std::string decision = "restored: the target's marker rows are its state";
  if (!undone.empty()) decision += "; no longer applied: " + undone;
  if (!kept.empty()) decision += "; applied: " + kept;
  v1::Event e = d.NewEvent();
  auto* r = e.mutable_resolved();
  r->set_subject("restored");
  r->set_decision(decision);
  r->set_reason(reason);
  for (const auto& v : changed) *r->add_versions() = v;
  // Like every operator decision: durable here, then in the target's mirror
  // (the next run sends it there if this one cannot).
  MIGLEDGER_RETURN_IF_ERROR(d.Record(&e, true).status());
  MIGLEDGER_RETURN_IF_ERROR(d.mirror.Flush());
  d.mirror.PushToAuditStore(d.options.config);
  return changed;
}

StatusOr<NewIdentityReport> Applier::ResolveNewIdentity(
    const std::string& reason) {
  auto& d = *impl_;
  if (reason.empty()) return InvalidInput("resolve needs --reason");
  if (d.options.resolving != ApplierOptions::Resolving::kNewIdentity) {
    return Internal("ResolveNewIdentity: not opened for it");
  }
  NewIdentityReport report;
  MIGLEDGER_ASSIGN_OR_RETURN(auto inherited, d.driver->ReadMirror(0));
  MIGLEDGER_ASSIGN_OR_RETURN(InheritedHistory old,
                             VerifyInherited(inherited, d.TargetKey()));
  report.old_database_id = old.database_id.empty()
                               ? d.driver->identity().database_id
                               : old.database_id;
  // A copy under another name (CREATE DATABASE ... TEMPLATE, a dump loaded
  // elsewhere) already has an id of its own; one that has its original's
  // (a copied SQLite file, a PostgreSQL base backup) takes a new one.
  if (report.old_database_id != d.driver->identity().database_id) {
    report.new_database_id = d.driver->identity().database_id;
  } else {
    MIGLEDGER_ASSIGN_OR_RETURN(report.new_database_id,
                               d.driver->NewDatabaseId());
  }
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, d.Markers());
  std::sort(markers.begin(), markers.end(),
            [](const MarkerRow& a, const MarkerRow& b) {
              return CompareVersions(a.version, b.version) < 0;
            });
  v1::Event e = d.NewEvent();
  e.mutable_target()->set_database_id(report.new_database_id);
  auto* r = e.mutable_resolved();
  r->set_subject("new_identity");
  r->set_decision("new identity: a copy of " + report.old_database_id +
                  " becomes " + report.new_database_id + " with " +
                  std::to_string(markers.size()) + " version(s) applied");
  r->set_reason(reason);
  for (const auto& m : markers) {
    auto* v = r->add_versions();
    v->set_version(m.version);
    v->set_applied(true);
    v->set_checksum(m.checksum);
  }
  r->set_old_database_id(report.old_database_id);
  r->set_new_database_id(report.new_database_id);
  r->set_old_target_size(inherited.size());
  r->set_old_target_chain(ToHex(old.chain));
  MIGLEDGER_ASSIGN_OR_RETURN(PreparedEvent prepared, d.ledger->Prepare(&e));
  // The new chain from its start: what the local ledger already holds under
  // the new id (a database of that name seen before), then this event.
  std::vector<MirrorRow> rows;
  MIGLEDGER_RETURN_IF_ERROR(d.ledger->ScanTarget(
      prepared.target_key, 0,
      [&](const LedgerEntry& le, const Digest32& leaf, const Digest32& c) {
        rows.push_back({le.event.target_sequence(), le.bytes,
                        std::string(AsBytes(leaf)), std::string(AsBytes(c))});
        return true;
      }));
  rows.push_back(MirrorRowOf(prepared));
  MIGLEDGER_RETURN_IF_ERROR(d.driver->AdoptIdentity(
      report.new_database_id, report.old_database_id, rows));
  // A crash here is healed by the next run, which pulls the new chain's
  // first event back from the target's mirror.
  MIGLEDGER_RETURN_IF_ERROR(d.ledger->Append(prepared, true).status());
  d.mirror.ForgetOutbox();
  d.mirror.set_head(prepared.target_sequence);
  d.mirror.PushToAuditStore(d.options.config);
  report.inherited_events = inherited.size();
  return report;
}

}  // namespace migledger
