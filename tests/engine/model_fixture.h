// Shared access to the real model for engine tests: loaded once per test binary.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "engine/model_loader.h"

namespace qgate::testing {

inline std::string model_dir() {
  if (const char* d = std::getenv("QGATE_MODEL_DIR"); d != nullptr && *d != '\0') return d;
  const char* src = std::getenv("QGATE_SOURCE_DIR");
  return std::string(src != nullptr ? src : ".") + "/models";
}

inline std::string model_path() { return model_dir() + "/SmolLM2-135M-Instruct.Q4_1.gguf"; }

// The loaded model, or nullptr when the file is absent (the caller skips).
inline const LoadedModel* real_model() {
  static const LoadedModel* loaded = [] () -> const LoadedModel* {
    if (!std::filesystem::exists(model_path())) return nullptr;
    auto r = load_model(model_path());
    if (!r.ok()) {
      ADD_FAILURE() << r.error().to_string();
      return nullptr;
    }
    return new LoadedModel(std::move(r).value());
  }();
  return loaded;
}

// The ids of a one-turn chat prompt, rendered and encoded as the CLI does.
inline std::vector<int32_t> chat_prompt(const LoadedModel& m, const std::string& user) {
  std::vector<ChatMessage> msgs = {{"user", user}};
  auto text = m.chat_template.render(msgs, true);
  EXPECT_TRUE(text.ok());
  return m.tokenizer->encode(text.value());
}

inline GenerationOptions greedy(int64_t max_tokens) {
  GenerationOptions o;
  o.max_tokens = max_tokens;
  o.sampling.temperature = 0.0f;
  return o;
}

}  // namespace qgate::testing

#define QGATE_REQUIRE_MODEL()                                                              \
  const ::qgate::LoadedModel* model_ = ::qgate::testing::real_model();                      \
  if (model_ == nullptr) GTEST_SKIP() << "model not found at " << ::qgate::testing::model_path() \
                                      << " (run scripts/fetch_model.sh)"
