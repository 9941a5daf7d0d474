// Element-wise ops of the Llama forward pass on the GPU: embedding lookup, residual and bias adds,
// SwiGLU over (possibly fused, strided) gate/up views, the act-order column gather, and fp16 <->
// fp32 conversion. Row-wise ops are in ops.cu; shared validation and 16-byte helpers in
// ops_internal.cuh.
//
// Each op streams its bytes once with 16-byte accesses when the pointers allow (the 1-element form
// otherwise, see ops_internal.cuh); there is no reuse to exploit beyond a per-column operand (bias,
// permutation) kept in registers across the rows a thread visits.
//
// Every launcher validates its sizes and pointers and returns InvalidArgument naming the problem
// before touching the device; rows == 0 is a no-op. Token ids and permutation entries live in
// device memory and cannot be checked here without a synchronizing copy: the engine validates them
// on the host when it creates them (tokens against the vocabulary, the act-order permutation at
// checkpoint load), and the kernels trust them.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/ops_internal.cuh"

namespace qgate::cuda {
namespace {

using namespace ops_detail;  // NOLINT: this file's own helpers

constexpr int kElementwiseThreads = 256;
constexpr int64_t kMaxGridY = 65535;

unsigned blocks_for(int64_t work, int threads) {
  const int64_t b = (work + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > (int64_t{1} << 16) ? (int64_t{1} << 16) : b));
}

// ---- embedding ----------------------------------------------------------------------------------

// blockIdx.x tiles the columns, blockIdx.y strides over rows: rows are unbounded (prefill) while
// gridDim.y is capped at 65535. The same layout serves every row-by-column element-wise op below.
template <bool kVector>
__global__ void embedding_kernel(const __half* __restrict__ table, int hidden,
                                 const int32_t* __restrict__ tokens, int64_t rows,
                                 float* __restrict__ x) {
  constexpr int E = kVector ? kVec : 1;
  const int unit = blockIdx.x * blockDim.x + threadIdx.x;
  if (unit >= hidden / E) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const __half* src = table + static_cast<int64_t>(tokens[r]) * hidden;
    float v[E];
    load_unit<kVector>(src, unit, v);
    store_unit<kVector>(x + r * hidden, unit, v);
  }
}

// ---- flat element-wise: residual add and conversions --------------------------------------------

// Vector body over the first groups*8 elements, then the scalar tail; groups == 0 makes it all
// scalar (an unaligned pointer). Grid-stride, so any n fits a capped grid.
__global__ void add_residual_kernel(float* __restrict__ x, const __half* __restrict__ delta,
                                    int64_t n, int64_t groups) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t g = tid; g < groups; g += stride) {
    float v[kVec], d[kVec];
    load8(x + g * kVec, v);
    load8(delta + g * kVec, d);
#pragma unroll
    for (int e = 0; e < kVec; ++e) v[e] += d[e];
    store8(x + g * kVec, v);
  }
  for (int64_t i = groups * kVec + tid; i < n; i += stride) x[i] += __half2float(delta[i]);
}

__device__ __forceinline__ float convert_one(__half v, float*) { return __half2float(v); }
__device__ __forceinline__ __half convert_one(float v, __half*) { return __float2half_rn(v); }

// fp16 <-> fp32 element-wise; load8/store8 convert through float registers either way.
template <typename In, typename Out>
__global__ void convert_kernel(const In* __restrict__ x, int64_t n, int64_t groups,
                               Out* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t g = tid; g < groups; g += stride) {
    float v[kVec];
    load8(x + g * kVec, v);
    store8(out + g * kVec, v);
  }
  for (int64_t i = groups * kVec + tid; i < n; i += stride) {
    out[i] = convert_one(x[i], static_cast<Out*>(nullptr));
  }
}

// ---- add_bias, swiglu, gather_columns: row-by-column element-wise -------------------------------

template <bool kVector>
__global__ void add_bias_kernel(__half* __restrict__ y, const float* __restrict__ bias,
                                int64_t rows, int n) {
  constexpr int E = kVector ? kVec : 1;
  const int unit = blockIdx.x * blockDim.x + threadIdx.x;
  if (unit >= n / E) return;
  float b[E];
  load_unit<kVector>(bias, unit, b);  // reused for every row this thread visits
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    float v[E];
    load_unit<kVector>(y + r * n, unit, v);
#pragma unroll
    for (int e = 0; e < E; ++e) v[e] += b[e];
    store_unit<kVector>(y + r * n, unit, v);
  }
}

