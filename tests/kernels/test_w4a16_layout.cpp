// The W4A16 packed layout (kernels/w4a16_layout.h) on the host: packing round-trips every
// element, the bits sit where the CUDA kernels read them (pinned against the layout as documented
// in w4a16_layout.cpp, including the fp16 "magic number" pair extraction the kernels do), bad
// input is refused with a message naming it, and the reference matmul matches a naive loop.
//
// Shapes: rows 1, 3, 17, 33 (partial 32-row tiles; 33 spills one row into a second tile),
// cols 32, 96, 576, 4160 (one chunk; odd chunk counts; 4160 = 32.5 groups of 128), groups 32, 64,
// 128 and 256 (partial last groups, and groups longer than the matrix).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/half.h"
#include "kernels/w4a16_layout.h"

namespace qgate {
namespace {

// Plain-form random 4-bit matrix: q uniform in 0..15, scale in [0.002, 0.02], min = -scale * z
// with z in [0, 15] (the GPTQ/AWQ asymmetric form).
struct PlainInt4 {
  int64_t rows, cols, group_size;
  std::vector<uint8_t> q;
  std::vector<float> scale, min;
  Int4Matrix view() const { return {rows, cols, group_size, q.data(), scale.data(), min.data()}; }
  int64_t groups() const { return (cols + group_size - 1) / group_size; }
  // The value the layout promises: q * fp16(scale) + fp16(min).
  float value(int64_t n, int64_t k) const {
    const size_t g = static_cast<size_t>(n * groups() + k / group_size);
    const float s = fp16_to_fp32(fp32_to_fp16(scale[g]));
    const float m = fp16_to_fp32(fp32_to_fp16(min[g]));
    return static_cast<float>(q[static_cast<size_t>(n * cols + k)]) * s + m;
  }
};

PlainInt4 random_int4(int64_t rows, int64_t cols, int64_t group_size, uint32_t seed) {
  PlainInt4 p{rows, cols, group_size, {}, {}, {}};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> qd(0, 15);
  std::uniform_real_distribution<float> sd(0.002f, 0.02f), zd(0.0f, 15.0f);
  p.q.resize(static_cast<size_t>(rows * cols));
  for (auto& v : p.q) v = static_cast<uint8_t>(qd(rng));
  const size_t ng = static_cast<size_t>(rows * p.groups());
  p.scale.resize(ng);
  p.min.resize(ng);
  for (size_t i = 0; i < ng; ++i) {
    p.scale[i] = sd(rng);
    p.min[i] = -p.scale[i] * zd(rng);
  }
  return p;
}

const int64_t kRows[] = {1, 3, 17, 33};
const int64_t kCols[] = {32, 96, 576, 4160};
const int64_t kGroups[] = {32, 64, 128, 256};

int64_t padded(int64_t rows) { return (rows + 31) / 32 * 32; }

TEST(W4A16Layout, PackThenDequantIsQTimesScalePlusMin) {
  uint32_t seed = 1;
  for (const int64_t rows : kRows) {
    for (const int64_t cols : kCols) {
      for (const int64_t group : kGroups) {
        const PlainInt4 p = random_int4(rows, cols, group, seed++);
        auto packed = pack_w4a16(p.view());
        ASSERT_TRUE(packed.ok()) << packed.error().to_string();
        const W4A16Weights& w = *packed;
        ASSERT_EQ(w.rows, rows);
        ASSERT_EQ(w.cols, cols);
        ASSERT_EQ(w.group_size, group);
        ASSERT_EQ(w.groups(), p.groups());
        // Rows are padded to whole 32-row tiles; bytes() is what one pass of a kernel reads.
        ASSERT_EQ(w.qweight.size(), static_cast<size_t>(padded(rows) * cols / 8));
        ASSERT_EQ(w.scale_min.size(), static_cast<size_t>(padded(rows) * p.groups() * 2));
        ASSERT_EQ(w.bytes(), w.qweight.size() * 4 + w.scale_min.size() * 2);
        ASSERT_EQ(w4a16_packed_bytes(rows, cols, group), w.bytes());
        for (int64_t n = 0; n < rows; ++n) {
          for (int64_t k = 0; k < cols; ++k) {
            ASSERT_FLOAT_EQ(w4a16_dequant(w, n, k), p.value(n, k))
                << rows << "x" << cols << " g" << group << " at (" << n << ", " << k << ")";
          }
        }
      }
    }
  }
}

// The documented placement, derived independently of the packer: element (n, k) is nibble
// j(k % 8) of word ((n / 32) * chunks + k / 32) * 128 + (4 * (n % 8) + (k % 32) / 8) * 4 +
// (n % 32) / 8, and its (scale, min) is pair ((n / 32) * groups + k / G) * 32 + 4 * (n % 8) +
// (n % 32) / 8. Every nibble of a padded row and every pair past the last row is zero.
TEST(W4A16Layout, BitsSitWhereTheKernelsReadThem) {
  const int kNibbleOfOffset[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // offsets 0 2 4 6 1 3 5 7 by nibble
  uint32_t seed = 100;
  for (const int64_t rows : {3, 33}) {
    for (const int64_t cols : {96, 576}) {
      for (const int64_t group : {64, 128}) {
        const PlainInt4 p = random_int4(rows, cols, group, seed++);
        const W4A16Weights w = pack_w4a16(p.view()).value();
        const int64_t chunks = cols / 32, groups = p.groups();
        std::vector<uint32_t> rebuilt(w.qweight.size(), 0u);
        std::vector<uint16_t> rebuilt_pairs(w.scale_min.size(), 0u);
        for (int64_t n = 0; n < rows; ++n) {
          const int64_t rb = n / 32, r = n % 32;
          for (int64_t k = 0; k < cols; ++k) {
            const int64_t word =
                (rb * chunks + k / 32) * 128 + (4 * (r % 8) + (k % 32) / 8) * 4 + r / 8;
            const int nibble = kNibbleOfOffset[k % 8];
            ASSERT_EQ(rebuilt[static_cast<size_t>(word)] >> (4 * nibble) & 15u, 0u) << "used twice";
            rebuilt[static_cast<size_t>(word)] |= uint32_t{p.q[static_cast<size_t>(n * cols + k)]}
                                                  << (4 * nibble);
          }
          for (int64_t g = 0; g < groups; ++g) {
            const size_t pair = static_cast<size_t>((rb * groups + g) * 32 + 4 * (r % 8) + r / 8);
            rebuilt_pairs[2 * pair] = fp32_to_fp16(p.scale[static_cast<size_t>(n * groups + g)]);
            rebuilt_pairs[2 * pair + 1] = fp32_to_fp16(p.min[static_cast<size_t>(n * groups + g)]);
          }
        }
        EXPECT_EQ(w.qweight, rebuilt) << rows << "x" << cols << " g" << group;
        EXPECT_EQ(w.scale_min, rebuilt_pairs) << rows << "x" << cols << " g" << group;
      }
    }
  }
}

// The kernels' dequantization, emulated bit for bit: (word & 0x000F000F) | 0x64006400 read as two
// fp16 values is (1024 + q[2p], 1024 + q[2p + 1]) for p = 0, mask 0x00F000F0 gives
// (1024 + 16 q[2], 1024 + 16 q[3]), and the word shifted right by 8 gives pairs 2 and 3 -- each
// pair being the consecutive columns (8t + 2p, 8t + 2p + 1) that an fp16x2 of x multiplies.
TEST(W4A16Layout, MagicNumberPairsAreConsecutiveColumns) {
  const PlainInt4 p = random_int4(33, 576, 128, 7);
  const W4A16Weights w = pack_w4a16(p.view()).value();
  const int64_t chunks = p.cols / 32;
  auto halves = [](uint32_t bits) {
    return std::pair<float, float>{fp16_to_fp32(static_cast<uint16_t>(bits & 0xFFFFu)),
                                   fp16_to_fp32(static_cast<uint16_t>(bits >> 16))};
  };
  for (int64_t n = 0; n < p.rows; ++n) {
    const int64_t rb = n / 32, r = n % 32, g = r % 8, i = r / 8;
    for (int64_t kc = 0; kc < chunks; ++kc) {
      for (int64_t t = 0; t < 4; ++t) {
        const uint32_t word =
            w.qweight[static_cast<size_t>((rb * chunks + kc) * 128 + (4 * g + t) * 4 + i)];
        for (int pair = 0; pair < 4; ++pair) {
          const uint32_t src = pair < 2 ? word : word >> 8;
          const uint32_t mask = pair % 2 == 0 ? 0x000F000Fu : 0x00F000F0u;
          const float unit = pair % 2 == 0 ? 1.0f : 16.0f;
          const auto [lo, hi] = halves((src & mask) | 0x64006400u);
          const int64_t k = kc * 32 + 8 * t + 2 * pair;
          ASSERT_EQ((lo - 1024.0f) / unit, p.q[static_cast<size_t>(n * p.cols + k)])
              << "n=" << n << " k=" << k;
          ASSERT_EQ((hi - 1024.0f) / unit, p.q[static_cast<size_t>(n * p.cols + k + 1)])
              << "n=" << n << " k=" << k + 1;
        }
      }
    }
  }
}

void expect_invalid(const Int4Matrix& m, const std::string& needle) {
  const auto r = pack_w4a16(m);
  ASSERT_FALSE(r.ok()) << "accepted; wanted an error naming '" << needle << "'";
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
}

TEST(W4A16Layout, RejectsWhatTheKernelsCannotTake) {
  PlainInt4 p = random_int4(3, 96, 64, 11);
  Int4Matrix m = p.view();
  m.rows = 0;
  expect_invalid(m, "rows 0");
  m = p.view();
  m.cols = 48;
  expect_invalid(m, "cols 48");
  m.cols = 0;
  expect_invalid(m, "cols 0");
  m = p.view();
  m.group_size = 48;
  expect_invalid(m, "group_size 48");
  m.group_size = 0;
  expect_invalid(m, "group_size 0");
  m = p.view();
  m.q = nullptr;
  expect_invalid(m, "null");

  PlainInt4 bad = p;
  bad.q[1 * 96 + 5] = 16;
  expect_invalid(bad.view(), "q[1][5] = 16");
  bad = p;
  bad.scale[2 * 2 + 1] = std::numeric_limits<float>::quiet_NaN();
  expect_invalid(bad.view(), "scale[2][1]");
  bad = p;
  bad.min[0] = std::numeric_limits<float>::infinity();
  expect_invalid(bad.view(), "min[0][0]");
  bad = p;
  bad.scale[3] = 1e6f;  // finite in fp32, infinite in fp16
  expect_invalid(bad.view(), "scale[1][1]");
  // Scale and min each fit fp16, but q = 15 dequantizes past it (15 · 5000 = 75000 > 65504).
  bad = p;
  bad.scale[2 * 2 + 1] = 5000.0f;
  bad.min[2 * 2 + 1] = 0.0f;
  expect_invalid(bad.view(), "row 2 group 1");
  bad.min[2 * 2 + 1] = -20000.0f;  // 75000 - 20000 fits: accepted
  EXPECT_TRUE(pack_w4a16(bad.view()).ok());
  m = p.view();
  m.group_size = (int64_t{1} << 30) + 32;
  expect_invalid(m, "too large");
}

TEST(W4A16Layout, MatmulRefMatchesNaiveLoop) {
  uint32_t seed = 200;
  for (const int64_t m : {1, 3, 17}) {
    for (const int64_t rows : {3, 17, 33}) {
      for (const int64_t cols : {96, 576}) {
        const PlainInt4 p = random_int4(rows, cols, 64, seed++);
        const W4A16Weights w = pack_w4a16(p.view()).value();
        std::mt19937 rng(seed++);
        std::uniform_real_distribution<float> xd(-1.0f, 1.0f);
        std::vector<float> x(static_cast<size_t>(m * cols));
        for (auto& v : x) v = xd(rng);
        std::vector<float> y(static_cast<size_t>(m * rows),
                             std::numeric_limits<float>::quiet_NaN());
        w4a16_matmul_ref(w, x.data(), m, y.data());
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t n = 0; n < rows; ++n) {
            double want = 0.0;
            for (int64_t k = 0; k < cols; ++k) {
              want += static_cast<double>(x[static_cast<size_t>(i * cols + k)]) * p.value(n, k);
            }
            // Both accumulate in double; only the final float rounding differs.
            ASSERT_NEAR(y[static_cast<size_t>(i * rows + n)], want, 1e-6 * (std::fabs(want) + 1.0))
                << "m=" << m << " " << rows << "x" << cols << " at (" << i << ", " << n << ")";
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace qgate
