// Byte-level BPE as HF `tokenizers` runs it (its ids are what models were trained on):
//   1. added/special tokens are cut out of the text first, leftmost-longest match;
//   2. the rest is split into words by the model's pre-tokenizer pattern (engine/unicode.h);
//   3. each word's bytes become single-byte symbols, merged pairwise lowest-rank-first (ties:
//      leftmost), exactly the order HF's BPE model uses, so equal-rank overlaps resolve the same.
// No per-word cache: the merge loop works on integer ids only and a few KB encode in well under a
// millisecond, so a cache would buy little and cost a lock on a shared path.
#include "engine/tokenizer.h"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "engine/gguf.h"
#include "engine/split_patterns.h"
#include "engine/unicode.h"

namespace qgate {

namespace {

constexpr std::string_view kGpt2Pattern = split_patterns::kGpt2;
constexpr std::string_view kLlama3Pattern = split_patterns::kLlama3;
constexpr std::string_view kQwen2Pattern = split_patterns::kQwen2;

// Sanity bound on ids from a file, so a hostile id cannot make us allocate gigabytes.
constexpr int64_t kMaxVocab = 1 << 24;

struct AddedToken {
  std::string text;
  int32_t id = 0;
  bool special =
      true;  // control token: skipped by decode(skip_special), matched only with parse_special
  bool lstrip = false;  // also swallows whitespace before it
  bool rstrip = false;  // also swallows whitespace after it
};

// Everything a tokenizer is built from, whichever file it came from.
struct Spec {
  std::vector<std::string> tokens;  // by id, in byte-level form; holes are empty and absent
  std::vector<bool> present;
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<AddedToken> added;
  PreTokenizer pre = PreTokenizer::kGpt2;
  bool ignore_merges = false;  // HF: a word that is itself a vocab entry skips the merges
  std::optional<int64_t> bos, eos;
  bool add_bos = false;
  std::string chat_template;
  std::string source;  // names the input in error messages
};

struct MergeInfo {
  int32_t rank;
  int32_t id;
};

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

std::string byte_level_decode(std::string_view text) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    unicode::Utf8Step step = unicode::decode_utf8(text, pos);
    int b = step.valid ? unicode::byte_from_codepoint(step.cp) : -1;
    if (b >= 0) {
      out.push_back(static_cast<char>(b));
    } else {
      out.append(text.substr(pos, step.len));  // not a byte-level char: keep it as it is
    }
    pos += step.len;
  }
  return out;
}

bool is_space_at(std::string_view s, size_t pos, size_t* len) {
  unicode::Utf8Step step = unicode::decode_utf8(s, pos);
  *len = step.len;
  return step.valid && (unicode::char_flags(step.cp) & unicode::kSpace);
}

// ---- HF tokenizer.json helpers --------------------------------------------------------------

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::object;

Error json_error(const std::string& what) {
  return make_error(ErrorCode::kInvalidFormat, "tokenizer.json: " + what);
}

// Optional field: nullopt when absent or null, an error when of another type.
Result<std::optional<std::string_view>> opt_string(object obj, std::string_view key,
                                                   const std::string& where) {
  element e;
  if (obj.at_key(key).get(e) != simdjson::SUCCESS || e.is_null())
    return std::optional<std::string_view>();
  std::string_view v;
  if (e.get_string().get(v) != simdjson::SUCCESS)
    return json_error(where + "." + std::string(key) + " is not a string");
  return std::optional<std::string_view>(v);
}

Result<bool> opt_bool(object obj, std::string_view key, bool fallback, const std::string& where) {
  element e;
  if (obj.at_key(key).get(e) != simdjson::SUCCESS || e.is_null()) return fallback;
  bool v;
  if (e.get_bool().get(v) != simdjson::SUCCESS)
    return json_error(where + "." + std::string(key) + " is not a bool");
  return v;
}

