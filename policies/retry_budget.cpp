// Retry budget. See retry_budget.h for the contract.
#include "policies/retry_budget.h"

#include <algorithm>
#include <cmath>

namespace qgate {

Status RetryBudgetOptions::validate() const {
  if (!(ratio >= 0.0 && ratio <= 1.0)) {
    return make_error(ErrorCode::kInvalidArgument, "ratio: must be in [0, 1]");
  }
  if (min_retries < 0) return make_error(ErrorCode::kInvalidArgument, "min_retries: must be >= 0");
  if (max_attempts < 1) {
    return make_error(ErrorCode::kInvalidArgument, "max_attempts: must be >= 1");
  }
  return Status::Ok();
}

RetryBudget::Token& RetryBudget::Token::operator=(Token&& o) noexcept {
  if (this != &o) {
    reset();
    counter_ = o.counter_;
    o.counter_ = nullptr;
  }
  return *this;
}

void RetryBudget::Token::reset() {
  if (counter_ != nullptr) counter_->fetch_sub(1);
  counter_ = nullptr;
}

RetryBudget::RetryBudget(RetryBudgetOptions options) : options_(options) {
  QGATE_CHECK(options_.validate().ok(), "RetryBudgetOptions must be validated before use");
}

RetryBudget::Token RetryBudget::start_request() {
  requests_.fetch_add(1);
  return Token(&requests_);
}

RetryBudget::Token RetryBudget::try_start_retry() {
  const auto limit = std::max<int64_t>(
      options_.min_retries,
      static_cast<int64_t>(std::floor(options_.ratio * static_cast<double>(requests_.load()))));
  // CAS so two threads racing for the last slot cannot both take it.
  int64_t current = retries_.load();
  while (current < limit) {
    if (retries_.compare_exchange_weak(current, current + 1)) return Token(&retries_);
  }
  return {};
}

}  // namespace qgate
