#include "common/interrupt.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace migledger {
namespace {

struct State {
  std::atomic<int> signal{0};   // the first signal taken during work
  std::atomic<int> working{0};  // live InterruptibleWork objects
  std::mutex mu;                // guards cancellers
  std::vector<std::pair<void (*)(void*), void*>> cancellers;
};

// Never destroyed: the watcher may run while static destructors do.
State& state() {
  static State* s = new State();
  return *s;
}

// Ends the process by `sig`, as if no handler were installed.
[[noreturn]] void DieOf(int sig) {
  std::signal(sig, SIG_DFL);
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, sig);
  pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
  raise(sig);  // to this thread, which no longer blocks it
  _exit(128 + sig);
}

void Watch(sigset_t set) {
  State& s = state();
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    int none = 0;
    if (s.working.load() == 0 || !s.signal.compare_exchange_strong(none, sig))
      DieOf(sig);
    std::lock_guard<std::mutex> lock(s.mu);
    for (const auto& [cancel, arg] : s.cancellers) cancel(arg);
  }
}

}  // namespace

void InstallInterruptHandlers() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) return;
  std::thread(Watch, set).detach();
}

bool InterruptRequested() { return state().signal.load() != 0; }

const char* InterruptedBy() {
  switch (state().signal.load()) {
    case SIGINT:
      return "interrupted by SIGINT";
    case SIGTERM:
      return "interrupted by SIGTERM";
    default:
      return "";
  }
}

void EndByInterruptSignal() {
  if (const int sig = state().signal.load(); sig != 0) {
    std::fflush(nullptr);
    DieOf(sig);
  }
}

InterruptibleWork::InterruptibleWork() { ++state().working; }
InterruptibleWork::~InterruptibleWork() { --state().working; }

InterruptCanceller::InterruptCanceller(void (*cancel)(void*), void* arg)
    : cancel_(cancel), arg_(arg) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.cancellers.emplace_back(cancel, arg);
}

InterruptCanceller::~InterruptCanceller() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = std::find(s.cancellers.begin(), s.cancellers.end(),
                      std::make_pair(cancel_, arg_));
  if (it != s.cancellers.end()) s.cancellers.erase(it);
}

}  // namespace migledger
