// Prefill attention over the paged fp16 KV cache: causal, GQA, many query rows per sequence.
//
// FlashAttention-2 shape: one CTA per (64-query tile, head, sequence), 4 warps of 16 query rows.
// Q stays in registers as mma A fragments for the whole CTA; the loop walks 64-key tiles from
// position 0 up to the tile's causal limit, computes S = Q Kᵀ and O += P V with
// mma.sync.m16n8k16 (fp16 in, fp32 accumulate), and keeps the online softmax (row max, row sum)
// in fp32 registers; the probabilities are converted from the S accumulators to A fragments in
// registers (the C layout of two adjacent n8 tiles is exactly the A layout of one k16 step).
//
// K/V tiles come in through cp.async into two shared-memory buffers: the next tile's copy runs
// while the tensor cores work on the current one. Every key row is a paged lookup (the block
// table is read per row), and rows past the tile's causal limit are zero-filled by the copy
// itself (src-size 0) instead of read: the cache beyond a sequence may hold anything, NaN
// included, and 0 * NaN would poison the P V product. Rows are padded by 16 bytes so that the
// 32-bit K fragment reads and the ldmatrix rows of V land in distinct banks.
//
// mma.sync rather than Hopper's wgmma: the kernel builds for sm_80/89/90 from one source, and
// prefill attention is a small share of the forward pass at these model sizes.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/attention_internal.cuh"
#include "kernels/cuda/device_memory.h"

namespace qgate::cuda::attention_detail {
namespace {

constexpr int kBlockM = 64;  // query rows per CTA (16 per warp)
constexpr int kBlockN = 64;  // keys per tile

template <int D>
struct PrefillSmem {
  static constexpr int kStride = D + 8;  // halves per row: 16 bytes of padding
  static constexpr int kTileElems = kBlockN * kStride;
  static constexpr int kBytes = 4 * kTileElems * 2;  // K and V, two buffers each
};

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  // src-size 0 zero-fills the 16 bytes without reading src.
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// d += a * b for one m16n8k16 tile (a: 16x16 row-major fragment, b: 16x8 column fragment).
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four transposed 8x8 fp16 matrices; lane l gives the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

__device__ __forceinline__ uint32_t load_u32(const __half* p) {
  return __ldg(reinterpret_cast<const unsigned int*>(p));
}

// Copies keys [k0, k0 + 64) of one kv head into shared memory (rows >= kv_limit zero-filled).
template <int D>
__device__ __forceinline__ void load_kv_tile(uint32_t k_dst, uint32_t v_dst, const Params& p,
                                             const int32_t* table, int kv_head_off, int k0,
                                             int kv_limit) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  constexpr int kRowsPerPass = kThreads / kChunks;
  const int col = threadIdx.x % kChunks;
  const int r0 = threadIdx.x / kChunks;
#pragma unroll
  for (int i = 0; i < kBlockN / kRowsPerPass; ++i) {
    const int row = r0 + i * kRowsPerPass;
    const int pos = k0 + row;
    const bool valid = pos < kv_limit;
    const int64_t off =
        valid ? kv_offset(table, pos, p.block_tokens, p.block_stride, p.kv_dim) + kv_head_off + col * 8
              : 0;
    const uint32_t dst = static_cast<uint32_t>((row * PrefillSmem<D>::kStride + col * 8) * 2);
    cp_async16(k_dst + dst, p.k + off, valid);
    cp_async16(v_dst + dst, p.v + off, valid);
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads) prefill_kernel(Params p) {
  using Smem = PrefillSmem<D>;
  constexpr int kStride = Smem::kStride;
  constexpr int kKSteps = D / 16;  // k16 steps of Q Kᵀ
  constexpr int kDimTiles = D / 8;  // n8 tiles of the output
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const __half* smem = reinterpret_cast<const __half*>(smem_raw);
  const uint32_t smem_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));

