// Row-wise ops of the Llama forward pass on the GPU: rms_norm and the fused residual add +
// rms_norm, rope, and the greedy argmax over logits. The element-wise ops are in
// ops_elementwise.cu; shared validation and 16-byte helpers in ops_internal.cuh.
//
// All are memory-bound (a few flops per byte), so the design is about bytes and accesses:
// - rms_norm/add_rms_norm keep their row in registers between the sum of squares and the scaling,
//   so x is read from memory once; a warp owns a row for small hidden sizes (no block barrier,
//   4 rows per block), a block owns it for large ones. 16-byte accesses when aligned (see
//   ops_internal.cuh). Accumulators are fp32; fp16 appears only in storage.
// - rope builds each row's cos/sin table once in shared memory, in double like the CPU
//   (rope_internal.cuh, shared with the fused rope + KV-cache write of attention.cu).
// - argmax: one block per row, several 16-byte loads in flight per thread, packed (value, index)
//   keys reduced with the lowest-index-on-ties rule.
//
// Every launcher validates its sizes and pointers and returns InvalidArgument naming the problem
// before touching the device; rows == 0 is a no-op. Values that live in device memory (positions)
// cannot be checked here without a synchronizing copy: the engine produces them, the kernels trust
// them.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/ops_internal.cuh"
#include "kernels/cuda/rope_internal.cuh"

