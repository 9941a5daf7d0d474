// JSON form of routes and routing tables, shared by the durable routing store and the admin API.
//
//   route: {"model": "smollm2", "weights": {"smollm2-fp16": 80, "smollm2-gptq": 20},
//           "baseline": "smollm2-fp16", "fallback": ["smollm2-fp16"],
//           "sticky": {"header": "x-session-id", "user": true}, "override_header":
//           "x-qgate-variant"}
//   table: {"version": 3, "routes": [route, ...]}
//
// Parsing checks structure and types only, naming the JSON path of the first problem
// (`routes[1].weights.smollm2-gptq: must be a number`); semantic checks (known variants, weights
// not all zero) are validate_route()'s (policies/routing_table.h). Pure functions; no exceptions.
#pragma once

#include <boost/json/value.hpp>
#include <string_view>
#include <vector>

#include "kernels/status.h"
#include "policies/routing_table.h"

namespace qgate {

boost::json::object route_to_json(const Route& route);
boost::json::object routing_table_to_json(const RoutingTable& table);

Result<Route> route_from_json(const boost::json::value& json, std::string_view path);
Result<RoutingTable> routing_table_from_json(const boost::json::value& json, std::string_view path);

// A split as the admin API receives it: {"smollm2-fp16": 70, "smollm2-gptq": 30}.
Result<std::vector<VariantWeight>> weights_from_json(const boost::json::value& json,
                                                     std::string_view path);

}  // namespace qgate
