// libFuzzer target for the text path between a request and its response, on the real SmolLM2
// tokenizer: tokenizing, chat prompts, incremental detokenizing and stop strings. The first byte
// picks the check; the rest is its input (fields separated by 0x1E where a check takes several).
//
//  0 encode: decode(encode(bytes)) gives the bytes back, with and without special-token parsing,
//    ill-formed UTF-8 included (byte-level BPE), except the bytes the vocabulary has no token for.
//  1 chat: a conversation whose contents are arbitrary text encodes to exactly one <|im_start|> per
//    turn the template writes (a user cannot open or close turns by typing the markers), and
//    decodes back to the rendered prompt.
//  2 detokenize: for any token ids, IncrementalDecoder emits only well-formed UTF-8, and its
//    pieces joined equal the lossy decode of all ids at once (streamed = non-streamed text).
//  3 stop strings: StopMatcher fed the text in arbitrary pieces returns what a direct search of the
//    whole text returns: everything before the stop string that completes first.
//
// The tokenizer comes from the GGUF file in $QGATE_FUZZ_GGUF, else the repository's models/ copy;
// without either the target exits 77 (the replay test counts that as skipped).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/chat_prompt.h"
#include "engine/chat_template.h"
#include "engine/gguf.h"
#include "engine/stop_matcher.h"
#include "engine/tokenizer.h"
#include "engine/unicode.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

const qgate::Tokenizer* g_tokenizer = nullptr;

std::vector<std::string_view> split_fields(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == '\x1e') {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

bool well_formed(std::string_view s) { return qgate::unicode::to_valid_utf8(s) == s; }

// Bytes whose byte-level token the vocabulary lacks (21 for SmolLM2: bytes that never occur in
// UTF-8 and some control bytes). encode drops them, as HF tokenizers and llama.cpp do.
bool g_byte_has_token[256];

// What decode(encode(text)) must give: the text less those bytes.
std::string tokenizable(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (g_byte_has_token[static_cast<uint8_t>(c)]) out.push_back(c);
  }
  return out;
}

void check_encode(std::string_view text) {
  const qgate::Tokenizer& tok = *g_tokenizer;
  const std::string expected = tokenizable(text);
  for (bool parse_special : {false, true}) {
    const std::vector<int32_t> ids = tok.encode(text, parse_special);
    for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), "token id %d", id);
    FUZZ_CHECK(tok.decode(ids) == expected, "decode(encode(text, %d)) differs from the text",
               parse_special);
  }
}

void check_chat(std::string_view payload) {
  const qgate::Tokenizer& tok = *g_tokenizer;
  static const auto chat_template = qgate::ChatTemplate::from_source(tok.chat_template_source());
  FUZZ_CHECK(chat_template.ok(), "the model's chat template");
  const std::optional<int32_t> im_start = tok.token_id("<|im_start|>");
  FUZZ_CHECK(im_start.has_value(), "no <|im_start|> token");

  // Fields alternate user/assistant turns; a first field starting with 's' is a system message.
  std::vector<qgate::ChatMessage> messages;
  const std::vector<std::string_view> fields = split_fields(payload);
  size_t first = 0;
  if (!fields[0].empty() && fields[0][0] == 's') {
    messages.push_back({"system", qgate::unicode::to_valid_utf8(fields[0].substr(1))});
    first = 1;
  }
  for (size_t i = first; i < fields.size(); ++i) {
    messages.push_back(
        {(i - first) % 2 == 0 ? "user" : "assistant", qgate::unicode::to_valid_utf8(fields[i])});
  }
  if (messages.empty()) return;
  auto rendered = chat_template->render(messages);
  auto ids = qgate::encode_chat(*chat_template, tok, messages);
  FUZZ_CHECK(rendered.ok() == ids.ok(), "render and encode_chat disagree on validity");
  if (!ids.ok()) return;
  const bool default_system =
      chat_template->default_system().has_value() && messages[0].role != "system";
  const auto turns = static_cast<long>(messages.size() + (default_system ? 1 : 0) + 1);
  FUZZ_CHECK(std::count(ids->begin(), ids->end(), *im_start) == turns,
             "%ld <|im_start|> tokens for %ld turns",
             static_cast<long>(std::count(ids->begin(), ids->end(), *im_start)), turns);
  FUZZ_CHECK(tok.decode(*ids) == tokenizable(*rendered),
             "the chat prompt does not decode to its rendering");
}

