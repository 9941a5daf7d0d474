#include "gateway/routed_service.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <mutex>
#include <thread>

#include "engine/chat_prompt.h"
#include "engine/tokenizer.h"
#include "policies/router.h"

namespace qgate {

namespace asio = boost::asio;

namespace {

// SplitMix64: a reproducible stream of uniform draws from (seed, request number) with no lock.
double uniform_draw(uint64_t seed, uint64_t n) {
  uint64_t z = seed + (n + 1) * 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

ApiError exhausted_error(const ApiError& last) {
  // Every candidate refused: report why the last one did. Overload stays a 429 (the client may
  // retry after a pause); anything else means no variant could serve, a 503.
  if (last.status == 429) return last;
  return ApiError::unavailable("no healthy variant could serve the request (last: " + last.message +
                               ")");
}

}  // namespace

struct RoutedCompletionService::Impl : std::enable_shared_from_this<Impl> {
  std::map<std::string, Worker*, std::less<>> workers;
  RoutingStore& store;
  OutlierDetector& detector;
  RetryBudget& budget;
  RoutedServiceOptions options;
  ServiceTelemetry telemetry;
  std::atomic<uint64_t> request_counter{0};

  asio::io_context timers;
  asio::executor_work_guard<asio::io_context::executor_type> work{timers.get_executor()};
  std::thread timer_thread;
  std::unique_ptr<asio::steady_timer> probe_timer;

  mutable std::mutex traffic_mu;
  std::map<std::string, VariantTraffic> traffic_by_variant;  // guarded by traffic_mu

  Impl(std::map<std::string, Worker*, std::less<>> w, RoutingStore& s, OutlierDetector& d,
       RetryBudget& b, RoutedServiceOptions o, ServiceTelemetry t)
      : workers(std::move(w)), store(s), detector(d), budget(b), options(o), telemetry(t) {}

  void count(const std::string& variant, uint64_t VariantTraffic::*field) {
    std::lock_guard lock(traffic_mu);
    ++(traffic_by_variant[variant].*field);
  }

  void start_probes();
  void run_probes();
};

namespace {

using Impl = RoutedCompletionService::Impl;

// One client request across its attempts.
class RequestState : public std::enable_shared_from_this<RequestState> {
 public:
  RequestState(std::shared_ptr<Impl> impl, ApiRequest request, RequestMeta meta,
               std::shared_ptr<CompletionResponder> out, std::shared_ptr<const RoutingTable> table,
               RoutePlan plan, bool shadow_sampled)
      : impl_(std::move(impl)),
        request_(std::move(request)),
        meta_(std::move(meta)),
        out_(std::move(out)),
        table_(std::move(table)),
        plan_(std::move(plan)),
        request_token_(impl_->budget.start_request()),
        metrics_(impl_->telemetry.metrics),
        route_(request_.model),
        shadow_sampled_(shadow_sampled),
        accepted_at_(std::chrono::steady_clock::now()) {}

  // A timer still held here is released on the timer thread (see cancel_timer()).
  ~RequestState() {
    cancel_timer();
    cancel_deadline();
  }

  void begin() {
    auto self = shared_from_this();
    out_->on_cancel([self] { self->client_gone(); });
    std::unique_lock lock(mu_);
    arm_deadline();
    try_next(lock, ApiError::unavailable("no variant available"));
  }

  void on_text(uint64_t attempt, std::string_view piece, int64_t tokens_so_far) {
    std::lock_guard lock(mu_);
    if (attempt != attempt_ || done_) return;
    record_tokens_arrived(tokens_so_far);
    if (!request_.stream) {
      // Nothing reaches a non-streaming client before the end, so an attempt that fails midway
      // can still fall back: its text stays here until it finishes.
      if (!first_text_) {
        first_text_ = true;
        cancel_timer();  // the variant answered within the first-byte timeout
      }
      pending_text_.append(piece);
      return;
    }
    if (!started_) start_response();
    out_->text(piece);
  }

