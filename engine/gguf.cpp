// GGUF reader. Layout (ggml docs/gguf.md): magic "GGUF", u32 version, u64 tensor_count,
// u64 kv_count, kv_count × {string key, u32 type, value}, tensor_count × {string name, u32 n_dims,
// u64 dims[n_dims], u32 ggml type, u64 offset}, padding to general.alignment, then the data
// section the offsets point into. Strings are u64 length + bytes, no terminator.
//
// Validation choices (all checked before anything is exposed):
// - v1 (32-bit counts) and versions above 3 are Unsupported; v2 and v3 share one layout.
// - Every dimension must be >= 1: no model ships an empty weight, and a zero dimension from a
//   broken converter would otherwise surface much later as a shape mismatch.
// - Keys and tensor names must be non-empty and at most 65535 bytes (the spec's key limit);
//   string values at most 16 MiB (chat templates and embedded tokenizer JSON fit easily).
// - Counts are checked against the bytes that remain: every KV needs at least 14 bytes and every
//   tensor info 33, so a larger count is a lie and is rejected before anything is reserved.
// - Array items over the whole file are capped, since each costs ~50 bytes of memory per byte
//   of file in the widened representation.
// - Tensors must not overlap each other; each must be aligned and lie inside the file.
#include "engine/gguf.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <utility>

namespace qgate {

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes little-endian");

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kMaxNameBytes = 65535;
constexpr uint64_t kMaxStringBytes = uint64_t{16} << 20;
constexpr uint64_t kMaxArrayItemsTotal = uint64_t{1} << 24;
constexpr uint64_t kMaxAlignment = uint64_t{1} << 20;
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;
// Elements per tensor are capped so that dtype_row_bytes (n / block * block_bytes) cannot
// overflow int64 for any type; 2^56 elements is far beyond any file that could exist.
constexpr int64_t kMaxElements = int64_t{1} << 56;
// Smallest encodings: key length + 1 key byte + type + a 1-byte value; name length + 1 name byte
// + n_dims + one dim + type + offset.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;

const char* ggml_type_name(uint32_t id) {
  // Names of GGML types qgate does not read, so the Unsupported error says what the file holds.
  static constexpr std::pair<uint32_t, const char*> kNames[] = {
      {0, "F32"},     {1, "F16"},      {2, "Q4_0"},   {3, "Q4_1"},    {6, "Q5_0"},
      {7, "Q5_1"},    {8, "Q8_0"},     {9, "Q8_1"},   {10, "Q2_K"},   {11, "Q3_K"},
      {12, "Q4_K"},   {13, "Q5_K"},    {14, "Q6_K"},  {15, "Q8_K"},   {16, "IQ2_XXS"},
      {17, "IQ2_XS"}, {18, "IQ3_XXS"}, {19, "IQ1_S"}, {20, "IQ4_NL"}, {21, "IQ3_S"},
      {22, "IQ2_S"},  {23, "IQ4_XS"},  {24, "I8"},    {25, "I16"},    {26, "I32"},
      {27, "I64"},    {28, "F64"},     {29, "IQ1_M"}, {30, "BF16"},   {34, "TQ1_0"},
      {35, "TQ2_0"},  {39, "MXFP4"},
  };
  for (const auto& [k, name] : kNames) {
    if (k == id) return name;
  }
  return "unknown";
}

const char* value_type_name(GgufType t) {
  switch (t) {
    case GgufType::kU8:
      return "u8";
    case GgufType::kI8:
      return "i8";
    case GgufType::kU16:
      return "u16";
    case GgufType::kI16:
      return "i16";
    case GgufType::kU32:
      return "u32";
    case GgufType::kI32:
      return "i32";
    case GgufType::kF32:
      return "f32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "string";
    case GgufType::kArray:
      return "array";
    case GgufType::kU64:
      return "u64";
    case GgufType::kI64:
      return "i64";
    case GgufType::kF64:
      return "f64";
  }
  return "?";
}

// Encoded size of a scalar, 8 (the length field) for strings, 0 for arrays and unknown ids.
uint64_t min_value_bytes(uint32_t t) {
  switch (static_cast<GgufType>(t)) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool:
      return 1;
    case GgufType::kU16:
    case GgufType::kI16:
      return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32:
      return 4;
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64:
    case GgufType::kString:
      return 8;
    case GgufType::kArray:
      return 0;
  }
  return 0;
}

