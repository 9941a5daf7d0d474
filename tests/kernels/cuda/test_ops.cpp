// The GPU forward-pass ops (kernels/cuda/ops.h) against their CPU references (kernels/cpu/ops.h,
// kernels/cpu/half.h, the greedy sampler's argmax rule), run on the same fp16-rounded inputs.
//
// Bounds. Each reference computes in fp32 from the same inputs, so the only expected difference is
// the final rounding to fp16 (at most half an fp16 ulp: 2^-11 = 4.9e-4 of the value) plus fp32
// reordering (~1e-7 relative; up to ~1e-5 for the norms, whose fp32 sums of up to 32k squares run
// in a different order). Every element must lie within 6e-4·|ref| (7e-4 for the norms) + a tiny
// absolute slack (NaN fails), and the normalized error ‖out−ref‖/‖ref‖ must stay under 1e-3. Ops
// with no arithmetic beyond one fp32 add or conversion (embedding, residual add, bias add, gather,
// fp16 conversion, argmax) must match bit for bit. Outputs are NaN-poisoned (0xFF bytes) before
// each launch, so an element the kernel did not write fails.
//
// Shapes: rows 1, 3, 17, 118 against lengths that hit every dispatch branch: multiples of 8
// (16-byte path; 4104 is one, 513·8), 4100 and 4099 (not multiples of 8: 1-element path), and every
// pointer offset by one element (unaligned: 1-element path even when n % 8 == 0).
//
// Validation tests (bad sizes, rows == 0) touch no device and run everywhere; the rest skip with a
// message when no GPU is present.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/half.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/ops.h"
#include "tests/kernels/cuda/cuda_testbed.h"

