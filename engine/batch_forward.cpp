#include "engine/batch_forward.h"

#include "engine/paged_kv_cache.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {

namespace {

class CpuForward final : public BatchForward {
 public:
  CpuForward(const LlamaModel& model, PagedKvCache& cache, int threads)
      : model_(model), cache_(cache), pool_(threads) {}

  Status forward_batch(std::span<const SequenceChunk> chunks, std::span<float> logits) override {
    return model_.forward_batch(chunks, cache_, scratch_, pool_, logits);
  }
  std::string device() const override { return "cpu"; }

 private:
  const LlamaModel& model_;
  PagedKvCache& cache_;
  ThreadPool pool_;
  ForwardScratch scratch_;
};

}  // namespace

std::unique_ptr<BatchForward> make_cpu_forward(const LlamaModel& model, PagedKvCache& cache,
                                               int threads) {
  return std::make_unique<CpuForward>(model, cache, threads);
}

}  // namespace qgate
