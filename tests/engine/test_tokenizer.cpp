// Tokenizer tests: real-model encodings, special tokens, decoding, streaming decode, and the
// errors malformed or unsupported tokenizer data must produce. The exhaustive comparison with HF
// `tokenizers` over thousands of strings lives in tests/python/test_tokenizer_vs_hf.py.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "engine/unicode.h"
#include "gguf_builder.h"

namespace qgate {
namespace {

std::string model_path() {
  std::string dir;
  if (const char* d = std::getenv("QGATE_MODEL_DIR"); d != nullptr && *d != '\0') {
    dir = d;
  } else {
    const char* src = std::getenv("QGATE_SOURCE_DIR");
    dir = std::string(src != nullptr ? src : ".") + "/models";
  }
  return dir + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

// The real model's tokenizer, loaded once; nullptr when the file is absent.
const Tokenizer* smollm() {
  static const Tokenizer* tok = []() -> const Tokenizer* {
    if (!std::filesystem::exists(model_path())) return nullptr;
    auto gguf = GgufFile::open(model_path());
    if (!gguf.ok()) {
      ADD_FAILURE() << gguf.error().to_string();
      return nullptr;
    }
    auto t = Tokenizer::from_gguf(*gguf);
    if (!t.ok()) {
      ADD_FAILURE() << t.error().to_string();
      return nullptr;
    }
    return new Tokenizer(std::move(t).value());
  }();
  return tok;
}

#define REQUIRE_SMOLLM()           \
  const Tokenizer* tok = smollm(); \
  if (tok == nullptr)              \
  GTEST_SKIP() << "model not found at " << model_path() << " (set QGATE_MODEL_DIR)"

using Ids = std::vector<int32_t>;

// Expected ids come from HF `tokenizers` 0.23 with the tokenizer that
// tests/python/make_hf_tokenizer.py builds from this GGUF:
//   build_hf_tokenizer(path).encode(text).ids
TEST(TokenizerSmolLm, KnownEncodingsMatchHf) {
  REQUIRE_SMOLLM();
  struct Case {
    std::string text;
    Ids ids;
  };
  const std::vector<Case> cases = {
      {"Hello, world!", {19556, 28, 905, 17}},
      {"It's 2024 and we're testing 12345 tokens.",
       {1589, 506, 216, 34, 32, 34, 36, 284, 392, 2316, 3728, 216, 33, 34, 35, 36, 37, 17837, 30}},
      {"def f(x):\n    return x  # ok\n",
       {1604, 275, 24, 104, 727, 472, 1003, 1792, 216, 907, 10907, 198}},
      {"<|im_start|>user\nHi!<|im_end|>\n", {1, 4093, 198, 26843, 17, 2, 198}},
      {"  \t\n\n  leading spaces", {256, 197, 8866, 2899, 5600}},
      {"naïve café 日本語 🤗👍🏽",
       {3546, 46494, 37366, 17097, 241, 115, 40993, 179, 120, 248, 15107, 114, 241, 10813, 235, 231,
        10813, 233, 138}},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(tok->encode(c.text), c.ids) << c.text;
    EXPECT_EQ(tok->decode(c.ids), c.text);
  }
}

TEST(TokenizerSmolLm, Metadata) {
  REQUIRE_SMOLLM();
  EXPECT_EQ(tok->vocab_size(), 49152);
  EXPECT_EQ(tok->pre_tokenizer(), PreTokenizer::kSmolLm);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_FALSE(tok->add_bos());
  // EOS (<|im_end|>) first, then <|endoftext|>, the other end marker the model knows.
  EXPECT_EQ(tok->stop_ids(), (Ids{2, 0}));
  EXPECT_NE(tok->chat_template_source().find("<|im_start|>"), std::string::npos);
  EXPECT_EQ(tok->token_id("<|im_start|>"), 1);
  EXPECT_EQ(tok->token_id("Ġthe"), 260);
  EXPECT_FALSE(tok->token_id("definitely not a token").has_value());
  EXPECT_TRUE(tok->is_special(0));
  EXPECT_FALSE(tok->is_special(260));
  EXPECT_FALSE(tok->is_special(-1));
  EXPECT_FALSE(tok->is_special(1 << 20));
}

TEST(TokenizerSmolLm, SpecialTokensOnlyWithParseSpecial) {
  REQUIRE_SMOLLM();
  const std::string text = "<|im_start|>assistant";
  Ids with = tok->encode(text, /*parse_special=*/true);
  Ids without = tok->encode(text, /*parse_special=*/false);
  ASSERT_FALSE(with.empty());
  EXPECT_EQ(with[0], 1);
  for (int32_t id : without) EXPECT_FALSE(tok->is_special(id)) << id;
  EXPECT_GT(without.size(), with.size());
  EXPECT_EQ(tok->decode(without), text);
  // Near misses stay ordinary text; the longest special match wins when two could start here.
  for (const std::string near : {"<|im_start|", "<|im_start", "<|IM_START|>", "<|im_end|"}) {
    for (int32_t id : tok->encode(near)) EXPECT_FALSE(tok->is_special(id)) << near;
  }
  EXPECT_EQ(tok->encode("<|im_end|><|im_end|>"), (Ids{2, 2}));
  EXPECT_EQ(tok->encode("x<|endoftext|>y"), (Ids{104, 0, 105}));
}

TEST(TokenizerSmolLm, DecodeSkipsSpecialOnRequest) {
  REQUIRE_SMOLLM();
  Ids ids = tok->encode("<|im_start|>Hi<|im_end|>");
  EXPECT_EQ(tok->decode(ids, /*skip_special=*/false), "<|im_start|>Hi<|im_end|>");
  EXPECT_EQ(tok->decode(ids, /*skip_special=*/true), "Hi");
  // Ids no token has decode to nothing rather than failing.
  EXPECT_EQ(tok->decode(Ids{-5, 49152, 1 << 30}), "");
  EXPECT_EQ(tok->token_bytes(49152), "");
}

TEST(TokenizerSmolLm, RoundTripsEveryByteThatHasAToken) {
  REQUIRE_SMOLLM();
  // Invalid UTF-8 round-trips too: each byte is its own byte-level token. SmolLM2's vocabulary
  // lacks a few bytes that never occur in UTF-8 text (C0, C1, F5..FF) and some control bytes.
  std::string bytes;
  int missing = 0;
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    unicode::append_utf8(ch, unicode::byte_to_codepoint(static_cast<uint8_t>(b)));
    if (tok->token_id(ch)) {
      bytes.push_back(static_cast<char>(b));
    } else {
      ++missing;
    }
  }
  EXPECT_EQ(missing, 21);
  bytes += "\xF0\x9F\xA4 trailing \xE2\x82";
  EXPECT_EQ(tok->decode(tok->encode(bytes, false)), bytes);
  EXPECT_TRUE(tok->encode("").empty());
}

TEST(TokenizerSmolLm, BytesWithoutATokenAreDroppedLikeHf) {
  REQUIRE_SMOLLM();
  // HF's BPE without an unk token drops them; ids from HF as in KnownEncodingsMatchHf.
  EXPECT_EQ(tok->encode("a\x04"
                        "b\x06"),
            (Ids{81, 82}));
  EXPECT_EQ(tok->encode("a\U00040000b"), (Ids{81, 218, 218, 218, 82}));  // F1 80 80 80: no F1
}

TEST(TokenizerSmolLm, TokenBytesAreRawBytes) {
  REQUIRE_SMOLLM();
  // "Ġthe" is stored byte-level encoded; its bytes are " the".
  EXPECT_EQ(tok->token_bytes(260), " the");
  EXPECT_EQ(tok->token_bytes(2), "<|im_end|>");
}

TEST(TokenizerSmolLm, EncodesAFewKilobytesQuickly) {
  REQUIRE_SMOLLM();
  std::string text;
  while (text.size() < 4096) text += "The quick brown fox jumps over the lazy dog; 12345 times! ";
  Ids ids = tok->encode(text);
  EXPECT_EQ(tok->decode(ids), text);
  EXPECT_LT(ids.size(), text.size() / 2);
}

TEST(IncrementalDecoder, HoldsBackSplitEmoji) {
  REQUIRE_SMOLLM();
  // 🤗 (F0 9F A4 97) encodes as three byte-level tokens: F0 9F | A4 | 97.
  Ids ids = tok->encode("a🤗b");
  ASSERT_EQ(ids.size(), 5u);
  IncrementalDecoder dec(*tok);
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(dec.push(id));
  EXPECT_EQ(pieces, (std::vector<std::string>{"a", "", "", "🤗", "b"}));
  EXPECT_EQ(dec.flush(), "");
}

TEST(IncrementalDecoder, FlushReplacesTruncatedCharacter) {
  REQUIRE_SMOLLM();
  Ids ids = tok->encode("🤗");
  ASSERT_EQ(ids.size(), 3u);
  IncrementalDecoder dec(*tok);
  EXPECT_EQ(dec.push(ids[0]), "");
  EXPECT_EQ(dec.push(ids[1]), "");
  EXPECT_EQ(dec.flush(), "\xEF\xBF\xBD");  // one U+FFFD for the truncated sequence
  EXPECT_EQ(dec.flush(), "");
}

TEST(IncrementalDecoder, InvalidBytesBecomeReplacementAtOnce) {
  REQUIRE_SMOLLM();
  IncrementalDecoder dec(*tok);
  // A lone continuation byte can never complete, so it is replaced without waiting.
  Ids ids = tok->encode("\x80x", false);
  std::string out;
  for (int32_t id : ids) out += dec.push(id);
  EXPECT_EQ(out, "\xEF\xBF\xBDx");
}

TEST(IncrementalDecoder, SkipsSpecialTokensByDefault) {
  REQUIRE_SMOLLM();
  IncrementalDecoder skip(*tok);
  IncrementalDecoder keep(*tok, /*skip_special=*/false);
  EXPECT_EQ(skip.push(2), "");
  EXPECT_EQ(keep.push(2), "<|im_end|>");
}

TEST(Unicode, Utf8DecodingFollowsMaximalSubparts) {
  // Same substitution as Python's errors="replace": "\xE2\x82" + "A" is one U+FFFD then A.
  EXPECT_EQ(unicode::to_valid_utf8("\xE2\x82"
                                   "A"),
            "\xEF\xBF\xBD"
            "A");
  EXPECT_EQ(unicode::to_valid_utf8("\xED\xA0\x80"),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");                          // surrogate
  EXPECT_EQ(unicode::to_valid_utf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong
  EXPECT_EQ(unicode::complete_prefix_len("ab\xF0\x9F\xA4"), 2u);
  EXPECT_EQ(unicode::complete_prefix_len("ab\xF0\x9F\xA4\x97"), 6u);
  EXPECT_EQ(unicode::complete_prefix_len("\xFF"), 1u);
}

TEST(Unicode, ByteMappingIsABijection) {
  std::vector<bool> seen(256, false);
  for (int b = 0; b < 256; ++b) {
    uint32_t cp = unicode::byte_to_codepoint(static_cast<uint8_t>(b));
    EXPECT_EQ(unicode::byte_from_codepoint(cp), b);
  }
  EXPECT_EQ(unicode::byte_to_codepoint(' '), 0x120u);  // 'Ġ'
  EXPECT_EQ(unicode::byte_to_codepoint('A'), static_cast<uint32_t>('A'));
  EXPECT_EQ(unicode::byte_from_codepoint(0x4E00), -1);
}

TEST(Unicode, SplitPatterns) {
  using V = std::vector<std::string_view>;
  EXPECT_EQ(unicode::split_gpt2("Hello  world's 123!!\n\n x"),
            (V{"Hello", " ", " world", "'s", " 123", "!!", "\n\n", " x"}));
  EXPECT_EQ(unicode::split_llama3("I'VE 12345\r\n\r\n  x", 3),
            (V{"I", "'VE", " ", "123", "45", "\r\n\r\n", " ", " x"}));
  EXPECT_EQ(unicode::split_llama3("12345", 1), (V{"1", "2", "3", "4", "5"}));
  EXPECT_EQ(unicode::split_digits("ab12 c"), (V{"ab", "1", "2", " c"}));
}

// ---- tokenizer.json ----------------------------------------------------------------------

// A tiny but complete byte-level BPE: every byte is a token (ids 0..255 in byte order), plus
// merges for "he", "ll", "hell", "hello" and one special token.
std::string tiny_json(const std::string& merges, const std::string& pre_tokenizer,
                      const std::string& extra_vocab = "") {
  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    unicode::append_utf8(ch, unicode::byte_to_codepoint(static_cast<uint8_t>(b)));
    if (ch == "\"" || ch == "\\") ch = "\\" + ch;
    vocab += "\"" + ch + "\": " + std::to_string(b) + ", ";
  }
  vocab += R"("he": 256, "ll": 257, "hell": 258, "hello": 259)" + extra_vocab;
  return R"({"version": "1.0", "normalizer": null,
    "added_tokens": [{"id": 260, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                      "rstrip": false, "normalized": false, "special": true}],
    "pre_tokenizer": )" +
         pre_tokenizer + R"(,
    "model": {"type": "BPE", "vocab": {)" +
         vocab + R"(}, "merges": )" + merges + "}}";
}

const std::string kByteLevel =
    R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})";

TEST(TokenizerJson, TinyModelBothMergeForms) {
  for (const std::string& merges :
       {std::string(R"(["h e", "l l", "he ll", "hell o"])"),
        std::string(R"([["h", "e"], ["l", "l"], ["he", "ll"], ["hell", "o"]])")}) {
    auto t = Tokenizer::from_hf_json(tiny_json(merges, kByteLevel));
    ASSERT_TRUE(t.ok()) << t.error().to_string();
    EXPECT_EQ(t->vocab_size(), 261);
    EXPECT_EQ(t->pre_tokenizer(), PreTokenizer::kGpt2);
    EXPECT_EQ(t->encode("hello"), (Ids{259}));
    EXPECT_EQ(t->encode("hello<|endoftext|>hel"), (Ids{259, 260, 256, 'l'}));
    EXPECT_EQ(t->encode("<|endoftext|>", false).size(), 13u);
    EXPECT_EQ(t->eos_id(), 260);  // by the conventional name
    EXPECT_EQ(t->stop_ids(), (Ids{260}));
    EXPECT_TRUE(t->is_special(260));
  }
}

TEST(TokenizerJson, AddedTokenStripAndNonSpecial) {
  // A non-special added token with lstrip/rstrip swallows the whitespace around it and matches
  // even without parse_special. Expected ids from HF tokenizers 0.23 on the same vocabulary
  // (bytes in byte order, AddedToken("<sep>", lstrip=True, rstrip=True, special=False)).
  std::string json = tiny_json("[]", kByteLevel);
  const std::string added = R"("added_tokens": [)";
  json.replace(json.find(added), added.size(),
               added + R"({"id": 261, "content": "<sep>", "lstrip": true, "rstrip": true,
                           "special": false, "single_word": false, "normalized": false}, )");
  auto t = Tokenizer::from_hf_json(json);
  ASSERT_TRUE(t.ok()) << t.error().to_string();
  EXPECT_EQ(t->vocab_size(), 262);
  EXPECT_EQ(t->encode("a  <sep>  b"), (Ids{'a', 261, 'b'}));
  EXPECT_EQ(t->encode("a  <sep>  b", /*parse_special=*/false), (Ids{'a', 261, 'b'}));
  EXPECT_FALSE(t->is_special(261));
  EXPECT_EQ(t->decode(Ids{261}, /*skip_special=*/true), "<sep>");
}

