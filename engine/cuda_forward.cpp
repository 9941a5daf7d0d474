// The Llama forward pass on a CUDA GPU (built when CUDA is found). Host code: it owns the device
// buffers and launches the kernels of kernels/cuda/ in the order engine/llama_model.cpp runs the
// CPU operations, so the two paths compute the same function (the GPU multiplies fp16
// activations, the CPU int8-quantized ones; tests/engine/test_cuda_forward.cpp bounds the logits'
// difference and compares greedy outputs).
//
// One step: the batch's metadata (tokens, positions, block tables) goes to the device in one copy
// from pinned memory; the residual stream stays fp32 on the device; each layer is norm -> q/k/v
// -> rope + KV write -> paged attention -> o -> add+norm -> gate/up -> SwiGLU -> down, the
// residual add fused into the next norm, q/k/v and gate/up each one matmul over stacked weights
// where their formats allow (engine/gpu_weights.h; rope, the KV write and attention read q, k
// and v in place from its rows, SwiGLU gate and up); the LM head runs on the rows that want logits
// only, and fp32 logits come back to the host for the sampler (a 49152-entry row is 192 KiB: small
// next to a step's weight traffic, and it keeps every sampling mode on the one tested host
// sampler).
//
// Decode steps (every chunk one token) replay a CUDA graph captured per batch size: a step is
// ~10 launches per layer, which at batch 1 would cost more in launch gaps than the kernels take.
// Everything a graph touches lives at fixed device addresses and the kernels' grids are sized
// from fixed upper bounds (max_context_tokens), so a replay only needs the new metadata copied
// into the same buffer first.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "engine/batch_forward.h"
#include "engine/gpu_memory_plan.h"
#include "engine/gpu_weights.h"
#include "kernels/cpu/half.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cublaslt_gemm.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/w4a16.h"

namespace qgate {

namespace {

using cuda::cuda_status;
using cuda::DeviceBuffer;

// A linear layer in device memory: fp16 weights for cuBLASLt or the W4A16 layout.
struct DeviceLinear {
  GpuWeightFormat format = GpuWeightFormat::kF16;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t group_size = 0;
  const void* weight = nullptr;  // into `owned` or another layer's buffer (a tied LM head)
  DeviceBuffer owned;
  DeviceBuffer scale_min;  // W4A16
  DeviceBuffer perm;       // act-order: int32 [cols], empty when identity
  DeviceBuffer bias;       // fp32 [rows], empty when none

  cuda::W4A16DeviceWeights w4() const {
    return {rows, cols, group_size, static_cast<const uint32_t*>(weight),
            scale_min.as<const __half2>()};
  }
};

// One matmul: a single layer, or layers that multiply the same input stacked row-wise
// (gpu_matmul_groups decided that they can be: same format, columns, permutation, biases).
Result<DeviceLinear> upload_linear(std::span<const LinearLayer* const> group,
                                   const std::string& what) {
  std::vector<WeightView> views;
  for (const LinearLayer* l : group) views.push_back(l->weight);
  const WeightView& w = views.front();
  DeviceLinear d;
  d.format = gpu_weight_format(w.type);
  d.cols = w.cols;
  for (const WeightView& v : views) d.rows += v.rows;
  if (d.format == GpuWeightFormat::kW4A16) {
    QGATE_ASSIGN_OR_RETURN(W4A16Weights packed, w4a16_from_ggml(views));
    d.group_size = packed.group_size;
    QGATE_ASSIGN_OR_RETURN(d.owned, DeviceBuffer::upload(packed.qweight.data(),
                                                         packed.qweight.size() * 4, what.c_str()));
    QGATE_ASSIGN_OR_RETURN(d.scale_min, DeviceBuffer::upload(packed.scale_min.data(),
                                                             packed.scale_min.size() * 2,
                                                             what.c_str()));
  } else {
    std::vector<uint16_t> h;
    for (const WeightView& v : views) {
      const std::vector<uint16_t> part = fp16_from_weight(v);
      h.insert(h.end(), part.begin(), part.end());
    }
    QGATE_ASSIGN_OR_RETURN(d.owned, DeviceBuffer::upload(h.data(), h.size() * 2, what.c_str()));
  }
  d.weight = d.owned.get();
  if (const int32_t* perm = group.front()->input_perm; perm != nullptr) {
    QGATE_ASSIGN_OR_RETURN(d.perm, DeviceBuffer::upload(perm, static_cast<size_t>(w.cols) * 4,
                                                        what.c_str()));
  }
  if (group.front()->bias != nullptr) {
    std::vector<float> bias;
    for (const LinearLayer* l : group) bias.insert(bias.end(), l->bias, l->bias + l->weight.rows);
    QGATE_ASSIGN_OR_RETURN(d.bias,
                           DeviceBuffer::upload(bias.data(), bias.size() * 4, what.c_str()));
  }
  return d;
}

Result<std::vector<DeviceLinear>> upload_linears(std::span<const LinearLayer* const> parts,
                                                 const std::string& what) {
  std::vector<DeviceLinear> out;
  for (const std::vector<const LinearLayer*>& group : gpu_matmul_groups(parts)) {
    QGATE_ASSIGN_OR_RETURN(DeviceLinear d, upload_linear(group, what));
    out.push_back(std::move(d));
  }
  return out;
}

struct DeviceLayer {
  DeviceBuffer attn_norm;
  DeviceBuffer ffn_norm;
  std::vector<DeviceLinear> qkv;      // one matmul of q | k | v rows, or q, k and v
  std::vector<DeviceLinear> gate_up;  // one matmul of gate | up rows, or gate and up
  DeviceLinear o, down;
};

// Pinned host memory: copies from it are truly asynchronous and graph-capturable.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() {
    if (ptr_ != nullptr) cudaFreeHost(ptr_);
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  Status allocate(size_t bytes, const char* what) {
    return cuda_status(cudaMallocHost(&ptr_, bytes), what);
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
};

class CudaForward final : public BatchForward {
 public:
  CudaForward(const LlamaModel& model, int device, const BatchForwardLimits& limits)
      : config_(model.config()), device_(device), limits_(limits) {}
  ~CudaForward() override;

