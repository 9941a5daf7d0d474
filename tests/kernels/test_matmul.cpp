// matmul() against matmul_ref over every weight type, awkward shapes and token counts (each tile
// shape and remainder of the register-tiled kernels), on 1 and 2 threads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cpu/half.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {
namespace {

std::vector<uint8_t> random_weights(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  const int64_t row_bytes = *dtype_row_bytes(t, cols);
  std::vector<uint8_t> w(static_cast<size_t>(rows * row_bytes));
  if (t == DType::kQ4_0 || t == DType::kQ4_1 || t == DType::kQ8_0) {
    const int64_t block_bytes = dtype_block_bytes(t);
    for (int64_t off = 0; off < static_cast<int64_t>(w.size()); off += block_bytes) {
      for (int64_t i = 0; i < block_bytes; ++i) w[off + i] = static_cast<uint8_t>(byte(rng));
      // Sensible scales (random bytes would give inf/NaN halves); Q4_1 gets a negative minimum
      // like real weights: m ≈ −8d.
      const float d = 0.002f + std::fabs(nd(rng)) * 0.05f;
      const uint16_t dh = fp32_to_fp16(d);
      std::memcpy(&w[off], &dh, 2);
      if (t == DType::kQ4_1) {
        const uint16_t mh = fp32_to_fp16(-8.0f * d + nd(rng) * d);
        std::memcpy(&w[off + 2], &mh, 2);
      }
    }
    return w;
  }
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float v = nd(rng);
    if (t == DType::kF32) {
      std::memcpy(&w[4 * i], &v, 4);
    } else {
      const uint16_t h = t == DType::kF16 ? fp32_to_fp16(v) : fp32_to_bf16(v);
      std::memcpy(&w[2 * i], &h, 2);
    }
  }
  return w;
}

std::vector<float> random_activations(int64_t m, int64_t cols, uint32_t seed, bool outliers = true) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(m * cols));
  for (auto& v : x) v = nd(rng);
  // An outlier per row, as real hidden states have; it stresses the per-block scales.
  if (outliers) {
    for (int64_t t = 0; t < m; ++t) x[t * cols + (t * 7) % cols] = 20.0f;
  }
  return x;
}

// The activations as the kernel sees them: quantized to the weight's activation format and back.
// matmul_ref on these isolates the kernel's own arithmetic from the 8-bit activation rounding.
std::vector<float> as_kernel_sees(DType w, const std::vector<float>& x, int64_t cols) {
  const DType a = activation_dtype_for(w);
  if (a == DType::kF32) return x;
  const int64_t m = static_cast<int64_t>(x.size()) / cols;
  std::vector<float> out(x.size());
  std::vector<uint8_t> row(static_cast<size_t>(*dtype_row_bytes(a, cols)));
  for (int64_t t = 0; t < m; ++t) {
    if (a == DType::kQ8_0) {
      quantize_row_q8_0(&x[t * cols], reinterpret_cast<BlockQ8_0*>(row.data()), cols);
    } else {
      quantize_row_q8_1(&x[t * cols], reinterpret_cast<BlockQ8_1*>(row.data()), cols);
    }
    dequantize_row(a, row.data(), &out[t * cols], cols);
  }
  return out;
}

