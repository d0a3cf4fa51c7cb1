#include "applier/ledger_writer.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <vector>

namespace migledger {
namespace {

class LedgerWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/migledger-writer-test-XXXXXX";
    ASSERT_NE(nullptr, mkdtemp(tmpl.data()));
    dir_ = tmpl;
    LedgerOptions o;
    o.create_if_missing = true;
    auto ledger = Ledger::Open(dir_ + "/ledger", o);
    ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
    ledger_ = std::move(ledger).value();
  }
  void TearDown() override {
    ledger_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  static v1::Event StepEvent(int i) {
    v1::Event e;
    e.mutable_time()->set_seconds(1700000000 + i);
    e.set_run_id("run-1");
    e.mutable_target()->set_kind("sqlite");
    e.mutable_target()->set_database_id("db-a");
    e.mutable_step_started()->set_version(std::to_string(i));
    return e;
  }

  // Prepares `n` events of db-a, each after the previous one (none appended).
  std::vector<PreparedEvent> PrepareChain(int n) {
    std::vector<PreparedEvent> out;
    ChainHead head = ledger_->TargetHead("sqlite:db-a");
    for (int i = 1; i <= n; ++i) {
      v1::Event e = StepEvent(i);
      auto p = ledger_->PrepareAfter(&e, head);
      EXPECT_TRUE(p.ok()) << p.status().ToString();
      if (!p.ok()) break;
      head = {p->target_sequence, p->target_chain_head};
      out.push_back(*p);
    }
    return out;
  }

  std::string dir_;
  std::unique_ptr<Ledger> ledger_;
};

TEST_F(LedgerWriterTest, AppendsQueuedEventsInOrder) {
  std::vector<PreparedEvent> chain = PrepareChain(50);
  ASSERT_EQ(chain.size(), 50u);
  {
    LedgerWriter writer(ledger_.get());
    for (int i = 0; i < 25; ++i) writer.Enqueue(chain[i]);
    ASSERT_TRUE(writer.Drain().ok());
    EXPECT_EQ(ledger_->Head().size, 25u);
    for (int i = 25; i < 50; ++i) writer.Enqueue(chain[i]);
    // The rest is appended when the writer goes away.
  }
  EXPECT_EQ(ledger_->Head().size, 50u);
  EXPECT_EQ(ledger_->TargetHead("sqlite:db-a").chain,
            chain.back().target_chain_head);
  for (uint64_t seq = 1; seq <= 50; ++seq) {
    auto e = ledger_->Get(seq);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    EXPECT_EQ(e->bytes, chain[seq - 1].bytes) << "sequence " << seq;
  }
  auto report = ledger_->Verify();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->ok()) << report->problem;
}

TEST_F(LedgerWriterTest, FirstFailedAppendSticksAndStopsLaterAppends) {
  std::vector<PreparedEvent> chain = PrepareChain(3);
  ASSERT_EQ(chain.size(), 3u);
  LedgerWriter writer(ledger_.get());
  writer.Enqueue(chain[0]);
  ASSERT_TRUE(writer.Drain().ok());
  writer.Enqueue(chain[0]);  // target sequence 1 again: does not chain
  Status first = writer.Drain();
  EXPECT_FALSE(first.ok());
  writer.Enqueue(chain[1]);  // would chain, but follows the failure
  Status again = writer.Drain();
  EXPECT_FALSE(again.ok());
  EXPECT_EQ(again.message(), first.message());
  EXPECT_EQ(ledger_->Head().size, 1u);
  EXPECT_EQ(ledger_->TargetHead("sqlite:db-a").size, 1u);
}

}  // namespace
}  // namespace migledger
