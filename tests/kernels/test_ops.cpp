// Forward-pass ops against naive double-precision references, on lengths that exercise both the
// vector bodies and the scalar tails.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "kernels/cpu/half.h"
#include "kernels/cpu/ops.h"

namespace qgate {
namespace {

std::vector<float> normal_vector(int64_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = nd(rng);
  return v;
}

const int64_t kLengths[] = {1, 7, 8, 9, 31, 64, 576, 1536, 1537};

TEST(RmsNorm, MatchesReferenceAndMayAlias) {
  for (const int64_t n : kLengths) {
    const auto x = normal_vector(n, 1, 3.0f);
    const auto w = normal_vector(n, 2);
    double ss = 0.0;
    for (const float v : x) ss += static_cast<double>(v) * v;
    const double scale = 1.0 / std::sqrt(ss / n + 1e-5);
    std::vector<float> out(x.size());
    rms_norm(x.data(), w.data(), out.data(), n, 1e-5f);
    for (int64_t i = 0; i < n; ++i) {
      const double want = x[i] * scale * w[i];
      ASSERT_NEAR(out[i], want, 1e-5 * std::fabs(want) + 1e-7) << "n=" << n << " i=" << i;
    }
    auto inplace = x;
    rms_norm(inplace.data(), w.data(), inplace.data(), n, 1e-5f);
    EXPECT_EQ(inplace, out) << "n=" << n;
  }
}

// Naive RoPE in double for one head, straight from the definition.
std::vector<double> rope_ref(const std::vector<float>& x, int64_t head_dim, int64_t pos,
                             double theta, RopeStyle style) {
  std::vector<double> out(x.begin(), x.end());
  for (size_t h = 0; h < x.size() / head_dim; ++h) {
    for (int64_t i = 0; i < head_dim / 2; ++i) {
      const double angle = pos * std::pow(theta, -2.0 * i / head_dim);
      const int64_t a = style == RopeStyle::kAdjacentPairs ? 2 * i : i;
      const int64_t b = style == RopeStyle::kAdjacentPairs ? 2 * i + 1 : i + head_dim / 2;
      const double xa = x[h * head_dim + a], xb = x[h * head_dim + b];
      out[h * head_dim + a] = xa * std::cos(angle) - xb * std::sin(angle);
      out[h * head_dim + b] = xa * std::sin(angle) + xb * std::cos(angle);
    }
  }
  return out;
}

TEST(Rope, BothStylesMatchReference) {
  for (const RopeStyle style : {RopeStyle::kAdjacentPairs, RopeStyle::kHalves}) {
    for (const int64_t head_dim : {8, 64, 128}) {
      for (const int64_t pos : {0, 1, 17, 4095, 8191}) {
        const int64_t heads = 9;
        auto x = normal_vector(heads * head_dim, static_cast<uint32_t>(pos + head_dim));
        const auto want = rope_ref(x, head_dim, pos, 100000.0, style);
        rope(x.data(), heads, head_dim, pos, 100000.0f, style);
        for (size_t i = 0; i < x.size(); ++i) {
          ASSERT_NEAR(x[i], want[i], 2e-6 * (1.0 + std::fabs(want[i])))
              << "style=" << static_cast<int>(style) << " d=" << head_dim << " pos=" << pos << " i=" << i;
        }
      }
    }
  }
}

TEST(Rope, StylesAgreeUnderTheGgufRowPermutation) {
  // GGUF row 2i + p holds HF row p·d/2 + i, which is what turns rotate-half into adjacent pairs.
  const int64_t d = 64, heads = 3, pos = 321;
  const auto hf = normal_vector(heads * d, 7);
  std::vector<float> gguf(hf.size());
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < d / 2; ++i) {
      for (int64_t p = 0; p < 2; ++p) gguf[h * d + 2 * i + p] = hf[h * d + p * d / 2 + i];
    }
  }
  auto a = hf, b = gguf;
  rope(a.data(), heads, d, pos, 10000.0f, RopeStyle::kHalves);
  rope(b.data(), heads, d, pos, 10000.0f, RopeStyle::kAdjacentPairs);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < d / 2; ++i) {
      // Same angles; only FMA contraction may differ between the two loops.
      for (int64_t p = 0; p < 2; ++p) {
        EXPECT_NEAR(b[h * d + 2 * i + p], a[h * d + p * d / 2 + i], 1e-6);
      }
    }
  }
}

TEST(Rope, PositionZeroIsIdentity) {
  auto x = normal_vector(64, 3);
  const auto orig = x;
  rope(x.data(), 1, 64, 0, 10000.0f, RopeStyle::kHalves);
  EXPECT_EQ(x, orig);
}

