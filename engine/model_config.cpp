#include "engine/model_config.h"

#include <simdjson.h>

#include "engine/gguf.h"

namespace qgate {

namespace {

// Upper bounds far above any real Llama-family model; they exist so a lying file cannot make
// the engine allocate terabytes.
constexpr int64_t kMaxDim = 1 << 20;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxVocab = 1 << 22;

Status check_range(const char* field, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return make_error(ErrorCode::kInvalidFormat, std::string("model config: ") + field + " = " +
                                                     std::to_string(v) + " is outside [" +
                                                     std::to_string(lo) + ", " +
                                                     std::to_string(hi) + "]");
  }
  return Status::Ok();
}

}  // namespace

Status LlamaConfig::validate() const {
  QGATE_TRY_STATUS(check_range("vocab_size", vocab_size, 1, kMaxVocab));
  QGATE_TRY_STATUS(check_range("hidden_size", hidden_size, 1, kMaxDim));
  QGATE_TRY_STATUS(check_range("num_hidden_layers", num_layers, 1, kMaxLayers));
  QGATE_TRY_STATUS(check_range("num_attention_heads", num_heads, 1, 4096));
  QGATE_TRY_STATUS(check_range("num_key_value_heads", num_kv_heads, 1, num_heads));
  QGATE_TRY_STATUS(check_range("head_dim", head_dim, 2, 1024));
  QGATE_TRY_STATUS(check_range("intermediate_size", intermediate_size, 1, kMaxDim));
  QGATE_TRY_STATUS(check_range("max_position_embeddings", max_position_embeddings, 1, 1 << 24));
  if (num_heads % num_kv_heads != 0) {
    return make_error(ErrorCode::kInvalidFormat,
                      "model config: num_attention_heads (" + std::to_string(num_heads) +
                          ") is not a multiple of num_key_value_heads (" +
                          std::to_string(num_kv_heads) + ")");
  }
  if (head_dim % 2 != 0) {
    return make_error(ErrorCode::kInvalidFormat, "model config: head_dim must be even for RoPE");
  }
  if (!(rms_norm_eps > 0.0f && rms_norm_eps < 1.0f)) {
    return make_error(ErrorCode::kInvalidFormat, "model config: rms_norm_eps must be in (0, 1)");
  }
  if (!(rope_theta > 0.0f)) {
    return make_error(ErrorCode::kInvalidFormat, "model config: rope_theta must be positive");
  }
  return Status::Ok();
}

