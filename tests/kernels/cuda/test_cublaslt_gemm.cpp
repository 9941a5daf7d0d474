// CublasLtGemm (kernels/cuda/cublaslt_gemm.h) against a double-precision host product of the same
// fp16/bf16 inputs, sm_80+ (CI compiles it for 80;89;90; it runs only where a GPU is present).
//
// Sweep: m in {1, 3, 17, 118} x (n, k) in {(3,32), (17,100), (576,576), (1536,576), (49152,576)}
// x {f16->f16, f16->f32, bf16->bf16, bf16->f32}. K = 100 gives 200-byte rows (not 16-byte
// aligned), n = 3 and 17 leave partial tiles everywhere, 49152 x 576 is SmolLM2's LM head.
//
// Error bound, normalized ‖y − ref‖ / ‖ref‖ with ref the exact product of the rounded inputs: the
// fp32 accumulation costs ~sqrt(k)·2⁻²⁴ (~1e-6 at k = 576), so the output rounding dominates:
// fp16 half an ulp is 2⁻¹¹ ≈ 4.9e-4 relative (rms ≈ 2.8e-4), bf16 2⁻⁸ ≈ 3.9e-3 (rms ≈ 2.3e-3).
// Bounds: 1e-3 for f16 out, 8e-3 for bf16 out, 1e-4 for f32 out (room for tensor-core fp32
// accumulation that truncates, k·2⁻²⁴ ≈ 3.4e-5 at k = 576, yet under the 2.8e-4 an output that went
// through fp16 would show). Every output starts NaN (0xFF bytes) and must come back finite: an
// unwritten element fails the test even if the norm passed.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "kernels/cpu/half.h"
#include "kernels/cuda/cublaslt_gemm.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"
#include "tests/kernels/cuda/cuda_testbed.h"

