#include "applier/planner.h"

#include <gtest/gtest.h>

namespace migledger {
namespace {

Migration Mig(const std::string& version, const std::string& checksum,
              bool down = true) {
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
                  const std::string& checksum,
                  v1::Direction dir = v1::DIRECTION_UP,
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
    s.mutable_statement_applied()->set_statement_sha256("h" +
                                                        std::to_string(i));
    b.Add(s);
  }
  v1::Event rec;
  rec.mutable_step_recovered()->set_version("5");
  rec.mutable_step_recovered()->set_attempt_id("a1");
  rec.mutable_step_recovered()->set_outcome(v1::RECOVERED_RESUMED);
  b.Add(rec);
  ASSERT_EQ(b.projection().no_tx_progress.at("5").statement_hashes.size(), 2u);
  v1::Event resumed =
      Started("5", "a2", "c", v1::DIRECTION_UP, v1::TX_MODE_NO_TRANSACTION);
  resumed.mutable_step_started()->set_resume_at_statement(2);
  b.Add(resumed);
  EXPECT_EQ(b.projection().no_tx_progress.at("5").statement_hashes.size(), 2u);
  b.Add(Applied("5", "a2"));
  EXPECT_EQ(b.projection().no_tx_progress.count("5"), 0u);
}

// Everything the projection tracks, in one history: applied, failed,
// reverted, accepted checksums, an open attempt, no-transaction progress.
std::vector<v1::Event> MixedHistory() {
  std::vector<v1::Event> h;
  auto at = [&](v1::Event e, int64_t seconds) {
    e.mutable_time()->set_seconds(seconds);
    h.push_back(std::move(e));
  };
  at(Started("1", "a1", "c1"), 100);
  at(Applied("1", "a1"), 101);
  at(Started("2", "a2", "c2"), 102);
  v1::Event failed;
  failed.mutable_step_failed()->set_version("2");
  failed.mutable_step_failed()->set_attempt_id("a2");
  failed.mutable_step_failed()->set_message("syntax error");
  failed.mutable_step_failed()->set_rolled_back(true);
  at(failed, 103);
  at(Started("10", "a3", "c10", v1::DIRECTION_UP, v1::TX_MODE_NO_TRANSACTION),
     104);
  v1::Event stmt;
  stmt.mutable_statement_applied()->set_version("10");
  stmt.mutable_statement_applied()->set_statement_index(0);
  stmt.mutable_statement_applied()->set_statement_sha256("h0");
  at(stmt, 105);
  v1::Event accepted;
  accepted.mutable_checksum_accepted()->set_version("1");
  accepted.mutable_checksum_accepted()->set_new_checksum("c1b");
  at(accepted, 106);
  at(Started("2", "a4", "c2"), 107);  // left open (a kill)
  at(Applied("10", "a3"), 108);
  at(Started("1", "a5", "c1b", v1::DIRECTION_DOWN), 109);
  v1::Event rev;
  rev.mutable_step_reverted()->set_version("1");
  rev.mutable_step_reverted()->set_attempt_id("a5");
  at(rev, 110);
  at(Started("3", "a6", "c3", v1::DIRECTION_UP, v1::TX_MODE_NO_TRANSACTION),
     111);
  stmt.mutable_statement_applied()->set_version("3");
  at(stmt, 112);
  return h;
}

void ExpectSameProjection(const Projection& a, const Projection& b) {
  EXPECT_EQ(a.events, b.events);
  EXPECT_EQ(a.last_event_micros, b.last_event_micros);
  ASSERT_EQ(a.versions.size(), b.versions.size());
  for (const auto& [k, v] : a.versions) {
    ASSERT_TRUE(b.versions.count(k)) << k;
    const auto& w = b.versions.at(k);
    EXPECT_EQ(v.version, w.version) << k;
    EXPECT_EQ(v.applied, w.applied) << k;
    EXPECT_EQ(v.checksum, w.checksum) << k;
    EXPECT_EQ(v.applied_at, w.applied_at) << k;
    EXPECT_EQ(v.last_error, w.last_error) << k;
    EXPECT_EQ(v.accepted_checksums, w.accepted_checksums) << k;
  }
  ASSERT_EQ(a.open_attempts.size(), b.open_attempts.size());
  for (size_t i = 0; i < a.open_attempts.size(); ++i) {
    EXPECT_EQ(a.open_attempts[i].attempt_id, b.open_attempts[i].attempt_id);
    EXPECT_EQ(a.open_attempts[i].version, b.open_attempts[i].version);
    EXPECT_EQ(a.open_attempts[i].direction, b.open_attempts[i].direction);
    EXPECT_EQ(a.open_attempts[i].tx_mode, b.open_attempts[i].tx_mode);
    EXPECT_EQ(a.open_attempts[i].checksum, b.open_attempts[i].checksum);
    EXPECT_EQ(a.open_attempts[i].statement_count,
              b.open_attempts[i].statement_count);
  }
  ASSERT_EQ(a.no_tx_progress.size(), b.no_tx_progress.size());
  for (const auto& [k, v] : a.no_tx_progress) {
    ASSERT_TRUE(b.no_tx_progress.count(k)) << k;
    EXPECT_EQ(v.direction, b.no_tx_progress.at(k).direction) << k;
    EXPECT_EQ(v.statement_hashes, b.no_tx_progress.at(k).statement_hashes) << k;
  }
}

TEST(ProjectionTest, SnapshotThenRestoreContinuesLikeOneReplay) {
  const std::vector<v1::Event> history = MixedHistory();
  ProjectionBuilder whole;
  for (const auto& e : history) whole.Add(e);
  ASSERT_EQ(whole.projection().open_attempts.size(), 2u);  // a4 and a6
  ASSERT_EQ(whole.projection().no_tx_progress.size(), 2u);
  // Cut the history at every point: snapshot, restore, add the rest.
  for (size_t cut = 0; cut <= history.size(); ++cut) {
    SCOPED_TRACE("cut after " + std::to_string(cut) + " events");
    ProjectionBuilder first;
    for (size_t i = 0; i < cut; ++i) first.Add(history[i]);
    const SnapshotPoint at{"sqlite:db", cut, std::string(32, '\x7f')};
    SnapshotPoint read;
    auto restored =
        ProjectionBuilder::Restore(SnapshotOf(first.projection(), at), &read);
    ASSERT_TRUE(restored.has_value());
    EXPECT_EQ(read.target_key, at.target_key);
    EXPECT_EQ(read.target_size, at.target_size);
    EXPECT_EQ(read.target_chain, at.target_chain);
    ExpectSameProjection(first.projection(), restored->projection());
    for (size_t i = cut; i < history.size(); ++i) restored->Add(history[i]);
    ExpectSameProjection(whole.projection(), restored->projection());
  }
}

TEST(ProjectionTest, RestoreRejectsBytesThatAreNoSnapshotOfThisRevision) {
  SnapshotPoint at;
  EXPECT_FALSE(ProjectionBuilder::Restore("not a snapshot \xff\xff", &at));
  EXPECT_FALSE(ProjectionBuilder::Restore("", &at));  // logic revision 0
  // A snapshot of another revision of the projection code: field 1 = 999.
  std::string other = SnapshotOf(Projection{}, {"sqlite:db", 0, ""});
  ASSERT_GE(other.size(), 2u);
  ASSERT_EQ(other[0], '\x08');  // field 1, varint: the revision
  other = std::string("\x08\xe7\x07") + other.substr(2);
  EXPECT_FALSE(ProjectionBuilder::Restore(other, &at));
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
  std::vector<Migration> files = {Mig("1", "c1-edited"), Mig("2", "c2"),
                                  Mig("3", "c3")};
  ProjectionBuilder b;
  b.Add(Started("1", "a1", "c1"));
  b.Add(Applied("1", "a1"));
  b.Add(Started("2", "a2", "c2"));
  b.Add(Applied("2", "a2"));
  std::vector<MarkerRow> markers = {
      {"1", "c1", "a1", "t"},       // file edited
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

TEST(CheckTargetTest, ResolvedRestoreMakesTheMarkerRowsTheState) {
  std::vector<Migration> files = {Mig("1", "c1"), Mig("2", "c2"),
                                  Mig("3", "c3")};
  ProjectionBuilder b;
  for (const char* v : {"1", "2"}) {
    b.Add(Started(v, std::string("a") + v, std::string("c") + v));
    b.Add(Applied(v, std::string("a") + v));
  }
  // Restored: 2 is gone, 3 is there (a marker the ledger never wrote).
  const std::vector<MarkerRow> markers = {{"1", "c1", "a1", "t"},
                                          {"3", "c3", "a9", "t"}};
  std::vector<DriftItem> drift;
  std::vector<OutOfBandStep> oob;
  CheckTarget(files, b.projection(), markers, &drift, &oob);
  ASSERT_EQ(drift.size(), 2u);
  const std::string msg = DriftMessage(drift);
  EXPECT_NE(msg.find("no marker row for 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("marker rows for 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("resolve --restored"), std::string::npos) << msg;
  EXPECT_NE(msg.find("runs 2 again"), std::string::npos) << msg;

  v1::Event e;
  auto* r = e.mutable_resolved();
  r->set_subject("restored");
  auto* gone = r->add_versions();
  gone->set_version("0002");
  gone->set_applied(false);
  auto* there = r->add_versions();
  there->set_version("3");
  there->set_applied(true);
  there->set_checksum("c3");
  b.Add(e);
  drift.clear();
  CheckTarget(files, b.projection(), markers, &drift, &oob);
  EXPECT_TRUE(drift.empty()) << drift[0].details;
  EXPECT_FALSE(b.projection().versions.at("2").applied);
  EXPECT_EQ(b.projection().versions.at("3").checksum, "c3");
  auto plan = PlanUp(files, markers, "");
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->size(), 1u);
  EXPECT_EQ((*plan)[0].migration->version, "2");
}

TEST(CheckTargetTest, DriftMessageOfOtherKindsCountsTheRest) {
  std::vector<DriftItem> drift = {{"1", "checksum_changed", "file changed"},
                                  {"2", "missing_file", "gone"}};
  EXPECT_EQ(DriftMessage(drift),
            "drift: file changed (and 1 more; run `migledger validate`)");
  EXPECT_EQ(ResolveHint(drift), "");
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
  CheckTarget(files, b.projection(), {{"1", "c1", "offline:run", "t"}}, &drift,
              &oob);
  EXPECT_TRUE(drift.empty());
  ASSERT_EQ(oob.size(), 1u);
  EXPECT_EQ(oob[0].version, "1");
  drift.clear();
  oob.clear();
  CheckTarget(files, b.projection(), {{"1", "other", "offline:run", "t"}},
              &drift, &oob);
  EXPECT_EQ(drift.size(), 1u);
}

TEST(PlanTest, UpPlansUnmarkedVersionsInOrderUpToTarget) {
  std::vector<Migration> files = {Mig("1", "a"), Mig("2", "b"), Mig("3", "c"),
                                  Mig("4", "d")};
  auto plan = PlanUp(files, {{"2", "b", "x", "t"}}, "3");
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->size(), 2u);
  EXPECT_EQ((*plan)[0].migration->version, "1");
  EXPECT_EQ((*plan)[1].migration->version, "3");
  EXPECT_FALSE(PlanUp(files, {}, "7").ok());
}

// A pending version below the newest applied one (numerically: 10 > 9)
// would run out of order: refused, naming it and the newest applied.
TEST(PlanTest, StepOlderThanTheNewestAppliedIsOutOfOrder) {
  std::vector<Migration> files = {Mig("1", "a"), Mig("2", "b"), Mig("9", "c"),
                                  Mig("10", "d"), Mig("11", "e")};
  std::vector<MarkerRow> markers = {{"1", "a", "x", "t"},
                                    {"10", "d", "x", "t"}};
  auto plan = PlanUp(files, markers, "");
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->size(), 3u);  // 2, 9, 11
  Status st = CheckPlanInOrder(*plan, markers);
  EXPECT_EQ(st.code(), Code::kInvalidInput);
  EXPECT_NE(st.message().find("migration 2 (2_m.up.sql) is older than 10"),
            std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("--allow-out-of-order"), std::string::npos);
  // Only newer ones pending, nothing applied, or reverting: in order.
  auto newer = PlanUp(
      files, {{"1", "a", "x", "t"}, {"2", "b", "x", "t"}, {"9", "c", "x", "t"}},
      "");
  ASSERT_TRUE(newer.ok());
  EXPECT_TRUE(CheckPlanInOrder(*newer, {{"1", "a", "x", "t"},
                                        {"2", "b", "x", "t"},
                                        {"9", "c", "x", "t"}})
                  .ok());
  EXPECT_TRUE(CheckPlanInOrder(*plan, {}).ok());
  auto down = PlanDown(files, markers, "", 2);
  ASSERT_TRUE(down.ok());
  EXPECT_TRUE(CheckPlanInOrder(*down, markers).ok());
}

TEST(PlanTest, UnknownTargetVersionSaysWhetherItIsAVersionAtAll) {
  std::vector<Migration> files = {Mig("1", "a"), Mig("2", "b")};
  auto missing = PlanUp(files, {}, "7");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(),
            "--to 7: no migration has that version");
  auto word = PlanDown(files, {}, "abc", 0);
  ASSERT_FALSE(word.ok());
  EXPECT_EQ(word.status().code(), Code::kInvalidInput);
  EXPECT_EQ(word.status().message(),
            "--to abc: not a version (versions are digits, as in the "
            "migration file names)");
}