  Status init(const LlamaModel& model);
  Status forward_batch(std::span<const SequenceChunk> chunks, std::span<float> logits) override;
  std::string device() const override { return "cuda:" + std::to_string(device_); }

 private:
  // Every buffer a step touches, at fixed addresses (what graph replays rely on).
  struct Activations {
    DeviceBuffer x;       // fp32 [rows][hidden]: the residual stream
    DeviceBuffer xb;      // fp16 [rows][hidden]: normed input of the next matmuls
    DeviceBuffer qkv;  // fp16 q | k | v rows of a stacked matmul, or q, k and v one after another
    DeviceBuffer att;  // fp16 [rows][q_dim]: attention output
    DeviceBuffer gate_up;   // fp16 gate | up rows of a stacked matmul, or gate then up
    DeviceBuffer hb;        // fp16 [rows][intermediate]: SwiGLU output
    DeviceBuffer out;       // fp16 [rows][max(hidden, ...)]: o / down projections
    DeviceBuffer permuted;  // fp16 [rows][widest cols]: act-order gather
    DeviceBuffer final_rows;  // fp16 [running][hidden]: rows whose logits are wanted
    DeviceBuffer logits16;    // fp16 [running][vocab]: a W4A16 LM head's output
    DeviceBuffer logits;      // fp32 [running][vocab]
    DeviceBuffer meta;        // int32 step metadata (layout in MetaLayout)
    DeviceBuffer attention;   // split-context (flash-decoding) partials
  };
  struct MetaLayout {
    int64_t tokens = 0, row_pos = 0, row_seq = 0, query_start = 0, context_start = 0, tables = 0;
    int64_t total = 0;
  };

  cuda::AttentionShape attention_shape() const {
    return {static_cast<int32_t>(config_.num_heads), static_cast<int32_t>(config_.num_kv_heads),
            static_cast<int32_t>(config_.head_dim),
            1.0f / std::sqrt(static_cast<float>(config_.head_dim))};
  }
  Status linear(const DeviceLinear& l, const __half* in, int64_t rows, __half* out);
  Status lm_head(int64_t rows, const __half* in, float* logits);
  // Launches one whole step on stream_ (capturable): `rows` rows of `seqs` sequences, logits for
  // `logit_rows` gathered rows (all rows of a decode step, in order, when gather is false).
  Status run_step(int64_t rows, int64_t seqs, std::span<const int64_t> logit_rows, bool gather);
  Status launch_decode_graph(int64_t seqs);