TEST(TokenizerJson, RecognizesPreTokenizers) {
  const std::string merges = "[]";
  auto split = [](const std::string& regex) {
    return R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": ")" +
           regex +
           R"("}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})";
  };
  struct Case {
    std::string pre;
    PreTokenizer want;
  };
  const std::vector<Case> cases = {
      {kByteLevel, PreTokenizer::kGpt2},
      {R"({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, )" +
           kByteLevel + "]}",
       PreTokenizer::kSmolLm},
      {split(
           R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+)"),
       PreTokenizer::kLlama3},
      {split(
           R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+)"),
       PreTokenizer::kQwen2},
  };
  for (const Case& c : cases) {
    auto t = Tokenizer::from_hf_json(tiny_json(merges, c.pre));
    ASSERT_TRUE(t.ok()) << t.error().to_string();
    EXPECT_EQ(t->pre_tokenizer(), c.want);
  }
}

TEST(TokenizerJson, Errors) {
  struct Case {
    std::string json;
    ErrorCode code;
    std::string mentions;
  };
  const std::vector<Case> cases = {
      {"{not json", ErrorCode::kInvalidFormat, "not valid JSON"},
      {R"({"model": {"type": "WordPiece"}})", ErrorCode::kUnsupported, "WordPiece"},
      {tiny_json(R"(["h e", "x q9"])", kByteLevel), ErrorCode::kInvalidFormat, "merge 1"},
      {tiny_json(R"(["h e", "e h"])", kByteLevel), ErrorCode::kInvalidFormat,
       "'eh', not in the vocabulary"},
      {tiny_json(R"(["h e f"])", kByteLevel), ErrorCode::kInvalidFormat, "merges[0]"},
      {tiny_json(R"([["h"]])", kByteLevel), ErrorCode::kInvalidFormat, "merges[0]"},
      {tiny_json("[]", R"({"type": "Whitespace"})"), ErrorCode::kUnsupported, "Whitespace"},
      {tiny_json("[]", "null"), ErrorCode::kUnsupported, "pre_tokenizer"},
      {tiny_json(
           "[]",
           R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})"),
       ErrorCode::kUnsupported, "\\w+"},
      {tiny_json("[]", R"({"type": "ByteLevel", "add_prefix_space": true, "use_regex": true})"),
       ErrorCode::kUnsupported, "add_prefix_space"},
      {tiny_json("[]", kByteLevel, R"(, "dup": 5)"), ErrorCode::kInvalidFormat, "id 5 twice"},
      {tiny_json("[]", kByteLevel, R"(, "neg": -1)"), ErrorCode::kInvalidFormat, "'neg'"},
  };
  for (const Case& c : cases) {
    auto t = Tokenizer::from_hf_json(c.json);
    ASSERT_FALSE(t.ok()) << c.mentions;
    EXPECT_EQ(t.error().code(), c.code) << t.error().to_string();
    EXPECT_NE(t.error().message().find(c.mentions), std::string::npos) << t.error().to_string();
  }
  auto missing = Tokenizer::from_hf_json_file("/nonexistent/tokenizer.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
}

