// AWQ (Lin et al., 2023) searches, following AutoAWQ awq/quantize/quantizer.py
// (_search_best_scale / _compute_best_scale, _compute_best_clip), reimplemented:
// - scales: s = mean|x|^α (or, with duo_scaling, mean|x|^α / (w_mean^(1-α) + 1e-4)), clamped to
//   >= 1e-4 and normalized by sqrt(max s · min s); α on the grid i / n_grid; the α with the
//   smallest output error wins (the first one on ties);
// - clipping: per (row, group), max|w| shrunk by (1 - i / n_grid) for i < max_shrink · n_grid,
//   symmetric clamp, RTN, error of that group's partial output, averaged over a strided token
//   subsample.
//
// Both losses are quadratic forms in the weight error e = w − ŵ: Σ_t (x_t · e)² = eᵀ (XᵀX) e.
// We build the Gram matrix once and evaluate eᵀ G e per row, which costs K² per row and grid
// point instead of tokens · K, independent of how much calibration data there is (AutoAWQ uses
// ~65k tokens).
//
// Where we differ from AutoAWQ: the scale loss is the MSE of the scaling group's own linear
// outputs, not of the whole inspected block (attention / MLP module), and group parameters follow
// the shared AutoGPTQ rules (the range includes 0; AutoAWQ's pseudo_quantize_tensor uses the
// plain min/max), so the same RTN is used for the search and for the file.
#include <algorithm>
#include <cmath>
#include <mutex>
#include <optional>
#include <string>

#include "engine/quantize_math.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {

namespace {

using quantize_internal::check_weights;
using quantize_internal::dot;
using quantize_internal::group_width;
using quantize_internal::parallel_for;

struct QuadraticLossScratch {
  std::vector<float> eg;
  std::vector<double> per_row;
  MatmulScratch mm;
};

Status check_inputs(const char* who, std::span<const float> x, int64_t tokens, int64_t k) {
  if (tokens <= 0 || static_cast<int64_t>(x.size()) != tokens * k) {
    return make_error(ErrorCode::kInvalidArgument,
                      std::string(who) + ": inputs have " + std::to_string(x.size()) +
                          " values, expected tokens (" + std::to_string(tokens) + " > 0) x K (" +
                          std::to_string(k) + ")");
  }
  return Status::Ok();
}

// Σ_rows eᵀ G e over the rows of e [rows][K], G [K][K] symmetric. E·G is one f32 GEMM (G = Gᵀ, so
// it is the y = x·Wᵀ the CPU kernels compute with W = G): the kernel's register tiles reuse each
// loaded row of G across several rows of E, where a matrix-vector product per row streamed all of
// G (9 MB for the MLP's down projection) from memory once per row and grid point. Each GEMM output
// is computed the same way whatever the pool's size, and rows are summed in order, so the result
// does not depend on the pool.
Result<double> quadratic_loss(const std::vector<float>& e, int64_t rows, int64_t k,
                              const std::vector<float>& g, ThreadPool& pool,
                              QuadraticLossScratch& s) {
  s.eg.resize(static_cast<size_t>(rows * k));
  const WeightView gram{DType::kF32, k, k, g.data()};
  QGATE_TRY_STATUS(matmul(gram, e.data(), rows, s.eg.data(), pool, s.mm));
  s.per_row.assign(static_cast<size_t>(rows), 0.0);
  pool.parallel_for(rows, 16, [&](int64_t b, int64_t end) {
    for (int64_t r = b; r < end; ++r) {
      s.per_row[r] = static_cast<double>(dot(e.data() + r * k, s.eg.data() + r * k, k));
    }
  });
  double sum = 0.0;
  for (double v : s.per_row) sum += v;
  return sum;
}

}  // namespace

