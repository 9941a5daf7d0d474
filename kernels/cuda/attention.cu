// Paged attention entry points: argument validation, the KV-cache write, and the dispatch of
// decode and prefill kernels (attention_decode.cu, attention_prefill.cu; the plan is described in
// attention_internal.cuh). Host references: kernels/cpu/attention_ref.h.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_internal.cuh"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/rope_internal.cuh"

namespace qgate::cuda {
namespace {

namespace ad = attention_detail;

// One thread per 16-byte chunk (8 halves) of a row: a K/V row of kv_dim halves is read from its
// (possibly strided) source row and written with kv_dim / 8 coalesced 16-byte stores into its
// block slot.
__global__ void __launch_bounds__(256)
    write_kv_cache_kernel(const __half* k, const __half* v, int64_t kv_stride, __half* k_cache,
                          __half* v_cache, int64_t block_stride, int32_t block_tokens,
                          const int32_t* row_seq, const int32_t* row_pos,
                          const int32_t* block_tables, int32_t max_blocks, int32_t num_seqs,
                          int32_t num_rows, int32_t kv_dim) {
  const int32_t chunks = kv_dim / 8;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(num_rows) * chunks) return;
  const int32_t row = static_cast<int32_t>(i / chunks);
  const int32_t c = static_cast<int32_t>(i % chunks);
  const int64_t slot = ad::row_slot(row, row_seq, row_pos, block_tables, max_blocks, num_seqs,
                                    block_tokens, block_stride, kv_dim);
  if (slot < 0) return;
  const int64_t dst = slot + c * 8;
  const int64_t src = static_cast<int64_t>(row) * kv_stride + c * 8;
  const uint4 kx = __ldg(reinterpret_cast<const uint4*>(k + src));
  const uint4 vx = __ldg(reinterpret_cast<const uint4*>(v + src));
  *reinterpret_cast<uint4*>(k_cache + dst) = kx;
  *reinterpret_cast<uint4*>(v_cache + dst) = vx;
}

// rope_kernel (ops.cu) and write_kv_cache_kernel in one: a block per row builds the row's cos/sin
// table, rotates every q and k pair in place with the same helper as rope_kernel, stores each
// rotated k pair in its cache slot too, then copies the v row in 16-byte chunks. A row whose cache
// slot the device-side checks refuse is rotated but not written, as in the two separate kernels.
template <bool kHalves>
__global__ void __launch_bounds__(256)
    rope_write_kv_cache_kernel(__half* __restrict__ q, int64_t q_stride, __half* __restrict__ k,
                               const __half* __restrict__ v, int64_t kv_stride,
                               __half* __restrict__ k_cache, __half* __restrict__ v_cache,
                               int64_t block_stride, int32_t block_tokens, const int32_t* row_seq,
                               const int32_t* row_pos, const int32_t* block_tables,
                               int32_t max_blocks, int32_t num_seqs, int n_heads, int n_kv_heads,
                               int head_dim, float theta) {
  __shared__ float cos_t[rope_detail::kMaxHalf];
  __shared__ float sin_t[rope_detail::kMaxHalf];
  const int32_t row = static_cast<int32_t>(blockIdx.x);
  const int half = head_dim / 2;
  const int32_t kv_dim = n_kv_heads * head_dim;
  rope_detail::build_table(row_pos[row], head_dim, theta, cos_t, sin_t);
  const int64_t slot = ad::row_slot(row, row_seq, row_pos, block_tables, max_blocks, num_seqs,
                                    block_tokens, block_stride, kv_dim);
  __syncthreads();
  const int q_pairs = n_heads * half;
  const int pairs = (n_heads + n_kv_heads) * half;
  __half* qr = q + static_cast<int64_t>(row) * q_stride;
  __half* kr = k + static_cast<int64_t>(row) * kv_stride;
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    const bool is_q = p < q_pairs;
    const int pp = is_q ? p : p - q_pairs;
    const int h = pp / half;
    const int i = pp - h * half;
    const int ia = h * head_dim + rope_detail::pair_a<kHalves>(i);
    const int ib = h * head_dim + rope_detail::pair_b<kHalves>(i, half);
    __half* x = is_q ? qr : kr;
    rope_detail::rotate(x[ia], x[ib], cos_t[i], sin_t[i]);
    if (!is_q && slot >= 0) {
      k_cache[slot + ia] = x[ia];
      k_cache[slot + ib] = x[ib];
    }
  }
  if (slot < 0) return;
  const __half* vr = v + static_cast<int64_t>(row) * kv_stride;
  for (int c = threadIdx.x; c < kv_dim / 8; c += blockDim.x) {
    *reinterpret_cast<uint4*>(v_cache + slot + c * 8) =
        __ldg(reinterpret_cast<const uint4*>(vr + c * 8));
  }
}

