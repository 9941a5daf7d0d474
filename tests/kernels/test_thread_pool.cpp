// ThreadPool: coverage of every index exactly once, chunk sizes, nested and concurrent use, and
// clean shutdown (the suite hangs or crashes rather than passing if a wake-up is lost).
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "kernels/cpu/thread_pool.h"

namespace qgate {
namespace {

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  for (const int threads : {1, 2, 3, 4}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (const int64_t n : {0, 1, 2, 3, 7, 64, 1000, 4097}) {
      for (const int64_t grain : {0, 1, 2, 3, 8, 100, 5000}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int> chunks{0};
        std::mutex mu;
        std::vector<int64_t> sizes;
        pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
          ASSERT_LT(b, e);
          chunks.fetch_add(1);
          {
            std::lock_guard lock(mu);
            sizes.push_back(e - b);
          }
          for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
        });
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(hits[i].load(), 1) << "threads=" << threads << " n=" << n << " grain=" << grain << " i=" << i;
        }
        EXPECT_LE(chunks.load(), threads);
        if (n > 0) {
          EXPECT_GE(chunks.load(), 1);
          for (const int64_t s : sizes) {
            if (n >= grain) {
              EXPECT_GE(s, std::max<int64_t>(grain, 1)) << "n=" << n << " grain=" << grain;
            }
          }
        }
      }
    }
  }
}

TEST(ThreadPool, SecondChunkRunsOnAWorker) {
  ThreadPool pool(2);
  std::thread::id ids[2];
  pool.parallel_for(2, 1, [&](int64_t b, int64_t) { ids[b] = std::this_thread::get_id(); });
  EXPECT_EQ(ids[0], std::this_thread::get_id());
  EXPECT_NE(ids[1], std::this_thread::get_id());
}

TEST(ThreadPool, ManyBackToBackDispatches) {
  // The decode loop's pattern: thousands of short jobs in a row.
  ThreadPool pool(2);
  std::vector<int64_t> data(256, 0);
  for (int iter = 0; iter < 20000; ++iter) {
    pool.parallel_for(256, 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) data[i] += i;
    });
  }
  for (int64_t i = 0; i < 256; ++i) ASSERT_EQ(data[i], 20000 * i);
}

TEST(ThreadPool, NestedCallRunsInlineOnTheCallingThread) {
  ThreadPool pool(2);
  std::vector<std::atomic<int>> hits(100 * 10);
  pool.parallel_for(100, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const auto outer_thread = std::this_thread::get_id();
      pool.parallel_for(10, 1, [&](int64_t ib, int64_t ie) {
        EXPECT_EQ(std::this_thread::get_id(), outer_thread);
        for (int64_t j = ib; j < ie; ++j) hits[i * 10 + j].fetch_add(1);
      });
    }
  });
  for (auto& h : hits) ASSERT_EQ(h.load(), 1);
}

TEST(ThreadPool, ConcurrentCallersAreSerialized) {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  auto caller = [&] {
    for (int iter = 0; iter < 2000; ++iter) {
      pool.parallel_for(64, 1, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
    }
  };
  std::thread a(caller), b(caller);
  a.join();
  b.join();
  EXPECT_EQ(total.load(), 2 * 2000 * 64);
}

TEST(ThreadPool, ConstructAndDestroyRepeatedly) {
  for (int i = 0; i < 50; ++i) {
    ThreadPool idle(3);  // destroyed without ever running a job
    ThreadPool used(3);
    std::atomic<int> sum{0};
    used.parallel_for(30, 1, [&](int64_t b, int64_t e) { sum.fetch_add(static_cast<int>(e - b)); });
    EXPECT_EQ(sum.load(), 30);
  }
}

TEST(ThreadPool, NonPositiveThreadCountMeansOne) {
  ThreadPool pool(0);
  EXPECT_EQ(pool.num_threads(), 1);
  int calls = 0;
  pool.parallel_for(10, 1, [&](int64_t b, int64_t e) {
    ++calls;
    EXPECT_EQ(b, 0);
    EXPECT_EQ(e, 10);
  });
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace qgate