void check_detokenize(std::string_view payload) {
  const qgate::Tokenizer& tok = *g_tokenizer;
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < payload.size(); i += 2) {
    const unsigned v = static_cast<uint8_t>(payload[i]) | static_cast<uint8_t>(payload[i + 1]) << 8;
    ids.push_back(static_cast<int32_t>(v % static_cast<unsigned>(tok.vocab_size())));
  }
  qgate::IncrementalDecoder decoder(tok);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = decoder.push(id);
    FUZZ_CHECK(well_formed(piece), "a streamed piece is not well-formed UTF-8");
    streamed += piece;
  }
  const std::string tail = decoder.flush();
  FUZZ_CHECK(well_formed(tail), "the flushed tail is not well-formed UTF-8");
  streamed += tail;
  FUZZ_CHECK(streamed == qgate::unicode::to_valid_utf8(tok.decode(ids, /*skip_special=*/true)),
             "streamed text differs from the text decoded at once");
}

void check_stop(std::string_view payload) {
  if (payload.empty()) return;
  const size_t num_stops = static_cast<uint8_t>(payload[0]) % 5;
  std::vector<std::string_view> fields = split_fields(payload.substr(1));
  if (fields.size() < num_stops + 1) return;
  std::vector<std::string> stops;
  for (size_t i = 0; i < num_stops; ++i) {
    std::string s = qgate::unicode::to_valid_utf8(fields[i]);
    if (s.empty() || s.size() > qgate::StopMatcher::kMaxStopBytes) return;
    stops.push_back(std::move(s));
  }
  FUZZ_CHECK(qgate::StopMatcher::validate(stops).ok(), "valid stop strings refused");
  const std::string text = qgate::unicode::to_valid_utf8(fields[num_stops]);
  // Cut points from the remaining fields' bytes, always at character boundaries.
  std::string cuts;
  for (size_t i = num_stops + 1; i < fields.size(); ++i) cuts.append(fields[i]);

  // Reference: of each stop string's first occurrence, the one that ends first (then starts first).
  size_t best_start = std::string::npos, best_end = std::string::npos;
  for (const std::string& s : stops) {
    const size_t at = text.find(s);
    if (at == std::string::npos) continue;
    const size_t end = at + s.size();
    if (end < best_end || (end == best_end && at < best_start)) {
      best_start = at;
      best_end = end;
    }
  }
  const std::string expected = best_start == std::string::npos ? text : text.substr(0, best_start);

  qgate::StopMatcher matcher(stops);
  std::string got;
  size_t pos = 0, cut = 0;
  bool stopped = false;
  while (pos < text.size()) {
    size_t chars = cuts.empty() ? 1 : static_cast<uint8_t>(cuts[cut++ % cuts.size()]) % 6 + 1;
    size_t end = pos;
    while (chars-- > 0 && end < text.size()) end += qgate::unicode::decode_utf8(text, end).len;
    qgate::StopMatcher::Output out = matcher.push(std::string_view(text).substr(pos, end - pos));
    FUZZ_CHECK(well_formed(out.text), "the matcher cut a character");
    FUZZ_CHECK(!stopped || out.text.empty(), "text after the stop");
    got += out.text;
    stopped = stopped || out.stopped;
    pos = end;
  }
  if (!stopped) got += matcher.flush();
  FUZZ_CHECK(stopped == (best_start != std::string::npos), "stopped %d, expected %d", stopped,
             best_start != std::string::npos);
  FUZZ_CHECK(got == expected, "streamed %zu bytes, expected %zu", got.size(), expected.size());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* env = std::getenv("QGATE_FUZZ_GGUF");
  const std::string path = env != nullptr ? env : QGATE_FUZZ_DEFAULT_GGUF;
  auto gguf = qgate::GgufFile::open(path);
  if (!gguf.ok()) {
    std::fprintf(stderr, "fuzz_text: no tokenizer (%s); skipped\n", gguf.error().message().c_str());
    std::exit(77);
  }
  auto tokenizer = qgate::Tokenizer::from_gguf(gguf.value());
  FUZZ_CHECK(tokenizer.ok(), "%s", tokenizer.error().message().c_str());
  g_tokenizer = new qgate::Tokenizer(std::move(tokenizer).value());
  for (int b = 0; b < 256; ++b) {
    std::string token;
    qgate::unicode::append_utf8(token, qgate::unicode::byte_to_codepoint(static_cast<uint8_t>(b)));
    g_byte_has_token[b] = g_tokenizer->token_id(token).has_value();
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view payload(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      check_encode(payload);
      break;
    case 1:
      check_chat(payload);
      break;
    case 2:
      check_detokenize(payload);
      break;
    default:
      check_stop(payload);
      break;
  }
  return 0;
}
