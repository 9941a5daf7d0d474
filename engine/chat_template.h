// Chat prompt formatting. qgate does not run Jinja: it recognizes the template families its
// models use from the template source (or an explicit choice) and renders them natively.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/status.h"

namespace qgate {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

enum class ChatFormat {
  kChatMl,  // <|im_start|>role\ncontent<|im_end|>\n (SmolLM2, Qwen)
  kLlama3,  // <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
};

// A piece of a rendered prompt. Message contents come from users and must be tokenized as plain
// text; only the template's own text may turn into special tokens ("<|im_end|>" typed by a user
// must not end their turn).
struct ChatSegment {
  std::string text;
  bool message_content = false;
};

class ChatTemplate {
 public:
  // Picks the format from a Jinja template source. Recognizes the default system prompt that the
  // SmolLM2 and Qwen templates insert when the conversation has none.
  static Result<ChatTemplate> from_source(std::string_view jinja_source);
  static ChatTemplate chatml(std::optional<std::string> default_system = std::nullopt);
  static ChatTemplate llama3();

  // Roles must be system/user/assistant, a system message only first; otherwise InvalidArgument.
  Result<std::string> render(std::span<const ChatMessage> messages,
                             bool add_generation_prompt = true) const;
  // The same text as render(), split into template text and message contents.
  Result<std::vector<ChatSegment>> render_segments(std::span<const ChatMessage> messages,
                                                   bool add_generation_prompt = true) const;
  ChatFormat format() const { return format_; }
  const std::optional<std::string>& default_system() const { return default_system_; }
  // Text that marks the end of an assistant turn ("<|im_end|>", "<|eot_id|>").
  std::string end_of_turn() const;

 private:
  ChatFormat format_ = ChatFormat::kChatMl;
  std::optional<std::string> default_system_;
  bool llama3_bos_ = true;  // Llama-3 templates start with <|begin_of_text|>
};

}  // namespace qgate
