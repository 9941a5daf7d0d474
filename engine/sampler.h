// Token sampling from logits: penalties, temperature, top-k, top-p, min-p, seeded RNG.
//
// Order of operations (same as vLLM/llama.cpp defaults): repetition penalty (divide positive /
// multiply negative logits of tokens seen in prompt or output), presence and frequency penalties
// (on output tokens), then greedy if temperature == 0, else temperature, top-k, softmax, top-p,
// min-p, and a draw from the renormalized distribution. One Sampler per sequence: it holds the RNG
// and the token counts, so a seeded request gives the same tokens whatever else runs beside it.
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
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

// e^x for x <= 0, as the sampler computes its probabilities (inline so its loops vectorize): x =
// n ln 2 + r with |r| <= ln 2 / 2, e^r by Cephes' expf polynomial, times 2^n built in the exponent
// bits. Within 2 ulp of the exact value (tests/engine/test_sampler.cpp measures it); e^0 is exactly
// 1; below -87.33 (e^x < FLT_MIN) it is 0. Every multiply-add is an explicit fma, so the result is
// the same IEEE value on every platform and no compiler contraction can change it. Public so that
// reference implementations in tests reproduce the sampler's draws exactly.
inline float sampler_exp(float x) {
  constexpr float kMin = -87.33654f;
  const float c = x > kMin ? x : kMin;
  const float n = std::fma(c, 1.44269504088896341f, 12582912.0f) - 12582912.0f;  // round(x/ln 2)
  float r = std::fma(n, -0.693359375f, c);  // ln 2 in two parts: n * 0.693359375 is exact
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  const float e = std::fma(p, r * r, r) + 1.0f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return x > kMin ? e * scale : 0.0f;
}

namespace sampler_internal {
// The draw's probability pass over one block of logits (exposed for tests): probs[i] =
// sampler_exp(logits[i] * inv_t - max_s), or 0 for -inf, NaN and scaled logits below floor_s;
// returns their sum in double as 16 per-lane sums (lane i % 16) added in lane order. Vectorized
// where AVX2 and FMA are available, with the same bits as the portable form.
double block_probabilities(const float* logits, size_t n, float inv_t, float max_s, float floor_s,
                           float* probs);
}  // namespace sampler_internal

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
};

}  // namespace qgate