  void on_finish(uint64_t attempt, const GenerationSummary& summary) {
    std::lock_guard lock(mu_);
    if (attempt != attempt_ || done_) return;
    done_ = true;
    cancel_timer();
    cancel_deadline();
    if (summary.finish_reason == FinishReason::kCancelled && cancelled_) {
      finished(kClientClosedRequest);
      return;
    }
    admission_.report(Outcome::kSuccess);
    impl_->count(variant_, &VariantTraffic::served);
    if (!started_) start_response();
    if (!pending_text_.empty()) out_->text(pending_text_);
    FinishInfo info;
    info.finish_reason = summary.finish_reason;
    info.prompt_tokens = summary.prompt_tokens;
    info.completion_tokens = static_cast<int64_t>(summary.tokens.size());
    // Tokens whose text never came (held back, or an end-of-turn token) still arrived now.
    record_tokens_arrived(info.completion_tokens);
    // Known before the client can see the id, so feedback sent right after the answer finds it.
    if (impl_->telemetry.responses != nullptr) {
      impl_->telemetry.responses->remember(meta_.id, AnsweredBy{route_, variant_});
    }
    out_->finish(info);
    if (series_ != nullptr) {
      series_->e2e->Observe(seconds_since_accepted());
      series_->tokens(info.prompt_tokens, info.completion_tokens);
    }
    finished(200);
    offer_shadow(summary);
  }

  void on_error(uint64_t attempt, const Error& error) {
    std::unique_lock lock(mu_);
    if (attempt != attempt_ || done_) return;
    cancel_timer();
    admission_.report(Outcome::kFailure);
    impl_->count(variant_, &VariantTraffic::failures);
    handle_.reset();
    if (started_) {
      // Bytes already went out: the client sees an SSE error event, never a silent truncation.
      done_ = true;
      cancel_deadline();
      attempt_failed(AttemptFailure::kMidStream);
      const ApiError e =
          ApiError::internal("variant " + variant_ + " failed mid-response: " + error.message());
      out_->error_after_start(e);
      finished(e.status);
      return;
    }
    attempt_failed(AttemptFailure::kEngine);
    spdlog::warn("request {}: variant {} failed before the first byte ({}); falling back",
                 meta_.id, variant_, error.to_string());
    // A non-streaming attempt's text was never sent: the next variant answers from scratch.
    pending_text_.clear();
    first_text_ = false;
    tokens_seen_ = 0;
    try_next(lock, ApiError::internal("variant " + variant_ + ": " + error.message()));
  }

 private:
  void client_gone() {
    std::shared_ptr<RequestHandle> handle;
    {
      std::lock_guard lock(mu_);
      cancelled_ = true;
      cancel_timer();
      cancel_deadline();
      handle = handle_;
    }
    if (handle) handle->cancel();
  }

  void first_byte_timeout(uint64_t attempt) {
    std::shared_ptr<RequestHandle> handle;
    std::unique_lock lock(mu_);
    if (attempt != attempt_ || done_ || started_ || first_text_) return;
    admission_.report(Outcome::kTimeout);
    impl_->count(variant_, &VariantTraffic::failures);
    attempt_failed(AttemptFailure::kTimeout);
    handle = std::move(handle_);
    const std::string variant = variant_;
    spdlog::warn("request {}: variant {} sent nothing within the first-byte timeout; falling back",
                 meta_.id, variant);
    // Moving on first makes the abandoned attempt's late events stale before cancel() fires.
    try_next(lock, ApiError::unavailable("variant " + variant + " timed out before the first token"));
    lock.unlock();
    if (handle) handle->cancel();
  }

  // http.request_timeout: the generation is cancelled and the client told, whatever attempt or
  // phase the request is in. Not a verdict on the variant (a long generation is not a fault), so
  // the outlier detector hears nothing; the request counts with code 504.
  void request_deadline() {
    std::shared_ptr<RequestHandle> handle;
    {
      std::lock_guard lock(mu_);
      if (done_) return;
      done_ = true;
      cancel_timer();
      handle = std::move(handle_);
      ++attempt_;  // late events of the cancelled attempt are stale
      const ApiError e = ApiError::timeout("the request ran past the gateway's request timeout");
      spdlog::warn("request {}: past the request timeout on variant {}; cancelled", meta_.id,
                   variant_.empty() ? "none" : variant_);
      if (started_) {
        out_->error_after_start(e);
        finished(e.status);
      } else {
        fail_request(e);
      }
    }
    if (handle) handle->cancel();
  }

