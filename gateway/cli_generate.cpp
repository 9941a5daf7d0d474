#include "gateway/cli_generate.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "engine/generator.h"
#include "engine/model_loader.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {

namespace {

constexpr const char* kDefaultModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

struct CommonOptions {
  std::string model;
  int threads = 0;
  int64_t context = 2048;
  std::string kv_cache_dtype = "f32";
  int64_t max_tokens = 256;
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int64_t seed = -1;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool verbose = false;
};

void add_common_options(CLI::App* cmd, CommonOptions& o) {
  cmd->add_option("-m,--model", o.model,
                  "GGUF file or HF-style model directory (default: $QGATE_MODEL, else "
                  "$QGATE_MODEL_DIR/" + std::string(kDefaultModelFile) + ", QGATE_MODEL_DIR "
                  "defaulting to ./models)");
  cmd->add_option("-t,--threads", o.threads, "compute threads (default: all cores)")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("-c,--context", o.context, "context size in tokens (KV cache capacity)")
      ->check(CLI::Range(16, 1 << 20));
  cmd->add_option("--kv-cache-dtype", o.kv_cache_dtype,
                  "KV cache element type: f32, or f16 for half the memory (as serve's "
                  "worker.kv_cache_dtype)")
      ->check(CLI::IsMember({"f32", "f16"}))
      ->capture_default_str();
  cmd->add_option("-n,--max-tokens", o.max_tokens, "maximum tokens to generate")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--temperature", o.temperature, "sampling temperature; 0 = greedy (default)");
  cmd->add_option("--top-k", o.top_k, "keep the k most likely tokens; 0 = off");
  cmd->add_option("--top-p", o.top_p, "nucleus sampling mass; 1 = off");
  cmd->add_option("--min-p", o.min_p, "drop tokens below min-p times the top probability");
  cmd->add_option("--repetition-penalty", o.repetition_penalty, "1 = off");
  cmd->add_option("--presence-penalty", o.presence_penalty, "OpenAI presence penalty");
  cmd->add_option("--frequency-penalty", o.frequency_penalty, "OpenAI frequency penalty");
  cmd->add_option("--seed", o.seed, "sampling seed (default: random)");
  cmd->add_option("--stop", o.stop, "stop string (repeatable)");
  cmd->add_flag("--ignore-eos", o.ignore_eos, "keep generating past end-of-sequence tokens");
  cmd->add_flag("-v,--verbose", o.verbose, "print load time and speed to stderr");
}

GenerationOptions generation_options(const CommonOptions& o) {
  GenerationOptions g;
  g.max_tokens = o.max_tokens;
  g.stop = o.stop;
  g.ignore_eos = o.ignore_eos;
  g.sampling.temperature = o.temperature;
  g.sampling.top_k = o.top_k;
  g.sampling.top_p = o.top_p;
  g.sampling.min_p = o.min_p;
  g.sampling.repetition_penalty = o.repetition_penalty;
  g.sampling.presence_penalty = o.presence_penalty;
  g.sampling.frequency_penalty = o.frequency_penalty;
  if (o.seed >= 0) g.sampling.seed = static_cast<uint64_t>(o.seed);
  return g;
}

// Everything a command needs, loaded once.
struct Runtime {
  LoadedModel loaded;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Generator> generator;
};

std::unique_ptr<Runtime> load_runtime(const CommonOptions& o) {
  const std::string path = o.model.empty() ? default_model_path() : o.model;
  const auto t0 = std::chrono::steady_clock::now();
  auto loaded = load_model(path);
  if (!loaded.ok()) {
    spdlog::error("cannot load model {}: {}", path, loaded.error().to_string());
    return nullptr;
  }
  auto rt = std::make_unique<Runtime>();
  rt->loaded = std::move(loaded).value();
  const int threads =
      o.threads > 0 ? o.threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  rt->pool = std::make_unique<ThreadPool>(threads);
  const int64_t ctx = std::min(o.context, rt->loaded.model->config().max_position_embeddings);
  rt->generator = std::make_unique<Generator>(*rt->loaded.model, *rt->loaded.tokenizer,
                                              *rt->pool, ctx, *parse_kv_dtype(o.kv_cache_dtype));
  if (o.verbose) {
    const double ms = std::chrono::duration<double, std::milli>(
                          std::chrono::steady_clock::now() - t0).count();
    spdlog::info("loaded {} ({}; {:.1f} MB of weights) in {:.0f} ms, {} threads, context {}",
                 path, rt->loaded.model->describe(), rt->loaded.model->weight_bytes() / 1e6, ms,
                 threads, ctx);
  }
  return rt;
}

void report(const GenerationResult& r, bool verbose) {
  if (!verbose) return;
  const auto n = static_cast<double>(r.tokens.size());
  const double fresh = static_cast<double>(r.prompt_tokens - r.cached_prompt_tokens);
  spdlog::info("prompt {} tokens ({} cached) in {:.1f} ms ({:.1f} tokens/s); generated {} tokens "
               "in {:.1f} ms ({:.1f} tokens/s); finish: {}",
               r.prompt_tokens, r.cached_prompt_tokens, r.prefill_seconds * 1e3,
               fresh / std::max(r.prefill_seconds, 1e-9), r.tokens.size(), r.decode_seconds * 1e3,
               n / std::max(r.decode_seconds, 1e-9), finish_reason_name(r.finish_reason));
}

// Streams to stdout as pieces arrive.
Result<GenerationResult> run_streaming(Runtime& rt, const std::vector<int32_t>& prompt,
                                       const GenerationOptions& g) {
  auto result = rt.generator->generate(prompt, g, [](std::string_view piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::fputc('\n', stdout);
  std::fflush(stdout);
  return result;
}

int run_generate(const CommonOptions& o, const std::string& prompt_text, bool raw,
                 const std::string& system) {
  auto rt = load_runtime(o);
  if (!rt) return 1;
  const GenerationOptions g = generation_options(o);
  if (Status st = g.validate(); !st.ok()) {
    spdlog::error("{}", st.error().message());
    return 2;
  }
  std::string text = prompt_text;
  if (!raw) {
    std::vector<ChatMessage> messages;
    if (!system.empty()) messages.push_back({"system", system});
    messages.push_back({"user", prompt_text});
    auto rendered = rt->loaded.chat_template.render(messages, true);
    if (!rendered.ok()) {
      spdlog::error("{}", rendered.error().message());
      return 2;
    }
    text = rendered.value();
  }
  std::vector<int32_t> prompt = rt->loaded.tokenizer->encode(text, /*parse_special=*/!raw);
  if (raw && rt->loaded.tokenizer->add_bos() && rt->loaded.tokenizer->bos_id()) {
    prompt.insert(prompt.begin(), *rt->loaded.tokenizer->bos_id());
  }
  auto result = run_streaming(*rt, prompt, g);
  if (!result.ok()) {
    spdlog::error("generation failed: {}", result.error().to_string());
    return 1;
  }
  report(result.value(), o.verbose);
  return 0;
}

int run_chat(const CommonOptions& o, const std::vector<std::string>& one_shot,
             const std::string& system) {
  auto rt = load_runtime(o);
  if (!rt) return 1;
  const GenerationOptions g = generation_options(o);
  if (Status st = g.validate(); !st.ok()) {
    spdlog::error("{}", st.error().message());
    return 2;
  }
  std::vector<ChatMessage> history;
  if (!system.empty()) history.push_back({"system", system});
  auto turn = [&](const std::string& user) -> bool {
    history.push_back({"user", user});
    auto rendered = rt->loaded.chat_template.render(history, true);
    if (!rendered.ok()) {
      spdlog::error("{}", rendered.error().message());
      return false;
    }
    const std::vector<int32_t> prompt = rt->loaded.tokenizer->encode(rendered.value());
    auto result = run_streaming(*rt, prompt, g);
    if (!result.ok()) {
      spdlog::error("generation failed: {}", result.error().to_string());
      history.pop_back();
      return false;
    }
    report(result.value(), o.verbose);
    history.push_back({"assistant", result.value().text});
    return true;
  };
  if (!one_shot.empty()) {
    for (const auto& m : one_shot) {
      std::printf("> %s\n", m.c_str());
      if (!turn(m)) return 1;
    }
    return 0;
  }
  const bool interactive = isatty(fileno(stdin)) != 0;
  if (interactive) std::printf("qgate chat: /reset clears the conversation, /exit or Ctrl-D quits\n");
  std::string line;
  while (true) {
    if (interactive) {
      std::printf("> ");
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      history.clear();
      if (!system.empty()) history.push_back({"system", system});
      continue;
    }
    if (line.empty()) continue;
    turn(line);
  }
  return 0;
}

}  // namespace

std::string default_model_path() {
  if (const char* m = std::getenv("QGATE_MODEL"); m != nullptr && *m != '\0') return m;
  const char* dir = std::getenv("QGATE_MODEL_DIR");
  return std::string(dir != nullptr && *dir != '\0' ? dir : "models") + "/" + kDefaultModelFile;
}

void add_generate_commands(CLI::App& app, int& exit_code) {
  {
    auto* cmd = app.add_subcommand("generate", "Generate a completion for one prompt");
    auto o = std::make_shared<CommonOptions>();
    auto prompt = std::make_shared<std::string>();
    auto system = std::make_shared<std::string>();
    auto raw = std::make_shared<bool>(false);
    add_common_options(cmd, *o);
    cmd->add_option("-p,--prompt", *prompt, "the prompt")->required();
    cmd->add_flag("--raw", *raw, "send the prompt as is, without the chat template");
    cmd->add_option("--system", *system, "system message (chat template only)");
    cmd->callback([&exit_code, o, prompt, system, raw] {
      exit_code = run_generate(*o, *prompt, *raw, *system);
    });
  }
  {
    auto* cmd = app.add_subcommand(
        "chat", "Chat with the model: one-shot with --message, else read turns from stdin");
    auto o = std::make_shared<CommonOptions>();
    auto messages = std::make_shared<std::vector<std::string>>();
    auto system = std::make_shared<std::string>();
    add_common_options(cmd, *o);
    cmd->add_option("--message", *messages, "a user turn (repeatable); answers and exits");
    cmd->add_option("--system", *system, "system message");
    cmd->callback([&exit_code, o, messages, system] {
      exit_code = run_chat(*o, *messages, *system);
    });
  }
}

}  // namespace qgate
