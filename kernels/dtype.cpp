#include "kernels/dtype.h"

namespace qgate {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kQ4_0: return "Q4_0";
    case DType::kQ4_1: return "Q4_1";
    case DType::kQ8_0: return "Q8_0";
    case DType::kQ8_1: return "Q8_1";
    case DType::kBF16: return "BF16";
    case DType::kI32: return "I32";
  }
  return "?";
}

std::optional<DType> dtype_from_ggml(uint32_t id) {
  switch (id) {
    case 0: return DType::kF32;
    case 1: return DType::kF16;
    case 2: return DType::kQ4_0;
    case 3: return DType::kQ4_1;
    case 8: return DType::kQ8_0;
    case 26: return DType::kI32;
    case 30: return DType::kBF16;
    default: return std::nullopt;
  }
}

int64_t dtype_block_elems(DType t) {
  switch (t) {
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ8_0:
    case DType::kQ8_1: return kQuantBlock;
    default: return 1;
  }
}

int64_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
    case DType::kQ4_0: return sizeof(BlockQ4_0);
    case DType::kQ4_1: return sizeof(BlockQ4_1);
    case DType::kQ8_0: return sizeof(BlockQ8_0);
    case DType::kQ8_1: return sizeof(BlockQ8_1);
  }
  return 0;
}

std::optional<int64_t> dtype_row_bytes(DType t, int64_t n) {
  const int64_t be = dtype_block_elems(t);
  if (n < 0 || n % be != 0) return std::nullopt;
  return n / be * dtype_block_bytes(t);
}

}  // namespace qgate
