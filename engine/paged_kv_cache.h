// A paged KV cache: keys and values of many sequences in fixed-size blocks of one shared pool.
//
// Each sequence owns a block table (the ids of its blocks, in position order; the table lives with
// the sequence, not here). A block is reference counted: allocate() hands one out with count 1,
// release() drops a reference. With prefix caching, a full block whose content is final can be
// published under the hash of its token chain (the tokens of every block up to and including it);
// another sequence whose prompt starts with the same tokens finds it with lookup(), takes a
// reference and skips recomputing it. Published blocks that nobody references stay indexed and
// are evicted least-recently-released first when allocate() runs out of unused blocks, so they
// count as free.
//
// Layout: [layer][block][token in block][kv_dim] of fp32 or fp16 (KvDType), keys and values in
// separate arrays, so the
// keys of one block of one layer are contiguous (what attention scans). The arrays are allocated
// without being touched: memory is committed as blocks are first written, and the free list is
// LIFO, so a large budget costs only what the busiest moment used.
//
// Threading: not thread-safe; the engine worker's scheduler thread owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/model_config.h"
#include "kernels/status.h"

namespace qgate {

// kHost: keys and values live in this object (the CPU forward pass). kNone: this object only
// allocates and indexes blocks; the storage is elsewhere (the CUDA forward pass keeps it on the
// GPU under the same block ids) and key_base()/value_base() must not be called.
enum class KvStorage { kHost, kNone };

class PagedKvCache {
 public:
  PagedKvCache(const LlamaConfig& config, int64_t num_blocks, int64_t block_tokens,
               KvStorage storage = KvStorage::kHost, KvDType dtype = KvDType::kF32);

  int64_t block_tokens() const { return block_tokens_; }
  int64_t num_blocks() const { return num_blocks_; }
  // Blocks allocate() can still hand out: never-used or released ones plus cached ones nobody holds.
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size() + evictable_.size()); }
  // Blocks held by at least one sequence.
  int64_t used_blocks() const { return num_blocks_ - free_blocks(); }
  // Published blocks still in the prefix index (held or not).
  int64_t cached_blocks() const { return static_cast<int64_t>(index_.size()); }
  int32_t ref_count(int32_t block) const;
  // Blocks needed for positions [0, tokens).
  int64_t blocks_for(int64_t tokens) const { return (tokens + block_tokens_ - 1) / block_tokens_; }

  // A block with reference count 1; evicts the least recently released cached block when no unused
  // one is left. nullopt when every block is held.
  std::optional<int32_t> allocate();
  // Drops one reference; at zero the block becomes free (or evictable, when it is published).
  void release(int32_t block);
  void release_all(std::span<const int32_t> blocks);

  // The hash of a block whose token chain is (parent chain, tokens): parent is 0 for the first block.
  static uint64_t chain_hash(uint64_t parent, std::span<const int32_t> tokens);
  // Makes a held, full block findable under `hash`. The caller promises its keys/values are final
  // for exactly that token chain. A no-op when another block is already published under the hash.
  void publish(int32_t block, uint64_t hash, uint64_t parent, std::span<const int32_t> tokens);
  // The block published for (parent, tokens), with one more reference taken; nullopt on a miss.
  // The tokens are compared too, so a collision in the 64-bit hash of one block cannot return
  // foreign keys (a collision of the parent chain's hash remains astronomically unlikely).
  std::optional<int32_t> lookup(uint64_t parent, std::span<const int32_t> tokens);

  KvDType dtype() const { return dtype_; }
  // Keys/values of `layer` start at key_bytes(layer); block b at + b * block_stride() elements,
  // position i of the block at + i * kv_dim elements (of dtype()).
  std::byte* key_bytes(int64_t layer) {
    QGATE_CHECK(k_ != nullptr, "paged kv cache: no host storage");
    return k_.get() + layer * layer_stride_ * kv_dtype_bytes(dtype_);
  }
  std::byte* value_bytes(int64_t layer) {
    QGATE_CHECK(v_ != nullptr, "paged kv cache: no host storage");
    return v_.get() + layer * layer_stride_ * kv_dtype_bytes(dtype_);
  }
  // The same as fp32 pointers, for an fp32 cache only.
  float* key_base(int64_t layer) {
    QGATE_CHECK(dtype_ == KvDType::kF32, "paged kv cache: key_base of an fp16 cache");
    return reinterpret_cast<float*>(key_bytes(layer));
  }
  float* value_base(int64_t layer) {
    QGATE_CHECK(dtype_ == KvDType::kF32, "paged kv cache: value_base of an fp16 cache");
    return reinterpret_cast<float*>(value_bytes(layer));
  }
  int64_t block_stride() const { return block_stride_; }
  int64_t layer_stride() const { return layer_stride_; }
  float* keys(int64_t layer, int32_t block) { return key_base(layer) + block * block_stride_; }
  float* values(int64_t layer, int32_t block) { return value_base(layer) + block * block_stride_; }

 private:
  struct Meta {
    int32_t refs = 0;
    bool published = false;
    uint64_t hash = 0;
    uint64_t parent = 0;
    std::vector<int32_t> tokens;  // for published blocks: the block's own tokens
    std::list<int32_t>::iterator lru;  // valid while evictable
  };
  void unpublish(int32_t block);

  int64_t num_blocks_ = 0;
  int64_t block_tokens_ = 0;
  int64_t block_stride_ = 0;
  int64_t layer_stride_ = 0;
  KvDType dtype_ = KvDType::kF32;
  std::unique_ptr<std::byte[]> k_;
  std::unique_ptr<std::byte[]> v_;
  std::vector<Meta> meta_;
  std::vector<int32_t> free_;          // LIFO: recently freed blocks are warm in memory
  std::list<int32_t> evictable_;       // published, unreferenced; front = least recently released
  std::unordered_map<uint64_t, int32_t> index_;  // chain hash -> block
};

}  // namespace qgate