// Recognizes the pre-tokenizer chains byte-level BPE models ship with.
Result<PreTokenizer> parse_pre_tokenizer(element pt) {
  if (pt.is_null())
    return make_error(ErrorCode::kUnsupported,
                      "tokenizer.json: pre_tokenizer is null (not a byte-level BPE split)");
  std::vector<object> steps;
  object top;
  if (pt.get_object().get(top)) return json_error("pre_tokenizer is not an object");
  QGATE_ASSIGN_OR_RETURN(auto top_type, opt_string(top, "type", "pre_tokenizer"));
  if (top_type && *top_type == "Sequence") {
    array list;
    if (top["pretokenizers"].get_array().get(list))
      return json_error("pre_tokenizer.pretokenizers is not an array");
    for (element e : list) {
      object o;
      if (e.get_object().get(o))
        return json_error("pre_tokenizer.pretokenizers holds a non-object");
      steps.push_back(o);
    }
  } else {
    steps.push_back(top);
  }
  bool digits = false, byte_level = false, byte_level_regex = false;
  std::optional<std::string_view> split;
  for (size_t k = 0; k < steps.size(); ++k) {
    std::string where = "pre_tokenizer step " + std::to_string(k);
    QGATE_ASSIGN_OR_RETURN(auto type, opt_string(steps[k], "type", where));
    std::string t(type.value_or(""));
    if (byte_level)
      return make_error(ErrorCode::kUnsupported,
                        "tokenizer.json: " + where + " (" + t + ") follows ByteLevel");
    if (t == "Digits") {
      QGATE_ASSIGN_OR_RETURN(bool individual,
                             opt_bool(steps[k], "individual_digits", false, where));
      if (!individual || digits || split) {
        return make_error(ErrorCode::kUnsupported,
                          "tokenizer.json: " + where +
                              ": only a leading Digits(individual_digits=true) is supported");
      }
      digits = true;
    } else if (t == "ByteLevel") {
      // HF's default add_prefix_space is true; a missing field therefore means a prefix space.
      QGATE_ASSIGN_OR_RETURN(bool prefix, opt_bool(steps[k], "add_prefix_space", true, where));
      if (prefix)
        return make_error(
            ErrorCode::kUnsupported,
            "tokenizer.json: " + where + ": ByteLevel add_prefix_space is not supported");
      QGATE_ASSIGN_OR_RETURN(byte_level_regex, opt_bool(steps[k], "use_regex", true, where));
      byte_level = true;
    } else if (t == "Split") {
      object pattern;
      std::string_view regex;
      if (steps[k]["pattern"].get_object().get(pattern) ||
          pattern["Regex"].get_string().get(regex)) {
        return make_error(ErrorCode::kUnsupported,
                          "tokenizer.json: " + where + ": Split needs a {\"Regex\": ...} pattern");
      }
      QGATE_ASSIGN_OR_RETURN(auto behavior, opt_string(steps[k], "behavior", where));
      QGATE_ASSIGN_OR_RETURN(bool invert, opt_bool(steps[k], "invert", false, where));
      if (behavior.value_or("") != "Isolated" || invert || split) {
        return make_error(ErrorCode::kUnsupported,
                          "tokenizer.json: " + where +
                              ": only one Split with behavior Isolated, invert false is supported");
      }
      split = regex;
    } else {
      return make_error(ErrorCode::kUnsupported,
                        "tokenizer.json: pre-tokenizer type '" + t + "' is not supported");
    }
  }
  if (!byte_level)
    return make_error(ErrorCode::kUnsupported,
                      "tokenizer.json: pre_tokenizer has no ByteLevel step");
  if (!split) {
    if (!byte_level_regex)
      return make_error(ErrorCode::kUnsupported,
                        "tokenizer.json: ByteLevel without regex and no Split: no split pattern");
    return digits ? PreTokenizer::kSmolLm : PreTokenizer::kGpt2;
  }
  if (byte_level_regex || digits)
    return make_error(
        ErrorCode::kUnsupported,
        "tokenizer.json: Split combined with Digits or a ByteLevel regex is not supported");
  if (*split == kGpt2Pattern) return PreTokenizer::kGpt2;
  if (*split == kLlama3Pattern) return PreTokenizer::kLlama3;
  if (*split == kQwen2Pattern) return PreTokenizer::kQwen2;
  return make_error(
      ErrorCode::kUnsupported,
      "tokenizer.json: split pattern is not one of the known ones (GPT-2, Llama-3, Qwen2): " +
          std::string(*split));
}

