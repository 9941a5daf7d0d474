#include "gateway/gateway_metrics.h"

#include <prometheus/text_serializer.h>

#include <sstream>

namespace qgate {

namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

const std::vector<double> kShadowNllBuckets = {0.01, 0.05, 0.1, 0.25, 0.5, 1,  1.5,
                                               2,    3,    4,   6,    8,   12};
const std::vector<double> kFeedbackBuckets = {-1, -0.5, 0, 0.5, 1};

std::string str(std::string_view s) { return std::string(s); }

}  // namespace

std::string_view attempt_failure_label(AttemptFailure f) {
  switch (f) {
    case AttemptFailure::kEngine: return "engine";
    case AttemptFailure::kTimeout: return "timeout";
    case AttemptFailure::kOverloaded: return "overloaded";
    case AttemptFailure::kMidStream: return "mid_stream";
    case AttemptFailure::kUnavailable: return "unavailable";
  }
  return "engine";
}

// Buckets: TTFT spans a prefix-cached GPU answer (milliseconds) to a long CPU prompt behind a
// queue (tens of seconds); inter-token latency a GPU decode step (~1 ms) to a saturated CPU batch
// (hundreds of ms); end-to-end whole completions up to the 10-minute request limit's range.
const std::vector<double>& GatewayMetrics::ttft_buckets() {
  static const std::vector<double> b = {0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                        0.75,  1,    2.5,  5,    7.5,  10,   20,  40};
  return b;
}
const std::vector<double>& GatewayMetrics::inter_token_buckets() {
  static const std::vector<double> b = {0.001, 0.0025, 0.005, 0.01, 0.015, 0.02,
                                        0.025, 0.03,   0.04,  0.05, 0.075, 0.1,
                                        0.15,  0.2,    0.3,   0.5,  1,     2.5};
  return b;
}
const std::vector<double>& GatewayMetrics::e2e_buckets() {
  static const std::vector<double> b = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                        2.5,  5,     10,   20,  40,   60,  120, 300};
  return b;
}

GatewayMetrics::GatewayMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(BuildCounter()
                    .Name("qgate_requests_total")
                    .Help("Client requests by route, answering variant and final HTTP status")
                    .Register(*registry_)),
      e2e_(BuildHistogram()
               .Name("qgate_request_duration_seconds")
               .Help("End-to-end latency of successful requests")
               .Register(*registry_)),
      ttft_(BuildHistogram()
                .Name("qgate_time_to_first_token_seconds")
                .Help("Request accepted to first generated text, queueing and fallbacks included")
                .Register(*registry_)),
      itl_(BuildHistogram()
               .Name("qgate_inter_token_latency_seconds")
               .Help("Time between consecutive generated tokens of one response")
               .Register(*registry_)),
      prompt_tokens_(BuildCounter()
                         .Name("qgate_prompt_tokens_total")
                         .Help("Prompt tokens of successful requests")
                         .Register(*registry_)),
      completion_tokens_(BuildCounter()
                             .Name("qgate_completion_tokens_total")
                             .Help("Generated tokens of successful requests")
                             .Register(*registry_)),
      errors_(BuildCounter()
                  .Name("qgate_variant_errors_total")
                  .Help("Failed attempts on a variant by kind")
                  .Register(*registry_)),
      fallbacks_(BuildCounter()
                     .Name("qgate_fallbacks_total")
                     .Help("Requests moved from one variant to the next, by reason")
                     .Register(*registry_)),
      shadow_nll_(BuildHistogram()
                      .Name("qgate_shadow_token_nll")
                      .Help("Per-token negative log-likelihood (nats) of a variant's sampled "
                            "responses under the route's baseline model")
                      .Register(*registry_)),
      shadow_tokens_(BuildCounter()
                         .Name("qgate_shadow_tokens_total")
                         .Help("Tokens scored by the baseline in shadow")
                         .Register(*registry_)),
      shadow_agreements_(BuildCounter()
                             .Name("qgate_shadow_top1_agreements_total")
                             .Help("Shadow-scored tokens equal to the baseline's argmax")
                             .Register(*registry_)),
      shadow_responses_(BuildCounter()
                            .Name("qgate_shadow_responses_total")
                            .Help("Responses sampled for shadow scoring, by outcome")
                            .Register(*registry_)),
      feedback_total_(BuildCounter()
                          .Name("qgate_feedback_total")
                          .Help("User feedback on responses, by sentiment")
                          .Register(*registry_)),
      feedback_score_(BuildHistogram()
                          .Name("qgate_feedback_score")
                          .Help("User feedback scores in [-1, 1]")
                          .Register(*registry_)),
      eval_perplexity_(BuildGauge()
                           .Name("qgate_eval_perplexity")
                           .Help("Perplexity on the eval text (qgate eval)")
                           .Register(*registry_)),
      eval_kl_(BuildGauge()
                   .Name("qgate_eval_kl_divergence")
                   .Help("Mean KL(baseline || variant) per token in nats (qgate eval)")
                   .Register(*registry_)),
      eval_agreement_(BuildGauge()
                          .Name("qgate_eval_top1_agreement_ratio")
                          .Help("Share of positions where variant and baseline argmax agree "
                                "(qgate eval)")
                          .Register(*registry_)),
      eval_tokens_(BuildGauge()
                       .Name("qgate_eval_tokens")
                       .Help("Tokens the offline evaluation scored")
                       .Register(*registry_)),
      eval_timestamp_(BuildGauge()
                          .Name("qgate_eval_timestamp_seconds")
                          .Help("When the offline eval results were loaded (unix seconds)")
                          .Register(*registry_)) {
  BuildGauge()
      .Name("qgate_build_info")
      .Help("qgate's version (always 1)")
      .Register(*registry_)
      .Add({{"version", QGATE_VERSION}})
      .Set(1);
}

