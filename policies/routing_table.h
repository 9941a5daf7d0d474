// The routing table: for each public model name, how its traffic splits between variants.
//
// A RoutingTable is a value. The gateway never mutates one in place: an admin change builds a new
// table (with_split / with_baseline_only), validates it, and publishes it as an immutable
// `std::shared_ptr<const RoutingTable>` snapshot (gateway/routing_store.h). A request holds the
// snapshot it started with, so a concurrent change never alters a request half-way.
//
// Validation names the offending field by its path, e.g.
// `routes[0].weights.smollm2-gptq: must be a finite number >= 0`, so the same messages serve the
// YAML config, the durable state file and the admin API.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/status.h"

namespace qgate {

struct VariantWeight {
  std::string variant;
  double weight = 0.0;  // >= 0; relative (80/10/10 and 0.8/0.1/0.1 are the same split)
  bool operator==(const VariantWeight&) const = default;
};

// Where the sticky key comes from. With both set the header wins and `user` is the fallback.
struct StickyPolicy {
  std::string header;  // request header carrying the key (e.g. "x-session-id"); empty = unused
  bool user = false;   // use the request body's `user` field
  bool enabled() const { return !header.empty() || user; }
  bool operator==(const StickyPolicy&) const = default;
};

struct Route {
  std::string model;                   // public model name clients send
  std::vector<VariantWeight> weights;  // the split; order is kept for display only
  std::string baseline;                // the reference variant ("all traffic to baseline")
  std::vector<std::string> fallback;   // tried in order after the chosen variant fails
  StickyPolicy sticky;
  std::string override_header;  // header that forces a variant; empty = not allowed

  // Weight of `variant` in the split, 0 when absent.
  double weight_of(std::string_view variant) const;
  // Whether `variant` belongs to this route: in the split (any weight), the baseline or the
  // fallback chain. Only such variants may be forced through the override header.
  bool serves(std::string_view variant) const;
  bool operator==(const Route&) const = default;
};

// The largest routing version: 2^53 - 1, the largest integer every JSON reader (JavaScript's
// included) keeps exactly, so clients of the admin API and the state file agree on versions.
inline constexpr uint64_t kMaxRoutingVersion = (uint64_t{1} << 53) - 1;

struct RoutingTable {
  uint64_t version =
      0;  // assigned by the store; 1 = the config file's routes; <= kMaxRoutingVersion
  std::vector<Route> routes;

  const Route* find(std::string_view model) const;  // nullptr when no route has that name
};

// Checks one route against the set of configured variants. `path` prefixes messages
// ("routes[2]"). InvalidArgument naming the field for: an empty model name; an empty split;
// an unknown or duplicated variant in the split or the fallback chain; a negative, NaN or
// infinite weight; all weights zero; an unknown baseline.
Status validate_route(const Route& route, std::span<const std::string> known_variants,
                      std::string_view path);

// validate_route for every route, plus: at least one route, and model names unique.
Status validate_routes(std::span<const Route> routes, std::span<const std::string> known_variants,
                       std::string_view path = "routes");

// The table with `model`'s split replaced by `weights` (the whole split; variants left out get
// no traffic), validated. NotFound for an unknown model. The version is left for the caller.
Result<RoutingTable> with_split(const RoutingTable& table, std::string_view model,
                                std::vector<VariantWeight> weights,
                                std::span<const std::string> known_variants);

// The table with all traffic of `model` -- or of every route when `model` is empty -- sent to
// the route's baseline (other variants kept in the split at weight 0). NotFound for an unknown
// model.
Result<RoutingTable> with_baseline_only(const RoutingTable& table, std::string_view model);

// "smollm2-fp16=80 smollm2-gptq=10 smollm2-awq=10": for history entries and logs.
std::string describe_split(std::span<const VariantWeight> weights);

}  // namespace qgate
