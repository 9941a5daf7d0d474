// Token sampling from logits: penalties, temperature, top-k, top-p, min-p, seeded RNG.
//
// Order of operations (same as vLLM/llama.cpp defaults): repetition penalty (divide positive /
// multiply negative logits of tokens seen in prompt or output), presence and frequency penalties
// (on output tokens), then greedy if temperature == 0, else temperature, top-k, softmax, top-p,
// min-p, and a draw from the renormalized distribution. One Sampler per sequence: it holds the RNG
// and the token counts, so a seeded request gives the same tokens whatever else runs beside it.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <unordered_map>
#include <vector>

#include "kernels/status.h"

namespace qgate {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  int32_t top_k = 0;         // 0 = off
  float top_p = 1.0f;        // 1 = off
  float min_p = 0.0f;        // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::optional<uint64_t> seed;  // unset: seeded from std::random_device

  // InvalidArgument naming the field when out of range (temperature < 0, top_p not in (0, 1], ...)
  Status validate() const;
};

class Sampler {
 public:
  Sampler(const SamplingParams& params, std::span<const int32_t> prompt_tokens);
  // Picks the next token from logits (modified in place) and records it as generated.
  int32_t sample(std::span<float> logits);
  // Records a token generated elsewhere (e.g. forced) so penalties see it.
  void accept(int32_t token);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::unordered_map<int32_t, int32_t> output_counts_;
  std::vector<int32_t> prompt_tokens_;  // sorted unique, for the repetition penalty
  std::vector<std::pair<float, int32_t>> candidates_;  // scratch
};

}  // namespace qgate
