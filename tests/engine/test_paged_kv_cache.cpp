// PagedKvCache: block allocation and reference counting, the prefix index (publish, lookup,
// eviction order) and the memory layout attention relies on. No model needed.
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "engine/paged_kv_cache.h"

namespace qgate {
namespace {

LlamaConfig tiny_config() {
  LlamaConfig c;
  c.vocab_size = 32;
  c.hidden_size = 8;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 4;
  c.intermediate_size = 16;
  return c;
}

std::vector<int32_t> block(int32_t first, int64_t n = 4) {
  std::vector<int32_t> t;
  for (int64_t i = 0; i < n; ++i) t.push_back(first + static_cast<int32_t>(i));
  return t;
}

TEST(PagedKvCache, AllocatesEveryBlockOnceThenRunsOut) {
  PagedKvCache cache(tiny_config(), 3, 4);
  std::set<int32_t> seen;
  for (int i = 0; i < 3; ++i) {
    auto b = cache.allocate();
    ASSERT_TRUE(b.has_value());
    EXPECT_TRUE(seen.insert(*b).second);
    EXPECT_EQ(cache.ref_count(*b), 1);
  }
  EXPECT_FALSE(cache.allocate().has_value());
  EXPECT_EQ(cache.used_blocks(), 3);
  EXPECT_EQ(cache.free_blocks(), 0);
  cache.release(*seen.begin());
  EXPECT_EQ(cache.free_blocks(), 1);
  auto again = cache.allocate();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, *seen.begin());  // LIFO: the warm block comes back first
}

TEST(PagedKvCache, BlocksForRoundsUp) {
  PagedKvCache cache(tiny_config(), 2, 16);
  EXPECT_EQ(cache.blocks_for(0), 0);
  EXPECT_EQ(cache.blocks_for(1), 1);
  EXPECT_EQ(cache.blocks_for(16), 1);
  EXPECT_EQ(cache.blocks_for(17), 2);
}

TEST(PagedKvCache, LayoutGivesEveryLayerAndBlockItsOwnMemory) {
  const LlamaConfig c = tiny_config();
  PagedKvCache cache(c, 3, 4);
  const int64_t block_floats = 4 * c.kv_dim();
  EXPECT_EQ(cache.block_stride(), block_floats);
  EXPECT_EQ(cache.layer_stride(), 3 * block_floats);
  // Write a distinct value everywhere, then read it back through the other accessors.
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (int32_t b = 0; b < 3; ++b) {
      for (int64_t i = 0; i < block_floats; ++i) {
        cache.keys(l, b)[i] = static_cast<float>(l * 1000 + b * 100 + i);
        cache.values(l, b)[i] = -static_cast<float>(l * 1000 + b * 100 + i);
      }
    }
  }
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (int32_t b = 0; b < 3; ++b) {
      const float* k = cache.key_base(l) + b * cache.block_stride();
      const float* v = cache.value_base(l) + b * cache.block_stride();
      for (int64_t i = 0; i < block_floats; ++i) {
        ASSERT_EQ(k[i], static_cast<float>(l * 1000 + b * 100 + i));
        ASSERT_EQ(v[i], -static_cast<float>(l * 1000 + b * 100 + i));
      }
    }
  }
}

TEST(PagedKvCache, PublishedBlockIsFoundBySameChainOnly) {
  PagedKvCache cache(tiny_config(), 4, 4);
  const int32_t b0 = *cache.allocate();
  const int32_t b1 = *cache.allocate();
  const uint64_t h0 = PagedKvCache::chain_hash(0, block(10));
  const uint64_t h1 = PagedKvCache::chain_hash(h0, block(20));
  cache.publish(b0, h0, 0, block(10));
  cache.publish(b1, h1, h0, block(20));
  EXPECT_EQ(cache.cached_blocks(), 2);

  EXPECT_EQ(cache.lookup(0, block(10)), b0);
  EXPECT_EQ(cache.ref_count(b0), 2);
  EXPECT_EQ(cache.lookup(h0, block(20)), b1);
  // Same tokens after a different prefix, or different tokens: misses.
  EXPECT_FALSE(cache.lookup(0, block(20)).has_value());
  EXPECT_FALSE(cache.lookup(h0, block(21)).has_value());
  EXPECT_FALSE(cache.lookup(PagedKvCache::chain_hash(0, block(11)), block(20)).has_value());
}

TEST(PagedKvCache, ReleasedPublishedBlocksStayFindableAndAreEvictedLeastRecentFirst) {
  PagedKvCache cache(tiny_config(), 2, 4);
  const int32_t a = *cache.allocate();
  const int32_t b = *cache.allocate();
  const uint64_t ha = PagedKvCache::chain_hash(0, block(1));
  const uint64_t hb = PagedKvCache::chain_hash(0, block(2));
  cache.publish(a, ha, 0, block(1));
  cache.publish(b, hb, 0, block(2));
  cache.release(a);  // released first: evicted first
  cache.release(b);
  EXPECT_EQ(cache.free_blocks(), 2);  // cached but unreferenced blocks count as free
  EXPECT_EQ(cache.used_blocks(), 0);

  // A hit takes the block back out of the evictable set.
  EXPECT_EQ(cache.lookup(0, block(2)), b);
  EXPECT_EQ(cache.free_blocks(), 1);
  cache.release(b);

  const int32_t fresh = *cache.allocate();
  EXPECT_EQ(fresh, a);
  EXPECT_FALSE(cache.lookup(0, block(1)).has_value());  // evicted with its index entry
  EXPECT_EQ(cache.lookup(0, block(2)), b);
  EXPECT_FALSE(cache.allocate().has_value());
}

TEST(PagedKvCache, DuplicatePublishKeepsTheFirstBlock) {
  PagedKvCache cache(tiny_config(), 2, 4);
  const int32_t a = *cache.allocate();
  const int32_t b = *cache.allocate();
  const uint64_t h = PagedKvCache::chain_hash(0, block(5));
  cache.publish(a, h, 0, block(5));
  cache.publish(b, h, 0, block(5));  // computed twice concurrently: the second copy stays private
  EXPECT_EQ(cache.cached_blocks(), 1);
  cache.release(b);
  EXPECT_EQ(cache.lookup(0, block(5)), a);
  // b went to the plain free list, a is still held twice.
  EXPECT_EQ(cache.allocate(), b);
}

TEST(PagedKvCache, ReleaseAllDropsOneReferenceEach) {
  PagedKvCache cache(tiny_config(), 3, 4);
  std::vector<int32_t> table = {*cache.allocate(), *cache.allocate()};
  const uint64_t h = PagedKvCache::chain_hash(0, block(7));
  cache.publish(table[0], h, 0, block(7));
  ASSERT_EQ(cache.lookup(0, block(7)), table[0]);  // a second sequence shares block 0
  cache.release_all(table);
  EXPECT_EQ(cache.ref_count(table[0]), 1);
  EXPECT_EQ(cache.ref_count(table[1]), 0);
  EXPECT_EQ(cache.used_blocks(), 1);
}

TEST(PagedKvCacheDeathTest, ReleasingAFreeBlockIsABug) {
  PagedKvCache cache(tiny_config(), 1, 4);
  const int32_t b = *cache.allocate();
  cache.release(b);
  EXPECT_DEATH(cache.release(b), "release of a block nobody holds");
}

}  // namespace
}  // namespace qgate
