#include "gateway/serving_state_metrics.h"

#include "gateway/gateway_metrics.h"

namespace qgate {

std::vector<prometheus::MetricFamily> routing_table_metrics(const RoutingTable& table) {
  auto version = gauge_family("qgate_routing_table_version",
                              "Version of the routing table being served");
  add_sample(version, {}, static_cast<double>(table.version));
  auto weight = gauge_family("qgate_route_weight_ratio",
                             "Configured share of the route's weighted traffic (weight / sum)");
  auto baseline = gauge_family("qgate_route_baseline", "1 for the route's baseline variant");
  for (const Route& r : table.routes) {
    double total = 0;
    for (const VariantWeight& w : r.weights) total += w.weight;
    for (const VariantWeight& w : r.weights) {
      // validate_route guarantees a positive total; the guard keeps a NaN out regardless.
      add_sample(weight, {{"route", r.model}, {"variant", w.variant}},
                 total > 0 ? w.weight / total : 0.0);
    }
    add_sample(baseline, {{"route", r.model}, {"variant", r.baseline}}, 1.0);
  }
  return {std::move(version), std::move(weight), std::move(baseline)};
}

std::vector<prometheus::MetricFamily> variant_health_metrics(
    const OutlierDetector& detector, const std::vector<std::string>& variants) {
  auto state = gauge_family("qgate_variant_state",
                            "1 for the variant's current health state, 0 for the others");
  auto healthy = gauge_family("qgate_variant_healthy",
                              "1 when the variant can take traffic (healthy or half-open)");
  auto ejections = counter_family("qgate_variant_ejections_total",
                                  "Times the outlier detector ejected the variant");
  for (const std::string& v : variants) {
    const VariantHealth h = detector.health(v);
    // Draining is an operator decision that overrides the detector's view in what routing does.
    const std::string current = h.drained ? "draining" : health_state_name(h.state);
    for (const char* s : {"healthy", "ejected", "half_open", "draining"}) {
      add_sample(state, {{"variant", v}, {"state", s}}, current == s ? 1.0 : 0.0);
    }
    add_sample(healthy, {{"variant", v}},
               !h.drained && h.state != HealthState::kEjected ? 1.0 : 0.0);
    add_sample(ejections, {{"variant", v}}, static_cast<double>(h.ejections_total));
  }
  return {std::move(state), std::move(healthy), std::move(ejections)};
}

std::vector<prometheus::MetricFamily> worker_metrics(
    const std::map<std::string, WorkerDescription, std::less<>>& workers) {
  auto info = gauge_family("qgate_worker_info", "Engine worker of a variant (always 1)");
  auto queue = gauge_family("qgate_worker_queue_depth", "Requests waiting for admission to the batch");
  auto running = gauge_family("qgate_worker_running_sequences", "Sequences in the running batch");
  auto batch = gauge_family("qgate_worker_batch_size", "Sequences in the last scheduler step");
  auto blocks = gauge_family("qgate_worker_kv_cache_blocks", "KV cache blocks in total");
  auto used = gauge_family("qgate_worker_kv_cache_used_blocks", "KV cache blocks in use");
  auto usage = gauge_family("qgate_worker_kv_cache_usage_ratio", "KV cache blocks used / total");
  auto weights = gauge_family("qgate_worker_weight_bytes", "Bytes of weights the forward pass reads");
  auto generated = counter_family("qgate_worker_generated_tokens_total",
                                  "Tokens generated (requests, probes and shadow work alike)");
  auto prompt = counter_family("qgate_worker_prompt_tokens_total", "Prompt tokens prefilled");
  auto preempted = counter_family("qgate_worker_preemptions_total",
                                  "Sequences preempted for KV cache space");
  auto rejected = counter_family("qgate_worker_rejected_total",
                                 "Submissions refused as overloaded");
  for (const auto& [name, d] : workers) {
    const WorkerStats s = d.worker->stats();
    add_sample(info, {{"variant", name}, {"device", d.device}, {"model", d.model}}, 1.0);
    add_sample(queue, {{"variant", name}}, static_cast<double>(s.queued));
    add_sample(running, {{"variant", name}}, static_cast<double>(s.running));
    add_sample(batch, {{"variant", name}}, static_cast<double>(s.last_batch_size));
    add_sample(blocks, {{"variant", name}}, static_cast<double>(s.kv_blocks_total));
    add_sample(used, {{"variant", name}}, static_cast<double>(s.kv_blocks_used));
    add_sample(usage, {{"variant", name}},
               s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) /
                                           static_cast<double>(s.kv_blocks_total)
                                     : 0.0);
    add_sample(weights, {{"variant", name}, {"device", d.device}},
               static_cast<double>(s.weight_bytes));
    add_sample(generated, {{"variant", name}}, static_cast<double>(s.generated_tokens_total));
    add_sample(prompt, {{"variant", name}}, static_cast<double>(s.prompt_tokens_total));
    add_sample(preempted, {{"variant", name}}, static_cast<double>(s.preemptions_total));
    add_sample(rejected, {{"variant", name}}, static_cast<double>(s.rejected_total));
  }
  std::vector<prometheus::MetricFamily> out;
  for (auto* f : {&info, &queue, &running, &batch, &blocks, &used, &usage, &weights, &generated,
                  &prompt, &preempted, &rejected}) {
    out.push_back(std::move(*f));
  }
  return out;
}

}  // namespace qgate
