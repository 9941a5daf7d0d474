#include "engine/chat_prompt.h"

#include "engine/tokenizer.h"

namespace qgate {

Result<std::vector<int32_t>> encode_chat(const ChatTemplate& chat_template,
                                         const Tokenizer& tokenizer,
                                         std::span<const ChatMessage> messages,
                                         bool add_generation_prompt) {
  QGATE_ASSIGN_OR_RETURN(std::vector<ChatSegment> segments,
                         chat_template.render_segments(messages, add_generation_prompt));
  // One string, so pre-tokenization sees exactly what encode(render(...)) sees; only the
  // recognition of control tokens is switched off inside message contents.
  std::string text;
  std::vector<std::pair<size_t, size_t>> contents;
  for (const ChatSegment& s : segments) {
    if (s.message_content) contents.emplace_back(text.size(), text.size() + s.text.size());
    text.append(s.text);
  }
  return tokenizer.encode_with_plain_ranges(text, contents);
}

}  // namespace qgate
