// Log-softmax of one row of logits, computed stably: the row's maximum is subtracted before
// exponentiating and the sum runs in double, since a 49k-entry vocabulary summed in float loses
// the small probabilities that negative log-likelihoods of unlikely tokens depend on.
//
// Shared by offline evaluation (perplexity, KL, top-1 agreement) and teacher-forced scoring, so
// both report the same number for the same logits.
#pragma once

#include <cstdint>
#include <span>

namespace qgate {

struct RowStats {
  float max = 0;
  double log_z = 0;    // log sum_i exp(x_i - max)
  int32_t argmax = 0;  // the first index holding the maximum, as greedy sampling picks it
};

// `x` must not be empty.
RowStats row_stats(std::span<const float> x);

// log softmax(x)[token]; `token` must index `x`.
inline double log_prob(std::span<const float> x, const RowStats& s, int32_t token) {
  return static_cast<double>(x[static_cast<size_t>(token)] - s.max) - s.log_z;
}

}  // namespace qgate
