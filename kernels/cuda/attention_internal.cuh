// Shared pieces of the paged attention kernels (attention.cu, attention_decode.cu,
// attention_prefill.cu): the validated parameter block the launchers hand to the kernels, the
// decode split plan, and the small device helpers (16-byte fp16 vectors, cp.async, mma.sync).
//
// Dispatch of one paged_attention call (attention.cu):
//   - decode kernel over every sequence; a CTA whose sequence does not have exactly one query row
//     returns at once (those rows belong to the prefill kernel);
//   - with a workspace, decode splits long contexts into chunks (flash-decoding) and a combine
//     kernel merges the partial softmax states;
//   - prefill kernel when host_max_query_rows > 1; its CTAs skip sequences of one row.
// Every grid is sized from host fields only, so a captured CUDA graph replays with any batch that
// stays within them.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/attention.h"
#include "kernels/status.h"

namespace qgate::cuda::attention_detail {

constexpr int kThreads = 128;  // every attention kernel runs 4 warps per CTA

// Everything a kernel needs, validated by the launcher.
struct Params {
  const __half* q = nullptr;
  int64_t q_stride = 0;  // elements between q rows (>= n_heads * head_dim)
  __half* out = nullptr;
  const __half* k = nullptr;
  const __half* v = nullptr;
  int64_t block_stride = 0;
  int32_t block_tokens = 0;
  const int32_t* query_start = nullptr;
  const int32_t* context_start = nullptr;
  const int32_t* block_tables = nullptr;
  int32_t max_blocks = 0;
  int32_t num_seqs = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t group = 0;        // n_heads / n_kv_heads
  int32_t kv_dim = 0;       // n_kv_heads * head_dim
  float scale_log2 = 0;     // scale * log2(e): softmax runs on exp2
  int32_t max_context = 0;  // host_max_context: device contexts are clamped to it
};

// How the decode kernel covers the GQA group and the context.
struct DecodePlan {
  int32_t heads_per_cta = 1;  // 1, 2, 4 or 8 (the kernel's template group width)
  int32_t head_splits = 1;    // CTAs per kv head: ceil(group / heads_per_cta)
  int32_t tile = 0;           // positions per inner tile of the kernel
  int32_t chunk = 0;          // positions per split (a multiple of tile)
  int32_t splits = 1;         // chunks of host_max_context; 1 = no workspace used
};

// Positions one decode tile covers: (128 threads / (head_dim / 8) lanes per row) rows per step,
// times steps per tile (fewer for wide groups, whose accumulators take the registers).
__host__ __device__ constexpr int decode_lanes_per_row(int head_dim) { return head_dim / 8; }
__host__ __device__ constexpr int decode_steps(int heads_per_cta) { return heads_per_cta >= 8 ? 4 : 8; }
__host__ __device__ constexpr int decode_tile(int head_dim, int heads_per_cta) {
  return kThreads / decode_lanes_per_row(head_dim) * decode_steps(heads_per_cta);
}

// allow_split = false plans one chunk covering the whole context (no workspace).
DecodePlan plan_decode(int32_t num_seqs, int32_t n_kv_heads, int32_t group, int32_t head_dim,
                       int32_t max_context, int32_t sm_count, bool allow_split);

// Workspace layout of a split plan: partial outputs [num_seqs][n_heads][splits][head_dim] fp32,
// then (max, sum) pairs [num_seqs][n_heads][splits] float2.
size_t decode_workspace_bytes(const DecodePlan& plan, int32_t num_seqs, int32_t n_heads,
                              int32_t head_dim);

Status launch_decode(const Params& p, int32_t head_dim, const DecodePlan& plan, void* workspace,
                     cudaStream_t stream);
Status launch_prefill(const Params& p, int32_t head_dim, int32_t max_query_rows,
                      cudaStream_t stream);

// ---- device helpers --------------------------------------------------------------------------

// 8 halves (one 16-byte load) to floats.
__device__ __forceinline__ void half8_to_float(const uint4& raw, float (&f)[8]) {
  const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 x = __half22float2(h[i]);
    f[2 * i] = x.x;
    f[2 * i + 1] = x.y;
  }
}

__device__ __forceinline__ uint4 float8_to_half(const float (&f)[8]) {
  uint4 raw;
  __half2* h = reinterpret_cast<__half2*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2half2_rn(f[2 * i], f[2 * i + 1]);
  return raw;
}

// Element offset of position `pos` in a paged layer, given the sequence's block table. 64-bit: a
// large pool passes 2^31 elements.
__device__ __forceinline__ int64_t kv_offset(const int32_t* table, int32_t pos, int32_t block_tokens,
                                             int64_t block_stride, int32_t kv_dim) {
  const int32_t b = pos / block_tokens;
  return static_cast<int64_t>(__ldg(table + b)) * block_stride +
         static_cast<int64_t>(pos - b * block_tokens) * kv_dim;
}

// Where row `row` of this step goes in a paged layer: the element offset of its position, or -1
// when the device-side indices are ones the host could not validate (sequence out of range,
// position past the block table, an unassigned block). Such a row is dropped, never written out
// of bounds; the engine validates block tables before it builds the batch.
__device__ __forceinline__ int64_t row_slot(int32_t row, const int32_t* row_seq,
                                            const int32_t* row_pos, const int32_t* block_tables,
                                            int32_t max_blocks, int32_t num_seqs,
                                            int32_t block_tokens, int64_t block_stride,
                                            int32_t kv_dim) {
  const int32_t seq = row_seq[row];
  const int32_t pos = row_pos[row];
  if (seq < 0 || seq >= num_seqs || pos < 0 || pos / block_tokens >= max_blocks) return -1;
  const int32_t* table = block_tables + static_cast<int64_t>(seq) * max_blocks;
  if (table[pos / block_tokens] < 0) return -1;
  return kv_offset(table, pos, block_tokens, block_stride, kv_dim);
}

}  // namespace qgate::cuda::attention_detail
