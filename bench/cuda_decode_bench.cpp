// End-to-end decode speed of the CUDA forward pass: tokens/s at batch 1 and at N concurrent
// streams, for a real model (GGUF or HF directory) or a synthetic 7B-shaped Llama generated here
// (random weights, F16 or 4-bit with groups of 128), against the bandwidth bound: the bytes every
// decode step must read (weights in their GPU layout + the KV cache it attends over) divided by the
// device-to-device copy bandwidth measured in the same run.
//
// Check before timing: for a real model, greedy decoding on the GPU must reproduce the CPU's
// greedy tokens over the first steps (the CPU reference is the double-precision matmul mode); for
// a synthetic model every logit must be finite. Then each stream count is timed over --steps
// decode steps after a warm-up (which also captures the step's CUDA graph).
//
//   qgate_cuda_decode_bench --model models/variants/smollm2-gptq-4bit --streams 1,32
//   qgate_cuda_decode_bench --synthetic 7b-q4 --streams 1,32
#include <CLI/CLI.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "engine/batch_forward.h"
#include "engine/gpu_memory_plan.h"
#include "engine/model_loader.h"
#include "engine/paged_kv_cache.h"
#include "engine/worker.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/cuda_check.h"

namespace qgate {
namespace {

using Clock = std::chrono::steady_clock;

// Llama-2-7B's shape.
LlamaConfig llama7b() {
  LlamaConfig c;
  c.vocab_size = 32000;
  c.hidden_size = 4096;
  c.num_layers = 32;
  c.num_heads = 32;
  c.num_kv_heads = 32;
  c.head_dim = 128;
  c.intermediate_size = 11008;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-5f;
  return c;
}

// Device-to-device copy of 1 GiB, median of 20, counting bytes read plus written (GB/s).
double copy_bandwidth_gbs() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  CUDA_CHECK(cudaMalloc(&a, bytes));
  CUDA_CHECK(cudaMalloc(&b, bytes));
  CUDA_CHECK(cudaMemset(a, 0x5a, bytes));
  cudaEvent_t t0, t1;
  CUDA_CHECK(cudaEventCreate(&t0));
  CUDA_CHECK(cudaEventCreate(&t1));
  std::vector<float> ms;
  for (int i = 0; i < 23; ++i) {
    CUDA_CHECK(cudaEventRecord(t0));
    CUDA_CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
    CUDA_CHECK(cudaEventRecord(t1));
    CUDA_CHECK(cudaEventSynchronize(t1));
    float m = 0;
    CUDA_CHECK(cudaEventElapsedTime(&m, t0, t1));
    if (i >= 3) ms.push_back(m);
  }
  std::sort(ms.begin(), ms.end());
  CUDA_CHECK(cudaFree(a));
  CUDA_CHECK(cudaFree(b));
  return 2.0 * static_cast<double>(bytes) / (ms[ms.size() / 2] * 1e-3) / 1e9;
}

int32_t argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

struct Streams {
  std::vector<std::vector<int32_t>> tables;
  std::vector<int64_t> pos;
  std::vector<int32_t> next;
};

// Prefills `n` prompts of `prompt` tokens (one step each), leaving every stream ready to decode.
bool prefill(BatchForward& f, const LlamaConfig& c, int64_t n, int64_t prompt,
             int64_t blocks_per_stream, Streams& s, std::vector<float>& logits) {
  s = {};
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int32_t> table(static_cast<size_t>(blocks_per_stream));
    std::iota(table.begin(), table.end(), static_cast<int32_t>(i * blocks_per_stream));
    std::vector<int32_t> tokens(static_cast<size_t>(prompt));
    for (int64_t t = 0; t < prompt; ++t) {
      tokens[static_cast<size_t>(t)] = static_cast<int32_t>((i * 7919 + t * 104729) % c.vocab_size);
    }
    SequenceChunk ch{tokens, 0, table, true};
    const Status st = f.forward_batch(std::span(&ch, 1), logits);
    if (!st.ok()) {
      std::fprintf(stderr, "prefill: %s\n", st.error().to_string().c_str());
      return false;
    }
    s.tables.push_back(std::move(table));
    s.pos.push_back(prompt);
    s.next.push_back(argmax(std::span(logits).first(static_cast<size_t>(c.vocab_size))));
  }
  return true;
}

