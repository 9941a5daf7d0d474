// GPTQ / AWQ layout tests. The expected words are written out by hand from the published rules
// (AutoGPTQ qlinear_cuda_old.py pack(), the v1 ↔ v2 whole-word conversion, AutoAWQ gemm.py's
// [0,2,4,6,1,3,5,7] interleave), so a change to any bit position fails here. The NumPy fixtures in
// test_quant_fixtures.cpp check the same rules against an independent implementation.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/quant_formats.h"
#include "kernels/cpu/half.h"

namespace qgate {
namespace {

#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "message: " << (haystack) << "\nexpected to contain: " << (needle)

constexpr auto kV1 = GptqCheckpointFormat::kGptq;
constexpr auto kV2 = GptqCheckpointFormat::kGptqV2;

// A layer with q[n][k] = (k + n) mod 2^bits, zeros[g][n] = (n + 3g) mod 2^bits, fp16-exact scales.
QuantizedLinear make_layer(int64_t K, int64_t N, int64_t g, int bits = 4) {
  QuantizedLinear l;
  l.in_features = K;
  l.out_features = N;
  l.bits = bits;
  l.group_size = g;
  const int64_t G = (K + g - 1) / g;
  const int levels = 1 << bits;
  l.q.resize(N * K);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) l.q[n * K + k] = static_cast<uint8_t>((k + n) % levels);
  }
  l.zeros.resize(G * N);
  l.scales.resize(G * N);
  for (int64_t gi = 0; gi < G; ++gi) {
    for (int64_t n = 0; n < N; ++n) {
      l.zeros[gi * N + n] = static_cast<uint8_t>((n + 3 * gi) % levels);
      l.scales[gi * N + n] = 0.0625f * static_cast<float>(1 + n + gi);  // exact in fp16
    }
  }
  l.g_idx.resize(K);
  for (int64_t k = 0; k < K; ++k) l.g_idx[k] = static_cast<int32_t>(k / g);
  return l;
}

void expect_same_layer(const QuantizedLinear& a, const QuantizedLinear& b) {
  EXPECT_EQ(a.in_features, b.in_features);
  EXPECT_EQ(a.out_features, b.out_features);
  EXPECT_EQ(a.bits, b.bits);
  EXPECT_EQ(a.group_size, b.group_size);
  EXPECT_EQ(a.q, b.q);
  EXPECT_EQ(a.zeros, b.zeros);
  EXPECT_EQ(a.scales, b.scales);
  EXPECT_EQ(a.g_idx, b.g_idx);
}

uint32_t u(int32_t w) { return static_cast<uint32_t>(w); }

// --- GPTQ layout ------------------------------------------------------------------------------

