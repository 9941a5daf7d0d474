// The paged attention reference (kernels/cpu/attention_ref.h) against a naive dense causal GQA
// attention computed straight from the definition on contiguous K/V, for random (shuffled) block
// tables, block sizes 16 and 7, decode and prefill rows, GQA ratios 1, 3 and 4. The reference is
// the oracle of the CUDA kernels, so it is itself checked against code that shares nothing with it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/attention_ref.h"
#include "kernels/cpu/half.h"
#include "tests/kernels/attention_test_util.h"

namespace qgate {
namespace {

using testing::PagedBatch;
using testing::random_half;
using Seq = testing::TestSeq;
using Shape = testing::HeadShape;

// One batch: dense K/V per sequence ([pos][kv_dim] fp16 bits), q rows, and the same K/V scattered
// into a paged cache through shuffled block tables.
struct Problem {
  Shape shape;
  std::vector<Seq> seqs;
  PagedBatch paged;
  std::vector<std::vector<uint16_t>> dense_k, dense_v;
  std::vector<float> q;
};

Problem make_problem(const Shape& shape, const std::vector<Seq>& seqs, int32_t block_tokens,
                     bool shuffle, uint32_t seed) {
  std::mt19937 rng(seed);
  Problem p;
  p.shape = shape;
  p.seqs = seqs;
  const int64_t kv_dim = static_cast<int64_t>(shape.n_kv_heads) * shape.head_dim;
  // A gap between blocks, as a real pool may have; three blocks nobody uses, left as NaN: a stray
  // read poisons the result.
  p.paged = testing::make_paged_batch(seqs, block_tokens, kv_dim, /*block_gap=*/8,
                                      /*spare_blocks=*/3, /*max_context=*/0, shuffle, rng);
  for (size_t s = 0; s < seqs.size(); ++s) {
    const int32_t len = seqs[s].length();
    auto& dk = p.dense_k.emplace_back(static_cast<size_t>(len * kv_dim));
    auto& dv = p.dense_v.emplace_back(static_cast<size_t>(len * kv_dim));
    for (auto& x : dk) x = random_half(rng, -1.0f, 1.0f);
    for (auto& x : dv) x = random_half(rng, -1.0f, 1.0f);
    for (int32_t pos = 0; pos < len; ++pos) {
      const int64_t at = p.paged.slot(s, pos);
      std::copy_n(dk.data() + pos * kv_dim, kv_dim, p.paged.k_cache.data() + at);
      std::copy_n(dv.data() + pos * kv_dim, kv_dim, p.paged.v_cache.data() + at);
    }
  }
  const int64_t q_dim = static_cast<int64_t>(shape.n_heads) * shape.head_dim;
  p.q.resize(static_cast<size_t>(p.paged.num_rows() * q_dim));
  std::uniform_real_distribution<float> qd(-2.0f, 2.0f);
  for (auto& x : p.q) x = qd(rng);
  return p;
}

AttentionRefShape ref_shape(const Shape& s) {
  return {s.n_heads, s.n_kv_heads, s.head_dim, 1.0 / std::sqrt(static_cast<double>(s.head_dim))};
}

// Dense causal GQA attention in double, straight from the definition (no max subtraction: the
// scores of these inputs are far from overflow).
std::vector<double> dense_attention(const Problem& p) {
  const Shape& sh = p.shape;
  const int64_t hd = sh.head_dim, kv_dim = static_cast<int64_t>(sh.n_kv_heads) * hd;
  const int64_t q_dim = static_cast<int64_t>(sh.n_heads) * hd;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  std::vector<double> out(p.q.size());
  for (size_t s = 0; s < p.seqs.size(); ++s) {
    for (int32_t r = 0; r < p.seqs[s].rows; ++r) {
      const int64_t row = p.paged.query_start[s] + r;
      const int64_t pos = p.seqs[s].context_start + r;
      for (int64_t h = 0; h < sh.n_heads; ++h) {
        const int64_t kvh = h * sh.n_kv_heads / sh.n_heads;
        std::vector<double> w(static_cast<size_t>(pos + 1));
        double sum = 0;
        for (int64_t j = 0; j <= pos; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d) {
            dot += p.q[row * q_dim + h * hd + d] *
                   fp16_to_fp32(p.dense_k[s][j * kv_dim + kvh * hd + d]);
          }
          w[j] = std::exp(dot * scale);
          sum += w[j];
        }
        for (int64_t d = 0; d < hd; ++d) {
          double acc = 0;
          for (int64_t j = 0; j <= pos; ++j) {
            acc += w[j] * fp16_to_fp32(p.dense_v[s][j * kv_dim + kvh * hd + d]);
          }
          out[row * q_dim + h * hd + d] = acc / sum;
        }
      }
    }
  }
  return out;
}

void expect_matches_dense(const Problem& p, const char* what) {
  std::vector<float> out(p.q.size(), std::nanf(""));
  const Status st =
      paged_attention_ref(std::span<const float>(p.q), p.paged.k_cache, p.paged.v_cache,
                          p.paged.geometry(), p.paged.ref_batch(), ref_shape(p.shape), out);
  ASSERT_TRUE(st.ok()) << what << ": " << st.error().to_string();
  const auto want = dense_attention(p);
  double err = 0, norm = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_TRUE(std::isfinite(out[i])) << what << " element " << i;
    err += (out[i] - want[i]) * (out[i] - want[i]);
    norm += want[i] * want[i];
  }
  // Only the final rounding to float separates the two.
  EXPECT_LT(std::sqrt(err / norm), 1e-6) << what;
}

const Shape kShapes[] = {{9, 3, 64}, {32, 32, 128}, {32, 8, 128}, {8, 2, 64}};

