// OutlierDetector with a FakeClock: ejection on consecutive failures, doubling capped back-off,
// half-open trials and recovery, stale and abandoned outcomes, probes, drain.
#include <gtest/gtest.h>

#include <chrono>

#include "policies/clock.h"
#include "policies/outlier_detector.h"

namespace qgate {
namespace {

using std::chrono::seconds;

OutlierOptions options() {
  OutlierOptions o;
  o.consecutive_failures = 3;
  o.base_ejection = seconds(10);
  o.max_ejection = seconds(60);
  o.half_open_successes = 2;
  o.half_open_max_trials = 1;
  return o;
}

void fail(OutlierDetector& d, const char* v, int n, Outcome how = Outcome::kFailure) {
  for (int i = 0; i < n; ++i) {
    Admission a = d.admit(v);
    ASSERT_TRUE(a.admitted()) << "attempt " << i;
    a.report(how);
  }
}

// Drives a half-open variant back to healthy with successful trials.
void recover(OutlierDetector& d, const char* v) {
  for (int i = 0; i < options().half_open_successes; ++i) {
    Admission a = d.admit(v);
    ASSERT_TRUE(a.admitted());
    ASSERT_TRUE(a.trial());
    a.report(Outcome::kSuccess);
  }
  ASSERT_EQ(d.health(v).state, HealthState::kHealthy);
}

TEST(OutlierDetectorTest, ConsecutiveFailuresEject) {
  FakeClock clock;
  OutlierDetector d(options(), clock);
  fail(d, "gptq", 2);
  d.admit("gptq").report(Outcome::kSuccess);  // breaks the run
  fail(d, "gptq", 2, Outcome::kTimeout);      // timeouts count like failures
  EXPECT_EQ(d.health("gptq").state, HealthState::kHealthy);
  EXPECT_EQ(d.health("gptq").consecutive_failures, 2);
  d.admit("gptq").report(Outcome::kOverloaded);  // back-pressure: neither breaks nor extends
  EXPECT_EQ(d.health("gptq").consecutive_failures, 2);
  fail(d, "gptq", 1);
  const VariantHealth h = d.health("gptq");
  EXPECT_EQ(h.state, HealthState::kEjected);
  EXPECT_EQ(h.ejection_remaining, seconds(10));
  EXPECT_EQ(h.ejections_total, 1u);
  EXPECT_FALSE(d.routable("gptq"));
  EXPECT_FALSE(d.admit("gptq").admitted());
  EXPECT_TRUE(d.routable("fp16"));  // other variants are independent
}

TEST(OutlierDetectorTest, HalfOpenAdmitsLimitedTrialsThenRecovers) {
  FakeClock clock;
  OutlierDetector d(options(), clock);
  fail(d, "gptq", 3);
  clock.advance(seconds(9));
  EXPECT_EQ(d.health("gptq").state, HealthState::kEjected);
  EXPECT_EQ(d.health("gptq").ejection_remaining, seconds(1));
  clock.advance(seconds(1));
  EXPECT_EQ(d.health("gptq").state, HealthState::kHalfOpen);
  EXPECT_TRUE(d.routable("gptq"));

  Admission trial = d.admit("gptq");
  ASSERT_TRUE(trial.admitted());
  EXPECT_TRUE(trial.trial());
  EXPECT_FALSE(d.routable("gptq"));  // the single trial slot is taken
  EXPECT_FALSE(d.admit("gptq").admitted());
  trial.report(Outcome::kSuccess);
  EXPECT_EQ(d.health("gptq").state, HealthState::kHalfOpen);  // needs 2 successes
  Admission second = d.admit("gptq");
  ASSERT_TRUE(second.trial());
  second.report(Outcome::kSuccess);
  EXPECT_EQ(d.health("gptq").state, HealthState::kHealthy);
  Admission normal = d.admit("gptq");
  EXPECT_TRUE(normal.admitted());
  EXPECT_FALSE(normal.trial());
}

TEST(OutlierDetectorTest, BackOffDoublesPerFailedRecoveryUpToTheCap) {
  FakeClock clock;
  OutlierDetector d(options(), clock);
  fail(d, "awq", 3);
  const seconds expected[] = {seconds(10), seconds(20), seconds(40), seconds(60), seconds(60)};
  for (const seconds backoff : expected) {
    const VariantHealth h = d.health("awq");
    ASSERT_EQ(h.state, HealthState::kEjected);
    EXPECT_EQ(h.ejection_remaining, backoff) << "ejection " << h.ejection_streak;
    clock.advance(backoff);
    Admission trial = d.admit("awq");
    ASSERT_TRUE(trial.trial());
    trial.report(Outcome::kFailure);  // one half-open failure re-ejects at once
  }
  EXPECT_EQ(d.health("awq").ejections_total, 6u);
}

TEST(OutlierDetectorTest, StreakContinuesAfterAShortRecoveryAndResetsAfterALongOne) {
  FakeClock clock;
  OutlierDetector d(options(), clock);
  fail(d, "awq", 3);
  clock.advance(seconds(10));
  recover(d, "awq");
  clock.advance(seconds(59));  // healthy for less than max_ejection: still flapping
  fail(d, "awq", 3);
  EXPECT_EQ(d.health("awq").ejection_remaining, seconds(20));
  clock.advance(seconds(20));
  recover(d, "awq");
  clock.advance(seconds(60));  // healthy for a full max_ejection: the streak is forgiven
  fail(d, "awq", 3);
  EXPECT_EQ(d.health("awq").ejection_remaining, seconds(10));
}

TEST(OutlierDetectorTest, OutcomesFromAnEarlierEpisodeAreIgnored) {
  FakeClock clock;
  OutlierDetector d(options(), clock);
  Admission slow = d.admit("gptq");  // admitted while healthy, answers much later
  fail(d, "gptq", 3);
  clock.advance(seconds(10));
  Admission trial = d.admit("gptq");
  ASSERT_TRUE(trial.trial());
  slow.report(Outcome::kFailure);  // from before the ejection: says nothing about now
  EXPECT_EQ(d.health("gptq").state, HealthState::kHalfOpen);
  trial.report(Outcome::kSuccess);
  EXPECT_EQ(d.health("gptq").state, HealthState::kHalfOpen);
}

TEST(OutlierDetectorTest, AnAbandonedTrialGivesItsSlotBack) {
  FakeClock clock;
  OutlierDetector d(options(), clock);
  fail(d, "gptq", 3);
  clock.advance(seconds(10));
  {
    Admission trial = d.admit("gptq");
    ASSERT_TRUE(trial.trial());
    Admission moved = std::move(trial);  // moving keeps one owner of the slot
    EXPECT_FALSE(trial.admitted());
    EXPECT_FALSE(d.routable("gptq"));
  }  // client went away: no outcome
  EXPECT_EQ(d.health("gptq").state, HealthState::kHalfOpen);
  EXPECT_TRUE(d.admit("gptq").trial());
}

TEST(OutlierDetectorTest, ProbesFeedTheSameStateMachine) {
  FakeClock clock;
  OutlierDetector d(options(), clock);
  for (int i = 0; i < 3; ++i) d.record_probe("fp16", Outcome::kTimeout);
  EXPECT_EQ(d.health("fp16").state, HealthState::kEjected);
  d.record_probe("fp16", Outcome::kSuccess);  // the back-off must run out first
  d.record_probe("fp16", Outcome::kSuccess);
  EXPECT_EQ(d.health("fp16").state, HealthState::kEjected);
  clock.advance(seconds(10));
  d.record_probe("fp16", Outcome::kSuccess);
  d.record_probe("fp16", Outcome::kSuccess);
  EXPECT_EQ(d.health("fp16").state, HealthState::kHealthy);
  EXPECT_TRUE(d.admit("fp16").admitted());
}

TEST(OutlierDetectorTest, DrainIsIndependentOfHealth) {
  FakeClock clock;
  OutlierDetector d(options(), clock);
  d.set_drained("awq", true);
  EXPECT_FALSE(d.routable("awq"));
  EXPECT_FALSE(d.admit("awq").admitted());
  EXPECT_TRUE(d.health("awq").drained);
  for (int i = 0; i < 3; ++i) d.record_probe("awq", Outcome::kFailure);  // still tracked
  d.set_drained("awq", false);
  EXPECT_EQ(d.health("awq").state, HealthState::kEjected);
  EXPECT_FALSE(d.routable("awq"));
  clock.advance(seconds(10));
  EXPECT_TRUE(d.routable("awq"));

  const auto all = d.all();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].variant, "awq");
  EXPECT_STREQ(health_state_name(all[0].state), "half_open");
}

TEST(OutlierDetectorTest, OptionsValidation) {
  OutlierOptions o = options();
  o.max_ejection = seconds(5);
  EXPECT_EQ(o.validate().error().message(), "max_ejection: must be >= base_ejection");
  o = options();
  o.consecutive_failures = 0;
  EXPECT_EQ(o.validate().error().message(), "consecutive_failures: must be >= 1");
}

}  // namespace
}  // namespace qgate