TEST(GptqPack, FourBitWordsPackedAlongK) {
  auto packed = pack_gptq(make_layer(32, 32, 16), kV2);
  ASSERT_TRUE(packed.ok()) << packed.error().to_string();
  const GptqTensors& t = *packed;
  EXPECT_EQ(t.qweight_shape, (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(t.qzeros_shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(t.scales_shape, (std::vector<int64_t>{2, 32}));
  EXPECT_EQ(t.g_idx_shape, (std::vector<int64_t>{32}));
  // qweight[r][n] nibble j = q[n][8r + j] = (8r + j + n) % 16, lowest nibble first.
  EXPECT_EQ(u(t.qweight[0 * 32 + 0]), 0x76543210u);
  EXPECT_EQ(u(t.qweight[0 * 32 + 1]), 0x87654321u);
  EXPECT_EQ(u(t.qweight[0 * 32 + 8]), 0xFEDCBA98u);
  EXPECT_EQ(u(t.qweight[0 * 32 + 9]), 0x0FEDCBA9u);
  EXPECT_EQ(u(t.qweight[0 * 32 + 11]), 0x210FEDCBu);
  EXPECT_EQ(u(t.qweight[1 * 32 + 0]), 0xFEDCBA98u);
  EXPECT_EQ(u(t.qweight[3 * 32 + 31]), 0xEDCBA987u);
  // v2 qzeros[g][c] nibble j = zeros[g][8c + j] = (8c + j + 3g) % 16.
  const std::vector<uint32_t> zeros_v2 = {0x76543210, 0xFEDCBA98, 0x76543210, 0xFEDCBA98,
                                          0xA9876543, 0x210FEDCB, 0xA9876543, 0x210FEDCB};
  for (size_t i = 0; i < zeros_v2.size(); ++i) EXPECT_EQ(u(t.qzeros[i]), zeros_v2[i]) << i;
  EXPECT_EQ(t.scales[0], 0x2C00);        // 0.0625
  EXPECT_EQ(t.scales[15], 0x3C00);       // 1.0
  EXPECT_EQ(t.scales[32 + 15], 0x3C40);  // 1.0625
  EXPECT_EQ(t.g_idx[15], 0);
  EXPECT_EQ(t.g_idx[16], 1);
}

TEST(GptqPack, V1StoresZeroMinusOneAsWholeWordArithmetic) {
  auto packed = pack_gptq(make_layer(32, 32, 16), kV1);
  ASSERT_TRUE(packed.ok()) << packed.error().to_string();
  // v1 word = v2 word - 0x11111111 mod 2^32 (AutoGPTQ/GPTQModel convert_gptq_v2_to_v1_format).
  // Word 0 holds zeros 0,1,2..7: the zero of 0 becomes 15 and borrows from the next nibble, so
  // nibbles read F,F,0,2,3,... — not the per-nibble 0x6543210F.
  const std::vector<uint32_t> zeros_v1 = {0x654320FF, 0xEDCBA987, 0x654320FF, 0xEDCBA987,
                                          0x98765432, 0x0FFEDCBA, 0x98765432, 0x0FFEDCBA};
  for (size_t i = 0; i < zeros_v1.size(); ++i) EXPECT_EQ(u(packed->qzeros[i]), zeros_v1[i]) << i;
  // qweight and scales do not depend on the checkpoint format.
  auto v2 = pack_gptq(make_layer(32, 32, 16), kV2);
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(packed->qweight, v2->qweight);
  EXPECT_EQ(packed->scales, v2->scales);
}

TEST(GptqPack, SymmetricZeroEightIsStoredAsSevens) {
  QuantizedLinear l = make_layer(32, 32, 32);
  std::fill(l.zeros.begin(), l.zeros.end(), 8);
  auto v1 = pack_gptq(l, kV1);
  auto v2 = pack_gptq(l, kV2);
  ASSERT_TRUE(v1.ok() && v2.ok());
  for (int32_t w : v1->qzeros) EXPECT_EQ(u(w), 0x77777777u);
  for (int32_t w : v2->qzeros) EXPECT_EQ(u(w), 0x88888888u);
}

TEST(GptqPack, V1BorrowOutOfTheTopNibbleWrapsAndUnpacksExactly) {
  QuantizedLinear l = make_layer(32, 32, 32);
  // First word: zeros 1,1,1,1,1,1,1,0 → v2 0x01111111 → v1 0xF0000000; all-zero word → 0xEEEEEEEF.
  for (int n = 0; n < 32; ++n) l.zeros[n] = n < 7 ? 1 : 0;
  auto v1 = pack_gptq(l, kV1);
  ASSERT_TRUE(v1.ok());
  EXPECT_EQ(u(v1->qzeros[0]), 0xF0000000u);
  EXPECT_EQ(u(v1->qzeros[1]), 0xEEEEEEEFu);
  auto back = unpack_gptq(v1->views(), 4, 32, kV1);
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  EXPECT_EQ(back->zeros, l.zeros);
}

TEST(GptqUnpack, RoundTripsBothFormats) {
  const QuantizedLinear l = make_layer(64, 32, 16);
  for (auto f : {kV1, kV2}) {
    SCOPED_TRACE(gptq_checkpoint_format_name(f));
    auto packed = pack_gptq(l, f);
    ASSERT_TRUE(packed.ok()) << packed.error().to_string();
    auto back = unpack_gptq(packed->views(), 4, 16, f);
    ASSERT_TRUE(back.ok()) << back.error().to_string();
    expect_same_layer(*back, l);
    // W = scale * (q - zero): n = 3, k = 20 → g 1, q 7, zero 6, scale 0.0625 * 5.
    EXPECT_EQ(back->dequant(3, 20), 0.3125f * (7.0f - 6.0f));
  }
}

TEST(GptqUnpack, ReadingV2AsV1ShiftsEveryZeroByOne) {
  const QuantizedLinear l = make_layer(32, 32, 32);
  auto packed = pack_gptq(l, kV2);
  ASSERT_TRUE(packed.ok());
  auto misread = unpack_gptq(packed->views(), 4, 32, kV1);
  ASSERT_TRUE(misread.ok());
  // Zeros 0..14 read back as 1..15 (the carry out of a 15 wraps that nibble to 0).
  EXPECT_EQ(misread->zeros[0], 1);
  EXPECT_EQ(misread->zeros[5], 6);
}

TEST(GptqUnpack, PartialLastGroup) {
  // K = 96 with g = 64: groups of 64 and 32, as for SmolLM2's 576 with g128 (4.5 groups → 5).
  const QuantizedLinear l = make_layer(96, 32, 64);
  ASSERT_EQ(l.num_groups(), 2);
  auto packed = pack_gptq(l, kV2);
  ASSERT_TRUE(packed.ok()) << packed.error().to_string();
  EXPECT_EQ(packed->qweight_shape, (std::vector<int64_t>{12, 32}));
  EXPECT_EQ(packed->qzeros_shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(packed->scales_shape, (std::vector<int64_t>{2, 32}));
  auto back = unpack_gptq(packed->views(), 4, 64, kV2);
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  expect_same_layer(*back, l);
  EXPECT_EQ(back->g_idx[95], 1);
}

TEST(GptqUnpack, ActOrderGidxRoundTrips) {
  QuantizedLinear l = make_layer(64, 32, 16);
  // A desc_act g_idx: group of column k is perm(k) / 16 for a permutation perm(k) = 5k mod 64.
  for (int k = 0; k < 64; ++k) l.g_idx[k] = (5 * k % 64) / 16;
  ASSERT_FALSE(l.has_trivial_g_idx());
  auto packed = pack_gptq(l, kV1);
  ASSERT_TRUE(packed.ok()) << packed.error().to_string();
  EXPECT_EQ(packed->g_idx, l.g_idx);
  auto back = unpack_gptq(packed->views(), 4, 16, kV1);
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  expect_same_layer(*back, l);
  // Column 7 belongs to group (5 * 7 % 64) / 16 = 2, not 7 / 16 = 0.
  EXPECT_EQ(back->g_idx[7], 2);
  EXPECT_EQ(back->dequant(1, 7), l.scales[2 * 32 + 1] * (8.0f - 7.0f));
}

TEST(GptqUnpack, EightBit) {
  QuantizedLinear l = make_layer(32, 32, 32, 8);
  for (int64_t n = 0; n < 32; ++n) {
    for (int64_t k = 0; k < 32; ++k) l.q[n * 32 + k] = static_cast<uint8_t>((7 * k + n) % 256);
  }
  std::fill(l.zeros.begin(), l.zeros.end(), 128);
  auto v1 = pack_gptq(l, kV1);
  ASSERT_TRUE(v1.ok()) << v1.error().to_string();
  EXPECT_EQ(v1->qweight_shape, (std::vector<int64_t>{8, 32}));
  EXPECT_EQ(v1->qzeros_shape, (std::vector<int64_t>{1, 8}));
  // Four bytes per word along K, lowest byte first.
  EXPECT_EQ(u(v1->qweight[0]), 0x150E0700u);
  EXPECT_EQ(u(v1->qweight[1]), 0x160F0801u);
  EXPECT_EQ(u(v1->qweight[7 * 32 + 31]), 0xF8F1EAE3u);
  for (int32_t w : v1->qzeros) EXPECT_EQ(u(w), 0x7F7F7F7Fu);  // sym 128 stored as 127
  auto back = unpack_gptq(v1->views(), 8, -1, kV1);
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  expect_same_layer(*back, l);
}

TEST(GptqUnpack, PerChannelAndMissingGidx) {
  const QuantizedLinear l = make_layer(64, 32, 64);
  auto packed = pack_gptq(l, kV2);
  ASSERT_TRUE(packed.ok());
  GptqTensorViews v = packed->views();
  v.g_idx = {};  // some exporters omit g_idx: it is then k / group_size
  auto back = unpack_gptq(v, 4, -1, kV2);
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  expect_same_layer(*back, l);
  EXPECT_EQ(back->num_groups(), 1);
}

TEST(GptqUnpack, AcceptsBf16AndF32Scales) {
  const QuantizedLinear l = make_layer(32, 32, 32);
  auto packed = pack_gptq(l, kV2);
  ASSERT_TRUE(packed.ok());
  std::vector<uint16_t> bf16;
  for (float s : l.scales) bf16.push_back(fp32_to_bf16(s));
  GptqTensorViews v = packed->views();
  v.scales = {SafetensorsDType::kBF16, {1, 32}, std::as_bytes(std::span(bf16))};
  auto a = unpack_gptq(v, 4, 32, kV2);
  ASSERT_TRUE(a.ok()) << a.error().to_string();
  EXPECT_EQ(a->scales, l.scales);
  v.scales = {SafetensorsDType::kF32, {1, 32}, std::as_bytes(std::span(l.scales))};
  auto b = unpack_gptq(v, 4, 32, kV2);
  ASSERT_TRUE(b.ok()) << b.error().to_string();
  EXPECT_EQ(b->scales, l.scales);
}

TEST(GptqPack, RefusesShapesOutsideTheLayout) {
  auto k16 = pack_gptq(make_layer(16, 32, 16), kV1);
  ASSERT_FALSE(k16.ok());
  EXPECT_EQ(k16.error().code(), ErrorCode::kUnsupported);
  EXPECT_CONTAINS(k16.error().message(), "in_features 16");
  EXPECT_CONTAINS(k16.error().message(), "multiples of 32");
  auto n8 = pack_gptq(make_layer(32, 8, 32), kV1);
  ASSERT_FALSE(n8.ok());
  EXPECT_CONTAINS(n8.error().message(), "out_features 8");
}

TEST(GptqPack, RefusesInvalidLayers) {
  QuantizedLinear l = make_layer(32, 32, 32);
  l.scales[3] = 0.1f;  // not an fp16 value: q would have been computed against another scale
  auto r = pack_gptq(l, kV2);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_CONTAINS(r.error().message(), "scales[0][3]");

  l = make_layer(32, 32, 32);
  l.q[5] = 16;
  r = pack_gptq(l, kV2);
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.error().message(), "q[0][5] = 16 exceeds 15");

  l = make_layer(32, 32, 32);
  l.zeros[2] = 200;
  EXPECT_CONTAINS(pack_gptq(l, kV2).error().message(), "zeros[0][2] = 200");

  l = make_layer(32, 32, 32);
  l.g_idx[4] = 1;
  EXPECT_CONTAINS(pack_gptq(l, kV2).error().message(), "g_idx[4] = 1 is outside [0, 1)");

  l = make_layer(32, 32, 32);
  l.q.pop_back();
  EXPECT_CONTAINS(pack_gptq(l, kV2).error().message(), "q has 1023 elements, expected 1024");

  l = make_layer(32, 32, 32);
  l.bits = 3;
  EXPECT_CONTAINS(pack_gptq(l, kV2).error().message(), "bits = 3");
}

// Unpacking errors from hostile files: each names the tensor and the expected vs actual shape.
class GptqUnpackErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    auto p = pack_gptq(make_layer(64, 32, 32), kV1);
    ASSERT_TRUE(p.ok());
    t = std::move(p).value();
  }
  void expect(const GptqTensorViews& v, ErrorCode code, const std::string& needle, int bits = 4,
              int64_t g = 32) {
    auto r = unpack_gptq(v, bits, g, kV1);
    ASSERT_FALSE(r.ok()) << "expected: " << needle;
    EXPECT_EQ(r.error().code(), code) << r.error().to_string();
    EXPECT_CONTAINS(r.error().message(), needle);
  }
  GptqTensors t;
};

TEST_F(GptqUnpackErrors, ShapesDtypesAndValues) {
  GptqTensorViews v = t.views();
  v.qzeros.shape = {1, 4};
  expect(v, ErrorCode::kInvalidFormat, "qzeros has shape [1, 4], expected [2, 4]");

  v = t.views();
  v.scales.shape = {2, 16};
  expect(v, ErrorCode::kInvalidFormat, "scales has shape [2, 16], expected [2, 32]");

  v = t.views();
  v.qweight.shape = {4, 32};  // g_idx says K = 64 → 8 rows
  expect(v, ErrorCode::kInvalidFormat, "qweight has shape [4, 32], expected [8, 32]");

  v = t.views();
  v.qweight.shape = {256};
  expect(v, ErrorCode::kInvalidFormat, "qweight has shape [256], expected two positive dimensions");

  v = t.views();
  v.qweight.dtype = SafetensorsDType::kF32;
  expect(v, ErrorCode::kInvalidFormat, "qweight has dtype F32, expected I32");

  v = t.views();
  v.scales.dtype = SafetensorsDType::kI32;
  expect(v, ErrorCode::kInvalidFormat, "scales has dtype I32, expected F16 or BF16 or F32");

  v = t.views();
  v.g_idx.shape = {64, 1};
  expect(v, ErrorCode::kInvalidFormat, "g_idx has shape [64, 1], expected [in_features]");

  v = t.views();
  v.qzeros.bytes = v.qzeros.bytes.first(12);
  expect(v, ErrorCode::kInvalidFormat, "qzeros holds 12 bytes, shape [2, 4] needs 32");

  std::vector<int32_t> bad_gidx = t.g_idx;
  bad_gidx[10] = 2;
  v = t.views();
  v.g_idx = quant_tensor_view(bad_gidx, {64});
  expect(v, ErrorCode::kInvalidFormat, "g_idx[10] = 2 is outside [0, 2)");
  bad_gidx[10] = -1;
  expect(v, ErrorCode::kInvalidFormat, "g_idx[10] = -1");

  std::vector<uint16_t> inf_scales = t.scales;
  inf_scales[33] = 0x7C00;
  v = t.views();
  v.scales = fp16_tensor_view(inf_scales, {2, 32});
  expect(v, ErrorCode::kInvalidFormat, "scales[1][1] is not finite");

  expect(t.views(), ErrorCode::kUnsupported, "bits = 3", 3);
  expect(t.views(), ErrorCode::kInvalidArgument, "group_size = 0", 4, 0);
  // A config group size that disagrees with the file shows up as a qzeros shape mismatch.
  expect(t.views(), ErrorCode::kInvalidFormat, "qzeros has shape [2, 4], expected [4, 4]", 4, 16);
}

TEST_F(GptqUnpackErrors, HugeShapesFailBeforeAnyAllocation) {
  // A header claiming [2^31, 2^31] over a few bytes: the size product overflows int64.
  GptqTensorViews v = t.views();
  v.g_idx = {};
  v.qweight.shape = {int64_t{1} << 31, int64_t{1} << 31};
  expect(v, ErrorCode::kInvalidFormat, "qweight shape [2147483648, 2147483648] is too large", 4,
         -1);
  v.qweight.shape = {int64_t{1} << 32, 32};
  expect(v, ErrorCode::kInvalidFormat, "expected two positive dimensions", 4, -1);
  AwqTensorViews a{t.views().qweight, t.views().qzeros, t.views().scales};
  a.qweight.shape = {int64_t{1} << 31, int64_t{1} << 30};
  auto r = unpack_awq(a, -1);
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.error().message(), "is too large");
}

