#include "engine/llama_model.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "engine/gguf.h"
#include "engine/hf_loader.h"
#include "engine/paged_kv_cache.h"
#include "engine/quant_repack.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {

namespace {

// Prefill runs in chunks of this many tokens: large enough that each weight block loaded from
// memory is reused across many tokens, small enough that activations stay in L2.
constexpr int64_t kPrefillChunk = 128;

void grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// out[t][i] = in[t][perm[i]] for n rows of cols: an act-order layer's input in its column order.
void permute_rows(const float* in, int64_t n, int64_t cols, const int32_t* perm,
                  std::vector<float>& out) {
  grow(out, static_cast<size_t>(n * cols));
  for (int64_t t = 0; t < n; ++t) {
    const float* src = in + t * cols;
    float* dst = out.data() + t * cols;
    for (int64_t i = 0; i < cols; ++i) dst[i] = src[perm[i]];
  }
}

// GPTQ's act-order sorts a layer's inputs by its Hessian's diagonal, and q/k/v (and gate/up)
// share their input and so their Hessian: their permutations are equal. Pointing `to` at
// `from`'s copy lets the forward pass see that by pointer and treat them as one projection.
void share_equal_permutation(LinearLayer& to, const LinearLayer& from) {
  if (to.input_perm == nullptr || from.input_perm == nullptr) return;
  if (to.weight.cols != from.weight.cols) return;
  if (std::equal(to.input_perm, to.input_perm + to.weight.cols, from.input_perm)) {
    to.input_perm = from.input_perm;
  }
}

// Scores of one attention work item's queries against their cached positions; per thread so the
// parallel loop never allocates once warmed up.
thread_local std::vector<float> t_scores;

}  // namespace

KvCache::KvCache(const LlamaConfig& config, int64_t capacity_tokens, KvDType dtype)
    : capacity_(capacity_tokens),
      dtype_(dtype),
      layer_bytes_(capacity_tokens * config.kv_dim() * kv_dtype_bytes(dtype)),
      k_(static_cast<size_t>(config.num_layers * layer_bytes_)),
      v_(static_cast<size_t>(config.num_layers * layer_bytes_)) {}

void KvCache::truncate(int64_t n) { size_ = std::clamp<int64_t>(n, 0, size_); }

