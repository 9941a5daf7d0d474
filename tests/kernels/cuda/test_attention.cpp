// Paged attention on the GPU (kernels/cuda/attention.h) against the double-precision host
// reference (kernels/cpu/attention_ref.h): write_kv_cache, decode (with and without the split
// workspace), prefill chunks with and without prior context, mixed batches, shuffled block tables,
// block sizes 16/7/32, the GQA shapes of SmolLM2 (9/3, head_dim 64) and Llama-7B-like models
// (32/32 and 32/8, head_dim 128) plus wider groups. Skipped with a message when no GPU is present,
// except the argument checks, which run before any device work and so run everywhere.
//
// Error bound: Q, K and V are fp16 and the reference reads the very same fp16 values, so the only
// differences are the kernels' arithmetic: fp32 accumulation (~1e-6 relative), exp2f (~2 ulp),
// the probabilities rounded to fp16 before the P·V tensor-core product in prefill (2^-12 relative
// per element, random, so ~2^-12 on the output) and the output rounded to fp16 (at most 2^-11 =
// 4.9e-4 relative per element, ~2.8e-4 rms). Together ~3e-4..6e-4 in ‖out−ref‖/‖ref‖; the bound
// 2e-3 (4e-3 per row) leaves margin while any indexing, masking or softmax mistake shows as O(1)
// errors. Unused cache slots are NaN and outputs are NaN-poisoned before each run, so a stray read
// or an unwritten output fails too.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/attention_ref.h"
#include "kernels/cpu/half.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/ops.h"
#include "tests/kernels/attention_test_util.h"
#include "tests/kernels/cuda/cuda_testbed.h"

namespace qgate::cuda {
namespace {

using namespace qgate::testing;  // NOLINT: the shared test plumbing (both headers above)
using Seq = TestSeq;

#define SKIP_WITHOUT_GPU() QGATE_SKIP_WITHOUT_GPU("attention kernels not run")

constexpr double kErrBound = 2e-3;
constexpr double kRowErrBound = 4e-3;

struct Options {
  int32_t block_tokens = 16;
  bool shuffle = true;
  float q_amplitude = 2.0f;   // larger values sharpen the softmax
  int32_t context_slack = 0;  // host_max_context above the real maximum (graph upper bound)
  int32_t rows_slack = 0;     // host_max_query_rows above the real maximum
};

// One step of a batch on the host: the cache before this step's rows are written (prior context
// only, everything else NaN), the new K/V rows, Q and the batch arrays.
struct Problem {
  AttentionShape shape;
  Options opt;
  PagedBatch paged;
  std::vector<uint16_t> k_rows, v_rows, q;
  int32_t max_query_rows = 0;
  int32_t max_context = 0;
};

Problem make_problem(int32_t n_heads, int32_t n_kv_heads, int32_t head_dim,
                     const std::vector<Seq>& seqs, const Options& opt, uint32_t seed) {
  std::mt19937 rng(seed);
  Problem p;
  p.shape = {n_heads, n_kv_heads, head_dim, 1.0f / std::sqrt(static_cast<float>(head_dim))};
  p.opt = opt;
  for (const Seq& s : seqs) {
    p.max_context = std::max(p.max_context, s.length());
    p.max_query_rows = std::max(p.max_query_rows, s.rows);
  }
  p.max_context += opt.context_slack;
  p.max_query_rows += opt.rows_slack;
  const int64_t kv_dim = static_cast<int64_t>(n_kv_heads) * head_dim;
  // A 16-element gap between blocks keeps 16-byte alignment; two spare blocks, the last NaN.
  p.paged = make_paged_batch(seqs, opt.block_tokens, kv_dim, /*block_gap=*/16,
                             /*spare_blocks=*/2, p.max_context, opt.shuffle, rng);
  PagedBatch& kv = p.paged;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int32_t pos = 0; pos < seqs[s].context_start; ++pos) {  // prior context, already cached
      const int64_t at = kv.slot(s, pos);
      for (int64_t i = 0; i < kv_dim; ++i) {
        kv.k_cache[at + i] = random_half(rng, -1.0f, 1.0f);
        kv.v_cache[at + i] = random_half(rng, -1.0f, 1.0f);
      }
    }
    for (int32_t r = 0; r < seqs[s].rows; ++r) {
      for (int64_t i = 0; i < kv_dim; ++i) {
        p.k_rows.push_back(random_half(rng, -1.0f, 1.0f));
        p.v_rows.push_back(random_half(rng, -1.0f, 1.0f));
      }
    }
  }
  p.q.resize(static_cast<size_t>(kv.num_rows()) * n_heads * head_dim);
  for (auto& x : p.q) x = random_half(rng, -opt.q_amplitude, opt.q_amplitude);
  return p;
}