Error invalid(const std::string& what) {
  return make_error(ErrorCode::kInvalidArgument, "paged attention: " + what);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

constexpr int32_t kMaxGridYZ = 65535;
constexpr int32_t kMaxContext = 1 << 30;

Status validate_shape(const AttentionShape& s) {
  if (s.n_heads <= 0 || s.n_kv_heads <= 0) return invalid("n_heads and n_kv_heads must be positive");
  if (s.n_heads % s.n_kv_heads != 0) {
    return invalid("n_heads " + std::to_string(s.n_heads) + " is not a multiple of n_kv_heads " +
                   std::to_string(s.n_kv_heads));
  }
  if (s.n_heads > kMaxGridYZ) return invalid("n_heads is larger than a grid dimension allows");
  if (s.head_dim != 64 && s.head_dim != 128) {
    return make_error(ErrorCode::kUnsupported,
                      "paged attention: head_dim " + std::to_string(s.head_dim) +
                          " has no kernel (specialized for 64 and 128)");
  }
  if (!std::isfinite(s.scale) || s.scale <= 0.0f) return invalid("scale must be finite and positive");
  return Status::Ok();
}

Status validate_kv(const PagedKv& kv, const AttentionShape& s) {
  if (kv.k == nullptr || kv.v == nullptr) return invalid("null KV cache pointer");
  // 16-byte accesses: the bases, the block stride and kv_dim must keep every row 16-byte aligned.
  if (!aligned16(kv.k) || !aligned16(kv.v)) return invalid("KV cache pointers must be 16-byte aligned");
  if (kv.block_tokens <= 0) return invalid("block_tokens must be positive");
  const int64_t kv_dim = static_cast<int64_t>(s.n_kv_heads) * s.head_dim;
  if (kv.block_stride < kv.block_tokens * kv_dim) {
    return invalid("block_stride " + std::to_string(kv.block_stride) +
                   " is smaller than block_tokens * kv_dim");
  }
  if (kv.block_stride % 8 != 0) return invalid("block_stride must be a multiple of 8 elements");
  return Status::Ok();
}

// Rows of `width` elements read `stride` apart with 16-byte loads.
Status validate_row_stride(const char* name, int64_t stride, int64_t width) {
  if (stride < width || stride % 8 != 0) {
    return invalid(std::string(name) + " " + std::to_string(stride) + " must be at least " +
                   std::to_string(width) + " and a multiple of 8");
  }
  return Status::Ok();
}

// Fields every kernel reads; num_rows == 0 is checked by the caller (nothing to do).
Status validate_batch_common(const AttentionBatch& b) {
  if (b.num_rows < 0) return invalid("num_rows must not be negative");
  if (b.num_seqs <= 0) return invalid("num_seqs must be positive");
  if (b.num_seqs > kMaxGridYZ) return invalid("num_seqs is larger than a grid dimension allows");
  if (b.block_tables == nullptr) return invalid("null block_tables");
  if (b.max_blocks <= 0) return invalid("max_blocks must be positive");
  return Status::Ok();
}

int32_t device_sm_count() {
  int dev = 0;
  int sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      sms <= 0) {
    cudaGetLastError();
    return 132;  // an H100's count; only the split heuristic depends on it
  }
  return sms;
}

ad::DecodePlan plan_for(const AttentionBatch& batch, const AttentionShape& shape, bool split) {
  return ad::plan_decode(batch.num_seqs, shape.n_kv_heads, shape.n_heads / shape.n_kv_heads,
                         shape.head_dim, batch.host_max_context, device_sm_count(), split);
}

}  // namespace

