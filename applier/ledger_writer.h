// LedgerWriter: appends prepared events to a ledger on a helper thread, in
// the order they were queued, so the main thread can run the step's SQL on
// the target meanwhile.
//
// Used for the unsynced appends of a transactional step (its StepStarted
// and its outcome), whose durability comes from elsewhere: the synced
// RunStarted that lists the step, and the marker row and mirror rows
// committed in the step's own transaction. Whatever is still queued when
// the process dies is what a crash an instant earlier would have lost, a
// state the recovery already handles. Every other append waits for the
// queue to drain first (Drain), so the ledger's order is the order the
// events were prepared in.
#pragma once

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "common/status.h"
#include "ledger/ledger.h"

namespace migledger {

class LedgerWriter {
 public:
  explicit LedgerWriter(Ledger* ledger);
  // Drains the queue (errors are dropped: Drain() reports them) and stops
  // the thread.
  ~LedgerWriter();
  LedgerWriter(const LedgerWriter&) = delete;
  LedgerWriter& operator=(const LedgerWriter&) = delete;

  // Queues `event` for an unsynced append after every event queued before.
  // After a failed append nothing more is appended: the first error sticks
  // and Drain() returns it.
  void Enqueue(PreparedEvent event);
  // Waits until everything queued is appended; the first append error.
  Status Drain();

 private:
  void Run();

  Ledger* const ledger_;
  std::mutex mu_;
  std::condition_variable queued_;   // the thread waits for work or stop_
  std::condition_variable drained_;  // Drain() waits for an idle thread
  std::vector<PreparedEvent> queue_;
  bool busy_ = false;  // the thread is appending a batch taken off queue_
  bool stop_ = false;
  Status error_;
  std::thread thread_;  // last: starts after the fields it uses exist
};

}  // namespace migledger
