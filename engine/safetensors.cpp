// safetensors reader. Layout (huggingface/safetensors README): u64 little-endian header length N,
// N bytes of UTF-8 JSON, then the data section. The JSON maps each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end)} with offsets relative to the data section,
// plus an optional "__metadata__" object of string → string.
//
// Validation choices:
// - N is capped at 100 MB (the reference implementation's limit) and must fit in the file.
// - A dimension may be 0 (the format allows empty tensors, and checkpoints carry them); a
//   negative or non-integer dimension is an error.
// - Spans must lie inside the data section and must not overlap. Gaps and trailing bytes are
//   tolerated: they cannot make a read go out of bounds, and some writers align tensors.
// - Unknown fields inside a tensor entry are ignored, as the reference implementation does.
#include "engine/safetensors.h"

#include <simdjson.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <utility>

namespace qgate {

static_assert(std::endian::native == std::endian::little,
              "the safetensors reader assumes little-endian");

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DTypeInfo {
  std::string_view name;
  SafetensorsDType dtype;
  uint64_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {"F32", SafetensorsDType::kF32, 4},   {"F16", SafetensorsDType::kF16, 2},
    {"BF16", SafetensorsDType::kBF16, 2}, {"I32", SafetensorsDType::kI32, 4},
    {"I8", SafetensorsDType::kI8, 1},     {"U8", SafetensorsDType::kU8, 1},
    {"I64", SafetensorsDType::kI64, 8},
};

std::string num(uint64_t v) { return std::to_string(v); }

Error fail(ErrorCode code, const std::string& msg) {
  return make_error(code, "safetensors: " + msg);
}

Error json_fail(const std::string& where, simdjson::error_code e) {
  return fail(ErrorCode::kInvalidFormat, where + ": " + simdjson::error_message(e));
}

Result<std::map<std::string, std::string>> parse_metadata(simdjson::dom::element el) {
  simdjson::dom::object obj;
  if (auto e = el.get_object().get(obj); e) return json_fail("__metadata__ is not an object", e);
  std::map<std::string, std::string> out;
  for (auto field : obj) {
    std::string key(field.key);
    std::string_view value;
    if (auto e = field.value.get_string().get(value); e) {
      return json_fail("__metadata__['" + key + "'] is not a string", e);
    }
    if (!out.emplace(key, std::string(value)).second) {
      return fail(ErrorCode::kInvalidFormat, "duplicate __metadata__ key '" + key + "'");
    }
  }
  return out;
}

struct Span {
  uint64_t begin = 0;
  uint64_t end = 0;
};

// Parses one tensor entry into `t` (name already set) and returns its span in the data section.
Result<Span> parse_tensor(simdjson::dom::element el, SafetensorsTensor& t, uint64_t data_size) {
  const std::string where = "tensor '" + t.name + "'";
  simdjson::dom::object obj;
  if (auto e = el.get_object().get(obj); e) return json_fail(where + " entry is not an object", e);

  std::string_view dtype;
  if (auto e = obj["dtype"].get_string().get(dtype); e) return json_fail(where + ": dtype", e);
  const auto* info = std::find_if(std::begin(kDTypes), std::end(kDTypes),
                                  [&](const DTypeInfo& d) { return d.name == dtype; });
  if (info == std::end(kDTypes)) {
    return fail(ErrorCode::kUnsupported,
                where + ": dtype '" + std::string(dtype) +
                    "' is not supported (supported: F32, F16, BF16, I32, I8, U8, I64)");
  }
  t.dtype = info->dtype;

  simdjson::dom::array shape;
  if (auto e = obj["shape"].get_array().get(shape); e) return json_fail(where + ": shape", e);
  uint64_t elements = 1;
  size_t i = 0;
  for (auto dim_el : shape) {
    int64_t dim = 0;
    if (auto e = dim_el.get_int64().get(dim); e) {
      return json_fail(where + ": shape[" + num(i) + "] is not an integer", e);
    }
    if (dim < 0) {
      return fail(ErrorCode::kInvalidFormat,
                  where + ": shape[" + num(i) + "] = " + std::to_string(dim) + " is negative");
    }
    if (__builtin_mul_overflow(elements, static_cast<uint64_t>(dim), &elements)) {
      return fail(ErrorCode::kOutOfRange,
                  where + ": element count overflows at shape[" + num(i) + "]");
    }
    t.shape.push_back(dim);
    ++i;
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(elements, info->size, &nbytes)) {
    return fail(ErrorCode::kOutOfRange, where + ": byte size overflows");
  }

  simdjson::dom::array offsets;
  if (auto e = obj["data_offsets"].get_array().get(offsets); e) {
    return json_fail(where + ": data_offsets", e);
  }
  if (offsets.size() != 2) {
    return fail(ErrorCode::kInvalidFormat,
                where + ": data_offsets has " + num(offsets.size()) + " entries, expected 2");
  }
  Span s;
  if (auto e = offsets.at(0).get_uint64().get(s.begin); e) {
    return json_fail(where + ": data_offsets[0] is not an unsigned integer", e);
  }
  if (auto e = offsets.at(1).get_uint64().get(s.end); e) {
    return json_fail(where + ": data_offsets[1] is not an unsigned integer", e);
  }
  if (s.begin > s.end) {
    return fail(ErrorCode::kInvalidFormat, where + ": data_offsets [" + num(s.begin) + ", " +
                                               num(s.end) + ") has begin after end");
  }
  if (s.end > data_size) {
    return fail(ErrorCode::kOutOfRange, where + ": data_offsets [" + num(s.begin) + ", " +
                                            num(s.end) + ") end past the data section (size " +
                                            num(data_size) + ")");
  }
  if (s.end - s.begin != nbytes) {
    return fail(ErrorCode::kInvalidFormat, where + ": data_offsets span " + num(s.end - s.begin) +
                                               " bytes but shape × " + std::string(info->name) +
                                               " needs " + num(nbytes));
  }
  t.nbytes = nbytes;
  return s;
}

}  // namespace

