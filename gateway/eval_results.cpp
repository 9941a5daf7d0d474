#include "gateway/eval_results.h"

#include <simdjson.h>

#include "engine/hf_loader.h"  // read_text_file

namespace qgate {

namespace {

namespace fs = std::filesystem;

fs::path resolved(const fs::path& p) {
  std::error_code ec;
  fs::path r = fs::weakly_canonical(p, ec);
  return ec ? p.lexically_normal() : r;
}

// The last non-empty component: "variants/smollm2-fp16/" and "variants/smollm2-fp16" agree.
std::string last_component(const fs::path& p) {
  fs::path n = p.lexically_normal();
  if (!n.has_filename()) n = n.parent_path();
  return n.filename().string();
}

const VariantConfig* match(const fs::path& model, const fs::path& results_dir,
                           const std::vector<VariantConfig>& variants) {
  std::vector<fs::path> candidates{resolved(model)};
  if (model.is_relative()) candidates.push_back(resolved(results_dir / model));
  for (const VariantConfig& v : variants) {
    const fs::path vp = resolved(v.model);
    for (const fs::path& c : candidates) {
      if (c == vp) return &v;
    }
  }
  const std::string name = last_component(model);
  for (const VariantConfig& v : variants) {
    if (!name.empty() && last_component(v.model) == name) return &v;
  }
  return nullptr;
}

Error bad(size_t i, std::string_view what) {
  return make_error(ErrorCode::kInvalidFormat,
                    "eval results[" + std::to_string(i) + "]: " + std::string(what));
}

}  // namespace

Result<MatchedEvalResults> match_eval_results(std::string_view json,
                                              const std::filesystem::path& results_dir,
                                              const std::vector<VariantConfig>& variants) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(json.data(), json.size()).get(root) != simdjson::SUCCESS) {
    return make_error(ErrorCode::kInvalidFormat, "eval results: not valid JSON");
  }
  std::vector<simdjson::dom::element> entries;
  simdjson::dom::array array;
  if (root.get_array().get(array) == simdjson::SUCCESS) {
    for (simdjson::dom::element e : array) entries.push_back(e);
  } else {
    entries.push_back(root);
  }
  MatchedEvalResults out;
  for (size_t i = 0; i < entries.size(); ++i) {
    simdjson::dom::object o;
    if (entries[i].get_object().get(o) != simdjson::SUCCESS) return bad(i, "must be an object");
    std::string_view model;
    if (o["model"].get_string().get(model) != simdjson::SUCCESS) {
      return bad(i, "\"model\" must be a string (the path qgate eval was given)");
    }
    VariantEvalMetrics m;
    if (o["perplexity"].get_double().get(m.perplexity) != simdjson::SUCCESS) {
      return bad(i, "\"perplexity\" must be a number");
    }
    double tokens = 0;
    if (o["scored_tokens"].get_double().get(tokens) == simdjson::SUCCESS) m.tokens = tokens;
    double kl = 0;
    double agreement = 0;
    const bool has_kl = o["mean_kl"].get_double().get(kl) == simdjson::SUCCESS;
    const bool has_agreement = o["top1_agreement"].get_double().get(agreement) == simdjson::SUCCESS;
    if (has_kl != has_agreement) {
      return bad(i, "\"mean_kl\" and \"top1_agreement\" come together (both or neither)");
    }
    m.has_baseline = has_kl;
    m.kl_divergence = kl;
    m.top1_agreement = agreement;

    std::string_view variant;
    const VariantConfig* v = nullptr;
    if (o["variant"].get_string().get(variant) == simdjson::SUCCESS) {
      for (const VariantConfig& c : variants) {
        if (c.name == variant) v = &c;
      }
    } else {
      v = match(std::filesystem::path(std::string(model)), results_dir, variants);
    }
    if (v == nullptr) {
      out.unmatched_models.emplace_back(model);
      continue;
    }
    m.variant = v->name;
    out.variants.push_back(std::move(m));
  }
  return out;
}

Result<MatchedEvalResults> load_eval_results(const std::filesystem::path& file,
                                             const std::vector<VariantConfig>& variants) {
  // Eval results are a few KB per model; 16 MB leaves room for any real file.
  QGATE_ASSIGN_OR_RETURN(std::string text, read_text_file(file.string(), 16u << 20));
  auto r = match_eval_results(text, file.parent_path(), variants);
  if (!r.ok()) return make_error(r.error().code(), file.string() + ": " + r.error().message());
  return r;
}

}  // namespace qgate
