#include "engine/generator.h"

#include <algorithm>
#include <chrono>

#include "engine/stop_matcher.h"
#include "engine/tokenizer.h"

namespace qgate {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
  }
  return "?";
}

Status GenerationOptions::validate() const {
  if (max_tokens < 1) {
    return make_error(ErrorCode::kInvalidArgument, "max_tokens must be at least 1");
  }
  QGATE_TRY_STATUS(StopMatcher::validate(stop));
  return sampling.validate();
}

Generator::Generator(const LlamaModel& model, const Tokenizer& tokenizer, ThreadPool& pool,
                     int64_t context_tokens, KvDType kv_dtype)
    : model_(model),
      tokenizer_(tokenizer),
      pool_(pool),
      cache_(model.config(), context_tokens, kv_dtype),
      logits_(static_cast<size_t>(model.config().vocab_size)) {}

Result<GenerationResult> Generator::generate(std::span<const int32_t> prompt,
                                             const GenerationOptions& options,
                                             const TextCallback& on_text, std::stop_token stop) {
  QGATE_TRY_STATUS(options.validate());
  if (prompt.empty()) return make_error(ErrorCode::kInvalidArgument, "the prompt has no tokens");
  if (static_cast<int64_t>(prompt.size()) >= cache_.capacity()) {
    return make_error(ErrorCode::kOutOfRange,
                      "the prompt has " + std::to_string(prompt.size()) +
                          " tokens; the context holds " + std::to_string(cache_.capacity()));
  }
  GenerationResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());

  // Reuse the KV of the longest common prefix, but always recompute at least the last prompt
  // token: its logits are what the first sample needs.
  size_t common = 0;
  while (common < cached_tokens_.size() && common < prompt.size() &&
         cached_tokens_[common] == prompt[common]) {
    ++common;
  }
  common = std::min(common, prompt.size() - 1);
  cache_.truncate(static_cast<int64_t>(common));
  cached_tokens_.assign(prompt.begin(), prompt.begin() + static_cast<std::ptrdiff_t>(common));
  result.cached_prompt_tokens = static_cast<int64_t>(common);

  auto t0 = std::chrono::steady_clock::now();
  const auto fresh = prompt.subspan(common);
  if (Status st = model_.forward(fresh, cache_, scratch_, pool_, LogitsMode::kLast, logits_);
      !st.ok()) {
    cache_.truncate(static_cast<int64_t>(common));
    return st.error();
  }
  cached_tokens_.insert(cached_tokens_.end(), fresh.begin(), fresh.end());
  result.prefill_seconds = seconds_since(t0);

  Sampler sampler(options.sampling, prompt);
  IncrementalDecoder decoder(tokenizer_, /*skip_special=*/true);
  StopMatcher matcher(options.stop);
  const auto& stop_ids = tokenizer_.stop_ids();
  bool cancelled = false;
  auto emit = [&](std::string_view piece) {
    if (piece.empty()) return;
    result.text.append(piece);
    if (on_text && !on_text(piece)) cancelled = true;
  };

  t0 = std::chrono::steady_clock::now();
  result.finish_reason = FinishReason::kLength;
  for (int64_t i = 0; i < options.max_tokens; ++i) {
    if (stop.stop_requested() || cancelled) {
      result.finish_reason = FinishReason::kCancelled;
      break;
    }
    const int32_t token = sampler.sample(logits_);
    result.tokens.push_back(token);
    if (!options.ignore_eos &&
        std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
      result.finish_reason = FinishReason::kStop;
      break;
    }
    const StopMatcher::Output out = matcher.push(decoder.push(token));
    emit(out.text);
    if (out.stopped) {
      result.finish_reason = FinishReason::kStop;
      break;
    }
    if (i + 1 == options.max_tokens) break;
    if (cache_.size() + 1 >= cache_.capacity()) break;  // context full: finish as "length"
    const int32_t next[1] = {token};
    if (Status st = model_.forward(next, cache_, scratch_, pool_, LogitsMode::kLast, logits_);
        !st.ok()) {
      return st.error();
    }
    cached_tokens_.push_back(token);
  }
  if (result.finish_reason != FinishReason::kStop || !matcher.stopped()) {
    // Text held back for a possible stop string or an unfinished character is final now.
    const StopMatcher::Output out = matcher.push(decoder.flush());
    emit(out.text);
    if (!out.stopped) emit(matcher.flush());
  }
  result.decode_seconds = seconds_since(t0);
  return result;
}

}  // namespace qgate
