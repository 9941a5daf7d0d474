// The plumbing every CUDA kernel test shares: skip without a GPU, random fp16/bf16 inputs with the
// float values the GPU will see, typed device arrays over DeviceBuffer, NaN-poisoned outputs and
// the normalized error ‖out − ref‖ / ‖ref‖.
//
// Contract: test infrastructure, not code under test, so a failed allocation or copy aborts
// (QGATE_CHECK / CUDA_CHECK) instead of returning a Status. Copies are synchronous (legacy default
// stream); poison() is queued on the stream it is given, so it orders before a launch on that
// stream. Objects belong to one thread, like DeviceBuffer. Random inputs are a pure function of
// (count, seed, range): draw i is the i-th value of std::mt19937(seed) through
// uniform_real_distribution<float>(lo, hi), so a test's seed pins its data. Poisoning writes 0xFF
// bytes, a NaN in f16, bf16 and f32, so an element a kernel never wrote reads back non-finite, and
// ErrorNorm turns non-finite into a failure.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "kernels/cpu/half.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/status.h"

// Must be a macro: GTEST_SKIP returns from the test body.
#define QGATE_SKIP_WITHOUT_GPU(what)                                                    \
  do {                                                                                  \
    if (!::qgate::cuda::device_available()) GTEST_SKIP() << "no CUDA device: " << what; \
  } while (0)

namespace qgate::testing {

// ---- host data --------------------------------------------------------------------------------

enum class HalfKind { kFp16, kBf16 };

inline uint16_t to_bits(float v, HalfKind kind) {
  return kind == HalfKind::kBf16 ? fp32_to_bf16(v) : fp32_to_fp16(v);
}
inline float from_bits(uint16_t bits, HalfKind kind) {
  return kind == HalfKind::kBf16 ? bf16_to_fp32(bits) : fp16_to_fp32(bits);
}

inline std::vector<float> uniform(size_t count, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(count);
  for (auto& x : v) x = d(rng);
  return v;
}

inline std::vector<uint16_t> to_half(const std::vector<float>& v, HalfKind kind = HalfKind::kFp16) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = to_bits(v[i], kind);
  return h;
}

inline std::vector<float> to_float(const std::vector<uint16_t>& h,
                                   HalfKind kind = HalfKind::kFp16) {
  std::vector<float> v(h.size());
  for (size_t i = 0; i < h.size(); ++i) v[i] = from_bits(h[i], kind);
  return v;
}

// Uniform(lo, hi) values stored as 16-bit floats; `rounded` is exactly what the GPU reads, so
// references computed from it see no input rounding error.
struct HostHalves {
  std::vector<uint16_t> bits;
  std::vector<float> rounded;
};

inline HostHalves random_halves(size_t count, uint32_t seed, HalfKind kind = HalfKind::kFp16,
                                float lo = -1.0f, float hi = 1.0f) {
  HostHalves h;
  h.bits = to_half(uniform(count, seed, lo, hi), kind);
  h.rounded = to_float(h.bits, kind);
  return h;
}

// ‖got − want‖ / ‖want‖ accumulated element by element. A non-finite `got` (unwritten poison, or a
// real NaN/inf) is counted instead of summed and makes value() +inf, so it can never pass a bound;
// non_finite / first_non_finite say where it was. An all-zero `want` gives the absolute ‖got‖.
struct ErrorNorm {
  double diff2 = 0.0, ref2 = 0.0;
  int64_t count = 0, non_finite = 0, first_non_finite = -1;

  void add(double got, double want) {
    if (!std::isfinite(got)) {
      if (first_non_finite < 0) first_non_finite = count;
      ++non_finite;
    } else {
      diff2 += (got - want) * (got - want);
      ref2 += want * want;
    }
    ++count;
  }
  // Appends another run (e.g. one row) as if its elements had been added here.
  ErrorNorm& operator+=(const ErrorNorm& o) {
    if (first_non_finite < 0 && o.first_non_finite >= 0) {
      first_non_finite = count + o.first_non_finite;
    }
    diff2 += o.diff2;
    ref2 += o.ref2;
    count += o.count;
    non_finite += o.non_finite;
    return *this;
  }
  double value() const {
    if (non_finite > 0) return std::numeric_limits<double>::infinity();
    return ref2 > 0.0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  }
};

// ---- device data ------------------------------------------------------------------------------

// `count` elements copied back from device memory (synchronous).
template <typename T>
std::vector<T> download(const void* device, size_t count) {
  std::vector<T> v(count);
  if (count > 0) {
    CUDA_CHECK(cudaMemcpy(v.data(), device, count * sizeof(T), cudaMemcpyDeviceToHost));
  }
  return v;
}

// A typed device array owning a DeviceBuffer. Holds at least one element's bytes, so an empty
// array still has a valid pointer.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t count) : count_(count) {
    auto r = cuda::DeviceBuffer::allocate(std::max<size_t>(count, 1) * sizeof(T), "test buffer");
    QGATE_CHECK(r.ok(), "test: device allocation failed");
    buf_ = std::move(r).value();
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { write(host); }

  // Copies `host` to elements [at, at + host.size()).
  void write(const std::vector<T>& host, size_t at = 0) {
    QGATE_CHECK(at + host.size() <= count_, "test: write past the end of a device array");
    if (host.empty()) return;
    CUDA_CHECK(
        cudaMemcpy(get() + at, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  // 0xFF in every byte: NaN for f16/bf16/f32 (and -1 for integers).
  void poison(cudaStream_t stream = nullptr) {
    CUDA_CHECK(cudaMemsetAsync(buf_.get(), 0xFF, buf_.bytes(), stream));
  }
  // Waits for the device (so a failed kernel is reported here, not as a copy error) and copies
  // the whole array back.
  std::vector<T> host() const {
    CUDA_CHECK(cudaDeviceSynchronize());
    return download<T>(buf_.get(), count_);
  }

  T* get() const { return buf_.as<T>(); }
  // The API's fp16 type over host-side uint16_t bits.
  __half* half() const {
    static_assert(sizeof(T) == sizeof(__half), "half() views 16-bit storage");
    return buf_.as<__half>();
  }

 private:
  cuda::DeviceBuffer buf_;
  size_t count_ = 0;
};

}  // namespace qgate::testing
