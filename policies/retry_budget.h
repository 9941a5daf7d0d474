// A process-wide retry budget, after Envoy's `retry_budget`: a fallback attempt is allowed only
// while the retries in flight stay below max(min_retries, ratio * requests in flight). When a
// variant is failing, every request wants a retry; the budget keeps retries a bounded share of
// the load so fallbacks cannot multiply it into a retry storm on the remaining variants, while
// min_retries keeps fallback working at low traffic.
//
// Threading: lock-free, safe from any thread. Lifetime: the budget must outlive its tokens.
#pragma once

#include <atomic>
#include <cstdint>

#include "kernels/status.h"

namespace qgate {

struct RetryBudgetOptions {
  double ratio = 0.2;       // retries in flight allowed per request in flight
  int64_t min_retries = 3;  // allowed regardless of load
  int max_attempts = 3;     // per request, first attempt included (caps the fallback chain)
  Status validate() const;  // ratio in [0, 1], min_retries >= 0, max_attempts >= 1
};

class RetryBudget {
 public:
  // Counts one unit (a request or a retry) in flight until destroyed. Movable.
  class Token {
   public:
    Token() = default;
    Token(Token&& o) noexcept : counter_(o.counter_) { o.counter_ = nullptr; }
    Token& operator=(Token&& o) noexcept;
    Token(const Token&) = delete;
    Token& operator=(const Token&) = delete;
    ~Token() { reset(); }
    explicit operator bool() const { return counter_ != nullptr; }
    void reset();

   private:
    friend class RetryBudget;
    explicit Token(std::atomic<int64_t>* counter) : counter_(counter) {}
    std::atomic<int64_t>* counter_ = nullptr;
  };

  explicit RetryBudget(RetryBudgetOptions options);  // options must be valid (QGATE_CHECK)

  // Held for the whole life of a client request.
  Token start_request();
  // Held while one fallback attempt runs; an empty token when the budget is spent.
  Token try_start_retry();

  int64_t active_requests() const { return requests_.load(); }
  int64_t active_retries() const { return retries_.load(); }
  const RetryBudgetOptions& options() const { return options_; }

 private:
  const RetryBudgetOptions options_;
  std::atomic<int64_t> requests_{0};
  std::atomic<int64_t> retries_{0};
};

}  // namespace qgate
