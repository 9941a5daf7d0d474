// The rotary embedding's device pieces, shared by rope() (ops.cu) and rope_write_kv_cache()
// (attention.cu) so that the two compute the very same bits: the fused kernel is tested by
// equality against rope() followed by write_kv_cache().
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qgate::cuda::rope_detail {

constexpr int kMaxHalf = 512;  // head_dim <= 1024: the per-row cos/sin table in shared memory

// The cos/sin table of one position, built by the threads of a block (the caller syncs after):
// frequency and angle in double, then rounded to float, exactly as the CPU RopeTable (at position
// 1e5 an fp32 angle would be off by ~8e-3 rad).
__device__ __forceinline__ void build_table(int32_t position, int head_dim, float theta,
                                            float* cos_t, float* sin_t) {
  const int half = head_dim / 2;
  const double pos = static_cast<double>(position);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const double freq = pow(static_cast<double>(theta),
                            -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    double s, c;
    sincos(pos * freq, &s, &c);
    cos_t[i] = static_cast<float>(c);
    sin_t[i] = static_cast<float>(s);
  }
}

// The element indices of pair i of a head: (i, i + half) for the HF "halves" layout, (2i, 2i + 1)
// for GGUF's adjacent pairs.
template <bool kHalves>
__device__ __forceinline__ int pair_a(int i) {
  return kHalves ? i : 2 * i;
}
template <bool kHalves>
__device__ __forceinline__ int pair_b(int i, int half) {
  return kHalves ? i + half : 2 * i + 1;
}

// Rotates (a, b) by the angle whose cosine and sine are c and s, rounding each result to fp16
// once. The products are spelled out with round-to-nearest intrinsics so that no compiler
// contraction can make two kernels that share this function round differently.
__device__ __forceinline__ void rotate(__half& a_io, __half& b_io, float c, float s) {
  const float a = __half2float(a_io);
  const float b = __half2float(b_io);
  a_io = __float2half_rn(__fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)));
  b_io = __float2half_rn(__fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c)));
}

}  // namespace qgate::cuda::rope_detail
