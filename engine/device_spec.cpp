#include "engine/device_spec.h"

#include <charconv>

namespace qgate {

std::string DeviceSpec::to_string() const {
  switch (kind) {
    case Kind::kAuto: return "auto";
    case Kind::kCpu: return "cpu";
    case Kind::kCuda: return "cuda:" + std::to_string(index);
  }
  return "?";
}

Result<DeviceSpec> parse_device_spec(std::string_view text) {
  const auto bad = [&] {
    return make_error(ErrorCode::kInvalidArgument,
                      "device must be auto, cpu, cuda or cuda:<n>, got '" + std::string(text) + "'");
  };
  if (text == "auto") return DeviceSpec{DeviceSpec::Kind::kAuto, 0};
  if (text == "cpu") return DeviceSpec{DeviceSpec::Kind::kCpu, 0};
  if (text == "cuda") return DeviceSpec{DeviceSpec::Kind::kCuda, 0};
  if (!text.starts_with("cuda:")) return bad();
  const std::string_view digits = text.substr(5);
  if (digits.empty() || digits.size() > 4) return bad();
  int index = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
  // from_chars accepts no sign for unsigned-looking input, but it does accept "-1" for int.
  if (ec != std::errc() || end != digits.data() + digits.size() || digits[0] == '-' ||
      index > 1023) {
    return bad();
  }
  return DeviceSpec{DeviceSpec::Kind::kCuda, index};
}

Result<DeviceSpec> resolve_device(const DeviceSpec& spec, bool cuda_built,
                                  std::span<const CudaDeviceInfo> devices) {
  switch (spec.kind) {
    case DeviceSpec::Kind::kCpu:
      return spec;
    case DeviceSpec::Kind::kAuto:
      if (cuda_built && !devices.empty()) return DeviceSpec{DeviceSpec::Kind::kCuda, 0};
      return DeviceSpec{DeviceSpec::Kind::kCpu, 0};
    case DeviceSpec::Kind::kCuda:
      break;
  }
  if (!cuda_built) {
    return make_error(ErrorCode::kUnsupported,
                      spec.to_string() + " requested but this qgate was built without CUDA "
                                         "(nvcc was not found at build time)");
  }
  for (const CudaDeviceInfo& d : devices) {
    if (d.index == spec.index) return spec;
  }
  std::string seen;
  for (const CudaDeviceInfo& d : devices) {
    seen += (seen.empty() ? "" : ", ") + ("cuda:" + std::to_string(d.index)) + " (" + d.name + ")";
  }
  return make_error(ErrorCode::kNotFound,
                    spec.to_string() + " is not visible to this process; visible: " +
                        (seen.empty() ? std::string("none (no driver or no GPU)") : seen));
}

}  // namespace qgate
