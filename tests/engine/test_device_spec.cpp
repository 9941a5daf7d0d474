#include "engine/device_spec.h"

#include <gtest/gtest.h>

#include <vector>

namespace qgate {
namespace {

TEST(DeviceSpec, ParsesTheAcceptedForms) {
  EXPECT_EQ(parse_device_spec("auto").value(), (DeviceSpec{DeviceSpec::Kind::kAuto, 0}));
  EXPECT_EQ(parse_device_spec("cpu").value(), (DeviceSpec{DeviceSpec::Kind::kCpu, 0}));
  EXPECT_EQ(parse_device_spec("cuda").value(), (DeviceSpec{DeviceSpec::Kind::kCuda, 0}));
  EXPECT_EQ(parse_device_spec("cuda:0").value(), (DeviceSpec{DeviceSpec::Kind::kCuda, 0}));
  EXPECT_EQ(parse_device_spec("cuda:7").value(), (DeviceSpec{DeviceSpec::Kind::kCuda, 7}));
  EXPECT_EQ(parse_device_spec("cuda:1023").value().index, 1023);
  EXPECT_EQ(parse_device_spec("cuda:3").value().to_string(), "cuda:3");
  EXPECT_EQ(parse_device_spec("auto").value().to_string(), "auto");
}

TEST(DeviceSpec, RejectsEverythingElseNamingTheForms) {
  for (const char* bad : {"", "gpu", "CUDA", "cuda:", "cuda:-1", "cuda:+1", "cuda:1x", "cuda:1024",
                          "cuda:99999", "cuda: 1", " cpu", "cuda:0:1", "tpu"}) {
    auto r = parse_device_spec(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find("auto, cpu, cuda or cuda:<n>"), std::string::npos);
  }
}

TEST(DeviceSpec, AutoPicksTheFirstGpuOnlyWhenThereIsOne) {
  const std::vector<CudaDeviceInfo> none;
  const std::vector<CudaDeviceInfo> two = {{0, "H100", 9, 0, 80ull << 30, 132},
                                           {1, "H100", 9, 0, 80ull << 30, 132}};
  const DeviceSpec autod{DeviceSpec::Kind::kAuto, 0};
  EXPECT_EQ(resolve_device(autod, true, two).value().to_string(), "cuda:0");
  EXPECT_EQ(resolve_device(autod, true, none).value().to_string(), "cpu");
  EXPECT_EQ(resolve_device(autod, false, two).value().to_string(), "cpu");
  EXPECT_EQ(resolve_device({DeviceSpec::Kind::kCpu, 0}, true, two).value().to_string(), "cpu");
}

TEST(DeviceSpec, ExplicitCudaNeedsTheBuildAndTheDevice) {
  const std::vector<CudaDeviceInfo> one = {{0, "NVIDIA H100 80GB HBM3", 9, 0, 80ull << 30, 132}};
  EXPECT_EQ(resolve_device({DeviceSpec::Kind::kCuda, 0}, true, one).value().to_string(), "cuda:0");

  auto missing = resolve_device({DeviceSpec::Kind::kCuda, 1}, true, one);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message().find("cuda:0 (NVIDIA H100 80GB HBM3)"), std::string::npos);

  auto no_gpu = resolve_device({DeviceSpec::Kind::kCuda, 0}, true, {});
  ASSERT_FALSE(no_gpu.ok());
  EXPECT_NE(no_gpu.error().message().find("none"), std::string::npos);

  auto no_build = resolve_device({DeviceSpec::Kind::kCuda, 0}, false, one);
  ASSERT_FALSE(no_build.ok());
  EXPECT_EQ(no_build.error().code(), ErrorCode::kUnsupported);
  EXPECT_NE(no_build.error().message().find("without CUDA"), std::string::npos);
}

}  // namespace
}  // namespace qgate
