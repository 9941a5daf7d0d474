// Internal to the W4A16 kernels (w4a16.cu, w4a16_gemv.cu, w4a16_mma.cu): the validated problem
// both kernels take, the per-kernel launchers, and the device helpers that read the packed layout
// of kernels/w4a16_layout.cpp (tiles of 32 rows x 32 columns, one 16-byte lane share per tile).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "kernels/status.h"

namespace qgate::cuda::w4a16_detail {

constexpr int kTileRows = 32;   // rows per tile (one warp's row block)
constexpr int kChunkCols = 32;  // columns per tile (one "chunk" of K)
constexpr int kTileVecs = 32;   // 16-byte vectors per tile: one per lane

// A call the launcher has validated: every count fits in int, pointers are 16-byte aligned.
struct Problem {
  const uint4* qweight = nullptr;    // tiles, [row_blocks][chunks][32 lanes]
  const uint4* scale_min = nullptr;  // [row_blocks][groups][8 lane groups] x 4 (scale, min)
  const __half* x = nullptr;         // [m][k]
  __half* y = nullptr;               // [m][n]
  int m = 0;
  int n = 0;
  int k = 0;
  int row_blocks = 0;        // ceil(n / 32)
  int chunks = 0;            // k / 32
  int groups = 0;            // ceil(k / group_size)
  int chunks_per_group = 0;  // min(group_size, k) / 32
  int sm_count = 0;          // multiprocessors of the current device
};

Status launch_gemv(const Problem& p, cudaStream_t stream);
Status launch_mma(const Problem& p, cudaStream_t stream);

// Blocks of `func` that fit on one multiprocessor with this block shape (cached: the occupancy
// query is a driver round trip that decode would otherwise pay on every call).
int blocks_per_sm(const void* func, int threads, size_t dynamic_smem);

// The group of chunk kc as (group, chunk within the group), advanced without a division per
// chunk: a runtime integer division costs ~20 instructions, as much as dequantizing 16 weights.
struct GroupCursor {
  int group;
  int rem;
  __device__ __forceinline__ GroupCursor(int kc, int chunks_per_group)
      : group(kc / chunks_per_group), rem(kc % chunks_per_group) {}
  // Moves the cursor forward by a step given as (groups, chunks) = divmod(step, chunks_per_group).
  __device__ __forceinline__ void advance(int step_groups, int step_rem, int chunks_per_group) {
    group += step_groups;
    rem += step_rem;
    if (rem >= chunks_per_group) {
      rem -= chunks_per_group;
      ++group;
    }
  }
};

__device__ __forceinline__ __half2 as_half2(uint32_t u) {
  __half2 h;
  memcpy(&h, &u, sizeof h);
  return h;
}

__device__ __forceinline__ uint32_t as_u32(__half2 h) {
  uint32_t u;
  memcpy(&u, &h, sizeof u);
  return u;
}

// (word & mask) | magic in one LOP3. Written out because the compiler, left to itself, emits an
// AND and an OR: a LOP3 encodes only one immediate, so the second constant must sit in a register.
template <uint32_t kMask>
__device__ __forceinline__ __half2 mask_or_magic(uint32_t word) {
  uint32_t out;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(out) : "r"(word), "n"(kMask), "r"(0x64006400u));
  return as_half2(out);
}

// The 8 weights of one packed word (column offsets 0..7 of one row) as 4 fp16x2 pairs, pair p
// holding offsets (2p, 2p + 1), each q * scale + min rounded once (HFMA2).
//
// The nibble order 0 2 4 6 1 3 5 7 puts the nibbles of pair p at bits 4p and 16 + 4p, so an AND
// and an OR with 0x6400 (fp16 1024, whose ulp is 1) build 1024 + q in both halves at once
// (one LOP3); for p = 1 and 3 the nibble sits 4 bits higher and reads as 1024 + 16 q. Turning
// those into q is exact (small integers), so the only rounding is the final fma, exactly as if
// the weight had been stored in fp16.
__device__ __forceinline__ void dequant_word(uint32_t word, __half2 scale_min, __half2 (&w)[4]) {
  const __half2 scale = __low2half2(scale_min);
  const __half2 min = __high2half2(scale_min);
  const __half2 minus_1024 = as_half2(0xE400E400u);  // -1024
  const __half2 one_16th = as_half2(0x2C002C00u);    // 1 / 16
  const __half2 minus_64 = as_half2(0xD400D400u);    // -64 = -1024 / 16
  const uint32_t lo = word;
  const uint32_t hi = word >> 8;
  const __half2 q0 = __hadd2(mask_or_magic<0x000F000Fu>(lo), minus_1024);
  const __half2 q1 = __hfma2(mask_or_magic<0x00F000F0u>(lo), one_16th, minus_64);
  const __half2 q2 = __hadd2(mask_or_magic<0x000F000Fu>(hi), minus_1024);
  const __half2 q3 = __hfma2(mask_or_magic<0x00F000F0u>(hi), one_16th, minus_64);
  w[0] = __hfma2(q0, scale, min);
  w[1] = __hfma2(q1, scale, min);
  w[2] = __hfma2(q2, scale, min);
  w[3] = __hfma2(q3, scale, min);
}

__device__ __forceinline__ __half2 lane_pair(const uint4& v, int i) {
  return as_half2(i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w);
}

__device__ __forceinline__ uint32_t lane_word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

}  // namespace qgate::cuda::w4a16_detail