// ‖y − y_ref‖ / ‖y_ref‖ over the first m tokens.
double normalized_error(const std::vector<float>& y, const std::vector<float>& ref, size_t count) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < count; ++i) {
    const double d = static_cast<double>(y[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}


class MatmulSweep : public ::testing::TestWithParam<DType> {};

TEST_P(MatmulSweep, MatchesReferenceAcrossShapesTokensAndThreads) {
  const DType t = GetParam();
  const int64_t kMaxM = 64;
  const int64_t ms[] = {1, 2, 3, 4, 5, 7, 16, 17, 64};
  ThreadPool pool1(1), pool2(2);
  MatmulScratch scratch;
  double worst = 0.0;
  for (const int64_t rows : {1, 3, 64, 192, 576, 1537}) {
    for (const int64_t cols : {32, 576, 1536}) {
      const auto w = random_weights(t, rows, cols, static_cast<uint32_t>(rows * 7919 + cols));
      const auto x = random_activations(kMaxM, cols, static_cast<uint32_t>(cols));
      const WeightView view{t, rows, cols, w.data()};
      // Tokens are independent, so the reference for m tokens is a prefix of the one for 64.
      std::vector<float> ref(static_cast<size_t>(kMaxM * rows));
      matmul_ref(view, as_kernel_sees(t, x, cols).data(), kMaxM, ref.data());
      for (const int64_t m : ms) {
        std::vector<float> y1(static_cast<size_t>(m * rows), NAN), y2(y1.size(), NAN);
        ASSERT_TRUE(matmul(view, x.data(), m, y1.data(), pool1, scratch).ok());
        ASSERT_TRUE(matmul(view, x.data(), m, y2.data(), pool2, scratch).ok());
        const double err = normalized_error(y1, ref, y1.size());
        worst = std::max(worst, err);
        // Only fp32 accumulation order differs from the double reference.
        EXPECT_LE(err, 1e-5) << dtype_name(t) << " rows=" << rows << " cols=" << cols
                                     << " m=" << m;
        // Threads split whole rows, so the arithmetic per output is the same: bitwise equal.
        EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)))
            << dtype_name(t) << " rows=" << rows << " cols=" << cols << " m=" << m;
      }
    }
  }
  RecordProperty("worst_normalized_error", std::to_string(worst));
}

TEST_P(MatmulSweep, ActivationQuantizationErrorIsSmall) {
  // Against the exact fp32 activations the 8-bit activation rounding shows: per element at most
  // half a step of 1/127 of its block's max, which for Gaussian activations is ~0.6% in norm.
  const DType t = GetParam();
  const int64_t rows = 576, cols = 1536, m = 17;
  const auto w = random_weights(t, rows, cols, 11);
  const auto x = random_activations(m, cols, 12, /*outliers=*/false);
  const WeightView view{t, rows, cols, w.data()};
  std::vector<float> ref(static_cast<size_t>(m * rows)), y(ref.size());
  matmul_ref(view, x.data(), m, ref.data());
  ThreadPool pool(2);
  MatmulScratch scratch;
  ASSERT_TRUE(matmul(view, x.data(), m, y.data(), pool, scratch).ok());
  const bool quantized = activation_dtype_for(t) != DType::kF32;
  EXPECT_LE(normalized_error(y, ref, y.size()), quantized ? 1e-2 : 1e-5) << dtype_name(t);
}