TEST(PagedAttentionRef, DecodeRowsMatchDenseAttention) {
  for (const Shape& sh : kShapes) {
    for (const int32_t bt : {16, 7}) {
      const std::vector<Seq> seqs = {{1, 0}, {1, 6}, {1, 16}, {1, 40}, {1, 101}};
      const auto p = make_problem(sh, seqs, bt, /*shuffle=*/true, 11 + bt);
      expect_matches_dense(p, "decode");
    }
  }
}

TEST(PagedAttentionRef, PrefillRowsMatchDenseAttention) {
  for (const Shape& sh : kShapes) {
    for (const int32_t bt : {16, 7}) {
      // Without prior context, with it, and a chunk ending mid-block.
      const std::vector<Seq> seqs = {{17, 0}, {3, 29}, {33, 16}};
      const auto p = make_problem(sh, seqs, bt, /*shuffle=*/true, 23 + bt);
      expect_matches_dense(p, "prefill");
    }
  }
}

TEST(PagedAttentionRef, MixedBatchInOrderBlocks) {
  const std::vector<Seq> seqs = {{1, 50}, {20, 0}, {1, 0}, {5, 13}};
  const auto p = make_problem({9, 3, 64}, seqs, 16, /*shuffle=*/false, 5);
  expect_matches_dense(p, "mixed");
}

TEST(PagedAttentionRef, Fp16QueryOverloadAgrees) {
  auto p = make_problem({9, 3, 64}, {{4, 9}}, 7, true, 3);
  std::vector<uint16_t> q16(p.q.size());
  for (size_t i = 0; i < q16.size(); ++i) {
    q16[i] = fp32_to_fp16(p.q[i]);
    p.q[i] = fp16_to_fp32(q16[i]);
  }
  std::vector<float> a(p.q.size()), b(p.q.size());
  ASSERT_TRUE(paged_attention_ref(std::span<const float>(p.q), p.paged.k_cache, p.paged.v_cache,
                                  p.paged.geometry(), p.paged.ref_batch(), ref_shape(p.shape), a)
                  .ok());
  ASSERT_TRUE(paged_attention_ref(std::span<const uint16_t>(q16), p.paged.k_cache, p.paged.v_cache,
                                  p.paged.geometry(), p.paged.ref_batch(), ref_shape(p.shape), b)
                  .ok());
  EXPECT_EQ(a, b);
}

TEST(WriteKvCacheRef, RowsLandAtTheirPositions) {
  // Start from a cache holding only the prior context, write the chunk's rows, and compare with
  // the cache built directly from the dense K/V.
  const auto p = make_problem({9, 3, 64}, {{5, 3}, {1, 20}, {9, 0}}, 7, true, 9);
  const int64_t kv_dim = 3 * 64;
  auto k_cache = p.paged.k_cache, v_cache = p.paged.v_cache;
  std::vector<uint16_t> k_rows, v_rows;
  for (size_t s = 0; s < p.seqs.size(); ++s) {
    for (int32_t r = 0; r < p.seqs[s].rows; ++r) {
      const int64_t pos = p.seqs[s].context_start + r;
      const int64_t at = p.paged.slot(s, static_cast<int32_t>(pos));
      std::fill_n(k_cache.data() + at, kv_dim, testing::kNanHalf);
      std::fill_n(v_cache.data() + at, kv_dim, testing::kNanHalf);
      k_rows.insert(k_rows.end(), p.dense_k[s].begin() + pos * kv_dim,
                    p.dense_k[s].begin() + (pos + 1) * kv_dim);
      v_rows.insert(v_rows.end(), p.dense_v[s].begin() + pos * kv_dim,
                    p.dense_v[s].begin() + (pos + 1) * kv_dim);
    }
  }
  ASSERT_NE(k_cache, p.paged.k_cache);
  const Status st =
      write_kv_cache_ref(k_rows, v_rows, p.paged.row_seq, p.paged.row_pos, p.paged.tables,
                         p.paged.max_blocks, p.paged.geometry(), kv_dim, k_cache, v_cache);
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_EQ(k_cache, p.paged.k_cache);
  EXPECT_EQ(v_cache, p.paged.v_cache);
}

TEST(PagedAttentionRef, RejectsMalformedInput) {
  auto p = make_problem({9, 3, 64}, {{3, 5}}, 16, false, 1);
  std::vector<float> out(p.q.size());
  const PagedKvGeometry geo = p.paged.geometry();
  auto run = [&](const AttentionRefShape& shape, const PagedKvGeometry& g) {
    return paged_attention_ref(std::span<const float>(p.q), p.paged.k_cache, p.paged.v_cache, g,
                               p.paged.ref_batch(), shape, out);
  };
  EXPECT_TRUE(run(ref_shape(p.shape), geo).ok());
  EXPECT_EQ(run({9, 2, 64, 0.125}, geo).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(run({9, 3, 0, 0.125}, geo).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(run(ref_shape(p.shape), {p.paged.block_stride, 0}).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(run(ref_shape(p.shape), {100, p.paged.block_tokens}).error().code(),
            ErrorCode::kInvalidArgument);
  // A block id outside the cache is reported, not read.
  p.paged.tables[0] = 1000;
  EXPECT_EQ(run(ref_shape(p.shape), geo).error().code(), ErrorCode::kOutOfRange);
  p.paged.tables[0] = -1;
  EXPECT_EQ(run(ref_shape(p.shape), geo).error().code(), ErrorCode::kOutOfRange);
  // Output of the wrong size.
  p.paged.tables[0] = 0;
  out.pop_back();
  EXPECT_EQ(run(ref_shape(p.shape), geo).error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace qgate
