// The continuous-batching worker on the real model: batched results equal single-sequence ones
// (greedy and seeded), chunked prefill, preemption under a tiny KV budget, prefix caching,
// cancellation, backpressure, the fault switch and shutdown. Also the property all of that rests
// on: a row's matmul / forward result does not depend on the other rows in the batch.
#include <gtest/gtest.h>

#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "engine/paged_kv_cache.h"
#include "engine/worker.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"
#include "tests/engine/model_fixture.h"

namespace qgate {
namespace {

using testing::chat_prompt;
using testing::greedy;

GenerationOptions seeded(int64_t max_tokens, uint64_t seed) {
  GenerationOptions o;
  o.max_tokens = max_tokens;
  o.sampling.temperature = 0.9f;
  o.sampling.top_p = 0.95f;
  o.sampling.seed = seed;
  return o;
}

// Records a request's events; tests block on it with a condition variable, never a sleep.
class RecordingSink : public GenerationSink {
 public:
  void on_text(std::string_view piece, int64_t tokens_so_far) override {
    std::lock_guard lock(mu_);
    text_ += piece;
    tokens_ = tokens_so_far;
    cv_.notify_all();
  }
  void on_finish(const GenerationSummary& summary) override {
    std::lock_guard lock(mu_);
    EXPECT_FALSE(summary_.has_value() || error_.has_value()) << "second final event";
    summary_ = summary;
    cv_.notify_all();
  }
  void on_error(const Error& error) override {
    std::lock_guard lock(mu_);
    EXPECT_FALSE(summary_.has_value() || error_.has_value()) << "second final event";
    error_ = error;
    cv_.notify_all();
  }
  void wait_done() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return summary_.has_value() || error_.has_value(); });
  }
  void wait_tokens(int64_t n) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return tokens_ >= n || summary_.has_value() || error_.has_value(); });
  }
  GenerationSummary summary() {
    wait_done();
    std::lock_guard lock(mu_);
    EXPECT_TRUE(summary_.has_value()) << (error_ ? error_->to_string() : "");
    return summary_.value_or(GenerationSummary{});
  }
  std::optional<Error> error() {
    wait_done();
    std::lock_guard lock(mu_);
    return error_;
  }
  std::string text() {
    wait_done();
    std::lock_guard lock(mu_);
    return text_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string text_;
  int64_t tokens_ = 0;
  std::optional<GenerationSummary> summary_;
  std::optional<Error> error_;
};

struct Expected {
  std::vector<int32_t> tokens;
  std::string text;
};

Expected generate_alone(const LoadedModel& m, const std::vector<int32_t>& prompt,
                        const GenerationOptions& options, KvDType kv_dtype = KvDType::kF32) {
  ThreadPool pool(2);
  Generator gen(*m.model, *m.tokenizer, pool, 512, kv_dtype);
  auto r = gen.generate(prompt, options);
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return {r->tokens, r->text};
}

std::unique_ptr<Worker> make_worker(const LoadedModel& m, WorkerOptions o) {
  o.threads = 2;
  auto w = Worker::create("test", m, o);
  EXPECT_TRUE(w.ok()) << w.error().to_string();
  return std::move(w).value();
}

struct Submitted {
  std::shared_ptr<RecordingSink> sink = std::make_shared<RecordingSink>();
  std::shared_ptr<RequestHandle> handle;
};

Submitted submit(Worker& w, std::vector<int32_t> prompt, GenerationOptions options) {
  Submitted s;
  auto h = w.submit({std::move(prompt), std::move(options)}, s.sink);
  EXPECT_TRUE(h.ok()) << h.error().to_string();
  if (h.ok()) s.handle = h.value();
  return s;
}

const char* const kQuestions[] = {
    "What is 2 + 2?",
    "Name the capital of France and tell me one fact about it.",
    "Give me three tips for staying healthy, with a short reason for each of them please.",
    "Hi",
};

// --- Batch invariance: the property the worker's equality guarantees rest on ------------------

