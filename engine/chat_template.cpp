// Native rendering of the chat template families qgate recognizes.
//
// Recognition reads the template's text, it does not evaluate it: ChatML templates are spotted by
// "<|im_start|>", Llama-3 ones by "<|start_header_id|>". A default system prompt (SmolLM2, Qwen2)
// is a string literal of the form "<|im_start|>system\n...<|im_end|>" that the template emits when
// the conversation has no system message; we find it by scanning the Jinja string literals (and
// the raw text between tags), unescaped, for that shape.
#include "engine/chat_template.h"

#include <string>
#include <utility>

namespace qgate {
namespace {

constexpr std::string_view kImStart = "<|im_start|>";
constexpr std::string_view kImEnd = "<|im_end|>";
constexpr std::string_view kHeaderStart = "<|start_header_id|>";
constexpr std::string_view kHeaderEnd = "<|end_header_id|>";
constexpr std::string_view kEotId = "<|eot_id|>";
constexpr std::string_view kBeginOfText = "<|begin_of_text|>";

// Python/Jinja string escapes that appear in chat templates; others are kept verbatim.
std::string unescape_literal(std::string_view body) {
  std::string out;
  out.reserve(body.size());
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 == body.size()) {
      out.push_back(body[i]);
      continue;
    }
    const char c = body[++i];
    switch (c) {
      case 'n': out.push_back('\n'); break;
      case 't': out.push_back('\t'); break;
      case 'r': out.push_back('\r'); break;
      case '\\':
      case '\'':
      case '"': out.push_back(c); break;
      default:
        out.push_back('\\');
        out.push_back(c);
        break;
    }
  }
  return out;
}

// The pieces of text a template can output verbatim: string literals inside {{ }} / {% %} tags
// (unescaped) and raw text between tags. Comments ({# #}) are skipped.
std::vector<std::string> literal_segments(std::string_view src) {
  auto is_tag_open = [src](size_t at) {
    return at + 1 < src.size() && (src[at + 1] == '{' || src[at + 1] == '%' || src[at + 1] == '#');
  };
  std::vector<std::string> out;
  size_t raw_start = 0;
  while (raw_start < src.size()) {
    size_t open = src.find('{', raw_start);
    while (open != std::string_view::npos && !is_tag_open(open)) open = src.find('{', open + 1);
    if (open == std::string_view::npos) {
      out.emplace_back(src.substr(raw_start));
      break;
    }
    if (open > raw_start) out.emplace_back(src.substr(raw_start, open - raw_start));
    const char kind = src[open + 1];
    const std::string_view close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    size_t j = open + 2;
    while (j < src.size() && src.compare(j, close.size(), close) != 0) {
      const char q = src[j];
      if (kind == '#' || (q != '\'' && q != '"')) {
        ++j;
        continue;
      }
      size_t k = j + 1;
      while (k < src.size() && src[k] != q) k += src[k] == '\\' ? 2 : 1;
      if (k >= src.size()) return out;  // unterminated literal: nothing reliable follows
      out.push_back(unescape_literal(src.substr(j + 1, k - j - 1)));
      j = k + 1;
    }
    raw_start = j + close.size();
  }
  return out;
}

// The default system prompt of a ChatML template, if it has one.
std::optional<std::string> find_default_system(std::string_view src) {
  const std::string prefix = std::string(kImStart) + "system\n";
  for (const std::string& seg : literal_segments(src)) {
    const size_t start = seg.find(prefix);
    if (start == std::string::npos) continue;
    const size_t text_start = start + prefix.size();
    const size_t end = seg.find(kImEnd, text_start);
    if (end == std::string::npos || end == text_start) continue;
    return seg.substr(text_start, end - text_start);
  }
  return std::nullopt;
}

// Jinja's `trim` (Python str.strip()) on ASCII whitespace, which is what Llama-3 templates apply
// to every message.
std::string_view trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(kSpace) - b + 1);
}

