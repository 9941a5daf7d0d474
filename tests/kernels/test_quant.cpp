// Block formats: dequantization of hand-built blocks (known bytes → known values), properties of
// the Q8_0/Q8_1 activation quantizers, and the SIMD dot products against the scalar reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/half.h"
#include "kernels/cpu/quant.h"

namespace qgate {
namespace {

TEST(Dequantize, Q4_0HandBuiltBlock) {
  BlockQ4_0 b{};
  b.d = 0x3800;  // 0.5
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float out[32];
  dequantize_row(DType::kQ4_0, &b, out, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], (j - 8) * 0.5f) << j;
    EXPECT_EQ(out[j + 16], (7 - j) * 0.5f) << j;
  }
}

TEST(Dequantize, Q4_1HandBuiltBlocks) {
  BlockQ4_1 b[2]{};
  b[0].d = 0x3400;  // 0.25
  b[0].m = 0xBC00;  // -1
  b[1].d = 0x4000;  // 2
  b[1].m = 0x3C00;  // 1
  for (int j = 0; j < 16; ++j) {
    b[0].qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
    b[1].qs[j] = 0xF0;  // low nibble 0, high nibble 15
  }
  float out[64];
  dequantize_row(DType::kQ4_1, b, out, 64);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], j * 0.25f - 1.0f) << j;
    EXPECT_EQ(out[j + 16], (15 - j) * 0.25f - 1.0f) << j;
    EXPECT_EQ(out[32 + j], 1.0f) << j;
    EXPECT_EQ(out[48 + j], 31.0f) << j;
  }
}

TEST(Dequantize, Q8_0HandBuiltBlock) {
  BlockQ8_0 b{};
  b.d = 0x4000;  // 2
  for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(j - 16);
  b.qs[31] = -128;
  float out[32];
  dequantize_row(DType::kQ8_0, &b, out, 32);
  for (int j = 0; j < 31; ++j) EXPECT_EQ(out[j], (j - 16) * 2.0f) << j;
  EXPECT_EQ(out[31], -256.0f);
}

TEST(Dequantize, F16AndBf16KnownBits) {
  const uint16_t h[] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x0000, 0x8000, 0x3555, 0x7C00, 0x4248};
  const float hv[] = {1.0f, -2.0f, 65504.0f, std::ldexp(1.0f, -24), 0.0f, -0.0f,
                      0.333251953125f, INFINITY, 3.140625f};
  // 9 values: the SIMD path takes 8, the tail the ninth.
  float out[9];
  dequantize_row(DType::kF16, h, out, 9);
  for (int i = 0; i < 9; ++i) EXPECT_EQ(out[i], hv[i]) << i;

  const uint16_t bf[] = {0x3F80, 0xC0A0, 0x4049, 0x0000};
  float bout[4];
  dequantize_row(DType::kBF16, bf, bout, 4);
  EXPECT_EQ(bout[0], 1.0f);
  EXPECT_EQ(bout[1], -5.0f);
  EXPECT_EQ(bout[2], 3.140625f);
  EXPECT_EQ(bout[3], 0.0f);
}

// Rows with awkward blocks: all zeros, one spike, all negative, tiny values, ordinary noise.
std::vector<float> awkward_row(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = nd(rng);
  for (int j = 0; j < 32 && n >= 160; ++j) {
    x[j] = 0.0f;
    x[32 + j] = j == 5 ? 1000.0f : 0.001f * j;
    x[64 + j] = -std::fabs(x[64 + j]) - 1.0f;
    x[96 + j] *= 1e-6f;
    x[128 + j] = (j % 2 ? 1.0f : -1.0f) * 0.5f;  // exact ties at x·id = ±63.5 → even
  }
  return x;
}