struct GpuResult {
  std::vector<uint16_t> out, k_cache, v_cache;
};

enum class Path { kNoWorkspace, kWorkspace };
// Dense q, k and v arrays, or one array of rows q | k | v as a fused q/k/v matmul writes them
// (the kernels then read q, k and v in place with a row stride of q_dim + 2 kv_dim).
enum class Rows { kDense, kFused };

// The step's q, k and v rows on the device in the chosen form, with the views and strides the
// kernels take.
struct DeviceRows {
  DeviceRows(const Problem& p, Rows form) {
    const int64_t q_dim = static_cast<int64_t>(p.shape.n_heads) * p.shape.head_dim;
    const int64_t kv_dim = p.paged.kv_dim;
    std::vector<uint16_t> all;
    if (form == Rows::kFused) {
      for (int64_t r = 0; r < p.paged.num_rows(); ++r) {
        all.insert(all.end(), p.q.begin() + r * q_dim, p.q.begin() + (r + 1) * q_dim);
        all.insert(all.end(), p.k_rows.begin() + r * kv_dim, p.k_rows.begin() + (r + 1) * kv_dim);
        all.insert(all.end(), p.v_rows.begin() + r * kv_dim, p.v_rows.begin() + (r + 1) * kv_dim);
      }
      q_stride = kv_stride = q_dim + 2 * kv_dim;
      k_at = q_dim;
      v_at = q_dim + kv_dim;
    } else {
      all = p.q;
      all.insert(all.end(), p.k_rows.begin(), p.k_rows.end());
      all.insert(all.end(), p.v_rows.begin(), p.v_rows.end());
      q_stride = q_dim;
      kv_stride = kv_dim;
      k_at = static_cast<int64_t>(p.q.size());
      v_at = k_at + static_cast<int64_t>(p.k_rows.size());
    }
    data = std::make_unique<DeviceArray<uint16_t>>(all);
  }
  __half* q() const { return data->half(); }
  __half* k() const { return data->half() + k_at; }
  __half* v() const { return data->half() + v_at; }

  std::unique_ptr<DeviceArray<uint16_t>> data;
  int64_t q_stride = 0, kv_stride = 0, k_at = 0, v_at = 0;
};

// write_kv_cache then paged_attention on the device, outputs (and workspace) NaN-poisoned first.
GpuResult run_gpu(const Problem& p, Path path, Rows form = Rows::kDense) {
  const PagedBatch& pb = p.paged;
  DeviceArray<uint16_t> kc(pb.k_cache), vc(pb.v_cache);
  const DeviceRows rows(p, form);
  const __half* q_in = rows.q();
  const __half* k_in = rows.k();
  const __half* v_in = rows.v();
  const int64_t q_stride = rows.q_stride;
  const int64_t kv_stride = rows.kv_stride;
  DeviceArray<int32_t> qs(pb.query_start), cs(pb.context_start);
  DeviceArray<int32_t> tb(pb.tables), rs(pb.row_seq), rp(pb.row_pos);
  DeviceArray<uint16_t> out(p.q.size());
  out.poison();

  const PagedKv kv{kc.half(), vc.half(), pb.block_stride, pb.block_tokens};
  const AttentionBatch batch{pb.num_seqs(),    pb.num_rows(), qs.get(), cs.get(),
                             tb.get(),         pb.max_blocks, rs.get(), rp.get(),
                             p.max_query_rows, p.max_context};
  Status st = write_kv_cache(k_in, v_in, kv_stride, kv, batch, p.shape, nullptr);
  EXPECT_TRUE(st.ok()) << st.error().to_string();
  if (path == Path::kWorkspace) {
    const size_t bytes = paged_attention_workspace_bytes(batch, p.shape);
    DeviceArray<uint8_t> ws(bytes);
    ws.poison();
    // Nothing to split on this GPU: no workspace pointer at all, as the engine would pass.
    st = paged_attention(q_in, q_stride, out.half(), kv, batch, p.shape,
                         bytes > 0 ? ws.get() : nullptr, bytes, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());  // before ws is freed
  } else {
    st = paged_attention(q_in, q_stride, out.half(), kv, batch, p.shape, nullptr);
  }
  EXPECT_TRUE(st.ok()) << st.error().to_string();
  return {out.host(), kc.host(), vc.host()};
}

