// Dense GEMM through cuBLASLt for fp16/bf16 weights: y = x · Wᵀ, all row-major, fp32 compute.
//
// cuBLASLt's heuristic query costs far more than a small GEMM, so the algorithm chosen for each
// (m, n, k, types) is cached; the workspace is allocated once. Decode calls the same shapes every
// step, so after warm-up a call is a cache lookup plus the launch (and is CUDA-graph capturable).
//
// Threading: one CublasLtGemm per stream/thread; calls are not synchronized.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "kernels/status.h"

namespace qgate::cuda {

enum class GemmType { kF16, kBF16, kF32 };
const char* gemm_type_name(GemmType t);  // "f16", "bf16", "f32"

class CublasLtGemm {
 public:
  virtual ~CublasLtGemm() = default;
  // Creates the handle and a workspace of workspace_bytes on the current device.
  static Result<std::unique_ptr<CublasLtGemm>> create(size_t workspace_bytes = 32u << 20);

  // w: [n][k] of w_type (kF16 or kBF16), x: [m][k] of the same type, y: [m][n] of y_type
  // (w_type or kF32). InvalidArgument for unsupported type combinations or non-positive sizes.
  virtual Status matmul(const void* w, GemmType w_type, const void* x, int64_t m, int64_t n,
                        int64_t k, void* y, GemmType y_type, cudaStream_t stream) = 0;
  virtual size_t workspace_bytes() const = 0;
};

}  // namespace qgate::cuda
