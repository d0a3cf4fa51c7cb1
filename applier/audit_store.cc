#include "applier/audit_store.h"

#include <libpq-fe.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "applier/libpq_loader.h"
#include "applier/postgres_driver.h"
#include "common/crash_points.h"

namespace migledger {
namespace {

// The store's own migrations, in order. Never edit one that shipped: add.
struct StoreMigration {
  int version;
  const char* description;
  const char* sql;
};
const StoreMigration kStoreMigrations[] = {
    {1, "events of every target",
     "CREATE TABLE \"migledger_store\".\"events\" ("
     " target_key text NOT NULL,"
     " target_sequence bigint NOT NULL,"
     " event_bytes bytea NOT NULL,"
     " leaf_hash bytea NOT NULL,"
     " chain_head bytea NOT NULL,"
     " received_at timestamptz NOT NULL DEFAULT now(),"
     " PRIMARY KEY (target_key, target_sequence))"},
    {2, "index by arrival for incremental readers",
     "CREATE INDEX events_received_at_idx ON \"migledger_store\".\"events\" "
     "(received_at)"},
};
// Serializes schema upgrades between runners ("MLSTORE1" in ASCII).
constexpr int64_t kStoreLockKey = 0x4d4c53544f524531;

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

class PgAuditStore final : public AuditStore {
 public:
  PgAuditStore(PGconn* conn, std::string redacted)
      : conn_(conn), redacted_(std::move(redacted)) {}
  ~PgAuditStore() override { PQfinish(conn_); }

  Status Upgrade() {
    MIGLEDGER_RETURN_IF_ERROR(Exec("BEGIN"));
    Status st = UpgradeInTransaction();
    if (!st.ok()) {
      (void)Exec("ROLLBACK");
      return st;
    }
    return Exec("COMMIT");
  }

  int schema_version() const override { return version_; }

  StatusOr<uint64_t> Push(Ledger* ledger) override {
    uint64_t sent = 0;
    for (const std::string& key : ledger->TargetKeys()) {
      MIGLEDGER_ASSIGN_OR_RETURN(uint64_t head, StoreHead(key));
      ChainHead local = ledger->TargetHead(key);
      if (head > 0 && head <= local.size) {
        // The store's last row of this target must be our event there.
        std::string stored_chain;
        MIGLEDGER_RETURN_IF_ERROR(StoredChain(key, head, &stored_chain));
        bool same = false;
        MIGLEDGER_RETURN_IF_ERROR(ledger->ScanTarget(
            key, head - 1,
            [&](const LedgerEntry&, const Digest32&, const Digest32& chain) {
              same = stored_chain == AsBytes(chain);
              return false;
            }));
        if (!same) {
          return Drift("the audit store's history of target " + key +
                       " forks from the local ledger at target sequence " +
                       std::to_string(head));
        }
      }
      if (head >= local.size) continue;
      std::vector<std::string> values;  // 5 per row, flattened
      MIGLEDGER_RETURN_IF_ERROR(ledger->ScanTarget(
          key, head,
          [&](const LedgerEntry& e, const Digest32& leaf,
              const Digest32& chain) {
            values.push_back(key);
            values.push_back(std::to_string(e.event.target_sequence()));
            values.push_back(e.bytes);
            values.push_back(std::string(AsBytes(leaf)));
            values.push_back(std::string(AsBytes(chain)));
            return true;
          }));
      MIGLEDGER_RETURN_IF_ERROR(Exec("BEGIN"));
      Status st = InsertRows(values);
      if (st.ok()) {
        CrashPoint("store.before_commit");
        st = Exec("COMMIT");
      }
      if (!st.ok()) {
        (void)Exec("ROLLBACK");
        return st;
      }
      sent += values.size() / 5;
    }
    return sent;
  }

  StatusOr<uint64_t> PullAll(Ledger* ledger) override {
    Result r(PQexecParams(
        conn_,
        "SELECT event_bytes, leaf_hash, chain_head FROM "
        "\"migledger_store\".\"events\" ORDER BY target_key, target_sequence",
        0, nullptr, nullptr, nullptr, nullptr, 1));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK)
      return Error("reading the audit store", r.get());
    uint64_t n = 0;
    for (int i = 0; i < PQntuples(r.get()); ++i) {
      auto cell = [&](int c) {
        return std::string(PQgetvalue(r.get(), i, c),
                           PQgetlength(r.get(), i, c));
      };
      Status st = ledger->AppendMirrored(cell(0), cell(1), cell(2));
      if (!st.ok())
        return LedgerCorrupt("the audit store does not verify: " +
                             st.message());
      ++n;
    }
    MIGLEDGER_RETURN_IF_ERROR(ledger->Sync());
    return n;
  }