TEST(BatchInvariance, MatmulRowDoesNotDependOnTheOtherRows) {
  ThreadPool pool(2);
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int64_t rows = 40, cols = 256;
  for (DType type : {DType::kQ4_1, DType::kQ4_0, DType::kQ8_0, DType::kF16}) {
    // Random weights: random quants with sensible fp16 scales (Q4_1 with a negative minimum, as
    // in real checkpoints), or random fp16 values.
    const int64_t rb = *dtype_row_bytes(type, cols);
    std::vector<uint8_t> packed(static_cast<size_t>(rb * rows));
    std::uniform_int_distribution<int> byte(0, 255);
    for (uint8_t& v : packed) v = static_cast<uint8_t>(byte(rng));
    if (type == DType::kF16) {
      for (size_t i = 0; i < packed.size(); i += 2) {
        const uint16_t h = fp32_to_fp16(dist(rng) * 0.05f);
        std::memcpy(&packed[i], &h, 2);
      }
    } else {
      for (size_t off = 0; off < packed.size(); off += static_cast<size_t>(dtype_block_bytes(type))) {
        const float d = 0.002f + std::fabs(dist(rng)) * 0.002f;
        const uint16_t dh = fp32_to_fp16(d);
        std::memcpy(&packed[off], &dh, 2);
        if (type == DType::kQ4_1) {
          const uint16_t mh = fp32_to_fp16(-8.0f * d);
          std::memcpy(&packed[off + 2], &mh, 2);
        }
      }
    }
    const WeightView w{type, rows, cols, packed.data()};
    // M values cover the decode tile (1), every prefill tile remainder, the min-term's vector
    // tail and a second 64-token block.
    for (int64_t m : {2, 3, 5, 9, 13, 70}) {
      std::vector<float> x(static_cast<size_t>(m * cols));
      for (float& v : x) v = dist(rng);
      std::vector<float> y(static_cast<size_t>(m * rows));
      MatmulScratch scratch;
      ASSERT_TRUE(matmul(w, x.data(), m, y.data(), pool, scratch).ok());
      for (int64_t t = 0; t < m; ++t) {
        std::vector<float> y1(static_cast<size_t>(rows));
        ASSERT_TRUE(matmul(w, x.data() + t * cols, 1, y1.data(), pool, scratch).ok());
        for (int64_t r = 0; r < rows; ++r) {
          ASSERT_EQ(y1[static_cast<size_t>(r)], y[static_cast<size_t>(t * rows + r)])
              << dtype_name(type) << " m=" << m << " token " << t << " row " << r;
        }
      }
    }
  }
}

// For both KV element types: an fp16 paged cache must give what an fp16 contiguous one gives.
class BatchInvarianceKv : public ::testing::TestWithParam<KvDType> {};

TEST_P(BatchInvarianceKv, ForwardBatchLogitsEqualForwardAlone) {
  QGATE_REQUIRE_MODEL();
  const KvDType dtype = GetParam();
  const LlamaModel& model = *model_->model;
  const auto vocab = static_cast<size_t>(model.config().vocab_size);
  ThreadPool pool(2);
  const std::vector<int32_t> a = chat_prompt(*model_, kQuestions[0]);
  const std::vector<int32_t> b = chat_prompt(*model_, kQuestions[1]);

  // Alone: a's prompt, then one decode token; b's whole prompt.
  KvCache ca(model.config(), 128, dtype), cb(model.config(), 128, dtype);
  ForwardScratch s;
  std::vector<float> la(vocab), la2(vocab), lb(vocab);
  ASSERT_TRUE(model.forward(a, ca, s, pool, LogitsMode::kLast, la).ok());
  const int32_t next[1] = {1234};
  ASSERT_TRUE(model.forward(next, ca, s, pool, LogitsMode::kLast, la2).ok());
  ASSERT_TRUE(model.forward(b, cb, s, pool, LogitsMode::kLast, lb).ok());

  // Batched, block size 8: step 1 runs a's prompt with the first 5 tokens of b; step 2 runs a's
  // decode token with the rest of b's prompt.
  PagedKvCache cache(model.config(), 32, 8, KvStorage::kHost, dtype);
  auto table = [&](int64_t tokens) {
    std::vector<int32_t> t;
    for (int64_t i = 0; i < cache.blocks_for(tokens); ++i) t.push_back(*cache.allocate());
    return t;
  };
  std::vector<int32_t> ta = table(static_cast<int64_t>(a.size()) + 1);
  std::vector<int32_t> tb = table(static_cast<int64_t>(b.size()));
  std::vector<float> out(2 * vocab);
  const SequenceChunk step1[2] = {
      {a, 0, ta, true}, {std::span<const int32_t>(b).first(5), 0, tb, false}};
  ASSERT_TRUE(model.forward_batch(step1, cache, s, pool, out).ok());
  EXPECT_EQ(std::vector<float>(out.begin(), out.begin() + static_cast<ptrdiff_t>(vocab)), la);
  const SequenceChunk step2[2] = {{next, static_cast<int64_t>(a.size()), ta, true},
                                  {std::span<const int32_t>(b).subspan(5), 5, tb, true}};
  ASSERT_TRUE(model.forward_batch(step2, cache, s, pool, out).ok());
  EXPECT_EQ(std::vector<float>(out.begin(), out.begin() + static_cast<ptrdiff_t>(vocab)), la2);
  EXPECT_EQ(std::vector<float>(out.begin() + static_cast<ptrdiff_t>(vocab), out.end()), lb);
}