namespace qgate::cuda {
namespace {

using namespace ops_detail;  // NOLINT: this file's own helpers

constexpr int kWarpRowsPerBlock = 4;  // rows per 128-thread block when a warp owns a row
constexpr int kArgmaxThreads = 1024;

// ---- rms_norm / add_rms_norm --------------------------------------------------------------------

// Sum over a team of kTeam threads (a warp, or the whole block). Called once per kernel, so the
// shared scratch needs no second barrier.
template <int kTeam>
__device__ __forceinline__ float team_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if constexpr (kTeam > 32) {
    __shared__ float partial[kTeam / 32];
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
    __syncthreads();
    v = 0.0f;
    // Same order in every thread, so every thread gets the same bits.
#pragma unroll
    for (int w = 0; w < kTeam / 32; ++w) v += partial[w];
  }
  return v;
}

// One row per team. kUnits > 0: the row lives in kUnits registers per thread between the two
// passes (the launcher guarantees units <= kTeam * kUnits). kUnits == 0: rows too long for that,
// the second pass re-reads x (this thread's own loads or stores, so it sees them; L1/L2-hot).
// With kAdd, x += delta is stored back before the norm reads it.
template <int kTeam, int kUnits, bool kVector, bool kAdd>
__global__ void __launch_bounds__(kTeam == 32 ? 32 * kWarpRowsPerBlock : kTeam)
    rms_norm_kernel(float* __restrict__ x, const __half* __restrict__ delta,
                    const float* __restrict__ weight, int64_t rows, int n, float eps,
                    __half* __restrict__ out) {
  constexpr int E = kVector ? kVec : 1;
  constexpr int kRowsPerBlock = kTeam == 32 ? kWarpRowsPerBlock : 1;
  const int lane = static_cast<int>(threadIdx.x) % kTeam;
  const int64_t row =
      static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + static_cast<int>(threadIdx.x) / kTeam;
  // A whole team leaves together (in block mode the row is block-uniform), so no barrier or
  // shuffle below runs with missing threads.
  if (row >= rows) return;
  float* xr = x + row * n;
  const __half* dr = kAdd ? delta + row * n : nullptr;
  __half* outr = out + row * n;
  const int units = n / E;

  auto load_x = [&](int u, float(&v)[E]) {
    load_unit<kVector>(xr, u, v);
    if constexpr (kAdd) {
      float d[E];
      load_unit<kVector>(dr, u, d);
#pragma unroll
      for (int e = 0; e < E; ++e) v[e] += d[e];
      store_unit<kVector>(xr, u, v);
    }
  };
  // (x * scale) * weight, in the CPU reference's order.
  auto store_out = [&](int u, float(&v)[E], float scale) {
    float w[E];
    load_unit<kVector>(weight, u, w);
#pragma unroll
    for (int e = 0; e < E; ++e) v[e] = v[e] * scale * w[e];
    store_unit<kVector>(outr, u, v);
  };

  float ss = 0.0f;
  if constexpr (kUnits > 0) {
    float v[kUnits][E];
#pragma unroll
    for (int k = 0; k < kUnits; ++k) {
      const int u = lane + k * kTeam;
      if (u < units) {
        load_x(u, v[k]);
#pragma unroll
        for (int e = 0; e < E; ++e) ss += v[k][e] * v[k][e];
      }
    }
    ss = team_sum<kTeam>(ss);
    const float scale = 1.0f / sqrtf(ss / static_cast<float>(n) + eps);
#pragma unroll
    for (int k = 0; k < kUnits; ++k) {
      const int u = lane + k * kTeam;
      if (u < units) store_out(u, v[k], scale);
    }
  } else {
    for (int u = lane; u < units; u += kTeam) {
      float v[E];
      load_x(u, v);
#pragma unroll
      for (int e = 0; e < E; ++e) ss += v[e] * v[e];
    }
    ss = team_sum<kTeam>(ss);
    const float scale = 1.0f / sqrtf(ss / static_cast<float>(n) + eps);
    for (int u = lane; u < units; u += kTeam) {
      float v[E];
      load_unit<kVector>(xr, u, v);
      store_out(u, v, scale);
    }
  }
}

template <int kTeam, int kUnits, bool kVector, bool kAdd>
void launch_rms_norm(float* x, const __half* delta, const float* weight, int64_t rows, int n,
                     float eps, __half* out, cudaStream_t stream) {
  constexpr int kRowsPerBlock = kTeam == 32 ? kWarpRowsPerBlock : 1;
  const auto blocks = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  rms_norm_kernel<kTeam, kUnits, kVector, kAdd>
      <<<blocks, kTeam * kRowsPerBlock, 0, stream>>>(x, delta, weight, rows, n, eps, out);
}

// Team size by row length. Vector form (4 units of 8 per thread = 32 cached floats): a warp up to
// n = 1024 (SmolLM's 576 fills 2-3 units per lane and needs no block barrier), then the smallest
// block that covers the row, so hidden 4096 takes 128 threads and 8192 takes 256. The scalar form
// caches 8 single elements per thread with the same progression. Past 32768 (vector) or 8192
// (scalar) elements, 512 threads stream the row twice: with 1024 threads the 64-register cap made
// the unrolled streaming loop spill on sm_89.
template <bool kAdd>
Status dispatch_rms_norm(float* x, const __half* delta, const float* weight, int64_t rows, int n,
                         float eps, __half* out, cudaStream_t stream, const char* name) {
  const bool vector = n % kVec == 0 && aligned16(x) && aligned16(weight) && aligned16(out) &&
                      (!kAdd || aligned16(delta));
  if (vector) {
    const int units = n / kVec;
    if (units <= 32 * 4)
      launch_rms_norm<32, 4, true, kAdd>(x, delta, weight, rows, n, eps, out, stream);
    else if (units <= 128 * 4)
      launch_rms_norm<128, 4, true, kAdd>(x, delta, weight, rows, n, eps, out, stream);
    else if (units <= 256 * 4)
      launch_rms_norm<256, 4, true, kAdd>(x, delta, weight, rows, n, eps, out, stream);
    else if (units <= 512 * 4)
      launch_rms_norm<512, 4, true, kAdd>(x, delta, weight, rows, n, eps, out, stream);
    else if (units <= 1024 * 4)
      launch_rms_norm<1024, 4, true, kAdd>(x, delta, weight, rows, n, eps, out, stream);
    else
      launch_rms_norm<512, 0, true, kAdd>(x, delta, weight, rows, n, eps, out, stream);
  } else {
    if (n <= 32 * 8)
      launch_rms_norm<32, 8, false, kAdd>(x, delta, weight, rows, n, eps, out, stream);
    else if (n <= 128 * 8)
      launch_rms_norm<128, 8, false, kAdd>(x, delta, weight, rows, n, eps, out, stream);
    else if (n <= 256 * 8)
      launch_rms_norm<256, 8, false, kAdd>(x, delta, weight, rows, n, eps, out, stream);
    else if (n <= 512 * 8)
      launch_rms_norm<512, 8, false, kAdd>(x, delta, weight, rows, n, eps, out, stream);
    else if (n <= 1024 * 8)
      launch_rms_norm<1024, 8, false, kAdd>(x, delta, weight, rows, n, eps, out, stream);
    else
      launch_rms_norm<512, 0, false, kAdd>(x, delta, weight, rows, n, eps, out, stream);
  }
  return launch_status(name);
}

Status check_norm(const char* op, const void* x, const void* weight, int64_t rows, int64_t n,
                  float eps, const void* out) {
  QGATE_TRY_STATUS(check_rows_n(op, rows, n));
  if (!(eps >= 0.0f) || eps == INFINITY) return invalid(op, "eps must be finite and >= 0");
  if (rows == 0) return Status::Ok();
  QGATE_TRY_STATUS(check_ptr(op, x, "x"));
  QGATE_TRY_STATUS(check_ptr(op, weight, "weight"));
  return check_ptr(op, out, "out");
}

// ---- rope ---------------------------------------------------------------------------------------

// One block per row. The block first builds the row's cos/sin table (rope_internal.cuh), once
// per row instead of once per head, then rotates every pair of every q and k head with one thread
// per pair. Element accesses are 2-byte: the pairs of a warp cover contiguous 64-128 byte spans, so
// DRAM sectors are fully used, and rope moves ~10 KB per decode row, too little for the
// instruction count to matter.
template <bool kHalves>
__global__ void rope_kernel(__half* __restrict__ q, int64_t q_stride, __half* __restrict__ k,
                            int64_t k_stride, const int32_t* __restrict__ row_pos, int n_heads,
                            int n_kv_heads, int head_dim, float theta) {
  __shared__ float cos_t[rope_detail::kMaxHalf];
  __shared__ float sin_t[rope_detail::kMaxHalf];
  const int64_t row = blockIdx.x;
  const int half = head_dim / 2;
  rope_detail::build_table(row_pos[row], head_dim, theta, cos_t, sin_t);
  __syncthreads();
  const int q_pairs = n_heads * half;
  const int pairs = (n_heads + n_kv_heads) * half;
  __half* qr = q + row * q_stride;
  __half* kr = k + row * k_stride;
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    const bool is_q = p < q_pairs;
    const int pp = is_q ? p : p - q_pairs;
    const int h = pp / half;
    const int i = pp - h * half;
    __half* v = (is_q ? qr : kr) + h * head_dim;
    rope_detail::rotate(v[rope_detail::pair_a<kHalves>(i)],
                        v[rope_detail::pair_b<kHalves>(i, half)], cos_t[i], sin_t[i]);
  }
}

