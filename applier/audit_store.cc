#include "applier/audit_store.h"

#include <libpq-fe.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "applier/conninfo.h"
#include "applier/libpq_loader.h"
#include "applier/libpq_result.h"
#include "applier/libpq_secrets.h"
#include "common/crash_points.h"

namespace migledger {
namespace {

// The store's own migrations, in order. Never edit one that shipped: add.
struct StoreMigration {
  int version;
  const char* description;
  const char* sql;
  // Also inserts the store's identity row (a random id made here).
  bool creates_identity = false;
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
    // The rows a store already holds get their order once, from what they
    // say: by arrival (received_at, the pushing transaction's start), where
    // a row counts as arrived no later than any later row of its target (two
    // pushes of one target could start in one order and commit in the
    // other), then by target key and target sequence. Each target's rows
    // stay in target order.
    {3, "store order and identity",
     "ALTER TABLE \"migledger_store\".\"events\" ADD COLUMN store_sequence "
     "bigint;"
     "UPDATE \"migledger_store\".\"events\" e SET store_sequence = o.n FROM"
     " (SELECT target_key, target_sequence, row_number() OVER (ORDER BY"
     " arrived, target_key, target_sequence) AS n FROM (SELECT target_key,"
     " target_sequence, min(received_at) OVER (PARTITION BY target_key ORDER"
     " BY target_sequence DESC) AS arrived FROM"
     " \"migledger_store\".\"events\") a) o"
     " WHERE e.target_key = o.target_key AND"
     " e.target_sequence = o.target_sequence;"
     "ALTER TABLE \"migledger_store\".\"events\" ALTER COLUMN store_sequence"
     " SET NOT NULL, ADD CONSTRAINT events_store_sequence_positive CHECK"
     " (store_sequence > 0), ADD CONSTRAINT events_store_sequence_key UNIQUE"
     " (store_sequence);"
     "CREATE TABLE \"migledger_store\".\"identity\" ("
     " one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),"
     " store_id text NOT NULL CHECK (store_id ~ '^[0-9a-f]{32}$'),"
     " created_at timestamptz NOT NULL DEFAULT now())",
     true},
};
// Serializes schema upgrades between runners ("MLSTORE1" in ASCII).
constexpr int64_t kStoreLockKey = 0x4d4c53544f524531;
// Serializes pushes, so that each appends after the last ("MLSTOREA"). An
// advisory lock, not a lock of the events table: it takes no privilege on
// the table, and neither readers nor autovacuum ever wait for it.
constexpr int64_t kStoreAppendLockKey = 0x4d4c53544f524541;

// Rows per INSERT statement of a push, and parameters per row.
constexpr size_t kRowsPerInsert = 200;
constexpr int kColumns = 6;

std::string NewStoreId() {
  std::random_device rd;
  uint8_t raw[16];
  for (auto& b : raw) b = static_cast<uint8_t>(rd());
  return ToHex(raw, sizeof raw);
}

bool IsStoreId(const std::string& id) {
  return id.size() == 32 &&
         id.find_first_not_of("0123456789abcdef") == std::string::npos;
}

class PgAuditStore final : public AuditStore {
 public:
  PgAuditStore(PGconn* conn, std::string redacted, LibpqSecrets secrets)
      : conn_(conn),
        redacted_(std::move(redacted)),
        secrets_(std::move(secrets)) {}
  ~PgAuditStore() override { PQfinish(conn_); }

  Status Upgrade() {
    // READ COMMITTED: the schema version is read after the lock is granted.
    MIGLEDGER_RETURN_IF_ERROR(Exec("BEGIN ISOLATION LEVEL READ COMMITTED"));
    Status st = UpgradeInTransaction();
    if (!st.ok()) {
      (void)Exec("ROLLBACK");
      return st;
    }
    return Exec("COMMIT");
  }

  int schema_version() const override { return version_; }

  StatusOr<uint64_t> Push(Ledger* ledger) override {
    // The lock serializes pushers, so the store sequence is max + 1 with no
    // gaps, and rows commit in that order: a reader sees a dense prefix of
    // the store's order. The max is read by a statement after the lock is
    // granted, so (READ COMMITTED, whatever the store's default) it sees
    // the previous pusher's rows. One round trip begins, locks and reads the
    // store's size.
    PgResult size(
        PQexec(conn_, ("BEGIN ISOLATION LEVEL READ COMMITTED; SELECT "
                       "pg_advisory_xact_lock(" +
                       std::to_string(kStoreAppendLockKey) +
                       "); SELECT coalesce(max(store_sequence), 0) FROM "
                       "\"migledger_store\".\"events\"")
                          .c_str()));
    Status st = PQresultStatus(size.get()) == PGRES_TUPLES_OK
                    ? Status::Ok()
                    : Error("locking the audit store", size.get());
    uint64_t sent = 0;
    if (st.ok()) {
      StatusOr<uint64_t> pushed = PushLocked(
          ledger, std::strtoull(PQgetvalue(size.get(), 0, 0), nullptr, 10));
      if (pushed.ok()) {
        sent = *pushed;
      } else {
        st = pushed.status();
      }
    }
    if (st.ok()) {
      if (sent > 0) CrashPoint("store.before_commit");
      st = Exec("COMMIT");
    }
    if (!st.ok()) {
      (void)Exec("ROLLBACK");
      return st;
    }
    return sent;
  }