// Attention splits its work differently for a prefill (tiles of rows, each KV head's query heads
// together, positions in chunks of 64 inside a cache block) and for decode (one row and one head an
// item); neither may change a result. A 150-token prompt prefilled at once into a contiguous cache
// (one block, so several chunks; a last tile of two rows) must give at every position the logits
// of decoding it token by token through a paged cache of 16-token blocks, bit for bit.
TEST_P(BatchInvarianceKv, PrefillEqualsTokenByTokenDecodeBitForBit) {
  QGATE_REQUIRE_MODEL();
  const KvDType dtype = GetParam();
  const LlamaModel& model = *model_->model;
  const auto vocab = static_cast<size_t>(model.config().vocab_size);
  ThreadPool pool(2);
  std::string text;
  for (int i = 0; i < 20; ++i) text += "Line " + std::to_string(i) + " of a longer prompt. ";
  std::vector<int32_t> tokens = chat_prompt(*model_, text);
  ASSERT_GE(tokens.size(), 150u);
  tokens.resize(150);

  KvCache contiguous(model.config(), 256, dtype);
  ForwardScratch s;
  std::vector<float> all(tokens.size() * vocab);
  ASSERT_TRUE(model.forward(tokens, contiguous, s, pool, LogitsMode::kAll, all).ok());

  PagedKvCache cache(model.config(), 16, 16, KvStorage::kHost, dtype);
  std::vector<int32_t> table;
  for (int64_t i = 0; i < cache.blocks_for(static_cast<int64_t>(tokens.size())); ++i) {
    table.push_back(*cache.allocate());
  }
  std::vector<float> one(vocab);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const SequenceChunk step[1] = {{std::span(tokens).subspan(i, 1), static_cast<int64_t>(i),
                                    table, true}};
    ASSERT_TRUE(model.forward_batch(step, cache, s, pool, one).ok());
    ASSERT_EQ(std::memcmp(one.data(), all.data() + i * vocab, vocab * sizeof(float)), 0)
        << "position " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(KvDTypes, BatchInvarianceKv,
                         ::testing::Values(KvDType::kF32, KvDType::kF16),
                         [](const auto& info) { return std::string(kv_dtype_name(info.param)); });

TEST(BatchInvariance, ForwardBatchRejectsBadChunks) {
  QGATE_REQUIRE_MODEL();
  const LlamaModel& model = *model_->model;
  ThreadPool pool(1);
  ForwardScratch s;
  PagedKvCache cache(model.config(), 4, 8);
  std::vector<float> out(static_cast<size_t>(model.config().vocab_size));
  const std::vector<int32_t> tokens(10, 1);
  const std::vector<int32_t> one_block = {0};
  const SequenceChunk short_table[1] = {{tokens, 0, one_block, true}};
  EXPECT_EQ(model.forward_batch(short_table, cache, s, pool, out).error().code(),
            ErrorCode::kInvalidArgument);
  const std::vector<int32_t> bad_block = {0, 9};
  const SequenceChunk outside[1] = {{tokens, 0, bad_block, true}};
  EXPECT_EQ(model.forward_batch(outside, cache, s, pool, out).error().code(),
            ErrorCode::kInvalidArgument);
  const std::vector<int32_t> bad_token = {-1};
  const SequenceChunk vocab[1] = {{bad_token, 0, one_block, true}};
  EXPECT_EQ(model.forward_batch(vocab, cache, s, pool, out).error().code(),
            ErrorCode::kInvalidArgument);
}

// --- The worker ----------------------------------------------------------------------------

TEST(Worker, BatchedGreedyEqualsGeneratorForMixedLengthsAndArrivals) {
  QGATE_REQUIRE_MODEL();
  std::vector<std::vector<int32_t>> prompts;
  std::vector<Expected> expected;
  for (const char* q : kQuestions) {
    prompts.push_back(chat_prompt(*model_, q));
    expected.push_back(generate_alone(*model_, prompts.back(), greedy(12)));
  }
  WorkerOptions o;
  o.max_running = 4;
  o.max_batched_tokens = 24;  // prompts are 30-50 tokens: prefill is chunked beside decoders
  o.kv_block_tokens = 8;
  o.kv_cache_tokens = 1024;
  auto w = make_worker(*model_, o);
  // Two arrive together; two more arrive while the first ones are decoding.
  Submitted r0 = submit(*w, prompts[0], greedy(12));
  Submitted r1 = submit(*w, prompts[1], greedy(12));
  r0.sink->wait_tokens(3);
  Submitted r2 = submit(*w, prompts[2], greedy(12));
  r1.sink->wait_tokens(5);
  Submitted r3 = submit(*w, prompts[3], greedy(12));
  const Submitted* all[] = {&r0, &r1, &r2, &r3};
  for (size_t i = 0; i < 4; ++i) {
    const GenerationSummary s = all[i]->sink->summary();
    EXPECT_EQ(s.tokens, expected[i].tokens) << kQuestions[i];
    EXPECT_EQ(all[i]->sink->text(), expected[i].text) << kQuestions[i];
    EXPECT_EQ(s.prompt_tokens, static_cast<int64_t>(prompts[i].size()));
    EXPECT_LE(s.queue_seconds, s.first_token_seconds);
    EXPECT_LE(s.first_token_seconds, s.total_seconds);
  }
  const WorkerStats st = w->stats();
  EXPECT_EQ(st.kv_blocks_total, 128);
  EXPECT_GT(st.generated_tokens_total, 0u);
  EXPECT_GT(st.decode_tokens_per_second, 0.0);
  EXPECT_GT(st.weight_bytes, 0u);
}

// kv_cache_dtype f16 reaches the worker's cache: batched greedy text equals an fp16 Generator's.
TEST(Worker, Fp16KvCacheGivesTheFp16GeneratorsGreedyText) {
  QGATE_REQUIRE_MODEL();
  WorkerOptions o;
  o.max_running = 2;
  o.kv_block_tokens = 8;
  o.kv_cache_tokens = 512;
  o.kv_cache_dtype = KvDType::kF16;
  auto w = make_worker(*model_, o);
  std::vector<Submitted> runs;
  std::vector<Expected> expected;
  for (const char* q : {kQuestions[0], kQuestions[1]}) {
    const std::vector<int32_t> p = chat_prompt(*model_, q);
    expected.push_back(generate_alone(*model_, p, greedy(12), KvDType::kF16));
    runs.push_back(submit(*w, p, greedy(12)));
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    EXPECT_EQ(runs[i].sink->summary().tokens, expected[i].tokens) << i;
    EXPECT_EQ(runs[i].sink->text(), expected[i].text) << i;
  }
}

TEST(Worker, SeededSamplingIsTheSameAloneAndBatched) {
  QGATE_REQUIRE_MODEL();
  const std::vector<int32_t> p = chat_prompt(*model_, "Tell me a story about a dragon.");
  const Expected alone = generate_alone(*model_, p, seeded(16, 1234));
  WorkerOptions o;
  o.kv_cache_tokens = 1024;
  auto w = make_worker(*model_, o);
  Submitted other1 = submit(*w, chat_prompt(*model_, kQuestions[2]), seeded(16, 5));
  Submitted mine = submit(*w, p, seeded(16, 1234));
  Submitted other2 = submit(*w, chat_prompt(*model_, kQuestions[1]), greedy(16));
  EXPECT_EQ(mine.sink->summary().tokens, alone.tokens);
  other1.sink->wait_done();
  other2.sink->wait_done();
}

TEST(Worker, TinyKvBudgetPreemptsAndStillGivesTheSameGreedyText) {
  QGATE_REQUIRE_MODEL();
  std::vector<std::vector<int32_t>> prompts;
  std::vector<Expected> expected;
  for (int i = 0; i < 3; ++i) {
    prompts.push_back(chat_prompt(*model_, kQuestions[i]));
    GenerationOptions g = greedy(16);
    g.ignore_eos = true;  // every sequence grows to its full length
    expected.push_back(generate_alone(*model_, prompts.back(), g));
  }
  WorkerOptions o;
  o.max_running = 3;
  o.kv_block_tokens = 8;
  // 12 blocks: prompts of 38-48 tokens take 5-6 blocks and grow to 7-8; two are admitted, and
  // as they grow the younger one has to make room.
  o.kv_cache_tokens = 96;
  o.prefix_caching = false;
  auto w = make_worker(*model_, o);
  std::vector<Submitted> subs;
  for (int i = 0; i < 3; ++i) {
    GenerationOptions g = greedy(16);
    g.ignore_eos = true;
    subs.push_back(submit(*w, prompts[static_cast<size_t>(i)], g));
  }
  int64_t preemptions = 0;
  for (size_t i = 0; i < 3; ++i) {
    const GenerationSummary s = subs[i].sink->summary();
    EXPECT_EQ(s.tokens, expected[i].tokens) << kQuestions[i];
    preemptions += s.preemptions;
  }
  EXPECT_GT(preemptions, 0);
  EXPECT_EQ(w->stats().preemptions_total, static_cast<uint64_t>(preemptions));
  EXPECT_EQ(w->stats().kv_blocks_used, 0);
}

TEST(Worker, RejectsWhatCanNeverFit) {
  QGATE_REQUIRE_MODEL();
  WorkerOptions o;
  o.kv_block_tokens = 8;
  o.kv_cache_tokens = 64;
  auto w = make_worker(*model_, o);
  auto sink = std::make_shared<RecordingSink>();
  const std::vector<int32_t> p = chat_prompt(*model_, kQuestions[0]);
  auto r = w->submit({p, greedy(64)}, sink);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kOutOfRange);
  r = w->submit({{}, greedy(4)}, sink);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  r = w->submit({{1, 2, 999999}, greedy(4)}, sink);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  GenerationOptions bad = greedy(4);
  bad.sampling.top_p = 2.0f;
  r = w->submit({p, bad}, sink);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);

  WorkerOptions too_long;
  too_long.max_context_tokens = 1 << 20;
  EXPECT_EQ(Worker::create("x", *model_, too_long).error().code(), ErrorCode::kInvalidArgument);
  WorkerOptions bad_batch;
  bad_batch.max_running = 32;
  bad_batch.max_batched_tokens = 8;
  EXPECT_EQ(Worker::create("x", *model_, bad_batch).error().code(), ErrorCode::kInvalidArgument);
}

