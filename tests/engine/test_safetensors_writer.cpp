// safetensors writer tests: byte-exact agreement with the reference serializer's own test vectors
// (huggingface/safetensors safetensors/src/tensor.rs tests), ordering and alignment, JSON escaping,
// argument errors, the atomic write, and a round trip through qgate's reader.
// tests/python/test_safetensors_writer.py reruns WritesFileForPython with QGATE_WRITER_OUT set and
// checks the file with json + numpy and with the `safetensors` package.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/quant_formats.h"
#include "engine/safetensors.h"
#include "engine/safetensors_writer.h"

namespace qgate {
namespace {

namespace fs = std::filesystem;

#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "message: " << (haystack) << "\nexpected to contain: " << (needle)

template <typename T>
std::span<const std::byte> bytes_of(const std::vector<T>& v) {
  return std::as_bytes(std::span(v));
}

std::vector<std::byte> to_bytes(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int b : v) out.push_back(static_cast<std::byte>(b));
  return out;
}

// A fresh directory under the test temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::path(::testing::TempDir()) / (std::string("qgate_stw_") + info->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

const std::vector<float> kSix = {0, 1, 2, 3, 4, 5};

TEST(SafetensorsWriter, MatchesReferenceSerializerBytes) {
  // safetensors tensor.rs test_serialization: {"attn.0": F32 [1,2,3] = 0..5}, header 64 bytes.
  SafetensorsWriter w;
  ASSERT_TRUE(w.add("attn.0", SafetensorsDType::kF32, {1, 2, 3}, bytes_of(kSix)).ok());
  const std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(header.size(), 64u);
  std::vector<std::byte> want = to_bytes({64, 0, 0, 0, 0, 0, 0, 0});
  for (char c : header) want.push_back(static_cast<std::byte>(c));
  const auto data = to_bytes(
      {0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64});
  want.insert(want.end(), data.begin(), data.end());
  EXPECT_EQ(w.serialize(), want);
}

TEST(SafetensorsWriter, PadsHeaderWithSpacesLikeTheReference) {
  // test_serialization_forced_alignement: "attn0" [1,1,2,3] → 65 JSON bytes + 7 spaces = 72.
  SafetensorsWriter w;
  ASSERT_TRUE(w.add("attn0", SafetensorsDType::kF32, {1, 1, 2, 3}, bytes_of(kSix)).ok());
  const auto out = w.serialize();
  ASSERT_EQ(out.size(), 8u + 72 + 24);
  EXPECT_EQ(out[0], std::byte{72});
  const std::string header(reinterpret_cast<const char*>(out.data()) + 8, 72);
  EXPECT_EQ(header, R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})"
                    "       ");

  // test_empty: no tensors → "{}" + 6 spaces; with metadata {"framework": "pt"} → 40 bytes.
  SafetensorsWriter empty;
  EXPECT_EQ(empty.serialize(),
            to_bytes({8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '}));
  ASSERT_TRUE(empty.set_metadata("framework", "pt").ok());
  const auto meta = empty.serialize();
  ASSERT_EQ(meta.size(), 48u);
  EXPECT_EQ(meta[0], std::byte{40});
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(meta.data()) + 8, 40),
            R"({"__metadata__":{"framework":"pt"}}     )");
}

TEST(SafetensorsWriter, OrdersByDtypeThenNameKeepingEveryTensorAligned) {
  SafetensorsWriter w;
  const std::vector<uint16_t> f16 = {1, 2, 3};  // 6 bytes: would misalign anything after it
  const std::vector<int32_t> i32 = {7, 8};
  const std::vector<uint8_t> u8 = {9};
  const std::vector<int64_t> i64 = {10};
  ASSERT_TRUE(w.add("a_half", SafetensorsDType::kF16, {3}, bytes_of(f16)).ok());
  ASSERT_TRUE(w.add("z_int", SafetensorsDType::kI32, {2}, bytes_of(i32)).ok());
  ASSERT_TRUE(w.add("b_int", SafetensorsDType::kI32, {2}, bytes_of(i32)).ok());
  ASSERT_TRUE(w.add("c_byte", SafetensorsDType::kU8, {1}, bytes_of(u8)).ok());
  ASSERT_TRUE(w.add("d_long", SafetensorsDType::kI64, {}, bytes_of(i64)).ok());
  const auto out = w.serialize();
  uint64_t n;
  std::memcpy(&n, out.data(), 8);
  const std::string header(reinterpret_cast<const char*>(out.data()) + 8, n);
  EXPECT_EQ(n % 8, 0u);
  // I64 first, then I32 by name, then F16, then U8: offsets contiguous from 0 to the end.
  EXPECT_EQ(header.rfind(R"({"d_long":{"dtype":"I64","shape":[],"data_offsets":[0,8]},)"
                         R"("b_int":{"dtype":"I32","shape":[2],"data_offsets":[8,16]},)"
                         R"("z_int":{"dtype":"I32","shape":[2],"data_offsets":[16,24]},)"
                         R"("a_half":{"dtype":"F16","shape":[3],"data_offsets":[24,30]},)"
                         R"("c_byte":{"dtype":"U8","shape":[1],"data_offsets":[30,31]}})",
                         0),
            0u)
      << header;
  EXPECT_EQ(out.size(), 8 + n + 31);
}

