// Attention of the Llama forward pass on the GPU over a paged fp16 KV cache, for a batch of
// sequence chunks: decode (one query row per sequence) and prefill (many rows per sequence,
// causal) in the same call; grouped-query attention (n_heads a multiple of n_kv_heads).
//
// KV layout (per layer, mirrors the CPU PagedKvCache): block b of the layer starts at
// base + b * block_stride elements; position i of the block at + i * kv_dim, kv_dim =
// n_kv_heads * head_dim; keys and values in separate arrays.
//
// Batch description: the rows of sequence s are [query_start[s], query_start[s + 1]) and sit at
// positions context_start[s] + (row - query_start[s]); each row attends to positions [0, its
// own] of its sequence through block_tables[s * max_blocks ...]. row_seq/row_pos give the same
// per row, for element-wise kernels. Device arrays; the host_* fields size the grids (a CUDA graph
// captured for a decode step replays with the same grid, so they are upper bounds, not exact).
//
// Threading: launches on the given stream.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/ops.h"
#include "kernels/status.h"

namespace qgate::cuda {

struct PagedKv {
  __half* k = nullptr;  // this layer's base
  __half* v = nullptr;
  int64_t block_stride = 0;  // elements between blocks
  int32_t block_tokens = 0;
};

struct AttentionBatch {
  int32_t num_seqs = 0;
  int32_t num_rows = 0;
  const int32_t* query_start = nullptr;    // [num_seqs + 1]
  const int32_t* context_start = nullptr;  // [num_seqs]
  const int32_t* block_tables = nullptr;   // [num_seqs][max_blocks]
  int32_t max_blocks = 0;
  const int32_t* row_seq = nullptr;  // [num_rows]
  const int32_t* row_pos = nullptr;  // [num_rows]
  int32_t host_max_query_rows = 0;   // upper bound of any sequence's rows in this batch
  int32_t host_max_context = 0;      // upper bound of any row's position + 1
};

struct AttentionShape {
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;  // 64 or 128 (the kernels are specialized)
  float scale = 0;       // usually 1/sqrt(head_dim)
};

// rope() on this step's q and k rows (kernels/cuda/ops.h) followed by write_kv_cache(), in one
// launch: q and k rotated in place, the rotated k and the v rows written to the cache, every bit
// as the two separate calls leave it (the tests check exactly that). theta and layout as for
// rope(); q_stride and kv_stride as below.
Status rope_write_kv_cache(__half* q, int64_t q_stride, __half* k, const __half* v,
                           int64_t kv_stride, const PagedKv& kv, const AttentionBatch& batch,
                           const AttentionShape& shape, float theta, RopeLayout layout,
                           cudaStream_t stream);

// Writes k and v rows (kv_dim elements each, consecutive rows `kv_stride` elements apart) into
// the cache at each row's position. kv_stride is kv_dim for dense [num_rows][kv_dim] arrays and
// q_dim + 2 kv_dim for views into one fused q/k/v matmul output; it must be >= kv_dim and a
// multiple of 8 (16-byte rows).
Status write_kv_cache(const __half* k, const __half* v, int64_t kv_stride, const PagedKv& kv,
                      const AttentionBatch& batch, const AttentionShape& shape,
                      cudaStream_t stream);

// out[row][head][:] = softmax(q · Kᵀ * scale) · V over the row's causal context, read from the
// cache (so write_kv_cache for this step must run first). q: rows of n_heads * head_dim elements,
// `q_stride` apart (>= n_heads * head_dim, a multiple of 8: a fused q/k/v output can be read in
// place); out: dense [num_rows][n_heads][head_dim].
// Sequences of exactly one row go to the decode kernel, longer chunks to the prefill kernel; a
// mixed batch runs both, each skipping the other's sequences. This form uses no workspace, so a
// decode row is handled by one CTA per kv head over its whole context (slow at small batch and
// long context: prefer the workspace form below).
Status paged_attention(const __half* q, int64_t q_stride, __half* out, const PagedKv& kv,
                       const AttentionBatch& batch, const AttentionShape& shape,
                       cudaStream_t stream);

// Device bytes of scratch that paged_attention with a workspace needs for this batch and shape:
// decode contexts are then split into chunks processed by separate CTAs (flash-decoding) and
// merged by a second kernel. 0 when no split pays (large batch or short host_max_context) or the
// shape is invalid. A pure function of (num_seqs, host_max_context, shape) and the current
// device's SM count, so a CUDA graph can size its workspace once for the batch it captures.
size_t paged_attention_workspace_bytes(const AttentionBatch& batch, const AttentionShape& shape);

// As above with a caller-owned workspace (16-byte aligned device memory of at least
// paged_attention_workspace_bytes(batch, shape) bytes, not used by anything else until the
// launched work completes). workspace == nullptr behaves like the form without one.
Status paged_attention(const __half* q, int64_t q_stride, __half* out, const PagedKv& kv,
                       const AttentionBatch& batch, const AttentionShape& shape, void* workspace,
                       size_t workspace_bytes, cudaStream_t stream);

}  // namespace qgate::cuda
