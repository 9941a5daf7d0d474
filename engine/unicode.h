// Unicode pieces the byte-level BPE tokenizer needs: UTF-8 decoding that tolerates invalid bytes,
// the character classes of the pre-tokenizer split patterns, and the split patterns themselves,
// written by hand (std::regex has no \p{L} and is slow).
//
// Character classes follow HF `tokenizers` (Oniguruma regexes, Rust char::is_numeric for the
// Digits split) because that library defines the ids a model was trained with; the tables come
// from scripts/gen_unicode_tables.py. All functions are pure and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qgate::unicode {

enum CharFlags : uint8_t {
  kLetter = 1,      // \p{L}
  kNumber = 2,      // \p{N}
  kSpace = 4,       // \s as Oniguruma defines it
  kDigitSplit = 8,  // what the HF Digits pre-tokenizer splits off (Rust char::is_numeric)
};

struct CodepointRange {
  uint32_t first;
  uint32_t last;
  uint8_t flags;
};
// Sorted, disjoint; defined in the generated unicode_tables.cpp.
extern const CodepointRange kCodepointRanges[];
extern const size_t kNumCodepointRanges;
extern const char kUnicodeVersion[];

uint8_t char_flags(uint32_t cp);

// One step of UTF-8 decoding. An ill-formed sequence yields valid == false and len == the length
// of its maximal subpart (Unicode ch. 3 "U+FFFD substitution of maximal subparts", which is what
// Rust's from_utf8_lossy and Python's errors="replace" do), so each becomes one U+FFFD.
// `truncated` marks a well-formed prefix cut off by the end of the input.
struct Utf8Step {
  uint32_t cp = 0;
  uint32_t len = 1;
  bool valid = false;
  bool truncated = false;
};
Utf8Step decode_utf8(std::string_view s, size_t pos);

void append_utf8(std::string& out, uint32_t cp);
// Replaces every ill-formed or truncated sequence with U+FFFD.
std::string to_valid_utf8(std::string_view s);
// Length of the longest prefix of s that does not end inside a well-formed but unfinished
// character; the rest may complete when more bytes arrive.
size_t complete_prefix_len(std::string_view s);

// GPT-2's reversible byte <-> printable code point mapping used by byte-level BPE vocabularies.
uint32_t byte_to_codepoint(uint8_t b);
// -1 for a code point that no byte maps to.
int byte_from_codepoint(uint32_t cp);

// Pre-tokenizer splits. Each returns consecutive byte ranges of `text` that together cover it.
// The GPT-2 pattern: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
std::vector<std::string_view> split_gpt2(std::string_view text);
// The Llama-3 pattern with \p{N}{1,max_digits}: max_digits 3 is Llama-3, 1 is Qwen2.
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
// \s*[\r\n]+|\s+(?!\S)|\s+
std::vector<std::string_view> split_llama3(std::string_view text, int max_digits);
// HF Digits(individual_digits=true): every numeric character on its own, the rest in runs.
std::vector<std::string_view> split_digits(std::string_view text);

}  // namespace qgate::unicode
