#include "gateway/openai_routes.h"

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <mutex>

namespace qgate {

namespace http = boost::beast::http;

std::optional<std::string_view> RequestMeta::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return std::string_view(v);
  }
  return std::nullopt;
}

namespace {

class HttpCompletionResponder final : public CompletionResponder {
 public:
  HttpCompletionResponder(std::shared_ptr<HttpExchange> exchange, ResponseContext ctx, bool stream)
      : exchange_(std::move(exchange)), ctx_(std::move(ctx)), stream_(stream) {}

  void fail(const ApiError& error) override {
    std::lock_guard lock(mu_);
    if (stage_ == Stage::kDone) return;
    if (stage_ == Stage::kStarted) return error_locked(error);
    stage_ = Stage::kDone;
    exchange_->respond(api_error_response(error));
  }
  void start(HttpHeaders extra_headers) override {
    std::lock_guard lock(mu_);
    start_locked(std::move(extra_headers));
  }
  void text(std::string_view piece) override {
    std::lock_guard lock(mu_);
    if (stage_ == Stage::kDone) return;
    start_locked({});
    if (stream_) {
      if (!piece.empty()) exchange_->write(sse_event(stream_text_chunk(ctx_, piece)));
    } else {
      text_.append(piece);
    }
  }
  void finish(const FinishInfo& info) override {
    std::lock_guard lock(mu_);
    if (stage_ == Stage::kDone) return;
    start_locked({});
    stage_ = Stage::kDone;
    if (!stream_) {
      HttpResponse r;
      r.headers = std::move(headers_);
      r.body = completion_body(ctx_, text_, info);
      exchange_->respond(std::move(r));
      return;
    }
    std::string tail = sse_event(stream_finish_chunk(ctx_, info));
    if (ctx_.include_usage) tail += sse_event(stream_usage_chunk(ctx_, info));
    tail += kSseDone;
    exchange_->write(std::move(tail));
    exchange_->finish_stream(false);
  }
  void error_after_start(const ApiError& error) override {
    std::lock_guard lock(mu_);
    if (stage_ == Stage::kDone) return;
    error_locked(error);
  }
  bool client_gone() const override { return exchange_->client_gone(); }
  void on_cancel(std::function<void()> callback) override {
    exchange_->on_cancel(std::move(callback));
  }

 private:
  enum class Stage { kNew, kStarted, kDone };

  void start_locked(HttpHeaders extra) {
    if (stage_ != Stage::kNew) return;
    stage_ = Stage::kStarted;
    if (!stream_) {
      headers_ = std::move(extra);  // sent with the whole body
      return;
    }
    exchange_->start_stream(200, "text/event-stream", std::move(extra));
    if (ctx_.endpoint == ApiEndpoint::kChatCompletions) {
      exchange_->write(sse_event(stream_role_chunk(ctx_)));
    }
  }
  void error_locked(const ApiError& error) {
    stage_ = Stage::kDone;
    if (!stream_) {
      // Nothing was sent yet: a normal error response, keeping the routing headers.
      HttpResponse r = api_error_response(error);
      for (auto& h : headers_) r.headers.push_back(std::move(h));
      exchange_->respond(std::move(r));
      return;
    }
    exchange_->write(sse_event(api_error_body(error)));
    exchange_->finish_stream(true);
  }

  std::mutex mu_;
  const std::shared_ptr<HttpExchange> exchange_;
  const ResponseContext ctx_;
  const bool stream_;
  Stage stage_ = Stage::kNew;  // guarded by mu_
  HttpHeaders headers_;        // guarded by mu_; non-streaming only
  std::string text_;           // guarded by mu_; non-streaming only
};

// Unique within the process and unlikely to repeat across restarts (the salt is the start time).
std::string next_response_id(ApiEndpoint endpoint) {
  static const uint64_t salt = static_cast<uint64_t>(
      std::chrono::system_clock::now().time_since_epoch().count());
  static std::atomic<uint64_t> counter{0};
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%s%016llx%08llx",
                endpoint == ApiEndpoint::kChatCompletions ? "chatcmpl-" : "cmpl-",
                static_cast<unsigned long long>(salt),
                static_cast<unsigned long long>(counter.fetch_add(1) & 0xffffffffull));
  return buf;
}

RequestMeta make_meta(const HttpRequest& request, ApiEndpoint endpoint) {
  RequestMeta meta;
  meta.id = next_response_id(endpoint);
  meta.created = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
  meta.peer = request.peer;
  for (const auto& field : request.message) {
    std::string name(field.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    meta.headers.emplace_back(std::move(name), std::string(field.value()));
  }
  return meta;
}

HttpHandler generation_handler(std::shared_ptr<CompletionService> service,
                               OpenAiApiOptions options, ApiEndpoint endpoint) {
  return [service = std::move(service), options, endpoint](
             HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
    const std::string_view body = request.message.body();
    auto parsed = endpoint == ApiEndpoint::kChatCompletions
                      ? parse_chat_completion_request(body, options)
                      : parse_completion_request(body, options);
    if (!parsed.ok()) {
      if (options.on_invalid_request) options.on_invalid_request(request_model(body), parsed.error().status);
      return exchange->respond(api_error_response(parsed.error()));
    }
    ApiRequest api = std::move(parsed).value();
    RequestMeta meta = make_meta(request, endpoint);
    ResponseContext ctx{endpoint, meta.id, meta.created, api.model, api.include_usage};
    const bool stream = api.stream;
    service->handle(std::move(api), std::move(meta),
                    make_completion_responder(std::move(exchange), std::move(ctx), stream));
  };
}

}  // namespace

std::shared_ptr<CompletionResponder> make_completion_responder(
    std::shared_ptr<HttpExchange> exchange, ResponseContext context, bool stream) {
  return std::make_shared<HttpCompletionResponder>(std::move(exchange), std::move(context), stream);
}

void add_openai_routes(HttpRouter& router, std::shared_ptr<CompletionService> service,
                       OpenAiApiOptions options) {
  router.add(http::verb::post, "/v1/chat/completions",
             generation_handler(service, options, ApiEndpoint::kChatCompletions));
  router.add(http::verb::post, "/v1/completions",
             generation_handler(service, options, ApiEndpoint::kCompletions));
  router.add_simple(http::verb::get, "/v1/models", [service](const HttpRequest&) {
    HttpResponse r;
    r.body = models_body(service->list_models());
    return r;
  });
}

}  // namespace qgate
