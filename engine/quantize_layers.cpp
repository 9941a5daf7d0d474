// Layer-by-layer quantization of a decoder (see quantize_pipeline.h for the pipeline): the
// calibration forward pass over all tokens at once, and the RTN / GPTQ / AWQ step of each layer.
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "engine/hf_export.h"
#include "engine/hf_loader.h"
#include "engine/model_config.h"
#include "engine/quant_formats.h"
#include "engine/quantize_math.h"
#include "engine/quantize_pipeline_internal.h"
#include "engine/safetensors_writer.h"
#include "engine/tokenizer.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {

namespace {

namespace fs = std::filesystem;
using namespace quantize_pipeline_internal;

Error invalid(std::string msg) { return make_error(ErrorCode::kInvalidArgument, std::move(msg)); }

// ---- loading ------------------------------------------------------------------------------------

Result<Linear> load_linear(const HfCheckpoint& ck, const std::string& prefix, int64_t n,
                           int64_t k) {
  QGATE_ASSIGN_OR_RETURN(WeightView v, ck.matrix(prefix + ".weight", n, k));
  Linear l{prefix, std::vector<float>(static_cast<size_t>(n * k)), n, k};
  const int64_t row_bytes = dtype_row_bytes(v.type, k).value_or(0);
  for (int64_t r = 0; r < n; ++r) {
    dequantize_row(v.type, static_cast<const std::byte*>(v.data) + r * row_bytes,
                   l.w.data() + r * k, k);
  }
  return l;
}

Result<LayerWeights> load_layer(const HfCheckpoint& ck, int64_t i) {
  const LlamaConfig& c = ck.config();
  const std::string p = "model.layers." + std::to_string(i);
  LayerWeights w;
  QGATE_ASSIGN_OR_RETURN(auto an, ck.vector_f32(p + ".input_layernorm.weight", c.hidden_size));
  QGATE_ASSIGN_OR_RETURN(auto fn,
                         ck.vector_f32(p + ".post_attention_layernorm.weight", c.hidden_size));
  w.attn_norm = *an;
  w.ffn_norm = *fn;
  QGATE_ASSIGN_OR_RETURN(w.q, load_linear(ck, p + ".self_attn.q_proj", c.q_dim(), c.hidden_size));
  QGATE_ASSIGN_OR_RETURN(w.k, load_linear(ck, p + ".self_attn.k_proj", c.kv_dim(), c.hidden_size));
  QGATE_ASSIGN_OR_RETURN(w.v, load_linear(ck, p + ".self_attn.v_proj", c.kv_dim(), c.hidden_size));
  QGATE_ASSIGN_OR_RETURN(w.o, load_linear(ck, p + ".self_attn.o_proj", c.hidden_size, c.q_dim()));
  QGATE_ASSIGN_OR_RETURN(w.gate,
                         load_linear(ck, p + ".mlp.gate_proj", c.intermediate_size, c.hidden_size));
  QGATE_ASSIGN_OR_RETURN(w.up,
                         load_linear(ck, p + ".mlp.up_proj", c.intermediate_size, c.hidden_size));
  QGATE_ASSIGN_OR_RETURN(w.down,
                         load_linear(ck, p + ".mlp.down_proj", c.hidden_size, c.intermediate_size));
  return w;
}

// ---- the calibration forward pass ---------------------------------------------------------------

enum class Site { kQkv, kO, kGateUp, kDown };
// Called with a linear group's input just before the group's weights are used; may replace them.
using SiteHook = std::function<Status(Site, std::vector<float>& x)>;

class Runner {
 public:
  Runner(const LlamaConfig& c, int64_t samples, int64_t seqlen, ThreadPool& pool)
      : c_(c), samples_(samples), seqlen_(seqlen), tokens_(samples * seqlen), pool_(pool) {}

  int64_t tokens() const { return tokens_; }
  ThreadPool& pool() { return pool_; }

  Status linear(const Linear& l, const std::vector<float>& x, std::vector<float>& y) {
    y.resize(static_cast<size_t>(tokens_ * l.n));
    const WeightView v{DType::kF32, l.n, l.k, l.w.data()};
    return matmul(v, x.data(), tokens_, y.data(), pool_, mm_);
  }

  void norm(const std::vector<float>& x, const std::vector<float>& w, std::vector<float>& out) {
    const int64_t h = c_.hidden_size;
    out.resize(x.size());
    pool_.parallel_for(tokens_, 64, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        rms_norm(x.data() + t * h, w.data(), out.data() + t * h, h, c_.rms_norm_eps);
    });
  }

