// W4A16 GEMV for small m on CUDA cores: y[m][n] = x[m][:] · W[n][:], fp32 accumulators.
//
// Decode is bound by the weight stream (0.5 byte per weight plus 4 bytes of (scale, min) per row
// and group), so the kernel is built to keep that stream at full speed:
// - One block per row block of 32 rows (one tile row of the packed layout); its warps split the
//   K chunks, so a block reads consecutive 512-byte tiles and each warp load is one fully
//   coalesced 16-byte access per lane (LDG.128), issued with the streaming hint (__ldcs,
//   evict-first) because no weight byte is read twice, which leaves L1/L2 to x and the scales.
// - Each warp issues kLoads tile loads (and their scale loads) before it dequantizes any, so
//   several loads per warp are in flight; the launcher sizes blocks so that all of them are
//   resident at once (one wave) with as many warps as fit.
// - The activations (at most 4 rows of K fp16, 64 KB at K = 8192) come through the read-only
//   L1 path: each 16-byte x load is shared by the lane's 4 rows and by the 8 lane groups.
// - A lane holds rows g, g+8, g+16, g+24 and 8 consecutive columns per tile, so it dequantizes
//   4 words with the LOP3/HFMA2 trick. Per row and m, the 8 products of a word are summed by
//   4 HFMA2 (4 products per fp16 half) and only then widened and added to an fp32 accumulator:
//   widening every weight to fp32 for FFMA cost ~4.5 issued instructions per weight in SASS,
//   close to the ~5 per weight that 3 TB/s of 4-bit weights leaves on 132 SMs; this costs ~2.7.
//   A 4-product fp16 partial adds ~2^-12 relative error per partial, random across K, about as
//   much as rounding the dequantized weight to fp16 already does.
// - Partial sums meet through two shuffles (the 4 lanes t of a row) and shared memory (warps).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/w4a16_internal.cuh"

namespace qgate::cuda::w4a16_detail {
namespace {

constexpr int kLoads = 4;      // tiles in flight per warp
constexpr int kMaxWarps = 16;  // warps per block at most (K split inside the block)
constexpr int kMaxGridY = 65535;

// m = 1 (decode) is capped at 64 registers: 32 resident warps per SM keep enough tile loads in
// flight to cover DRAM latency; the larger m-tiles need their accumulators more.
template <int MT>
__global__ void __launch_bounds__(kMaxWarps * 32, MT == 1 ? 2 : 1)
    w4a16_gemv_kernel(Problem p, int m_base) {
  const int warps = static_cast<int>(blockDim.x) / 32;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4;
  const int t = lane % 4;
  const int rb = static_cast<int>(blockIdx.x);
  const int m0 = m_base + static_cast<int>(blockIdx.y) * MT;

  const uint4* wtile = p.qweight + static_cast<size_t>(rb) * p.chunks * kTileVecs + lane;
  const uint4* scales = p.scale_min + static_cast<size_t>(rb) * p.groups * 8 + g;
  const __half* xrow[MT];
  bool has_row[MT];
#pragma unroll
  for (int mi = 0; mi < MT; ++mi) {
    has_row[mi] = m0 + mi < p.m;
    xrow[mi] = p.x + static_cast<size_t>(has_row[mi] ? m0 + mi : 0) * p.k + 8 * t;
  }

  float acc[MT][4];
#pragma unroll
  for (int mi = 0; mi < MT; ++mi) {
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[mi][i] = 0.0f;
  }

  // Warp w reads chunks w, w + warps, w + 2 warps, ...: the block's warps cover consecutive tiles.
  const int step_groups = warps / p.chunks_per_group;
  const int step_rem = warps % p.chunks_per_group;
  GroupCursor cursor(warp, p.chunks_per_group);
  for (int kc0 = warp; kc0 < p.chunks; kc0 += warps * kLoads) {
    uint4 wq[kLoads];
    uint4 sm[kLoads];
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      const int kc = kc0 + u * warps;
      if (kc < p.chunks) {
        wq[u] = __ldcs(wtile + static_cast<size_t>(kc) * kTileVecs);
        sm[u] = __ldg(scales + static_cast<size_t>(cursor.group) * 8);
      } else {
        wq[u] = make_uint4(0, 0, 0, 0);
        sm[u] = make_uint4(0, 0, 0, 0);
      }
      cursor.advance(step_groups, step_rem, p.chunks_per_group);
    }
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      const int kc = kc0 + u * warps;
      if (kc >= p.chunks) break;  // warp-uniform
      __half2 xh[MT][4];          // x[m0 + mi][32 kc + 8 t + 2 j ..], pair j
#pragma unroll
      for (int mi = 0; mi < MT; ++mi) {
        uint4 xv = make_uint4(0, 0, 0, 0);
        if (has_row[mi]) {
          xv = __ldg(
              reinterpret_cast<const uint4*>(xrow[mi] + static_cast<size_t>(kc) * kChunkCols));
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) xh[mi][j] = lane_pair(xv, j);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        __half2 w2[4];
        dequant_word(lane_word(wq[u], i), lane_pair(sm[u], i), w2);
#pragma unroll
        for (int mi = 0; mi < MT; ++mi) {
          // 8 products summed in fp16 pairs (4 per half), then added to the fp32 accumulator.
          __half2 part = __hmul2(w2[0], xh[mi][0]);
#pragma unroll
          for (int j = 1; j < 4; ++j) part = __hfma2(w2[j], xh[mi][j], part);
          const float2 f = __half22float2(part);
          acc[mi][i] += f.x + f.y;
        }
      }
    }
  }

