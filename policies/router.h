// Picks the variants one request will try, in order.
//
// plan_route() is a pure function of the route, the request's routing inputs and the variants'
// availability: no state, no locks, safe from any thread. The first entry of the plan is chosen by
//
//   1. override: the route's override_header names a variant of the route (testing);
//   2. sticky:   the route's sticky header, else the request's `user` field (when enabled), is
//                hashed onto the available positive-weight variants by weighted rendezvous
//                hashing -- the same key keeps its variant while the split is unchanged, a weight
//                change moves only the keys it must, and a variant that leaves (drained, ejected)
//                takes only its own keys elsewhere, which come back when it returns;
//   3. weighted: otherwise request.u01 picks among the available positive-weight variants.
//
// The route's fallback chain follows, minus duplicates and unavailable variants; the plan is cut
// to max_attempts entries. The gateway tries attempts[0], and on a failure, timeout, overload or
// refused admission before the first byte moves to the next one, each move taking a
// RetryBudget::try_start_retry() token (policies/retry_budget.h).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/status.h"
#include "policies/routing_table.h"

namespace qgate {

// Returns a header's value by name (case-insensitive is the caller's business), or nullopt. The
// view must stay valid for the duration of plan_route().
using HeaderLookup = std::function<std::optional<std::string_view>(std::string_view name)>;
// Whether a variant can take a request now (e.g. OutlierDetector::routable).
using VariantAvailable = std::function<bool(std::string_view variant)>;

struct RouteRequest {
  HeaderLookup header;    // may be empty: no headers
  std::string_view user;  // the body's `user` field; empty when absent
  double u01 = 0.0;       // uniform draw in [0, 1) for the weighted choice (the caller's RNG)
};

enum class PickReason { kOverride, kSticky, kWeighted, kFallback };
const char* pick_reason_name(PickReason reason);  // "override", "sticky", "weighted", "fallback"

struct RoutePlan {
  std::vector<std::string> attempts;  // never empty; attempts[0] is the chosen variant
  // How attempts[0] was chosen; kFallback when no split variant was available (or the forced
  // one was not) and the plan starts in the fallback chain.
  PickReason reason = PickReason::kWeighted;
};

// InvalidArgument when the override header names a variant the route does not serve, or u01 is
// outside [0, 1). ResourceExhausted ("no variant available") when every candidate is drained or
// ejected. max_attempts >= 1 (QGATE_CHECK).
Result<RoutePlan> plan_route(const Route& route, const RouteRequest& request,
                             const VariantAvailable& available, int max_attempts);

}  // namespace qgate
