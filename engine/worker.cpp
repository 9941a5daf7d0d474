// The continuous-batching worker: submit() feeds a bounded queue; one scheduler thread plans each
// step with plan_step() (engine/scheduler.h), runs it through LlamaModel::forward_batch() over the
// paged KV cache, samples each sequence that reached the end of its known tokens with its own
// Sampler, and streams text through the sequence's StopMatcher to its sink.
//
// Lock order: there is one mutex (Core::mu). It guards only the hand-over between threads
// (incoming queue, stop/kick flags, published queue length); the scheduler never holds it while it
// computes or calls a sink, so a sink may call RequestHandle::cancel() on the scheduler thread.
#include "engine/worker.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "engine/paged_kv_cache.h"
#include "engine/batch_forward.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/stop_matcher.h"
#include "engine/tokenizer.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Request;

// What the submitting threads, the handles and the scheduler thread share.
struct Core {
  std::mutex mu;
  std::condition_variable cv;
  // Guarded by mu.
  std::deque<std::shared_ptr<Request>> incoming;
  bool stop = false;
  bool kick = false;        // a cancel or fault change the scheduler must look at
  int64_t waiting = 0;      // the scheduler's queue length, published for the admission bound
  uint64_t rejected = 0;
};

struct Request {
  Request(WorkerRequest r, std::shared_ptr<GenerationSink> s, const Tokenizer& tokenizer)
      : tokens(std::move(r.prompt)),
        prompt_len(static_cast<int64_t>(tokens.size())),
        options(std::move(r.options)),
        sink(std::move(s)),
        sampler(options.sampling, tokens),
        decoder(tokenizer, /*skip_special=*/true),
        matcher(options.stop),
        submitted(Clock::now()) {}

  void cancel() {
    cancelled.store(true, std::memory_order_relaxed);
    if (auto c = core.lock()) {
      std::lock_guard lock(c->mu);
      c->kick = true;
      c->cv.notify_one();
    }
  }

  std::atomic<bool> cancelled{false};
  std::weak_ptr<Core> core;
  // Everything below belongs to the scheduler thread once the request is queued.
  uint64_t arrival = 0;
  std::vector<int32_t> tokens;  // prompt, then generated tokens
  int64_t prompt_len = 0;
  GenerationOptions options;
  std::shared_ptr<GenerationSink> sink;
  Sampler sampler;
  IncrementalDecoder decoder;
  StopMatcher matcher;
  int64_t computed = 0;               // tokens whose keys/values are in `blocks`
  std::vector<int32_t> blocks;        // block table
  std::vector<uint64_t> hashes;       // chain hash of each full block of `tokens`, as far as known
  int64_t published = 0;              // blocks already offered to the prefix cache
  bool scheduled = false;
  GenerationSummary summary;
  Clock::time_point submitted;
};

class Handle final : public RequestHandle {
 public:
  explicit Handle(std::weak_ptr<Request> r) : request_(std::move(r)) {}
  void cancel() override {
    if (auto r = request_.lock()) r->cancel();
  }

 private:
  std::weak_ptr<Request> request_;
};

using RequestPtr = std::shared_ptr<Request>;

class WorkerImpl final : public Worker {
 public:
  // device_forward: the GPU forward pass when the worker runs on one, null for the CPU.
  WorkerImpl(std::string name, LoadedModel model, const WorkerOptions& options, int threads,
             std::unique_ptr<BatchForward> device_forward);
  ~WorkerImpl() override;

  Result<std::shared_ptr<RequestHandle>> submit(WorkerRequest request,
                                                std::shared_ptr<GenerationSink> sink) override;
  WorkerStats stats() const override;
  const LoadedModel& model() const override { return loaded_; }
  const std::string& name() const override { return name_; }
  void set_fault(WorkerFault fault) override;

