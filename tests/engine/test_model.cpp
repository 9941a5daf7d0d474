// The forward pass on the real model: shapes, consistency between prefill and decode, chunking,
// threading and input errors. Correctness against an independent reference is in
// tests/python/test_forward_vs_numpy.py.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "engine/llama_model.h"
#include "kernels/cpu/thread_pool.h"
#include "tests/engine/model_fixture.h"

namespace qgate {
namespace {

std::vector<int32_t> sample_tokens(const LoadedModel& m, const std::string& text) {
  return m.tokenizer->encode(text);
}

float spread(std::span<const float> x) {
  const double mean = std::accumulate(x.begin(), x.end(), 0.0) / static_cast<double>(x.size());
  double var = 0;
  for (float v : x) var += (v - mean) * (v - mean);
  return static_cast<float>(std::sqrt(var / static_cast<double>(x.size())));
}

float max_abs_diff(std::span<const float> a, std::span<const float> b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

TEST(LlamaModel, RealModelConfig) {
  QGATE_REQUIRE_MODEL();
  const LlamaConfig& c = model_->model->config();
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FLOAT_EQ(c.rope_theta, 100000.0f);
  EXPECT_EQ(c.rope_style, RopeStyle::kAdjacentPairs);
}

// Prefill of n tokens and n single-token decode steps must give the same logits: they differ only
// in how work is batched, so any difference beyond float rounding is a bug (wrong positions,
// stale cache rows, a tile edge case).
TEST(LlamaModel, PrefillMatchesTokenByTokenDecode) {
  QGATE_REQUIRE_MODEL();
  const LlamaModel& model = *model_->model;
  const int64_t vocab = model.config().vocab_size;
  const auto tokens = sample_tokens(*model_, "The capital of France is Paris, and the capital of");
  ThreadPool pool(2);

  KvCache batch_cache(model.config(), 256);
  ForwardScratch scratch;
  std::vector<float> all(tokens.size() * static_cast<size_t>(vocab));
  ASSERT_TRUE(model.forward(tokens, batch_cache, scratch, pool, LogitsMode::kAll, all).ok());
  EXPECT_EQ(batch_cache.size(), static_cast<int64_t>(tokens.size()));

  KvCache step_cache(model.config(), 256);
  std::vector<float> one(static_cast<size_t>(vocab));
  for (size_t i = 0; i < tokens.size(); ++i) {
    ASSERT_TRUE(model.forward(std::span(tokens).subspan(i, 1), step_cache, scratch, pool,
                              LogitsMode::kLast, one).ok());
    std::span<const float> row(all.data() + i * static_cast<size_t>(vocab),
                               static_cast<size_t>(vocab));
    EXPECT_LE(max_abs_diff(row, one), 1e-3f * spread(row)) << "position " << i;
  }
}

// A prompt longer than the prefill chunk crosses chunk boundaries inside forward().
TEST(LlamaModel, LongPromptAcrossChunksMatchesSplitPrefill) {
  QGATE_REQUIRE_MODEL();
  const LlamaModel& model = *model_->model;
  std::string text;
  for (int i = 0; i < 40; ++i) text += "Sentence number " + std::to_string(i) + " is here. ";
  const auto tokens = sample_tokens(*model_, text);
  ASSERT_GT(tokens.size(), 300u);
  ThreadPool pool(2);
  ForwardScratch scratch;
  std::vector<float> whole(static_cast<size_t>(model.config().vocab_size));
  std::vector<float> split(whole.size());

  KvCache a(model.config(), 1024);
  ASSERT_TRUE(model.forward(tokens, a, scratch, pool, LogitsMode::kLast, whole).ok());
  KvCache b(model.config(), 1024);
  const size_t cut = 77;  // not a multiple of anything in the kernels
  ASSERT_TRUE(model.forward(std::span(tokens).first(cut), b, scratch, pool, LogitsMode::kLast,
                            split).ok());
  ASSERT_TRUE(model.forward(std::span(tokens).subspan(cut), b, scratch, pool, LogitsMode::kLast,
                            split).ok());
  EXPECT_LE(max_abs_diff(whole, split), 1e-3f * spread(whole));
}

TEST(LlamaModel, ThreadCountDoesNotChangeLogits) {
  QGATE_REQUIRE_MODEL();
  const LlamaModel& model = *model_->model;
  const auto tokens = sample_tokens(*model_, "Threads must not change the answer.");
  std::vector<float> l1(static_cast<size_t>(model.config().vocab_size)), l2(l1.size());
  ForwardScratch s1, s2;
  ThreadPool p1(1), p2(2);
  KvCache c1(model.config(), 64), c2(model.config(), 64);
  ASSERT_TRUE(model.forward(tokens, c1, s1, p1, LogitsMode::kLast, l1).ok());
  ASSERT_TRUE(model.forward(tokens, c2, s2, p2, LogitsMode::kLast, l2).ok());
  EXPECT_LE(max_abs_diff(l1, l2), 1e-4f * spread(l1));
}

// An fp16 KV cache rounds each key and value to 11 significant bits. With exact matmuls that moves
// the logits by under 1% of their spread (measured 0.0045 worst, 0.0018 mean over 32 positions,
// the same top token everywhere). Through the serving kernels the same perturbation is amplified the
// way any one-ulp change is (an activation crossing an int8 rounding step): measured 0.38 worst,
// 0.22 mean, top-1 93% -- inside the 1.0 / 0.5 std that tests/python/test_forward_vs_numpy.py
// allows the int8 scheme itself against an fp64 reference (llama.cpp: 0.66 / 0.33 there).
TEST(LlamaModel, Fp16KvCacheStaysCloseToFp32) {
  QGATE_REQUIRE_MODEL();
  const LlamaModel& model = *model_->model;
  const auto vocab = static_cast<size_t>(model.config().vocab_size);
  std::string text;
  for (int i = 0; i < 3; ++i) {
    text += "Section " + std::to_string(i) + ". The maintainer describes the package's "
            "dependencies, and the tools check them before anything on the machine changes. ";
  }
  const auto tokens = sample_tokens(*model_, text);
  ASSERT_GE(tokens.size(), 60u);
  ThreadPool pool(2);
  // The exact-matmul pass is single-threaded double precision: its first 32 positions suffice.
  auto run = [&](KvDType dtype, bool reference) {
    const auto n = reference ? std::min<size_t>(32, tokens.size()) : tokens.size();
    const std::span<const int32_t> in(tokens.data(), n);
    KvCache cache(model.config(), static_cast<int64_t>(n), dtype);
    ForwardScratch s;
    s.reference_matmul = reference;
    std::vector<float> logits(n * vocab);
    EXPECT_TRUE(model.forward(in, cache, s, pool, LogitsMode::kAll, logits).ok());
    return logits;
  };
  struct Diff {
    float worst = 0;
    double mean = 0;
    double agreement = 0;
  };
  auto compare = [&](bool reference) {
    const std::vector<float> f32 = run(KvDType::kF32, reference);
    const std::vector<float> f16 = run(KvDType::kF16, reference);
    Diff d;
    size_t agree = 0;
    const size_t n = f32.size() / vocab;
    for (size_t t = 0; t < n; ++t) {
      const std::span<const float> a(f32.data() + t * vocab, vocab);
      const std::span<const float> b(f16.data() + t * vocab, vocab);
      const float rel = max_abs_diff(a, b) / spread(a);
      d.worst = std::max(d.worst, rel);
      d.mean += rel / static_cast<double>(n);
      agree += (std::max_element(a.begin(), a.end()) - a.begin()) ==
               (std::max_element(b.begin(), b.end()) - b.begin());
    }
    d.agreement = static_cast<double>(agree) / static_cast<double>(n);
    std::printf("fp16 vs fp32 KV, %s matmuls, %zu positions: max |d| / std worst %.4f mean %.4f, "
                "top-1 %.4f\n", reference ? "reference" : "int8", n, d.worst, d.mean,
                d.agreement);
    return d;
  };
  const Diff ref = compare(true), served = compare(false);
  EXPECT_GT(ref.worst, 0.0f);  // the two caches really differ
  EXPECT_LE(ref.worst, 0.03f);
  EXPECT_EQ(ref.agreement, 1.0);
  EXPECT_LE(served.worst, 1.0f);
  EXPECT_LE(served.mean, 0.5);
  EXPECT_GE(served.agreement, 0.85);
}

TEST(LlamaModel, RejectsBadInputWithoutTouchingTheCache) {
  QGATE_REQUIRE_MODEL();
  const LlamaModel& model = *model_->model;
  ThreadPool pool(1);
  ForwardScratch scratch;
  std::vector<float> logits(static_cast<size_t>(model.config().vocab_size));
  KvCache cache(model.config(), 8);

  const std::vector<int32_t> bad_id = {1, 49152};
  Status st = model.forward(bad_id, cache, scratch, pool, LogitsMode::kLast, logits);
  EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
  const std::vector<int32_t> negative = {-1};
  EXPECT_FALSE(model.forward(negative, cache, scratch, pool, LogitsMode::kLast, logits).ok());
  const std::vector<int32_t> too_long(9, 1);
  st = model.forward(too_long, cache, scratch, pool, LogitsMode::kLast, logits);
  EXPECT_EQ(st.error().code(), ErrorCode::kOutOfRange);
  EXPECT_FALSE(model.forward({}, cache, scratch, pool, LogitsMode::kLast, logits).ok());
  std::vector<float> small(10);
  const std::vector<int32_t> ok_tokens = {1, 2};
  EXPECT_FALSE(model.forward(ok_tokens, cache, scratch, pool, LogitsMode::kLast, small).ok());
  EXPECT_EQ(cache.size(), 0);
  EXPECT_TRUE(model.forward(ok_tokens, cache, scratch, pool, LogitsMode::kLast, logits).ok());
  EXPECT_EQ(cache.size(), 2);
}

}  // namespace
}  // namespace qgate
