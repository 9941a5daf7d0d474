// Decode attention over the paged fp16 KV cache: one query row per sequence.
//
// One CTA per (sequence, kv head[, part of its GQA group], context chunk). The CTA serves every
// query head of its group, so each K/V element is read from memory once for the whole group:
// decode attention is a pure streaming read of the cache (about 2 FLOP per byte), and the cache,
// not the queries, is what costs time.
//
// Context chunks (flash-decoding): at batch 1 a model with 3 kv heads would otherwise run 3 CTAs
// on a 132-SM GPU and use a few percent of its bandwidth. plan_decode cuts the context into
// chunks so that about four CTAs per SM are in flight; each chunk writes its normalized partial
// output and its softmax (max, sum) to the workspace, and the combine kernel merges them. A
// sequence whose context fits in one chunk writes its output directly and the combine kernel
// skips it, so short contexts pay for no second pass.
//
// Inside a CTA, positions are visited in tiles. A K/V row of one head is head_dim fp16 = 128 or
// 256 contiguous bytes, read by head_dim/8 lanes with one 16-byte load each (coalesced, and
// LDG.128 keeps the number of memory instructions at the minimum). Each thread issues all its K
// and V loads of a tile before using any, so a tile's worth of bytes is in flight per thread
// (latency hiding at low occupancy). Scores go through shared memory; one warp per head does the
// online-softmax update of the tile in fp32 on exp2 (scale * log2 e is folded into q).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "kernels/cuda/attention_internal.cuh"
#include "kernels/cuda/device_memory.h"

namespace qgate::cuda::attention_detail {
namespace {

constexpr int kWarps = kThreads / 32;
constexpr int kMaxSplits = 256;  // bounds the combine kernel's loop

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// D: head_dim; G: query heads served per CTA (the GQA group, or a slice of a wider one).
template <int D, int G>
__global__ void __launch_bounds__(kThreads)
    decode_kernel(Params p, int32_t head_splits, int32_t chunk, int32_t splits, float* part_o,
                  float2* part_ml) {
  constexpr int kLanes = decode_lanes_per_row(D);  // lanes sharing one K/V row (8 dims each)
  constexpr int kRowsPerStep = kThreads / kLanes;
  constexpr int kSteps = decode_steps(G);
  constexpr int kTile = kRowsPerStep * kSteps;
  static_assert(kTile == decode_tile(D, G), "tile mismatch with the host plan");

  __shared__ float s_p[G][kTile];  // scores, then probabilities, of the current tile
  __shared__ float s_m[G], s_l[G], s_alpha[G];
  __shared__ __align__(16) float s_red[kWarps][G][D];

  const int seq = blockIdx.x;
  const int kvh = blockIdx.y / head_splits;
  const int hs = blockIdx.y % head_splits;
  const int split = blockIdx.z;
  const int row = p.query_start[seq];
  if (p.query_start[seq + 1] - row != 1) return;  // a prefill sequence: the prefill kernel's
  const int ctx = min(p.context_start[seq] + 1, p.max_context);
  const int c0 = split * chunk;
  if (c0 >= ctx) return;  // this chunk lies past the sequence's context
  const int c1 = min(ctx, c0 + chunk);
  const int active_splits = (ctx + chunk - 1) / chunk;
  const int h0 = kvh * p.group + hs * G;  // first query head served here
  const int nh = min(G, p.group - hs * G);

  const int tid = threadIdx.x;
  const int lane_d = tid % kLanes;  // which 8 dims of the row
  const int slot = tid / kLanes;    // which row of each step
  const int warp = tid / 32;
  const int lane = tid % 32;

  float qf[G][8];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    if (h < nh) {
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(
          p.q + static_cast<int64_t>(row) * p.q_stride + (h0 + h) * D + lane_d * 8));
      half8_to_float(raw, qf[h]);
#pragma unroll
      for (int k = 0; k < 8; ++k) qf[h][k] *= p.scale_log2;
    } else {
#pragma unroll
      for (int k = 0; k < 8; ++k) qf[h][k] = 0.0f;
    }
  }
  float acc[G][8];
#pragma unroll
  for (int h = 0; h < G; ++h) {
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[h][k] = 0.0f;
  }
  if (tid < G) {
    s_m[tid] = -INFINITY;
    s_l[tid] = 0.0f;
  }

  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks;
  const __half* kbase = p.k + kvh * D + lane_d * 8;
  const __half* vbase = p.v + kvh * D + lane_d * 8;