uint64_t safetensors_dtype_size(SafetensorsDType t) {
  for (const auto& d : kDTypes) {
    if (d.dtype == t) return d.size;
  }
  return 0;
}

const char* safetensors_dtype_name(SafetensorsDType t) {
  for (const auto& d : kDTypes) {
    if (d.dtype == t) return d.name.data();  // the literals are NUL-terminated
  }
  return "?";
}

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  QGATE_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::open(path));
  auto file = std::make_shared<MappedFile>(std::move(mapped));
  auto parsed = parse(file->bytes());
  if (!parsed.ok()) {
    return make_error(parsed.error().code(), parsed.error().message() + " (file '" + path + "')");
  }
  SafetensorsFile out = std::move(parsed).value();
  out.file_ = std::move(file);
  return out;
}

Result<SafetensorsFile> SafetensorsFile::parse(std::span<const std::byte> bytes) {
  if (bytes.size() < 8) {
    return fail(ErrorCode::kInvalidFormat,
                "file too short (" + num(bytes.size()) + " bytes) for the header length");
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > kMaxHeaderBytes) {
    return fail(ErrorCode::kOutOfRange, "header length " + num(header_len) +
                                            " exceeds the limit of " + num(kMaxHeaderBytes));
  }
  if (header_len > bytes.size() - 8) {
    return fail(ErrorCode::kOutOfRange, "header length " + num(header_len) + " exceeds the " +
                                            num(bytes.size() - 8) +
                                            " bytes after the length field");
  }
  const std::byte* data = bytes.data() + 8 + header_len;
  const uint64_t data_size = bytes.size() - 8 - header_len;

  // simdjson needs padding after the text; parse() copies the header into its own padded buffer.
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (auto e = parser.parse(reinterpret_cast<const char*>(bytes.data()) + 8, header_len).get(doc);
      e) {
    return json_fail("header is not valid JSON", e);
  }
  simdjson::dom::object root;
  if (auto e = doc.get_object().get(root); e) return json_fail("header is not a JSON object", e);

  SafetensorsFile out;
  std::vector<Span> spans;
  bool seen_metadata = false;
  for (auto field : root) {
    if (field.key == "__metadata__") {
      if (seen_metadata) return fail(ErrorCode::kInvalidFormat, "duplicate __metadata__");
      seen_metadata = true;
      QGATE_ASSIGN_OR_RETURN(out.metadata_, parse_metadata(field.value));
      continue;
    }
    SafetensorsTensor t;
    t.name = std::string(field.key);
    if (t.name.empty()) return fail(ErrorCode::kInvalidFormat, "empty tensor name");
    QGATE_ASSIGN_OR_RETURN(Span s, parse_tensor(field.value, t, data_size));
    t.data = data + s.begin;
    if (!out.index_.emplace(t.name, out.tensors_.size()).second) {
      return fail(ErrorCode::kInvalidFormat, "duplicate tensor '" + t.name + "'");
    }
    out.tensors_.push_back(std::move(t));
    spans.push_back(s);
  }

  // Overlapping spans would let two weights alias each other's bytes; no writer produces them.
  std::vector<size_t> order(spans.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return spans[a].begin != spans[b].begin ? spans[a].begin < spans[b].begin
                                            : spans[a].end < spans[b].end;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    const Span& prev = spans[order[i - 1]];
    const Span& cur = spans[order[i]];
    if (prev.end > cur.begin) {
      return fail(ErrorCode::kInvalidFormat,
                  "tensors '" + out.tensors_[order[i - 1]].name + "' [" + num(prev.begin) + ", " +
                      num(prev.end) + ") and '" + out.tensors_[order[i]].name + "' [" +
                      num(cur.begin) + ", " + num(cur.end) + ") overlap");
    }
  }
  return out;
}

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace qgate