TEST(PlanTest, DownPlansNewestFirstByStepsOrTarget) {
  std::vector<Migration> files = {Mig("1", "a"), Mig("2", "b"), Mig("3", "c")};
  std::vector<MarkerRow> all = {
      {"1", "a", "", ""}, {"2", "b", "", ""}, {"3", "c", "", ""}};
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
  EXPECT_NE(plan.status().message().find("no down migration"),
            std::string::npos);
}

TEST(ByVersionTest, FindsAVersionInAnyFormInInputOfAnyOrder) {
  // String order (as a std::map of canonical versions or ORDER BY version
  // gives them), version order and no order at all.
  for (std::vector<std::string> versions :
       {std::vector<std::string>{"1", "10", "100", "2", "20", "9"},
        std::vector<std::string>{"1", "2", "9", "10", "20", "100"},
        std::vector<std::string>{"20", "0009", "100", "1", "10", "002"}}) {
    ByVersion<std::string> index(versions.size());
    for (const auto& v : versions) index.Add(v, "v" + v);
    index.Sort();
    for (const auto& [query, want] :
         std::vector<std::pair<std::string, std::string>>{{"1", "1"},
                                                          {"01", "1"},
                                                          {"2", "2"},
                                                          {"9", "9"},
                                                          {"0010", "10"},
                                                          {"20", "20"},
                                                          {"100", "100"}}) {
      const std::string* found = index.Find(query);
      ASSERT_NE(found, nullptr) << query;
      // The value added for that version, whatever its spelling there.
      EXPECT_EQ(CanonicalVersion(found->substr(1)), want) << query;
    }
    for (const char* absent : {"0", "3", "11", "99", "101", "1000"})
      EXPECT_EQ(index.Find(absent), nullptr) << absent;
  }
}