namespace qgate::cuda {
namespace {

using namespace qgate::testing;  // NOLINT: the shared test plumbing (cuda_testbed.h)

#define SKIP_WITHOUT_GPU() QGATE_SKIP_WITHOUT_GPU("GPU ops test skipped")

const int64_t kRows[] = {1, 3, 17, 118};
const int64_t kCols[] = {8, 64, 576, 1536, 4096, 4104, 4100, 4099};
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// got[first + i] against ref[i] for count elements: each within rel·|ref| + abs, and the
// normalized error within norm_bound. NaN fails both.
::testing::AssertionResult close_to(const std::vector<float>& got, size_t first,
                                    const std::vector<float>& ref, double rel, double abs,
                                    double norm_bound = 1e-3) {
  ErrorNorm norm;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = got[first + i], r = ref[i];
    if (!(std::fabs(g - r) <= rel * std::fabs(r) + abs)) {
      return ::testing::AssertionFailure() << "element " << i << ": got " << g << ", want " << r;
    }
    norm.add(g, r);
  }
  const double err = norm.value();
  if (!(err <= norm_bound)) {
    return ::testing::AssertionFailure() << "normalized error " << err << " > " << norm_bound;
  }
  return ::testing::AssertionSuccess();
}

template <typename T>
::testing::AssertionResult bits_equal(const std::vector<T>& got, size_t first,
                                      const std::vector<T>& want) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::memcmp(&got[first + i], &want[i], sizeof(T)) != 0) {
      return ::testing::AssertionFailure()
             << "element " << i << ": got " << +got[first + i] << ", want " << +want[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// ---- validation: no device needed ---------------------------------------------------------------

void expect_invalid(const Status& s, const char* what) {
  EXPECT_FALSE(s.ok()) << what;
  if (!s.ok()) {
    EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument) << what;
  }
}

TEST(CudaOpsValidation, BadSizesAreInvalidArgument) {
  // Non-null dummies: validation must reject on sizes alone, before any pointer is used.
  auto* h = reinterpret_cast<__half*>(uintptr_t{256});
  auto* f = reinterpret_cast<float*>(uintptr_t{256});
  auto* i32 = reinterpret_cast<int32_t*>(uintptr_t{256});
  expect_invalid(embedding_lookup(h, 0, i32, 1, f, nullptr), "embedding hidden 0");
  expect_invalid(embedding_lookup(h, 8, i32, -1, f, nullptr), "embedding rows -1");
  expect_invalid(embedding_lookup(nullptr, 8, i32, 1, f, nullptr), "embedding null table");
  expect_invalid(rms_norm(f, f, 1, 0, 1e-5f, h, nullptr), "rms_norm n 0");
  expect_invalid(rms_norm(f, f, -1, 8, 1e-5f, h, nullptr), "rms_norm rows -1");
  expect_invalid(rms_norm(f, f, 1, int64_t{1} << 31, 1e-5f, h, nullptr), "rms_norm n 2^31");
  expect_invalid(rms_norm(f, f, 1, 8, kNaN, h, nullptr), "rms_norm eps NaN");
  expect_invalid(rms_norm(f, f, 1, 8, -1.0f, h, nullptr), "rms_norm eps < 0");
  expect_invalid(rms_norm(f, nullptr, 1, 8, 1e-5f, h, nullptr), "rms_norm null weight");
  expect_invalid(add_rms_norm(f, h, f, 1, -3, 1e-5f, h, nullptr), "add_rms_norm n < 0");
  expect_invalid(add_rms_norm(f, nullptr, f, 1, 8, 1e-5f, h, nullptr), "add_rms_norm null delta");
  expect_invalid(add_residual(f, h, -2, 8, nullptr), "add_residual rows < 0");
  expect_invalid(add_residual(f, h, 1, 0, nullptr), "add_residual n 0");
  expect_invalid(add_bias(h, f, 1, 0, nullptr), "add_bias n 0");
  expect_invalid(add_bias(h, nullptr, 1, 8, nullptr), "add_bias null bias");
  expect_invalid(rope(h, 576, h, 192, i32, 1, 9, 3, 63, 1e4f, RopeLayout::kHalves, nullptr),
                 "rope odd head_dim");
  expect_invalid(rope(h, 576, h, 192, i32, 1, 9, 3, 0, 1e4f, RopeLayout::kHalves, nullptr),
                 "rope head_dim 0");
  expect_invalid(rope(h, 576, h, 192, i32, 1, 9, 3, 2048, 1e4f, RopeLayout::kHalves, nullptr),
                 "rope head_dim 2048");
  expect_invalid(rope(h, 576, h, 192, i32, 1, 0, 3, 64, 1e4f, RopeLayout::kHalves, nullptr),
                 "rope n_heads 0");
  expect_invalid(rope(h, 576, h, 192, i32, 1, 9, -1, 64, 1e4f, RopeLayout::kHalves, nullptr),
                 "rope n_kv_heads < 0");
  expect_invalid(rope(h, 576, h, 192, i32, 1, 9, 3, 64, 0.0f, RopeLayout::kHalves, nullptr),
                 "rope theta 0");
  expect_invalid(rope(h, 576, h, 192, i32, -1, 9, 3, 64, 1e4f, RopeLayout::kHalves, nullptr),
                 "rope rows < 0");
  expect_invalid(rope(h, 576, h, 192, nullptr, 1, 9, 3, 64, 1e4f, RopeLayout::kHalves, nullptr),
                 "rope null pos");
  expect_invalid(rope(h, 575, h, 192, i32, 1, 9, 3, 64, 1e4f, RopeLayout::kHalves, nullptr),
                 "rope q_stride < n_heads * head_dim");
  expect_invalid(rope(h, 576, h, 191, i32, 1, 9, 3, 64, 1e4f, RopeLayout::kHalves, nullptr),
                 "rope k_stride < n_kv_heads * head_dim");
  expect_invalid(swiglu(h, 8, h, 8, 1, 0, h, nullptr), "swiglu n 0");
  expect_invalid(swiglu(h, 7, h, 8, 2, 8, h, nullptr), "swiglu gate_stride < n");
  expect_invalid(swiglu(h, 16, h, 4, 2, 8, h, nullptr), "swiglu up_stride < n");
  expect_invalid(gather_columns(h, i32, 1, 0, h + 64, nullptr), "gather cols 0");
  expect_invalid(gather_columns(h, i32, 1, 8, h, nullptr), "gather in place");
  expect_invalid(argmax_rows(f, 1, 0, i32, nullptr), "argmax vocab 0");
  expect_invalid(argmax_rows(f, -1, 8, i32, nullptr), "argmax rows < 0");
  expect_invalid(argmax_rows(f, 1, 8, nullptr, nullptr), "argmax null out");
  expect_invalid(half_to_float(h, -1, f, nullptr), "half_to_float n < 0");
  expect_invalid(float_to_half(f, -1, h, nullptr), "float_to_half n < 0");
}

TEST(CudaOpsValidation, ZeroRowsIsANoOp) {
  // Null data pointers are fine when there is nothing to touch; nothing is launched.
  EXPECT_TRUE(embedding_lookup(nullptr, 8, nullptr, 0, nullptr, nullptr).ok());
  EXPECT_TRUE(rms_norm(nullptr, nullptr, 0, 576, 1e-5f, nullptr, nullptr).ok());
  EXPECT_TRUE(add_rms_norm(nullptr, nullptr, nullptr, 0, 576, 1e-5f, nullptr, nullptr).ok());
  EXPECT_TRUE(add_residual(nullptr, nullptr, 0, 576, nullptr).ok());
  EXPECT_TRUE(add_bias(nullptr, nullptr, 0, 576, nullptr).ok());
  EXPECT_TRUE(rope(nullptr, 576, nullptr, 192, nullptr, 0, 9, 3, 64, 1e4f,
                   RopeLayout::kAdjacentPairs, nullptr)
                  .ok());
  EXPECT_TRUE(swiglu(nullptr, 1536, nullptr, 1536, 0, 1536, nullptr, nullptr).ok());
  EXPECT_TRUE(gather_columns(nullptr, nullptr, 0, 576, nullptr, nullptr).ok());
  EXPECT_TRUE(argmax_rows(nullptr, 0, 49152, nullptr, nullptr).ok());
  EXPECT_TRUE(half_to_float(nullptr, 0, nullptr, nullptr).ok());
  EXPECT_TRUE(float_to_half(nullptr, 0, nullptr, nullptr).ok());
}

// ---- embedding ----------------------------------------------------------------------------------

TEST(CudaOps, EmbeddingLookupCopiesTableRows) {
  SKIP_WITHOUT_GPU();
  constexpr int64_t kVocab = 300;
  for (const int64_t hidden : kCols) {
    for (const int64_t off : {0, 1}) {
      const auto table =
          to_half(uniform(static_cast<size_t>(kVocab * hidden) + 1, 11, -2.0f, 2.0f));
      DeviceArray<uint16_t> d_table(table);
      for (const int64_t rows : kRows) {
        std::vector<int32_t> tokens(static_cast<size_t>(rows));
        std::mt19937 rng(static_cast<uint32_t>(rows * 7 + hidden));
        for (auto& t : tokens) t = static_cast<int32_t>(rng() % kVocab);
        tokens[0] = static_cast<int32_t>(kVocab - 1);
        if (rows > 1) tokens[1] = 0;
        DeviceArray<int32_t> d_tokens(tokens);
        DeviceArray<float> d_x(static_cast<size_t>(rows * hidden + off));
        d_x.poison();
        ASSERT_TRUE(embedding_lookup(d_table.half() + off, hidden, d_tokens.get(), rows,
                                     d_x.get() + off, nullptr)
                        .ok());
        std::vector<float> want(static_cast<size_t>(rows * hidden));
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t i = 0; i < hidden; ++i) {
            want[r * hidden + i] = fp16_to_fp32(table[off + tokens[r] * hidden + i]);
          }
        }
        EXPECT_TRUE(bits_equal(d_x.host(), off, want))
            << "hidden=" << hidden << " rows=" << rows << " offset=" << off;
      }
    }
  }
}