TEST(SafetensorsWriter, RejectsBadArguments) {
  SafetensorsWriter w;
  const std::vector<float> four = {1, 2, 3, 4};
  ASSERT_TRUE(w.add("x", SafetensorsDType::kF32, {2, 2}, bytes_of(four)).ok());
  auto expect = [](Status s, const std::string& needle) {
    ASSERT_FALSE(s.ok()) << needle;
    EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_CONTAINS(s.error().message(), needle);
  };
  expect(w.add("x", SafetensorsDType::kF32, {4}, bytes_of(four)), "duplicate tensor 'x'");
  expect(w.add("y", SafetensorsDType::kF32, {3}, bytes_of(four)),
         "tensor 'y' has 16 bytes, its shape and dtype F32 need 12");
  expect(w.add("y", SafetensorsDType::kF16, {2, -4}, bytes_of(four)), "negative dimension");
  expect(w.add("__metadata__", SafetensorsDType::kF32, {4}, bytes_of(four)), "reserved");
  expect(w.add("", SafetensorsDType::kF32, {4}, bytes_of(four)), "empty tensor name");
  expect(w.add("bad\xff", SafetensorsDType::kF32, {4}, bytes_of(four)), "not valid UTF-8");
  expect(w.set_metadata("k", "\xc3"), "not valid UTF-8");
  EXPECT_EQ(w.tensor_count(), 1u);
}

TEST(SafetensorsWriter, RoundTripsThroughTheReaderWithEscapedNames) {
  TempDir dir;
  const std::string path = (dir.path() / "model.safetensors").string();
  SafetensorsWriter w;
  const std::vector<float> f32 = {1.5f, -2.25f, 3e-8f};
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC000};
  const std::vector<int64_t> empty_i64;
  const std::string odd_name = "quote\" back\\slash\nnewline\ttab\x01 ctl \xc3\xbc/slash";
  ASSERT_TRUE(w.add(odd_name, SafetensorsDType::kF32, {3}, bytes_of(f32)).ok());
  ASSERT_TRUE(w.add("b16", SafetensorsDType::kBF16, {1, 2}, bytes_of(bf16)).ok());
  ASSERT_TRUE(w.add("nothing", SafetensorsDType::kI64, {0, 5}, bytes_of(empty_i64)).ok());
  ASSERT_TRUE(w.set_metadata("format", "pt").ok());
  ASSERT_TRUE(w.set_metadata("note", "line\nbreak \"quoted\"").ok());
  ASSERT_TRUE(w.write(path).ok());

  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok()) << f.error().to_string();
  ASSERT_EQ(f->tensors().size(), 3u);
  const SafetensorsTensor* t = f->find(odd_name);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, SafetensorsDType::kF32);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{3}));
  ASSERT_EQ(t->nbytes, 12u);
  EXPECT_EQ(std::memcmp(t->data, f32.data(), 12), 0);
  const SafetensorsTensor* b = f->find("b16");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(std::memcmp(b->data, bf16.data(), 4), 0);
  const SafetensorsTensor* e = f->find("nothing");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->nbytes, 0u);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("note"), "line\nbreak \"quoted\"");
  // The file on disk is exactly what serialize() produces.
  std::ifstream in(path, std::ios::binary);
  std::vector<char> disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto mem = w.serialize();
  ASSERT_EQ(disk.size(), mem.size());
  EXPECT_EQ(std::memcmp(disk.data(), mem.data(), mem.size()), 0);
}

TEST(SafetensorsWriter, WriteReplacesAtomicallyAndLeavesNoTemporaries) {
  TempDir dir;
  const std::string path = (dir.path() / "w.safetensors").string();
  { std::ofstream(path) << "old contents"; }
  SafetensorsWriter w;
  ASSERT_TRUE(w.add("x", SafetensorsDType::kF32, {6}, bytes_of(kSix)).ok());
  ASSERT_TRUE(w.write(path).ok());
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    names.push_back(entry.path().filename().string());
  }
  EXPECT_EQ(names, std::vector<std::string>{"w.safetensors"});
  EXPECT_EQ(fs::file_size(path), w.serialize().size());

  const std::string missing = (dir.path() / "no_such_dir" / "w.safetensors").string();
  Status s = w.write(missing);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kIo);
  EXPECT_CONTAINS(s.error().message(), "no_such_dir");
  EXPECT_FALSE(fs::exists(missing));
}

