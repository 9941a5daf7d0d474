// Dequantization, activation quantization and single-row dot products for the GGML block types.
//
// Activation quantization follows GGML's Q8_0/Q8_1 definition (d = amax / 127, q = round(x / d))
// but rounds half to even in both paths (cvtps2dq in the SIMD one, nearbyint in the scalar one)
// and multiplies by 127 / amax in both, so the two produce identical bytes.
#include "kernels/cpu/quant.h"

#include <cmath>
#include <cstring>

#include "kernels/cpu/half.h"
#include "kernels/cpu/matmul_avx2.h"
#include "kernels/status.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define QGATE_QUANT_AVX2 1
#endif

namespace qgate {
namespace {

template <typename Block>
const Block* blocks(const void* p) {
  return static_cast<const Block*>(p);
}

// Scalar Q8 quantization of one block; returns the scale and writes 32 quants and their sum.
[[maybe_unused]] float quantize_block_scalar(const float* x, int8_t* q, int32_t* sum) {
  float amax = 0.0f;
  for (int j = 0; j < kQuantBlock; ++j) amax = std::fmax(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
  int32_t s = 0;
  for (int j = 0; j < kQuantBlock; ++j) {
    const int v = static_cast<int>(std::nearbyint(x[j] * id));
    q[j] = static_cast<int8_t>(v);
    s += v;
  }
  *sum = s;
  return d;
}

#if defined(QGATE_QUANT_AVX2)
// SIMD twin of quantize_block_scalar (same arithmetic, same rounding).
float quantize_block_avx2(const float* x, int8_t* q, int32_t* sum) {
  __m256 v[4];
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  __m256 amax = _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_loadu_ps(x + 8 * i);
    amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_mask, v[i]));
  }
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  const float am = _mm_cvtss_f32(m4);
  const float d = am / 127.0f;
  const __m256 id = _mm256_set1_ps(am != 0.0f ? 127.0f / am : 0.0f);
  __m256i i32[4];
  for (int i = 0; i < 4; ++i) i32[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], id));
  const __m256i total = _mm256_add_epi32(_mm256_add_epi32(i32[0], i32[1]), _mm256_add_epi32(i32[2], i32[3]));
  __m128i t = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
  t = _mm_hadd_epi32(t, t);
  t = _mm_hadd_epi32(t, t);
  *sum = _mm_cvtsi128_si32(t);
  // packs work per 128-bit lane, which interleaves the four vectors; the permute restores order.
  const __m256i p16a = _mm256_packs_epi32(i32[0], i32[1]);
  const __m256i p16b = _mm256_packs_epi32(i32[2], i32[3]);
  const __m256i p8 = _mm256_packs_epi16(p16a, p16b);
  const __m256i ordered = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), ordered);
  return d;
}
#endif

float quantize_block(const float* x, int8_t* q, int32_t* sum) {
#if defined(QGATE_QUANT_AVX2)
  return quantize_block_avx2(x, q, sum);
#else
  return quantize_block_scalar(x, q, sum);
#endif
}

void dequantize_f16(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
#if defined(QGATE_QUANT_AVX2)
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
#endif
  for (; i < n; ++i) dst[i] = fp16_to_fp32(src[i]);
}

}  // namespace

DType activation_dtype_for(DType weight) {
  switch (weight) {
    case DType::kQ4_0:
    case DType::kQ8_0: return DType::kQ8_0;
    case DType::kQ4_1: return DType::kQ8_1;
    default: return DType::kF32;
  }
}

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  const int64_t nb = n / kQuantBlock;
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kF16:
      dequantize_f16(static_cast<const uint16_t*>(src), dst, n);
      return;
    case DType::kBF16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(h[i]);
      return;
    }
    case DType::kI32: {
      const auto* v = static_cast<const int32_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(v[i]);
      return;
    }
    case DType::kQ4_0:
      for (int64_t b = 0; b < nb; ++b) {
        const BlockQ4_0& blk = blocks<BlockQ4_0>(src)[b];
        const float d = fp16_to_fp32(blk.d);
        float* o = dst + b * kQuantBlock;
        for (int j = 0; j < 16; ++j) {
          o[j] = static_cast<float>((blk.qs[j] & 15) - 8) * d;
          o[j + 16] = static_cast<float>((blk.qs[j] >> 4) - 8) * d;
        }
      }
      return;
    case DType::kQ4_1:
      for (int64_t b = 0; b < nb; ++b) {
        const BlockQ4_1& blk = blocks<BlockQ4_1>(src)[b];
        const float d = fp16_to_fp32(blk.d);
        const float m = fp16_to_fp32(blk.m);
        float* o = dst + b * kQuantBlock;
        for (int j = 0; j < 16; ++j) {
          o[j] = static_cast<float>(blk.qs[j] & 15) * d + m;
          o[j + 16] = static_cast<float>(blk.qs[j] >> 4) * d + m;
        }
      }
      return;
    case DType::kQ8_0:
      for (int64_t b = 0; b < nb; ++b) {
        const BlockQ8_0& blk = blocks<BlockQ8_0>(src)[b];
        const float d = fp16_to_fp32(blk.d);
        for (int j = 0; j < kQuantBlock; ++j) dst[b * kQuantBlock + j] = blk.qs[j] * d;
      }
      return;
    case DType::kQ8_1:
      for (int64_t b = 0; b < nb; ++b) {
        const BlockQ8_1& blk = blocks<BlockQ8_1>(src)[b];
        for (int j = 0; j < kQuantBlock; ++j) dst[b * kQuantBlock + j] = blk.qs[j] * blk.d;
      }
      return;
  }
  QGATE_CHECK(false, "dequantize_row: unknown dtype");
}