INSTANTIATE_TEST_SUITE_P(AllWeightTypes, MatmulSweep,
                         ::testing::Values(DType::kQ4_0, DType::kQ4_1, DType::kQ8_0, DType::kF32,
                                           DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(Matmul, FloatWeightsWithColumnsNotAMultipleOfEight) {
  ThreadPool pool(2);
  MatmulScratch scratch;
  for (const DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (const int64_t cols : {1, 5, 13, 577}) {
      const int64_t rows = 9, m = 5;
      const auto w = random_weights(t, rows, cols, 5);
      const auto x = random_activations(m, cols, 6);
      const WeightView view{t, rows, cols, w.data()};
      std::vector<float> y(static_cast<size_t>(m * rows)), ref(y.size());
      ASSERT_TRUE(matmul(view, x.data(), m, y.data(), pool, scratch).ok());
      matmul_ref(view, x.data(), m, ref.data());
      EXPECT_LE(normalized_error(y, ref, y.size()), 1e-5) << dtype_name(t) << " cols=" << cols;
    }
  }
}

TEST(Matmul, DecodeMatchesVecDotPerRow) {
  // m = 1 is the decode path; it must agree with vec_dot on the same quantized activations.
  const int64_t rows = 37, cols = 576;
  const auto w = random_weights(DType::kQ4_1, rows, cols, 9);
  const auto x = random_activations(1, cols, 10);
  std::vector<BlockQ8_1> act(cols / 32);
  quantize_row_q8_1(x.data(), act.data(), cols);
  ThreadPool pool(2);
  MatmulScratch scratch;
  std::vector<float> y(rows);
  ASSERT_TRUE(matmul({DType::kQ4_1, rows, cols, w.data()}, x.data(), 1, y.data(), pool, scratch).ok());
  const int64_t row_bytes = *dtype_row_bytes(DType::kQ4_1, cols);
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_FLOAT_EQ(y[r], vec_dot(DType::kQ4_1, w.data() + r * row_bytes, act.data(), cols)) << r;
  }
}

TEST(Matmul, RejectsBadShapesAndTypes) {
  ThreadPool pool(1);
  MatmulScratch scratch;
  std::vector<uint8_t> w(4096);
  std::vector<float> x(64), y(64);
  auto st = matmul({DType::kQ4_1, 2, 48, w.data()}, x.data(), 1, y.data(), pool, scratch);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(st.error().message().find("48"), std::string::npos) << st.error().message();

  st = matmul({DType::kI32, 2, 32, w.data()}, x.data(), 1, y.data(), pool, scratch);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kUnsupported);

  st = matmul({DType::kQ8_0, 0, 32, w.data()}, x.data(), 1, y.data(), pool, scratch);
  EXPECT_FALSE(st.ok());

  st = matmul({DType::kQ8_0, 2, 32, nullptr}, x.data(), 1, y.data(), pool, scratch);
  EXPECT_FALSE(st.ok());
}

TEST(Matmul, ZeroTokensWritesNothing) {
  ThreadPool pool(2);
  MatmulScratch scratch;
  std::vector<uint8_t> w = random_weights(DType::kQ8_0, 4, 32, 1);
  float y = 42.0f;
  ASSERT_TRUE(matmul({DType::kQ8_0, 4, 32, w.data()}, nullptr, 0, &y, pool, scratch).ok());
  EXPECT_EQ(y, 42.0f);
}

TEST(Matmul, ScratchGrowsOnlyWhenTooSmall) {
  ThreadPool pool(1);
  MatmulScratch scratch;
  const int64_t rows = 8, cols = 576;
  const auto w = random_weights(DType::kQ4_1, rows, cols, 3);
  const auto x = random_activations(16, cols, 4);
  std::vector<float> y(16 * rows);
  const WeightView view{DType::kQ4_1, rows, cols, w.data()};
  ASSERT_TRUE(matmul(view, x.data(), 16, y.data(), pool, scratch).ok());
  const auto* data = scratch.act.data();
  const size_t size = scratch.act.size();
  for (const int64_t m : {1, 2, 7, 16}) {
    ASSERT_TRUE(matmul(view, x.data(), m, y.data(), pool, scratch).ok());
    EXPECT_EQ(scratch.act.data(), data);
    EXPECT_EQ(scratch.act.size(), size);
  }
}

