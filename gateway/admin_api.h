// The admin API on its own listener: read the routing table, variants and history; change a
// route's split; roll back; drain and enable variants. Every request needs
// `Authorization: Bearer <token>` (401 otherwise, compared in constant time); every change goes
// through the RoutingStore, which writes it durably before publishing it.
//
//   GET  /admin/routes                      current table: {"version", "routes": [...]}
//   GET  /admin/variants                    per variant: health, drained, worker stats, traffic
//   GET  /admin/history                     [{"version","who","when_unix_ms","action","what"}]
//   POST /admin/split     {"model": "smollm2", "weights": {"smollm2-fp16": 70, ...}}
//   POST /admin/rollback  {"to": "previous"} | {"to": "version", "version": 3}
//                         | {"to": "baseline", "model": "smollm2"}   (model optional: all routes)
//   POST /admin/drain     {"variant": "smollm2-gptq"}
//   POST /admin/enable    {"variant": "smollm2-gptq"}
//   POST /admin/quality/reload              re-reads the configured `qgate eval` results into the
//                                         qgate_eval_* gauges: {"variants": [...], "unmatched": [...]}
//   POST /admin/fault     {"variant": "...", "fault": "none|fail|hang|overload"}  (only when the
//                         server was started with test faults enabled; 404 otherwise)
// Changes answer with the new table (or the variant's state). The actor recorded in the history
// is the `x-qgate-actor` header (default "admin").
//
// Threading: handlers are synchronous and quick (a store write is one small fsync'd file).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "engine/worker.h"
#include "gateway/http_server.h"
#include "gateway/routed_service.h"
#include "gateway/routing_store.h"
#include "policies/outlier_detector.h"

namespace qgate {

struct AdminApiContext {
  std::string token;  // non-empty
  RoutingStore* store = nullptr;
  OutlierDetector* detector = nullptr;
  RoutedCompletionService* service = nullptr;
  std::map<std::string, Worker*, std::less<>> workers;
  bool allow_faults = false;
  // Re-reads the offline eval results and publishes them; the answer body on success. Unset: the
  // route answers 404 (no results file configured).
  std::function<Result<std::string>()> reload_quality;
};

void add_admin_routes(HttpRouter& router, AdminApiContext context);

}  // namespace qgate
