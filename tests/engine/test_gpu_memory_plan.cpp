#include "engine/gpu_memory_plan.h"

#include <gtest/gtest.h>

#include <vector>

#include "engine/worker.h"
#include "model_fixture.h"

namespace qgate {
namespace {

LlamaConfig smollm2_config() {
  LlamaConfig c;
  c.vocab_size = 49152;
  c.hidden_size = 576;
  c.num_layers = 30;
  c.num_heads = 9;
  c.num_kv_heads = 3;
  c.head_dim = 64;
  c.intermediate_size = 1536;
  return c;
}

TEST(GpuMemoryPlan, KvCacheIsFp16KeysAndValuesOfEveryLayer) {
  // 30 layers x 192 kv dims x (K, V) x 2 bytes = 23040 bytes per token.
  EXPECT_EQ(gpu_kv_cache_bytes(smollm2_config(), 512, 16), 512ull * 16 * 23040);
}

TEST(GpuMemoryPlan, StepBuffersFollowTheStepSizeAndTheRunningSequences) {
  const LlamaConfig c = smollm2_config();
  const GpuStepBuffers small = gpu_step_buffers(c, 64, 4, 2048, 16, false);
  // Residual stream fp32, matmul inputs/outputs fp16, every row of the step.
  EXPECT_EQ(small.x, 64u * 576 * 4);
  EXPECT_EQ(small.qkv, 64u * (576 + 2 * 192) * 2);  // q | k | v of one stacked matmul
  EXPECT_EQ(small.gate_up, 64u * 2 * 1536 * 2);
  EXPECT_EQ(small.hb, 64u * 1536 * 2);
  EXPECT_EQ(small.permuted, 64u * 1536 * 2);  // the widest input: the down projection's
  EXPECT_EQ(small.logits, 4u * 49152 * 4);
  EXPECT_EQ(small.logits16, 0u);
  EXPECT_EQ(small.max_blocks, 128);
  EXPECT_EQ(small.meta, (3u * 64 + 2 * 4 + 1 + 4 * 128) * 4);
  EXPECT_EQ(small.cublas, kCublasWorkspaceBytes);
  EXPECT_EQ(small.total(), small.x + small.xb + small.qkv + small.att + small.gate_up + small.hb +
                               small.out + small.permuted + small.final_rows + small.logits16 +
                               small.logits + small.meta + small.attention_bound + small.cublas);
  // A 4-bit LM head adds its fp16 logits; more rows and more sequences cost more.
  EXPECT_EQ(gpu_step_buffers(c, 64, 4, 2048, 16, true).logits16, 4u * 49152 * 2);
  EXPECT_GT(gpu_step_buffers(c, 512, 4, 2048, 16, false).total(), small.total());
  EXPECT_GE(gpu_step_buffers(c, 64, 32, 2048, 16, false).total() - small.total(),
            28ull * 49152 * 4);
}

GpuMemoryDemand demand(const char* name, int device, uint64_t gib_tenths) {
  GpuMemoryDemand d;
  d.variant = name;
  d.device = device;
  d.weight_bytes = gib_tenths * (1ull << 30) / 10;
  d.kv_cache_bytes = 1ull << 30;
  d.workspace_bytes = 100ull << 20;
  return d;
}

TEST(GpuMemoryPlan, VariantsSharingADeviceAreSummed) {
  const std::vector<GpuMemoryBudget> gpus = {{0, "H100", 80ull << 30, 10ull << 30},
                                             {1, "H100", 80ull << 30, 80ull << 30}};
  // 3 x (1.5 + 1 + 0.1 GiB) = 7.8 GiB on device 0: fits in 10 - 0.5.
  std::vector<GpuMemoryDemand> three = {demand("fp16", 0, 15), demand("gptq", 0, 15),
                                        demand("awq", 0, 15)};
  EXPECT_TRUE(check_gpu_memory(three, gpus, kGpuMemoryReserveBytes).ok());
  // A fourth of 2.6 GiB does not fit beside them on device 0, but fits on device 1.
  three.push_back(demand("big", 0, 15));
  const Status s = check_gpu_memory(three, gpus, kGpuMemoryReserveBytes);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kResourceExhausted);
  const std::string& m = s.error().message();
  EXPECT_NE(m.find("cuda:0 (H100) need 10.39 GiB but 9.50 GiB is usable"), std::string::npos) << m;
  EXPECT_NE(m.find("gptq needs 2.60 GiB (weights 1.50 GiB, KV cache 1.00 GiB, workspace 0.10 GiB)"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("kv_cache_tokens"), std::string::npos) << m;
  three.back().device = 1;
  EXPECT_TRUE(check_gpu_memory(three, gpus, kGpuMemoryReserveBytes).ok());
}

TEST(GpuMemoryPlan, UnknownDeviceAndReserveLargerThanFree) {
  const std::vector<GpuMemoryBudget> gpus = {{0, "L4", 24ull << 30, 256ull << 20}};
  const std::vector<GpuMemoryDemand> on1 = {demand("x", 1, 1)};
  EXPECT_EQ(check_gpu_memory(on1, gpus, 0).error().code(), ErrorCode::kNotFound);
  const std::vector<GpuMemoryDemand> tiny = {GpuMemoryDemand{"tiny", 0, 1, 1, 1}};
  const Status s = check_gpu_memory(tiny, gpus, kGpuMemoryReserveBytes);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("0.00 GiB is usable"), std::string::npos);
}

TEST(GpuMemoryPlan, DemandOfTheRealModel) {
  QGATE_REQUIRE_MODEL();
  WorkerOptions o;
  o.kv_cache_tokens = 8192;
  o.kv_block_tokens = 16;
  const GpuMemoryDemand d = gpu_memory_demand("smollm2", 0, *model_->model, o);
  // The GGUF is Q4_1 with Q8_0/F16 leftovers; on the GPU the 4-bit matrices take ~0.53-0.63
  // bytes per weight, the rest 2, and the fp16 embedding table (tied LM head) 49152 x 576 x 2.
  const uint64_t embedding = 49152ull * 576 * 2;
  const uint64_t others = 135'000'000ull - 49152ull * 576;  // weights besides the embedding
  EXPECT_GT(d.weight_bytes, embedding + others / 2);
  EXPECT_LT(d.weight_bytes, embedding + others * 2);
  EXPECT_EQ(d.kv_cache_bytes, 8192ull * 23040);
  // The GGUF's LM head is the tied Q8_0/F16 embedding: fp16 on the GPU, so no fp16 logits buffer.
  EXPECT_EQ(d.workspace_bytes,
            gpu_step_buffers(model_->model->config(), o.max_batched_tokens, o.max_running,
                             o.max_context_tokens, o.kv_block_tokens, false)
                .total());
  EXPECT_EQ(d.total(), d.weight_bytes + d.kv_cache_bytes + d.workspace_bytes);
}

}  // namespace
}  // namespace qgate
