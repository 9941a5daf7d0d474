// Quantizers (RTN, GPTQ, AWQ) on synthetic fp32 matrices with fixed seeds. The GPTQ and AWQ tests
// measure what the algorithms exist for — the layer output error ‖X Wᵀ − X Ŵᵀ‖ on calibration-like
// inputs — against plain RTN of the same group layout.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>
#include <vector>

#include "engine/quant_formats.h"
#include "engine/quantize_math.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {
namespace {

std::vector<float> normal_matrix(int64_t rows, int64_t cols, float stddev, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> m(static_cast<size_t>(rows * cols));
  for (float& v : m) v = dist(rng);
  return m;
}

// X = Z A + noise: Z [T][r] normal, A [r][K] normal / sqrt(r), so the K inputs are strongly
// correlated (rank r plus a little noise), and a few channels are 8x larger.
std::vector<float> correlated_inputs(int64_t tokens, int64_t k, int64_t rank, uint32_t seed) {
  const auto z = normal_matrix(tokens, rank, 1.0f, seed);
  const auto a = normal_matrix(rank, k, 1.0f / std::sqrt(static_cast<float>(rank)), seed + 1);
  auto x = normal_matrix(tokens, k, 0.05f, seed + 2);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < rank; ++r) {
      const float zv = z[t * rank + r];
      for (int64_t c = 0; c < k; ++c) x[t * k + c] += zv * a[r * k + c];
    }
  }
  for (int64_t c : {3, 40, 101}) {
    if (c >= k) continue;
    for (int64_t t = 0; t < tokens; ++t) x[t * k + c] *= 8.0f;
  }
  return x;
}

// ‖X (A − B)ᵀ‖²_F for A, B [N][K], in double.
double output_error(const std::vector<float>& x, int64_t tokens, int64_t k,
                    const std::vector<float>& a, const std::vector<float>& b, int64_t n) {
  std::vector<double> e(static_cast<size_t>(n * k));
  for (size_t i = 0; i < e.size(); ++i) e[i] = static_cast<double>(a[i]) - b[i];
  double total = 0.0;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xt = x.data() + t * k;
    for (int64_t r = 0; r < n; ++r) {
      double s = 0.0;
      for (int64_t c = 0; c < k; ++c) s += xt[c] * e[r * k + c];
      total += s * s;
    }
  }
  return total;
}

bool fp16_exact(float v) { return fp16_to_fp32(fp32_to_fp16(v)) == v; }

// The smallest fp16 value >= v (v > 0), the scale rounding the quantizers use.
float fp16_ceil(float v) {
  const uint16_t h = fp32_to_fp16(v);
  return fp16_to_fp32(h) < v ? fp16_to_fp32(static_cast<uint16_t>(h + 1)) : fp16_to_fp32(h);
}

GptqHessian hessian_of(const std::vector<float>& x, int64_t tokens, int64_t k) {
  GptqHessian h(k);
  EXPECT_TRUE(h.add_batch(x, tokens).ok());
  return h;
}

// --- RTN ------------------------------------------------------------------------------------

TEST(QuantizeRtn, RoundTripWithinHalfScaleAndPartialLastGroup) {
  const int64_t n = 64, k = 320;  // 320 = 2 * 128 + 64: the last group is partial
  const auto w = normal_matrix(n, k, 0.05f, 1);
  for (int bits : {4, 8}) {
    for (bool sym : {false, true}) {
      QuantParams p{bits, 128, sym};
      auto q = quantize_rtn(w, n, k, p);
      ASSERT_TRUE(q.ok()) << q.error().to_string();
      ASSERT_TRUE(q->validate().ok()) << q->validate().error().to_string();
      EXPECT_EQ(q->group_size, 128);
      EXPECT_EQ(q->num_groups(), 3);
      EXPECT_TRUE(q->has_trivial_g_idx());
      for (float s : q->scales) EXPECT_TRUE(fp16_exact(s)) << s;
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t c = 0; c < k; ++c) {
          const float scale = q->scales[(c / 128) * n + r];
          // Half a step; float rounding of w / scale allows a hair more.
          ASSERT_LE(std::fabs(w[r * k + c] - q->dequant(r, c)), 0.5f * scale * (1 + 1e-5f))
              << "bits " << bits << " sym " << sym << " at " << r << "," << c;
        }
      }
    }
  }
}

