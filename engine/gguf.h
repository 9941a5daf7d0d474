// Reader for GGUF v2/v3 files (llama.cpp's model format; spec: ggml docs/gguf.md).
//
// Everything read from the file is untrusted: counts, string lengths, array lengths, dimensions,
// types and offsets are bounds-checked against the buffer and against sane limits before use, so
// a truncated, lying or hostile file yields an Error, never an out-of-bounds read or a huge
// allocation. GgufFile does not own the bytes it parses: parse() borrows a buffer that must
// outlive it; open() maps the file and keeps the mapping alive inside the GgufFile.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "engine/mapped_file.h"
#include "kernels/dtype.h"
#include "kernels/status.h"

namespace qgate {

enum class GgufType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

// A metadata value. Integers of every width are widened to int64/uint64 (keeping signedness),
// floats to double; arrays keep their element type and hold scalars or strings (nested arrays
// are rejected — no model uses them and they allow unbounded recursion).
struct GgufValue;
struct GgufArray {
  GgufType elem_type = GgufType::kU8;
  std::vector<GgufValue> items;
};
struct GgufValue {
  GgufType type = GgufType::kU8;
  std::variant<uint64_t, int64_t, double, bool, std::string, std::shared_ptr<GgufArray>> v;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // GGML order: dims[0] is the innermost (contiguous) dimension
  DType type = DType::kF32;
  uint64_t offset = 0;        // relative to the data section
  const std::byte* data = nullptr;
  uint64_t nbytes = 0;
  int64_t num_elements() const;
};

class GgufFile {
 public:
  static Result<GgufFile> open(const std::string& path);
  // Parses a buffer the caller keeps alive for the life of the returned GgufFile.
  static Result<GgufFile> parse(std::span<const std::byte> bytes);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;

  // Typed metadata lookups: NotFound when absent, InvalidFormat when of another type.
  // get_int accepts any integer type whose value fits in int64.
  Result<std::string> get_string(const std::string& key) const;
  Result<int64_t> get_int(const std::string& key) const;
  Result<double> get_float(const std::string& key) const;  // f32/f64 (and integers)
  Result<bool> get_bool(const std::string& key) const;
  Result<std::vector<std::string>> get_string_array(const std::string& key) const;
  Result<std::vector<int64_t>> get_int_array(const std::string& key) const;
  Result<std::vector<double>> get_float_array(const std::string& key) const;
  bool has(const std::string& key) const { return metadata_.count(key) != 0; }

 private:
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
  std::shared_ptr<MappedFile> file_;  // set by open()
};

}  // namespace qgate
