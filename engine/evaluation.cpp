#include "engine/evaluation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "engine/llama_model.h"
#include "engine/log_softmax.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {

namespace {

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

// Per-position figures of one window, filled in parallel and summed in position order so the
// totals do not depend on the thread count.
struct PositionScores {
  double nll = 0;
  double base_nll = 0;
  double kl = 0;
  bool agree = false;
};

Result<std::vector<EvalResult>> evaluate_many(std::span<const LlamaModel* const> models,
                                              const LlamaModel* baseline,
                                              std::span<const int32_t> tokens,
                                              const EvalOptions& options, ThreadPool& pool,
                                              const EvalProgress& progress) {
  QGATE_TRY_STATUS(options.validate());
  if (models.empty()) return make_error(ErrorCode::kInvalidArgument, "eval: no model to evaluate");
  if (options.max_tokens > 0 && static_cast<int64_t>(tokens.size()) > options.max_tokens) {
    tokens = tokens.first(static_cast<size_t>(options.max_tokens));
  }
  const auto n = static_cast<int64_t>(tokens.size());
  if (n < 2) return make_error(ErrorCode::kInvalidArgument, "eval: the text has fewer than 2 tokens");
  const LlamaConfig& config = models[0]->config();
  const int64_t vocab = config.vocab_size;
  int64_t ctx = options.context;
  for (const LlamaModel* m : models) {
    if (m->config().vocab_size != vocab) {
      return make_error(ErrorCode::kInvalidArgument, "eval: the models' vocabulary sizes differ");
    }
    ctx = std::min(ctx, m->config().max_position_embeddings);
  }
  if (baseline != nullptr && baseline->config().vocab_size != vocab) {
    return make_error(ErrorCode::kInvalidArgument,
                      "eval: the baseline's vocabulary size differs from the model's");
  }
  if (baseline != nullptr) ctx = std::min(ctx, baseline->config().max_position_embeddings);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<EvalResult> results(models.size());
  for (EvalResult& r : results) {
    r.tokens = n;
    r.has_baseline = baseline != nullptr;
  }
  ForwardScratch scratch;
  std::vector<float> logits(static_cast<size_t>(ctx * vocab));
  std::vector<float> base_logits(baseline != nullptr ? logits.size() : 0);
  std::vector<PositionScores> scores;
  std::vector<KvCache> caches;
  caches.reserve(models.size());
  for (const LlamaModel* m : models) caches.emplace_back(m->config(), ctx);
  std::unique_ptr<KvCache> base_cache;
  if (baseline != nullptr) base_cache = std::make_unique<KvCache>(baseline->config(), ctx);

  int64_t total_windows = 0;
  for (int64_t begin = 0, prev_end = 0; prev_end < n; begin += options.stride) {
    prev_end = std::min(begin + ctx, n);
    ++total_windows;
  }
  std::vector<double> nll(models.size()), base_nll(models.size()), kl(models.size());
  std::vector<int64_t> agree(models.size());
  int64_t scored = 0, windows = 0, prev_end = 0;
  for (int64_t begin = 0; prev_end < n; begin += options.stride) {
    const int64_t end = std::min(begin + ctx, n);
    // Score the targets at positions [max(prev_end, begin + 1), end): each is predicted by the
    // logits of the position before it.
    const int64_t first_target = std::max(prev_end, begin + 1);
    const auto window = tokens.subspan(static_cast<size_t>(begin), static_cast<size_t>(end - begin));
    if (baseline != nullptr) {
      base_cache->clear();
      QGATE_TRY_STATUS(
          baseline->forward(window, *base_cache, scratch, pool, LogitsMode::kAll, base_logits));
    }
    const int64_t targets = end - first_target;
    for (size_t mi = 0; mi < models.size(); ++mi) {
      caches[mi].clear();
      QGATE_TRY_STATUS(
          models[mi]->forward(window, caches[mi], scratch, pool, LogitsMode::kAll, logits));
      scores.assign(static_cast<size_t>(targets), PositionScores{});
      // Each position's statistics read 49k logits two or three times; spread them over threads.
      pool.parallel_for(targets, 8, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t target = first_target + i;
          const int64_t row = target - 1 - begin;
          std::span<const float> x(logits.data() + row * vocab, static_cast<size_t>(vocab));
          const RowStats s = row_stats(x);
          const int32_t tok = tokens[static_cast<size_t>(target)];
          PositionScores& ps = scores[static_cast<size_t>(i)];
          ps.nll = -log_prob(x, s, tok);
          if (baseline != nullptr) {
            std::span<const float> b(base_logits.data() + row * vocab, static_cast<size_t>(vocab));
            const RowStats sb = row_stats(b);
            ps.base_nll = -log_prob(b, sb, tok);
            ps.kl = kl_divergence(b, sb, x, s);
            ps.agree = sb.argmax == s.argmax;
          }
        }
      });
      for (const PositionScores& ps : scores) {
        nll[mi] += ps.nll;
        base_nll[mi] += ps.base_nll;
        kl[mi] += ps.kl;
        agree[mi] += ps.agree ? 1 : 0;
      }
    }
    scored += targets;
    prev_end = end;
    ++windows;
    if (progress) progress(windows, total_windows);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (size_t mi = 0; mi < models.size(); ++mi) {
    EvalResult& r = results[mi];
    r.scored_tokens = scored;
    r.windows = windows;
    const auto count = static_cast<double>(scored);
    r.mean_nll = nll[mi] / count;
    r.perplexity = std::exp(r.mean_nll);
    if (baseline != nullptr) {
      r.baseline_mean_nll = base_nll[mi] / count;
      r.baseline_perplexity = std::exp(r.baseline_mean_nll);
      r.mean_kl = kl[mi] / count;
      r.top1_agreement = static_cast<double>(agree[mi]) / count;
    }
    r.seconds = seconds;
  }
  return results;
}

Result<EvalResult> evaluate(const LlamaModel& model, const LlamaModel* baseline,
                            std::span<const int32_t> tokens, const EvalOptions& options,
                            ThreadPool& pool, const EvalProgress& progress) {
  const LlamaModel* const models[1] = {&model};
  QGATE_ASSIGN_OR_RETURN(std::vector<EvalResult> results,
                         evaluate_many(models, baseline, tokens, options, pool, progress));
  return results[0];
}

}  // namespace qgate
