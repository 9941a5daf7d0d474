// GPTQ (Frantar et al., 2022), following the structure of AutoGPTQ
// auto_gptq/quantization/gptq.py (GPTQ.add_batch / fasterquant), reimplemented:
// - dead input columns (H_ii == 0) get H_ii = 1 and W[:, i] = 0;
// - act-order permutes columns by descending diag(H) (stable, so ties keep their order);
// - λ = damp · mean(diag H) on the diagonal, then U upper with Uᵀ U = H⁻¹;
// - columns are quantized in order; the error (w − dequant) / U_jj is propagated to the later
//   columns of the block at once and to the rest of the row lazily, one block at a time;
// - group parameters are found when a group is entered, from the weights as updated so far.
//
// Two things differ in form, not in result:
// - U is computed as the inverse of the "reversed" Cholesky factor instead of cholesky →
//   cholesky_inverse → cholesky: if P reverses the index order and P H P = L Lᵀ, then
//   V = P L P is upper with H = V Vᵀ, so U = V⁻¹ = P L⁻¹ P is upper and Uᵀ U = H⁻¹. Cholesky
//   factors with positive diagonal are unique, so this is the same U, for one factorization and
//   one triangular inverse (⅔ K³ flops instead of 4/3 K³) and no explicit inverse of H.
// - GPTQ treats every row independently (each row has its own groups; H is shared), so rows are
//   processed in tiles, and all of one tile's columns before the next tile: the lazy block update
//   becomes a small matrix product per tile that keeps the tile in cache. AutoGPTQ finds a
//   group's parameters from the globally stored W, which lacks the current block's in-block
//   updates when a group starts mid-block; we use the updated in-block values (identical when
//   group_size is a multiple of block_size or equal to it, the default 128/128).
#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>

#include "engine/quantize_math.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {

namespace {

using quantize_internal::check_weights;
using quantize_internal::dot;
using quantize_internal::group_width;
using quantize_internal::make_layer;
using quantize_internal::parallel_for;

// A pivot below this fraction of its diagonal entry means the matrix is singular to working
// precision. A properly damped Hessian stays far above it: every pivot is at least
// λ >= damp · mean(diag) >= damp · max(diag) / K.
constexpr double kPivotTolerance = 1e-10;
// Rows processed together: 16 rows of 1536 floats (96 KiB) stay in L2 during the block update.
constexpr int64_t kRowTile = 16;
// XᵀX is summed in fp32 over chunks of this many tokens (a chunk of X stays in L2 while every
// tile reads it; 128-term fp32 sums lose ~1e-6 relative) and the chunks are added in double.
constexpr int64_t kTokenChunk = 128;
// Register tile of the XᵀX product: 4 x 16 fp32 accumulators are eight AVX2 registers.
constexpr int64_t kGramRows = 4;
constexpr int64_t kGramCols = 16;

// Maps 0..n-1 so that any contiguous half of the indices gets a balanced mix of small and large
// items: triangular loops give item i work proportional to i (or n - i), and the pool splits
// [0, n) into contiguous chunks.
int64_t interleave(int64_t idx, int64_t n) { return (idx % 2 == 0) ? idx / 2 : n - 1 - idx / 2; }

// tile[a][c] = Σ_t x[t][i0 + a] · x[t][j0 + c] over tc rows of x (row stride k). Separate local
// accumulators per row so the compiler keeps all of them in vector registers across the token
// loop (each row's 16 floats are two AVX2 registers; per token, 4 broadcasts and 8 FMAs).
void gram_tile(const float* x, int64_t tc, int64_t k, int64_t i0, int64_t j0,
               float tile[kGramRows][kGramCols]) {
  static_assert(kGramRows == 4);
  float a0[kGramCols] = {}, a1[kGramCols] = {}, a2[kGramCols] = {}, a3[kGramCols] = {};
  for (int64_t t = 0; t < tc; ++t) {
    const float* xr = x + t * k;
    const float* xj = xr + j0;
    const float x0 = xr[i0], x1 = xr[i0 + 1], x2 = xr[i0 + 2], x3 = xr[i0 + 3];
    for (int64_t c = 0; c < kGramCols; ++c) {
      a0[c] += x0 * xj[c];
      a1[c] += x1 * xj[c];
      a2[c] += x2 * xj[c];
      a3[c] += x3 * xj[c];
    }
  }
  for (int64_t c = 0; c < kGramCols; ++c) {
    tile[0][c] = a0[c];
    tile[1][c] = a1[c];
    tile[2][c] = a2[c];
    tile[3][c] = a3[c];
  }
}

}  // namespace