 private:
  Status UpgradeInTransaction() {
    MIGLEDGER_RETURN_IF_ERROR(Exec("SELECT pg_advisory_xact_lock(" +
                                   std::to_string(kStoreLockKey) + ")"));
    MIGLEDGER_RETURN_IF_ERROR(
        Exec("CREATE SCHEMA IF NOT EXISTS \"migledger_store\""));
    MIGLEDGER_RETURN_IF_ERROR(Exec(
        "CREATE TABLE IF NOT EXISTS \"migledger_store\".\"schema_history\" ("
        " version int PRIMARY KEY, description text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now(), tool_version text NOT "
        "NULL)"));
    Result r(PQexec(conn_,
                    "SELECT coalesce(max(version), 0) FROM "
                    "\"migledger_store\".\"schema_history\""));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK)
      return Error("reading store schema", r.get());
    version_ = std::atoi(PQgetvalue(r.get(), 0, 0));
    int newest = kStoreMigrations[std::size(kStoreMigrations) - 1].version;
    if (version_ > newest) {
      return Unsupported("the audit store " + redacted_ +
                         " has schema version " + std::to_string(version_) +
                         ", newer than this migledger knows (" +
                         std::to_string(newest) + "); upgrade migledger");
    }
    for (const auto& m : kStoreMigrations) {
      if (m.version <= version_) continue;
      MIGLEDGER_RETURN_IF_ERROR(Exec(m.sql));
      const char* params[] = {nullptr, m.description, MIGLEDGER_VERSION};
      std::string v = std::to_string(m.version);
      params[0] = v.c_str();
      Result ins(PQexecParams(
          conn_,
          "INSERT INTO \"migledger_store\".\"schema_history\" (version, "
          "description, tool_version) VALUES ($1, $2, $3)",
          3, nullptr, params, nullptr, nullptr, 0));
      if (PQresultStatus(ins.get()) != PGRES_COMMAND_OK) {
        return Error("recording store schema version", ins.get());
      }
      version_ = m.version;
    }
    return Status::Ok();
  }