bool is_integer(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kU16:
    case GgufType::kI16:
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kU64:
    case GgufType::kI64:
      return true;
    default:
      return false;
  }
}

std::string num(uint64_t v) { return std::to_string(v); }

Error fail(ErrorCode code, const std::string& msg) { return make_error(code, "gguf: " + msg); }

// A bounds-checked little-endian reader over the untrusted buffer. Reads return nullopt at the
// end of the data so callers can name the field in their error.
class Cursor {
 public:
  explicit Cursor(std::span<const std::byte> b) : b_(b) {}
  uint64_t pos() const { return pos_; }
  uint64_t size() const { return b_.size(); }
  uint64_t remaining() const { return b_.size() - pos_; }

  template <typename T>
  std::optional<T> read() {
    if (remaining() < sizeof(T)) return std::nullopt;
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  // A u64-length string; `limit` caps the length independently of the bytes available.
  Result<std::string> string(const std::string& where, const char* what, uint64_t limit) {
    const uint64_t at = pos_;
    auto len = read<uint64_t>();
    if (!len) return truncated(where, what, at);
    if (*len > limit) {
      return fail(ErrorCode::kOutOfRange, where + ": " + what + " length " + num(*len) +
                                              " at offset " + num(at) + " exceeds the limit of " +
                                              num(limit) + " bytes");
    }
    if (*len > remaining()) {
      return fail(ErrorCode::kOutOfRange, where + ": " + what + " length " + num(*len) +
                                              " at offset " + num(at) + " exceeds the " +
                                              num(remaining()) + " bytes left in the file");
    }
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), *len);
    pos_ += *len;
    return s;
  }

  Error truncated(const std::string& where, const char* what, uint64_t at) const {
    return fail(ErrorCode::kInvalidFormat, where + ": " + what + " at offset " + num(at) +
                                               " runs past the end of the file (size " +
                                               num(size()) + ")");
  }

 private:
  std::span<const std::byte> b_;
  uint64_t pos_ = 0;
};

template <typename Raw, typename Wide>
Result<GgufValue> read_widened(Cursor& c, GgufType t, const std::string& where) {
  const uint64_t at = c.pos();
  auto x = c.read<Raw>();
  if (!x) return c.truncated(where, value_type_name(t), at);
  GgufValue v;
  v.type = t;
  v.v = static_cast<Wide>(*x);
  return v;
}

// Reads one scalar or string of type t (already known to be valid and not an array).
Result<GgufValue> read_scalar(Cursor& c, GgufType t, const std::string& where) {
  switch (t) {
    case GgufType::kU8:
      return read_widened<uint8_t, uint64_t>(c, t, where);
    case GgufType::kU16:
      return read_widened<uint16_t, uint64_t>(c, t, where);
    case GgufType::kU32:
      return read_widened<uint32_t, uint64_t>(c, t, where);
    case GgufType::kU64:
      return read_widened<uint64_t, uint64_t>(c, t, where);
    case GgufType::kI8:
      return read_widened<int8_t, int64_t>(c, t, where);
    case GgufType::kI16:
      return read_widened<int16_t, int64_t>(c, t, where);
    case GgufType::kI32:
      return read_widened<int32_t, int64_t>(c, t, where);
    case GgufType::kI64:
      return read_widened<int64_t, int64_t>(c, t, where);
    case GgufType::kF32:
      return read_widened<float, double>(c, t, where);
    case GgufType::kF64:
      return read_widened<double, double>(c, t, where);
    case GgufType::kBool: {
      const uint64_t at = c.pos();
      QGATE_ASSIGN_OR_RETURN(GgufValue raw, (read_widened<uint8_t, uint64_t>(c, t, where)));
      const uint64_t b = std::get<uint64_t>(raw.v);
      // Anything but 0/1 means the file is not what it claims to be.
      if (b > 1) {
        return fail(ErrorCode::kInvalidFormat,
                    where + ": bool value " + num(b) + " at offset " + num(at) + " is not 0 or 1");
      }
      raw.v = b == 1;
      return raw;
    }
    case GgufType::kString: {
      QGATE_ASSIGN_OR_RETURN(std::string s, c.string(where, "string value", kMaxStringBytes));
      GgufValue v;
      v.type = t;
      v.v = std::move(s);
      return v;
    }
    case GgufType::kArray:
      break;
  }
  QGATE_CHECK(false, "read_scalar called with an array type");
  return fail(ErrorCode::kInternal, "unreachable");
}

