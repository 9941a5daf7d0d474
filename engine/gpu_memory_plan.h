// Explicit GPU memory accounting for the variants that share a device: what each needs (weights,
// KV cache, workspace), checked against what the device has free before anything is loaded onto
// it, so a configuration that cannot fit fails at start with the numbers instead of an
// out-of-memory error halfway through loading (or, worse, at the first long request).
//
// Threading: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/model_config.h"
#include "kernels/status.h"

namespace qgate {

class LlamaModel;
struct WorkerOptions;

struct GpuMemoryDemand {
  std::string variant;
  int device = 0;
  uint64_t weight_bytes = 0;     // matrices in their GPU layout, norms, embedding table
  uint64_t kv_cache_bytes = 0;   // the whole paged pool (allocated up front on the GPU)
  uint64_t workspace_bytes = 0;  // activations of the largest step, logits, cuBLASLt, attention
  uint64_t total() const { return weight_bytes + kv_cache_bytes + workspace_bytes; }
};

struct GpuMemoryBudget {
  int device = 0;
  std::string name;
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;  // cudaMemGetInfo at start: other processes' use already subtracted
};

// Kept free on every device beyond the variants' demands: cuBLASLt and graph allocations that are
// not sized up front, allocator granularity, and room for the driver.
inline constexpr uint64_t kGpuMemoryReserveBytes = 512ull << 20;
// The cuBLASLt workspace each CUDA forward pass allocates.
inline constexpr uint64_t kCublasWorkspaceBytes = 32ull << 20;

// The budgets of the devices the demands name (cuda_memory_info for each). NotFound when a device
// cannot be queried.
Result<std::vector<GpuMemoryBudget>> cuda_memory_budgets(std::span<const GpuMemoryDemand> demands);

// fp16 keys and values of every layer for the worker's KV budget.
uint64_t gpu_kv_cache_bytes(const LlamaConfig& c, int64_t num_blocks, int64_t block_tokens);

// The device buffers of the CUDA forward pass for steps of up to `rows` rows and `running`
// sequences, in bytes: engine/cuda_forward.cpp allocates exactly these, so the plan and the
// allocation cannot drift apart.
struct GpuStepBuffers {
  uint64_t x = 0;         // fp32 residual stream [rows][hidden]
  uint64_t xb = 0;        // fp16 normed input [rows][max(hidden, q_dim)]
  uint64_t qkv = 0;  // fp16 [rows][q_dim + 2 kv_dim]: one stacked q/k/v matmul's rows, or q, k, v
  uint64_t att = 0;  // fp16 [rows][q_dim]
  uint64_t gate_up = 0;   // fp16 [rows][2 intermediate]: stacked gate/up rows, or gate then up
  uint64_t hb = 0;        // fp16 [rows][intermediate]
  uint64_t out = 0;       // fp16 o / down projection [rows][hidden]
  uint64_t permuted = 0;  // fp16 act-order gather [rows][widest input]
  uint64_t final_rows = 0;  // fp16 rows that want logits [running][hidden]
  uint64_t logits16 = 0;    // fp16 logits of a 4-bit LM head [running][vocab], else 0
  uint64_t logits = 0;      // fp32 logits [running][vocab] (the same again in pinned host memory)
  int64_t max_blocks = 0;   // block-table stride: blocks of max_context tokens
  uint64_t meta = 0;        // int32 tokens, positions, sequences, starts, block tables
  // Upper bound of the split-context attention partials (the kernels' plan picks the chunking by
  // batch and device; a chunk is never under 16 positions): per sequence and head one
  // (head_dim outputs + max + sum) float record per chunk. The CUDA pass allocates what the
  // kernels ask for, at most this.
  uint64_t attention_bound = 0;
  uint64_t cublas = 0;      // the cuBLASLt workspace
  uint64_t total() const;
};

GpuStepBuffers gpu_step_buffers(const LlamaConfig& c, int64_t rows, int64_t running,
                                int64_t max_context, int64_t block_tokens, bool int4_lm_head);

// The demand of one variant served by a worker with options o (weights measured in their GPU
// layout, which reads the 4-bit block headers once; workspace = gpu_step_buffers().total()).
GpuMemoryDemand gpu_memory_demand(std::string variant, int device, const LlamaModel& model,
                                  const WorkerOptions& o);

// Ok when, on every device, the demands assigned to it fit in free_bytes - reserve_bytes.
// ResourceExhausted otherwise, naming the device, its free memory, each variant's parts and what
// to change; NotFound when a demand names a device with no budget.
Status check_gpu_memory(std::span<const GpuMemoryDemand> demands,
                        std::span<const GpuMemoryBudget> devices, uint64_t reserve_bytes);

}  // namespace qgate
