// Routing table validation (every rule, by the message's field path) and copy-on-write edits.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "policies/routing_table.h"

namespace qgate {
namespace {

const std::vector<std::string> kVariants = {"fp16", "gptq", "awq"};

Route smollm2() {
  Route r;
  r.model = "smollm2";
  r.weights = {{"fp16", 80}, {"gptq", 10}, {"awq", 10}};
  r.baseline = "fp16";
  r.fallback = {"fp16"};
  return r;
}

TEST(RoutingTableTest, AValidRoutePasses) {
  EXPECT_TRUE(validate_route(smollm2(), kVariants, "routes[0]").ok());
  Route zero_weight_listed = smollm2();
  zero_weight_listed.weights[1].weight = 0;  // listed at 0: reachable only through override
  EXPECT_TRUE(validate_route(zero_weight_listed, kVariants, "routes[0]").ok());
}

TEST(RoutingTableTest, EveryInvalidRouteNamesItsField) {
  struct Case {
    const char* name;
    std::function<void(Route&)> mutate;
    const char* message;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<Case> cases = {
      {"empty model", [](Route& r) { r.model.clear(); }, "routes[0].model: must not be empty"},
      {"empty split", [](Route& r) { r.weights.clear(); },
       "routes[0].weights: must name at least one"},
      {"unknown variant",
       [](Route& r) {
         r.weights.push_back({"rtn", 1});
       },
       "routes[0].weights.rtn: unknown variant (known: fp16, gptq, awq)"},
      {"duplicate variant",
       [](Route& r) {
         r.weights.push_back({"gptq", 1});
       },
       "routes[0].weights.gptq: variant listed twice"},
      {"negative weight", [](Route& r) { r.weights[1].weight = -1; },
       "routes[0].weights.gptq: must be a finite number >= 0"},
      {"nan weight", [nan](Route& r) { r.weights[2].weight = nan; },
       "routes[0].weights.awq: must be a finite number >= 0"},
      {"infinite weight", [](Route& r) { r.weights[0].weight = INFINITY; },
       "routes[0].weights.fp16: must be a finite number >= 0"},
      {"all zero",
       [](Route& r) {
         for (auto& w : r.weights) w.weight = 0;
       },
       "routes[0].weights: at least one weight must be > 0"},
      {"overflowing sum",
       [](Route& r) {
         for (auto& w : r.weights) w.weight = 1e308;
       },
       "routes[0].weights: the weights' sum overflows"},
      {"no baseline", [](Route& r) { r.baseline.clear(); },
       "routes[0].baseline: must name a variant"},
      {"unknown baseline", [](Route& r) { r.baseline = "int8"; },
       "routes[0].baseline: unknown variant 'int8'"},
      {"unknown fallback",
       [](Route& r) {
         r.fallback = {"fp16", "int8"};
       },
       "routes[0].fallback[1]: unknown variant 'int8'"},
      {"duplicate fallback",
       [](Route& r) {
         r.fallback = {"fp16", "gptq", "fp16"};
       },
       "routes[0].fallback[2]: variant listed twice"},
  };
  for (const auto& c : cases) {
    Route r = smollm2();
    c.mutate(r);
    Status st = validate_route(r, kVariants, "routes[0]");
    ASSERT_FALSE(st.ok()) << c.name;
    EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument) << c.name;
    EXPECT_NE(st.error().message().find(c.message), std::string::npos)
        << c.name << ": got '" << st.error().message() << "'";
  }
}

TEST(RoutingTableTest, RoutesMustBeUniqueAndPresent) {
  std::vector<Route> routes = {smollm2(), smollm2()};
  Status st = validate_routes(routes, kVariants);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message(), "routes[1].model: duplicate route for model 'smollm2'");
  st = validate_routes({}, kVariants);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message(), "routes: at least one route is required");
  routes[1].model = "other";
  routes[1].weights[0].weight = -2;
  st = validate_routes(routes, kVariants);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message(), "routes[1].weights.fp16: must be a finite number >= 0");
}

TEST(RoutingTableTest, LookupsByModelAndVariant) {
  RoutingTable t;
  Route other = smollm2();
  other.model = "direct";
  other.weights = {{"awq", 1}};
  other.baseline = "awq";
  other.fallback = {};
  t.routes = {smollm2(), other};
  ASSERT_NE(t.find("direct"), nullptr);
  EXPECT_EQ(t.find("direct")->baseline, "awq");
  EXPECT_EQ(t.find("missing"), nullptr);
  EXPECT_EQ(t.find("smollm2")->weight_of("gptq"), 10.0);
  EXPECT_EQ(t.find("smollm2")->weight_of("rtn"), 0.0);
  EXPECT_TRUE(t.find("direct")->serves("awq"));
  EXPECT_FALSE(t.find("direct")->serves("fp16"));
}

TEST(RoutingTableTest, WithSplitReplacesTheSplitAndLeavesTheOriginalAlone) {
  RoutingTable t;
  t.version = 4;
  t.routes = {smollm2()};
  auto next = with_split(t, "smollm2", {{"fp16", 70}, {"gptq", 30}}, kVariants);
  ASSERT_TRUE(next.ok()) << next.error().to_string();
  EXPECT_EQ(next->routes[0].weights, (std::vector<VariantWeight>{{"fp16", 70}, {"gptq", 30}}));
  EXPECT_EQ(next->routes[0].baseline, "fp16");  // everything but the split is kept
  EXPECT_EQ(t.routes[0].weights.size(), 3u);    // the input table is a value, untouched

  auto bad = with_split(t, "smollm2", {{"fp16", 0}, {"gptq", -5}}, kVariants);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(), "routes[0].weights.gptq: must be a finite number >= 0");
  auto missing = with_split(t, "nope", {{"fp16", 1}}, kVariants);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
}

TEST(RoutingTableTest, BaselineOnlySendsAllTrafficToTheBaseline) {
  RoutingTable t;
  Route no_baseline_in_split = smollm2();
  no_baseline_in_split.model = "canary";
  no_baseline_in_split.weights = {{"gptq", 1}};
  t.routes = {smollm2(), no_baseline_in_split};

  auto one = with_baseline_only(t, "smollm2");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->routes[0].weights,
            (std::vector<VariantWeight>{{"fp16", 100}, {"gptq", 0}, {"awq", 0}}));
  EXPECT_EQ(one->routes[1].weights, t.routes[1].weights);  // other routes untouched

  auto all = with_baseline_only(t, "");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->routes[1].weights, (std::vector<VariantWeight>{{"gptq", 0}, {"fp16", 100}}));
  EXPECT_TRUE(validate_routes(all->routes, kVariants).ok());
  EXPECT_EQ(with_baseline_only(t, "nope").error().code(), ErrorCode::kNotFound);
}

TEST(RoutingTableTest, DescribeSplitIsCompactAndExact) {
  EXPECT_EQ(describe_split(smollm2().weights), "fp16=80 gptq=10 awq=10");
  EXPECT_EQ(describe_split(std::vector<VariantWeight>{{"a", 0.1}, {"b", 2.5}}), "a=0.1 b=2.5");
}

}  // namespace
}  // namespace qgate
