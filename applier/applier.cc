#include "applier/applier.h"

#include <spdlog/spdlog.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <future>
#include <random>

#include "applier/applier_impl.h"
#include "applier/audit_store.h"
#include "common/keep_until_exit.h"
#include "common/sha256.h"
#include "common/time_util.h"

namespace migledger {

// One getrandom() call: a std::random_device per id cost more than the rest
// of a step's bookkeeping.
std::string RandomId() {
  uint8_t raw[12];
  size_t got = 0;
  while (got < sizeof raw) {
    ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
    if (n > 0) {
      got += static_cast<size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      // No kernel entropy interface: fall back to the C++ library's.
      std::random_device rd;
      for (auto& b : raw) b = static_cast<uint8_t>(rd());
      break;
    }
  }
  return ToHex(raw, sizeof raw);
}

StatusOr<std::vector<SqlStatement>> CheckedStatements(const MigrationFile& f,
                                                      SqlDialect dialect) {
  auto statements = SplitMigrationFile(f.sql, dialect);
  if (!statements.ok()) {
    std::string msg = statements.status().message();
    std::string line;
    if (size_t at = msg.rfind("at line "); at != std::string::npos) {
      line = ":" + msg.substr(at + 8);
    }
    return InvalidInput(f.path + line + ": " + msg);
  }
  if (!f.no_transaction) {
    for (const auto& st : *statements) {
      if (IsTransactionControl(st.text)) {
        return InvalidInput(f.path + ":" + std::to_string(st.first_line) +
                            ": the migration controls its own transaction (" +
                            st.text.substr(0, 20) +
                            "); remove BEGIN/COMMIT (migledger wraps each "
                            "migration in a transaction) "
                            "or add `-- migledger:no-transaction` to run it "
                            "statement by statement");
      }
    }
  }
  return statements;
}

// The target as the helper thread of Applier::Open left it: opened and, for
// a read-only view, first read.
struct OpenedTarget {
  explicit OpenedTarget(StatusOr<std::unique_ptr<Driver>> opened)
      : driver(std::move(opened)) {}
  StatusOr<std::unique_ptr<Driver>> driver;
  std::optional<StatusOr<bool>> has_schema;
  std::optional<uint64_t> mirror_head;
  std::optional<std::vector<MarkerRow>> markers;
};

struct Applier::Handoff {
  std::optional<std::vector<Migration>> migrations;
  // Outcomes the view learned from the target's mirror, reported in
  // RunReport::recovered.
  std::vector<std::string> outcomes_learned;
  // A connection to the same target (null: open one).
  std::unique_ptr<Driver> driver;
};

namespace {

// Opening the target is mostly waiting (PostgreSQL: loading libpq, the
// server's fork and authentication) or parsing (SQLite reads the whole
// schema at the first query): done on a helper thread while the files are
// read and the ledger opens. A read-only view also takes its first look at
// the target there.
std::future<OpenedTarget> StartOpeningTarget(const std::string& uri,
                                             AccessMode mode) {
  return std::async(std::launch::async,
                    [uri, write = mode == AccessMode::kWrite] {
                      OpenedTarget t(OpenDriver(uri, write));
                      if (!t.driver.ok()) return t;
                      Driver& d = **t.driver;
                      if (write) {
                        d.BeginLock();
                      } else {
                        t.has_schema = d.HasSchema();
                        if (t.has_schema->ok() && **t.has_schema &&
                            !d.identity().database_id.empty()) {
                          if (auto head = d.MirrorHead(); head.ok())
                            t.mirror_head = *head;
                          if (auto rows = d.ReadMarkers(); rows.ok())
                            t.markers = std::move(rows).value();
                        }
                      }
                      return t;
                    });
}

}  // namespace

// ---- Applier::Impl ---------------------------------------------------------

v1::Event Applier::Impl::NewEvent() {
  v1::Event e;
  int64_t now = NowMicros();
  e.mutable_time()->set_seconds(now / 1000000);
  e.mutable_time()->set_nanos(static_cast<int32_t>(now % 1000000) * 1000);
  e.set_run_id(run_id);
  *e.mutable_actor() = actor;
  const TargetIdentity& id = driver->identity();
  auto* t = e.mutable_target();
  t->set_name(target_name);
  t->set_kind(id.kind);
  t->set_database_id(id.database_id);
  t->set_database_name(id.database_name);
  t->set_redacted_uri(id.redacted_uri);
  return e;
}

StatusOr<PreparedEvent> Applier::Impl::Record(v1::Event* e, bool sync,
                                              const std::string* blob) {
  MIGLEDGER_RETURN_IF_ERROR(DrainQueue());
  MIGLEDGER_ASSIGN_OR_RETURN(PreparedEvent p, ledger->Prepare(e));
  if (blob) p.blobs.push_back(*blob);
  MIGLEDGER_RETURN_IF_ERROR(ledger->Append(p, sync).status());
  p.blobs.clear();
  mirror.Add(p);
  return p;
}

StatusOr<std::vector<MarkerRow>> Applier::Impl::Markers() {
  if (!driver || !target_has_schema) return std::vector<MarkerRow>{};
  if (prefetched_markers) {
    std::vector<MarkerRow> rows = std::move(*prefetched_markers);
    prefetched_markers.reset();
    return rows;
  }
  return driver->ReadMarkers();
}

const Migration* Applier::Impl::FindMigration(const std::string& version) {
  for (const auto& m : migrations) {
    if (CompareVersions(m.version, version) == 0) return &m;
  }
  return nullptr;
}

StatusOr<std::vector<StepPlan>> Applier::Impl::PlanUpInOrder(
    const std::string& to) {
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, Markers());
  MIGLEDGER_ASSIGN_OR_RETURN(auto plan, PlanUp(migrations, markers, to));
  if (!options.allow_out_of_order) {
    MIGLEDGER_RETURN_IF_ERROR(CheckPlanInOrder(plan, markers));
  }
  return plan;
}