Result<LlamaConfig> llama_config_from_gguf(const GgufFile& gguf) {
  LlamaConfig c;
  QGATE_ASSIGN_OR_RETURN(c.architecture, gguf.get_string("general.architecture"));
  if (c.architecture != "llama" && c.architecture != "qwen2") {
    return make_error(ErrorCode::kUnsupported,
                      "gguf: general.architecture '" + c.architecture +
                          "' is not supported (llama, qwen2)");
  }
  const std::string a = c.architecture + ".";
  QGATE_ASSIGN_OR_RETURN(c.hidden_size, gguf.get_int(a + "embedding_length"));
  QGATE_ASSIGN_OR_RETURN(c.num_layers, gguf.get_int(a + "block_count"));
  QGATE_ASSIGN_OR_RETURN(c.num_heads, gguf.get_int(a + "attention.head_count"));
  QGATE_ASSIGN_OR_RETURN(c.intermediate_size, gguf.get_int(a + "feed_forward_length"));
  c.num_kv_heads = c.num_heads;
  if (gguf.has(a + "attention.head_count_kv")) {
    QGATE_ASSIGN_OR_RETURN(c.num_kv_heads, gguf.get_int(a + "attention.head_count_kv"));
  }
  c.max_position_embeddings = 2048;
  if (gguf.has(a + "context_length")) {
    QGATE_ASSIGN_OR_RETURN(c.max_position_embeddings, gguf.get_int(a + "context_length"));
  }
  double eps = 1e-5;
  QGATE_ASSIGN_OR_RETURN(eps, gguf.get_float(a + "attention.layer_norm_rms_epsilon"));
  c.rms_norm_eps = static_cast<float>(eps);
  if (gguf.has(a + "rope.freq_base")) {
    double theta = 10000.0;
    QGATE_ASSIGN_OR_RETURN(theta, gguf.get_float(a + "rope.freq_base"));
    c.rope_theta = static_cast<float>(theta);
  }
  if (c.num_heads <= 0) {
    return make_error(ErrorCode::kInvalidFormat, "gguf: attention.head_count must be positive");
  }
  c.head_dim = c.hidden_size / c.num_heads;
  if (gguf.has(a + "rope.dimension_count")) {
    int64_t rot = 0;
    QGATE_ASSIGN_OR_RETURN(rot, gguf.get_int(a + "rope.dimension_count"));
    if (rot != c.head_dim) {
      return make_error(ErrorCode::kUnsupported,
                        "gguf: partial rotary embeddings (rope.dimension_count " +
                            std::to_string(rot) + " != head_dim " + std::to_string(c.head_dim) +
                            ") are not supported");
    }
  }
  const GgufTensorInfo* embd = gguf.find_tensor("token_embd.weight");
  if (embd == nullptr || embd->dims.size() != 2) {
    return make_error(ErrorCode::kInvalidFormat, "gguf: missing 2-D tensor token_embd.weight");
  }
  c.vocab_size = embd->dims[1];
  if (gguf.has(a + "vocab_size")) {
    int64_t v = 0;
    QGATE_ASSIGN_OR_RETURN(v, gguf.get_int(a + "vocab_size"));
    if (v != c.vocab_size) {
      return make_error(ErrorCode::kInvalidFormat,
                        "gguf: " + a + "vocab_size (" + std::to_string(v) +
                            ") disagrees with token_embd.weight rows (" +
                            std::to_string(c.vocab_size) + ")");
    }
  }
  c.tie_word_embeddings = gguf.find_tensor("output.weight") == nullptr;
  c.attention_bias = gguf.find_tensor("blk.0.attn_q.bias") != nullptr;
  // llama.cpp's converter permutes Llama's Q/K rows so that RoPE rotates adjacent pairs; Qwen2 is
  // converted without the permutation and keeps HF's rotate-half ("NEOX") pairing.
  c.rope_style = c.architecture == "llama" ? RopeStyle::kAdjacentPairs : RopeStyle::kHalves;
  QGATE_TRY_STATUS(c.validate());
  return c;
}

namespace {

Result<int64_t> json_int(simdjson::dom::object obj, const char* key) {
  int64_t v = 0;
  if (obj[key].get_int64().get(v) != simdjson::SUCCESS) {
    return make_error(ErrorCode::kInvalidFormat,
                      std::string("config.json: '") + key + "' is missing or not an integer");
  }
  return v;
}

Result<double> json_number(simdjson::dom::object obj, const char* key, double fallback) {
  simdjson::dom::element e;
  if (obj[key].get(e) != simdjson::SUCCESS || e.is_null()) return fallback;
  double d = 0;
  if (e.get_double().get(d) == simdjson::SUCCESS) return d;
  int64_t i = 0;
  if (e.get_int64().get(i) == simdjson::SUCCESS) return static_cast<double>(i);
  return make_error(ErrorCode::kInvalidFormat,
                    std::string("config.json: '") + key + "' is not a number");
}

}  // namespace