 private:
  void run();
  void step();
  void schedule_chunk(Request& r, int64_t tokens, std::vector<SequenceChunk>& chunks);
  void publish_blocks(Request& r);
  void accept_token(const RequestPtr& r, int32_t token);
  void emit(Request& r, std::string_view text);
  void finish(const RequestPtr& r, FinishReason reason);
  void fail(const RequestPtr& r, const Error& error);
  void release(Request& r);
  void drop_finished();
  void publish_occupancy();
  Error overloaded(const std::string& why);

  const std::string name_;
  const LoadedModel loaded_;
  const LlamaModel& model_;
  const WorkerOptions options_;
  const int64_t context_limit_;  // prompt + max_tokens bound: context and KV budget
  std::shared_ptr<Core> core_ = std::make_shared<Core>();
  std::atomic<WorkerFault> fault_{WorkerFault::kNone};
  std::atomic<uint64_t> arrivals_{0};

  // Scheduler thread only.
  PagedKvCache cache_;  // allocator and prefix index; holds the keys/values only on the CPU
  std::unique_ptr<BatchForward> forward_;
  std::vector<float> logits_;
  std::vector<RequestPtr> running_;  // arrival order
  std::deque<RequestPtr> waiting_;   // preempted ones first, then queue order
  std::vector<RequestPtr> done_;     // finished during this step, removed after it

  mutable std::mutex stats_mu_;
  WorkerStats stats_;  // guarded by stats_mu_ (queued is filled in by stats())

  std::thread thread_;  // last: starts after everything above exists
};

WorkerImpl::WorkerImpl(std::string name, LoadedModel model, const WorkerOptions& options,
                       int threads, std::unique_ptr<BatchForward> device_forward)
    : name_(std::move(name)),
      loaded_(std::move(model)),
      model_(*loaded_.model),
      options_(options),
      context_limit_(std::min(options.max_context_tokens,
                              options.kv_cache_tokens / options.kv_block_tokens *
                                  options.kv_block_tokens)),
      cache_(model_.config(), options.kv_cache_tokens / options.kv_block_tokens,
             options.kv_block_tokens, device_forward ? KvStorage::kNone : KvStorage::kHost,
             options.kv_cache_dtype),
      forward_(device_forward ? std::move(device_forward)
                              : make_cpu_forward(model_, cache_, threads)),
      logits_(static_cast<size_t>(options.max_running * model_.config().vocab_size)) {
  stats_.kv_blocks_total = cache_.num_blocks();
  stats_.weight_bytes = model_.weight_bytes();
  thread_ = std::thread([this] { run(); });
}

WorkerImpl::~WorkerImpl() {
  {
    std::lock_guard lock(core_->mu);
    core_->stop = true;
    core_->cv.notify_one();
  }
  thread_.join();
}

Error WorkerImpl::overloaded(const std::string& why) {
  return make_error(ErrorCode::kResourceExhausted, "worker " + name_ + " is overloaded: " + why);
}

Result<std::shared_ptr<RequestHandle>> WorkerImpl::submit(WorkerRequest request,
                                                          std::shared_ptr<GenerationSink> sink) {
  if (fault_.load() == WorkerFault::kOverload) {
    std::lock_guard lock(core_->mu);
    ++core_->rejected;
    return overloaded("injected fault");
  }
  if (sink == nullptr) return make_error(ErrorCode::kInvalidArgument, "submit: no sink");
  if (request.prompt.empty()) {
    return make_error(ErrorCode::kInvalidArgument, "the prompt has no tokens");
  }
  for (int32_t t : request.prompt) {
    if (t < 0 || t >= model_.config().vocab_size) {
      return make_error(ErrorCode::kInvalidArgument,
                        "prompt token id " + std::to_string(t) + " is outside the vocabulary");
    }
  }
  QGATE_TRY_STATUS(request.options.validate());
  const auto prompt = static_cast<int64_t>(request.prompt.size());
  if (prompt + request.options.max_tokens > context_limit_) {
    return make_error(ErrorCode::kOutOfRange,
                      "the prompt (" + std::to_string(prompt) + " tokens) plus max_tokens (" +
                          std::to_string(request.options.max_tokens) + ") exceed the " +
                          std::to_string(context_limit_) + " tokens a sequence may use");
  }
  auto r = std::make_shared<Request>(std::move(request), std::move(sink), *loaded_.tokenizer);
  r->core = core_;
  r->arrival = arrivals_.fetch_add(1);
  r->summary.prompt_tokens = prompt;
  {
    std::lock_guard lock(core_->mu);
    if (core_->stop) return make_error(ErrorCode::kCancelled, "worker " + name_ + " is stopping");
    if (static_cast<int64_t>(core_->incoming.size()) + core_->waiting >= options_.max_queued) {
      ++core_->rejected;
      return overloaded(std::to_string(options_.max_queued) + " requests already queued");
    }
    core_->incoming.push_back(r);
    core_->cv.notify_one();
  }
  return std::shared_ptr<RequestHandle>(std::make_shared<Handle>(r));
}