TEST(Softmax, MatchesReferenceSumsToOneAndMasksExactly) {
  for (const int64_t n : kLengths) {
    auto x = normal_vector(n, 4, 5.0f);
    if (n > 2) {
      x[1] = -std::numeric_limits<float>::infinity();  // a masked score
      x[n - 1] = 80.0f;                                  // a dominant one
    }
    const auto in = x;
    softmax(x.data(), n);
    double mx = -INFINITY;
    for (const float v : in) mx = std::max(mx, static_cast<double>(v));
    double sum = 0.0;
    for (const float v : in) sum += std::exp(v - mx);
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = std::exp(in[i] - mx) / sum;
      ASSERT_NEAR(x[i], want, 2e-6 * want + 1e-30) << "n=" << n << " i=" << i;
      total += x[i];
    }
    EXPECT_NEAR(total, 1.0, 1e-5);
    if (n > 2) {
      EXPECT_EQ(x[1], 0.0f);
    }
  }
}

TEST(Softmax, AllMaskedGivesUniform) {
  std::vector<float> x(10, -std::numeric_limits<float>::infinity());
  softmax(x.data(), 10);
  for (const float v : x) EXPECT_FLOAT_EQ(v, 0.1f);
}

TEST(Swiglu, MatchesReferenceOverTheWholeRange) {
  // Dense sweep over [-30, 30] plus the far tails.
  std::vector<float> g;
  for (int i = -30000; i <= 30000; ++i) g.push_back(i * 1e-3f);
  for (const float v : {-100.0f, -88.5f, -87.0f, 87.0f, 100.0f, 1e-30f, -1e-30f, 0.0f}) g.push_back(v);
  const auto n = static_cast<int64_t>(g.size());
  const auto up = normal_vector(n, 5);
  std::vector<float> out(g.size());
  swiglu(g.data(), up.data(), out.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const double want = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * up[i];
    // Below 1e-35 the product is flushed or saturated; nothing downstream can see that.
    ASSERT_NEAR(out[i], want, 1e-6 * std::fabs(want) + 1e-35) << "g=" << g[i];
  }
}

TEST(AddInplace, IsExact) {
  for (const int64_t n : kLengths) {
    auto y = normal_vector(n, 6);
    const auto x = normal_vector(n, 7);
    const auto y0 = y;
    add_inplace(y.data(), x.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], y0[i] + x[i]);
  }
}

TEST(DotAndAxpy, MatchReference) {
  for (const int64_t n : kLengths) {
    const auto a = normal_vector(n, 8);
    const auto b = normal_vector(n, 9);
    double want = 0.0, mag = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      want += static_cast<double>(a[i]) * b[i];
      mag += std::fabs(static_cast<double>(a[i]) * b[i]);
    }
    EXPECT_NEAR(dot_f32(a.data(), b.data(), n), want, 1e-6 * mag) << "n=" << n;

    auto y = b;
    axpy_f32(0.37f, a.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double w = b[i] + 0.37 * static_cast<double>(a[i]);
      // FMA rounds once, mul+add twice: allow one ulp of each term.
      ASSERT_NEAR(y[i], w, 1.2e-7 * (std::fabs(b[i]) + std::fabs(0.37 * a[i]))) << "n=" << n;
    }
  }
}

// The fp16 forms (fp16 KV cache) against a double reference on the same fp16 values: widening is
// exact, so they hold to fp32 accumulation error, and the row conversion equals the scalar one.
TEST(DotAndAxpy, Fp16OperandsMatchReference) {
  for (const int64_t n : kLengths) {
    const auto a = normal_vector(n, 10);
    const auto src = normal_vector(n, 11);
    std::vector<uint16_t> b(static_cast<size_t>(n));
    fp32_to_fp16_row(src.data(), b.data(), n);
    double want = 0.0, mag = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(b[i], fp32_to_fp16(src[i])) << "n=" << n << " i=" << i;
      const double bi = fp16_to_fp32(b[i]);
      want += static_cast<double>(a[i]) * bi;
      mag += std::fabs(static_cast<double>(a[i]) * bi);
    }
    EXPECT_NEAR(dot_f32_f16(a.data(), b.data(), n), want, 1e-6 * mag) << "n=" << n;

    auto y = a;
    axpy_f16(-1.7f, b.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double bi = fp16_to_fp32(b[i]);
      const double w = a[i] - 1.7 * bi;
      ASSERT_NEAR(y[i], w, 1.2e-7 * (std::fabs(a[i]) + std::fabs(1.7 * bi))) << "n=" << n;
    }
  }
  // Rounding edges: halfway cases, overflow to inf, subnormals, NaN.
  const std::vector<float> edges = {65504.0f, 65520.0f, 1e6f, -1e6f, 6e-8f, 3e-5f, -0.0f,
                                    1.0009765625f + 0.00048828125f,
                                    std::numeric_limits<float>::quiet_NaN(), 1.0f, 2.0f, 3.0f};
  std::vector<uint16_t> h(edges.size());
  fp32_to_fp16_row(edges.data(), h.data(), static_cast<int64_t>(edges.size()));
  for (size_t i = 0; i < edges.size(); ++i) {
    if (std::isnan(edges[i])) {
      EXPECT_TRUE(std::isnan(fp16_to_fp32(h[i])));
    } else {
      EXPECT_EQ(h[i], fp32_to_fp16(edges[i])) << edges[i];
    }
  }
}