TEST(QuantizeRtn, SymAndAsymConventions) {
  // One row, one group: values in [-0.3, 0.9].
  const std::vector<float> w = {-0.3f, 0.9f, 0.1f, 0.0f, 0.45f, -0.2f, 0.7f, 0.05f};
  auto sym = quantize_rtn(w, 1, 8, QuantParams{4, -1, true});
  ASSERT_TRUE(sym.ok());
  EXPECT_EQ(sym->zeros[0], 8);
  EXPECT_EQ(sym->scales[0], fp16_ceil(2.0f * 0.9f / 15.0f));
  auto sym8 = quantize_rtn(w, 1, 8, QuantParams{8, -1, true});
  ASSERT_TRUE(sym8.ok());
  EXPECT_EQ(sym8->zeros[0], 128);

  auto asym = quantize_rtn(w, 1, 8, QuantParams{4, -1, false});
  ASSERT_TRUE(asym.ok());
  const float scale = fp16_ceil(1.2f / 15.0f);
  EXPECT_EQ(asym->scales[0], scale);
  EXPECT_EQ(asym->zeros[0], static_cast<uint8_t>(std::nearbyint(0.3f / scale)));
  EXPECT_EQ(asym->dequant(0, 3), 0.0f);  // zero is exactly representable

  // All-positive group: the range still includes 0, so zero = 0. All-zero group: [-1, 1].
  const std::vector<float> pos = {0.1f, 0.2f, 0.3f, 0.4f, 0.0f, 0.0f, 0.0f, 0.0f};
  auto qp = quantize_rtn(pos, 2, 4, QuantParams{4, -1, false});
  ASSERT_TRUE(qp.ok());
  EXPECT_EQ(qp->zeros[0], 0);
  EXPECT_EQ(qp->scales[1], fp16_ceil(2.0f / 15.0f));
  // round(1 / scale): 7, because the fp16 scale is a hair above 2/15.
  EXPECT_EQ(qp->zeros[1], static_cast<uint8_t>(std::nearbyint(1.0f / qp->scales[1])));
  for (int64_t c = 0; c < 4; ++c) EXPECT_EQ(qp->dequant(1, c), 0.0f);
}

TEST(QuantizeRtn, PerChannel) {
  const int64_t n = 32, k = 192;
  const auto w = normal_matrix(n, k, 0.1f, 2);
  for (int64_t gs : {int64_t{-1}, k, k + 100}) {
    auto q = quantize_rtn(w, n, k, QuantParams{4, gs, false});
    ASSERT_TRUE(q.ok());
    EXPECT_EQ(q->group_size, k);
    EXPECT_EQ(q->num_groups(), 1);
    for (int32_t g : q->g_idx) EXPECT_EQ(g, 0);
    for (int64_t r = 0; r < n; ++r) {
      float lo = 0, hi = 0;
      for (int64_t c = 0; c < k; ++c) {
        lo = std::min(lo, w[r * k + c]);
        hi = std::max(hi, w[r * k + c]);
      }
      EXPECT_EQ(q->scales[r], fp16_ceil((hi - lo) / 15.0f));
    }
  }
}

