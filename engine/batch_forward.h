// One continuous-batching step of a model on the device it was placed on. The worker's scheduler
// decides what runs (and owns the PagedKvCache allocator whose block ids every chunk names); a
// BatchForward computes it: on the CPU through LlamaModel::forward_batch over host KV storage, on
// a GPU through the CUDA forward pass over KV storage in device memory under the same block ids.
//
// Threading and lifetime: used by the worker's scheduler thread only. The model (and, for the CPU
// path, the cache) must outlive it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "engine/llama_model.h"
#include "kernels/status.h"

namespace qgate {

class PagedKvCache;

// Sizes a device backend allocates for up front (the CPU path grows its scratch on demand).
struct BatchForwardLimits {
  int64_t num_blocks = 0;
  int64_t block_tokens = 0;
  int64_t max_batched_tokens = 0;  // rows of one step
  int64_t max_running = 0;         // sequences of one step (and logits rows)
  int64_t max_context_tokens = 0;  // positions of one sequence
};

class BatchForward {
 public:
  virtual ~BatchForward() = default;
  // The contract of LlamaModel::forward_batch (engine/llama_model.h): each chunk's keys/values are
  // appended at its positions, logits ([vocab] per chunk with `logits` set, in chunk order) are
  // written to host memory. InvalidArgument for chunks breaking the limits given at creation.
  virtual Status forward_batch(std::span<const SequenceChunk> chunks, std::span<float> logits) = 0;
  virtual std::string device() const = 0;  // "cpu", "cuda:0"
};

std::unique_ptr<BatchForward> make_cpu_forward(const LlamaModel& model, PagedKvCache& cache,
                                               int threads);

// Uploads the model's weights to CUDA device `device` (converted as engine/gpu_weights.h says)
// and allocates the KV pool, activations and workspaces for `limits` there. Unsupported when
// qgate was built without CUDA; ResourceExhausted when the device runs out of memory; Unsupported
// for a model the kernels do not cover (head_dim other than 64 or 128).
Result<std::unique_ptr<BatchForward>> make_cuda_forward(const LlamaModel& model, int device,
                                                        const BatchForwardLimits& limits);

}  // namespace qgate
