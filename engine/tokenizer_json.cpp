#include "engine/tokenizer_json.h"

#include <boost/json.hpp>
#include <optional>
#include <string_view>
#include <vector>

#include "engine/gguf.h"
#include "engine/split_patterns.h"

namespace qgate {

namespace {

namespace json = boost::json;

constexpr std::string_view kLlama3Pattern = split_patterns::kLlama3;
constexpr std::string_view kQwen2Pattern = split_patterns::kQwen2;

// GGUF token types (llama.cpp llama_token_type).
constexpr int64_t kControl = 3;
constexpr int64_t kUserDefined = 4;

struct GgufVocab {
  std::string pre;
  std::vector<std::string> tokens;
  std::vector<int64_t> types;  // empty when the file has none
  std::optional<int64_t> bos, eos, pad, unk;
  bool add_bos = false;
};

Result<GgufVocab> read_vocab(const GgufFile& gguf) {
  GgufVocab v;
  QGATE_ASSIGN_OR_RETURN(std::string model, gguf.get_string("tokenizer.ggml.model"));
  if (model != "gpt2") {
    return make_error(ErrorCode::kUnsupported, "tokenizer export: tokenizer.ggml.model '" + model +
                                                   "' is not byte-level BPE ('gpt2')");
  }
  QGATE_ASSIGN_OR_RETURN(v.pre, gguf.get_string("tokenizer.ggml.pre"));
  QGATE_ASSIGN_OR_RETURN(v.tokens, gguf.get_string_array("tokenizer.ggml.tokens"));
  if (gguf.has("tokenizer.ggml.token_type")) {
    QGATE_ASSIGN_OR_RETURN(v.types, gguf.get_int_array("tokenizer.ggml.token_type"));
    if (v.types.size() != v.tokens.size()) {
      return make_error(ErrorCode::kInvalidFormat,
                        "tokenizer export: tokenizer.ggml.token_type has " +
                            std::to_string(v.types.size()) + " entries for " +
                            std::to_string(v.tokens.size()) + " tokens");
    }
  }
  const int64_t n = static_cast<int64_t>(v.tokens.size());
  for (auto [key, slot] : {std::pair{"tokenizer.ggml.bos_token_id", &v.bos},
                           std::pair{"tokenizer.ggml.eos_token_id", &v.eos},
                           std::pair{"tokenizer.ggml.padding_token_id", &v.pad},
                           std::pair{"tokenizer.ggml.unknown_token_id", &v.unk}}) {
    if (!gguf.has(key)) continue;
    QGATE_ASSIGN_OR_RETURN(int64_t id, gguf.get_int(key));
    if (id < 0 || id >= n) {
      return make_error(ErrorCode::kInvalidFormat, std::string("tokenizer export: ") + key + " " +
                                                       std::to_string(id) +
                                                       " is outside the vocabulary");
    }
    *slot = id;
  }
  if (gguf.has("tokenizer.ggml.add_bos_token")) {
    QGATE_ASSIGN_OR_RETURN(v.add_bos, gguf.get_bool("tokenizer.ggml.add_bos_token"));
  }
  return v;
}

json::object byte_level(bool use_regex) {
  // add_prefix_space must be false: llama.cpp's byte-level models never add one, and qgate's
  // reader rejects a prefix space.
  return {{"type", "ByteLevel"},
          {"add_prefix_space", false},
          {"trim_offsets", true},
          {"use_regex", use_regex}};
}

json::object regex_split(std::string_view pattern) {
  return {{"type", "Split"},
          {"pattern", json::object{{"Regex", pattern}}},
          {"behavior", "Isolated"},
          {"invert", false}};
}

Result<json::value> pre_tokenizer_for(const std::string& pre) {
  if (pre == "smollm") {
    // SmolLM2's own tokenizer.json: digits one by one, then the GPT-2 regex inside ByteLevel.
    return json::value(json::object{
        {"type", "Sequence"},
        {"pretokenizers", json::array{json::object{{"type", "Digits"}, {"individual_digits", true}},
                                      byte_level(true)}}});
  }
  if (pre == "gpt2") return json::value(byte_level(true));
  if (pre == "llama-bpe" || pre == "llama3" || pre == "qwen2") {
    std::string_view pattern = pre == "qwen2" ? kQwen2Pattern : kLlama3Pattern;
    return json::value(
        json::object{{"type", "Sequence"},
                     {"pretokenizers", json::array{regex_split(pattern), byte_level(false)}}});
  }
  return make_error(
      ErrorCode::kUnsupported,
      "tokenizer export: tokenizer.ggml.pre '" + pre +
          "' has no HF equivalent here (known: smollm, gpt2, llama-bpe, llama3, qwen2)");
}

bool is_added(const GgufVocab& v, size_t id) {
  return !v.types.empty() && (v.types[id] == kControl || v.types[id] == kUserDefined);
}

json::object added_token_fields(const GgufVocab& v, size_t id) {
  return {{"content", v.tokens[id]}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},         {"normalized", false},  {"special", v.types[id] == kControl}};
}

// BOS is prepended by a TemplateProcessing post-processor in tokenizer.json; that is also how
// Tokenizer::from_hf_json learns add_bos.
json::value post_processor(const GgufVocab& v) {
  if (!v.add_bos || !v.bos) return nullptr;
  const std::string& bos = v.tokens[static_cast<size_t>(*v.bos)];
  auto special = [&] { return json::object{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}; };
  auto seq = [](const char* id) {
    return json::object{{"Sequence", {{"id", id}, {"type_id", 0}}}};
  };
  return json::object{
      {"type", "TemplateProcessing"},
      {"single", json::array{special(), seq("A")}},
      {"pair", json::array{special(), seq("A"), special(), seq("B")}},
      {"special_tokens", json::object{{bos, json::object{{"id", bos},
                                                         {"ids", json::array{*v.bos}},
                                                         {"tokens", json::array{bos}}}}}}};
}

}  // namespace

