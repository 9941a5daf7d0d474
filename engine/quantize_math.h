// Weight quantization algorithms as pure math on fp32 matrices: round-to-nearest (RTN), GPTQ and
// the two AWQ searches (activation-aware scales, then clipping). No model I/O here: the caller
// runs the model layer by layer, collects calibration inputs, calls these, and packs the
// resulting QuantizedLinear with pack_gptq / pack_awq.
//
// Conventions shared by every quantizer here (AutoGPTQ quantizer.py `find_params`):
// - Weights W are [N][K] row-major (rows = output features); a group is group_size consecutive
//   input columns of one row; the last group may be partial (K % group_size != 0);
//   group_size -1 or >= K means one group per row ("per channel").
// - The group range always contains 0 (min = min(w, 0), max = max(w, 0)); an all-zero group uses
//   [-1, +1]. asym: scale = (max - min) / maxq, zero = round(-min / scale) clamped to [0, maxq].
//   sym: zero = (maxq + 1) / 2 and scale = 2 max|w| / maxq. (AutoGPTQ leaves min at 0 for a
//   group with no negative value, which halves the scale and clips the top half of such a group;
//   we use the symmetric range for every group.)
// - Scales are rounded up to an fp16 value before q is computed, because GPTQ/AWQ files store
//   fp16 scales and q must be computed against the value the reader will see (AutoGPTQ computes
//   q with the fp32 scale and rounds it only when packing). Rounding up keeps the whole range
//   within maxq steps, so |w − dequant| <= scale / 2 for every value of the group. A scale below
//   fp16's smallest subnormal becomes that subnormal; one beyond fp16's range is an error (the
//   quantizers name the row and group).
// - q = clamp(round_half_even(w / scale) + zero, 0, maxq); dequant = scale * (q - zero).
//
// Threading: pure functions of their arguments; a ThreadPool, when given, is used for
// data-parallel loops, and results are identical with or without it (every row's arithmetic is
// done in the same order whichever thread runs it).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "engine/quant_formats.h"
#include "kernels/status.h"

namespace qgate {

class ThreadPool;

struct QuantParams {
  int bits = 4;              // 4 or 8
  int64_t group_size = 128;  // -1 or >= K: per channel
  bool sym = false;
};

// Scale (exactly representable in fp16) and zero point of one (row, group).
struct GroupQuant {
  float scale = 1.0f;
  uint8_t zero = 0;
};

// Parameters of one group from its values. Error (kOutOfRange) when the scale overflows fp16.
Result<GroupQuant> find_group_params(std::span<const float> w, int bits, bool sym);
uint8_t quantize_value(float w, GroupQuant p, int maxq);
inline float dequantize_value(uint8_t q, GroupQuant p) {
  return p.scale * (static_cast<float>(q) - static_cast<float>(p.zero));
}

// W [N][K] back from a QuantizedLinear (uses g_idx, so act-order layers work too).
std::vector<float> dequantize_linear(const QuantizedLinear& layer);

// Round-to-nearest, group-wise, min/max per (row, group) of W itself.
Result<QuantizedLinear> quantize_rtn(std::span<const float> w, int64_t n, int64_t k,
                                     const QuantParams& params);
// RTN after clamping each (row, group) of W to [-clip, +clip]; clip is [N][num_groups]
// row-major (the layout awq_search_clip returns). clip = max|w| of the group reproduces RTN.
Result<QuantizedLinear> quantize_rtn_clipped(std::span<const float> w, int64_t n, int64_t k,
                                             std::span<const float> clip,
                                             const QuantParams& params);

// --- GPTQ -----------------------------------------------------------------------------------

// H = 2 XᵀX / nsamples accumulated over calibration inputs X [tokens][K], as a running mean so
// batches can arrive one at a time (AutoGPTQ add_batch). Accumulated in double.
class GptqHessian {
 public:
  explicit GptqHessian(int64_t k);
  // Error when x.size() != tokens * k or a value is not finite.
  Status add_batch(std::span<const float> x, int64_t tokens, ThreadPool* pool = nullptr);
  std::span<const double> h() const { return h_; }  // [K][K], symmetric
  int64_t samples() const { return samples_; }
  int64_t k() const { return k_; }

