// The CompletionService behind `qgate serve`: routes each request to a variant's engine worker by
// the current routing table, falls back along the route's chain before the first byte, and
// feeds every outcome into the outlier detector. Also runs the active health probes.
//
// Threading: handle() runs on an HTTP strand and never blocks; engine events arrive on the
// workers' scheduler threads; first-byte timeouts and probes run on the service's own timer
// thread. Per-request state is guarded by its own mutex, so a late event from an attempt that
// was already abandoned (timed out, failed over) is recognised and dropped.
//
// Lifetime: the workers, store, detector and budget must outlive the service. Destroying the
// service stops the timer thread; requests still in flight keep their state alive through the
// sinks the workers hold, and end when the workers shut down.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/worker.h"
#include "gateway/completion_service.h"
#include "gateway/gateway_metrics.h"
#include "gateway/response_index.h"
#include "gateway/routing_store.h"
#include "gateway/shadow_scorer.h"
#include "policies/outlier_detector.h"
#include "policies/retry_budget.h"

namespace qgate {

struct RoutedServiceOptions {
  std::chrono::steady_clock::duration first_byte_timeout = std::chrono::seconds(30);
  // The whole request, fallbacks and streaming included: past it the generation is cancelled and
  // the client gets a 504 (or, once streaming, an SSE error event). 0: no deadline.
  std::chrono::steady_clock::duration request_timeout = std::chrono::minutes(10);
  std::chrono::steady_clock::duration probe_interval = std::chrono::seconds(10);  // 0: no probes
  std::chrono::steady_clock::duration probe_timeout = std::chrono::seconds(5);
  uint64_t seed = 0;  // for the weighted choice of requests without a sticky key
};

// What the service reports besides answering; every pointer is optional and must outlive the
// service.
struct ServiceTelemetry {
  GatewayMetrics* metrics = nullptr;   // docs/METRICS.md, recorded as requests progress
  ResponseIndex* responses = nullptr;  // successful responses, for POST /v1/feedback
  ShadowScorer* shadow = nullptr;      // gets the sampled responses to re-score
  double shadow_sample_ratio = 0.0;
  bool shadow_include_baseline = false;
};

// Per-variant counters the admin API reads.
struct VariantTraffic {
  uint64_t requests = 0;   // attempts submitted to the variant
  uint64_t served = 0;     // requests it answered (finished normally)
  uint64_t failures = 0;   // engine errors, timeouts, refusals
  uint64_t fallbacks_from = 0;
};

class RoutedCompletionService : public CompletionService {
 public:
  RoutedCompletionService(std::map<std::string, Worker*, std::less<>> workers,
                          RoutingStore& store, OutlierDetector& detector, RetryBudget& budget,
                          RoutedServiceOptions options, ServiceTelemetry telemetry = {});
  ~RoutedCompletionService() override;

  void handle(ApiRequest request, RequestMeta meta,
              std::shared_ptr<CompletionResponder> responder) override;
  std::vector<ModelInfo> list_models() override;

  std::map<std::string, VariantTraffic> traffic() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace qgate
