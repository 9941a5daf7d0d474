// The OpenAI endpoints on the HTTP server framework: POST /v1/chat/completions,
// POST /v1/completions and GET /v1/models, answered by a CompletionService.
//
// Handlers run on the connection strand: they parse and validate (400 with an OpenAI error body on
// bad input, connection kept), build a CompletionResponder over the request's HttpExchange and
// hand both to the service. Streaming requests get Server-Sent Events over chunked encoding:
// for chat, a first chunk with delta.role, then one chunk per text piece, a chunk with
// finish_reason, the usage chunk when stream_options.include_usage, then `data: [DONE]`. A failure
// after the headers went out is an SSE event `data: {"error": {...}}`, after which the body is
// terminated and the connection closed.
#pragma once

#include <memory>

#include "gateway/completion_service.h"
#include "gateway/http_server.h"
#include "gateway/openai_api.h"

namespace qgate {

void add_openai_routes(HttpRouter& router, std::shared_ptr<CompletionService> service,
                       OpenAiApiOptions options = {});

// The responder the routes hand to the service; exposed for callers that build their own routes.
std::shared_ptr<CompletionResponder> make_completion_responder(
    std::shared_ptr<HttpExchange> exchange, ResponseContext context, bool stream);

}  // namespace qgate
