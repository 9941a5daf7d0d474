// Perplexity / KL / top-1 evaluation on the real model, checked against a direct computation.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "engine/evaluation.h"
#include "kernels/cpu/thread_pool.h"
#include "tests/engine/model_fixture.h"

namespace qgate {
namespace {

const char* kText =
    "The Debian project is an association of individuals who have made common cause to create a "
    "free operating system. Its members work together over the Internet, and every package is "
    "maintained by a volunteer who takes responsibility for it. New releases come out roughly "
    "every two years, and security updates are published for each stable release.";

TEST(Evaluation, SingleWindowPerplexityEqualsDirectComputation) {
  QGATE_REQUIRE_MODEL();
  const LlamaModel& model = *model_->model;
  const auto tokens = model_->tokenizer->encode(kText, false);
  const auto n = static_cast<int64_t>(tokens.size());
  ThreadPool pool(2);
  EvalOptions o;
  o.context = 512;
  o.stride = 512;
  auto r = evaluate(model, nullptr, tokens, o, pool);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->windows, 1);
  EXPECT_EQ(r->scored_tokens, n - 1);

  // Direct: -mean log softmax(logits[t - 1])[tokens[t]].
  KvCache cache(model.config(), n);
  ForwardScratch scratch;
  const int64_t v = model.config().vocab_size;
  std::vector<float> logits(static_cast<size_t>(n * v));
  ASSERT_TRUE(model.forward(tokens, cache, scratch, pool, LogitsMode::kAll, logits).ok());
  double nll = 0;
  for (int64_t t = 1; t < n; ++t) {
    const float* row = logits.data() + (t - 1) * v;
    double z = 0;
    for (int64_t i = 0; i < v; ++i) z += std::exp(static_cast<double>(row[i]));
    nll -= row[tokens[static_cast<size_t>(t)]] - std::log(z);
  }
  EXPECT_NEAR(r->mean_nll, nll / static_cast<double>(n - 1), 1e-4);
  EXPECT_NEAR(r->perplexity, std::exp(r->mean_nll), 1e-9);
  // An instruct model on plain English prose: perplexity well under 100.
  EXPECT_GT(r->perplexity, 2.0);
  EXPECT_LT(r->perplexity, 100.0);
}

TEST(Evaluation, StridedWindowsScoreEveryTokenOnceAndNeverWorse) {
  QGATE_REQUIRE_MODEL();
  const auto tokens = model_->tokenizer->encode(kText, false);
  ThreadPool pool(2);
  EvalOptions disjoint{16, 16, 0};
  EvalOptions strided{16, 4, 0};
  auto a = evaluate(*model_->model, nullptr, tokens, disjoint, pool);
  auto b = evaluate(*model_->model, nullptr, tokens, strided, pool);
  ASSERT_TRUE(a.ok() && b.ok());
  // Disjoint windows skip each window's first token; strided ones score every token but the first.
  EXPECT_EQ(b->scored_tokens, static_cast<int64_t>(tokens.size()) - 1);
  EXPECT_LT(a->scored_tokens, b->scored_tokens);
  // More context per scored token: the strided protocol's perplexity is lower.
  EXPECT_LT(b->perplexity, a->perplexity);
}

TEST(Evaluation, ModelAgainstItselfHasZeroKlAndFullAgreement) {
  QGATE_REQUIRE_MODEL();
  const auto tokens = model_->tokenizer->encode(kText, false);
  ThreadPool pool(2);
  auto r = evaluate(*model_->model, model_->model.get(), tokens, EvalOptions{64, 32, 0}, pool);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->has_baseline);
  EXPECT_NEAR(r->mean_kl, 0.0, 1e-9);
  EXPECT_DOUBLE_EQ(r->top1_agreement, 1.0);
  EXPECT_DOUBLE_EQ(r->perplexity, r->baseline_perplexity);
}

TEST(Evaluation, ManyVariantsInOnePassEqualSeparateRunsWhateverTheThreadCount) {
  QGATE_REQUIRE_MODEL();
  const auto tokens = model_->tokenizer->encode(kText, false);
  const EvalOptions o{32, 16, 0};
  ThreadPool one(1), two(2);
  auto alone = evaluate(*model_->model, model_->model.get(), tokens, o, one);
  const LlamaModel* const models[2] = {model_->model.get(), model_->model.get()};
  auto many = evaluate_many(models, model_->model.get(), tokens, o, two);
  ASSERT_TRUE(alone.ok() && many.ok());
  ASSERT_EQ(many->size(), 2u);
  for (const EvalResult& r : many.value()) {
    // Per-position figures are summed in position order, so threads change nothing, bit for bit.
    EXPECT_EQ(r.mean_nll, alone->mean_nll);
    EXPECT_EQ(r.mean_kl, alone->mean_kl);
    EXPECT_EQ(r.scored_tokens, alone->scored_tokens);
    EXPECT_EQ(r.windows, alone->windows);
  }
  EXPECT_FALSE(evaluate_many({}, nullptr, tokens, o, one).ok());
}

TEST(Evaluation, RejectsBadOptions) {
  QGATE_REQUIRE_MODEL();
  ThreadPool pool(1);
  const std::vector<int32_t> tokens = {1, 2, 3, 4};
  EXPECT_FALSE(evaluate(*model_->model, nullptr, tokens, EvalOptions{1, 1, 0}, pool).ok());
  EXPECT_FALSE(evaluate(*model_->model, nullptr, tokens, EvalOptions{8, 9, 0}, pool).ok());
  EXPECT_FALSE(evaluate(*model_->model, nullptr, tokens, EvalOptions{8, 0, 0}, pool).ok());
  const std::vector<int32_t> one = {1};
  EXPECT_FALSE(evaluate(*model_->model, nullptr, one, EvalOptions{8, 4, 0}, pool).ok());
}

}  // namespace
}  // namespace qgate