Status Applier::Impl::ReadDownFiles() {
  for (Migration& m : migrations) {
    if (m.has_down) MIGLEDGER_RETURN_IF_ERROR(ReadMigrationFile(&m.down));
  }
  return Status::Ok();
}

RunReport Applier::Impl::NewRunReport() {
  RunReport report;
  report.run_id = run_id;
  report.pulled_events = pulled;
  report.recovered = mirror.learned();
  return report;
}

Status Applier::Impl::AdoptLedger(StatusOr<std::unique_ptr<Ledger>> opened,
                                  LedgerOptions lo) {
  if (!opened.ok() && mode == AccessMode::kWrite &&
      (opened.status().code() == Code::kNotFound ||
       opened.status().code() == Code::kLedgerBusy)) {
    lo.create_if_missing = opened.status().code() == Code::kNotFound;
    opened = Ledger::Open(options.config.ledger_dir, lo);
  }
  if (!opened.ok() && mode == AccessMode::kRead &&
      opened.status().code() == Code::kNotFound) {
    // No ledger yet: read an empty one so status still works.
    ledger = nullptr;
    return Status::Ok();
  }
  if (!opened.ok()) return opened.status();
  ledger = std::move(opened).value();
  // A writer refuses such a directory (Ledger::Open); a reader says so.
  if (mode == AccessMode::kRead) {
    if (Status st = CheckLedgerDirectory(options.config.ledger_dir); !st.ok())
      spdlog::warn("{}", st.message());
  }
  return Status::Ok();
}

Status Applier::Impl::AttachTarget(OpenedTarget* opened) {
  auto& opened_driver = opened->driver;
  if (!opened_driver.ok()) {
    if (mode == AccessMode::kRead &&
        opened_driver.status().code() == Code::kTargetUnavailable &&
        target_uri.rfind("sqlite:", 0) == 0) {
      // A SQLite target that does not exist yet: everything is pending.
      return Status::Ok();
    }
    return opened_driver.status();
  }
  driver = std::move(opened_driver).value();
  if (mode == AccessMode::kWrite) {
    MIGLEDGER_RETURN_IF_ERROR(driver->Lock(options.lock_timeout));
    MIGLEDGER_RETURN_IF_ERROR(driver->EnsureSchema());
    target_has_schema = true;
    if (options.resolving != ApplierOptions::Resolving::kNewIdentity)
      MIGLEDGER_RETURN_IF_ERROR(SyncMirror());
    return Status::Ok();
  }
  MIGLEDGER_ASSIGN_OR_RETURN(target_has_schema,
                             opened->has_schema ? std::move(*opened->has_schema)
                                                : driver->HasSchema());
  mirror.prefetched_head = opened->mirror_head;
  prefetched_markers = std::move(opened->markers);
  return CatchUpForReading();
}

// ---- Applier ---------------------------------------------------------------