// The file tests/python/test_safetensors_writer.py checks independently. Values follow simple
// formulas the Python side recomputes; the GPTQ tensors come from pack_gptq of a known layer.
TEST(SafetensorsWriter, WritesFileForPython) {
  const char* out_dir = std::getenv("QGATE_WRITER_OUT");
  TempDir scratch;
  const fs::path dir = out_dir != nullptr && *out_dir != '\0' ? fs::path(out_dir) : scratch.path();
  SafetensorsWriter w;
  std::vector<float> f32(15);
  for (int i = 0; i < 15; ++i) f32[i] = 0.5f * static_cast<float>(i) - 3.0f;
  std::vector<uint16_t> f16(7);
  for (int i = 0; i < 7; ++i) f16[i] = static_cast<uint16_t>(0x3C00 + i);  // 1 + i/1024
  std::vector<int8_t> i8 = {-128, -1, 0, 1, 127};
  std::vector<int64_t> i64 = {-(int64_t{1} << 40)};
  std::vector<uint8_t> u8_empty;
  ASSERT_TRUE(w.add("model.embed.f32", SafetensorsDType::kF32, {3, 5}, bytes_of(f32)).ok());
  ASSERT_TRUE(w.add("model.norm.f16", SafetensorsDType::kF16, {7}, bytes_of(f16)).ok());
  ASSERT_TRUE(w.add("i8", SafetensorsDType::kI8, {5}, bytes_of(i8)).ok());
  ASSERT_TRUE(w.add("step", SafetensorsDType::kI64, {}, bytes_of(i64)).ok());
  ASSERT_TRUE(w.add("empty", SafetensorsDType::kU8, {0}, bytes_of(u8_empty)).ok());
  ASSERT_TRUE(
      w.add("name with \"quotes\" and \\", SafetensorsDType::kU8, {0}, bytes_of(u8_empty)).ok());
  // A GPTQ layer: q[n][k] = (k + n) % 16, zeros 8 (sym), scales 1/64 * (1 + n), g = 32.
  QuantizedLinear l;
  l.in_features = 64;
  l.out_features = 32;
  l.group_size = 32;
  l.q.resize(64 * 32);
  for (int n = 0; n < 32; ++n) {
    for (int k = 0; k < 64; ++k) l.q[n * 64 + k] = static_cast<uint8_t>((k + n) % 16);
  }
  l.zeros.assign(2 * 32, 8);
  l.scales.resize(2 * 32);
  for (int i = 0; i < 64; ++i) l.scales[i] = static_cast<float>(1 + i % 32) / 64.0f;
  for (int k = 0; k < 64; ++k) l.g_idx.push_back(k / 32);
  auto g = pack_gptq(l, GptqCheckpointFormat::kGptq);
  ASSERT_TRUE(g.ok()) << g.error().to_string();
  const std::string p = "model.layers.0.mlp.down_proj.";
  ASSERT_TRUE(
      w.add(p + "qweight", SafetensorsDType::kI32, g->qweight_shape, bytes_of(g->qweight)).ok());
  ASSERT_TRUE(
      w.add(p + "qzeros", SafetensorsDType::kI32, g->qzeros_shape, bytes_of(g->qzeros)).ok());
  ASSERT_TRUE(
      w.add(p + "scales", SafetensorsDType::kF16, g->scales_shape, bytes_of(g->scales)).ok());
  ASSERT_TRUE(w.add(p + "g_idx", SafetensorsDType::kI32, g->g_idx_shape, bytes_of(g->g_idx)).ok());
  ASSERT_TRUE(w.set_metadata("format", "pt").ok());
  ASSERT_TRUE(w.set_metadata("quantizer", "qgate \"test\"").ok());
  const std::string path = (dir / "writer_check.safetensors").string();
  ASSERT_TRUE(w.write(path).ok());
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok()) << f.error().to_string();
  EXPECT_EQ(f->tensors().size(), 10u);
  auto back = unpack_gptq(
      {quant_tensor_view(*f->find(p + "qweight")), quant_tensor_view(*f->find(p + "qzeros")),
       quant_tensor_view(*f->find(p + "scales")), quant_tensor_view(*f->find(p + "g_idx"))},
      4, 32, GptqCheckpointFormat::kGptq);
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  EXPECT_EQ(back->q, l.q);
  EXPECT_EQ(back->zeros, l.zeros);
  EXPECT_EQ(back->scales, l.scales);
}

}  // namespace
}  // namespace qgate
