#include "engine/gpu_memory_plan.h"

#include <cstdio>
#include <span>
#include <vector>

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

uint64_t GpuStepBuffers::total() const {
  return x + xb + qkv + att + gate_up + hb + out + permuted + final_rows + logits16 + logits +
         meta + attention_bound + cublas;
}

GpuStepBuffers gpu_step_buffers(const LlamaConfig& c, int64_t rows, int64_t running,
                                int64_t max_context, int64_t block_tokens, bool int4_lm_head) {
  const auto r = static_cast<uint64_t>(rows);
  const auto n = static_cast<uint64_t>(running);
  const auto d = static_cast<uint64_t>(c.hidden_size);
  const auto qd = static_cast<uint64_t>(c.q_dim());
  const auto kvd = static_cast<uint64_t>(c.kv_dim());
  const auto inter = static_cast<uint64_t>(c.intermediate_size);
  const auto vocab = static_cast<uint64_t>(c.vocab_size);
  GpuStepBuffers b;
  b.x = r * d * 4;
  b.xb = r * std::max(d, qd) * 2;
  b.qkv = r * (qd + 2 * kvd) * 2;
  b.att = r * qd * 2;
  b.gate_up = r * 2 * inter * 2;
  b.hb = r * inter * 2;
  b.out = r * d * 2;
  b.permuted = r * std::max({d, qd, inter}) * 2;
  b.final_rows = n * d * 2;
  b.logits16 = int4_lm_head ? n * vocab * 2 : 0;
  b.logits = n * vocab * 4;
  b.max_blocks = (max_context + block_tokens - 1) / block_tokens;
  b.meta = (3 * r + 2 * n + 1 + n * static_cast<uint64_t>(b.max_blocks)) * 4;
  const auto chunks = static_cast<uint64_t>((max_context + 15) / 16);
  b.attention_bound = n * static_cast<uint64_t>(c.num_heads) * chunks *
                      (static_cast<uint64_t>(c.head_dim) + 2) * 4;
  b.cublas = kCublasWorkspaceBytes;
  return b;
}

GpuMemoryDemand gpu_memory_demand(std::string variant, int device, const LlamaModel& model,
                                  const WorkerOptions& o) {
  const LlamaConfig& c = model.config();
  GpuMemoryDemand m;
  m.variant = std::move(variant);
  m.device = device;
  uint64_t w = 0;
  for (const LlamaLayer& l : model.layers()) {
    // The matmuls as the CUDA pass uploads them: q/k/v and gate/up stacked where they can be,
    // one bias row and one act-order permutation per matmul.
    const LinearLayer* const qkv[] = {&l.q, &l.k, &l.v};
    const LinearLayer* const gate_up[] = {&l.gate, &l.up};
    const LinearLayer* const o[] = {&l.o};
    const LinearLayer* const down[] = {&l.down};
    for (const std::span<const LinearLayer* const> parts :
         {std::span<const LinearLayer* const>(qkv), std::span<const LinearLayer* const>(o),
          std::span<const LinearLayer* const>(gate_up),
          std::span<const LinearLayer* const>(down)}) {
      for (const std::vector<const LinearLayer*>& group : gpu_matmul_groups(parts)) {
        std::vector<WeightView> views;
        for (const LinearLayer* lin : group) {
          views.push_back(lin->weight);
          if (lin->bias != nullptr) w += static_cast<uint64_t>(lin->weight.rows) * 4;
        }
        w += gpu_weight_bytes(views);
        if (group.front()->input_perm != nullptr) {
          w += static_cast<uint64_t>(group.front()->weight.cols) * 4;
        }
      }
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
  const bool int4_head = gpu_weight_format(model.lm_head().type) == GpuWeightFormat::kW4A16;
  m.workspace_bytes = gpu_step_buffers(c, o.max_batched_tokens, o.max_running,
                                       o.max_context_tokens, o.kv_block_tokens, int4_head)
                          .total();
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