TEST(QuantizeRtn, ClippedMatchesRtnAtFullRangeAndClampsBelowIt) {
  const int64_t n = 16, k = 256;
  const auto w = normal_matrix(n, k, 0.05f, 3);
  const QuantParams p{4, 128, false};
  std::vector<float> full(n * 2), half(n * 2);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t g = 0; g < 2; ++g) {
      float m = 0;
      for (int64_t c = 0; c < 128; ++c) m = std::max(m, std::fabs(w[r * k + g * 128 + c]));
      full[r * 2 + g] = m;
      half[r * 2 + g] = m / 2;
    }
  }
  auto rtn = quantize_rtn(w, n, k, p);
  auto same = quantize_rtn_clipped(w, n, k, full, p);
  ASSERT_TRUE(rtn.ok() && same.ok());
  EXPECT_EQ(rtn->q, same->q);
  EXPECT_EQ(rtn->scales, same->scales);
  EXPECT_EQ(rtn->zeros, same->zeros);
  auto clipped = quantize_rtn_clipped(w, n, k, half, p);
  ASSERT_TRUE(clipped.ok());
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      const float lim = half[r * 2 + c / 128];
      const float scale = clipped->scales[(c / 128) * n + r];
      ASSERT_LE(std::fabs(clipped->dequant(r, c)), lim + 0.5f * scale * (1 + 1e-5f));
    }
  }
  EXPECT_FALSE(quantize_rtn_clipped(w, n, k, std::vector<float>(3, 1.0f), p).ok());
}

TEST(QuantizeRtn, RejectsBadArguments) {
  const auto w = normal_matrix(4, 64, 1.0f, 4);
  EXPECT_FALSE(quantize_rtn(w, 4, 64, QuantParams{3, 32, false}).ok());
  EXPECT_FALSE(quantize_rtn(w, 4, 64, QuantParams{4, 0, false}).ok());
  EXPECT_FALSE(quantize_rtn(w, 4, 64, QuantParams{4, -2, false}).ok());
  EXPECT_FALSE(quantize_rtn(w, 4, 63, QuantParams{}).ok());
  auto nan = w;
  nan[70] = NAN;
  auto r = quantize_rtn(nan, 4, 64, QuantParams{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("weight[1][6]"), std::string::npos) << r.error().message();
  auto huge = w;
  huge[5] = 1e9f;  // the scale would overflow fp16
  auto h = quantize_rtn(huge, 4, 64, QuantParams{});
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.error().code(), ErrorCode::kOutOfRange);
}

TEST(QuantizeRtn, PacksAsGptqAndAwq) {
  const int64_t n = 64, k = 256;
  const auto w = normal_matrix(n, k, 0.05f, 5);
  auto q = quantize_rtn(w, n, k, QuantParams{4, 128, false});
  ASSERT_TRUE(q.ok());
  auto g = pack_gptq(*q, GptqCheckpointFormat::kGptqV2);
  ASSERT_TRUE(g.ok()) << g.error().to_string();
  auto back = unpack_gptq(g->views(), 4, 128, GptqCheckpointFormat::kGptqV2);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->q, q->q);
  EXPECT_EQ(back->scales, q->scales);
  EXPECT_TRUE(pack_awq(*q).ok());
}

// --- GPTQ -----------------------------------------------------------------------------------

TEST(Gptq, InverseCholeskyFactorsTheInverse) {
  const int64_t k = 97;
  const auto a = normal_matrix(k, k, 1.0f, 6);
  std::vector<double> h(k * k);
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      double s = i == j ? 1.0 : 0.0;
      for (int64_t t = 0; t < k; ++t) s += static_cast<double>(a[i * k + t]) * a[j * k + t];
      h[i * k + j] = s;
    }
  }
  ThreadPool pool(2);
  auto u = gptq_inverse_cholesky(h, k, &pool);
  ASSERT_TRUE(u.ok());
  double worst = 0.0;
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < i; ++j) ASSERT_EQ((*u)[i * k + j], 0.0);
    EXPECT_GT((*u)[i * k + i], 0.0);
  }
  // (Uᵀ U) H = I.
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      double s = 0.0;
      for (int64_t m = 0; m < k; ++m) {
        double utu = 0.0;
        for (int64_t t = 0; t <= std::min(i, m); ++t) utu += (*u)[t * k + i] * (*u)[t * k + m];
        s += utu * h[m * k + j];
      }
      worst = std::max(worst, std::fabs(s - (i == j ? 1.0 : 0.0)));
    }
  }
  EXPECT_LT(worst, 1e-8);
  // Singular input is reported, not factored.
  std::vector<double> singular(k * k, 1.0);
  EXPECT_FALSE(gptq_inverse_cholesky(singular, k).ok());
}

