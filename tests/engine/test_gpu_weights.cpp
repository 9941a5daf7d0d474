#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "engine/gpu_weights.h"
#include "engine/model_loader.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/thread_pool.h"
#include "model_fixture.h"

namespace qgate {
namespace {

// Q4_1 blocks of a rows x cols matrix whose (d, m) change every `group` columns (and, with
// `jitter`, in one block of one row: then no group above 32 holds).
std::vector<BlockQ4_1> q4_1_matrix(int64_t rows, int64_t cols, int64_t group, bool jitter,
                                   uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> scale(0.01f, 0.1f);
  std::uniform_int_distribution<int> nib(0, 255);
  const int64_t blocks = cols / kQuantBlock;
  std::vector<BlockQ4_1> m(static_cast<size_t>(rows * blocks));
  for (int64_t r = 0; r < rows; ++r) {
    uint16_t d = 0, mn = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      if ((b * kQuantBlock) % group == 0) {
        d = fp32_to_fp16(scale(rng));
        mn = fp32_to_fp16(-8.0f * fp16_to_fp32(d) + scale(rng));
      }
      BlockQ4_1& blk = m[static_cast<size_t>(r * blocks + b)];
      blk.d = d;
      blk.m = mn;
      for (auto& q : blk.qs) q = static_cast<uint8_t>(nib(rng));
    }
  }
  if (jitter && blocks > 1) m[static_cast<size_t>(blocks - 1)].d ^= 1;
  return m;
}

WeightView view(const std::vector<BlockQ4_1>& m, int64_t rows, int64_t cols) {
  return {DType::kQ4_1, rows, cols, m.data()};
}

TEST(GpuWeights, FormatByType) {
  EXPECT_EQ(gpu_weight_format(DType::kQ4_0), GpuWeightFormat::kW4A16);
  EXPECT_EQ(gpu_weight_format(DType::kQ4_1), GpuWeightFormat::kW4A16);
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0}) {
    EXPECT_EQ(gpu_weight_format(t), GpuWeightFormat::kF16);
  }
}

TEST(GpuWeights, GroupSizeIsRecoveredFromRepeatedBlockScales) {
  for (int64_t group : {32, 64, 128}) {
    for (int64_t cols : {128, 576, 1536, 4160}) {
      const auto m = q4_1_matrix(5, cols, group, false, static_cast<uint32_t>(group + cols));
      EXPECT_EQ(infer_int4_group_size(view(m, 5, cols)), group) << group << " " << cols;
    }
  }
  // One differing block in a group of 128 drops it to 32 (64 would also span it).
  const auto m = q4_1_matrix(3, 256, 128, true, 7);
  EXPECT_EQ(infer_int4_group_size(view(m, 3, 256)), 32);
}

TEST(GpuWeights, PackedQ4_1DequantizesToTheSameValues) {
  for (int64_t group : {32, 64, 128}) {
    const int64_t rows = 17, cols = 576;  // 576 = 4.5 groups of 128: a partial last group
    const auto m = q4_1_matrix(rows, cols, group, false, static_cast<uint32_t>(group));
    auto packed = w4a16_from_ggml(view(m, rows, cols));
    ASSERT_TRUE(packed.ok()) << packed.error().to_string();
    EXPECT_EQ(packed->group_size, group);
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row(DType::kQ4_1, m.data() + r * cols / kQuantBlock, row.data(), cols);
      for (int64_t k = 0; k < cols; ++k) {
        // Q4_1 computes d * q + m in fp32 from the same fp16 d and m: equal to rounding.
        ASSERT_NEAR(w4a16_dequant(*packed, r, k), row[static_cast<size_t>(k)], 1e-6f)
            << "group " << group << " row " << r << " col " << k;
      }
    }
    EXPECT_EQ(gpu_weight_bytes(view(m, rows, cols)), packed->bytes());
  }
}

TEST(GpuWeights, Q4_0GetsMinusEightTimesTheScale) {
  std::vector<BlockQ4_0> m(2);
  for (size_t b = 0; b < m.size(); ++b) {
    m[b].d = fp32_to_fp16(0.25f * static_cast<float>(b + 1));
    for (int j = 0; j < 16; ++j) m[b].qs[j] = static_cast<uint8_t>((j + 3 * b) | ((15 - j) << 4));
  }
  const WeightView w{DType::kQ4_0, 1, 64, m.data()};
  auto packed = w4a16_from_ggml(w);
  ASSERT_TRUE(packed.ok()) << packed.error().to_string();
  std::vector<float> row(64);
  dequantize_row(DType::kQ4_0, m.data(), row.data(), 64);
  for (int64_t k = 0; k < 64; ++k) EXPECT_FLOAT_EQ(w4a16_dequant(*packed, 0, k), row[k]) << k;
}

