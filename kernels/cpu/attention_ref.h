// Host reference of the paged attention of kernels/cuda/attention.h: the same KV layout and batch
// semantics, on host copies (spans instead of device pointers), computed in double. It is the
// oracle the CUDA kernels are tested against, so it favours plain loops over speed and validates
// everything it reads (a bad block id is an error here, not an out-of-bounds read).
//
// KV layout (one layer): block b starts at element b * block_stride of k_cache / v_cache; position
// i of the block at + i * kv_dim, kv_dim = n_kv_heads * head_dim; fp16 bits (kernels/cpu/half.h).
// Batch: rows of sequence s are [query_start[s], query_start[s + 1]) at positions
// context_start[s] + (row - query_start[s]); each row attends causally to positions [0, its own]
// through block_tables[s * max_blocks ...].
//
// Threading: pure functions of their arguments.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/status.h"

namespace qgate {

struct PagedKvGeometry {
  int64_t block_stride = 0;  // elements between blocks (>= block_tokens * kv_dim)
  int32_t block_tokens = 0;
};

struct AttentionRefBatch {
  std::span<const int32_t> query_start;    // [num_seqs + 1], non-decreasing, starting at 0
  std::span<const int32_t> context_start;  // [num_seqs]
  std::span<const int32_t> block_tables;   // [num_seqs][max_blocks]
  int32_t max_blocks = 0;
};

struct AttentionRefShape {
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;  // n_heads must be a multiple
  int32_t head_dim = 0;    // any positive size (the reference is not specialized)
  double scale = 0;
};

// out[row][head][:] = softmax(q · Kᵀ * scale) · V over the row's causal context.
// q and out: [num_rows][n_heads][head_dim] (q as fp32 values or as fp16 bits).
Status paged_attention_ref(std::span<const float> q, std::span<const uint16_t> k_cache,
                           std::span<const uint16_t> v_cache, const PagedKvGeometry& kv,
                           const AttentionRefBatch& batch, const AttentionRefShape& shape,
                           std::span<float> out);
Status paged_attention_ref(std::span<const uint16_t> q_fp16, std::span<const uint16_t> k_cache,
                           std::span<const uint16_t> v_cache, const PagedKvGeometry& kv,
                           const AttentionRefBatch& batch, const AttentionRefShape& shape,
                           std::span<float> out);

// Copies k/v rows ([num_rows][kv_dim], fp16 bits) into the cache at each row's position:
// row r goes to block block_tables[row_seq[r] * max_blocks + row_pos[r] / block_tokens].
Status write_kv_cache_ref(std::span<const uint16_t> k, std::span<const uint16_t> v,
                          std::span<const int32_t> row_seq, std::span<const int32_t> row_pos,
                          std::span<const int32_t> block_tables, int32_t max_blocks,
                          const PagedKvGeometry& kv, int64_t kv_dim, std::span<uint16_t> k_cache,
                          std::span<uint16_t> v_cache);

}  // namespace qgate