// ---- rms_norm / add_rms_norm --------------------------------------------------------------------

// Lengths covering every team/caching branch of the dispatch in both access forms.
const int64_t kNormCols[] = {8,    64,   576,  1024, 1536,  4096, 4104,
                             4100, 4099, 8192, 8193, 16384, 32776};

void run_norm_case(bool add, int64_t rows, int64_t n, int64_t off) {
  constexpr float kEps = 1e-5f;
  const auto count = static_cast<size_t>(rows * n + off);
  const auto x = uniform(count, static_cast<uint32_t>(n * 131 + rows), -3.0f, 3.0f);
  const auto weight = uniform(static_cast<size_t>(n + off), static_cast<uint32_t>(n), -1.5f, 1.5f);
  const auto delta = to_half(uniform(count, static_cast<uint32_t>(n * 17 + rows), -2.0f, 2.0f));
  DeviceArray<float> d_x(x), d_w(weight);
  DeviceArray<uint16_t> d_delta(delta), d_out(count);
  d_out.poison();
  const Status s =
      add ? add_rms_norm(d_x.get() + off, d_delta.half() + off, d_w.get() + off, rows, n, kEps,
                         d_out.half() + off, nullptr)
          : rms_norm(d_x.get() + off, d_w.get() + off, rows, n, kEps, d_out.half() + off, nullptr);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  const auto out = to_float(d_out.host());
  const auto x_after = d_x.host();
  std::vector<float> w(weight.begin() + off, weight.end());
  for (int64_t r = 0; r < rows; ++r) {
    const size_t base = static_cast<size_t>(off + r * n);
    std::vector<float> xr(x.begin() + base, x.begin() + base + n);
    if (add) {
      for (int64_t i = 0; i < n; ++i) xr[i] += fp16_to_fp32(delta[base + i]);
      // One fp32 add, the same on both sides: exact.
      ASSERT_TRUE(bits_equal(x_after, base, xr))
          << "updated x, rows=" << rows << " n=" << n << " offset=" << off << " row " << r;
    } else {
      ASSERT_TRUE(bits_equal(x_after, base, xr)) << "x must stay unchanged";
    }
    std::vector<float> ref(static_cast<size_t>(n));
    qgate::rms_norm(xr.data(), w.data(), ref.data(), n, kEps);
    ASSERT_TRUE(close_to(out, base, ref, 7e-4, 1e-6))
        << (add ? "add_rms_norm" : "rms_norm") << " rows=" << rows << " n=" << n
        << " offset=" << off << " row " << r;
  }
}