Result<GgufValue> read_value(Cursor& c, uint32_t type_id, const std::string& where,
                             uint64_t& array_budget) {
  if (type_id > static_cast<uint32_t>(GgufType::kF64)) {
    return fail(ErrorCode::kInvalidFormat, where + ": unknown value type " + num(type_id));
  }
  const auto type = static_cast<GgufType>(type_id);
  if (type != GgufType::kArray) return read_scalar(c, type, where);

  const uint64_t at = c.pos();
  auto elem_id = c.read<uint32_t>();
  if (!elem_id) return c.truncated(where, "array element type", at);
  if (*elem_id == static_cast<uint32_t>(GgufType::kArray)) {
    return fail(ErrorCode::kInvalidFormat, where + ": nested array at offset " + num(at) +
                                               " (arrays of arrays are not supported)");
  }
  if (*elem_id > static_cast<uint32_t>(GgufType::kF64)) {
    return fail(ErrorCode::kInvalidFormat,
                where + ": unknown array element type " + num(*elem_id) + " at offset " + num(at));
  }
  auto count = c.read<uint64_t>();
  if (!count) return c.truncated(where, "array length", at + 4);
  const uint64_t elem_min = min_value_bytes(*elem_id);
  if (*count > c.remaining() / elem_min) {
    return fail(ErrorCode::kOutOfRange, where + ": array length " + num(*count) + " at offset " +
                                            num(at + 4) + " needs at least " + num(elem_min) +
                                            " bytes per item but only " + num(c.remaining()) +
                                            " bytes are left");
  }
  if (*count > array_budget) {
    return fail(ErrorCode::kOutOfRange, where + ": array length " + num(*count) +
                                            " exceeds the remaining metadata item budget of " +
                                            num(array_budget));
  }
  array_budget -= *count;

  auto arr = std::make_shared<GgufArray>();
  arr->elem_type = static_cast<GgufType>(*elem_id);
  arr->items.reserve(*count);
  for (uint64_t i = 0; i < *count; ++i) {
    auto item = read_scalar(c, arr->elem_type, where);
    if (!item.ok()) {
      // Only build the per-item context on failure: arrays hold ~100k items in real files.
      return make_error(item.error().code(),
                        item.error().message() + " (array item " + num(i) + ")");
    }
    arr->items.push_back(std::move(item).value());
  }
  GgufValue v;
  v.type = GgufType::kArray;
  v.v = std::move(arr);
  return v;
}

Result<uint64_t> alignment_from(const std::map<std::string, GgufValue>& md) {
  auto it = md.find("general.alignment");
  if (it == md.end()) return kDefaultAlignment;
  const GgufValue& v = it->second;
  if (!is_integer(v.type)) {
    return fail(ErrorCode::kInvalidFormat, std::string("general.alignment has type ") +
                                               value_type_name(v.type) + ", expected an integer");
  }
  const auto* u = std::get_if<uint64_t>(&v.v);
  const auto* s = std::get_if<int64_t>(&v.v);
  const bool negative = s != nullptr && *s < 0;
  const uint64_t a = u != nullptr ? *u : static_cast<uint64_t>(*s);
  if (negative || a == 0 || !std::has_single_bit(a) || a > kMaxAlignment) {
    return fail(ErrorCode::kInvalidFormat,
                "general.alignment " + (negative ? std::to_string(*s) : num(a)) +
                    " must be a power of two in [1, " + num(kMaxAlignment) + "]");
  }
  return a;
}

}  // namespace

int64_t GgufTensorInfo::num_elements() const {
  return std::accumulate(dims.begin(), dims.end(), int64_t{1}, std::multiplies<>());
}

Result<GgufFile> GgufFile::open(const std::string& path) {
  QGATE_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::open(path));
  auto file = std::make_shared<MappedFile>(std::move(mapped));
  auto parsed = parse(file->bytes());
  if (!parsed.ok()) {
    return make_error(parsed.error().code(), parsed.error().message() + " (file '" + path + "')");
  }
  GgufFile out = std::move(parsed).value();
  out.file_ = std::move(file);
  return out;
}