TEST(GpuWeights, Fp16FromWeightRoundsEveryType) {
  const std::vector<float> f = {1.0f, -2.5f, 3.14159f, 1e-3f, 65504.0f, -0.0f, 7.0f, 0.1f};
  const WeightView w{DType::kF32, 2, 4, f.data()};
  const std::vector<uint16_t> h = fp16_from_weight(w);
  ASSERT_EQ(h.size(), f.size());
  for (size_t i = 0; i < f.size(); ++i) EXPECT_EQ(h[i], fp32_to_fp16(f[i])) << i;
  EXPECT_EQ(gpu_weight_bytes(w), 16u);
  auto refused = w4a16_from_ggml(w);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
}

// q (group 128), k (group 64) and v (Q4_0, group 32) stacked: row r of the stacked matrix is row
// r of q, then of k, then of v, every value as each part alone packs it, at the smallest group.
TEST(GpuWeights, StackedPartsKeepEveryRowAndTakeTheSmallestGroup) {
  const int64_t cols = 576;
  const auto q = q4_1_matrix(17, cols, 128, false, 1);
  const auto k = q4_1_matrix(5, cols, 64, false, 2);
  std::vector<BlockQ4_0> v(static_cast<size_t>(3 * cols / kQuantBlock));
  std::mt19937 rng(3);
  for (auto& b : v) {
    b.d = fp32_to_fp16(0.01f + 0.001f * static_cast<float>(rng() % 50));
    for (auto& x : b.qs) x = static_cast<uint8_t>(rng());
  }
  const std::vector<WeightView> parts = {view(q, 17, cols), view(k, 5, cols),
                                         WeightView{DType::kQ4_0, 3, cols, v.data()}};
  auto stacked = w4a16_from_ggml(parts);
  ASSERT_TRUE(stacked.ok()) << stacked.error().to_string();
  EXPECT_EQ(stacked->rows, 25);
  EXPECT_EQ(stacked->cols, cols);
  EXPECT_EQ(stacked->group_size, 32);
  EXPECT_EQ(gpu_weight_bytes(parts), stacked->bytes());
  int64_t row0 = 0;
  for (const WeightView& part : parts) {
    auto alone = w4a16_from_ggml(part);
    ASSERT_TRUE(alone.ok()) << alone.error().to_string();
    for (int64_t r = 0; r < part.rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_EQ(w4a16_dequant(*stacked, row0 + r, c), w4a16_dequant(*alone, r, c))
            << "stacked row " << row0 + r << " col " << c;
      }
    }
    row0 += part.rows;
  }
  // Two parts of group 128 stay at 128, and 64 + 32 rows pad to one 96-row matrix.
  const auto a = q4_1_matrix(64, cols, 128, false, 4);
  const auto b = q4_1_matrix(32, cols, 128, false, 5);
  const std::vector<WeightView> two = {view(a, 64, cols), view(b, 32, cols)};
  EXPECT_EQ(w4a16_from_ggml(two)->group_size, 128);
  EXPECT_EQ(gpu_weight_bytes(two), w4a16_packed_bytes(96, cols, 128));

  const std::vector<WeightView> none;
  EXPECT_EQ(w4a16_from_ggml(none).error().code(), ErrorCode::kInvalidArgument);
  const std::vector<WeightView> mismatched = {view(a, 64, cols), view(b, 32, cols - 32)};
  EXPECT_EQ(w4a16_from_ggml(mismatched).error().code(), ErrorCode::kInvalidArgument);
  const std::vector<float> f(static_cast<size_t>(cols), 1.0f);
  const std::vector<WeightView> mixed = {view(a, 64, cols),
                                         WeightView{DType::kF32, 1, cols, f.data()}};
  EXPECT_EQ(w4a16_from_ggml(mixed).error().code(), ErrorCode::kInvalidArgument);
  // fp16 parts stack by rows too.
  const std::vector<WeightView> f16 = {WeightView{DType::kF32, 1, cols, f.data()},
                                       WeightView{DType::kF32, 1, cols, f.data()}};
  EXPECT_EQ(gpu_weight_bytes(f16), 2u * cols * 2);
}

