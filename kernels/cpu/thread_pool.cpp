// Dispatch protocol: the caller publishes a job (function, range, chunk count) and bumps an
// atomic generation counter; workers notice the new generation by spinning on it (cheap while
// decode keeps them busy) and fall back to a condition variable after a bounded spin, so an idle
// server does not burn both cores. Completion is an atomic countdown the caller spins on.
//
// Lost wake-ups are excluded by a Dekker-style handshake: a worker registers in `sleepers` and
// then re-reads the generation under the mutex; the caller bumps the generation and then reads
// `sleepers`. Both use seq_cst, so at least one side sees the other's write.
#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace qgate {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Waiting has three phases. Pause-spinning (~50 µs here) covers the gap between two matmuls of a
// decode step (norms, RoPE, attention on the calling thread). Then yielding: when the machine is
// oversubscribed the thread we wait for may be queued behind us on the same core, and a pure spin
// would hold that core for a whole scheduler slice (milliseconds). Then, for workers, sleeping.
constexpr int kSpinIterations = 2000;
constexpr int kYieldIterations = 200;

// Set while a thread executes a chunk of some pool's job, so a nested parallel_for on any pool
// runs inline instead of deadlocking on workers that are busy running the outer job.
thread_local bool t_inside_job = false;

}  // namespace

struct ThreadPool::State {
  int num_threads = 1;
  std::vector<std::thread> workers;

  // Job description, written by the caller before the generation bump (release) and read only by
  // workers that take part (index < chunks); the caller rewrites it only after all of those have
  // counted `pending` down, so there is no race with a slow worker.
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  int64_t num_chunks = 0;

  // (sequence << 16) | chunks: carrying the chunk count in the word itself lets a worker that
  // has no share of a job skip it without reading the job fields the caller may already reuse.
  alignas(64) std::atomic<uint64_t> generation{0};
  alignas(64) std::atomic<int64_t> pending{0};
  alignas(64) std::atomic<int> sleepers{0};
  std::atomic<bool> stop{false};

  std::mutex mu;
  std::condition_variable cv;
  // Serializes callers from different threads; the contract allows one at a time, this makes a
  // violation slow rather than corrupt.
  std::mutex call_mu;

  void run_chunk(int64_t chunk) const {
    const int64_t begin = n * chunk / num_chunks;
    const int64_t end = n * (chunk + 1) / num_chunks;
    if (begin < end) (*fn)(begin, end);
  }

  static int64_t chunks_of(uint64_t gen) { return static_cast<int64_t>(gen & 0xFFFFu); }

  void worker_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      uint64_t gen = generation.load(std::memory_order_acquire);
      for (int i = 0; gen == seen && i < kSpinIterations + kYieldIterations; ++i) {
        if (i < kSpinIterations) {
          cpu_relax();
        } else {
          std::this_thread::yield();
        }
        gen = generation.load(std::memory_order_acquire);
      }
      if (gen == seen) {
        std::unique_lock lock(mu);
        sleepers.fetch_add(1, std::memory_order_seq_cst);
        cv.wait(lock, [&] {
          gen = generation.load(std::memory_order_seq_cst);
          return gen != seen || stop.load(std::memory_order_relaxed);
        });
        sleepers.fetch_sub(1, std::memory_order_relaxed);
      }
      if (stop.load(std::memory_order_acquire)) return;
      seen = gen;
      if (index < chunks_of(gen)) {
        t_inside_job = true;
        run_chunk(index);
        t_inside_job = false;
        pending.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  void wake_sleepers() {
    if (sleepers.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard lock(mu);
      cv.notify_all();
    }
  }
};

ThreadPool::ThreadPool(int num_threads) : state_(std::make_unique<State>()) {
  // The chunk count travels in 16 bits of the generation word.
  state_->num_threads = std::clamp(num_threads, 1, 4096);
  state_->workers.reserve(state_->num_threads - 1);
  for (int i = 1; i < state_->num_threads; ++i) {
    state_->workers.emplace_back([s = state_.get(), i] { s->worker_loop(i); });
  }
}

ThreadPool::~ThreadPool() {
  state_->stop.store(true, std::memory_order_seq_cst);
  // Sequence bump with zero chunks: wakes everyone without handing out work.
  state_->generation.store(((state_->generation.load() >> 16) + 1) << 16, std::memory_order_seq_cst);
  {
    // Under the mutex so a worker between its predicate check and its wait cannot miss this.
    std::lock_guard lock(state_->mu);
    state_->cv.notify_all();
  }
  for (auto& t : state_->workers) t.join();
}

int ThreadPool::num_threads() const { return state_->num_threads; }

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t max_chunks = std::max<int64_t>(1, n / grain);
  const int64_t chunks = std::min<int64_t>(state_->num_threads, max_chunks);
  if (chunks == 1 || t_inside_job) {
    fn(0, n);
    return;
  }

  State& s = *state_;
  std::lock_guard call_lock(s.call_mu);
  s.fn = &fn;
  s.n = n;
  s.num_chunks = chunks;
  s.pending.store(chunks - 1, std::memory_order_relaxed);
  const uint64_t seq = (s.generation.load(std::memory_order_relaxed) >> 16) + 1;
  s.generation.store((seq << 16) | static_cast<uint64_t>(chunks), std::memory_order_seq_cst);
  s.wake_sleepers();

  t_inside_job = true;
  s.run_chunk(0);
  t_inside_job = false;

  // Workers that were asleep need a few tens of µs to wake; yield after a short spin so a worker
  // queued on this core can run.
  for (int i = 0; s.pending.load(std::memory_order_acquire) != 0; ++i) {
    if (i < kSpinIterations) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace qgate