  StatusOr<uint64_t> PullAll(Ledger* ledger) override {
    PgResult r(PQexecParams(conn_,
                            "SELECT store_sequence::text AS seq, event_bytes, "
                            "leaf_hash, chain_head FROM "
                            "\"migledger_store\".\"events\" ORDER BY "
                            "store_sequence",
                            0, nullptr, nullptr, nullptr, nullptr, 1));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK)
      return Error("reading the audit store", r.get());
    uint64_t n = 0;
    for (int i = 0; i < PQntuples(r.get()); ++i) {
      auto cell = [&](int c) {
        return std::string(PQgetvalue(r.get(), i, c),
                           PQgetlength(r.get(), i, c));
      };
      const std::string seq = cell(0);
      if (seq != std::to_string(n + 1)) {
        return LedgerCorrupt(
            "the audit store does not verify: its order has no store "
            "sequence " +
            std::to_string(n + 1) + " (the next row is " + seq +
            "): rows were removed or renumbered");
      }
      Status st = ledger->AppendMirrored(cell(1), cell(2), cell(3));
      if (!st.ok())
        return LedgerCorrupt(
            "the audit store does not verify at store sequence " + seq + ": " +
            st.message());
      ++n;
    }
    MIGLEDGER_RETURN_IF_ERROR(ledger->Sync());
    return n;
  }

