// CPU kernel benchmarks for the SmolLM2-135M shapes.
//
// main() first checks every benchmarked configuration against matmul_ref and aborts on a
// mismatch, so no number is printed for a wrong kernel. Then:
//   BM_Matmul       one weight matrix, m tokens, 1 or 2 threads; bytes/s counts weight bytes.
//   BM_DecodeStep   every matmul of one decode token (30 layers × q,k,v,o,gate,up,down + LM head)
//                   over distinct weight buffers (~96 MB, larger than L3), i.e. the real
//                   bandwidth-bound decode cost; reports ms/token and tokens/s. shared_input:1
//                   issues q/k/v and gate/up as one matmul_shared_input each (the engine's way,
//                   121 dispatches a token), shared_input:0 one matmul per matrix (211).
//   BM_PrefillStep  the same layers for 64 tokens at once (LM head for the last token only).
//   BM_ParallelFor  dispatch overhead of an empty parallel_for.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "kernels/cpu/half.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {
namespace {

constexpr int64_t kHidden = 576, kKv = 192, kFfn = 1536, kVocab = 49152, kLayers = 30;

std::vector<uint8_t> random_weights(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  const int64_t row_bytes = *dtype_row_bytes(t, cols);
  std::vector<uint8_t> w(static_cast<size_t>(rows * row_bytes));
  if (dtype_block_elems(t) == 1) {
    for (int64_t i = 0; i < rows * cols; ++i) {
      const float v = nd(rng);
      if (t == DType::kF32) {
        std::memcpy(&w[4 * i], &v, 4);
      } else {
        const uint16_t h = t == DType::kF16 ? fp32_to_fp16(v) : fp32_to_bf16(v);
        std::memcpy(&w[2 * i], &h, 2);
      }
    }
    return w;
  }
  const int64_t bb = dtype_block_bytes(t);
  for (int64_t off = 0; off < static_cast<int64_t>(w.size()); off += bb) {
    for (int64_t i = 0; i < bb; ++i) w[off + i] = static_cast<uint8_t>(byte(rng));
    const float d = 0.002f + std::fabs(nd(rng));
    const uint16_t dh = fp32_to_fp16(d);
    std::memcpy(&w[off], &dh, 2);
    if (t == DType::kQ4_1) {
      const uint16_t mh = fp32_to_fp16(-8.0f * d);
      std::memcpy(&w[off + 2], &mh, 2);
    }
  }
  return w;
}

std::vector<float> random_activations(int64_t m, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(m * cols));
  for (auto& v : x) v = nd(rng);
  return x;
}

ThreadPool& pool_for(int threads) {
  static ThreadPool one(1), two(2);
  return threads == 1 ? one : two;
}

struct Shape {
  DType type;
  int64_t rows, cols;
};
const Shape kShapes[] = {
    {DType::kQ4_1, kHidden, kHidden}, {DType::kQ4_1, kKv, kHidden},   {DType::kQ4_1, kFfn, kHidden},
    {DType::kQ4_1, kHidden, kFfn},    {DType::kQ8_0, kVocab, kHidden}, {DType::kF16, kHidden, kHidden},
    {DType::kF32, kHidden, kHidden},  {DType::kBF16, kHidden, kHidden}, {DType::kQ4_0, kFfn, kHidden},
};

// Aborts unless matmul agrees with the reference for this shape, m and thread count.
void verify_or_die(const Shape& s, int64_t m, int threads) {
  const auto w = random_weights(s.type, s.rows, s.cols, 7);
  const auto x = random_activations(m, s.cols, 8);
  const WeightView view{s.type, s.rows, s.cols, w.data()};
  std::vector<float> y(static_cast<size_t>(m * s.rows)), ref(y.size());
  MatmulScratch scratch;
  if (!matmul(view, x.data(), m, y.data(), pool_for(threads), scratch).ok()) std::abort();
  matmul_ref(view, x.data(), m, ref.data());
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < y.size(); ++i) {
    num += (static_cast<double>(y[i]) - ref[i]) * (static_cast<double>(y[i]) - ref[i]);
    den += static_cast<double>(ref[i]) * ref[i];
  }
  const double err = std::sqrt(num / den);
  const double tol = dtype_block_elems(s.type) == 1 ? 1e-5 : 1e-2;
  if (!(err <= tol)) {
    std::fprintf(stderr, "verification FAILED: %s %lldx%lld m=%lld threads=%d: error %.3g > %.3g\n",
                 dtype_name(s.type), static_cast<long long>(s.rows), static_cast<long long>(s.cols),
                 static_cast<long long>(m), threads, err, tol);
    std::abort();
  }
}

