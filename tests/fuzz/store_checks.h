// What the routing-store fuzz targets share: the store they open and the check that two stores
// hold the same state.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "gateway/routing_store.h"
#include "tests/fuzz/fuzz_support.h"

namespace qgate::fuzz {

inline const std::vector<std::string> kStoreVariants = {"m-fp16", "m-gptq", "m-awq"};

// A store over the variants above in fuzz::state_dir(dir_name), with a fixed clock.
inline RoutingStoreOptions store_options(const char* dir_name, std::vector<Route> initial_routes) {
  RoutingStoreOptions o;
  o.dir = state_dir(dir_name);
  o.variants = kStoreVariants;
  o.initial_routes = std::move(initial_routes);
  o.now_unix_ms = [] { return int64_t{1'700'000'000'000}; };
  return o;
}

// `reopened` is what opening `live`'s directory again gave: a restart must restore it exactly.
inline void check_same_state(const RoutingStore& live, const RoutingStore& reopened) {
  FUZZ_CHECK(live.current()->version == reopened.current()->version,
             "version %llu reopened as %llu",
             static_cast<unsigned long long>(live.current()->version),
             static_cast<unsigned long long>(reopened.current()->version));
  FUZZ_CHECK(live.current()->routes == reopened.current()->routes,
             "the routes changed on reopening");
  FUZZ_CHECK(live.history() == reopened.history(), "the history changed on reopening");
  FUZZ_CHECK(live.drained() == reopened.drained(), "the drained set changed on reopening");
}

}  // namespace qgate::fuzz