Result<AwqScaleResult> awq_search_scales(std::span<const std::span<const float>> weights,
                                         std::span<const int64_t> rows, int64_t k,
                                         std::span<const float> x, int64_t tokens,
                                         const AwqParams& params, ThreadPool* pool) {
  constexpr const char* who = "awq_search_scales";
  if (weights.empty() || weights.size() != rows.size()) {
    return make_error(ErrorCode::kInvalidArgument,
                      std::string(who) + ": need one row count per weight and at least one");
  }
  if (params.n_grid < 1) {
    return make_error(ErrorCode::kInvalidArgument, std::string(who) + ": n_grid must be >= 1");
  }
  int64_t total_rows = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    QGATE_TRY_STATUS(check_weights(who, weights[i], rows[i], k, params));
    total_rows += rows[i];
  }
  QGATE_TRY_STATUS(check_inputs(who, x, tokens, k));

  // Gram matrix XᵀX / tokens = H / 2 of the GPTQ Hessian (which also checks x is finite).
  GptqHessian hessian(k);
  QGATE_TRY_STATUS(hessian.add_batch(x, tokens, pool));
  std::vector<float> gram(static_cast<size_t>(k * k));
  for (size_t i = 0; i < gram.size(); ++i) gram[i] = static_cast<float>(hessian.h()[i] / 2.0);

  std::vector<double> x_sum(static_cast<size_t>(k), 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t c = 0; c < k; ++c) x_sum[c] += std::fabs(x[t * k + c]);
  }
  std::vector<float> x_mean(static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c) x_mean[c] = static_cast<float>(x_sum[c] / tokens);

  // duo_scaling: mean over all rows of |w| relative to its group's max|w|.
  std::vector<float> w_mean(static_cast<size_t>(k), 0.0f);
  if (params.duo_scaling) {
    const int64_t gw = group_width(params, k);
    std::vector<double> acc(static_cast<size_t>(k), 0.0);
    for (size_t i = 0; i < weights.size(); ++i) {
      for (int64_t r = 0; r < rows[i]; ++r) {
        const float* wr = weights[i].data() + r * k;
        for (int64_t c0 = 0; c0 < k; c0 += gw) {
          const int64_t len = std::min(gw, k - c0);
          float mx = 0.0f;
          for (int64_t j = 0; j < len; ++j) mx = std::max(mx, std::fabs(wr[c0 + j]));
          for (int64_t j = 0; j < len; ++j) acc[c0 + j] += std::fabs(wr[c0 + j]) / (mx + 1e-6f);
        }
      }
    }
    for (int64_t c = 0; c < k; ++c) w_mean[c] = static_cast<float>(acc[c] / total_rows);
  }

  std::optional<ThreadPool> own_pool;
  ThreadPool& gemm_pool = pool != nullptr ? *pool : own_pool.emplace(1);
  QuadraticLossScratch loss_scratch;
  AwqScaleResult best;
  best.loss = INFINITY;
  std::vector<float> s(static_cast<size_t>(k));
  std::vector<float> scaled, err;
  for (int i = 0; i < params.n_grid; ++i) {
    const float alpha = static_cast<float>(i) / static_cast<float>(params.n_grid);
    float lo = INFINITY, hi = 0.0f;
    for (int64_t c = 0; c < k; ++c) {
      float v = std::pow(x_mean[c], alpha);
      if (params.duo_scaling) v /= std::pow(w_mean[c], 1.0f - alpha) + 1e-4f;
      s[c] = std::max(v, 1e-4f);
      lo = std::min(lo, s[c]);
      hi = std::max(hi, s[c]);
    }
    const float norm = std::sqrt(hi * lo);
    for (int64_t c = 0; c < k; ++c) {
      s[c] /= norm;
      if (!std::isfinite(s[c])) s[c] = 1.0f;
    }
    double loss = 0.0;
    for (size_t l = 0; l < weights.size(); ++l) {
      const int64_t n = rows[l];
      scaled.resize(static_cast<size_t>(n * k));
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t c = 0; c < k; ++c) scaled[r * k + c] = weights[l][r * k + c] * s[c];
      }
      QGATE_ASSIGN_OR_RETURN(QuantizedLinear q, quantize_rtn(scaled, n, k, params));
      // Error of the effective weight Q(W·s)/s, which is what X/s · Q(W·s)ᵀ computes.
      err.resize(static_cast<size_t>(n * k));
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t c = 0; c < k; ++c) {
          err[r * k + c] = weights[l][r * k + c] - q.dequant(r, c) / s[c];
        }
      }
      QGATE_ASSIGN_OR_RETURN(const double layer_loss,
                             quadratic_loss(err, n, k, gram, gemm_pool, loss_scratch));
      loss += layer_loss;
    }
    loss /= static_cast<double>(total_rows);
    best.losses.push_back(loss);
    if (loss < best.loss) {
      best.loss = loss;
      best.alpha = alpha;
      best.scales = s;
    }
  }
  if (best.scales.empty()) {
    return make_error(ErrorCode::kInternal, std::string(who) + ": every grid point gave NaN loss");
  }
  return best;
}