// Aborts unless q/k/v through matmul_shared_input equal one matmul() per matrix, bitwise.
void verify_shared_input_or_die(int64_t m, int threads) {
  const int64_t rows[] = {kHidden, kKv, kKv};
  std::vector<std::vector<uint8_t>> w;
  std::vector<std::vector<float>> fused, alone;
  std::vector<MatmulTarget> targets;
  const auto x = random_activations(m, kHidden, 9);
  MatmulScratch scratch;
  for (size_t i = 0; i < 3; ++i) {
    w.push_back(random_weights(DType::kQ4_1, rows[i], kHidden, static_cast<uint32_t>(20 + i)));
    fused.emplace_back(static_cast<size_t>(m * rows[i]));
    alone.emplace_back(fused.back().size());
  }
  for (size_t i = 0; i < 3; ++i) {
    const WeightView view{DType::kQ4_1, rows[i], kHidden, w[i].data()};
    targets.push_back({view, fused[i].data()});
    if (!matmul(view, x.data(), m, alone[i].data(), pool_for(threads), scratch).ok()) std::abort();
  }
  if (!matmul_shared_input(targets, x.data(), m, pool_for(threads), scratch).ok()) std::abort();
  for (size_t i = 0; i < 3; ++i) {
    if (fused[i] != alone[i]) {
      std::fprintf(stderr, "verification FAILED: matmul_shared_input differs, matrix %zu m=%lld\n",
                   i, static_cast<long long>(m));
      std::abort();
    }
  }
}

void BM_Matmul(benchmark::State& state) {
  const Shape& s = kShapes[state.range(0)];
  const int64_t m = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  const auto w = random_weights(s.type, s.rows, s.cols, 1);
  const auto x = random_activations(m, s.cols, 2);
  std::vector<float> y(static_cast<size_t>(m * s.rows));
  MatmulScratch scratch;
  const WeightView view{s.type, s.rows, s.cols, w.data()};
  for (auto _ : state) {
    if (!matmul(view, x.data(), m, y.data(), pool_for(threads), scratch).ok()) {
      state.SkipWithError("matmul failed");
      break;
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(std::string(dtype_name(s.type)) + " " + std::to_string(s.rows) + "x" +
                 std::to_string(s.cols) + " m=" + std::to_string(m) + " t=" + std::to_string(threads));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(w.size()));
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * static_cast<double>(s.rows * s.cols * m) * static_cast<double>(state.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(m * state.iterations()), benchmark::Counter::kIsRate);
}

void matmul_args(benchmark::internal::Benchmark* b) {
  for (int64_t shape = 0; shape < static_cast<int64_t>(std::size(kShapes)); ++shape) {
    for (const int64_t m : {1, 64}) {
      for (const int64_t threads : {1, 2}) b->Args({shape, m, threads});
    }
  }
}
BENCHMARK(BM_Matmul)->Apply(matmul_args)->UseRealTime()->MinTime(0.3);

// All weights of the model with the SmolLM2 shapes and types, each matrix its own buffer.
struct ModelWeights {
  struct Layer {
    std::vector<uint8_t> q, k, v, o, gate, up, down;
  };
  std::vector<Layer> layers;
  std::vector<uint8_t> lm_head;
  int64_t bytes = 0;

  ModelWeights() {
    uint32_t seed = 100;
    for (int64_t l = 0; l < kLayers; ++l) {
      Layer L;
      L.q = random_weights(DType::kQ4_1, kHidden, kHidden, seed++);
      L.k = random_weights(DType::kQ4_1, kKv, kHidden, seed++);
      L.v = random_weights(DType::kQ4_1, kKv, kHidden, seed++);
      L.o = random_weights(DType::kQ4_1, kHidden, kHidden, seed++);
      L.gate = random_weights(DType::kQ4_1, kFfn, kHidden, seed++);
      L.up = random_weights(DType::kQ4_1, kFfn, kHidden, seed++);
      L.down = random_weights(DType::kQ4_1, kHidden, kFfn, seed++);
      for (auto* v : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) bytes += static_cast<int64_t>(v->size());
      layers.push_back(std::move(L));
    }
    lm_head = random_weights(DType::kQ8_0, kVocab, kHidden, seed);
    bytes += static_cast<int64_t>(lm_head.size());
  }
};

const ModelWeights& model() {
  static const ModelWeights w;
  return w;
}

// Runs every matmul of `m` tokens through all layers; the LM head sees `head_tokens` tokens. With
// `shared_input`, q/k/v and gate/up go out as one matmul_shared_input each, as the engine does;
// without, one matmul() per matrix (the peer the fused form is measured against).
void model_matmuls(const ModelWeights& mw, int64_t m, int64_t head_tokens, bool shared_input,
                   ThreadPool& pool, MatmulScratch& scratch, std::vector<float>& x,
                   std::vector<float>& y) {
  auto run = [&](std::initializer_list<MatmulTarget> targets, int64_t tokens) {
    const std::span<const MatmulTarget> all(targets.begin(), targets.size());
    if (shared_input) {
      if (!matmul_shared_input(all, x.data(), tokens, pool, scratch).ok()) std::abort();
      return;
    }
    for (const MatmulTarget& t : all) {
      if (!matmul(t.w, x.data(), tokens, t.y, pool, scratch).ok()) std::abort();
    }
  };
  auto q4 = [](const std::vector<uint8_t>& w, int64_t rows, int64_t cols) {
    return WeightView{DType::kQ4_1, rows, cols, w.data()};
  };
  float* out = y.data();
  for (const auto& L : mw.layers) {
    run({{q4(L.q, kHidden, kHidden), out},
         {q4(L.k, kKv, kHidden), out + m * kHidden},
         {q4(L.v, kKv, kHidden), out + m * (kHidden + kKv)}},
        m);
    run({{q4(L.o, kHidden, kHidden), out}}, m);
    run({{q4(L.gate, kFfn, kHidden), out}, {q4(L.up, kFfn, kHidden), out + m * kFfn}}, m);
    run({{q4(L.down, kHidden, kFfn), out}}, m);
  }
  run({{{DType::kQ8_0, kVocab, kHidden, mw.lm_head.data()}, out}}, head_tokens);
}

// Arguments of both step benchmarks: threads, shared_input (0: one matmul per matrix, 1: q/k/v
// and gate/up fused).
void step_args(benchmark::internal::Benchmark* b) {
  b->ArgsProduct({{1, 2}, {0, 1}})
      ->ArgNames({"threads", "shared_input"})
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond)
      ->MinTime(1.0);
}