TEST(CudaOps, RmsNormMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (const int64_t n : kNormCols) {
    for (const int64_t rows : kRows) {
      for (const int64_t off : {0, 1}) run_norm_case(false, rows, n, off);
    }
  }
}

TEST(CudaOps, AddRmsNormUpdatesXAndMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (const int64_t n : kNormCols) {
    for (const int64_t rows : kRows) {
      for (const int64_t off : {0, 1}) run_norm_case(true, rows, n, off);
    }
  }
}

TEST(CudaOps, ZeroRowsLeaveOutputsUntouched) {
  SKIP_WITHOUT_GPU();
  DeviceArray<float> d_x(uniform(576, 3, -1.0f, 1.0f)), d_w(uniform(576, 4, -1.0f, 1.0f));
  DeviceArray<uint16_t> d_out(576), d_delta(to_half(uniform(576, 5, -1.0f, 1.0f)));
  d_out.poison();
  ASSERT_TRUE(
      add_rms_norm(d_x.get(), d_delta.half(), d_w.get(), 0, 576, 1e-5f, d_out.half(), nullptr)
          .ok());
  for (const uint16_t v : d_out.host()) ASSERT_EQ(v, 0xFFFFu);
}

// ---- add_residual / add_bias --------------------------------------------------------------------

TEST(CudaOps, AddResidualIsExact) {
  SKIP_WITHOUT_GPU();
  for (const int64_t n : kCols) {
    for (const int64_t rows : kRows) {
      for (const int64_t off : {0, 1}) {
        const auto count = static_cast<size_t>(rows * n + off);
        const auto x = uniform(count, static_cast<uint32_t>(n + rows), -3.0f, 3.0f);
        const auto delta =
            to_half(uniform(count, static_cast<uint32_t>(n * 3 + rows), -2.0f, 2.0f));
        DeviceArray<float> d_x(x);
        DeviceArray<uint16_t> d_delta(delta);
        ASSERT_TRUE(add_residual(d_x.get() + off, d_delta.half() + off, rows, n, nullptr).ok());
        std::vector<float> want(x.begin() + off, x.end());
        for (size_t i = 0; i < want.size(); ++i) want[i] += fp16_to_fp32(delta[off + i]);
        EXPECT_TRUE(bits_equal(d_x.host(), off, want))
            << "rows=" << rows << " n=" << n << " offset=" << off;
      }
    }
  }
}

