// w4a16_matmul (kernels/cuda/w4a16.h) against w4a16_matmul_ref, sm_80+ (CI compiles it for
// 80;89;90; it runs only where a GPU is present), for the GEMV and tensor-core kernels forced and
// for kAuto.
//
// Sweep: m in {1, 2, 3, 16, 17, 64, 118, 128} -- every GEMV m-tile (1, 2, 4) and tensor-core
// m-tile (8, 16, 32, 64; 118 and 128 take two 64-row tiles, 118 a partial one) -- x (n, k) in
// {(3, 32), (17, 96), (576, 576), (1536, 576), (130, 4160)} x group size {32, 64, 128}: n = 3,
// 17, 130 leave partial 32-row tiles; k = 32 and 96 are one and three 32-column chunks (less than
// one K slice), 576 and 4160 end in a partial slice and, for groups of 64/128, a partial group.
// The K split of the tensor-core kernel (1..8 warps per slice) follows from the shape and the
// GPU; a (24576, 256) case pushes it to the narrow splits that wide matrices get.
//
// Error bound, normalized ‖y − ref‖ / ‖ref‖ with ref the double-precision product of the same
// fp16 x and the dequantized weights q * fp16(scale) + fp16(min): the kernels round each weight to
// fp16 (one HFMA2: rms relative error ~2^-11/sqrt(3) ≈ 2.8e-4), accumulate in fp32 (the GEMV
// after 4-product fp16 partial sums, another ~3e-4 rms) and round y to fp16 (~2.8e-4 rms). These
// are independent across the output, so expect ~5e-4; the bound is 2e-3. A wrong nibble, scale,
// row or column gives errors of order 1. Every output starts NaN (0xFF bytes), and 64 guard
// elements past the end must stay NaN: an element not written, or written out of bounds, fails.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/half.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/w4a16.h"
#include "kernels/w4a16_layout.h"
#include "tests/kernels/cuda/cuda_testbed.h"