namespace qgate::cuda {
namespace {

using namespace qgate::testing;  // NOLINT: the shared test plumbing (cuda_testbed.h)

#define SKIP_WITHOUT_GPU() QGATE_SKIP_WITHOUT_GPU("cuBLASLt GEMM test skipped")

HalfKind half_kind(GemmType t) { return t == GemmType::kBF16 ? HalfKind::kBf16 : HalfKind::kFp16; }

// ref[i][j] = Σ_k x[i][k] · w[j][k] in double, split over threads by output column (the 49152-row
// LM head at m = 118 is 3.3 G multiply-adds).
std::vector<double> reference(const std::vector<float>& x, const std::vector<float>& w, int64_t m,
                              int64_t n, int64_t k) {
  std::vector<double> ref(static_cast<size_t>(m * n));
  const int64_t threads =
      std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, std::max<int64_t>(1, n / 64));
  std::vector<std::thread> pool;
  for (int64_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int64_t j = t; j < n; j += threads) {
        const float* wr = &w[j * k];
        for (int64_t i = 0; i < m; ++i) {
          const float* xr = &x[i * k];
          double acc = 0.0;
          for (int64_t kk = 0; kk < k; ++kk) acc += static_cast<double>(xr[kk]) * wr[kk];
          ref[i * n + j] = acc;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  return ref;
}

// y downloaded and widened to double; NaN stays NaN.
std::vector<double> download_widened(const DeviceArray<char>& y, int64_t count, GemmType t) {
  if (t == GemmType::kF32) {
    const std::vector<float> f = download<float>(y.get(), count);
    return {f.begin(), f.end()};
  }
  const std::vector<float> h = to_float(download<uint16_t>(y.get(), count), half_kind(t));
  return {h.begin(), h.end()};
}

double bound_for(GemmType y_type) {
  switch (y_type) {
    case GemmType::kF16:
      return 1e-3;
    case GemmType::kBF16:
      return 8e-3;
    case GemmType::kF32:
      return 1e-4;
  }
  return 0.0;
}

size_t type_bytes(GemmType t) { return t == GemmType::kF32 ? 4 : 2; }

// One GEMM: uploads x and w (optionally at an element offset, to exercise unaligned pointers),
// poisons y and a guard band on either side of it, runs, and compares with the double reference.
struct GemmRun {
  Status status;
  ErrorNorm cmp;                  // over y only
  int64_t guard_overwritten = 0;  // elements outside y that no longer hold the poison
};

constexpr int64_t kGuardElems = 64;

GemmRun run_gemm(CublasLtGemm& gemm, int64_t m, int64_t n, int64_t k, GemmType w_type,
                 GemmType y_type, uint32_t seed, int64_t offset_elems = 0) {
  const HostHalves x = random_halves(m * k, seed, half_kind(w_type));
  const HostHalves w = random_halves(n * k, seed + 1000003u, half_kind(w_type));
  const std::vector<double> ref = reference(x.rounded, w.rounded, m, n, k);

  auto upload_at = [&](const std::vector<uint16_t>& bits) {
    DeviceArray<uint16_t> buf(bits.size() + offset_elems);
    buf.write(bits, offset_elems);
    return buf;
  };
  const DeviceArray<uint16_t> dx = upload_at(x.bits);
  const DeviceArray<uint16_t> dw = upload_at(w.bits);
  const size_t yb = type_bytes(y_type);
  // [offset + guard | y: m*n | guard]: an overrun inside the allocation, which memcheck cannot
  // see, shows up as a guard element that lost its poison.
  const int64_t front = offset_elems + kGuardElems;
  const int64_t total = front + m * n + kGuardElems;
  DeviceArray<char> dy(total * yb);
  dy.poison();

  // The front guard is a whole number of 16-byte blocks (64 elements), so y keeps the alignment
  // that offset_elems gives it.
  char* y_ptr = dy.get() + front * yb;
  GemmRun r;
  r.status = gemm.matmul(dw.get() + offset_elems, w_type, dx.get() + offset_elems, m, n, k, y_ptr,
                         y_type, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  if (!r.status.ok()) return r;

  const std::vector<double> all = download_widened(dy, total, y_type);
  for (int64_t i = 0; i < total; ++i) {
    if (i < front || i >= front + m * n) {
      if (std::isfinite(all[i])) ++r.guard_overwritten;
    } else {
      r.cmp.add(all[i], ref[i - front]);
    }
  }
  return r;
}

// One instance for the whole suite, so the plan cache sees every shape interleaved.
class CublasLtGemmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!device_available()) return;
    auto g = CublasLtGemm::create();
    ASSERT_TRUE(g.ok()) << g.error().to_string();
    gemm_ = std::move(g).value().release();
  }
  static void TearDownTestSuite() {
    delete gemm_;
    gemm_ = nullptr;
  }
  static CublasLtGemm* gemm_;
};
CublasLtGemm* CublasLtGemmTest::gemm_ = nullptr;

using SweepParam = std::tuple<int64_t, std::pair<int64_t, int64_t>, std::pair<GemmType, GemmType>>;

class CublasLtGemmSweep : public CublasLtGemmTest,
                          public ::testing::WithParamInterface<SweepParam> {};

TEST_P(CublasLtGemmSweep, MatchesDoubleReference) {
  SKIP_WITHOUT_GPU();
  ASSERT_NE(gemm_, nullptr);
  const auto [m, nk, types] = GetParam();
  const auto [n, k] = nk;
  const auto [w_type, y_type] = types;
  const uint32_t seed = static_cast<uint32_t>(
      m * 7919 + n * 104729 + k * 31 + static_cast<int>(w_type) * 3 + static_cast<int>(y_type));
  const GemmRun r = run_gemm(*gemm_, m, n, k, w_type, y_type, seed);
  ASSERT_TRUE(r.status.ok()) << r.status.error().to_string();
  EXPECT_EQ(r.cmp.non_finite, 0) << "first non-finite (unwritten?) output at flat index "
                                 << r.cmp.first_non_finite << " of " << m * n;
  EXPECT_EQ(r.guard_overwritten, 0) << "writes outside y";
  EXPECT_LT(r.cmp.value(), bound_for(y_type))
      << "m=" << m << " n=" << n << " k=" << k << " " << gemm_type_name(w_type) << "->"
      << gemm_type_name(y_type);
}

// gtest names such as m17_n576_k576_f16_to_f32.
std::string sweep_name(const ::testing::TestParamInfo<SweepParam>& info) {
  const auto& [m, nk, types] = info.param;
  std::ostringstream name;
  name << "m" << m << "_n" << nk.first << "_k" << nk.second << "_" << gemm_type_name(types.first)
       << "_to_" << gemm_type_name(types.second);
  return name.str();
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CublasLtGemmSweep,
    ::testing::Combine(::testing::Values<int64_t>(1, 3, 17, 118),
                       ::testing::Values(std::pair<int64_t, int64_t>{3, 32},
                                         std::pair<int64_t, int64_t>{17, 100},
                                         std::pair<int64_t, int64_t>{576, 576},
                                         std::pair<int64_t, int64_t>{1536, 576},
                                         std::pair<int64_t, int64_t>{49152, 576}),
                       ::testing::Values(std::pair{GemmType::kF16, GemmType::kF16},
                                         std::pair{GemmType::kF16, GemmType::kF32},
                                         std::pair{GemmType::kBF16, GemmType::kBF16},
                                         std::pair{GemmType::kBF16, GemmType::kF32})),
    sweep_name);

// Pointers one element past a 256-byte boundary (2-byte aligned for 16-bit data, 4-byte for f32
// output): the heuristic must be told, or it may pick an algorithm with 16-byte vector loads.
// Unsupported (no algorithm for that alignment) is within the wrapper's contract and is reported,
// not failed; a wrong or partial result is a failure.
TEST_F(CublasLtGemmTest, ElementAlignedSubviews) {
  SKIP_WITHOUT_GPU();
  ASSERT_NE(gemm_, nullptr);
  for (auto [w_type, y_type] :
       {std::pair{GemmType::kF16, GemmType::kF16}, std::pair{GemmType::kF16, GemmType::kF32},
        std::pair{GemmType::kBF16, GemmType::kBF16}}) {
    for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{3, 17, 100},
                           std::tuple<int64_t, int64_t, int64_t>{17, 576, 576}}) {
      const GemmRun r = run_gemm(*gemm_, m, n, k, w_type, y_type, 4242u + static_cast<uint32_t>(n),
                                 /*offset_elems=*/1);
      if (!r.status.ok() && r.status.error().code() == ErrorCode::kUnsupported) {
        std::printf("note: %s\n", r.status.error().to_string().c_str());
        continue;
      }
      ASSERT_TRUE(r.status.ok()) << r.status.error().to_string();
      EXPECT_EQ(r.cmp.non_finite, 0) << "m=" << m << " n=" << n << " k=" << k;
      EXPECT_EQ(r.guard_overwritten, 0) << "writes outside y";
      EXPECT_LT(r.cmp.value(), bound_for(y_type))
          << "m=" << m << " n=" << n << " k=" << k << " " << gemm_type_name(w_type) << "->"
          << gemm_type_name(y_type);
    }
  }
}

