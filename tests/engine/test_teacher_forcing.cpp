// Teacher-forced scoring on the real model, checked against an independent step-by-step
// computation: a greedy continuation agrees with the model everywhere and scores the NLLs of its
// own decode steps; random tokens score far worse; chunk boundaries do not change any score.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <stop_token>
#include <string>
#include <vector>

#include "engine/teacher_forcing.h"
#include "kernels/cpu/thread_pool.h"
#include "tests/engine/model_fixture.h"

namespace qgate {
namespace {

using testing::chat_prompt;
using testing::greedy;

// -log softmax(logits)[token], written out here rather than through engine/log_softmax.h so the
// check does not share code with what it checks.
double reference_nll(std::span<const float> logits, int32_t token) {
  double max = logits[0];
  for (float v : logits) max = std::max(max, static_cast<double>(v));
  double z = 0;
  for (float v : logits) z += std::exp(static_cast<double>(v) - max);
  return -(static_cast<double>(logits[static_cast<size_t>(token)]) - max - std::log(z));
}

// The NLL of each continuation token, decoding one token per forward() call as the Generator does.
std::vector<double> step_by_step_nll(const LlamaModel& model, std::span<const int32_t> prompt,
                                     std::span<const int32_t> continuation, ThreadPool& pool) {
  KvCache cache(model.config(), static_cast<int64_t>(prompt.size() + continuation.size()));
  ForwardScratch scratch;
  std::vector<float> logits(static_cast<size_t>(model.config().vocab_size));
  std::vector<double> nll;
  EXPECT_TRUE(model.forward(prompt, cache, scratch, pool, LogitsMode::kLast, logits).ok());
  for (int32_t token : continuation) {
    nll.push_back(reference_nll(logits, token));
    const int32_t one[1] = {token};
    EXPECT_TRUE(model.forward(one, cache, scratch, pool, LogitsMode::kLast, logits).ok());
  }
  return nll;
}

double mean(std::span<const float> v) {
  double s = 0;
  for (float x : v) s += x;
  return s / static_cast<double>(v.size());
}

std::vector<int32_t> fixed_random_tokens(size_t n, int64_t vocab) {
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> out(n);
  for (int32_t& t : out) t = dist(rng);
  return out;
}

class TeacherForcingTest : public ::testing::Test {
 protected:
  ThreadPool pool_{2};
  ScoringScratch scratch_;
};

TEST_F(TeacherForcingTest, GreedyContinuationAgreesEverywhereAndScoresItsDecodeSteps) {
  QGATE_REQUIRE_MODEL();
  const LlamaModel& model = *model_->model;
  const std::vector<int32_t> prompt = chat_prompt(*model_, "Name three colours of the rainbow.");
  Generator gen(model, *model_->tokenizer, pool_, 256);
  auto generated = gen.generate(prompt, greedy(24));
  ASSERT_TRUE(generated.ok()) << generated.error().to_string();
  const std::vector<int32_t>& cont = generated->tokens;
  ASSERT_GE(cont.size(), 8u);

  auto score = score_continuation(model, prompt, cont, pool_, scratch_);
  ASSERT_TRUE(score.ok()) << score.error().to_string();
  ASSERT_EQ(score->token_nll.size(), cont.size());
  EXPECT_EQ(score->top1_agreements, static_cast<int64_t>(cont.size()));

  const std::vector<double> expected = step_by_step_nll(model, prompt, cont, pool_);
  for (size_t i = 0; i < cont.size(); ++i) {
    EXPECT_NEAR(score->token_nll[i], expected[i], 1e-4) << "token " << i;
    EXPECT_GE(score->token_nll[i], 0.0f);
  }
}

TEST_F(TeacherForcingTest, RandomTokensAgreeRarelyAndScoreFarWorse) {
  QGATE_REQUIRE_MODEL();
  const LlamaModel& model = *model_->model;
  const std::vector<int32_t> prompt = chat_prompt(*model_, "Name three colours of the rainbow.");
  Generator gen(model, *model_->tokenizer, pool_, 256);
  auto generated = gen.generate(prompt, greedy(24));
  ASSERT_TRUE(generated.ok());
  const std::vector<int32_t>& good = generated->tokens;
  const std::vector<int32_t> bad = fixed_random_tokens(good.size(), model.config().vocab_size);

  auto good_score = score_continuation(model, prompt, good, pool_, scratch_);
  auto bad_score = score_continuation(model, prompt, bad, pool_, scratch_);
  ASSERT_TRUE(good_score.ok() && bad_score.ok());
  EXPECT_LE(bad_score->top1_agreements, 1);
  // A uniform guess over a 49k vocabulary costs log(49152) = 10.8 nats; a confident model puts
  // random tokens further down still, while its own greedy tokens cost a fraction of a nat.
  EXPECT_LT(mean(good_score->token_nll), 1.5);
  EXPECT_GT(mean(bad_score->token_nll), 10.0);
}

// Moving the prompt/continuation split moves every chunk boundary (prompt pieces of 128, logits
// chunks of 64); the forward pass is batch-invariant, so the shared positions score identically.
TEST_F(TeacherForcingTest, ChunkBoundariesDoNotChangeScores) {
  QGATE_REQUIRE_MODEL();
  const LlamaModel& model = *model_->model;
  std::string text;
  for (int i = 0; i < 8; ++i) {
    text += "The river flows past the old mill, where the miller counts sacks of flour " +
            std::to_string(i) + " times a day. ";
  }
  const std::vector<int32_t> tokens = model_->tokenizer->encode(text);
  ASSERT_GE(tokens.size(), 150u);
  const std::span<const int32_t> all(tokens.data(), 150);

  // Split A: a 10-token prompt, 140 continuation tokens (chunks of 64, 64, 11).
  // Split B: a 135-token prompt (pieces of 128 and 7), 15 continuation tokens.
  auto a = score_continuation(model, all.first(10), all.subspan(10), pool_, scratch_);
  auto b = score_continuation(model, all.first(135), all.subspan(135), pool_, scratch_);
  ASSERT_TRUE(a.ok()) << a.error().to_string();
  ASSERT_TRUE(b.ok()) << b.error().to_string();
  ASSERT_EQ(a->token_nll.size(), 140u);
  ASSERT_EQ(b->token_nll.size(), 15u);
  for (size_t i = 0; i < 15; ++i) {
    EXPECT_EQ(a->token_nll[125 + i], b->token_nll[i]) << "token " << 135 + i;
  }
  // Repetitive English text: the model predicts most of it.
  EXPECT_GT(a->top1_agreements, 70);
  EXPECT_LT(mean(a->token_nll), 2.0);
}

TEST_F(TeacherForcingTest, StopRequestCancels) {
  QGATE_REQUIRE_MODEL();
  std::stop_source source;
  source.request_stop();
  const std::vector<int32_t> prompt = {1, 2, 3};
  const std::vector<int32_t> cont = {4, 5};
  auto r = score_continuation(*model_->model, prompt, cont, pool_, scratch_, source.get_token());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kCancelled);
}

TEST_F(TeacherForcingTest, RejectsBadInput) {
  QGATE_REQUIRE_MODEL();
  const LlamaModel& model = *model_->model;
  const int64_t vocab = model.config().vocab_size;
  const std::vector<int32_t> some = {1, 2, 3};
  const std::vector<int32_t> none;

  auto r = score_continuation(model, none, some, pool_, scratch_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find("prompt"), std::string::npos) << r.error().message();

  r = score_continuation(model, some, none, pool_, scratch_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find("continuation"), std::string::npos) << r.error().message();

  // Only the continuation's last token is out of range: it is never run through forward(), so
  // the scorer's own check is all that stands between it and a read past the logits.
  const std::vector<int32_t> bad_last = {4, 5, static_cast<int32_t>(vocab)};
  r = score_continuation(model, some, bad_last, pool_, scratch_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find("continuation token 2"), std::string::npos)
      << r.error().message();

  const std::vector<int32_t> negative = {1, -1};
  r = score_continuation(model, negative, some, pool_, scratch_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find("prompt token 1"), std::string::npos) << r.error().message();

  // One token past the context: refused before any work.
  const std::vector<int32_t> long_prompt(
      static_cast<size_t>(model.config().max_position_embeddings), 1);
  const std::vector<int32_t> one = {1};
  r = score_continuation(model, long_prompt, one, pool_, scratch_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kOutOfRange);

  // The scratch survives failed calls.
  auto ok = score_continuation(model, some, some, pool_, scratch_);
  ASSERT_TRUE(ok.ok()) << ok.error().to_string();
  EXPECT_EQ(ok->token_nll.size(), 3u);
}

}  // namespace
}  // namespace qgate