// ---- GGUF errors ---------------------------------------------------------------------------

Result<Tokenizer> tokenizer_from(const testing::GgufBuilder& b, std::vector<std::byte>& keep) {
  keep = b.build();
  auto gguf = GgufFile::parse(keep);
  if (!gguf.ok()) return gguf.error();
  return Tokenizer::from_gguf(*gguf);
}

testing::GgufBuilder tiny_gguf(const std::string& model, const std::string& pre) {
  testing::GgufBuilder b;
  b.string("tokenizer.ggml.model", model).string("tokenizer.ggml.pre", pre);
  b.string_array("tokenizer.ggml.tokens", {"a", "b", "ab", "<|im_end|>"});
  b.array<int32_t>("tokenizer.ggml.token_type", GgufType::kI32, {1, 1, 1, 3});
  b.scalar<uint32_t>("tokenizer.ggml.eos_token_id", GgufType::kU32, 3);
  return b;
}

TEST(TokenizerGguf, TinyModel) {
  std::vector<std::byte> keep;
  auto b = tiny_gguf("gpt2", "gpt2");
  b.string_array("tokenizer.ggml.merges", {"a b"});
  auto t = tokenizer_from(b, keep);
  ASSERT_TRUE(t.ok()) << t.error().to_string();
  EXPECT_EQ(t->encode("abab<|im_end|>"), (Ids{2, 2, 3}));  // "abab" is one word: a b a b -> ab ab
  EXPECT_EQ(t->stop_ids(), (Ids{3}));
}

