// The shadow scorer's queue and thread on the real model: results equal direct teacher-forced
// scoring, the thread runs at idle priority, a full queue refuses without blocking, stop and the
// destructor cancel what is queued, and every accepted job is reported exactly once when several
// threads offer at once. Jobs are held in place with a callback gate, never with sleeps.
#include "gateway/shadow_scorer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/thread_pool.h"
#include "tests/engine/model_fixture.h"

#if defined(__linux__)
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>
#endif

namespace qgate {
namespace {

// A deadline so that a broken scorer fails the test instead of hanging it; never reached when
// the scorer works.
constexpr auto kDeadline = std::chrono::seconds(120);

struct Report {
  std::string route, variant;
  bool ok = false;
  ErrorCode code = ErrorCode::kInternal;
  ContinuationScore score;
  std::thread::id thread;
  bool idle_priority = false;
};

bool running_at_idle_priority() {
#if defined(__linux__)
  if (sched_getscheduler(0) == SCHED_IDLE) return true;
  errno = 0;
  return getpriority(PRIO_PROCESS, static_cast<id_t>(gettid())) == 19 && errno == 0;
#else
  return true;
#endif
}

// Collects callback reports; optionally holds the first callback until released.
class Collector {
 public:
  explicit Collector(bool hold_first = false) : holding_(hold_first) {}

  ShadowScorer::Callback callback() {
    return [this](const ShadowJob& job, const Result<ContinuationScore>& r) {
      Report rep{job.route, job.variant, r.ok(), r.ok() ? ErrorCode::kInternal : r.error().code(),
                 r.ok() ? r.value() : ContinuationScore{}, std::this_thread::get_id(),
                 running_at_idle_priority()};
      std::unique_lock lock(mu_);
      reports_.push_back(std::move(rep));
      cv_.notify_all();
      if (holding_) cv_.wait(lock, [&] { return !holding_; });
    };
  }