TEST(QuantizeQ8, Q8_1Properties) {
  const int64_t n = 1536;
  const auto x = awkward_row(n, 1);
  std::vector<BlockQ8_1> q(n / 32);
  quantize_row_q8_1(x.data(), q.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0.0f;
    int32_t sum = 0;
    int maxq = 0;
    for (int j = 0; j < 32; ++j) {
      amax = std::fmax(amax, std::fabs(x[b * 32 + j]));
      sum += q[b].qs[j];
      maxq = std::max(maxq, std::abs(static_cast<int>(q[b].qs[j])));
    }
    EXPECT_EQ(q[b].d, amax / 127.0f) << b;
    EXPECT_EQ(q[b].s, q[b].d * static_cast<float>(sum)) << b;
    if (amax == 0.0f) {
      EXPECT_EQ(maxq, 0) << b;
      continue;
    }
    EXPECT_EQ(maxq, 127) << b;
    for (int j = 0; j < 32; ++j) {
      const float err = std::fabs(x[b * 32 + j] - q[b].qs[j] * q[b].d);
      EXPECT_LE(err, q[b].d * 0.5f * 1.0001f) << b << " " << j;
    }
  }
  // Block 4 holds ±0.5 everywhere: x·id = ±127 exactly.
  EXPECT_EQ(q[4].qs[0], -127);
  EXPECT_EQ(q[4].qs[1], 127);
  // Block 1: the spike gets 127 and 0.001·j rounds to 0 next to it.
  EXPECT_EQ(q[1].qs[5], 127);
  EXPECT_EQ(q[1].qs[6], 0);
}

TEST(QuantizeQ8, Q8_0Properties) {
  const int64_t n = 576;
  const auto x = awkward_row(n, 2);
  std::vector<BlockQ8_0> q(n / 32);
  quantize_row_q8_0(x.data(), q.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[b * 32 + j]));
    EXPECT_EQ(q[b].d, fp32_to_fp16(amax / 127.0f)) << b;
    const float d = fp16_to_fp32(q[b].d);
    // Below fp16's normal range the stored scale itself is coarse (GGML has the same limit);
    // the error bound below only holds for normal scales.
    if (amax / 127.0f < 6.2e-5f) continue;
    for (int j = 0; j < 32; ++j) {
      // The quants use the exact scale; only the stored d is rounded to fp16 (2^-11 relative).
      const float err = std::fabs(x[b * 32 + j] - q[b].qs[j] * d);
      EXPECT_LE(err, d * 0.5f * 1.001f + amax * 1e-3f) << b << " " << j;
    }
  }
}

TEST(QuantizeQ8, RoundsHalfToEven) {
  // amax = 127 makes id = 1, so q = round_half_even(x).
  float x[32] = {};
  x[0] = 127.0f;
  x[1] = 2.5f;
  x[2] = 3.5f;
  x[3] = -2.5f;
  x[4] = 0.5f;
  x[5] = 1.49f;
  BlockQ8_1 q;
  quantize_row_q8_1(x, &q, 32);
  EXPECT_EQ(q.d, 1.0f);
  EXPECT_EQ(q.qs[1], 2);
  EXPECT_EQ(q.qs[2], 4);
  EXPECT_EQ(q.qs[3], -2);
  EXPECT_EQ(q.qs[4], 0);
  EXPECT_EQ(q.qs[5], 1);
  EXPECT_EQ(q.s, 127.0f + 2 + 4 - 2 + 0 + 1);
}

// Random weight rows in every type; the quantized ones get random scales and quants.
std::vector<uint8_t> random_weight_row(DType t, int64_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<uint8_t> row(static_cast<size_t>(*dtype_row_bytes(t, n)));
  const int64_t nb = n / 32;
  switch (t) {
    case DType::kQ4_0:
      for (int64_t b = 0; b < nb; ++b) {
        BlockQ4_0 blk;
        blk.d = fp32_to_fp16(0.01f + 0.05f * std::fabs(uni(rng)));
        for (auto& q : blk.qs) q = static_cast<uint8_t>(byte(rng));
        std::memcpy(row.data() + b * sizeof blk, &blk, sizeof blk);
      }
      break;
    case DType::kQ4_1:
      for (int64_t b = 0; b < nb; ++b) {
        BlockQ4_1 blk;
        blk.d = fp32_to_fp16(0.01f + 0.05f * std::fabs(uni(rng)));
        blk.m = fp32_to_fp16(-0.4f * std::fabs(uni(rng)));
        for (auto& q : blk.qs) q = static_cast<uint8_t>(byte(rng));
        std::memcpy(row.data() + b * sizeof blk, &blk, sizeof blk);
      }
      break;
    case DType::kQ8_0:
      for (int64_t b = 0; b < nb; ++b) {
        BlockQ8_0 blk;
        blk.d = fp32_to_fp16(0.001f + 0.01f * std::fabs(uni(rng)));
        for (auto& q : blk.qs) q = static_cast<int8_t>(byte(rng) - 128);  // -128 included
        std::memcpy(row.data() + b * sizeof blk, &blk, sizeof blk);
      }
      break;
    case DType::kF32:
      for (int64_t i = 0; i < n; ++i) {
        const float v = uni(rng);
        std::memcpy(row.data() + 4 * i, &v, 4);
      }
      break;
    case DType::kF16:
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = t == DType::kF16 ? fp32_to_fp16(uni(rng)) : fp32_to_bf16(uni(rng));
        std::memcpy(row.data() + 2 * i, &h, 2);
      }
      break;
    default:
      ADD_FAILURE() << "no generator for " << dtype_name(t);
  }
  return row;
}

