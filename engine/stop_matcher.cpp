// Stop-string matching over a streamed byte sequence. See stop_matcher.h for the contract.
//
// Invariant between pushes: `held_` is the longest suffix of the stream so far that is a proper
// prefix of some stop string, and everything before it has been emitted. A match can only start
// inside `held_` or in text not yet seen, so each push searches held_ + piece and nothing else;
// held_ is shorter than the longest stop string, which bounds the work per piece.
#include "engine/stop_matcher.h"

#include <algorithm>
#include <utility>

namespace qgate {
namespace {

// Length of the longest suffix of `text` that is a proper prefix of one of `stops`.
size_t longest_partial_match(std::string_view text, const std::vector<std::string>& stops) {
  size_t best = 0;
  for (const auto& stop : stops) {
    const size_t max_len = std::min(text.size(), stop.size() - 1);
    // Longer suffixes first: the first hit is this stop's best.
    for (size_t len = max_len; len > best; --len) {
      if (text.substr(text.size() - len) == std::string_view(stop).substr(0, len)) {
        best = len;
        break;
      }
    }
  }
  return best;
}

}  // namespace

Status StopMatcher::validate(std::span<const std::string> stops) {
  if (stops.size() > kMaxStopStrings) {
    return make_error(ErrorCode::kInvalidArgument,
                      "stop: at most " + std::to_string(kMaxStopStrings) + " strings, got " +
                          std::to_string(stops.size()));
  }
  for (size_t i = 0; i < stops.size(); ++i) {
    if (stops[i].empty()) {
      return make_error(ErrorCode::kInvalidArgument,
                        "stop[" + std::to_string(i) + "] must not be empty");
    }
    if (stops[i].size() > kMaxStopBytes) {
      return make_error(ErrorCode::kInvalidArgument,
                        "stop[" + std::to_string(i) + "] is " + std::to_string(stops[i].size()) +
                            " bytes; the limit is " + std::to_string(kMaxStopBytes));
    }
  }
  return Status::Ok();
}

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const auto& s : stops_) QGATE_CHECK(!s.empty(), "stop strings must be validated first");
}

StopMatcher::Output StopMatcher::push(std::string_view piece) {
  Output out;
  if (stopped_) {
    out.stopped = true;
    return out;
  }
  std::string text = std::move(held_);
  held_.clear();
  text.append(piece);

  // The stop that completes first (smallest end offset), ties to the earliest start.
  size_t best_start = std::string::npos;
  size_t best_end = std::string::npos;
  for (const auto& stop : stops_) {
    const size_t pos = text.find(stop);
    if (pos == std::string::npos) continue;
    const size_t end = pos + stop.size();
    if (end < best_end || (end == best_end && pos < best_start)) {
      best_start = pos;
      best_end = end;
    }
  }
  if (best_start != std::string::npos) {
    text.resize(best_start);
    out.text = std::move(text);
    out.stopped = true;
    stopped_ = true;
    return out;
  }

  const size_t keep = longest_partial_match(text, stops_);
  held_ = text.substr(text.size() - keep);
  text.resize(text.size() - keep);
  out.text = std::move(text);
  return out;
}

std::string StopMatcher::flush() { return std::exchange(held_, std::string()); }

}  // namespace qgate
