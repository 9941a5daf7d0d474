// The batch-building policy of the engine worker, as a pure function of counts: which sequences
// run in the next step and how many tokens each, which are preempted, which waiting ones join.
//
// Policy (after vLLM's scheduler): running sequences are served oldest first. Each gets all its
// pending tokens (1 when decoding; the rest of the prompt, or of a recomputation, when prefilling)
// up to the step's token budget, minus one token held back for every running sequence behind it,
// so a long prefill is cut into chunks and never stalls the streams that are decoding. When the KV
// blocks a sequence needs are not free, a prefill chunk is first shortened to what fits; if not
// even one token fits, the youngest running sequence is preempted (all its blocks released; it is
// recomputed later) and, when the sequence itself is the youngest, it is the one preempted. Then,
// if nothing was preempted, waiting sequences join in queue order (no skipping, so a long prompt
// cannot be starved by short ones) while there are slots, budget and free blocks for their first
// chunk.
//
// The worker applies the plan; keeping the policy here lets tests cover it without a model.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace qgate {

struct SchedulerLimits {
  int64_t max_running = 16;
  int64_t max_batched_tokens = 512;  // must be >= max_running
  int64_t block_tokens = 16;
};

struct SequenceView {
  int64_t tokens = 0;    // tokens known: prompt plus generated
  int64_t computed = 0;  // tokens whose keys/values are in the cache (0 while waiting)
  int64_t blocks = 0;    // blocks held
  int64_t freeable = 0;  // blocks that preempting it would return to the pool (held by it alone)
};

struct ScheduledChunk {
  int64_t index = 0;   // into running, or into waiting for admitted ones
  int64_t tokens = 0;  // tokens to run from `computed`
};

struct StepPlan {
  std::vector<int64_t> preempted;        // running indices, youngest first
  std::vector<ScheduledChunk> running;   // chunks of running sequences that were kept
  std::vector<ScheduledChunk> admitted;  // waiting[0 .. admitted.size()) join, in order
  int64_t batched_tokens() const;
};

// running: in arrival order, oldest first; each has pending work (computed < tokens).
// waiting: queue order. free_blocks: blocks the cache can hand out now.
StepPlan plan_step(std::span<const SequenceView> running, std::span<const SequenceView> waiting,
                   int64_t free_blocks, const SchedulerLimits& limits);

}  // namespace qgate