// One decode step of every stream; greedy next tokens. False on error or a non-finite logit.
bool decode_step(BatchForward& f, const LlamaConfig& c, Streams& s, std::vector<float>& logits) {
  const size_t n = s.tables.size();
  std::vector<SequenceChunk> chunks(n);
  for (size_t i = 0; i < n; ++i) {
    chunks[i] = {std::span<const int32_t>(&s.next[i], 1), s.pos[i], s.tables[i], true};
  }
  const Status st = f.forward_batch(chunks, logits);
  if (!st.ok()) {
    std::fprintf(stderr, "decode: %s\n", st.error().to_string().c_str());
    return false;
  }
  const auto vocab = static_cast<size_t>(c.vocab_size);
  for (size_t i = 0; i < n; ++i) {
    std::span<const float> row(logits.data() + i * vocab, vocab);
    if (!std::isfinite(row[0]) || !std::isfinite(row[vocab - 1])) return false;
    s.next[i] = argmax(row);
    ++s.pos[i];
  }
  return true;
}

// Greedy tokens of one stream on the CPU reference path.
std::vector<int32_t> cpu_greedy(const LlamaModel& m, int64_t prompt, int steps) {
  const LlamaConfig& c = m.config();
  PagedKvCache cache(c, 64, 16);
  ThreadPool pool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  ForwardScratch scratch;
  scratch.reference_matmul = true;
  std::vector<int32_t> table(64);
  std::iota(table.begin(), table.end(), 0);
  std::vector<int32_t> tokens(static_cast<size_t>(prompt));
  for (int64_t t = 0; t < prompt; ++t) {
    tokens[static_cast<size_t>(t)] = static_cast<int32_t>((t * 104729) % c.vocab_size);
  }
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));
  std::vector<int32_t> out;
  SequenceChunk ch{tokens, 0, table, true};
  if (!m.forward_batch(std::span(&ch, 1), cache, scratch, pool, logits).ok()) return out;
  out.push_back(argmax(logits));
  for (int i = 0; i < steps; ++i) {
    SequenceChunk d{std::span<const int32_t>(&out.back(), 1), prompt + i, table, true};
    if (!m.forward_batch(std::span(&d, 1), cache, scratch, pool, logits).ok()) return out;
    out.push_back(argmax(logits));
  }
  return out;
}

}  // namespace
}  // namespace qgate