// add_bos is true when the post-processor template for one sequence starts with a special token.
std::optional<std::string> template_bos(element pp) {
  object o;
  if (pp.get_object().get(o)) return std::nullopt;
  std::string_view type;
  if (o["type"].get_string().get(type)) return std::nullopt;
  if (type == "Sequence") {
    array list;
    if (o["processors"].get_array().get(list)) return std::nullopt;
    for (element e : list) {
      if (auto t = template_bos(e)) return t;
    }
    return std::nullopt;
  }
  array single;
  element first;
  std::string_view id;
  if (type != "TemplateProcessing" || o["single"].get_array().get(single) ||
      single.at(0).get(first) || first["SpecialToken"]["id"].get_string().get(id)) {
    return std::nullopt;
  }
  return std::string(id);
}

}  // namespace

struct Tokenizer::Impl {
  std::vector<std::string> tokens;
  std::vector<std::string> raw;  // bytes each id decodes to
  std::vector<uint8_t> special;  // 1 for control tokens
  std::unordered_map<std::string, int32_t> ids;
  std::unordered_map<uint64_t, MergeInfo> merges;
  std::array<int32_t, 256> byte_token{};
  std::vector<AddedToken> added;  // longest first
  std::array<std::vector<uint32_t>, 256> added_by_first_byte;
  PreTokenizer pre = PreTokenizer::kGpt2;
  bool ignore_merges = false;
  std::optional<int32_t> bos, eos;
  std::vector<int32_t> stop;
  bool add_bos = false;
  std::string chat_template;

  static Result<std::unique_ptr<Impl>> build(Spec spec);
  void bpe(std::string_view word, std::vector<int32_t>& out) const;
  void encode_text(std::string_view text, std::vector<int32_t>& out) const;
};