TEST(CudaOps, AddBiasIsExact) {
  SKIP_WITHOUT_GPU();
  for (const int64_t n : kCols) {
    for (const int64_t rows : kRows) {
      for (const int64_t off : {0, 1}) {
        const auto count = static_cast<size_t>(rows * n + off);
        const auto y = to_half(uniform(count, static_cast<uint32_t>(n + rows), -3.0f, 3.0f));
        const auto bias =
            uniform(static_cast<size_t>(n + off), static_cast<uint32_t>(n), -1.0f, 1.0f);
        DeviceArray<uint16_t> d_y(y);
        DeviceArray<float> d_bias(bias);
        ASSERT_TRUE(add_bias(d_y.half() + off, d_bias.get() + off, rows, n, nullptr).ok());
        std::vector<uint16_t> want(y.begin() + off, y.end());
        for (size_t i = 0; i < want.size(); ++i) {
          want[i] = fp32_to_fp16(fp16_to_fp32(want[i]) + bias[off + i % static_cast<size_t>(n)]);
        }
        EXPECT_TRUE(bits_equal(d_y.host(), off, want))
            << "rows=" << rows << " n=" << n << " offset=" << off;
      }
    }
  }
}

// ---- rope ---------------------------------------------------------------------------------------

// Dense q and k arrays, and q and k as views into rows of one fused q | k | v matmul output
// (stride q_dim + 2 kv_dim), where the v part of every row must come back bit for bit.
TEST(CudaOps, RopeMatchesCpuBothLayouts) {
  SKIP_WITHOUT_GPU();
  // 100000 is where an fp32 angle (pos·freq rounded to float) would be off by ~8e-3 rad: the
  // per-element bound below catches that.
  const int32_t kPositions[] = {100000, 0, 1, 17, 2047};
  struct Shape {
    int32_t head_dim, n_heads, n_kv_heads;
  };
  for (const Shape sh : {Shape{64, 9, 3}, Shape{128, 32, 8}}) {
    for (const float theta : {10000.0f, 100000.0f}) {
      for (const RopeLayout layout : {RopeLayout::kAdjacentPairs, RopeLayout::kHalves}) {
        const RopeStyle style =
            layout == RopeLayout::kHalves ? RopeStyle::kHalves : RopeStyle::kAdjacentPairs;
        for (const int64_t rows : kRows) {
          for (const bool fused : {false, true}) {
            const int64_t q_row = int64_t{sh.n_heads} * sh.head_dim;
            const int64_t k_row = int64_t{sh.n_kv_heads} * sh.head_dim;
            const int64_t width = q_row + 2 * k_row;
            const int64_t q_stride = fused ? width : q_row;
            const int64_t k_stride = fused ? width : k_row;
            // Dense: all q rows, then all k rows. Fused: rows of q | k | v.
            const int64_t q_at = 0;
            const int64_t k_at = fused ? q_row : rows * q_row;
            const auto all =
                to_half(uniform(static_cast<size_t>(fused ? rows * width : rows * (q_row + k_row)),
                                static_cast<uint32_t>(rows + q_row + fused), -1.0f, 1.0f));
            std::vector<int32_t> pos(static_cast<size_t>(rows));
            for (int64_t r = 0; r < rows; ++r) pos[r] = kPositions[r % 5];
            DeviceArray<uint16_t> d_all(all);
            DeviceArray<int32_t> d_pos(pos);
            ASSERT_TRUE(rope(d_all.half() + q_at, q_stride, d_all.half() + k_at, k_stride,
                             d_pos.get(), rows, sh.n_heads, sh.n_kv_heads, sh.head_dim, theta,
                             layout, nullptr)
                            .ok());
            const std::vector<uint16_t> got_bits = d_all.host();
            const auto got = to_float(got_bits);
            const auto ref = to_float(all);
            for (int64_t r = 0; r < rows; ++r) {
              const int64_t qr = q_at + r * q_stride;
              const int64_t kr = k_at + r * k_stride;
              std::vector<float> rq(ref.begin() + qr, ref.begin() + qr + q_row);
              std::vector<float> rk(ref.begin() + kr, ref.begin() + kr + k_row);
              qgate::rope(rq.data(), sh.n_heads, sh.head_dim, pos[r], theta, style);
              qgate::rope(rk.data(), sh.n_kv_heads, sh.head_dim, pos[r], theta, style);
              const auto where =
                  ::testing::Message()
                  << "head_dim=" << sh.head_dim << " heads=" << sh.n_heads << "/" << sh.n_kv_heads
                  << " theta=" << theta << " halves=" << (layout == RopeLayout::kHalves)
                  << " rows=" << rows << " fused=" << fused << " row " << r << " pos=" << pos[r];
              ASSERT_TRUE(close_to(got, static_cast<size_t>(qr), rq, 6e-4, 1e-5)) << "q " << where;
              ASSERT_TRUE(close_to(got, static_cast<size_t>(kr), rk, 6e-4, 1e-5)) << "k " << where;
              if (fused) {
                const auto v0 = all.begin() + r * width + q_row + k_row;
                ASSERT_TRUE(std::equal(v0, v0 + k_row, got_bits.begin() + (v0 - all.begin())))
                    << "the v part was touched, " << where;
              }
            }
          }
        }
      }
    }
  }
}

