// The Llama-family decoder forward pass on the CPU: embeddings, RMSNorm, RoPE, grouped-query
// attention over a KV cache, SwiGLU MLP, (tied or separate) LM head; Qwen2 q/k/v biases.
//
// Lifetime and threading: a LlamaModel is immutable after loading and may be shared by any number
// of sequences; its weights are views into the memory-mapped model file(s), which the model keeps
// alive. All per-sequence state lives in KvCache / PagedKvCache and ForwardScratch, which belong to
// one caller at a time. forward() and forward_batch() use the given ThreadPool for data parallelism
// inside each operation.
//
// Batch invariance: every operation works on one token row at a time (the matmul quantizes and
// accumulates each activation row independently of the others), so a sequence's logits are
// bit-identical whether it runs alone through forward() or inside any forward_batch().
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/model_config.h"
#include "kernels/cpu/matmul.h"
#include "kernels/status.h"

namespace qgate {

class GgufFile;
class PagedKvCache;
class SafetensorsFile;
class ThreadPool;

// Keys and values of one sequence, contiguous per layer: [position][kv_dim] of fp32 or fp16.
class KvCache {
 public:
  KvCache(const LlamaConfig& config, int64_t capacity_tokens, KvDType dtype = KvDType::kF32);
  int64_t size() const { return size_; }
  int64_t capacity() const { return capacity_; }
  KvDType dtype() const { return dtype_; }
  void clear() { size_ = 0; }
  // Forgets positions >= n (e.g. to reuse a shared prompt prefix).
  void truncate(int64_t n);
  std::byte* key_bytes(int64_t layer) { return k_.data() + layer * layer_bytes_; }
  std::byte* value_bytes(int64_t layer) { return v_.data() + layer * layer_bytes_; }
  void advance(int64_t n) { size_ += n; }

 private:
  int64_t capacity_ = 0;
  int64_t size_ = 0;
  KvDType dtype_ = KvDType::kF32;
  int64_t layer_bytes_ = 0;
  std::vector<std::byte> k_;
  std::vector<std::byte> v_;
};

// Activation buffers, grown on first use and reused so steady-state decoding never allocates.
struct ForwardScratch {
  std::vector<float> x, xb, q, k, v, att, gate, up, permuted;
  std::vector<int32_t> tokens;   // forward_batch: the batch's tokens, stacked
  std::vector<int64_t> row_pos;  // position of each row
  std::vector<int32_t> row_seq;  // sequence of each row
  std::vector<int64_t> logit_rows;
  std::vector<const int32_t*> tables;  // block table of each sequence
  std::vector<int64_t> attention_tiles;  // attention: first row of each tile of rows, then n
  MatmulScratch mm;
  // Verification mode: multiply dequantized weights by fp32 activations in double precision
  // (matmul_ref) instead of quantizing activations to 8 bits. Single-threaded and slow; it lets
  // tests separate the forward pass's logic from the int8 kernels' rounding.
  bool reference_matmul = false;
};

struct LinearLayer {
  WeightView weight;
  const float* bias = nullptr;        // [rows] or null
  const int32_t* input_perm = nullptr;  // act-order checkpoints: x'[i] = x[input_perm[i]]
};

struct LlamaLayer {
  const float* attn_norm = nullptr;
  const float* ffn_norm = nullptr;
  LinearLayer q, k, v, o, gate, up, down;
};

enum class LogitsMode { kLast, kAll };

// One sequence's share of a forward_batch() step.
struct SequenceChunk {
  std::span<const int32_t> tokens;       // run at positions [start, start + tokens.size())
  int64_t start = 0;                     // keys/values of positions [0, start) are in the cache
  std::span<const int32_t> block_table;  // the sequence's blocks, covering [0, start + size)
  bool logits = false;                   // write logits for the chunk's last token
};

// The checks of forward_batch() every backend shares: chunks non-empty with start >= 0, block
// tables long enough for their positions and naming blocks < num_blocks, tokens inside the
// vocabulary. InvalidArgument naming the chunk otherwise.
Status validate_batch(std::span<const SequenceChunk> chunks, int64_t num_blocks,
                      int64_t block_tokens, int64_t vocab_size);

// Where a step's keys/values live: layer l's block b starts at element l * layer_stride +
// b * block_stride of k (v), elements of `dtype`. A contiguous KvCache is the special case of one
// block holding every position.
struct KvLayout {
  KvDType dtype = KvDType::kF32;
  std::byte* k = nullptr;
  std::byte* v = nullptr;
  int64_t layer_stride = 0;
  int64_t block_stride = 0;
  int64_t block_tokens = 0;
};

class LlamaModel {
 public:
  static Result<LlamaModel> from_gguf(std::shared_ptr<const GgufFile> gguf);
  // An HF-style directory: config.json + model.safetensors with F32/F16/BF16 weights.
  static Result<LlamaModel> from_hf_dir(const std::string& dir);

