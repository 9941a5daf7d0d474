// A fixed pool of worker threads for data-parallel loops in the forward pass.
//
// Threading: parallel_for is called from one thread at a time (the engine's compute thread) and
// blocks until every chunk has run; the calling thread takes a share of the work itself, so a pool
// of n threads starts n - 1 workers. Workers spin briefly before sleeping, because forward-pass
// loops are short (tens of microseconds) and a futex wake-up per loop would dominate decode time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

namespace qgate {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const;
  // Splits [0, n) into contiguous chunks of at least `grain` items, one per thread, and runs
  // fn(begin, end) on each. Returns when all chunks are done.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace qgate
