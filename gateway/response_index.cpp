#include "gateway/response_index.h"

namespace qgate {

ResponseIndex::ResponseIndex(size_t capacity) : capacity_(capacity) {
  QGATE_CHECK(capacity > 0, "ResponseIndex needs a positive capacity");
}

void ResponseIndex::remember(std::string id, AnsweredBy answered_by) {
  std::lock_guard lock(mu_);
  auto [it, inserted] = entries_.try_emplace(id, Entry{std::move(answered_by), false});
  if (!inserted) return;  // ids are unique per process; a repeat keeps the first answer
  order_.push_back(std::move(id));
  while (order_.size() > capacity_) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
}

Result<AnsweredBy> ResponseIndex::take_feedback(std::string_view id) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(std::string(id));
  if (it == entries_.end()) {
    return make_error(ErrorCode::kNotFound,
                      "no recent response has id '" + std::string(id) +
                          "' (unknown, or older than the last " + std::to_string(capacity_) +
                          " responses)");
  }
  if (it->second.feedback_taken) {
    return make_error(ErrorCode::kInvalidArgument,
                      "feedback for response '" + std::string(id) + "' was already recorded");
  }
  it->second.feedback_taken = true;
  return it->second.answered_by;
}

size_t ResponseIndex::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace qgate
