// plan_route: split accuracy, stickiness, movement under weight changes and availability changes,
// override, fallback ordering. Randomness is a fixed-seed mt19937_64; keys are "user-<i>".
//
// Tolerances: a share estimated from n independent picks with probability p has standard
// deviation sqrt(n p (1 - p)); bounds are 5 sigma, so a correct implementation fails with
// probability < 1e-6 per check, while a wrong share (e.g. 0.75 instead of 0.8 over 100k picks,
// 40 sigma away) cannot pass.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "policies/clock.h"
#include "policies/outlier_detector.h"
#include "policies/router.h"

namespace qgate {
namespace {

constexpr int kN = 100000;

Route route(std::vector<VariantWeight> weights) {
  Route r;
  r.model = "smollm2";
  r.weights = std::move(weights);
  r.baseline = "fp16";
  r.fallback = {"fp16"};
  r.sticky.header = "x-session-id";
  r.sticky.user = true;
  r.override_header = "x-qgate-variant";
  return r;
}

const VariantAvailable kAll = [](std::string_view) { return true; };

VariantAvailable all_but(std::set<std::string> down) {
  return [down = std::move(down)](std::string_view v) { return !down.contains(std::string(v)); };
}

std::string key(int i) { return "user-" + std::to_string(i); }

std::string pick_user(const Route& r, const std::string& user,
                      const VariantAvailable& avail = kAll) {
  RouteRequest req;
  req.user = user;
  auto plan = plan_route(r, req, avail, 1);
  EXPECT_TRUE(plan.ok());
  EXPECT_EQ(plan->reason, PickReason::kSticky);
  return plan.ok() ? plan->attempts[0] : "";
}

std::vector<std::string> assign_users(const Route& r, const VariantAvailable& avail = kAll) {
  std::vector<std::string> out;
  out.reserve(kN);
  for (int i = 0; i < kN; ++i) out.push_back(pick_user(r, key(i), avail));
  return out;
}

void expect_shares(const std::map<std::string, int>& counts, const Route& r, int n) {
  double total = 0;
  for (const auto& w : r.weights) total += w.weight;
  for (const auto& w : r.weights) {
    const double p = w.weight / total;
    const double sigma = std::sqrt(n * p * (1 - p));
    const auto it = counts.find(w.variant);
    const int got = it == counts.end() ? 0 : it->second;
    EXPECT_NEAR(got, n * p, 5 * sigma + 1e-9) << w.variant;
  }
}

TEST(RouterTest, WeightedPicksMatchTheSplit) {
  const Route r = route({{"fp16", 80}, {"gptq", 10}, {"awq", 10}});
  Route unsticky = r;
  unsticky.sticky = {};
  std::mt19937_64 rng(20240601);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::map<std::string, int> counts;
  for (int i = 0; i < kN; ++i) {
    RouteRequest req;
    req.user = "ignored-when-not-sticky";
    req.u01 = u(rng);
    auto plan = plan_route(unsticky, req, kAll, 1);
    ASSERT_TRUE(plan.ok());
    EXPECT_EQ(plan->reason, PickReason::kWeighted);
    ++counts[plan->attempts[0]];
  }
  expect_shares(counts, r, kN);
}

TEST(RouterTest, StickyAssignmentMatchesTheSplitAcrossUsers) {
  const Route r = route({{"fp16", 80}, {"gptq", 10}, {"awq", 10}});
  std::map<std::string, int> counts;
  for (const auto& v : assign_users(r)) ++counts[v];
  expect_shares(counts, r, kN);
}

TEST(RouterTest, StickyKeyKeepsItsVariantWhateverTheDraw) {
  const Route r = route({{"fp16", 50}, {"gptq", 50}});
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int i = 0; i < 200; ++i) {
    const std::string user = key(i);
    const std::string first = pick_user(r, user);
    for (int k = 0; k < 5; ++k) {
      RouteRequest req;
      req.user = user;
      req.u01 = u(rng);  // the draw must not matter for a sticky request
      EXPECT_EQ(plan_route(r, req, kAll, 1)->attempts[0], first);
    }
  }
}

TEST(RouterTest, StickyHeaderWinsOverUserAndUserIsTheFallbackKey) {
  const Route r = route({{"fp16", 50}, {"gptq", 50}});
  // Find a header value and a user that land on different variants.
  std::string header_key, user_key;
  for (int i = 0; header_key.empty() || user_key.empty(); ++i) {
    (pick_user(r, key(i)) == "fp16" ? header_key : user_key) = key(i);
  }
  RouteRequest req;
  req.user = user_key;
  req.header = [&](std::string_view name) -> std::optional<std::string_view> {
    if (name == "x-session-id") return header_key;
    return std::nullopt;
  };
  EXPECT_EQ(plan_route(r, req, kAll, 1)->attempts[0], "fp16");
  req.header = [](std::string_view) -> std::optional<std::string_view> { return ""; };
  EXPECT_EQ(plan_route(r, req, kAll, 1)->attempts[0], "gptq");  // empty header = absent

  Route header_only = r;
  header_only.sticky.user = false;
  RouteRequest anonymous;
  anonymous.user = user_key;
  anonymous.u01 = 0.0;
  auto plan = plan_route(header_only, anonymous, kAll, 1);
  EXPECT_EQ(plan->reason, PickReason::kWeighted);
}

TEST(RouterTest, WeightChangeMovesOnlyTheExpectedShareTowardTheRaisedVariant) {
  const auto before = assign_users(route({{"fp16", 80}, {"gptq", 20}}));
  const auto after = assign_users(route({{"fp16", 70}, {"gptq", 30}}));
  int moved = 0;
  for (int i = 0; i < kN; ++i) {
    if (before[i] == after[i]) continue;
    ++moved;
    EXPECT_EQ(before[i], "fp16") << key(i);  // keys only ever move onto the raised variant
    EXPECT_EQ(after[i], "gptq") << key(i);
  }
  const double p = 0.10;  // 80% -> 70%: exactly the share that must move
  EXPECT_NEAR(moved, kN * p, 5 * std::sqrt(kN * p * (1 - p)));
}

TEST(RouterTest, RaisingOneOfThreeWeightsMovesKeysOnlyOntoIt) {
  const auto before = assign_users(route({{"fp16", 80}, {"gptq", 10}, {"awq", 10}}));
  const auto after = assign_users(route({{"fp16", 80}, {"gptq", 20}, {"awq", 10}}));
  int moved = 0;
  for (int i = 0; i < kN; ++i) {
    if (before[i] == after[i]) continue;
    ++moved;
    EXPECT_EQ(after[i], "gptq");
  }
  const double p = 20.0 / 110.0 - 0.10;  // gptq's share grows from 10% to 18.2%
  EXPECT_NEAR(moved, kN * p, 5 * std::sqrt(kN * p * (1 - p)));
}

TEST(RouterTest, UnavailableVariantsUsersMoveAwayAndComeBack) {
  const Route r = route({{"fp16", 80}, {"gptq", 10}, {"awq", 10}});
  const auto healthy = assign_users(r);
  const auto gptq_down = assign_users(r, all_but({"gptq"}));
  int moved = 0;
  int moved_to_awq = 0;
  for (int i = 0; i < kN; ++i) {
    EXPECT_NE(gptq_down[i], "gptq");
    if (healthy[i] == "gptq") {
      ++moved;
      moved_to_awq += gptq_down[i] == "awq";
    } else {
      EXPECT_EQ(gptq_down[i], healthy[i]) << "a user of a healthy variant moved: " << key(i);
    }
  }
  // The displaced users spread over the remaining split by weight (awq: 10 of 90), not all
  // onto the fallback variant.
  const double p = 10.0 / 90.0;
  EXPECT_NEAR(moved_to_awq, moved * p, 5 * std::sqrt(moved * p * (1 - p)));
  EXPECT_NEAR(moved, kN * 0.1, 5 * std::sqrt(kN * 0.1 * 0.9));
  EXPECT_EQ(assign_users(r), healthy);  // readmitted: every user is back where it was
}

TEST(RouterTest, OutlierDetectorDrivesAvailability) {
  FakeClock clock;
  OutlierDetector health(OutlierOptions{}, clock);
  const Route r = route({{"fp16", 80}, {"gptq", 20}});
  const VariantAvailable avail = [&](std::string_view v) { return health.routable(v); };
  std::string gptq_user;
  for (int i = 0; gptq_user.empty(); ++i) {
    if (pick_user(r, key(i), avail) == "gptq") gptq_user = key(i);
  }
  health.set_drained("gptq", true);
  EXPECT_EQ(pick_user(r, gptq_user, avail), "fp16");
  health.set_drained("gptq", false);
  EXPECT_EQ(pick_user(r, gptq_user, avail), "gptq");
  for (int i = 0; i < OutlierOptions{}.consecutive_failures; ++i) {
    health.admit("gptq").report(Outcome::kFailure);
  }
  EXPECT_EQ(pick_user(r, gptq_user, avail), "fp16");
  clock.advance(OutlierOptions{}.base_ejection);
  EXPECT_EQ(pick_user(r, gptq_user, avail), "gptq");  // half-open: a trial slot is free
}

TEST(RouterTest, OverrideForcesAVariantOfTheRoute) {
  const Route r = route({{"fp16", 100}, {"gptq", 0}});
  RouteRequest req;
  req.user = "someone";
  std::string forced = "gptq";  // weight 0: reachable only by override
  req.header = [&](std::string_view name) -> std::optional<std::string_view> {
    if (name == "x-qgate-variant") return forced;
    return std::nullopt;
  };
  auto plan = plan_route(r, req, kAll, 3);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->reason, PickReason::kOverride);
  EXPECT_EQ(plan->attempts, (std::vector<std::string>{"gptq", "fp16"}));

