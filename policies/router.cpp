// Route planning: override -> sticky -> weighted, then the fallback chain. See router.h.
#include "policies/router.h"

#include <algorithm>

#include "policies/weighted_choice.h"

namespace qgate {
namespace {

std::optional<std::string_view> read_header(const RouteRequest& request, std::string_view name) {
  if (name.empty() || !request.header) return std::nullopt;
  auto v = request.header(name);
  if (!v || v->empty()) return std::nullopt;  // an empty value carries no intent
  return v;
}

std::optional<std::string_view> sticky_key(const Route& route, const RouteRequest& request) {
  if (auto h = read_header(request, route.sticky.header)) return h;
  if (route.sticky.user && !request.user.empty()) return request.user;
  return std::nullopt;
}

// The chosen split variant, or nullopt when no positive-weight variant is available.
Result<std::optional<std::string>> pick_from_split(const Route& route,
                                                   std::optional<std::string_view> key, double u01,
                                                   const VariantAvailable& available) {
  std::vector<WeightedCandidate> candidates;
  candidates.reserve(route.weights.size());
  for (const auto& w : route.weights) {
    if (w.weight > 0.0 && available(w.variant)) candidates.push_back({w.variant, w.weight});
  }
  if (candidates.empty()) return std::optional<std::string>();
  size_t index = 0;
  if (key) {
    QGATE_ASSIGN_OR_RETURN(index, rendezvous_pick(candidates, *key));
  } else {
    std::vector<double> weights;
    weights.reserve(candidates.size());
    for (const auto& c : candidates) weights.push_back(c.weight);
    QGATE_ASSIGN_OR_RETURN(index, weighted_pick(weights, u01));
  }
  return std::optional<std::string>(std::string(candidates[index].id));
}

}  // namespace

const char* pick_reason_name(PickReason reason) {
  switch (reason) {
    case PickReason::kOverride:
      return "override";
    case PickReason::kSticky:
      return "sticky";
    case PickReason::kWeighted:
      return "weighted";
    case PickReason::kFallback:
      return "fallback";
  }
  return "unknown";
}

Result<RoutePlan> plan_route(const Route& route, const RouteRequest& request,
                             const VariantAvailable& available, int max_attempts) {
  QGATE_CHECK(max_attempts >= 1, "max_attempts must be >= 1");
  QGATE_CHECK(static_cast<bool>(available), "an availability predicate is required");
  if (!(request.u01 >= 0.0 && request.u01 < 1.0)) {
    return make_error(ErrorCode::kInvalidArgument, "u01 must be in [0, 1)");
  }
  RoutePlan plan;
  auto add = [&](const std::string& v) {
    if (static_cast<int>(plan.attempts.size()) >= max_attempts) return;
    if (std::find(plan.attempts.begin(), plan.attempts.end(), v) != plan.attempts.end()) return;
    if (!available(v)) return;
    plan.attempts.push_back(v);
  };

  std::optional<std::string> chosen;
  if (auto forced = read_header(request, route.override_header)) {
    if (!route.serves(*forced)) {
      return make_error(ErrorCode::kInvalidArgument,
                        "header '" + route.override_header + "': '" + std::string(*forced) +
                            "' is not a variant of model '" + route.model + "'");
    }
    plan.reason = PickReason::kOverride;
    if (available(*forced)) chosen = std::string(*forced);
  } else {
    const auto key = sticky_key(route, request);
    plan.reason = key ? PickReason::kSticky : PickReason::kWeighted;
    QGATE_ASSIGN_OR_RETURN(chosen, pick_from_split(route, key, request.u01, available));
  }
  if (chosen) {
    add(*chosen);
  } else {
    plan.reason = PickReason::kFallback;
  }
  for (const auto& v : route.fallback) add(v);
  if (plan.attempts.empty()) {
    return make_error(ErrorCode::kResourceExhausted,
                      "model '" + route.model + "': no variant available (all drained or ejected)");
  }
  return plan;
}

}  // namespace qgate