GptqHessian::GptqHessian(int64_t k) : k_(k), h_(static_cast<size_t>(k * k), 0.0) {}

Status GptqHessian::add_batch(std::span<const float> x, int64_t tokens, ThreadPool* pool) {
  if (tokens < 0 || static_cast<int64_t>(x.size()) != tokens * k_) {
    return make_error(ErrorCode::kInvalidArgument,
                      "gptq hessian: batch has " + std::to_string(x.size()) +
                          " values, expected tokens (" + std::to_string(tokens) + ") x K (" +
                          std::to_string(k_) + ")");
  }
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) {
      return make_error(ErrorCode::kInvalidArgument,
                        "gptq hessian: input[" + std::to_string(static_cast<int64_t>(i) / k_) +
                            "][" + std::to_string(static_cast<int64_t>(i) % k_) +
                            "] is not finite");
    }
  }
  if (tokens == 0) return Status::Ok();
  const int64_t K = k_;
  // XᵀX of this batch, upper triangle, accumulated in double across token chunks.
  std::vector<double> acc(static_cast<size_t>(K * K), 0.0);
  for (int64_t t0 = 0; t0 < tokens; t0 += kTokenChunk) {
    const int64_t tc = std::min(kTokenChunk, tokens - t0);
    const float* xc = x.data() + t0 * K;
    const int64_t iblocks = (K + kGramRows - 1) / kGramRows;
    parallel_for(pool, iblocks, 4, [&](int64_t b, int64_t e) {
      for (int64_t idx = b; idx < e; ++idx) {
        const int64_t i0 = interleave(idx, iblocks) * kGramRows;
        const int64_t ni = std::min(kGramRows, K - i0);
        for (int64_t j0 = i0 / kGramCols * kGramCols; j0 < K; j0 += kGramCols) {
          const int64_t nj = std::min(kGramCols, K - j0);
          float tile[kGramRows][kGramCols] = {};
          if (ni == kGramRows && nj == kGramCols) {
            gram_tile(xc, tc, K, i0, j0, tile);
          } else {
            for (int64_t t = 0; t < tc; ++t) {
              const float* xr = xc + t * K;
              for (int64_t a = 0; a < ni; ++a) {
                for (int64_t c = 0; c < nj; ++c) tile[a][c] += xr[i0 + a] * xr[j0 + c];
              }
            }
          }
          for (int64_t a = 0; a < ni; ++a) {
            double* out = acc.data() + (i0 + a) * K;
            for (int64_t c = std::max<int64_t>(0, i0 + a - j0); c < nj; ++c)
              out[j0 + c] += tile[a][c];
          }
        }
      }
    });
  }
  // Running mean as in AutoGPTQ: H ← H · n/(n+t) + 2/(n+t) · XᵀX.
  const double n_old = static_cast<double>(samples_);
  samples_ += tokens;
  const double n_new = static_cast<double>(samples_);
  const double keep = n_old / n_new, add = 2.0 / n_new;
  for (int64_t i = 0; i < K; ++i) {
    for (int64_t j = i; j < K; ++j) {
      const double v = h_[i * K + j] * keep + add * acc[i * K + j];
      h_[i * K + j] = v;
      h_[j * K + i] = v;
    }
  }
  return Status::Ok();
}

Result<std::vector<double>> gptq_inverse_cholesky(std::span<const double> h, int64_t k,
                                                  ThreadPool* pool) {
  if (k <= 0 || static_cast<int64_t>(h.size()) != k * k) {
    return make_error(ErrorCode::kInvalidArgument, "gptq: Hessian size does not match K");
  }
  const int64_t K = k;
  // L: lower Cholesky factor of the index-reversed matrix, row-major. Left-looking by column so
  // every entry is one contiguous dot product of two row prefixes, and a column's entries are
  // independent of each other (parallel over rows).
  std::vector<double> L(static_cast<size_t>(K * K), 0.0);
  auto m = [&](int64_t a, int64_t b) { return h[(K - 1 - a) * K + (K - 1 - b)]; };
  for (int64_t j = 0; j < K; ++j) {
    const double* lj = L.data() + j * K;
    const double djj = m(j, j);
    const double pivot = djj - dot(lj, lj, j);
    if (!(djj > 0.0) || !(pivot > kPivotTolerance * djj) || !std::isfinite(pivot)) {
      return make_error(ErrorCode::kInvalidArgument,
                        "gptq: Hessian is not positive definite (pivot " + std::to_string(pivot) +
                            " at column " + std::to_string(K - 1 - j) + ")");
    }
    const double ljj = std::sqrt(pivot);
    L[j * K + j] = ljj;
    parallel_for(pool, K - j - 1, 64, [&](int64_t b, int64_t e) {
      for (int64_t i = j + 1 + b; i < j + 1 + e; ++i) {
        L[i * K + j] = (m(i, j) - dot(L.data() + i * K, lj, j)) / ljj;
      }
    });
  }
  // Z = L⁻¹ column by column (columns are independent); zt row c holds column c of Z.
  std::vector<double> zt(static_cast<size_t>(K * K), 0.0);
  parallel_for(pool, K, 4, [&](int64_t b, int64_t e) {
    for (int64_t idx = b; idx < e; ++idx) {
      const int64_t c = interleave(idx, K);
      double* z = zt.data() + c * K;
      z[c] = 1.0 / L[c * K + c];
      for (int64_t i = c + 1; i < K; ++i) {
        z[i] = -dot(L.data() + i * K + c, z + c, i - c) / L[i * K + i];
      }
    }
  });
  // U = P Z P: U[a][b] = Z[K-1-a][K-1-b] = zt[K-1-b][K-1-a], upper triangular.
  std::vector<double> u(static_cast<size_t>(K * K), 0.0);
  for (int64_t a = 0; a < K; ++a) {
    for (int64_t b = a; b < K; ++b) u[a * K + b] = zt[(K - 1 - b) * K + (K - 1 - a)];
  }
  return u;
}