// The same shape again with new data (the cached plan must not pin anything of the old call), and
// interleaved with other shapes.
TEST_F(CublasLtGemmTest, CachedPlansStayCorrect) {
  SKIP_WITHOUT_GPU();
  ASSERT_NE(gemm_, nullptr);
  for (uint32_t round = 0; round < 3; ++round) {
    for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 576, 576},
                           std::tuple<int64_t, int64_t, int64_t>{17, 1536, 576},
                           std::tuple<int64_t, int64_t, int64_t>{3, 17, 100}}) {
      const GemmRun r =
          run_gemm(*gemm_, m, n, k, GemmType::kF16, GemmType::kF16, 77u + round * 13u);
      ASSERT_TRUE(r.status.ok()) << r.status.error().to_string();
      EXPECT_EQ(r.cmp.non_finite, 0);
      EXPECT_EQ(r.guard_overwritten, 0) << "writes outside y";
      EXPECT_LT(r.cmp.value(), bound_for(GemmType::kF16)) << "round " << round;
    }
  }
}

TEST_F(CublasLtGemmTest, RejectsInvalidArguments) {
  SKIP_WITHOUT_GPU();
  ASSERT_NE(gemm_, nullptr);
  auto buf = DeviceBuffer::allocate(1 << 16, "args");
  ASSERT_TRUE(buf.ok());
  char* p = buf->as<char>();
  auto code = [&](const void* w, GemmType wt, const void* x, int64_t m, int64_t n, int64_t k,
                  void* y, GemmType yt) {
    const Status s = gemm_->matmul(w, wt, x, m, n, k, y, yt, nullptr);
    return s.ok() ? std::string("ok") : std::string(error_code_name(s.error().code()));
  };
  const std::string invalid = error_code_name(ErrorCode::kInvalidArgument);
  EXPECT_EQ(code(p, GemmType::kF16, p, 0, 8, 8, p, GemmType::kF16), invalid);
  EXPECT_EQ(code(p, GemmType::kF16, p, 1, -1, 8, p, GemmType::kF16), invalid);
  EXPECT_EQ(code(p, GemmType::kF16, p, 1, 8, 0, p, GemmType::kF16), invalid);
  EXPECT_EQ(code(p, GemmType::kF32, p, 1, 8, 8, p, GemmType::kF32), invalid);
  EXPECT_EQ(code(p, GemmType::kF16, p, 1, 8, 8, p, GemmType::kBF16), invalid);
  EXPECT_EQ(code(p, GemmType::kBF16, p, 1, 8, 8, p, GemmType::kF16), invalid);
  EXPECT_EQ(code(nullptr, GemmType::kF16, p, 1, 8, 8, p, GemmType::kF16), invalid);
  EXPECT_EQ(code(p + 1, GemmType::kF16, p, 1, 8, 8, p, GemmType::kF16), invalid);
  EXPECT_EQ(code(p, GemmType::kF16, p + 1, 1, 8, 8, p, GemmType::kF16), invalid);
  EXPECT_EQ(code(p, GemmType::kF16, p, 1, 8, 8, p + 2, GemmType::kF32), invalid);
  CUDA_CHECK(cudaDeviceSynchronize());
}

TEST_F(CublasLtGemmTest, ReportsWorkspace) {
  SKIP_WITHOUT_GPU();
  ASSERT_NE(gemm_, nullptr);
  EXPECT_EQ(gemm_->workspace_bytes(), size_t{32} << 20);
  auto small = CublasLtGemm::create(0);
  ASSERT_TRUE(small.ok()) << small.error().to_string();
  EXPECT_EQ((*small)->workspace_bytes(), 0u);
  // No workspace still finds an algorithm for an ordinary shape.
  const GemmRun r = run_gemm(**small, 17, 576, 576, GemmType::kF16, GemmType::kF16, 99u);
  ASSERT_TRUE(r.status.ok()) << r.status.error().to_string();
  EXPECT_LT(r.cmp.value(), bound_for(GemmType::kF16));
}

}  // namespace
}  // namespace qgate::cuda
