#include "gateway/shadow_scorer.h"

#include <spdlog/spdlog.h>

#include <utility>

#include "kernels/cpu/thread_pool.h"

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>
#endif

namespace qgate {

namespace {

// Puts the calling thread at the bottom of the CPU scheduler. Threads it creates afterwards
// inherit this (glibc's default PTHREAD_INHERIT_SCHED; Linux nice values are per thread and copied
// at clone), which is why the scoring pool is built only after this call.
//
// Why SCHED_IDLE: a SCHED_IDLE thread has CFS weight 3 against 1024 for a nice-0 serving thread
// and never preempts one, while a serving thread that wakes up (a decode step, a new request)
// preempts it at once. So scoring soaks up idle cycles and gives the core back immediately.
// Unprivileged threads may always enter SCHED_IDLE, but container seccomp profiles sometimes refuse
// sched_setscheduler; nice 19 (weight 15) is the nearest substitute.
//
// What priority cannot do: on an SMT core the scoring thread still shares execution units with a
// serving thread on the sibling hyperthread, and each forward pass streams the baseline's weights
// through the same memory bus as decoding. The gateway's sample ratio bounds that cost.
void lower_thread_priority() {
#if defined(__linux__)
  sched_param param{};
  param.sched_priority = 0;  // the only value SCHED_IDLE accepts
  const int rc = pthread_setschedparam(pthread_self(), SCHED_IDLE, &param);
  if (rc == 0) return;
  if (setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 19) == 0) {
    spdlog::warn("shadow scoring: SCHED_IDLE refused (error {}); running at nice 19 instead", rc);
    return;
  }
  spdlog::warn("shadow scoring: could not lower the scoring thread's CPU priority; it competes "
               "with serving threads at normal priority");
#endif
}

// Checked before the thread starts: it indexes the ring by queue_capacity.
ShadowScorerOptions checked(ShadowScorerOptions options) {
  QGATE_CHECK(options.queue_capacity >= 1, "ShadowScorer: queue_capacity must be >= 1");
  QGATE_CHECK(options.threads >= 1, "ShadowScorer: threads must be >= 1");
  return options;
}

Error stopped_error() {
  return make_error(ErrorCode::kCancelled, "shadow scoring stopped before this job was scored");
}

}  // namespace

ShadowScorer::ShadowScorer(ShadowScorerOptions options, Callback on_done)
    : options_(checked(options)),
      on_done_(std::move(on_done)),
      slots_(options_.queue_capacity),
      thread_([this](std::stop_token stop) { run(std::move(stop)); }) {
  QGATE_CHECK(on_done_ != nullptr, "ShadowScorer: no callback");
}

ShadowScorer::~ShadowScorer() {
  stop();
  thread_.join();
}

bool ShadowScorer::offer(ShadowJob job) {
  QGATE_CHECK(job.baseline != nullptr, "ShadowScorer::offer: job without a baseline model");
  {
    std::lock_guard lock(producer_mu_);
    if (stopped_) return false;
    const uint64_t tail = tail_.load(std::memory_order_relaxed);  // only written under the lock
    if (tail - head_.load(std::memory_order_acquire) == slots_.size()) return false;
    // A move: nothing allocates while the lock is held.
    slots_[tail % slots_.size()].emplace(std::move(job));
    tail_.store(tail + 1, std::memory_order_release);
  }
  // uint32_t so that libstdc++ waits on it with a bare futex: a notify is at most one
  // non-blocking FUTEX_WAKE, with no lock the scoring thread could be holding.
  signal_.fetch_add(1, std::memory_order_release);
  signal_.notify_one();
  return true;
}

void ShadowScorer::stop() {
  {
    std::lock_guard lock(producer_mu_);
    stopped_ = true;
  }
  // After the flag: once the scoring thread sees the request, every job that got in is visible
  // to it and no other will come, so it can drain the queue and exit.
  thread_.request_stop();
  signal_.fetch_add(1, std::memory_order_release);
  signal_.notify_one();
}

size_t ShadowScorer::queue_depth() const {
  // head first: it never passes tail, so the difference cannot go negative.
  const uint64_t head = head_.load(std::memory_order_acquire);
  const uint64_t tail = tail_.load(std::memory_order_acquire);
  return static_cast<size_t>(tail - head);
}

std::optional<ShadowJob> ShadowScorer::pop() {
  const uint64_t head = head_.load(std::memory_order_relaxed);  // only this thread writes it
  if (head == tail_.load(std::memory_order_acquire)) return std::nullopt;
  std::optional<ShadowJob>& slot = slots_[head % slots_.size()];
  std::optional<ShadowJob> job = std::move(slot);
  slot.reset();
  head_.store(head + 1, std::memory_order_release);  // hands the slot back to the producers
  return job;
}

void ShadowScorer::run(std::stop_token stop) {
  if (options_.idle_priority) lower_thread_priority();
  ThreadPool pool(options_.threads);
  ScoringScratch scratch;
  for (;;) {
    // Read before looking at the queue: a push or stop after this read changes the value, so the
    // wait below returns at once instead of missing it.
    const uint32_t seen = signal_.load(std::memory_order_acquire);
    if (std::optional<ShadowJob> job = pop()) {
      const Result<ContinuationScore> result =
          stop.stop_requested()
              ? Result<ContinuationScore>(stopped_error())
              : score_continuation(*job->baseline, job->prompt, job->completion, pool, scratch,
                                   stop);
      on_done_(*job, result);
      continue;
    }
    if (stop.stop_requested()) return;
    signal_.wait(seen, std::memory_order_acquire);
  }
}

}  // namespace qgate
