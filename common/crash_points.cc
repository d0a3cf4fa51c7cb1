#include "common/crash_points.h"

#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <string>

namespace migledger {

namespace {
thread_local CrashPointHook crash_hook = nullptr;
thread_local void* crash_hook_arg = nullptr;
}  // namespace

void SetCrashPointHook(CrashPointHook hook, void* arg) {
  crash_hook = hook;
  crash_hook_arg = arg;
}

bool CrashPointsEnabled() {
#ifdef MIGLEDGER_CRASH_POINTS
  return true;
#else
  return false;
#endif
}

void CrashPoint(std::string_view name) {
#ifdef MIGLEDGER_CRASH_POINTS
  static const char* spec = std::getenv("MIGLEDGER_CRASH_AT");
  if (spec == nullptr || *spec == '\0') return;
  static int hits = 0;
  std::string_view s(spec);
  long wanted = 1;
  if (auto colon = s.rfind(':'); colon != std::string_view::npos) {
    wanted = std::atol(std::string(s.substr(colon + 1)).c_str());
    s = s.substr(0, colon);
  }
  if (s != name) return;
  if (++hits != wanted) return;
  static const char* run = std::getenv("MIGLEDGER_CRASH_RUN");
  if (run != nullptr && *run != '\0') {
    // Nothing to drain: the process goes on as if the point were not there.
    (void)std::system(run);
    return;
  }
  if (crash_hook != nullptr) crash_hook(crash_hook_arg);
  // SIGKILL: no destructors, no flushing, exactly like a power cut for the
  // process (the OS keeps what was written with write()).
  ::kill(::getpid(), SIGKILL);
#else
  (void)name;
#endif
}

}  // namespace migledger