// ---- argmax -------------------------------------------------------------------------------------

// A (value, index) pair packed so that an unsigned max picks the larger value and, among equal
// values, the lower index: high word = the float's bits mapped to an order-preserving unsigned,
// low word = ~index. -0 is folded into +0 first (they compare equal, so the lower index must win,
// as in the CPU sampler). 0 means "no candidate" (every value NaN): it loses to any real key,
// since the smallest real key (-inf) has a nonzero high word.
__device__ __forceinline__ unsigned long long argmax_key(float v, int idx) {
  if (v == 0.0f) v = 0.0f;
  const unsigned bits = __float_as_uint(v);
  const unsigned ord = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<unsigned long long>(ord) << 32) | static_cast<unsigned>(~idx);
}

// One block per row (the API has no workspace for a cross-block reduction). Each thread scans its
// strided slice in increasing index order with a strict '>', so it keeps its lowest index among
// equal maxima; NaN fails every comparison and never wins; the first non-NaN value is taken even if
// it is -inf (the CPU sampler's semantics: a row of -inf returns its first index, an all-NaN row
// returns 0). Four 16-byte loads are issued before any is used so a single block keeps ~64 KB in
// flight: decode runs this on one row.
template <bool kVector>
__global__ void __launch_bounds__(kArgmaxThreads)
    argmax_kernel(const float* __restrict__ logits, int vocab, int32_t* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const float* lr = logits + row * vocab;
  float best = -INFINITY;
  int best_i = -1;
  auto consider = [&](float v, int i) {
    if (v > best || (best_i < 0 && !isnan(v))) {
      best = v;
      best_i = i;
    }
  };
  if constexpr (kVector) {
    const int units = vocab / 4;
    const float4* p = reinterpret_cast<const float4*>(lr);
    int u = threadIdx.x;
    for (; u + 3 * kArgmaxThreads < units; u += 4 * kArgmaxThreads) {
      float4 a[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) a[j] = p[u + j * kArgmaxThreads];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int i = (u + j * kArgmaxThreads) * 4;
        consider(a[j].x, i);
        consider(a[j].y, i + 1);
        consider(a[j].z, i + 2);
        consider(a[j].w, i + 3);
      }
    }
    for (; u < units; u += kArgmaxThreads) {
      const float4 a = p[u];
      consider(a.x, 4 * u);
      consider(a.y, 4 * u + 1);
      consider(a.z, 4 * u + 2);
      consider(a.w, 4 * u + 3);
    }
  } else {
    for (int i = threadIdx.x; i < vocab; i += kArgmaxThreads) consider(lr[i], i);
  }
  unsigned long long key = best_i < 0 ? 0ull : argmax_key(best, best_i);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned long long other = __shfl_xor_sync(0xffffffffu, key, o);
    key = other > key ? other : key;
  }
  __shared__ unsigned long long partial[kArgmaxThreads / 32];
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = key;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kArgmaxThreads / 32; ++w) key = partial[w] > key ? partial[w] : key;
    out[row] = key == 0 ? 0 : static_cast<int32_t>(~static_cast<unsigned>(key & 0xffffffffu));
  }
}

}  // namespace

// ---- launchers ----------------------------------------------------------------------------------