TEST(Worker, SharedPromptPrefixIsServedFromTheCache) {
  QGATE_REQUIRE_MODEL();
  // A long shared system prompt, two different questions.
  auto prompt = [&](const std::string& q) {
    std::vector<ChatMessage> msgs = {
        {"system", "You are a careful assistant. Answer in one short sentence. Be friendly, "
                   "precise and never invent facts you are not sure about."},
        {"user", q}};
    return model_->tokenizer->encode(model_->chat_template.render(msgs, true).value());
  };
  const std::vector<int32_t> p1 = prompt("What is 2 + 2?");
  const std::vector<int32_t> p2 = prompt("What colour is the sky?");
  const Expected e2 = generate_alone(*model_, p2, greedy(8));
  WorkerOptions o;
  o.kv_block_tokens = 8;
  o.kv_cache_tokens = 512;
  auto w = make_worker(*model_, o);
  Submitted first = submit(*w, p1, greedy(8));
  EXPECT_EQ(first.sink->summary().cached_prompt_tokens, 0);
  Submitted second = submit(*w, p2, greedy(8));
  const GenerationSummary s = second.sink->summary();
  EXPECT_GE(s.cached_prompt_tokens, 24);  // the system prompt spans several 8-token blocks
  EXPECT_EQ(s.cached_prompt_tokens % 8, 0);
  EXPECT_EQ(s.tokens, e2.tokens);
  EXPECT_EQ(w->stats().kv_blocks_used, 0);  // cached blocks nobody holds count as free
}