  // Submits to the next candidate of the plan; answers the client when none is left. Called with
  // mu_ held; releases it around Worker::submit so a worker that reports synchronously cannot
  // deadlock on it.
  void try_next(std::unique_lock<std::mutex>& lock, ApiError last) {
    while (true) {
      if (cancelled_) {
        done_ = true;
        finished(kClientClosedRequest);
        return;
      }
      if (next_ >= plan_.attempts.size()) {
        fail_request(exhausted_error(last));
        return;
      }
      if (next_ > 0) {
        retry_token_ = impl_->budget.try_start_retry();
        if (!retry_token_) {
          fail_request(exhausted_error(last));
          return;
        }
        if (!variant_.empty()) impl_->count(variant_, &VariantTraffic::fallbacks_from);
      }
      const std::string previous = variant_;
      variant_ = plan_.attempts[next_++];
      if (metrics_ != nullptr) {
        series_ = &metrics_->pair(route_, variant_);
        if (!previous.empty()) metrics_->fallback(route_, previous, variant_, last_failure_);
      }
      const auto it = impl_->workers.find(variant_);
      // The store validates every route against the configured variants, which all have workers.
      QGATE_CHECK(it != impl_->workers.end(), "routed to a variant without a worker");
      Worker& worker = *it->second;
      admission_ = impl_->detector.admit(variant_);
      if (!admission_) {
        last = ApiError::unavailable("variant " + variant_ + " is ejected or draining");
        last_failure_ = AttemptFailure::kUnavailable;
        continue;
      }
      auto prompt = build_prompt(worker.model());
      if (!prompt.ok()) {
        fail_request(ApiError::from_error(prompt.error(), "messages"));
        return;
      }
      WorkerRequest wr;
      wr.prompt = std::move(prompt).value();
      if (shadow_sampled_) prompt_ = wr.prompt;
      wr.options = request_.options;
      const uint64_t attempt = ++attempt_;
      auto sink = make_sink(attempt);
      impl_->count(variant_, &VariantTraffic::requests);

      lock.unlock();
      auto submitted = worker.submit(std::move(wr), std::move(sink));
      lock.lock();
      if (attempt != attempt_ || done_) {
        return;  // the worker already reported on this attempt and it was handled meanwhile
      }
      if (submitted.ok()) {
        handle_ = std::move(submitted).value();
        if (cancelled_) {
          auto handle = handle_;
          lock.unlock();
          handle->cancel();
          lock.lock();
          return;
        }
        arm_timer(attempt);
        return;
      }
      const Error& e = submitted.error();
      if (e.code() == ErrorCode::kInvalidArgument || e.code() == ErrorCode::kOutOfRange) {
        // The request itself cannot be served (e.g. longer than the context): no variant would.
        fail_request(ApiError::from_error(e, e.code() == ErrorCode::kOutOfRange ? "messages" : ""));
        return;
      }
      if (e.code() == ErrorCode::kResourceExhausted) {
        admission_.report(Outcome::kOverloaded);
        last = ApiError::overloaded("variant " + variant_ + " is overloaded: " + e.message());
        attempt_failed(AttemptFailure::kOverloaded);
      } else {
        admission_.report(Outcome::kFailure);
        last = ApiError::internal("variant " + variant_ + ": " + e.message());
        attempt_failed(AttemptFailure::kEngine);
      }
      impl_->count(variant_, &VariantTraffic::failures);
    }
  }

  Result<std::vector<int32_t>> build_prompt(const LoadedModel& model) const {
    if (request_.endpoint == ApiEndpoint::kCompletions) {
      return model.tokenizer->encode(request_.prompt, /*parse_special=*/false);
    }
    // Message contents are encoded as plain text: typed special tokens must not forge turns.
    return encode_chat(model.chat_template, *model.tokenizer, request_.messages);
  }