// matmul_shared_input computes each output exactly as matmul() on that matrix alone does, whatever
// the row counts (tails that are not a multiple of the 4-row groups), token counts and threads.
TEST(MatmulSharedInput, EqualsOneMatmulPerMatrixBitwise) {
  ThreadPool pool1(1), pool2(2);
  MatmulScratch scratch;
  const int64_t cols = 576;
  const std::vector<std::vector<int64_t>> row_sets = {{576, 192, 192}, {1537, 3, 1}, {5, 1536}};
  for (const DType t : {DType::kQ4_0, DType::kQ4_1, DType::kQ8_0, DType::kF16}) {
    for (const auto& rows : row_sets) {
      std::vector<std::vector<uint8_t>> weights;
      for (size_t i = 0; i < rows.size(); ++i) {
        weights.push_back(random_weights(t, rows[i], cols, static_cast<uint32_t>(31 * i + rows[i])));
      }
      for (const int64_t m : {1, 3, 17, 64}) {
        const auto x = random_activations(m, cols, static_cast<uint32_t>(m));
        for (ThreadPool* pool : {&pool1, &pool2}) {
          std::vector<MatmulTarget> targets;
          std::vector<std::vector<float>> fused(rows.size()), alone(rows.size());
          for (size_t i = 0; i < rows.size(); ++i) {
            fused[i].assign(static_cast<size_t>(m * rows[i]), NAN);
            alone[i].assign(fused[i].size(), NAN);
            const WeightView view{t, rows[i], cols, weights[i].data()};
            targets.push_back({view, fused[i].data()});
            ASSERT_TRUE(matmul(view, x.data(), m, alone[i].data(), *pool, scratch).ok());
          }
          ASSERT_TRUE(matmul_shared_input(targets, x.data(), m, *pool, scratch).ok());
          for (size_t i = 0; i < rows.size(); ++i) {
            EXPECT_EQ(0, std::memcmp(fused[i].data(), alone[i].data(), fused[i].size() * 4))
                << dtype_name(t) << " matrix " << i << " rows=" << rows[i] << " m=" << m
                << " threads=" << pool->num_threads();
          }
        }
      }
    }
  }
}

TEST(MatmulSharedInput, MixedActivationFormatsFallBackToOneMatmulEach) {
  // Q4_1 reads Q8_1 activations, Q8_0 reads Q8_0 ones, F16 reads fp32: no single quantization.
  ThreadPool pool(2);
  MatmulScratch scratch;
  const int64_t cols = 64, m = 5;
  const DType types[] = {DType::kQ4_1, DType::kQ8_0, DType::kF16};
  const int64_t rows[] = {9, 4, 7};
  const auto x = random_activations(m, cols, 3);
  std::vector<std::vector<uint8_t>> weights;
  std::vector<std::vector<float>> fused(3), alone(3);
  std::vector<MatmulTarget> targets;
  for (size_t i = 0; i < 3; ++i) {
    weights.push_back(random_weights(types[i], rows[i], cols, static_cast<uint32_t>(i)));
    fused[i].assign(static_cast<size_t>(m * rows[i]), NAN);
    alone[i].assign(fused[i].size(), NAN);
  }
  for (size_t i = 0; i < 3; ++i) {
    const WeightView view{types[i], rows[i], cols, weights[i].data()};
    targets.push_back({view, fused[i].data()});
    ASSERT_TRUE(matmul(view, x.data(), m, alone[i].data(), pool, scratch).ok());
  }
  ASSERT_TRUE(matmul_shared_input(targets, x.data(), m, pool, scratch).ok());
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(0, std::memcmp(fused[i].data(), alone[i].data(), fused[i].size() * 4))
        << dtype_name(types[i]);
  }
}

TEST(MatmulSharedInput, RejectsMismatchedInputsBeforeWritingAnything) {
  ThreadPool pool(1);
  MatmulScratch scratch;
  const auto w = random_weights(DType::kQ8_0, 4, 64, 1);
  const auto x = random_activations(1, 64, 2);
  std::vector<float> y1(4, 7.0f), y2(4, 7.0f);
  // Same bytes read as 4x64 and as 8x32: the second has other cols.
  const MatmulTarget mismatched[] = {{{DType::kQ8_0, 4, 64, w.data()}, y1.data()},
                                     {{DType::kQ8_0, 4, 32, w.data()}, y2.data()}};
  auto st = matmul_shared_input(mismatched, x.data(), 1, pool, scratch);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(st.error().message().find("same cols"), std::string::npos) << st.error().message();
  EXPECT_EQ(y1, std::vector<float>(4, 7.0f));

  st = matmul_shared_input({}, x.data(), 1, pool, scratch);
  EXPECT_FALSE(st.ok());

  std::vector<MatmulTarget> too_many(9, MatmulTarget{{DType::kQ8_0, 4, 64, w.data()}, y1.data()});
  st = matmul_shared_input(too_many, x.data(), 1, pool, scratch);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("at most"), std::string::npos) << st.error().message();
}

}  // namespace
}  // namespace qgate