  StatusOr<std::string> StoreId() override {
    PgResult r(PQexecParams(
        conn_, "SELECT store_id FROM \"migledger_store\".\"identity\"", 0,
        nullptr, nullptr, nullptr, nullptr, 0));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK)
      return Error("reading the audit store's identity", r.get());
    std::string id;
    if (PQntuples(r.get()) == 1) id = PQgetvalue(r.get(), 0, 0);
    if (PQntuples(r.get()) != 1 || !IsStoreId(id)) {
      return LedgerCorrupt("the audit store " + redacted_ +
                           " has no valid identity row "
                           "(migledger_store.identity was edited)");
    }
    return id;
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
    PgResult r(PQexec(conn_,
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
      if (m.creates_identity) {
        const std::string id = NewStoreId();
        const char* params[] = {id.c_str()};
        PgResult ins(
            PQexecParams(conn_,
                         "INSERT INTO \"migledger_store\".\"identity\" "
                         "(store_id) VALUES ($1)",
                         1, nullptr, params, nullptr, nullptr, 0));
        if (PQresultStatus(ins.get()) != PGRES_COMMAND_OK)
          return Error("creating the audit store's identity", ins.get());
      }
      const char* params[] = {nullptr, m.description, MIGLEDGER_VERSION};
      std::string v = std::to_string(m.version);
      params[0] = v.c_str();
      PgResult ins(PQexecParams(
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

  // Push() holding the push lock, inside its transaction;
  // `store_size` is the store's last store sequence.
  StatusOr<uint64_t> PushLocked(Ledger* ledger, uint64_t store_size) {
    std::vector<std::string> values;  // kColumns per row, flattened
    uint64_t store_sequence = store_size;
    for (const std::string& key : ledger->TargetKeys()) {
      ChainHead stored;
      MIGLEDGER_RETURN_IF_ERROR(StoreHead(key, &stored));
      const ChainHead local = ledger->TargetHead(key);
      // The history both hold must be the same: the chain at the shorter
      // one's head covers every event before it.
      const uint64_t shared = std::min(stored.size, local.size);
      if (shared > 0) {
        ChainHead theirs = stored;
        if (shared < stored.size) {
          MIGLEDGER_RETURN_IF_ERROR(StoredChain(key, shared, &theirs.chain));
        }
        MIGLEDGER_ASSIGN_OR_RETURN(ChainHead ours,
                                   ledger->TargetHeadAt(key, shared));
        if (ours.chain != theirs.chain) {
          return Drift("the audit store's history of target " + key +
                       " forks from the local ledger at or before target "
                       "sequence " +
                       std::to_string(shared));
        }
      }
      if (stored.size >= local.size) continue;
      MIGLEDGER_RETURN_IF_ERROR(ledger->ScanTarget(
          key, stored.size,
          [&](const LedgerEntry& e, const Digest32& leaf,
              const Digest32& chain) {
            values.push_back(key);
            values.push_back(std::to_string(e.event.target_sequence()));
            values.push_back(e.bytes);
            values.push_back(std::string(AsBytes(leaf)));
            values.push_back(std::string(AsBytes(chain)));
            values.push_back(std::to_string(++store_sequence));
            return true;
          }));
    }
    MIGLEDGER_RETURN_IF_ERROR(InsertRows(values));
    return values.size() / kColumns;
  }

  // The target's last row in the store: its target sequence and chain head
  // (size 0 when the store has none).
  Status StoreHead(const std::string& key, ChainHead* head) {
    const char* params[] = {key.c_str()};
    PgResult r(PQexecParams(
        conn_,
        "SELECT target_sequence::text AS seq, chain_head FROM "
        "\"migledger_store\".\"events\" WHERE target_key = $1 ORDER BY "
        "target_sequence DESC LIMIT 1",
        1, nullptr, params, nullptr, nullptr, 1));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK)
      return Error("reading the audit store", r.get());
    *head = ChainHead{};
    if (PQntuples(r.get()) == 0) return Status::Ok();
    head->size = std::strtoull(
        std::string(PQgetvalue(r.get(), 0, 0), PQgetlength(r.get(), 0, 0))
            .c_str(),
        nullptr, 10);
    return ToChain(r.get(), 1, key, head->size, &head->chain);
  }

  Status StoredChain(const std::string& key, uint64_t seq, Digest32* chain) {
    std::string s = std::to_string(seq);
    const char* params[] = {key.c_str(), s.c_str()};
    PgResult r(
        PQexecParams(conn_,
                     "SELECT chain_head FROM \"migledger_store\".\"events\" "
                     "WHERE target_key = $1 AND target_sequence = $2::bigint",
                     2, nullptr, params, nullptr, nullptr, 1));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK)
      return Error("reading the audit store", r.get());
    if (PQntuples(r.get()) != 1) {
      return LedgerCorrupt("the audit store has no row for target " + key +
                           " at target sequence " + s +
                           " although it has later ones");
    }
    return ToChain(r.get(), 0, key, seq, chain);
  }

  // The chain_head cell (column c of row 0) as a digest.
  static Status ToChain(const PGresult* r, int c, const std::string& key,
                        uint64_t seq, Digest32* chain) {
    if (PQgetlength(r, 0, c) != static_cast<int>(chain->size())) {
      return LedgerCorrupt("the audit store's chain head of target " + key +
                           " at target sequence " + std::to_string(seq) +
                           " is not 32 bytes");
    }
    std::memcpy(chain->data(), PQgetvalue(r, 0, c), chain->size());
    return Status::Ok();
  }

  // Inserts rows (kColumns values each: target key, target sequence, event
  // bytes, leaf hash, chain head, store sequence).
  Status InsertRows(const std::vector<std::string>& v) {
    const size_t rows = v.size() / kColumns;
    for (size_t start = 0; start < rows; start += kRowsPerInsert) {
      size_t n = std::min(kRowsPerInsert, rows - start);
      std::string sql =
          "INSERT INTO \"migledger_store\".\"events\" (target_key, "
          "target_sequence, event_bytes, leaf_hash, chain_head, "
          "store_sequence) VALUES ";
      std::vector<const char*> values;
      std::vector<int> lengths, formats;
      for (size_t i = 0; i < n; ++i) {
        auto p = [&](int c) { return "$" + std::to_string(i * kColumns + c); };
        sql += (i ? ",(" : "(") + p(1) + ", " + p(2) + "::bigint, " + p(3) +
               ", " + p(4) + ", " + p(5) + ", " + p(6) + "::bigint)";
        for (int c = 0; c < kColumns; ++c) {
          const std::string& cell = v[(start + i) * kColumns + c];
          values.push_back(cell.data());
          lengths.push_back(static_cast<int>(cell.size()));
          formats.push_back(c >= 2 && c <= 4 ? 1 : 0);
        }
      }
      PgResult r(PQexecParams(
          conn_, sql.c_str(), static_cast<int>(values.size()), nullptr,
          values.data(), lengths.data(), formats.data(), 0));
      if (PQresultStatus(r.get()) != PGRES_COMMAND_OK)
        return Error("writing the audit store", r.get());
    }
    return Status::Ok();
  }

  Status Exec(const std::string& sql) {
    PgResult r(PQexec(conn_, sql.c_str()));
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
    msg = secrets_.Scrub(std::move(msg));
    if (PQstatus(conn_) == CONNECTION_BAD) {
      return TargetUnavailable(what + " " + redacted_ +
                               ": connection lost: " + msg);
    }
    return Internal(what + " " + redacted_ + ": " + msg);
  }

  PGconn* conn_;
  std::string redacted_;
  LibpqSecrets secrets_;
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
  std::string redacted = RedactConninfo(conninfo);
  PGconn* conn = PQconnectdb(conninfo.c_str());
  LibpqSecrets secrets(conninfo);
  secrets.Learn(conn);
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(conn);
    size_t nl = msg.find('\n');
    if (nl != std::string::npos) msg.resize(nl);
    msg = secrets.Scrub(std::move(msg));
    PQfinish(conn);
    return TargetUnavailable("cannot connect to the audit store " + redacted +
                             ": " + msg);
  }
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
  auto store =
      std::make_unique<PgAuditStore>(conn, redacted, std::move(secrets));
  MIGLEDGER_RETURN_IF_ERROR(store->Upgrade());
  return std::unique_ptr<AuditStore>(std::move(store));
}

}  // namespace migledger