Result<LlamaConfig> llama_config_from_hf_json(std::string_view json_text) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(json_text);
  simdjson::dom::element root;
  if (auto err = parser.parse(padded).get(root); err) {
    return make_error(ErrorCode::kInvalidFormat,
                      std::string("config.json: not valid JSON: ") + simdjson::error_message(err));
  }
  simdjson::dom::object obj;
  if (root.get_object().get(obj) != simdjson::SUCCESS) {
    return make_error(ErrorCode::kInvalidFormat, "config.json: top level is not an object");
  }
  LlamaConfig c;
  std::string_view model_type;
  if (obj["model_type"].get_string().get(model_type) != simdjson::SUCCESS) {
    return make_error(ErrorCode::kInvalidFormat, "config.json: 'model_type' is missing");
  }
  if (model_type != "llama" && model_type != "mistral" && model_type != "qwen2") {
    return make_error(ErrorCode::kUnsupported, "config.json: model_type '" +
                                                   std::string(model_type) +
                                                   "' is not supported (llama, mistral, qwen2)");
  }
  c.architecture = model_type == "qwen2" ? "qwen2" : "llama";
  QGATE_ASSIGN_OR_RETURN(c.vocab_size, json_int(obj, "vocab_size"));
  QGATE_ASSIGN_OR_RETURN(c.hidden_size, json_int(obj, "hidden_size"));
  QGATE_ASSIGN_OR_RETURN(c.num_layers, json_int(obj, "num_hidden_layers"));
  QGATE_ASSIGN_OR_RETURN(c.num_heads, json_int(obj, "num_attention_heads"));
  QGATE_ASSIGN_OR_RETURN(c.intermediate_size, json_int(obj, "intermediate_size"));
  c.num_kv_heads = c.num_heads;
  if (obj["num_key_value_heads"].error() == simdjson::SUCCESS) {
    QGATE_ASSIGN_OR_RETURN(c.num_kv_heads, json_int(obj, "num_key_value_heads"));
  }
  if (c.num_heads <= 0) {
    return make_error(ErrorCode::kInvalidFormat,
                      "config.json: 'num_attention_heads' must be positive");
  }
  c.head_dim = c.hidden_size / c.num_heads;
  if (obj["head_dim"].error() == simdjson::SUCCESS && !obj["head_dim"].is_null()) {
    QGATE_ASSIGN_OR_RETURN(c.head_dim, json_int(obj, "head_dim"));
  }
  c.max_position_embeddings = 2048;
  if (obj["max_position_embeddings"].error() == simdjson::SUCCESS) {
    QGATE_ASSIGN_OR_RETURN(c.max_position_embeddings, json_int(obj, "max_position_embeddings"));
  }
  double eps = 0, theta = 0;
  QGATE_ASSIGN_OR_RETURN(eps, json_number(obj, "rms_norm_eps", 1e-6));
  QGATE_ASSIGN_OR_RETURN(theta, json_number(obj, "rope_theta", 10000.0));
  c.rms_norm_eps = static_cast<float>(eps);
  c.rope_theta = static_cast<float>(theta);
  bool tie = false;
  if (obj["tie_word_embeddings"].get_bool().get(tie) == simdjson::SUCCESS) {
    c.tie_word_embeddings = tie;
  }
  bool bias = model_type == "qwen2";
  if (obj["attention_bias"].get_bool().get(bias) != simdjson::SUCCESS) {
    bias = model_type == "qwen2";
  }
  c.attention_bias = bias;
  simdjson::dom::element scaling;
  if (obj["rope_scaling"].get(scaling) == simdjson::SUCCESS && !scaling.is_null()) {
    return make_error(ErrorCode::kUnsupported, "config.json: 'rope_scaling' is not supported yet");
  }
  c.rope_style = RopeStyle::kHalves;  // HF checkpoints keep rotate-half Q/K layout
  QGATE_TRY_STATUS(c.validate());
  return c;
}

const char* kv_dtype_name(KvDType t) { return t == KvDType::kF16 ? "f16" : "f32"; }

std::optional<KvDType> parse_kv_dtype(std::string_view name) {
  if (name == "f32") return KvDType::kF32;
  if (name == "f16") return KvDType::kF16;
  return std::nullopt;
}

}  // namespace qgate
