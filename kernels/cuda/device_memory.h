// Device memory owned the RAII way, and the conversion of CUDA runtime errors into qgate Status.
//
// Library code reports a failed CUDA call as a Status (out of memory at load time is an operator's
// problem, not a crash); CUDA_CHECK in cuda_check.h stays for tests, benchmarks and invariants.
//
// Threading: a DeviceBuffer is owned by one thread at a time like any other object; freeing it
// synchronizes nothing, so the owner must make sure no stream still uses the memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "kernels/status.h"

namespace qgate::cuda {

// Ok for cudaSuccess; otherwise kResourceExhausted for out-of-memory, kInternal for the rest,
// with the message "<what>: <cudaErrorName>: <description>". Clears the sticky last error of
// non-sticky failures so a later launch check does not report this one again.
Status cuda_status(cudaError_t err, const char* what);

// The last launch's error (cudaGetLastError) as a Status naming the kernel.
Status launch_status(const char* kernel);

// An untyped device allocation. Moves, never copies.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)),
                                            bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // cudaMalloc on the current device; `what` names the allocation in the error.
  static Result<DeviceBuffer> allocate(size_t bytes, const char* what);
  // allocate() + a synchronous copy of `bytes` host bytes.
  static Result<DeviceBuffer> upload(const void* host, size_t bytes, const char* what);

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }
  void reset();

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// True when a CUDA device is usable by this process (driver present, at least one GPU). Tests use
// it to skip with a message instead of failing on CPU-only machines.
bool device_available();

}  // namespace qgate::cuda