Applier::Applier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Applier::~Applier() {
  if (impl_ && impl_->driver) impl_->driver->Unlock();
}

StatusOr<std::unique_ptr<Applier>> Applier::Open(ApplierOptions options,
                                                 AccessMode mode) {
  return OpenWith(std::move(options), mode, Handoff{});
}

StatusOr<std::unique_ptr<Applier>> Applier::OpenWith(ApplierOptions options,
                                                     AccessMode mode,
                                                     Handoff handoff) {
  // The lock session's connection can be made while the ledger opens.
  if (handoff.driver && mode == AccessMode::kWrite) handoff.driver->BeginLock();
  auto impl = std::make_unique<Impl>();
  impl->mirror.learned() = std::move(handoff.outcomes_learned);
  impl->options = options;
  impl->mode = mode;
  MIGLEDGER_ASSIGN_OR_RETURN(
      impl->target_uri,
      ResolveTarget(options.config, options.target, &impl->target_name));
  // A SQLite target that apply may create is opened after the files and
  // the ledger: a bad project must not create the file.
  std::future<OpenedTarget> connecting;
  if (!handoff.driver && (mode == AccessMode::kRead ||
                          impl->target_uri.rfind("sqlite:", 0) != 0)) {
    connecting = StartOpeningTarget(impl->target_uri, mode);
  }
  LedgerOptions lo;
  lo.read_only = mode == AccessMode::kRead;
  lo.lock_timeout = options.lock_timeout;
  // The applier decides from the events: those past the verified mark are
  // checked on open, the ones it reads as it reads them.
  lo.verify_new_events = true;
  // An existing ledger opens on a helper thread while the files are read
  // (RocksDB's first open is start-up work and, for a writer, a few
  // fsyncs). A new one is created only after the files proved sound, so a
  // bad project leaves no ledger behind; and the helper tries the writer's
  // lock once, so a bad project is reported at once, not after the lock
  // timeout: the wait for a busy ledger comes after the files.
  std::future<StatusOr<std::unique_ptr<Ledger>>> opening;
  if (!options.shared_ledger) {
    LedgerOptions once = lo;
    once.lock_timeout = std::chrono::milliseconds(0);
    opening =
        std::async(std::launch::async, [dir = options.config.ledger_dir, once] {
          return Ledger::Open(dir, once);
        });
  }
  if (handoff.migrations) {
    impl->migrations = std::move(*handoff.migrations);
  } else {
    MIGLEDGER_ASSIGN_OR_RETURN(impl->migrations,
                               LoadMigrations(options.config.migrations_dir,
                                              /*read_down_files=*/false));
  }
  if (options.shared_ledger) {
    impl->ledger = options.shared_ledger;
  } else {
    MIGLEDGER_RETURN_IF_ERROR(impl->AdoptLedger(opening.get(), lo));
  }
  OpenedTarget opened =
      handoff.driver       ? OpenedTarget(std::move(handoff.driver))
      : connecting.valid() ? connecting.get()
                           : OpenedTarget(OpenDriver(
                                 impl->target_uri, mode == AccessMode::kWrite));
  MIGLEDGER_RETURN_IF_ERROR(impl->AttachTarget(&opened));
  return std::unique_ptr<Applier>(new Applier(std::move(impl)));
}

StatusOr<RunReport> Applier::OpenAndApply(ApplierOptions options,
                                          const std::string& to) {
  Handoff handoff;
  {
    auto view = Open(options, AccessMode::kRead);
    if (view.ok()) {
      Impl& d = *(*view)->impl_;
      auto nothing = (*view)->NothingToApply(to);
      if (nothing.ok() && *nothing) {
        RunReport report = d.NewRunReport();
        (*view)->SaveUnsavedProjection();
        KeepUntilExit(std::move(view).value());
        return report;
      }
      handoff.migrations = std::move(d.migrations);
      handoff.outcomes_learned = std::move(d.mirror.learned());
      handoff.driver = std::move(d.driver);
    }
  }
  MIGLEDGER_ASSIGN_OR_RETURN(
      auto applier,
      OpenWith(std::move(options), AccessMode::kWrite, std::move(handoff)));
  return applier->Apply(to);
}