  StatusOr<uint64_t> StoreHead(const std::string& key) {
    const char* params[] = {key.c_str()};
    Result r(
        PQexecParams(conn_,
                     "SELECT coalesce(max(target_sequence), 0) FROM "
                     "\"migledger_store\".\"events\" WHERE target_key = $1",
                     1, nullptr, params, nullptr, nullptr, 0));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK)
      return Error("reading the audit store", r.get());
    return std::strtoull(PQgetvalue(r.get(), 0, 0), nullptr, 10);
  }

  Status StoredChain(const std::string& key, uint64_t seq, std::string* chain) {
    std::string s = std::to_string(seq);
    const char* params[] = {key.c_str(), s.c_str()};
    Result r(
        PQexecParams(conn_,
                     "SELECT chain_head FROM \"migledger_store\".\"events\" "
                     "WHERE target_key = $1 AND target_sequence = $2",
                     2, nullptr, params, nullptr, nullptr, 1));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) != 1) {
      return Error("reading the audit store", r.get());
    }
    chain->assign(PQgetvalue(r.get(), 0, 0), PQgetlength(r.get(), 0, 0));
    return Status::Ok();
  }

  // Inserts rows (5 values each); rows already present must hold the same
  // bytes.
  Status InsertRows(const std::vector<std::string>& v) {
    const size_t rows = v.size() / 5;
    const size_t batch = 200;
    for (size_t start = 0; start < rows; start += batch) {
      size_t n = std::min(batch, rows - start);
      std::string sql =
          "INSERT INTO \"migledger_store\".\"events\" (target_key, "
          "target_sequence, event_bytes, "
          "leaf_hash, chain_head) VALUES ";
      std::vector<const char*> values;
      std::vector<int> lengths, formats;
      for (size_t i = 0; i < n; ++i) {
        int b = static_cast<int>(i * 5);
        sql += (i ? ",(" : "(") + std::string("$") + std::to_string(b + 1) +
               ", $" + std::to_string(b + 2) + "::bigint, $" +
               std::to_string(b + 3) + ", $" + std::to_string(b + 4) + ", $" +
               std::to_string(b + 5) + ")";
        for (int c = 0; c < 5; ++c) {
          const std::string& cell = v[(start + i) * 5 + c];
          values.push_back(cell.data());
          lengths.push_back(static_cast<int>(cell.size()));
          formats.push_back(c >= 2 ? 1 : 0);
        }
      }
      sql += " ON CONFLICT (target_key, target_sequence) DO NOTHING";
      Result r(PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()),
                            nullptr, values.data(), lengths.data(),
                            formats.data(), 0));
      if (PQresultStatus(r.get()) != PGRES_COMMAND_OK)
        return Error("writing the audit store", r.get());
      if (static_cast<size_t>(std::atoll(PQcmdTuples(r.get()))) != n) {
        // Some rows were there already (another runner pushed them): they
        // must be byte-identical, or two histories forked.
        for (size_t i = 0; i < n; ++i) {
          const std::string& key = v[(start + i) * 5];
          const std::string& seq = v[(start + i) * 5 + 1];
          const char* params[] = {key.c_str(), seq.c_str()};
          Result c(PQexecParams(
              conn_,
              "SELECT event_bytes FROM \"migledger_store\".\"events\" WHERE "
              "target_key = $1 AND target_sequence = $2::bigint",
              2, nullptr, params, nullptr, nullptr, 1));
          if (PQresultStatus(c.get()) != PGRES_TUPLES_OK ||
              PQntuples(c.get()) != 1 ||
              std::string(PQgetvalue(c.get(), 0, 0),
                          PQgetlength(c.get(), 0, 0)) !=
                  v[(start + i) * 5 + 2]) {
            return Drift("the audit store holds a different event for target " +
                         key + " at target sequence " + seq +
                         " (forked history)");
          }
        }
      }
    }
    return Status::Ok();
  }

  Status Exec(const std::string& sql) {
    Result r(PQexec(conn_, sql.c_str()));
    auto s = PQresultStatus(r.get());
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
      return Error("audit store", r.get());
    return Status::Ok();
  }

  Status Error(const std::string& what, const PGresult* r) {
    std::string msg = r ? PQresultErrorMessage(r) : "";
    if (msg.empty()) msg = PQerrorMessage(conn_);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' '))
      msg.pop_back();
    if (const char* pw = PQpass(conn_); pw && *pw) {
      for (size_t p; (p = msg.find(pw)) != std::string::npos;)
        msg.replace(p, strlen(pw), "***");
    }
    if (PQstatus(conn_) == CONNECTION_BAD) {
      return TargetUnavailable(what + " " + redacted_ +
                               ": connection lost: " + msg);
    }
    return Internal(what + " " + redacted_ + ": " + msg);
  }

  PGconn* conn_;
  std::string redacted_;
  int version_ = 0;
};

}  // namespace

std::string AuditStoreUrl(const std::string& literal,
                          const std::string& env_name) {
  if (!literal.empty()) return literal;
  if (env_name.empty()) return "";
  const char* v = std::getenv(env_name.c_str());
  return v ? v : "";
}

StatusOr<std::unique_ptr<AuditStore>> AuditStore::Open(
    const std::string& conninfo) {
  MIGLEDGER_RETURN_IF_ERROR(LoadLibpq());
  std::string redacted = RedactPostgresUri(conninfo);
  PGconn* conn = PQconnectdb(conninfo.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(conn);
    size_t nl = msg.find('\n');
    if (nl != std::string::npos) msg.resize(nl);
    if (const char* pw = PQpass(conn); pw && *pw) {
      for (size_t p; (p = msg.find(pw)) != std::string::npos;)
        msg.replace(p, strlen(pw), "***");
    }
    PQfinish(conn);
    return TargetUnavailable("cannot connect to the audit store " + redacted +
                             ": " + msg);
  }
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
  auto store = std::make_unique<PgAuditStore>(conn, redacted);
  MIGLEDGER_RETURN_IF_ERROR(store->Upgrade());
  return std::unique_ptr<AuditStore>(std::move(store));
}

}  // namespace migledger
