#include "applier/ledger_writer.h"

#include <utility>

namespace migledger {

LedgerWriter::LedgerWriter(Ledger* ledger)
    : ledger_(ledger), thread_([this] { Run(); }) {}

LedgerWriter::~LedgerWriter() {
  (void)Drain();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  queued_.notify_one();
  thread_.join();
}

void LedgerWriter::Enqueue(PreparedEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(event));
  }
  queued_.notify_one();
}

Status LedgerWriter::Drain() {
  std::unique_lock<std::mutex> lock(mu_);
  drained_.wait(lock, [&] { return queue_.empty() && !busy_; });
  return error_;
}

void LedgerWriter::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  std::vector<PreparedEvent> batch;
  while (true) {
    queued_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_, nothing left
    batch.clear();
    batch.swap(queue_);
    busy_ = true;
    const bool failed = !error_.ok();
    lock.unlock();
    // Everything queued meanwhile goes in one write: a step's outcome and
    // the next step's StepStarted usually do.
    Status st =
        failed ? Status::Ok() : ledger_->AppendAll(batch, false).status();
    lock.lock();
    busy_ = false;
    if (!st.ok() && error_.ok()) error_ = std::move(st);
    drained_.notify_all();
  }
}

}  // namespace migledger
