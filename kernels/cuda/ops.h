// The small operations of the Llama forward pass on the GPU, fused where that saves a pass over
// memory. The residual stream is fp32 (as on the CPU path, so GPU and CPU logits stay close); the
// inputs and outputs of matmuls are fp16.
//
// Threading: launches on the given stream; every function validates its sizes and returns the
// launch status.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/status.h"

namespace qgate::cuda {

// x[r][:] = table[tokens[r]][:] (fp16 table, fp32 out). Token ids are validated on the host.
Status embedding_lookup(const __half* table, int64_t hidden, const int32_t* tokens, int64_t rows,
                        float* x, cudaStream_t stream);

// out = x / sqrt(mean(x²) + eps) * weight, per row; x fp32, out fp16.
Status rms_norm(const float* x, const float* weight, int64_t rows, int64_t n, float eps,
                __half* out, cudaStream_t stream);

// Fused residual add and the next norm: x += delta (fp16 -> fp32), then out = rms_norm(x).
Status add_rms_norm(float* x, const __half* delta, const float* weight, int64_t rows, int64_t n,
                    float eps, __half* out, cudaStream_t stream);

// x += delta for rows x n (the residual add with no norm after it).
Status add_residual(float* x, const __half* delta, int64_t rows, int64_t n, cudaStream_t stream);

// y[r][i] += bias[i] (Qwen2's q/k/v biases), y fp16, bias fp32.
Status add_bias(__half* y, const float* bias, int64_t rows, int64_t n, cudaStream_t stream);

// Rotary embedding in place on the q rows (n_heads * head_dim elements, q_stride apart) and k
// rows (n_kv_heads * head_dim, k_stride apart) at position row_pos[r]; same styles and frequencies
// as the CPU rope() (kernels/cpu/ops.h): adjacent pairs (GGUF) or halves (HF). The strides are
// the row widths for dense arrays, or q_dim + 2 kv_dim for views into one fused q/k/v output; the
// q and k rows must not overlap.
enum class RopeLayout { kAdjacentPairs, kHalves };
Status rope(__half* q, int64_t q_stride, __half* k, int64_t k_stride, const int32_t* row_pos,
            int64_t rows, int32_t n_heads, int32_t n_kv_heads, int32_t head_dim, float theta,
            RopeLayout layout, cudaStream_t stream);

// out[r][i] = silu(gate[r][i]) * up[r][i]; gate and up rows may be strided views of one fused
// gate/up output (gate_stride/up_stride in elements).
Status swiglu(const __half* gate, int64_t gate_stride, const __half* up, int64_t up_stride,
              int64_t rows, int64_t n, __half* out, cudaStream_t stream);

// out[r][i] = x[r][perm[i]]: the act-order gather of activations before a permuted int4 matmul.
Status gather_columns(const __half* x, const int32_t* perm, int64_t rows, int64_t cols,
                      __half* out, cudaStream_t stream);

// out[r] = argmax_i logits[r][i] (lowest index on ties, like the CPU greedy sampler).
Status argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* out,
                   cudaStream_t stream);

// fp16 <-> fp32 element-wise conversion.
Status half_to_float(const __half* x, int64_t n, float* out, cudaStream_t stream);
Status float_to_half(const float* x, int64_t n, __half* out, cudaStream_t stream);

}  // namespace qgate::cuda