WorkerStats WorkerImpl::stats() const {
  WorkerStats s;
  {
    std::lock_guard lock(stats_mu_);
    s = stats_;
  }
  std::lock_guard lock(core_->mu);
  s.queued = static_cast<int64_t>(core_->incoming.size()) + core_->waiting;
  s.rejected_total = core_->rejected;
  return s;
}

void WorkerImpl::set_fault(WorkerFault fault) {
  fault_.store(fault);
  std::lock_guard lock(core_->mu);
  core_->kick = true;
  core_->cv.notify_one();
}

void WorkerImpl::run() {
  for (;;) {
    {
      std::unique_lock lock(core_->mu);
      core_->waiting = static_cast<int64_t>(waiting_.size());
      core_->cv.wait(lock, [&] {
        const bool work = !running_.empty() || !waiting_.empty();
        return core_->stop || core_->kick || !core_->incoming.empty() ||
               (work && fault_.load() != WorkerFault::kHang);
      });
      core_->kick = false;
      for (RequestPtr& r : core_->incoming) waiting_.push_back(std::move(r));
      core_->incoming.clear();
      core_->waiting = static_cast<int64_t>(waiting_.size());
      if (core_->stop) break;
    }
    // Cancelled requests leave before the step: their blocks are free for it.
    for (const RequestPtr& r : running_) {
      if (r->cancelled.load(std::memory_order_relaxed)) finish(r, FinishReason::kCancelled);
    }
    for (const RequestPtr& r : waiting_) {
      if (r->cancelled.load(std::memory_order_relaxed)) finish(r, FinishReason::kCancelled);
    }
    if (fault_.load() == WorkerFault::kFail) {
      const Error e = make_error(ErrorCode::kInternal, "injected fault");
      for (const RequestPtr& r : running_) fail(r, e);
      for (const RequestPtr& r : waiting_) fail(r, e);
    }
    drop_finished();
    if (fault_.load() == WorkerFault::kHang || (running_.empty() && waiting_.empty())) continue;
    step();
    drop_finished();
  }
  // Shutdown: whatever is left ends with Cancelled, on this thread like every other event.
  const Error e = make_error(ErrorCode::kCancelled, "worker " + name_ + " shut down");
  for (const RequestPtr& r : running_) fail(r, e);
  for (const RequestPtr& r : waiting_) fail(r, e);
  std::deque<RequestPtr> late;
  {
    std::lock_guard lock(core_->mu);
    late.swap(core_->incoming);
  }
  for (const RequestPtr& r : late) fail(r, e);
  drop_finished();
}

