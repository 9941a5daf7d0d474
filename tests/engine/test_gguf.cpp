// GGUF reader tests: the real SmolLM2 model, files from the reference writer (gguf-py, in the
// fuzz seed corpus), and hostile files crafted with GgufBuilder. Every hostile case checks the
// error code and that the message names what is wrong.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "engine/mapped_file.h"
#include "tests/engine/gguf_builder.h"

namespace qgate {
namespace {

using testing::gguf_pattern_byte;
using testing::GgufBuilder;

// Substring check without gmock (the test target links gtest only).
#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "message: " << (haystack) << "\nexpected to contain: " << (needle)

constexpr uint32_t kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8;

std::filesystem::path source_dir() {
  const char* s = std::getenv("QGATE_SOURCE_DIR");
  return s != nullptr ? s : "";
}

std::filesystem::path model_path() {
  const char* m = std::getenv("QGATE_MODEL_DIR");
  std::filesystem::path dir = m != nullptr ? std::filesystem::path(m) : source_dir() / "models";
  return dir / "SmolLM2-135M-Instruct.Q4_1.gguf";
}

Result<GgufFile> parse(const std::vector<std::byte>& b) { return GgufFile::parse(b); }

// Expects parsing to fail with `code` and a message containing `needle`.
void expect_error(const std::vector<std::byte>& bytes, ErrorCode code, const std::string& needle) {
  auto r = parse(bytes);
  ASSERT_FALSE(r.ok()) << "parsed a hostile file; expected: " << needle;
  EXPECT_EQ(r.error().code(), code) << r.error().to_string();
  EXPECT_CONTAINS(r.error().message(), needle);
  EXPECT_CONTAINS(r.error().message(), "gguf: ");
}

// A small file touching every value type, an array of each kind and three tensor types.
GgufBuilder small_valid() {
  GgufBuilder b;
  b.string("general.architecture", "llama")
      .scalar<uint8_t>("t.u8", GgufType::kU8, 200)
      .scalar<int8_t>("t.i8", GgufType::kI8, -100)
      .scalar<uint16_t>("t.u16", GgufType::kU16, 60000)
      .scalar<int16_t>("t.i16", GgufType::kI16, -30000)
      .scalar<uint32_t>("t.u32", GgufType::kU32, 4000000000u)
      .scalar<int32_t>("t.i32", GgufType::kI32, -2000000000)
      .scalar<float>("t.f32", GgufType::kF32, 1.5f)
      .scalar<bool>("t.bool", GgufType::kBool, true)
      .scalar<uint64_t>("t.u64", GgufType::kU64, std::numeric_limits<uint64_t>::max())
      .scalar<int64_t>("t.i64", GgufType::kI64, -(int64_t{1} << 40))
      .scalar<double>("t.f64", GgufType::kF64, -0.125)
      .string_array("t.strings", {"a", "", "<|im_end|>"})
      .array<int32_t>("t.i32s", GgufType::kI32, {-1, 0, 7})
      .array<float>("t.f32s", GgufType::kF32, {0.5f, 2.0f})
      .tensor("norm.weight", {8}, kF32)
      .tensor("blk.0.attn_q.weight", {64, 2}, kQ4_1)
      .tensor("token_embd.weight", {32, 3}, kQ8_0);
  return b;
}

// --- The real model -----------------------------------------------------------------------------

TEST(GgufRealModel, SmolLM2HeaderMetadataAndTensors) {
  const auto path = model_path();
  if (!std::filesystem::exists(path))
    GTEST_SKIP() << "model not found at " << path << " (set QGATE_MODEL_DIR)";
  auto mapped = MappedFile::open(path.string());
  ASSERT_TRUE(mapped.ok()) << mapped.error().to_string();
  auto r = GgufFile::parse(mapped->bytes());
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  const GgufFile& f = *r;

  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.metadata().size(), 33u);
  EXPECT_EQ(f.tensors().size(), 272u);
  EXPECT_EQ(f.get_string("general.architecture").value(), "llama");
  EXPECT_EQ(f.get_int("llama.block_count").value(), 30);
  EXPECT_EQ(f.get_int("llama.embedding_length").value(), 576);
  EXPECT_EQ(f.get_int("llama.attention.head_count_kv").value(), 3);
  EXPECT_DOUBLE_EQ(f.get_float("llama.rope.freq_base").value(), 100000.0);
  EXPECT_NEAR(f.get_float("llama.attention.layer_norm_rms_epsilon").value(), 1e-5, 1e-9);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model").value(), "gpt2");
  EXPECT_TRUE(f.get_bool("tokenizer.ggml.add_bos_token").ok());

  auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.error().to_string();
  ASSERT_EQ(tokens->size(), 49152u);
  EXPECT_EQ((*tokens)[0], "<|endoftext|>");
  EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type")->size(), 49152u);
  EXPECT_GT(f.get_string_array("tokenizer.ggml.merges")->size(), 40000u);
  EXPECT_EQ(f.get_int("tokenizer.ggml.tokens").error().code(), ErrorCode::kInvalidFormat);

  const GgufTensorInfo* embd = f.find_tensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->dims, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(embd->type, DType::kQ8_0);
  EXPECT_EQ(embd->num_elements(), 576 * 49152);
  // gguf-py reports the data section at 1785664 with token_embd first in it.
  EXPECT_EQ(embd->offset, 0u);
  EXPECT_EQ(embd->data - mapped->bytes().data(), 1785664);
  EXPECT_EQ(f.find_tensor("no.such.tensor"), nullptr);

  std::map<DType, int> counts;
  uint64_t total = 0;
  for (const GgufTensorInfo& t : f.tensors()) {
    ++counts[t.type];
    total += t.nbytes;
    // Byte size follows from type and shape alone: rows × bytes per row.
    const int64_t rows = t.num_elements() / t.dims[0];
    EXPECT_EQ(t.nbytes, static_cast<uint64_t>(*dtype_row_bytes(t.type, t.dims[0]) * rows))
        << t.name;
    EXPECT_EQ(t.offset % f.alignment(), 0u) << t.name;
    EXPECT_LE(t.data + t.nbytes, mapped->bytes().data() + mapped->bytes().size()) << t.name;
  }
  EXPECT_EQ(counts[DType::kQ4_1], 210);
  EXPECT_EQ(counts[DType::kF32], 61);
  EXPECT_EQ(counts[DType::kQ8_0], 1);
  EXPECT_LE(total, mapped->bytes().size() - 1785664);
  EXPECT_GT(total, mapped->bytes().size() - 1785664 - 272 * 32);  // only alignment padding between

  // open() keeps its own mapping alive and sees the same tensors.
  auto opened = GgufFile::open(path.string());
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  EXPECT_EQ(opened->tensors().size(), 272u);
  EXPECT_EQ(opened->find_tensor("output_norm.weight")->nbytes, 576u * 4);
}

// --- Files from the reference writer ----------------------------------------------------------

TEST(GgufReferenceWriter, ReadsGgufPyOutput) {
  const auto dir = source_dir() / "tests/fuzz/corpus/gguf";
  if (!std::filesystem::exists(dir / "tiny.gguf"))
    GTEST_SKIP() << "seed corpus not found in " << dir;
  for (const char* name : {"tiny.gguf", "tiny_v2.gguf"}) {
    auto f = GgufFile::open((dir / name).string());
    ASSERT_TRUE(f.ok()) << f.error().to_string();
    EXPECT_EQ(f->version(), std::string(name) == "tiny.gguf" ? 3u : 2u);
    EXPECT_EQ(f->get_int("llama.block_count").value(), 2);
    EXPECT_EQ(f->get_int("test.i8").value(), -5);
    EXPECT_EQ(f->get_int("test.u64").value(), int64_t{1} << 40);
    EXPECT_DOUBLE_EQ(f->get_float("test.f64").value(), 0.25);
    EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens").value(),
              (std::vector<std::string>{"a", "b", "<|im_end|>"}));
    EXPECT_EQ(f->get_int_array("tokenizer.ggml.token_type").value(),
              (std::vector<int64_t>{1, 1, 3}));
    const GgufTensorInfo* embd = f->find_tensor("embd.weight");
    ASSERT_NE(embd, nullptr);
    EXPECT_EQ(embd->dims, (std::vector<int64_t>{8, 2}));  // numpy (2, 8) → innermost first
    EXPECT_EQ(embd->type, DType::kF16);
    const GgufTensorInfo* norm = f->find_tensor("norm.weight");
    float v[4];
    std::memcpy(v, norm->data, sizeof v);
    EXPECT_EQ(v[3], 3.0f);
    const GgufTensorInfo* out = f->find_tensor("out.weight");
    EXPECT_EQ(out->type, DType::kQ8_0);
    EXPECT_EQ(out->nbytes, 34u);
    EXPECT_EQ(static_cast<uint8_t>(out->data[2 + 31]), 31);
  }
  auto q = GgufFile::open((dir / "quant_align64.gguf").string());
  ASSERT_TRUE(q.ok()) << q.error().to_string();
  EXPECT_EQ(q->alignment(), 64u);
  EXPECT_EQ(q->find_tensor("b.q4_1")->offset, 64u);
  EXPECT_EQ(q->find_tensor("b.q4_1")->nbytes, 40u);
}

