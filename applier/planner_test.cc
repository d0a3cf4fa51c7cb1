#include "applier/planner.h"

#include <gtest/gtest.h>

namespace migledger {
namespace {

Migration Mig(const std::string& version, const std::string& checksum, bool down = true) {
  Migration m;
  m.version = version;
  m.slug = "m" + version;
  m.up.file = version + "_m.up.sql";
  m.up.path = "migrations/" + m.up.file;
  m.up.checksum = checksum;
  m.has_down = down;
  return m;
}

v1::Event Started(const std::string& version, const std::string& attempt,
                  const std::string& checksum, v1::Direction dir = v1::DIRECTION_UP,
                  v1::TxMode mode = v1::TX_MODE_TRANSACTION) {
  v1::Event e;
  auto* s = e.mutable_step_started();
  s->set_version(version);
  s->set_attempt_id(attempt);
  s->set_checksum(checksum);
  s->set_direction(dir);
  s->set_tx_mode(mode);
  s->set_statement_count(3);
  return e;
}

v1::Event Applied(const std::string& version, const std::string& attempt) {
  v1::Event e;
  e.mutable_step_applied()->set_version(version);
  e.mutable_step_applied()->set_attempt_id(attempt);
  return e;
}

TEST(ProjectionTest, AppliedAndRevertedStepsTrackTheChecksumThatRan) {
  ProjectionBuilder b;
  b.Add(Started("1", "a1", "c1"));
  b.Add(Applied("1", "a1"));
  b.Add(Started("2", "a2", "c2"));
  b.Add(Applied("2", "a2"));
  v1::Event rev;
  rev.mutable_step_reverted()->set_version("2");
  rev.mutable_step_reverted()->set_attempt_id("a3");
  b.Add(Started("2", "a3", "c2", v1::DIRECTION_DOWN));
  b.Add(rev);
  const Projection& p = b.projection();
  EXPECT_TRUE(p.versions.at("1").applied);
  EXPECT_EQ(p.versions.at("1").checksum, "c1");
  EXPECT_FALSE(p.versions.at("2").applied);
  EXPECT_TRUE(p.open_attempts.empty());
}

TEST(ProjectionTest, StartedStepWithoutTerminalEventIsOpenUntilRecovered) {
  ProjectionBuilder b;
  b.Add(Started("1", "a1", "c1"));
  ASSERT_EQ(b.projection().open_attempts.size(), 1u);
  EXPECT_EQ(b.projection().open_attempts[0].attempt_id, "a1");
  v1::Event rec;
  rec.mutable_step_recovered()->set_version("1");
  rec.mutable_step_recovered()->set_attempt_id("a1");
  rec.mutable_step_recovered()->set_outcome(v1::RECOVERED_COMMITTED);
  b.Add(rec);
  EXPECT_TRUE(b.projection().open_attempts.empty());
  EXPECT_TRUE(b.projection().versions.at("1").applied);
  EXPECT_EQ(b.projection().versions.at("1").checksum, "c1");
}

TEST(ProjectionTest, NoTransactionProgressSurvivesAResumeAndResetsOnSuccess) {
  ProjectionBuilder b;
  b.Add(Started("5", "a1", "c", v1::DIRECTION_UP, v1::TX_MODE_NO_TRANSACTION));
  for (int i = 0; i < 2; ++i) {
    v1::Event s;
    s.mutable_statement_applied()->set_version("5");
    s.mutable_statement_applied()->set_statement_index(i);
    s.mutable_statement_applied()->set_statement_sha256("h" + std::to_string(i));
    b.Add(s);
  }
  v1::Event rec;
  rec.mutable_step_recovered()->set_version("5");
  rec.mutable_step_recovered()->set_attempt_id("a1");
  rec.mutable_step_recovered()->set_outcome(v1::RECOVERED_RESUMED);
  b.Add(rec);
  ASSERT_EQ(b.projection().no_tx_progress.at("5").statement_hashes.size(), 2u);
  v1::Event resumed = Started("5", "a2", "c", v1::DIRECTION_UP, v1::TX_MODE_NO_TRANSACTION);
  resumed.mutable_step_started()->set_resume_at_statement(2);
  b.Add(resumed);
  EXPECT_EQ(b.projection().no_tx_progress.at("5").statement_hashes.size(), 2u);
  b.Add(Applied("5", "a2"));
  EXPECT_EQ(b.projection().no_tx_progress.count("5"), 0u);
}

TEST(CheckTargetTest, AgreementIsNotDrift) {
  std::vector<Migration> files = {Mig("1", "c1"), Mig("2", "c2")};
  ProjectionBuilder b;
  b.Add(Started("1", "a1", "c1"));
  b.Add(Applied("1", "a1"));
  std::vector<DriftItem> drift;
  std::vector<OutOfBandStep> oob;
  CheckTarget(files, b.projection(), {{"1", "c1", "a1", "t"}}, &drift, &oob);
  EXPECT_TRUE(drift.empty());
  EXPECT_TRUE(oob.empty());
}

TEST(CheckTargetTest, EachKindOfDisagreementIsReported) {
  std::vector<Migration> files = {Mig("1", "c1-edited"), Mig("2", "c2"), Mig("3", "c3")};
  ProjectionBuilder b;
  b.Add(Started("1", "a1", "c1"));
  b.Add(Applied("1", "a1"));
  b.Add(Started("2", "a2", "c2"));
  b.Add(Applied("2", "a2"));
  std::vector<MarkerRow> markers = {{"1", "c1", "a1", "t"},       // file edited
                                    {"3", "c3", "someone", "t"},  // unknown marker
                                    {"9", "c9", "x", "t"}};       // unknown + no file
  std::vector<DriftItem> drift;
  std::vector<OutOfBandStep> oob;
  CheckTarget(files, b.projection(), markers, &drift, &oob);
  std::set<std::string> kinds;
  for (const auto& d : drift) kinds.insert(d.version + ":" + d.kind);
  EXPECT_TRUE(kinds.count("1:checksum_changed"));
  EXPECT_TRUE(kinds.count("3:unknown_marker"));
  EXPECT_TRUE(kinds.count("9:unknown_marker"));
  EXPECT_TRUE(kinds.count("2:missing_marker"));  // database restored?
}

TEST(CheckTargetTest, AcceptedChecksumClearsTheDrift) {
  std::vector<Migration> files = {Mig("1", "c1-edited")};
  ProjectionBuilder b;
  b.Add(Started("1", "a1", "c1"));
  b.Add(Applied("1", "a1"));
  v1::Event acc;
  acc.mutable_checksum_accepted()->set_version("1");
  acc.mutable_checksum_accepted()->set_new_checksum("c1-edited");
  b.Add(acc);
  std::vector<DriftItem> drift;
  std::vector<OutOfBandStep> oob;
  CheckTarget(files, b.projection(), {{"1", "c1", "a1", "t"}}, &drift, &oob);
  EXPECT_TRUE(drift.empty()) << drift[0].details;
}

TEST(CheckTargetTest, OfflineMarkerWithMatchingChecksumIsOutOfBandNotDrift) {
  std::vector<Migration> files = {Mig("1", "c1")};
  ProjectionBuilder b;
  std::vector<DriftItem> drift;
  std::vector<OutOfBandStep> oob;
  CheckTarget(files, b.projection(), {{"1", "c1", "offline:run", "t"}}, &drift, &oob);
  EXPECT_TRUE(drift.empty());
  ASSERT_EQ(oob.size(), 1u);
  EXPECT_EQ(oob[0].version, "1");
  drift.clear();
  oob.clear();
  CheckTarget(files, b.projection(), {{"1", "other", "offline:run", "t"}}, &drift, &oob);
  EXPECT_EQ(drift.size(), 1u);
}

TEST(PlanTest, UpPlansUnmarkedVersionsInOrderUpToTarget) {
  std::vector<Migration> files = {Mig("1", "a"), Mig("2", "b"), Mig("3", "c"), Mig("4", "d")};
  auto plan = PlanUp(files, {{"2", "b", "x", "t"}}, "3");
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->size(), 2u);
  EXPECT_EQ((*plan)[0].migration->version, "1");
  EXPECT_EQ((*plan)[1].migration->version, "3");
  EXPECT_FALSE(PlanUp(files, {}, "7").ok());
}

TEST(PlanTest, DownPlansNewestFirstByStepsOrTarget) {
  std::vector<Migration> files = {Mig("1", "a"), Mig("2", "b"), Mig("3", "c")};
  std::vector<MarkerRow> all = {{"1", "a", "", ""}, {"2", "b", "", ""}, {"3", "c", "", ""}};
  auto two = PlanDown(files, all, "", 2);
  ASSERT_TRUE(two.ok());
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[0].migration->version, "3");
  EXPECT_EQ((*two)[1].migration->version, "2");
  auto to1 = PlanDown(files, all, "1", 0);
  ASSERT_TRUE(to1.ok());
  EXPECT_EQ(to1->size(), 2u);
  auto to0 = PlanDown(files, all, "0", 0);
  ASSERT_TRUE(to0.ok());
  EXPECT_EQ(to0->size(), 3u);
}

TEST(PlanTest, DownRefusesAStepWithoutDownFile) {
  std::vector<Migration> files = {Mig("1", "a"), Mig("2", "b", /*down=*/false)};
  auto plan = PlanDown(files, {{"1", "a", "", ""}, {"2", "b", "", ""}}, "", 1);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("no down migration"), std::string::npos);
}

}  // namespace
}  // namespace migledger
