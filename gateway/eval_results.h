// Offline quality for the metrics: the output of `qgate eval --json` (one object, or an array for
// several models) matched to the configured variants.
//
// An entry belongs to a variant when it names it in a "variant" field, or else when its "model"
// path is the variant's model (same file after resolving symlinks and relative paths against the
// results file's directory and the working directory, or failing that the same final path
// component, e.g. ".../smollm2-gptq-4bit"). Entries that match no variant are reported, not fatal:
// results for models that are not served are common in a shared results file.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/gateway_metrics.h"  // VariantEvalMetrics
#include "gateway/serve_config.h"
#include "kernels/status.h"

namespace qgate {

struct MatchedEvalResults {
  std::vector<VariantEvalMetrics> variants;
  std::vector<std::string> unmatched_models;
};

// InvalidFormat for JSON that is not qgate eval's shape (a missing "model"/"perplexity", a wrong
// type), naming the entry and field.
Result<MatchedEvalResults> match_eval_results(std::string_view json,
                                              const std::filesystem::path& results_dir,
                                              const std::vector<VariantConfig>& variants);
// Reads the file, then match_eval_results. NotFound / Io when it cannot be read.
Result<MatchedEvalResults> load_eval_results(const std::filesystem::path& file,
                                             const std::vector<VariantConfig>& variants);

}  // namespace qgate
