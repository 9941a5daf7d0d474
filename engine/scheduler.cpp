#include "engine/scheduler.h"

#include <algorithm>

#include "kernels/status.h"

namespace qgate {

int64_t StepPlan::batched_tokens() const {
  int64_t n = 0;
  for (const ScheduledChunk& c : running) n += c.tokens;
  for (const ScheduledChunk& c : admitted) n += c.tokens;
  return n;
}

StepPlan plan_step(std::span<const SequenceView> running, std::span<const SequenceView> waiting,
                   int64_t free_blocks, const SchedulerLimits& limits) {
  QGATE_CHECK(limits.block_tokens > 0 && limits.max_running > 0 &&
                  limits.max_batched_tokens >= limits.max_running,
              "scheduler: invalid limits");
  const int64_t bt = limits.block_tokens;
  auto blocks_for = [bt](int64_t tokens) { return (tokens + bt - 1) / bt; };

  StepPlan plan;
  int64_t budget = limits.max_batched_tokens;
  int64_t free = free_blocks;
  auto end = static_cast<int64_t>(running.size());  // running[end..) were preempted
  int64_t i = 0;
  while (i < end && budget > 0) {
    const SequenceView& s = running[static_cast<size_t>(i)];
    QGATE_CHECK(s.computed < s.tokens, "scheduler: a running sequence has nothing to compute");
    // One token stays reserved for each running sequence behind this one.
    const int64_t reserve = end - i - 1;
    int64_t chunk = std::min(s.tokens - s.computed, std::max<int64_t>(1, budget - reserve));
    chunk = std::min(chunk, budget);
    int64_t need = std::max<int64_t>(0, blocks_for(s.computed + chunk) - s.blocks);
    if (need > free) {
      const int64_t fit = (s.blocks + free) * bt - s.computed;
      if (fit >= 1) {
        chunk = std::min(chunk, fit);
        need = std::max<int64_t>(0, blocks_for(s.computed + chunk) - s.blocks);
      } else {
        // Preempt the youngest sequence not yet given work, possibly this one, and retry.
        const int64_t victim = end - 1;
        plan.preempted.push_back(victim);
        free += running[static_cast<size_t>(victim)].freeable;
        --end;
        continue;
      }
    }
    free -= need;
    budget -= chunk;
    plan.running.push_back({i, chunk});
    ++i;
  }

  if (!plan.preempted.empty()) return plan;  // memory is short: let the running ones finish first
  int64_t slots = limits.max_running - end;
  for (size_t j = 0; j < waiting.size() && slots > 0 && budget > 0; ++j) {
    const SequenceView& w = waiting[j];
    const int64_t chunk = std::min(w.tokens - w.computed, budget);
    const int64_t need = std::max<int64_t>(0, blocks_for(w.computed + chunk) - w.blocks);
    // Keep one block per running sequence in hand for its next decode steps, so an admission does
    // not force a preemption on the very next step.
    const int64_t headroom = limits.max_running - slots;
    if (need + headroom > free) break;
    plan.admitted.push_back({static_cast<int64_t>(j), chunk});
    free -= need;
    budget -= chunk;
    --slots;
  }
  return plan;
}

}  // namespace qgate
