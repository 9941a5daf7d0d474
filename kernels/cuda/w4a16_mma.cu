// W4A16 matmul on tensor cores (mma.sync m16n8k16, fp16 in, fp32 accumulate), for m >= 2.
//
// Operands are swapped: the weights are the 16-row A operand and the activations the 8-column
// B operand, so y^T[n][m] = W[n][:] · x^T[:][m]. An m-tile of 8 activation rows then wastes no
// tensor-core work below m = 8, where decode batches live, instead of padding m to 16.
//
// - The packed layout hands each lane its A fragments directly: one 16-byte load per 32x32 tile
//   gives the lane rows g, g+8 (first m16 half) and g+16, g+24 (second), 8 columns each, which
//   dequantize (LOP3 + HFMA2, see dequant_word) into the fp16x2 registers of two k16 steps. No
//   shared-memory round trip for weights: they are read once, straight into registers.
// - Since the layout numbers the mma k-slots so that a lane's 8 columns are consecutive, the B
//   fragment of an 8-row m-tile is one 16-byte load of x[m0 + g][32 kc + 8 t ..]: x is staged
//   per K slice into shared memory (cp.async, two buffers, one barrier per slice) because every
//   warp of the block needs the same slice; the row stride is padded by 64 bytes so the 8 lanes
//   of a quarter warp (two rows, 64 bytes each) hit all 32 banks once.
// - A block is 8 warps: RBW row blocks (32 rows each) x KW warps splitting each slice's chunks
//   (reduced through shared memory at the end). The launcher picks KW so the grid fills the GPU
//   in one wave: small n needs the K split to give enough warps loads to keep in flight.
// - Weights are loaded into registers up to two slices ahead of the one being multiplied, so
//   each warp keeps up to 4 tile loads in flight across the barrier (the grid of a large n
//   gives an SM only ~14 warps; Little's law wants ~25-30 KB in flight per SM at 3 TB/s).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/w4a16_internal.cuh"

namespace qgate::cuda::w4a16_detail {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kChunksPerWarp = 2;  // chunks a warp takes from each slice
constexpr int kXPad = 32;          // halves: row stride = 64 mod 128 bytes, conflict-free
constexpr int kMaxGridY = 65535;
constexpr size_t kMaxStaticSmem = 48 * 1024;  // no opt-in attribute needed below this

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 16 : 0;  // 0: the 16 bytes are zero-filled, nothing is read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(bytes));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// c += A (16x16, row) * B (16x8, col), fp16 operands, fp32 accumulators.
__device__ __forceinline__ void mma_16816(float (&c)[4], __half2 a0, __half2 a1, __half2 a2,
                                          __half2 a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(as_u32(a0)), "r"(as_u32(a1)), "r"(as_u32(a2)), "r"(as_u32(a3)), "r"(b0), "r"(b1));
}

// Shared memory of one block: two x slices, reused at the end for the K-split reduction.
__host__ __device__ constexpr size_t smem_bytes(int nt8, int kw) {
  const size_t xs = 2 * (8 * static_cast<size_t>(nt8)) *
                    (static_cast<size_t>(kw) * kChunksPerWarp * kChunkCols + kXPad) * 2;
  const size_t red = static_cast<size_t>(kw - 1) * (kWarps / kw) * (2 * nt8 * 4) * 32 * 4;
  return xs > red ? xs : red;
}

