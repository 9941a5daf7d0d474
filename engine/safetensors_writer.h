// Writer for HF safetensors files, producing what the reference serializer (huggingface/safetensors
// safetensors/src/tensor.rs, prepare()) produces for the same tensors: u64 little-endian header
// length, compact JSON header ("__metadata__" first, then tensors in data order, each
// {"dtype","shape","data_offsets"}) padded with spaces to a multiple of 8, then the data with
// contiguous offsets and no trailing bytes. Tensors are ordered by descending dtype (the
// reference's dtype order, which puts wider elements first so every tensor stays aligned to its
// element size once the header is 8-aligned), then by name, so the output is deterministic.
//
// Interop note: transformers refuses to load a checkpoint whose metadata lacks {"format": "pt"};
// callers writing model files set it with set_metadata.
//
// Lifetime and threading: add() copies (or takes) the bytes, so the writer owns everything it
// writes. One writer is used from one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "kernels/status.h"

namespace qgate {

class SafetensorsWriter {
 public:
  // kInvalidArgument for an empty, duplicate, non-UTF-8 or "__metadata__" name, a negative
  // dimension, or data whose size is not product(shape) × element size.
  Status add(std::string name, SafetensorsDType dtype, std::vector<int64_t> shape,
             std::span<const std::byte> data);
  Status add(std::string name, SafetensorsDType dtype, std::vector<int64_t> shape,
             std::vector<std::byte>&& data);
  // Replaces an earlier value of the same key. kInvalidArgument for non-UTF-8 text.
  Status set_metadata(std::string key, std::string value);

  // The whole file in memory (tests and small files); write() streams instead.
  std::vector<std::byte> serialize() const;
  // Atomic: writes a temporary file in the same directory, fsyncs it, renames it over `path` and
  // fsyncs the directory, so readers see the old file or the complete new one, never a torn one.
  Status write(const std::string& path) const;

  size_t tensor_count() const { return tensors_.size(); }

 private:
  struct Entry {
    std::string name;
    SafetensorsDType dtype;
    std::vector<int64_t> shape;
    std::vector<std::byte> data;
  };
  std::vector<const Entry*> ordered() const;
  std::string header() const;  // padded JSON

  std::vector<Entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace qgate