Result<std::unique_ptr<Tokenizer::Impl>> Tokenizer::Impl::build(Spec spec) {
  auto impl = std::make_unique<Tokenizer::Impl>();
  const std::string& src = spec.source;
  int32_t n = static_cast<int32_t>(spec.tokens.size());
  impl->raw.resize(n);
  impl->special.assign(n, 0);
  impl->ids.reserve(n * 2);
  for (int32_t id = 0; id < n; ++id) {
    if (!spec.present[id]) continue;
    impl->ids.emplace(spec.tokens[id], id);  // first id wins for a duplicated text
    impl->raw[id] = byte_level_decode(spec.tokens[id]);
  }
  for (AddedToken& t : spec.added) {
    if (t.id < 0 || t.id >= n) {
      return make_error(ErrorCode::kInvalidFormat, src + ": added token '" + t.text + "' has id " +
                                                       std::to_string(t.id) +
                                                       " outside the vocabulary");
    }
    if (t.text.empty()) {
      return make_error(ErrorCode::kInvalidFormat,
                        src + ": added token " + std::to_string(t.id) + " is empty");
    }
    // Added tokens are literal text, not byte-level encoded.
    impl->raw[t.id] = t.text;
    impl->special[t.id] = t.special ? 1 : 0;
    if (!spec.present[t.id]) {
      spec.tokens[t.id] = t.text;
      spec.present[t.id] = true;
      impl->ids.emplace(t.text, t.id);
    }
  }
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    unicode::append_utf8(ch, unicode::byte_to_codepoint(static_cast<uint8_t>(b)));
    auto it = impl->ids.find(ch);
    impl->byte_token[b] = it == impl->ids.end() ? -1 : it->second;
  }
  impl->merges.reserve(spec.merges.size() * 2);
  for (size_t r = 0; r < spec.merges.size(); ++r) {
    // Plain references, not structured bindings: C++20 lambdas may not capture bindings (clang).
    const std::string& a = spec.merges[r].first;
    const std::string& b = spec.merges[r].second;
    auto name = [&] { return src + ": merge " + std::to_string(r) + " ('" + a + " " + b + "')"; };
    auto ia = impl->ids.find(a), ib = impl->ids.find(b), ic = impl->ids.find(a + b);
    if (ia == impl->ids.end() || ib == impl->ids.end()) {
      return make_error(ErrorCode::kInvalidFormat, name() + " names a token not in the vocabulary");
    }
    if (ic == impl->ids.end()) {
      return make_error(ErrorCode::kInvalidFormat,
                        name() + " makes '" + a + b + "', not in the vocabulary");
    }
    impl->merges.emplace(pair_key(ia->second, ib->second),
                         MergeInfo{static_cast<int32_t>(r), ic->second});
  }
  std::stable_sort(
      spec.added.begin(), spec.added.end(),
      [](const AddedToken& x, const AddedToken& y) { return x.text.size() > y.text.size(); });
  impl->added = std::move(spec.added);
  for (uint32_t k = 0; k < impl->added.size(); ++k) {
    impl->added_by_first_byte[static_cast<uint8_t>(impl->added[k].text[0])].push_back(k);
  }
  auto check_id = [&](std::optional<int64_t> v,
                      const char* what) -> Result<std::optional<int32_t>> {
    if (!v) return std::optional<int32_t>();
    if (*v < 0 || *v >= n) {
      return make_error(ErrorCode::kInvalidFormat, src + ": " + what + " id " + std::to_string(*v) +
                                                       " outside the vocabulary");
    }
    return std::optional<int32_t>(static_cast<int32_t>(*v));
  };
  QGATE_ASSIGN_OR_RETURN(impl->bos, check_id(spec.bos, "bos"));
  QGATE_ASSIGN_OR_RETURN(impl->eos, check_id(spec.eos, "eos"));
  if (impl->eos) impl->stop.push_back(*impl->eos);
  for (std::string_view name : {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>"}) {
    auto it = impl->ids.find(std::string(name));
    if (it != impl->ids.end() && impl->special[it->second] &&
        std::find(impl->stop.begin(), impl->stop.end(), it->second) == impl->stop.end()) {
      impl->stop.push_back(it->second);
    }
  }
  impl->tokens = std::move(spec.tokens);
  impl->pre = spec.pre;
  impl->ignore_merges = spec.ignore_merges;
  impl->add_bos = spec.add_bos;
  impl->chat_template = std::move(spec.chat_template);
  return impl;
}

void Tokenizer::Impl::bpe(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() == 1) {
    int32_t id = byte_token[static_cast<uint8_t>(word[0])];
    if (id >= 0) out.push_back(id);
    return;
  }
  if (ignore_merges) {
    std::string text;
    for (char c : word)
      unicode::append_utf8(text, unicode::byte_to_codepoint(static_cast<uint8_t>(c)));
    auto it = ids.find(text);
    if (it != ids.end()) {
      out.push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id, prev, next;
  };
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  for (char c : word) {
    int32_t id = byte_token[static_cast<uint8_t>(c)];
    // A byte missing from the vocabulary is dropped, as HF's BPE does without an unk token.
    if (id < 0) continue;
    int32_t k = static_cast<int32_t>(sym.size());
    sym.push_back({id, k - 1, -1});
    if (k > 0) sym[k - 1].next = k;
  }
  struct Candidate {
    int32_t rank, pos, id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int32_t left) {
    if (left < 0 || sym[left].next < 0) return;
    auto it = merges.find(pair_key(sym[left].id, sym[sym[left].next].id));
    if (it != merges.end()) queue.push({it->second.rank, left, it->second.id});
  };
  for (int32_t k = 0; k + 1 < static_cast<int32_t>(sym.size()); ++k) consider(k);
  while (!queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    Symbol& left = sym[top.pos];
    if (left.id < 0 || left.next < 0) continue;
    // The entry may be stale: either side may have merged since it was queued.
    auto it = merges.find(pair_key(left.id, sym[left.next].id));
    if (it == merges.end() || it->second.id != top.id) continue;
    Symbol& right = sym[left.next];
    left.id = top.id;
    right.id = -1;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = top.pos;
    consider(left.prev);
    consider(top.pos);
  }
  for (int32_t k = sym.empty() ? -1 : 0; k >= 0; k = sym[k].next) out.push_back(sym[k].id);
}

