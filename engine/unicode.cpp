#include "engine/unicode.h"

#include <algorithm>

namespace qgate::unicode {

namespace {

// One decoded character of the text being split: where it lies and what classes it has.
// Ill-formed bytes become characters of no class, so the splits never lose or reorder bytes.
struct Char {
  uint32_t cp;
  uint32_t offset;
  uint8_t flags;
};

std::vector<Char> decode_all(std::string_view text) {
  std::vector<Char> chars;
  chars.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    Utf8Step step = decode_utf8(text, pos);
    uint32_t cp = step.valid ? step.cp : 0xFFFFFFFFu;
    chars.push_back(
        {cp, static_cast<uint32_t>(pos), step.valid ? char_flags(step.cp) : uint8_t{0}});
    pos += step.len;
  }
  return chars;
}

// Walks the decoded characters; pieces are emitted as [begin, end) character index ranges.
class Splitter {
 public:
  explicit Splitter(std::string_view text) : text_(text), chars_(decode_all(text)) {}

  size_t size() const { return chars_.size(); }
  uint32_t cp(size_t i) const { return i < chars_.size() ? chars_[i].cp : 0xFFFFFFFFu; }
  bool has(size_t i, uint8_t flag) const { return i < chars_.size() && (chars_[i].flags & flag); }
  bool letter(size_t i) const { return has(i, kLetter); }
  bool number(size_t i) const { return has(i, kNumber); }
  bool space(size_t i) const { return has(i, kSpace); }
  // [^\s\p{L}\p{N}]
  bool other(size_t i) const {
    return i < chars_.size() && !(chars_[i].flags & (kLetter | kNumber | kSpace));
  }
  bool newline(size_t i) const { return cp(i) == '\r' || cp(i) == '\n'; }

  size_t run(size_t i, uint8_t flag) const {
    while (has(i, flag)) ++i;
    return i;
  }
  size_t other_run(size_t i) const {
    while (other(i)) ++i;
    return i;
  }

  // \s+(?!\S) then \s+, for a whitespace run starting at i: the backtracking of the lookahead
  // leaves the last whitespace character for the next piece when a non-space follows, so that
  // " word" can keep its leading space.
  size_t whitespace_tail(size_t i) const {
    size_t end = run(i, kSpace);
    if (end == chars_.size() || end - i == 1) return end;
    return end - 1;
  }

  void emit(size_t begin, size_t end) {
    size_t b = chars_[begin].offset;
    size_t e = end < chars_.size() ? chars_[end].offset : text_.size();
    pieces_.push_back(text_.substr(b, e - b));
  }
  std::vector<std::string_view> take() { return std::move(pieces_); }

 private:
  std::string_view text_;
  std::vector<Char> chars_;
  std::vector<std::string_view> pieces_;
};

// Length of a contraction ('s 't 're 've 'm 'll 'd) at i, or 0. The case-insensitive form also
// accepts U+017F (long s), which Unicode case folding equates with 's' as Oniguruma's (?i) does.
size_t contraction(const Splitter& s, size_t i, bool ignore_case) {
  if (s.cp(i) != '\'') return 0;
  auto lower = [&](size_t k) -> uint32_t {
    uint32_t c = s.cp(k);
    if (!ignore_case) return c;
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c == 0x17F) return 's';
    return c;
  };
  uint32_t a = lower(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  uint32_t b = lower(i + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

}  // namespace

uint8_t char_flags(uint32_t cp) {
  if (cp < 0x80) {
    if (cp >= 'a' && cp <= 'z') return kLetter;
    if (cp >= 'A' && cp <= 'Z') return kLetter;
    if (cp >= '0' && cp <= '9') return kNumber | kDigitSplit;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return kSpace;
    return 0;
  }
  const CodepointRange* begin = kCodepointRanges;
  const CodepointRange* end = kCodepointRanges + kNumCodepointRanges;
  const CodepointRange* it = std::upper_bound(
      begin, end, cp, [](uint32_t c, const CodepointRange& r) { return c < r.first; });
  if (it == begin) return 0;
  --it;
  return cp <= it->last ? it->flags : 0;
}

Utf8Step decode_utf8(std::string_view s, size_t pos) {
  auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  uint8_t b0 = byte(pos);
  if (b0 < 0x80) return {b0, 1, true, false};
  uint32_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte (excludes overlongs etc.)
  uint32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
  } else {
    return {0, 1, false, false};
  }
  for (uint32_t k = 1; k <= need; ++k) {
    if (pos + k >= s.size()) return {0, k, false, true};
    uint8_t b = byte(pos + k);
    uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) return {0, k, false, false};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {cp, need + 1, true, false};
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string to_valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    Utf8Step step = decode_utf8(s, pos);
    if (step.valid) {
      out.append(s.substr(pos, step.len));
    } else {
      append_utf8(out, 0xFFFD);
    }
    pos += step.len;
  }
  return out;
}

