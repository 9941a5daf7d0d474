// User feedback and offline quality inputs: the response index behind POST /v1/feedback, the
// feedback request parser, and matching `qgate eval --json` results to variants.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gateway/eval_results.h"
#include "gateway/feedback_api.h"
#include "gateway/response_index.h"

namespace qgate {
namespace {

TEST(ResponseIndexTest, OneFeedbackPerRecentResponse) {
  ResponseIndex index(2);
  index.remember("a", {"smollm2", "gptq"});
  index.remember("b", {"smollm2", "awq"});
  auto a = index.take_feedback("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->route, "smollm2");
  EXPECT_EQ(a->variant, "gptq");
  auto again = index.take_feedback("a");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(again.error().message().find("already recorded"), std::string::npos);

  index.remember("c", {"smollm2", "fp16"});  // capacity 2: "a" is forgotten
  EXPECT_EQ(index.size(), 2u);
  EXPECT_EQ(index.take_feedback("a").error().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(index.take_feedback("b").ok());
  EXPECT_EQ(index.take_feedback("c")->variant, "fp16");
  EXPECT_EQ(index.take_feedback("nope").error().code(), ErrorCode::kNotFound);
}

TEST(FeedbackRequestTest, ParsesAndRefusesWithTheField) {
  auto ok = parse_feedback_request(R"({"id": "chatcmpl-1", "score": 1})");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok.value().id, "chatcmpl-1");
  EXPECT_EQ(ok.value().score, 1.0);
  EXPECT_EQ(parse_feedback_request(R"({"id": "x", "score": -0.25, "comment": "meh"})").value().score,
            -0.25);
  struct Case {
    const char* body;
    const char* param;
  };
  for (const Case& c :
       {Case{"{", ""}, Case{"[1]", ""}, Case{R"({"score": 1})", "id"},
        Case{R"({"id": "", "score": 1})", "id"}, Case{R"({"id": 3, "score": 1})", "id"},
        Case{R"({"id": "x"})", "score"}, Case{R"({"id": "x", "score": "1"})", "score"},
        Case{R"({"id": "x", "score": 1.5})", "score"}, Case{R"({"id": "x", "score": -2})", "score"},
        Case{R"({"id": "x", "score": 1e999})", ""},
        Case{R"({"id": "x", "score": 1, "score": -1})", ""}}) {
    auto r = parse_feedback_request(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.error().status, 400u) << c.body;
    if (*c.param != '\0') {
      EXPECT_EQ(r.error().param, c.param) << c.body;
    }
  }
}

std::vector<VariantConfig> variants() {
  VariantConfig fp16;
  fp16.name = "smollm2-fp16";
  fp16.model = "/models/variants/smollm2-fp16";
  VariantConfig gptq;
  gptq.name = "smollm2-gptq";
  gptq.model = "/models/variants/smollm2-gptq-4bit";
  return {fp16, gptq};
}

TEST(EvalResultsTest, MatchesEntriesToVariants) {
  // The shape `qgate eval --json` writes for several models (an array), by path, by final path
  // component, and by an explicit variant name.
  const std::string json = R"([
    {"model": "/models/variants/smollm2-fp16", "perplexity": 24.9, "scored_tokens": 16384},
    {"model": "elsewhere/smollm2-gptq-4bit/", "perplexity": 27.5, "scored_tokens": 16384,
     "baseline": "x", "mean_kl": 0.094, "top1_agreement": 0.83},
    {"model": "variants/smollm2-rtn", "perplexity": 31.0}
  ])";
  auto r = match_eval_results(json, "/tmp", variants());
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(r->variants.size(), 2u);
  EXPECT_EQ(r->variants[0].variant, "smollm2-fp16");
  EXPECT_FALSE(r->variants[0].has_baseline);
  EXPECT_EQ(r->variants[0].tokens, 16384);
  EXPECT_EQ(r->variants[1].variant, "smollm2-gptq");
  EXPECT_TRUE(r->variants[1].has_baseline);
  EXPECT_EQ(r->variants[1].kl_divergence, 0.094);
  EXPECT_EQ(r->variants[1].top1_agreement, 0.83);
  EXPECT_EQ(r->unmatched_models, std::vector<std::string>{"variants/smollm2-rtn"});

  auto named = match_eval_results(R"({"model": "x", "variant": "smollm2-gptq", "perplexity": 3})",
                                  "/tmp", variants());
  ASSERT_TRUE(named.ok());
  EXPECT_EQ(named->variants.at(0).variant, "smollm2-gptq");
}

TEST(EvalResultsTest, RefusesOtherShapes) {
  for (const char* bad : {"nope", "[1]", R"([{"perplexity": 3}])", R"([{"model": "a"}])",
                          R"([{"model": "a", "perplexity": "high"}])",
                          R"([{"model": "a", "perplexity": 3, "mean_kl": 0.1}])"}) {
    auto r = match_eval_results(bad, "/tmp", variants());
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidFormat) << bad;
  }
  const auto dir = std::filesystem::temp_directory_path() / "qgate_eval_results_test";
  std::filesystem::create_directories(dir);
  EXPECT_EQ(load_eval_results(dir / "missing.json", variants()).error().code(),
            ErrorCode::kNotFound);
  {
    std::ofstream(dir / "broken.json") << "[{\"model\": 1}]";
  }
  auto broken = load_eval_results(dir / "broken.json", variants());
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.error().message().find("broken.json: eval results[0]: \"model\""),
            std::string::npos)
      << broken.error().message();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace qgate
