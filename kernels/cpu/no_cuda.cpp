// Device discovery when qgate is built without CUDA.
#include "kernels/cuda/device.h"

namespace qgate {

bool cuda_built() { return false; }
std::vector<CudaDeviceInfo> cuda_devices() { return {}; }
std::optional<CudaMemoryInfo> cuda_memory_info(int) { return std::nullopt; }

}  // namespace qgate
