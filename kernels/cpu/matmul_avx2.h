// Internal to kernels/cpu: the AVX2/FMA/F16C register-tiled kernels behind matmul() and vec_dot().
// Compiled everywhere; available() is false when the build lacks those instruction sets and the
// callers then use the scalar references.
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace qgate::cpu_avx2 {

// One y = x · Wᵀ problem with activations already in the weight type's activation format.
struct GemmProblem {
  DType type = DType::kF32;
  const uint8_t* w = nullptr;  // weight row 0
  int64_t w_row_bytes = 0;
  int64_t cols = 0;
  const uint8_t* act = nullptr;  // token 0: Q8_0 / Q8_1 blocks, or fp32 for float weights
  int64_t act_row_bytes = 0;
  // Q4_1 with m > 1 only: the Q8_1 s of token t, block b at s_by_block[b * m + t], so the
  // m_w * s_x term can be applied to many tokens with one vector FMA.
  const float* s_by_block = nullptr;
  int64_t m = 0;  // tokens
  float* y = nullptr;  // y[t * ldy + r]
  int64_t ldy = 0;
};

bool available();
// Computes y for rows [r0, r1) and every token. Rows are independent, so threads may call this
// concurrently on disjoint row ranges.
void gemm_rows(const GemmProblem& p, int64_t r0, int64_t r1);

}  // namespace qgate::cpu_avx2