void WorkerImpl::step() {
  const auto t0 = Clock::now();
  const int64_t bt = cache_.block_tokens();
  std::vector<SequenceView> run_views, wait_views;
  run_views.reserve(running_.size());
  for (const RequestPtr& r : running_) {
    int64_t freeable = 0;
    for (int32_t b : r->blocks) freeable += cache_.ref_count(b) == 1 ? 1 : 0;
    run_views.push_back({static_cast<int64_t>(r->tokens.size()), r->computed,
                         static_cast<int64_t>(r->blocks.size()), freeable});
  }
  for (const RequestPtr& r : waiting_) {
    wait_views.push_back({static_cast<int64_t>(r->tokens.size()), 0, 0, 0});
  }
  const SchedulerLimits limits{options_.max_running, options_.max_batched_tokens, bt};
  const StepPlan plan = plan_step(run_views, wait_views, cache_.free_blocks(), limits);

  // Chunks are built before preemption moves requests around: indices refer to the lists above.
  std::vector<std::pair<RequestPtr, int64_t>> batch;
  for (const ScheduledChunk& c : plan.running) {
    batch.emplace_back(running_[static_cast<size_t>(c.index)], c.tokens);
  }
  for (const ScheduledChunk& c : plan.admitted) {
    batch.emplace_back(waiting_[static_cast<size_t>(c.index)], c.tokens);
  }
  uint64_t preempted_now = 0;
  for (int64_t idx : plan.preempted) {  // youngest first, so the oldest ends up at the front
    RequestPtr r = running_[static_cast<size_t>(idx)];
    release(*r);
    ++r->summary.preemptions;
    ++preempted_now;
    running_.erase(running_.begin() + idx);
    waiting_.push_front(std::move(r));
  }
  for (size_t i = 0; i < plan.admitted.size(); ++i) {
    RequestPtr r = std::move(waiting_.front());
    waiting_.pop_front();
    const auto at = std::upper_bound(running_.begin(), running_.end(), r->arrival,
                                     [](uint64_t a, const RequestPtr& x) { return a < x->arrival; });
    running_.insert(at, std::move(r));
  }

  std::vector<SequenceChunk> chunks;
  chunks.reserve(batch.size());
  for (auto& [r, n] : batch) schedule_chunk(*r, n, chunks);
  publish_occupancy();  // before any event of this step, so sinks' observers see it
  Status st = Status::Ok();
  if (!chunks.empty()) st = forward_->forward_batch(chunks, logits_);

  int64_t sampled = 0, prompt_done = 0;
  size_t row = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const RequestPtr& r = batch[i].first;
    if (!st.ok()) {
      fail(r, make_error(ErrorCode::kInternal, "engine step failed: " + st.error().message()));
      continue;
    }
    const int64_t before = r->computed;
    r->computed = chunks[i].start + static_cast<int64_t>(chunks[i].tokens.size());
    if (before < r->prompt_len) prompt_done += std::min(r->computed, r->prompt_len) - before;
    publish_blocks(*r);
    if (!chunks[i].logits) continue;
    const auto vocab = static_cast<size_t>(model_.config().vocab_size);
    std::span<float> lg(logits_.data() + row * vocab, vocab);
    ++row;
    accept_token(r, r->sampler.sample(lg));
    ++sampled;
  }

  const double dt = seconds_between(t0, Clock::now());
  std::lock_guard lock(stats_mu_);  // occupancy follows in drop_finished()
  stats_.last_batch_size = static_cast<int64_t>(batch.size());
  stats_.generated_tokens_total += static_cast<uint64_t>(sampled);
  stats_.prompt_tokens_total += static_cast<uint64_t>(std::max<int64_t>(0, prompt_done));
  stats_.preemptions_total += preempted_now;
  if (sampled > 0 && dt > 0) {
    const double rate = static_cast<double>(sampled) / dt;
    stats_.decode_tokens_per_second = stats_.decode_tokens_per_second == 0
                                          ? rate
                                          : 0.9 * stats_.decode_tokens_per_second + 0.1 * rate;
  }
}

