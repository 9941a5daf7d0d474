#include "kernels/cuda/device_memory.h"

#include <cuda_runtime.h>

#include <utility>

namespace qgate::cuda {

Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  // Reading the error resets it unless the context is corrupted (sticky errors stay).
  cudaGetLastError();
  std::string msg = std::string(what) + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err);
  return make_error(err == cudaErrorMemoryAllocation ? ErrorCode::kResourceExhausted
                                                     : ErrorCode::kInternal,
                    std::move(msg));
}

Status launch_status(const char* kernel) { return cuda_status(cudaGetLastError(), kernel); }

Result<DeviceBuffer> DeviceBuffer::allocate(size_t bytes, const char* what) {
  DeviceBuffer b;
  if (bytes == 0) return std::move(b);
  QGATE_TRY_STATUS(cuda_status(cudaMalloc(&b.ptr_, bytes), what));
  b.bytes_ = bytes;
  return std::move(b);  // C++17 (nvcc) does not move into the converting constructor implicitly
}

Result<DeviceBuffer> DeviceBuffer::upload(const void* host, size_t bytes, const char* what) {
  QGATE_ASSIGN_OR_RETURN(DeviceBuffer b, allocate(bytes, what));
  if (bytes > 0) {
    QGATE_TRY_STATUS(cuda_status(cudaMemcpy(b.ptr_, host, bytes, cudaMemcpyHostToDevice), what));
  }
  return std::move(b);  // C++17 (nvcc) does not move into the converting constructor implicitly
}

void DeviceBuffer::reset() {
  if (ptr_ != nullptr) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

bool device_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

}  // namespace qgate::cuda