Result<GgufFile> GgufFile::parse(std::span<const std::byte> bytes) {
  Cursor c(bytes);
  GgufFile out;

  auto magic = c.read<uint32_t>();
  if (!magic)
    return fail(ErrorCode::kInvalidFormat,
                "file too short (" + num(bytes.size()) + " bytes) for the magic");
  if (*magic != kMagic) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08x", *magic);
    return fail(ErrorCode::kInvalidFormat,
                std::string("bad magic ") + hex + " (expected \"GGUF\")");
  }
  auto version = c.read<uint32_t>();
  if (!version) return c.truncated("header", "version", 4);
  if (*version == 1) {
    return fail(ErrorCode::kUnsupported,
                "version 1 is not supported (it predates 64-bit counts; re-convert the model)");
  }
  if (*version == 0x02000000 || *version == 0x03000000) {
    return fail(ErrorCode::kUnsupported, "file is big-endian GGUF, which is not supported");
  }
  if (*version != 2 && *version != 3) {
    return fail(ErrorCode::kUnsupported,
                "unsupported version " + num(*version) + " (expected 2 or 3)");
  }
  out.version_ = *version;

  auto tensor_count = c.read<uint64_t>();
  if (!tensor_count) return c.truncated("header", "tensor count", 8);
  auto kv_count = c.read<uint64_t>();
  if (!kv_count) return c.truncated("header", "metadata count", 16);
  if (*kv_count > c.remaining() / kMinKvBytes ||
      *tensor_count > c.remaining() / kMinTensorInfoBytes ||
      *kv_count * kMinKvBytes + *tensor_count * kMinTensorInfoBytes > c.remaining()) {
    return fail(ErrorCode::kOutOfRange,
                "header claims " + num(*kv_count) + " metadata entries and " + num(*tensor_count) +
                    " tensors but only " + num(c.remaining()) + " bytes follow");
  }

  uint64_t array_budget = kMaxArrayItemsTotal;
  for (uint64_t i = 0; i < *kv_count; ++i) {
    const std::string where = "metadata #" + num(i);
    QGATE_ASSIGN_OR_RETURN(std::string key, c.string(where, "key", kMaxNameBytes));
    if (key.empty()) return fail(ErrorCode::kInvalidFormat, where + ": empty key");
    const std::string kwhere = "metadata '" + key + "'";
    const uint64_t at = c.pos();
    auto type_id = c.read<uint32_t>();
    if (!type_id) return c.truncated(kwhere, "value type", at);
    QGATE_ASSIGN_OR_RETURN(GgufValue value, read_value(c, *type_id, kwhere, array_budget));
    if (!out.metadata_.emplace(std::move(key), std::move(value)).second) {
      return fail(ErrorCode::kInvalidFormat, "duplicate " + kwhere + " (entry #" + num(i) + ")");
    }
  }
  QGATE_ASSIGN_OR_RETURN(out.alignment_, alignment_from(out.metadata_));

  out.tensors_.reserve(*tensor_count);
  for (uint64_t i = 0; i < *tensor_count; ++i) {
    GgufTensorInfo t;
    const std::string where = "tensor #" + num(i);
    QGATE_ASSIGN_OR_RETURN(t.name, c.string(where, "name", kMaxNameBytes));
    if (t.name.empty()) return fail(ErrorCode::kInvalidFormat, where + ": empty name");
    const std::string twhere = "tensor '" + t.name + "'";

    uint64_t at = c.pos();
    auto n_dims = c.read<uint32_t>();
    if (!n_dims) return c.truncated(twhere, "n_dims", at);
    if (*n_dims < 1 || *n_dims > kMaxDims) {
      return fail(ErrorCode::kInvalidFormat, twhere + ": n_dims " + num(*n_dims) + " at offset " +
                                                 num(at) + " is not in [1, 4]");
    }
    int64_t elements = 1;
    for (uint32_t d = 0; d < *n_dims; ++d) {
      at = c.pos();
      auto dim = c.read<uint64_t>();
      if (!dim) return c.truncated(twhere, "dimension", at);
      if (*dim == 0) {
        return fail(ErrorCode::kInvalidFormat,
                    twhere + ": dims[" + num(d) + "] at offset " + num(at) + " is zero");
      }
      if (*dim > static_cast<uint64_t>(kMaxElements) ||
          __builtin_mul_overflow(elements, static_cast<int64_t>(*dim), &elements) ||
          elements > kMaxElements) {
        return fail(ErrorCode::kOutOfRange, twhere + ": dims[" + num(d) + "] = " + num(*dim) +
                                                " at offset " + num(at) +
                                                " makes the element count overflow");
      }
      t.dims.push_back(static_cast<int64_t>(*dim));
    }
    at = c.pos();
    auto type_id = c.read<uint32_t>();
    if (!type_id) return c.truncated(twhere, "type", at);
    auto dtype = dtype_from_ggml(*type_id);
    if (!dtype) {
      return fail(ErrorCode::kUnsupported, twhere + ": unsupported tensor type " + num(*type_id) +
                                               " (" + ggml_type_name(*type_id) + ")");
    }
    t.type = *dtype;
    at = c.pos();
    auto offset = c.read<uint64_t>();
    if (!offset) return c.truncated(twhere, "offset", at);
    t.offset = *offset;

    auto row_bytes = dtype_row_bytes(t.type, t.dims[0]);
    if (!row_bytes) {
      return fail(ErrorCode::kInvalidFormat, twhere + ": dims[0] = " + std::to_string(t.dims[0]) +
                                                 " is not a multiple of the " + dtype_name(t.type) +
                                                 " block size " +
                                                 std::to_string(dtype_block_elems(t.type)));
    }
    int64_t nbytes = 0;
    if (__builtin_mul_overflow(*row_bytes, elements / t.dims[0], &nbytes)) {
      return fail(ErrorCode::kOutOfRange, twhere + ": byte size overflows");
    }
    t.nbytes = static_cast<uint64_t>(nbytes);
    if (!out.tensor_index_.emplace(t.name, out.tensors_.size()).second) {
      return fail(ErrorCode::kInvalidFormat, "duplicate " + twhere + " (tensor #" + num(i) + ")");
    }
    out.tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment after the tensor infos.
  const uint64_t info_end = c.pos();
  const uint64_t data_start = (info_end + out.alignment_ - 1) / out.alignment_ * out.alignment_;
  if (!out.tensors_.empty() && data_start > bytes.size()) {
    return fail(ErrorCode::kOutOfRange, "data section would start at offset " + num(data_start) +
                                            ", past the end of the file (size " +
                                            num(bytes.size()) + ")");
  }
  const uint64_t data_size = out.tensors_.empty() ? 0 : bytes.size() - data_start;
  for (GgufTensorInfo& t : out.tensors_) {
    const std::string twhere = "tensor '" + t.name + "'";
    if (t.offset % out.alignment_ != 0) {
      return fail(ErrorCode::kInvalidFormat, twhere + ": data offset " + num(t.offset) +
                                                 " is not a multiple of the alignment " +
                                                 num(out.alignment_));
    }
    if (t.offset > data_size || t.nbytes > data_size - t.offset) {
      return fail(ErrorCode::kOutOfRange,
                  twhere + ": data [" + num(t.offset) + ", " + num(t.offset) + " + " +
                      num(t.nbytes) + ") ends past the end of the file (data section at offset " +
                      num(data_start) + ", file size " + num(bytes.size()) + ")");
    }
    t.data = bytes.data() + data_start + t.offset;
  }

  // Overlapping tensors never come from a real writer and would let one weight alias another.
  std::vector<const GgufTensorInfo*> by_offset;
  by_offset.reserve(out.tensors_.size());
  for (const auto& t : out.tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const auto* prev = by_offset[i - 1];
    if (prev->offset + prev->nbytes > by_offset[i]->offset) {
      return fail(ErrorCode::kInvalidFormat, "tensors '" + prev->name + "' and '" +
                                                 by_offset[i]->name +
                                                 "' overlap in the data section");
    }
  }
  return out;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

Result<const GgufValue*> lookup(const std::map<std::string, GgufValue>& md,
                                const std::string& key) {
  auto it = md.find(key);
  if (it == md.end()) return fail(ErrorCode::kNotFound, "metadata key '" + key + "' not found");
  return &it->second;
}

Error wrong_type(const std::string& key, const GgufValue& v, const char* expected) {
  std::string actual = value_type_name(v.type);
  if (v.type == GgufType::kArray) {
    actual +=
        std::string(" of ") + value_type_name(std::get<std::shared_ptr<GgufArray>>(v.v)->elem_type);
  }
  return fail(ErrorCode::kInvalidFormat,
              "metadata '" + key + "' is " + actual + ", expected " + expected);
}

// Integer of any width as int64; nullopt when it is not an integer or does not fit.
std::optional<int64_t> as_int(const GgufValue& v) {
  if (const auto* s = std::get_if<int64_t>(&v.v)) return *s;
  if (const auto* u = std::get_if<uint64_t>(&v.v)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(*u);
  }
  return std::nullopt;
}

std::optional<double> as_float(const GgufValue& v) {
  if (const auto* d = std::get_if<double>(&v.v)) return *d;
  if (const auto* s = std::get_if<int64_t>(&v.v)) return static_cast<double>(*s);
  if (const auto* u = std::get_if<uint64_t>(&v.v)) return static_cast<double>(*u);
  return std::nullopt;
}

Result<const GgufArray*> lookup_array(const std::map<std::string, GgufValue>& md,
                                      const std::string& key, bool (*elem_ok)(GgufType),
                                      const char* expected) {
  QGATE_ASSIGN_OR_RETURN(const GgufValue* v, lookup(md, key));
  if (v->type != GgufType::kArray) return wrong_type(key, *v, expected);
  const GgufArray* arr = std::get<std::shared_ptr<GgufArray>>(v->v).get();
  if (!elem_ok(arr->elem_type)) return wrong_type(key, *v, expected);
  return arr;
}

}  // namespace