void WorkerImpl::schedule_chunk(Request& r, int64_t tokens, std::vector<SequenceChunk>& chunks) {
  const int64_t bt = cache_.block_tokens();
  const int64_t end = r.computed + tokens;
  if (!r.scheduled) {
    r.scheduled = true;
    r.summary.queue_seconds = seconds_between(r.submitted, Clock::now());
  }
  // Prefix cache: take whole blocks someone already computed, but always leave at least one token
  // of the chunk to run (its end is what the plan's block count assumed).
  while (options_.prefix_caching && r.computed % bt == 0 && r.computed + bt < end &&
         r.blocks.size() == static_cast<size_t>(r.computed / bt)) {
    const auto k = static_cast<size_t>(r.computed / bt);
    const std::span<const int32_t> block_tokens(r.tokens.data() + r.computed,
                                                static_cast<size_t>(bt));
    const uint64_t parent = k == 0 ? 0 : r.hashes[k - 1];
    const std::optional<int32_t> hit = cache_.lookup(parent, block_tokens);
    if (!hit.has_value()) break;
    r.blocks.push_back(*hit);
    if (r.hashes.size() == k) r.hashes.push_back(PagedKvCache::chain_hash(parent, block_tokens));
    r.computed += bt;
    if (r.summary.preemptions == 0 && r.computed <= r.prompt_len) {
      r.summary.cached_prompt_tokens += bt;
    }
  }
  while (static_cast<int64_t>(r.blocks.size()) < cache_.blocks_for(end)) {
    const std::optional<int32_t> b = cache_.allocate();
    QGATE_CHECK(b.has_value(), "worker: the plan promised a free KV block");
    r.blocks.push_back(*b);
  }
  SequenceChunk c;
  c.tokens = std::span<const int32_t>(r.tokens).subspan(static_cast<size_t>(r.computed),
                                                        static_cast<size_t>(end - r.computed));
  c.start = r.computed;
  c.block_table = r.blocks;
  c.logits = end == static_cast<int64_t>(r.tokens.size());
  chunks.push_back(c);
}

void WorkerImpl::publish_blocks(Request& r) {
  if (!options_.prefix_caching) return;
  const int64_t bt = cache_.block_tokens();
  for (int64_t k = r.published; k < r.computed / bt; ++k) {
    const auto ks = static_cast<size_t>(k);
    const uint64_t parent = k == 0 ? 0 : r.hashes[ks - 1];
    const std::span<const int32_t> block_tokens(r.tokens.data() + k * bt, static_cast<size_t>(bt));
    if (r.hashes.size() == ks) r.hashes.push_back(PagedKvCache::chain_hash(parent, block_tokens));
    cache_.publish(r.blocks[ks], r.hashes[ks], parent, block_tokens);
  }
  r.published = std::max(r.published, r.computed / bt);
}

void WorkerImpl::accept_token(const RequestPtr& r, int32_t token) {
  r->tokens.push_back(token);
  r->summary.tokens.push_back(token);
  if (r->summary.tokens.size() == 1) {
    r->summary.first_token_seconds = seconds_between(r->submitted, Clock::now());
  }
  const auto& stop_ids = loaded_.tokenizer->stop_ids();
  if (!r->options.ignore_eos &&
      std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
    finish(r, FinishReason::kStop);
    return;
  }
  const StopMatcher::Output out = r->matcher.push(r->decoder.push(token));
  emit(*r, out.text);
  if (out.stopped) {
    finish(r, FinishReason::kStop);
  } else if (static_cast<int64_t>(r->summary.tokens.size()) >= r->options.max_tokens) {
    finish(r, FinishReason::kLength);
  }
}

void WorkerImpl::emit(Request& r, std::string_view text) {
  if (!text.empty()) r.sink->on_text(text, static_cast<int64_t>(r.summary.tokens.size()));
}

void WorkerImpl::finish(const RequestPtr& r, FinishReason reason) {
  if (r->sink == nullptr) return;  // already ended this round
  if (reason != FinishReason::kStop || !r->matcher.stopped()) {
    // Text held back for a possible stop string or an unfinished character is final now.
    const StopMatcher::Output out = r->matcher.push(r->decoder.flush());
    emit(*r, out.text);
    if (!out.stopped) emit(*r, r->matcher.flush());
  }
  release(*r);
  r->summary.finish_reason = reason;
  r->summary.total_seconds = seconds_between(r->submitted, Clock::now());
  const std::shared_ptr<GenerationSink> sink = std::move(r->sink);
  done_.push_back(r);
  publish_occupancy();  // before the event, so whoever reacts to it sees the freed blocks
  sink->on_finish(r->summary);
}