// ---- swiglu -------------------------------------------------------------------------------------

TEST(CudaOps, SwigluMatchesCpuOnStridedViews) {
  SKIP_WITHOUT_GPU();
  enum class View { kFused, kSeparate, kOddStride };
  for (const int64_t n : kCols) {
    for (const int64_t rows : kRows) {
      for (const View view : {View::kFused, View::kSeparate, View::kOddStride}) {
        // kFused: one [rows][2n] gate/up matmul output, gate at the row start and up at +n.
        // kOddStride: rows padded by 3 elements, so neither view is 16-byte aligned per row.
        const int64_t stride = view == View::kFused ? 2 * n : (view == View::kSeparate ? n : n + 3);
        auto values = uniform(static_cast<size_t>(rows * stride * 2),
                              static_cast<uint32_t>(n * 7 + rows), -6.0f, 6.0f);
        // A few large gates reach both silu limits (expf(-g) overflowing and vanishing).
        values[0] = -90.0f;
        values[values.size() / 2] = 40.0f;
        const auto buf = to_half(values);
        DeviceArray<uint16_t> d_buf(buf), d_out(static_cast<size_t>(rows * n));
        d_out.poison();
        const __half* gate = d_buf.half();
        const __half* up = view == View::kFused ? gate + n : gate + rows * stride;
        ASSERT_TRUE(swiglu(gate, stride, up, stride, rows, n, d_out.half(), nullptr).ok());
        const auto got = to_float(d_out.host());
        const auto all = to_float(buf);
        const int64_t up_first = view == View::kFused ? n : rows * stride;
        for (int64_t r = 0; r < rows; ++r) {
          std::vector<float> g(all.begin() + r * stride, all.begin() + r * stride + n);
          std::vector<float> u(all.begin() + up_first + r * stride,
                               all.begin() + up_first + r * stride + n);
          std::vector<float> ref(static_cast<size_t>(n));
          qgate::swiglu(g.data(), u.data(), ref.data(), n);
          ASSERT_TRUE(close_to(got, static_cast<size_t>(r * n), ref, 6e-4, 1e-6))
              << "n=" << n << " rows=" << rows << " view=" << static_cast<int>(view) << " row "
              << r;
        }
      }
    }
  }
}

// ---- gather_columns -----------------------------------------------------------------------------

TEST(CudaOps, GatherColumnsAppliesPermutation) {
  SKIP_WITHOUT_GPU();
  for (const int64_t cols : kCols) {
    for (const int64_t rows : kRows) {
      for (const int64_t off : {0, 1}) {
        std::vector<int32_t> perm(static_cast<size_t>(cols + off));
        std::iota(perm.begin() + off, perm.end(), 0);
        std::mt19937 rng(static_cast<uint32_t>(cols * 3 + rows));
        std::shuffle(perm.begin() + off, perm.end(), rng);
        const auto x = to_half(uniform(static_cast<size_t>(rows * cols + off),
                                       static_cast<uint32_t>(cols + rows), -4.0f, 4.0f));
        DeviceArray<uint16_t> d_x(x), d_out(static_cast<size_t>(rows * cols + off));
        DeviceArray<int32_t> d_perm(perm);
        d_out.poison();
        ASSERT_TRUE(gather_columns(d_x.half() + off, d_perm.get() + off, rows, cols,
                                   d_out.half() + off, nullptr)
                        .ok());
        std::vector<uint16_t> want(static_cast<size_t>(rows * cols));
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t i = 0; i < cols; ++i) want[r * cols + i] = x[off + r * cols + perm[off + i]];
        }
        EXPECT_TRUE(bits_equal(d_out.host(), off, want))
            << "cols=" << cols << " rows=" << rows << " offset=" << off;
      }
    }
  }
}

