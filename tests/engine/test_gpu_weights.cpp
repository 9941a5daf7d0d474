#include "engine/gpu_weights.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

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
