// 4-bit weights with fp16 activations (W4A16): the one packed layout the CUDA int4 kernels read,
// built on the host at load time from any 4-bit format with per-group affine dequantization
// w = q * scale + min (GPTQ and AWQ: min = -scale * zero; GGUF Q4_1: d and m of each 32-block;
// Q4_0: min = -8 d). Host code, always built, so CI tests the packing and the reference without
// a GPU.
//
// Columns are expected in group order: act-order GPTQ checkpoints are permuted by the engine
// (the activations gathered through the same permutation), exactly as for the CPU path.
//
// Threading: pure functions of their arguments.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/status.h"

namespace qgate {

// A 4-bit matrix in plain form: rows x cols values 0..15 and one (scale, min) per row and group.
// Group g covers columns [g * group_size, min((g + 1) * group_size, cols)): the last group may be
// partial.
struct Int4Matrix {
  int64_t rows = 0;        // N, output features
  int64_t cols = 0;        // K, input features
  int64_t group_size = 0;  // columns per group
  const uint8_t* q = nullptr;      // [rows][cols]
  const float* scale = nullptr;    // [rows][groups]
  const float* min = nullptr;      // [rows][groups]
  int64_t groups() const { return (cols + group_size - 1) / group_size; }
};

// The packed layout (documented in w4a16_layout.cpp where it is built; the kernels rely on it).
// scale/min are stored as fp16 pairs: min is rounded to fp16 (<= 2^-11 relative), like the CPU
// path's Q4_1 repack.
struct W4A16Weights {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t group_size = 0;
  std::vector<uint32_t> qweight;    // 8 values per word, order defined by the layout
  std::vector<uint16_t> scale_min;  // fp16 bits, (scale, min) pairs
  int64_t groups() const { return (cols + group_size - 1) / group_size; }
  // Bytes the kernels read for one pass over the matrix (packed weights + scale/min).
  uint64_t bytes() const { return qweight.size() * 4 + scale_min.size() * 2; }
};

// InvalidArgument for values above 15, non-finite scale/min, or sizes the kernels do not take
// (cols % 32 != 0, group_size % 32 != 0, rows < 1), naming the offender.
Result<W4A16Weights> pack_w4a16(const Int4Matrix& m);

// bytes() of the packed form of a rows x cols matrix with this group size, without packing it
// (rows are padded to the layout's tile of 32).
uint64_t w4a16_packed_bytes(int64_t rows, int64_t cols, int64_t group_size);

// Row n, column k of the packed matrix as the kernels dequantize it (fp16 scale and min).
float w4a16_dequant(const W4A16Weights& w, int64_t n, int64_t k);

// Host reference: y[m][rows] = x[m][cols] · Wᵀ accumulated in double from w4a16_dequant.
void w4a16_matmul_ref(const W4A16Weights& w, const float* x, int64_t m, float* y);

}  // namespace qgate