void WorkerImpl::fail(const RequestPtr& r, const Error& error) {
  if (r->sink == nullptr) return;
  release(*r);
  const std::shared_ptr<GenerationSink> sink = std::move(r->sink);
  done_.push_back(r);
  publish_occupancy();
  sink->on_error(error);
}

void WorkerImpl::release(Request& r) {
  cache_.release_all(r.blocks);
  r.blocks.clear();
  r.computed = 0;
  r.published = 0;
}

void WorkerImpl::drop_finished() {
  if (done_.empty()) return;
  auto ended = [](const RequestPtr& r) { return r->sink == nullptr; };
  std::erase_if(running_, ended);
  std::erase_if(waiting_, ended);
  done_.clear();
  publish_occupancy();
}

void WorkerImpl::publish_occupancy() {
  auto live = [](const RequestPtr& r) { return r->sink != nullptr; };
  const auto running = std::count_if(running_.begin(), running_.end(), live);
  const auto waiting = std::count_if(waiting_.begin(), waiting_.end(), live);
  {
    // Ended requests stay in waiting_ until drop_finished(); whoever reacts to their event must
    // not count them as queued any more.
    std::lock_guard lock(core_->mu);
    core_->waiting = static_cast<int64_t>(waiting);
  }
  std::lock_guard lock(stats_mu_);
  stats_.running = static_cast<int64_t>(running);
  stats_.kv_blocks_used = cache_.used_blocks();
}

}  // namespace

Status WorkerOptions::validate() const {
  auto bad = [](const std::string& m) { return make_error(ErrorCode::kInvalidArgument, m); };
  if (threads < 0) return bad("worker threads must be >= 0");
  if (max_running < 1) return bad("worker max_running must be >= 1");
  if (max_batched_tokens < max_running) {
    return bad("worker max_batched_tokens must be >= max_running (one decode token each)");
  }
  if (kv_block_tokens < 1 || kv_block_tokens > 1024) {
    return bad("worker kv_block_tokens must be in [1, 1024]");
  }
  if (kv_cache_tokens < kv_block_tokens) {
    return bad("worker kv_cache_tokens must hold at least one block");
  }
  if (max_queued < 1) return bad("worker max_queued must be >= 1");
  if (max_context_tokens < 2) return bad("worker max_context_tokens must be >= 2");
  if (device.kind == DeviceSpec::Kind::kAuto) {
    return bad("worker device 'auto' must be resolved to cpu or cuda:N before the worker starts");
  }
  return Status::Ok();
}

Result<std::unique_ptr<Worker>> Worker::create(std::string name, LoadedModel model,
                                               const WorkerOptions& options) {
  QGATE_TRY_STATUS(options.validate());
  if (model.model == nullptr || model.tokenizer == nullptr) {
    return make_error(ErrorCode::kInvalidArgument, "worker " + name + ": no model loaded");
  }
  const int64_t model_context = model.model->config().max_position_embeddings;
  if (model_context > 0 && options.max_context_tokens > model_context) {
    return make_error(ErrorCode::kInvalidArgument,
                      "worker " + name + ": max_context_tokens " +
                          std::to_string(options.max_context_tokens) +
                          " exceeds the model's context of " + std::to_string(model_context));
  }
  int threads = options.threads;
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::unique_ptr<BatchForward> device_forward;
  if (options.device.is_cuda()) {
    BatchForwardLimits limits;
    limits.num_blocks = options.kv_cache_tokens / options.kv_block_tokens;
    limits.block_tokens = options.kv_block_tokens;
    limits.max_batched_tokens = options.max_batched_tokens;
    limits.max_running = options.max_running;
    limits.max_context_tokens = options.max_context_tokens;
    auto f = make_cuda_forward(*model.model, options.device.index, limits);
    if (!f.ok()) {
      return make_error(f.error().code(), "worker " + name + " on " + options.device.to_string() +
                                              ": " + f.error().message());
    }
    device_forward = std::move(f).value();
  }
  return std::unique_ptr<Worker>(std::make_unique<WorkerImpl>(
      std::move(name), std::move(model), options, threads, std::move(device_forward)));
}

}  // namespace qgate
