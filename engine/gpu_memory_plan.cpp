#include "engine/gpu_memory_plan.h"

#include <cstdio>

#include "engine/gpu_weights.h"
#include "engine/llama_model.h"
#include "engine/worker.h"
#include "kernels/cuda/device.h"

namespace qgate {

namespace {

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(bytes) / (1024.0 * 1024 * 1024));
  return buf;
}

}  // namespace

uint64_t gpu_kv_cache_bytes(const LlamaConfig& c, int64_t num_blocks, int64_t block_tokens) {
  // Keys and values, fp16.
  return static_cast<uint64_t>(num_blocks * block_tokens) * static_cast<uint64_t>(c.kv_dim()) *
         static_cast<uint64_t>(c.num_layers) * 2 * 2;
}

uint64_t gpu_workspace_bytes(const LlamaConfig& c, const WorkerOptions& o) {
  const auto rows = static_cast<uint64_t>(o.max_batched_tokens);
  const auto d = static_cast<uint64_t>(c.hidden_size);
  const auto qd = static_cast<uint64_t>(c.q_dim());
  const auto kvd = static_cast<uint64_t>(c.kv_dim());
  const auto inter = static_cast<uint64_t>(c.intermediate_size);
  const auto widest = std::max({d, qd, inter});
  // Residual stream fp32; normed input, q, k, v, attention output, gate, up, the act-order
  // gather and the matmul output fp16.
  const uint64_t activations = rows * (d * 4 + (d + qd + 2 * kvd + qd + 2 * inter + widest * 2) * 2);
  // Logits: the gathered final rows (fp16) and fp32 logits for every sequence of a step.
  const auto running = static_cast<uint64_t>(o.max_running);
  const uint64_t logits = running * (d * 2 + static_cast<uint64_t>(c.vocab_size) * 4);
  // Split-context (flash-decoding) attention partials: per sequence and head, one (head_dim
  // outputs + max + sum) float record per chunk. The kernels' plan picks the chunking by batch and
  // device; a chunk is never under 16 positions, which bounds it from above.
  const auto chunks = static_cast<uint64_t>((o.max_context_tokens + 15) / 16);
  const uint64_t attention = running * static_cast<uint64_t>(c.num_heads) * chunks *
                             (static_cast<uint64_t>(c.head_dim) + 2) * 4;
  const uint64_t cublas = 32ull << 20;
  // Step metadata (tokens, positions, block tables) is small; 1 MiB covers it.
  return activations + logits + attention + cublas + (1ull << 20);
}

GpuMemoryDemand gpu_memory_demand(std::string variant, int device, const LlamaModel& model,
                                  const WorkerOptions& o) {
  const LlamaConfig& c = model.config();
  GpuMemoryDemand m;
  m.variant = std::move(variant);
  m.device = device;
  uint64_t w = 0;
  for (const LlamaLayer& l : model.layers()) {
    for (const LinearLayer* lin : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) {
      w += gpu_weight_bytes(lin->weight);
      if (lin->bias != nullptr) w += static_cast<uint64_t>(lin->weight.rows) * 4;
      if (lin->input_perm != nullptr) w += static_cast<uint64_t>(lin->weight.cols) * 4;
    }
    w += static_cast<uint64_t>(c.hidden_size) * 4 * 2;  // the two norms, fp32
  }
  // The embedding table is fp16 for the lookup; an untied LM head is its own matrix.
  w += static_cast<uint64_t>(c.vocab_size * c.hidden_size) * 2;
  if (model.lm_head().data != model.embedding().data ||
      gpu_weight_format(model.lm_head().type) == GpuWeightFormat::kW4A16) {
    w += gpu_weight_bytes(model.lm_head());
  }
  w += static_cast<uint64_t>(c.hidden_size) * 4;
  m.weight_bytes = w;
  const int64_t blocks = o.kv_cache_tokens / o.kv_block_tokens;
  m.kv_cache_bytes = gpu_kv_cache_bytes(c, blocks, o.kv_block_tokens);
  m.workspace_bytes = gpu_workspace_bytes(c, o);
  return m;
}

Result<std::vector<GpuMemoryBudget>> cuda_memory_budgets(std::span<const GpuMemoryDemand> demands) {
  std::vector<GpuMemoryBudget> out;
  const std::vector<CudaDeviceInfo> devices = cuda_devices();
  for (const GpuMemoryDemand& d : demands) {
    bool seen = false;
    for (const GpuMemoryBudget& b : out) seen = seen || b.device == d.device;
    if (seen) continue;
    const std::optional<CudaMemoryInfo> info = cuda_memory_info(d.device);
    if (!info) {
      return make_error(ErrorCode::kNotFound,
                        "cannot query the memory of cuda:" + std::to_string(d.device));
    }
    std::string name = "unknown";
    for (const CudaDeviceInfo& dev : devices) {
      if (dev.index == d.device) name = dev.name;
    }
    out.push_back({d.device, name, info->total_bytes, info->free_bytes});
  }
  return out;
}

Status check_gpu_memory(std::span<const GpuMemoryDemand> demands,
                        std::span<const GpuMemoryBudget> devices, uint64_t reserve_bytes) {
  for (const GpuMemoryDemand& d : demands) {
    bool known = false;
    for (const GpuMemoryBudget& b : devices) known = known || b.device == d.device;
    if (!known) {
      return make_error(ErrorCode::kNotFound, "variant " + d.variant + ": cuda:" +
                                                  std::to_string(d.device) + " is not visible");
    }
  }
  for (const GpuMemoryBudget& b : devices) {
    uint64_t need = 0;
    std::string parts;
    for (const GpuMemoryDemand& d : demands) {
      if (d.device != b.device) continue;
      need += d.total();
      parts += "; " + d.variant + " needs " + gib(d.total()) + " (weights " + gib(d.weight_bytes) +
               ", KV cache " + gib(d.kv_cache_bytes) + ", workspace " + gib(d.workspace_bytes) +
               ")";
    }
    const uint64_t usable = b.free_bytes > reserve_bytes ? b.free_bytes - reserve_bytes : 0;
    if (need > usable) {
      return make_error(
          ErrorCode::kResourceExhausted,
          "the variants on cuda:" + std::to_string(b.device) + " (" + b.name + ") need " +
              gib(need) + " but " + gib(usable) + " is usable (" + gib(b.free_bytes) + " free of " +
              gib(b.total_bytes) + ", " + gib(reserve_bytes) + " kept in reserve)" + parts +
              ". Lower worker.kv_cache_tokens or max_batched_tokens, or move a variant to "
              "another device");
    }
  }
  return Status::Ok();
}

}  // namespace qgate
