// fp16 / bf16 conversions: exhaustive over every 16-bit pattern against an arithmetic reference
// (and against the F16C instructions where the build has them), plus the rounding corner cases.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/cpu/half.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace qgate {
namespace {

// Value of a half computed from its definition, independent of the bit tricks under test.
double half_value(uint16_t h) {
  const int sign = (h & 0x8000) ? -1 : 1;
  const int exp = (h >> 10) & 0x1F;
  const int mant = h & 0x3FF;
  if (exp == 0x1F) return mant ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (exp == 0) return sign * std::ldexp(static_cast<double>(mant), -24);
  return sign * std::ldexp(1.0 + mant / 1024.0, exp - 15);
}

bool is_half_nan(uint16_t h) { return (h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0; }

TEST(Fp16ToFp32, ExhaustiveMatchesDefinition) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    const float f = fp16_to_fp32(h);
    const double want = half_value(h);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(f)) << "h=" << i;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), want) << "h=" << i;
    ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << "h=" << i;  // -0 stays -0
  }
}

#if defined(__F16C__)
TEST(Fp16ToFp32, ExhaustiveMatchesF16C) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    ASSERT_EQ(std::bit_cast<uint32_t>(fp16_to_fp32(h)), std::bit_cast<uint32_t>(_cvtsh_ss(h))) << i;
  }
}

TEST(Fp32ToFp16, MatchesF16COnAFloatSweep) {
  // A stride coprime to 2^32 walks every exponent and many mantissa patterns (~1M values).
  for (uint64_t bits = 0; bits < (1ull << 32); bits += 4099) {
    const float f = std::bit_cast<float>(static_cast<uint32_t>(bits));
    const uint16_t want = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
    const uint16_t got = fp32_to_fp16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(is_half_nan(got)) << std::hex << bits;
    } else {
      ASSERT_EQ(got, want) << std::hex << bits;
    }
  }
}
#endif

TEST(Fp32ToFp16, RoundTripsEveryHalf) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    if (is_half_nan(h)) {
      EXPECT_TRUE(is_half_nan(fp32_to_fp16(fp16_to_fp32(h)))) << i;
    } else {
      ASSERT_EQ(fp32_to_fp16(fp16_to_fp32(h)), h) << i;
    }
  }
}

TEST(Fp32ToFp16, MidpointsRoundToEvenAndNeighboursToNearest) {
  // Every pair of adjacent finite positive halves, subnormals included.
  for (uint16_t a = 0; a < 0x7BFF; ++a) {
    const uint16_t b = a + 1;
    const float fa = fp16_to_fp32(a);
    const float fb = fp16_to_fp32(b);
    const float mid = (fa + fb) / 2;  // exact: one more bit than a half has
    const uint16_t even = (a & 1) ? b : a;
    ASSERT_EQ(fp32_to_fp16(mid), even) << a;
    ASSERT_EQ(fp32_to_fp16(std::nextafter(mid, 0.0f)), a) << a;
    ASSERT_EQ(fp32_to_fp16(std::nextafter(mid, INFINITY)), b) << a;
    ASSERT_EQ(fp32_to_fp16(-mid), static_cast<uint16_t>(even | 0x8000)) << a;
  }
}

TEST(Fp32ToFp16, OverflowUnderflowAndSpecials) {
  EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65519.996f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);  // the midpoint to 2^16 rounds to even = inf
  EXPECT_EQ(fp32_to_fp16(1e10f), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(-1e10f), 0xFC00);
  EXPECT_EQ(fp32_to_fp16(INFINITY), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(-INFINITY), 0xFC00);
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -24)), 0x0001);    // smallest subnormal
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);    // tie with zero → even
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1023.5f, -24)), 0x0400);  // carries into the smallest normal
  EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(fp32_to_fp16(1.0f), 0x3C00);
  EXPECT_EQ(fp32_to_fp16(-2.0f), 0xC000);
  EXPECT_EQ(fp32_to_fp16(0.1f), 0x2E66);
  EXPECT_TRUE(is_half_nan(fp32_to_fp16(std::numeric_limits<float>::quiet_NaN())));
  // A NaN whose payload lives only in the low bits must not truncate to inf.
  EXPECT_TRUE(is_half_nan(fp32_to_fp16(std::bit_cast<float>(0x7F800001u))));
}

TEST(Bf16, ExhaustiveWidenIsShift) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const float f = bf16_to_fp32(static_cast<uint16_t>(i));
    ASSERT_EQ(std::bit_cast<uint32_t>(f), i << 16) << i;
    if (!std::isnan(f)) {
      ASSERT_EQ(fp32_to_bf16(f), i) << i;
    } else {
      const uint16_t back = fp32_to_bf16(f);
      ASSERT_TRUE(std::isnan(bf16_to_fp32(back))) << i;
    }
  }
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // tie, even below
  EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie, even above
  EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x3F808001u)), 0x3F81);
  EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x3F807FFFu)), 0x3F80);
  EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x7F7FFFFFu)), 0x7F80);  // max float → inf
  EXPECT_EQ(fp32_to_bf16(-5.0f), 0xC0A0);
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(std::bit_cast<float>(0x7F800001u)))));
}

}  // namespace
}  // namespace qgate