TEST(Worker, CancelEndsTheRequestAndFreesItsBlocks) {
  QGATE_REQUIRE_MODEL();
  WorkerOptions o;
  o.kv_block_tokens = 8;
  o.kv_cache_tokens = 512;
  o.prefix_caching = false;
  auto w = make_worker(*model_, o);
  GenerationOptions g = greedy(400);
  g.ignore_eos = true;
  Submitted r = submit(*w, chat_prompt(*model_, kQuestions[2]), g);
  r.sink->wait_tokens(2);
  EXPECT_GT(w->stats().kv_blocks_used, 0);
  r.handle->cancel();
  const GenerationSummary s = r.sink->summary();
  EXPECT_EQ(s.finish_reason, FinishReason::kCancelled);
  EXPECT_LT(s.tokens.size(), 400u);
  EXPECT_EQ(w->stats().kv_blocks_used, 0);
  r.handle->cancel();  // idempotent, and a no-op after the end
}

// A sink that cancels its own request from inside on_text: the one call back into the worker the
// contract allows on the scheduler thread.
class CancellingSink : public RecordingSink {
 public:
  std::shared_ptr<RequestHandle> handle;
  std::mutex handle_mu;
  void on_text(std::string_view piece, int64_t n) override {
    RecordingSink::on_text(piece, n);
    std::lock_guard lock(handle_mu);
    if (handle) handle->cancel();
  }
};