void Tokenizer::Impl::encode_text(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  auto run_bpe = [&](const std::vector<std::string_view>& words) {
    for (std::string_view w : words) bpe(w, out);
  };
  switch (pre) {
    case PreTokenizer::kGpt2:
      run_bpe(unicode::split_gpt2(text));
      break;
    case PreTokenizer::kSmolLm:
      // HF Sequence[Digits, ByteLevel]: the regex runs on each piece the digit split leaves.
      for (std::string_view piece : unicode::split_digits(text))
        run_bpe(unicode::split_gpt2(piece));
      break;
    case PreTokenizer::kLlama3:
      run_bpe(unicode::split_llama3(text, 3));
      break;
    case PreTokenizer::kQwen2:
      run_bpe(unicode::split_llama3(text, 1));
      break;
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  return encode_impl(text, [parse_special](size_t, size_t) { return parse_special; });
}

std::vector<int32_t> Tokenizer::encode_with_plain_ranges(
    std::string_view text, std::span<const std::pair<size_t, size_t>> plain_ranges) const {
  // A special token may match only where it overlaps no plain range.
  return encode_impl(text, [plain_ranges](size_t begin, size_t end) {
    for (const auto& [b, e] : plain_ranges) {
      if (begin < e && b < end) return false;
    }
    return true;
  });
}

std::vector<int32_t> Tokenizer::encode_impl(
    std::string_view text, const std::function<bool(size_t, size_t)>& special_allowed) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  size_t seg_start = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const AddedToken* match = nullptr;
    for (uint32_t k : impl_->added_by_first_byte[static_cast<uint8_t>(text[pos])]) {
      const AddedToken& t = impl_->added[k];
      // Like HF and llama.cpp, only control tokens become plain text without parse_special;
      // user-defined tokens are part of the vocabulary's segmentation and always match.
      if (text.compare(pos, t.text.size(), t.text) == 0) {
        if (t.special && !special_allowed(pos, pos + t.text.size())) continue;
        match = &t;  // candidates are longest first
        break;
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    size_t begin = pos, end = pos + match->text.size();
    if (match->lstrip) {
      while (begin > seg_start) {
        size_t prev = begin - 1;
        while (prev > seg_start && (static_cast<uint8_t>(text[prev]) & 0xC0) == 0x80) --prev;
        size_t len;
        if (!is_space_at(text, prev, &len) || prev + len != begin) break;
        begin = prev;
      }
    }
    if (match->rstrip) {
      size_t len;
      while (end < text.size() && is_space_at(text, end, &len)) end += len;
    }
    impl_->encode_text(text.substr(seg_start, begin - seg_start), out);
    out.push_back(match->id);
    pos = seg_start = end;
  }
  impl_->encode_text(text.substr(seg_start), out);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;  // an id no token has decodes to nothing
    if (skip_special && impl_->special[id]) continue;
    out += impl_->raw[id];
  }
  return out;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return impl_->raw[id];
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->tokens.size()); }