StatusOr<std::vector<StepPlan>> Applier::PlanApply(const std::string& to) {
  // apply refuses on drift before it plans: so does its preview.
  if (impl_->ledger) MIGLEDGER_RETURN_IF_ERROR(impl_->CheckDriftReadOnly());
  MIGLEDGER_ASSIGN_OR_RETURN(auto plan, impl_->PlanUpInOrder(to));
  // What RunPlan checks before its first step, for a plan shown, not run.
  SqlDialect dialect =
      impl_->driver ? impl_->driver->dialect() : impl_->Dialect();
  for (const auto& s : plan) {
    MIGLEDGER_RETURN_IF_ERROR(
        CheckedStatements(s.migration->up, dialect).status());
  }
  return plan;
}

StatusOr<std::vector<StepPlan>> Applier::PlanDown(const std::string& to,
                                                  int steps) {
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, impl_->Markers());
  return ::migledger::PlanDown(impl_->migrations, markers, to, steps);
}

StatusOr<RunReport> Applier::Apply(const std::string& to) {
  RunReport report = impl_->NewRunReport();
  MIGLEDGER_RETURN_IF_ERROR(impl_->Prepare(&report));
  MIGLEDGER_ASSIGN_OR_RETURN(auto plan, impl_->PlanUpInOrder(to));
  if (plan.empty())  // resend what an earlier run could not
    impl_->mirror.PushToAuditStore(impl_->options.config);
  return impl_->RunPlan(plan, "apply", std::move(report));
}

void Applier::SaveUnsavedProjection() {
  auto& d = *impl_;
  if (!d.ledger || !d.ledger->read_only()) return;
  const bool projection = d.projection.Unsaved();
  // A reader cannot move the ledger's verified mark: a writable open does,
  // when it closes, so the next command verifies less.
  const bool mark =
      d.ledger->VerifiedOnOpen() >= ProjectionCache::kSnapshotEvery;
  if (!projection && !mark) return;
  LedgerOptions lo;
  lo.lock_timeout = std::chrono::milliseconds(0);  // busy: someone is writing
  lo.verify_new_events = true;
  auto writable = Ledger::Open(d.options.config.ledger_dir, lo);
  if (writable.ok() && projection) d.projection.Save(writable->get());
}

StatusOr<bool> Applier::NothingToApply(const std::string& to) {
  auto& d = *impl_;
  if (!d.driver || !d.ledger || !d.target_has_schema ||
      d.driver->identity().database_id.empty()) {
    return false;
  }
  if (!AuditStoreUrl(d.options.config.audit_store_url,
                     d.options.config.audit_store_url_env)
           .empty()) {
    return false;
  }
  uint64_t remote = 0;
  if (d.mirror.size_seen) {
    remote = *d.mirror.size_seen;
  } else {
    MIGLEDGER_ASSIGN_OR_RETURN(remote, d.driver->MirrorHead());
  }
  if (remote != d.ledger->TargetHead(d.TargetKey()).size) return false;
  // Outcomes learned from the mirror are recorded by a writer.
  MIGLEDGER_ASSIGN_OR_RETURN(bool notes, d.mirror.HasLearnedNotes());
  if (notes) return false;
  MIGLEDGER_ASSIGN_OR_RETURN(const Projection* projected, d.projection.View());
  const Projection& p = *projected;
  if (!p.open_attempts.empty()) return false;
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, d.Markers());
  std::vector<DriftItem> drift;
  std::vector<OutOfBandStep> oob;
  CheckTarget(d.migrations, p, markers, &drift, &oob);
  if (!drift.empty() || !oob.empty()) return false;
  MIGLEDGER_ASSIGN_OR_RETURN(auto plan, PlanUp(d.migrations, markers, to));
  return plan.empty();
}

StatusOr<RunReport> Applier::Down(const std::string& to, int steps) {
  RunReport report = impl_->NewRunReport();
  MIGLEDGER_RETURN_IF_ERROR(impl_->ReadDownFiles());
  MIGLEDGER_RETURN_IF_ERROR(impl_->Prepare(&report));
  MIGLEDGER_ASSIGN_OR_RETURN(auto plan, PlanDown(to, steps));
  return impl_->RunPlan(plan, "down", std::move(report));
}

StatusOr<RunReport> Applier::Recover() {
  RunReport report = impl_->NewRunReport();
  MIGLEDGER_RETURN_IF_ERROR(impl_->Reconcile(&report));
  MIGLEDGER_ASSIGN_OR_RETURN(Projection p, impl_->projection.Copy());
  MIGLEDGER_ASSIGN_OR_RETURN(auto markers, impl_->Markers());
  std::vector<DriftItem> drift;
  std::vector<OutOfBandStep> oob;
  CheckTarget(impl_->migrations, p, markers, &drift, &oob);
  MIGLEDGER_RETURN_IF_ERROR(impl_->RecordOutOfBand(oob, &report));
  impl_->mirror.PushToAuditStore(impl_->options.config);
  return report;
}

