#include "gateway/feedback_api.h"

#include <boost/json.hpp>

#include "gateway/json_parse.h"

namespace qgate {

ApiResult<FeedbackRequest> parse_feedback_request(std::string_view body) {
  auto parsed = parse_json(body);  // refuses a repeated name: one reading of "score" only
  if (!parsed.ok()) {
    return ApiError::invalid_request(
        "", "The request body is not valid JSON: " + parsed.error().message());
  }
  const boost::json::object* o = parsed->if_object();
  if (o == nullptr) return ApiError::invalid_request("", "The request body must be a JSON object");
  FeedbackRequest r;
  const boost::json::value* id = o->if_contains("id");
  if (id == nullptr || !id->is_string() || id->get_string().empty()) {
    return ApiError::invalid_request("id", "'id' must be the non-empty id of a response");
  }
  r.id = std::string(id->get_string());
  const boost::json::value* score = o->if_contains("score");
  if (score != nullptr && score->is_number()) r.score = score->to_number<double>();
  if (score == nullptr || !score->is_number() || !(r.score >= -1.0 && r.score <= 1.0)) {
    return ApiError::invalid_request("score", "'score' must be a number in [-1, 1]");
  }
  return r;
}

void add_feedback_route(HttpRouter& router, ResponseIndex& index, GatewayMetrics& metrics) {
  router.add_simple(boost::beast::http::verb::post, "/v1/feedback",
                    [&index, &metrics](const HttpRequest& request) {
    auto parsed = parse_feedback_request(request.message.body());
    if (!parsed.ok()) return api_error_response(parsed.error());
    const FeedbackRequest& f = parsed.value();
    auto found = index.take_feedback(f.id);
    if (!found.ok()) {
      ApiError e = ApiError::invalid_request("id", found.error().message());
      if (found.error().code() == ErrorCode::kNotFound) {
        e.status = 404;
        e.code = "response_not_found";
      } else {
        e.status = 409;
        e.code = "feedback_already_recorded";
      }
      return api_error_response(e);
    }
    metrics.feedback(found.value().route, found.value().variant, f.score);
    boost::json::object o;
    o["id"] = f.id;
    o["object"] = "feedback";
    o["route"] = found.value().route;
    o["variant"] = found.value().variant;
    // Whole scores print as integers (1, not 1E0), the way the client most likely sent them.
    if (f.score == static_cast<double>(static_cast<int64_t>(f.score))) {
      o["score"] = static_cast<int64_t>(f.score);
    } else {
      o["score"] = f.score;
    }
    HttpResponse r;
    r.body = boost::json::serialize(o);
    return r;
  });
}

}  // namespace qgate
