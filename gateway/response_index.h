// Which route and variant answered a recent response, by response id, so that user feedback
// (POST /v1/feedback) can be counted against the variant that produced the answer.
//
// Bounded: it remembers the last `capacity` responses (oldest forgotten first), so memory stays
// fixed however long the server runs; feedback on an older response is refused as unknown.
// Each response takes at most one feedback (a second is refused), so a client cannot inflate a
// variant's counters by repeating itself.
//
// Threading: all methods are thread-safe (one mutex; each call is O(1) amortised).
#pragma once

#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "kernels/status.h"

namespace qgate {

struct AnsweredBy {
  std::string route;
  std::string variant;
};

class ResponseIndex {
 public:
  explicit ResponseIndex(size_t capacity);

  void remember(std::string id, AnsweredBy answered_by);
  // The response's route and variant, marking its feedback as taken. NotFound when the id is
  // unknown or forgotten; InvalidArgument ("already") when it already took feedback.
  Result<AnsweredBy> take_feedback(std::string_view id);
  size_t size() const;

 private:
  struct Entry {
    AnsweredBy answered_by;
    bool feedback_taken = false;
  };
  const size_t capacity_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;  // guarded by mu_
  std::deque<std::string> order_;                   // insertion order, for eviction
};

}  // namespace qgate