  void start_response() {
    started_ = true;
    cancel_timer();
    HttpHeaders headers;
    headers.emplace_back("x-qgate-variant", variant_);
    headers.emplace_back("x-qgate-routing-version", std::to_string(table_->version));
    headers.emplace_back("x-qgate-route-reason",
                         next_ > 1 ? "fallback" : pick_reason_name(plan_.reason));
    headers.emplace_back("x-qgate-attempts", std::to_string(next_));
    out_->start(std::move(headers));
  }

  void arm_timer(uint64_t attempt) {
    timer_ = std::make_unique<asio::steady_timer>(impl_->timers, impl_->options.first_byte_timeout);
    std::weak_ptr<RequestState> weak = weak_from_this();
    timer_->async_wait([weak, attempt](const boost::system::error_code& ec) {
      if (ec) return;
      if (auto self = weak.lock()) self->first_byte_timeout(attempt);
    });
  }

  void arm_deadline() {
    if (impl_->options.request_timeout <= std::chrono::steady_clock::duration::zero()) return;
    deadline_ = std::make_unique<asio::steady_timer>(impl_->timers, impl_->options.request_timeout);
    std::weak_ptr<RequestState> weak = weak_from_this();
    deadline_->async_wait([weak](const boost::system::error_code& ec) {
      if (ec) return;
      if (auto self = weak.lock()) self->request_deadline();
    });
  }

  void cancel_deadline() {
    if (!deadline_) return;
    std::shared_ptr<asio::steady_timer> timer(std::move(deadline_));
    asio::post(impl_->timers, [timer] { timer->cancel(); });
  }

  void cancel_timer() {
    // steady_timer::cancel is not thread-safe against the timer thread's use of the same timer
    // object; posting keeps every touch of the timer on that thread.
    if (!timer_) return;
    std::shared_ptr<asio::steady_timer> timer(std::move(timer_));
    asio::post(impl_->timers, [timer] { timer->cancel(); });
  }

  // nginx's "client closed request": the label for requests the client abandoned.
  static constexpr unsigned kClientClosedRequest = 499;

  // --- telemetry; all called with mu_ held.
  double seconds_since_accepted() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - accepted_at_).count();
  }

  // Exactly once per request, with the status the client saw (or 499).
  void finished(unsigned status) {
    if (reported_ || metrics_ == nullptr) return;
    reported_ = true;
    metrics_->request_finished(route_, variant_.empty() ? "none" : variant_, status);
  }

  void fail_request(const ApiError& error) {
    done_ = true;
    cancel_deadline();
    out_->fail(error);
    finished(error.status);
  }

  void attempt_failed(AttemptFailure kind) {
    last_failure_ = kind;
    if (metrics_ != nullptr) metrics_->attempt_failed(route_, variant_, kind);
  }

  // Time to first token on the first arrival; later arrivals of n tokens after dt each observe
  // dt / n as the inter-token gap, n times (tokens that came together share the gap evenly).
  void record_tokens_arrived(int64_t tokens_so_far) {
    if (series_ == nullptr) return;
    const auto now = std::chrono::steady_clock::now();
    if (tokens_seen_ == 0) {
      if (tokens_so_far <= 0) return;
      series_->ttft->Observe(seconds_since_accepted());
    } else if (tokens_so_far > tokens_seen_) {
      const int64_t n = tokens_so_far - tokens_seen_;
      const double dt = std::chrono::duration<double>(now - last_token_at_).count();
      series_->inter_token_latency(dt / static_cast<double>(n), n);
    } else {
      return;
    }
    tokens_seen_ = tokens_so_far;
    last_token_at_ = now;
  }

  // Hands a sampled response to the shadow scorer: the route's baseline re-scores it off the
  // request path. Never blocks; a full queue is a counted drop.
  void offer_shadow(const GenerationSummary& summary) {
    const ServiceTelemetry& t = impl_->telemetry;
    if (!shadow_sampled_ || t.shadow == nullptr || summary.tokens.empty()) return;
    const Route* route = table_->find(route_);
    if (route == nullptr) return;
    if (variant_ == route->baseline && !t.shadow_include_baseline) return;
    const auto baseline = impl_->workers.find(route->baseline);
    const auto served = impl_->workers.find(variant_);
    if (baseline == impl_->workers.end() || served == impl_->workers.end()) return;
    const LoadedModel& bm = baseline->second->model();
    if (bm.model->config().vocab_size != served->second->model().model->config().vocab_size) {
      // Token ids only mean the same thing under one vocabulary.
      if (metrics_ != nullptr) metrics_->shadow_outcome(route_, variant_, "error");
      return;
    }
    ShadowJob job;
    job.route = route_;
    job.variant = variant_;
    job.baseline = bm.model;
    job.prompt = std::move(prompt_);
    job.completion = summary.tokens;
    if (!t.shadow->offer(std::move(job)) && metrics_ != nullptr) {
      metrics_->shadow_outcome(route_, variant_, "dropped");
    }
  }