struct HostResult {
  std::vector<float> out;
  std::vector<uint16_t> k_cache, v_cache;
};

HostResult run_ref(const Problem& p) {
  const PagedBatch& pb = p.paged;
  HostResult r{std::vector<float>(p.q.size()), pb.k_cache, pb.v_cache};
  Status st = write_kv_cache_ref(p.k_rows, p.v_rows, pb.row_seq, pb.row_pos, pb.tables,
                                 pb.max_blocks, pb.geometry(), pb.kv_dim, r.k_cache, r.v_cache);
  QGATE_CHECK(st.ok(), "attention test: write_kv_cache_ref failed");
  const AttentionRefShape shape{p.shape.n_heads, p.shape.n_kv_heads, p.shape.head_dim,
                                static_cast<double>(p.shape.scale)};
  st = paged_attention_ref(std::span<const uint16_t>(p.q), r.k_cache, r.v_cache, pb.geometry(),
                           pb.ref_batch(), shape, r.out);
  QGATE_CHECK(st.ok(), "attention test: paged_attention_ref failed");
  return r;
}

// Checks one GPU result against the reference: cache bit-exact, every output written and finite,
// normalized error within the bounds overall and per row.
void expect_close(const Problem& p, const GpuResult& gpu, const HostResult& ref,
                  const std::string& what) {
  EXPECT_TRUE(gpu.k_cache == ref.k_cache) << what << ": K cache differs after write_kv_cache";
  EXPECT_TRUE(gpu.v_cache == ref.v_cache) << what << ": V cache differs after write_kv_cache";
  const size_t row_len = static_cast<size_t>(p.shape.n_heads) * p.shape.head_dim;
  ErrorNorm total;
  double worst_row = 0;
  int32_t worst_at = -1;
  for (int32_t r = 0; r < p.paged.num_rows(); ++r) {
    ErrorNorm row;
    for (size_t i = r * row_len; i < (r + 1) * row_len; ++i) {
      row.add(fp16_to_fp32(gpu.out[i]), ref.out[i]);
    }
    ASSERT_EQ(row.non_finite, 0) << what << ": row " << r << " element " << row.first_non_finite
                                 << " is not finite (unwritten or read garbage)";
    total += row;
    if (row.value() > worst_row) {
      worst_row = row.value();
      worst_at = r;
    }
  }
  EXPECT_LT(total.value(), kErrBound) << what;
  EXPECT_LT(worst_row, kRowErrBound) << what << ": worst row " << worst_at;
}

void check_both_paths(const Problem& p, const std::string& what) {
  const HostResult ref = run_ref(p);
  expect_close(p, run_gpu(p, Path::kNoWorkspace), ref, what + " (no workspace)");
  expect_close(p, run_gpu(p, Path::kWorkspace), ref, what + " (split workspace)");
  expect_close(p, run_gpu(p, Path::kWorkspace, Rows::kFused), ref,
               what + " (split workspace, q/k/v read from fused rows)");
}

const HeadShape kMainShapes[] = {{9, 3, 64}, {32, 8, 128}, {32, 32, 128}};

// Decode rows: one query row per sequence at position context - 1.
std::vector<Seq> decode_seqs(const std::vector<int32_t>& contexts) {
  std::vector<Seq> seqs;
  for (const int32_t c : contexts) seqs.push_back({1, c - 1});
  return seqs;
}