const GatewayMetrics::PairSeries& GatewayMetrics::pair(std::string_view route, std::string_view variant) {
  // Label values cannot contain NUL (they are config names), so this key is unambiguous.
  std::string key;
  key.reserve(route.size() + variant.size() + 1);
  key.append(route).push_back('\0');
  key.append(variant);
  std::lock_guard lock(mu_);
  auto it = pairs_.find(key);
  if (it != pairs_.end()) return it->second;
  const prometheus::Labels labels{{"route", str(route)}, {"variant", str(variant)}};
  PairSeries s{&e2e_.Add(labels, e2e_buckets()), &ttft_.Add(labels, ttft_buckets()),
               &itl_.Add(labels, inter_token_buckets()), &prompt_tokens_.Add(labels),
               &completion_tokens_.Add(labels)};
  return pairs_.emplace(std::move(key), s).first->second;
}

void GatewayMetrics::declare(std::string_view route, std::string_view variant) {
  pair(route, variant);
  requests_.Add({{"route", str(route)}, {"variant", str(variant)}, {"code", "200"}});
}

void GatewayMetrics::request_finished(std::string_view route, std::string_view variant,
                                      unsigned status) {
  requests_.Add({{"route", str(route)}, {"variant", str(variant)}, {"code", std::to_string(status)}})
      .Increment();
}

void GatewayMetrics::request_duration(std::string_view route, std::string_view variant,
                                      double seconds) {
  pair(route, variant).e2e->Observe(seconds);
}

void GatewayMetrics::time_to_first_token(std::string_view route, std::string_view variant,
                                         double seconds) {
  pair(route, variant).ttft->Observe(seconds);
}

void GatewayMetrics::inter_token_latency(std::string_view route, std::string_view variant,
                                         double seconds, int64_t n) {
  pair(route, variant).inter_token_latency(seconds, n);
}

void GatewayMetrics::tokens(std::string_view route, std::string_view variant, int64_t prompt,
                            int64_t completion) {
  pair(route, variant).tokens(prompt, completion);
}

void GatewayMetrics::PairSeries::inter_token_latency(double seconds, int64_t n) const {
  for (int64_t i = 0; i < n; ++i) itl->Observe(seconds);
}

void GatewayMetrics::PairSeries::tokens(int64_t prompt, int64_t completion) const {
  prompt_tokens->Increment(static_cast<double>(prompt));
  completion_tokens->Increment(static_cast<double>(completion));
}