TEST_F(GptqUnpackErrors, InFeaturesNotMultipleOf32) {
  std::vector<int32_t> gidx(40, 0);
  GptqTensorViews v = t.views();
  v.g_idx = quant_tensor_view(gidx, {40});
  expect(v, ErrorCode::kUnsupported, "in_features 40 and out_features 32");
}

// --- AWQ --------------------------------------------------------------------------------------

TEST(AwqPack, WordsInterleavedAlongN) {
  // K = 16, N = 8, g = 8: one word per input row. q[n][k] = (k + n) % 16, nibble i holds column
  // order[i] = [0,2,4,6,1,3,5,7][i].
  auto packed = pack_awq(make_layer(16, 8, 8));
  ASSERT_TRUE(packed.ok()) << packed.error().to_string();
  EXPECT_EQ(packed->qweight_shape, (std::vector<int64_t>{16, 1}));
  EXPECT_EQ(packed->qzeros_shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(packed->scales_shape, (std::vector<int64_t>{2, 8}));
  const std::vector<uint32_t> qweight = {0x75316420, 0x86427531, 0x97538642, 0xA8649753,
                                         0xB975A864, 0xCA86B975, 0xDB97CA86, 0xECA8DB97,
                                         0xFDB9ECA8, 0x0ECAFDB9, 0x1FDB0ECA, 0x20EC1FDB,
                                         0x31FD20EC, 0x420E31FD, 0x531F420E, 0x6420531F};
  ASSERT_EQ(packed->qweight.size(), qweight.size());
  for (size_t k = 0; k < qweight.size(); ++k) EXPECT_EQ(u(packed->qweight[k]), qweight[k]) << k;
  // zeros[g][n] = (n + 3g) % 16: group 0 → 0..7, group 1 → 3..10. Stored as is (no -1).
  EXPECT_EQ(u(packed->qzeros[0]), 0x75316420u);
  EXPECT_EQ(u(packed->qzeros[1]), 0xA8649753u);
  EXPECT_EQ(packed->scales[0], 0x2C00);  // 0.0625
  EXPECT_EQ(packed->scales[8], 0x3000);  // group 1, n 0: 0.125
}

TEST(AwqUnpack, RoundTripAndDequant) {
  const QuantizedLinear l = make_layer(64, 32, 16);
  auto packed = pack_awq(l);
  ASSERT_TRUE(packed.ok()) << packed.error().to_string();
  auto back = unpack_awq(packed->views(), 16);
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  expect_same_layer(*back, l);
  // n = 9, k = 40 → g 2: q 49 % 16 = 1, zero (9 + 6) = 15, scale 0.0625 * 12.
  EXPECT_EQ(back->dequant(9, 40), 0.75f * (1.0f - 15.0f));
  // Per channel.
  const QuantizedLinear pc = make_layer(64, 16, 64);
  auto p2 = pack_awq(pc);
  ASSERT_TRUE(p2.ok());
  auto b2 = unpack_awq(p2->views(), -1);
  ASSERT_TRUE(b2.ok()) << b2.error().to_string();
  expect_same_layer(*b2, pc);
}

TEST(AwqPack, RefusesWhatGemmCannotHold) {
  // 576 inputs with g128 (SmolLM2's hidden size): GPTQ can, AWQ cannot.
  auto r = pack_awq(make_layer(576, 8, 128));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kUnsupported);
  EXPECT_CONTAINS(r.error().message(), "in_features 576 is not a multiple of group_size 128");
  EXPECT_TRUE(pack_gptq(make_layer(576, 32, 128), kV1).ok());

  QuantizedLinear act = make_layer(64, 8, 16);
  for (int k = 0; k < 64; ++k) act.g_idx[k] = (5 * k % 64) / 16;
  r = pack_awq(act);
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.error().message(), "act-order");

  r = pack_awq(make_layer(32, 8, 32, 8));
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.error().message(), "4-bit only");

  r = pack_awq(make_layer(32, 12, 32));
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.error().message(), "out_features 12 is not a multiple of 8");
}

