// Row-wise dequantization and activation quantization for the GGML block formats, plus the dot
// products between a weight row and quantized activations that the matmul is built from.
// Every SIMD path has the scalar reference beside it (suffix _ref) and tests compare the two.
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace qgate {

// Dequantizes n elements (a whole number of blocks for block types) of type t into dst.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

// Quantizes n floats (n % 32 == 0) to the activation format used against weights of type t:
// Q8_0 blocks for Q4_0/Q8_0 weights, Q8_1 blocks for Q4_1 weights.
DType activation_dtype_for(DType weight);
void quantize_row_q8_0(const float* x, BlockQ8_0* dst, int64_t n);
void quantize_row_q8_1(const float* x, BlockQ8_1* dst, int64_t n);

// Dot product of one weight row (n elements of type w) with activations in activation_dtype_for(w)
// (or fp32 when w is F32/F16/BF16).
float vec_dot(DType w, const void* w_row, const void* act, int64_t n);
float vec_dot_ref(DType w, const void* w_row, const void* act, int64_t n);

}  // namespace qgate
