// An HF-style model directory: config.json plus model.safetensors or sharded
// model-0000X-of-0000N.safetensors with model.safetensors.index.json.
#pragma once

#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "engine/model_config.h"
#include "engine/quant_formats.h"
#include "engine/safetensors.h"
#include "kernels/cpu/matmul.h"
#include "kernels/status.h"

namespace qgate {

Result<std::string> read_text_file(const std::string& path, size_t max_bytes = 64u << 20);

class HfCheckpoint {
 public:
  static Result<HfCheckpoint> open(const std::string& dir);

  const LlamaConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  const SafetensorsTensor* find(const std::string& name) const;
  // A [rows][cols] F32/F16/BF16 matrix as a view into the mapped file.
  Result<WeightView> matrix(const std::string& name, int64_t rows, int64_t cols) const;
  // A 1-D tensor of n elements converted to fp32.
  Result<std::shared_ptr<std::vector<float>>> vector_f32(const std::string& name, int64_t n) const;
  // The GPTQ/AWQ settings of a quantized checkpoint (config.json's quantization_config, else
  // quantize_config.json / quant_config.json); nullopt for a float checkpoint.
  const std::optional<QuantConfig>& quant_config() const { return quant_config_; }
  // The int4/int8 layer stored under prefix.{qweight,qzeros,scales[,g_idx]}, unpacked.
  Result<QuantizedLinear> quantized(const std::string& prefix) const;
  // Holds the mapped files for views handed out.
  std::shared_ptr<const void> keep_alive() const { return files_; }

 private:
  std::string dir_;
  LlamaConfig config_;
  std::optional<QuantConfig> quant_config_;
  std::shared_ptr<std::vector<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsTensor*> index_;
};

}  // namespace qgate
