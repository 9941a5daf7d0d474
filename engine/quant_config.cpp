// Quantization config parsing (declared in quant_formats.h). Field names and defaults follow the
// writers: AutoGPTQ auto_gptq/quantization/config.py (keys lower-cased, synonyms w_bit → bits and
// q_group_size → group_size, checkpoint_format default "gptq", sym default true, quant_method
// "marlin" and is_marlin_format meaning Marlin-repacked weights), GPTQModel
// gptqmodel/quantization/config.py (newer "format"/"method" spellings, pack_dtype, dynamic,
// lm_head) and AutoAWQ awq/models/_config.py (quant_config.json {zero_point, q_group_size, w_bit,
// version "GEMM"}; config.json {quant_method "awq", bits, group_size, version "gemm"}).
//
// Choices: bits and group_size are required (their defaults differ between AutoGPTQ, transformers
// and AutoAWQ, so guessing could silently misread a checkpoint); unknown keys are ignored as the
// writers' own loaders do; any value qgate cannot honour is an error naming the field.
#include <simdjson.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <utility>

#include "engine/quant_formats.h"

namespace qgate {

namespace {

Error fail(ErrorCode code, const std::string& msg) {
  return make_error(code, "quant config: " + msg);
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// The canonical name of a key, folding the spellings different writers use for one field.
std::string canonical_key(std::string_view key) {
  std::string k = lower(key);
  if (k == "w_bit") return "bits";
  if (k == "q_group_size") return "group_size";
  if (k == "format") return "checkpoint_format";  // GPTQModel's newer spelling
  if (k == "method") return "quant_method";       // GPTQModel's newer spelling
  return k;
}

struct Field {
  std::string spelled;  // as written in the file, for messages
  simdjson::dom::element value;
};

class Fields {
 public:
  static Result<Fields> collect(simdjson::dom::object obj) {
    Fields f;
    for (auto kv : obj) {
      std::string canon = canonical_key(kv.key);
      auto [it, inserted] = f.map_.emplace(canon, Field{std::string(kv.key), kv.value});
      if (!inserted && simdjson::minify(it->second.value) != simdjson::minify(kv.value)) {
        return fail(ErrorCode::kInvalidFormat, "fields '" + it->second.spelled + "' and '" +
                                                   std::string(kv.key) + "' disagree (" +
                                                   simdjson::minify(it->second.value) + " vs " +
                                                   simdjson::minify(kv.value) + ")");
      }
    }
    return f;
  }

  const Field* find(const std::string& canon) const {
    auto it = map_.find(canon);
    return it == map_.end() ? nullptr : &it->second;
  }
  bool has(const std::string& canon) const { return find(canon) != nullptr; }

  Result<std::optional<std::string>> string(const std::string& canon) const {
    const Field* f = find(canon);
    if (f == nullptr) return std::optional<std::string>{};
    std::string_view v;
    if (f->value.get_string().get(v)) {
      return fail(ErrorCode::kInvalidFormat, "field '" + f->spelled + "' must be a string");
    }
    return std::optional<std::string>{lower(v)};
  }

  Result<bool> boolean(const std::string& canon, bool fallback) const {
    const Field* f = find(canon);
    if (f == nullptr || f->value.is_null()) return fallback;
    bool v = false;
    if (f->value.get_bool().get(v)) {
      return fail(ErrorCode::kInvalidFormat, "field '" + f->spelled + "' must be true or false");
    }
    return v;
  }

  Result<int64_t> required_int(const std::string& canon, const std::string& spellings) const {
    const Field* f = find(canon);
    if (f == nullptr) return fail(ErrorCode::kInvalidFormat, "missing field " + spellings);
    int64_t v = 0;
    if (f->value.get_int64().get(v)) {
      return fail(ErrorCode::kInvalidFormat, "field '" + f->spelled + "' must be an integer, got " +
                                                 simdjson::minify(f->value));
    }
    return v;
  }

 private:
  std::map<std::string, Field> map_;
};

Result<QuantConfig> parse_object(simdjson::dom::object obj) {
  QGATE_ASSIGN_OR_RETURN(Fields f, Fields::collect(obj));
  QuantConfig cfg;

  QGATE_ASSIGN_OR_RETURN(auto method, f.string("quant_method"));
  if (!method) {
    // AutoAWQ's quant_config.json has no quant_method; its "version" field gives it away.
    method = f.has("version") ? "awq" : "gptq";
  }
  if (*method == "gptq") {
    cfg.method = QuantMethod::kGptq;
  } else if (*method == "awq") {
    cfg.method = QuantMethod::kAwq;
  } else {
    return fail(ErrorCode::kUnsupported,
                "quant_method '" + *method + "' is not supported (qgate reads gptq and awq)");
  }
  const bool gptq = cfg.method == QuantMethod::kGptq;

  QGATE_ASSIGN_OR_RETURN(bool marlin, f.boolean("is_marlin_format", false));
  if (marlin) {
    return fail(ErrorCode::kUnsupported,
                "is_marlin_format = true: Marlin-repacked weights are not supported");
  }

  QGATE_ASSIGN_OR_RETURN(int64_t bits, f.required_int("bits", "'bits' (or 'w_bit')"));
  if (bits <= 0) {
    return fail(ErrorCode::kInvalidFormat, "bits = " + std::to_string(bits) + " is not positive");
  }
  if (gptq ? (bits != 4 && bits != 8) : bits != 4) {
    return fail(ErrorCode::kUnsupported, "bits = " + std::to_string(bits) +
                                             " is not supported for " + *method + " (qgate reads " +
                                             (gptq ? "4 and 8" : "4") + ")");
  }
  cfg.bits = static_cast<int>(bits);

  QGATE_ASSIGN_OR_RETURN(cfg.group_size,
                         f.required_int("group_size", "'group_size' (or 'q_group_size')"));
  if (cfg.group_size == 0 || cfg.group_size < -1) {
    return fail(ErrorCode::kInvalidFormat, "group_size = " + std::to_string(cfg.group_size) +
                                               ", expected -1 (per channel) or a positive value");
  }

  QGATE_ASSIGN_OR_RETURN(cfg.desc_act, f.boolean("desc_act", false));
  QGATE_ASSIGN_OR_RETURN(cfg.sym, f.boolean("sym", true));
  QGATE_ASSIGN_OR_RETURN(cfg.lm_head, f.boolean("lm_head", false));
  QGATE_ASSIGN_OR_RETURN(cfg.zero_point, f.boolean("zero_point", true));

  QGATE_ASSIGN_OR_RETURN(auto format, f.string("checkpoint_format"));
  if (gptq) {
    if (!format || *format == "gptq") {
      cfg.checkpoint_format = GptqCheckpointFormat::kGptq;
    } else if (*format == "gptq_v2") {
      cfg.checkpoint_format = GptqCheckpointFormat::kGptqV2;
    } else {
      return fail(ErrorCode::kUnsupported, "checkpoint_format '" + *format +
                                               "' is not supported (qgate reads gptq and gptq_v2)");
    }
  } else {
    QGATE_ASSIGN_OR_RETURN(auto version, f.string("version"));
    for (const auto& [name, value] : {std::pair{"version", version}, std::pair{"format", format}}) {
      if (value && *value != "gemm") {
        return fail(ErrorCode::kUnsupported, std::string(name) + " '" + *value +
                                                 "' is not supported (qgate reads AWQ gemm)");
      }
    }
    if (!cfg.zero_point) {
      return fail(ErrorCode::kUnsupported,
                  "zero_point = false: AWQ GEMM checkpoints always carry zero points");
    }
    // transformers' AwqConfig: "llm-awq" checkpoints are packed for GEMV_FAST, not GEMM.
    QGATE_ASSIGN_OR_RETURN(auto backend, f.string("backend"));
    if (backend && *backend != "autoawq") {
      return fail(ErrorCode::kUnsupported,
                  "backend '" + *backend + "' is not supported (qgate reads autoawq packing)");
    }
  }

  QGATE_ASSIGN_OR_RETURN(auto pack_dtype, f.string("pack_dtype"));
  if (pack_dtype && *pack_dtype != "int32") {
    return fail(ErrorCode::kUnsupported,
                "pack_dtype '" + *pack_dtype + "' is not supported (qgate reads int32)");
  }
  if (const Field* d = f.find("dynamic"); d != nullptr && !d->value.is_null()) {
    simdjson::dom::object o;
    if (d->value.get_object().get(o) || o.size() != 0) {
      return fail(ErrorCode::kUnsupported,
                  "field 'dynamic' (per-module overrides) is not supported");
    }
  }
  if (const Field* m = f.find("modules_to_not_convert"); m != nullptr && !m->value.is_null()) {
    simdjson::dom::array arr;
    if (m->value.get_array().get(arr)) {
      return fail(ErrorCode::kInvalidFormat, "field 'modules_to_not_convert' must be a list");
    }
    for (auto el : arr) {
      std::string_view s;
      if (el.get_string().get(s)) {
        return fail(ErrorCode::kInvalidFormat,
                    "field 'modules_to_not_convert' must hold strings only");
      }
      cfg.modules_to_not_convert.emplace_back(s);
    }
  }
  return cfg;
}

Result<simdjson::dom::object> parse_document(simdjson::dom::parser& parser, std::string_view text,
                                             const char* what) {
  simdjson::dom::element doc;
  if (auto e = parser.parse(simdjson::padded_string(text)).get(doc); e) {
    return fail(ErrorCode::kInvalidFormat,
                std::string(what) + " is not valid JSON: " + simdjson::error_message(e));
  }
  simdjson::dom::object obj;
  if (doc.get_object().get(obj)) {
    return fail(ErrorCode::kInvalidFormat, std::string(what) + " is not a JSON object");
  }
  return obj;
}

}  // namespace

const char* quant_method_name(QuantMethod m) { return m == QuantMethod::kGptq ? "gptq" : "awq"; }

Result<QuantConfig> parse_quant_config(std::string_view config_json_text) {
  simdjson::dom::parser parser;
  QGATE_ASSIGN_OR_RETURN(auto root, parse_document(parser, config_json_text, "config.json"));
  simdjson::dom::element qc;
  if (root["quantization_config"].get(qc)) {
    return fail(ErrorCode::kNotFound, "config.json has no quantization_config");
  }
  simdjson::dom::object obj;
  if (qc.get_object().get(obj)) {
    return fail(ErrorCode::kInvalidFormat, "quantization_config is not a JSON object");
  }
  return parse_object(obj);
}

Result<QuantConfig> parse_quantize_config_file(std::string_view text) {
  simdjson::dom::parser parser;
  QGATE_ASSIGN_OR_RETURN(auto root, parse_document(parser, text, "quantize config"));
  return parse_object(root);
}

}  // namespace qgate
