// Reader for HF safetensors files (8-byte little-endian header length, JSON header, data).
// The file is memory-mapped; tensors are views into it. Like the GGUF reader, every field of the
// header is validated (dtype known, shape × element size == byte span, spans inside the data and
// not overlapping) before any tensor is exposed.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/mapped_file.h"
#include "kernels/status.h"

namespace qgate {

enum class SafetensorsDType { kF32, kF16, kBF16, kI32, kI8, kU8, kI64 };
const char* safetensors_dtype_name(SafetensorsDType t);
// Bytes per element.
uint64_t safetensors_dtype_size(SafetensorsDType t);

struct SafetensorsTensor {
  std::string name;
  SafetensorsDType dtype = SafetensorsDType::kF32;
  std::vector<int64_t> shape;  // row-major, outermost first (PyTorch order)
  const std::byte* data = nullptr;
  uint64_t nbytes = 0;
};

class SafetensorsFile {
 public:
  static Result<SafetensorsFile> open(const std::string& path);
  // Parses a buffer the caller keeps alive for the life of the returned object.
  static Result<SafetensorsFile> parse(std::span<const std::byte> bytes);

  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;  // the optional "__metadata__" string map
  std::shared_ptr<MappedFile> file_;
};

}  // namespace qgate