TEST(Gptq, HessianIsRunningMeanOfTwoXtX) {
  const int64_t k = 8;
  const auto x = normal_matrix(10, k, 1.0f, 7);
  GptqHessian once(k), split(k);
  ASSERT_TRUE(once.add_batch(x, 10).ok());
  ASSERT_TRUE(split.add_batch(std::span<const float>(x).first(4 * k), 4).ok());
  ASSERT_TRUE(split.add_batch(std::span<const float>(x).subspan(4 * k), 6).ok());
  EXPECT_EQ(split.samples(), 10);
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      double s = 0.0;
      for (int64_t t = 0; t < 10; ++t) s += static_cast<double>(x[t * k + i]) * x[t * k + j];
      // Products are summed in fp32 within a chunk of tokens.
      const double want = 2.0 * s / 10.0, tol = 1e-6 * (1.0 + std::fabs(want));
      ASSERT_NEAR(once.h()[i * k + j], want, tol) << i << "," << j;
      ASSERT_NEAR(split.h()[i * k + j], want, tol) << i << "," << j;
      ASSERT_EQ(once.h()[i * k + j], once.h()[j * k + i]);
    }
  }
  EXPECT_FALSE(once.add_batch(x, 9).ok());
}

TEST(Gptq, IdentityHessianEqualsRtn) {
  const int64_t n = 64, k = 192;
  const auto w = normal_matrix(n, k, 0.05f, 8);
  // X = I: H = 2/K · I, so Hinv is diagonal and no error is propagated.
  std::vector<float> x(k * k, 0.0f);
  for (int64_t i = 0; i < k; ++i) x[i * k + i] = 1.0f;
  const auto h = hessian_of(x, k, k);
  for (bool sym : {false, true}) {
    GptqParams p;
    p.group_size = 64;
    p.sym = sym;
    auto g = quantize_gptq(w, n, k, h, p);
    auto r = quantize_rtn(w, n, k, p);
    ASSERT_TRUE(g.ok() && r.ok()) << (g.ok() ? "" : g.error().to_string());
    EXPECT_EQ(g->layer.q, r->q);
    EXPECT_EQ(g->layer.scales, r->scales);
    EXPECT_EQ(g->layer.zeros, r->zeros);
    EXPECT_EQ(g->damp_retries, 0);
  }
}

struct GptqCase {
  int64_t n, k, group_size;
  bool desc_act, static_groups;
};

class GptqVsRtn : public ::testing::TestWithParam<GptqCase> {};

TEST_P(GptqVsRtn, LowerOutputErrorOnCorrelatedInputs) {
  const GptqCase c = GetParam();
  const int64_t tokens = 1024;
  const auto w = normal_matrix(c.n, c.k, 0.05f, 9);
  const auto x = correlated_inputs(tokens, c.k, c.k / 4, 10);
  ThreadPool pool(2);
  GptqHessian h(c.k);
  ASSERT_TRUE(h.add_batch(x, tokens, &pool).ok());
  GptqParams p;
  p.group_size = c.group_size;
  p.desc_act = c.desc_act;
  p.static_groups = c.static_groups;
  auto g = quantize_gptq(w, c.n, c.k, h, p, &pool);
  ASSERT_TRUE(g.ok()) << g.error().to_string();
  ASSERT_TRUE(g->layer.validate().ok()) << g->layer.validate().error().to_string();
  for (float s : g->layer.scales) ASSERT_TRUE(fp16_exact(s));
  auto r = quantize_rtn(w, c.n, c.k, p);
  ASSERT_TRUE(r.ok());
  const double eg = output_error(x, tokens, c.k, w, dequantize_linear(g->layer), c.n);
  const double er = output_error(x, tokens, c.k, w, dequantize_linear(r.value()), c.n);
  const double ratio = std::sqrt(eg / er);
  std::printf("GPTQ/RTN output error (Frobenius) n=%lld k=%lld g=%lld act=%d static=%d: %.3f\n",
              static_cast<long long>(c.n), static_cast<long long>(c.k),
              static_cast<long long>(c.group_size), c.desc_act, c.static_groups, ratio);
  EXPECT_LT(ratio, 0.8);

  // The same layer without threads: identical bits.
  auto serial = quantize_gptq(w, c.n, c.k, h, p);
  ASSERT_TRUE(serial.ok());
  EXPECT_EQ(serial->layer.q, g->layer.q);
  EXPECT_EQ(serial->layer.scales, g->layer.scales);

  const int64_t gw = g->layer.group_size;
  if (c.desc_act && !c.static_groups) {
    // A valid, non-monotonic mapping: every group but the last holds exactly gw columns.
    EXPECT_FALSE(g->layer.has_trivial_g_idx());
    std::vector<int64_t> count(g->layer.num_groups(), 0);
    for (int32_t gi : g->layer.g_idx) ++count[gi];
    for (int64_t gi = 0; gi < g->layer.num_groups(); ++gi) {
      EXPECT_EQ(count[gi], std::min(gw, c.k - gi * gw)) << "group " << gi;
    }
  } else {
    EXPECT_TRUE(g->layer.has_trivial_g_idx());
  }
  // Through the checkpoint format and back, g_idx included.
  auto packed = pack_gptq(g->layer, GptqCheckpointFormat::kGptqV2);
  ASSERT_TRUE(packed.ok()) << packed.error().to_string();
  auto back = unpack_gptq(packed->views(), 4, c.group_size, GptqCheckpointFormat::kGptqV2);
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  EXPECT_EQ(dequantize_linear(back.value()), dequantize_linear(g->layer));
}

