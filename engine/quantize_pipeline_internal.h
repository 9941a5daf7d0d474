// Shared by quantize_pipeline.cpp (options, calibration, output directory) and
// quantize_layers.cpp (the per-layer quantization); not part of the interface.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/model_config.h"
#include "engine/quant_formats.h"
#include "engine/quantize_pipeline.h"
#include "kernels/status.h"

namespace qgate::quantize_pipeline_internal {

// One fp32 linear layer [n][k] in HF layout, named by its prefix ("model.layers.0.mlp.up_proj").
struct Linear {
  std::string name;
  std::vector<float> w;
  int64_t n = 0;
  int64_t k = 0;
};

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;
  Linear q, k, v, o, gate, up, down;
  std::vector<Linear*> linears() { return {&q, &k, &v, &o, &gate, &up, &down}; }
};

struct QuantizedEntry {
  std::string name;  // prefix
  QuantizedLinear layer;
};

struct QuantizedModel {
  LlamaConfig config;
  std::vector<QuantizedEntry> linears;  // layer order, q k v o gate up down in each
  // Per-layer norms as they must be written (AWQ folds its scales into them).
  std::vector<std::pair<std::string, std::vector<float>>> norms;
};

// Quantizes every decoder layer of the FP16 HF directory fp16_dir. calib holds
// calib_samples × calib_seqlen tokens for gptq/awq (empty for rtn).
Result<QuantizedModel> quantize_layers(const std::string& fp16_dir, const QuantizeOptions& options,
                                       const std::vector<int32_t>& calib,
                                       const QuantizeProgress& progress);

}  // namespace qgate::quantize_pipeline_internal