StatusOr<std::vector<DriftItem>> Applier::Validate() {
  auto& d = *impl_;
  MIGLEDGER_RETURN_IF_ERROR(d.ReadDownFiles());
  SqlDialect dialect = d.driver ? d.driver->dialect() : d.Dialect();
  for (const auto& m : d.migrations) {
    MIGLEDGER_RETURN_IF_ERROR(CheckedStatements(m.up, dialect).status());
    if (m.has_down)
      MIGLEDGER_RETURN_IF_ERROR(CheckedStatements(m.down, dialect).status());
  }
  // Everything, not from the verified mark: the whole ledger, the target's
  // whole mirror against it, and the projection snapshot against a replay.
  if (d.ledger) {
    MIGLEDGER_ASSIGN_OR_RETURN(VerifyReport r, d.ledger->Verify());
    if (!r.ok()) {
      return LedgerCorrupt("the ledger does not verify: " + r.problem +
                           "; run `migledger audit verify`");
    }
  }
  const bool has_target = d.driver && d.target_has_schema &&
                          !d.driver->identity().database_id.empty();
  // (ReadVerified also replays the projection and compares the snapshot
  // with it.)
  if (has_target)
    MIGLEDGER_RETURN_IF_ERROR(d.mirror.ReadVerified(&d.projection).status());
  MIGLEDGER_ASSIGN_OR_RETURN(StatusReport s, Inspect());
  return s.drift;
}

StatusOr<std::string> Applier::ExportPlanSql(const std::string& to) {
  auto& d = *impl_;
  MIGLEDGER_ASSIGN_OR_RETURN(auto plan, PlanApply(to));
  bool pg = d.driver && d.driver->dialect() == SqlDialect::kPostgres;
  std::string script =
      "-- migledger offline upgrade script\n-- target: " +
      (d.driver ? d.driver->identity().redacted_uri : RedactUri(d.target_uri)) +
      "\n-- run id: " + d.run_id + "\n";
  for (const auto& s : plan) {
    const Migration& m = *s.migration;
    script += "\n-- " + m.version + " " + m.slug + " (" + m.up.file +
              ", sha256 " + m.up.checksum + ")\n";
    if (!m.up.no_transaction) script += "BEGIN;\n";
    // psql skips a byte order mark only at the start of its input.
    script += StartsWithUtf8Bom(m.up.sql) ? m.up.sql.substr(3) : m.up.sql;
    if (!m.up.sql.empty() && m.up.sql.back() != '\n') script += "\n";
    // A last statement without its semicolon must not swallow the marker
    // insert (an empty statement is harmless on both databases).
    auto statements = SplitMigrationFile(
        m.up.sql, pg ? SqlDialect::kPostgres : SqlDialect::kSqlite);
    if (statements.ok() && !statements->empty() &&
        statements->back().text.back() != ';') {
      script += ";\n";
    }
    script += OfflineMarkerSql(pg ? SqlDialect::kPostgres : SqlDialect::kSqlite,
                               MarkerRow{m.version, m.up.checksum,
                                         "offline:" + d.run_id, ""}) +
              "\n";
    if (!m.up.no_transaction) script += "COMMIT;\n";
  }
  if (d.ledger && !d.ledger->read_only() && d.driver &&
      !d.driver->identity().database_id.empty()) {
    v1::Event e = d.NewEvent();
    auto* pe = e.mutable_plan_exported();
    pe->set_script_sha256(Sha256Hex(script));
    for (const auto& s : plan) {
      auto* ps = pe->add_plan();
      ps->set_version(s.migration->version);
      ps->set_direction(v1::DIRECTION_UP);
      ps->set_checksum(s.migration->up.checksum);
      ps->set_tx_mode(s.migration->up.no_transaction
                          ? v1::TX_MODE_NO_TRANSACTION
                          : v1::TX_MODE_TRANSACTION);
    }
    MIGLEDGER_RETURN_IF_ERROR(d.Record(&e, true).status());
    (void)d.mirror.Flush();
  }
  return script;
}

}  // namespace migledger
