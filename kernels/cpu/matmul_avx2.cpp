// Register-tiled AVX2 kernels for y = x · Wᵀ.
//
// Quantized weights (Q4_0, Q4_1, Q8_0) meet activations quantized once per matmul to 8 bits, so
// the inner product of a 32-element block is integer work: vpmaddubsw (u8 × i8 → pairs of i16),
// vpmaddwd against ones (→ 8 × i32), one int→float convert and one FMA with the product of the
// two block scales. vpmaddubsw needs one unsigned operand: Q4_1 nibbles already are; signed
// weights (Q4_0 after −8, Q8_0) use |w| and move w's sign onto x with vpsignb.
//
// A tile is R weight rows × T tokens. Each weight block is unpacked once and used for T tokens,
// each activation block is loaded once per row from L1 — that reuse is what makes prefill
// compute-bound instead of bandwidth-bound. R·T accumulators plus the unpacked block, its scale
// and two temporaries have to fit the 16 ymm registers, hence the tile shapes below.
//
// Q4_1's minimum term Σ_b m_w·s_x does not depend on the element data, so for T = 1 (decode) it
// rides along as a 128-bit FMA of [d_w, m_w] with s_x, and for T > 1 it is applied afterwards
// to a whole token block at once from the transposed s array (one FMA per 8 tokens per block).
#include "kernels/cpu/matmul_avx2.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <utility>

namespace qgate::cpu_avx2 {
namespace {

// Tile shapes, measured on Zen 3 (AVX2). Decode (one token) streams weights, so several rows share
// each activation load. For prefill 2 rows × 4 tokens (8 accumulators, no spills) beat 4 × 3
// (12 accumulators, 5 spilled to the stack) by ~8% and tied with 3 × 4.
constexpr int kMaxR = 4;
constexpr int kMaxT = 4;
constexpr int kDecodeRows = 4;
constexpr int kPrefillRows = 2;
constexpr int kPrefillTokens = 4;
constexpr int kFloatRows = 4;
constexpr int kFloatTokens = 3;
// Tokens whose activations stay in L2 while every row tile of a thread's range passes over them.
constexpr int64_t kTokenBlock = 64;

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 16 bytes of nibble pairs → 32 bytes: low nibbles (elements 0..15) then high (16..31).
// vbroadcasti128 from memory is a pure load, and one variable shift moves the upper copy down by a
// nibble: two ALU ops instead of three for shift + insert + and.
inline __m256i unpack_nibbles(const uint8_t* qs) {
  const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  const __m256i shifted = _mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4));
  return _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F));
}

// Eight int32 sums of four u8 × i8 products each, as floats. VNNI's vpdpbusd computes exactly what
// vpmaddubsw + vpmaddwd compute (lane m sums products 4m..4m+3, and no pair saturates int16:
// |w| ≤ 128 and |x| ≤ 127 give at most 32512), in one instruction instead of two. Where the
// build machine has it, prefill tiles (kVnni = T > 1) use it: +20% for the prefill step on Zen 4
// (BM_PrefillStep, 1 and 2 threads). Decode tiles keep the pair: with vpdpbusd the decode step
// measured 4-7% slower there, and it streams weights from memory anyway.
template <bool kVnni>
inline __m256 dot_u8_i8(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  if constexpr (kVnni) return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s));
#elif defined(__AVXVNNI__)
  if constexpr (kVnni) {
    return _mm256_cvtepi32_ps(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s));
  }
#endif
  const __m256i pairs = _mm256_maddubs_epi16(u, s);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

struct KQ4_0 {
  using W = BlockQ4_0;
  using A = BlockQ8_0;
  static constexpr bool kSigned = true;
  static constexpr bool kMin = false;
  static __m256i quants(const W& b) {
    return _mm256_sub_epi8(unpack_nibbles(b.qs), _mm256_set1_epi8(8));
  }
  static float act_scale(const A& a) { return h2f(a.d); }
};

struct KQ8_0 {
  using W = BlockQ8_0;
  using A = BlockQ8_0;
  static constexpr bool kSigned = true;
  static constexpr bool kMin = false;
  static __m256i quants(const W& b) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  }
  static float act_scale(const A& a) { return h2f(a.d); }
};

struct KQ4_1 {
  using W = BlockQ4_1;
  using A = BlockQ8_1;
  static constexpr bool kSigned = false;
  static constexpr bool kMin = true;
  static __m256i quants(const W& b) { return unpack_nibbles(b.qs); }
  static float act_scale(const A& a) { return a.d; }
};

using TileFn = void (*)(const uint8_t* w, int64_t wrb, const uint8_t* x, int64_t arb, int64_t len,
                        float* y, int64_t ldy);