TEST(CudaAttention, WriteKvCacheRoundTrip) {
  SKIP_WITHOUT_GPU();
  for (const int32_t bt : {16, 7}) {
    Options opt;
    opt.block_tokens = bt;
    const auto p = make_problem(9, 3, 64, {{5, 3}, {1, 20}, {17, 0}, {2, 30}}, opt, 100 + bt);
    const GpuResult gpu = run_gpu(p, Path::kNoWorkspace);
    const HostResult ref = run_ref(p);
    EXPECT_TRUE(gpu.k_cache == ref.k_cache) << "block_tokens " << bt;
    EXPECT_TRUE(gpu.v_cache == ref.v_cache) << "block_tokens " << bt;
  }
}

TEST(CudaAttention, DecodeBatches) {
  SKIP_WITHOUT_GPU();
  const std::vector<std::vector<int32_t>> batches = {
      {2049}, {1, 300, 17}, {1, 7, 16, 17, 300, 2049, 1, 7, 16, 17, 300, 2049, 16, 17, 7, 1, 300}};
  uint32_t seed = 1;
  for (const HeadShape& sh : kMainShapes) {
    for (const auto& contexts : batches) {
      const auto p = make_problem(sh.n_heads, sh.n_kv_heads, sh.head_dim, decode_seqs(contexts),
                                  Options{}, seed++);
      check_both_paths(p, "decode " + shape_name(sh) + " batch " + std::to_string(contexts.size()));
    }
  }
}

TEST(CudaAttention, DecodeSharpSoftmaxAndOddBlocks) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 50;
  for (const int32_t bt : {7, 32}) {
    for (const HeadShape& sh : kMainShapes) {
      Options opt;
      opt.block_tokens = bt;
      opt.q_amplitude = 8.0f;  // scores spread over tens of units: the running max moves often
      const auto p = make_problem(sh.n_heads, sh.n_kv_heads, sh.head_dim,
                                  decode_seqs({1000, 65, 129, 3}), opt, seed++);
      check_both_paths(p, "decode sharp " + shape_name(sh) + " bt " + std::to_string(bt));
    }
  }
}

TEST(CudaAttention, DecodeGroupWidths) {
  SKIP_WITHOUT_GPU();
  // Groups of 1, 2, 6 (served by an 8-wide CTA with 2 idle slots), 8, and 16 (two CTAs per kv
  // head), both head sizes.
  const HeadShape shapes[] = {{8, 8, 64},   {8, 4, 128}, {12, 2, 64},
                              {16, 2, 128}, {64, 4, 64}, {32, 2, 128}};
  uint32_t seed = 70;
  for (const HeadShape& sh : shapes) {
    const auto p = make_problem(sh.n_heads, sh.n_kv_heads, sh.head_dim,
                                decode_seqs({700, 1, 64, 129}), Options{}, seed++);
    check_both_paths(p, "decode group " + shape_name(sh));
  }
}

TEST(CudaAttention, PrefillChunks) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 200;
  for (const HeadShape& sh : kMainShapes) {
    for (const int32_t context : {0, 37, 300}) {
      // Chunks of 3, 17, 118 and 128 rows (64-row tile edges) after `context` cached positions.
      std::vector<Seq> seqs;
      for (const int32_t rows : {3, 17, 118, 128}) seqs.push_back({rows, context});
      const auto p = make_problem(sh.n_heads, sh.n_kv_heads, sh.head_dim, seqs, Options{}, seed++);
      check_both_paths(p, "prefill " + shape_name(sh) + " context " + std::to_string(context));
    }
  }
}

TEST(CudaAttention, PrefillOddBlocksAndSharpSoftmax) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 300;
  for (const HeadShape& sh : kMainShapes) {
    Options opt;
    opt.block_tokens = 7;
    opt.q_amplitude = 8.0f;
    const auto p = make_problem(sh.n_heads, sh.n_kv_heads, sh.head_dim,
                                {{65, 0}, {64, 64}, {2, 5}, {100, 13}}, opt, seed++);
    check_both_paths(p, "prefill bt 7 " + shape_name(sh));
  }
}

TEST(CudaAttention, MixedBatches) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 400;
  for (const HeadShape& sh : kMainShapes) {
    const std::vector<Seq> seqs = {{1, 2048}, {118, 0}, {1, 4}, {17, 300}, {3, 16}, {1, 299}};
    const auto p = make_problem(sh.n_heads, sh.n_kv_heads, sh.head_dim, seqs, Options{}, seed++);
    check_both_paths(p, "mixed " + shape_name(sh));
  }
}

