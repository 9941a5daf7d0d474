// Token ids of a chat prompt. The template's text is tokenized with special tokens recognized;
// message contents are tokenized as plain text, so a user who types "<|im_end|>" gets those
// characters, not an end of turn. Ordinary prompts get exactly the ids of encode(render(...)):
// the rendered text is tokenized as one string, only with control tokens masked inside contents.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/chat_template.h"
#include "kernels/status.h"

namespace qgate {

class Tokenizer;

Result<std::vector<int32_t>> encode_chat(const ChatTemplate& chat_template,
                                         const Tokenizer& tokenizer,
                                         std::span<const ChatMessage> messages,
                                         bool add_generation_prompt = true);

}  // namespace qgate
