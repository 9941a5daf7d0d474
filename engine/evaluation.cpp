#include "engine/evaluation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "engine/llama_model.h"

namespace qgate {

namespace {

// log-softmax statistics of one row: max and log-sum-exp, in double for stable sums over 49k.
struct RowStats {
  float max = 0;
  double log_z = 0;  // log sum exp(x - max)
  int32_t argmax = 0;
};

RowStats row_stats(std::span<const float> x) {
  RowStats s;
  const auto it = std::max_element(x.begin(), x.end());
  s.max = *it;
  s.argmax = static_cast<int32_t>(it - x.begin());
  double z = 0;
  for (float v : x) z += std::exp(static_cast<double>(v - s.max));
  s.log_z = std::log(z);
  return s;
}

double log_prob(std::span<const float> x, const RowStats& s, int32_t token) {
  return static_cast<double>(x[static_cast<size_t>(token)] - s.max) - s.log_z;
}

// KL(p || q) with p, q the softmaxes of rows a (baseline) and b.
double kl_divergence(std::span<const float> a, const RowStats& sa, std::span<const float> b,
                     const RowStats& sb) {
  double kl = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double lp = static_cast<double>(a[i] - sa.max) - sa.log_z;
    const double lq = static_cast<double>(b[i] - sb.max) - sb.log_z;
    kl += std::exp(lp) * (lp - lq);
  }
  return std::max(kl, 0.0);
}

}  // namespace

Status EvalOptions::validate() const {
  if (context < 2) return make_error(ErrorCode::kInvalidArgument, "eval: context must be >= 2");
  if (stride < 1 || stride > context) {
    return make_error(ErrorCode::kInvalidArgument, "eval: stride must be in [1, context]");
  }
  if (max_tokens < 0) return make_error(ErrorCode::kInvalidArgument, "eval: max_tokens < 0");
  return Status::Ok();
}

Result<EvalResult> evaluate(const LlamaModel& model, const LlamaModel* baseline,
                            std::span<const int32_t> tokens, const EvalOptions& options,
                            ThreadPool& pool, const EvalProgress& progress) {
  QGATE_TRY_STATUS(options.validate());
  if (options.max_tokens > 0 && static_cast<int64_t>(tokens.size()) > options.max_tokens) {
    tokens = tokens.first(static_cast<size_t>(options.max_tokens));
  }
  const auto n = static_cast<int64_t>(tokens.size());
  if (n < 2) return make_error(ErrorCode::kInvalidArgument, "eval: the text has fewer than 2 tokens");
  const int64_t vocab = model.config().vocab_size;
  if (baseline != nullptr && baseline->config().vocab_size != vocab) {
    return make_error(ErrorCode::kInvalidArgument,
                      "eval: the baseline's vocabulary size differs from the model's");
  }
  const auto t0 = std::chrono::steady_clock::now();
  EvalResult r;
  r.tokens = n;
  r.has_baseline = baseline != nullptr;
  const int64_t ctx = std::min(options.context, model.config().max_position_embeddings);
  KvCache cache(model.config(), ctx);
  std::unique_ptr<KvCache> base_cache;
  if (baseline != nullptr) base_cache = std::make_unique<KvCache>(baseline->config(), ctx);
  ForwardScratch scratch;
  std::vector<float> logits(static_cast<size_t>(ctx * vocab));
  std::vector<float> base_logits(baseline != nullptr ? logits.size() : 0);

  int64_t total_windows = 0;
  for (int64_t begin = 0, prev_end = 0; prev_end < n; begin += options.stride) {
    prev_end = std::min(begin + ctx, n);
    ++total_windows;
  }
  double nll = 0, base_nll = 0, kl = 0;
  int64_t agree = 0;
  int64_t prev_end = 0;
  for (int64_t begin = 0; prev_end < n; begin += options.stride) {
    const int64_t end = std::min(begin + ctx, n);
    // Score the targets at positions [max(prev_end, begin + 1), end): each is predicted by the
    // logits of the position before it.
    const int64_t first_target = std::max(prev_end, begin + 1);
    const auto window = tokens.subspan(static_cast<size_t>(begin), static_cast<size_t>(end - begin));
    cache.clear();
    QGATE_TRY_STATUS(model.forward(window, cache, scratch, pool, LogitsMode::kAll, logits));
    if (baseline != nullptr) {
      base_cache->clear();
      QGATE_TRY_STATUS(
          baseline->forward(window, *base_cache, scratch, pool, LogitsMode::kAll, base_logits));
    }
    for (int64_t target = first_target; target < end; ++target) {
      const int64_t row = target - 1 - begin;
      std::span<const float> x(logits.data() + row * vocab, static_cast<size_t>(vocab));
      const RowStats s = row_stats(x);
      const int32_t tok = tokens[static_cast<size_t>(target)];
      nll -= log_prob(x, s, tok);
      if (baseline != nullptr) {
        std::span<const float> b(base_logits.data() + row * vocab, static_cast<size_t>(vocab));
        const RowStats sb = row_stats(b);
        base_nll -= log_prob(b, sb, tok);
        kl += kl_divergence(b, sb, x, s);
        agree += sb.argmax == s.argmax ? 1 : 0;
      }
      ++r.scored_tokens;
    }
    prev_end = end;
    ++r.windows;
    if (progress) progress(r.windows, total_windows);
  }
  const auto scored = static_cast<double>(r.scored_tokens);
  r.mean_nll = nll / scored;
  r.perplexity = std::exp(r.mean_nll);
  if (baseline != nullptr) {
    r.baseline_mean_nll = base_nll / scored;
    r.baseline_perplexity = std::exp(r.baseline_mean_nll);
    r.mean_kl = kl / scored;
    r.top1_agreement = static_cast<double>(agree) / scored;
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace qgate
