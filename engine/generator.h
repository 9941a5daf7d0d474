// Single-sequence text generation: prefill, decode loop, sampling, stop conditions, streaming.
//
// A Generator owns one sequence's state (KV cache, scratch, logits) and borrows the model,
// tokenizer and thread pool, which must outlive it. It is used by one thread at a time. Between
// calls it keeps the KV cache of the previous sequence and reuses the longest common token prefix
// with the next prompt, so a multi-turn chat re-runs only the new turn.
#pragma once

#include <cstdint>
#include <functional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "engine/llama_model.h"
#include "engine/sampler.h"
#include "kernels/status.h"

namespace qgate {

class Tokenizer;
class ThreadPool;

struct GenerationOptions {
  int64_t max_tokens = 256;
  SamplingParams sampling;
  std::vector<std::string> stop;  // stop strings; the text ends right before the first match
  bool ignore_eos = false;
  Status validate() const;
};

enum class FinishReason { kStop, kLength, kCancelled };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "cancelled"

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated tokens, including a final EOS/end-of-turn if any
  std::string text;             // what was streamed, stop strings and special tokens excluded
  FinishReason finish_reason = FinishReason::kLength;
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // prompt tokens whose KV was reused from the previous call
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// Receives each piece of text as soon as it is final (never half a UTF-8 character, never text
// that might still turn out to be part of a stop string). Return false to cancel.
using TextCallback = std::function<bool(std::string_view piece)>;

class Generator {
 public:
  Generator(const LlamaModel& model, const Tokenizer& tokenizer, ThreadPool& pool,
            int64_t context_tokens, KvDType kv_dtype = KvDType::kF32);

  Result<GenerationResult> generate(std::span<const int32_t> prompt,
                                    const GenerationOptions& options,
                                    const TextCallback& on_text = {},
                                    std::stop_token stop = {});
  int64_t context_tokens() const { return cache_.capacity(); }

 private:
  const LlamaModel& model_;
  const Tokenizer& tokenizer_;
  ThreadPool& pool_;
  KvCache cache_;
  ForwardScratch scratch_;
  std::vector<float> logits_;
  std::vector<int32_t> cached_tokens_;  // tokens whose keys/values are in cache_
};

}  // namespace qgate