Result<GptqResult> quantize_gptq(std::span<const float> w, int64_t n, int64_t k,
                                 const GptqHessian& hessian, const GptqParams& params,
                                 ThreadPool* pool) {
  QGATE_TRY_STATUS(check_weights("quantize_gptq", w, n, k, params));
  if (hessian.k() != k) {
    return make_error(ErrorCode::kInvalidArgument,
                      "quantize_gptq: Hessian is for K = " + std::to_string(hessian.k()) +
                          ", weight has K = " + std::to_string(k));
  }
  if (hessian.samples() == 0) {
    return make_error(ErrorCode::kInvalidArgument,
                      "quantize_gptq: the Hessian has no calibration samples");
  }
  if (params.block_size <= 0 || !(params.damp >= 0.0) || params.max_damp_retries < 0) {
    return make_error(ErrorCode::kInvalidArgument,
                      "quantize_gptq: block_size must be > 0, damp >= 0, max_damp_retries >= 0");
  }
  const int64_t K = k, N = n;
  const int maxq = (1 << params.bits) - 1;
  GptqResult result;
  result.layer = make_layer(N, K, params);
  QuantizedLinear& layer = result.layer;
  const int64_t gw = layer.group_size;

  std::vector<double> H(hessian.h().begin(), hessian.h().end());
  std::vector<float> W(w.begin(), w.end());
  // Inputs that were always zero carry no information: quantize their weights to exact zero.
  for (int64_t i = 0; i < K; ++i) {
    if (H[i * K + i] == 0.0) {
      H[i * K + i] = 1.0;
      for (int64_t r = 0; r < N; ++r) W[r * K + i] = 0.0f;
    }
  }
  // static_groups: every group's parameters from the unmodified W, in original column order.
  const bool static_groups = params.static_groups && gw < K;
  if (static_groups) {
    for (int64_t r = 0; r < N; ++r) {
      for (int64_t g = 0; g < layer.num_groups(); ++g) {
        const int64_t c0 = g * gw, len = std::min(gw, K - c0);
        auto p = find_group_params(std::span<const float>(W.data() + r * K + c0, len), params.bits,
                                   params.sym);
        if (!p.ok()) {
          return make_error(p.error().code(), "quantize_gptq: row " + std::to_string(r) +
                                                  ", group " + std::to_string(g) + ": " +
                                                  p.error().message());
        }
        layer.scales[g * N + r] = p->scale;
        layer.zeros[g * N + r] = p->zero;
      }
    }
  }
  std::vector<int64_t> perm(static_cast<size_t>(K));
  std::iota(perm.begin(), perm.end(), 0);
  if (params.desc_act) {
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int64_t a, int64_t b) { return H[a * K + a] > H[b * K + b]; });
  }
  // Damped, permuted H; retried with more damping while it is not positive definite.
  double mean_diag = 0.0;
  for (int64_t i = 0; i < K; ++i) mean_diag += H[i * K + i];
  mean_diag /= static_cast<double>(K);
  std::vector<double> Hp(static_cast<size_t>(K * K));
  double damp = params.damp;
  std::vector<double> U;
  for (int attempt = 0;; ++attempt) {
    const double lambda = damp * mean_diag;
    for (int64_t a = 0; a < K; ++a) {
      for (int64_t b = 0; b < K; ++b) Hp[a * K + b] = H[perm[a] * K + perm[b]];
      Hp[a * K + a] += lambda;
    }
    auto u = gptq_inverse_cholesky(Hp, K, pool);
    if (u.ok()) {
      U = std::move(u).value();
      result.damp_used = damp;
      result.damp_retries = attempt;
      break;
    }
    if (attempt >= params.max_damp_retries) {
      return make_error(ErrorCode::kInvalidArgument, "quantize_gptq: " + u.error().message() +
                                                         " with damp " + std::to_string(damp) +
                                                         " after " + std::to_string(attempt) +
                                                         " retries");
    }
    damp = damp > 0.0 ? damp * 10.0 : 0.01;
  }
  std::vector<double>().swap(Hp);
  std::vector<float> Uf(U.begin(), U.end());
  std::vector<double>().swap(U);

  const int64_t B = params.block_size;
  const int64_t tiles = (N + kRowTile - 1) / kRowTile;
  std::vector<double> tile_loss(static_cast<size_t>(tiles), 0.0);
  std::mutex error_mu;
  std::optional<Error> first_error;
  parallel_for(pool, tiles, 1, [&](int64_t tb, int64_t te) {
    std::vector<float> wt(static_cast<size_t>(kRowTile * K));  // tile of W in permuted order
    std::vector<float> err(static_cast<size_t>(kRowTile * B));
    std::vector<GroupQuant> cur(static_cast<size_t>(kRowTile));
    for (int64_t tile = tb; tile < te; ++tile) {
      const int64_t r0 = tile * kRowTile, rows = std::min(kRowTile, N - r0);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t p = 0; p < K; ++p) wt[r * K + p] = W[(r0 + r) * K + perm[p]];
      }
      double loss = 0.0;
      for (int64_t i1 = 0; i1 < K; i1 += B) {
        const int64_t i2 = std::min(i1 + B, K);
        for (int64_t i = i1; i < i2; ++i) {
          if (!static_groups && i % gw == 0) {
            // Entering a group (in quantization order): its parameters from the updated row.
            const int64_t g = i / gw, len = std::min(gw, K - i);
            for (int64_t r = 0; r < rows; ++r) {
              auto p = find_group_params(std::span<const float>(wt.data() + r * K + i, len),
                                         params.bits, params.sym);
              if (!p.ok()) {
                std::lock_guard<std::mutex> lock(error_mu);
                if (!first_error) {
                  first_error =
                      make_error(p.error().code(), "quantize_gptq: row " + std::to_string(r0 + r) +
                                                       ", group " + std::to_string(g) + ": " +
                                                       p.error().message());
                }
                return;
              }
              cur[r] = *p;
              layer.scales[g * N + r0 + r] = p->scale;
              layer.zeros[g * N + r0 + r] = p->zero;
            }
          } else if (static_groups) {
            const int64_t g = perm[i] / gw;
            for (int64_t r = 0; r < rows; ++r) {
              cur[r] = GroupQuant{layer.scales[g * N + r0 + r], layer.zeros[g * N + r0 + r]};
            }
          }
          const float* ui = Uf.data() + i * K;
          const float d = ui[i];
          for (int64_t r = 0; r < rows; ++r) {
            float* row = wt.data() + r * K;
            const float wv = row[i];
            const uint8_t q = quantize_value(wv, cur[r], maxq);
            layer.q[(r0 + r) * K + perm[i]] = q;
            const float diff = wv - dequantize_value(q, cur[r]);
            const float e = diff / d;
            loss += static_cast<double>(e) * e / 2.0;
            err[r * B + (i - i1)] = e;
            for (int64_t j = i + 1; j < i2; ++j) row[j] -= e * ui[j];
          }
        }
        // Lazy update of the rest of the rows with this block's errors.
        if (i2 < K) {
          for (int64_t j = i1; j < i2; ++j) {
            const float* uj = Uf.data() + j * K;
            for (int64_t r = 0; r < rows; ++r) {
              const float e = err[r * B + (j - i1)];
              float* row = wt.data() + r * K;
              for (int64_t c = i2; c < K; ++c) row[c] -= e * uj[c];
            }
          }
        }
      }
      tile_loss[tile] = loss;
    }
  });
  if (first_error) return *first_error;
  for (double l : tile_loss) result.loss += l;
  // The group of an original column: its position in quantization order / group size, except
  // with static groups, which were formed over the original order (AutoGPTQ's convention).
  for (int64_t p = 0; p < K; ++p) {
    layer.g_idx[perm[p]] = static_cast<int32_t>((static_groups ? perm[p] : p) / gw);
  }
  return result;
}

}  // namespace qgate