Result<std::string> tokenizer_json_from_gguf(const GgufFile& gguf) {
  QGATE_ASSIGN_OR_RETURN(GgufVocab v, read_vocab(gguf));
  QGATE_ASSIGN_OR_RETURN(json::value pre, pre_tokenizer_for(v.pre));
  QGATE_ASSIGN_OR_RETURN(std::vector<std::string> merges,
                         gguf.get_string_array("tokenizer.ggml.merges"));

  json::object vocab;
  vocab.reserve(v.tokens.size());
  // A JSON object cannot repeat a key: for a text that several ids share the first id wins, as in
  // the GGUF tokenizer and in tokenizers' own from-dict construction.
  for (size_t id = 0; id < v.tokens.size(); ++id) vocab.emplace(v.tokens[id], id);

  json::array merge_pairs;
  merge_pairs.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const std::string& m = merges[r];
    const size_t sp = m.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == m.size() ||
        m.find(' ', sp + 1) != std::string::npos) {
      return make_error(ErrorCode::kInvalidFormat, "tokenizer export: tokenizer.ggml.merges[" +
                                                       std::to_string(r) + "] '" + m +
                                                       "' is not 'a b'");
    }
    merge_pairs.push_back(json::array{m.substr(0, sp), m.substr(sp + 1)});
  }

  json::array added;
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    if (!is_added(v, id)) continue;
    json::object t{{"id", id}};
    for (auto& kv : added_token_fields(v, id)) t.emplace(kv.key(), kv.value());
    added.push_back(std::move(t));
  }

  json::object model{{"type", "BPE"},
                     {"dropout", nullptr},
                     {"unk_token", nullptr},
                     {"continuing_subword_prefix", nullptr},
                     {"end_of_word_suffix", nullptr},
                     {"fuse_unk", false},
                     {"byte_fallback", false},
                     // Llama-3's tokenizer.json looks a word up whole before merging; the GGUF
                     // tokenizer does the same for these pre-tokenizers.
                     {"ignore_merges", v.pre == "llama-bpe" || v.pre == "llama3"}};
  model.emplace("vocab", std::move(vocab));
  model.emplace("merges", std::move(merge_pairs));

  json::object root{{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}};
  root.emplace("added_tokens", std::move(added));
  root.emplace("normalizer", nullptr);
  root.emplace("pre_tokenizer", std::move(pre));
  root.emplace("post_processor", post_processor(v));
  root.emplace("decoder", json::object{{"type", "ByteLevel"},
                                       {"add_prefix_space", true},
                                       {"trim_offsets", true},
                                       {"use_regex", true}});
  root.emplace("model", std::move(model));
  return json::serialize(root);
}

Result<std::string> tokenizer_config_json_from_gguf(const GgufFile& gguf) {
  QGATE_ASSIGN_OR_RETURN(GgufVocab v, read_vocab(gguf));
  json::object root{
      {"add_bos_token", v.add_bos}, {"add_eos_token", false}, {"add_prefix_space", false}};
  json::object decoder;
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    if (is_added(v, id)) decoder.emplace(std::to_string(id), added_token_fields(v, id));
  }
  root.emplace("added_tokens_decoder", std::move(decoder));
  auto text_of = [&](const std::optional<int64_t>& id) -> json::value {
    if (!id) return nullptr;
    return json::value(v.tokens[static_cast<size_t>(*id)]);
  };
  root.emplace("bos_token", text_of(v.bos));
  if (gguf.has("tokenizer.chat_template")) {
    QGATE_ASSIGN_OR_RETURN(std::string tmpl, gguf.get_string("tokenizer.chat_template"));
    root.emplace("chat_template", tmpl);
  }
  root.emplace("clean_up_tokenization_spaces", false);
  root.emplace("eos_token", text_of(v.eos));
  QGATE_ASSIGN_OR_RETURN(std::string arch, gguf.get_string("general.architecture"));
  if (gguf.has(arch + ".context_length")) {
    QGATE_ASSIGN_OR_RETURN(int64_t ctx, gguf.get_int(arch + ".context_length"));
    root.emplace("model_max_length", ctx);
  }
  root.emplace("pad_token", text_of(v.pad));
  // GPT2TokenizerFast ignores add_bos_token, so models that prepend BOS get the generic fast class,
  // which honours tokenizer.json's TemplateProcessing.
  root.emplace("tokenizer_class", v.add_bos ? "PreTrainedTokenizerFast" : "GPT2Tokenizer");
  root.emplace("unk_token", text_of(v.unk));
  return json::serialize(root);
}

}  // namespace qgate