  const int seq = blockIdx.z;
  const int head = blockIdx.y;
  const int row0 = p.query_start[seq];
  const int nrows = p.query_start[seq + 1] - row0;
  if (nrows <= 1) return;  // a decode sequence: the decode kernel's
  // The last query tiles of a sequence see the most keys: schedule them first.
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kBlockM;
  if (q0 >= nrows) return;
  const int cs = p.context_start[seq];
  const int kvh = head / p.group;
  // Keys [0, kv_limit): up to the position of the tile's last row.
  const int kv_limit = min(cs + min(q0 + kBlockM, nrows), p.max_context);
  const int ntiles = (kv_limit + kBlockN - 1) / kBlockN;

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;    // fragment row (and B column) group
  const int tig = lane % 4;  // thread in group
  const int ra = q0 + warp * 16 + g;  // this thread's two rows in the sequence
  const int rb = ra + 8;
  const int pos_a = cs + ra;
  const int pos_b = cs + rb;
  const bool warp_active = q0 + warp * 16 < nrows;  // warp-uniform

  uint32_t qa[kKSteps][4];
  {
    const __half* qrow_a = p.q + static_cast<int64_t>(row0 + ra) * p.q_stride + head * D;
    const __half* qrow_b = p.q + static_cast<int64_t>(row0 + rb) * p.q_stride + head * D;
    const bool va = ra < nrows;
    const bool vb = rb < nrows;
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      const int c = ks * 16 + tig * 2;
      qa[ks][0] = va ? load_u32(qrow_a + c) : 0u;
      qa[ks][1] = vb ? load_u32(qrow_b + c) : 0u;
      qa[ks][2] = va ? load_u32(qrow_a + c + 8) : 0u;
      qa[ks][3] = vb ? load_u32(qrow_b + c + 8) : 0u;
    }
  }

  float o[kDimTiles][4];
#pragma unroll
  for (int i = 0; i < kDimTiles; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o[i][e] = 0.0f;
  }
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;

  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks;
  const int kv_head_off = kvh * D;
  auto k_smem = [&](int buf) {
    return smem_base + static_cast<uint32_t>((2 * buf) * Smem::kTileElems * 2);
  };
  auto v_smem = [&](int buf) {
    return smem_base + static_cast<uint32_t>((2 * buf + 1) * Smem::kTileElems * 2);
  };

  load_kv_tile<D>(k_smem(0), v_smem(0), p, table, kv_head_off, 0, kv_limit);
  cp_async_commit();
  for (int j = 0; j < ntiles; ++j) {
    const int buf = j & 1;
    if (j + 1 < ntiles) {
      // Buffer buf ^ 1 was last read in iteration j - 1, which ended with a barrier.
      load_kv_tile<D>(k_smem(buf ^ 1), v_smem(buf ^ 1), p, table, kv_head_off, (j + 1) * kBlockN,
                      kv_limit);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    if (warp_active) {
      const int k0 = j * kBlockN;
      const __half* ks_tile = smem + (2 * buf) * Smem::kTileElems;
      float s[kBlockN / 8][4];
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
        // B[k][n] = K[key n][dim k]: the two halves at (key g, dims 2 tig, 2 tig + 1) are adjacent.
        const __half* krow = ks_tile + (nt * 8 + g) * kStride + tig * 2;
#pragma unroll
        for (int ks = 0; ks < kKSteps; ++ks) {
          const uint32_t b0 = *reinterpret_cast<const uint32_t*>(krow + ks * 16);
          const uint32_t b1 = *reinterpret_cast<const uint32_t*>(krow + ks * 16 + 8);
          mma_16816(s[nt], qa[ks], b0, b1);
        }
      }

      // Scale into the exp2 domain and mask keys after each row's own position (the causal
      // limit; it also covers the zero-filled keys past kv_limit).
      const bool need_mask = k0 + kBlockN - 1 > cs + q0 + warp * 16;
      float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + nt * 8 + tig * 2 + (e & 1);
          const int pos = e < 2 ? pos_a : pos_b;
          float x = s[nt][e] * p.scale_log2;
          if (need_mask && key > pos) x = -INFINITY;
          s[nt][e] = x;
        }
        mx_a = fmaxf(mx_a, fmaxf(s[nt][0], s[nt][1]));
        mx_b = fmaxf(mx_b, fmaxf(s[nt][2], s[nt][3]));
      }
      // A row's values live in the 4 threads of its quad.
      mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
      mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
      mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
      mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
      const float mn_a = fmaxf(m_a, mx_a);
      const float mn_b = fmaxf(m_b, mx_b);
      // A row with no visible key yet keeps -inf; subtracting 0 then keeps exp2 at 0, not NaN.
      const float use_a = mn_a == -INFINITY ? 0.0f : mn_a;
      const float use_b = mn_b == -INFINITY ? 0.0f : mn_b;
      const float alpha_a = exp2f(m_a - use_a);
      const float alpha_b = exp2f(m_b - use_b);
      m_a = mn_a;
      m_b = mn_b;
      float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt) {
        s[nt][0] = exp2f(s[nt][0] - use_a);
        s[nt][1] = exp2f(s[nt][1] - use_a);
        s[nt][2] = exp2f(s[nt][2] - use_b);
        s[nt][3] = exp2f(s[nt][3] - use_b);
        sum_a += s[nt][0] + s[nt][1];
        sum_b += s[nt][2] + s[nt][3];
      }
      l_a = l_a * alpha_a + sum_a;  // per-thread partial; the quad is summed at the end
      l_b = l_b * alpha_b + sum_b;
