#include "gateway/cli_eval.h"

#include <spdlog/spdlog.h>

#include <boost/json.hpp>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <unistd.h>

#include "engine/evaluation.h"
#include "engine/hf_loader.h"
#include "engine/model_loader.h"
#include "gateway/cli_generate.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {

namespace {

struct EvalArgs {
  std::string model;
  std::string baseline;
  std::string text_file;
  std::string json_out;
  EvalOptions options;
  int threads = 0;
};

boost::json::object to_json(const EvalArgs& a, const EvalResult& r) {
  boost::json::object o;
  o["model"] = a.model;
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
  auto model = load_model(a.model);
  if (!model.ok()) {
    spdlog::error("cannot load model {}: {}", a.model, model.error().to_string());
    return 1;
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
  // The same tokenizer must produce the ids for both models: the variants share a vocabulary.
  const std::vector<int32_t> tokens = model->tokenizer->encode(text.value(), false);
  const int threads = a.threads > 0 ? a.threads : static_cast<int>(std::thread::hardware_concurrency());
  ThreadPool pool(std::max(1, threads));
  const bool tty = isatty(fileno(stderr)) != 0;
  auto result = evaluate(*model->model, baseline ? baseline->model.get() : nullptr, tokens,
                         a.options, pool, [tty](int64_t done, int64_t total) {
                           if (tty) std::fprintf(stderr, "\r[eval] window %lld/%lld",
                                                 static_cast<long long>(done),
                                                 static_cast<long long>(total));
                         });
  if (tty) std::fprintf(stderr, "\n");
  if (!result.ok()) {
    spdlog::error("eval failed: {}", result.error().to_string());
    return 1;
  }
  const EvalResult& r = result.value();
  std::printf("| model | tokens scored | perplexity |%s\n",
              r.has_baseline ? " baseline ppl | mean KL (nats) | top-1 agreement |" : "");
  std::printf("|---|---|---|%s\n", r.has_baseline ? "---|---|---|" : "");
  std::printf("| %s | %lld | %.4f |", a.model.c_str(), static_cast<long long>(r.scored_tokens),
              r.perplexity);
  if (r.has_baseline) {
    std::printf(" %.4f | %.5f | %.4f |", r.baseline_perplexity, r.mean_kl, r.top1_agreement);
  }
  std::printf("\n");
  if (!a.json_out.empty()) {
    const std::string tmp = a.json_out + ".tmp";
    {
      std::ofstream out(tmp);
      out << boost::json::serialize(to_json(a, r)) << "\n";
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
  cmd->add_option("-m,--model", a->model, "the variant to evaluate (GGUF or HF directory)")
      ->required();
  cmd->add_option("--baseline", a->baseline, "baseline variant for KL divergence and top-1 agreement");
  cmd->add_option("--text", a->text_file, "UTF-8 text file to evaluate on")->required();
  cmd->add_option("--context", a->options.context, "window length in tokens")->capture_default_str();
  cmd->add_option("--stride", a->options.stride, "window start step in tokens")->capture_default_str();
  cmd->add_option("--max-tokens", a->options.max_tokens, "evaluate only the first N tokens (0 = all)");
  cmd->add_option("--json", a->json_out, "also write the result as JSON to this file");
  cmd->add_option("-t,--threads", a->threads, "compute threads (default: all cores)");
  cmd->callback([&exit_code, a] { exit_code = run_eval(*a); });
}

}  // namespace qgate
