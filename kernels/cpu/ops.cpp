// Element-wise and row-wise ops. Each has an AVX2 body and a scalar tail/fallback that is also
// the whole implementation in builds without AVX2.
#include "kernels/cpu/ops.h"

#include "kernels/cpu/half.h"

#include <cmath>
#include <type_traits>
#include <limits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define QGATE_OPS_AVX2 1
#if defined(__F16C__)
#define QGATE_OPS_F16C 1
#endif
#endif

namespace qgate {
namespace {

#if defined(QGATE_OPS_AVX2)
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// e^x to ~2 ulp: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two so n·ln2_hi is exact), e^r by a
// degree-7 Taylor polynomial (truncation < 1e-8 relative on that interval), and 2^n applied as
// 2^⌊n/2⌋ · 2^⌈n/2⌉ so both factors stay normal for every n in [−126, 129]. Results below 2^−126
// (x < −87.34) are flushed to 0 — which also makes −inf (masked attention scores) exactly 0; above
// ln(FLT_MAX) the product overflows to inf as e^x does.
inline __m256 exp256(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.33654f);
  const __m256 hi = _mm256_set1_ps(89.0f);
  const __m256 valid = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  return _mm256_and_ps(_mm256_mul_ps(_mm256_mul_ps(p, s1), s2), valid);
}
#endif

// Cos/sin table for one (position, head_dim, theta): every head of q and k at a position, and
// every layer, use the same angles, so a decode step computes them once instead of 60 times.
// Angles are computed in double: pos·freq reaches thousands of radians, where float loses the
// fraction that matters.
struct RopeTable {
  int64_t pos = -1;
  int64_t head_dim = 0;
  float theta = 0.0f;
  std::vector<float> cos_v;
  std::vector<float> sin_v;

  void update(int64_t p, int64_t d, float th) {
    if (p == pos && d == head_dim && th == theta) return;
    pos = p;
    head_dim = d;
    theta = th;
    const int64_t half = d / 2;
    cos_v.resize(static_cast<size_t>(half));
    sin_v.resize(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i) {
      const double freq = std::pow(static_cast<double>(th), -2.0 * static_cast<double>(i) / static_cast<double>(d));
      const double angle = static_cast<double>(p) * freq;
      cos_v[i] = static_cast<float>(std::cos(angle));
      sin_v[i] = static_cast<float>(std::sin(angle));
    }
  }
};

thread_local RopeTable t_rope;


// Eight elements of b as fp32: a plain load, or F16C's exact widening of fp16.
inline float to_f32(float x) { return x; }
inline float to_f32(uint16_t h) { return fp16_to_fp32(h); }
#if defined(QGATE_OPS_AVX2)
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
#endif
#if defined(QGATE_OPS_F16C)
inline __m256 load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
#endif

#if defined(QGATE_OPS_AVX2)
// Whether the vector bodies below handle T: fp16 needs F16C to widen eight at a time.
template <typename T>
constexpr bool kWidens8 = std::is_same_v<T, float>
#if defined(QGATE_OPS_F16C)
                          || std::is_same_v<T, uint16_t>
#endif
    ;

// The vector part of Σ a[i] * b[i] over the first n - n % 8 elements, before its horizontal sum.
// Four independent accumulators hide the FMA latency (4 cycles, 2 per cycle). dot_widening and
// attention_scores both reduce through this, so their sums agree bit for bit.
template <typename T>
inline __m256 dot_lanes(const float* a, const T* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps();
  __m256 acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps();
  __m256 acc3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), load8(b + i + 8), acc1);
    acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), load8(b + i + 16), acc2);
    acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), load8(b + i + 24), acc3);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8(b + i), acc0);
  return _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
}