void quantize_row_q8_0(const float* x, BlockQ8_0* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    int32_t sum;
    const float d = quantize_block(x + b * kQuantBlock, dst[b].qs, &sum);
    dst[b].d = fp32_to_fp16(d);
  }
}

void quantize_row_q8_1(const float* x, BlockQ8_1* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    int32_t sum;
    const float d = quantize_block(x + b * kQuantBlock, dst[b].qs, &sum);
    dst[b].d = d;
    dst[b].s = d * static_cast<float>(sum);
  }
}

float vec_dot_ref(DType w, const void* w_row, const void* act, int64_t n) {
  const int64_t nb = n / kQuantBlock;
  double acc = 0.0;
  switch (w) {
    case DType::kQ4_0:
      for (int64_t b = 0; b < nb; ++b) {
        const BlockQ4_0& wb = blocks<BlockQ4_0>(w_row)[b];
        const BlockQ8_0& xb = blocks<BlockQ8_0>(act)[b];
        int32_t s = 0;
        for (int j = 0; j < 16; ++j) {
          s += ((wb.qs[j] & 15) - 8) * xb.qs[j] + ((wb.qs[j] >> 4) - 8) * xb.qs[j + 16];
        }
        acc += static_cast<double>(fp16_to_fp32(wb.d)) * fp16_to_fp32(xb.d) * s;
      }
      break;
    case DType::kQ4_1:
      for (int64_t b = 0; b < nb; ++b) {
        const BlockQ4_1& wb = blocks<BlockQ4_1>(w_row)[b];
        const BlockQ8_1& xb = blocks<BlockQ8_1>(act)[b];
        int32_t s = 0;
        for (int j = 0; j < 16; ++j) s += (wb.qs[j] & 15) * xb.qs[j] + (wb.qs[j] >> 4) * xb.qs[j + 16];
        acc += static_cast<double>(fp16_to_fp32(wb.d)) * xb.d * s +
               static_cast<double>(fp16_to_fp32(wb.m)) * xb.s;
      }
      break;
    case DType::kQ8_0:
      for (int64_t b = 0; b < nb; ++b) {
        const BlockQ8_0& wb = blocks<BlockQ8_0>(w_row)[b];
        const BlockQ8_0& xb = blocks<BlockQ8_0>(act)[b];
        int32_t s = 0;
        for (int j = 0; j < kQuantBlock; ++j) s += wb.qs[j] * xb.qs[j];
        acc += static_cast<double>(fp16_to_fp32(wb.d)) * fp16_to_fp32(xb.d) * s;
      }
      break;
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16: {
      const auto* x = static_cast<const float*>(act);
      const auto* bytes = static_cast<const uint8_t*>(w_row);
      for (int64_t i = 0; i < n; ++i) {
        float wv;
        if (w == DType::kF32) {
          std::memcpy(&wv, bytes + 4 * i, 4);
        } else {
          uint16_t h;
          std::memcpy(&h, bytes + 2 * i, 2);
          wv = w == DType::kF16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
        }
        acc += static_cast<double>(wv) * x[i];
      }
      break;
    }
    default:
      QGATE_CHECK(false, "vec_dot_ref: weight dtype has no dot product");
  }
  return static_cast<float>(acc);
}

float vec_dot(DType w, const void* w_row, const void* act, int64_t n) {
  if (!cpu_avx2::available()) return vec_dot_ref(w, w_row, act, n);
  QGATE_CHECK(w == DType::kQ4_0 || w == DType::kQ4_1 || w == DType::kQ8_0 || w == DType::kF32 ||
                  w == DType::kF16 || w == DType::kBF16,
              "vec_dot: weight dtype has no dot product");
  float y = 0.0f;
  cpu_avx2::GemmProblem p;
  p.type = w;
  p.w = static_cast<const uint8_t*>(w_row);
  p.w_row_bytes = dtype_row_bytes(w, n).value_or(0);
  p.cols = n;
  p.act = static_cast<const uint8_t*>(act);
  p.act_row_bytes = dtype_row_bytes(activation_dtype_for(w), n).value_or(0);
  p.m = 1;
  p.y = &y;
  p.ldy = 1;
  cpu_avx2::gemm_rows(p, 0, 1);
  return y;
}

}  // namespace qgate
