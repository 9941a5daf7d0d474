// End-to-end continuous-batching throughput of the engine worker on the CPU: aggregate decode
// tokens/s and per-stream inter-token latency (p50/p99) at several numbers of concurrent streams.
//   qgate_worker_bench --model PATH --threads 2 --streams 1,4,16,64 --prompt-tokens 32 --gen-tokens 64 --rounds 3
//
// Before timing anything it checks correctness: a greedy stream through the worker, alone and
// inside a full batch, must give exactly the tokens the single-sequence Generator gives; the
// benchmark exits non-zero otherwise.
//
// Streams are all submitted at once, each with its own deterministic prompt, ignore_eos and the
// same max_tokens. "decode tokens/s" counts the tokens that arrive while every stream is past its
// first token (steady-state decoding, no prefill in the window) divided by that window's length;
// "e2e tokens/s" is all generated tokens over submit-to-last-finish. Latencies are the gaps between
// consecutive text events of a stream. Rounds interleave the stream counts (1, 4, 16, 64, 1, 4, ...)
// so load from other processes hits all of them alike; the summary gives per-count medians and
// their ratio to the first count's median.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "engine/device_spec.h"
#include "engine/generator.h"
#include "engine/model_loader.h"
#include "engine/worker.h"
#include "kernels/cpu/thread_pool.h"