size_t complete_prefix_len(std::string_view s) {
  // A character is at most 4 bytes, so only a lead byte among the last 3 can start an unfinished
  // one. Lead bytes are never continuation bytes, so decoding from each is safe.
  for (size_t p = s.size() > 3 ? s.size() - 3 : 0; p < s.size(); ++p) {
    if (decode_utf8(s, p).truncated) return p;
  }
  return s.size();
}

uint32_t byte_to_codepoint(uint8_t b) {
  // Printable Latin-1 bytes stand for themselves; the other 68 are moved to U+0100.. in order.
  if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
  uint32_t n = 0;
  for (uint32_t x = 0; x < b; ++x) {
    bool printable = (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
    if (!printable) ++n;
  }
  return 0x100 + n;
}

int byte_from_codepoint(uint32_t cp) {
  static const std::vector<int> table = [] {
    std::vector<int> t(0x200, -1);
    for (int b = 0; b < 256; ++b) t[byte_to_codepoint(static_cast<uint8_t>(b))] = b;
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

std::vector<std::string_view> split_gpt2(std::string_view text) {
  Splitter s(text);
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    size_t end;
    bool lead_space = s.cp(i) == ' ';
    if (size_t c = contraction(s, i, /*ignore_case=*/false)) {
      end = i + c;
    } else if (s.letter(i) || (lead_space && s.letter(i + 1))) {
      end = s.run(i + (lead_space ? 1 : 0), kLetter);
    } else if (s.number(i) || (lead_space && s.number(i + 1))) {
      end = s.run(i + (lead_space ? 1 : 0), kNumber);
    } else if (s.other(i) || (lead_space && s.other(i + 1))) {
      end = s.other_run(i + (lead_space ? 1 : 0));
    } else {
      end = s.whitespace_tail(i);
    }
    s.emit(i, end);
    i = end;
  }
  return s.take();
}

std::vector<std::string_view> split_llama3(std::string_view text, int max_digits) {
  Splitter s(text);
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    size_t end = 0;
    if (size_t c = contraction(s, i, /*ignore_case=*/true)) {
      end = i + c;
    } else if (s.letter(i)) {
      end = s.run(i, kLetter);
    } else if (!s.newline(i) && !s.number(i) && s.letter(i + 1)) {
      // [^\r\n\p{L}\p{N}]? takes any one non-letter, non-digit prefix: a space, a tab, a quote.
      end = s.run(i + 1, kLetter);
    } else if (s.number(i)) {
      end = i;
      while (end < n && s.number(end) && end - i < static_cast<size_t>(max_digits)) ++end;
    } else if (s.other(i) || (s.cp(i) == ' ' && s.other(i + 1))) {
      end = s.other_run(i + (s.cp(i) == ' ' ? 1 : 0));
      while (s.newline(end)) ++end;
    } else {
      // Whitespace. \s*[\r\n]+ ends after the last newline of the run when it has one.
      size_t ws_end = s.run(i, kSpace);
      end = s.whitespace_tail(i);
      for (size_t k = ws_end; k > i; --k) {
        if (s.newline(k - 1)) {
          end = k;
          break;
        }
      }
    }
    s.emit(i, end);
    i = end;
  }
  return s.take();
}

std::vector<std::string_view> split_digits(std::string_view text) {
  Splitter s(text);
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    size_t end = i + 1;
    if (!s.has(i, kDigitSplit)) {
      while (end < n && !s.has(end, kDigitSplit)) ++end;
    }
    s.emit(i, end);
    i = end;
  }
  return s.take();
}

}  // namespace qgate::unicode