TEST(CudaAttention, HostFieldsAreUpperBounds) {
  SKIP_WITHOUT_GPU();
  // A CUDA graph captured for larger bounds replays with a smaller batch: same results.
  Options opt;
  opt.context_slack = 1500;
  opt.rows_slack = 70;
  uint32_t seed = 500;
  for (const HeadShape& sh : kMainShapes) {
    const auto p = make_problem(sh.n_heads, sh.n_kv_heads, sh.head_dim,
                                {{1, 40}, {20, 10}, {1, 700}}, opt, seed++);
    check_both_paths(p, "upper bounds " + shape_name(sh));
  }
}

TEST(CudaAttention, InOrderBlocksAndRepeatability) {
  SKIP_WITHOUT_GPU();
  Options opt;
  opt.shuffle = false;
  const auto p = make_problem(9, 3, 64, {{1, 3000}, {50, 100}, {1, 10}}, opt, 600);
  const HostResult ref = run_ref(p);
  const GpuResult a = run_gpu(p, Path::kWorkspace);
  expect_close(p, a, ref, "in-order blocks");
  // No atomics anywhere: a second run must be bit-identical (a race would show here).
  const GpuResult b = run_gpu(p, Path::kWorkspace);
  EXPECT_TRUE(a.out == b.out) << "two runs on the same inputs differ";
}

// The fused rope + KV write against rope() then write_kv_cache(): every bit of q, k, v and both
// caches (unused slots NaN) the same, both layouts, dense and fused rows, odd block sizes.
TEST(CudaAttention, RopeWriteKvCacheEqualsRopeThenWriteKvCache) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 700;
  for (const HeadShape& sh : kMainShapes) {
    for (const RopeLayout layout : {RopeLayout::kHalves, RopeLayout::kAdjacentPairs}) {
      for (const Rows form : {Rows::kDense, Rows::kFused}) {
        for (const int32_t bt : {16, 7}) {
          Options opt;
          opt.block_tokens = bt;
          const auto p =
              make_problem(sh.n_heads, sh.n_kv_heads, sh.head_dim,
                           {{1, 40}, {20, 10}, {1, 700}, {3, 0}, {118, 2000}}, opt, seed++);
          const PagedBatch& pb = p.paged;
          DeviceArray<int32_t> qs(pb.query_start), cs(pb.context_start);
          DeviceArray<int32_t> tb(pb.tables), rs(pb.row_seq), rp(pb.row_pos);
          const AttentionBatch batch{pb.num_seqs(),    pb.num_rows(), qs.get(), cs.get(),
                                     tb.get(),         pb.max_blocks, rs.get(), rp.get(),
                                     p.max_query_rows, p.max_context};
          const float theta = 100000.0f;
          // Two steps apart.
          DeviceArray<uint16_t> kc_a(pb.k_cache), vc_a(pb.v_cache);
          const DeviceRows a(p, form);
          const PagedKv kv_a{kc_a.half(), vc_a.half(), pb.block_stride, pb.block_tokens};
          Status st =
              rope(a.q(), a.q_stride, a.k(), a.kv_stride, rp.get(), pb.num_rows(), p.shape.n_heads,
                   p.shape.n_kv_heads, p.shape.head_dim, theta, layout, nullptr);
          ASSERT_TRUE(st.ok()) << st.error().to_string();
          st = write_kv_cache(a.k(), a.v(), a.kv_stride, kv_a, batch, p.shape, nullptr);
          ASSERT_TRUE(st.ok()) << st.error().to_string();
          // One fused launch.
          DeviceArray<uint16_t> kc_b(pb.k_cache), vc_b(pb.v_cache);
          const DeviceRows b(p, form);
          const PagedKv kv_b{kc_b.half(), vc_b.half(), pb.block_stride, pb.block_tokens};
          st = rope_write_kv_cache(b.q(), b.q_stride, b.k(), b.v(), b.kv_stride, kv_b, batch,
                                   p.shape, theta, layout, nullptr);
          ASSERT_TRUE(st.ok()) << st.error().to_string();
          const std::string what =
              shape_name(sh) + (layout == RopeLayout::kHalves ? " halves" : " pairs") +
              (form == Rows::kFused ? " fused rows" : " dense rows") + " bt " + std::to_string(bt);
          EXPECT_TRUE(a.data->host() == b.data->host()) << what << ": q/k/v rows differ";
          EXPECT_TRUE(kc_a.host() == kc_b.host()) << what << ": K cache differs";
          EXPECT_TRUE(vc_a.host() == vc_b.host()) << what << ": V cache differs";
          // And the rotation really happened: q differs from the unrotated input somewhere.
          EXPECT_FALSE(b.data->host() == DeviceRows(p, form).data->host()) << what;
        }
      }
    }
  }
}

