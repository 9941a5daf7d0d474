// Route <-> JSON. See routing_json.h.
#include "gateway/routing_json.h"

#include <cmath>
#include <cstdint>

#include <boost/json.hpp>
#include <string>

namespace qgate {
namespace {

namespace json = boost::json;

Error bad(std::string_view path, std::string_view what) {
  return make_error(ErrorCode::kInvalidFormat, std::string(path) + ": " + std::string(what));
}

Result<const json::object*> as_object(const json::value& v, std::string_view path) {
  if (const auto* o = v.if_object()) return o;
  return bad(path, "must be an object");
}

Result<std::string> string_field(const json::object& o, std::string_view key, std::string_view path,
                                 bool required) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) {
    if (required) return bad(std::string(path) + "." + std::string(key), "is required");
    return std::string();
  }
  if (const auto* s = v->if_string()) return std::string(s->data(), s->size());
  return bad(std::string(path) + "." + std::string(key), "must be a string");
}

Result<double> number(const json::value& v, std::string_view path) {
  if (const auto* d = v.if_double()) return *d;
  if (const auto* i = v.if_int64()) return static_cast<double>(*i);
  if (const auto* u = v.if_uint64()) return static_cast<double>(*u);
  return bad(path, "must be a number");
}

Status check_keys(const json::object& o, std::initializer_list<std::string_view> allowed,
                  std::string_view path) {
  for (const auto& kv : o) {
    bool ok = false;
    for (auto a : allowed) ok = ok || kv.key() == a;
    if (!ok) return bad(std::string(path) + "." + std::string(kv.key()), "unknown key");
  }
  return Status::Ok();
}

}  // namespace

json::object route_to_json(const Route& route) {
  json::object weights;
  for (const auto& w : route.weights) {
    // Whole weights (the usual 80/10/10) print as integers, not Boost.JSON's 8E1.
    if (w.weight == std::floor(w.weight) && std::abs(w.weight) < 9.0e15) {
      weights[w.variant] = static_cast<int64_t>(w.weight);
    } else {
      weights[w.variant] = w.weight;
    }
  }
  json::array fallback;
  for (const auto& f : route.fallback) fallback.emplace_back(f);
  json::object sticky;
  sticky["header"] = route.sticky.header;
  sticky["user"] = route.sticky.user;
  json::object out;
  out["model"] = route.model;
  out["weights"] = std::move(weights);
  out["baseline"] = route.baseline;
  out["fallback"] = std::move(fallback);
  out["sticky"] = std::move(sticky);
  out["override_header"] = route.override_header;
  return out;
}

json::object routing_table_to_json(const RoutingTable& table) {
  json::array routes;
  for (const auto& r : table.routes) routes.emplace_back(route_to_json(r));
  json::object out;
  out["version"] = table.version;
  out["routes"] = std::move(routes);
  return out;
}

Result<std::vector<VariantWeight>> weights_from_json(const json::value& v, std::string_view path) {
  QGATE_ASSIGN_OR_RETURN(const json::object* o, as_object(v, path));
  std::vector<VariantWeight> out;
  out.reserve(o->size());
  for (const auto& kv : *o) {
    const std::string name(kv.key());
    QGATE_ASSIGN_OR_RETURN(const double w, number(kv.value(), std::string(path) + "." + name));
    out.push_back({name, w});
  }
  return out;
}

Result<Route> route_from_json(const json::value& v, std::string_view path) {
  QGATE_ASSIGN_OR_RETURN(const json::object* o, as_object(v, path));
  QGATE_TRY_STATUS(check_keys(
      *o, {"model", "weights", "baseline", "fallback", "sticky", "override_header"}, path));
  const std::string p(path);
  Route r;
  QGATE_ASSIGN_OR_RETURN(r.model, string_field(*o, "model", p, true));
  const json::value* weights = o->if_contains("weights");
  if (weights == nullptr) return bad(p + ".weights", "is required");
  QGATE_ASSIGN_OR_RETURN(r.weights, weights_from_json(*weights, p + ".weights"));
  QGATE_ASSIGN_OR_RETURN(r.baseline, string_field(*o, "baseline", p, true));
  if (const json::value* f = o->if_contains("fallback")) {
    const auto* arr = f->if_array();
    if (arr == nullptr) return bad(p + ".fallback", "must be an array of variant names");
    for (size_t i = 0; i < arr->size(); ++i) {
      const auto* s = (*arr)[i].if_string();
      if (s == nullptr) return bad(p + ".fallback[" + std::to_string(i) + "]", "must be a string");
      r.fallback.emplace_back(s->data(), s->size());
    }
  }
  if (const json::value* s = o->if_contains("sticky")) {
    QGATE_ASSIGN_OR_RETURN(const json::object* so, as_object(*s, p + ".sticky"));
    QGATE_TRY_STATUS(check_keys(*so, {"header", "user"}, p + ".sticky"));
    QGATE_ASSIGN_OR_RETURN(r.sticky.header, string_field(*so, "header", p + ".sticky", false));
    if (const json::value* u = so->if_contains("user")) {
      const bool* b = u->if_bool();
      if (b == nullptr) return bad(p + ".sticky.user", "must be true or false");
      r.sticky.user = *b;
    }
  }
  QGATE_ASSIGN_OR_RETURN(r.override_header, string_field(*o, "override_header", p, false));
  return r;
}

Result<RoutingTable> routing_table_from_json(const json::value& v, std::string_view path) {
  QGATE_ASSIGN_OR_RETURN(const json::object* o, as_object(v, path));
  QGATE_TRY_STATUS(check_keys(*o, {"version", "routes"}, path));
  const std::string p(path);
  RoutingTable t;
  const json::value* version = o->if_contains("version");
  if (version == nullptr) return bad(p + ".version", "is required");
  const std::string range = "must be an integer in [1, " + std::to_string(kMaxRoutingVersion) + "]";
  if (const auto* i = version->if_int64(); i != nullptr && *i >= 1) {
    t.version = static_cast<uint64_t>(*i);
  } else {
    return bad(p + ".version", range);  // also every uint64 above INT64_MAX
  }
  if (t.version > kMaxRoutingVersion) return bad(p + ".version", range);
  const json::value* routes = o->if_contains("routes");
  const json::array* arr = routes != nullptr ? routes->if_array() : nullptr;
  if (arr == nullptr) return bad(p + ".routes", "must be an array");
  for (size_t i = 0; i < arr->size(); ++i) {
    QGATE_ASSIGN_OR_RETURN(Route r,
                           route_from_json((*arr)[i], p + ".routes[" + std::to_string(i) + "]"));
    t.routes.push_back(std::move(r));
  }
  return t;
}

}  // namespace qgate