  plan = plan_route(r, req, all_but({"gptq"}), 3);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->reason, PickReason::kFallback);
  EXPECT_EQ(plan->attempts, (std::vector<std::string>{"fp16"}));

  forced = "awq";  // a real variant, but not one this route serves
  plan = plan_route(r, req, kAll, 3);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(plan.error().message(),
            "header 'x-qgate-variant': 'awq' is not a variant of model 'smollm2'");

  Route no_override = r;
  no_override.override_header.clear();
  forced = "gptq";
  plan = plan_route(no_override, req, kAll, 3);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->attempts[0], "fp16");  // the header is not read on this route
}

TEST(RouterTest, FallbackChainIsOrderedDedupedFilteredAndCapped) {
  Route r = route({{"gptq", 1}});
  r.sticky = {};
  r.fallback = {"awq", "gptq", "int8", "fp16"};
  RouteRequest req;
  auto plan = plan_route(r, req, kAll, 10);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->attempts, (std::vector<std::string>{"gptq", "awq", "int8", "fp16"}));
  plan = plan_route(r, req, kAll, 2);
  EXPECT_EQ(plan->attempts, (std::vector<std::string>{"gptq", "awq"}));
  plan = plan_route(r, req, all_but({"awq", "int8"}), 10);
  EXPECT_EQ(plan->attempts, (std::vector<std::string>{"gptq", "fp16"}));
  plan = plan_route(r, req, all_but({"gptq"}), 10);
  EXPECT_EQ(plan->reason, PickReason::kFallback);
  EXPECT_EQ(plan->attempts, (std::vector<std::string>{"awq", "int8", "fp16"}));
  plan = plan_route(r, req, all_but({"gptq", "awq", "int8", "fp16"}), 10);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_EQ(plan.error().message(),
            "model 'smollm2': no variant available (all drained or ejected)");
}

TEST(RouterTest, RejectsADrawOutsideTheUnitInterval) {
  RouteRequest req;
  req.u01 = 1.0;
  Route r = route({{"fp16", 1}});
  r.sticky = {};
  EXPECT_EQ(plan_route(r, req, kAll, 1).error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace qgate