  // Causal GQA attention of every sample; q, k are roped in place. out: [tokens][q_dim].
  void attention(std::vector<float>& q, std::vector<float>& k, const std::vector<float>& v,
                 std::vector<float>& out) {
    const int64_t hd = c_.head_dim, nh = c_.num_heads, nkv = c_.num_kv_heads;
    const int64_t qd = c_.q_dim(), kvd = c_.kv_dim();
    pool_.parallel_for(tokens_, 64, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t pos = t % seqlen_;
        rope(q.data() + t * qd, nh, hd, pos, c_.rope_theta, RopeStyle::kHalves);
        rope(k.data() + t * kvd, nkv, hd, pos, c_.rope_theta, RopeStyle::kHalves);
      }
    });
    out.assign(static_cast<size_t>(tokens_ * qd), 0.0f);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const int64_t group = nh / nkv;
    pool_.parallel_for(samples_ * nh, 1, [&](int64_t b, int64_t e) {
      std::vector<float> att(static_cast<size_t>(seqlen_));
      for (int64_t item = b; item < e; ++item) {
        const int64_t s = item / nh, h = item % nh, kvh = h / group;
        const int64_t t0 = s * seqlen_;
        for (int64_t i = 0; i < seqlen_; ++i) {
          const float* qi = q.data() + (t0 + i) * qd + h * hd;
          attention_scores(qi, k.data() + t0 * kvd + kvh * hd, kvd, i + 1, hd, scale, att.data());
          softmax(att.data(), i + 1);
          float* oi = out.data() + (t0 + i) * qd + h * hd;
          attention_values(att.data(), v.data() + t0 * kvd + kvh * hd, kvd, i + 1, hd, oi);
        }
      }
    });
  }

  // One decoder layer over all tokens: x [tokens][hidden] is updated in place.
  Status layer(LayerWeights& w, std::vector<float>& x, const SiteHook& hook) {
    std::vector<float> a, q, k, v, att, tmp;
    norm(x, w.attn_norm, a);
    if (hook) QGATE_TRY_STATUS(hook(Site::kQkv, a));
    QGATE_TRY_STATUS(linear(w.q, a, q));
    QGATE_TRY_STATUS(linear(w.k, a, k));
    QGATE_TRY_STATUS(linear(w.v, a, v));
    attention(q, k, v, att);
    q = {};
    k = {};
    v = {};
    if (hook) QGATE_TRY_STATUS(hook(Site::kO, att));
    QGATE_TRY_STATUS(linear(w.o, att, tmp));
    att = {};
    add_inplace(x.data(), tmp.data(), static_cast<int64_t>(x.size()));
    norm(x, w.ffn_norm, a);
    if (hook) QGATE_TRY_STATUS(hook(Site::kGateUp, a));
    std::vector<float> g, u;
    QGATE_TRY_STATUS(linear(w.gate, a, g));
    QGATE_TRY_STATUS(linear(w.up, a, u));
    swiglu(g.data(), u.data(), g.data(), static_cast<int64_t>(g.size()));
    u = {};
    if (hook) QGATE_TRY_STATUS(hook(Site::kDown, g));
    QGATE_TRY_STATUS(linear(w.down, g, tmp));
    add_inplace(x.data(), tmp.data(), static_cast<int64_t>(x.size()));
    return Status::Ok();
  }

 private:
  const LlamaConfig& c_;
  int64_t samples_, seqlen_, tokens_;
  ThreadPool& pool_;
  MatmulScratch mm_;
};

// ---- per-method layer quantization --------------------------------------------------------------

// Replaces l's weights by their quantized-dequantized values and records the layer.
void adopt(Linear& l, QuantizedLinear ql, std::vector<QuantizedEntry>& out) {
  l.w = dequantize_linear(ql);
  out.push_back({l.name, std::move(ql)});
}

Status quantize_rtn_layer(LayerWeights& w, const QuantParams& p, std::vector<QuantizedEntry>& out) {
  for (Linear* l : w.linears()) {
    QGATE_ASSIGN_OR_RETURN(QuantizedLinear ql, quantize_rtn(l->w, l->n, l->k, p));
    adopt(*l, std::move(ql), out);
  }
  return Status::Ok();
}

Status gptq_site(Runner& run, std::vector<Linear*> ls, const std::vector<float>& x,
                 const GptqParams& p, std::vector<QuantizedEntry>& out) {
  GptqHessian h(ls.front()->k);
  QGATE_TRY_STATUS(h.add_batch(x, run.tokens(), &run.pool()));
  for (Linear* l : ls) {
    auto r = quantize_gptq(l->w, l->n, l->k, h, p, &run.pool());
    if (!r.ok()) return make_error(r.error().code(), l->name + ": " + r.error().message());
    adopt(*l, std::move(r->layer), out);
  }
  return Status::Ok();
}