TEST(Worker, SinkMayCancelFromItsOwnCallback) {
  QGATE_REQUIRE_MODEL();
  auto w = make_worker(*model_, WorkerOptions{});
  auto sink = std::make_shared<CancellingSink>();
  GenerationOptions g = greedy(200);
  g.ignore_eos = true;
  std::unique_lock lock(sink->handle_mu);  // the handle is set before any on_text can use it
  auto h = w->submit({chat_prompt(*model_, kQuestions[2]), g}, sink);
  ASSERT_TRUE(h.ok());
  sink->handle = h.value();
  lock.unlock();
  EXPECT_EQ(sink->summary().finish_reason, FinishReason::kCancelled);
}

TEST(Worker, FullQueueRejectsAtOnceWithOverloaded) {
  QGATE_REQUIRE_MODEL();
  WorkerOptions o;
  o.max_queued = 2;
  auto w = make_worker(*model_, o);
  w->set_fault(WorkerFault::kHang);  // nothing leaves the queue
  const std::vector<int32_t> p = chat_prompt(*model_, kQuestions[3]);
  Submitted a = submit(*w, p, greedy(4));
  Submitted b = submit(*w, p, greedy(4));
  auto sink = std::make_shared<RecordingSink>();
  auto r = w->submit({p, greedy(4)}, sink);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_NE(r.error().message().find("overloaded"), std::string::npos);
  const WorkerStats st = w->stats();
  EXPECT_EQ(st.queued, 2);
  EXPECT_EQ(st.rejected_total, 1u);
  // Clearing the fault lets the queued ones run.
  w->set_fault(WorkerFault::kNone);
  EXPECT_FALSE(a.sink->summary().tokens.empty());
  EXPECT_FALSE(b.sink->summary().tokens.empty());
}

TEST(Worker, FaultSwitch) {
  QGATE_REQUIRE_MODEL();
  auto w = make_worker(*model_, WorkerOptions{});
  const std::vector<int32_t> p = chat_prompt(*model_, kQuestions[3]);

  w->set_fault(WorkerFault::kOverload);
  auto sink = std::make_shared<RecordingSink>();
  auto r = w->submit({p, greedy(4)}, sink);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kResourceExhausted);

  w->set_fault(WorkerFault::kFail);
  Submitted failed = submit(*w, p, greedy(4));
  const std::optional<Error> e = failed.sink->error();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code(), ErrorCode::kInternal);
  EXPECT_NE(e->message().find("injected fault"), std::string::npos);

  w->set_fault(WorkerFault::kHang);
  Submitted hung = submit(*w, p, greedy(4));
  EXPECT_EQ(w->stats().queued, 1);
  hung.handle->cancel();
  EXPECT_EQ(hung.sink->summary().finish_reason, FinishReason::kCancelled);

  w->set_fault(WorkerFault::kNone);
  Submitted ok = submit(*w, p, greedy(4));
  EXPECT_FALSE(ok.sink->summary().tokens.empty());
}

TEST(Worker, DestructionEndsQueuedRequestsWithCancelled) {
  QGATE_REQUIRE_MODEL();
  auto w = make_worker(*model_, WorkerOptions{});
  w->set_fault(WorkerFault::kHang);
  Submitted a = submit(*w, chat_prompt(*model_, kQuestions[0]), greedy(4));
  const std::shared_ptr<RequestHandle> handle = a.handle;
  w.reset();
  const std::optional<Error> e = a.sink->error();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code(), ErrorCode::kCancelled);
  handle->cancel();  // the worker is gone: a no-op
}

}  // namespace
}  // namespace qgate
