// RetryBudget: the Envoy-style bound max(min_retries, ratio * active requests), token release,
// and no overshoot when threads race for the last slots.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "policies/retry_budget.h"

namespace qgate {
namespace {

TEST(RetryBudgetTest, MinRetriesHoldAtLowLoad) {
  RetryBudget budget(RetryBudgetOptions{.ratio = 0.2, .min_retries = 3, .max_attempts = 3});
  auto request = budget.start_request();
  std::vector<RetryBudget::Token> retries;
  for (int i = 0; i < 3; ++i) {
    retries.push_back(budget.try_start_retry());
    EXPECT_TRUE(retries.back()) << i;
  }
  EXPECT_FALSE(budget.try_start_retry());
  retries.pop_back();  // a finished retry frees its slot
  EXPECT_TRUE(budget.try_start_retry());
}

TEST(RetryBudgetTest, RatioScalesWithRequestsInFlight) {
  RetryBudget budget(RetryBudgetOptions{.ratio = 0.2, .min_retries = 3, .max_attempts = 3});
  std::vector<RetryBudget::Token> requests;
  for (int i = 0; i < 100; ++i) requests.push_back(budget.start_request());
  EXPECT_EQ(budget.active_requests(), 100);
  std::vector<RetryBudget::Token> retries;
  while (auto t = budget.try_start_retry()) retries.push_back(std::move(t));
  EXPECT_EQ(retries.size(), 20u);  // 0.2 * 100
  requests.resize(50);             // load halves: no new retries until retries drain below 10
  EXPECT_FALSE(budget.try_start_retry());
  retries.resize(9);
  EXPECT_TRUE(budget.try_start_retry());
  requests.clear();
  retries.clear();
  EXPECT_EQ(budget.active_requests(), 0);
  EXPECT_EQ(budget.active_retries(), 0);
}

TEST(RetryBudgetTest, ConcurrentAcquirersNeverExceedTheLimit) {
  RetryBudget budget(RetryBudgetOptions{.ratio = 0.5, .min_retries = 0, .max_attempts = 3});
  std::vector<RetryBudget::Token> requests;
  for (int i = 0; i < 64; ++i) requests.push_back(budget.start_request());
  std::atomic<int> granted{0};
  std::vector<std::vector<RetryBudget::Token>> held(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) {
        if (auto token = budget.try_start_retry()) {
          granted.fetch_add(1);
          held[t].push_back(std::move(token));
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(granted.load(), 32);
  EXPECT_EQ(budget.active_retries(), 32);
}

TEST(RetryBudgetTest, OptionsValidation) {
  EXPECT_FALSE((RetryBudgetOptions{.ratio = 1.5}).validate().ok());
  EXPECT_FALSE((RetryBudgetOptions{.min_retries = -1}).validate().ok());
  EXPECT_EQ((RetryBudgetOptions{.max_attempts = 0}).validate().error().message(),
            "max_attempts: must be >= 1");
  EXPECT_TRUE(RetryBudgetOptions{}.validate().ok());
}

}  // namespace
}  // namespace qgate
