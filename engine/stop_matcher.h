// Stop strings for streamed text: hold back what could still become a stop string, cut before
// the first one that completes.
//
// The stream is matched as bytes. Stop strings are valid UTF-8 and pieces hold whole characters,
// so a held-back tail always starts at a character boundary (a stop string starts with a lead
// byte) and emitted text is always whole characters.
//
// When several stop strings could match, the one that completes first in the byte stream wins
// (ties: the one that starts first). This depends only on the bytes, not on how the text was cut
// into pieces, so streaming token by token and matching the whole text at once agree.
//
// Not thread-safe: one matcher per sequence, used by the thread that decodes it.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/status.h"

namespace qgate {

class StopMatcher {
 public:
  // Limits for stop strings that come from requests (OpenAI allows 4; the engine may add its own
  // end-of-turn strings). They bound the held-back buffer and the per-piece work.
  static constexpr size_t kMaxStopStrings = 16;
  static constexpr size_t kMaxStopBytes = 256;

  struct Output {
    std::string text;      // safe to emit now
    bool stopped = false;  // a stop string matched; `text` ends right before it
  };

  // InvalidArgument naming the index for an empty or too long string, or too many strings.
  static Status validate(std::span<const std::string> stops);

  // The strings must be non-empty (a broken invariant otherwise: callers validate request input
  // first). An empty list is allowed and passes every piece through.
  explicit StopMatcher(std::vector<std::string> stops);

  // Appends a piece of the stream. After a stop, further pushes emit nothing.
  Output push(std::string_view piece);
  // End of stream: the held-back text (empty after a stop).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;  // tail that is a proper prefix of some stop string
  bool stopped_ = false;
};

}  // namespace qgate
