// Loads everything needed to serve a model from a path: a GGUF file, or an HF-style directory
// (config.json, *.safetensors, tokenizer.json, tokenizer_config.json).
#pragma once

#include <memory>
#include <string>

#include "engine/chat_template.h"
#include "engine/llama_model.h"
#include "engine/tokenizer.h"
#include "kernels/status.h"

namespace qgate {

struct LoadedModel {
  std::string path;
  std::shared_ptr<const LlamaModel> model;
  std::shared_ptr<const Tokenizer> tokenizer;
  ChatTemplate chat_template;
};

// Picks the format from the path: a regular file must be GGUF, a directory HF-style.
// The chat template comes from the model's metadata; models with no or an unrecognized template get
// ChatML, the format of every model qgate ships.
Result<LoadedModel> load_model(const std::string& path);

}  // namespace qgate
