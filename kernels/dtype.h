// Element types of weight and activation tensors, and the block layouts of the GGML quantized
// types qgate reads (see docs/FORMATS.md). Values of the enum are GGML's type ids so a GGUF
// tensor's type field maps to it directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

namespace qgate {

enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 8,
  kQ8_1 = 9,  // activation-only format: never read from files
  kBF16 = 30,
  kI32 = 26,
};

// GGML blocks hold 32 consecutive elements of one row.
inline constexpr int kQuantBlock = 32;

struct BlockQ4_0 {
  uint16_t d;       // fp16 scale
  uint8_t qs[16];   // element j: (qs[j] & 15) - 8, element j + 16: (qs[j] >> 4) - 8
};
struct BlockQ4_1 {
  uint16_t d;       // fp16 scale
  uint16_t m;       // fp16 minimum: y = q * d + m
  uint8_t qs[16];   // same nibble order as Q4_0, unsigned
};
struct BlockQ8_0 {
  uint16_t d;       // fp16 scale
  int8_t qs[32];
};
// Activations quantized for Q4_1 dot products: s = d * sum(qs) lets the Q4_1 minimum be applied
// with one multiply per block instead of per element.
struct BlockQ8_1 {
  float d;
  float s;
  int8_t qs[32];
};
static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 40);

const char* dtype_name(DType t);
// Maps a GGML type id from a file; nullopt for types qgate does not read.
std::optional<DType> dtype_from_ggml(uint32_t id);
// Elements per block (1 for plain types) and bytes per block.
int64_t dtype_block_elems(DType t);
int64_t dtype_block_bytes(DType t);
// Bytes of a row of n elements; nullopt when n is not a whole number of blocks.
std::optional<int64_t> dtype_row_bytes(DType t, int64_t n);

}  // namespace qgate
