// Teacher-forced scoring: how likely a model (the baseline) finds a given continuation of a
// prompt, token by token, and whether each token is the one it would have picked greedily. The
// gateway's shadow scoring runs this on responses of quantized variants to measure, online, how
// far they drift from the baseline (docs/METRICS.md, "Online shadow scoring").
//
// Threading and lifetime: score_continuation runs on the calling thread plus `pool`; the model is
// only read and may be shared. A ScoringScratch belongs to one caller at a time and may be reused
// across calls and across models.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <stop_token>
#include <vector>

#include "engine/llama_model.h"
#include "kernels/status.h"

namespace qgate {

class ThreadPool;

struct ContinuationScore {
  // -log p(continuation[i] | prompt, continuation[<i]) under the model, in nats.
  std::vector<float> token_nll;
  // Positions where continuation[i] is the argmax of the model's logits (lowest id on ties, as
  // greedy sampling picks).
  int64_t top1_agreements = 0;
};

// Memory a scoring thread keeps between calls so steady-state scoring does not allocate: a KV
// cache grown to the longest sequence seen (rebuilt when a model of another shape comes), the
// forward pass's activations, and the logits of one chunk of continuation tokens. Its size is that
// of the largest job scored so far. Filled in by score_continuation; callers only create it.
struct ScoringScratch {
  std::unique_ptr<KvCache> cache;
  int64_t cache_layers = 0;  // shape the cache was built for
  int64_t cache_kv_dim = 0;
  ForwardScratch forward;
  std::vector<float> logits;
};

// Runs `prompt` with logits for its last token only, then `continuation` minus its last token with
// logits for every token, so the LM head runs only where a score needs it. Continuation tokens run
// in chunks, which bounds the logits buffer and lets `stop` interrupt a long job between chunks.
//
// Errors: InvalidArgument for an empty prompt or continuation or a token id outside the model's
// vocabulary (naming which and where); OutOfRange when prompt + continuation exceed the model's
// context; Cancelled when `stop` is requested before the scoring finishes.
Result<ContinuationScore> score_continuation(const LlamaModel& model,
                                             std::span<const int32_t> prompt,
                                             std::span<const int32_t> continuation,
                                             ThreadPool& pool, ScoringScratch& scratch,
                                             std::stop_token stop = {});

}  // namespace qgate