TEST(GpuWeights, LayersStackOnlyWhenOneMatmulComputesTheSame) {
  const int64_t cols = 128;
  const auto a = q4_1_matrix(32, cols, 64, false, 1);
  const auto b = q4_1_matrix(8, cols, 64, false, 2);
  const std::vector<float> f(static_cast<size_t>(8 * cols), 0.5f);
  std::vector<int32_t> perm(static_cast<size_t>(cols)), same_perm, other_perm;
  for (int32_t i = 0; i < cols; ++i) perm[static_cast<size_t>(i)] = (i * 5 + 3) % cols;
  same_perm = perm;  // equal contents at another address: the loader may not share them
  other_perm = perm;
  std::swap(other_perm[0], other_perm[1]);
  const std::vector<float> bias(32, 0.25f), bias8(8, 0.5f);

  const LinearLayer q{view(a, 32, cols), nullptr, nullptr};
  const LinearLayer k{view(b, 8, cols), nullptr, nullptr};
  const LinearLayer k_f32{WeightView{DType::kF32, 8, cols, f.data()}, nullptr, nullptr};
  const LinearLayer q_perm{view(a, 32, cols), nullptr, perm.data()};
  const LinearLayer k_same{view(b, 8, cols), nullptr, same_perm.data()};
  const LinearLayer k_other{view(b, 8, cols), nullptr, other_perm.data()};
  const LinearLayer q_bias{view(a, 32, cols), bias.data(), nullptr};
  const LinearLayer k_bias{view(b, 8, cols), bias8.data(), nullptr};
  using Parts = std::vector<const LinearLayer*>;
  auto groups = [](const Parts& p) { return gpu_matmul_groups(p).size(); };
  EXPECT_EQ(groups({&q, &k, &k}), 1u);
  EXPECT_EQ(gpu_matmul_groups(Parts{&q, &k, &k}).front(), (Parts{&q, &k, &k}));  // in order
  EXPECT_EQ(groups({&q_perm, &k_same}), 1u);
  EXPECT_EQ(groups({&q_bias, &k_bias}), 1u);
  EXPECT_EQ(groups({&q, &k_f32}), 2u);         // W4A16 next to fp16
  EXPECT_EQ(groups({&q_perm, &k_other}), 2u);  // different act-order permutations
  EXPECT_EQ(groups({&q_perm, &k}), 2u);        // one permuted, one not
  EXPECT_EQ(groups({&q_bias, &k}), 2u);        // a bias on one only
  EXPECT_EQ(groups({&q}), 1u);
  EXPECT_FALSE(gpu_can_stack(Parts{}));
}

// The GPTQ and AWQ variants were quantized with groups of 64; the loader repacks them into Q4_1
// blocks, and the GPU layout must find the 64 again (half the scale bytes of one per block).
TEST(GpuWeights, RealVariantsRecoverTheirGroupSize) {
  for (const char* dir : {"variants/smollm2-gptq-4bit", "variants/smollm2-awq-4bit"}) {
    const std::string path = testing::model_dir() + "/" + dir;
    if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " absent (scripts/prepare_variants.sh)";
    auto m = load_model(path);
    ASSERT_TRUE(m.ok()) << m.error().to_string();
    const LlamaLayer& l = m->model->layers()[0];
    for (const LinearLayer* lin : {&l.q, &l.o, &l.gate, &l.down}) {
      ASSERT_EQ(lin->weight.type, DType::kQ4_1) << dir;
      EXPECT_EQ(infer_int4_group_size(lin->weight), 64) << dir;
    }
    // Every 4-bit matrix of the variant packs for the GPU kernels (shape, fp16 range of every
    // group's q·scale + min), as the CUDA forward pass will do at load.
    for (const LlamaLayer& layer : m->model->layers()) {
      for (const LinearLayer* lin : {&layer.q, &layer.k, &layer.v, &layer.o, &layer.gate, &layer.up,
                                     &layer.down}) {
        auto packed = w4a16_from_ggml(lin->weight);
        ASSERT_TRUE(packed.ok()) << dir << ": " << packed.error().to_string();
      }
      // q/k/v and gate/up run as one matmul each (GPTQ's act-order permutations are shared).
      EXPECT_TRUE(gpu_can_stack(std::vector<const LinearLayer*>{&layer.q, &layer.k, &layer.v}))
          << dir;
      EXPECT_TRUE(gpu_can_stack(std::vector<const LinearLayer*>{&layer.gate, &layer.up})) << dir;
    }
  }
}

}  // namespace
}  // namespace qgate

