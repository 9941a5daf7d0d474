// Host-side pieces shared by the attention tests (tests/kernels/test_attention_ref.cpp checks the
// reference, tests/kernels/cuda/test_attention.cpp the CUDA kernels against it): a batch of
// sequences laid out in a paged KV cache the way kernels/cpu/attention_ref.h describes it.
//
// Contract: header-only, no CUDA. make_paged_batch draws from the caller's generator only to
// shuffle the block ids, and before anything else it does, so the caller's later draws (the K/V
// and Q values) follow in a fixed order. The cache starts all NaN: a kernel or reference that
// reads a slot nobody wrote poisons its result.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/attention_ref.h"
#include "kernels/cpu/half.h"

namespace qgate::testing {

inline constexpr uint16_t kNanHalf = 0x7E00;

inline uint16_t random_half(std::mt19937& rng, float lo, float hi) {
  return fp32_to_fp16(std::uniform_real_distribution<float>(lo, hi)(rng));
}

struct HeadShape {
  int32_t n_heads, n_kv_heads, head_dim;
};

inline std::string shape_name(const HeadShape& s) {
  return std::to_string(s.n_heads) + "/" + std::to_string(s.n_kv_heads) + " h" +
         std::to_string(s.head_dim);
}

// `rows` new query rows at positions [context_start, context_start + rows).
struct TestSeq {
  int32_t rows;
  int32_t context_start;
  int32_t length() const { return context_start + rows; }
};

// Block tables over an all-NaN K/V pool and the per-sequence / per-row batch arrays.
struct PagedBatch {
  int32_t block_tokens = 0;
  int64_t kv_dim = 0;
  int64_t block_stride = 0;  // elements between blocks, >= block_tokens * kv_dim
  int32_t max_blocks = 0;
  std::vector<uint16_t> k_cache, v_cache;  // [blocks * block_stride] fp16 bits
  std::vector<int32_t> tables;             // [seq][max_blocks]
  std::vector<int32_t> query_start;        // [seqs + 1]
  std::vector<int32_t> context_start;      // [seqs]
  std::vector<int32_t> row_seq, row_pos;   // [rows]

  int32_t num_rows() const { return query_start.back(); }
  int32_t num_seqs() const { return static_cast<int32_t>(context_start.size()); }
  // Element offset in k_cache / v_cache of the kv row of position `pos` of sequence `seq`.
  int64_t slot(size_t seq, int32_t pos) const {
    return tables[seq * max_blocks + pos / block_tokens] * block_stride +
           (pos % block_tokens) * kv_dim;
  }
  PagedKvGeometry geometry() const { return {block_stride, block_tokens}; }
  AttentionRefBatch ref_batch() const { return {query_start, context_start, tables, max_blocks}; }
};

// Each sequence takes the next ceil(length / block_tokens) ids of a pool of that many blocks plus
// `spare_blocks` (>= 1). With `shuffle` the ids are permuted, all but the last: that one stays NaN
// and fills the tables' unused entries. Blocks sit `block_gap` elements apart (a real pool need not
// be packed). max_blocks covers max(max_context, the longest sequence).
inline PagedBatch make_paged_batch(const std::vector<TestSeq>& seqs, int32_t block_tokens,
                                   int64_t kv_dim, int64_t block_gap, int32_t spare_blocks,
                                   int32_t max_context, bool shuffle, std::mt19937& rng) {
  PagedBatch p;
  p.block_tokens = block_tokens;
  p.kv_dim = kv_dim;
  p.block_stride = block_tokens * kv_dim + block_gap;
  int32_t num_blocks = spare_blocks;
  for (const TestSeq& s : seqs) {
    max_context = std::max(max_context, s.length());
    num_blocks += (s.length() + block_tokens - 1) / block_tokens;
  }
  p.max_blocks = (max_context + block_tokens - 1) / block_tokens;
  std::vector<int32_t> ids(static_cast<size_t>(num_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  if (shuffle) std::shuffle(ids.begin(), ids.end() - 1, rng);
  p.k_cache.assign(static_cast<size_t>(num_blocks * p.block_stride), kNanHalf);
  p.v_cache.assign(p.k_cache.size(), kNanHalf);
  p.tables.assign(seqs.size() * static_cast<size_t>(p.max_blocks), ids.back());
  p.query_start.push_back(0);
  size_t next = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const int32_t blocks = (seqs[s].length() + block_tokens - 1) / block_tokens;
    for (int32_t b = 0; b < blocks; ++b) p.tables[s * p.max_blocks + b] = ids[next++];
    for (int32_t r = 0; r < seqs[s].rows; ++r) {
      p.row_seq.push_back(static_cast<int32_t>(s));
      p.row_pos.push_back(seqs[s].context_start + r);
    }
    p.context_start.push_back(seqs[s].context_start);
    p.query_start.push_back(p.query_start.back() + seqs[s].rows);
  }
  return p;
}

}  // namespace qgate::testing
