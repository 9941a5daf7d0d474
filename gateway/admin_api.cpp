#include "gateway/admin_api.h"

#include <algorithm>
#include <boost/json.hpp>

#include "gateway/api_errors.h"
#include "gateway/json_parse.h"
#include "gateway/routing_json.h"

namespace qgate {

namespace json = boost::json;
namespace http = boost::beast::http;

namespace {

// Constant-time comparison so the token cannot be recovered from response timing.
bool same_token(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  }
  return diff == 0;
}

HttpResponse json_response(const json::value& v, unsigned status = 200) {
  HttpResponse r;
  r.status = status;
  r.body = json::serialize(v);
  return r;
}

HttpResponse error_response(const Error& e, std::string param = {}) {
  return api_error_response(ApiError::from_error(e, std::move(param)));
}

// Admin request bodies are small JSON objects from operators' tools, read into boost::json values
// because the routing types convert from those (routing_json.h).
Result<json::object> body_object(const HttpRequest& req) {
  auto parsed = parse_json(req.message.body());
  if (!parsed.ok()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "body: invalid JSON: " + parsed.error().message());
  }
  json::value v = std::move(parsed).value();
  if (!v.is_object()) return make_error(ErrorCode::kInvalidArgument, "body: must be a JSON object");
  return std::move(v.as_object());
}

Result<std::string> string_member(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_string()) {
    return make_error(ErrorCode::kInvalidArgument, std::string(key) + ": must be a string");
  }
  return std::string(v->as_string());
}

// The x-qgate-actor header, cut to at most 128 bytes at a character boundary (a cut through a
// character would be ill-formed UTF-8; found by fuzz_admin_api). The store makes any other bytes
// valid UTF-8 before they reach the state file.
std::string actor(const HttpRequest& req) {
  std::string_view who = req.header("x-qgate-actor");
  if (who.empty()) return "admin";
  size_t end = std::min<size_t>(who.size(), 128);
  while (end > 0 && end < who.size() && (static_cast<uint8_t>(who[end]) & 0xC0) == 0x80) --end;
  return std::string(who.substr(0, end));
}

json::object worker_stats_json(const WorkerStats& s) {
  json::object o;
  o["queued"] = s.queued;
  o["running"] = s.running;
  o["kv_blocks_used"] = s.kv_blocks_used;
  o["kv_blocks_total"] = s.kv_blocks_total;
  o["generated_tokens_total"] = s.generated_tokens_total;
  o["prompt_tokens_total"] = s.prompt_tokens_total;
  o["preemptions_total"] = s.preemptions_total;
  o["rejected_total"] = s.rejected_total;
  o["decode_tokens_per_second"] = s.decode_tokens_per_second;
  o["weight_bytes"] = s.weight_bytes;
  return o;
}

json::object variant_json(const AdminApiContext& c, const std::string& name, Worker* worker) {
  const VariantHealth h = c.detector->health(name);
  json::object o;
  o["name"] = name;
  o["model"] = worker->model().path;
  o["health"] = health_state_name(h.state);
  o["drained"] = h.drained;
  o["consecutive_failures"] = h.consecutive_failures;
  o["ejections_total"] = h.ejections_total;
  o["ejection_remaining_ms"] =
      std::chrono::duration_cast<std::chrono::milliseconds>(h.ejection_remaining).count();
  o["worker"] = worker_stats_json(worker->stats());
  if (c.service != nullptr) {
    const auto traffic = c.service->traffic();
    if (auto it = traffic.find(name); it != traffic.end()) {
      json::object t;
      t["requests"] = it->second.requests;
      t["served"] = it->second.served;
      t["failures"] = it->second.failures;
      t["fallbacks_from"] = it->second.fallbacks_from;
      o["traffic"] = std::move(t);
    }
  }
  return o;
}

HttpResponse table_response(const Result<std::shared_ptr<const RoutingTable>>& table) {
  if (!table.ok()) return error_response(table.error());
  return json_response(routing_table_to_json(*table.value()));
}

}  // namespace

