// The OpenAI wire format: request bodies (simdjson) -> validated ApiRequest, and response bodies
// and stream chunks (Boost.JSON). Pure functions; the HTTP wiring is in openai_routes.h.
//
// Parsing follows OpenAI's behaviour where qgate can honour it and refuses what it cannot with a
// 400 naming the field: n != 1, tools/functions, logprobs, logit_bias, non-text response formats
// and content parts, and for /v1/completions echo, suffix, best_of != 1 and prompts that are not a
// single string. Unknown fields are ignored (clients send many optional ones); a name given twice
// in one object is refused (JSON readers disagree on which one counts). `null` means "not given"
// for every optional field. Role "developer" is taken as "system"; a system message is accepted
// only as the first message (what the chat templates support).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/api_errors.h"
#include "gateway/completion_service.h"

namespace qgate {

struct OpenAiApiOptions {
  int64_t max_tokens_cap = 4096;     // a larger max_tokens / max_completion_tokens is a 400
  int64_t default_max_tokens = 256;  // when the request names none
  size_t max_stop_strings = 4;       // OpenAI's limit
  // Called for each generation request refused by validation (400), with the body's "model" if it
  // has one as a string (else empty) and the status. Runs on the connection strand; for metrics.
  std::function<void(std::string_view model, unsigned status)> on_invalid_request;
};

// The top-level "model" string of a request body, or empty when the body is not a JSON object
// with one. For labelling refused requests; never an error.
std::string request_model(std::string_view body);

ApiResult<ApiRequest> parse_chat_completion_request(std::string_view body,
                                                    const OpenAiApiOptions& options);
ApiResult<ApiRequest> parse_completion_request(std::string_view body,
                                               const OpenAiApiOptions& options);

// What every body and chunk of one response repeats.
struct ResponseContext {
  ApiEndpoint endpoint = ApiEndpoint::kChatCompletions;
  std::string id;
  int64_t created = 0;
  std::string model;
  bool include_usage = false;  // streaming: `usage: null` on each chunk and a final usage chunk
};

// "stop" / "length"; a cancelled request (client gone) reports "stop".
const char* openai_finish_reason(FinishReason reason);

// chat.completion or text_completion.
std::string completion_body(const ResponseContext& ctx, std::string_view text,
                            const FinishInfo& info);
// Stream chunks, serialized JSON without the SSE framing.
std::string stream_role_chunk(const ResponseContext& ctx);  // chat: delta {role, content ""}
std::string stream_text_chunk(const ResponseContext& ctx, std::string_view piece);
std::string stream_finish_chunk(const ResponseContext& ctx, const FinishInfo& info);
std::string stream_usage_chunk(const ResponseContext& ctx, const FinishInfo& info);
// `data: <json>\n\n`. JSON from Boost.JSON never holds a raw newline, so one line per event.
std::string sse_event(std::string_view json);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

std::string models_body(const std::vector<ModelInfo>& models);

}  // namespace qgate
