// Forwarders for the libpq functions migledger uses (see libpq_loader.h).
// Each one calls the function of the same name in the dlopen()ed libpq.

#include "applier/libpq_loader.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

// The forwarders are internal to the binary: never exported, so a libpq
// that another library loads normally is not interposed by them.
#pragma GCC visibility push(hidden)
#include <libpq-fe.h>
#pragma GCC visibility pop

namespace migledger {
namespace {

constexpr const char* kLibpqSoname = "libpq.so.5";

// Every libpq function the drivers call: X(return type, name, (parameters),
// (arguments)).
#define MIGLEDGER_LIBPQ_FUNCTIONS(X)                                           \
  X(int, PQbackendPID, (const PGconn* conn), (conn))                           \
  X(void, PQclear, (PGresult * res), (res))                                    \
  X(char*, PQcmdStatus, (PGresult * res), (res))                               \
  X(char*, PQcmdTuples, (PGresult * res), (res))                               \
  X(PGconn*, PQconnectdb, (const char* conninfo), (conninfo))                  \
  X(PGconn*, PQconnectdbParams,                                                \
    (const char* const* keywords, const char* const* values,                   \
     int expand_dbname),                                                       \
    (keywords, values, expand_dbname))                                         \
  X(PQconninfoOption*, PQconndefaults, (void), ())                             \
  X(PQconninfoOption*, PQconninfo, (PGconn * conn), (conn))                    \
  X(void, PQconninfoFree, (PQconninfoOption * options), (options))             \
  X(PQconninfoOption*, PQconninfoParse, (const char* conninfo, char** errmsg), \
    (conninfo, errmsg))                                                        \
  X(char*, PQerrorMessage, (const PGconn* conn), (conn))                       \
  X(char*, PQescapeLiteral, (PGconn * conn, const char* str, size_t len),      \
    (conn, str, len))                                                          \
  X(PGresult*, PQexec, (PGconn * conn, const char* query), (conn, query))      \
  X(PGresult*, PQexecParams,                                                   \
    (PGconn * conn, const char* command, int n_params, const Oid* types,       \
     const char* const* values, const int* lengths, const int* formats,        \
     int result_format),                                                       \
    (conn, command, n_params, types, values, lengths, formats, result_format)) \
  X(int, PQcancel, (PGcancel * cancel, char* errbuf, int errbufsize),          \
    (cancel, errbuf, errbufsize))                                              \
  X(void, PQfinish, (PGconn * conn), (conn))                                   \
  X(void, PQfreeCancel, (PGcancel * cancel), (cancel))                         \
  X(void, PQfreemem, (void* ptr), (ptr))                                       \
  X(int, PQgetCopyData, (PGconn * conn, char** buffer, int async),             \
    (conn, buffer, async))                                                     \
  X(PGcancel*, PQgetCancel, (PGconn * conn), (conn))                           \
  X(PGresult*, PQgetResult, (PGconn * conn), (conn))                           \
  X(int, PQgetisnull, (const PGresult* res, int row, int field),               \
    (res, row, field))                                                         \
  X(int, PQgetlength, (const PGresult* res, int row, int field),               \
    (res, row, field))                                                         \
  X(char*, PQgetvalue, (const PGresult* res, int row, int field),              \
    (res, row, field))                                                         \
  X(int, PQntuples, (const PGresult* res), (res))                              \
  X(const char*, PQparameterStatus, (const PGconn* conn, const char* name),    \
    (conn, name))                                                              \
  X(char*, PQpass, (const PGconn* conn), (conn))                               \
  X(int, PQputCopyEnd, (PGconn * conn, const char* errormsg),                  \
    (conn, errormsg))                                                          \
  X(char*, PQresultErrorField, (const PGresult* res, int fieldcode),           \
    (res, fieldcode))                                                          \
  X(char*, PQresultErrorMessage, (const PGresult* res), (res))                 \
  X(ExecStatusType, PQresultStatus, (const PGresult* res), (res))              \
  X(int, PQsendQuery, (PGconn * conn, const char* query), (conn, query))       \
  X(PQnoticeProcessor, PQsetNoticeProcessor,                                   \
    (PGconn * conn, PQnoticeProcessor proc, void* arg), (conn, proc, arg))     \
  X(ConnStatusType, PQstatus, (const PGconn* conn), (conn))                    \
  X(PGTransactionStatusType, PQtransactionStatus, (const PGconn* conn), (conn))

struct Libpq {
#define MIGLEDGER_LIBPQ_POINTER(ret, name, params, args) \
  decltype(&::name) name = nullptr;
  MIGLEDGER_LIBPQ_FUNCTIONS(MIGLEDGER_LIBPQ_POINTER)
#undef MIGLEDGER_LIBPQ_POINTER
};

Libpq g_libpq;
std::once_flag g_load_once;
std::string g_load_error;  // empty once loaded

void Load() {
  // Lazy: libpq's own dependencies bind their functions on first call, as
  // they did when libpq was linked (RTLD_NOW: ~3M more instructions per run).
  void* handle = dlopen(kLibpqSoname, RTLD_LAZY | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    g_load_error = std::string("PostgreSQL targets need ") + kLibpqSoname +
                   " (Debian package libpq5): " + (why ? why : "not found");
    return;
  }
#define MIGLEDGER_LIBPQ_RESOLVE(ret, name, params, args)                    \
  g_libpq.name = reinterpret_cast<decltype(&::name)>(dlsym(handle, #name)); \
  if (g_libpq.name == nullptr) {                                            \
    g_load_error =                                                          \
        std::string(kLibpqSoname) + " has no " #name " (libpq too old?)";   \
    return;                                                                 \
  }
  MIGLEDGER_LIBPQ_FUNCTIONS(MIGLEDGER_LIBPQ_RESOLVE)
#undef MIGLEDGER_LIBPQ_RESOLVE
}

}  // namespace

Status LoadLibpq() {
  std::call_once(g_load_once, Load);
  if (!g_load_error.empty()) return TargetUnavailable(g_load_error);
  return Status::Ok();
}

namespace {

// The loaded functions, for the forwarders. A PQ* call without a
// successful LoadLibpq() first is a bug (the caller skipped the check that
// reports a missing libpq properly).
const Libpq& LoadedLibpq(const char* name) {
  if (Status st = LoadLibpq(); !st.ok()) {
    std::fprintf(stderr,
                 "migledger: internal error: %s called without libpq: %s\n",
                 name, st.message().c_str());
    std::abort();
  }
  return g_libpq;
}

}  // namespace
}  // namespace migledger

#define MIGLEDGER_LIBPQ_FORWARD(ret, name, params, args) \
  extern "C" ret name params { return migledger::LoadedLibpq(#name).name args; }
MIGLEDGER_LIBPQ_FUNCTIONS(MIGLEDGER_LIBPQ_FORWARD)
#undef MIGLEDGER_LIBPQ_FORWARD
