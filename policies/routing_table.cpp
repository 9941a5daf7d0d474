// Routing table validation and copy-on-write edits. See routing_table.h for the contract.
#include "policies/routing_table.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <unordered_set>

namespace qgate {
namespace {

bool is_known(std::span<const std::string> known, std::string_view name) {
  return std::find(known.begin(), known.end(), name) != known.end();
}

Error invalid(std::string_view path, std::string_view what) {
  return make_error(ErrorCode::kInvalidArgument, std::string(path) + ": " + std::string(what));
}

std::string known_list(std::span<const std::string> known) {
  std::string out;
  for (const auto& k : known) out += (out.empty() ? "" : ", ") + k;
  return out.empty() ? "none configured" : "known: " + out;
}

// Shortest text that reads back as the same double: 80 stays "80", 0.1 stays "0.1".
std::string format_weight(double w) {
  std::ostringstream os;
  os.precision(15);
  os << w;
  return os.str();
}

}  // namespace

double Route::weight_of(std::string_view variant) const {
  for (const auto& w : weights) {
    if (w.variant == variant) return w.weight;
  }
  return 0.0;
}

bool Route::serves(std::string_view variant) const {
  if (baseline == variant) return true;
  for (const auto& w : weights) {
    if (w.variant == variant) return true;
  }
  return std::find(fallback.begin(), fallback.end(), variant) != fallback.end();
}

const Route* RoutingTable::find(std::string_view model) const {
  for (const auto& r : routes) {
    if (r.model == model) return &r;
  }
  return nullptr;
}

Status validate_route(const Route& route, std::span<const std::string> known_variants,
                      std::string_view path) {
  const std::string p(path);
  if (route.model.empty()) return invalid(p + ".model", "must not be empty");
  if (route.weights.empty()) return invalid(p + ".weights", "must name at least one variant");
  std::unordered_set<std::string_view> seen;
  double total = 0.0;
  for (const auto& w : route.weights) {
    const std::string wp = p + ".weights." + w.variant;
    if (!is_known(known_variants, w.variant)) {
      return invalid(wp, "unknown variant (" + known_list(known_variants) + ")");
    }
    if (!seen.insert(w.variant).second) return invalid(wp, "variant listed twice");
    if (!(w.weight >= 0.0) || !std::isfinite(w.weight)) {
      return invalid(wp, "must be a finite number >= 0");
    }
    total += w.weight;
  }
  if (!(total > 0.0)) return invalid(p + ".weights", "at least one weight must be > 0");
  if (!std::isfinite(total)) return invalid(p + ".weights", "the weights' sum overflows");
  if (route.baseline.empty()) return invalid(p + ".baseline", "must name a variant");
  if (!is_known(known_variants, route.baseline)) {
    return invalid(p + ".baseline",
                   "unknown variant '" + route.baseline + "' (" + known_list(known_variants) + ")");
  }
  seen.clear();
  for (size_t i = 0; i < route.fallback.size(); ++i) {
    const std::string fp = p + ".fallback[" + std::to_string(i) + "]";
    if (!is_known(known_variants, route.fallback[i])) {
      return invalid(
          fp, "unknown variant '" + route.fallback[i] + "' (" + known_list(known_variants) + ")");
    }
    if (!seen.insert(route.fallback[i]).second) return invalid(fp, "variant listed twice");
  }
  return Status::Ok();
}

Status validate_routes(std::span<const Route> routes, std::span<const std::string> known_variants,
                       std::string_view path) {
  if (routes.empty()) return invalid(path, "at least one route is required");
  std::unordered_set<std::string_view> models;
  for (size_t i = 0; i < routes.size(); ++i) {
    const std::string rp = std::string(path) + "[" + std::to_string(i) + "]";
    QGATE_TRY_STATUS(validate_route(routes[i], known_variants, rp));
    if (!models.insert(routes[i].model).second) {
      return invalid(rp + ".model", "duplicate route for model '" + routes[i].model + "'");
    }
  }
  return Status::Ok();
}

Result<RoutingTable> with_split(const RoutingTable& table, std::string_view model,
                                std::vector<VariantWeight> weights,
                                std::span<const std::string> known_variants) {
  RoutingTable next = table;
  for (size_t i = 0; i < next.routes.size(); ++i) {
    Route& r = next.routes[i];
    if (r.model != model) continue;
    r.weights = std::move(weights);
    QGATE_TRY_STATUS(validate_route(r, known_variants, "routes[" + std::to_string(i) + "]"));
    return next;
  }
  return make_error(ErrorCode::kNotFound, "no route for model '" + std::string(model) + "'");
}

Result<RoutingTable> with_baseline_only(const RoutingTable& table, std::string_view model) {
  RoutingTable next = table;
  bool found = false;
  for (Route& r : next.routes) {
    if (!model.empty() && r.model != model) continue;
    found = true;
    bool has_baseline = false;
    for (auto& w : r.weights) {
      has_baseline = has_baseline || w.variant == r.baseline;
      w.weight = w.variant == r.baseline ? 100.0 : 0.0;
    }
    if (!has_baseline) r.weights.push_back({r.baseline, 100.0});
  }
  if (!found) {
    return make_error(ErrorCode::kNotFound, "no route for model '" + std::string(model) + "'");
  }
  return next;
}

std::string describe_split(std::span<const VariantWeight> weights) {
  std::string out;
  for (const auto& w : weights) {
    if (!out.empty()) out += ' ';
    out += w.variant + "=" + format_weight(w.weight);
  }
  return out;
}

}  // namespace qgate
