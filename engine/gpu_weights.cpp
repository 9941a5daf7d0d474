#include "engine/gpu_weights.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/half.h"
#include "kernels/cpu/quant.h"

namespace qgate {

namespace {

// (d, m) of block `b` of row `r` as one comparable value; Q4_0 has no m.
uint32_t block_key(const WeightView& w, int64_t r, int64_t b) {
  const int64_t blocks = w.cols / kQuantBlock;
  const auto* base = static_cast<const uint8_t*>(w.data);
  uint32_t key = 0;
  if (w.type == DType::kQ4_1) {
    const auto* blk = reinterpret_cast<const BlockQ4_1*>(base) + r * blocks + b;
    key = static_cast<uint32_t>(blk->d) | (static_cast<uint32_t>(blk->m) << 16);
  } else {
    const auto* blk = reinterpret_cast<const BlockQ4_0*>(base) + r * blocks + b;
    key = blk->d;
  }
  return key;
}

bool groups_agree(const WeightView& w, int64_t group_size) {
  const int64_t blocks = w.cols / kQuantBlock;
  const int64_t per_group = group_size / kQuantBlock;
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t g0 = 0; g0 < blocks; g0 += per_group) {
      const uint32_t first = block_key(w, r, g0);
      for (int64_t b = g0 + 1; b < std::min(blocks, g0 + per_group); ++b) {
        if (block_key(w, r, b) != first) return false;
      }
    }
  }
  return true;
}

bool is_int4(DType t) { return t == DType::kQ4_0 || t == DType::kQ4_1; }

}  // namespace

GpuWeightFormat gpu_weight_format(DType t) {
  return is_int4(t) ? GpuWeightFormat::kW4A16 : GpuWeightFormat::kF16;
}

int64_t infer_int4_group_size(const WeightView& w) {
  QGATE_CHECK(is_int4(w.type), "infer_int4_group_size: not a 4-bit matrix");
  for (int64_t g : {128, 64}) {
    if (groups_agree(w, g)) return g;
  }
  return kQuantBlock;
}

Result<W4A16Weights> w4a16_from_ggml(const WeightView& w) {
  return w4a16_from_ggml(std::span<const WeightView>(&w, 1));
}

Result<W4A16Weights> w4a16_from_ggml(std::span<const WeightView> parts) {
  if (parts.empty()) return make_error(ErrorCode::kInvalidArgument, "w4a16_from_ggml: no matrix");
  const int64_t cols = parts.front().cols;
  int64_t rows = 0;
  int64_t group = 128;
  for (const WeightView& w : parts) {
    if (!is_int4(w.type)) {
      return make_error(ErrorCode::kInvalidArgument,
                        std::string("w4a16_from_ggml: ") + dtype_name(w.type) + " is not 4-bit");
    }
    if (w.cols % kQuantBlock != 0 || w.rows < 1 || w.cols != cols) {
      return make_error(ErrorCode::kInvalidArgument, "w4a16_from_ggml: bad shape");
    }
    rows += w.rows;
    group = std::min(group, infer_int4_group_size(w));
  }
  const int64_t groups = (cols + group - 1) / group;
  const int64_t blocks = cols / kQuantBlock;
  std::vector<uint8_t> q(static_cast<size_t>(rows * cols));
  std::vector<float> scale(static_cast<size_t>(rows * groups));
  std::vector<float> min(static_cast<size_t>(rows * groups));
  int64_t r = 0;  // row of the stacked matrix
  for (const WeightView& w : parts) {
    const auto* base = static_cast<const uint8_t*>(w.data);
    const int64_t block_bytes = dtype_block_bytes(w.type);
    for (int64_t pr = 0; pr < w.rows; ++pr, ++r) {
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* blk = base + (pr * blocks + b) * block_bytes;
        uint16_t d_bits = 0;
        std::memcpy(&d_bits, blk, 2);
        const float d = fp16_to_fp32(d_bits);
        float m = -8.0f * d;  // Q4_0: value (q - 8) * d
        const uint8_t* qs = blk + 2;
        if (w.type == DType::kQ4_1) {
          uint16_t m_bits = 0;
          std::memcpy(&m_bits, blk + 2, 2);
          m = fp16_to_fp32(m_bits);
          qs = blk + 4;
        }
        uint8_t* row_q = q.data() + r * cols + b * kQuantBlock;
        // GGML nibble order: element j in the low nibble of qs[j], element j + 16 in the high one.
        for (int j = 0; j < kQuantBlock / 2; ++j) {
          row_q[j] = qs[j] & 15;
          row_q[j + kQuantBlock / 2] = qs[j] >> 4;
        }
        // Blocks of one group agree (that is how the group size was chosen); the first sets it.
        const int64_t g = b * kQuantBlock / group;
        if ((b * kQuantBlock) % group == 0) {
          scale[static_cast<size_t>(r * groups + g)] = d;
          min[static_cast<size_t>(r * groups + g)] = m;
        }
      }
    }
  }
  Int4Matrix m{rows, cols, group, q.data(), scale.data(), min.data()};
  return pack_w4a16(m);
}

std::vector<uint16_t> fp16_from_weight(const WeightView& w) {
  std::vector<uint16_t> out(static_cast<size_t>(w.rows * w.cols));
  std::vector<float> row(static_cast<size_t>(w.cols));
  const int64_t row_bytes = dtype_row_bytes(w.type, w.cols).value();
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = 0; r < w.rows; ++r) {
    dequantize_row(w.type, base + r * row_bytes, row.data(), w.cols);
    for (int64_t c = 0; c < w.cols; ++c) {
      out[static_cast<size_t>(r * w.cols + c)] = fp32_to_fp16(row[static_cast<size_t>(c)]);
    }
  }
  return out;
}

uint64_t gpu_weight_bytes(const WeightView& w) {
  return gpu_weight_bytes(std::span<const WeightView>(&w, 1));
}

uint64_t gpu_weight_bytes(std::span<const WeightView> parts) {
  int64_t rows = 0;
  int64_t group = 128;
  for (const WeightView& w : parts) {
    rows += w.rows;
    if (is_int4(w.type)) group = std::min(group, infer_int4_group_size(w));
  }
  if (parts.empty()) return 0;
  const int64_t cols = parts.front().cols;
  if (gpu_weight_format(parts.front().type) == GpuWeightFormat::kF16) {
    return static_cast<uint64_t>(rows * cols) * 2;
  }
  return w4a16_packed_bytes(rows, cols, group);
}

bool gpu_can_stack(std::span<const LinearLayer* const> parts) {
  if (parts.empty()) return false;
  const LinearLayer& first = *parts.front();
  for (const LinearLayer* p : parts) {
    if (gpu_weight_format(p->weight.type) != gpu_weight_format(first.weight.type) ||
        p->weight.cols != first.weight.cols || (p->bias == nullptr) != (first.bias == nullptr) ||
        (p->input_perm == nullptr) != (first.input_perm == nullptr)) {
      return false;
    }
    if (p->input_perm != nullptr && p->input_perm != first.input_perm &&
        std::memcmp(p->input_perm, first.input_perm,
                    static_cast<size_t>(first.weight.cols) * sizeof(int32_t)) != 0) {
      return false;
    }
  }
  return true;
}

std::vector<std::vector<const LinearLayer*>> gpu_matmul_groups(
    std::span<const LinearLayer* const> parts) {
  if (gpu_can_stack(parts)) return {std::vector<const LinearLayer*>(parts.begin(), parts.end())};
  std::vector<std::vector<const LinearLayer*>> groups;
  for (const LinearLayer* p : parts) groups.push_back({p});
  return groups;
}

}  // namespace qgate