  for (int t0 = c0; t0 < c1; t0 += kTile) {
    uint4 kr[kSteps], vr[kSteps];
#pragma unroll
    for (int i = 0; i < kSteps; ++i) {
      const int pos = t0 + i * kRowsPerStep + slot;
      if (pos < c1) {
        const int64_t off = kv_offset(table, pos, p.block_tokens, p.block_stride, p.kv_dim);
        kr[i] = __ldg(reinterpret_cast<const uint4*>(kbase + off));
        vr[i] = __ldg(reinterpret_cast<const uint4*>(vbase + off));
      } else {
        // Positions past the context are never read: the cache there may hold anything.
        kr[i] = make_uint4(0, 0, 0, 0);
        vr[i] = make_uint4(0, 0, 0, 0);
      }
    }
    __syncthreads();  // the previous tile's probabilities have been consumed

#pragma unroll
    for (int i = 0; i < kSteps; ++i) {
      float kf[8];
      half8_to_float(kr[i], kf);
      const bool valid = t0 + i * kRowsPerStep + slot < c1;
#pragma unroll
      for (int h = 0; h < G; ++h) {
        if (h < nh) {
          float d = 0.0f;
#pragma unroll
          for (int k = 0; k < 8; ++k) d = fmaf(qf[h][k], kf[k], d);
#pragma unroll
          for (int off = kLanes / 2; off > 0; off /= 2) d += __shfl_xor_sync(0xffffffffu, d, off);
          if (lane_d == 0) s_p[h][i * kRowsPerStep + slot] = valid ? d : -INFINITY;
        }
      }
    }
    __syncthreads();

    // Online softmax of this tile, one warp per head. m_new is finite: the tile holds at least one
    // valid position.
    for (int h = warp; h < nh; h += kWarps) {
      float mx = -INFINITY;
      for (int j = lane; j < kTile; j += 32) mx = fmaxf(mx, s_p[h][j]);
      mx = warp_max(mx);
      const float m_old = s_m[h];
      const float m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
      for (int j = lane; j < kTile; j += 32) {
        const float e = exp2f(s_p[h][j] - m_new);
        s_p[h][j] = e;
        sum += e;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float alpha = exp2f(m_old - m_new);  // 0 on the first tile (m_old = -inf)
        s_alpha[h] = alpha;
        s_l[h] = s_l[h] * alpha + sum;
        s_m[h] = m_new;
      }
    }
    __syncthreads();

#pragma unroll
    for (int h = 0; h < G; ++h) {
      if (h < nh) {
        const float alpha = s_alpha[h];
#pragma unroll
        for (int k = 0; k < 8; ++k) acc[h][k] *= alpha;
      }
    }
#pragma unroll
    for (int i = 0; i < kSteps; ++i) {
      float vf[8];
      half8_to_float(vr[i], vf);
#pragma unroll
      for (int h = 0; h < G; ++h) {
        if (h < nh) {
          const float w = s_p[h][i * kRowsPerStep + slot];
#pragma unroll
          for (int k = 0; k < 8; ++k) acc[h][k] = fmaf(w, vf[k], acc[h][k]);
        }
      }
    }
  }

  // Sum the row slots: first the slots inside a warp by shuffles, then the warps in shared memory.
#pragma unroll
  for (int h = 0; h < G; ++h) {
#pragma unroll
    for (int k = 0; k < 8; ++k) {
#pragma unroll
      for (int off = kLanes; off < 32; off *= 2) {
        acc[h][k] += __shfl_xor_sync(0xffffffffu, acc[h][k], off);
      }
    }
  }
  if (lane < kLanes) {
#pragma unroll
    for (int h = 0; h < G; ++h) {
      float4* dst = reinterpret_cast<float4*>(&s_red[warp][h][lane_d * 8]);
      dst[0] = make_float4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
      dst[1] = make_float4(acc[h][4], acc[h][5], acc[h][6], acc[h][7]);
    }
  }
  __syncthreads();

  constexpr int kChunksPerHead = D / 8;
  for (int e = tid; e < G * kChunksPerHead; e += kThreads) {
    const int h = e / kChunksPerHead;
    const int c = e % kChunksPerHead;
    if (h >= nh) continue;
    const float inv_l = 1.0f / s_l[h];
    float o[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      float s = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) s += s_red[w][h][c * 8 + k];
      o[k] = s * inv_l;
    }
    if (active_splits == 1) {
      *reinterpret_cast<uint4*>(p.out + (static_cast<int64_t>(row) * p.n_heads + h0 + h) * D +
                                c * 8) = float8_to_half(o);
    } else {
      const int64_t idx = (static_cast<int64_t>(seq) * p.n_heads + h0 + h) * splits + split;
      float4* dst = reinterpret_cast<float4*>(part_o + idx * D + c * 8);
      dst[0] = make_float4(o[0], o[1], o[2], o[3]);
      dst[1] = make_float4(o[4], o[5], o[6], o[7]);
      if (c == 0) part_ml[idx] = make_float2(s_m[h], s_l[h]);
    }
  }
}

// Merges the chunks of one (sequence, head): out = Σ w_s o_s / Σ w_s with w_s = l_s 2^(m_s - M).
template <int D>
__global__ void __launch_bounds__(D)
    decode_combine_kernel(Params p, int32_t chunk, int32_t splits, const float* part_o,
                          const float2* part_ml) {
  const int seq = blockIdx.x;
  const int h = blockIdx.y;
  const int d = threadIdx.x;
  const int row = p.query_start[seq];
  if (p.query_start[seq + 1] - row != 1) return;
  const int ctx = min(p.context_start[seq] + 1, p.max_context);
  const int n = (ctx + chunk - 1) / chunk;
  if (n <= 1) return;  // written directly by the decode kernel
  const int64_t base = (static_cast<int64_t>(seq) * p.n_heads + h) * splits;
  float m = -INFINITY;
  for (int s = 0; s < n; ++s) m = fmaxf(m, part_ml[base + s].x);
  float l = 0.0f, o = 0.0f;
  for (int s = 0; s < n; ++s) {
    const float2 ml = part_ml[base + s];
    const float w = ml.y * exp2f(ml.x - m);
    l += w;
    o = fmaf(w, part_o[(base + s) * D + d], o);
  }
  p.out[(static_cast<int64_t>(row) * p.n_heads + h) * D + d] = __float2half_rn(o / l);
}

