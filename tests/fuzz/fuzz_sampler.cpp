// libFuzzer target for the sampler: any validated SamplingParams (raw float bits, so denormal
// temperatures, top_k beyond the vocabulary, extreme penalties) over any logits (NaN, +-inf,
// huge, denormal) and any prompt ids (out-of-vocabulary ones included). A broken variant can hand
// the sampler NaN or infinite logits, and a request can carry any value validation lets through.
// Properties, beyond "no crash and no undefined behaviour" (a NaN converted to an index would be):
//  - every token is within the vocabulary;
//  - a NaN logit is never chosen while some logit is not NaN;
//  - the same seed gives the same tokens.
//
// Input: 7 little-endian float32/int32 fields (temperature, top_k, top_p, min_p,
// repetition_penalty, presence_penalty, frequency_penalty), a uint64 seed, a byte n, n int32
// prompt ids, then the logits as float32 (at least one).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "engine/sampler.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

template <typename T>
bool take(std::span<const uint8_t>& in, T& out) {
  if (in.size() < sizeof(T)) return false;
  std::memcpy(&out, in.data(), sizeof(T));
  in = in.subspan(sizeof(T));
  return true;
}

std::vector<int32_t> run(const qgate::SamplingParams& params, std::span<const int32_t> prompt,
                         const std::vector<float>& logits) {
  qgate::Sampler sampler(params, prompt);
  std::vector<int32_t> tokens;
  for (int step = 0; step < 3; ++step) {
    std::vector<float> scratch = logits;  // sample() penalizes in place
    tokens.push_back(sampler.sample(scratch));
  }
  return tokens;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  qgate::SamplingParams p;
  uint64_t seed = 0;
  uint8_t num_prompt = 0;
  if (!take(in, p.temperature) || !take(in, p.top_k) || !take(in, p.top_p) || !take(in, p.min_p) ||
      !take(in, p.repetition_penalty) || !take(in, p.presence_penalty) ||
      !take(in, p.frequency_penalty) || !take(in, seed) || !take(in, num_prompt)) {
    return 0;
  }
  p.seed = seed;
  if (!p.validate().ok()) return 0;  // the API refuses these before they reach a sampler
  std::vector<int32_t> prompt(num_prompt);
  for (int32_t& t : prompt) {
    if (!take(in, t)) return 0;
  }
  std::vector<float> logits(in.size() / sizeof(float));
  if (logits.empty()) return 0;
  std::memcpy(logits.data(), in.data(), logits.size() * sizeof(float));

  bool any_number = false;
  for (float l : logits) any_number = any_number || !std::isnan(l);
  const std::vector<int32_t> tokens = run(p, prompt, logits);
  for (int32_t t : tokens) {
    FUZZ_CHECK(t >= 0 && static_cast<size_t>(t) < logits.size(), "token %d of %zu", t,
               logits.size());
    FUZZ_CHECK(!any_number || !std::isnan(logits[static_cast<size_t>(t)]),
               "chose the NaN logit of token %d", t);
  }
  FUZZ_CHECK(run(p, prompt, logits) == tokens, "the same seed gave other tokens");
  return 0;
}