// attention_scores/values over a strided run of positions against dot and successive axpy calls,
// compared bit for bit: the forward pass relies on that to give a paged cache exactly a
// contiguous cache's results whatever the block boundaries. Head sizes cover the 64-wide register
// body, its 8-wide rest (72, 96, 40) and the scalar fallback (5, 13); counts the 8-position
// batches and their remainders.
template <typename KvT>
void check_attention_runs(const std::vector<float>& q_src, const std::vector<KvT>& cache) {
  const int64_t head_dims[] = {5, 8, 13, 24, 40, 64, 72, 96, 128};
  const int64_t counts[] = {0, 1, 7, 8, 9, 16, 17, 33};
  for (const int64_t n : head_dims) {
    const int64_t stride = 3 * n + 5;  // other heads' elements between two positions
    for (const int64_t count : counts) {
      ASSERT_LE(count * stride, static_cast<int64_t>(cache.size()));
      const float* q = q_src.data();
      std::vector<float> got(static_cast<size_t>(count) + 1, -1.0f);
      attention_scores(q, cache.data(), stride, count, n, 0.125f, got.data());
      for (int64_t j = 0; j < count; ++j) {
        float want;
        if constexpr (std::is_same_v<KvT, float>) {
          want = dot_f32(q, cache.data() + j * stride, n) * 0.125f;
        } else {
          want = dot_f32_f16(q, cache.data() + j * stride, n) * 0.125f;
        }
        ASSERT_EQ(std::memcmp(&got[j], &want, sizeof(float)), 0)
            << "scores n=" << n << " count=" << count << " j=" << j << ": " << got[j] << " vs "
            << want;
      }
      EXPECT_EQ(got[count], -1.0f) << "wrote past count";

      const auto p = normal_vector(count, 30);
      auto out = normal_vector(n + 1, 31);  // accumulates into what is there
      auto want = out;
      attention_values(p.data(), cache.data(), stride, count, n, out.data());
      for (int64_t j = 0; j < count; ++j) {
        if constexpr (std::is_same_v<KvT, float>) {
          axpy_f32(p[j], cache.data() + j * stride, want.data(), n);
        } else {
          axpy_f16(p[j], cache.data() + j * stride, want.data(), n);
        }
      }
      ASSERT_EQ(std::memcmp(out.data(), want.data(), out.size() * sizeof(float)), 0)
          << "values n=" << n << " count=" << count;
    }
  }
}

TEST(AttentionRuns, EqualDotAndAxpyBitForBit) {
  const auto q = normal_vector(128, 20);
  const auto cache = normal_vector(33 * (3 * 128 + 5), 21);
  check_attention_runs(q, cache);
  std::vector<uint16_t> cache16(cache.size());
  fp32_to_fp16_row(cache.data(), cache16.data(), static_cast<int64_t>(cache.size()));
  check_attention_runs(q, cache16);
}

// And against a double reference, so the equality above is not two copies of one mistake.
TEST(AttentionRuns, MatchReference) {
  const int64_t n = 64, stride = 200, count = 21;
  const auto q = normal_vector(n, 22);
  const auto cache = normal_vector(count * stride, 23);
  std::vector<float> scores(count);
  attention_scores(q.data(), cache.data(), stride, count, n, 0.125f, scores.data());
  std::vector<double> out_want(n, 0.0);
  for (int64_t j = 0; j < count; ++j) {
    double want = 0.0, mag = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      want += static_cast<double>(q[i]) * cache[j * stride + i];
      mag += std::fabs(static_cast<double>(q[i]) * cache[j * stride + i]);
    }
    EXPECT_NEAR(scores[j], 0.125 * want, 1e-6 * mag) << "j=" << j;
    for (int64_t i = 0; i < n; ++i) {
      out_want[i] += static_cast<double>(scores[j]) * cache[j * stride + i];
    }
  }
  std::vector<float> out(n, 0.0f);
  attention_values(scores.data(), cache.data(), stride, count, n, out.data());
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(out[i], out_want[i], 1e-5) << "i=" << i;
}

}  // namespace
}  // namespace qgate