// [hsum(r[0]), ..., hsum(r[7])] in one vector, each sum paired exactly as hsum pairs it:
// ((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7)).
inline __m256 hsum8(const __m256 (&r)[8]) {
  // Lanes i + (i + 4): [r0' | r4'], [r1' | r5'], [r2' | r6'], [r3' | r7'] (four lanes each).
  auto halves = [](__m256 x, __m256 y) {
    return _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
  };
  const __m256 a = halves(r[0], r[4]);
  const __m256 b = halves(r[1], r[5]);
  const __m256 c = halves(r[2], r[6]);
  const __m256 d = halves(r[3], r[7]);
  // Lanes 0 + 2 and 1 + 3 of each: [r0'' r1'' | r4'' r5''], [r2'' r3'' | r6'' r7''] (two each).
  const __m256 ab = _mm256_add_ps(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 cd = _mm256_add_ps(_mm256_shuffle_ps(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm256_shuffle_ps(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
  // Lane 0 + 1 of each: [r0 r1 r2 r3 | r4 r5 r6 r7].
  return _mm256_add_ps(_mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
}
#endif

// Σ a[i] * b[i] in fp32 with b fp32 or fp16: the body of dot_f32 and dot_f32_f16.
template <typename T>
float dot_widening(const float* a, const T* b, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
#if defined(QGATE_OPS_AVX2)
  if constexpr (kWidens8<T>) {
    i = n - n % 8;
    s = hsum(dot_lanes(a, b, i));
  }
#endif
  for (; i < n; ++i) s += a[i] * to_f32(b[i]);
  return s;
}

// y += a * x with x fp32 or fp16: the body of axpy_f32 and axpy_f16.
template <typename T>
void axpy_widening(float a, const T* x, float* y, int64_t n) {
  int64_t i = 0;
#if defined(QGATE_OPS_AVX2)
  if constexpr (kWidens8<T>) {
    const __m256 va = _mm256_set1_ps(a);
    for (; i + 16 <= n; i += 16) {
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, load8(x + i), _mm256_loadu_ps(y + i)));
      _mm256_storeu_ps(y + i + 8, _mm256_fmadd_ps(va, load8(x + i + 8), _mm256_loadu_ps(y + i + 8)));
    }
    for (; i + 8 <= n; i += 8) {
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, load8(x + i), _mm256_loadu_ps(y + i)));
    }
  }
#endif
  for (; i < n; ++i) y[i] += a * to_f32(x[i]);
}

#if defined(QGATE_OPS_AVX2)
// Eight positions at a time, their horizontal sums done together; returns how many positions it
// scored. kN > 0 fixes the vector length at compile time (the usual head sizes), so the dot
// products unroll completely and the eight partial sums stay in registers.
template <typename T, int64_t kN>
int64_t scores_by_8(const float* q, const T* keys, int64_t stride, int64_t count, int64_t n,
                    float scale, float* scores) {
  if constexpr (kN > 0) n = kN;
  int64_t j = 0;
  const __m256 vs = _mm256_set1_ps(scale);
  for (; j + 8 <= count; j += 8) {
    __m256 r[8];
    for (int k = 0; k < 8; ++k) r[k] = dot_lanes(q, keys + (j + k) * stride, n);
    _mm256_storeu_ps(scores + j, _mm256_mul_ps(hsum8(r), vs));
  }
  return j;
}
#endif

template <typename T>
void scores_widening(const float* q, const T* keys, int64_t stride, int64_t count, int64_t n,
                     float scale, float* scores) {
  int64_t j = 0;
#if defined(QGATE_OPS_AVX2)
  // Only when a dot has no scalar tail: with one, hsum8's lanes would still need that tail added
  // after them, in order.
  if constexpr (kWidens8<T>) {
    if (n == 64) {
      j = scores_by_8<T, 64>(q, keys, stride, count, n, scale, scores);
    } else if (n == 128) {
      j = scores_by_8<T, 128>(q, keys, stride, count, n, scale, scores);
    } else if (n % 8 == 0) {
      j = scores_by_8<T, 0>(q, keys, stride, count, n, scale, scores);
    }
  }
#endif
  for (; j < count; ++j) scores[j] = dot_widening(q, keys + j * stride, n) * scale;
}

// Each element of out takes p[0] * v0, p[1] * v1, ... in that order, one FMA each, as successive
// axpy_widening calls would; the difference is that a slice of out stays in registers across all
// positions instead of being loaded and stored once per position.
template <typename T>
void values_widening(const float* p, const T* values, int64_t stride, int64_t count, int64_t n,
                     float* out) {
#if defined(QGATE_OPS_AVX2)
  if constexpr (kWidens8<T>) {
    if (n % 8 == 0) {
      int64_t i = 0;
      for (; i + 64 <= n; i += 64) {
        __m256 y[8];
        for (int k = 0; k < 8; ++k) y[k] = _mm256_loadu_ps(out + i + 8 * k);
        for (int64_t j = 0; j < count; ++j) {
          const __m256 va = _mm256_set1_ps(p[j]);
          const T* x = values + j * stride + i;
          for (int k = 0; k < 8; ++k) y[k] = _mm256_fmadd_ps(va, load8(x + 8 * k), y[k]);
        }
        for (int k = 0; k < 8; ++k) _mm256_storeu_ps(out + i + 8 * k, y[k]);
      }
      for (; i < n; i += 8) {
        __m256 y = _mm256_loadu_ps(out + i);
        for (int64_t j = 0; j < count; ++j) {
          y = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), load8(values + j * stride + i), y);
        }
        _mm256_storeu_ps(out + i, y);
      }
      return;
    }
  }
#endif
  for (int64_t j = 0; j < count; ++j) axpy_widening(p[j], values + j * stride, out, n);
}

}  // namespace