size_t part_o_bytes(const DecodePlan& plan, int32_t num_seqs, int32_t n_heads, int32_t head_dim) {
  const size_t bytes = static_cast<size_t>(num_seqs) * n_heads * plan.splits * head_dim * 4;
  return (bytes + 255) / 256 * 256;
}

template <int D, int G>
Status launch_decode_t(const Params& p, const DecodePlan& plan, void* workspace,
                       cudaStream_t stream) {
  float* part_o = nullptr;
  float2* part_ml = nullptr;
  if (plan.splits > 1) {
    part_o = static_cast<float*>(workspace);
    part_ml = reinterpret_cast<float2*>(static_cast<char*>(workspace) +
                                        part_o_bytes(plan, p.num_seqs, p.n_heads, D));
  }
  const dim3 grid(static_cast<unsigned>(p.num_seqs),
                  static_cast<unsigned>(p.n_kv_heads * plan.head_splits),
                  static_cast<unsigned>(plan.splits));
  decode_kernel<D, G><<<grid, kThreads, 0, stream>>>(p, plan.head_splits, plan.chunk,
                                                     plan.splits, part_o, part_ml);
  QGATE_TRY_STATUS(launch_status("paged attention decode kernel"));
  if (plan.splits > 1) {
    const dim3 cgrid(static_cast<unsigned>(p.num_seqs), static_cast<unsigned>(p.n_heads));
    decode_combine_kernel<D><<<cgrid, D, 0, stream>>>(p, plan.chunk, plan.splits, part_o,
                                                      part_ml);
    QGATE_TRY_STATUS(launch_status("paged attention decode combine kernel"));
  }
  return Status::Ok();
}

template <int D>
Status launch_decode_d(const Params& p, const DecodePlan& plan, void* workspace,
                       cudaStream_t stream) {
  switch (plan.heads_per_cta) {
    case 1: return launch_decode_t<D, 1>(p, plan, workspace, stream);
    case 2: return launch_decode_t<D, 2>(p, plan, workspace, stream);
    case 4: return launch_decode_t<D, 4>(p, plan, workspace, stream);
    case 8: return launch_decode_t<D, 8>(p, plan, workspace, stream);
    default: break;
  }
  return make_error(ErrorCode::kInternal, "paged attention: bad decode plan");
}

}  // namespace

DecodePlan plan_decode(int32_t num_seqs, int32_t n_kv_heads, int32_t group, int32_t head_dim,
                       int32_t max_context, int32_t sm_count, bool allow_split) {
  DecodePlan plan;
  plan.heads_per_cta = group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8;
  plan.head_splits = (group + plan.heads_per_cta - 1) / plan.heads_per_cta;
  plan.tile = decode_tile(head_dim, plan.heads_per_cta);
  const int64_t tiles = (static_cast<int64_t>(max_context) + plan.tile - 1) / plan.tile;
  int64_t splits = 1;
  if (allow_split) {
    // About four resident CTAs per SM: enough loads in flight to approach full bandwidth.
    const int64_t ctas = static_cast<int64_t>(num_seqs) * n_kv_heads * plan.head_splits;
    const int64_t target = 4 * static_cast<int64_t>(std::max(sm_count, 1));
    splits = std::clamp<int64_t>((target + ctas - 1) / ctas, 1, std::min<int64_t>(tiles, kMaxSplits));
  }
  const int64_t tiles_per_chunk = (tiles + splits - 1) / splits;
  plan.chunk = static_cast<int32_t>(tiles_per_chunk * plan.tile);
  plan.splits = static_cast<int32_t>((max_context + plan.chunk - 1) / plan.chunk);
  return plan;
}

size_t decode_workspace_bytes(const DecodePlan& plan, int32_t num_seqs, int32_t n_heads,
                              int32_t head_dim) {
  if (plan.splits <= 1) return 0;
  return part_o_bytes(plan, num_seqs, n_heads, head_dim) +
         static_cast<size_t>(num_seqs) * n_heads * plan.splits * sizeof(float2);
}

Status launch_decode(const Params& p, int32_t head_dim, const DecodePlan& plan, void* workspace,
                     cudaStream_t stream) {
  if (head_dim == 64) return launch_decode_d<64>(p, plan, workspace, stream);
  if (head_dim == 128) return launch_decode_d<128>(p, plan, workspace, stream);
  return make_error(ErrorCode::kUnsupported, "paged attention: head_dim not specialized");
}

}  // namespace qgate::cuda::attention_detail