 private:
  int64_t k_;
  int64_t samples_ = 0;
  std::vector<double> h_;
};

struct GptqParams : QuantParams {
  double damp = 0.01;          // λ = damp · mean(diag H), added to the diagonal
  bool desc_act = false;       // act-order: quantize columns by descending diag(H)
  int64_t block_size = 128;    // lazy-update block (columns)
  bool static_groups = false;  // group params from the original W before any update
  // When H + λI is not positive definite, damp is multiplied by 10 (0 becomes 0.01) and the
  // factorization retried, at most this many times; then the call fails.
  int max_damp_retries = 4;
};

struct GptqResult {
  QuantizedLinear layer;
  double damp_used = 0.0;  // the damp fraction that made H + λI positive definite
  int damp_retries = 0;
  // AutoGPTQ's proxy loss: Σ (w - dequant)² / Hinv[j][j]² / 2 over the layer.
  double loss = 0.0;
};

// Errors: shapes (kInvalidArgument), a Hessian that stays non-PD after the retries
// (kInvalidArgument, naming the damp tried), a scale beyond fp16 (kOutOfRange).
Result<GptqResult> quantize_gptq(std::span<const float> w, int64_t n, int64_t k,
                                 const GptqHessian& hessian, const GptqParams& params,
                                 ThreadPool* pool = nullptr);

// U, upper triangular, with Uᵀ U = (H + λI)⁻¹ for the damped H: what AutoGPTQ gets from
// cholesky → cholesky_inverse → cholesky(upper). Exposed for tests. kInvalidArgument when the
// matrix is not (numerically) positive definite.
Result<std::vector<double>> gptq_inverse_cholesky(std::span<const double> h, int64_t k,
                                                  ThreadPool* pool = nullptr);

// --- AWQ ------------------------------------------------------------------------------------

struct AwqParams : QuantParams {
  int n_grid = 20;  // alpha in {0, 1/n_grid, ..., (n_grid-1)/n_grid}
  // AutoAWQ's duo_scaling: s = x_mean^α / (w_mean^(1-α) + 1e-4). Off: s = x_mean^α.
  bool duo_scaling = false;
  double max_shrink = 0.5;    // clip search tries max·(1 - i/n_grid) for i < max_shrink·n_grid
  int64_t clip_tokens = 512;  // clip search subsamples X with a stride to about this many rows
};

struct AwqScaleResult {
  std::vector<float> scales;  // [K]: the caller multiplies W columns by s, divides the input
  double loss = 0.0;          // best loss (mean squared output error per element)
  double alpha = 0.0;
  std::vector<double> losses;  // loss of each grid point, alpha = i / n_grid
};

// Scale search for one scaling group: layers sharing the input X [tokens][K]. weights[i] is
// [rows[i]][K]. The loss is the mean squared error of the group's own outputs,
// Σ_i ‖X W_iᵀ − X (Q(W_i·diag(s))·diag(s)⁻¹)ᵀ‖² / (tokens · Σ rows) — a simplification of
// AutoAWQ, which measures the output of the whole inspected block (e.g. the attention module).
Result<AwqScaleResult> awq_search_scales(std::span<const std::span<const float>> weights,
                                         std::span<const int64_t> rows, int64_t k,
                                         std::span<const float> x, int64_t tokens,
                                         const AwqParams& params, ThreadPool* pool = nullptr);

// Clip search for one linear layer, run after the scales are applied: w is the scaled weight
// W·diag(s) and x the correspondingly scaled input X·diag(s)⁻¹. For each (row, group) it picks
// the clip value max|w|·(1 - i/n_grid) minimizing the mean over (subsampled) tokens of the
// squared error of that group's partial output x_g · (w_g − Q(clamp(w_g)))  (AutoAWQ
// _compute_best_clip). Returns [N][num_groups]; feed it to quantize_rtn_clipped.
Result<std::vector<float>> awq_search_clip(std::span<const float> w, int64_t n, int64_t k,
                                           std::span<const float> x, int64_t tokens,
                                           const AwqParams& params, ThreadPool* pool = nullptr);

// Shared by quantize_math.cpp, gptq.cpp and awq.cpp; not part of the interface.
namespace quantize_internal {

// Columns per group: group_size, or K for per-channel (-1 or >= K).
int64_t group_width(const QuantParams& params, int64_t k);
// Sizes, bits, group_size and finiteness of W; messages start with `who`.
Status check_weights(const char* who, std::span<const float> w, int64_t n, int64_t k,
                     const QuantParams& params);
// fn(begin, end) over [0, n), on the pool when there is one and the work is worth splitting.
void parallel_for(ThreadPool* pool, int64_t n, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn);
// An empty layer of the right sizes with trivial g_idx.
QuantizedLinear make_layer(int64_t n, int64_t k, const QuantParams& params);
double dot(const double* a, const double* b, int64_t len);
float dot(const float* a, const float* b, int64_t len);

}  // namespace quantize_internal

}  // namespace qgate
