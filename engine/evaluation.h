// Offline quality evaluation of a model variant: perplexity with the standard strided-window
// protocol (as in the HF perplexity guide), and, against a baseline model, the mean KL divergence
// of next-token distributions and the top-1 agreement rate on the same positions.
//
// Strided windows: windows of `context` tokens start every `stride` tokens; each window scores
// only the tokens the previous window did not (its last end..this end), with the preceding
// tokens of the window as context. stride == context gives disjoint windows.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kernels/status.h"

namespace qgate {

class LlamaModel;
class ThreadPool;

struct EvalOptions {
  int64_t context = 512;
  int64_t stride = 256;
  int64_t max_tokens = 0;  // 0: the whole text; otherwise only its first max_tokens tokens
  Status validate() const;
};

struct EvalResult {
  int64_t tokens = 0;            // tokens in the evaluated text
  int64_t scored_tokens = 0;     // positions that contributed
  int64_t windows = 0;
  double mean_nll = 0;           // nats per scored token
  double perplexity = 0;         // exp(mean_nll)
  // Filled when a baseline is given.
  bool has_baseline = false;
  double baseline_mean_nll = 0;
  double baseline_perplexity = 0;
  double mean_kl = 0;            // KL(baseline || model), nats, mean over scored positions
  double top1_agreement = 0;     // fraction of positions where both argmaxes agree
  double seconds = 0;
};

// Called after each window with (windows done, windows total).
using EvalProgress = std::function<void(int64_t, int64_t)>;

// `baseline` may be null. Both models must share the vocabulary (same tokenizer).
Result<EvalResult> evaluate(const LlamaModel& model, const LlamaModel* baseline,
                            std::span<const int32_t> tokens, const EvalOptions& options,
                            ThreadPool& pool, const EvalProgress& progress = {});

// Several variants against one baseline on the same windows: the baseline runs once per window
// instead of once per variant, which halves the cost of a quality table when the baseline (FP16)
// is the slowest model. Results are in the order of `models` and equal what evaluate() gives.
Result<std::vector<EvalResult>> evaluate_many(std::span<const LlamaModel* const> models,
                                              const LlamaModel* baseline,
                                              std::span<const int32_t> tokens,
                                              const EvalOptions& options, ThreadPool& pool,
                                              const EvalProgress& progress = {});

}  // namespace qgate