// ---- argmax_rows --------------------------------------------------------------------------------

// The greedy sampler's rule (engine/sampler.cpp): lowest index among the largest values, NaN never
// wins, the first non-NaN value is taken even if it is -inf, an all-NaN row gives 0.
int32_t argmax_ref(const float* v, int64_t n) {
  int32_t best = 0;
  float best_value = -kInf;
  bool found = false;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(v[i])) continue;
    if (!found || v[i] > best_value) {
      best = static_cast<int32_t>(i);
      best_value = v[i];
      found = true;
    }
  }
  return best;
}

// Row r gets scenario r % 9; the planted cases are what a wrong reduction order gets wrong.
void fill_argmax_row(float* v, int64_t n, int64_t r, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-10.0f, 10.0f);
  for (int64_t i = 0; i < n; ++i) v[i] = d(rng);
  auto at = [&](int64_t i) -> float& { return v[std::min(i, n - 1)]; };
  switch (r % 9) {
    case 0:
      break;  // random
    case 1:
      v[0] = 50.0f;
      break;  // maximum at index 0
    case 2:
      v[n - 1] = 50.0f;
      break;   // maximum at the last index
    case 3: {  // ties: same lane, next lane, next sweep
      const int64_t p = static_cast<int64_t>(rng() % static_cast<uint32_t>(n));
      for (const int64_t q : {p + 4096, p + 4, p + 1, p}) at(q) = 50.0f;
      break;
    }
    case 4:  // tie between the last index and one far before it
      v[n - 1] = 50.0f;
      at(n / 2) = 50.0f;
      break;
    case 5:  // NaNs everywhere they could win, including index 0; the maximum is finite
      for (int64_t i = 0; i < n; i += 3) v[i] = kNaN;
      v[n - 1] = kNaN;
      if (n > 2) v[1] = 60.0f;
      break;
    case 6:  // NaN first, every other value -inf: the first non-NaN index wins
      for (int64_t i = 0; i < n; ++i) v[i] = -kInf;
      v[0] = kNaN;
      break;
    case 7:  // all NaN: 0
      for (int64_t i = 0; i < n; ++i) v[i] = kNaN;
      break;
    case 8:  // -0 and +0 compare equal: the lower index wins whichever sign it has
      for (int64_t i = 0; i < n; ++i) v[i] = -1.0f;
      v[n - 1] = 0.0f;
      at(n / 3) = -0.0f;
      break;
  }
}

TEST(CudaOps, ArgmaxRowsMatchesGreedySampler) {
  SKIP_WITHOUT_GPU();
  const int64_t kVocabs[] = {8, 64, 576, 1536, 4096, 4104, 4100, 4099, 49152, 128256};
  for (const int64_t vocab : kVocabs) {
    for (const int64_t rows : kRows) {
      for (const int64_t off : {0, 1}) {
        std::vector<float> logits(static_cast<size_t>(rows * vocab + off), 0.0f);
        std::mt19937 rng(static_cast<uint32_t>(vocab + rows * 13 + off));
        std::vector<int32_t> want(static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r) {
          // rows = 1 and 3 would only ever see the first scenarios: rotate them by vocab.
          const int64_t scenario = r + (rows < 9 ? vocab : 0);
          fill_argmax_row(logits.data() + off + r * vocab, vocab, scenario, rng);
          want[r] = argmax_ref(logits.data() + off + r * vocab, vocab);
        }
        DeviceArray<float> d_logits(logits);
        DeviceArray<int32_t> d_out(static_cast<size_t>(rows));
        d_out.poison();
        ASSERT_TRUE(argmax_rows(d_logits.get() + off, rows, vocab, d_out.get(), nullptr).ok());
        const auto got = d_out.host();
        for (int64_t r = 0; r < rows; ++r) {
          EXPECT_EQ(got[r], want[r])
              << "vocab=" << vocab << " rows=" << rows << " offset=" << off << " row " << r
              << " scenario " << (r + (rows < 9 ? vocab : 0)) % 9;
        }
      }
    }
  }
}