void GatewayMetrics::attempt_failed(std::string_view route, std::string_view variant,
                                    AttemptFailure kind) {
  errors_
      .Add({{"route", str(route)},
            {"variant", str(variant)},
            {"kind", str(attempt_failure_label(kind))}})
      .Increment();
}

void GatewayMetrics::fallback(std::string_view route, std::string_view from, std::string_view to,
                              AttemptFailure reason) {
  fallbacks_
      .Add({{"route", str(route)},
            {"from", str(from)},
            {"to", str(to)},
            {"reason", str(attempt_failure_label(reason))}})
      .Increment();
}

void GatewayMetrics::shadow_scored(std::string_view route, std::string_view variant,
                                   const std::vector<float>& token_nll, int64_t top1_agreements) {
  const prometheus::Labels labels{{"route", str(route)}, {"variant", str(variant)}};
  prometheus::Histogram& h = shadow_nll_.Add(labels, kShadowNllBuckets);
  for (float nll : token_nll) h.Observe(nll);
  shadow_tokens_.Add(labels).Increment(static_cast<double>(token_nll.size()));
  // Created even at zero so the agreement rate has a numerator series from the first response.
  shadow_agreements_.Add(labels).Increment(static_cast<double>(top1_agreements));
  shadow_outcome(route, variant, "scored");
}

void GatewayMetrics::shadow_outcome(std::string_view route, std::string_view variant,
                                    std::string_view outcome) {
  shadow_responses_
      .Add({{"route", str(route)}, {"variant", str(variant)}, {"outcome", str(outcome)}})
      .Increment();
}

void GatewayMetrics::feedback(std::string_view route, std::string_view variant, double score) {
  const std::string sentiment = score > 0 ? "positive" : score < 0 ? "negative" : "neutral";
  feedback_total_
      .Add({{"route", str(route)}, {"variant", str(variant)}, {"sentiment", sentiment}})
      .Increment();
  feedback_score_.Add({{"route", str(route)}, {"variant", str(variant)}}, kFeedbackBuckets)
      .Observe(score);
}

void GatewayMetrics::set_eval_results(const std::vector<VariantEvalMetrics>& results,
                                      double loaded_unix_seconds) {
  std::lock_guard lock(mu_);
  for (auto& [family, gauge] : eval_series_) family->Remove(gauge);
  eval_series_.clear();
  auto set = [this](prometheus::Family<prometheus::Gauge>& family, const std::string& variant,
                    double value) {
    prometheus::Gauge& g = family.Add({{"variant", variant}});
    g.Set(value);
    eval_series_.emplace_back(&family, &g);
  };
  for (const VariantEvalMetrics& r : results) {
    set(eval_perplexity_, r.variant, r.perplexity);
    set(eval_tokens_, r.variant, r.tokens);
    if (r.has_baseline) {
      set(eval_kl_, r.variant, r.kl_divergence);
      set(eval_agreement_, r.variant, r.top1_agreement);
    }
  }
  eval_timestamp_.Add({}).Set(loaded_unix_seconds);
}

void GatewayMetrics::add_collector(Collector collector) {
  std::lock_guard lock(mu_);
  collectors_.push_back(std::move(collector));
}

std::string GatewayMetrics::serialize() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  std::vector<Collector> collectors;
  {
    std::lock_guard lock(mu_);
    collectors = collectors_;
  }
  for (const Collector& c : collectors) {
    for (prometheus::MetricFamily& f : c()) families.push_back(std::move(f));
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

prometheus::MetricFamily gauge_family(std::string name, std::string help) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = prometheus::MetricType::Gauge;
  return f;
}

prometheus::MetricFamily counter_family(std::string name, std::string help) {
  prometheus::MetricFamily f = gauge_family(std::move(name), std::move(help));
  f.type = prometheus::MetricType::Counter;
  return f;
}

void add_sample(prometheus::MetricFamily& family,
                std::vector<std::pair<std::string, std::string>> labels, double value) {
  prometheus::ClientMetric m;
  for (auto& [k, v] : labels) m.label.push_back({std::move(k), std::move(v)});
  if (family.type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  family.metric.push_back(std::move(m));
}

}  // namespace qgate