Status rms_norm(const float* x, const float* weight, int64_t rows, int64_t n, float eps,
                __half* out, cudaStream_t stream) {
  constexpr const char* op = "rms_norm";
  QGATE_TRY_STATUS(check_norm(op, x, weight, rows, n, eps, out));
  if (rows == 0) return Status::Ok();
  // The kernel writes x only in its add form; the const_cast spares a second pointer type.
  return dispatch_rms_norm<false>(const_cast<float*>(x), nullptr, weight, rows, static_cast<int>(n),
                                  eps, out, stream, op);
}

Status add_rms_norm(float* x, const __half* delta, const float* weight, int64_t rows, int64_t n,
                    float eps, __half* out, cudaStream_t stream) {
  constexpr const char* op = "add_rms_norm";
  QGATE_TRY_STATUS(check_norm(op, x, weight, rows, n, eps, out));
  if (rows == 0) return Status::Ok();
  QGATE_TRY_STATUS(check_ptr(op, delta, "delta"));
  return dispatch_rms_norm<true>(x, delta, weight, rows, static_cast<int>(n), eps, out, stream, op);
}

Status rope(__half* q, int64_t q_stride, __half* k, int64_t k_stride, const int32_t* row_pos,
            int64_t rows, int32_t n_heads, int32_t n_kv_heads, int32_t head_dim, float theta,
            RopeLayout layout, cudaStream_t stream) {
  constexpr const char* op = "rope";
  if (rows < 0) return invalid(op, "rows must be >= 0, got " + std::to_string(rows));
  if (rows > kMaxDim) return invalid(op, "rows " + std::to_string(rows) + " exceeds 2^31-1");
  if (n_heads <= 0) return invalid(op, "n_heads must be > 0, got " + std::to_string(n_heads));
  if (n_kv_heads <= 0) {
    return invalid(op, "n_kv_heads must be > 0, got " + std::to_string(n_kv_heads));
  }
  if (head_dim <= 0 || head_dim % 2 != 0 || head_dim > 2 * rope_detail::kMaxHalf) {
    return invalid(op, "head_dim must be even and in [2, " +
                           std::to_string(2 * rope_detail::kMaxHalf) + "], got " +
                           std::to_string(head_dim));
  }
  if (static_cast<int64_t>(n_heads + int64_t{n_kv_heads}) * head_dim > kMaxDim) {
    return invalid(op, "heads x head_dim exceeds 2^31-1");
  }
  if (!(theta > 0.0f) || theta == INFINITY) return invalid(op, "theta must be finite and > 0");
  if (q_stride < int64_t{n_heads} * head_dim || k_stride < int64_t{n_kv_heads} * head_dim) {
    return invalid(op, "q_stride " + std::to_string(q_stride) + " / k_stride " +
                           std::to_string(k_stride) + " are shorter than a row of heads");
  }
  if (layout != RopeLayout::kAdjacentPairs && layout != RopeLayout::kHalves) {
    return invalid(op, "unknown layout");
  }
  if (rows == 0) return Status::Ok();
  QGATE_TRY_STATUS(check_ptr(op, q, "q"));
  QGATE_TRY_STATUS(check_ptr(op, k, "k"));
  QGATE_TRY_STATUS(check_ptr(op, row_pos, "row_pos"));
  const int pairs = (n_heads + n_kv_heads) * (head_dim / 2);
  const int threads = pairs >= 256 ? 256 : ((pairs + 31) / 32) * 32;
  const auto blocks = static_cast<unsigned>(rows);
  if (layout == RopeLayout::kHalves) {
    rope_kernel<true><<<blocks, threads, 0, stream>>>(q, q_stride, k, k_stride, row_pos, n_heads,
                                                      n_kv_heads, head_dim, theta);
  } else {
    rope_kernel<false><<<blocks, threads, 0, stream>>>(q, q_stride, k, k_stride, row_pos, n_heads,
                                                       n_kv_heads, head_dim, theta);
  }
  return launch_status(op);
}

Status argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* out,
                   cudaStream_t stream) {
  constexpr const char* op = "argmax_rows";
  QGATE_TRY_STATUS(check_rows_n(op, rows, vocab, "vocab"));
  if (rows == 0) return Status::Ok();
  QGATE_TRY_STATUS(check_ptr(op, logits, "logits"));
  QGATE_TRY_STATUS(check_ptr(op, out, "out"));
  const bool vector = vocab % 4 == 0 && aligned16(logits);
  const auto blocks = static_cast<unsigned>(rows);
  const int v = static_cast<int>(vocab);
  if (vector)
    argmax_kernel<true><<<blocks, kArgmaxThreads, 0, stream>>>(logits, v, out);
  else
    argmax_kernel<false><<<blocks, kArgmaxThreads, 0, stream>>>(logits, v, out);
  return launch_status(op);
}

}  // namespace qgate::cuda