namespace qgate {
namespace {

LlamaConfig tiny_config() {
  LlamaConfig c;
  c.vocab_size = 512;
  c.hidden_size = 256;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.intermediate_size = 640;
  c.max_position_embeddings = 256;
  return c;
}

TEST(SyntheticModel, Q4_1MatricesCarryTheRequestedGroupSize) {
  auto m = LlamaModel::synthetic(tiny_config(), DType::kQ4_1, 128, 1);
  ASSERT_TRUE(m.ok()) << m.error().to_string();
  for (const LinearLayer* l : {&m->layers()[0].q, &m->layers()[1].down}) {
    EXPECT_EQ(l->weight.type, DType::kQ4_1);
    EXPECT_EQ(infer_int4_group_size(l->weight), 128);
  }
  EXPECT_EQ(m->embedding().type, DType::kF16);
  EXPECT_NE(m->lm_head().data, m->embedding().data);
  EXPECT_EQ(LlamaModel::synthetic(tiny_config(), DType::kQ4_1, 48, 1).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(LlamaModel::synthetic(tiny_config(), DType::kQ8_0, 32, 1).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(LlamaModel::synthetic(tiny_config(), DType::kQ4_1, 32, 1, DType::kQ8_0).error().code(),
            ErrorCode::kInvalidArgument);
}

TEST(SyntheticModel, MixedPrecisionKeepsVAndUpApart) {
  auto m = LlamaModel::synthetic(tiny_config(), DType::kQ4_1, 64, 1, DType::kF16);
  ASSERT_TRUE(m.ok()) << m.error().to_string();
  for (const LlamaLayer& l : m->layers()) {
    EXPECT_EQ(l.q.weight.type, DType::kQ4_1);
    EXPECT_EQ(l.v.weight.type, DType::kF16);
    EXPECT_EQ(l.gate.weight.type, DType::kQ4_1);
    EXPECT_EQ(l.up.weight.type, DType::kF16);
    EXPECT_EQ(gpu_matmul_groups(std::vector<const LinearLayer*>{&l.q, &l.k, &l.v}).size(), 3u);
    EXPECT_EQ(gpu_matmul_groups(std::vector<const LinearLayer*>{&l.gate, &l.up}).size(), 2u);
  }
  // The CPU path (the GPU tests' reference) runs it.
  KvCache cache(m->config(), 16);
  ThreadPool pool(2);
  ForwardScratch scratch;
  std::vector<float> logits(512);
  const std::vector<int32_t> tokens = {1, 200, 3};
  ASSERT_TRUE(m->forward(tokens, cache, scratch, pool, LogitsMode::kLast, logits).ok());
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
  auto uniform = LlamaModel::synthetic(tiny_config(), DType::kQ4_1, 64, 1);
  ASSERT_TRUE(uniform.ok());
  const LlamaLayer& l = uniform->layers()[0];
  EXPECT_EQ(gpu_matmul_groups(std::vector<const LinearLayer*>{&l.q, &l.k, &l.v}).size(), 1u);
}

TEST(SyntheticModel, ForwardStaysFiniteAndSeedsAreReproducible) {
  for (DType t : {DType::kF16, DType::kQ4_1}) {
    auto a = LlamaModel::synthetic(tiny_config(), t, 64, 7);
    auto b = LlamaModel::synthetic(tiny_config(), t, 64, 7);
    ASSERT_TRUE(a.ok() && b.ok());
    KvCache ca(a->config(), 16), cb(b->config(), 16);
    ThreadPool pool(2);
    ForwardScratch sa, sb;
    std::vector<float> la(512), lb(512);
    const std::vector<int32_t> tokens = {1, 200, 3, 511};
    ASSERT_TRUE(a->forward(tokens, ca, sa, pool, LogitsMode::kLast, la).ok());
    ASSERT_TRUE(b->forward(tokens, cb, sb, pool, LogitsMode::kLast, lb).ok());
    double norm = 0;
    for (float v : la) {
      ASSERT_TRUE(std::isfinite(v));
      norm += static_cast<double>(v) * v;
    }
    // Neither vanishing nor exploding after two layers.
    EXPECT_GT(norm / 512, 1e-4) << dtype_name(t);
    EXPECT_LT(norm / 512, 1e4) << dtype_name(t);
    EXPECT_EQ(la, lb) << dtype_name(t);
  }
}

}  // namespace
}  // namespace qgate
