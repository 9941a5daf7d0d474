#include "kernels/cuda/device.h"

#include <cuda_runtime.h>

namespace qgate {

bool cuda_built() { return true; }

std::vector<CudaDeviceInfo> cuda_devices() {
  std::vector<CudaDeviceInfo> out;
  int count = 0;
  // No driver or no GPU is a normal condition on CPU machines: report none, do not abort.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    out.push_back({i, prop.name, prop.major, prop.minor, prop.totalGlobalMem,
                   prop.multiProcessorCount});
  }
  return out;
}

std::optional<CudaMemoryInfo> cuda_memory_info(int index) {
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess || cudaSetDevice(index) != cudaSuccess) {
    cudaGetLastError();
    return std::nullopt;
  }
  size_t free_bytes = 0, total_bytes = 0;
  const cudaError_t err = cudaMemGetInfo(&free_bytes, &total_bytes);
  cudaSetDevice(previous);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::nullopt;
  }
  return CudaMemoryInfo{free_bytes, total_bytes};
}

}  // namespace qgate