TEST(AwqUnpack, ShapeErrorsNameTheTensor) {
  auto p = pack_awq(make_layer(64, 16, 16));
  ASSERT_TRUE(p.ok());
  auto expect = [](const AwqTensorViews& v, int64_t g, ErrorCode code, const std::string& needle) {
    auto r = unpack_awq(v, g);
    ASSERT_FALSE(r.ok()) << "expected: " << needle;
    EXPECT_EQ(r.error().code(), code) << r.error().to_string();
    EXPECT_CONTAINS(r.error().message(), needle);
  };
  AwqTensorViews v = p->views();
  v.qzeros.shape = {4, 1};
  expect(v, 16, ErrorCode::kInvalidFormat, "qzeros has shape [4, 1], expected [4, 2]");
  v = p->views();
  v.scales.shape = {2, 16};
  expect(v, 16, ErrorCode::kInvalidFormat, "scales has shape [2, 16], expected [4, 16]");
  v = p->views();
  v.qweight.dtype = SafetensorsDType::kI64;
  expect(v, 16, ErrorCode::kInvalidFormat, "qweight has dtype I64, expected I32");
  v = p->views();
  v.qweight.shape = {64, 2, 1};
  expect(v, 16, ErrorCode::kInvalidFormat, "qweight has shape [64, 2, 1]");
  expect(p->views(), 48, ErrorCode::kUnsupported,
         "in_features 64 (qweight [64, 2]) is not a multiple of group_size 48");
  expect(p->views(), 0, ErrorCode::kInvalidArgument, "group_size = 0");
  // A GPTQ-shaped qweight ([K/8, N]) handed to the AWQ reader is caught by the qzeros shape.
  auto g = pack_gptq(make_layer(64, 32, 16), kV2);
  ASSERT_TRUE(g.ok());
  expect({g->views().qweight, g->views().qzeros, g->views().scales}, 8, ErrorCode::kInvalidFormat,
         "qzeros has shape [4, 4], expected [1, 32]");
}