// NT8: 8-row m-tiles per block; KW: warps splitting each slice's chunks (1, 2, 4 or 8). Both
// compile-time, so the slice geometry costs no registers.
template <int NT8, int KW>
__global__ void __launch_bounds__(kThreads, 2) w4a16_mma_kernel(Problem p, int m_base) {
  constexpr int MT = 8 * NT8;
  constexpr int kVals = 2 * NT8 * 4;  // accumulators per lane
  constexpr int rbw_count = kWarps / KW;
  constexpr int slice_chunks = kChunksPerWarp * KW;
  constexpr int slice_cols = slice_chunks * kChunkCols;
  constexpr int xstride = slice_cols + kXPad;
  static_assert(smem_bytes(NT8, KW) <= kMaxStaticSmem, "x slices must fit static shared memory");
  __shared__ uint4 smem[smem_bytes(NT8, KW) / sizeof(uint4)];
  __half* xs = reinterpret_cast<__half*>(smem);

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4;
  const int t = lane % 4;
  const int rbw = warp % rbw_count;
  const int kw = warp / rbw_count;
  const int rb = static_cast<int>(blockIdx.x) * rbw_count + rbw;
  const bool active = rb < p.row_blocks;  // warps past the last row block still stage and sync
  const int m0 = m_base + static_cast<int>(blockIdx.y) * MT;
  const int nslices = (p.chunks + slice_chunks - 1) / slice_chunks;

  const uint4* wtile =
      p.qweight + static_cast<size_t>(active ? rb : 0) * p.chunks * kTileVecs + lane;
  const uint4* scales = p.scale_min + static_cast<size_t>(active ? rb : 0) * p.groups * 8 + g;

  // x[m0 .. m0 + MT)[slice s] -> buffer buf; rows past m and columns past k are zero-filled.
  // Each thread copies the same 16-byte column of every kRowsPerPass-th row in every slice, so
  // its addresses are one base pointer plus constants (kept in registers across the loop).
  constexpr int kVecsPerRow = slice_cols / 8;
  constexpr int kRowsPerPass = kThreads / kVecsPerRow;
  static_assert(kThreads % kVecsPerRow == 0, "a pass covers whole rows");
  const int stage_row = static_cast<int>(threadIdx.x) / kVecsPerRow;
  const int stage_col = static_cast<int>(threadIdx.x) % kVecsPerRow * 8;
  const __half* stage_src = p.x + static_cast<size_t>(m0 + stage_row) * p.k + stage_col;
  auto stage = [&](int s, int buf) {
    __half* dst = xs + (buf * MT + stage_row) * xstride + stage_col;
    const bool col_ok = s * slice_cols + stage_col < p.k;
#pragma unroll
    for (int r = 0; r < MT; r += kRowsPerPass) {
      if (MT % kRowsPerPass != 0 && stage_row + r >= MT) break;
      const bool valid = col_ok && m0 + stage_row + r < p.m;
      const __half* src = valid ? stage_src + static_cast<size_t>(r) * p.k + s * slice_cols : p.x;
      cp_async16(dst + r * xstride, src, valid);
    }
    cp_async_commit();
  };

  // A warp's share of one slice: chunks s * slice_chunks + 2 kw + u (u = 0, 1), their tiles
  // and (scale, min) vectors. Chunks past k (or rows past n) are not loaded and never read.
  struct SliceRegs {
    uint4 w[kChunksPerWarp];
    uint4 sm[kChunksPerWarp];
  };
  const int cpg = p.chunks_per_group;
  const int slice_groups = slice_chunks / cpg;
  const int slice_rem = slice_chunks % cpg;
  GroupCursor cursor(kChunksPerWarp * kw, cpg);  // must see slices 0, 1, 2, ... in order
  auto load = [&](int s, SliceRegs& dst) {
    static_assert(kChunksPerWarp == 2, "the second chunk's group is derived from the first's");
    const int kc = s * slice_chunks + kChunksPerWarp * kw;
    const int groups[2] = {cursor.group, cursor.group + (cursor.rem + 1 == cpg ? 1 : 0)};
#pragma unroll
    for (int u = 0; u < kChunksPerWarp; ++u) {
      if (active && kc + u < p.chunks) {
        dst.w[u] = __ldcs(wtile + static_cast<size_t>(kc + u) * kTileVecs);
        dst.sm[u] = __ldg(scales + static_cast<size_t>(groups[u]) * 8);
      }
    }
    cursor.advance(slice_groups, slice_rem, cpg);
  };

  float acc[2][NT8][4];
#pragma unroll
  for (int rt = 0; rt < 2; ++rt) {
#pragma unroll
    for (int j = 0; j < NT8; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[rt][j][c] = 0.0f;
    }
  }

  // Slice s: wait for its x, start staging slice s + 1 into the other buffer, multiply.
  auto compute = [&](int s, const SliceRegs& cur) {
    cp_async_wait_all();
    __syncthreads();  // slice s landed for all; everyone is done reading the other buffer
    if (s + 1 < nslices) stage(s + 1, (s + 1) & 1);
    if (!active) return;
    const __half* xb = xs + (s & 1) * MT * xstride + g * xstride + 8 * t;
#pragma unroll
    for (int u = 0; u < kChunksPerWarp; ++u) {
      const int cs = kChunksPerWarp * kw + u;        // chunk within the slice
      if (s * slice_chunks + cs >= p.chunks) break;  // warp-uniform
      __half2 a[4][4];  // [row g + 8 i][pair p]: columns 8 t + 2 p, 8 t + 2 p + 1
#pragma unroll
      for (int i = 0; i < 4; ++i)
        dequant_word(lane_word(cur.w[u], i), lane_pair(cur.sm[u], i), a[i]);
#pragma unroll
      for (int j = 0; j < NT8; ++j) {
        const uint4 b = *reinterpret_cast<const uint4*>(xb + j * 8 * xstride + cs * kChunkCols);
        // k-step 0 holds pairs 0 and 1 of every lane, k-step 1 pairs 2 and 3 (layout notes).
        mma_16816(acc[0][j], a[0][0], a[1][0], a[0][1], a[1][1], b.x, b.y);
        mma_16816(acc[0][j], a[0][2], a[1][2], a[0][3], a[1][3], b.z, b.w);
        mma_16816(acc[1][j], a[2][0], a[3][0], a[2][1], a[3][1], b.x, b.y);
        mma_16816(acc[1][j], a[2][2], a[3][2], a[2][3], a[3][3], b.z, b.w);
      }
    }
  };

  // Weights are loaded kDepth slices ahead into registers that rotate (the loop is unrolled by
  // kDepth + 1, so no register is copied). Small m-tiles are memory-bound and the grid gives an
  // SM only ~14 warps, so they keep two slices (4 tiles per warp) in flight; large m-tiles need
  // the registers for accumulators (deeper prefetch spilled at the 128-register cap) and lean on
  // the tensor cores.
  constexpr int kDepth = NT8 <= 2 ? 2 : NT8 <= 4 ? 1 : 0;
  SliceRegs r0, r1, r2;
  stage(0, 0);
  if constexpr (kDepth == 0) {
    for (int s = 0; s < nslices; ++s) {
      load(s, r0);
      compute(s, r0);
    }
  } else if constexpr (kDepth == 1) {
    load(0, r0);
    for (int s = 0; s < nslices; s += 2) {
      if (s + 1 < nslices) load(s + 1, r1);
      compute(s, r0);
      if (s + 1 >= nslices) break;
      if (s + 2 < nslices) load(s + 2, r0);
      compute(s + 1, r1);
    }
  } else {
    load(0, r0);
    if (1 < nslices) load(1, r1);
    for (int s = 0; s < nslices; s += 3) {
      if (s + 2 < nslices) load(s + 2, r2);
      compute(s, r0);
      if (s + 1 >= nslices) break;
      if (s + 3 < nslices) load(s + 3, r0);
      compute(s + 1, r1);
      if (s + 2 >= nslices) break;
      if (s + 4 < nslices) load(s + 4, r1);
      compute(s + 2, r2);
    }
  }

  // K-split warps hand their accumulators to warp kw = 0 of the same row block. The last slice
  // staged nothing, so no cp.async is pending on the x buffers reused here.
  __syncthreads();
  float* red = reinterpret_cast<float*>(smem);
  if (active && kw > 0) {
    float* dst = red + static_cast<size_t>((kw - 1) * rbw_count + rbw) * kVals * 32 + lane;
#pragma unroll
    for (int rt = 0; rt < 2; ++rt) {
#pragma unroll
      for (int j = 0; j < NT8; ++j) {
#pragma unroll
        for (int c = 0; c < 4; ++c) dst[((rt * NT8 + j) * 4 + c) * 32] = acc[rt][j][c];
      }
    }
  }
  __syncthreads();
  if (!active || kw > 0) return;
#pragma unroll
  for (int other = 1; other < KW; ++other) {
    const float* src = red + static_cast<size_t>((other - 1) * rbw_count + rbw) * kVals * 32 + lane;
#pragma unroll
    for (int rt = 0; rt < 2; ++rt) {
#pragma unroll
      for (int j = 0; j < NT8; ++j) {
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[rt][j][c] += src[((rt * NT8 + j) * 4 + c) * 32];
      }
    }
  }
  // Accumulator c of tile (rt, j): row 16 rt + g + 8 (c / 2) of the block, activation row
  // 8 j + 2 t + c % 2 of the m-tile.
#pragma unroll
  for (int rt = 0; rt < 2; ++rt) {
#pragma unroll
    for (int j = 0; j < NT8; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int row = rb * kTileRows + rt * 16 + g + 8 * (c / 2);
        const int mrow = m0 + j * 8 + 2 * t + c % 2;
        if (row < p.n && mrow < p.m) {
          p.y[static_cast<size_t>(mrow) * p.n + row] = __float2half_rn(acc[rt][j][c]);
        }
      }
    }
  }
}