void add_admin_routes(HttpRouter& router, AdminApiContext context) {
  auto c = std::make_shared<const AdminApiContext>(std::move(context));
  // Every admin handler checks the bearer token before anything else.
  auto guarded = [c](auto fn) {
    return [c, fn](const HttpRequest& req) -> HttpResponse {
      std::string_view auth = req.header("authorization");
      constexpr std::string_view kBearer = "Bearer ";
      if (auth.size() <= kBearer.size() || auth.substr(0, kBearer.size()) != kBearer ||
          !same_token(auth.substr(kBearer.size()), c->token)) {
        HttpResponse r = api_error_response(ApiError::unauthorized("missing or wrong admin token"));
        r.headers.emplace_back("WWW-Authenticate", "Bearer");
        return r;
      }
      return fn(req);
    };
  };

  router.add_simple(http::verb::get, "/admin/routes", guarded([c](const HttpRequest&) {
    return json_response(routing_table_to_json(*c->store->current()));
  }));

  router.add_simple(http::verb::get, "/admin/variants", guarded([c](const HttpRequest&) {
    json::array arr;
    for (const auto& [name, worker] : c->workers) arr.push_back(variant_json(*c, name, worker));
    json::object o;
    o["variants"] = std::move(arr);
    return json_response(o);
  }));

  router.add_simple(http::verb::get, "/admin/history", guarded([c](const HttpRequest&) {
    json::array arr;
    for (const RoutingChange& ch : c->store->history()) arr.push_back(routing_change_to_json(ch));
    json::object o;
    o["history"] = std::move(arr);
    return json_response(o);
  }));

  router.add_simple(http::verb::post, "/admin/split", guarded([c](const HttpRequest& req) {
    auto body = body_object(req);
    if (!body.ok()) return error_response(body.error());
    auto model = string_member(body.value(), "model");
    if (!model.ok()) return error_response(model.error(), "model");
    const json::value* w = body.value().if_contains("weights");
    if (w == nullptr) {
      return error_response(make_error(ErrorCode::kInvalidArgument, "weights: is required"),
                            "weights");
    }
    auto weights = weights_from_json(*w, "weights");
    if (!weights.ok()) return error_response(weights.error(), "weights");
    return table_response(c->store->set_split(model.value(), weights.value(), actor(req)));
  }));

  router.add_simple(http::verb::post, "/admin/rollback", guarded([c](const HttpRequest& req) {
    auto body = body_object(req);
    if (!body.ok()) return error_response(body.error());
    auto to = string_member(body.value(), "to");
    if (!to.ok()) return error_response(to.error(), "to");
    if (to.value() == "previous") return table_response(c->store->rollback_to_previous(actor(req)));
    if (to.value() == "baseline") {
      std::string model;
      if (body.value().contains("model")) {
        auto m = string_member(body.value(), "model");
        if (!m.ok()) return error_response(m.error(), "model");
        model = m.value();
      }
      return table_response(c->store->rollback_to_baseline(model, actor(req)));
    }
    if (to.value() == "version") {
      const json::value* v = body.value().if_contains("version");
      if (v == nullptr || !v->is_int64() || v->as_int64() < 1) {
        return error_response(
            make_error(ErrorCode::kInvalidArgument, "version: must be a positive integer"),
            "version");
      }
      return table_response(
          c->store->rollback_to_version(static_cast<uint64_t>(v->as_int64()), actor(req)));
    }
    return error_response(make_error(ErrorCode::kInvalidArgument,
                                     "to: must be \"previous\", \"version\" or \"baseline\""),
                          "to");
  }));

  auto drain_handler = [c](bool drained) {
    return [c, drained](const HttpRequest& req) {
      auto body = body_object(req);
      if (!body.ok()) return error_response(body.error());
      auto variant = string_member(body.value(), "variant");
      if (!variant.ok()) return error_response(variant.error(), "variant");
      auto it = c->workers.find(variant.value());
      if (it == c->workers.end()) {
        return error_response(
            make_error(ErrorCode::kNotFound, "variant " + variant.value() + " is not configured"),
            "variant");
      }
      // Durable first, then live: a crash in between restores the drained state on restart.
      if (Status st = c->store->set_drained(variant.value(), drained, actor(req)); !st.ok()) {
        return error_response(st.error(), "variant");
      }
      c->detector->set_drained(variant.value(), drained);
      return json_response(variant_json(*c, it->first, it->second));
    };
  };
  router.add_simple(http::verb::post, "/admin/drain", guarded(drain_handler(true)));
  router.add_simple(http::verb::post, "/admin/enable", guarded(drain_handler(false)));

  router.add_simple(http::verb::post, "/admin/quality/reload", guarded([c](const HttpRequest&) {
    if (!c->reload_quality) {
      return error_response(make_error(ErrorCode::kNotFound,
                                       "no eval results file is configured (quality.eval_results)"));
    }
    auto body = c->reload_quality();
    if (!body.ok()) return error_response(body.error());
    HttpResponse r;
    r.body = std::move(body).value();
    return r;
  }));

  if (c->allow_faults) {
    router.add_simple(http::verb::post, "/admin/fault", guarded([c](const HttpRequest& req) {
      auto body = body_object(req);
      if (!body.ok()) return error_response(body.error());
      auto variant = string_member(body.value(), "variant");
      if (!variant.ok()) return error_response(variant.error(), "variant");
      auto fault = string_member(body.value(), "fault");
      if (!fault.ok()) return error_response(fault.error(), "fault");
      auto it = c->workers.find(variant.value());
      if (it == c->workers.end()) {
        return error_response(
            make_error(ErrorCode::kNotFound, "variant " + variant.value() + " is not configured"),
            "variant");
      }
      WorkerFault f;
      if (fault.value() == "none") f = WorkerFault::kNone;
      else if (fault.value() == "fail") f = WorkerFault::kFail;
      else if (fault.value() == "hang") f = WorkerFault::kHang;
      else if (fault.value() == "overload") f = WorkerFault::kOverload;
      else {
        return error_response(make_error(ErrorCode::kInvalidArgument,
                                         "fault: must be none, fail, hang or overload"),
                              "fault");
      }
      it->second->set_fault(f);
      return json_response(variant_json(*c, it->first, it->second));
    }));
  }
}

}  // namespace qgate