// silu(g) * u with expf (not __expf): the op is memory-bound, so the accurate exp is free, and
// expf(-g) overflowing to inf for g < -88 gives g / inf = -0, the correct limit.
template <bool kVector>
__global__ void swiglu_kernel(const __half* __restrict__ gate, int64_t gate_stride,
                              const __half* __restrict__ up, int64_t up_stride, int64_t rows, int n,
                              __half* __restrict__ out) {
  constexpr int E = kVector ? kVec : 1;
  const int unit = blockIdx.x * blockDim.x + threadIdx.x;
  if (unit >= n / E) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    float g[E], u[E];
    load_unit<kVector>(gate + r * gate_stride, unit, g);
    load_unit<kVector>(up + r * up_stride, unit, u);
#pragma unroll
    for (int e = 0; e < E; ++e) g[e] = g[e] / (1.0f + expf(-g[e])) * u[e];
    store_unit<kVector>(out + r * n, unit, g);
  }
}

// Each thread owns 8 output columns (or 1) and keeps their source indices in registers for every
// row it visits. The reads of x are scattered 2-byte loads, but one activation row is at most a
// few tens of KB and stays in L1/L2 while the block gathers it; the writes are 16-byte and
// coalesced. perm entries are trusted (validated on the host when the checkpoint is loaded).
template <bool kVector>
__global__ void gather_columns_kernel(const __half* __restrict__ x,
                                      const int32_t* __restrict__ perm, int64_t rows, int cols,
                                      __half* __restrict__ out) {
  constexpr int E = kVector ? kVec : 1;
  const int unit = blockIdx.x * blockDim.x + threadIdx.x;
  if (unit >= cols / E) return;
  int32_t src[E];
  if constexpr (kVector) {
    const int4 a = reinterpret_cast<const int4*>(perm + static_cast<int64_t>(unit) * kVec)[0];
    const int4 b = reinterpret_cast<const int4*>(perm + static_cast<int64_t>(unit) * kVec)[1];
    src[0] = a.x;
    src[1] = a.y;
    src[2] = a.z;
    src[3] = a.w;
    src[4] = b.x;
    src[5] = b.y;
    src[6] = b.z;
    src[7] = b.w;
  } else {
    src[0] = perm[unit];
  }
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const __half* xr = x + r * cols;
    float v[E];
#pragma unroll
    for (int e = 0; e < E; ++e) v[e] = __half2float(xr[src[e]]);
    store_unit<kVector>(out + r * cols, unit, v);
  }
}

dim3 row_col_grid(int64_t units_per_row, int64_t rows) {
  const auto bx =
      static_cast<unsigned>((units_per_row + kElementwiseThreads - 1) / kElementwiseThreads);
  const auto by = static_cast<unsigned>(rows < kMaxGridY ? rows : kMaxGridY);
  return dim3(bx, by);
}

}  // namespace

// ---- launchers ----------------------------------------------------------------------------------

Status embedding_lookup(const __half* table, int64_t hidden, const int32_t* tokens, int64_t rows,
                        float* x, cudaStream_t stream) {
  constexpr const char* op = "embedding_lookup";
  QGATE_TRY_STATUS(check_rows_n(op, rows, hidden, "hidden"));
  if (rows == 0) return Status::Ok();
  QGATE_TRY_STATUS(check_ptr(op, table, "table"));
  QGATE_TRY_STATUS(check_ptr(op, tokens, "tokens"));
  QGATE_TRY_STATUS(check_ptr(op, x, "x"));
  const bool vector = hidden % kVec == 0 && aligned16(table) && aligned16(x);
  const int64_t units = vector ? hidden / kVec : hidden;
  const dim3 grid = row_col_grid(units, rows);
  const int h = static_cast<int>(hidden);
  if (vector)
    embedding_kernel<true><<<grid, kElementwiseThreads, 0, stream>>>(table, h, tokens, rows, x);
  else
    embedding_kernel<false><<<grid, kElementwiseThreads, 0, stream>>>(table, h, tokens, rows, x);
  return launch_status(op);
}

Status add_residual(float* x, const __half* delta, int64_t rows, int64_t n, cudaStream_t stream) {
  constexpr const char* op = "add_residual";
  QGATE_TRY_STATUS(check_rows_n(op, rows, n));
  if (rows == 0) return Status::Ok();
  QGATE_TRY_STATUS(check_ptr(op, x, "x"));
  QGATE_TRY_STATUS(check_ptr(op, delta, "delta"));
  // x and delta are contiguous rows x n, so the op is flat; 16-byte accesses need only aligned
  // bases (the tail past the last full group of 8 goes scalar).
  const int64_t total = rows * n;
  const int64_t groups = aligned16(x) && aligned16(delta) ? total / kVec : 0;
  const int64_t work = groups > 0 ? groups : total;
  add_residual_kernel<<<blocks_for(work, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      x, delta, total, groups);
  return launch_status(op);
}