INSTANTIATE_TEST_SUITE_P(Shapes, GptqVsRtn,
                         ::testing::Values(GptqCase{128, 256, 128, false, false},
                                           GptqCase{96, 320, 128, false, false},  // partial group
                                           GptqCase{128, 256, 64, true, false},
                                           GptqCase{64, 320, 128, true, false},
                                           GptqCase{128, 256, 64, true, true},
                                           GptqCase{64, 192, -1, false, false},
                                           GptqCase{64, 192, 32, false, false}));

TEST(Gptq, NoWorseThanRtnOnUncorrelatedInputs) {
  // i.i.d. inputs: H is nearly diagonal and there is little for GPTQ to exploit.
  const int64_t n = 128, k = 256, tokens = 2048;
  const auto w = normal_matrix(n, k, 0.05f, 31);
  const auto x = normal_matrix(tokens, k, 1.0f, 32);
  const auto h = hessian_of(x, tokens, k);
  GptqParams p;
  auto g = quantize_gptq(w, n, k, h, p);
  auto r = quantize_rtn(w, n, k, p);
  ASSERT_TRUE(g.ok() && r.ok());
  const double ratio = std::sqrt(output_error(x, tokens, k, w, dequantize_linear(g->layer), n) /
                                 output_error(x, tokens, k, w, dequantize_linear(*r), n));
  std::printf("GPTQ/RTN output error on i.i.d. inputs: %.3f\n", ratio);
  EXPECT_LT(ratio, 1.0);
}

TEST(Gptq, DeadColumnsQuantizeToZero) {
  const int64_t n = 32, k = 128, tokens = 512;
  const auto w = normal_matrix(n, k, 0.05f, 11);
  auto x = correlated_inputs(tokens, k, 32, 12);
  for (int64_t t = 0; t < tokens; ++t) x[t * k + 7] = x[t * k + 77] = 0.0f;
  const auto h = hessian_of(x, tokens, k);
  for (bool act : {false, true}) {
    GptqParams p;
    p.group_size = 32;
    p.desc_act = act;
    auto g = quantize_gptq(w, n, k, h, p);
    ASSERT_TRUE(g.ok()) << g.error().to_string();
    for (int64_t r = 0; r < n; ++r) {
      EXPECT_EQ(g->layer.dequant(r, 7), 0.0f);
      EXPECT_EQ(g->layer.dequant(r, 77), 0.0f);
    }
  }
}