template <int NT8, int KW>
Status launch_kw(const Problem& p, cudaStream_t stream) {
  constexpr int MT = 8 * NT8;
  constexpr int rbw = kWarps / KW;
  const int m_tiles = (p.m + MT - 1) / MT;
  for (int tile0 = 0; tile0 < m_tiles; tile0 += kMaxGridY) {
    const int tiles = m_tiles - tile0 < kMaxGridY ? m_tiles - tile0 : kMaxGridY;
    const dim3 grid(static_cast<unsigned>((p.row_blocks + rbw - 1) / rbw),
                    static_cast<unsigned>(tiles));
    w4a16_mma_kernel<NT8, KW><<<grid, kThreads, 0, stream>>>(p, tile0 * MT);
    QGATE_TRY_STATUS(launch_status("w4a16_mma_kernel"));
  }
  return Status::Ok();
}

// Blocks of the grid and resident blocks of the GPU for one (NT8, KW) instantiation.
template <int NT8, int KW>
bool fits_one_wave(const Problem& p) {
  constexpr int MT = 8 * NT8;
  constexpr long long rbw = kWarps / KW;
  const long long m_tiles = (p.m + MT - 1) / MT;
  const long long blocks =
      (p.row_blocks + rbw - 1) / rbw * (m_tiles < kMaxGridY ? m_tiles : kMaxGridY);
  const auto* func = reinterpret_cast<const void*>(&w4a16_mma_kernel<NT8, KW>);
  return blocks <= static_cast<long long>(blocks_per_sm(func, kThreads, 0)) * p.sm_count;
}

