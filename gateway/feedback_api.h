// POST /v1/feedback on the API listener: a client rates a response it got.
//
//   request  {"id": "chatcmpl-...", "score": 1}        score: a number in [-1, 1]
//                                                      (thumbs: 1 / -1; a 5-star scale maps in)
//   200      {"id": "...", "object": "feedback", "route": "smollm2", "variant": "smollm2-gptq",
//             "score": 1}
//   400      invalid JSON, a missing/ill-typed field, a score outside [-1, 1] or not finite
//   404      the id is not among the recent responses (ResponseIndex)
//   409      the response already took feedback
// Errors are OpenAI-style JSON. Each accepted feedback increments qgate_feedback_total and
// qgate_feedback_score for the variant that answered.
#pragma once

#include "gateway/api_errors.h"
#include "gateway/gateway_metrics.h"
#include "gateway/http_server.h"
#include "gateway/response_index.h"

namespace qgate {

struct FeedbackRequest {
  std::string id;
  double score = 0;
};

ApiResult<FeedbackRequest> parse_feedback_request(std::string_view body);

// `index` and `metrics` must outlive the router's server.
void add_feedback_route(HttpRouter& router, ResponseIndex& index, GatewayMetrics& metrics);

}  // namespace qgate