Status quantize_gptq_layer(Runner& run, LayerWeights& w, std::vector<float>& x, const GptqParams& p,
                           std::vector<QuantizedEntry>& out) {
  return run.layer(w, x, [&](Site site, std::vector<float>& in) -> Status {
    switch (site) {
      case Site::kQkv:
        return gptq_site(run, {&w.q, &w.k, &w.v}, in, p, out);
      case Site::kO:
        return gptq_site(run, {&w.o}, in, p, out);
      case Site::kGateUp:
        return gptq_site(run, {&w.gate, &w.up}, in, p, out);
      case Site::kDown:
        return gptq_site(run, {&w.down}, in, p, out);
    }
    return Status::Ok();
  });
}

// x [tokens][k] columns divided by s (the input the scaled weights will see).
void divide_columns(std::vector<float>& x, const std::vector<float>& s) {
  const size_t k = s.size();
  for (size_t i = 0; i < x.size(); ++i) x[i] /= s[i % k];
}

Result<std::vector<float>> awq_scales(Runner& run, std::vector<Linear*> ls,
                                      const std::vector<float>& x, const AwqParams& p) {
  std::vector<std::span<const float>> ws;
  std::vector<int64_t> rows;
  for (Linear* l : ls) {
    ws.emplace_back(l->w);
    rows.push_back(l->n);
  }
  auto r = awq_search_scales(ws, rows, ls.front()->k, x, run.tokens(), p, &run.pool());
  if (!r.ok()) return make_error(r.error().code(), ls.front()->name + ": " + r.error().message());
  for (Linear* l : ls) {
    for (int64_t n = 0; n < l->n; ++n) {
      for (int64_t k = 0; k < l->k; ++k) l->w[n * l->k + k] *= r->scales[k];
    }
  }
  return std::move(r->scales);
}

Status quantize_awq_layer(Runner& run, const LlamaConfig& c, LayerWeights& w, std::vector<float>& x,
                          const AwqParams& p, std::vector<QuantizedEntry>& out) {
  // Pass 1: the layer's inputs with its float weights (AutoAWQ searches on these too).
  std::vector<float> x_attn, x_o, x_mlp, x_down;
  std::vector<float> x_copy = x;
  QGATE_TRY_STATUS(run.layer(w, x_copy, [&](Site site, std::vector<float>& in) -> Status {
    switch (site) {
      case Site::kQkv:
        x_attn = in;
        break;
      case Site::kO:
        x_o = in;
        break;
      case Site::kGateUp:
        x_mlp = in;
        break;
      case Site::kDown:
        x_down = in;
        break;
    }
    return Status::Ok();
  }));
  x_copy = {};
  // Scales are searched on unscaled weights for every group, then folded (as AutoAWQ does).
  QGATE_ASSIGN_OR_RETURN(auto s_attn, awq_scales(run, {&w.q, &w.k, &w.v}, x_attn, p));
  QGATE_ASSIGN_OR_RETURN(auto s_mlp, awq_scales(run, {&w.gate, &w.up}, x_mlp, p));
  QGATE_ASSIGN_OR_RETURN(auto s_down, awq_scales(run, {&w.down}, x_down, p));
  for (size_t i = 0; i < s_attn.size(); ++i) w.attn_norm[i] /= s_attn[i];
  for (size_t i = 0; i < s_mlp.size(); ++i) w.ffn_norm[i] /= s_mlp[i];
  // h = silu(gate)·up is linear in each up row, so 1/s folds into up_proj's rows.
  for (int64_t r = 0; r < w.up.n; ++r) {
    for (int64_t k = 0; k < w.up.k; ++k) w.up.w[r * w.up.k + k] /= s_down[r];
  }
  divide_columns(x_attn, s_attn);
  divide_columns(x_mlp, s_mlp);
  divide_columns(x_down, s_down);
  // v → o only without GQA: with shared kv heads one v row feeds several o columns.
  if (c.num_heads == c.num_kv_heads) {
    QGATE_ASSIGN_OR_RETURN(auto s_o, awq_scales(run, {&w.o}, x_o, p));
    for (int64_t r = 0; r < w.v.n; ++r) {
      for (int64_t k = 0; k < w.v.k; ++k) w.v.w[r * w.v.k + k] /= s_o[r];
    }
    divide_columns(x_o, s_o);
  }
  const std::vector<std::pair<Linear*, const std::vector<float>*>> clipped = {
      {&w.v, &x_attn}, {&w.o, &x_o}, {&w.gate, &x_mlp}, {&w.up, &x_mlp}, {&w.down, &x_down}};
  for (Linear* l : {&w.q, &w.k}) {
    QGATE_ASSIGN_OR_RETURN(QuantizedLinear ql, quantize_rtn(l->w, l->n, l->k, p));
    adopt(*l, std::move(ql), out);
  }
  for (const auto& [l, in] : clipped) {
    auto clip = awq_search_clip(l->w, l->n, l->k, *in, run.tokens(), p, &run.pool());
    if (!clip.ok()) return make_error(clip.error().code(), l->name + ": " + clip.error().message());
    QGATE_ASSIGN_OR_RETURN(QuantizedLinear ql,
                           quantize_rtn_clipped(l->w, l->n, l->k, clip.value(), p));
    adopt(*l, std::move(ql), out);
  }
  // Pass 2: the quantized layer's output feeds the next layer.
  return run.layer(w, x, {});
}

}  // namespace

