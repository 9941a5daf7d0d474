// The CUDA forward pass against the CPU one on the real model. Skips without a GPU.
//
// Tolerance: the GPU multiplies fp16 activations by fp16 (or 4-bit) weights with fp32
// accumulation; the CPU reference mode (ForwardScratch::reference_matmul) multiplies fp32
// activations by the same dequantized weights in double. The activations' fp16 rounding (2^-11
// relative) through 30 layers leaves the logits within about 1% of their norm; the greedy token
// is the same wherever the top two logits are not within that noise of each other.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <future>
#include <numeric>
#include <optional>
#include <vector>

#include "engine/batch_forward.h"
#include "engine/gpu_weights.h"
#include "engine/paged_kv_cache.h"
#include "engine/worker.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/device_memory.h"
#include "model_fixture.h"

namespace qgate {
namespace {

#define QGATE_REQUIRE_GPU()                                                       \
  if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device: GPU test skipped"

double normalized_error(std::span<const float> a, std::span<const float> ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - ref[i]) * (a[i] - static_cast<double>(ref[i]));
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

int32_t argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

BatchForwardLimits limits() {
  BatchForwardLimits l;
  l.num_blocks = 64;
  l.block_tokens = 16;
  l.max_batched_tokens = 256;
  l.max_running = 4;
  l.max_context_tokens = 512;
  return l;
}

// Runs a prompt then decode steps through `step`, returning every step's logits. Each decode step
// feeds `forced[i]` when given (so two backends see the same inputs even where their argmax
// would differ), else the argmax of the previous logits.
template <typename Step>
std::vector<std::vector<float>> run_greedy(const std::vector<int32_t>& prompt, int steps,
                                           int64_t vocab, Step step,
                                           std::span<const int32_t> forced = {}) {
  std::vector<int32_t> table(32);
  std::iota(table.begin(), table.end(), 3);  // not starting at 0: the block ids really are used
  std::vector<std::vector<float>> out;
  std::vector<float> logits(static_cast<size_t>(vocab));
  SequenceChunk c{prompt, 0, table, true};
  EXPECT_TRUE(step(std::span<const SequenceChunk>(&c, 1), logits).ok());
  out.push_back(logits);
  int64_t pos = static_cast<int64_t>(prompt.size());
  for (int i = 0; i < steps; ++i) {
    const int32_t tok =
        i < static_cast<int>(forced.size()) ? forced[static_cast<size_t>(i)] : argmax(out.back());
    SequenceChunk d{std::span<const int32_t>(&tok, 1), pos++, table, true};
    const Status s = step(std::span<const SequenceChunk>(&d, 1), logits);
    EXPECT_TRUE(s.ok()) << s.error().to_string();
    out.push_back(logits);
  }
  return out;
}

// Synthetic models (no model file needed, so this runs on any GPU machine): both matrix formats
// the GPU path has (fp16 through cuBLASLt, 4-bit through W4A16 with groups of 64), each with
// q/k/v and gate/up stacked into one matmul, plus a mixed model (4-bit with fp16 v and up) whose
// q, k, v, gate and up run as separate matmuls into dense arrays; both head_dims the attention
// kernels take; prefill, then decode through eager, capture and replay.
TEST(CudaForward, SyntheticModelsFollowTheCpuReference) {
  QGATE_REQUIRE_GPU();
  struct Types {
    DType matrices;
    std::optional<DType> v_and_up;
    const char* name;
  };
  for (const int64_t head_dim : {64, 128}) {
    for (const Types types :
         {Types{DType::kF16, std::nullopt, "F16"}, Types{DType::kQ4_1, std::nullopt, "Q4_1"},
          Types{DType::kQ4_1, DType::kF16, "Q4_1 with F16 v/up"}}) {
      LlamaConfig c;
      c.vocab_size = 1024;
      c.hidden_size = 512;
      c.num_layers = 3;
      c.num_heads = 512 / head_dim;
      c.num_kv_heads = c.num_heads / 2;
      c.head_dim = head_dim;
      c.intermediate_size = 1408;
      c.max_position_embeddings = 1024;
      auto model = LlamaModel::synthetic(c, types.matrices, 64, 11, types.v_and_up);
      ASSERT_TRUE(model.ok()) << model.error().to_string();
      const LlamaLayer& l0 = model->layers()[0];
      ASSERT_EQ(gpu_can_stack(std::vector<const LinearLayer*>{&l0.q, &l0.k, &l0.v}),
                !types.v_and_up.has_value());
      std::vector<int32_t> prompt(37);
      for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>(i * 97 % 1024);
      auto gpu = make_cuda_forward(*model, 0, limits());
      ASSERT_TRUE(gpu.ok()) << gpu.error().to_string();
      const std::vector<int32_t> forced = {5, 900, 17, 1023, 0, 444};
      const auto on_gpu = run_greedy(
          prompt, 6, c.vocab_size,
          [&](auto chunks, std::span<float> lg) { return gpu.value()->forward_batch(chunks, lg); },
          forced);
      PagedKvCache cache(c, limits().num_blocks, limits().block_tokens);
      ThreadPool pool(2);
      ForwardScratch scratch;
      scratch.reference_matmul = true;
      const auto on_cpu = run_greedy(
          prompt, 6, c.vocab_size,
          [&](auto chunks, std::span<float> lg) {
            return model->forward_batch(chunks, cache, scratch, pool, lg);
          },
          forced);
      for (size_t i = 0; i < on_gpu.size(); ++i) {
        EXPECT_LT(normalized_error(on_gpu[i], on_cpu[i]), 1e-2)
            << types.name << " head_dim " << head_dim << " step " << i;
      }
    }
  }
}

TEST(CudaForward, LogitsFollowTheCpuReferenceThroughPrefillAndGraphDecode) {
  QGATE_REQUIRE_GPU();
  QGATE_REQUIRE_MODEL();
  const LlamaModel& model = *model_->model;
  const int64_t vocab = model.config().vocab_size;
  const std::vector<int32_t> prompt = testing::chat_prompt(*model_, "Name three colors.");
  auto gpu = make_cuda_forward(model, 0, limits());
  ASSERT_TRUE(gpu.ok()) << gpu.error().to_string();
  // 12 decode steps: the first of a batch size runs eagerly, the second captures, the rest replay.
  const auto on_gpu = run_greedy(prompt, 12, vocab, [&](auto chunks, std::span<float> lg) {
    return gpu.value()->forward_batch(chunks, lg);
  });
  PagedKvCache cache(model.config(), limits().num_blocks, limits().block_tokens);
  ThreadPool pool(2);
  ForwardScratch scratch;
  scratch.reference_matmul = true;
  const auto on_cpu = run_greedy(prompt, 12, vocab, [&](auto chunks, std::span<float> lg) {
    return model.forward_batch(chunks, cache, scratch, pool, lg);
  });
  ASSERT_EQ(on_gpu.size(), on_cpu.size());
  int same_top1 = 0;
  for (size_t i = 0; i < on_gpu.size(); ++i) {
    const double err = normalized_error(on_gpu[i], on_cpu[i]);
    EXPECT_LT(err, 2e-2) << "step " << i;
    same_top1 += argmax(on_gpu[i]) == argmax(on_cpu[i]) ? 1 : 0;
    std::printf("step %zu: normalized logit error %.2e, top-1 %d vs %d\n", i, err,
                argmax(on_gpu[i]), argmax(on_cpu[i]));
  }
  // Both runs feed their own argmax back, so one disagreement would also change what follows.
  EXPECT_EQ(same_top1, static_cast<int>(on_gpu.size()));
}

TEST(CudaForward, ASequenceGetsTheSameLogitsAloneAndInAMixedBatch) {
  QGATE_REQUIRE_GPU();
  QGATE_REQUIRE_MODEL();
  const LlamaModel& model = *model_->model;
  const auto vocab = static_cast<size_t>(model.config().vocab_size);
  const std::vector<int32_t> a = testing::chat_prompt(*model_, "What is 2 + 2?");
  const std::vector<int32_t> b = testing::chat_prompt(*model_, "Write a haiku about rain.");
  std::vector<int32_t> table_a = {0, 1, 2, 3}, table_b = {10, 11, 12, 13};

  auto alone = make_cuda_forward(model, 0, limits());
  ASSERT_TRUE(alone.ok()) << alone.error().to_string();
  std::vector<float> la(vocab), lb(vocab);
  SequenceChunk ca{a, 0, table_a, true};
  SequenceChunk cb{b, 0, table_b, true};
  ASSERT_TRUE(alone.value()->forward_batch(std::span(&ca, 1), la).ok());
  ASSERT_TRUE(alone.value()->forward_batch(std::span(&cb, 1), lb).ok());

  auto mixed = make_cuda_forward(model, 0, limits());
  ASSERT_TRUE(mixed.ok()) << mixed.error().to_string();
  std::vector<float> both(2 * vocab);
  const SequenceChunk chunks[] = {ca, cb};
  ASSERT_TRUE(mixed.value()->forward_batch(chunks, both).ok());
  // Row-independent kernels except the matmul's choice of kernel by row count: fp32 accumulation
  // in another order, far below the fp16 noise.
  EXPECT_LT(normalized_error(std::span(both).first(vocab), la), 1e-3);
  EXPECT_LT(normalized_error(std::span(both).subspan(vocab), lb), 1e-3);
}

TEST(CudaForward, RejectsBatchesBeyondItsLimits) {
  QGATE_REQUIRE_GPU();
  QGATE_REQUIRE_MODEL();
  auto gpu = make_cuda_forward(*model_->model, 0, limits());
  ASSERT_TRUE(gpu.ok()) << gpu.error().to_string();
  std::vector<int32_t> long_prompt(300, 1);
  std::vector<int32_t> table(32, 0);
  std::vector<float> logits(static_cast<size_t>(model_->model->config().vocab_size));
  SequenceChunk c{long_prompt, 0, table, true};
  EXPECT_EQ(gpu.value()->forward_batch(std::span(&c, 1), logits).error().code(),
            ErrorCode::kInvalidArgument);  // 300 rows > max_batched_tokens 256
  std::vector<int32_t> one = {1};
  std::vector<int32_t> long_table(64, 0);  // covers position 600, so only the context limit refuses
  SequenceChunk far{one, 600, long_table, true};
  EXPECT_EQ(gpu.value()->forward_batch(std::span(&far, 1), logits).error().code(),
            ErrorCode::kInvalidArgument);  // past max_context_tokens
  std::vector<int32_t> bad_table = {0, 64};
  std::vector<int32_t> prompt(20, 1);
  SequenceChunk outside{prompt, 0, bad_table, true};
  EXPECT_EQ(gpu.value()->forward_batch(std::span(&outside, 1), logits).error().code(),
            ErrorCode::kInvalidArgument);  // block 64 of 64
}

// A whole worker on the GPU generates what the CPU worker generates, greedy, for each variant.
TEST(CudaForward, WorkerOnTheGpuMatchesTheCpuWorkerGreedy) {
  QGATE_REQUIRE_GPU();
  QGATE_REQUIRE_MODEL();
  for (const char* path : {"SmolLM2-135M-Instruct.Q4_1.gguf", "variants/smollm2-fp16",
                           "variants/smollm2-gptq-4bit", "variants/smollm2-awq-4bit"}) {
    const std::string full = testing::model_dir() + "/" + path;
    if (!std::filesystem::exists(full)) continue;
    std::vector<std::vector<int32_t>> outputs;
    for (const char* device : {"cpu", "cuda:0"}) {
      auto loaded = load_model(full);
      ASSERT_TRUE(loaded.ok()) << loaded.error().to_string();
      const std::vector<int32_t> prompt = testing::chat_prompt(loaded.value(), "List 3 fruits.");
      WorkerOptions o;
      o.threads = 2;
      o.kv_cache_tokens = 1024;
      o.max_context_tokens = 512;
      o.device = parse_device_spec(device).value();
      auto worker = Worker::create(path, std::move(loaded).value(), o);
      ASSERT_TRUE(worker.ok()) << worker.error().to_string();
      struct Sink : GenerationSink {
        std::promise<GenerationSummary> done;
        void on_text(std::string_view, int64_t) override {}
        void on_finish(const GenerationSummary& s) override { done.set_value(s); }
        void on_error(const Error& e) override {
          ADD_FAILURE() << e.to_string();
          done.set_value({});
        }
      };
      auto sink = std::make_shared<Sink>();
      auto fut = sink->done.get_future();
      ASSERT_TRUE(worker.value()->submit({prompt, testing::greedy(24)}, sink).ok());
      outputs.push_back(fut.get().tokens);
    }
    ASSERT_EQ(outputs.size(), 2u);
    ASSERT_FALSE(outputs[0].empty()) << path;
    // The CPU worker quantizes activations to int8, the GPU rounds them to fp16: both are
    // approximations of the same model, so the outputs must agree at least at the start.
    const size_t n = std::min<size_t>(8, std::min(outputs[0].size(), outputs[1].size()));
    EXPECT_TRUE(std::equal(outputs[0].begin(), outputs[0].begin() + static_cast<long>(n),
                           outputs[1].begin()))
        << path;
  }
}

}  // namespace
}  // namespace qgate
