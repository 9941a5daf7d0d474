#include "engine/teacher_forcing.h"

#include <algorithm>
#include <string>

#include "engine/log_softmax.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {

namespace {

// The forward pass's own prefill chunk: the prompt runs in pieces of this size (so `stop` is
// honoured between them) without reading the weights more often than one forward() call would.
// Each piece computes one LM-head row nobody reads, under 1% of the piece's work.
constexpr int64_t kPromptChunk = 128;
// Continuation tokens per forward() call: bounds the logits buffer to 64 rows (12.6 MB for a
// 49k vocabulary) while keeping enough rows per matmul that the weights are read rarely.
constexpr int64_t kContinuationChunk = 64;
// KV caches grow in steps of this many positions, so jobs of slowly increasing length do not
// rebuild the cache each time.
constexpr int64_t kCacheStep = 256;

Status check_tokens(std::span<const int32_t> tokens, int64_t vocab, const char* what) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      return make_error(ErrorCode::kInvalidArgument,
                        std::string("score_continuation: ") + what + " token " + std::to_string(i) +
                            " has id " + std::to_string(tokens[i]) +
                            ", outside the model's vocabulary of " + std::to_string(vocab));
    }
  }
  return Status::Ok();
}

Error cancelled() {
  return make_error(ErrorCode::kCancelled, "score_continuation: stopped before the end");
}

// A cleared cache of this model's shape holding at least `tokens` positions.
KvCache& acquire_cache(ScoringScratch& s, const LlamaConfig& config, int64_t tokens) {
  const bool same_shape = s.cache != nullptr && s.cache_layers == config.num_layers &&
                          s.cache_kv_dim == config.kv_dim();
  if (!same_shape || s.cache->capacity() < tokens) {
    const int64_t capacity =
        std::min((tokens + kCacheStep - 1) / kCacheStep * kCacheStep,
                 std::max(tokens, config.max_position_embeddings));
    s.cache.reset();  // free the old one first: two large caches need not coexist
    s.cache = std::make_unique<KvCache>(config, capacity);
    s.cache_layers = config.num_layers;
    s.cache_kv_dim = config.kv_dim();
  }
  s.cache->clear();
  return *s.cache;
}

}  // namespace

Result<ContinuationScore> score_continuation(const LlamaModel& model,
                                             std::span<const int32_t> prompt,
                                             std::span<const int32_t> continuation,
                                             ThreadPool& pool, ScoringScratch& scratch,
                                             std::stop_token stop) {
  const LlamaConfig& config = model.config();
  if (prompt.empty()) {
    return make_error(ErrorCode::kInvalidArgument, "score_continuation: the prompt is empty");
  }
  if (continuation.empty()) {
    return make_error(ErrorCode::kInvalidArgument, "score_continuation: the continuation is empty");
  }
  const auto total = static_cast<int64_t>(prompt.size() + continuation.size());
  if (total > config.max_position_embeddings) {
    return make_error(ErrorCode::kOutOfRange,
                      "score_continuation: prompt (" + std::to_string(prompt.size()) +
                          ") + continuation (" + std::to_string(continuation.size()) +
                          ") tokens exceed the model's context of " +
                          std::to_string(config.max_position_embeddings));
  }
  // forward() checks the ids it runs, but the continuation's last token is only looked up in the
  // logits, never run; check everything here so the message says which sequence is wrong.
  QGATE_TRY_STATUS(check_tokens(prompt, config.vocab_size, "prompt"));
  QGATE_TRY_STATUS(check_tokens(continuation, config.vocab_size, "continuation"));

  const int64_t vocab = config.vocab_size;
  const auto n = static_cast<int64_t>(continuation.size());
  // The last continuation token is scored but never run: nothing reads the logits after it.
  KvCache& cache = acquire_cache(scratch, config, total - 1);
  scratch.logits.resize(static_cast<size_t>(std::min(kContinuationChunk, n) * vocab));
  ContinuationScore score;
  score.token_nll.resize(static_cast<size_t>(n));
  std::vector<uint8_t> agree(static_cast<size_t>(n), 0);

  // Scores continuation[first, first + rows) from the logits rows [0, rows) of the buffer.
  // Each row's statistics read the whole vocabulary; rows are independent, so they spread over
  // the pool.
  auto score_rows = [&](int64_t first, int64_t rows) {
    pool.parallel_for(rows, 4, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const std::span<const float> x(scratch.logits.data() + r * vocab,
                                       static_cast<size_t>(vocab));
        const RowStats s = row_stats(x);
        const auto i = static_cast<size_t>(first + r);
        score.token_nll[i] = static_cast<float>(-log_prob(x, s, continuation[i]));
        agree[i] = s.argmax == continuation[i] ? 1 : 0;
      }
    });
  };

  for (size_t off = 0; off < prompt.size(); off += kPromptChunk) {
    if (stop.stop_requested()) return cancelled();
    const auto piece = prompt.subspan(off, std::min<size_t>(kPromptChunk, prompt.size() - off));
    QGATE_TRY_STATUS(
        model.forward(piece, cache, scratch.forward, pool, LogitsMode::kLast, scratch.logits));
  }
  score_rows(0, 1);
  // continuation[i] (i < n - 1) run at its position yields the logits that score continuation[i+1].
  for (int64_t off = 0; off < n - 1; off += kContinuationChunk) {
    if (stop.stop_requested()) return cancelled();
    const int64_t len = std::min(kContinuationChunk, n - 1 - off);
    QGATE_TRY_STATUS(model.forward(continuation.subspan(static_cast<size_t>(off),
                                                        static_cast<size_t>(len)),
                                   cache, scratch.forward, pool, LogitsMode::kAll, scratch.logits));
    score_rows(off + 1, len);
  }
  for (uint8_t a : agree) score.top1_agreements += a;
  return score;
}

}  // namespace qgate
