// ChatTemplate: recognition from Jinja source and exact rendered prompts.
//
// The expected strings below were produced once by rendering the real templates with Python's
// jinja2 (3.1.6): the SmolLM2 template as stored in SmolLM2-135M-Instruct.Q4_1.gguf, the Qwen2
// template, and Meta's Llama-3 template (bos_token = "<|begin_of_text|>"). They are hard-coded so
// the test needs no Python.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/chat_template.h"
#include "engine/gguf.h"

namespace qgate {
namespace {

// Verbatim from the GGUF's tokenizer.chat_template (real newlines inside the Jinja literals).
constexpr const char* kSmolLm2Source =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

// Qwen2-Instruct's template as Jinja source: here the newlines are Jinja escapes ("\\n").
constexpr const char* kQwen2Source =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

// Qwen2.5-style: the first system literal is concatenated with the user's content and must not be
// taken for a default; the default comes later, in the else branch.
constexpr const char* kQwen25LikeSource =
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "{%- else %}\n"
    "    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
    "'<|im_end|>' + '\\n' }}{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}\n";

constexpr const char* kPlainChatMlSource =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

constexpr const char* kLlama3Source =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

const std::vector<ChatMessage> kSingleUser = {{"user", "Hello!"}};
const std::vector<ChatMessage> kMultiTurn = {{"system", "You are terse."},
                                             {"user", "What is 2+2?"},
                                             {"assistant", "4"},
                                             {"user", "And 3+3?"}};
const std::vector<ChatMessage> kFinishedTurn = {{"user", "Hi"},
                                                {"assistant", "Hello! How can I help?"}};

ChatTemplate must_parse(const char* source) {
  auto t = ChatTemplate::from_source(source);
  EXPECT_TRUE(t.ok()) << (t.ok() ? "" : t.error().to_string());
  return t.ok() ? *t : ChatTemplate::chatml();
}

std::string must_render(const ChatTemplate& t, const std::vector<ChatMessage>& m, bool gen) {
  auto r = t.render(m, gen);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().to_string());
  return r.ok() ? *r : std::string();
}

TEST(ChatTemplateTest, RecognizesSmolLm2AndItsDefaultSystemPrompt) {
  const ChatTemplate t = must_parse(kSmolLm2Source);
  EXPECT_EQ(t.format(), ChatFormat::kChatMl);
  ASSERT_TRUE(t.default_system().has_value());
  EXPECT_EQ(*t.default_system(),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  EXPECT_EQ(t.end_of_turn(), "<|im_end|>");
}

TEST(ChatTemplateTest, RendersSmolLm2ExactlyAsJinja) {
  const ChatTemplate t = must_parse(kSmolLm2Source);
  EXPECT_EQ(must_render(t, kSingleUser, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(must_render(t, kMultiTurn, true),
            "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 2+2?"
            "<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?"
            "<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(must_render(t, kFinishedTurn, false),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How "
            "can I help?<|im_end|>\n");
}

TEST(ChatTemplateTest, RendersQwen2WithEscapedNewlinesInTheSource) {
  const ChatTemplate t = must_parse(kQwen2Source);
  ASSERT_TRUE(t.default_system().has_value());
  EXPECT_EQ(*t.default_system(), "You are a helpful assistant.");
  EXPECT_EQ(must_render(t, kSingleUser, true),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!"
            "<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(must_render(t, kFinishedTurn, false),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi"
            "<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n");
}

TEST(ChatTemplateTest, SkipsConcatenatedSystemLiteralsWhenFindingTheDefault) {
  const ChatTemplate t = must_parse(kQwen25LikeSource);
  ASSERT_TRUE(t.default_system().has_value());
  EXPECT_EQ(*t.default_system(),
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
}

TEST(ChatTemplateTest, PlainChatMlHasNoDefaultSystemPrompt) {
  const ChatTemplate t = must_parse(kPlainChatMlSource);
  EXPECT_EQ(t.format(), ChatFormat::kChatMl);
  EXPECT_FALSE(t.default_system().has_value());
  EXPECT_EQ(must_render(t, kSingleUser, true),
            "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(must_render(ChatTemplate::chatml(), kSingleUser, false),
            "<|im_start|>user\nHello!<|im_end|>\n");
}

TEST(ChatTemplateTest, RendersLlama3ExactlyAsJinja) {
  const ChatTemplate t = must_parse(kLlama3Source);
  EXPECT_EQ(t.format(), ChatFormat::kLlama3);
  EXPECT_FALSE(t.default_system().has_value());
  EXPECT_EQ(t.end_of_turn(), "<|eot_id|>");
  EXPECT_EQ(must_render(t, kSingleUser, true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(must_render(t, kMultiTurn, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse."
            "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|><|start_header_id|>user"
            "<|end_header_id|>\n\nAnd 3+3?<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
            "\n\n");
  EXPECT_EQ(must_render(t, kFinishedTurn, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello! How can I help?<|eot_id|>");
  // The template trims every message (`| trim`).
  const std::vector<ChatMessage> padded = {{"user", "  padded\n "}};
  EXPECT_EQ(must_render(t, padded, true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\npadded<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // Same output from the explicit factory.
  EXPECT_EQ(must_render(ChatTemplate::llama3(), kSingleUser, true),
            must_render(t, kSingleUser, true));
}

TEST(ChatTemplateTest, Llama3TemplateWithoutBosDoesNotAddOne) {
  const ChatTemplate t = must_parse(
      "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
      "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}");
  EXPECT_EQ(must_render(t, kSingleUser, false),
            "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>");
}

TEST(ChatTemplateTest, UnknownTemplateIsUnsupported) {
  auto t = ChatTemplate::from_source(
      "{% for message in messages %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endfor %}");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().code(), ErrorCode::kUnsupported);
  EXPECT_FALSE(ChatTemplate::from_source("").ok());
}

TEST(ChatTemplateTest, RejectsMalformedConversationsNamingTheIndex) {
  const ChatTemplate t = ChatTemplate::chatml();
  auto expect_invalid = [&](const std::vector<ChatMessage>& m, const std::string& needle) {
    auto r = t.render(m);
    ASSERT_FALSE(r.ok()) << needle;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
  };
  expect_invalid({}, "at least one");
  expect_invalid({{"user", "a"}, {"tool", "b"}}, "messages[1].role");
  expect_invalid({{"User", "a"}}, "messages[0].role");
  expect_invalid({{"user", "a"}, {"system", "b"}}, "messages[1]");
  EXPECT_FALSE(ChatTemplate::llama3().render(std::vector<ChatMessage>{{"bot", "x"}}).ok());
}

TEST(ChatTemplateTest, RecognizesTheRealModelTemplate) {
  const char* dir_env = std::getenv("QGATE_MODEL_DIR");
  const char* src_env = std::getenv("QGATE_SOURCE_DIR");
  const std::filesystem::path dir = dir_env   ? std::filesystem::path(dir_env)
                                    : src_env ? std::filesystem::path(src_env) / "models"
                                              : std::filesystem::path("models");
  const auto path = dir / "SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "model not found at " << path;
  auto gguf = GgufFile::open(path.string());
  ASSERT_TRUE(gguf.ok()) << gguf.error().to_string();
  auto source = gguf->get_string("tokenizer.chat_template");
  ASSERT_TRUE(source.ok()) << source.error().to_string();
  EXPECT_EQ(*source, kSmolLm2Source);
  const ChatTemplate t = must_parse(source->c_str());
  ASSERT_TRUE(t.default_system().has_value());
  EXPECT_EQ(*t.default_system(),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
}

}  // namespace
}  // namespace qgate