namespace qgate::cuda {
namespace {

using namespace qgate::testing;  // NOLINT: the shared test plumbing (cuda_testbed.h)

#define SKIP_WITHOUT_GPU() QGATE_SKIP_WITHOUT_GPU("W4A16 kernel test skipped")

constexpr double kBound = 2e-3;
constexpr int64_t kGuard = 64;  // poisoned halves past the end of y

// Random weights in the GPTQ/AWQ asymmetric form, packed and uploaded.
struct DeviceW4 {
  W4A16Weights host;
  DeviceBuffer qweight, scale_min;
  W4A16DeviceWeights view() const {
    return {host.rows, host.cols, host.group_size, qweight.as<const uint32_t>(),
            scale_min.as<const __half2>()};
  }
};

DeviceW4 make_weights(int64_t n, int64_t k, int64_t group, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> qd(0, 15);
  std::uniform_real_distribution<float> sd(0.002f, 0.02f), zd(0.0f, 15.0f);
  const int64_t groups = (k + group - 1) / group;
  std::vector<uint8_t> q(static_cast<size_t>(n * k));
  for (auto& v : q) v = static_cast<uint8_t>(qd(rng));
  std::vector<float> scale(static_cast<size_t>(n * groups)), min(scale.size());
  for (size_t i = 0; i < scale.size(); ++i) {
    scale[i] = sd(rng);
    min[i] = -scale[i] * zd(rng);
  }
  DeviceW4 d;
  auto packed = pack_w4a16({n, k, group, q.data(), scale.data(), min.data()});
  EXPECT_TRUE(packed.ok()) << packed.error().to_string();
  d.host = std::move(packed).value();
  d.qweight =
      DeviceBuffer::upload(d.host.qweight.data(), d.host.qweight.size() * 4, "qweight").value();
  d.scale_min =
      DeviceBuffer::upload(d.host.scale_min.data(), d.host.scale_min.size() * 2, "scale_min")
          .value();
  return d;
}

// Runs one kernel on poisoned y; returns the normalized error, or +inf (with a failure already
// recorded) when an element is unwritten, non-finite or the guard was overwritten.
double run_and_compare(const DeviceW4& w, const DeviceArray<uint16_t>& x, int64_t m,
                       const std::vector<float>& ref, W4A16Kernel kernel, cudaStream_t stream,
                       const std::string& what) {
  const int64_t n = w.host.rows;
  const size_t elems = static_cast<size_t>(m * n + kGuard);
  DeviceArray<uint16_t> y(elems);
  y.poison(stream);
  const Status st = w4a16_matmul(w.view(), x.half(), m, y.half(), stream, kernel);
  EXPECT_TRUE(st.ok()) << what << ": " << st.error().to_string();
  if (!st.ok()) return INFINITY;
  CUDA_CHECK(cudaStreamSynchronize(stream));
  CUDA_CHECK(cudaGetLastError());
  const std::vector<uint16_t> out = y.host();
  for (size_t i = static_cast<size_t>(m * n); i < elems; ++i) {
    if (out[i] != 0xFFFFu) {
      ADD_FAILURE() << what << ": wrote past the end of y (guard element " << i - m * n << ")";
      return INFINITY;
    }
  }
  ErrorNorm e;
  for (size_t i = 0; i < static_cast<size_t>(m * n); ++i) e.add(fp16_to_fp32(out[i]), ref[i]);
  if (e.non_finite > 0) {
    const int64_t i = e.first_non_finite;
    ADD_FAILURE() << what << ": y[" << i / n << "][" << i % n << "] not written (or not finite)";
  }
  return e.value();
}

void sweep(int64_t n, int64_t k, const std::vector<int64_t>& groups, const std::vector<int64_t>& ms,
           uint32_t seed) {
  // A blocking stream (not the legacy default one, to check the launcher honours its stream
  // argument) that still orders after the synchronous uploads.
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreate(&stream));
  for (const int64_t group : groups) {
    const DeviceW4 w = make_weights(n, k, group, seed++);
    for (const int64_t m : ms) {
      const HostHalves a = random_halves(static_cast<size_t>(m * k), seed++);
      const DeviceArray<uint16_t> x(a.bits);
      std::vector<float> ref(static_cast<size_t>(m * n));
      w4a16_matmul_ref(w.host, a.rounded.data(), m, ref.data());
      for (const W4A16Kernel kernel :
           {W4A16Kernel::kGemv, W4A16Kernel::kTensorCore, W4A16Kernel::kAuto}) {
        const std::string what = std::string(w4a16_kernel_name(kernel)) +
                                 " m=" + std::to_string(m) + " n=" + std::to_string(n) +
                                 " k=" + std::to_string(k) + " g=" + std::to_string(group);
        const double e = run_and_compare(w, x, m, ref, kernel, stream, what);
        EXPECT_LE(e, kBound) << what;
      }
    }
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
}

const std::vector<int64_t> kMs = {1, 2, 3, 16, 17, 64, 118, 128};
const std::vector<int64_t> kGroupSizes = {32, 64, 128};

TEST(W4A16Matmul, Tiny3x32) {
  SKIP_WITHOUT_GPU();
  sweep(3, 32, kGroupSizes, kMs, 1000);
}

TEST(W4A16Matmul, Small17x96) {
  SKIP_WITHOUT_GPU();
  sweep(17, 96, kGroupSizes, kMs, 2000);
}

TEST(W4A16Matmul, SmolLmAttention576x576) {
  SKIP_WITHOUT_GPU();
  sweep(576, 576, kGroupSizes, kMs, 3000);
}

TEST(W4A16Matmul, SmolLmMlp1536x576) {
  SKIP_WITHOUT_GPU();
  sweep(1536, 576, kGroupSizes, kMs, 4000);
}

TEST(W4A16Matmul, PartialTilesAndGroups130x4160) {
  SKIP_WITHOUT_GPU();
  sweep(130, 4160, kGroupSizes, kMs, 5000);
}

TEST(W4A16Matmul, WideMatrixNarrowKSplit24576x256) {
  SKIP_WITHOUT_GPU();
  sweep(24576, 256, {128}, {1, 8, 17, 64}, 6000);
}

TEST(W4A16Matmul, ZeroRowsIsANoOp) {
  SKIP_WITHOUT_GPU();
  const DeviceW4 w = make_weights(17, 96, 32, 7000);
  const DeviceArray<uint16_t> x(8);
  DeviceArray<uint16_t> y(8);
  y.poison();
  EXPECT_TRUE(w4a16_matmul(w.view(), x.half(), 0, y.half(), nullptr).ok());
  for (const uint16_t v : y.host()) EXPECT_EQ(v, 0xFFFFu);
}

void expect_invalid(const Status& st, const std::string& needle) {
  ASSERT_FALSE(st.ok()) << "accepted; wanted an error naming '" << needle << "'";
  EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(st.error().message().find(needle), std::string::npos) << st.error().message();
}

TEST(W4A16Matmul, RejectsBadShapesAndPointers) {
  SKIP_WITHOUT_GPU();
  const DeviceW4 w = make_weights(17, 96, 32, 8000);
  DeviceBuffer x = DeviceBuffer::allocate(4 * 96 * 2 + 64, "x").value();
  DeviceBuffer y = DeviceBuffer::allocate(4 * 17 * 2 + 64, "y").value();
  const auto* xp = x.as<const __half>();
  auto* yp = y.as<__half>();
  for (const W4A16Kernel kernel :
       {W4A16Kernel::kAuto, W4A16Kernel::kGemv, W4A16Kernel::kTensorCore}) {
    W4A16DeviceWeights bad = w.view();
    bad.cols = 80;
    expect_invalid(w4a16_matmul(bad, xp, 2, yp, nullptr, kernel), "cols 80");
    bad = w.view();
    bad.group_size = 48;
    expect_invalid(w4a16_matmul(bad, xp, 2, yp, nullptr, kernel), "group_size 48");
    bad = w.view();
    bad.rows = 0;
    expect_invalid(w4a16_matmul(bad, xp, 2, yp, nullptr, kernel), "rows 0");
    bad = w.view();
    bad.qweight = nullptr;
    expect_invalid(w4a16_matmul(bad, xp, 2, yp, nullptr, kernel), "null");
    expect_invalid(w4a16_matmul(w.view(), xp, -1, yp, nullptr, kernel), "m -1");
    expect_invalid(w4a16_matmul(w.view(), nullptr, 2, yp, nullptr, kernel), "null");
    expect_invalid(w4a16_matmul(w.view(), xp + 1, 2, yp, nullptr, kernel), "aligned");
    expect_invalid(w4a16_matmul(w.view(), xp, 2, yp + 4, nullptr, kernel), "aligned");
  }
  // Nothing was launched, so nothing can have failed asynchronously.
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaGetLastError());
}

TEST(W4A16Matmul, AutoPicksGemvForDecodeOnly) {
  // Host-only functions, but they live in the CUDA library, hence here.
  EXPECT_EQ(w4a16_auto_kernel(1), W4A16Kernel::kGemv);
  EXPECT_EQ(w4a16_auto_kernel(2), W4A16Kernel::kTensorCore);
  EXPECT_EQ(w4a16_auto_kernel(512), W4A16Kernel::kTensorCore);
  EXPECT_STREQ(w4a16_kernel_name(W4A16Kernel::kGemv), "gemv");
  EXPECT_STREQ(w4a16_kernel_name(W4A16Kernel::kTensorCore), "tensor_core");
  EXPECT_STREQ(w4a16_kernel_name(W4A16Kernel::kAuto), "auto");
}

}  // namespace
}  // namespace qgate::cuda
