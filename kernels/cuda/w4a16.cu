// W4A16 matmul: the public launcher. It validates the call, picks the kernel and hands a checked
// Problem to the GEMV (w4a16_gemv.cu) or tensor-core (w4a16_mma.cu) launcher.
//
// Choosing the kernel (kAuto). Both kernels read every weight byte once per m-tile and spend
// the same 52 instructions (SASS) per lane to dequantize a 32x32 tile's 32-weight lane share;
// they differ in the multiply. The GEMV multiplies on CUDA cores: ~33 more instructions per
// share and activation row, so about 2.8 instructions per weight at m = 1, 3.8 at m = 2, 5.9 at
// m = 4. The tensor-core kernel spends ~3.3 per weight for any m <= 16 (one m16n8k16 covers
// 16 weight rows x 8 activation rows x 16 columns; the rest is its slice bookkeeping). Streaming
// 4-bit weights at 3 TB/s on 132 SMs at ~1.75 GHz leaves ~5-6 issued instructions per weight.
// So kAuto runs the GEMV at m = 1, where it is the leanest, and the tensor cores above; the
// crossover is a constant to tune on the GPU (see docs/BENCHMARKS.md).
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/w4a16.h"
#include "kernels/cuda/w4a16_internal.cuh"

namespace qgate::cuda {
namespace {

constexpr int64_t kGemvMaxM = 1;

Error invalid(const std::string& what) {
  return make_error(ErrorCode::kInvalidArgument, "w4a16_matmul: " + what);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

Result<int> sm_count() {
  int device = 0;
  QGATE_TRY_STATUS(cuda_status(cudaGetDevice(&device), "w4a16_matmul: cudaGetDevice"));
  int sms = 0;
  QGATE_TRY_STATUS(cuda_status(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
                               "w4a16_matmul: multiprocessor count"));
  return sms;
}

}  // namespace

namespace w4a16_detail {

int blocks_per_sm(const void* func, int threads, size_t dynamic_smem) {
  struct Entry {
    const void* func;
    int device;
    int threads;
    size_t smem;
    int blocks;
  };
  static std::mutex mu;
  static std::vector<Entry> cache;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return 1;
  }
  std::lock_guard<std::mutex> lock(mu);
  for (const Entry& e : cache) {
    if (e.func == func && e.device == device && e.threads == threads && e.smem == dynamic_smem) {
      return e.blocks;
    }
  }
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, func, threads, dynamic_smem) !=
      cudaSuccess) {
    cudaGetLastError();
    blocks = 1;  // a failed query only makes the tiling heuristics pessimistic
  }
  if (blocks < 1) blocks = 1;
  cache.push_back({func, device, threads, dynamic_smem, blocks});
  return blocks;
}

}  // namespace w4a16_detail

const char* w4a16_kernel_name(W4A16Kernel k) {
  switch (k) {
    case W4A16Kernel::kAuto:
      return "auto";
    case W4A16Kernel::kGemv:
      return "gemv";
    case W4A16Kernel::kTensorCore:
      return "tensor_core";
  }
  return "unknown";
}

W4A16Kernel w4a16_auto_kernel(int64_t m) {
  return m <= kGemvMaxM ? W4A16Kernel::kGemv : W4A16Kernel::kTensorCore;
}

Status w4a16_matmul(const W4A16DeviceWeights& w, const __half* x, int64_t m, __half* y,
                    cudaStream_t stream, W4A16Kernel kernel) {
  // The same shape rules as pack_w4a16 (a W4A16DeviceWeights may be built by hand), plus the
  // bounds that let the kernels count in 32-bit ints and fit their grids.
  if (w.rows < 1 || w.rows > (int64_t{1} << 30)) {
    return invalid("rows " + std::to_string(w.rows) + " outside [1, 2^30]");
  }
  if (w.cols < 32 || w.cols % 32 != 0 || w.cols > (int64_t{1} << 30)) {
    return invalid("cols " + std::to_string(w.cols) + " is not a multiple of 32 in [32, 2^30]");
  }
  if (w.group_size < 32 || w.group_size % 32 != 0 || w.group_size > (int64_t{1} << 30)) {
    return invalid("group_size " + std::to_string(w.group_size) +
                   " is not a multiple of 32 in [32, 2^30]");
  }
  if (m < 0 || m > (int64_t{1} << 22)) {
    return invalid("m " + std::to_string(m) + " outside [0, 2^22]");
  }
  if (w.rows * m > (int64_t{1} << 40) || w.cols * m > (int64_t{1} << 40)) {
    return invalid("m x rows or m x cols is too large");
  }
  if (w.qweight == nullptr || w.scale_min == nullptr || x == nullptr || y == nullptr) {
    return invalid("null pointer (qweight, scale_min, x or y)");
  }
  if (!aligned16(w.qweight) || !aligned16(w.scale_min) || !aligned16(x) || !aligned16(y)) {
    return invalid("qweight, scale_min, x and y must be 16-byte aligned");
  }
  if (kernel != W4A16Kernel::kAuto && kernel != W4A16Kernel::kGemv &&
      kernel != W4A16Kernel::kTensorCore) {
    return invalid("unknown kernel");
  }
  if (m == 0) return Status::Ok();

  w4a16_detail::Problem p;
  p.qweight = reinterpret_cast<const uint4*>(w.qweight);
  p.scale_min = reinterpret_cast<const uint4*>(w.scale_min);
  p.x = x;
  p.y = y;
  p.m = static_cast<int>(m);
  p.n = static_cast<int>(w.rows);
  p.k = static_cast<int>(w.cols);
  p.row_blocks = static_cast<int>((w.rows + 31) / 32);
  p.chunks = static_cast<int>(w.cols / 32);
  // A group longer than the matrix is one partial group: clamping keeps chunks_per_group an int.
  const int64_t group = w.group_size < w.cols ? w.group_size : w.cols;
  p.groups = static_cast<int>((w.cols + w.group_size - 1) / w.group_size);
  p.chunks_per_group = static_cast<int>(group / 32);
  QGATE_ASSIGN_OR_RETURN(p.sm_count, sm_count());

  if (kernel == W4A16Kernel::kAuto) kernel = w4a16_auto_kernel(m);
  return kernel == W4A16Kernel::kGemv ? w4a16_detail::launch_gemv(p, stream)
                                      : w4a16_detail::launch_mma(p, stream);
}

}  // namespace qgate::cuda
