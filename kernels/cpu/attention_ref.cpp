#include "kernels/cpu/attention_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/half.h"

namespace qgate {
namespace {

Error invalid(const std::string& what) {
  return make_error(ErrorCode::kInvalidArgument, "paged attention ref: " + what);
}

Status check_geometry(const PagedKvGeometry& kv, int64_t kv_dim) {
  if (kv.block_tokens <= 0) return invalid("block_tokens must be positive");
  if (kv_dim <= 0) return invalid("kv_dim must be positive");
  if (kv.block_stride < static_cast<int64_t>(kv.block_tokens) * kv_dim) {
    return invalid("block_stride " + std::to_string(kv.block_stride) +
                   " is smaller than block_tokens * kv_dim");
  }
  return Status::Ok();
}

// Element offset of position `pos` of the sequence whose table is `table`, or an error when the
// table does not reach that far or names a block outside the cache.
Result<int64_t> position_offset(std::span<const int32_t> table, int64_t pos,
                                const PagedKvGeometry& kv, int64_t kv_dim, size_t cache_elems) {
  const int64_t b = pos / kv.block_tokens;
  if (pos < 0 || b >= static_cast<int64_t>(table.size())) {
    return make_error(ErrorCode::kOutOfRange, "paged attention ref: position " +
                                                  std::to_string(pos) + " is past the block table");
  }
  const int32_t block = table[static_cast<size_t>(b)];
  const int64_t at = static_cast<int64_t>(block) * kv.block_stride + (pos % kv.block_tokens) * kv_dim;
  if (block < 0 || at + kv_dim > static_cast<int64_t>(cache_elems)) {
    return make_error(ErrorCode::kOutOfRange, "paged attention ref: block " +
                                                  std::to_string(block) + " is outside the cache");
  }
  return at;
}

}  // namespace

Status paged_attention_ref(std::span<const float> q, std::span<const uint16_t> k_cache,
                           std::span<const uint16_t> v_cache, const PagedKvGeometry& kv,
                           const AttentionRefBatch& batch, const AttentionRefShape& shape,
                           std::span<float> out) {
  if (shape.n_heads <= 0 || shape.n_kv_heads <= 0 || shape.head_dim <= 0) {
    return invalid("head counts and head_dim must be positive");
  }
  if (shape.n_heads % shape.n_kv_heads != 0) {
    return invalid("n_heads must be a multiple of n_kv_heads");
  }
  const int64_t hd = shape.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(shape.n_kv_heads) * hd;
  const int64_t q_dim = static_cast<int64_t>(shape.n_heads) * hd;
  const int64_t group = shape.n_heads / shape.n_kv_heads;
  QGATE_TRY_STATUS(check_geometry(kv, kv_dim));
  if (k_cache.size() != v_cache.size()) return invalid("k and v caches differ in size");
  const size_t num_seqs = batch.context_start.size();
  if (batch.query_start.size() != num_seqs + 1 || batch.query_start[0] != 0) {
    return invalid("query_start must have num_seqs + 1 entries starting at 0");
  }
  if (batch.max_blocks < 0 ||
      batch.block_tables.size() < num_seqs * static_cast<size_t>(batch.max_blocks)) {
    return invalid("block_tables is smaller than num_seqs * max_blocks");
  }
  for (size_t s = 0; s < num_seqs; ++s) {
    if (batch.query_start[s + 1] < batch.query_start[s]) return invalid("query_start decreases");
    if (batch.context_start[s] < 0) return invalid("negative context_start");
  }
  const int64_t num_rows = batch.query_start[num_seqs];
  if (static_cast<int64_t>(q.size()) != num_rows * q_dim ||
      static_cast<int64_t>(out.size()) != num_rows * q_dim) {
    return invalid("q/out must hold num_rows * n_heads * head_dim values");
  }

  // Every fp16 value as double, so the inner loops are plain multiply-adds (the GPU tests run
  // this reference on batches of hundreds of rows over thousands of positions).
  std::vector<double> lut(65536);
  for (uint32_t h = 0; h < 65536; ++h) lut[h] = fp16_to_fp32(static_cast<uint16_t>(h));
  std::vector<double> scores;
  std::vector<double> acc(static_cast<size_t>(hd));
  for (size_t s = 0; s < num_seqs; ++s) {
    const auto table = batch.block_tables.subspan(s * static_cast<size_t>(batch.max_blocks),
                                                  static_cast<size_t>(batch.max_blocks));
    for (int64_t row = batch.query_start[s]; row < batch.query_start[s + 1]; ++row) {
      const int64_t pos = batch.context_start[s] + (row - batch.query_start[s]);
      const int64_t len = pos + 1;
      // Offsets of every context position, validated once per row.
      std::vector<int64_t> offsets(static_cast<size_t>(len));
      for (int64_t j = 0; j < len; ++j) {
        QGATE_ASSIGN_OR_RETURN(offsets[static_cast<size_t>(j)],
                               position_offset(table, j, kv, kv_dim, k_cache.size()));
      }
      scores.resize(static_cast<size_t>(len));
      for (int64_t h = 0; h < shape.n_heads; ++h) {
        const int64_t head_off = (h / group) * hd;
        const float* qh = q.data() + row * q_dim + h * hd;
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < len; ++j) {
          const uint16_t* kr = k_cache.data() + offsets[static_cast<size_t>(j)] + head_off;
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d) dot += static_cast<double>(qh[d]) * lut[kr[d]];
          scores[static_cast<size_t>(j)] = dot * shape.scale;
          mx = std::max(mx, scores[static_cast<size_t>(j)]);
        }
        double sum = 0;
        for (double& sc : scores) {
          sc = std::exp(sc - mx);
          sum += sc;
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < len; ++j) {
          const uint16_t* vr = v_cache.data() + offsets[static_cast<size_t>(j)] + head_off;
          const double w = scores[static_cast<size_t>(j)];
          for (int64_t d = 0; d < hd; ++d) acc[static_cast<size_t>(d)] += w * lut[vr[d]];
        }
        float* o = out.data() + row * q_dim + h * hd;
        for (int64_t d = 0; d < hd; ++d) o[d] = static_cast<float>(acc[static_cast<size_t>(d)] / sum);
      }
    }
  }
  return Status::Ok();
}