Result<std::vector<float>> awq_search_clip(std::span<const float> w, int64_t n, int64_t k,
                                           std::span<const float> x, int64_t tokens,
                                           const AwqParams& params, ThreadPool* pool) {
  constexpr const char* who = "awq_search_clip";
  QGATE_TRY_STATUS(check_weights(who, w, n, k, params));
  QGATE_TRY_STATUS(check_inputs(who, x, tokens, k));
  if (params.n_grid < 1 || params.clip_tokens < 1 || !(params.max_shrink >= 0.0) ||
      params.max_shrink > 1.0) {
    return make_error(
        ErrorCode::kInvalidArgument,
        std::string(who) + ": need n_grid >= 1, clip_tokens >= 1, max_shrink in [0, 1]");
  }
  const int64_t gw = group_width(params, k);
  const int64_t groups = (k + gw - 1) / gw;
  const int maxq = (1 << params.bits) - 1;
  const int n_shrink = std::max(1, static_cast<int>(params.max_shrink * params.n_grid));

  // Strided token subsample (AutoAWQ: input_feat[:, ::step]), transposed to [K][T_s].
  const int64_t step = std::max<int64_t>(1, tokens / params.clip_tokens);
  const int64_t ts = (tokens + step - 1) / step;
  std::vector<float> xt(static_cast<size_t>(k * ts));
  for (int64_t t = 0; t < ts; ++t) {
    for (int64_t c = 0; c < k; ++c) {
      const float v = x[t * step * k + c];
      if (!std::isfinite(v)) {
        return make_error(ErrorCode::kInvalidArgument, std::string(who) + ": input[" +
                                                           std::to_string(t * step) + "][" +
                                                           std::to_string(c) + "] is not finite");
      }
      xt[c * ts + t] = v;
    }
  }
  // Diagonal blocks of XᵀX / T_s: a group's partial output only involves its own columns.
  std::vector<float> gblocks(static_cast<size_t>(groups * gw * gw), 0.0f);
  parallel_for(pool, groups, 1, [&](int64_t b, int64_t e) {
    for (int64_t g = b; g < e; ++g) {
      const int64_t c0 = g * gw, len = std::min(gw, k - c0);
      float* gb = gblocks.data() + g * gw * gw;
      for (int64_t a = 0; a < len; ++a) {
        for (int64_t c = 0; c < len; ++c) {
          gb[a * gw + c] = dot(xt.data() + (c0 + a) * ts, xt.data() + (c0 + c) * ts, ts) /
                           static_cast<float>(ts);
        }
      }
    }
  });

  std::vector<float> clip(static_cast<size_t>(n * groups));
  std::mutex error_mu;
  std::optional<Error> first_error;
  parallel_for(pool, n, 4, [&](int64_t b, int64_t e) {
    std::vector<float> cw(static_cast<size_t>(gw)), err(static_cast<size_t>(gw)),
        ge(static_cast<size_t>(gw));
    for (int64_t r = b; r < e; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * gw, len = std::min(gw, k - c0);
        const float* wg = w.data() + r * k + c0;
        const float* gb = gblocks.data() + g * gw * gw;
        float org_max = 0.0f;
        for (int64_t j = 0; j < len; ++j) org_max = std::max(org_max, std::fabs(wg[j]));
        float best_max = org_max, best_err = INFINITY;
        for (int i = 0; i < n_shrink; ++i) {
          const float mv = org_max * (1.0f - static_cast<float>(i) / params.n_grid);
          for (int64_t j = 0; j < len; ++j) cw[j] = std::clamp(wg[j], -mv, mv);
          auto p =
              find_group_params(std::span<const float>(cw.data(), len), params.bits, params.sym);
          if (!p.ok()) {
            std::lock_guard<std::mutex> lock(error_mu);
            if (!first_error) {
              first_error = make_error(
                  p.error().code(), std::string(who) + ": row " + std::to_string(r) + ", group " +
                                        std::to_string(g) + ": " + p.error().message());
            }
            return;
          }
          // The error is against the unclipped weight: clipping is part of what is measured.
          for (int64_t j = 0; j < len; ++j) {
            err[j] = wg[j] - dequantize_value(quantize_value(cw[j], *p, maxq), *p);
          }
          for (int64_t a = 0; a < len; ++a) ge[a] = dot(gb + a * gw, err.data(), len);
          const float loss = dot(err.data(), ge.data(), len);
          if (loss < best_err) {
            best_err = loss;
            best_max = mv;
          }
        }
        clip[r * groups + g] = best_max;
      }
    }
  });
  if (first_error) return *first_error;
  return clip;
}

}  // namespace qgate