Status write_kv_cache(const __half* k, const __half* v, int64_t kv_stride, const PagedKv& kv,
                      const AttentionBatch& batch, const AttentionShape& shape,
                      cudaStream_t stream) {
  QGATE_TRY_STATUS(validate_shape(shape));
  QGATE_TRY_STATUS(validate_kv(kv, shape));
  if (batch.num_rows == 0) return Status::Ok();
  QGATE_TRY_STATUS(validate_batch_common(batch));
  if (batch.row_seq == nullptr || batch.row_pos == nullptr) return invalid("null row_seq/row_pos");
  if (k == nullptr || v == nullptr) return invalid("null k/v rows");
  if (!aligned16(k) || !aligned16(v)) return invalid("k/v rows must be 16-byte aligned");
  const int32_t kv_dim = shape.n_kv_heads * shape.head_dim;
  QGATE_TRY_STATUS(validate_row_stride("kv_stride", kv_stride, kv_dim));
  const int64_t threads = static_cast<int64_t>(batch.num_rows) * (kv_dim / 8);
  const int block = 256;
  const int64_t blocks = (threads + block - 1) / block;
  if (blocks > INT32_MAX) return invalid("too many rows for one launch");
  write_kv_cache_kernel<<<static_cast<unsigned>(blocks), block, 0, stream>>>(
      k, v, kv_stride, kv.k, kv.v, kv.block_stride, kv.block_tokens, batch.row_seq, batch.row_pos,
      batch.block_tables, batch.max_blocks, batch.num_seqs, batch.num_rows, kv_dim);
  return launch_status("write_kv_cache kernel");
}

Status rope_write_kv_cache(__half* q, int64_t q_stride, __half* k, const __half* v,
                           int64_t kv_stride, const PagedKv& kv, const AttentionBatch& batch,
                           const AttentionShape& shape, float theta, RopeLayout layout,
                           cudaStream_t stream) {
  QGATE_TRY_STATUS(validate_shape(shape));
  QGATE_TRY_STATUS(validate_kv(kv, shape));
  if (!(theta > 0.0f) || theta == INFINITY) return invalid("theta must be finite and > 0");
  if (layout != RopeLayout::kAdjacentPairs && layout != RopeLayout::kHalves) {
    return invalid("unknown rope layout");
  }
  if (batch.num_rows == 0) return Status::Ok();
  QGATE_TRY_STATUS(validate_batch_common(batch));
  if (batch.row_seq == nullptr || batch.row_pos == nullptr) return invalid("null row_seq/row_pos");
  if (q == nullptr || k == nullptr || v == nullptr) return invalid("null q/k/v rows");
  if (!aligned16(v)) return invalid("v rows must be 16-byte aligned");
  const int32_t kv_dim = shape.n_kv_heads * shape.head_dim;
  QGATE_TRY_STATUS(validate_row_stride("q_stride", q_stride,
                                       static_cast<int64_t>(shape.n_heads) * shape.head_dim));
  QGATE_TRY_STATUS(validate_row_stride("kv_stride", kv_stride, kv_dim));
  if (static_cast<int64_t>(shape.n_heads + shape.n_kv_heads) * (shape.head_dim / 2) > INT32_MAX) {
    return invalid("too many heads for one launch");
  }
  const int pairs = (shape.n_heads + shape.n_kv_heads) * (shape.head_dim / 2);
  const int threads = pairs >= 256 ? 256 : ((pairs + 31) / 32) * 32;
  const auto blocks = static_cast<unsigned>(batch.num_rows);
  if (layout == RopeLayout::kHalves) {
    rope_write_kv_cache_kernel<true><<<blocks, threads, 0, stream>>>(
        q, q_stride, k, v, kv_stride, kv.k, kv.v, kv.block_stride, kv.block_tokens, batch.row_seq,
        batch.row_pos, batch.block_tables, batch.max_blocks, batch.num_seqs, shape.n_heads,
        shape.n_kv_heads, shape.head_dim, theta);
  } else {
    rope_write_kv_cache_kernel<false><<<blocks, threads, 0, stream>>>(
        q, q_stride, k, v, kv_stride, kv.k, kv.v, kv.block_stride, kv.block_tokens, batch.row_seq,
        batch.row_pos, batch.block_tables, batch.max_blocks, batch.num_seqs, shape.n_heads,
        shape.n_kv_heads, shape.head_dim, theta);
  }
  return launch_status("rope_write_kv_cache kernel");
}