void BM_DecodeStep(benchmark::State& state) {
  const ModelWeights& mw = model();
  ThreadPool& pool = pool_for(static_cast<int>(state.range(0)));
  MatmulScratch scratch;
  auto x = random_activations(1, kFfn, 3);
  std::vector<float> y(static_cast<size_t>(2 * kFfn + kVocab));
  for (auto _ : state) {
    model_matmuls(mw, 1, 1, state.range(1) != 0, pool, scratch, x, y);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * mw.bytes);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecodeStep)->Apply(step_args);

void BM_PrefillStep(benchmark::State& state) {
  const int64_t m = 64;
  const ModelWeights& mw = model();
  ThreadPool& pool = pool_for(static_cast<int>(state.range(0)));
  MatmulScratch scratch;
  auto x = random_activations(m, kFfn, 4);
  std::vector<float> y(static_cast<size_t>(2 * m * kFfn + kVocab));
  for (auto _ : state) {
    model_matmuls(mw, m, 1, state.range(1) != 0, pool, scratch, x, y);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(m * state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PrefillStep)->Apply(step_args);

void BM_ParallelFor(benchmark::State& state) {
  ThreadPool& pool = pool_for(2);
  int64_t sink = 0;
  for (auto _ : state) {
    pool.parallel_for(2, 1, [&](int64_t b, int64_t e) { benchmark::DoNotOptimize(sink += e - b); });
  }
}
BENCHMARK(BM_ParallelFor)->UseRealTime();

}  // namespace
}  // namespace qgate

int main(int argc, char** argv) {
  using namespace qgate;
  for (const Shape& s : kShapes) {
    for (const int64_t m : {1, 64}) {
      // The 49152-row reference at m = 64 is 1.8 G double MACs; m = 1 and 3 cover its code paths.
      const int64_t vm = (s.rows == kVocab && m == 64) ? 3 : m;
      for (const int threads : {1, 2}) verify_or_die(s, vm, threads);
    }
  }
  for (const int64_t m : {1, 64}) {
    for (const int threads : {1, 2}) verify_shared_input_or_die(m, threads);
  }
  std::fprintf(stderr, "verification passed for every benchmarked configuration\n");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
