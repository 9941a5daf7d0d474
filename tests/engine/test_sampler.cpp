// Sampler: greedy, temperature, top-k/top-p/min-p, penalties, seeding. Randomness comes only from
// fixed seeds; statistical checks use 5-sigma bounds so they fail on a wrong distribution, not on
// bad luck.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/sampler.h"

namespace qgate {
namespace {

SamplingParams seeded(float temperature, uint64_t seed = 1234) {
  SamplingParams p;
  p.temperature = temperature;
  p.seed = seed;
  return p;
}

// Logits in [-5, 5) from a fixed seed, built from raw engine output so they are the same on every
// standard library.
std::vector<float> pseudo_random_logits(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> out(n);
  for (auto& v : out) v = static_cast<float>(rng() >> 40) * 0x1.0p-24f * 10.0f - 5.0f;
  return out;
}

std::vector<float> log_probs(const std::vector<double>& probs) {
  std::vector<float> out;
  for (double p : probs) out.push_back(static_cast<float>(std::log(p)));
  return out;
}

int32_t reference_argmax(const std::vector<float>& logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// Draws `n` tokens (fresh copy of the logits each time; no penalties are set) and counts them.
std::vector<int> histogram(const SamplingParams& params, const std::vector<float>& logits, int n) {
  Sampler sampler(params, {});
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = logits;
    ++counts[static_cast<size_t>(sampler.sample(l))];
  }
  return counts;
}

// Each count within 5 binomial sigmas of n * expected[i].
void expect_matches(const std::vector<int>& counts, const std::vector<double>& expected, int n) {
  ASSERT_EQ(counts.size(), expected.size());
  for (size_t i = 0; i < counts.size(); ++i) {
    const double mean = n * expected[i];
    const double sigma = std::sqrt(n * expected[i] * (1.0 - expected[i]));
    if (expected[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "token " << i;
    } else {
      EXPECT_NEAR(counts[i], mean, 5.0 * sigma) << "token " << i;
    }
  }
}

TEST(SamplerTest, GreedyPicksArgmaxAndLowestIdOnTies) {
  Sampler sampler(seeded(0.0f), {});
  std::vector<float> logits = {0.5f, 3.0f, -1.0f, 2.9f};
  EXPECT_EQ(sampler.sample(logits), 1);
  std::vector<float> tied = {1.0f, 4.0f, 4.0f, 4.0f};
  EXPECT_EQ(sampler.sample(tied), 1);
  std::vector<float> negative = {-3.0f, -2.0f, -7.0f};
  EXPECT_EQ(sampler.sample(negative), 1);
}

// Vocabularies long enough for the vectorized scan (16 logits at a time) and with a tail: the
// same rule as the naive scan, wherever the maximum sits, with NaN, -inf and signed zeros.
TEST(SamplerTest, GreedyOnLargeVocabulariesFollowsTheScalarRule) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  auto naive = [](const std::vector<float>& l) {
    int32_t best = -1;
    for (size_t i = 0; i < l.size(); ++i) {
      if (std::isnan(l[i])) continue;
      if (best < 0 || l[i] > l[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
    }
    return best < 0 ? 0 : best;
  };
  Sampler sampler(seeded(0.0f), {});
  for (const size_t n : {size_t{16}, size_t{49152}, size_t{1000}, size_t{49157}}) {
    for (const size_t at : {size_t{0}, size_t{15}, size_t{16}, n / 2, n - 1}) {
      if (at >= n) continue;
      std::vector<float> l = pseudo_random_logits(n, n + at);
      l[at] = 9.0f;
      EXPECT_EQ(sampler.sample(l), static_cast<int32_t>(at)) << n << " " << at;
      if (at + 17 < n) {
        l[at + 17] = 9.0f;  // a tie further on: the lower id wins
        EXPECT_EQ(sampler.sample(l), static_cast<int32_t>(at)) << n << " " << at;
      }
    }
    std::vector<float> l(n, nan);
    EXPECT_EQ(sampler.sample(l), 0) << "all NaN, " << n;
    l[n - 1] = -inf;
    l[n / 2] = -inf;
    EXPECT_EQ(sampler.sample(l), static_cast<int32_t>(n / 2)) << "NaN and -inf, " << n;
    std::fill(l.begin(), l.end(), -1.0f);
    l[n / 3] = -0.0f;
    l[n - 2] = 0.0f;
    EXPECT_EQ(sampler.sample(l), naive(l)) << "signed zeros, " << n;
    l[n - 2] = inf;
    l[5] = nan;
    EXPECT_EQ(sampler.sample(l), static_cast<int32_t>(n - 2)) << "+inf, " << n;
  }
}

// sampler_exp against exp() in double over its whole range: within 2 ulp everywhere, exactly 1
// at 0 (the max token's probability), 0 below FLT_MIN's logarithm.
TEST(SamplerExp, IsWithinTwoUlpOfExp) {
  double worst = 0.0;
  float worst_at = 0.0f;
  for (int i = 0; i <= 4'000'000; ++i) {
    const float x = -87.33f * static_cast<float>(i) / 4'000'000.0f;
    const double ref = std::exp(static_cast<double>(x));
    const float r = static_cast<float>(ref);
    const double ulp = static_cast<double>(std::nextafter(r, INFINITY) - r);
    const double err = std::abs(static_cast<double>(sampler_exp(x)) - ref) / ulp;
    if (err > worst) {
      worst = err;
      worst_at = x;
    }
  }
  EXPECT_LE(worst, 2.0) << "at x = " << worst_at;
  EXPECT_EQ(sampler_exp(0.0f), 1.0f);
  EXPECT_EQ(sampler_exp(-0.0f), 1.0f);
  EXPECT_EQ(sampler_exp(-87.5f), 0.0f);
  EXPECT_EQ(sampler_exp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_GT(sampler_exp(-87.3f), 0.0f);
}

// The draw's probability pass (vectorized where the build allows) gives sampler_exp's bits for
// every token and the documented 16-lane sum, with masked, NaN and min-p-filtered tokens at 0.
TEST(SamplerExp, TheProbabilityPassGivesItsBits) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> l = pseudo_random_logits(1003, 5);
  for (size_t i = 0; i < l.size(); i += 37) l[i] = -inf;
  for (size_t i = 3; i < l.size(); i += 101) l[i] = nan;
  l[500] = 7.0f;
  const float inv_t = 1.0f / 0.7f;
  const float max_s = 7.0f * inv_t;
  for (const float floor_s : {-inf, max_s + std::log(0.05f)}) {
    std::vector<float> probs(l.size(), -1.0f);
    const double sum = sampler_internal::block_probabilities(l.data(), l.size(), inv_t, max_s,
                                                             floor_s, probs.data());
    std::array<double, 16> lane{};
    for (size_t i = 0; i < l.size(); ++i) {
      const float s = l[i] * inv_t;
      const float want = l[i] > -inf && s >= floor_s ? sampler_exp(s - max_s) : 0.0f;
      ASSERT_EQ(std::bit_cast<uint32_t>(probs[i]), std::bit_cast<uint32_t>(want))
          << "token " << i << " floor " << floor_s;
      lane[i % 16] += want;
    }
    double want_sum = 0.0;
    for (const double x : lane) want_sum += x;
    EXPECT_EQ(sum, want_sum) << "floor " << floor_s;
    EXPECT_EQ(probs[500], 1.0f);
  }
}

TEST(SamplerTest, TopKOneEqualsGreedyAtAnyTemperature) {
  for (float t : {0.1f, 0.7f, 1.0f, 2.0f}) {
    for (uint64_t s = 0; s < 20; ++s) {
      auto logits = pseudo_random_logits(1000, s);
      SamplingParams p = seeded(t, s);
      p.top_k = 1;
      Sampler sampler(p, {});
      const int32_t expected = reference_argmax(logits);
      EXPECT_EQ(sampler.sample(logits), expected) << "t=" << t << " seed=" << s;
    }
  }
}

// Found by fuzz_sampler: at a denormal temperature 1/T is infinite, a zero logit scaled to NaN,
// and with top-k and top-p that NaN became an array index (undefined behaviour). Such a
// temperature is the greedy limit.
TEST(SamplerTest, DenormalTemperatureIsGreedy) {
  const float denormal = std::numeric_limits<float>::denorm_min() * 1000;
  for (int32_t top_k : {0, 2, 10}) {
    SamplingParams p = seeded(denormal, 3);
    p.top_k = top_k;
    p.top_p = 0.9f;
    ASSERT_TRUE(p.validate().ok());
    Sampler sampler(p, {});
    std::vector<float> logits = {-1.0f, 0.0f, -2.0f, 0.0f, -0.5f};
    EXPECT_EQ(sampler.sample(logits), 1) << "top_k " << top_k;
  }
}

TEST(SamplerTest, TinyTopPEqualsGreedy) {
  for (uint64_t s = 0; s < 20; ++s) {
    auto logits = pseudo_random_logits(49152, s);
    SamplingParams p = seeded(1.0f, s);
    p.top_p = 1e-6f;
    Sampler sampler(p, {});
    const int32_t expected = reference_argmax(logits);
    EXPECT_EQ(sampler.sample(logits), expected) << "seed=" << s;
  }
}

TEST(SamplerTest, DrawsFollowTheSoftmaxDistribution) {
  const std::vector<double> probs = {0.1, 0.2, 0.3, 0.4};
  const int n = 20000;
  expect_matches(histogram(seeded(1.0f), log_probs(probs), n), probs, n);
}

TEST(SamplerTest, TemperatureSharpensTheDistribution) {
  // T = 0.5 squares the probabilities: {1, 4, 9, 16} / 30.
  const int n = 20000;
  auto counts = histogram(seeded(0.5f, 7), log_probs({0.1, 0.2, 0.3, 0.4}), n);
  expect_matches(counts, {1.0 / 30, 4.0 / 30, 9.0 / 30, 16.0 / 30}, n);
}

TEST(SamplerTest, TopKRenormalizesOverTheKBest) {
  SamplingParams p = seeded(1.0f, 11);
  p.top_k = 2;
  const int n = 20000;
  expect_matches(histogram(p, log_probs({0.1, 0.2, 0.3, 0.4}), n), {0, 0, 3.0 / 7, 4.0 / 7}, n);
}

TEST(SamplerTest, TopPKeepsTheSmallestNucleus) {
  SamplingParams p = seeded(1.0f, 12);
  p.top_p = 0.65f;  // 0.4 < 0.65 <= 0.4 + 0.3
  const int n = 20000;
  expect_matches(histogram(p, log_probs({0.1, 0.2, 0.3, 0.4}), n), {0, 0, 3.0 / 7, 4.0 / 7}, n);
  p.top_p = 0.75f;  // needs 0.2 too
  expect_matches(histogram(p, log_probs({0.1, 0.2, 0.3, 0.4}), n), {0, 2.0 / 9, 3.0 / 9, 4.0 / 9},
                 n);
}

TEST(SamplerTest, MinPFiltersRelativeToTheMaxProbability) {
  SamplingParams p = seeded(1.0f, 13);
  p.min_p = 0.6f;  // keeps p >= 0.24: tokens 2 and 3
  const int n = 20000;
  expect_matches(histogram(p, log_probs({0.1, 0.2, 0.3, 0.4}), n), {0, 0, 3.0 / 7, 4.0 / 7}, n);
  p.min_p = 1.0f;  // only the max survives
  expect_matches(histogram(p, log_probs({0.1, 0.2, 0.3, 0.4}), 1000), {0, 0, 0, 1}, 1000);
}

TEST(SamplerTest, MaskedTokensAreNeverDrawn) {
  const float ninf = -std::numeric_limits<float>::infinity();
  auto counts = histogram(seeded(1.0f, 5), {0.0f, ninf, 0.0f, ninf}, 4000);
  EXPECT_EQ(counts[1], 0);
  EXPECT_EQ(counts[3], 0);
  EXPECT_NEAR(counts[0], 2000, 5 * std::sqrt(1000.0));
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  SamplingParams p = seeded(0.0f);
  p.repetition_penalty = 1.25f;
  const std::vector<int32_t> prompt = {0, 2, 2};  // duplicates are penalized once
  Sampler sampler(p, prompt);
  std::vector<float> logits = {2.0f, 1.9f, -1.0f, -1.1f};
  EXPECT_EQ(sampler.sample(logits), 1);  // 2.0 / 1.25 = 1.6 < 1.9
  EXPECT_EQ(logits[0], 2.0f / 1.25f);
  EXPECT_EQ(logits[1], 1.9f);
  EXPECT_EQ(logits[2], -1.0f * 1.25f);
  EXPECT_EQ(logits[3], -1.1f);
  // Token 1 was just generated: now it is penalized too (1.52), and token 3 (1.55) beats it and
  // the prompt's token 0 (1.44).
  std::vector<float> next = {1.8f, 1.9f, -1.0f, 1.55f};
  EXPECT_EQ(sampler.sample(next), 3);
  EXPECT_EQ(next[1], 1.9f / 1.25f);
}

TEST(SamplerTest, RepetitionPenaltyAppliesOnceToTokensInPromptAndOutput) {
  SamplingParams p = seeded(0.0f);
  p.repetition_penalty = 2.0f;
  const std::vector<int32_t> prompt = {0};
  Sampler sampler(p, prompt);
  sampler.accept(0);
  sampler.accept(0);
  std::vector<float> logits = {4.0f, 1.0f};
  EXPECT_EQ(sampler.sample(logits), 0);
  EXPECT_EQ(logits[0], 2.0f);
}

TEST(SamplerTest, PresenceAndFrequencyPenaltiesCountGeneratedTokensOnly) {
  SamplingParams p = seeded(0.0f);
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  const std::vector<int32_t> prompt = {1};  // prompt tokens do not count for these penalties
  Sampler sampler(p, prompt);
  sampler.accept(0);
  sampler.accept(0);
  sampler.accept(2);
  std::vector<float> logits = {2.0f, 1.5f, 1.6f};
  // token 0: 2.0 - 0.5 - 2 * 0.25 = 1.0; token 2: 1.6 - 0.5 - 0.25 = 0.85; token 1 untouched.
  EXPECT_EQ(sampler.sample(logits), 1);
  EXPECT_FLOAT_EQ(logits[0], 1.0f);
  EXPECT_EQ(logits[1], 1.5f);
  EXPECT_FLOAT_EQ(logits[2], 0.85f);
}

TEST(SamplerTest, NegativePresencePenaltyEncouragesRepeats) {
  SamplingParams p = seeded(0.0f);
  p.presence_penalty = -1.0f;
  Sampler sampler(p, {});
  sampler.accept(2);
  std::vector<float> logits = {1.0f, 1.5f, 0.6f};
  EXPECT_EQ(sampler.sample(logits), 2);
  EXPECT_FLOAT_EQ(logits[2], 1.6f);
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  const std::vector<float> flat(100, 0.0f);
  auto run = [&](uint64_t seed) {
    Sampler sampler(seeded(1.0f, seed), {});
    std::vector<int32_t> tokens;
    for (int i = 0; i < 1000; ++i) {
      std::vector<float> l = flat;
      tokens.push_back(sampler.sample(l));
    }
    return tokens;
  };
  EXPECT_EQ(run(99), run(99));
  EXPECT_NE(run(99), run(100));
}

TEST(SamplerTest, SeededDrawsArePinnedAcrossPlatforms) {
  // The draw uses only the mt19937_64 sequence (fixed by the C++ standard) and exact arithmetic on
  // it, so every standard library must reproduce these. For 8 equal logits the token is the top 3
  // bits of each raw output; the values were cross-checked with an independent Python mt19937_64.
  Sampler sampler(seeded(1.0f, 42), {});
  std::vector<int32_t> tokens;
  for (int i = 0; i < 12; ++i) {
    std::vector<float> l(8, 0.0f);
    tokens.push_back(sampler.sample(l));
  }
  EXPECT_EQ(tokens, (std::vector<int32_t>{6, 5, 6, 1, 7, 0, 4, 2, 2, 3, 0, 4}));
}

// Slow reference for the filtered paths: a full sort instead of selection, and the same draw. It
// keeps the documented walk order: id order unless top-k or top-p sorted the candidates.
int32_t reference_sample(const std::vector<float>& logits, const SamplingParams& p,
                         std::mt19937_64& rng) {
  auto before = [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  std::vector<std::pair<float, int32_t>> c;
  float max_l = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < logits.size(); ++i) {
    const float s = logits[i] * (1.0f / p.temperature);
    c.emplace_back(s, static_cast<int32_t>(i));
    max_l = std::max(max_l, s);
  }
  bool sorted = false;
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < c.size()) {
    std::sort(c.begin(), c.end(), before);
    c.resize(static_cast<size_t>(p.top_k));
    sorted = true;
  }
  if (p.min_p > 0.0f) {
    const float threshold = max_l + std::log(p.min_p);
    std::erase_if(c, [&](const auto& e) { return e.first < threshold; });
  }
  double total = 0.0;
  for (auto& e : c) total += e.first = sampler_exp(e.first - max_l);
  if (p.top_p < 1.0f) {
    if (!sorted) std::sort(c.begin(), c.end(), before);
    double cum = 0.0;
    size_t keep = 0;
    while (keep < c.size()) {
      cum += c[keep++].first;
      if (cum >= static_cast<double>(p.top_p) * total) break;
    }
    c.resize(keep);
  }
  double sum = 0.0;
  for (const auto& e : c) sum += e.first;
  const double target = static_cast<double>(rng() >> 11) * 0x1.0p-53 * sum;
  double cum = 0.0;
  for (const auto& e : c) {
    cum += e.first;
    if (cum > target) return e.second;
  }
  return c.back().second;
}

TEST(SamplerTest, FilteredPathsMatchAFullSortReferenceOnALargeVocabulary) {
  struct Case {
    int32_t top_k;
    float top_p;
    float min_p;
    float temperature;
  };
  const Case cases[] = {{40, 1.0f, 0.0f, 1.0f},   {50, 0.9f, 0.0f, 0.8f}, {0, 0.9f, 0.0f, 1.0f},
                        {0, 0.5f, 0.0f, 2.0f},    {0, 0.99f, 0.0f, 2.0f}, {0, 1.0f, 0.05f, 1.0f},
                        {100, 0.95f, 0.1f, 0.7f}, {0, 0.9f, 0.01f, 1.0f}};
  for (const Case& k : cases) {
    SamplingParams p = seeded(k.temperature, 2024);
    p.top_k = k.top_k;
    p.top_p = k.top_p;
    p.min_p = k.min_p;
    Sampler sampler(p, {});
    std::mt19937_64 reference_rng(2024);
    for (uint64_t step = 0; step < 25; ++step) {
      // Sharp logits so top-p nuclei stay small enough to exercise the growing-head path.
      auto logits = pseudo_random_logits(49152, step);
      for (auto& v : logits) v *= 3.0f;
      const int32_t expected = reference_sample(logits, p, reference_rng);
      EXPECT_EQ(sampler.sample(logits), expected) << "top_k=" << k.top_k << " top_p=" << k.top_p
                                                  << " min_p=" << k.min_p << " step=" << step;
    }
  }
}

TEST(SamplingParamsTest, ValidateNamesTheField) {
  EXPECT_TRUE(SamplingParams{}.validate().ok());
  struct Case {
    void (*mutate)(SamplingParams&);
    const char* field;
  };
  const Case cases[] = {
      {[](SamplingParams& p) { p.temperature = -0.1f; }, "temperature"},
      {[](SamplingParams& p) { p.temperature = 2.5f; }, "temperature"},
      {[](SamplingParams& p) { p.temperature = std::nanf(""); }, "temperature"},
      {[](SamplingParams& p) { p.top_k = -1; }, "top_k"},
      {[](SamplingParams& p) { p.top_p = 0.0f; }, "top_p"},
      {[](SamplingParams& p) { p.top_p = 1.01f; }, "top_p"},
      {[](SamplingParams& p) { p.min_p = -0.01f; }, "min_p"},
      {[](SamplingParams& p) { p.min_p = 1.5f; }, "min_p"},
      {[](SamplingParams& p) { p.repetition_penalty = 0.0f; }, "repetition_penalty"},
      {[](SamplingParams& p) { p.presence_penalty = 2.5f; }, "presence_penalty"},
      {[](SamplingParams& p) { p.frequency_penalty = -2.01f; }, "frequency_penalty"},
  };
  for (const Case& c : cases) {
    SamplingParams p;
    c.mutate(p);
    Status s = p.validate();
    ASSERT_FALSE(s.ok()) << c.field;
    EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(s.error().message().rfind(c.field, 0), 0u) << s.error().message();
  }
  SamplingParams edges;
  edges.temperature = 2.0f;
  edges.top_p = 1.0f;
  edges.min_p = 1.0f;
  edges.presence_penalty = -2.0f;
  edges.frequency_penalty = 2.0f;
  EXPECT_TRUE(edges.validate().ok());
}

}  // namespace
}  // namespace qgate
