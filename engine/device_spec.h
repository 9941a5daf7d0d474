// Where a variant's engine runs: "auto", "cpu", "cuda" (= cuda:0) or "cuda:<n>", as written in
// the serve config, and its resolution against the devices this process can see.
//
// Threading: pure functions.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "kernels/cuda/device.h"
#include "kernels/status.h"

namespace qgate {

struct DeviceSpec {
  enum class Kind { kAuto, kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = 0;  // CUDA device ordinal (kCuda only)

  bool is_cuda() const { return kind == Kind::kCuda; }
  std::string to_string() const;  // "auto", "cpu", "cuda:0"
  friend bool operator==(const DeviceSpec&, const DeviceSpec&) = default;
};

// InvalidArgument naming the accepted forms for anything else (including "cuda:" with no digits,
// signs, or an ordinal above 1023).
Result<DeviceSpec> parse_device_spec(std::string_view text);

// auto -> cuda:0 when CUDA is built in and a GPU is visible, else cpu. cuda:N -> itself when
// device N is visible; Unsupported when this build has no CUDA, NotFound when there is no such
// device (the message lists the ones there are).
Result<DeviceSpec> resolve_device(const DeviceSpec& spec, bool cuda_built,
                                  std::span<const CudaDeviceInfo> devices);

}  // namespace qgate