// --- quantization configs ---------------------------------------------------------------------

TEST(QuantConfig, AutoGptqQuantizeConfigJson) {
  auto c = parse_quantize_config_file(R"({"bits": 4, "group_size": 128, "damp_percent": 0.01,
      "desc_act": true, "static_groups": false, "sym": false, "true_sequential": true,
      "model_name_or_path": null, "model_file_base_name": "model", "quant_method": "gptq",
      "checkpoint_format": "gptq"})");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->method, QuantMethod::kGptq);
  EXPECT_EQ(c->bits, 4);
  EXPECT_EQ(c->group_size, 128);
  EXPECT_TRUE(c->desc_act);
  EXPECT_FALSE(c->sym);
  EXPECT_EQ(c->checkpoint_format, GptqCheckpointFormat::kGptq);
}

TEST(QuantConfig, GptqModelV2AndDefaults) {
  auto c = parse_quantize_config_file(R"({"bits": 8, "group_size": -1, "format": "GPTQ_V2",
      "pack_dtype": "int32", "lm_head": false, "dynamic": null, "meta": {"quantizer": ["x"]}})");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->bits, 8);
  EXPECT_EQ(c->group_size, -1);
  EXPECT_EQ(c->checkpoint_format, GptqCheckpointFormat::kGptqV2);
  EXPECT_TRUE(c->sym);  // AutoGPTQ's default when absent
  EXPECT_FALSE(c->desc_act);
}