// Argument checks happen before any device work, so these run without a GPU too; with one, the
// pointers are real allocations so that a check that failed to fire could not fault the device.
class AttentionArgs : public ::testing::Test {
 protected:
  void SetUp() override {
    if (device_available()) {
      for (auto* b : {&buf_a_, &buf_b_, &buf_c_}) {
        auto r = DeviceBuffer::allocate(1 << 20, "attention args test");
        QGATE_CHECK(r.ok(), "attention args test: allocation failed");
        *b = std::move(r).value();
        CUDA_CHECK(cudaMemset(b->get(), 0, b->bytes()));
      }
      a_ = buf_a_.get();
      b_ = buf_b_.get();
      c_ = buf_c_.get();
    } else {
      a_ = host_a_.data();
      b_ = host_b_.data();
      c_ = host_c_.data();
    }
    kv_ = {static_cast<__half*>(a_), static_cast<__half*>(b_), 16 * 192, 16};
    const auto* ints = static_cast<const int32_t*>(c_);
    batch_ = {1, 1, ints, ints, ints, 4, ints, ints, 1, 64};
    shape_ = {9, 3, 64, 0.125f};
  }
  Status attend(const AttentionBatch& b, const AttentionShape& s, const PagedKv& kv) {
    return paged_attention(static_cast<const __half*>(c_), 576, static_cast<__half*>(c_), kv, b, s,
                           nullptr);
  }
  DeviceBuffer buf_a_, buf_b_, buf_c_;
  alignas(16) std::array<uint8_t, 4096> host_a_{}, host_b_{}, host_c_{};
  void *a_ = nullptr, *b_ = nullptr, *c_ = nullptr;
  PagedKv kv_;
  AttentionBatch batch_;
  AttentionShape shape_;
};