TEST(Gptq, DampingRetryOnSingularHessian) {
  const int64_t n = 32, k = 64, tokens = 256;
  const auto w = normal_matrix(n, k, 0.05f, 13);
  auto x = correlated_inputs(tokens, k, 16, 14);                     // rank 16 + noise
  for (int64_t t = 0; t < tokens; ++t) x[t * k + 6] = x[t * k + 5];  // exactly singular
  const auto h = hessian_of(x, tokens, k);
  GptqParams p;
  p.group_size = 32;
  p.damp = 0.0;
  auto g = quantize_gptq(w, n, k, h, p);
  ASSERT_TRUE(g.ok()) << g.error().to_string();
  EXPECT_EQ(g->damp_retries, 1);
  EXPECT_DOUBLE_EQ(g->damp_used, 0.01);
  p.max_damp_retries = 0;
  auto fail = quantize_gptq(w, n, k, h, p);
  ASSERT_FALSE(fail.ok());
  EXPECT_NE(fail.error().message().find("not positive definite"), std::string::npos)
      << fail.error().message();
}

TEST(Gptq, RejectsMismatchedHessian) {
  const auto w = normal_matrix(8, 64, 0.05f, 15);
  GptqHessian empty(64);
  EXPECT_FALSE(quantize_gptq(w, 8, 64, empty, GptqParams{}).ok());  // no samples
  const auto h = hessian_of(normal_matrix(16, 32, 1.0f, 16), 16, 32);
  EXPECT_FALSE(quantize_gptq(w, 8, 64, h, GptqParams{}).ok());
}

// --- AWQ ------------------------------------------------------------------------------------

// Inputs with a few salient channels (large mean |x|), the situation AWQ is designed for.
std::vector<float> salient_inputs(int64_t tokens, int64_t k, uint32_t seed) {
  auto x = normal_matrix(tokens, k, 1.0f, seed);
  for (int64_t c : {5, 17, 64, 150, 200}) {
    if (c >= k) continue;
    for (int64_t t = 0; t < tokens; ++t) x[t * k + c] = x[t * k + c] * 3.0f + 25.0f;
  }
  return x;
}

// Q(W·diag(s))·diag(s)⁻¹: the effective weight after the caller folds the scales.
std::vector<float> awq_effective(const std::vector<float>& w, int64_t n, int64_t k,
                                 const std::vector<float>& s, const QuantParams& p,
                                 const std::vector<float>* clip_search_x = nullptr,
                                 int64_t tokens = 0) {
  std::vector<float> ws(w.size());
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) ws[r * k + c] = w[r * k + c] * s[c];
  }
  Result<QuantizedLinear> q = quantize_rtn(ws, n, k, p);
  if (clip_search_x != nullptr) {
    std::vector<float> xs(clip_search_x->size());
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t c = 0; c < k; ++c) xs[t * k + c] = (*clip_search_x)[t * k + c] / s[c];
    }
    AwqParams ap;
    static_cast<QuantParams&>(ap) = p;
    auto clip = awq_search_clip(ws, n, k, xs, tokens, ap);
    EXPECT_TRUE(clip.ok());
    q = quantize_rtn_clipped(ws, n, k, *clip, p);
  }
  EXPECT_TRUE(q.ok());
  auto out = dequantize_linear(*q);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) out[r * k + c] /= s[c];
  }
  return out;
}

TEST(Awq, ScalesReduceOutputErrorOnSalientChannels) {
  const int64_t k = 256, tokens = 1024;
  const std::vector<int64_t> rows = {128, 64};
  const auto w0 = normal_matrix(rows[0], k, 0.05f, 20);
  const auto w1 = normal_matrix(rows[1], k, 0.05f, 21);
  const auto x = salient_inputs(tokens, k, 22);
  ThreadPool pool(2);
  for (bool duo : {false, true}) {
    AwqParams p;
    p.group_size = 128;
    p.duo_scaling = duo;
    const std::vector<std::span<const float>> ws = {w0, w1};
    auto res = awq_search_scales(ws, rows, k, x, tokens, p, &pool);
    ASSERT_TRUE(res.ok()) << res.error().to_string();
    ASSERT_EQ(res->losses.size(), 20u);
    EXPECT_EQ(res->loss, *std::min_element(res->losses.begin(), res->losses.end()));
    EXPECT_GT(res->alpha, 0.0);
    double e_awq = 0, e_rtn = 0;
    const std::vector<float> ones(k, 1.0f);
    for (size_t l = 0; l < 2; ++l) {
      const auto& w = l == 0 ? w0 : w1;
      e_awq += output_error(x, tokens, k, w, awq_effective(w, rows[l], k, res->scales, p), rows[l]);
      e_rtn += output_error(x, tokens, k, w, awq_effective(w, rows[l], k, ones, p), rows[l]);
    }
    // The search's own loss is the same quantity (mean over outputs), via the Gram matrix.
    EXPECT_NEAR(res->loss, e_awq / (tokens * 192.0), 1e-3 * res->loss);
    const double ratio = std::sqrt(e_awq / e_rtn);
    std::printf("AWQ/RTN output error (Frobenius), duo_scaling=%d: %.3f (alpha %.2f)\n", duo, ratio,
                res->alpha);
    EXPECT_LT(ratio, 0.8);
  }
}

