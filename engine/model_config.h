// Hyper-parameters of a Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM), read from GGUF
// metadata or from an HF config.json, and validated before any tensor is touched.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "kernels/cpu/ops.h"
#include "kernels/status.h"

namespace qgate {

class GgufFile;

struct LlamaConfig {
  std::string architecture = "llama";  // "llama" or "qwen2"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t max_position_embeddings = 0;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // Qwen2: biases on q/k/v projections
  RopeStyle rope_style = RopeStyle::kHalves;

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  // Checks positivity, divisibility (heads by kv heads, hidden by heads) and sane upper bounds.
  Status validate() const;
};

// Element type of the keys and values a CPU forward pass caches. kF32 is the forward pass's own
// precision (the default: results do not depend on the cache); kF16 halves the cache's memory and
// the bytes attention reads per step, at the cost of rounding each key and value to fp16
// (llama.cpp's default). A GPU worker always caches fp16.
enum class KvDType { kF32, kF16 };
const char* kv_dtype_name(KvDType t);                        // "f32", "f16"
std::optional<KvDType> parse_kv_dtype(std::string_view name);  // "f32" / "f16"
inline int64_t kv_dtype_bytes(KvDType t) { return t == KvDType::kF16 ? 2 : 4; }

Result<LlamaConfig> llama_config_from_gguf(const GgufFile& gguf);
// Parses the text of an HF config.json (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM).
Result<LlamaConfig> llama_config_from_hf_json(std::string_view json_text);

}  // namespace qgate