std::vector<uint8_t> activations_for(DType w, const std::vector<float>& x) {
  const auto n = static_cast<int64_t>(x.size());
  const DType a = activation_dtype_for(w);
  std::vector<uint8_t> act(static_cast<size_t>(*dtype_row_bytes(a, n)));
  if (a == DType::kQ8_0) {
    quantize_row_q8_0(x.data(), reinterpret_cast<BlockQ8_0*>(act.data()), n);
  } else if (a == DType::kQ8_1) {
    quantize_row_q8_1(x.data(), reinterpret_cast<BlockQ8_1*>(act.data()), n);
  } else {
    std::memcpy(act.data(), x.data(), act.size());
  }
  return act;
}

TEST(ActivationDtype, PairsWeightsWithTheirActivationFormat) {
  EXPECT_EQ(activation_dtype_for(DType::kQ4_0), DType::kQ8_0);
  EXPECT_EQ(activation_dtype_for(DType::kQ8_0), DType::kQ8_0);
  EXPECT_EQ(activation_dtype_for(DType::kQ4_1), DType::kQ8_1);
  EXPECT_EQ(activation_dtype_for(DType::kF16), DType::kF32);
  EXPECT_EQ(activation_dtype_for(DType::kBF16), DType::kF32);
  EXPECT_EQ(activation_dtype_for(DType::kF32), DType::kF32);
}

class VecDotTest : public ::testing::TestWithParam<DType> {};

TEST_P(VecDotTest, MatchesReferenceOnAwkwardLengths) {
  const DType t = GetParam();
  std::mt19937 rng(1234);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  // Float types also get lengths that are not a multiple of 8 to reach the scalar tail.
  std::vector<int64_t> lengths = {32, 64, 96, 576, 1536, 4096 + 32};
  if (dtype_block_elems(t) == 1) lengths.insert(lengths.end(), {1, 7, 13, 577});
  for (const int64_t n : lengths) {
    const auto w = random_weight_row(t, n, rng);
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = nd(rng);
    const auto act = activations_for(t, x);
    const float got = vec_dot(t, w.data(), act.data(), n);
    const float want = vec_dot_ref(t, w.data(), act.data(), n);
    // Scale of the terms: Σ|w_i x_i| from the dequantized row bounds the rounding of any order.
    std::vector<float> wf(static_cast<size_t>(n));
    dequantize_row(t, w.data(), wf.data(), n);
    double mag = 0.0;
    for (int64_t i = 0; i < n; ++i) mag += std::fabs(static_cast<double>(wf[i]) * x[i]);
    EXPECT_LE(std::fabs(got - want), 1e-5 * mag + 1e-6) << dtype_name(t) << " n=" << n;

    // And the quantized dot stays close to the exact dot of the dequantized weights.
    double exact = 0.0;
    for (int64_t i = 0; i < n; ++i) exact += static_cast<double>(wf[i]) * x[i];
    EXPECT_LE(std::fabs(want - exact), 1e-2 * mag) << dtype_name(t) << " n=" << n;
  }
}

INSTANTIATE_TEST_SUITE_P(AllWeightTypes, VecDotTest,
                         ::testing::Values(DType::kQ4_0, DType::kQ4_1, DType::kQ8_0, DType::kF32,
                                           DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace qgate