Status validate_messages(std::span<const ChatMessage> messages) {
  if (messages.empty()) {
    return make_error(ErrorCode::kInvalidArgument, "messages: at least one message is required");
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      return make_error(ErrorCode::kInvalidArgument, "messages[" + std::to_string(i) +
                                                         "].role must be system, user or " +
                                                         "assistant, got '" + role + "'");
    }
    if (role == "system" && i != 0) {
      return make_error(ErrorCode::kInvalidArgument,
                        "messages[" + std::to_string(i) +
                            "]: a system message is only allowed as the first message");
    }
  }
  return Status::Ok();
}

// Appends to the last segment when it is of the same kind, so template text stays in one piece.
void append(std::vector<ChatSegment>& out, std::string_view text, bool content) {
  if (text.empty()) return;
  if (out.empty() || out.back().message_content != content) out.push_back({"", content});
  out.back().text.append(text);
}

void append_chatml_turn(std::vector<ChatSegment>& out, std::string_view role,
                        std::string_view content, bool user_content) {
  append(out, std::string(kImStart).append(role).append("\n"), false);
  append(out, content, user_content);
  append(out, std::string(kImEnd).append("\n"), false);
}

void append_llama3_header(std::vector<ChatSegment>& out, std::string_view role) {
  append(out, std::string(kHeaderStart).append(role).append(kHeaderEnd).append("\n\n"), false);
}

}  // namespace

Result<ChatTemplate> ChatTemplate::from_source(std::string_view jinja_source) {
  if (jinja_source.find(kHeaderStart) != std::string_view::npos) {
    ChatTemplate t = llama3();
    // Llama-3 templates prepend bos_token themselves; one that does not must not get a second BOS.
    t.llama3_bos_ = jinja_source.find("bos_token") != std::string_view::npos ||
                    jinja_source.find(kBeginOfText) != std::string_view::npos;
    return t;
  }
  if (jinja_source.find(kImStart) != std::string_view::npos) {
    return chatml(find_default_system(jinja_source));
  }
  return make_error(ErrorCode::kUnsupported,
                    "chat template: not a ChatML or Llama-3 template (choose a format explicitly)");
}

ChatTemplate ChatTemplate::chatml(std::optional<std::string> default_system) {
  ChatTemplate t;
  t.format_ = ChatFormat::kChatMl;
  t.default_system_ = std::move(default_system);
  return t;
}

ChatTemplate ChatTemplate::llama3() {
  ChatTemplate t;
  t.format_ = ChatFormat::kLlama3;
  return t;
}

Result<std::vector<ChatSegment>> ChatTemplate::render_segments(
    std::span<const ChatMessage> messages, bool add_generation_prompt) const {
  QGATE_TRY_STATUS(validate_messages(messages));
  std::vector<ChatSegment> out;
  switch (format_) {
    case ChatFormat::kChatMl:
      if (default_system_ && messages.front().role != "system") {
        // The model's own default system prompt is template text, not user content.
        append_chatml_turn(out, "system", *default_system_, false);
      }
      for (const ChatMessage& m : messages) append_chatml_turn(out, m.role, m.content, true);
      if (add_generation_prompt) append(out, std::string(kImStart).append("assistant\n"), false);
      break;
    case ChatFormat::kLlama3:
      if (llama3_bos_) append(out, kBeginOfText, false);
      for (const ChatMessage& m : messages) {
        append_llama3_header(out, m.role);
        append(out, trim(m.content), true);
        append(out, kEotId, false);
      }
      if (add_generation_prompt) append_llama3_header(out, "assistant");
      break;
  }
  return out;
}

Result<std::string> ChatTemplate::render(std::span<const ChatMessage> messages,
                                         bool add_generation_prompt) const {
  QGATE_ASSIGN_OR_RETURN(std::vector<ChatSegment> segments,
                         render_segments(messages, add_generation_prompt));
  std::string out;
  for (const ChatSegment& s : segments) out.append(s.text);
  return out;
}

std::string ChatTemplate::end_of_turn() const {
  return std::string(format_ == ChatFormat::kLlama3 ? kEotId : kImEnd);
}

}  // namespace qgate