  // A model of the given shape with pseudo-random weights (benchmarks of shapes qgate does not
  // ship, e.g. a 7B Llama). Matrices are F16, or Q4_1 whose blocks share (d, m) in groups of
  // group_size columns (a multiple of 32: what a GPTQ/AWQ checkpoint of that group size becomes);
  // the embedding is F16, the LM head untied. Values are scaled so activations stay finite through
  // every layer; the outputs mean nothing. Filled on all cores. `v_and_up_type` (F16 or Q4_1), when
  // given, replaces the type of every v and up matrix: a mixed-precision file, whose q/k/v and
  // gate/up cannot share one matmul on the GPU. InvalidArgument for a bad config or matrix type.
  static Result<LlamaModel> synthetic(const LlamaConfig& config, DType matrix_type,
                                      int64_t group_size, uint64_t seed,
                                      std::optional<DType> v_and_up_type = std::nullopt);

  const LlamaConfig& config() const { return config_; }
  // Bytes of weights the forward pass reads (matrices, norms, embedding).
  uint64_t weight_bytes() const { return weight_bytes_; }
  std::string describe() const;  // "llama 30 layers, hidden 576, Q4_1/Q8_0 weights"

  // The weights as loaded (views into the model's memory), for other backends to convert.
  std::span<const LlamaLayer> layers() const { return layers_; }
  const WeightView& embedding() const { return embedding_; }
  const WeightView& lm_head() const { return lm_head_; }
  const float* output_norm() const { return output_norm_; }

  // Runs `tokens` at positions [cache.size(), cache.size() + n), appends their keys/values to the
  // cache and writes logits: for the last token ([vocab]) or every token ([n][vocab]).
  // OutOfRange when the cache cannot hold the tokens; InvalidArgument for a token id outside the
  // vocabulary.
  Status forward(std::span<const int32_t> tokens, KvCache& cache, ForwardScratch& scratch,
                 ThreadPool& pool, LogitsMode mode, std::span<float> logits) const;

  // One step of continuous batching: the chunks of several sequences whose keys/values live in a
  // paged cache. The linear layers run once over all chunks' tokens stacked as rows (the weights
  // are read once per step, which is where batching gains), attention runs per sequence over its
  // block table. Appends each chunk's keys/values at its positions (the blocks must be allocated)
  // and writes logits, [vocab] per chunk with `logits` set, in chunk order. InvalidArgument for an
  // empty chunk, a short block table or logits buffer, or a token outside the vocabulary.
  Status forward_batch(std::span<const SequenceChunk> chunks, PagedKvCache& cache,
                       ForwardScratch& scratch, ThreadPool& pool, std::span<float> logits) const;

 private:
  // The layer stack over n rows (scratch.tokens / row_pos / row_seq filled in), each row's sequence
  // described by tables[row_seq]; logits for the rows in logit_rows, in that order.
  Status run_rows(int64_t n, const KvLayout& kv, std::span<const int32_t* const> tables,
                  ForwardScratch& s, ThreadPool& pool, std::span<const int64_t> logit_rows,
                  std::span<float> logits) const;
  void embed(int32_t token, float* out) const;
  void attention(int64_t n, int64_t layer, const KvLayout& kv,
                 std::span<const int32_t* const> tables, ForwardScratch& s,
                 ThreadPool& pool) const;
  template <typename KvT>
  void attention_over(int64_t n, const KvT* keys, const KvT* values, const KvLayout& kv,
                      std::span<const int32_t* const> tables, ForwardScratch& s,
                      ThreadPool& pool) const;

  LlamaConfig config_;
  WeightView embedding_;
  WeightView lm_head_;
  const float* output_norm_ = nullptr;
  std::vector<LlamaLayer> layers_;
  uint64_t weight_bytes_ = 0;
  // Keep the mapped files and any converted tensors alive for the views above.
  std::shared_ptr<const void> gguf_;
  std::vector<std::shared_ptr<const void>> keep_alive_;
  std::vector<std::shared_ptr<std::vector<float>>> owned_;
  std::vector<std::shared_ptr<const void>> owned_repacked_;  // int4 layers repacked at load
};

}  // namespace qgate