// ---- the whole model ----------------------------------------------------------------------------

Result<QuantizedModel> quantize_pipeline_internal::quantize_layers(
    const std::string& fp16_dir, const QuantizeOptions& o, const std::vector<int32_t>& calib,
    const QuantizeProgress& progress) {
  QGATE_ASSIGN_OR_RETURN(HfCheckpoint ck, HfCheckpoint::open(fp16_dir));
  const LlamaConfig& c = ck.config();
  ThreadPool pool(std::max(1, o.threads));
  QuantizedModel model;
  model.config = c;
  const bool calibrated = o.method == QuantizeMethod::kGptq || o.method == QuantizeMethod::kAwq;
  const int64_t samples = calibrated ? o.calib_samples : 0;
  Runner run(c, samples, o.calib_seqlen, pool);
  std::vector<float> x;
  if (calibrated) {
    QGATE_ASSIGN_OR_RETURN(Linear emb,
                           load_linear(ck, "model.embed_tokens", c.vocab_size, c.hidden_size));
    x.resize(calib.size() * static_cast<size_t>(c.hidden_size));
    for (size_t t = 0; t < calib.size(); ++t) {
      if (calib[t] < 0 || calib[t] >= c.vocab_size) {
        return invalid("calibration token " + std::to_string(calib[t]) + " outside vocabulary");
      }
      std::memcpy(x.data() + t * c.hidden_size, emb.w.data() + calib[t] * c.hidden_size,
                  static_cast<size_t>(c.hidden_size) * sizeof(float));
    }
  }
  QuantParams qp;
  qp.bits = o.bits;
  qp.group_size = o.group_size;
  qp.sym = o.sym;
  GptqParams gp;
  static_cast<QuantParams&>(gp) = qp;
  gp.damp = o.damp;
  gp.desc_act = o.desc_act;
  AwqParams ap;
  static_cast<QuantParams&>(ap) = qp;
  ap.n_grid = o.awq_grid;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    QGATE_ASSIGN_OR_RETURN(LayerWeights w, load_layer(ck, i));
    Status st = Status::Ok();
    switch (o.method) {
      case QuantizeMethod::kRtn:
        st = quantize_rtn_layer(w, qp, model.linears);
        break;
      case QuantizeMethod::kGptq:
        st = quantize_gptq_layer(run, w, x, gp, model.linears);
        break;
      case QuantizeMethod::kAwq:
        st = quantize_awq_layer(run, c, w, x, ap, model.linears);
        break;
      case QuantizeMethod::kFp16:
        return invalid("fp16 has no layer quantization");
    }
    if (!st.ok()) {
      return make_error(st.error().code(),
                        "layer " + std::to_string(i) + ": " + st.error().message());
    }
    model.norms.push_back(
        {"model.layers." + std::to_string(i) + ".input_layernorm.weight", std::move(w.attn_norm)});
    model.norms.push_back({"model.layers." + std::to_string(i) + ".post_attention_layernorm.weight",
                           std::move(w.ffn_norm)});
    if (progress) {
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      char line[160];
      std::snprintf(line, sizeof line,
                    "[quantize] layer %lld/%lld: q,k,v,o,gate,up,down (%s) %.1fs",
                    static_cast<long long>(i + 1), static_cast<long long>(c.num_layers),
                    quantize_method_name(o.method), secs);
      progress(line);
    }
  }
  return model;
}

}  // namespace qgate
