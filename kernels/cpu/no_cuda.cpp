// Device discovery when qgate is built without CUDA.
#include "kernels/cuda/device.h"

namespace qgate {

bool cuda_built() { return false; }
std::vector<CudaDeviceInfo> cuda_devices() { return {}; }

}  // namespace qgate
