// qgate's GPTQ/AWQ readers against an independent implementation: tests/data/quant/
// quant_fixtures.safetensors is written by tests/python/make_quant_fixture.py (NumPy, from the
// published layouts, never calling qgate). Each fixture holds the packed tensors, the quantized
// values and zeros it packed, and NumPy's float32 dequantization; its config is a
// quantize_config-style JSON string in the file's metadata. The dequantized weights must match
// bit for bit, and packing qgate's result again must reproduce NumPy's tensors byte for byte.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/quant_formats.h"
#include "engine/safetensors.h"

namespace qgate {
namespace {

std::string fixture_path() {
  const char* src = std::getenv("QGATE_SOURCE_DIR");
  return std::string(src != nullptr ? src : ".") + "/tests/data/quant/quant_fixtures.safetensors";
}

const SafetensorsTensor& tensor(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsTensor* t = f.find(name);
  if (t == nullptr) {
    ADD_FAILURE() << "fixture tensor missing: " << name;
    static const SafetensorsTensor empty;
    return empty;
  }
  return *t;
}

template <typename T>
void expect_bytes_equal(const SafetensorsTensor& t, const std::vector<T>& v,
                        const std::string& what) {
  ASSERT_EQ(t.nbytes, v.size() * sizeof(T)) << what;
  EXPECT_EQ(std::memcmp(t.data, v.data(), t.nbytes), 0) << what << " differs from NumPy's packing";
}

void check_fixture(const SafetensorsFile& f, const std::string& name, const QuantConfig& cfg) {
  SCOPED_TRACE(name);
  const std::string p = name + ".";
  Result<QuantizedLinear> layer = make_error(ErrorCode::kInternal, "unset");
  if (cfg.method == QuantMethod::kGptq) {
    layer = unpack_gptq(
        {quant_tensor_view(tensor(f, p + "qweight")), quant_tensor_view(tensor(f, p + "qzeros")),
         quant_tensor_view(tensor(f, p + "scales")), quant_tensor_view(tensor(f, p + "g_idx"))},
        cfg.bits, cfg.group_size, cfg.checkpoint_format);
  } else {
    layer = unpack_awq(
        {quant_tensor_view(tensor(f, p + "qweight")), quant_tensor_view(tensor(f, p + "qzeros")),
         quant_tensor_view(tensor(f, p + "scales"))},
        cfg.group_size);
  }
  ASSERT_TRUE(layer.ok()) << layer.error().to_string();
  const QuantizedLinear& l = *layer;
  const int64_t K = l.in_features, N = l.out_features;

  expect_bytes_equal(tensor(f, p + "q_ref"), l.q, "q");
  expect_bytes_equal(tensor(f, p + "zeros_ref"), l.zeros, "zeros");

  const SafetensorsTensor& expected = tensor(f, p + "expected");
  ASSERT_EQ(expected.shape, (std::vector<int64_t>{N, K}));
  int mismatches = 0;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) {
      float want;
      std::memcpy(&want, expected.data + (n * K + k) * 4, 4);
      const float got = l.dequant(n, k);
      if (std::memcmp(&got, &want, 4) != 0 && ++mismatches <= 5) {
        ADD_FAILURE() << "W[" << n << "][" << k << "] = " << got << ", NumPy " << want;
      }
    }
  }
  EXPECT_EQ(mismatches, 0);

  if (cfg.method == QuantMethod::kGptq) {
    auto again = pack_gptq(l, cfg.checkpoint_format);
    ASSERT_TRUE(again.ok()) << again.error().to_string();
    expect_bytes_equal(tensor(f, p + "qweight"), again->qweight, "qweight");
    expect_bytes_equal(tensor(f, p + "qzeros"), again->qzeros, "qzeros");
    expect_bytes_equal(tensor(f, p + "scales"), again->scales, "scales");
    expect_bytes_equal(tensor(f, p + "g_idx"), again->g_idx, "g_idx");
    EXPECT_EQ(l.has_trivial_g_idx(), !cfg.desc_act);
  } else {
    auto again = pack_awq(l);
    ASSERT_TRUE(again.ok()) << again.error().to_string();
    expect_bytes_equal(tensor(f, p + "qweight"), again->qweight, "qweight");
    expect_bytes_equal(tensor(f, p + "qzeros"), again->qzeros, "qzeros");
    expect_bytes_equal(tensor(f, p + "scales"), again->scales, "scales");
  }
}

TEST(QuantFixtures, MatchIndependentNumpyPacking) {
  const std::string path = fixture_path();
  ASSERT_TRUE(std::filesystem::exists(path))
      << path
      << " is missing (it is committed; regenerate with tests/python/make_quant_fixture.py)";
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok()) << f.error().to_string();
  int checked = 0;
  for (const auto& [name, config_text] : f->metadata()) {
    if (name == "generator") continue;
    auto cfg = parse_quantize_config_file(config_text);
    ASSERT_TRUE(cfg.ok()) << name << ": " << cfg.error().to_string();
    check_fixture(*f, name, *cfg);
    ++checked;
  }
  // gptq 4-bit v1 asym, 4-bit v2 act-order with a partial group, 8-bit v1 sym, awq.
  EXPECT_EQ(checked, 4);
}

}  // namespace
}  // namespace qgate
