// GatewayMetrics and the scrape-time collectors: the exposition carries exactly what was recorded,
// under the names, labels and buckets docs/METRICS.md promises.
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>

#include "gateway/gateway_metrics.h"
#include "gateway/serving_state_metrics.h"
#include "policies/clock.h"

namespace qgate {
namespace {

// name{labels} -> value, from the text exposition (comments skipped). Labels are kept exactly as
// serialized, so tests spell them in prometheus-cpp's order (alphabetical).
std::map<std::string, double> samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

TEST(GatewayMetricsTest, RequestPathMetricsCarryExactValues) {
  GatewayMetrics m;
  m.request_finished("smollm2", "gptq", 200);
  m.request_finished("smollm2", "gptq", 200);
  m.request_finished("unknown", "none", 404);
  m.time_to_first_token("smollm2", "gptq", 0.03);   // bucket 0.04
  m.time_to_first_token("smollm2", "gptq", 0.3);    // bucket 0.5
  m.inter_token_latency("smollm2", "gptq", 0.012, 3);  // bucket 0.015, three observations
  m.request_duration("smollm2", "gptq", 1.5);
  m.tokens("smollm2", "gptq", 36, 8);
  m.tokens("smollm2", "gptq", 4, 2);
  m.attempt_failed("smollm2", "awq", AttemptFailure::kTimeout);
  m.fallback("smollm2", "awq", "fp16", AttemptFailure::kTimeout);

  const auto s = samples(m.serialize());
  EXPECT_EQ(s.at(R"(qgate_requests_total{code="200",route="smollm2",variant="gptq"})"), 2);
  EXPECT_EQ(s.at(R"(qgate_requests_total{code="404",route="unknown",variant="none"})"), 1);
  const std::string pair = R"(route="smollm2",variant="gptq")";
  EXPECT_EQ(s.at("qgate_time_to_first_token_seconds_count{" + pair + "}"), 2);
  EXPECT_NEAR(s.at("qgate_time_to_first_token_seconds_sum{" + pair + "}"), 0.33, 1e-12);
  EXPECT_EQ(s.at("qgate_time_to_first_token_seconds_bucket{" + pair + ",le=\"0.02\"}"), 0);
  EXPECT_EQ(s.at("qgate_time_to_first_token_seconds_bucket{" + pair + ",le=\"0.04\"}"), 1);
  EXPECT_EQ(s.at("qgate_time_to_first_token_seconds_bucket{" + pair + ",le=\"0.25\"}"), 1);
  EXPECT_EQ(s.at("qgate_time_to_first_token_seconds_bucket{" + pair + ",le=\"0.5\"}"), 2);
  EXPECT_EQ(s.at("qgate_time_to_first_token_seconds_bucket{" + pair + ",le=\"+Inf\"}"), 2);
  EXPECT_EQ(s.at("qgate_inter_token_latency_seconds_count{" + pair + "}"), 3);
  EXPECT_EQ(s.at("qgate_inter_token_latency_seconds_bucket{" + pair + ",le=\"0.01\"}"), 0);
  EXPECT_EQ(s.at("qgate_inter_token_latency_seconds_bucket{" + pair + ",le=\"0.015\"}"), 3);
  EXPECT_EQ(s.at("qgate_request_duration_seconds_bucket{" + pair + ",le=\"1\"}"), 0);
  EXPECT_EQ(s.at("qgate_request_duration_seconds_bucket{" + pair + ",le=\"2.5\"}"), 1);
  EXPECT_EQ(s.at("qgate_prompt_tokens_total{" + pair + "}"), 40);
  EXPECT_EQ(s.at("qgate_completion_tokens_total{" + pair + "}"), 10);
  EXPECT_EQ(s.at(R"(qgate_variant_errors_total{kind="timeout",route="smollm2",variant="awq"})"), 1);
  EXPECT_EQ(
      s.at(R"(qgate_fallbacks_total{from="awq",reason="timeout",route="smollm2",to="fp16"})"), 1);
  EXPECT_EQ(s.at(R"(qgate_build_info{version=")" QGATE_VERSION R"("})"), 1);
}

TEST(GatewayMetricsTest, DeclaredPairsExistAtZero) {
  GatewayMetrics m;
  m.declare("smollm2", "awq");
  const auto s = samples(m.serialize());
  EXPECT_EQ(s.at(R"(qgate_requests_total{code="200",route="smollm2",variant="awq"})"), 0);
  EXPECT_EQ(s.at(R"(qgate_time_to_first_token_seconds_count{route="smollm2",variant="awq"})"), 0);
  EXPECT_EQ(s.at(R"(qgate_completion_tokens_total{route="smollm2",variant="awq"})"), 0);
}

TEST(GatewayMetricsTest, BucketsAreIncreasingAndCoverLlmLatencies) {
  for (const auto* b : {&GatewayMetrics::ttft_buckets(), &GatewayMetrics::inter_token_buckets(),
                        &GatewayMetrics::e2e_buckets()}) {
    ASSERT_FALSE(b->empty());
    for (size_t i = 1; i < b->size(); ++i) EXPECT_LT((*b)[i - 1], (*b)[i]);
  }
  // A GPU decode step (~1-5 ms) and a loaded CPU step (~100s of ms) land in distinct buckets.
  EXPECT_LE(GatewayMetrics::inter_token_buckets().front(), 0.001);
  EXPECT_GE(GatewayMetrics::inter_token_buckets().back(), 1.0);
  EXPECT_GE(GatewayMetrics::ttft_buckets().back(), 30.0);
}

TEST(GatewayMetricsTest, QualityMetrics) {
  GatewayMetrics m;
  m.shadow_scored("smollm2", "gptq", {0.02f, 0.7f, 5.0f}, 2);
  m.shadow_outcome("smollm2", "gptq", "dropped");
  m.feedback("smollm2", "gptq", 1.0);
  m.feedback("smollm2", "gptq", -0.5);
  m.feedback("smollm2", "gptq", 0.0);
  m.set_eval_results({{"fp16", 24.9, false, 0, 0, 16384}, {"gptq", 27.5, true, 0.09, 0.83, 16384}},
                     1700000000.0);
  auto s = samples(m.serialize());
  const std::string pair = R"(route="smollm2",variant="gptq")";
  EXPECT_EQ(s.at("qgate_shadow_tokens_total{" + pair + "}"), 3);
  EXPECT_EQ(s.at("qgate_shadow_top1_agreements_total{" + pair + "}"), 2);
  EXPECT_EQ(s.at("qgate_shadow_token_nll_bucket{" + pair + ",le=\"0.05\"}"), 1);
  EXPECT_EQ(s.at("qgate_shadow_token_nll_bucket{" + pair + ",le=\"1\"}"), 2);
  EXPECT_EQ(s.at("qgate_shadow_token_nll_bucket{" + pair + ",le=\"6\"}"), 3);
  EXPECT_EQ(s.at(R"(qgate_shadow_responses_total{outcome="scored",route="smollm2",variant="gptq"})"), 1);
  EXPECT_EQ(s.at(R"(qgate_shadow_responses_total{outcome="dropped",route="smollm2",variant="gptq"})"), 1);
  EXPECT_EQ(s.at(R"(qgate_feedback_total{route="smollm2",sentiment="positive",variant="gptq"})"), 1);
  EXPECT_EQ(s.at(R"(qgate_feedback_total{route="smollm2",sentiment="negative",variant="gptq"})"), 1);
  EXPECT_EQ(s.at(R"(qgate_feedback_total{route="smollm2",sentiment="neutral",variant="gptq"})"), 1);
  EXPECT_EQ(s.at("qgate_feedback_score_sum{" + pair + "}"), 0.5);
  EXPECT_EQ(s.at("qgate_feedback_score_bucket{" + pair + ",le=\"-0.5\"}"), 1);
  EXPECT_EQ(s.at(R"(qgate_eval_perplexity{variant="gptq"})"), 27.5);
  EXPECT_EQ(s.at(R"(qgate_eval_kl_divergence{variant="gptq"})"), 0.09);
  EXPECT_EQ(s.at(R"(qgate_eval_top1_agreement_ratio{variant="gptq"})"), 0.83);
  EXPECT_EQ(s.count(R"(qgate_eval_kl_divergence{variant="fp16"})"), 0u);  // the baseline has none
  EXPECT_EQ(s.at("qgate_eval_timestamp_seconds"), 1700000000.0);

  // A reload replaces the set: a variant no longer in the results loses its gauges.
  m.set_eval_results({{"fp16", 25.0, false, 0, 0, 8192}}, 1700000100.0);
  s = samples(m.serialize());
  EXPECT_EQ(s.at(R"(qgate_eval_perplexity{variant="fp16"})"), 25.0);
  EXPECT_EQ(s.count(R"(qgate_eval_perplexity{variant="gptq"})"), 0u);
  EXPECT_EQ(s.count(R"(qgate_eval_kl_divergence{variant="gptq"})"), 0u);
}

TEST(GatewayMetricsTest, CollectorsRunAtEveryScrape) {
  GatewayMetrics m;
  int depth = 3;
  m.add_collector([&depth] {
    auto f = gauge_family("qgate_shadow_queue_depth", "test");
    add_sample(f, {}, depth);
    return std::vector<prometheus::MetricFamily>{std::move(f)};
  });
  EXPECT_EQ(samples(m.serialize()).at("qgate_shadow_queue_depth"), 3);
  depth = 5;
  EXPECT_EQ(samples(m.serialize()).at("qgate_shadow_queue_depth"), 5);
}

TEST(ServingStateMetricsTest, RoutingTableShares) {
  RoutingTable t;
  t.version = 7;
  Route r;
  r.model = "smollm2";
  r.weights = {{"fp16", 80}, {"gptq", 10}, {"awq", 10}};
  r.baseline = "fp16";
  t.routes.push_back(r);
  GatewayMetrics m;
  m.add_collector([&t] { return routing_table_metrics(t); });
  const auto s = samples(m.serialize());
  EXPECT_EQ(s.at("qgate_routing_table_version"), 7);
  EXPECT_DOUBLE_EQ(s.at(R"(qgate_route_weight_ratio{route="smollm2",variant="fp16"})"), 0.8);
  EXPECT_DOUBLE_EQ(s.at(R"(qgate_route_weight_ratio{route="smollm2",variant="awq"})"), 0.1);
  EXPECT_EQ(s.at(R"(qgate_route_baseline{route="smollm2",variant="fp16"})"), 1);
  EXPECT_EQ(s.count(R"(qgate_route_baseline{route="smollm2",variant="gptq"})"), 0u);
}

TEST(ServingStateMetricsTest, HealthStatesAreOneHot) {
  FakeClock clock;
  OutlierOptions o;
  o.consecutive_failures = 1;
  OutlierDetector d(o, clock);
  d.set_drained("awq", true);
  d.admit("gptq").report(Outcome::kFailure);  // ejects at the first failure
  GatewayMetrics m;
  m.add_collector([&d] { return variant_health_metrics(d, {"fp16", "gptq", "awq"}); });
  const auto s = samples(m.serialize());
  const std::map<std::string, std::string> expected = {
      {"fp16", "healthy"}, {"gptq", "ejected"}, {"awq", "draining"}};
  for (const auto& [v, state] : expected) {
    for (const char* st : {"healthy", "ejected", "half_open", "draining"}) {
      EXPECT_EQ(s.at("qgate_variant_state{variant=\"" + v + "\",state=\"" + st + "\"}"),
                state == st ? 1 : 0)
          << v << " " << st;
    }
    EXPECT_EQ(s.at("qgate_variant_healthy{variant=\"" + v + "\"}"), state == "healthy" ? 1 : 0);
  }
  EXPECT_EQ(s.at(R"(qgate_variant_ejections_total{variant="gptq"})"), 1);
}

}  // namespace
}  // namespace qgate
