// y = x · Wᵀ for a weight matrix stored row-major as [n_out][k] in any DType qgate reads.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/status.h"

namespace qgate {

class ThreadPool;

// A non-owning view of a 2-D weight matrix: rows rows of cols elements, each row
// dtype_row_bytes(type, cols) bytes, rows contiguous.
struct WeightView {
  DType type = DType::kF32;
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features
  const void* data = nullptr;
};

// Scratch space reused across calls so the hot path never allocates.
struct MatmulScratch {
  std::vector<uint8_t> act;
};

// x: [m][cols] fp32, y: [m][rows] fp32. Work is split over output rows (and tokens for large m).
// Returns an error when cols is not a whole number of the weight's blocks.
Status matmul(const WeightView& w, const float* x, int64_t m, float* y, ThreadPool& pool,
              MatmulScratch& scratch);

// One weight matrix and where its product goes, for matmul_shared_input().
struct MatmulTarget {
  WeightView w;
  float* y = nullptr;  // [m][w.rows]
};

// y_i = x · W_iᵀ for several matrices that read the same input (q/k/v, gate/up). The activations
// are quantized once and all rows go to the pool in one dispatch, so a small matrix (SmolLM2's k
// and v are 192 rows) does not pay a thread-pool round trip of its own. Every matrix must have
// the same cols; when they need different activation formats (a Q4_1 and a Q8_0 matrix) the
// call falls back to one matmul() each. The results equal matmul() on each matrix bitwise.
Status matmul_shared_input(std::span<const MatmulTarget> targets, const float* x, int64_t m,
                           ThreadPool& pool, MatmulScratch& scratch);

// Plain reference: dequantizes each row and accumulates in double. For tests only.
void matmul_ref(const WeightView& w, const float* x, int64_t m, float* y);

}  // namespace qgate