Result<LlamaModel> LlamaModel::from_gguf(std::shared_ptr<const GgufFile> gguf) {
  LlamaModel m;
  QGATE_ASSIGN_OR_RETURN(m.config_, llama_config_from_gguf(*gguf));
  const LlamaConfig& c = m.config_;

  // Looks a tensor up and checks its shape; GGUF lists dims innermost first.
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) -> Result<WeightView> {
    const GgufTensorInfo* t = gguf->find_tensor(name);
    if (t == nullptr) return make_error(ErrorCode::kInvalidFormat, "gguf: missing tensor " + name);
    if (t->dims.size() != 2 || t->dims[0] != cols || t->dims[1] != rows) {
      return make_error(ErrorCode::kInvalidFormat,
                        "gguf: tensor " + name + " has the wrong shape (expected [" +
                            std::to_string(cols) + ", " + std::to_string(rows) + "])");
    }
    if (t->type != DType::kF32 && t->type != DType::kF16 && t->type != DType::kBF16 &&
        t->type != DType::kQ4_0 && t->type != DType::kQ4_1 && t->type != DType::kQ8_0) {
      return make_error(ErrorCode::kUnsupported, "gguf: tensor " + name + " has type " +
                                                     dtype_name(t->type) +
                                                     ", which qgate cannot multiply");
    }
    m.weight_bytes_ += t->nbytes;
    return WeightView{t->type, rows, cols, t->data};
  };
  auto vector = [&](const std::string& name, int64_t n) -> Result<const float*> {
    const GgufTensorInfo* t = gguf->find_tensor(name);
    if (t == nullptr) return make_error(ErrorCode::kInvalidFormat, "gguf: missing tensor " + name);
    if (t->dims.size() != 1 || t->dims[0] != n || t->type != DType::kF32) {
      return make_error(ErrorCode::kInvalidFormat,
                        "gguf: tensor " + name + " must be F32 of " + std::to_string(n) +
                            " elements");
    }
    m.weight_bytes_ += t->nbytes;
    return reinterpret_cast<const float*>(t->data);
  };

  QGATE_ASSIGN_OR_RETURN(m.embedding_, matrix("token_embd.weight", c.vocab_size, c.hidden_size));
  QGATE_ASSIGN_OR_RETURN(m.output_norm_, vector("output_norm.weight", c.hidden_size));
  if (c.tie_word_embeddings) {
    m.lm_head_ = m.embedding_;
  } else {
    QGATE_ASSIGN_OR_RETURN(m.lm_head_, matrix("output.weight", c.vocab_size, c.hidden_size));
  }
  m.layers_.resize(static_cast<size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    LlamaLayer& l = m.layers_[static_cast<size_t>(i)];
    QGATE_ASSIGN_OR_RETURN(l.attn_norm, vector(p + "attn_norm.weight", c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.ffn_norm, vector(p + "ffn_norm.weight", c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.q.weight, matrix(p + "attn_q.weight", c.q_dim(), c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.k.weight, matrix(p + "attn_k.weight", c.kv_dim(), c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.v.weight, matrix(p + "attn_v.weight", c.kv_dim(), c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.o.weight, matrix(p + "attn_output.weight", c.hidden_size, c.q_dim()));
    QGATE_ASSIGN_OR_RETURN(l.gate.weight,
                           matrix(p + "ffn_gate.weight", c.intermediate_size, c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.up.weight,
                           matrix(p + "ffn_up.weight", c.intermediate_size, c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.down.weight,
                           matrix(p + "ffn_down.weight", c.hidden_size, c.intermediate_size));
    if (c.attention_bias) {
      QGATE_ASSIGN_OR_RETURN(l.q.bias, vector(p + "attn_q.bias", c.q_dim()));
      QGATE_ASSIGN_OR_RETURN(l.k.bias, vector(p + "attn_k.bias", c.kv_dim()));
      QGATE_ASSIGN_OR_RETURN(l.v.bias, vector(p + "attn_v.bias", c.kv_dim()));
    }
  }
  m.gguf_ = gguf;
  return m;
}

Result<LlamaModel> LlamaModel::from_hf_dir(const std::string& dir) {
  QGATE_ASSIGN_OR_RETURN(HfCheckpoint ckpt, HfCheckpoint::open(dir));
  LlamaModel m;
  m.config_ = ckpt.config();
  const LlamaConfig& c = m.config_;
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) -> Result<WeightView> {
    QGATE_ASSIGN_OR_RETURN(WeightView w, ckpt.matrix(name, rows, cols));
    m.weight_bytes_ += static_cast<uint64_t>(*dtype_row_bytes(w.type, cols) * rows);
    return w;
  };
  // A projection: an int4 GPTQ/AWQ layer (prefix.qweight, repacked to Q4_1) or a float matrix
  // (prefix.weight; also quantized checkpoints' modules_to_not_convert).
  auto linear = [&](const std::string& prefix, int64_t rows, int64_t cols) -> Result<LinearLayer> {
    LinearLayer l;
    if (ckpt.quant_config().has_value() && ckpt.find(prefix + ".qweight") != nullptr) {
      QGATE_ASSIGN_OR_RETURN(QuantizedLinear q, ckpt.quantized(prefix));
      if (q.out_features != rows || q.in_features != cols) {
        return make_error(ErrorCode::kInvalidFormat,
                          ckpt.dir() + ": " + prefix + " is [" + std::to_string(q.out_features) +
                              ", " + std::to_string(q.in_features) + "], expected [" +
                              std::to_string(rows) + ", " + std::to_string(cols) + "]");
      }
      auto repacked = repack_to_q4_1(q);
      if (!repacked.ok()) {
        return make_error(repacked.error().code(), ckpt.dir() + ": " + prefix + ": " +
                                                        repacked.error().message());
      }
      auto held = std::make_shared<RepackedLinear>(std::move(repacked).value());
      l.weight = WeightView{DType::kQ4_1, rows, cols, held->q4_1.data()};
      if (!held->input_perm.empty()) l.input_perm = held->input_perm.data();
      m.weight_bytes_ += held->q4_1.size();
      m.owned_repacked_.push_back(held);
    } else {
      QGATE_ASSIGN_OR_RETURN(l.weight, matrix(prefix + ".weight", rows, cols));
    }
    return l;
  };
  auto vector = [&](const std::string& name, int64_t n) -> Result<const float*> {
    QGATE_ASSIGN_OR_RETURN(std::shared_ptr<std::vector<float>> v, ckpt.vector_f32(name, n));
    m.owned_.push_back(v);
    m.weight_bytes_ += static_cast<uint64_t>(n) * 4;
    return static_cast<const float*>(v->data());
  };
  QGATE_ASSIGN_OR_RETURN(m.embedding_,
                         matrix("model.embed_tokens.weight", c.vocab_size, c.hidden_size));
  QGATE_ASSIGN_OR_RETURN(m.output_norm_, vector("model.norm.weight", c.hidden_size));
  if (c.tie_word_embeddings) {
    m.lm_head_ = m.embedding_;
  } else {
    QGATE_ASSIGN_OR_RETURN(m.lm_head_, matrix("lm_head.weight", c.vocab_size, c.hidden_size));
  }
  m.layers_.resize(static_cast<size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LlamaLayer& l = m.layers_[static_cast<size_t>(i)];
    QGATE_ASSIGN_OR_RETURN(l.attn_norm, vector(p + "input_layernorm.weight", c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.ffn_norm,
                           vector(p + "post_attention_layernorm.weight", c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.q, linear(p + "self_attn.q_proj", c.q_dim(), c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.k, linear(p + "self_attn.k_proj", c.kv_dim(), c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.v, linear(p + "self_attn.v_proj", c.kv_dim(), c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.o, linear(p + "self_attn.o_proj", c.hidden_size, c.q_dim()));
    QGATE_ASSIGN_OR_RETURN(l.gate, linear(p + "mlp.gate_proj", c.intermediate_size, c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.up, linear(p + "mlp.up_proj", c.intermediate_size, c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.down, linear(p + "mlp.down_proj", c.hidden_size, c.intermediate_size));
    share_equal_permutation(l.k, l.q);
    share_equal_permutation(l.v, l.q);
    share_equal_permutation(l.up, l.gate);
    if (c.attention_bias) {
      QGATE_ASSIGN_OR_RETURN(l.q.bias, vector(p + "self_attn.q_proj.bias", c.q_dim()));
      QGATE_ASSIGN_OR_RETURN(l.k.bias, vector(p + "self_attn.k_proj.bias", c.kv_dim()));
      QGATE_ASSIGN_OR_RETURN(l.v.bias, vector(p + "self_attn.v_proj.bias", c.kv_dim()));
    }
  }
  m.keep_alive_.push_back(ckpt.keep_alive());
  return m;
}

std::string LlamaModel::describe() const {
  std::string s = config_.architecture + ", " + std::to_string(config_.num_layers) +
                  " layers, hidden " + std::to_string(config_.hidden_size) + ", " +
                  std::to_string(config_.num_heads) + "/" + std::to_string(config_.num_kv_heads) +
                  " heads, weights " + dtype_name(layers_.front().q.weight.type) + ", embedding " +
                  dtype_name(embedding_.type);
  return s;
}

void LlamaModel::embed(int32_t token, float* out) const {
  const int64_t row_bytes = *dtype_row_bytes(embedding_.type, embedding_.cols);
  const auto* row = static_cast<const uint8_t*>(embedding_.data) + token * row_bytes;
  dequantize_row(embedding_.type, row, out, embedding_.cols);
}

Status LlamaModel::forward(std::span<const int32_t> tokens, KvCache& cache,
                           ForwardScratch& scratch, ThreadPool& pool, LogitsMode mode,
                           std::span<float> logits) const {
  const auto n = static_cast<int64_t>(tokens.size());
  if (n == 0) return make_error(ErrorCode::kInvalidArgument, "forward: no tokens");
  if (cache.size() + n > cache.capacity()) {
    return make_error(ErrorCode::kOutOfRange,
                      "forward: " + std::to_string(cache.size() + n) +
                          " tokens exceed the KV cache capacity of " +
                          std::to_string(cache.capacity()));
  }
  const int64_t need = (mode == LogitsMode::kAll ? n : 1) * config_.vocab_size;
  if (static_cast<int64_t>(logits.size()) < need) {
    return make_error(ErrorCode::kInvalidArgument, "forward: logits buffer too small");
  }
  for (int32_t t : tokens) {
    if (t < 0 || t >= config_.vocab_size) {
      return make_error(ErrorCode::kInvalidArgument,
                        "forward: token id " + std::to_string(t) + " is outside the vocabulary");
    }
  }
  // The contiguous cache is one block that holds every position.
  const KvLayout kv{cache.dtype(), cache.key_bytes(0), cache.value_bytes(0),
                    cache.capacity() * config_.kv_dim(), 0, cache.capacity()};
  static constexpr int32_t kOnlyBlock = 0;
  const int32_t* const table[1] = {&kOnlyBlock};
  ForwardScratch& s = scratch;
  for (int64_t off = 0; off < n; off += kPrefillChunk) {
    const int64_t len = std::min(kPrefillChunk, n - off);
    const bool last = off + len == n;
    s.tokens.assign(tokens.begin() + off, tokens.begin() + off + len);
    s.row_pos.resize(static_cast<size_t>(len));
    s.row_seq.assign(static_cast<size_t>(len), 0);
    for (int64_t t = 0; t < len; ++t) s.row_pos[static_cast<size_t>(t)] = cache.size() + t;
    s.logit_rows.clear();
    std::span<float> out;
    if (mode == LogitsMode::kAll) {
      for (int64_t t = 0; t < len; ++t) s.logit_rows.push_back(t);
      out = logits.subspan(static_cast<size_t>(off * config_.vocab_size),
                           static_cast<size_t>(len * config_.vocab_size));
    } else if (last) {
      s.logit_rows.push_back(len - 1);
      out = logits.first(static_cast<size_t>(config_.vocab_size));
    }
    QGATE_TRY_STATUS(run_rows(len, kv, table, s, pool, s.logit_rows, out));
    cache.advance(len);
  }
  return Status::Ok();
}

Status validate_batch(std::span<const SequenceChunk> chunks, int64_t num_blocks,
                      int64_t block_tokens, int64_t vocab_size) {
  if (chunks.empty()) return make_error(ErrorCode::kInvalidArgument, "forward_batch: no chunks");
  for (size_t i = 0; i < chunks.size(); ++i) {
    const SequenceChunk& c = chunks[i];
    const auto len = static_cast<int64_t>(c.tokens.size());
    if (len == 0 || c.start < 0) {
      return make_error(ErrorCode::kInvalidArgument,
                        "forward_batch: chunk " + std::to_string(i) + " is empty");
    }
    const int64_t needed = (c.start + len + block_tokens - 1) / block_tokens;
    if (static_cast<int64_t>(c.block_table.size()) < needed) {
      return make_error(ErrorCode::kInvalidArgument,
                        "forward_batch: chunk " + std::to_string(i) +
                            " has too few blocks for its positions");
    }
    for (int32_t b : c.block_table) {
      if (b < 0 || b >= num_blocks) {
        return make_error(ErrorCode::kInvalidArgument,
                          "forward_batch: chunk " + std::to_string(i) + " names block " +
                              std::to_string(b) + " outside the cache");
      }
    }
    for (int32_t tok : c.tokens) {
      if (tok < 0 || tok >= vocab_size) {
        return make_error(ErrorCode::kInvalidArgument, "forward_batch: token id " +
                                                           std::to_string(tok) +
                                                           " is outside the vocabulary");
      }
    }
  }
  return Status::Ok();
}

Status LlamaModel::forward_batch(std::span<const SequenceChunk> chunks, PagedKvCache& cache,
                                 ForwardScratch& s, ThreadPool& pool,
                                 std::span<float> logits) const {
  QGATE_TRY_STATUS(
      validate_batch(chunks, cache.num_blocks(), cache.block_tokens(), config_.vocab_size));
  s.tokens.clear();
  s.row_pos.clear();
  s.row_seq.clear();
  s.logit_rows.clear();
  s.tables.clear();
  for (size_t i = 0; i < chunks.size(); ++i) {
    const SequenceChunk& c = chunks[i];
    const auto len = static_cast<int64_t>(c.tokens.size());
    for (int64_t t = 0; t < len; ++t) {
      s.tokens.push_back(c.tokens[static_cast<size_t>(t)]);
      s.row_pos.push_back(c.start + t);
      s.row_seq.push_back(static_cast<int32_t>(i));
    }
    s.tables.push_back(c.block_table.data());
    if (c.logits) s.logit_rows.push_back(static_cast<int64_t>(s.tokens.size()) - 1);
  }
  const auto rows_out = static_cast<int64_t>(s.logit_rows.size());
  if (static_cast<int64_t>(logits.size()) < rows_out * config_.vocab_size) {
    return make_error(ErrorCode::kInvalidArgument, "forward_batch: logits buffer too small");
  }
  const KvLayout kv{cache.dtype(), cache.key_bytes(0), cache.value_bytes(0),
                    cache.layer_stride(), cache.block_stride(), cache.block_tokens()};
  return run_rows(static_cast<int64_t>(s.tokens.size()), kv, s.tables, s, pool, s.logit_rows,
                  logits.first(static_cast<size_t>(rows_out * config_.vocab_size)));
}

Status LlamaModel::run_rows(int64_t n, const KvLayout& kv, std::span<const int32_t* const> tables,
                            ForwardScratch& s, ThreadPool& pool,
                            std::span<const int64_t> logit_rows, std::span<float> logits) const {
  const LlamaConfig& c = config_;
  const int64_t d = c.hidden_size;
  const int64_t kv_dim = c.kv_dim();
  grow(s.x, static_cast<size_t>(n * d));
  grow(s.xb, static_cast<size_t>(n * std::max(d, c.q_dim())));
  grow(s.q, static_cast<size_t>(n * c.q_dim()));
  grow(s.k, static_cast<size_t>(n * kv_dim));
  grow(s.v, static_cast<size_t>(n * kv_dim));
  grow(s.att, static_cast<size_t>(n * c.q_dim()));
  grow(s.gate, static_cast<size_t>(n * c.intermediate_size));
  grow(s.up, static_cast<size_t>(n * c.intermediate_size));

  for (int64_t t = 0; t < n; ++t) embed(s.tokens[static_cast<size_t>(t)], s.x.data() + t * d);

  // Projections that read the same input (q/k/v, gate/up) go out as one matmul_shared_input: one
  // permutation and quantization of the input, one dispatch for all their rows. Layers whose
  // act-order permutations differ run one by one.
  struct Projection {
    const LinearLayer* layer;
    float* out;
  };
  auto linear = [&](std::initializer_list<Projection> projections, const float* in) -> Status {
    QGATE_CHECK(projections.size() >= 1 && projections.size() <= 3,
                "forward: one to three projections share an input");
    const int32_t* perm = projections.begin()->layer->input_perm;
    bool shared = true;
    for (const Projection& p : projections) shared = shared && p.layer->input_perm == perm;
    if (!shared || s.reference_matmul) {
      for (const Projection& p : projections) {
        const LinearLayer& l = *p.layer;
        const float* x = in;
        if (l.input_perm != nullptr) {
          permute_rows(in, n, l.weight.cols, l.input_perm, s.permuted);
          x = s.permuted.data();
        }
        if (s.reference_matmul) {
          matmul_ref(l.weight, x, n, p.out);
        } else {
          QGATE_TRY_STATUS(matmul(l.weight, x, n, p.out, pool, s.mm));
        }
      }
    } else {
      const float* x = in;
      if (perm != nullptr) {
        permute_rows(in, n, projections.begin()->layer->weight.cols, perm, s.permuted);
        x = s.permuted.data();
      }
      std::array<MatmulTarget, 3> targets;
      size_t count = 0;
      for (const Projection& p : projections) targets[count++] = {p.layer->weight, p.out};
      QGATE_TRY_STATUS(
          matmul_shared_input(std::span(targets).first(count), x, n, pool, s.mm));
    }
    for (const Projection& p : projections) {
      const LinearLayer& l = *p.layer;
      if (l.bias == nullptr) continue;
      for (int64_t t = 0; t < n; ++t) add_inplace(p.out + t * l.weight.rows, l.bias, l.weight.rows);
    }
    return Status::Ok();
  };

  for (int64_t li = 0; li < c.num_layers; ++li) {
    const LlamaLayer& l = layers_[static_cast<size_t>(li)];
    for (int64_t t = 0; t < n; ++t) {
      rms_norm(s.x.data() + t * d, l.attn_norm, s.xb.data() + t * d, d, c.rms_norm_eps);
    }
    QGATE_TRY_STATUS(
        linear({{&l.q, s.q.data()}, {&l.k, s.k.data()}, {&l.v, s.v.data()}}, s.xb.data()));
    const int64_t elem = kv_dtype_bytes(kv.dtype);
    std::byte* keys = kv.k + li * kv.layer_stride * elem;
    std::byte* values = kv.v + li * kv.layer_stride * elem;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t pos = s.row_pos[static_cast<size_t>(t)];
      rope(s.q.data() + t * c.q_dim(), c.num_heads, c.head_dim, pos, c.rope_theta, c.rope_style);
      rope(s.k.data() + t * kv_dim, c.num_kv_heads, c.head_dim, pos, c.rope_theta, c.rope_style);
      const int32_t* table = tables[static_cast<size_t>(s.row_seq[static_cast<size_t>(t)])];
      const int64_t at = (table[pos / kv.block_tokens] * kv.block_stride +
                          (pos % kv.block_tokens) * kv_dim) * elem;
      if (kv.dtype == KvDType::kF16) {
        fp32_to_fp16_row(s.k.data() + t * kv_dim, reinterpret_cast<uint16_t*>(keys + at), kv_dim);
        fp32_to_fp16_row(s.v.data() + t * kv_dim, reinterpret_cast<uint16_t*>(values + at), kv_dim);
      } else {
        std::memcpy(keys + at, s.k.data() + t * kv_dim, static_cast<size_t>(kv_dim) * sizeof(float));
        std::memcpy(values + at, s.v.data() + t * kv_dim,
                    static_cast<size_t>(kv_dim) * sizeof(float));
      }
    }
    attention(n, li, kv, tables, s, pool);
    QGATE_TRY_STATUS(linear({{&l.o, s.xb.data()}}, s.att.data()));
    for (int64_t t = 0; t < n; ++t) add_inplace(s.x.data() + t * d, s.xb.data() + t * d, d);

    for (int64_t t = 0; t < n; ++t) {
      rms_norm(s.x.data() + t * d, l.ffn_norm, s.xb.data() + t * d, d, c.rms_norm_eps);
    }
    QGATE_TRY_STATUS(linear({{&l.gate, s.gate.data()}, {&l.up, s.up.data()}}, s.xb.data()));
    swiglu(s.gate.data(), s.up.data(), s.gate.data(), n * c.intermediate_size);
    QGATE_TRY_STATUS(linear({{&l.down, s.xb.data()}}, s.gate.data()));
    for (int64_t t = 0; t < n; ++t) add_inplace(s.x.data() + t * d, s.xb.data() + t * d, d);
  }

  if (logit_rows.empty()) return Status::Ok();  // a prefill chunk before the last one
  const auto rows = static_cast<int64_t>(logit_rows.size());
  for (int64_t i = 0; i < rows; ++i) {
    rms_norm(s.x.data() + logit_rows[static_cast<size_t>(i)] * d, output_norm_,
             s.xb.data() + i * d, d, c.rms_norm_eps);
  }
  if (s.reference_matmul) {
    matmul_ref(lm_head_, s.xb.data(), rows, logits.data());
    return Status::Ok();
  }
  return matmul(lm_head_, s.xb.data(), rows, logits.data(), pool, s.mm);
}

void LlamaModel::attention(int64_t n, int64_t layer, const KvLayout& kv,
                           std::span<const int32_t* const> tables, ForwardScratch& s,
                           ThreadPool& pool) const {
  const int64_t offset = layer * kv.layer_stride * kv_dtype_bytes(kv.dtype);
  if (kv.dtype == KvDType::kF16) {
    attention_over(n, reinterpret_cast<const uint16_t*>(kv.k + offset),
                   reinterpret_cast<const uint16_t*>(kv.v + offset), kv, tables, s, pool);
  } else {
    attention_over(n, reinterpret_cast<const float*>(kv.k + offset),
                   reinterpret_cast<const float*>(kv.v + offset), kv, tables, s, pool);
  }
}

template <typename KvT>
void LlamaModel::attention_over(int64_t n, const KvT* keys, const KvT* values, const KvLayout& kv,
                                std::span<const int32_t* const> tables, ForwardScratch& s,
                                ThreadPool& pool) const {
  const LlamaConfig& c = config_;
  const int64_t hd = c.head_dim;
  const int64_t kv_dim = c.kv_dim();
  const int64_t group = c.num_heads / c.num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  // Work items. With a prefill's rows, an item is a tile of up to kTileRows consecutive rows of
  // one sequence times the `group` query heads of one KV head: all of its queries read the same
  // keys and values, so each chunk of kChunk positions comes from memory once and from L1 for
  // the other queries. With fewer rows (decode) an item is one row and one head, so a single row
  // still has num_heads items to share among the threads.
  constexpr int64_t kTileRows = 4;
  constexpr int64_t kChunk = 64;
  const bool tiled = n >= kTileRows;
  auto& tiles = s.attention_tiles;
  tiles.clear();
  for (int64_t t = 0; t < n; ++t) {
    if (tiles.empty() || !tiled || t - tiles.back() == kTileRows ||
        s.row_seq[static_cast<size_t>(t)] != s.row_seq[static_cast<size_t>(tiles.back())]) {
      tiles.push_back(t);
    }
  }
  const auto num_tiles = static_cast<int64_t>(tiles.size());
  tiles.push_back(n);
  const int64_t heads_per_item = tiled ? group : 1;
  const int64_t items_per_tile = c.num_heads / heads_per_item;
  // A causal row costs in proportion to its position, and the pool gives each thread a
  // contiguous range of items: dealing tiles first, last, second, second to last, ... gives every
  // range about the same cost (in row order the thread with the last rows did three quarters of
  // a fresh prefill's attention).
  auto tile_at = [num_tiles](int64_t k) { return k % 2 == 0 ? k / 2 : num_tiles - 1 - k / 2; };

  pool.parallel_for(num_tiles * items_per_tile, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t tile = tile_at(item / items_per_tile);
      const int64_t t0 = tiles[static_cast<size_t>(tile)];
      const int64_t t1 = tiles[static_cast<size_t>(tile) + 1];
      const int64_t h0 = (item % items_per_tile) * heads_per_item;
      const int64_t kvh = h0 / group;
      const int32_t* table = tables[static_cast<size_t>(s.row_seq[static_cast<size_t>(t0)])];
      auto len_of = [&](int64_t t) { return s.row_pos[static_cast<size_t>(t)] + 1; };  // causal
      int64_t len_max = 0;
      for (int64_t t = t0; t < t1; ++t) len_max = std::max(len_max, len_of(t));
      const size_t need = static_cast<size_t>((t1 - t0) * heads_per_item * len_max);
      if (t_scores.size() < need) t_scores.resize(need);
      auto scores = [&](int64_t t, int64_t g) {
        return t_scores.data() + ((t - t0) * heads_per_item + g) * len_max;
      };
      auto query = [&](int64_t t, int64_t g) { return s.q.data() + t * c.q_dim() + (h0 + g) * hd; };
      auto output = [&](int64_t t, int64_t g) {
        return s.att.data() + t * c.q_dim() + (h0 + g) * hd;
      };
      // Calls body(t, g, cache offset of position j0, j0, count) for every query and every chunk
      // of its positions, chunk-major. Each query sees its positions in order whatever the block
      // and chunk sizes, and attention_scores/values give per position what one run over a
      // contiguous cache would, so the results equal a contiguous cache's bit for bit.
      auto for_each_chunk = [&](auto&& body) {
        for (int64_t j0 = 0, b = 0; j0 < len_max; j0 += kv.block_tokens, ++b) {
          const int64_t block = table[b] * kv.block_stride + kvh * hd;
          const int64_t block_end = std::min(len_max, j0 + kv.block_tokens);
          for (int64_t c0 = j0; c0 < block_end; c0 += kChunk) {
            const int64_t c1 = std::min(block_end, c0 + kChunk);
            for (int64_t t = t0; t < t1; ++t) {
              const int64_t count = std::min(c1, len_of(t)) - c0;
              if (count <= 0) continue;
              for (int64_t g = 0; g < heads_per_item; ++g) {
                body(t, g, block + (c0 - j0) * kv_dim, c0, count);
              }
            }
          }
        }
      };
      for_each_chunk([&](int64_t t, int64_t g, int64_t at, int64_t j0, int64_t count) {
        attention_scores(query(t, g), keys + at, kv_dim, count, hd, scale, scores(t, g) + j0);
      });
      for (int64_t t = t0; t < t1; ++t) {
        for (int64_t g = 0; g < heads_per_item; ++g) {
          softmax(scores(t, g), len_of(t));
          std::fill(output(t, g), output(t, g) + hd, 0.0f);
        }
      }
      for_each_chunk([&](int64_t t, int64_t g, int64_t at, int64_t j0, int64_t count) {
        attention_values(scores(t, g) + j0, values + at, kv_dim, count, hd, output(t, g));
      });
    }
  });
}

}  // namespace qgate