TEST(CudaOps, ArgmaxRowsScenariosEachHit) {
  SKIP_WITHOUT_GPU();
  // Every scenario on the two production vocabularies, one row each, with its exact answer.
  for (const int64_t vocab : {int64_t{49152}, int64_t{128256}}) {
    constexpr int64_t rows = 9;
    std::vector<float> logits(static_cast<size_t>(rows * vocab));
    std::mt19937 rng(static_cast<uint32_t>(vocab));
    std::vector<int32_t> want(rows);
    for (int64_t r = 0; r < rows; ++r) {
      fill_argmax_row(logits.data() + r * vocab, vocab, r, rng);
      want[r] = argmax_ref(logits.data() + r * vocab, vocab);
    }
    EXPECT_EQ(want[1], 0);
    EXPECT_EQ(want[2], vocab - 1);
    EXPECT_EQ(want[6], 1);
    EXPECT_EQ(want[7], 0);
    EXPECT_EQ(want[8], vocab / 3);
    DeviceArray<float> d_logits(logits);
    DeviceArray<int32_t> d_out(rows);
    d_out.poison();
    ASSERT_TRUE(argmax_rows(d_logits.get(), rows, vocab, d_out.get(), nullptr).ok());
    EXPECT_EQ(d_out.host(), want) << "vocab=" << vocab;
  }
}

// ---- fp16 <-> fp32 ------------------------------------------------------------------------------

TEST(CudaOps, HalfToFloatIsExactForEveryEncoding) {
  SKIP_WITHOUT_GPU();
  for (const int64_t off : {0, 1}) {
    std::vector<uint16_t> all(65536 + off);
    for (size_t i = 0; i < 65536; ++i) all[i + off] = static_cast<uint16_t>(i);
    for (const int64_t n : {int64_t{1}, int64_t{7}, int64_t{9}, int64_t{65536}}) {
      DeviceArray<uint16_t> d_x(all);
      DeviceArray<float> d_out(static_cast<size_t>(n + off));
      d_out.poison();
      ASSERT_TRUE(half_to_float(d_x.half() + off, n, d_out.get() + off, nullptr).ok());
      const auto got = d_out.host();
      for (int64_t i = 0; i < n; ++i) {
        const float want = fp16_to_fp32(all[off + i]);
        if (std::isnan(want)) {
          ASSERT_TRUE(std::isnan(got[off + i])) << "bits " << i;
        } else {
          ASSERT_EQ(std::memcmp(&got[off + i], &want, 4), 0)
              << "bits " << i << " n=" << n << " offset=" << off;
        }
      }
    }
  }
}

TEST(CudaOps, FloatToHalfRoundsLikeCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(99);
  std::vector<float> x;
  // Wide exponent range (subnormal halves through overflow), plus the edge values.
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  for (int i = 0; i < (1 << 20) + 3; ++i) {
    const int e = static_cast<int>(rng() % 48) - 30;  // 2^-30 .. 2^17
    x.push_back(std::ldexp(mant(rng), e) * ((rng() & 1) ? -1.0f : 1.0f));
  }
  for (const float v :
       {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, -65520.0f, kInf, -kInf, 5.9604645e-8f,
        2.9802322e-8f, 2.9802326e-8f, 6.1035156e-5f, 1.00048828125f, 1.00146484375f, kNaN}) {
    x.push_back(v);
  }
  for (const int64_t off : {0, 1}) {
    std::vector<float> src(static_cast<size_t>(off), 1.0f);
    src.insert(src.end(), x.begin(), x.end());
    for (const int64_t n : {int64_t{1}, int64_t{7}, int64_t{9}, static_cast<int64_t>(x.size())}) {
      DeviceArray<float> d_x(src);
      DeviceArray<uint16_t> d_out(static_cast<size_t>(n + off));
      d_out.poison();
      ASSERT_TRUE(float_to_half(d_x.get() + off, n, d_out.half() + off, nullptr).ok());
      const auto got = d_out.host();
      for (int64_t i = 0; i < n; ++i) {
        const float v = src[off + i];
        if (std::isnan(v)) {
          ASSERT_TRUE((got[off + i] & 0x7C00u) == 0x7C00u && (got[off + i] & 0x3FFu) != 0)
              << "NaN stays NaN";
        } else {
          ASSERT_EQ(got[off + i], fp32_to_fp16(v))
              << "value " << v << " n=" << n << " offset=" << off;
        }
      }
    }
  }
}

}  // namespace
}  // namespace qgate::cuda