template <class K, int R, int T>
void quant_tile(const uint8_t* w, int64_t wrb, const uint8_t* x, int64_t arb, int64_t nb,
                float* y, int64_t ldy) {
  using W = typename K::W;
  using A = typename K::A;
  const W* wr[R];
  const A* xt[T];
  for (int r = 0; r < R; ++r) wr[r] = reinterpret_cast<const W*>(w + r * wrb);
  for (int t = 0; t < T; ++t) xt[t] = reinterpret_cast<const A*>(x + t * arb);

  __m256 acc[R][T];
  __m128 acc_min[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    acc_min[r] = _mm_setzero_ps();
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }

  for (int64_t b = 0; b < nb; ++b) {
    float dx[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) dx[t] = K::act_scale(xt[t][b]);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const W& wb = wr[r][b];
      const __m256i q = K::quants(wb);
      const __m256i u = K::kSigned ? _mm256_sign_epi8(q, q) : q;
      __m256 dw;
      if constexpr (K::kMin) {
        // d and m are adjacent fp16s: one conversion yields [d, m, 0, 0].
        uint32_t dm_bits;
        std::memcpy(&dm_bits, &wb.d, sizeof(dm_bits));
        const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dm_bits)));
        dw = _mm256_broadcastss_ps(dm);
        if constexpr (T == 1) acc_min[r] = _mm_fmadd_ps(dm, _mm_set1_ps(xt[0][b].s), acc_min[r]);
      } else {
        dw = _mm256_set1_ps(h2f(wb.d));
      }
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xt[t][b].qs));
        if constexpr (K::kSigned) xv = _mm256_sign_epi8(xv, q);
        const __m256 p = dot_u8_i8<(T > 1)>(u, xv);
        acc[r][t] = _mm256_fmadd_ps(p, _mm256_mul_ps(dw, _mm256_set1_ps(dx[t])), acc[r][t]);
      }
    }
  }

#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    float extra = 0.0f;
    if constexpr (K::kMin && T == 1) {
      extra = _mm_cvtss_f32(_mm_movehdup_ps(acc_min[r]));  // lane 1: Σ m_w · s_x
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) y[t * ldy + r] = hsum(acc[r][t]) + extra;
  }
}

struct KF32 {
  static __m256 load8(const uint8_t* p) { return _mm256_loadu_ps(reinterpret_cast<const float*>(p)); }
  static float at(const uint8_t* p, int64_t i) {
    float v;
    std::memcpy(&v, p + 4 * i, 4);
    return v;
  }
  static constexpr int kBytes = 4;
};

struct KF16 {
  static __m256 load8(const uint8_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static float at(const uint8_t* p, int64_t i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    return h2f(h);
  }
  static constexpr int kBytes = 2;
};

struct KBF16 {
  static __m256 load8(const uint8_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static float at(const uint8_t* p, int64_t i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    const uint32_t bits = static_cast<uint32_t>(h) << 16;
    float v;
    std::memcpy(&v, &bits, 4);
    return v;
  }
  static constexpr int kBytes = 2;
};

template <class K, int R, int T>
void float_tile(const uint8_t* w, int64_t wrb, const uint8_t* x, int64_t arb, int64_t cols,
                float* y, int64_t ldy) {
  const uint8_t* wr[R];
  const float* xt[T];
  for (int r = 0; r < R; ++r) wr[r] = w + r * wrb;
  for (int t = 0; t < T; ++t) xt[t] = reinterpret_cast<const float*>(x + t * arb);

  __m256 acc[R][T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  const int64_t vec_end = cols / 8 * 8;
  for (int64_t c = 0; c < vec_end; c += 8) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256 wv = K::load8(wr[r] + c * K::kBytes);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xt[t] + c), acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      float s = hsum(acc[r][t]);
      for (int64_t c = vec_end; c < cols; ++c) s += K::at(wr[r], c) * xt[t][c];
      y[t * ldy + r] = s;
    }
  }
}

template <template <class, int, int> class Tile, class K, int... I>
constexpr std::array<TileFn, sizeof...(I)> make_table(std::integer_sequence<int, I...>) {
  return {&Tile<K, I / kMaxT + 1, I % kMaxT + 1>::run...};
}

// Adapters so one table builder serves both kernel families.
template <class K, int R, int T>
struct QuantTile {
  static void run(const uint8_t* w, int64_t wrb, const uint8_t* x, int64_t arb, int64_t len,
                  float* y, int64_t ldy) {
    quant_tile<K, R, T>(w, wrb, x, arb, len, y, ldy);
  }
};
template <class K, int R, int T>
struct FloatTile {
  static void run(const uint8_t* w, int64_t wrb, const uint8_t* x, int64_t arb, int64_t len,
                  float* y, int64_t ldy) {
    float_tile<K, R, T>(w, wrb, x, arb, len, y, ldy);
  }
};

template <template <class, int, int> class Tile, class K>
constexpr std::array<TileFn, kMaxR * kMaxT> kTable =
    make_table<Tile, K>(std::make_integer_sequence<int, kMaxR * kMaxT>{});