TEST(QuantConfig, TransformersConfigJsonWithAwq) {
  auto c = parse_quant_config(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 576,
      "quantization_config": {"quant_method": "awq", "zero_point": true, "group_size": 64,
      "bits": 4, "version": "gemm", "modules_to_not_convert": ["lm_head"]}})");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->method, QuantMethod::kAwq);
  EXPECT_EQ(c->group_size, 64);
  EXPECT_EQ(c->modules_to_not_convert, (std::vector<std::string>{"lm_head"}));
}

TEST(QuantConfig, AutoAwqQuantConfigJsonSpellings) {
  auto c = parse_quantize_config_file(
      R"({"zero_point": true, "q_group_size": 128, "w_bit": 4, "version": "GEMM"})");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->method, QuantMethod::kAwq);
  EXPECT_EQ(c->bits, 4);
  EXPECT_EQ(c->group_size, 128);
  // Both spellings present and agreeing is fine.
  EXPECT_TRUE(parse_quantize_config_file(
                  R"({"quant_method": "awq", "bits": 4, "w_bit": 4, "group_size": 32})")
                  .ok());
}

TEST(QuantConfig, RefusalsNameTheField) {
  struct Case {
    const char* json;
    ErrorCode code;
    const char* needle;
  };
  const Case cases[] = {
      {R"({"quant_method": "bitsandbytes", "bits": 4, "group_size": 64})", ErrorCode::kUnsupported,
       "quant_method 'bitsandbytes'"},
      {R"({"quant_method": "awq", "bits": 4, "group_size": 64, "version": "GEMV"})",
       ErrorCode::kUnsupported, "version 'gemv'"},
      {R"({"quant_method": "awq", "bits": 4, "group_size": 64, "version": "marlin"})",
       ErrorCode::kUnsupported, "version 'marlin'"},
      {R"({"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": false})",
       ErrorCode::kUnsupported, "zero_point"},
      {R"({"quant_method": "awq", "bits": 4, "group_size": 64, "backend": "llm-awq"})",
       ErrorCode::kUnsupported, "backend 'llm-awq'"},
      {R"({"quant_method": "awq", "bits": 8, "group_size": 64})", ErrorCode::kUnsupported,
       "bits = 8 is not supported for awq"},
      {R"({"bits": 3, "group_size": 64})", ErrorCode::kUnsupported, "bits = 3"},
      {R"({"bits": 0, "group_size": 64})", ErrorCode::kInvalidFormat, "bits = 0"},
      {R"({"bits": 4.5, "group_size": 64})", ErrorCode::kInvalidFormat,
       "'bits' must be an integer"},
      {R"({"group_size": 64})", ErrorCode::kInvalidFormat, "missing field 'bits' (or 'w_bit')"},
      {R"({"bits": 4})", ErrorCode::kInvalidFormat, "missing field 'group_size'"},
      {R"({"bits": 4, "group_size": 0})", ErrorCode::kInvalidFormat, "group_size = 0"},
      {R"({"bits": 4, "group_size": -2})", ErrorCode::kInvalidFormat, "group_size = -2"},
      {R"({"bits": 4, "w_bit": 8, "group_size": 64})", ErrorCode::kInvalidFormat,
       "fields 'bits' and 'w_bit' disagree (4 vs 8)"},
      {R"({"bits": 4, "group_size": 64, "sym": "yes"})", ErrorCode::kInvalidFormat,
       "'sym' must be true or false"},
      {R"({"bits": 4, "group_size": 64, "checkpoint_format": "marlin"})", ErrorCode::kUnsupported,
       "checkpoint_format 'marlin'"},
      {R"({"bits": 4, "group_size": 64, "is_marlin_format": true})", ErrorCode::kUnsupported,
       "is_marlin_format"},
      {R"({"bits": 4, "group_size": 64, "pack_dtype": "int16"})", ErrorCode::kUnsupported,
       "pack_dtype 'int16'"},
      {R"({"bits": 4, "group_size": 64, "dynamic": {"-:.*mlp.*": {}}})", ErrorCode::kUnsupported,
       "'dynamic'"},
      {R"({"bits": 4, "group_size": 64, "quant_method": 4})", ErrorCode::kInvalidFormat,
       "'quant_method' must be a string"},
      {R"({"bits": 4, "group_size": 64, "modules_to_not_convert": "lm_head"})",
       ErrorCode::kInvalidFormat, "'modules_to_not_convert' must be a list"},
      {R"([1, 2])", ErrorCode::kInvalidFormat, "not a JSON object"},
      {R"({"bits": 4, )", ErrorCode::kInvalidFormat, "not valid JSON"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.json);
    auto r = parse_quantize_config_file(c.json);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), c.code) << r.error().to_string();
    EXPECT_CONTAINS(r.error().message(), c.needle);
  }
}

TEST(QuantConfig, ConfigJsonWithoutQuantizationIsNotFound) {
  auto r = parse_quant_config(R"({"architectures": ["LlamaForCausalLM"]})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
  r = parse_quant_config(R"({"quantization_config": [1]})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidFormat);
}

}  // namespace
}  // namespace qgate
