// Writers for the HF tokenizer files of a GGUF model: tokenizer.json (what the `tokenizers`
// library loads) and tokenizer_config.json (what transformers' AutoTokenizer reads besides it).
//
// The tokenizer.json is assembled only from the GGUF's own data — vocabulary, merges, token types —
// plus the HF pre-tokenizer that llama.cpp's `tokenizer.ggml.pre` names, laid out the way
// `tokenizers` 0.2x serializes it (merges as [a, b] pairs, vocab in id order), so both that library
// and qgate's Tokenizer::from_hf_json read it back to the same segmentation as the GGUF tokenizer.
//
// Everything is built from the already-validated GgufFile; nothing here touches the filesystem.
#pragma once

#include <string>

#include "kernels/status.h"

namespace qgate {

class GgufFile;

// kUnsupported for a tokenizer that is not byte-level BPE ("gpt2") or a `tokenizer.ggml.pre` with
// no known HF equivalent (known: smollm, gpt2, llama-bpe, llama3, qwen2); kInvalidFormat for a
// merge that is not "a b" or token types that do not match the vocabulary.
Result<std::string> tokenizer_json_from_gguf(const GgufFile& gguf);

// tokenizer_config.json: special tokens by text (bos/eos/pad/unk), add_bos_token, the chat
// template, model_max_length (the context length) and the tokenizer class, plus
// added_tokens_decoder as transformers writes it. Both functions return compact JSON.
Result<std::string> tokenizer_config_json_from_gguf(const GgufFile& gguf);

}  // namespace qgate
