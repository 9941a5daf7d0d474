// CUDA device discovery. Declared for every build; without CUDA it reports no devices.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qgate {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  uint64_t total_memory_bytes = 0;
  int multiprocessors = 0;
};

struct CudaMemoryInfo {
  uint64_t free_bytes = 0;
  uint64_t total_bytes = 0;
};

// Free and total memory of device `index` (cudaMemGetInfo; creates the device's context, which is
// then already counted as used). nullopt without CUDA or when the query fails.
std::optional<CudaMemoryInfo> cuda_memory_info(int index);

// Devices the runtime can see; empty when CUDA is not built in or no driver/GPU is present.
std::vector<CudaDeviceInfo> cuda_devices();
bool cuda_built();

}  // namespace qgate
