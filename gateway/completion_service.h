// The seam between the OpenAI HTTP layer and whatever serves completions (routing + engine
// workers in `qgate serve`, a scripted fake in tests). Nothing here knows about HTTP or Beast.
//
// Flow: the HTTP layer parses and validates a request into an ApiRequest, then calls
// CompletionService::handle() on the connection's strand. The service must not block there: it
// picks a variant, submits, and answers later through the CompletionResponder from any thread
// (typically the engine worker's scheduler thread, straight from a GenerationSink).
//
// Responder protocol, streaming and non-streaming alike:
//   fail(error)                          -- refused before anything was sent: a full error response
//   start(headers) text(piece)* finish() -- success; start() is optional (text() implies it)
//   start(headers) text(piece)* error_after_start(error)
//                                        -- failed midway: an SSE error event for a stream; a
//                                           full error response when not streaming (nothing has
//                                           been sent yet in that case)
// Non-streaming responses are buffered and sent whole by finish(). Exactly one terminal call
// (fail / finish / error_after_start) takes effect; later calls are ignored. Calls must be ordered
// by the caller (one thread at a time, e.g. the worker's thread); the responder is otherwise
// thread-safe. Dropping the last reference without a terminal call answers 500.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/chat_template.h"  // ChatMessage
#include "engine/generator.h"      // GenerationOptions, FinishReason
#include "gateway/api_errors.h"
#include "gateway/http_types.h"

namespace qgate {

enum class ApiEndpoint { kChatCompletions, kCompletions };

struct ApiRequest {
  ApiEndpoint endpoint = ApiEndpoint::kChatCompletions;
  std::string model;
  std::vector<ChatMessage> messages;  // chat: roles system/user/assistant, text content
  std::string prompt;                 // completions
  // max_tokens (the request's, or the configured default; never above the configured cap),
  // validated sampling parameters (seed set only if the client sent one), stop strings, ignore_eos.
  GenerationOptions options;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::string user;
};

struct RequestMeta {
  std::string id;    // response id ("chatcmpl-…" / "cmpl-…"), unique per process
  int64_t created = 0;  // unix seconds
  std::string peer;  // client "address:port"
  HttpHeaders headers;  // request fields, names lower-cased, in order
  // The first field `name` (lower-case), if present.
  std::optional<std::string_view> header(std::string_view name) const;
};

struct FinishInfo {
  FinishReason finish_reason = FinishReason::kStop;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

class CompletionResponder {
 public:
  virtual ~CompletionResponder() = default;
  virtual void fail(const ApiError& error) = 0;
  // Extra response fields (x-qgate-variant, x-qgate-routing-version, ...). Streaming: sends the
  // headers and, for chat, the first chunk with delta.role.
  virtual void start(HttpHeaders extra_headers) = 0;
  virtual void text(std::string_view piece) = 0;
  // Final chunk with finish_reason, the usage chunk if asked for, then `data: [DONE]`; or the
  // whole chat.completion / text_completion body.
  virtual void finish(const FinishInfo& info) = 0;
  virtual void error_after_start(const ApiError& error) = 0;

  // The client disconnected (or was cut off) before the response completed.
  virtual bool client_gone() const = 0;
  // Runs once when the client goes before completion (on the HTTP strand, or at once on the
  // calling thread if it is already gone); use it to cancel the engine request. Never runs after
  // a normal completion. Replaces an earlier callback.
  virtual void on_cancel(std::function<void()> callback) = 0;
};

struct ModelInfo {
  std::string id;
  std::string owned_by = "qgate";
  int64_t created = 0;  // unix seconds
};

class CompletionService {
 public:
  virtual ~CompletionService() = default;
  // Called on the connection's strand for every valid request; must not block.
  virtual void handle(ApiRequest request, RequestMeta meta,
                      std::shared_ptr<CompletionResponder> responder) = 0;
  // GET /v1/models. Called on a connection strand; must be quick.
  virtual std::vector<ModelInfo> list_models() = 0;
};

}  // namespace qgate
