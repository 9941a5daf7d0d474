// Scrape-time collectors for what `qgate serve` can read directly from its owners: the routing
// table, the variants' health and the engine workers' state. Reading at scrape time means these
// gauges are never stale and cost nothing between scrapes. Names: docs/METRICS.md.
//
// Threading: each function only calls the owners' thread-safe readers (RoutingStore::current(),
// OutlierDetector::health(), Worker::stats()); call from any thread.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <prometheus/metric_family.h>

#include "engine/worker.h"
#include "policies/outlier_detector.h"
#include "policies/routing_table.h"

namespace qgate {

// qgate_routing_table_version, qgate_route_weight_ratio, qgate_route_baseline.
std::vector<prometheus::MetricFamily> routing_table_metrics(const RoutingTable& table);

// qgate_variant_state (one series per state), qgate_variant_healthy, qgate_variant_ejections_total
// for each of `variants`.
std::vector<prometheus::MetricFamily> variant_health_metrics(const OutlierDetector& detector,
                                                             const std::vector<std::string>& variants);

struct WorkerDescription {
  const Worker* worker = nullptr;
  std::string device;  // "cpu", "cuda:0", ...
  std::string model;   // LlamaModel::describe()
};

// qgate_worker_* for each worker, by variant name.
std::vector<prometheus::MetricFamily> worker_metrics(
    const std::map<std::string, WorkerDescription, std::less<>>& workers);

}  // namespace qgate
