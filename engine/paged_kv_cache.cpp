#include "engine/paged_kv_cache.h"

#include <algorithm>

#include "kernels/status.h"

namespace qgate {

namespace {

// splitmix64's finalizer: cheap, and every input bit affects every output bit.
uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

PagedKvCache::PagedKvCache(const LlamaConfig& config, int64_t num_blocks, int64_t block_tokens,
                           KvStorage storage, KvDType dtype)
    : num_blocks_(num_blocks),
      block_tokens_(block_tokens),
      block_stride_(block_tokens * config.kv_dim()),
      layer_stride_(num_blocks * block_tokens * config.kv_dim()),
      dtype_(dtype),
      // new std::byte[] without () leaves the memory untouched, so pages are committed on first
      // write.
      k_(storage == KvStorage::kHost
             ? new std::byte[static_cast<size_t>(config.num_layers * layer_stride_ *
                                                 kv_dtype_bytes(dtype))]
             : nullptr),
      v_(storage == KvStorage::kHost
             ? new std::byte[static_cast<size_t>(config.num_layers * layer_stride_ *
                                                 kv_dtype_bytes(dtype))]
             : nullptr),
      meta_(static_cast<size_t>(num_blocks)) {
  QGATE_CHECK(num_blocks > 0 && block_tokens > 0, "paged kv cache: empty pool");
  free_.reserve(static_cast<size_t>(num_blocks));
  // Reversed so block 0 is handed out first.
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

int32_t PagedKvCache::ref_count(int32_t block) const {
  return meta_[static_cast<size_t>(block)].refs;
}

std::optional<int32_t> PagedKvCache::allocate() {
  int32_t b = -1;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (!evictable_.empty()) {
    b = evictable_.front();
    evictable_.pop_front();
    unpublish(b);
  } else {
    return std::nullopt;
  }
  meta_[static_cast<size_t>(b)].refs = 1;
  return b;
}

void PagedKvCache::release(int32_t block) {
  Meta& m = meta_[static_cast<size_t>(block)];
  QGATE_CHECK(m.refs > 0, "paged kv cache: release of a block nobody holds");
  if (--m.refs > 0) return;
  if (m.published) {
    m.lru = evictable_.insert(evictable_.end(), block);
  } else {
    free_.push_back(block);
  }
}

void PagedKvCache::release_all(std::span<const int32_t> blocks) {
  // In reverse, so a sequence's first blocks (the shared prompt prefix) are evicted last.
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) release(*it);
}

uint64_t PagedKvCache::chain_hash(uint64_t parent, std::span<const int32_t> tokens) {
  uint64_t h = mix(parent ^ 0x9e3779b97f4a7c15ULL);
  for (int32_t t : tokens) h = mix(h ^ static_cast<uint32_t>(t));
  return mix(h ^ tokens.size());
}

void PagedKvCache::publish(int32_t block, uint64_t hash, uint64_t parent,
                           std::span<const int32_t> tokens) {
  Meta& m = meta_[static_cast<size_t>(block)];
  QGATE_CHECK(m.refs > 0, "paged kv cache: publish of a block nobody holds");
  QGATE_CHECK(static_cast<int64_t>(tokens.size()) == block_tokens_,
              "paged kv cache: only full blocks can be published");
  if (m.published || index_.contains(hash)) return;
  m.published = true;
  m.hash = hash;
  m.parent = parent;
  m.tokens.assign(tokens.begin(), tokens.end());
  index_.emplace(hash, block);
}

std::optional<int32_t> PagedKvCache::lookup(uint64_t parent, std::span<const int32_t> tokens) {
  const auto it = index_.find(chain_hash(parent, tokens));
  if (it == index_.end()) return std::nullopt;
  const int32_t b = it->second;
  Meta& m = meta_[static_cast<size_t>(b)];
  if (m.parent != parent || !std::equal(tokens.begin(), tokens.end(), m.tokens.begin(),
                                        m.tokens.end())) {
    return std::nullopt;
  }
  if (m.refs++ == 0) evictable_.erase(m.lru);
  return b;
}

void PagedKvCache::unpublish(int32_t block) {
  Meta& m = meta_[static_cast<size_t>(block)];
  index_.erase(m.hash);
  m.published = false;
  m.tokens.clear();
}

}  // namespace qgate
