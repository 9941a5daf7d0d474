// safetensors reader tests: valid files (crafted here and from the seed corpus) and hostile
// headers. Every hostile case checks the error code and that the message names the problem.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "engine/safetensors.h"

namespace qgate {
namespace {

#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "message: " << (haystack) << "\nexpected to contain: " << (needle)

// 8-byte length + header + data; `len_override` writes a lying length.
std::vector<std::byte> st_file(const std::string& header, size_t data_bytes,
                               std::optional<uint64_t> len_override = std::nullopt) {
  std::vector<std::byte> out(8 + header.size() + data_bytes);
  const uint64_t len = len_override.value_or(header.size());
  std::memcpy(out.data(), &len, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  for (size_t i = 0; i < data_bytes; ++i) out[8 + header.size() + i] = std::byte(i * 13 + 5);
  return out;
}

// One tensor entry of a header.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  uint64_t begin, uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

// F32 [2,3] (24 bytes), BF16 [4] (8), I64 scalar (8), U8 [0] (0): 40 data bytes.
std::string valid_header() {
  return "{\"__metadata__\":{\"format\":\"pt\",\"source\":\"qgate\"}," +
         entry("model.layers.0.w", "F32", "[2,3]", 0, 24) + "," +
         entry("b16", "BF16", "[4]", 24, 32) + "," + entry("step", "I64", "[]", 32, 40) + "," +
         entry("empty", "U8", "[0]", 40, 40) + "}   ";
}

void expect_error(const std::vector<std::byte>& bytes, ErrorCode code, const std::string& needle) {
  auto r = SafetensorsFile::parse(bytes);
  ASSERT_FALSE(r.ok()) << "parsed a hostile file; expected: " << needle;
  EXPECT_EQ(r.error().code(), code) << r.error().to_string();
  EXPECT_CONTAINS(r.error().message(), needle);
  EXPECT_EQ(r.error().message().rfind("safetensors: ", 0), 0u) << r.error().message();
}

void expect_header_error(const std::string& header, size_t data, ErrorCode code,
                         const std::string& needle) {
  expect_error(st_file(header, data), code, needle);
}

TEST(SafetensorsParse, ValidFile) {
  const auto bytes = st_file(valid_header(), 40);
  auto r = SafetensorsFile::parse(bytes);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  const SafetensorsFile& f = *r;
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata().at("format"), "pt");

  const std::byte* data = bytes.data() + 8 + valid_header().size();
  const SafetensorsTensor* w = f.find("model.layers.0.w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, SafetensorsDType::kF32);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w->nbytes, 24u);
  EXPECT_EQ(w->data, data);
  const SafetensorsTensor* b16 = f.find("b16");
  EXPECT_EQ(b16->dtype, SafetensorsDType::kBF16);
  EXPECT_EQ(b16->data, data + 24);
  EXPECT_EQ(b16->data[0], std::byte(24 * 13 + 5));
  const SafetensorsTensor* step = f.find("step");
  EXPECT_TRUE(step->shape.empty());  // a scalar holds one element
  EXPECT_EQ(step->nbytes, 8u);
  EXPECT_EQ(f.find("empty")->nbytes, 0u);
  EXPECT_EQ(f.find("empty")->shape, (std::vector<int64_t>{0}));
  EXPECT_EQ(f.find("__metadata__"), nullptr);
  EXPECT_EQ(f.find("missing"), nullptr);
  EXPECT_STREQ(safetensors_dtype_name(SafetensorsDType::kBF16), "BF16");
  EXPECT_STREQ(safetensors_dtype_name(SafetensorsDType::kI64), "I64");

  // Gaps between spans and trailing bytes are tolerated.
  const std::string gappy =
      "{" + entry("a", "I8", "[2]", 0, 2) + "," + entry("b", "I8", "[2]", 8, 10) + "}";
  auto g = SafetensorsFile::parse(st_file(gappy, 16));
  ASSERT_TRUE(g.ok()) << g.error().to_string();
  EXPECT_TRUE(g->metadata().empty());
}

TEST(SafetensorsParse, AllSupportedDTypesFromSeedCorpus) {
  const char* src = std::getenv("QGATE_SOURCE_DIR");
  const std::filesystem::path dir =
      std::filesystem::path(src != nullptr ? src : "") / "tests/fuzz/corpus/safetensors";
  if (!std::filesystem::exists(dir / "all_dtypes.safetensors"))
    GTEST_SKIP() << "seed corpus not found in " << dir;
  auto f = SafetensorsFile::open((dir / "all_dtypes.safetensors").string());
  ASSERT_TRUE(f.ok()) << f.error().to_string();
  const std::pair<const char*, SafetensorsDType> expected[] = {
      {"f32", SafetensorsDType::kF32},   {"f16", SafetensorsDType::kF16},
      {"bf16", SafetensorsDType::kBF16}, {"i32", SafetensorsDType::kI32},
      {"i8", SafetensorsDType::kI8},     {"u8", SafetensorsDType::kU8},
      {"i64", SafetensorsDType::kI64}};
  for (const auto& [name, dtype] : expected) {
    const SafetensorsTensor* t = f->find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dtype, dtype) << name;
  }
  EXPECT_EQ(f->find("bf16")->nbytes, 4u);
  EXPECT_EQ(static_cast<uint8_t>(f->find("i8")->data[1]), 0xff);
  int64_t one = 0;
  std::memcpy(&one, f->find("i64")->data, 8);
  EXPECT_EQ(one, 1);

  auto small = SafetensorsFile::open((dir / "small.safetensors").string());
  ASSERT_TRUE(small.ok()) << small.error().to_string();
  EXPECT_EQ(small->metadata().at("format"), "pt");
  EXPECT_EQ(small->find("model.embed.weight")->shape, (std::vector<int64_t>{2, 3}));
  auto empty = SafetensorsFile::open((dir / "empty.safetensors").string());
  ASSERT_TRUE(empty.ok()) << empty.error().to_string();
  EXPECT_TRUE(empty->tensors().empty());

  auto missing = SafetensorsFile::open((dir / "nope.safetensors").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
}

TEST(SafetensorsHostile, EveryTruncationFailsCleanly) {
  const auto full = st_file(valid_header(), 40);
  ASSERT_TRUE(SafetensorsFile::parse(full).ok());
  for (size_t n = 0; n < full.size(); ++n) {
    // A fresh exact-size copy, so ASan flags any read past the prefix.
    const std::vector<std::byte> prefix(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
    auto r = SafetensorsFile::parse(prefix);
    ASSERT_FALSE(r.ok()) << "prefix of " << n << " bytes parsed";
    ASSERT_EQ(r.error().message().rfind("safetensors: ", 0), 0u) << n;
  }
}

TEST(SafetensorsHostile, HeaderLength) {
  expect_error(st_file(valid_header(), 40, 1000), ErrorCode::kOutOfRange,
               "header length 1000 exceeds the");
  expect_error(st_file(valid_header(), 40, ~uint64_t{0}), ErrorCode::kOutOfRange,
               "exceeds the limit of 100000000");
  expect_error(std::vector<std::byte>(7), ErrorCode::kInvalidFormat, "file too short (7 bytes)");
  expect_error(st_file("", 0), ErrorCode::kInvalidFormat, "header is not valid JSON");
}

TEST(SafetensorsHostile, HeaderNotJsonObject) {
  expect_header_error("{\"a\": {\"dtype\": \"F32\",", 4, ErrorCode::kInvalidFormat,
                      "header is not valid JSON");
  expect_header_error("not json at all", 0, ErrorCode::kInvalidFormat, "header is not valid JSON");
  expect_header_error("{\"a\":\"\xff\xfe\"}", 0, ErrorCode::kInvalidFormat,
                      "header is not valid JSON");
  expect_header_error("[1,2,3]", 0, ErrorCode::kInvalidFormat, "header is not a JSON object");
  expect_header_error("{\"a\":[]}", 0, ErrorCode::kInvalidFormat,
                      "tensor 'a' entry is not an object");
  expect_header_error("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      ErrorCode::kInvalidFormat, "tensor 'a': dtype");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
                      ErrorCode::kInvalidFormat, "tensor 'a': shape");
  expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, ErrorCode::kInvalidFormat,
                      "tensor 'a': data_offsets");
  expect_header_error("{\"__metadata__\":{\"k\":1}}", 0, ErrorCode::kInvalidFormat,
                      "__metadata__['k'] is not a string");
  expect_header_error("{\"__metadata__\":[]}", 0, ErrorCode::kInvalidFormat,
                      "__metadata__ is not an object");
}

TEST(SafetensorsHostile, UnsupportedDTypes) {
  expect_header_error("{" + entry("lm_head.weight", "F8_E4M3", "[4]", 0, 4) + "}", 4,
                      ErrorCode::kUnsupported,
                      "tensor 'lm_head.weight': dtype 'F8_E4M3' is not supported");
  expect_header_error("{" + entry("x", "F64", "[1]", 0, 8) + "}", 8, ErrorCode::kUnsupported,
                      "dtype 'F64'");
  expect_header_error("{" + entry("x", "f32", "[1]", 0, 4) + "}", 4, ErrorCode::kUnsupported,
                      "dtype 'f32'");
}

TEST(SafetensorsHostile, ShapesAndSpans) {
  expect_header_error("{" + entry("w", "F32", "[2,3]", 0, 20) + "}", 24, ErrorCode::kInvalidFormat,
                      "tensor 'w': data_offsets span 20 bytes but shape × F32 needs 24");
  expect_header_error("{" + entry("w", "F32", "[2,-3]", 0, 24) + "}", 24, ErrorCode::kInvalidFormat,
                      "tensor 'w': shape[1] = -3 is negative");
  expect_header_error("{" + entry("w", "F32", "[2.0]", 0, 8) + "}", 8, ErrorCode::kInvalidFormat,
                      "shape[0] is not an integer");
  expect_header_error("{" + entry("w", "F32", "[18446744073709551615]", 0, 8) + "}", 8,
                      ErrorCode::kInvalidFormat, "shape[0] is not an integer");
  expect_header_error("{" + entry("w", "I64", "[4611686018427387904,4]", 0, 8) + "}", 8,
                      ErrorCode::kOutOfRange, "element count overflows at shape[1]");
  expect_header_error("{" + entry("w", "I64", "[4611686018427387904]", 0, 8) + "}", 8,
                      ErrorCode::kOutOfRange, "byte size overflows");
  expect_header_error("{" + entry("w", "F32", "[1]", 8, 4) + "}", 8, ErrorCode::kInvalidFormat,
                      "data_offsets [8, 4) has begin after end");
  expect_header_error("{" + entry("w", "F32", "[4]", 0, 16) + "}", 12, ErrorCode::kOutOfRange,
                      "tensor 'w': data_offsets [0, 16) end past the data section (size 12)");
  expect_header_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8,
                      ErrorCode::kInvalidFormat, "data_offsets has 3 entries");
  expect_header_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 8,
                      ErrorCode::kInvalidFormat, "data_offsets[0] is not an unsigned integer");
}

TEST(SafetensorsHostile, OverlapsAndDuplicates) {
  expect_header_error(
      "{" + entry("a", "F32", "[4]", 0, 16) + "," + entry("b", "F32", "[2]", 8, 16) + "}", 16,
      ErrorCode::kInvalidFormat, "tensors 'a' [0, 16) and 'b' [8, 16) overlap");
  // Same span twice, listed out of order.
  expect_header_error("{" + entry("b", "F32", "[2]", 8, 16) + "," +
                          entry("a", "F32", "[2]", 8, 16) + "," + entry("c", "F32", "[2]", 0, 8) +
                          "}",
                      16, ErrorCode::kInvalidFormat, "overlap");
  expect_header_error(
      "{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("a", "F32", "[1]", 4, 8) + "}", 8,
      ErrorCode::kInvalidFormat, "duplicate tensor 'a'");
  expect_header_error("{\"__metadata__\":{},\"__metadata__\":{}}", 0, ErrorCode::kInvalidFormat,
                      "duplicate __metadata__");
  expect_header_error("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, ErrorCode::kInvalidFormat,
                      "duplicate __metadata__ key 'k'");
}

}  // namespace
}  // namespace qgate