TEST(TokenizerGguf, Errors) {
  struct Case {
    testing::GgufBuilder builder;
    ErrorCode code;
    std::string mentions;
  };
  std::vector<Case> cases;
  cases.push_back({tiny_gguf("llama", "default").string_array("tokenizer.ggml.merges", {}),
                   ErrorCode::kUnsupported, "'llama'"});
  cases.push_back({tiny_gguf("gpt2", "deepseek-coder").string_array("tokenizer.ggml.merges", {}),
                   ErrorCode::kUnsupported, "deepseek-coder"});
  cases.push_back({tiny_gguf("gpt2", "gpt2").string_array("tokenizer.ggml.merges", {"a c"}),
                   ErrorCode::kInvalidFormat, "merge 0"});
  cases.push_back({tiny_gguf("gpt2", "gpt2").string_array("tokenizer.ggml.merges", {"ab"}),
                   ErrorCode::kInvalidFormat, "merges[0]"});
  cases.push_back({tiny_gguf("gpt2", "gpt2"), ErrorCode::kNotFound, ""});  // no merges at all
  cases.push_back({tiny_gguf("gpt2", "gpt2")
                       .string_array("tokenizer.ggml.merges", {})
                       .scalar<uint32_t>("tokenizer.ggml.bos_token_id", GgufType::kU32, 99),
                   ErrorCode::kInvalidFormat, "bos id 99"});
  for (Case& c : cases) {
    std::vector<std::byte> keep;
    auto t = tokenizer_from(c.builder, keep);
    ASSERT_FALSE(t.ok()) << c.mentions;
    EXPECT_EQ(t.error().code(), c.code) << t.error().to_string();
    EXPECT_NE(t.error().message().find(c.mentions), std::string::npos) << t.error().to_string();
  }
}

}  // namespace
}  // namespace qgate