// The scale search's loss is a GEMM over the pool; its results must not depend on the pool's size
// (a variant quantized on 2 cores is bit-identical to one quantized on 16). Awkward sizes: K not a
// multiple of any register tile, row counts that split unevenly.
TEST(Awq, ScaleSearchIsIndependentOfThePool) {
  const int64_t k = 200, tokens = 300;
  const std::vector<int64_t> rows = {37, 5};
  const auto w0 = normal_matrix(rows[0], k, 0.05f, 40);
  const auto w1 = normal_matrix(rows[1], k, 0.05f, 41);
  const auto x = salient_inputs(tokens, k, 42);
  const std::vector<std::span<const float>> ws = {w0, w1};
  AwqParams p;
  p.group_size = 40;
  p.n_grid = 8;
  auto serial = awq_search_scales(ws, rows, k, x, tokens, p);
  ASSERT_TRUE(serial.ok()) << serial.error().to_string();
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    auto res = awq_search_scales(ws, rows, k, x, tokens, p, &pool);
    ASSERT_TRUE(res.ok()) << res.error().to_string();
    EXPECT_EQ(res->losses, serial->losses) << threads << " threads";
    EXPECT_EQ(res->scales, serial->scales) << threads << " threads";
  }
}

TEST(Awq, AlphaZeroIsRtn) {
  const int64_t n = 64, k = 192, tokens = 256;
  const auto w = normal_matrix(n, k, 0.05f, 23);
  const auto x = salient_inputs(tokens, k, 24);
  AwqParams p;
  p.group_size = 64;
  p.n_grid = 1;  // the grid is {0}
  const std::vector<std::span<const float>> ws = {w};
  const std::vector<int64_t> rows = {n};
  auto res = awq_search_scales(ws, rows, k, x, tokens, p);
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->alpha, 0.0);
  for (float s : res->scales) ASSERT_EQ(s, 1.0f);
  auto rtn = quantize_rtn(w, n, k, p);
  ASSERT_TRUE(rtn.ok());
  const double e = output_error(x, tokens, k, w, dequantize_linear(*rtn), n) / (tokens * n);
  EXPECT_NEAR(res->loss, e, 1e-3 * e);
  // Full grid: alpha = 0 is its first point and reproduces the same loss.
  p.n_grid = 20;
  auto full = awq_search_scales(ws, rows, k, x, tokens, p);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->losses[0], res->loss);
}

