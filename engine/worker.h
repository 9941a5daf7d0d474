// An engine worker: one model variant served to many concurrent requests by continuous batching.
//
// A Worker owns its model, a paged KV cache and one scheduler thread. submit() is thread-safe and
// never blocks on generation: it validates the request, puts it in a bounded admission queue (or
// refuses at once with ResourceExhausted "overloaded") and returns a handle. The scheduler thread
// runs steps: new requests join between steps, long prompts are prefilled in chunks so running
// streams keep decoding, and when KV blocks run out the youngest running sequence is preempted
// (its blocks freed) and later recomputed from its prompt plus the tokens it already produced.
//
// Events for a request are delivered on the scheduler thread, in order, through its
// GenerationSink: on_text any number of times, then exactly one of on_finish / on_error. Sinks
// must return quickly and must not call back into the worker except RequestHandle::cancel()
// (e.g. the gateway posts each event onto the HTTP session's strand). After the final event the
// worker drops its reference to the sink.
//
// Lifetime: handles hold only a weak reference to the request's state, so cancel() after the
// request finished or the worker is gone is a no-op. Destroying the Worker stops the scheduler;
// requests still queued or running end with on_error(Cancelled) before the destructor returns.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/device_spec.h"
#include "engine/generator.h"  // GenerationOptions, FinishReason
#include "engine/model_loader.h"
#include "kernels/status.h"

namespace qgate {

struct WorkerOptions {
  int threads = 0;                    // compute threads for the forward pass; 0 = all cores
  int64_t max_running = 16;           // sequences decoded together in one step
  int64_t max_batched_tokens = 512;   // tokens per step (decode tokens + prefill chunks)
  int64_t kv_block_tokens = 16;       // tokens per KV-cache block
  int64_t kv_cache_tokens = 32768;    // KV budget in tokens across all sequences (blocks * size)
  int64_t max_queued = 64;            // admission queue bound; beyond it submit() is refused
  int64_t max_context_tokens = 2048;  // prompt + completion per sequence (<= model context)
  bool prefix_caching = true;         // share KV blocks of identical prompt prefixes
  // Element type of a CPU worker's KV cache (model_config.h): f32 by default, f16 for half the
  // memory per token. A GPU worker's cache is fp16 whatever this says.
  KvDType kv_cache_dtype = KvDType::kF32;
  // Where the forward pass runs: cpu, or cuda:N (weights, KV cache and activations in that GPU's
  // memory; `threads` then only matters for the host side). kAuto is resolved by the caller
  // (engine/device_spec.h) before the worker is created; create() refuses it.
  DeviceSpec device;
  Status validate() const;
};

struct WorkerRequest {
  std::vector<int32_t> prompt;  // token ids, already chat-templated and encoded
  GenerationOptions options;    // max_tokens, sampling (with seed), stop strings, ignore_eos
};

struct GenerationSummary {
  FinishReason finish_reason = FinishReason::kLength;
  std::vector<int32_t> tokens;  // generated tokens, including a final EOS/end-of-turn if any
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // prompt tokens whose KV came from the prefix cache
  int64_t preemptions = 0;
  double queue_seconds = 0;          // submit -> first scheduled
  double first_token_seconds = 0;    // submit -> first token sampled
  double total_seconds = 0;          // submit -> finish
};

class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  // Text that is final (whole UTF-8 characters, never part of a pending stop string), in order.
  // `tokens_so_far` counts generated tokens including those whose text is still held back.
  virtual void on_text(std::string_view piece, int64_t tokens_so_far) = 0;
  virtual void on_finish(const GenerationSummary& summary) = 0;
  // The request failed after submit() accepted it (Cancelled when the worker shuts down, Internal
  // when a step failed, or the injected fault).
  virtual void on_error(const Error& error) = 0;
};

class RequestHandle {
 public:
  virtual ~RequestHandle() = default;
  // The request leaves the batch before the next step and its KV blocks are freed; the sink then
  // gets on_finish with FinishReason::kCancelled. Idempotent; safe from any thread.
  virtual void cancel() = 0;
};

struct WorkerStats {
  int64_t queued = 0;
  int64_t running = 0;
  int64_t kv_blocks_used = 0;
  int64_t kv_blocks_total = 0;
  int64_t last_batch_size = 0;
  uint64_t generated_tokens_total = 0;  // counters since start
  uint64_t prompt_tokens_total = 0;
  uint64_t preemptions_total = 0;
  uint64_t rejected_total = 0;
  double decode_tokens_per_second = 0;  // recent rate (exponentially smoothed)
  uint64_t weight_bytes = 0;
};

// Test-only fault switch (issue 5's fault-injection tests): the worker misbehaves on purpose.
enum class WorkerFault {
  kNone,
  kFail,      // every accepted request ends at once with on_error(Internal, "injected fault")
  kHang,      // requests are accepted and never scheduled until the fault is cleared or cancelled
  kOverload,  // submit() refuses everything with ResourceExhausted
};

class Worker {
 public:
  virtual ~Worker() = default;
  static Result<std::unique_ptr<Worker>> create(std::string name, LoadedModel model,
                                                const WorkerOptions& options);

  // InvalidArgument for bad options or an empty prompt; OutOfRange when prompt + max_tokens can
  // never fit max_context_tokens or the KV budget; ResourceExhausted ("overloaded") when the
  // admission queue is full. Never blocks on generation.
  virtual Result<std::shared_ptr<RequestHandle>> submit(WorkerRequest request,
                                                        std::shared_ptr<GenerationSink> sink) = 0;
  virtual WorkerStats stats() const = 0;
  virtual const LoadedModel& model() const = 0;
  virtual const std::string& name() const = 0;
  virtual void set_fault(WorkerFault fault) = 0;
};

}  // namespace qgate