size_t paged_attention_workspace_bytes(const AttentionBatch& batch, const AttentionShape& shape) {
  if (!validate_shape(shape).ok() || batch.num_seqs <= 0 || batch.host_max_context <= 0 ||
      batch.host_max_context > kMaxContext) {
    return 0;
  }
  return ad::decode_workspace_bytes(plan_for(batch, shape, true), batch.num_seqs, shape.n_heads,
                                    shape.head_dim);
}

Status paged_attention(const __half* q, int64_t q_stride, __half* out, const PagedKv& kv,
                       const AttentionBatch& batch, const AttentionShape& shape,
                       cudaStream_t stream) {
  return paged_attention(q, q_stride, out, kv, batch, shape, nullptr, 0, stream);
}

Status paged_attention(const __half* q, int64_t q_stride, __half* out, const PagedKv& kv,
                       const AttentionBatch& batch, const AttentionShape& shape, void* workspace,
                       size_t workspace_bytes, cudaStream_t stream) {
  QGATE_TRY_STATUS(validate_shape(shape));
  QGATE_TRY_STATUS(validate_kv(kv, shape));
  if (batch.num_rows == 0) return Status::Ok();
  QGATE_TRY_STATUS(validate_batch_common(batch));
  if (batch.query_start == nullptr || batch.context_start == nullptr) {
    return invalid("null query_start/context_start");
  }
  if (q == nullptr || out == nullptr) return invalid("null q/out");
  if (!aligned16(q) || !aligned16(out)) return invalid("q/out must be 16-byte aligned");
  QGATE_TRY_STATUS(validate_row_stride("q_stride", q_stride,
                                       static_cast<int64_t>(shape.n_heads) * shape.head_dim));
  if (batch.host_max_query_rows < 1) return invalid("host_max_query_rows must be at least 1");
  if (batch.host_max_context < 1 || batch.host_max_context > kMaxContext) {
    return invalid("host_max_context " + std::to_string(batch.host_max_context) +
                   " is out of range");
  }
  if (batch.host_max_context > static_cast<int64_t>(batch.max_blocks) * kv.block_tokens) {
    return invalid("host_max_context " + std::to_string(batch.host_max_context) +
                   " is beyond max_blocks * block_tokens");
  }

  const ad::DecodePlan plan = plan_for(batch, shape, workspace != nullptr);
  if (plan.splits > kMaxGridYZ) return invalid("context too long for one decode grid");
  if (plan.splits > 1) {
    const size_t need =
        ad::decode_workspace_bytes(plan, batch.num_seqs, shape.n_heads, shape.head_dim);
    if (workspace_bytes < need) {
      return invalid("workspace of " + std::to_string(workspace_bytes) + " bytes is smaller than the " +
                     std::to_string(need) + " paged_attention_workspace_bytes asks for");
    }
    if (!aligned16(workspace)) return invalid("workspace must be 16-byte aligned");
  }

  ad::Params p;
  p.q = q;
  p.q_stride = q_stride;
  p.out = out;
  p.k = kv.k;
  p.v = kv.v;
  p.block_stride = kv.block_stride;
  p.block_tokens = kv.block_tokens;
  p.query_start = batch.query_start;
  p.context_start = batch.context_start;
  p.block_tables = batch.block_tables;
  p.max_blocks = batch.max_blocks;
  p.num_seqs = batch.num_seqs;
  p.n_heads = shape.n_heads;
  p.n_kv_heads = shape.n_kv_heads;
  p.group = shape.n_heads / shape.n_kv_heads;
  p.kv_dim = shape.n_kv_heads * shape.head_dim;
  p.scale_log2 = shape.scale * 1.4426950408889634f;
  p.max_context = batch.host_max_context;

  QGATE_TRY_STATUS(ad::launch_decode(p, shape.head_dim, plan, workspace, stream));
  if (batch.host_max_query_rows > 1) {
    QGATE_TRY_STATUS(ad::launch_prefill(p, shape.head_dim, batch.host_max_query_rows, stream));
  }
  return Status::Ok();
}

}  // namespace qgate::cuda
