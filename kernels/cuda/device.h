// CUDA device discovery. Declared for every build; without CUDA it reports no devices.
#pragma once

#include <cstdint>
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

// Devices the runtime can see; empty when CUDA is not built in or no driver/GPU is present.
std::vector<CudaDeviceInfo> cuda_devices();
bool cuda_built();

}  // namespace qgate
