// Generation on the real model: coherent greedy answers, seeds, stop conditions, streaming,
// cancellation and prompt-prefix reuse.
#include <gtest/gtest.h>

#include <stop_token>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "kernels/cpu/thread_pool.h"
#include "tests/engine/model_fixture.h"

namespace qgate {
namespace {

using testing::chat_prompt;
using testing::greedy;

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

class GeneratorTest : public ::testing::Test {
 protected:
  ThreadPool pool_{2};
};

// Greedy answers of this 135M Q4_1 model to simple instructions (llama.cpp gives the same text on
// the same file): on topic, ended by the end-of-turn token, which is not part of the text.
TEST_F(GeneratorTest, GreedyAnswersAreOnTopic) {
  QGATE_REQUIRE_MODEL();
  Generator gen(*model_->model, *model_->tokenizer, pool_, 1024);
  auto r = gen.generate(chat_prompt(*model_, "What is 2 + 2?"), greedy(48));
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_NE(r->text.find('4'), std::string::npos) << r->text;
  EXPECT_EQ(r->finish_reason, FinishReason::kStop) << r->text;
  EXPECT_EQ(r->text.find("<|im_end|>"), std::string::npos);
  r = gen.generate(chat_prompt(*model_, "Give me three tips for staying healthy."), greedy(64));
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->text.find("water"), std::string::npos) << r->text;
}

TEST_F(GeneratorTest, StreamedPiecesAreWholeCharactersAndAddUpToTheText) {
  QGATE_REQUIRE_MODEL();
  Generator gen(*model_->model, *model_->tokenizer, pool_, 1024);
  std::string streamed;
  std::vector<std::string> pieces;
  auto r = gen.generate(chat_prompt(*model_, "Write three emoji and the word 'café' in Japanese."),
                        greedy(40), [&](std::string_view p) {
                          pieces.emplace_back(p);
                          streamed += p;
                          return true;
                        });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(streamed, r->text);
  for (const auto& p : pieces) EXPECT_TRUE(valid_utf8(p)) << p;
}

TEST_F(GeneratorTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  QGATE_REQUIRE_MODEL();
  Generator gen(*model_->model, *model_->tokenizer, pool_, 1024);
  const auto prompt = chat_prompt(*model_, "Tell me a short story about a dragon.");
  GenerationOptions o;
  o.max_tokens = 24;
  o.sampling.temperature = 1.0f;
  o.sampling.seed = 1234;
  auto a = gen.generate(prompt, o);
  auto b = gen.generate(prompt, o);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  int differing = 0;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    o.sampling.seed = seed;
    auto c = gen.generate(prompt, o);
    ASSERT_TRUE(c.ok());
    differing += c->tokens != a->tokens ? 1 : 0;
  }
  EXPECT_GE(differing, 3);
}

TEST_F(GeneratorTest, MaxTokensEndsWithLength) {
  QGATE_REQUIRE_MODEL();
  Generator gen(*model_->model, *model_->tokenizer, pool_, 1024);
  auto r = gen.generate(chat_prompt(*model_, "Count from one to one hundred."), greedy(5));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tokens.size(), 5u);
  EXPECT_EQ(r->finish_reason, FinishReason::kLength);
}

TEST_F(GeneratorTest, StopStringCutsTheTextBeforeIt) {
  QGATE_REQUIRE_MODEL();
  Generator gen(*model_->model, *model_->tokenizer, pool_, 1024);
  const auto prompt = chat_prompt(*model_, "List the days of the week.");
  auto full = gen.generate(prompt, greedy(40));
  ASSERT_TRUE(full.ok());
  ASSERT_GT(full->text.size(), 20u) << full->text;
  // A stop string from the middle of the greedy answer.
  const std::string stop = full->text.substr(full->text.size() / 2, 4);
  GenerationOptions o = greedy(40);
  o.stop = {stop};
  auto cut = gen.generate(prompt, o);
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(cut->finish_reason, FinishReason::kStop);
  EXPECT_EQ(cut->text, full->text.substr(0, full->text.find(stop)));
}

TEST_F(GeneratorTest, CallbackAndStopTokenCancel) {
  QGATE_REQUIRE_MODEL();
  Generator gen(*model_->model, *model_->tokenizer, pool_, 1024);
  const auto prompt = chat_prompt(*model_, "Write a long essay about the sea.");
  GenerationOptions o = greedy(200);
  o.ignore_eos = true;
  int calls = 0;
  auto r = gen.generate(prompt, o, [&](std::string_view) { return ++calls < 3; });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->finish_reason, FinishReason::kCancelled);
  EXPECT_LT(r->tokens.size(), 10u);

  std::stop_source source;
  source.request_stop();
  auto r2 = gen.generate(prompt, o, {}, source.get_token());
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->finish_reason, FinishReason::kCancelled);
  EXPECT_TRUE(r2->tokens.empty());
}

// A follow-up turn reuses the KV of the shared prefix and gives the same tokens as a fresh
// generator would.
TEST_F(GeneratorTest, PromptPrefixReuseGivesIdenticalOutput) {
  QGATE_REQUIRE_MODEL();
  Generator warm(*model_->model, *model_->tokenizer, pool_, 1024);
  const auto first = chat_prompt(*model_, "What is the capital of Italy?");
  ASSERT_TRUE(warm.generate(first, greedy(8)).ok());
  auto second = first;
  const auto extra = model_->tokenizer->encode(" And of Spain?");
  second.insert(second.end() - 3, extra.begin(), extra.end());
  auto reused = warm.generate(second, greedy(16));
  ASSERT_TRUE(reused.ok());
  EXPECT_GT(reused->cached_prompt_tokens, 5);
  Generator cold(*model_->model, *model_->tokenizer, pool_, 1024);
  auto fresh = cold.generate(second, greedy(16));
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->cached_prompt_tokens, 0);
  EXPECT_EQ(reused->tokens, fresh->tokens);
}

TEST_F(GeneratorTest, RejectsInvalidOptionsAndPrompts) {
  QGATE_REQUIRE_MODEL();
  Generator gen(*model_->model, *model_->tokenizer, pool_, 64);
  const std::vector<int32_t> prompt = {1, 2, 3};
  GenerationOptions o = greedy(0);
  EXPECT_EQ(gen.generate(prompt, o).error().code(), ErrorCode::kInvalidArgument);
  o = greedy(4);
  o.stop = {""};
  EXPECT_FALSE(gen.generate(prompt, o).ok());
  o = greedy(4);
  o.sampling.temperature = -1;
  EXPECT_FALSE(gen.generate(prompt, o).ok());
  EXPECT_FALSE(gen.generate({}, greedy(4)).ok());
  const std::vector<int32_t> too_long(64, 1);
  EXPECT_EQ(gen.generate(too_long, greedy(4)).error().code(), ErrorCode::kOutOfRange);
  // Still usable afterwards.
  EXPECT_TRUE(gen.generate(prompt, greedy(2)).ok());
}

}  // namespace
}  // namespace qgate
