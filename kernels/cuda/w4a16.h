// W4A16 matmul on the GPU: y = x · Wᵀ with W in the packed 4-bit layout of kernels/w4a16_layout.h,
// x and y fp16, fp32 accumulation. Two kernels behind one launcher: a GEMV-style kernel for small
// m that streams the weights once at close to memory bandwidth, and a tensor-core kernel for
// larger m (prefill); kAuto picks by m (the crossover is measured, see docs/BENCHMARKS.md).
//
// Threading: launches on the given stream; no state is kept between calls.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/status.h"
#include "kernels/w4a16_layout.h"

namespace qgate::cuda {

// Device copies of a W4A16Weights' arrays (the pointers are owned elsewhere).
struct W4A16DeviceWeights {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t group_size = 0;
  const uint32_t* qweight = nullptr;
  const __half2* scale_min = nullptr;
};

enum class W4A16Kernel { kAuto, kGemv, kTensorCore };
const char* w4a16_kernel_name(W4A16Kernel k);
// The kernel kAuto runs for m rows.
W4A16Kernel w4a16_auto_kernel(int64_t m);

// x: [m][cols], y: [m][rows], both row-major fp16, 16-byte aligned. InvalidArgument for shapes
// the layout cannot hold or misaligned pointers; the launch error otherwise.
Status w4a16_matmul(const W4A16DeviceWeights& w, const __half* x, int64_t m, __half* y,
                    cudaStream_t stream, W4A16Kernel kernel = W4A16Kernel::kAuto);

}  // namespace qgate::cuda
