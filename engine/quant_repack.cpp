#include "engine/quant_repack.h"

#include <algorithm>
#include <numeric>

#include "kernels/cpu/half.h"
#include "kernels/dtype.h"

namespace qgate {

Result<RepackedLinear> repack_to_q4_1(const QuantizedLinear& layer) {
  QGATE_TRY_STATUS(layer.validate());
  const int64_t n = layer.out_features;
  const int64_t k = layer.in_features;
  if (layer.bits != 4) {
    return make_error(ErrorCode::kUnsupported,
                      std::to_string(layer.bits) + "-bit layers cannot be served yet (4-bit only)");
  }
  if (k % kQuantBlock != 0) {
    return make_error(ErrorCode::kUnsupported,
                      "in_features " + std::to_string(k) + " is not a multiple of 32");
  }
  RepackedLinear out;
  out.rows = n;
  out.cols = k;
  std::vector<int32_t> order(static_cast<size_t>(k));
  std::iota(order.begin(), order.end(), 0);
  if (!layer.has_trivial_g_idx()) {
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return layer.g_idx[static_cast<size_t>(a)] < layer.g_idx[static_cast<size_t>(b)];
    });
    out.input_perm = order;
  }
  const int64_t blocks = k / kQuantBlock;
  // Every block of 32 (permuted) inputs must share one group.
  std::vector<int32_t> block_group(static_cast<size_t>(blocks));
  for (int64_t b = 0; b < blocks; ++b) {
    const int32_t g = layer.g_idx[static_cast<size_t>(order[static_cast<size_t>(b * kQuantBlock)])];
    for (int64_t j = 1; j < kQuantBlock; ++j) {
      if (layer.g_idx[static_cast<size_t>(order[static_cast<size_t>(b * kQuantBlock + j)])] != g) {
        return make_error(ErrorCode::kUnsupported,
                          "group size " + std::to_string(layer.group_size) +
                              " does not align with blocks of 32 inputs; qgate serves group "
                              "sizes that are multiples of 32");
      }
    }
    block_group[static_cast<size_t>(b)] = g;
  }
  out.q4_1.resize(static_cast<size_t>(n * blocks) * sizeof(BlockQ4_1));
  auto* dst = reinterpret_cast<BlockQ4_1*>(out.q4_1.data());
  for (int64_t row = 0; row < n; ++row) {
    const uint8_t* q = layer.q.data() + row * k;
    for (int64_t b = 0; b < blocks; ++b) {
      const auto g = static_cast<size_t>(block_group[static_cast<size_t>(b)]);
      const float s = layer.scales[g * static_cast<size_t>(n) + static_cast<size_t>(row)];
      const float z = layer.zeros[g * static_cast<size_t>(n) + static_cast<size_t>(row)];
      BlockQ4_1& blk = dst[row * blocks + b];
      blk.d = fp32_to_fp16(s);
      blk.m = fp32_to_fp16(-s * z);
      const int32_t* cols = order.data() + b * kQuantBlock;
      for (int j = 0; j < 16; ++j) {
        blk.qs[j] = static_cast<uint8_t>((q[cols[j]] & 15) | ((q[cols[j + 16]] & 15) << 4));
      }
    }
  }
  return out;
}

}  // namespace qgate
