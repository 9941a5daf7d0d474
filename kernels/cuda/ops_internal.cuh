// Shared pieces of the forward-pass ops (ops.cu: norms, rope, argmax; ops_elementwise.cu: the
// rest): launcher validation and the 16-byte access helpers.
//
// Access forms: a kernel is instantiated with 16-byte accesses (8 fp16, or 2x4 fp32, per thread)
// when every pointer the op touches is 16-byte aligned and every row starts 16-byte aligned (n a
// multiple of 8), and with 1-element accesses otherwise. The choice is made per launch, not per
// row, so a vector launch has no tails. The 1-element form is still coalesced (consecutive threads
// touch consecutive elements), so DRAM sector traffic is the same; it only issues more
// instructions.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/status.h"

namespace qgate::cuda::ops_detail {

constexpr int kVec = 8;                 // fp16 elements per 16-byte access
constexpr int64_t kMaxDim = INT32_MAX;  // kernels index within a row with int

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

inline Error invalid(const char* op, const std::string& what) {
  return make_error(ErrorCode::kInvalidArgument, std::string(op) + ": " + what);
}

// The checks shared by the row-wise ops. rows == 0 is valid (a no-op) and checked by the caller.
inline Status check_rows_n(const char* op, int64_t rows, int64_t n, const char* n_name = "n") {
  if (rows < 0) return invalid(op, "rows must be >= 0, got " + std::to_string(rows));
  if (rows > kMaxDim) return invalid(op, "rows " + std::to_string(rows) + " exceeds 2^31-1");
  if (n <= 0) return invalid(op, std::string(n_name) + " must be > 0, got " + std::to_string(n));
  if (n > kMaxDim) {
    return invalid(op, std::string(n_name) + " " + std::to_string(n) + " exceeds 2^31-1");
  }
  return Status::Ok();
}

inline Status check_ptr(const char* op, const void* p, const char* name) {
  if (p == nullptr) return invalid(op, std::string(name) + " is null");
  return Status::Ok();
}

__device__ __forceinline__ void load8(const __half* p, float (&v)[kVec]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 f = __half22float2(h[k]);
    v[2 * k] = f.x;
    v[2 * k + 1] = f.y;
  }
}

__device__ __forceinline__ void store8(__half* p, const float (&v)[kVec]) {
  uint4 raw;
  __half2* h = reinterpret_cast<__half2*>(&raw);
#pragma unroll
  for (int k = 0; k < 4; ++k) h[k] = __floats2half2_rn(v[2 * k], v[2 * k + 1]);
  *reinterpret_cast<uint4*>(p) = raw;
}

__device__ __forceinline__ void load8(const float* p, float (&v)[kVec]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x;
  v[1] = a.y;
  v[2] = a.z;
  v[3] = a.w;
  v[4] = b.x;
  v[5] = b.y;
  v[6] = b.z;
  v[7] = b.w;
}

__device__ __forceinline__ void store8(float* p, const float (&v)[kVec]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

// One "unit" of a row: 8 elements at unit*8 for the vector form, 1 element at unit for the scalar.
template <bool kVector, typename T>
__device__ __forceinline__ void load_unit(const T* row, int unit, float (&v)[kVector ? kVec : 1]) {
  if constexpr (kVector) {
    load8(row + static_cast<int64_t>(unit) * kVec, v);
  } else if constexpr (sizeof(T) == 2) {
    v[0] = __half2float(row[unit]);
  } else {
    v[0] = row[unit];
  }
}

template <bool kVector, typename T>
__device__ __forceinline__ void store_unit(T* row, int unit, const float (&v)[kVector ? kVec : 1]) {
  if constexpr (kVector) {
    store8(row + static_cast<int64_t>(unit) * kVec, v);
  } else if constexpr (sizeof(T) == 2) {
    row[unit] = __float2half_rn(v[0]);
  } else {
    row[unit] = v[0];
  }
}

}  // namespace qgate::cuda::ops_detail