Status add_bias(__half* y, const float* bias, int64_t rows, int64_t n, cudaStream_t stream) {
  constexpr const char* op = "add_bias";
  QGATE_TRY_STATUS(check_rows_n(op, rows, n));
  if (rows == 0) return Status::Ok();
  QGATE_TRY_STATUS(check_ptr(op, y, "y"));
  QGATE_TRY_STATUS(check_ptr(op, bias, "bias"));
  const bool vector = n % kVec == 0 && aligned16(y) && aligned16(bias);
  const dim3 grid = row_col_grid(vector ? n / kVec : n, rows);
  const int nn = static_cast<int>(n);
  if (vector)
    add_bias_kernel<true><<<grid, kElementwiseThreads, 0, stream>>>(y, bias, rows, nn);
  else
    add_bias_kernel<false><<<grid, kElementwiseThreads, 0, stream>>>(y, bias, rows, nn);
  return launch_status(op);
}

Status swiglu(const __half* gate, int64_t gate_stride, const __half* up, int64_t up_stride,
              int64_t rows, int64_t n, __half* out, cudaStream_t stream) {
  constexpr const char* op = "swiglu";
  QGATE_TRY_STATUS(check_rows_n(op, rows, n));
  if (gate_stride < n || up_stride < n) {
    return invalid(op, "gate_stride (" + std::to_string(gate_stride) + ") and up_stride (" +
                           std::to_string(up_stride) + ") must be >= n (" + std::to_string(n) +
                           ")");
  }
  if (rows == 0) return Status::Ok();
  QGATE_TRY_STATUS(check_ptr(op, gate, "gate"));
  QGATE_TRY_STATUS(check_ptr(op, up, "up"));
  QGATE_TRY_STATUS(check_ptr(op, out, "out"));
  // Fused gate/up views (gate at the row start, up at +n, stride 2n) qualify whenever n % 8 == 0.
  const bool vector = n % kVec == 0 && gate_stride % kVec == 0 && up_stride % kVec == 0 &&
                      aligned16(gate) && aligned16(up) && aligned16(out);
  const dim3 grid = row_col_grid(vector ? n / kVec : n, rows);
  const int nn = static_cast<int>(n);
  if (vector) {
    swiglu_kernel<true>
        <<<grid, kElementwiseThreads, 0, stream>>>(gate, gate_stride, up, up_stride, rows, nn, out);
  } else {
    swiglu_kernel<false>
        <<<grid, kElementwiseThreads, 0, stream>>>(gate, gate_stride, up, up_stride, rows, nn, out);
  }
  return launch_status(op);
}

Status gather_columns(const __half* x, const int32_t* perm, int64_t rows, int64_t cols, __half* out,
                      cudaStream_t stream) {
  constexpr const char* op = "gather_columns";
  QGATE_TRY_STATUS(check_rows_n(op, rows, cols, "cols"));
  if (rows == 0) return Status::Ok();
  QGATE_TRY_STATUS(check_ptr(op, x, "x"));
  QGATE_TRY_STATUS(check_ptr(op, perm, "perm"));
  QGATE_TRY_STATUS(check_ptr(op, out, "out"));
  // Other threads still read the columns a thread would overwrite in place.
  if (x == out) return invalid(op, "x and out must not alias");
  const bool vector = cols % kVec == 0 && aligned16(perm) && aligned16(out);
  const dim3 grid = row_col_grid(vector ? cols / kVec : cols, rows);
  const int c = static_cast<int>(cols);
  if (vector)
    gather_columns_kernel<true><<<grid, kElementwiseThreads, 0, stream>>>(x, perm, rows, c, out);
  else
    gather_columns_kernel<false><<<grid, kElementwiseThreads, 0, stream>>>(x, perm, rows, c, out);
  return launch_status(op);
}

template <typename In, typename Out>
Status convert(const char* op, const In* x, int64_t n, Out* out, cudaStream_t stream) {
  if (n < 0) return invalid(op, "n must be >= 0, got " + std::to_string(n));
  if (n == 0) return Status::Ok();
  QGATE_TRY_STATUS(check_ptr(op, x, "x"));
  QGATE_TRY_STATUS(check_ptr(op, out, "out"));
  const int64_t groups = aligned16(x) && aligned16(out) ? n / kVec : 0;
  const int64_t work = groups > 0 ? groups : n;
  convert_kernel<In, Out><<<blocks_for(work, kElementwiseThreads), kElementwiseThreads, 0,
                            stream>>>(x, n, groups, out);
  return launch_status(op);
}

Status half_to_float(const __half* x, int64_t n, float* out, cudaStream_t stream) {
  return convert("half_to_float", x, n, out, stream);
}

Status float_to_half(const float* x, int64_t n, __half* out, cudaStream_t stream) {
  return convert("float_to_half", x, n, out, stream);
}

}  // namespace qgate::cuda
