// GPTQ/AWQ layers repacked to Q4_1 for the CPU kernels: same weights (up to the fp16 rounding of
// the block minimum), act-order permutation, and refusals.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/quant_repack.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/quant.h"

namespace qgate {
namespace {

// A deterministic layer: q, scales (fp16-exact) and zeros from a small LCG.
QuantizedLinear make_layer(int64_t n, int64_t k, int64_t group, bool act_order) {
  QuantizedLinear l;
  l.in_features = k;
  l.out_features = n;
  l.bits = 4;
  l.group_size = group;
  const int64_t groups = (k + group - 1) / group;
  uint32_t state = 12345;
  auto next = [&] { return state = state * 1664525u + 1013904223u; };
  l.q.resize(static_cast<size_t>(n * k));
  for (auto& v : l.q) v = static_cast<uint8_t>(next() >> 28);
  l.scales.resize(static_cast<size_t>(groups * n));
  for (auto& s : l.scales) s = fp16_to_fp32(fp32_to_fp16(0.001f + (next() >> 20) * 1e-6f));
  l.zeros.resize(static_cast<size_t>(groups * n));
  for (auto& z : l.zeros) z = static_cast<uint8_t>(next() >> 28);
  l.g_idx.resize(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) l.g_idx[static_cast<size_t>(i)] = static_cast<int32_t>(i / group);
  if (act_order) {
    // A fixed shuffle of the columns, as act-order produces.
    for (int64_t i = k - 1; i > 0; --i) {
      std::swap(l.g_idx[static_cast<size_t>(i)], l.g_idx[next() % static_cast<uint32_t>(i + 1)]);
    }
  }
  return l;
}

void expect_same_weights(const QuantizedLinear& l, const RepackedLinear& r) {
  std::vector<float> row(static_cast<size_t>(l.in_features));
  const int64_t row_bytes = *dtype_row_bytes(DType::kQ4_1, l.in_features);
  for (int64_t n = 0; n < l.out_features; ++n) {
    dequantize_row(DType::kQ4_1, r.q4_1.data() + n * row_bytes, row.data(), l.in_features);
    for (int64_t i = 0; i < l.in_features; ++i) {
      const int64_t k = r.input_perm.empty() ? i : r.input_perm[static_cast<size_t>(i)];
      const float want = l.dequant(n, k);
      const int64_t g = l.g_idx[static_cast<size_t>(k)];
      const float scale = l.scales[static_cast<size_t>(g * l.out_features + n)];
      // Only m = -scale * zero is rounded to fp16: at most half an fp16 ulp of |m|.
      const float tol = 15.0f * scale * std::ldexp(1.0f, -11) + 1e-7f;
      ASSERT_NEAR(row[static_cast<size_t>(i)], want, tol) << "row " << n << " input " << k;
    }
  }
}

TEST(QuantRepack, GroupedLayerKeepsItsWeights) {
  const QuantizedLinear l = make_layer(24, 576, 64, false);
  auto r = repack_to_q4_1(l);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_TRUE(r->input_perm.empty());
  expect_same_weights(l, *r);
}

TEST(QuantRepack, PartialLastGroupAndPerChannel) {
  expect_same_weights(make_layer(8, 576, 128, false), repack_to_q4_1(make_layer(8, 576, 128, false)).value());
  expect_same_weights(make_layer(8, 192, 192, false), repack_to_q4_1(make_layer(8, 192, 192, false)).value());
}

TEST(QuantRepack, ActOrderPermutesInputsSoBlocksShareAGroup) {
  const QuantizedLinear l = make_layer(16, 256, 64, true);
  ASSERT_FALSE(l.has_trivial_g_idx());
  auto r = repack_to_q4_1(l);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(r->input_perm.size(), 256u);
  std::vector<bool> seen(256, false);
  for (int32_t p : r->input_perm) seen[static_cast<size_t>(p)] = true;
  for (bool s : seen) EXPECT_TRUE(s);
  expect_same_weights(l, *r);
}

TEST(QuantRepack, RefusesWhatBlocksOf32CannotHold) {
  QuantizedLinear eight = make_layer(8, 64, 16, false);
  auto r = repack_to_q4_1(eight);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("multiples of 32"), std::string::npos);
  QuantizedLinear bits8 = make_layer(8, 64, 32, false);
  bits8.bits = 8;
  EXPECT_EQ(repack_to_q4_1(bits8).error().code(), ErrorCode::kUnsupported);
}

}  // namespace
}  // namespace qgate
