// qgate_tokenize_tool: encodes lines of text with qgate's tokenizer so tests/python can compare
// the ids with HF `tokenizers` in one process run.
//
//   qgate_tokenize_tool (--gguf PATH | --tokenizer-json PATH) [--pretokenize
//   gpt2|smollm|llama3|qwen2]
//
// stdin:  one JSON object per line, {"text": "..."}
// stdout: one JSON object per line, {"ids": [...], "decoded": "..."} where decoded is
//         decode(ids) with special tokens kept (invalid UTF-8 shown as U+FFFD). With
//         --pretokenize no model is loaded and the line is {"pieces": ["...", ...]}: the split
//         of the text by that pre-tokenizer, for checking the patterns on their own.
#include <simdjson.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "engine/unicode.h"

namespace {

void append_json_string(std::string& out, std::string_view s) {
  static const char* hex = "0123456789abcdef";
  out.push_back('"');
  for (unsigned char c : qgate::unicode::to_valid_utf8(s)) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(hex[c >> 4]);
          out.push_back(hex[c & 15]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

std::vector<std::string_view> pretokenize(std::string_view mode, std::string_view text) {
  using namespace qgate::unicode;
  if (mode == "gpt2") return split_gpt2(text);
  if (mode == "llama3") return split_llama3(text, 3);
  if (mode == "qwen2") return split_llama3(text, 1);
  std::vector<std::string_view> out;
  for (std::string_view piece : split_digits(text)) {
    for (std::string_view w : split_gpt2(piece)) out.push_back(w);
  }
  return out;
}

int usage() {
  std::fprintf(
      stderr,
      "usage: qgate_tokenize_tool (--gguf PATH | --tokenizer-json PATH | --pretokenize MODE)\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) return usage();
  std::string flag = argv[1], arg = argv[2];
  std::optional<qgate::Tokenizer> tok;
  if (flag == "--gguf") {
    auto gguf = qgate::GgufFile::open(arg);
    if (!gguf.ok()) {
      std::fprintf(stderr, "%s\n", gguf.error().to_string().c_str());
      return 1;
    }
    auto t = qgate::Tokenizer::from_gguf(*gguf);
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.error().to_string().c_str());
      return 1;
    }
    tok.emplace(std::move(t).value());
  } else if (flag == "--tokenizer-json") {
    auto t = qgate::Tokenizer::from_hf_json_file(arg);
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.error().to_string().c_str());
      return 1;
    }
    tok.emplace(std::move(t).value());
  } else if (flag != "--pretokenize" ||
             (arg != "gpt2" && arg != "smollm" && arg != "llama3" && arg != "qwen2")) {
    return usage();
  }

  simdjson::dom::parser parser;
  std::string line, out;
  size_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    std::string_view text;
    simdjson::dom::element doc;
    if (parser.parse(line).get(doc) || doc["text"].get_string().get(text)) {
      std::fprintf(stderr, "line %zu: expected {\"text\": \"...\"}\n", line_no);
      return 1;
    }
    out.clear();
    if (tok) {
      std::vector<int32_t> ids = tok->encode(text);
      out += "{\"ids\": [";
      for (size_t k = 0; k < ids.size(); ++k) {
        if (k) out += ", ";
        out += std::to_string(ids[k]);
      }
      out += "], \"decoded\": ";
      append_json_string(out, tok->decode(ids));
    } else {
      out += "{\"pieces\": [";
      bool first = true;
      for (std::string_view piece : pretokenize(arg, text)) {
        if (!first) out += ", ";
        first = false;
        append_json_string(out, piece);
      }
      out += "]";
    }
    out += "}\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
  }
  return 0;
}