void rms_norm(const float* x, const float* weight, float* out, int64_t n, float eps) {
  int64_t i = 0;
  float ss = 0.0f;
#if defined(QGATE_OPS_AVX2)
  __m256 acc0 = _mm256_setzero_ps();
  __m256 acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_loadu_ps(x + i);
    const __m256 b = _mm256_loadu_ps(x + i + 8);
    acc0 = _mm256_fmadd_ps(a, a, acc0);
    acc1 = _mm256_fmadd_ps(b, b, acc1);
  }
  ss = hsum(_mm256_add_ps(acc0, acc1));
#endif
  for (; i < n; ++i) ss += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
  i = 0;
#if defined(QGATE_OPS_AVX2)
  const __m256 vs = _mm256_set1_ps(scale);
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs),
                                            _mm256_loadu_ps(weight + i)));
  }
#endif
  for (; i < n; ++i) out[i] = x[i] * scale * weight[i];
}

void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, float theta, RopeStyle style) {
  t_rope.update(pos, head_dim, theta);
  const float* c = t_rope.cos_v.data();
  const float* s = t_rope.sin_v.data();
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    if (style == RopeStyle::kAdjacentPairs) {
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[2 * i];
        const float b = v[2 * i + 1];
        v[2 * i] = a * c[i] - b * s[i];
        v[2 * i + 1] = a * s[i] + b * c[i];
      }
    } else {
      int64_t i = 0;
#if defined(QGATE_OPS_AVX2)
      for (; i + 8 <= half; i += 8) {
        const __m256 a = _mm256_loadu_ps(v + i);
        const __m256 b = _mm256_loadu_ps(v + i + half);
        const __m256 vc = _mm256_loadu_ps(c + i);
        const __m256 vs = _mm256_loadu_ps(s + i);
        _mm256_storeu_ps(v + i, _mm256_fmsub_ps(a, vc, _mm256_mul_ps(b, vs)));
        _mm256_storeu_ps(v + i + half, _mm256_fmadd_ps(a, vs, _mm256_mul_ps(b, vc)));
      }
#endif
      for (; i < half; ++i) {
        const float a = v[i];
        const float b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = a * s[i] + b * c[i];
      }
    }
  }
}

void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  float mx = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
#if defined(QGATE_OPS_AVX2)
  if (n >= 8) {
    __m256 vm = _mm256_set1_ps(mx);
    for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    mx = hmax(vm);
  }
#endif
  for (; i < n; ++i) mx = std::fmax(mx, x[i]);
  if (!(mx > -std::numeric_limits<float>::infinity())) {
    // Every score masked (or NaN): no preference is the only defined answer.
    for (int64_t j = 0; j < n; ++j) x[j] = 1.0f / static_cast<float>(n);
    return;
  }
  float sum = 0.0f;
  i = 0;
#if defined(QGATE_OPS_AVX2)
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 vsum = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
    _mm256_storeu_ps(x + i, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  sum = hsum(vsum);
#endif
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  i = 0;
#if defined(QGATE_OPS_AVX2)
  const __m256 vinv = _mm256_set1_ps(inv);
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
#endif
  for (; i < n; ++i) x[i] *= inv;
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
  int64_t i = 0;
#if defined(QGATE_OPS_AVX2)
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 neg = _mm256_set1_ps(-0.0f);
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = exp256(_mm256_xor_ps(g, neg));
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
#endif
  for (; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
  int64_t i = 0;
#if defined(QGATE_OPS_AVX2)
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
  }
#endif
  for (; i < n; ++i) y[i] += x[i];
}

float dot_f32(const float* a, const float* b, int64_t n) { return dot_widening(a, b, n); }

void axpy_f32(float a, const float* x, float* y, int64_t n) { axpy_widening(a, x, y, n); }

float dot_f32_f16(const float* a, const uint16_t* b, int64_t n) { return dot_widening(a, b, n); }

void axpy_f16(float a, const uint16_t* x, float* y, int64_t n) { axpy_widening(a, x, y, n); }

void attention_scores(const float* q, const float* keys, int64_t stride, int64_t count, int64_t n,
                      float scale, float* scores) {
  scores_widening(q, keys, stride, count, n, scale, scores);
}

void attention_scores(const float* q, const uint16_t* keys, int64_t stride, int64_t count,
                      int64_t n, float scale, float* scores) {
  scores_widening(q, keys, stride, count, n, scale, scores);
}

void attention_values(const float* p, const float* values, int64_t stride, int64_t count,
                      int64_t n, float* out) {
  values_widening(p, values, stride, count, n, out);
}

void attention_values(const float* p, const uint16_t* values, int64_t stride, int64_t count,
                      int64_t n, float* out) {
  values_widening(p, values, stride, count, n, out);
}

void fp32_to_fp16_row(const float* x, uint16_t* out, int64_t n) {
  int64_t i = 0;
#if defined(QGATE_OPS_F16C)
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), h);
  }
#endif
  for (; i < n; ++i) out[i] = fp32_to_fp16(x[i]);
}

}  // namespace qgate