// The widest K split (more warps with loads in flight) whose grid is still one wave; a slice
// must fit 48 KB of shared memory (KW <= 2 at NT8 = 8, <= 4 at NT8 = 4) and K.
template <int NT8>
Status launch(const Problem& p, cudaStream_t stream) {
  const bool kw2 = p.chunks >= 4 && fits_one_wave<NT8, 2>(p);
  if constexpr (NT8 <= 4) {
    const bool kw4 = kw2 && p.chunks >= 8 && fits_one_wave<NT8, 4>(p);
    if constexpr (NT8 <= 2) {
      if (kw4 && p.chunks >= 16 && fits_one_wave<NT8, 8>(p)) return launch_kw<NT8, 8>(p, stream);
    }
    if (kw4) return launch_kw<NT8, 4>(p, stream);
  }
  if (kw2) return launch_kw<NT8, 2>(p, stream);
  return launch_kw<NT8, 1>(p, stream);
}

}  // namespace

Status launch_mma(const Problem& p, cudaStream_t stream) {
  if (p.m <= 8) return launch<1>(p, stream);
  if (p.m <= 16) return launch<2>(p, stream);
  if (p.m <= 32) return launch<4>(p, stream);
  return launch<8>(p, stream);
}

}  // namespace qgate::cuda::w4a16_detail