std::optional<int32_t> Tokenizer::token_id(std::string_view token_text) const {
  auto it = impl_->ids.find(std::string(token_text));
  if (it == impl_->ids.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->special[id];
}
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
const std::vector<int32_t>& Tokenizer::stop_ids() const { return impl_->stop; }
bool Tokenizer::add_bos() const { return impl_->add_bos; }
PreTokenizer Tokenizer::pre_tokenizer() const { return impl_->pre; }
const std::string& Tokenizer::chat_template_source() const { return impl_->chat_template; }

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

// ---- GGUF ----------------------------------------------------------------------------------

Result<Tokenizer> Tokenizer::from_gguf(const GgufFile& gguf) {
  Spec spec;
  spec.source = "gguf tokenizer";
  QGATE_ASSIGN_OR_RETURN(std::string model, gguf.get_string("tokenizer.ggml.model"));
  if (model != "gpt2") {
    return make_error(
        ErrorCode::kUnsupported,
        "gguf: tokenizer.ggml.model '" + model + "' is not supported (only 'gpt2' byte-level BPE)");
  }
  if (!gguf.has("tokenizer.ggml.pre")) {
    return make_error(ErrorCode::kUnsupported,
                      "gguf: tokenizer.ggml.pre is missing; the split pattern is unknown");
  }
  QGATE_ASSIGN_OR_RETURN(std::string pre, gguf.get_string("tokenizer.ggml.pre"));
  if (pre == "smollm") {
    spec.pre = PreTokenizer::kSmolLm;
  } else if (pre == "gpt2") {
    spec.pre = PreTokenizer::kGpt2;
  } else if (pre == "llama-bpe" || pre == "llama3") {
    spec.pre = PreTokenizer::kLlama3;
    spec.ignore_merges = true;  // Llama-3's tokenizer.json sets ignore_merges
  } else if (pre == "qwen2") {
    spec.pre = PreTokenizer::kQwen2;
  } else {
    return make_error(ErrorCode::kUnsupported,
                      "gguf: tokenizer.ggml.pre '" + pre +
                          "' is not supported "
                          "(known: smollm, gpt2, llama-bpe, llama3, qwen2)");
  }
  QGATE_ASSIGN_OR_RETURN(spec.tokens, gguf.get_string_array("tokenizer.ggml.tokens"));
  if (static_cast<int64_t>(spec.tokens.size()) > kMaxVocab) {
    return make_error(ErrorCode::kOutOfRange, "gguf: tokenizer.ggml.tokens has too many entries");
  }
  spec.present.assign(spec.tokens.size(), true);
  std::vector<int64_t> types;
  if (gguf.has("tokenizer.ggml.token_type")) {
    QGATE_ASSIGN_OR_RETURN(types, gguf.get_int_array("tokenizer.ggml.token_type"));
    if (types.size() != spec.tokens.size()) {
      return make_error(ErrorCode::kInvalidFormat,
                        "gguf: tokenizer.ggml.token_type has " + std::to_string(types.size()) +
                            " entries for " + std::to_string(spec.tokens.size()) + " tokens");
    }
  }
  for (size_t id = 0; id < types.size(); ++id) {
    // 3 = control, 4 = user-defined; both are literal text matched before the split.
    if (types[id] == 3 || types[id] == 4) {
      spec.added.push_back({spec.tokens[id], static_cast<int32_t>(id), types[id] == 3});
    }
  }
  QGATE_ASSIGN_OR_RETURN(std::vector<std::string> merges,
                         gguf.get_string_array("tokenizer.ggml.merges"));
  spec.merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    size_t sp = merges[r].find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == merges[r].size()) {
      return make_error(ErrorCode::kInvalidFormat, "gguf: tokenizer.ggml.merges[" +
                                                       std::to_string(r) + "] '" + merges[r] +
                                                       "' is not 'a b'");
    }
    spec.merges.emplace_back(merges[r].substr(0, sp), merges[r].substr(sp + 1));
  }
  for (auto [key, slot] : {std::pair{"tokenizer.ggml.bos_token_id", &spec.bos},
                           std::pair{"tokenizer.ggml.eos_token_id", &spec.eos}}) {
    if (!gguf.has(key)) continue;
    QGATE_ASSIGN_OR_RETURN(int64_t v, gguf.get_int(key));
    *slot = v;
  }
  // Absent means no BOS: byte-level BPE models mostly go without one, and files of models that
  // want it (Llama-3) carry the key.
  if (gguf.has("tokenizer.ggml.add_bos_token")) {
    QGATE_ASSIGN_OR_RETURN(spec.add_bos, gguf.get_bool("tokenizer.ggml.add_bos_token"));
  }
  if (gguf.has("tokenizer.chat_template")) {
    QGATE_ASSIGN_OR_RETURN(spec.chat_template, gguf.get_string("tokenizer.chat_template"));
  }
  QGATE_ASSIGN_OR_RETURN(std::unique_ptr<Impl> impl, Impl::build(std::move(spec)));
  return Tokenizer(std::move(impl));
}