  class Sink : public GenerationSink {
   public:
    Sink(std::shared_ptr<RequestState> state, uint64_t attempt)
        : state_(std::move(state)), attempt_(attempt) {}
    void on_text(std::string_view piece, int64_t tokens_so_far) override {
      state_->on_text(attempt_, piece, tokens_so_far);
    }
    void on_finish(const GenerationSummary& s) override { state_->on_finish(attempt_, s); }
    void on_error(const Error& e) override { state_->on_error(attempt_, e); }

   private:
    std::shared_ptr<RequestState> state_;
    uint64_t attempt_;
  };

  std::shared_ptr<GenerationSink> make_sink(uint64_t attempt) {
    return std::make_shared<Sink>(shared_from_this(), attempt);
  }

  std::shared_ptr<Impl> impl_;
  const ApiRequest request_;
  const RequestMeta meta_;
  const std::shared_ptr<CompletionResponder> out_;
  const std::shared_ptr<const RoutingTable> table_;  // the version this request started with
  const RoutePlan plan_;
  RetryBudget::Token request_token_;
  GatewayMetrics* const metrics_;
  const std::string route_;
  const bool shadow_sampled_;
  const std::chrono::steady_clock::time_point accepted_at_;

  std::mutex mu_;  // guards everything below
  RetryBudget::Token retry_token_;
  size_t next_ = 0;
  uint64_t attempt_ = 0;
  std::string variant_;
  Admission admission_;
  std::shared_ptr<RequestHandle> handle_;
  std::unique_ptr<asio::steady_timer> timer_;     // first byte of the current attempt
  std::unique_ptr<asio::steady_timer> deadline_;  // the whole request
  bool started_ = false;        // the response went out (streaming: at the first text)
  bool first_text_ = false;     // non-streaming: the current attempt produced text
  std::string pending_text_;    // non-streaming: the current attempt's text, sent at the finish
  bool done_ = false;
  bool cancelled_ = false;
  const GatewayMetrics::PairSeries* series_ = nullptr;  // variant_'s series, set with it
  bool reported_ = false;                         // finished() ran
  AttemptFailure last_failure_ = AttemptFailure::kEngine;  // why the previous attempt failed
  int64_t tokens_seen_ = 0;                        // of the attempt that started the response
  std::chrono::steady_clock::time_point last_token_at_{};
  std::vector<int32_t> prompt_;                    // kept only when sampled for shadow scoring
};

// One active probe: a one-token greedy generation; its outcome goes to the detector once.
class ProbeSink : public GenerationSink {
 public:
  ProbeSink(OutlierDetector& detector, std::string variant)
      : detector_(detector), variant_(std::move(variant)) {}
  void on_text(std::string_view, int64_t) override {}
  void on_finish(const GenerationSummary& s) override {
    report(s.finish_reason == FinishReason::kCancelled ? Outcome::kTimeout : Outcome::kSuccess);
  }
  void on_error(const Error&) override { report(Outcome::kFailure); }
  // True if this call decided the outcome.
  bool report(Outcome outcome) {
    if (reported_.exchange(true)) return false;
    detector_.record_probe(variant_, outcome);
    return true;
  }

 private:
  OutlierDetector& detector_;
  const std::string variant_;
  std::atomic<bool> reported_{false};
};

}  // namespace

void Impl::start_probes() {
  if (options.probe_interval <= std::chrono::steady_clock::duration::zero()) return;
  probe_timer = std::make_unique<asio::steady_timer>(timers, options.probe_interval);
  std::weak_ptr<Impl> weak = weak_from_this();
  probe_timer->async_wait([weak](const boost::system::error_code& ec) {
    if (ec) return;
    if (auto self = weak.lock()) {
      self->run_probes();
      self->start_probes();
    }
  });
}