TEST_F(AttentionArgs, InvalidShapesAreRejected) {
  AttentionShape s = shape_;
  s.head_dim = 96;
  EXPECT_EQ(attend(batch_, s, kv_).error().code(), ErrorCode::kUnsupported);
  EXPECT_EQ(write_kv_cache(static_cast<const __half*>(c_), static_cast<const __half*>(c_), 192, kv_,
                           batch_, s, nullptr)
                .error()
                .code(),
            ErrorCode::kUnsupported);
  s = shape_;
  s.n_kv_heads = 2;  // 9 heads do not split into 2 groups
  EXPECT_EQ(attend(batch_, s, kv_).error().code(), ErrorCode::kInvalidArgument);
  s = shape_;
  s.n_heads = 0;
  EXPECT_EQ(attend(batch_, s, kv_).error().code(), ErrorCode::kInvalidArgument);
  s = shape_;
  s.scale = std::nanf("");
  EXPECT_EQ(attend(batch_, s, kv_).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(paged_attention_workspace_bytes(batch_, AttentionShape{9, 3, 96, 0.1f}), 0u);
}

TEST_F(AttentionArgs, InvalidLayoutsAndBatchesAreRejected) {
  PagedKv kv = kv_;
  kv.block_stride = 16 * 192 - 8;  // blocks would overlap
  EXPECT_EQ(attend(batch_, shape_, kv).error().code(), ErrorCode::kInvalidArgument);
  kv = kv_;
  kv.block_tokens = 0;
  EXPECT_EQ(attend(batch_, shape_, kv).error().code(), ErrorCode::kInvalidArgument);
  kv = kv_;
  kv.k = reinterpret_cast<__half*>(static_cast<char*>(a_) + 2);  // breaks 16-byte loads
  EXPECT_EQ(attend(batch_, shape_, kv).error().code(), ErrorCode::kInvalidArgument);
  kv = kv_;
  kv.v = nullptr;
  EXPECT_EQ(attend(batch_, shape_, kv).error().code(), ErrorCode::kInvalidArgument);

  AttentionBatch b = batch_;
  b.host_max_context = 4 * 16 + 1;  // beyond what max_blocks * block_tokens can address
  EXPECT_EQ(attend(b, shape_, kv_).error().code(), ErrorCode::kInvalidArgument);
  b = batch_;
  b.host_max_query_rows = 0;
  EXPECT_EQ(attend(b, shape_, kv_).error().code(), ErrorCode::kInvalidArgument);
  b = batch_;
  b.query_start = nullptr;
  EXPECT_EQ(attend(b, shape_, kv_).error().code(), ErrorCode::kInvalidArgument);
  b = batch_;
  b.num_seqs = 0;
  EXPECT_EQ(attend(b, shape_, kv_).error().code(), ErrorCode::kInvalidArgument);
  b = batch_;
  b.row_pos = nullptr;
  EXPECT_EQ(write_kv_cache(static_cast<const __half*>(c_), static_cast<const __half*>(c_), 192, kv_,
                           b, shape_, nullptr)
                .error()
                .code(),
            ErrorCode::kInvalidArgument);
  // Row strides shorter than a row, or breaking 16-byte rows.
  const auto* rows = static_cast<const __half*>(c_);
  EXPECT_EQ(paged_attention(rows, 568, static_cast<__half*>(c_), kv_, batch_, shape_, nullptr)
                .error()
                .code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(paged_attention(rows, 580, static_cast<__half*>(c_), kv_, batch_, shape_, nullptr)
                .error()
                .code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(write_kv_cache(rows, rows, 184, kv_, batch_, shape_, nullptr).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(write_kv_cache(rows, rows, 196, kv_, batch_, shape_, nullptr).error().code(),
            ErrorCode::kInvalidArgument);
  // The fused rope + KV write: the attention shape, layout, theta and strides are checked.
  auto* mrows = static_cast<__half*>(c_);
  auto fused = [&](int64_t q_stride, int64_t kv_stride, const AttentionShape& s, float theta) {
    return rope_write_kv_cache(mrows, q_stride, mrows, mrows, kv_stride, kv_, batch_, s, theta,
                               RopeLayout::kHalves, nullptr);
  };
  EXPECT_EQ(fused(576, 192, shape_, 0.0f).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(fused(576, 192, shape_, INFINITY).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(fused(570, 192, shape_, 1e4f).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(fused(576, 190, shape_, 1e4f).error().code(), ErrorCode::kInvalidArgument);
  AttentionShape s96 = shape_;
  s96.head_dim = 96;
  EXPECT_EQ(fused(864, 288, s96, 1e4f).error().code(), ErrorCode::kUnsupported);
  b = batch_;
  b.row_seq = nullptr;
  EXPECT_EQ(rope_write_kv_cache(mrows, 576, mrows, mrows, 192, kv_, b, shape_, 1e4f,
                                RopeLayout::kHalves, nullptr)
                .error()
                .code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(rope_write_kv_cache(mrows, 576, mrows, mrows, 192, kv_, batch_, shape_, 1e4f,
                                static_cast<RopeLayout>(7), nullptr)
                .error()
                .code(),
            ErrorCode::kInvalidArgument);
  // An empty batch is a no-op, not an error.
  b = batch_;
  b.num_rows = 0;
  EXPECT_TRUE(attend(b, shape_, kv_).ok());
}

TEST_F(AttentionArgs, WorkspaceTooSmallIsRejected) {
  // Batch 1 with a long context always splits on any GPU (and with the fallback SM count).
  AttentionBatch b = batch_;
  b.max_blocks = 256;
  b.host_max_context = 4096;
  const size_t need = paged_attention_workspace_bytes(b, shape_);
  ASSERT_GT(need, 0u);
  const Status st = paged_attention(static_cast<const __half*>(c_), 576, static_cast<__half*>(c_),
                                    kv_, b, shape_, a_, need - 1, nullptr);
  EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace qgate::cuda
