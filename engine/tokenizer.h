// GPT-2 style byte-level BPE tokenizer, built from GGUF metadata (tokenizer.ggml.*) or from an HF
// tokenizer.json, with the model's pre-tokenizer split pattern and its special tokens.
//
// Thread-safety: a Tokenizer is immutable after construction; encode/decode may be called from any
// number of threads at once. IncrementalDecoder is per stream and not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kernels/status.h"

namespace qgate {

class GgufFile;

// How the text is split into words before BPE runs on each word.
enum class PreTokenizer {
  kGpt2,         // the GPT-2 regex
  kSmolLm,       // digits split one by one, then the GPT-2 regex (llama.cpp "smollm")
  kLlama3,       // the Llama-3 regex (numbers in runs of at most three, case-insensitive contractions)
  kQwen2,        // Qwen2: Llama-3 pattern with single digits
};

class Tokenizer {
 public:
  static Result<Tokenizer> from_gguf(const GgufFile& gguf);
  // Parses the text of an HF tokenizer.json (model.type == "BPE", byte-level). tokenizer.json
  // does not name BOS/EOS: they are guessed from conventional special-token names (see the .cpp)
  // (tokenizer_config.json holds the authoritative ones; this class does not read it).
  static Result<Tokenizer> from_hf_json(std::string_view json_text);
  static Result<Tokenizer> from_hf_json_file(const std::string& path);

  // Encodes text. With parse_special, the text of control tokens that appears in the input maps
  // to those tokens; otherwise it is encoded as ordinary text. User-defined (non-special added)
  // tokens always match, as in HF tokenizers and llama.cpp.
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;
  // Like encode(text, true), except that control tokens are not recognized where they would
  // overlap one of `plain_ranges` (byte offsets [begin, end)): text a user typed there stays text.
  std::vector<int32_t> encode_with_plain_ranges(
      std::string_view text, std::span<const std::pair<size_t, size_t>> plain_ranges) const;
  // Concatenated bytes of the tokens (byte-level tokens mapped back to raw bytes). Special tokens
  // are included as their text unless skip_special.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // Raw bytes of one token.
  std::string token_bytes(int32_t id) const;

  int32_t vocab_size() const;
  std::optional<int32_t> token_id(std::string_view token_text) const;  // exact vocab entry
  bool is_special(int32_t id) const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  // Tokens that end generation: EOS plus end-of-turn tokens such as <|im_end|> or <|eot_id|>.
  const std::vector<int32_t>& stop_ids() const;
  bool add_bos() const;
  PreTokenizer pre_tokenizer() const;
  // The model's chat template source (Jinja) if the file carries one.
  const std::string& chat_template_source() const;

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  // special_allowed(begin, end): may a control token spanning [begin, end) match there?
  std::vector<int32_t> encode_impl(std::string_view text,
                                   const std::function<bool(size_t, size_t)>& special_allowed) const;
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of token ids into text pieces that never end inside a UTF-8 character: bytes of
// an incomplete character are held back until the character completes (or flush() is called, in
// which case invalid or truncated sequences come out as U+FFFD).
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special = true);
  std::string push(int32_t id);
  std::string flush();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace qgate