// Adds Σ_b m_w[b] · s[b][t] to y[t][r] for one Q4_1 row and tokens [t0, t1) (t1 - t0 ≤ kTokenBlock).
void q4_1_min_term(const BlockQ4_1* row, int64_t nb, const float* s_by_block, int64_t m,
                   int64_t t0, int64_t t1, float* y_col, int64_t ldy) {
  alignas(32) float acc[kTokenBlock] = {};
  const int64_t n = t1 - t0;
  const int64_t vec_end = n / 8 * 8;
  for (int64_t b = 0; b < nb; ++b) {
    const float mw = h2f(row[b].m);
    const __m256 vm = _mm256_set1_ps(mw);
    const float* s = s_by_block + b * m + t0;
    int64_t i = 0;
    for (; i < vec_end; i += 8) {
      _mm256_store_ps(acc + i, _mm256_fmadd_ps(vm, _mm256_loadu_ps(s + i), _mm256_load_ps(acc + i)));
    }
    // Fused like the vector lanes and like the T = 1 tiles' fold, so a token's result does not
    // depend on where it falls in the batch (continuous batching relies on that).
    for (; i < n; ++i) acc[i] = std::fma(mw, s[i], acc[i]);
  }
  for (int64_t i = 0; i < n; ++i) y_col[(t0 + i) * ldy] += acc[i];
}

template <class K>
void gemm_rows_quant(const GemmProblem& p, int64_t r0, int64_t r1) {
  const int64_t nb = p.cols / kQuantBlock;
  const auto& table = kTable<QuantTile, K>;
  for (int64_t tb = 0; tb < p.m; tb += kTokenBlock) {
    const int64_t te = std::min(p.m, tb + kTokenBlock);
    const int64_t n = te - tb;
    const int rows_step = n == 1 ? kDecodeRows : kPrefillRows;
    const int tok_step = n == 1 ? 1 : kPrefillTokens;
    // Tokens that go through T > 1 tiles need the separate minimum pass (T = 1 tiles fold it in).
    const int64_t min_end = n == 1 ? tb : (n % tok_step == 1 ? te - 1 : te);
    for (int64_t r = r0; r < r1; r += rows_step) {
      const int nr = static_cast<int>(std::min<int64_t>(rows_step, r1 - r));
      const uint8_t* wrow = p.w + r * p.w_row_bytes;
      for (int64_t t = tb; t < te; t += tok_step) {
        const int nt = static_cast<int>(std::min<int64_t>(tok_step, te - t));
        table[(nr - 1) * kMaxT + (nt - 1)](wrow, p.w_row_bytes, p.act + t * p.act_row_bytes,
                                           p.act_row_bytes, nb, p.y + t * p.ldy + r, p.ldy);
      }
      if constexpr (K::kMin) {
        if (min_end > tb) {
          for (int i = 0; i < nr; ++i) {
            q4_1_min_term(reinterpret_cast<const BlockQ4_1*>(wrow + i * p.w_row_bytes), nb,
                          p.s_by_block, p.m, tb, min_end, p.y + r + i, p.ldy);
          }
        }
      }
    }
  }
}

template <class K>
void gemm_rows_float(const GemmProblem& p, int64_t r0, int64_t r1) {
  const auto& table = kTable<FloatTile, K>;
  for (int64_t tb = 0; tb < p.m; tb += kTokenBlock) {
    const int64_t te = std::min(p.m, tb + kTokenBlock);
    for (int64_t r = r0; r < r1; r += kFloatRows) {
      const int nr = static_cast<int>(std::min<int64_t>(kFloatRows, r1 - r));
      for (int64_t t = tb; t < te; t += kFloatTokens) {
        const int nt = static_cast<int>(std::min<int64_t>(kFloatTokens, te - t));
        table[(nr - 1) * kMaxT + (nt - 1)](p.w + r * p.w_row_bytes, p.w_row_bytes,
                                           p.act + t * p.act_row_bytes, p.act_row_bytes, p.cols,
                                           p.y + t * p.ldy + r, p.ldy);
      }
    }
  }
}

static_assert(kDecodeRows <= kMaxR && kPrefillRows <= kMaxR && kFloatRows <= kMaxR);
static_assert(kPrefillTokens <= kMaxT && kFloatTokens <= kMaxT);

}  // namespace

bool available() { return true; }

void gemm_rows(const GemmProblem& p, int64_t r0, int64_t r1) {
  switch (p.type) {
    case DType::kQ4_0: return gemm_rows_quant<KQ4_0>(p, r0, r1);
    case DType::kQ4_1: return gemm_rows_quant<KQ4_1>(p, r0, r1);
    case DType::kQ8_0: return gemm_rows_quant<KQ8_0>(p, r0, r1);
    case DType::kF32: return gemm_rows_float<KF32>(p, r0, r1);
    case DType::kF16: return gemm_rows_float<KF16>(p, r0, r1);
    case DType::kBF16: return gemm_rows_float<KBF16>(p, r0, r1);
    default: break;
  }
  __builtin_trap();  // matmul() validates the type before it gets here
}

}  // namespace qgate::cpu_avx2

#else  // no AVX2/FMA/F16C in this build

namespace qgate::cpu_avx2 {
bool available() { return false; }
void gemm_rows(const GemmProblem&, int64_t, int64_t) { __builtin_trap(); }
}  // namespace qgate::cpu_avx2

#endif