TEST(ByVersionTest, LookupsInAnyOrderAndTheLastAddedOfOneVersionWins) {
  std::vector<std::string> versions;  // the index points into them
  for (int i = 1; i <= 50; ++i) versions.push_back(std::to_string(i));
  versions.push_back("007");  // the same version as "7", added later
  ByVersion<int> index;
  for (const auto& v : versions) index.Add(v, v == "007" ? 700 : std::stoi(v));
  index.Sort();
  for (int i : {50, 1, 2, 3, 7, 8, 49, 7, 25, 26, 24, 1}) {
    const int* found = index.Find(std::to_string(i));
    ASSERT_NE(found, nullptr) << i;
    EXPECT_EQ(*found, i == 7 ? 700 : i);
  }
  EXPECT_EQ(index.Find("51"), nullptr);
  EXPECT_EQ(ByVersion<int>().Find("1"), nullptr);
}

TEST(CheckTargetTest, MarkersAndFilesOfUnpaddedVersionsMatchInAnyOrder) {
  // Unpadded versions: the target lists its marker rows in string order
  // ("10" before "9"), the files come in version order.
  std::vector<Migration> files;
  std::vector<MarkerRow> markers;
  ProjectionBuilder b;
  for (int i = 1; i <= 12; ++i) {
    const std::string v = std::to_string(i);
    files.push_back(Mig(v, "c" + v));
    b.Add(Started(v, "a" + v, "c" + v));
    b.Add(Applied(v, "a" + v));
  }
  for (const char* v :
       {"1", "10", "11", "12", "2", "3", "4", "5", "6", "7", "8", "9"}) {
    markers.push_back({v, std::string("c") + v, std::string("a") + v, "t"});
  }
  std::vector<DriftItem> drift;
  std::vector<OutOfBandStep> oob;
  CheckTarget(files, b.projection(), markers, &drift, &oob);
  EXPECT_TRUE(drift.empty()) << drift.front().details;
  EXPECT_TRUE(oob.empty());
  // One changed file and one marker gone are still found.
  files[8].up.checksum = "changed";    // version 9
  markers.erase(markers.begin() + 1);  // version 10
  CheckTarget(files, b.projection(), markers, &drift, &oob);
  ASSERT_EQ(drift.size(), 2u);
  EXPECT_EQ(drift[0].version, "9");
  EXPECT_EQ(drift[0].kind, "checksum_changed");
  EXPECT_EQ(drift[1].version, "10");
  EXPECT_EQ(drift[1].kind, "missing_marker");
}

}  // namespace
}  // namespace migledger
