// plan_step(): the continuous-batching policy on counts alone — decode first, chunked prefill,
// budgets, admission order, preemption of the youngest, and a simulation that drives many steps
// against a block pool and checks the invariants on every one.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <vector>

#include "engine/scheduler.h"

namespace qgate {
namespace {

SequenceView decoding(int64_t tokens, int64_t block_tokens = 16) {
  const int64_t computed = tokens - 1;
  const int64_t blocks = (computed + block_tokens - 1) / block_tokens;
  return {tokens, computed, blocks, blocks};
}

SequenceView fresh(int64_t prompt) { return {prompt, 0, 0, 0}; }

TEST(Scheduler, DecodesEveryRunningSequenceAndAdmitsWaitingOnes) {
  const SchedulerLimits limits{4, 64, 16};
  const std::vector<SequenceView> running = {decoding(20), decoding(33)};
  const std::vector<SequenceView> waiting = {fresh(10), fresh(12), fresh(5)};
  const StepPlan p = plan_step(running, waiting, 100, limits);
  EXPECT_TRUE(p.preempted.empty());
  ASSERT_EQ(p.running.size(), 2u);
  EXPECT_EQ(p.running[0].tokens, 1);
  EXPECT_EQ(p.running[1].tokens, 1);
  // Two slots left: the first two waiting join with their whole prompts.
  ASSERT_EQ(p.admitted.size(), 2u);
  EXPECT_EQ(p.admitted[0].index, 0);
  EXPECT_EQ(p.admitted[0].tokens, 10);
  EXPECT_EQ(p.admitted[1].tokens, 12);
  EXPECT_EQ(p.batched_tokens(), 24);
}

TEST(Scheduler, LongPrefillIsChunkedSoDecodersBehindItStillRun) {
  const SchedulerLimits limits{8, 32, 16};
  // The oldest sequence is prefilling a 100-token prompt; three decoders are behind it.
  const std::vector<SequenceView> running = {fresh(100), decoding(40), decoding(50), decoding(60)};
  const StepPlan p = plan_step(running, {}, 100, limits);
  ASSERT_EQ(p.running.size(), 4u);
  EXPECT_EQ(p.running[0].tokens, 32 - 3);
  for (size_t i = 1; i < 4; ++i) EXPECT_EQ(p.running[i].tokens, 1);
  EXPECT_EQ(p.batched_tokens(), 32);
}

TEST(Scheduler, AdmittedPromptTakesWhatIsLeftOfTheBudget) {
  const SchedulerLimits limits{8, 20, 4};
  const StepPlan p = plan_step(std::vector<SequenceView>{decoding(9, 4)},
                               std::vector<SequenceView>{fresh(50), fresh(3)}, 100, limits);
  ASSERT_EQ(p.admitted.size(), 1u);  // the budget is spent on the first waiting prompt
  EXPECT_EQ(p.admitted[0].tokens, 19);
}

TEST(Scheduler, WaitingQueueIsNotSkipped) {
  const SchedulerLimits limits{8, 512, 16};
  // The head of the queue needs 4 blocks, only 2 are free: nobody behind it jumps ahead.
  const StepPlan p = plan_step({}, std::vector<SequenceView>{fresh(64), fresh(8)}, 2, limits);
  EXPECT_TRUE(p.admitted.empty());
}

TEST(Scheduler, AdmissionKeepsABlockInHandPerRunningSequence) {
  const SchedulerLimits limits{8, 512, 16};
  const std::vector<SequenceView> running = {decoding(20), decoding(20)};
  // The decoders need no new block now; a 16-token prompt needs 1 block, 2 are kept in hand.
  EXPECT_TRUE(plan_step(running, std::vector<SequenceView>{fresh(16)}, 2, limits).admitted.empty());
  EXPECT_EQ(plan_step(running, std::vector<SequenceView>{fresh(16)}, 3, limits).admitted.size(), 1u);
}

TEST(Scheduler, RespectsMaxRunning) {
  const SchedulerLimits limits{2, 512, 16};
  const StepPlan p = plan_step(std::vector<SequenceView>{decoding(5)},
                               std::vector<SequenceView>{fresh(4), fresh(4)}, 100, limits);
  EXPECT_EQ(p.admitted.size(), 1u);
}

TEST(Scheduler, PrefillChunkShrinksToTheFreeBlocksBeforeAnyoneIsPreempted) {
  const SchedulerLimits limits{4, 512, 16};
  // Prefilling 100 tokens with 2 free blocks: runs 32 tokens now.
  const StepPlan p = plan_step(std::vector<SequenceView>{fresh(100), decoding(20)}, {}, 2, limits);
  EXPECT_TRUE(p.preempted.empty());
  ASSERT_EQ(p.running.size(), 2u);
  EXPECT_EQ(p.running[0].tokens, 32);
  EXPECT_EQ(p.running[1].tokens, 1);  // its block still has room
}

TEST(Scheduler, PreemptsTheYoungestWhenADecoderNeedsABlock) {
  const SchedulerLimits limits{4, 512, 16};
  // Both decoders' next token starts a new block (computed = 32); no block is free.
  const std::vector<SequenceView> running = {decoding(33), decoding(33), decoding(20)};
  const StepPlan p = plan_step(running, std::vector<SequenceView>{fresh(3)}, 0, limits);
  ASSERT_EQ(p.preempted.size(), 1u);
  EXPECT_EQ(p.preempted[0], 2);  // the youngest frees 2 blocks: enough for both others
  ASSERT_EQ(p.running.size(), 2u);
  EXPECT_EQ(p.running[0].index, 0);
  EXPECT_EQ(p.running[1].index, 1);
  EXPECT_TRUE(p.admitted.empty());  // no admissions in a step that had to preempt
}

TEST(Scheduler, TheYoungestPreemptsItselfWhenNothingYoungerIsLeft) {
  const SchedulerLimits limits{4, 512, 16};
  const std::vector<SequenceView> running = {decoding(20), decoding(33)};
  const StepPlan p = plan_step(running, {}, 0, limits);
  ASSERT_EQ(p.preempted.size(), 1u);
  EXPECT_EQ(p.preempted[0], 1);
  ASSERT_EQ(p.running.size(), 1u);
  EXPECT_EQ(p.running[0].index, 0);
}

TEST(Scheduler, SharedBlocksAreNotCountedAsFreedByPreemption) {
  const SchedulerLimits limits{4, 512, 16};
  // The youngest holds 2 blocks but shares both (prefix cache): preempting it frees nothing, so
  // the next younger one goes too.
  std::vector<SequenceView> running = {decoding(33), decoding(20), decoding(20)};
  running[2].freeable = 0;
  const StepPlan p = plan_step(running, {}, 0, limits);
  ASSERT_EQ(p.preempted.size(), 2u);
  EXPECT_EQ(p.preempted[0], 2);
  EXPECT_EQ(p.preempted[1], 1);
}

// Drives the policy like the worker does, against a simple block counter, until every sequence
// has generated its tokens. Checks on every step: budgets hold, blocks never go negative, the
// oldest running sequence always progresses, and everything finishes.
TEST(Scheduler, SimulationFinishesEverythingWithinBudgets) {
  const SchedulerLimits limits{6, 40, 8};
  const int64_t total_blocks = 24;
  struct Seq {
    int64_t prompt, gen_target, tokens, computed = 0, blocks = 0, generated = 0, arrival;
  };
  std::deque<Seq> waiting;
  for (int64_t i = 0; i < 20; ++i) {
    const int64_t prompt = 5 + (i * 37) % 60;
    waiting.push_back({prompt, 10 + (i * 13) % 30, prompt, 0, 0, 0, i});
  }
  std::vector<Seq> running;
  int64_t free = total_blocks, steps = 0, finished = 0, preemptions = 0;
  auto blocks_for = [&](int64_t t) { return (t + limits.block_tokens - 1) / limits.block_tokens; };
  while (!running.empty() || !waiting.empty()) {
    ASSERT_LT(++steps, 5000) << "no progress";
    std::vector<SequenceView> rv, wv;
    for (const Seq& s : running) rv.push_back({s.tokens, s.computed, s.blocks, s.blocks});
    for (const Seq& s : waiting) wv.push_back({s.tokens, 0, 0, 0});
    const StepPlan p = plan_step(rv, wv, free, limits);
    ASSERT_LE(p.batched_tokens(), limits.max_batched_tokens);
    ASSERT_FALSE(p.running.empty() && p.admitted.empty()) << "idle step with work pending";
    std::vector<Seq> admitted;
    for (const ScheduledChunk& c : p.admitted) admitted.push_back(waiting[static_cast<size_t>(c.index)]);
    for (size_t i = 0; i < p.admitted.size(); ++i) waiting.pop_front();
    std::vector<int64_t> chunk_of(running.size(), -1);
    for (const ScheduledChunk& c : p.running) chunk_of[static_cast<size_t>(c.index)] = c.tokens;
    for (int64_t idx : p.preempted) {
      ASSERT_EQ(chunk_of[static_cast<size_t>(idx)], -1) << "preempted and scheduled";
      chunk_of[static_cast<size_t>(idx)] = -2;
      Seq s = running[static_cast<size_t>(idx)];
      free += s.blocks;
      s.blocks = 0;
      s.computed = 0;
      ++preemptions;
      waiting.push_front(s);
    }
    // Every sequence that was kept gets work; the oldest one always does.
    std::vector<std::pair<Seq, int64_t>> next;
    for (size_t i = 0; i < running.size(); ++i) {
      if (chunk_of[i] == -2) continue;
      ASSERT_GT(chunk_of[i], 0) << "running sequence " << i << " was left out";
      next.emplace_back(running[i], chunk_of[i]);
    }
    for (size_t i = 0; i < admitted.size(); ++i) next.emplace_back(admitted[i], p.admitted[i].tokens);
    ASSERT_LE(static_cast<int64_t>(next.size()), limits.max_running);
    running.clear();
    for (auto& [s, n] : next) {
      const int64_t need = blocks_for(s.computed + n) - s.blocks;
      if (need > 0) {
        free -= need;
        s.blocks += need;
      }
      ASSERT_GE(free, 0);
      s.computed += n;
      if (s.computed == s.tokens) {  // a token is sampled
        ++s.generated;
        if (s.generated == s.gen_target) {
          free += s.blocks;
          ++finished;
          continue;
        }
        ++s.tokens;
      }
      running.push_back(s);
    }
    std::sort(running.begin(), running.end(),
              [](const Seq& a, const Seq& b) { return a.arrival < b.arrival; });
  }
  EXPECT_EQ(finished, 20);
  EXPECT_EQ(free, total_blocks);
  EXPECT_GT(preemptions, 0) << "the pool is meant to be too small for everyone at once";
}

}  // namespace
}  // namespace qgate
