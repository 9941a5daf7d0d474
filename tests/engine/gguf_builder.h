// A small in-memory GGUF writer for tests. By default it writes valid files (v3, 32-byte
// alignment, tensors packed in order with their data filled by a known byte pattern); every field
// the reader validates can be overridden to craft hostile files: magic, version, counts, raw KV
// payloads, tensor types, dims and offsets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "kernels/dtype.h"

namespace qgate::testing {

// Byte `i` of the data of the tensor added `k`-th: lets tests check data pointers.
inline uint8_t gguf_pattern_byte(size_t k, uint64_t i) {
  return static_cast<uint8_t>(k * 31 + i * 7 + 1);
}

class GgufBuilder {
 public:
  GgufBuilder& magic(uint32_t m) {
    magic_ = m;
    return *this;
  }
  GgufBuilder& version(uint32_t v) {
    version_ = v;
    return *this;
  }
  // Counts written in the header; by default the number of KVs/tensors added.
  GgufBuilder& tensor_count(uint64_t n) {
    tensor_count_ = n;
    return *this;
  }
  GgufBuilder& kv_count(uint64_t n) {
    kv_count_ = n;
    return *this;
  }
  // Alignment used to place the data section and auto-placed tensors. It does not write
  // general.alignment: add that KV yourself so tests control the two independently.
  GgufBuilder& layout_alignment(uint64_t a) {
    align_ = a;
    return *this;
  }

  template <typename T>
  GgufBuilder& scalar(const std::string& key, GgufType type, T value) {
    Bytes p;
    put(p, value);
    return raw_kv(key, static_cast<uint32_t>(type), p);
  }
  GgufBuilder& string(const std::string& key, const std::string& value) {
    Bytes p;
    put_str(p, value);
    return raw_kv(key, static_cast<uint32_t>(GgufType::kString), p);
  }
  template <typename T>
  GgufBuilder& array(const std::string& key, GgufType elem, const std::vector<T>& items) {
    Bytes p;
    put(p, static_cast<uint32_t>(elem));
    put(p, static_cast<uint64_t>(items.size()));
    for (const T& x : items) put(p, x);
    return raw_kv(key, static_cast<uint32_t>(GgufType::kArray), p);
  }
  GgufBuilder& string_array(const std::string& key, const std::vector<std::string>& items) {
    Bytes p;
    put(p, static_cast<uint32_t>(GgufType::kString));
    put(p, static_cast<uint64_t>(items.size()));
    for (const auto& s : items) put_str(p, s);
    return raw_kv(key, static_cast<uint32_t>(GgufType::kArray), p);
  }
  // A KV whose type id and value bytes are written verbatim.
  GgufBuilder& raw_kv(const std::string& key, uint32_t type, const std::vector<uint8_t>& payload) {
    put_str(kvs_, key);
    put(kvs_, type);
    kvs_.insert(kvs_.end(), payload.begin(), payload.end());
    ++n_kv_;
    return *this;
  }

  // A tensor info. `offset` defaults to the next aligned position after the previous auto-placed
  // tensor; explicitly placed tensors do not extend the file. `nbytes` defaults to the size the
  // dims and type imply (0 when the type is unknown to qgate).
  GgufBuilder& tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t ggml_type,
                      std::optional<uint64_t> offset = std::nullopt,
                      std::optional<uint64_t> nbytes = std::nullopt) {
    tensors_.push_back({name, std::move(dims), ggml_type, offset, nbytes});
    return *this;
  }

  static uint64_t implied_nbytes(const std::vector<uint64_t>& dims, uint32_t ggml_type) {
    auto t = dtype_from_ggml(ggml_type);
    if (!t || dims.empty()) return 0;
    uint64_t rows = 1;
    for (size_t i = 1; i < dims.size(); ++i) rows *= dims[i];
    auto row = dtype_row_bytes(*t, static_cast<int64_t>(dims[0]));
    return row ? static_cast<uint64_t>(*row) * rows : 0;
  }

  std::vector<std::byte> build() const {
    Bytes out;
    put(out, magic_);
    put(out, version_);
    put(out, tensor_count_.value_or(tensors_.size()));
    put(out, kv_count_.value_or(n_kv_));
    out.insert(out.end(), kvs_.begin(), kvs_.end());

    // Place the data first so the infos can carry the auto-assigned offsets.
    std::vector<uint64_t> offsets;
    Bytes data;
    for (size_t k = 0; k < tensors_.size(); ++k) {
      const Tensor& t = tensors_[k];
      const uint64_t n = t.nbytes.value_or(implied_nbytes(t.dims, t.type));
      if (t.offset) {
        offsets.push_back(*t.offset);
        continue;
      }
      while (data.size() % align_ != 0) data.push_back(0);
      offsets.push_back(data.size());
      for (uint64_t i = 0; i < n; ++i) data.push_back(gguf_pattern_byte(k, i));
    }
    for (size_t k = 0; k < tensors_.size(); ++k) {
      const Tensor& t = tensors_[k];
      put_str(out, t.name);
      put(out, static_cast<uint32_t>(t.dims.size()));
      for (uint64_t d : t.dims) put(out, d);
      put(out, t.type);
      put(out, offsets[k]);
    }
    if (!tensors_.empty()) {
      while (out.size() % align_ != 0) out.push_back(0);
      out.insert(out.end(), data.begin(), data.end());
    }
    std::vector<std::byte> bytes(out.size());
    if (!out.empty()) std::memcpy(bytes.data(), out.data(), out.size());
    return bytes;
  }

  using Bytes = std::vector<uint8_t>;
  template <typename T>
  static void put(Bytes& b, T v) {
    uint8_t raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof(T));
    b.insert(b.end(), raw, raw + sizeof(T));
  }
  static void put_str(Bytes& b, const std::string& s) {
    put(b, static_cast<uint64_t>(s.size()));
    b.insert(b.end(), s.begin(), s.end());
  }

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;
    uint32_t type;
    std::optional<uint64_t> offset;
    std::optional<uint64_t> nbytes;
  };
  uint32_t magic_ = 0x46554747;  // "GGUF"
  uint32_t version_ = 3;
  std::optional<uint64_t> tensor_count_;
  std::optional<uint64_t> kv_count_;
  uint64_t align_ = 32;
  Bytes kvs_;
  uint64_t n_kv_ = 0;
  std::vector<Tensor> tensors_;
};

}  // namespace qgate::testing