#pragma unroll
      for (int i = 0; i < kDimTiles; ++i) {
        o[i][0] *= alpha_a;
        o[i][1] *= alpha_a;
        o[i][2] *= alpha_b;
        o[i][3] *= alpha_b;
      }

      const uint32_t vs = v_smem(buf);
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        // P as the A fragment of keys [16 kk, 16 kk + 16).
        const uint32_t pa[4] = {pack_half2(s[2 * kk][0], s[2 * kk][1]),
                                pack_half2(s[2 * kk][2], s[2 * kk][3]),
                                pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          // Matrices: (keys +0..7, dims +0..7), (keys +8..15, dims +0..7), (keys +0..7, dims
          // +8..15), (keys +8..15, dims +8..15); transposed, they are the B fragments (b0, b1) of
          // output dim tiles 2 dp and 2 dp + 1.
          const int key = kk * 16 + (lane & 15);
          const int dim = dp * 16 + (lane >> 4) * 8;
          uint32_t b[4];
          ldmatrix_x4_trans(b, vs + static_cast<uint32_t>((key * kStride + dim) * 2));
          mma_16816(o[2 * dp], pa, b[0], b[1]);
          mma_16816(o[2 * dp + 1], pa, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // everyone is done with buffer buf before it is refilled
  }

  if (!warp_active) return;
  l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
  l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
  l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
  l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
  if (ra < nrows) {
    const float inv = 1.0f / l_a;
    __half* out = p.out + (static_cast<int64_t>(row0 + ra) * p.n_heads + head) * D + tig * 2;
#pragma unroll
    for (int i = 0; i < kDimTiles; ++i) {
      *reinterpret_cast<__half2*>(out + i * 8) = __floats2half2_rn(o[i][0] * inv, o[i][1] * inv);
    }
  }
  if (rb < nrows) {
    const float inv = 1.0f / l_b;
    __half* out = p.out + (static_cast<int64_t>(row0 + rb) * p.n_heads + head) * D + tig * 2;
#pragma unroll
    for (int i = 0; i < kDimTiles; ++i) {
      *reinterpret_cast<__half2*>(out + i * 8) = __floats2half2_rn(o[i][2] * inv, o[i][3] * inv);
    }
  }
}

template <int D>
Status launch_prefill_t(const Params& p, int32_t max_query_rows, cudaStream_t stream) {
  constexpr int kBytes = PrefillSmem<D>::kBytes;
  if (kBytes > 48 * 1024) {
    // Above 48 KB a kernel must opt in to the larger dynamic shared-memory carve-out.
    QGATE_TRY_STATUS(cuda_status(
        cudaFuncSetAttribute(prefill_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes),
        "paged attention prefill: cudaFuncSetAttribute"));
  }
  const dim3 grid(static_cast<unsigned>((max_query_rows + kBlockM - 1) / kBlockM),
                  static_cast<unsigned>(p.n_heads), static_cast<unsigned>(p.num_seqs));
  prefill_kernel<D><<<grid, kThreads, kBytes, stream>>>(p);
  return launch_status("paged attention prefill kernel");
}

}  // namespace

Status launch_prefill(const Params& p, int32_t head_dim, int32_t max_query_rows,
                      cudaStream_t stream) {
  if (head_dim == 64) return launch_prefill_t<64>(p, max_query_rows, stream);
  if (head_dim == 128) return launch_prefill_t<128>(p, max_query_rows, stream);
  return make_error(ErrorCode::kUnsupported, "paged attention: head_dim not specialized");
}

}  // namespace qgate::cuda::attention_detail