int main(int argc, char** argv) {
  using namespace qgate;
  CLI::App app{"qgate CUDA decode benchmark: tokens/s at batch 1 and N streams vs the bandwidth bound"};
  std::string model_path, synthetic;
  std::vector<int64_t> stream_counts = {1, 32};
  int64_t prompt = 64, steps = 128;
  int device = 0;
  app.add_option("--model", model_path, "GGUF file or HF directory");
  app.add_option("--synthetic", synthetic, "7b-f16 or 7b-q4 (Llama-2-7B shape, random weights)");
  app.add_option("--streams", stream_counts, "concurrent stream counts")->delimiter(',');
  app.add_option("--prompt-tokens", prompt, "prompt length per stream");
  app.add_option("--steps", steps, "timed decode steps per stream count");
  app.add_option("--device", device, "CUDA device ordinal");
  CLI11_PARSE(app, argc, argv);
  if (model_path.empty() == synthetic.empty()) {
    std::fprintf(stderr, "give exactly one of --model and --synthetic\n");
    return 2;
  }
  CUDA_CHECK(cudaSetDevice(device));

  std::shared_ptr<const LlamaModel> model;
  std::string name = synthetic;
  if (!synthetic.empty()) {
    if (synthetic != "7b-f16" && synthetic != "7b-q4") {
      std::fprintf(stderr, "--synthetic must be 7b-f16 or 7b-q4\n");
      return 2;
    }
    auto m = LlamaModel::synthetic(llama7b(), synthetic == "7b-f16" ? DType::kF16 : DType::kQ4_1,
                                   128, 42);
    if (!m.ok()) {
      std::fprintf(stderr, "%s\n", m.error().to_string().c_str());
      return 1;
    }
    model = std::make_shared<const LlamaModel>(std::move(m).value());
  } else {
    auto m = load_model(model_path);
    if (!m.ok()) {
      std::fprintf(stderr, "%s\n", m.error().to_string().c_str());
      return 1;
    }
    model = m->model;
    name = model_path;
  }
  const LlamaConfig& c = model->config();
  const double bw = copy_bandwidth_gbs();
  const int64_t max_streams = *std::max_element(stream_counts.begin(), stream_counts.end());
  const int64_t context = prompt + steps + 32;
  const int64_t block_tokens = 16;
  const int64_t blocks_per_stream = (context + block_tokens - 1) / block_tokens;

  WorkerOptions sizing;
  sizing.max_running = max_streams;
  sizing.max_batched_tokens = std::max(prompt, max_streams);
  sizing.kv_block_tokens = block_tokens;
  sizing.kv_cache_tokens = max_streams * blocks_per_stream * block_tokens;
  sizing.max_context_tokens = context;
  const GpuMemoryDemand demand = gpu_memory_demand(name, device, *model, sizing);
  std::printf("{\"model\": \"%s\", \"describe\": \"%s\", \"copy_bandwidth_gbs\": %.0f, "
              "\"gpu_weight_bytes\": %llu, \"kv_cache_bytes\": %llu, \"workspace_bytes\": %llu}\n",
              name.c_str(), model->describe().c_str(), bw,
              static_cast<unsigned long long>(demand.weight_bytes),
              static_cast<unsigned long long>(demand.kv_cache_bytes),
              static_cast<unsigned long long>(demand.workspace_bytes));

  BatchForwardLimits limits;
  limits.num_blocks = max_streams * blocks_per_stream;
  limits.block_tokens = block_tokens;
  limits.max_batched_tokens = sizing.max_batched_tokens;
  limits.max_running = max_streams;
  limits.max_context_tokens = context;
  auto forward = make_cuda_forward(*model, device, limits);
  if (!forward.ok()) {
    std::fprintf(stderr, "%s\n", forward.error().to_string().c_str());
    return 1;
  }
  BatchForward& f = *forward.value();
  std::vector<float> logits(static_cast<size_t>(max_streams * c.vocab_size));

  // Check before timing.
  if (synthetic.empty()) {
    const int check_steps = 8;
    const std::vector<int32_t> ref = cpu_greedy(*model, prompt, check_steps);
    Streams s;
    // Stream 0's prompt is the one cpu_greedy runs.
    if (!prefill(f, c, 1, prompt, blocks_per_stream, s, logits)) return 1;
    std::vector<int32_t> got = {s.next[0]};
    for (int i = 0; i < check_steps; ++i) {
      if (!decode_step(f, c, s, logits)) return 1;
      got.push_back(s.next[0]);
    }
    if (got != ref) {
      std::fprintf(stderr, "MISMATCH: GPU greedy tokens differ from the CPU reference\n");
      return 1;
    }
    std::printf("{\"check\": \"GPU greedy equals CPU reference for %d steps\", \"ok\": true}\n",
                check_steps + 1);
  }

  for (int64_t n : stream_counts) {
    Streams s;
    if (!prefill(f, c, n, prompt, blocks_per_stream, s, logits)) return 1;
    // Warm-up: the first step of a batch size runs eagerly, the second captures its graph.
    for (int i = 0; i < 3; ++i) {
      if (!decode_step(f, c, s, logits)) {
        std::fprintf(stderr, "decode failed or produced non-finite logits\n");
        return 1;
      }
    }
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < steps; ++i) {
      if (!decode_step(f, c, s, logits)) {
        std::fprintf(stderr, "decode failed or produced non-finite logits\n");
        return 1;
      }
    }
    const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    const double step_ms = sec / static_cast<double>(steps) * 1e3;
    // Bytes one step must read: every weight once, and each stream's KV (mid-run context).
    const double kv_read = static_cast<double>(n) * static_cast<double>(prompt + 3 + steps / 2) *
                           static_cast<double>(c.kv_dim() * c.num_layers * 2 * 2);
    const double bound_ms = (static_cast<double>(demand.weight_bytes) + kv_read) / (bw * 1e9) * 1e3;
    std::printf("{\"summary\": true, \"model\": \"%s\", \"streams\": %lld, \"step_ms\": %.3f, "
                "\"tokens_per_s\": %.1f, \"bound_step_ms\": %.3f, \"of_bound\": %.2f}\n",
                name.c_str(), static_cast<long long>(n), step_ms,
                static_cast<double>(n) / sec * static_cast<double>(steps), bound_ms,
                bound_ms / step_ms);
  }
  return 0;
}
