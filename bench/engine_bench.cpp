// End-to-end single-stream speed of the CPU engine: prefill and decode tokens/s at batch 1.
//   qgate_engine_bench --model PATH --threads 2 --prompt-tokens 128 --gen-tokens 128 --repeats 3
// Prints one JSON object per repeat and a summary with the median. The prompt is the same
// deterministic token sequence bench/compare_llamacpp.py feeds llama.cpp, so the two are
// comparable in one run.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "engine/llama_model.h"
#include "engine/model_loader.h"
#include "kernels/cpu/thread_pool.h"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  using namespace qgate;
  using clock = std::chrono::steady_clock;
  CLI::App app{"qgate engine benchmark: batch-1 prefill and decode tokens/s"};
  std::string model_path;
  int threads = 2, repeats = 3;
  int64_t prompt_tokens = 128, gen_tokens = 128;
  app.add_option("--model", model_path, "GGUF file or HF directory")->required();
  app.add_option("--threads", threads, "compute threads");
  app.add_option("--prompt-tokens", prompt_tokens, "prefill length");
  app.add_option("--gen-tokens", gen_tokens, "decode steps");
  app.add_option("--repeats", repeats, "measurements (median reported)");
  std::string kv_dtype_name = "f32";
  app.add_option("--kv-cache-dtype", kv_dtype_name, "KV cache element type")
      ->check(CLI::IsMember({"f32", "f16"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const KvDType kv_dtype = *parse_kv_dtype(kv_dtype_name);

  auto loaded = load_model(model_path);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.error().to_string().c_str());
    return 1;
  }
  const LlamaModel& model = *loaded->model;
  const int64_t vocab = model.config().vocab_size;
  // Token ids 1000, 1007, 1014, ...: ordinary vocabulary entries, identical for llama.cpp.
  std::vector<int32_t> prompt(static_cast<size_t>(prompt_tokens));
  for (int64_t i = 0; i < prompt_tokens; ++i) prompt[static_cast<size_t>(i)] = static_cast<int32_t>(1000 + (i * 7) % 30000);
  ThreadPool pool(threads);
  ForwardScratch scratch;
  std::vector<float> logits(static_cast<size_t>(vocab));
  std::vector<double> prefill_tps, decode_tps;
  for (int r = 0; r < repeats + 1; ++r) {  // the first round warms caches and is not counted
    KvCache cache(model.config(), prompt_tokens + gen_tokens + 1, kv_dtype);
    auto t0 = clock::now();
    if (!model.forward(prompt, cache, scratch, pool, LogitsMode::kLast, logits).ok()) return 1;
    const double prefill_s = std::chrono::duration<double>(clock::now() - t0).count();
    int32_t tok = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    t0 = clock::now();
    for (int64_t i = 0; i < gen_tokens; ++i) {
      const int32_t in[1] = {tok};
      if (!model.forward(in, cache, scratch, pool, LogitsMode::kLast, logits).ok()) return 1;
      tok = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    const double decode_s = std::chrono::duration<double>(clock::now() - t0).count();
    if (r == 0) continue;
    prefill_tps.push_back(static_cast<double>(prompt_tokens) / prefill_s);
    decode_tps.push_back(static_cast<double>(gen_tokens) / decode_s);
    std::printf("{\"engine\": \"qgate\", \"repeat\": %d, \"prefill_tps\": %.1f, \"decode_tps\": %.1f}\n",
                r, prefill_tps.back(), decode_tps.back());
  }
  std::printf("{\"engine\": \"qgate\", \"summary\": true, \"threads\": %d, \"prompt_tokens\": %lld, "
              "\"gen_tokens\": %lld, \"kv_cache_dtype\": \"%s\", \"prefill_tps\": %.1f, "
              "\"decode_tps\": %.1f}\n",
              threads, static_cast<long long>(prompt_tokens), static_cast<long long>(gen_tokens),
              kv_dtype_name.c_str(), median(prefill_tps), median(decode_tps));
  return 0;
}