// --- Valid crafted files ------------------------------------------------------------------------

TEST(GgufParse, AllValueTypesAndTypedGetters) {
  auto r = parse(small_valid().build());
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  const GgufFile& f = *r;
  EXPECT_EQ(f.metadata().size(), 15u);
  EXPECT_EQ(f.get_int("t.u8").value(), 200);
  EXPECT_EQ(f.get_int("t.i8").value(), -100);
  EXPECT_EQ(f.get_int("t.u16").value(), 60000);
  EXPECT_EQ(f.get_int("t.i16").value(), -30000);
  EXPECT_EQ(f.get_int("t.u32").value(), 4000000000);
  EXPECT_EQ(f.get_int("t.i32").value(), -2000000000);
  EXPECT_EQ(f.get_int("t.i64").value(), -(int64_t{1} << 40));
  EXPECT_DOUBLE_EQ(f.get_float("t.f32").value(), 1.5);
  EXPECT_DOUBLE_EQ(f.get_float("t.f64").value(), -0.125);
  EXPECT_DOUBLE_EQ(f.get_float("t.u16").value(), 60000.0);  // integers widen to float
  EXPECT_TRUE(f.get_bool("t.bool").value());
  EXPECT_EQ(f.get_string("general.architecture").value(), "llama");
  EXPECT_EQ(f.metadata().at("t.u64").type, GgufType::kU64);
  EXPECT_EQ(std::get<uint64_t>(f.metadata().at("t.u64").v), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(f.get_string_array("t.strings").value(),
            (std::vector<std::string>{"a", "", "<|im_end|>"}));
  EXPECT_EQ(f.get_int_array("t.i32s").value(), (std::vector<int64_t>{-1, 0, 7}));
  EXPECT_EQ(f.get_float_array("t.f32s").value(), (std::vector<double>{0.5, 2.0}));
  EXPECT_EQ(f.get_float_array("t.i32s").value(), (std::vector<double>{-1.0, 0.0, 7.0}));

  // Errors of the getters: absent, wrong type, does not fit.
  EXPECT_EQ(f.get_int("absent").error().code(), ErrorCode::kNotFound);
  EXPECT_CONTAINS(f.get_int("absent").error().message(), "'absent'");
  EXPECT_EQ(f.get_int("t.u64").error().code(), ErrorCode::kOutOfRange);
  EXPECT_EQ(f.get_int("t.f32").error().code(), ErrorCode::kInvalidFormat);
  EXPECT_EQ(f.get_int("t.bool").error().code(), ErrorCode::kInvalidFormat);
  EXPECT_EQ(f.get_string("t.u8").error().code(), ErrorCode::kInvalidFormat);
  EXPECT_CONTAINS(f.get_string("t.u8").error().message(), "is u8, expected string");
  EXPECT_EQ(f.get_bool("t.u8").error().code(), ErrorCode::kInvalidFormat);
  EXPECT_EQ(f.get_float("general.architecture").error().code(), ErrorCode::kInvalidFormat);
  EXPECT_EQ(f.get_string_array("t.i32s").error().code(), ErrorCode::kInvalidFormat);
  EXPECT_CONTAINS(f.get_string_array("t.i32s").error().message(), "array of i32");
  EXPECT_EQ(f.get_int_array("t.strings").error().code(), ErrorCode::kInvalidFormat);
  EXPECT_EQ(f.get_int_array("t.f32s").error().code(), ErrorCode::kInvalidFormat);
  EXPECT_EQ(f.get_float_array("t.u8").error().code(), ErrorCode::kInvalidFormat);
  EXPECT_TRUE(f.has("t.i16"));
  EXPECT_FALSE(f.has("t.i17"));
}

TEST(GgufParse, TensorInfosPointAtTheirData) {
  const auto bytes = small_valid().build();
  auto r = parse(bytes);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(r->tensors().size(), 3u);
  const uint64_t expected_nbytes[] = {8 * 4, 2 * 40, 3 * 34};
  uint64_t prev_end = 0;
  for (size_t k = 0; k < 3; ++k) {
    const GgufTensorInfo& t = r->tensors()[k];
    EXPECT_EQ(t.nbytes, expected_nbytes[k]) << t.name;
    EXPECT_EQ(t.offset % 32, 0u);
    EXPECT_GE(t.offset, prev_end);
    prev_end = t.offset + t.nbytes;
    EXPECT_EQ((t.data - bytes.data()) % 32, 0);
    EXPECT_EQ(static_cast<uint8_t>(t.data[0]), gguf_pattern_byte(k, 0)) << t.name;
    EXPECT_EQ(static_cast<uint8_t>(t.data[t.nbytes - 1]), gguf_pattern_byte(k, t.nbytes - 1))
        << t.name;
  }
  EXPECT_EQ(r->tensors()[2].data + r->tensors()[2].nbytes, bytes.data() + bytes.size());
  EXPECT_EQ(r->find_tensor("blk.0.attn_q.weight")->dims, (std::vector<int64_t>{64, 2}));
  EXPECT_EQ(r->find_tensor("blk.0.attn_q.weight")->type, DType::kQ4_1);
}

TEST(GgufParse, Version2AndCustomAlignmentAndNoTensors) {
  auto v2 = parse(small_valid().version(2).build());
  ASSERT_TRUE(v2.ok()) << v2.error().to_string();
  EXPECT_EQ(v2->version(), 2u);

  const auto bytes = GgufBuilder()
                         .scalar<uint32_t>("general.alignment", GgufType::kU32, 256)
                         .layout_alignment(256)
                         .tensor("a", {3}, kF32)
                         .tensor("b", {5}, kF16)
                         .build();
  auto aligned = parse(bytes);
  ASSERT_TRUE(aligned.ok()) << aligned.error().to_string();
  EXPECT_EQ(aligned->alignment(), 256u);
  EXPECT_EQ(aligned->find_tensor("b")->offset, 256u);
  EXPECT_EQ((aligned->find_tensor("b")->data - bytes.data()) % 256, 0);

  auto empty = parse(GgufBuilder().build());
  ASSERT_TRUE(empty.ok()) << empty.error().to_string();
  EXPECT_TRUE(empty->tensors().empty());
  EXPECT_TRUE(empty->metadata().empty());
}

// --- Hostile files ------------------------------------------------------------------------------

TEST(GgufHostile, EveryTruncationFailsCleanly) {
  const auto full = small_valid().build();
  ASSERT_TRUE(parse(full).ok());
  for (size_t n = 0; n < full.size(); ++n) {
    // A fresh exact-size copy, so ASan flags any read past the prefix.
    const std::vector<std::byte> prefix(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
    auto r = parse(prefix);
    ASSERT_FALSE(r.ok()) << "prefix of " << n << " bytes parsed";
    ASSERT_EQ(r.error().message().rfind("gguf: ", 0), 0u) << n;
  }
}

TEST(GgufHostile, BadMagicAndVersions) {
  expect_error(small_valid().magic(0x46554746).build(), ErrorCode::kInvalidFormat,
               "bad magic 0x46554746");
  expect_error(small_valid().version(1).build(), ErrorCode::kUnsupported,
               "version 1 is not supported");
  expect_error(small_valid().version(99).build(), ErrorCode::kUnsupported,
               "unsupported version 99");
  expect_error(small_valid().version(0).build(), ErrorCode::kUnsupported, "unsupported version 0");
  expect_error(small_valid().version(0x03000000).build(), ErrorCode::kUnsupported, "big-endian");
  expect_error({}, ErrorCode::kInvalidFormat, "file too short (0 bytes)");
}

TEST(GgufHostile, AbsurdCounts) {
  expect_error(small_valid().tensor_count(uint64_t{1} << 62).build(), ErrorCode::kOutOfRange,
               "4611686018427387904 tensors");
  expect_error(small_valid().kv_count(~uint64_t{0}).build(), ErrorCode::kOutOfRange,
               "18446744073709551615 metadata entries");
  // Each count alone fits the remaining bytes, both together do not.
  const auto b = small_valid().build();
  expect_error(small_valid().kv_count(b.size() / 14).tensor_count(b.size() / 33).build(),
               ErrorCode::kOutOfRange, "bytes follow");
  // A count that fits the bytes but not the entries really there: the reader then takes tensor
  // infos for KVs; whatever it makes of them, it must fail rather than misread.
  EXPECT_FALSE(parse(small_valid().kv_count(16).build()).ok());
}

TEST(GgufHostile, StringLengths) {
  GgufBuilder::Bytes huge;
  GgufBuilder::put<uint64_t>(huge, 1000);  // length beyond the file, under the limit
  huge.resize(huge.size() + 10, 'x');
  expect_error(GgufBuilder().raw_kv("k", 8, huge).build(), ErrorCode::kOutOfRange,
               "metadata 'k': string value length 1000 at offset");
  GgufBuilder::Bytes over;
  GgufBuilder::put<uint64_t>(over, uint64_t{1} << 40);
  expect_error(GgufBuilder().raw_kv("k", 8, over).build(), ErrorCode::kOutOfRange,
               "exceeds the limit");
  // Key lengths: absurd, over the spec's 65535, and empty.
  std::vector<std::byte> b = GgufBuilder().string("key", "v").build();
  const uint64_t absurd = ~uint64_t{0};
  std::memcpy(b.data() + 24, &absurd, 8);
  expect_error(b, ErrorCode::kOutOfRange, "metadata #0: key length 18446744073709551615");
  expect_error(GgufBuilder().string(std::string(70000, 'k'), "v").build(), ErrorCode::kOutOfRange,
               "key length 70000");
  expect_error(GgufBuilder().string("", "v").build(), ErrorCode::kInvalidFormat,
               "metadata #0: empty key");
}

TEST(GgufHostile, Arrays) {
  GgufBuilder::Bytes absurd;
  GgufBuilder::put<uint32_t>(absurd, 4);  // u32 items
  GgufBuilder::put<uint64_t>(absurd, uint64_t{1} << 61);
  expect_error(GgufBuilder().raw_kv("arr", 9, absurd).build(), ErrorCode::kOutOfRange,
               "metadata 'arr': array length 2305843009213693952");

  GgufBuilder::Bytes nested;
  GgufBuilder::put<uint32_t>(nested, 9);
  GgufBuilder::put<uint64_t>(nested, 1);
  GgufBuilder::put<uint32_t>(nested, 4);
  GgufBuilder::put<uint64_t>(nested, 0);
  expect_error(GgufBuilder().raw_kv("arr", 9, nested).build(), ErrorCode::kInvalidFormat,
               "nested array");

  GgufBuilder::Bytes bad_elem;
  GgufBuilder::put<uint32_t>(bad_elem, 13);
  GgufBuilder::put<uint64_t>(bad_elem, 0);
  expect_error(GgufBuilder().raw_kv("arr", 9, bad_elem).build(), ErrorCode::kInvalidFormat,
               "unknown array element type 13");

  // A bad item deep in a string array names the item.
  GgufBuilder::Bytes strings;
  GgufBuilder::put<uint32_t>(strings, 8);
  GgufBuilder::put<uint64_t>(strings, 3);
  GgufBuilder::put_str(strings, "ok");
  GgufBuilder::put_str(strings, "ok");
  GgufBuilder::put<uint64_t>(strings, 999);
  expect_error(GgufBuilder().raw_kv("toks", 9, strings).build(), ErrorCode::kOutOfRange,
               "(array item 2)");
}

TEST(GgufHostile, ValueTypes) {
  expect_error(GgufBuilder().raw_kv("k", 13, {0, 0, 0, 0}).build(), ErrorCode::kInvalidFormat,
               "metadata 'k': unknown value type 13");
  expect_error(GgufBuilder().raw_kv("k", 0xffffffffu, {0}).build(), ErrorCode::kInvalidFormat,
               "unknown value type 4294967295");
  expect_error(GgufBuilder().scalar<uint8_t>("b", GgufType::kBool, 2).build(),
               ErrorCode::kInvalidFormat, "bool value 2");
  expect_error(GgufBuilder().string("dup", "a").scalar<uint32_t>("dup", GgufType::kU32, 1).build(),
               ErrorCode::kInvalidFormat, "duplicate metadata 'dup'");
}

TEST(GgufHostile, TensorTypes) {
  expect_error(GgufBuilder().tensor("blk.0.ffn_down.weight", {256, 2}, 12, 0, 0).build(),
               ErrorCode::kUnsupported,
               "tensor 'blk.0.ffn_down.weight': unsupported tensor type 12 (Q4_K)");
  expect_error(GgufBuilder().tensor("x", {32}, 9, 0, 0).build(), ErrorCode::kUnsupported,
               "unsupported tensor type 9 (Q8_1)");
  expect_error(GgufBuilder().tensor("x", {32}, 1000, 0, 0).build(), ErrorCode::kUnsupported,
               "unsupported tensor type 1000 (unknown)");
  expect_error(GgufBuilder().tensor("x", {33, 2}, kQ4_1).build(), ErrorCode::kInvalidFormat,
               "tensor 'x': dims[0] = 33 is not a multiple of the Q4_1 block size 32");
}

TEST(GgufHostile, TensorShapes) {
  expect_error(GgufBuilder().tensor("x", {}, kF32, 0, 0).build(), ErrorCode::kInvalidFormat,
               "tensor 'x': n_dims 0");
  expect_error(GgufBuilder().tensor("x", {1, 1, 1, 1, 1}, kF32).build(), ErrorCode::kInvalidFormat,
               "tensor 'x': n_dims 5");
  expect_error(GgufBuilder().tensor("x", {4, 0}, kF32, 0, 0).build(), ErrorCode::kInvalidFormat,
               "tensor 'x': dims[1] at offset");
  const uint64_t big = uint64_t{1} << 32;
  expect_error(GgufBuilder().tensor("x", {big, big, big}, kF32, 0, 0).build(),
               ErrorCode::kOutOfRange, "dims[1] = 4294967296");
  expect_error(GgufBuilder().tensor("x", {~uint64_t{0}}, kF32, 0, 0).build(),
               ErrorCode::kOutOfRange, "element count overflow");
  // Large but representable: fails on the data range, not on arithmetic.
  expect_error(
      GgufBuilder().tensor("x", {uint64_t{1} << 28, uint64_t{1} << 27}, kF32, 0, 0).build(),
      ErrorCode::kOutOfRange, "ends past the end of the file");
  expect_error(GgufBuilder().tensor("", {4}, kF32).build(), ErrorCode::kInvalidFormat,
               "tensor #0: empty name");
  expect_error(GgufBuilder().tensor("w", {4}, kF32).tensor("w", {4}, kF32).build(),
               ErrorCode::kInvalidFormat, "duplicate tensor 'w'");
}

TEST(GgufHostile, TensorOffsets) {
  expect_error(GgufBuilder().tensor("a", {8}, kF32).tensor("b", {8}, kF32, 40).build(),
               ErrorCode::kInvalidFormat,
               "tensor 'b': data offset 40 is not a multiple of the alignment 32");
  expect_error(
      GgufBuilder().tensor("blk.0.attn_q.weight", {8}, kF32).tensor("b", {8}, kF32, 4096).build(),
      ErrorCode::kOutOfRange, "tensor 'b': data [4096, 4096 + 32) ends past the end of the file");
  // An offset near 2^64 must not wrap around when the end is computed.
  expect_error(GgufBuilder().tensor("a", {8}, kF32).tensor("b", {8}, kF32, ~uint64_t{31}).build(),
               ErrorCode::kOutOfRange, "tensor 'b'");
  expect_error(GgufBuilder().tensor("a", {16}, kF32).tensor("b", {8}, kF32, 32).build(),
               ErrorCode::kInvalidFormat, "tensors 'a' and 'b' overlap");
  // Tensor infos present but the file ends before the aligned data section.
  const auto whole = GgufBuilder().tensor("a", {8}, kF32).build();
  ASSERT_GT(whole.size(), 32u);
  const std::vector<std::byte> cut(whole.begin(), whole.end() - 32);
  expect_error(cut, ErrorCode::kOutOfRange, "ends past the end of the file");
}

TEST(GgufHostile, Alignment) {
  auto with_alignment = [](uint32_t a) {
    return GgufBuilder()
        .scalar<uint32_t>("general.alignment", GgufType::kU32, a)
        .tensor("a", {8}, kF32)
        .build();
  };
  expect_error(with_alignment(0), ErrorCode::kInvalidFormat,
               "general.alignment 0 must be a power of two");
  expect_error(with_alignment(3), ErrorCode::kInvalidFormat, "general.alignment 3");
  expect_error(with_alignment(1u << 30), ErrorCode::kInvalidFormat, "general.alignment 1073741824");
  expect_error(GgufBuilder().scalar<int32_t>("general.alignment", GgufType::kI32, -32).build(),
               ErrorCode::kInvalidFormat, "general.alignment -32");
  expect_error(GgufBuilder().string("general.alignment", "32").build(), ErrorCode::kInvalidFormat,
               "general.alignment has type string");
}

TEST(MappedFileTest, ErrorsAndEmptyFiles) {
  auto missing = MappedFile::open("/nonexistent/qgate/model.gguf");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_CONTAINS(missing.error().message(), "No such file or directory");

  auto dir = MappedFile::open("/tmp");
  ASSERT_FALSE(dir.ok());
  EXPECT_CONTAINS(dir.error().message(), "not a regular file");

  const auto empty_path = std::filesystem::temp_directory_path() / "qgate_test_empty.gguf";
  {
    std::FILE* f = std::fopen(empty_path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  auto empty = MappedFile::open(empty_path.string());
  ASSERT_TRUE(empty.ok()) << empty.error().to_string();
  EXPECT_EQ(empty->bytes().size(), 0u);
  auto g = GgufFile::open(empty_path.string());
  ASSERT_FALSE(g.ok());
  EXPECT_CONTAINS(g.error().message(), "file too short");
  EXPECT_CONTAINS(g.error().message(), empty_path.string());
  std::filesystem::remove(empty_path);

  // Moves transfer the mapping; the moved-from object is empty.
  const auto path = source_dir() / "tests/fuzz/corpus/gguf/tiny.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "seed corpus not found at " << path;
  auto m = MappedFile::open(path.string());
  ASSERT_TRUE(m.ok());
  const std::byte* p = m->bytes().data();
  MappedFile a = std::move(*m);
  EXPECT_EQ(a.bytes().data(), p);
  EXPECT_EQ(m->bytes().size(), 0u);
  MappedFile b;
  b = std::move(a);
  EXPECT_EQ(b.bytes().data(), p);
  EXPECT_EQ(b.path(), path.string());
  EXPECT_EQ(static_cast<char>(b.bytes()[0]), 'G');
}

}  // namespace
}  // namespace qgate
