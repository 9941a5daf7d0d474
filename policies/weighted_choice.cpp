// Weighted pick and weighted rendezvous hashing. See weighted_choice.h for the contract.
#include "policies/weighted_choice.h"

#include <cmath>
#include <string>

namespace qgate {
namespace {

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

uint64_t fnv1a(uint64_t h, std::string_view bytes) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= kFnvPrime;
  }
  return h;
}

// SplitMix64's output function (Steele, Lea & Flood, 2014): a bijection with full avalanche.
uint64_t splitmix64_finalize(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Maps a hash into the open interval (0, 1) -- never 0 or 1, so ln() is finite and negative.
double open_unit(uint64_t h) { return (static_cast<double>(h >> 11) + 0.5) * 0x1.0p-53; }

// Shared checks; returns the total weight.
Result<double> check_weights(size_t n, auto weight_at) {
  if (n == 0) return make_error(ErrorCode::kInvalidArgument, "weights: the list is empty");
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double w = weight_at(i);
    if (!(w >= 0.0) || !std::isfinite(w)) {
      return make_error(ErrorCode::kInvalidArgument,
                        "weights[" + std::to_string(i) + "] must be a finite number >= 0");
    }
    total += w;
  }
  if (!(total > 0.0)) {
    return make_error(ErrorCode::kInvalidArgument, "weights: at least one weight must be > 0");
  }
  return total;
}

}  // namespace

uint64_t rendezvous_hash(std::string_view key, std::string_view id) {
  uint64_t len = key.size();
  char len_bytes[8];
  for (char& b : len_bytes) {
    b = static_cast<char>(len & 0xff);
    len >>= 8;
  }
  uint64_t h = fnv1a(kFnvOffset, std::string_view(len_bytes, sizeof(len_bytes)));
  h = fnv1a(h, key);
  h = fnv1a(h, id);
  return splitmix64_finalize(h);
}

Result<size_t> weighted_pick(std::span<const double> weights, double u01) {
  QGATE_ASSIGN_OR_RETURN(const double total,
                         check_weights(weights.size(), [&](size_t i) { return weights[i]; }));
  if (!(u01 >= 0.0 && u01 < 1.0)) {
    return make_error(ErrorCode::kInvalidArgument, "u01 must be in [0, 1)");
  }
  const double target = u01 * total;
  double cumulative = 0.0;
  size_t last_positive = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] == 0.0) continue;
    cumulative += weights[i];
    last_positive = i;
    if (cumulative > target) return i;
  }
  // Rounding can leave the target at the very top of the range; it belongs to the last
  // positive weight, never to a trailing zero.
  return last_positive;
}

Result<size_t> rendezvous_pick(std::span<const WeightedCandidate> candidates,
                               std::string_view key) {
  QGATE_TRY_STATUS(
      check_weights(candidates.size(), [&](size_t i) { return candidates[i].weight; }));
  size_t best = 0;
  double best_score = -1.0;  // every positive-weight score is > 0
  for (size_t i = 0; i < candidates.size(); ++i) {
    const WeightedCandidate& c = candidates[i];
    if (c.weight == 0.0) continue;
    const double score = -c.weight / std::log(open_unit(rendezvous_hash(key, c.id)));
    if (score > best_score) {
      best = i;
      best_score = score;
    }
  }
  return best;
}

}  // namespace qgate
