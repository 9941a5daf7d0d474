// Token sampling. See sampler.h for the order of operations.
//
// Portability: a seeded request must give the same tokens on every platform, so nothing here
// depends on an implementation-defined order or distribution. The uniform draw is built from the
// raw mt19937_64 output (whose sequence the standard fixes), candidates are compared under a total
// order (logit descending, then id ascending), and the final walk visits candidates either in id
// order or in that total order, never in the unspecified order nth_element leaves behind.
#include "engine/sampler.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace qgate {
namespace {

using Candidate = std::pair<float, int32_t>;  // (scaled logit, then probability; token id)

// Total order: higher logit first, lower id first among equal logits. A strict total order makes
// the set kept by top-k/top-p unique whatever algorithm selects it.
bool before(const Candidate& a, const Candidate& b) {
  if (a.first != b.first) return a.first > b.first;
  return a.second < b.second;
}

// [0, 1) with 53 random bits: the top 53 bits of the 64-bit output scaled by 2^-53. Exact in a
// double, so every platform computes the same value from the same raw output.
double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Loops over the vocabulary run kLanes values at a time. With AVX2 and FMA they are written with
// intrinsics (a float reduction as one running value does not vectorize without -ffast-math, and
// GCC's SLP pass left the lane arrays scalar); the portable forms below give the same bits: the
// same fused operations per element, and the same per-lane sums added in the same order.
constexpr size_t kLanes = 16;
// The draw walks the vocabulary a block at a time through per-block sums of the probabilities.
constexpr size_t kBlock = 256;

#if defined(__AVX2__) && defined(__FMA__)
constexpr bool kAvx2 = true;

// sampler_exp on 8 values: the same operations, each an IEEE single-rounding one.
__m256 exp8(__m256 x) {
  const __m256 min = _mm256_set1_ps(-87.33654f);
  const __m256 c = _mm256_max_ps(x, min);  // x > min ? x : min (x is never NaN here)
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256 n =
      _mm256_sub_ps(_mm256_fmadd_ps(c, _mm256_set1_ps(1.44269504088896341f), magic), magic);
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), c);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
  __m256 q = _mm256_set1_ps(1.9875691500e-4f);
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.3981999507e-3f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(8.3334519073e-3f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(4.1665795894e-2f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.6666665459e-1f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 e = _mm256_add_ps(_mm256_fmadd_ps(q, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 y = _mm256_mul_ps(e, _mm256_castsi256_ps(bits));
  return _mm256_and_ps(_mm256_cmp_ps(x, min, _CMP_GT_OQ), y);
}
#else
constexpr bool kAvx2 = false;
#endif

// The largest value that is not NaN (-inf when there is none).
float max_not_nan(std::span<const float> v) {
  const size_t n = v.size();
  size_t i = 0;
  float m = kNegInf;
  if constexpr (kAvx2) {
#if defined(__AVX2__) && defined(__FMA__)
    // max_ps(a, b) returns b unless a > b: a NaN in a never wins, as in the scalar form.
    __m256 m0 = _mm256_set1_ps(kNegInf), m1 = m0;
    for (; i + kLanes <= n; i += kLanes) {
      m0 = _mm256_max_ps(_mm256_loadu_ps(v.data() + i), m0);
      m1 = _mm256_max_ps(_mm256_loadu_ps(v.data() + i + 8), m1);
    }
    alignas(32) float lane[16];
    _mm256_store_ps(lane, m0);
    _mm256_store_ps(lane + 8, m1);
    for (const float x : lane) m = x > m ? x : m;
#endif
  }
  for (; i < n; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

// Whether any of v[0, kLanes) is >= t (ge) or == t (!ge).
bool any_lane(const float* v, float t, bool ge) {
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 tv = _mm256_set1_ps(t);
  const __m256 a = _mm256_loadu_ps(v), b = _mm256_loadu_ps(v + 8);
  const __m256 hit =
      ge ? _mm256_or_ps(_mm256_cmp_ps(a, tv, _CMP_GE_OQ), _mm256_cmp_ps(b, tv, _CMP_GE_OQ))
         : _mm256_or_ps(_mm256_cmp_ps(a, tv, _CMP_EQ_OQ), _mm256_cmp_ps(b, tv, _CMP_EQ_OQ));
  return _mm256_movemask_ps(hit) != 0;
#else
  bool hit = false;
  for (size_t j = 0; j < kLanes; ++j) hit |= ge ? v[j] >= t : v[j] == t;
  return hit;
#endif
}

// Lowest id among the largest logits; NaN logits never win (all NaN: id 0). The largest value
// comes from a vectorized pass; the first index holding it from a scan that tests kLanes values
// at a time. -0 and +0 compare equal, so the lower id of the two wins, as with a strict '>' scan.
int32_t argmax(std::span<const float> logits) {
  const float best = max_not_nan(logits);
  const size_t n = logits.size();
  size_t i = 0;
  while (i + kLanes <= n && !any_lane(logits.data() + i, best, false)) i += kLanes;
  for (; i < n; ++i) {
    if (logits[i] == best) return static_cast<int32_t>(i);
  }
  return 0;  // every logit is NaN
}

// probs[i] = logit i's probability relative to the largest scaled logit max_s (0 for masked, NaN
// and min-p-filtered tokens), for one block; returns the block's sum in double: kLanes per-lane
// sums, added in lane order.
double block_probabilities_impl(const float* l, size_t len, float inv_t, float max_s, float floor_s,
                                float* probs) {
  std::array<double, kLanes> lane{};
  size_t i = 0;
  if constexpr (kAvx2) {
#if defined(__AVX2__) && defined(__FMA__)
    const __m256 vt = _mm256_set1_ps(inv_t), vmax = _mm256_set1_ps(max_s);
    const __m256 vfloor = _mm256_set1_ps(floor_s), vneg = _mm256_set1_ps(kNegInf);
    __m256d acc[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(),
                      _mm256_setzero_pd()};
    for (; i + kLanes <= len; i += kLanes) {
      for (int h = 0; h < 2; ++h) {
        const __m256 x = _mm256_loadu_ps(l + i + 8 * h);
        const __m256 s = _mm256_mul_ps(x, vt);
        const __m256 keep =
            _mm256_and_ps(_mm256_cmp_ps(x, vneg, _CMP_GT_OQ), _mm256_cmp_ps(s, vfloor, _CMP_GE_OQ));
        const __m256 p = _mm256_and_ps(keep, exp8(_mm256_sub_ps(s, vmax)));
        _mm256_storeu_ps(probs + i + 8 * h, p);
        acc[2 * h] = _mm256_add_pd(acc[2 * h], _mm256_cvtps_pd(_mm256_castps256_ps128(p)));
        acc[2 * h + 1] =
            _mm256_add_pd(acc[2 * h + 1], _mm256_cvtps_pd(_mm256_extractf128_ps(p, 1)));
      }
    }
    for (int a = 0; a < 4; ++a) _mm256_storeu_pd(lane.data() + 4 * a, acc[a]);
#endif
  }
  for (; i + kLanes <= len; i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) {
      const float s = l[i + j] * inv_t;
      probs[i + j] = l[i + j] > kNegInf && s >= floor_s ? sampler_exp(s - max_s) : 0.0f;
      lane[j] += probs[i + j];
    }
  }
  for (size_t j = 0; i < len; ++i, ++j) {
    const float s = l[i] * inv_t;
    probs[i] = l[i] > kNegInf && s >= floor_s ? sampler_exp(s - max_s) : 0.0f;
    lane[j] += probs[i];
  }
  double sum = 0.0;
  for (const double x : lane) sum += x;
  return sum;
}

// Walks the candidates (probabilities) in their order until the cumulative mass passes u * total.
int32_t draw_from(const std::vector<Candidate>& candidates, double total, std::mt19937_64& rng) {
  const double target = uniform01(rng) * total;
  double cumulative = 0.0;
  for (const auto& c : candidates) {
    cumulative += c.first;
    if (cumulative > target) return c.second;
  }
  return candidates.back().second;  // rounding left target at the very top of the range
}

// Per-thread scratch of the draw, reused across calls and sequences (a 49k vocabulary would
// otherwise allocate ~600 KB per token, or hold it per sequence).
struct Scratch {
  std::vector<Candidate> candidates;
  std::vector<float> probs;        // a probability per token
  std::vector<double> block_mass;  // probs summed per block of kBlock tokens
};
thread_local Scratch scratch;

// The nucleus search's coarse pass: the mass of tokens whose probability is at least
// kNucleusCut[c], for 8 cuts at once (the max token has probability 1). The nucleus lies within
// the first cut whose mass reaches top_p of the total, so only those tokens are ordered.
constexpr int kCuts = 8;
const std::array<float, kCuts> kNucleusCut = {
    sampler_exp(-1.0f), sampler_exp(-2.0f), sampler_exp(-3.0f),  sampler_exp(-4.5f),
    sampler_exp(-6.0f), sampler_exp(-8.0f), sampler_exp(-11.0f), sampler_exp(-16.0f)};

// Temperature, top-k, min-p, top-p and the draw. `candidates`, `probs` and `block_mass` are the
// caller's scratch buffers, reused across calls so a 49k vocabulary does not allocate per token.
int32_t draw(std::span<const float> logits, const SamplingParams& params, std::mt19937_64& rng,
             std::vector<Candidate>& candidates, std::vector<float>& probs,
             std::vector<double>& block_mass) {
  const float inv_t = 1.0f / params.temperature;
  // A temperature whose inverse overflows (a denormal, which validation lets through) is the
  // greedy limit; scaling by an infinite 1/T would turn a zero logit into NaN (found by
  // fuzz_sampler: the NaN reached the top-p histogram as an index).
  if (std::isinf(inv_t)) return argmax(logits);
  const size_t n = logits.size();
  const size_t k = static_cast<size_t>(params.top_k);
  const bool nucleus = params.top_p < 1.0f;
  candidates.clear();

  if (k > 0 && k < n) {
    // top-k in the one pass over the vocabulary: a bounded heap whose front is the worst kept
    // candidate. A later token with an equal value has a higher id and loses the tie, hence the
    // strict `>`. Once the heap is full, a block of kLanes logits whose largest value cannot beat
    // the front is skipped after one vectorized max: most of the vocabulary goes that way.
    candidates.reserve(k);
    for (size_t b = 0; b < n; b += kLanes) {
      const size_t e = std::min(n, b + kLanes);
      if (candidates.size() == k &&
          !(max_not_nan(logits.subspan(b, e - b)) * inv_t > candidates.front().first)) {
        continue;
      }
      for (size_t i = b; i < e; ++i) {
        const float l = logits[i];
        // -inf (masked) and NaN tokens have no probability; leaving them out keeps exp() finite.
        if (!(l > kNegInf)) continue;
        const Candidate c{l * inv_t, static_cast<int32_t>(i)};
        if (candidates.size() < k) {
          candidates.push_back(c);
          std::push_heap(candidates.begin(), candidates.end(), before);
        } else if (c.first > candidates.front().first) {
          std::pop_heap(candidates.begin(), candidates.end(), before);
          candidates.back() = c;
          std::push_heap(candidates.begin(), candidates.end(), before);
        }
      }
    }
    if (candidates.empty()) return argmax(logits);
    std::sort_heap(candidates.begin(), candidates.end(), before);
    const float max_s = candidates.front().first;
    if (std::isinf(max_s)) return argmax(logits);  // +inf dominates every finite logit
    // min-p: p_i >= min_p * p_max  <=>  s_i >= s_max + ln(min_p); a prefix of the order survives.
    if (params.min_p > 0.0f) {
      const float threshold = max_s + std::log(params.min_p);
      while (candidates.back().first < threshold) candidates.pop_back();
    }
    double total = 0.0;
    for (auto& c : candidates) total += c.first = sampler_exp(c.first - max_s);
    if (nucleus && candidates.size() > 1) {
      // Already in the total order: the nucleus is the shortest prefix reaching top_p.
      const double target = static_cast<double>(params.top_p) * total;
      double cumulative = 0.0;
      size_t keep = 0;
      while (keep < candidates.size() && cumulative < target) {
        cumulative += candidates[keep++].first;
      }
      candidates.resize(keep);
      total = cumulative;
    }
    return draw_from(candidates, total, rng);
  }

  // The whole vocabulary. Probabilities relative to the largest scaled logit (so exp() <= 1 and the
  // max token has exactly 1) go to `probs`, 0 for masked, NaN and min-p-filtered tokens, with their
  // sums per block of kBlock tokens; multiplying by inv_t > 0 keeps the order, so the largest
  // scaled logit is the scaled largest logit.
  const float max_l = max_not_nan(logits);
  if (!(max_l > kNegInf)) return argmax(logits);  // nothing but -inf and NaN
  const float max_s = max_l * inv_t;
  if (std::isinf(max_s)) return argmax(logits);  // +inf dominates every finite logit
  // min-p: p_i >= min_p * p_max  <=>  s_i >= s_max + ln(min_p).
  const float floor_s = params.min_p > 0.0f ? max_s + std::log(params.min_p) : kNegInf;
  probs.resize(n);
  const size_t blocks = (n + kBlock - 1) / kBlock;
  block_mass.resize(blocks);
  for (size_t b = 0; b < blocks; ++b) {
    const size_t b0 = b * kBlock;
    block_mass[b] = block_probabilities_impl(logits.data() + b0, std::min(kBlock, n - b0), inv_t,
                                             max_s, floor_s, probs.data() + b0);
  }
  double total = 0.0;
  for (const double m : block_mass) total += m;

  if (nucleus) {
    // The masses above the coarse cuts, in one pass over the probabilities (float lanes; the
    // margin below covers their rounding), pick the smallest cut that holds top_p of the mass:
    // the nucleus, a prefix of the total order, lies within it. Only those tokens are ordered.
    std::array<std::array<float, kLanes>, kCuts> mass{};
    size_t i = 0;
    if constexpr (kAvx2) {
#if defined(__AVX2__) && defined(__FMA__)
      __m256 acc[kCuts];
      for (auto& a : acc) a = _mm256_setzero_ps();
      for (; i + 8 <= n; i += 8) {
        const __m256 p = _mm256_loadu_ps(probs.data() + i);
        for (int c = 0; c < kCuts; ++c) {
          const __m256 at = _mm256_cmp_ps(p, _mm256_set1_ps(kNucleusCut[c]), _CMP_GE_OQ);
          acc[c] = _mm256_add_ps(acc[c], _mm256_and_ps(at, p));
        }
      }
      for (int c = 0; c < kCuts; ++c) _mm256_storeu_ps(mass[c].data(), acc[c]);
#endif
    }
    for (; i < n; ++i) {
      for (int c = 0; c < kCuts; ++c) {
        mass[c][i % kLanes] += probs[i] >= kNucleusCut[c] ? probs[i] : 0.0f;
      }
    }
    // The margin bounds the float sums' error (~6k terms per lane); it also means that a top_p
    // above ~0.999 finds no cut and orders every candidate: exact, only slower.
    const double needed = static_cast<double>(params.top_p) * total * (1.0 + 1e-3);
    float cut = 0.0f;  // no cut holds enough: every token with a probability is a candidate
    for (int c = 0; c < kCuts; ++c) {
      double m = 0.0;
      for (const float x : mass[c]) m += x;
      if (m >= needed) {
        cut = kNucleusCut[c];
        break;
      }
    }
    // Gather the tokens at or above the cut (id order), skipping blocks of kLanes with none.
    // Without a cut, every token with a probability (a subnormal one included) is a candidate.
    const float keep_at = cut > 0.0f ? cut : std::numeric_limits<float>::denorm_min();
    for (size_t b = 0; b < n; b += kLanes) {
      const size_t e = std::min(n, b + kLanes);
      if (e - b == kLanes && !any_lane(probs.data() + b, keep_at, true)) continue;
      for (size_t t = b; t < e; ++t) {
        if (probs[t] >= keep_at) candidates.emplace_back(probs[t], static_cast<int32_t>(t));
      }
    }
    if (candidates.size() > 1) {
      // Nucleus: the shortest prefix of the total order whose mass reaches top_p (at least one
      // token). It is usually short, so only a growing head is ordered: each round selects the
      // next slice from the unordered rest (O(n)) and sorts just that slice. The cumulative sum
      // always runs over the sorted prefix, so the cut is the exact one on every platform.
      const double target = static_cast<double>(params.top_p) * total;
      const size_t m = candidates.size();
      size_t ordered = 0;  // [0, ordered) holds the top `ordered` in the total order
      size_t head = std::min<size_t>(64, m);
      double cumulative = 0.0;
      size_t keep = 0;
      for (;;) {
        if (head > ordered) {
          const auto first = candidates.begin() + static_cast<ptrdiff_t>(ordered);
          const auto mid = candidates.begin() + static_cast<ptrdiff_t>(head);
          if (head < m) std::nth_element(first, mid, candidates.end(), before);
          std::sort(first, mid, before);
          ordered = head;
        }
        while (keep < head && cumulative < target) cumulative += candidates[keep++].first;
        if (cumulative >= target || head == m) break;
        head = std::min(head * 4, m);
      }
      candidates.resize(keep);
      total = cumulative;
    }
    return draw_from(candidates, total, rng);  // in the total order
  }

  // Walk the vocabulary in id order until the cumulative mass passes u * total: whole blocks by
  // their sums first (the same sums, in the same order, that made the total), then token by token.
  const double target = uniform01(rng) * total;
  double cumulative = 0.0;
  size_t b = 0;
  while (b + 1 < blocks && cumulative + block_mass[b] <= target) cumulative += block_mass[b++];
  int32_t last = -1;
  for (size_t t = b * kBlock; t < n; ++t) {
    if (probs[t] == 0.0f) continue;
    last = static_cast<int32_t>(t);
    cumulative += probs[t];
    if (cumulative > target) return last;
  }
  // Rounding left target at the very top of the range: the last token with a probability owns it.
  for (size_t t = n; last < 0 && t-- > 0;) {
    if (probs[t] > 0.0f) last = static_cast<int32_t>(t);
  }
  return last;
}

Status field_error(const char* field, const char* range, float value) {
  return make_error(ErrorCode::kInvalidArgument,
                    std::string(field) + " must be in " + range + ", got " + std::to_string(value));
}

uint64_t fresh_seed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

}  // namespace

double sampler_internal::block_probabilities(const float* logits, size_t n, float inv_t,
                                             float max_s, float floor_s, float* probs) {
  return block_probabilities_impl(logits, n, inv_t, max_s, floor_s, probs);
}

Status SamplingParams::validate() const {
  // Comparisons are written so that NaN fails them.
  if (!(temperature >= 0.0f && temperature <= 2.0f)) {
    return field_error("temperature", "[0, 2]", temperature);
  }
  if (top_k < 0) {
    return make_error(ErrorCode::kInvalidArgument,
                      "top_k must be >= 0 (0 disables it), got " + std::to_string(top_k));
  }
  if (!(top_p > 0.0f && top_p <= 1.0f)) return field_error("top_p", "(0, 1]", top_p);
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return field_error("min_p", "[0, 1]", min_p);
  if (!(repetition_penalty > 0.0f && std::isfinite(repetition_penalty))) {
    return field_error("repetition_penalty", "(0, inf)", repetition_penalty);
  }
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) {
    return field_error("presence_penalty", "[-2, 2]", presence_penalty);
  }
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) {
    return field_error("frequency_penalty", "[-2, 2]", frequency_penalty);
  }
  return Status::Ok();
}

Sampler::Sampler(const SamplingParams& params, std::span<const int32_t> prompt_tokens)
    : params_(params),
      rng_(params.seed ? *params.seed : fresh_seed()),
      prompt_tokens_(prompt_tokens.begin(), prompt_tokens.end()) {
  QGATE_CHECK(params.validate().ok(), "SamplingParams must be validated before use");
  std::sort(prompt_tokens_.begin(), prompt_tokens_.end());
  prompt_tokens_.erase(std::unique(prompt_tokens_.begin(), prompt_tokens_.end()),
                       prompt_tokens_.end());
}

void Sampler::accept(int32_t token) { ++output_counts_[token]; }

int32_t Sampler::sample(std::span<float> logits) {
  QGATE_CHECK(!logits.empty(), "sample() needs a non-empty vocabulary");
  const auto vocab = static_cast<int64_t>(logits.size());
  // Token ids outside the vocabulary cannot be penalized; they are skipped rather than trusted.
  auto in_vocab = [vocab](int32_t t) { return t >= 0 && t < vocab; };

  if (params_.repetition_penalty != 1.0f) {
    // Applied once per distinct token, whether it was seen in the prompt, the output, or both.
    const float penalty = params_.repetition_penalty;
    auto penalize = [&](int32_t t) {
      float& l = logits[static_cast<size_t>(t)];
      l = l > 0.0f ? l / penalty : l * penalty;
    };
    for (int32_t t : prompt_tokens_) {
      if (in_vocab(t)) penalize(t);
    }
    for (const auto& [t, count] : output_counts_) {
      if (in_vocab(t) && !std::binary_search(prompt_tokens_.begin(), prompt_tokens_.end(), t)) {
        penalize(t);
      }
    }
  }
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    for (const auto& [t, count] : output_counts_) {
      if (!in_vocab(t) || count <= 0) continue;
      logits[static_cast<size_t>(t)] -=
          params_.presence_penalty + params_.frequency_penalty * static_cast<float>(count);
    }
  }

  const int32_t token =
      params_.temperature == 0.0f
          ? argmax(logits)
          : draw(logits, params_, rng_, scratch.candidates, scratch.probs, scratch.block_mass);
  accept(token);
  return token;
}

}  // namespace qgate
