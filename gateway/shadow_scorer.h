// Online shadow scoring off the request path: sampled responses are queued here and re-scored,
// teacher-forced, by their route's baseline model on one background thread at the lowest CPU
// priority (docs/METRICS.md, "Online shadow scoring"). No metrics or HTTP here; the callback
// reports each result and the caller records it.
//
// The rule is that user traffic is never slowed:
//  - offer() never waits for the scoring thread. It takes a mutex shared only with other offering
//    (serving) threads; the scoring thread runs at idle priority and could be descheduled for long
//    stretches on a busy machine, so it never holds a lock that offer() needs. The queue is bounded
//    and a full queue drops the job (offer() returns false; the caller counts a drop).
//  - The scoring thread and its pool's workers run under SCHED_IDLE (or nice 19 where that is
//    refused), so the kernel gives them only CPU time no serving thread wants.
//
// Threading and lifetime:
//  - offer(), stop() and queue_depth() may be called from any number of threads at once, up to
//    the destructor, which must not overlap with any of them (as for any object).
//  - The callback runs on the scoring thread, one job at a time, and must not throw. What it
//    captures must outlive the ShadowScorer.
//  - Every job offer() accepted gets exactly one callback: its score, the scoring error, or
//    Cancelled when stop() (or the destructor) came before its scoring ended. stop() interrupts
//    the job being scored between chunks of tokens, so shutdown waits for at most one chunk's
//    forward pass plus the callbacks of what was queued.
//  - A queued job's `baseline` shared_ptr keeps that model alive until the job's callback returns,
//    so a routing change may unload the model meanwhile.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/llama_model.h"
#include "engine/teacher_forcing.h"
#include "kernels/status.h"

namespace qgate {

struct ShadowJob {
  std::string route, variant;
  std::shared_ptr<const LlamaModel> baseline;  // the model that scores; must not be null
  std::vector<int32_t> prompt, completion;
};

struct ShadowScorerOptions {
  size_t queue_capacity = 16;  // >= 1
  int threads = 1;             // >= 1; the scoring thread itself counts as one
  bool idle_priority = true;   // false only for tests or machines with cores to spare
};

class ShadowScorer {
 public:
  using Callback = std::function<void(const ShadowJob&, const Result<ContinuationScore>&)>;

  // Starts the scoring thread. Options come from a validated config (out-of-range values are a
  // programming error here).
  ShadowScorer(ShadowScorerOptions options, Callback on_done);
  // stop(), then waits for the scoring thread to report the remaining jobs and exit.
  ~ShadowScorer();
  ShadowScorer(const ShadowScorer&) = delete;
  ShadowScorer& operator=(const ShadowScorer&) = delete;

  // Queues a job unless the queue is full or the scorer is stopped (then returns false and drops
  // it). Never waits for scoring.
  bool offer(ShadowJob job);
  // Refuses further jobs, cancels the queued ones and the one being scored, and returns at once.
  void stop();
  // Jobs waiting to be scored (not counting the one being scored).
  size_t queue_depth() const;

 private:
  std::optional<ShadowJob> pop();  // scoring thread only
  void run(std::stop_token stop);

  const ShadowScorerOptions options_;
  const Callback on_done_;
  // A ring with one consumer (the scoring thread) that never locks: producers serialize on
  // producer_mu_; a slot is handed over by the release store of tail_ (filled) or head_ (emptied).
  std::vector<std::optional<ShadowJob>> slots_;
  std::atomic<uint64_t> head_{0};  // next slot to pop; written by the scoring thread
  std::atomic<uint64_t> tail_{0};  // next slot to fill; written under producer_mu_
  std::mutex producer_mu_;
  bool stopped_ = false;  // guarded by producer_mu_: no job enters once it is set
  // Bumped after each push and by stop(); the scoring thread sleeps on it with atomic wait, which
  // needs no lock shared with the producers.
  std::atomic<uint32_t> signal_{0};
  std::jthread thread_;  // last: starts after everything above exists, joins before it goes
};

}  // namespace qgate