Result<std::string> GgufFile::get_string(const std::string& key) const {
  QGATE_ASSIGN_OR_RETURN(const GgufValue* v, lookup(metadata_, key));
  if (v->type != GgufType::kString) return wrong_type(key, *v, "string");
  return std::get<std::string>(v->v);
}

Result<int64_t> GgufFile::get_int(const std::string& key) const {
  QGATE_ASSIGN_OR_RETURN(const GgufValue* v, lookup(metadata_, key));
  if (!is_integer(v->type)) return wrong_type(key, *v, "an integer");
  auto i = as_int(*v);
  if (!i) {
    return fail(
        ErrorCode::kOutOfRange,
        "metadata '" + key + "' = " + num(std::get<uint64_t>(v->v)) + " does not fit in int64");
  }
  return *i;
}

Result<double> GgufFile::get_float(const std::string& key) const {
  QGATE_ASSIGN_OR_RETURN(const GgufValue* v, lookup(metadata_, key));
  auto f = as_float(*v);
  if (!f) return wrong_type(key, *v, "a number");
  return *f;
}

Result<bool> GgufFile::get_bool(const std::string& key) const {
  QGATE_ASSIGN_OR_RETURN(const GgufValue* v, lookup(metadata_, key));
  if (v->type != GgufType::kBool) return wrong_type(key, *v, "bool");
  return std::get<bool>(v->v);
}

