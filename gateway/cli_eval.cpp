#include "gateway/cli_eval.h"

#include <spdlog/spdlog.h>

#include <boost/json.hpp>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>
#include <unistd.h>

#include "engine/evaluation.h"
#include "engine/hf_loader.h"
#include "engine/model_loader.h"
#include "gateway/cli_generate.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {

namespace {

struct EvalArgs {
  std::vector<std::string> models;
  std::string baseline;
  std::string text_file;
  std::string json_out;
  EvalOptions options;
  int threads = 0;
};

boost::json::object to_json(const EvalArgs& a, const std::string& path, const LlamaModel& model,
                            const EvalResult& r) {
  boost::json::object o;
  o["model"] = path;
  o["model_description"] = model.describe();
  // What serving this variant holds in memory (after any load-time repacking), not its file size.
  o["weight_bytes"] = model.weight_bytes();
  o["text"] = a.text_file;
  o["context"] = a.options.context;
  o["stride"] = a.options.stride;
  o["tokens"] = r.tokens;
  o["scored_tokens"] = r.scored_tokens;
  o["windows"] = r.windows;
  o["mean_nll"] = r.mean_nll;
  o["perplexity"] = r.perplexity;
  if (r.has_baseline) {
    o["baseline"] = a.baseline;
    o["baseline_perplexity"] = r.baseline_perplexity;
    o["mean_kl"] = r.mean_kl;
    o["top1_agreement"] = r.top1_agreement;
  }
  o["seconds"] = r.seconds;
  return o;
}

int run_eval(const EvalArgs& a) {
  std::vector<LoadedModel> models;
  for (const std::string& path : a.models) {
    auto m = load_model(path);
    if (!m.ok()) {
      spdlog::error("cannot load model {}: {}", path, m.error().to_string());
      return 1;
    }
    models.push_back(std::move(m).value());
  }
  std::unique_ptr<LoadedModel> baseline;
  if (!a.baseline.empty()) {
    auto b = load_model(a.baseline);
    if (!b.ok()) {
      spdlog::error("cannot load baseline {}: {}", a.baseline, b.error().to_string());
      return 1;
    }
    baseline = std::make_unique<LoadedModel>(std::move(b).value());
  }
  auto text = read_text_file(a.text_file, 1u << 30);
  if (!text.ok()) {
    spdlog::error("{}", text.error().to_string());
    return 1;
  }
  // The same tokenizer must produce the ids for every model: the variants share a vocabulary.
  const std::vector<int32_t> tokens = models[0].tokenizer->encode(text.value(), false);
  const int threads = a.threads > 0 ? a.threads : static_cast<int>(std::thread::hardware_concurrency());
  ThreadPool pool(std::max(1, threads));
  const bool tty = isatty(fileno(stderr)) != 0;
  std::vector<const LlamaModel*> views;
  for (const LoadedModel& m : models) views.push_back(m.model.get());
  auto result = evaluate_many(views, baseline ? baseline->model.get() : nullptr, tokens, a.options,
                              pool, [tty](int64_t done, int64_t total) {
                                if (tty) std::fprintf(stderr, "\r[eval] window %lld/%lld",
                                                      static_cast<long long>(done),
                                                      static_cast<long long>(total));
                              });
  if (tty) std::fprintf(stderr, "\n");
  if (!result.ok()) {
    spdlog::error("eval failed: {}", result.error().to_string());
    return 1;
  }
  const bool has_baseline = baseline != nullptr;
  std::printf("| model | tokens scored | perplexity |%s\n",
              has_baseline ? " baseline ppl | mean KL (nats) | top-1 agreement |" : "");
  std::printf("|---|---|---|%s\n", has_baseline ? "---|---|---|" : "");
  boost::json::array out_json;
  for (size_t i = 0; i < models.size(); ++i) {
    const EvalResult& r = result.value()[i];
    std::printf("| %s | %lld | %.4f |", a.models[i].c_str(), static_cast<long long>(r.scored_tokens),
                r.perplexity);
    if (r.has_baseline) {
      std::printf(" %.4f | %.5f | %.4f |", r.baseline_perplexity, r.mean_kl, r.top1_agreement);
    }
    std::printf("\n");
    out_json.push_back(to_json(a, a.models[i], *models[i].model, r));
  }
  if (!a.json_out.empty()) {
    // One model: its object; several: an array of them, in --model order.
    const std::string body = out_json.size() == 1 ? boost::json::serialize(out_json[0])
                                                   : boost::json::serialize(out_json);
    const std::string tmp = a.json_out + ".tmp";
    {
      std::ofstream out(tmp);
      out << body << "\n";
      if (!out) {
        spdlog::error("cannot write {}", tmp);
        return 1;
      }
    }
    if (std::rename(tmp.c_str(), a.json_out.c_str()) != 0) {
      spdlog::error("cannot rename {} to {}", tmp, a.json_out);
      return 1;
    }
  }
  return 0;
}

}  // namespace

void add_eval_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "eval", "Perplexity over a text file (strided windows); KL and top-1 agreement vs a baseline");
  auto a = std::make_shared<EvalArgs>();
  cmd->add_option("-m,--model", a->models,
                  "variant(s) to evaluate (GGUF or HF directory); repeat to score several "
                  "against one baseline pass")
      ->required();
  cmd->add_option("--baseline", a->baseline, "baseline variant for KL divergence and top-1 agreement");
  cmd->add_option("--text", a->text_file, "UTF-8 text file to evaluate on")->required();
  cmd->add_option("--context", a->options.context, "window length in tokens")->capture_default_str();
  cmd->add_option("--stride", a->options.stride, "window start step in tokens")->capture_default_str();
  cmd->add_option("--max-tokens", a->options.max_tokens, "evaluate only the first N tokens (0 = all)");
  cmd->add_option("--json", a->json_out, "also write the result as JSON to this file (an array for several models)");
  cmd->add_option("-t,--threads", a->threads, "compute threads (default: all cores)");
  cmd->callback([&exit_code, a] { exit_code = run_eval(*a); });
}

}  // namespace qgate