Status paged_attention_ref(std::span<const uint16_t> q_fp16, std::span<const uint16_t> k_cache,
                           std::span<const uint16_t> v_cache, const PagedKvGeometry& kv,
                           const AttentionRefBatch& batch, const AttentionRefShape& shape,
                           std::span<float> out) {
  std::vector<float> q(q_fp16.size());
  for (size_t i = 0; i < q.size(); ++i) q[i] = fp16_to_fp32(q_fp16[i]);
  return paged_attention_ref(q, k_cache, v_cache, kv, batch, shape, out);
}

Status write_kv_cache_ref(std::span<const uint16_t> k, std::span<const uint16_t> v,
                          std::span<const int32_t> row_seq, std::span<const int32_t> row_pos,
                          std::span<const int32_t> block_tables, int32_t max_blocks,
                          const PagedKvGeometry& kv, int64_t kv_dim, std::span<uint16_t> k_cache,
                          std::span<uint16_t> v_cache) {
  QGATE_TRY_STATUS(check_geometry(kv, kv_dim));
  const size_t num_rows = row_seq.size();
  if (row_pos.size() != num_rows || k.size() != num_rows * static_cast<size_t>(kv_dim) ||
      v.size() != k.size()) {
    return invalid("k/v must hold num_rows * kv_dim values and row_seq/row_pos num_rows");
  }
  if (k_cache.size() != v_cache.size()) return invalid("k and v caches differ in size");
  if (max_blocks <= 0) return invalid("max_blocks must be positive");
  const size_t num_seqs = block_tables.size() / static_cast<size_t>(max_blocks);
  for (size_t r = 0; r < num_rows; ++r) {
    const int32_t s = row_seq[r];
    if (s < 0 || static_cast<size_t>(s) >= num_seqs) {
      return invalid("row " + std::to_string(r) + " names sequence " + std::to_string(s) +
                     " outside the block tables");
    }
    const auto table = block_tables.subspan(static_cast<size_t>(s) * max_blocks,
                                            static_cast<size_t>(max_blocks));
    QGATE_ASSIGN_OR_RETURN(const int64_t at,
                           position_offset(table, row_pos[r], kv, kv_dim, k_cache.size()));
    std::copy_n(k.data() + r * kv_dim, kv_dim, k_cache.data() + at);
    std::copy_n(v.data() + r * kv_dim, kv_dim, v_cache.data() + at);
  }
  return Status::Ok();
}

}  // namespace qgate