Result<std::vector<std::string>> GgufFile::get_string_array(const std::string& key) const {
  QGATE_ASSIGN_OR_RETURN(
      const GgufArray* arr,
      lookup_array(
          metadata_, key, [](GgufType t) { return t == GgufType::kString; }, "array of string"));
  std::vector<std::string> out;
  out.reserve(arr->items.size());
  for (const auto& item : arr->items) out.push_back(std::get<std::string>(item.v));
  return out;
}

Result<std::vector<int64_t>> GgufFile::get_int_array(const std::string& key) const {
  QGATE_ASSIGN_OR_RETURN(const GgufArray* arr,
                         lookup_array(metadata_, key, is_integer, "array of integers"));
  std::vector<int64_t> out;
  out.reserve(arr->items.size());
  for (size_t i = 0; i < arr->items.size(); ++i) {
    auto x = as_int(arr->items[i]);
    if (!x) {
      return fail(ErrorCode::kOutOfRange,
                  "metadata '" + key + "' item " + num(i) + " does not fit in int64");
    }
    out.push_back(*x);
  }
  return out;
}

Result<std::vector<double>> GgufFile::get_float_array(const std::string& key) const {
  QGATE_ASSIGN_OR_RETURN(
      const GgufArray* arr,
      lookup_array(
          metadata_, key,
          [](GgufType t) { return is_integer(t) || t == GgufType::kF32 || t == GgufType::kF64; },
          "array of numbers"));
  std::vector<double> out;
  out.reserve(arr->items.size());
  for (const auto& item : arr->items) out.push_back(*as_float(item));
  return out;
}

}  // namespace qgate