  const LlamaConfig config_;
  const int device_;
  const BatchForwardLimits limits_;
  int64_t max_blocks_ = 0;  // block-table stride: blocks of max_context_tokens
  MetaLayout meta_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::CublasLtGemm> gemm_;
  DeviceBuffer embedding_;  // fp16 [vocab][hidden]
  DeviceBuffer output_norm_;
  DeviceLinear lm_head_;
  std::vector<DeviceLayer> layers_;
  DeviceBuffer k_cache_, v_cache_;  // fp16 [layer][block][token][kv_dim]
  Activations a_;
  PinnedBuffer meta_host_;
  PinnedBuffer logits_host_;
  std::vector<int64_t> logit_rows_;  // per step, reused: no allocation on the step path
  std::vector<int64_t> all_rows_;    // 0, 1, ..., max_running - 1: a decode step's logit rows
  std::map<int64_t, cudaGraphExec_t> decode_graphs_;  // by sequences in the step
  std::map<int64_t, int> decode_seen_;                 // eager runs before capturing
};

CudaForward::~CudaForward() {
  cudaSetDevice(device_);  // the destroying thread may not be the one that created this
  for (auto& [seqs, exec] : decode_graphs_) cudaGraphExecDestroy(exec);
  if (stream_ != nullptr) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
}

Status CudaForward::init(const LlamaModel& model) {
  const LlamaConfig& c = config_;
  if (c.head_dim != 64 && c.head_dim != 128) {
    return make_error(ErrorCode::kUnsupported, "the CUDA attention kernels take head_dim 64 or "
                                               "128, this model has " +
                                                   std::to_string(c.head_dim));
  }
  QGATE_TRY_STATUS(cuda_status(cudaSetDevice(device_), "cudaSetDevice"));
  QGATE_TRY_STATUS(
      cuda_status(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream"));
  QGATE_ASSIGN_OR_RETURN(gemm_, cuda::CublasLtGemm::create(kCublasWorkspaceBytes));

  // Weights.
  {
    const std::vector<uint16_t> table = fp16_from_weight(model.embedding());
    QGATE_ASSIGN_OR_RETURN(embedding_, DeviceBuffer::upload(table.data(), table.size() * 2,
                                                            "embedding table"));
  }
  const auto norm_bytes = static_cast<size_t>(c.hidden_size) * sizeof(float);
  QGATE_ASSIGN_OR_RETURN(output_norm_,
                         DeviceBuffer::upload(model.output_norm(), norm_bytes, "output norm"));
  const WeightView& head = model.lm_head();
  if (head.data == model.embedding().data && gpu_weight_format(head.type) == GpuWeightFormat::kF16) {
    // Tied and fp16 on the device either way: the LM head reads the embedding table.
    lm_head_.format = GpuWeightFormat::kF16;
    lm_head_.rows = head.rows;
    lm_head_.cols = head.cols;
    lm_head_.weight = embedding_.get();
  } else {
    const LinearLayer head_layer{head, nullptr, nullptr};
    const LinearLayer* const parts[] = {&head_layer};
    QGATE_ASSIGN_OR_RETURN(lm_head_, upload_linear(parts, "lm_head"));
  }
  layers_.resize(static_cast<size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const LlamaLayer& src = model.layers()[static_cast<size_t>(i)];
    DeviceLayer& dst = layers_[static_cast<size_t>(i)];
    const std::string name = "layer " + std::to_string(i);
    QGATE_ASSIGN_OR_RETURN(dst.attn_norm, DeviceBuffer::upload(src.attn_norm, norm_bytes,
                                                               name.c_str()));
    QGATE_ASSIGN_OR_RETURN(dst.ffn_norm, DeviceBuffer::upload(src.ffn_norm, norm_bytes,
                                                              name.c_str()));
    const LinearLayer* const qkv[] = {&src.q, &src.k, &src.v};
    const LinearLayer* const gate_up[] = {&src.gate, &src.up};
    const LinearLayer* const o[] = {&src.o};
    const LinearLayer* const down[] = {&src.down};
    QGATE_ASSIGN_OR_RETURN(dst.qkv, upload_linears(qkv, name));
    QGATE_ASSIGN_OR_RETURN(dst.gate_up, upload_linears(gate_up, name));
    QGATE_ASSIGN_OR_RETURN(dst.o, upload_linear(o, name));
    QGATE_ASSIGN_OR_RETURN(dst.down, upload_linear(down, name));
  }

  // KV pool, fp16, allocated whole: the memory plan counted it (engine/gpu_memory_plan.h).
  const auto kv_elems = static_cast<size_t>(c.num_layers * limits_.num_blocks *
                                            limits_.block_tokens * c.kv_dim());
  QGATE_ASSIGN_OR_RETURN(k_cache_, DeviceBuffer::allocate(kv_elems * 2, "KV cache (keys)"));
  QGATE_ASSIGN_OR_RETURN(v_cache_, DeviceBuffer::allocate(kv_elems * 2, "KV cache (values)"));

  // Activations, logits, metadata and workspaces for the largest step, sized by the same
  // function the memory plan adds up.
  const GpuStepBuffers sizes =
      gpu_step_buffers(c, limits_.max_batched_tokens, limits_.max_running,
                       limits_.max_context_tokens, limits_.block_tokens,
                       lm_head_.format == GpuWeightFormat::kW4A16);
  auto alloc = [](DeviceBuffer& b, uint64_t bytes, const char* what) -> Status {
    QGATE_ASSIGN_OR_RETURN(b, DeviceBuffer::allocate(static_cast<size_t>(bytes), what));
    return Status::Ok();
  };
  const std::pair<DeviceBuffer*, uint64_t> activations[] = {{&a_.x, sizes.x},
                                                            {&a_.xb, sizes.xb},
                                                            {&a_.qkv, sizes.qkv},
                                                            {&a_.att, sizes.att},
                                                            {&a_.gate_up, sizes.gate_up},
                                                            {&a_.hb, sizes.hb},
                                                            {&a_.out, sizes.out},
                                                            {&a_.permuted, sizes.permuted}};
  for (const auto& [buffer, bytes] : activations) {
    QGATE_TRY_STATUS(alloc(*buffer, bytes, "activations"));
  }
  QGATE_TRY_STATUS(alloc(a_.final_rows, sizes.final_rows, "logits"));
  QGATE_TRY_STATUS(alloc(a_.logits, sizes.logits, "logits"));
  QGATE_TRY_STATUS(alloc(a_.logits16, sizes.logits16, "logits"));

  max_blocks_ = sizes.max_blocks;
  const int64_t seqs = limits_.max_running;
  const int64_t nrows = limits_.max_batched_tokens;
  meta_.tokens = 0;
  meta_.row_pos = meta_.tokens + nrows;
  meta_.row_seq = meta_.row_pos + nrows;
  meta_.query_start = meta_.row_seq + nrows;
  meta_.context_start = meta_.query_start + seqs + 1;
  meta_.tables = meta_.context_start + seqs;
  meta_.total = meta_.tables + seqs * max_blocks_;
  QGATE_CHECK(static_cast<uint64_t>(meta_.total) * 4 == sizes.meta, "metadata layout vs plan");
  QGATE_TRY_STATUS(alloc(a_.meta, sizes.meta, "step metadata"));
  // The split plan (and so the workspace) depends on the number of sequences, not monotonically
  // (a full batch needs no split): sized for the largest over every batch a step can have.
  size_t attention_bytes = 0;
  for (int64_t b = 1; b <= seqs; ++b) {
    cuda::AttentionBatch shape_of;
    shape_of.num_seqs = static_cast<int32_t>(b);
    shape_of.num_rows = static_cast<int32_t>(nrows);
    shape_of.host_max_query_rows = static_cast<int32_t>(nrows);
    shape_of.host_max_context = static_cast<int32_t>(limits_.max_context_tokens);
    attention_bytes = std::max(attention_bytes,
                               cuda::paged_attention_workspace_bytes(shape_of, attention_shape()));
  }
  if (attention_bytes > sizes.attention_bound) {
    return make_error(ErrorCode::kInternal,
                      "attention workspace of " + std::to_string(attention_bytes) +
                          " bytes exceeds the memory plan's bound of " +
                          std::to_string(sizes.attention_bound));
  }
  QGATE_TRY_STATUS(alloc(a_.attention, attention_bytes, "attention workspace"));
  logit_rows_.reserve(static_cast<size_t>(seqs));
  all_rows_.resize(static_cast<size_t>(seqs));
  std::iota(all_rows_.begin(), all_rows_.end(), int64_t{0});
  QGATE_TRY_STATUS(meta_host_.allocate(static_cast<size_t>(meta_.total) * 4, "step metadata"));
  QGATE_TRY_STATUS(logits_host_.allocate(static_cast<size_t>(sizes.logits), "logits"));
  return Status::Ok();
}

Status CudaForward::linear(const DeviceLinear& l, const __half* in, int64_t rows, __half* out) {
  if (l.perm.bytes() != 0) {
    QGATE_TRY_STATUS(cuda::gather_columns(in, l.perm.as<const int32_t>(), rows, l.cols,
                                          a_.permuted.as<__half>(), stream_));
    in = a_.permuted.as<const __half>();
  }
  if (l.format == GpuWeightFormat::kW4A16) {
    QGATE_TRY_STATUS(cuda::w4a16_matmul(l.w4(), in, rows, out, stream_));
  } else {
    QGATE_TRY_STATUS(gemm_->matmul(l.weight, cuda::GemmType::kF16, in, rows, l.rows, l.cols, out,
                                   cuda::GemmType::kF16, stream_));
  }
  if (l.bias.bytes() != 0) {
    QGATE_TRY_STATUS(cuda::add_bias(out, l.bias.as<const float>(), rows, l.rows, stream_));
  }
  return Status::Ok();
}

Status CudaForward::lm_head(int64_t rows, const __half* in, float* logits) {
  const int64_t vocab = config_.vocab_size;
  if (lm_head_.format == GpuWeightFormat::kF16) {
    // fp32 output straight from the GEMM: no fp16 rounding of the logits.
    return gemm_->matmul(lm_head_.weight, cuda::GemmType::kF16, in, rows, vocab,
                         config_.hidden_size, logits, cuda::GemmType::kF32, stream_);
  }
  QGATE_TRY_STATUS(linear(lm_head_, in, rows, a_.logits16.as<__half>()));
  return cuda::half_to_float(a_.logits16.as<const __half>(), rows * vocab, logits, stream_);
}

Status CudaForward::run_step(int64_t rows, int64_t seqs, std::span<const int64_t> logit_rows,
                             bool gather) {
  const LlamaConfig& c = config_;
  const int64_t d = c.hidden_size;
  const int64_t qd = c.q_dim();
  const int64_t kvd = c.kv_dim();
  const int64_t inter = c.intermediate_size;
  const int32_t* meta = a_.meta.as<const int32_t>();
  cuda::AttentionBatch batch;
  batch.num_seqs = static_cast<int32_t>(seqs);
  batch.num_rows = static_cast<int32_t>(rows);
  batch.query_start = meta + meta_.query_start;
  batch.context_start = meta + meta_.context_start;
  batch.block_tables = meta + meta_.tables;
  batch.max_blocks = static_cast<int32_t>(max_blocks_);
  batch.row_seq = meta + meta_.row_seq;
  batch.row_pos = meta + meta_.row_pos;
  // Fixed upper bounds, so a captured decode graph's grids fit every later replay.
  batch.host_max_query_rows = static_cast<int32_t>(gather ? limits_.max_batched_tokens : 1);
  batch.host_max_context = static_cast<int32_t>(limits_.max_context_tokens);
  const cuda::AttentionShape shape = attention_shape();
  const cuda::RopeLayout rope_layout = c.rope_style == RopeStyle::kAdjacentPairs
                                           ? cuda::RopeLayout::kAdjacentPairs
                                           : cuda::RopeLayout::kHalves;
  const int64_t layer_elems = limits_.num_blocks * limits_.block_tokens * c.kv_dim();

  float* x = a_.x.as<float>();
  __half* xb = a_.xb.as<__half>();
  __half* out = a_.out.as<__half>();
  QGATE_TRY_STATUS(cuda::embedding_lookup(embedding_.as<const __half>(), d, meta + meta_.tokens,
                                          rows, x, stream_));
  QGATE_TRY_STATUS(cuda::rms_norm(x, layers_[0].attn_norm.as<const float>(), rows, d,
                                  c.rms_norm_eps, xb, stream_));
  for (size_t li = 0; li < layers_.size(); ++li) {
    const DeviceLayer& l = layers_[li];
    // q, k and v: views into the rows q | k | v of one stacked matmul, or three dense arrays.
    __half* q = a_.qkv.as<__half>();
    __half* k = q + (l.qkv.size() == 1 ? qd : rows * qd);
    __half* v = k + (l.qkv.size() == 1 ? kvd : rows * kvd);
    const int64_t q_stride = l.qkv.size() == 1 ? qd + 2 * kvd : qd;
    const int64_t kv_stride = l.qkv.size() == 1 ? qd + 2 * kvd : kvd;
    QGATE_TRY_STATUS(linear(l.qkv[0], xb, rows, q));
    if (l.qkv.size() == 3) {
      QGATE_TRY_STATUS(linear(l.qkv[1], xb, rows, k));
      QGATE_TRY_STATUS(linear(l.qkv[2], xb, rows, v));
    }
    const cuda::PagedKv kv{k_cache_.as<__half>() + static_cast<int64_t>(li) * layer_elems,
                           v_cache_.as<__half>() + static_cast<int64_t>(li) * layer_elems,
                           limits_.block_tokens * c.kv_dim(),
                           static_cast<int32_t>(limits_.block_tokens)};
    QGATE_TRY_STATUS(cuda::rope_write_kv_cache(q, q_stride, k, v, kv_stride, kv, batch, shape,
                                               c.rope_theta, rope_layout, stream_));
    QGATE_TRY_STATUS(cuda::paged_attention(q, q_stride, a_.att.as<__half>(), kv, batch, shape,
                                           a_.attention.get(), a_.attention.bytes(), stream_));
    QGATE_TRY_STATUS(linear(l.o, a_.att.as<const __half>(), rows, out));
    QGATE_TRY_STATUS(cuda::add_rms_norm(x, out, l.ffn_norm.as<const float>(), rows, d,
                                        c.rms_norm_eps, xb, stream_));
    // gate and up: views into the rows gate | up of one stacked matmul, or two dense arrays.
    __half* gate = a_.gate_up.as<__half>();
    __half* up = gate + (l.gate_up.size() == 1 ? inter : rows * inter);
    const int64_t gu_stride = l.gate_up.size() == 1 ? 2 * inter : inter;
    QGATE_TRY_STATUS(linear(l.gate_up[0], xb, rows, gate));
    if (l.gate_up.size() == 2) QGATE_TRY_STATUS(linear(l.gate_up[1], xb, rows, up));
    QGATE_TRY_STATUS(
        cuda::swiglu(gate, gu_stride, up, gu_stride, rows, inter, a_.hb.as<__half>(), stream_));
    QGATE_TRY_STATUS(linear(l.down, a_.hb.as<const __half>(), rows, out));
    // The residual add of this layer fused with the next layer's norm (or the final norm).
    const float* next_norm = li + 1 < layers_.size() ? layers_[li + 1].attn_norm.as<const float>()
                                                     : output_norm_.as<const float>();
    QGATE_TRY_STATUS(cuda::add_rms_norm(x, out, next_norm, rows, d, c.rms_norm_eps, xb, stream_));
  }
  const __half* head_in = xb;
  const auto n_logits = static_cast<int64_t>(logit_rows.size());
  if (gather) {
    __half* dst = a_.final_rows.as<__half>();
    for (int64_t i = 0; i < n_logits; ++i) {
      QGATE_TRY_STATUS(cuda_status(
          cudaMemcpyAsync(dst + i * d, xb + logit_rows[static_cast<size_t>(i)] * d,
                          static_cast<size_t>(d) * 2, cudaMemcpyDeviceToDevice, stream_),
          "gather logit rows"));
    }
    head_in = dst;
  }
  if (n_logits > 0) QGATE_TRY_STATUS(lm_head(n_logits, head_in, a_.logits.as<float>()));
  return Status::Ok();
}

Status CudaForward::launch_decode_graph(int64_t seqs) {
  auto it = decode_graphs_.find(seqs);
  if (it == decode_graphs_.end()) {
    // Run eagerly the first time a batch size appears (cuBLASLt picks and caches its algorithm
    // then, outside any capture), capture on the second.
    const std::span<const int64_t> all(all_rows_.data(), static_cast<size_t>(seqs));
    if (decode_seen_[seqs]++ == 0) return run_step(seqs, seqs, all, false);
    QGATE_TRY_STATUS(cuda_status(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
                                 "begin decode graph capture"));
    const Status launched = run_step(seqs, seqs, all, false);
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    if (!launched.ok() || ended != cudaSuccess) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      QGATE_TRY_STATUS(launched);
      return cuda_status(ended, "end decode graph capture");
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    QGATE_TRY_STATUS(cuda_status(inst, "instantiate decode graph"));
    it = decode_graphs_.emplace(seqs, exec).first;
  }
  return cuda_status(cudaGraphLaunch(it->second, stream_), "launch decode graph");
}

Status CudaForward::forward_batch(std::span<const SequenceChunk> chunks, std::span<float> logits) {
  const LlamaConfig& c = config_;
  QGATE_TRY_STATUS(validate_batch(chunks, limits_.num_blocks, limits_.block_tokens, c.vocab_size));
  // The current device is per host thread, and the worker's scheduler thread is not the one that
  // created this.
  QGATE_TRY_STATUS(cuda_status(cudaSetDevice(device_), "cudaSetDevice"));
  const auto seqs = static_cast<int64_t>(chunks.size());
  int64_t rows = 0;
  bool decode = true;
  for (const SequenceChunk& ch : chunks) {
    rows += static_cast<int64_t>(ch.tokens.size());
    decode = decode && ch.tokens.size() == 1 && ch.logits;
    if (ch.start + static_cast<int64_t>(ch.tokens.size()) > limits_.max_context_tokens) {
      return make_error(ErrorCode::kInvalidArgument, "forward_batch: a chunk runs past "
                                                     "max_context_tokens");
    }
  }
  if (seqs > limits_.max_running || rows > limits_.max_batched_tokens) {
    return make_error(ErrorCode::kInvalidArgument,
                      "forward_batch: " + std::to_string(seqs) + " sequences / " +
                          std::to_string(rows) + " rows exceed the limits the device buffers "
                                                 "were sized for");
  }

  // Metadata into pinned memory, then one copy to the device.
  int32_t* m = meta_host_.as<int32_t>();
  std::vector<int64_t>& logit_rows = logit_rows_;
  logit_rows.clear();
  int64_t row = 0;
  for (int64_t s = 0; s < seqs; ++s) {
    const SequenceChunk& ch = chunks[static_cast<size_t>(s)];
    m[meta_.query_start + s] = static_cast<int32_t>(row);
    m[meta_.context_start + s] = static_cast<int32_t>(ch.start);
    for (size_t t = 0; t < ch.tokens.size(); ++t, ++row) {
      m[meta_.tokens + row] = ch.tokens[t];
      m[meta_.row_pos + row] = static_cast<int32_t>(ch.start + static_cast<int64_t>(t));
      m[meta_.row_seq + row] = static_cast<int32_t>(s);
    }
    int32_t* table = m + meta_.tables + s * max_blocks_;
    const size_t n = std::min(ch.block_table.size(), static_cast<size_t>(max_blocks_));
    std::copy_n(ch.block_table.begin(), n, table);
    std::fill(table + n, table + max_blocks_, 0);
    if (ch.logits) logit_rows.push_back(row - 1);
  }
  m[meta_.query_start + seqs] = static_cast<int32_t>(row);
  const auto n_logits = static_cast<int64_t>(logit_rows.size());
  if (static_cast<int64_t>(logits.size()) < n_logits * c.vocab_size) {
    return make_error(ErrorCode::kInvalidArgument, "forward_batch: logits buffer too small");
  }
  QGATE_TRY_STATUS(cuda_status(cudaMemcpyAsync(a_.meta.get(), m,
                                               static_cast<size_t>(meta_.total) * 4,
                                               cudaMemcpyHostToDevice, stream_),
                               "copy step metadata"));
  Status ran = decode ? launch_decode_graph(seqs) : run_step(rows, seqs, logit_rows, true);
  const auto logit_bytes = static_cast<size_t>(n_logits * c.vocab_size) * sizeof(float);
  if (ran.ok()) {
    ran = cuda_status(cudaMemcpyAsync(logits_host_.as<float>(), a_.logits.get(), logit_bytes,
                                      cudaMemcpyDeviceToHost, stream_),
                      "copy logits");
  }
  // Wait for the stream on failure too: the next step rewrites the pinned metadata from the host,
  // which must not race the copy above if it is still in flight.
  const cudaError_t synced = cudaStreamSynchronize(stream_);
  QGATE_TRY_STATUS(ran);
  QGATE_TRY_STATUS(cuda_status(synced, "forward step"));
  std::memcpy(logits.data(), logits_host_.as<float>(), logit_bytes);
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<BatchForward>> make_cuda_forward(const LlamaModel& model, int device,
                                                        const BatchForwardLimits& limits) {
  auto f = std::make_unique<CudaForward>(model, device, limits);
  QGATE_TRY_STATUS(f->init(model));
  return std::unique_ptr<BatchForward>(std::move(f));
}

}  // namespace qgate
