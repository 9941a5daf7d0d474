#include "engine/hf_loader.h"

#include <simdjson.h>

#include <filesystem>
#include <fstream>
#include <cstring>
#include <set>
#include <sstream>

#include "kernels/cpu/half.h"

namespace qgate {

Result<std::string> read_text_file(const std::string& path, size_t max_bytes) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return make_error(ErrorCode::kNotFound, path + ": " + ec.message());
  if (size > max_bytes) {
    return make_error(ErrorCode::kOutOfRange, path + ": file of " + std::to_string(size) +
                                                  " bytes is larger than the " +
                                                  std::to_string(max_bytes) + " allowed");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIo, path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Result<HfCheckpoint> HfCheckpoint::open(const std::string& dir) {
  namespace fs = std::filesystem;
  HfCheckpoint ck;
  ck.dir_ = dir;
  QGATE_ASSIGN_OR_RETURN(std::string config_text, read_text_file(dir + "/config.json"));
  QGATE_ASSIGN_OR_RETURN(ck.config_, llama_config_from_hf_json(config_text));
  if (auto q = parse_quant_config(config_text); q.ok()) {
    ck.quant_config_ = q.value();
  } else if (q.error().code() != ErrorCode::kNotFound) {
    return make_error(q.error().code(), dir + "/config.json: " + q.error().message());
  } else {
    for (const char* name : {"/quantize_config.json", "/quant_config.json"}) {
      auto text = read_text_file(dir + name);
      if (!text.ok()) continue;
      auto parsed = parse_quantize_config_file(text.value());
      if (!parsed.ok()) {
        return make_error(parsed.error().code(), dir + name + ": " + parsed.error().message());
      }
      ck.quant_config_ = parsed.value();
      break;
    }
  }

  std::vector<std::string> shards;
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (fs::exists(dir + "/model.safetensors")) {
    shards.push_back(dir + "/model.safetensors");
  } else if (fs::exists(index_path)) {
    QGATE_ASSIGN_OR_RETURN(std::string index_text, read_text_file(index_path));
    simdjson::dom::parser parser;
    simdjson::padded_string padded(index_text);
    simdjson::dom::object weight_map;
    if (parser.parse(padded)["weight_map"].get_object().get(weight_map) != simdjson::SUCCESS) {
      return make_error(ErrorCode::kInvalidFormat, index_path + ": no 'weight_map' object");
    }
    std::set<std::string> names;
    for (auto field : weight_map) {
      std::string_view file;
      if (field.value.get_string().get(file) != simdjson::SUCCESS ||
          file.find('/') != std::string_view::npos || file.find("..") != std::string_view::npos) {
        return make_error(ErrorCode::kInvalidFormat,
                          index_path + ": bad shard file name for " + std::string(field.key));
      }
      names.insert(std::string(file));
    }
    for (const auto& n : names) shards.push_back(dir + "/" + n);
  } else {
    return make_error(ErrorCode::kNotFound,
                      dir + ": neither model.safetensors nor model.safetensors.index.json");
  }
  ck.files_ = std::make_shared<std::vector<SafetensorsFile>>();
  ck.files_->reserve(shards.size());
  for (const auto& path : shards) {
    QGATE_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open(path));
    ck.files_->push_back(std::move(f));
  }
  for (const auto& f : *ck.files_) {
    for (const auto& t : f.tensors()) {
      if (!ck.index_.emplace(t.name, &t).second) {
        return make_error(ErrorCode::kInvalidFormat,
                          dir + ": tensor " + t.name + " appears in more than one shard");
      }
    }
  }
  return ck;
}

const SafetensorsTensor* HfCheckpoint::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

Result<QuantizedLinear> HfCheckpoint::quantized(const std::string& prefix) const {
  if (!quant_config_) {
    return make_error(ErrorCode::kInvalidArgument, dir_ + ": not a quantized checkpoint");
  }
  auto view = [&](const char* suffix, bool required) -> Result<QuantTensorView> {
    const SafetensorsTensor* t = find(prefix + suffix);
    if (t == nullptr) {
      if (!required) return QuantTensorView{};
      return make_error(ErrorCode::kInvalidFormat, dir_ + ": missing tensor " + prefix + suffix);
    }
    return quant_tensor_view(*t);
  };
  Result<QuantizedLinear> layer = make_error(ErrorCode::kInternal, "unreachable");
  if (quant_config_->method == QuantMethod::kGptq) {
    GptqTensorViews v;
    QGATE_ASSIGN_OR_RETURN(v.qweight, view(".qweight", true));
    QGATE_ASSIGN_OR_RETURN(v.qzeros, view(".qzeros", true));
    QGATE_ASSIGN_OR_RETURN(v.scales, view(".scales", true));
    QGATE_ASSIGN_OR_RETURN(v.g_idx, view(".g_idx", false));
    layer = unpack_gptq(v, quant_config_->bits, quant_config_->group_size,
                        quant_config_->checkpoint_format);
  } else {
    AwqTensorViews v;
    QGATE_ASSIGN_OR_RETURN(v.qweight, view(".qweight", true));
    QGATE_ASSIGN_OR_RETURN(v.qzeros, view(".qzeros", true));
    QGATE_ASSIGN_OR_RETURN(v.scales, view(".scales", true));
    layer = unpack_awq(v, quant_config_->group_size);
  }
  if (!layer.ok()) {
    return make_error(layer.error().code(), dir_ + ": " + prefix + ": " + layer.error().message());
  }
  return layer;
}

Result<WeightView> HfCheckpoint::matrix(const std::string& name, int64_t rows,
                                        int64_t cols) const {
  const SafetensorsTensor* t = find(name);
  if (t == nullptr) return make_error(ErrorCode::kInvalidFormat, dir_ + ": missing tensor " + name);
  if (t->shape.size() != 2 || t->shape[0] != rows || t->shape[1] != cols) {
    return make_error(ErrorCode::kInvalidFormat,
                      dir_ + ": tensor " + name + " must have shape [" + std::to_string(rows) +
                          ", " + std::to_string(cols) + "]");
  }
  DType type;
  switch (t->dtype) {
    case SafetensorsDType::kF32: type = DType::kF32; break;
    case SafetensorsDType::kF16: type = DType::kF16; break;
    case SafetensorsDType::kBF16: type = DType::kBF16; break;
    default:
      return make_error(ErrorCode::kUnsupported,
                        dir_ + ": tensor " + name + " has dtype " +
                            safetensors_dtype_name(t->dtype) + "; expected F32, F16 or BF16");
  }
  return WeightView{type, rows, cols, t->data};
}

Result<std::shared_ptr<std::vector<float>>> HfCheckpoint::vector_f32(const std::string& name,
                                                                    int64_t n) const {
  const SafetensorsTensor* t = find(name);
  if (t == nullptr) return make_error(ErrorCode::kInvalidFormat, dir_ + ": missing tensor " + name);
  if (t->shape.size() != 1 || t->shape[0] != n) {
    return make_error(ErrorCode::kInvalidFormat, dir_ + ": tensor " + name + " must have shape [" +
                                                     std::to_string(n) + "]");
  }
  auto out = std::make_shared<std::vector<float>>(static_cast<size_t>(n));
  // Safetensors gives no alignment guarantee, so read element by element through memcpy.
  for (int64_t i = 0; i < n; ++i) {
    if (t->dtype == SafetensorsDType::kF32) {
      std::memcpy(&(*out)[static_cast<size_t>(i)], t->data + i * 4, 4);
      continue;
    }
    uint16_t h = 0;
    std::memcpy(&h, t->data + i * 2, 2);
    if (t->dtype == SafetensorsDType::kF16) {
      (*out)[static_cast<size_t>(i)] = fp16_to_fp32(h);
    } else if (t->dtype == SafetensorsDType::kBF16) {
      (*out)[static_cast<size_t>(i)] = bf16_to_fp32(h);
    } else {
      return make_error(ErrorCode::kUnsupported, dir_ + ": tensor " + name + " has dtype " +
                                                     safetensors_dtype_name(t->dtype));
    }
  }
  return out;
}

}  // namespace qgate
