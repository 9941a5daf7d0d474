// Element-wise and row-wise operations of the Llama forward pass (fp32, CPU).
#pragma once

#include <cstdint>

namespace qgate {

// out[i] = x[i] / sqrt(mean(x²) + eps) * weight[i]; out may alias x.
void rms_norm(const float* x, const float* weight, float* out, int64_t n, float eps);

// Rotary position embedding applied in place to n_heads heads of head_dim at position pos.
// kAdjacentPairs rotates (2i, 2i+1) — GGUF llama layout; kHalves rotates (i, i + head_dim/2) —
// HF/GPTQ/AWQ layout. Frequencies: theta^(-2i/rot_dim) for i < rot_dim/2.
enum class RopeStyle { kAdjacentPairs, kHalves };
void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, float theta, RopeStyle style);

// In-place numerically stable softmax over n values.
void softmax(float* x, int64_t n);

// out[i] = silu(gate[i]) * up[i]
void swiglu(const float* gate, const float* up, float* out, int64_t n);

// y[i] += x[i]
void add_inplace(float* y, const float* x, int64_t n);

// Dot product and y += a * x for fp32 vectors (attention inner loops).
float dot_f32(const float* a, const float* b, int64_t n);
void axpy_f32(float a, const float* x, float* y, int64_t n);

// The same with the second operand in IEEE fp16 (an fp16 KV cache): each element widened exactly
// to fp32, products and sums in fp32. fp32_to_fp16_row rounds to nearest even, as fp32_to_fp16.
float dot_f32_f16(const float* a, const uint16_t* b, int64_t n);
void axpy_f16(float a, const uint16_t* x, float* y, int64_t n);
void fp32_to_fp16_row(const float* x, uint16_t* out, int64_t n);

// Attention over `count` cached positions whose vectors of n elements lie `stride` elements
// apart (a run of one paged block, one KV head), with an fp32 or an fp16 cache:
//   attention_scores: scores[j] = dot(q, keys + j * stride) * scale
//   attention_values: out += Σ_j p[j] * (values + j * stride), summed in order of j
// Bit for bit what dot_f32/dot_f32_f16 and successive axpy_f32/axpy_f16 calls give, so results
// do not depend on where blocks end; faster because eight scores share one horizontal reduction
// and out stays in registers across positions.
void attention_scores(const float* q, const float* keys, int64_t stride, int64_t count, int64_t n,
                      float scale, float* scores);
void attention_scores(const float* q, const uint16_t* keys, int64_t stride, int64_t count,
                      int64_t n, float scale, float* scores);
void attention_values(const float* p, const float* values, int64_t stride, int64_t count,
                      int64_t n, float* out);
void attention_values(const float* p, const uint16_t* values, int64_t stride, int64_t count,
                      int64_t n, float* out);

}  // namespace qgate