namespace {

using namespace qgate;
using Clock = std::chrono::steady_clock;

class TimingSink : public GenerationSink {
 public:
  void on_text(std::string_view, int64_t tokens_so_far) override {
    std::lock_guard lock(mu_);
    events_.emplace_back(Clock::now(), tokens_so_far);
  }
  void on_finish(const GenerationSummary& s) override {
    std::lock_guard lock(mu_);
    summary_ = s;
    done_ = true;
    end_ = Clock::now();
    cv_.notify_all();
  }
  void on_error(const Error& e) override {
    std::lock_guard lock(mu_);
    error_ = e.to_string();
    done_ = true;
    end_ = Clock::now();
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }
  // Only after wait().
  const std::vector<std::pair<Clock::time_point, int64_t>>& events() const { return events_; }
  const GenerationSummary& summary() const { return summary_; }
  const std::string& error() const { return error_; }
  Clock::time_point end() const { return end_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::vector<std::pair<Clock::time_point, int64_t>> events_;
  GenerationSummary summary_;
  std::string error_;
  Clock::time_point end_;
};

std::vector<int32_t> prompt_for(int64_t stream, int64_t n) {
  // Ordinary vocabulary ids (as in engine_bench), different for every stream.
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    p[static_cast<size_t>(i)] = static_cast<int32_t>(1000 + (i * 7 + stream * 131) % 30000);
  }
  return p;
}

float g_temperature = 0.0f;  // --temperature (0: greedy)
float g_top_p = 1.0f;        // --top-p

GenerationOptions options_for(int64_t gen_tokens) {
  GenerationOptions o;
  o.max_tokens = gen_tokens;
  o.sampling.temperature = g_temperature;
  o.sampling.top_p = g_top_p;
  o.sampling.seed = 42;  // seeded: the Generator check below compares token for token
  o.ignore_eos = true;
  return o;
}

DeviceSpec g_device;  // --device, resolved once in main
KvDType g_kv_dtype = KvDType::kF32;  // --kv-cache-dtype

WorkerOptions worker_options(int threads, int64_t streams, int64_t tokens_per_stream,
                             int64_t max_batched) {
  WorkerOptions o;
  o.device = g_device;
  o.kv_cache_dtype = g_kv_dtype;
  o.threads = threads;
  o.max_running = streams;
  o.max_batched_tokens = std::max(max_batched, streams);
  o.max_queued = streams;
  o.kv_cache_tokens = streams * (tokens_per_stream + 16);
  o.max_context_tokens = tokens_per_stream + 16;
  return o;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

struct Run {
  std::vector<std::shared_ptr<TimingSink>> sinks;
  Clock::time_point start;
};

// Submits `streams` requests at once and waits for all; nullopt-like empty sinks on failure.
bool run_streams(const LoadedModel& m, const WorkerOptions& wo, int64_t streams,
                 int64_t prompt_tokens, int64_t gen_tokens, Run& run) {
  auto worker = Worker::create("bench", m, wo);
  if (!worker.ok()) {
    std::fprintf(stderr, "%s\n", worker.error().to_string().c_str());
    return false;
  }
  run.sinks.clear();
  run.start = Clock::now();
  for (int64_t s = 0; s < streams; ++s) {
    auto sink = std::make_shared<TimingSink>();
    auto h = (*worker)->submit({prompt_for(s, prompt_tokens), options_for(gen_tokens)}, sink);
    if (!h.ok()) {
      std::fprintf(stderr, "submit: %s\n", h.error().to_string().c_str());
      return false;
    }
    run.sinks.push_back(sink);
  }
  for (auto& s : run.sinks) {
    s->wait();
    if (!s->error().empty()) {
      std::fprintf(stderr, "stream failed: %s\n", s->error().c_str());
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qgate worker benchmark: continuous batching throughput and inter-token latency"};
  std::string model_path;
  int threads = 2;
  std::vector<int64_t> stream_counts = {1, 4, 16, 64};
  int64_t prompt_tokens = 32, gen_tokens = 64, max_batched = 512;
  int rounds = 3;
  app.add_option("--model", model_path, "GGUF file or HF directory")->required();
  app.add_option("--threads", threads, "compute threads");
  app.add_option("--streams", stream_counts, "concurrent stream counts to measure")->delimiter(',');
  app.add_option("--prompt-tokens", prompt_tokens, "prompt length per stream");
  app.add_option("--gen-tokens", gen_tokens, "generated tokens per stream");
  app.add_option("--max-batched-tokens", max_batched, "worker max_batched_tokens");
  app.add_option("--rounds", rounds, "measurements per stream count (medians reported)");
  std::string device = "cpu";
  app.add_option("--device", device, "cpu, cuda:N or auto");
  std::string kv_dtype = "f32";
  app.add_option("--kv-cache-dtype", kv_dtype, "KV cache element type of a CPU worker")
      ->check(CLI::IsMember({"f32", "f16"}))
      ->capture_default_str();
  app.add_option("--temperature", g_temperature, "sampling temperature (0: greedy)")
      ->check(CLI::Range(0.0f, 2.0f))
      ->capture_default_str();
  app.add_option("--top-p", g_top_p, "nucleus sampling mass")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  g_kv_dtype = *parse_kv_dtype(kv_dtype);
  auto spec = parse_device_spec(device);
  if (spec.ok()) spec = resolve_device(spec.value(), cuda_built(), cuda_devices());
  if (!spec.ok()) {
    std::fprintf(stderr, "--device: %s\n", spec.error().to_string().c_str());
    return 1;
  }
  g_device = spec.value();

  auto loaded = load_model(model_path);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.error().to_string().c_str());
    return 1;
  }
  const int64_t per_stream = prompt_tokens + gen_tokens;

  // Correctness first: stream 0 alone and inside the largest batch must equal the Generator.
  {
    ThreadPool pool(threads);
    Generator gen(*loaded->model, *loaded->tokenizer, pool, per_stream + 1, g_kv_dtype);
    auto ref = gen.generate(prompt_for(0, prompt_tokens), options_for(gen_tokens));
    if (!ref.ok()) {
      std::fprintf(stderr, "%s\n", ref.error().to_string().c_str());
      return 1;
    }
    const int64_t most = *std::max_element(stream_counts.begin(), stream_counts.end());
    for (int64_t n : {int64_t{1}, most}) {
      Run run;
      if (!run_streams(*loaded, worker_options(threads, n, per_stream, max_batched), n,
                       prompt_tokens, gen_tokens, run)) {
        return 1;
      }
      // The CPU worker is bit-identical to the Generator. A GPU rounds activations to fp16
      // where the CPU quantizes them to int8: the check there is the first 8 tokens (as in
      // tests/engine/test_cuda_forward.cpp); the rest may drift where logits nearly tie.
      const std::vector<int32_t>& got = run.sinks[0]->summary().tokens;
      const size_t n_check = g_device.is_cuda() ? std::min<size_t>(8, ref->tokens.size())
                                                : ref->tokens.size();
      if (got.size() < n_check ||
          !std::equal(ref->tokens.begin(), ref->tokens.begin() + static_cast<long>(n_check),
                      got.begin()) ||
          (!g_device.is_cuda() && got != ref->tokens)) {
        std::fprintf(stderr, "MISMATCH: stream 0 of %lld differs from the Generator\n",
                     static_cast<long long>(n));
        return 1;
      }
    }
    std::printf(
        "{\"check\": \"stream 0 (seeded) equals the Generator alone and in a batch\", "
        "\"device\": \"%s\", \"ok\": true}\n",
        g_device.to_string().c_str());
  }

  struct Measured {
    std::vector<double> decode_tps, e2e_tps, p50, p99;
  };
  std::vector<Measured> measured(stream_counts.size());
  for (int round = 0; round < rounds; ++round) {
    for (size_t ci = 0; ci < stream_counts.size(); ++ci) {
      const int64_t n = stream_counts[ci];
      Run run;
      if (!run_streams(*loaded, worker_options(threads, n, per_stream, max_batched), n,
                       prompt_tokens, gen_tokens, run)) {
        return 1;
      }
      Clock::time_point all_first = run.start, last_end = run.start;
      std::vector<double> gaps_ms;
      int64_t generated = 0;
      for (const auto& s : run.sinks) {
        const auto& ev = s->events();
        if (ev.empty()) continue;
        all_first = std::max(all_first, ev.front().first);
        last_end = std::max(last_end, s->end());
        generated += static_cast<int64_t>(s->summary().tokens.size());
        for (size_t i = 1; i < ev.size(); ++i) {
          const double ms =
              std::chrono::duration<double, std::milli>(ev[i].first - ev[i - 1].first).count();
          const int64_t dt = std::max<int64_t>(1, ev[i].second - ev[i - 1].second);
          for (int64_t k = 0; k < dt; ++k) gaps_ms.push_back(ms / static_cast<double>(dt));
        }
      }
      // Tokens that arrived while every stream was decoding.
      int64_t window_tokens = 0;
      Clock::time_point window_end = all_first;
      for (const auto& s : run.sinks) {
        const auto& ev = s->events();
        for (size_t i = 1; i < ev.size(); ++i) {
          if (ev[i].first > all_first) {
            window_tokens += ev[i].second - ev[i - 1].second;
            window_end = std::max(window_end, ev[i].first);
          }
        }
      }
      const double window_s = std::chrono::duration<double>(window_end - all_first).count();
      Measured& m = measured[ci];
      m.decode_tps.push_back(window_s > 0 ? static_cast<double>(window_tokens) / window_s : 0);
      m.e2e_tps.push_back(static_cast<double>(generated) /
                          std::chrono::duration<double>(last_end - run.start).count());
      m.p50.push_back(percentile(gaps_ms, 0.5));
      m.p99.push_back(percentile(gaps_ms, 0.99));
      std::printf("{\"round\": %d, \"streams\": %lld, \"decode_tps\": %.1f, \"e2e_tps\": %.1f, "
                  "\"itl_p50_ms\": %.2f, \"itl_p99_ms\": %.2f}\n",
                  round, static_cast<long long>(n), m.decode_tps.back(), m.e2e_tps.back(),
                  m.p50.back(), m.p99.back());
      std::fflush(stdout);
    }
  }
  const double base = percentile(measured[0].decode_tps, 0.5);
  for (size_t ci = 0; ci < stream_counts.size(); ++ci) {
    const Measured& m = measured[ci];
    const double tps = percentile(m.decode_tps, 0.5);
    std::printf("{\"summary\": true, \"device\": \"%s\", \"streams\": %lld, \"threads\": %d, "
                "\"kv_cache_dtype\": \"%s\", \"prompt_tokens\": %lld, "
                "\"gen_tokens\": %lld, \"decode_tps\": %.1f, \"e2e_tps\": %.1f, "
                "\"itl_p50_ms\": %.2f, \"itl_p99_ms\": %.2f, \"decode_vs_first\": %.2f}\n",
                g_device.to_string().c_str(), static_cast<long long>(stream_counts[ci]), threads,
                kv_dtype_name(g_kv_dtype), static_cast<long long>(prompt_tokens), static_cast<long long>(gen_tokens), tps,
                percentile(m.e2e_tps, 0.5), percentile(m.p50, 0.5), percentile(m.p99, 0.5),
                base > 0 ? tps / base : 0.0);
  }
  return 0;
}
