// The metrics `qgate serve` records on the request path, and the /metrics exposition.
// docs/METRICS.md is the contract: names, labels, units, buckets.
//
// Two kinds of metrics: those *recorded* as things happen (requests, latencies, tokens, errors,
// fallbacks, shadow scores, feedback, offline eval results) live in the prometheus-cpp registry
// this class owns; those *observed* (routing table, health, worker gauges) are read from their
// owners at scrape time by the collectors added with add_collector(), so they are never stale.
//
// Threading: every method is thread-safe. Recording takes one short lock to find the series of a
// (route, variant) pair (cached after first use; label values come from the configuration, so
// the set is bounded) and prometheus-cpp's own per-metric synchronisation. serialize() runs the
// collectors on the calling thread.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qgate {

// Why a variant's attempt failed (label `kind` of qgate_variant_errors_total, `reason` of
// qgate_fallbacks_total).
enum class AttemptFailure { kEngine, kTimeout, kOverloaded, kMidStream, kUnavailable };
std::string_view attempt_failure_label(AttemptFailure f);

// Offline quality of one variant from `qgate eval` (see eval_results.h).
struct VariantEvalMetrics {
  std::string variant;
  double perplexity = 0;
  bool has_baseline = false;  // kl / agreement are set
  double kl_divergence = 0;
  double top1_agreement = 0;
  double tokens = 0;
};

class GatewayMetrics {
 public:
  GatewayMetrics();
  GatewayMetrics(const GatewayMetrics&) = delete;
  GatewayMetrics& operator=(const GatewayMetrics&) = delete;

  // The latency and token series of one (route, variant) pair. The reference stays valid for the
  // GatewayMetrics' lifetime, so a request looks its pair up once per attempt rather than once per
  // token (the lookup takes the lock and builds a key).
  struct PairSeries {
    prometheus::Histogram* e2e;
    prometheus::Histogram* ttft;
    prometheus::Histogram* itl;
    prometheus::Counter* prompt_tokens;
    prometheus::Counter* completion_tokens;
    // `n` observations of `seconds` each (n tokens arrived together, their gaps spread evenly).
    void inter_token_latency(double seconds, int64_t n) const;
    void tokens(int64_t prompt, int64_t completion) const;
  };
  const PairSeries& pair(std::string_view route, std::string_view variant);

  // Creates the series of a (route, variant) pair at zero -- successful requests, latencies,
  // tokens -- so that rate() sees the pair's first request (a counter born at 1 has no increase).
  void declare(std::string_view route, std::string_view variant);

  // --- request path (route = a configured route, "unknown" for an unknown model; variant = a
  // configured variant, "none" when no variant took the request)
  void request_finished(std::string_view route, std::string_view variant, unsigned status);
  void request_duration(std::string_view route, std::string_view variant, double seconds);
  void time_to_first_token(std::string_view route, std::string_view variant, double seconds);
  // `n` observations of `seconds` each (n tokens arrived together, their gaps spread evenly).
  void inter_token_latency(std::string_view route, std::string_view variant, double seconds,
                           int64_t n);
  void tokens(std::string_view route, std::string_view variant, int64_t prompt, int64_t completion);
  void attempt_failed(std::string_view route, std::string_view variant, AttemptFailure kind);
  void fallback(std::string_view route, std::string_view from, std::string_view to,
                AttemptFailure reason);

  // --- quality
  void shadow_scored(std::string_view route, std::string_view variant,
                     const std::vector<float>& token_nll, int64_t top1_agreements);
  void shadow_outcome(std::string_view route, std::string_view variant, std::string_view outcome);
  void feedback(std::string_view route, std::string_view variant, double score);
  // Replaces the offline eval gauges (variants absent from `results` lose theirs).
  void set_eval_results(const std::vector<VariantEvalMetrics>& results, double loaded_unix_seconds);

  // --- exposition
  using Collector = std::function<std::vector<prometheus::MetricFamily>()>;
  void add_collector(Collector collector);
  // Text exposition format 0.0.4 of everything above plus the collectors' families.
  std::string serialize() const;

  static const std::vector<double>& ttft_buckets();
  static const std::vector<double>& inter_token_buckets();
  static const std::vector<double>& e2e_buckets();

 private:

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& e2e_;
  prometheus::Family<prometheus::Histogram>& ttft_;
  prometheus::Family<prometheus::Histogram>& itl_;
  prometheus::Family<prometheus::Counter>& prompt_tokens_;
  prometheus::Family<prometheus::Counter>& completion_tokens_;
  prometheus::Family<prometheus::Counter>& errors_;
  prometheus::Family<prometheus::Counter>& fallbacks_;
  prometheus::Family<prometheus::Histogram>& shadow_nll_;
  prometheus::Family<prometheus::Counter>& shadow_tokens_;
  prometheus::Family<prometheus::Counter>& shadow_agreements_;
  prometheus::Family<prometheus::Counter>& shadow_responses_;
  prometheus::Family<prometheus::Counter>& feedback_total_;
  prometheus::Family<prometheus::Histogram>& feedback_score_;
  prometheus::Family<prometheus::Gauge>& eval_perplexity_;
  prometheus::Family<prometheus::Gauge>& eval_kl_;
  prometheus::Family<prometheus::Gauge>& eval_agreement_;
  prometheus::Family<prometheus::Gauge>& eval_tokens_;
  prometheus::Family<prometheus::Gauge>& eval_timestamp_;

  mutable std::mutex mu_;  // guards pairs_, eval_series_, collectors_
  std::map<std::string, PairSeries> pairs_;  // key: route '\0' variant
  std::vector<std::pair<prometheus::Family<prometheus::Gauge>*, prometheus::Gauge*>> eval_series_;
  std::vector<Collector> collectors_;
};

// Helpers for scrape-time collectors: one family with its samples.
prometheus::MetricFamily gauge_family(std::string name, std::string help);
prometheus::MetricFamily counter_family(std::string name, std::string help);
void add_sample(prometheus::MetricFamily& family,
                std::vector<std::pair<std::string, std::string>> labels, double value);

}  // namespace qgate