// ---- HF tokenizer.json --------------------------------------------------------------------

// tokenizer.json does not name BOS/EOS (tokenizer_config.json does); until the caller reads that,
// they are taken by convention from the special added tokens' names, first found wins. The BOS
// named by a TemplateProcessing post-processor takes precedence and also turns on add_bos.
Result<Tokenizer> Tokenizer::from_hf_json(std::string_view json_text) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(json_text);
  element root;
  if (auto err = parser.parse(padded).get(root))
    return json_error(std::string("not valid JSON: ") + simdjson::error_message(err));
  Spec spec;
  spec.source = "tokenizer.json";
  object model;
  if (root["model"].get_object().get(model)) return json_error("no \"model\" object");
  QGATE_ASSIGN_OR_RETURN(auto type, opt_string(model, "type", "model"));
  if (type.value_or("") != "BPE") {
    return make_error(ErrorCode::kUnsupported, "tokenizer.json: model.type '" +
                                                   std::string(type.value_or("")) +
                                                   "' is not supported (only BPE)");
  }
  QGATE_ASSIGN_OR_RETURN(bool byte_fallback, opt_bool(model, "byte_fallback", false, "model"));
  QGATE_ASSIGN_OR_RETURN(auto prefix, opt_string(model, "continuing_subword_prefix", "model"));
  QGATE_ASSIGN_OR_RETURN(auto suffix, opt_string(model, "end_of_word_suffix", "model"));
  if (byte_fallback || !prefix.value_or("").empty() || !suffix.value_or("").empty()) {
    return make_error(
        ErrorCode::kUnsupported,
        "tokenizer.json: BPE byte_fallback / subword prefix / word suffix are not supported");
  }
  QGATE_ASSIGN_OR_RETURN(spec.ignore_merges, opt_bool(model, "ignore_merges", false, "model"));
  element normalizer;
  if (!root["normalizer"].get(normalizer) && !normalizer.is_null()) {
    std::string_view ntype;
    if (normalizer["type"].get_string().get(ntype)) ntype = "?";
    return make_error(ErrorCode::kUnsupported,
                      "tokenizer.json: normalizer '" + std::string(ntype) + "' is not supported");
  }
  element pt;
  if (root["pre_tokenizer"].get(pt)) return json_error("no \"pre_tokenizer\"");
  QGATE_ASSIGN_OR_RETURN(spec.pre, parse_pre_tokenizer(pt));

  object vocab;
  if (model["vocab"].get_object().get(vocab)) return json_error("model.vocab is not an object");
  for (auto field : vocab) {
    int64_t id;
    if (field.value.get_int64().get(id) || id < 0 || id >= kMaxVocab) {
      return json_error("model.vocab['" + std::string(field.key) + "'] is not a valid id");
    }
    if (id >= static_cast<int64_t>(spec.tokens.size())) {
      spec.tokens.resize(id + 1);
      spec.present.resize(id + 1, false);
    }
    if (spec.present[id])
      return json_error("model.vocab gives id " + std::to_string(id) + " twice");
    spec.tokens[id] = std::string(field.key);
    spec.present[id] = true;
  }
  array merges;
  if (model["merges"].get_array().get(merges)) return json_error("model.merges is not an array");
  for (element m : merges) {
    std::string where = "model.merges[" + std::to_string(spec.merges.size()) + "]";
    std::string_view str, a, b;
    array pair;
    if (!m.get_string().get(str)) {
      size_t sp = str.find(' ');
      if (sp == std::string_view::npos || sp == 0 || sp + 1 == str.size() ||
          str.find(' ', sp + 1) != std::string_view::npos) {
        return json_error(where + " '" + std::string(str) + "' is not 'a b'");
      }
      a = str.substr(0, sp);
      b = str.substr(sp + 1);
    } else if (!m.get_array().get(pair) && pair.size() == 2 && !pair.at(0).get_string().get(a) &&
               !pair.at(1).get_string().get(b)) {
    } else {
      return json_error(where + " is neither \"a b\" nor [a, b]");
    }
    spec.merges.emplace_back(std::string(a), std::string(b));
  }
  array added;
  if (!root["added_tokens"].get_array().get(added)) {
    for (element e : added) {
      std::string where = "added_tokens[" + std::to_string(spec.added.size()) + "]";
      object o;
      int64_t id;
      std::string_view content;
      if (e.get_object().get(o) || o["id"].get_int64().get(id) ||
          o["content"].get_string().get(content)) {
        return json_error(where + " needs an integer id and a string content");
      }
      if (id < 0 || id >= kMaxVocab) return json_error(where + " id out of range");
      AddedToken t{std::string(content), static_cast<int32_t>(id)};
      QGATE_ASSIGN_OR_RETURN(t.special, opt_bool(o, "special", false, where));
      QGATE_ASSIGN_OR_RETURN(t.lstrip, opt_bool(o, "lstrip", false, where));
      QGATE_ASSIGN_OR_RETURN(t.rstrip, opt_bool(o, "rstrip", false, where));
      QGATE_ASSIGN_OR_RETURN(bool single_word, opt_bool(o, "single_word", false, where));
      if (single_word)
        return make_error(ErrorCode::kUnsupported,
                          "tokenizer.json: " + where + " single_word is not supported");
      if (id >= static_cast<int64_t>(spec.tokens.size())) {
        spec.tokens.resize(id + 1);
        spec.present.resize(id + 1, false);
      }
      spec.added.push_back(std::move(t));
    }
  }
  auto special_named =
      [&](std::initializer_list<std::string_view> names) -> std::optional<int64_t> {
    for (std::string_view name : names) {
      for (const AddedToken& t : spec.added) {
        if (t.special && t.text == name) return t.id;
      }
    }
    return std::nullopt;
  };
  spec.bos = special_named({"<|begin_of_text|>", "<s>", "<|startoftext|>", "<|im_start|>"});
  spec.eos =
      special_named({"<|eot_id|>", "<|im_end|>", "</s>", "<|end_of_text|>", "<|endoftext|>"});
  element pp;
  if (!root["post_processor"].get(pp)) {
    if (auto bos = template_bos(pp)) {
      if (auto id = special_named({*bos})) {
        spec.bos = id;
        spec.add_bos = true;
      }
    }
  }
  QGATE_ASSIGN_OR_RETURN(std::unique_ptr<Impl> impl, Impl::build(std::move(spec)));
  return Tokenizer(std::move(impl));
}

Result<Tokenizer> Tokenizer::from_hf_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kNotFound, "tokenizer.json: cannot open '" + path + "'");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return make_error(ErrorCode::kIo, "tokenizer.json: error reading '" + path + "'");
  return from_hf_json(text.str());
}

// ---- IncrementalDecoder -------------------------------------------------------------------

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(&tokenizer), skip_special_(skip_special) {}

std::string IncrementalDecoder::push(int32_t id) {
  if (skip_special_ && tokenizer_->is_special(id)) return {};
  pending_ += tokenizer_->token_bytes(id);
  // Bytes that can never become a character are replaced now; a well-formed but unfinished tail
  // waits for the next token.
  size_t ready = unicode::complete_prefix_len(pending_);
  std::string out = unicode::to_valid_utf8(std::string_view(pending_).substr(0, ready));
  pending_.erase(0, ready);
  return out;
}

std::string IncrementalDecoder::flush() {
  std::string out = unicode::to_valid_utf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace qgate
