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
#include <string>

namespace qgate {
namespace {

using Candidate = std::pair<float, int32_t>;  // (scaled logit, token id)

// Total order: higher logit first, lower id first among equal logits. A strict total order makes
// the set kept by top-k/top-p unique whatever algorithm selects it.
bool before(const Candidate& a, const Candidate& b) {
  if (a.first != b.first) return a.first > b.first;
  return a.second < b.second;
}

// [0, 1) with 53 random bits: the top 53 bits of the 64-bit output scaled by 2^-53. Exact in a
// double, so every platform computes the same value from the same raw output.
double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Lowest id among the largest logits; NaN logits never win.
int32_t argmax(std::span<const float> logits) {
  int32_t best = 0;
  float best_value = -std::numeric_limits<float>::infinity();
  bool found = false;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float v = logits[i];
    if (std::isnan(v)) continue;
    if (!found || v > best_value) {
      best = static_cast<int32_t>(i);
      best_value = v;
      found = true;
    }
  }
  return best;
}

// Temperature, top-k, min-p, top-p and the draw. `candidates` is the caller's scratch buffer,
// reused across calls so a 49k vocabulary does not allocate per token.
int32_t draw(std::span<const float> logits, const SamplingParams& params, std::mt19937_64& rng,
             std::vector<Candidate>& candidates) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const float inv_t = 1.0f / params.temperature;
  // A temperature whose inverse overflows (a denormal, which validation lets through) is the
  // greedy limit; scaling by an infinite 1/T would turn a zero logit into NaN (found by
  // fuzz_sampler: the NaN reached the top-p histogram as an index).
  if (std::isinf(inv_t)) return argmax(logits);
  const size_t k = static_cast<size_t>(params.top_k);
  candidates.clear();
  // `sorted`: candidates are in the total order; otherwise they are in id order.
  bool sorted = false;
  float max_logit = kNegInf;
  if (k > 0 && k < logits.size()) {
    // top-k in the one pass over the vocabulary: a bounded heap whose front is the worst kept
    // candidate, so most tokens are rejected by a single float compare. A later token with an
    // equal value has a higher id and loses the tie, hence the strict `>`.
    candidates.reserve(k);
    for (size_t i = 0; i < logits.size(); ++i) {
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
    std::sort_heap(candidates.begin(), candidates.end(), before);
    sorted = true;
    if (!candidates.empty()) max_logit = candidates.front().first;
  } else {
    candidates.reserve(logits.size());
    for (size_t i = 0; i < logits.size(); ++i) {
      const float l = logits[i];
      if (!(l > kNegInf)) continue;
      const float s = l * inv_t;
      candidates.emplace_back(s, static_cast<int32_t>(i));
      max_logit = std::max(max_logit, s);
    }
  }
  if (candidates.empty()) return argmax(logits);
  if (std::isinf(max_logit)) return argmax(logits);  // +inf dominates every finite logit

  // min-p: p_i >= min_p * p_max  <=>  s_i >= s_max + ln(min_p). Both top-p and min-p keep a
  // prefix of the total order, so applying min-p first gives the same set and shrinks top-p's sort.
  if (params.min_p > 0.0f) {
    const float threshold = max_logit + std::log(params.min_p);
    // remove_if is stable, so the id or total order survives.
    candidates.erase(
        std::remove_if(candidates.begin(), candidates.end(),
                       [threshold](const Candidate& c) { return c.first < threshold; }),
        candidates.end());
  }

  // Unnormalized probabilities, stored in place of the logits; max_logit keeps exp() <= 1. exp()
  // is monotonic, so the total order on probabilities is the one on logits.
  // Alongside, a histogram of the mass by distance below the max logit (quarter-nat buckets) lets
  // top-p shrink the candidates before ordering any of them.
  constexpr int kBuckets = 128;
  constexpr float kBucketsPerNat = 4.0f;
  std::array<double, kBuckets> bucket_mass{};
  const bool nucleus = params.top_p < 1.0f && candidates.size() > 1;
  double total = 0.0;
  for (auto& c : candidates) {
    const float below = max_logit - c.first;
    c.first = std::exp(-below);
    total += c.first;
    if (nucleus) {
      bucket_mass[static_cast<size_t>(std::min(below * kBucketsPerNat, kBuckets - 1.0f))] +=
          c.first;
    }
  }

  if (nucleus && !sorted) {
    // The top buckets that hold a top_p share of the mass (with a margin far above the rounding
    // error of these sums) contain the whole nucleus. Keeping every token above a probability
    // threshold keeps a prefix of the total order, so the exact cut below is unchanged; the
    // slightly lower threshold covers exp() rounding at the bucket edge.
    const double needed = static_cast<double>(params.top_p) * total * (1.0 + 1e-6);
    double mass = 0.0;
    int last = 0;
    while (last < kBuckets - 1 && (mass += bucket_mass[static_cast<size_t>(last)]) < needed) ++last;
    if (last < kBuckets - 1) {
      const float threshold =
          std::exp(-(static_cast<float>(last) + 1.0f) / kBucketsPerNat) * 0.999f;
      candidates.erase(
          std::remove_if(candidates.begin(), candidates.end(),
                         [threshold](const Candidate& c) { return c.first < threshold; }),
          candidates.end());
    }
  }

  if (nucleus && candidates.size() > 1) {
    // Nucleus: the shortest prefix of the total order whose mass reaches top_p (at least one
    // token). It is usually short, so only a growing head is ordered: each round selects the next
    // slice from the unordered rest (O(n)) and sorts just that slice. The cumulative sum always
    // runs over the sorted prefix, so the cut is the exact one on every platform.
    const double target = static_cast<double>(params.top_p) * total;
    const size_t n = candidates.size();
    size_t ordered = sorted ? n : 0;  // [0, ordered) holds the top `ordered` in the total order
    size_t head = std::min<size_t>(64, n);
    double cumulative = 0.0;
    size_t keep = 0;
    for (;;) {
      if (head > ordered) {
        const auto first = candidates.begin() + static_cast<ptrdiff_t>(ordered);
        const auto mid = candidates.begin() + static_cast<ptrdiff_t>(head);
        if (head < n) std::nth_element(first, mid, candidates.end(), before);
        std::sort(first, mid, before);
        ordered = head;
      }
      while (keep < head && cumulative < target) cumulative += candidates[keep++].first;
      if (cumulative >= target || head == n) break;
      head = std::min(head * 4, n);
    }
    candidates.resize(keep);
    total = cumulative;
  }

  // Walk the survivors in their (deterministic) order until the cumulative mass passes u * total.
  const double target = uniform01(rng) * total;
  double cumulative = 0.0;
  for (const auto& c : candidates) {
    cumulative += c.first;
    if (cumulative > target) return c.second;
  }
  // Rounding can leave target at the very top of the range; the last candidate owns it.
  return candidates.back().second;
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
      params_.temperature == 0.0f ? argmax(logits) : draw(logits, params_, rng_, candidates_);
  accept(token);
  return token;
}

}  // namespace qgate