  // Waits until `n` callbacks have started; false at the deadline.
  bool wait_for(size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kDeadline, [&] { return reports_.size() >= n; });
  }
  void release() {
    std::lock_guard lock(mu_);
    holding_ = false;
    cv_.notify_all();
  }
  std::vector<Report> reports() {
    std::lock_guard lock(mu_);
    return reports_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool holding_;
  std::vector<Report> reports_;
};

ShadowJob make_job(const LoadedModel& m, std::string variant, std::vector<int32_t> prompt,
                   std::vector<int32_t> completion) {
  return ShadowJob{"chat", std::move(variant), m.model, std::move(prompt), std::move(completion)};
}

// A job that costs a few milliseconds of real scoring.
ShadowJob small_job(const LoadedModel& m, std::string variant) {
  return make_job(m, std::move(variant), {1, 504, 3060}, {28, 253, 29});
}

TEST(ShadowScorerTest, ReportsWhatDirectScoringGivesOnAnIdlePriorityThread) {
  QGATE_REQUIRE_MODEL();
  std::vector<ShadowJob> jobs = {
      make_job(*model_, "gptq", testing::chat_prompt(*model_, "What is 2 + 2?"), {504, 3060, 28, 2}),
      make_job(*model_, "awq", {1, 2, 3, 4, 5}, {6, 7, 8}),
      make_job(*model_, "baseline", {42}, {43}),
  };
  Collector collector;
  {
    ShadowScorer scorer(ShadowScorerOptions{}, collector.callback());
    for (const ShadowJob& j : jobs) ASSERT_TRUE(scorer.offer(j));
    ASSERT_TRUE(collector.wait_for(jobs.size()));
  }
  const std::vector<Report> reports = collector.reports();
  ASSERT_EQ(reports.size(), jobs.size());
  ThreadPool pool(1);
  ScoringScratch scratch;
  for (size_t i = 0; i < jobs.size(); ++i) {
    SCOPED_TRACE(jobs[i].variant);
    EXPECT_EQ(reports[i].variant, jobs[i].variant);  // one scoring thread: offer order
    EXPECT_EQ(reports[i].route, "chat");
    ASSERT_TRUE(reports[i].ok);
    auto direct = score_continuation(*model_->model, jobs[i].prompt, jobs[i].completion, pool,
                                     scratch);
    ASSERT_TRUE(direct.ok());
    EXPECT_EQ(reports[i].score.token_nll, direct->token_nll);
    EXPECT_EQ(reports[i].score.top1_agreements, direct->top1_agreements);
    EXPECT_NE(reports[i].thread, std::this_thread::get_id());
    EXPECT_TRUE(reports[i].idle_priority);
  }
}

TEST(ShadowScorerTest, ErrorsAreReportedNotThrown) {
  QGATE_REQUIRE_MODEL();
  Collector collector;
  ShadowScorer scorer(ShadowScorerOptions{}, collector.callback());
  ASSERT_TRUE(scorer.offer(make_job(*model_, "v", {1, 2}, {})));
  ASSERT_TRUE(scorer.offer(make_job(*model_, "v", {1, 2}, {-5})));
  ASSERT_TRUE(collector.wait_for(2));
  for (const Report& r : collector.reports()) {
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.code, ErrorCode::kInvalidArgument);
  }
}

TEST(ShadowScorerTest, FullQueueRefusesAtOnce) {
  QGATE_REQUIRE_MODEL();
  Collector collector(/*hold_first=*/true);
  ShadowScorer scorer(ShadowScorerOptions{.queue_capacity = 2}, collector.callback());
  ASSERT_TRUE(scorer.offer(small_job(*model_, "a")));
  ASSERT_TRUE(collector.wait_for(1));  // "a" is out of the queue, its callback held
  EXPECT_EQ(scorer.queue_depth(), 0u);
  EXPECT_TRUE(scorer.offer(small_job(*model_, "b")));
  EXPECT_TRUE(scorer.offer(small_job(*model_, "c")));
  EXPECT_EQ(scorer.queue_depth(), 2u);
  EXPECT_FALSE(scorer.offer(small_job(*model_, "d")));
  EXPECT_EQ(scorer.queue_depth(), 2u);
  collector.release();
  ASSERT_TRUE(collector.wait_for(3));
  // Room again once the queue has drained.
  EXPECT_TRUE(scorer.offer(small_job(*model_, "e")));
  ASSERT_TRUE(collector.wait_for(4));
  std::vector<std::string> order;
  for (const Report& r : collector.reports()) {
    EXPECT_TRUE(r.ok);
    order.push_back(r.variant);
  }
  EXPECT_EQ(order, (std::vector<std::string>{"a", "b", "c", "e"}));
  EXPECT_EQ(scorer.queue_depth(), 0u);
}

TEST(ShadowScorerTest, StopCancelsQueuedJobsWithoutWaitingForTheRunningOne) {
  QGATE_REQUIRE_MODEL();
  Collector collector(/*hold_first=*/true);
  {
    ShadowScorer scorer(ShadowScorerOptions{.queue_capacity = 4}, collector.callback());
    ASSERT_TRUE(scorer.offer(small_job(*model_, "running")));
    ASSERT_TRUE(collector.wait_for(1));
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(scorer.offer(small_job(*model_, "queued")));
    scorer.stop();  // returns although the running job's callback is still held
    EXPECT_FALSE(scorer.offer(small_job(*model_, "late")));
    collector.release();
  }  // the destructor joins after the queued jobs are reported
  const std::vector<Report> reports = collector.reports();
  ASSERT_EQ(reports.size(), 5u);
  EXPECT_TRUE(reports[0].ok);
  for (size_t i = 1; i < reports.size(); ++i) {
    EXPECT_EQ(reports[i].variant, "queued");
    EXPECT_FALSE(reports[i].ok);
    EXPECT_EQ(reports[i].code, ErrorCode::kCancelled);
  }
}

// The destructor alone: whatever it catches half-done, each accepted job is reported once, as
// scored or cancelled, and it returns.
TEST(ShadowScorerTest, DestructorReportsEveryAcceptedJobOnce) {
  QGATE_REQUIRE_MODEL();
  Collector collector;
  size_t accepted = 0;
  {
    ShadowScorer scorer(ShadowScorerOptions{.queue_capacity = 8}, collector.callback());
    for (int i = 0; i < 8; ++i) accepted += scorer.offer(small_job(*model_, std::to_string(i)));
  }
  const std::vector<Report> reports = collector.reports();
  ASSERT_EQ(reports.size(), accepted);
  std::set<std::string> seen;
  for (const Report& r : reports) {
    EXPECT_TRUE(seen.insert(r.variant).second) << r.variant;
    EXPECT_TRUE(r.ok || r.code == ErrorCode::kCancelled);
  }
}

// Several serving threads offering at once. Jobs with an empty completion fail validation before
// any forward pass, so the test exercises the queue, not the model, and stays fast under
// sanitizers.
TEST(ShadowScorerTest, ConcurrentOffersAreEachReportedOnce) {
  QGATE_REQUIRE_MODEL();
  constexpr int kThreads = 4;
  constexpr int kJobsPerThread = 200;
  Collector collector;
  std::atomic<size_t> accepted{0};
  {
    ShadowScorer scorer(ShadowScorerOptions{.queue_capacity = 8, .threads = 2},
                        collector.callback());
    std::vector<std::thread> offerers;
    for (int t = 0; t < kThreads; ++t) {
      offerers.emplace_back([&, t] {
        for (int i = 0; i < kJobsPerThread; ++i) {
          const std::string id = std::to_string(t) + "/" + std::to_string(i);
          if (scorer.offer(make_job(*model_, id, {1}, {}))) accepted.fetch_add(1);
          (void)scorer.queue_depth();
        }
      });
    }
    for (std::thread& th : offerers) th.join();
    ASSERT_TRUE(collector.wait_for(accepted.load()));
  }
  const std::vector<Report> reports = collector.reports();
  EXPECT_EQ(reports.size(), accepted.load());
  EXPECT_GE(accepted.load(), 8u);  // at least a queue's worth got in
  std::set<std::string> seen;
  for (const Report& r : reports) {
    EXPECT_TRUE(seen.insert(r.variant).second) << r.variant;
    EXPECT_EQ(r.code, ErrorCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace qgate