TEST(Awq, ClippingNeverIncreasesMeasuredError) {
  const int64_t n = 96, k = 256, tokens = 1500;  // 1500 / 512 → every 2nd token
  auto w = normal_matrix(n, k, 0.05f, 25);
  // Heavy-tailed rows, where clipping helps.
  for (int64_t r = 0; r < n; ++r) w[r * k + (r * 37) % k] *= 6.0f;
  const auto x = salient_inputs(tokens, k, 26);
  AwqParams p;
  p.group_size = 64;
  ThreadPool pool(2);
  auto clip = awq_search_clip(w, n, k, x, tokens, p, &pool);
  ASSERT_TRUE(clip.ok()) << clip.error().to_string();
  ASSERT_EQ(clip->size(), static_cast<size_t>(n * 4));
  auto clipped = quantize_rtn_clipped(w, n, k, *clip, p);
  auto plain = quantize_rtn(w, n, k, p);
  ASSERT_TRUE(clipped.ok() && plain.ok());
  // The search's own measure: per (row, group) partial-output MSE on the token subsample.
  const auto wc = dequantize_linear(*clipped), wp = dequantize_linear(*plain);
  int shrunk = 0;
  double sum_c = 0, sum_p = 0;
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t g = 0; g < 4; ++g) {
      double ec = 0, ep = 0;
      for (int64_t t = 0; t < tokens; t += 2) {
        double dc = 0, dp = 0;
        for (int64_t c = g * 64; c < (g + 1) * 64; ++c) {
          dc += x[t * k + c] * (static_cast<double>(w[r * k + c]) - wc[r * k + c]);
          dp += x[t * k + c] * (static_cast<double>(w[r * k + c]) - wp[r * k + c]);
        }
        ec += dc * dc;
        ep += dp * dp;
      }
      EXPECT_LE(ec, ep * (1 + 1e-4) + 1e-12) << "row " << r << " group " << g;
      sum_c += ec;
      sum_p += ep;
      float m = 0;
      for (int64_t c = g * 64; c < (g + 1) * 64; ++c) m = std::max(m, std::fabs(w[r * k + c]));
      if ((*clip)[r * 4 + g] < m) ++shrunk;
    }
  }
  EXPECT_GT(shrunk, 0);  // the test exercises real clipping
  const double full_ratio =
      std::sqrt(output_error(x, tokens, k, w, wc, n) / output_error(x, tokens, k, w, wp, n));
  std::printf("AWQ clip: %d of %lld groups shrunk; per-group error ratio %.3f, output %.3f\n",
              shrunk, static_cast<long long>(n * 4), std::sqrt(sum_c / sum_p), full_ratio);
  EXPECT_LT(sum_c, sum_p);
}

TEST(Awq, ScalesThenClipBeatRtn) {
  const int64_t n = 128, k = 256, tokens = 1024;
  const auto w = normal_matrix(n, k, 0.05f, 27);
  const auto x = salient_inputs(tokens, k, 28);
  AwqParams p;
  p.group_size = 128;
  const std::vector<std::span<const float>> ws = {w};
  const std::vector<int64_t> rows = {n};
  auto res = awq_search_scales(ws, rows, k, x, tokens, p);
  ASSERT_TRUE(res.ok());
  const auto e_scaled = output_error(x, tokens, k, w, awq_effective(w, n, k, res->scales, p), n);
  const auto e_both =
      output_error(x, tokens, k, w, awq_effective(w, n, k, res->scales, p, &x, tokens), n);
  const auto e_rtn =
      output_error(x, tokens, k, w, awq_effective(w, n, k, std::vector<float>(k, 1.0f), p), n);
  std::printf("AWQ/RTN output error: scales %.3f, scales+clip %.3f\n", std::sqrt(e_scaled / e_rtn),
              std::sqrt(e_both / e_rtn));
  EXPECT_LT(e_both, 0.8 * 0.8 * e_rtn);
}

TEST(Awq, RejectsBadArguments) {
  const auto w = normal_matrix(8, 64, 0.05f, 29);
  const auto x = normal_matrix(16, 64, 1.0f, 30);
  const std::vector<std::span<const float>> ws = {w};
  const std::vector<int64_t> rows = {8}, bad_rows = {9};
  EXPECT_FALSE(awq_search_scales(ws, bad_rows, 64, x, 16, AwqParams{}).ok());
  EXPECT_FALSE(awq_search_scales(ws, rows, 64, x, 15, AwqParams{}).ok());
  EXPECT_FALSE(awq_search_clip(w, 8, 64, x, 0, AwqParams{}).ok());
  auto xn = x;
  xn[3] = INFINITY;
  EXPECT_FALSE(awq_search_scales(ws, rows, 64, xn, 16, AwqParams{}).ok());
  EXPECT_FALSE(awq_search_clip(w, 8, 64, xn, 16, AwqParams{}).ok());
}

}  // namespace
}  // namespace qgate