void Impl::run_probes() {
  for (const auto& [name, worker] : workers) {
    WorkerRequest req;
    req.prompt = worker->model().tokenizer->encode("Hi", false);
    req.options.max_tokens = 1;
    req.options.sampling.temperature = 0.0f;
    req.options.ignore_eos = true;
    auto sink = std::make_shared<ProbeSink>(detector, name);
    auto handle = worker->submit(std::move(req), sink);
    if (!handle.ok()) {
      sink->report(handle.error().code() == ErrorCode::kResourceExhausted ? Outcome::kOverloaded
                                                                           : Outcome::kFailure);
      continue;
    }
    auto timer = std::make_shared<asio::steady_timer>(timers, options.probe_timeout);
    timer->async_wait([timer, sink, h = handle.value()](const boost::system::error_code& ec) {
      if (ec) return;
      if (sink->report(Outcome::kTimeout)) h->cancel();
    });
  }
}

RoutedCompletionService::RoutedCompletionService(
    std::map<std::string, Worker*, std::less<>> workers, RoutingStore& store,
    OutlierDetector& detector, RetryBudget& budget, RoutedServiceOptions options,
    ServiceTelemetry telemetry)
    : impl_(std::make_shared<Impl>(std::move(workers), store, detector, budget, options,
                                   telemetry)) {
  impl_->timer_thread = std::thread([impl = impl_.get()] { impl->timers.run(); });
  asio::post(impl_->timers, [impl = impl_] { impl->start_probes(); });
}

RoutedCompletionService::~RoutedCompletionService() {
  impl_->work.reset();
  impl_->timers.stop();
  if (impl_->timer_thread.joinable()) impl_->timer_thread.join();
}

void RoutedCompletionService::handle(ApiRequest request, RequestMeta meta,
                                     std::shared_ptr<CompletionResponder> responder) {
  std::shared_ptr<const RoutingTable> table = impl_->store.current();
  const Route* route = table->find(request.model);
  GatewayMetrics* metrics = impl_->telemetry.metrics;
  if (route == nullptr) {
    // Not the requested name: clients must not be able to grow the label space.
    if (metrics != nullptr) metrics->request_finished("unknown", "none", 404);
    responder->fail(ApiError::model_not_found(request.model));
    return;
  }
  RouteRequest rr;
  rr.header = [&meta](std::string_view name) { return meta.header(name); };
  rr.user = request.user;
  const uint64_t request_number = impl_->request_counter.fetch_add(1);
  rr.u01 = uniform_draw(impl_->options.seed, request_number);
  auto plan = plan_route(
      *route, rr, [this](std::string_view v) { return impl_->detector.routable(v); },
      impl_->budget.options().max_attempts);
  if (!plan.ok()) {
    const ApiError e = plan.error().code() == ErrorCode::kInvalidArgument
                           ? ApiError::invalid_request(route->override_header, plan.error().message())
                           : ApiError::unavailable(plan.error().message());
    if (metrics != nullptr) metrics->request_finished(route->model, "none", e.status);
    responder->fail(e);
    return;
  }
  // Sampled on the request number, independently of the routing draw, so the sampled share is
  // the configured ratio for every variant.
  const double ratio = impl_->telemetry.shadow_sample_ratio;
  const bool sampled =
      ratio > 0 && uniform_draw(impl_->options.seed ^ 0x5AD0u, request_number) < ratio;
  auto state = std::make_shared<RequestState>(impl_, std::move(request), std::move(meta),
                                               std::move(responder), std::move(table),
                                               std::move(plan).value(), sampled);
  state->begin();
}

std::vector<ModelInfo> RoutedCompletionService::list_models() {
  std::vector<ModelInfo> models;
  for (const Route& r : impl_->store.current()->routes) models.push_back(ModelInfo{r.model});
  return models;
}

std::map<std::string, VariantTraffic> RoutedCompletionService::traffic() const {
  std::lock_guard lock(impl_->traffic_mu);
  return impl_->traffic_by_variant;
}

}  // namespace qgate