  // The 4 lanes t of a lane group hold the same rows: fold them, then add the warps' K shares.
  __shared__ float red[kMaxWarps][MT][kTileRows];
#pragma unroll
  for (int mi = 0; mi < MT; ++mi) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float v = acc[mi][i];
      v += __shfl_xor_sync(0xFFFFFFFFu, v, 1);
      v += __shfl_xor_sync(0xFFFFFFFFu, v, 2);
      if (t == 0) red[warp][mi][g + 8 * i] = v;
    }
  }
  __syncthreads();
  for (int idx = static_cast<int>(threadIdx.x); idx < MT * kTileRows;
       idx += static_cast<int>(blockDim.x)) {
    const int mi = idx / kTileRows;
    const int r = idx % kTileRows;
    const int row = rb * kTileRows + r;
    const int mrow = m0 + mi;
    if (row < p.n && mrow < p.m) {
      float sum = 0.0f;
      for (int w = 0; w < warps; ++w) sum += red[w][mi][r];
      p.y[static_cast<size_t>(mrow) * p.n + row] = __float2half_rn(sum);
    }
  }
}

template <int MT>
Status launch(const Problem& p, cudaStream_t stream) {
  const auto* func = reinterpret_cast<const void*>(&w4a16_gemv_kernel<MT>);
  const int m_tiles = (p.m + MT - 1) / MT;
  // Warps per block: as many as stay resident in one wave (more loads in flight per SM), at
  // least 4, at most 16, and no more than there are chunks to share.
  const long long resident_warps =
      static_cast<long long>(blocks_per_sm(func, 128, 0)) * 4 * p.sm_count;
  const long long blocks =
      static_cast<long long>(p.row_blocks) * (m_tiles < kMaxGridY ? m_tiles : kMaxGridY);
  int warps = 4;
  while (warps < kMaxWarps && warps < p.chunks && blocks * warps * 2 <= resident_warps) warps *= 2;

  for (int tile0 = 0; tile0 < m_tiles; tile0 += kMaxGridY) {
    const int tiles = m_tiles - tile0 < kMaxGridY ? m_tiles - tile0 : kMaxGridY;
    const dim3 grid(static_cast<unsigned>(p.row_blocks), static_cast<unsigned>(tiles));
    w4a16_gemv_kernel<MT><<<grid, warps * 32, 0, stream>>>(p, tile0 * MT);
    QGATE_TRY_STATUS(launch_status("w4a16_gemv_kernel"));
  }
  return Status::Ok();
}

}  // namespace

Status launch_gemv(const Problem& p, cudaStream_t stream) {
  if (p.m == 1) return launch<1>(p, stream);
  if (p.m == 2) return launch<2>(p, stream);
  return launch<4>(p, stream);
}

}  // namespace qgate::cuda::w4a16_detail
