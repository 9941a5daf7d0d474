// Quantizer benchmarks on SmolLM2-135M's layer shapes (what `qgate quantize` spends its time on).
//
// main() first checks each configuration: GPTQ must beat RTN's output error on the same layer and
// inputs, and the AWQ scale search must find a loss no worse than alpha = 0 (plain RTN); a failed
// check aborts before anything is timed. Then, on 2 threads:
//   BM_Rtn             round-to-nearest of one layer: the same-run peer of the two below.
//   BM_Gptq            GPTQ with act-order of one layer, given its Hessian (512 calibration tokens).
//   BM_AwqScaleSearch  AWQ's 20-point scale search over one group of layers sharing an input.
// Shapes: up_proj (1536 x 576), down_proj (576 x 1536); the AWQ groups q/k/v (960 rows, K 576),
// gate/up (3072 rows, K 576) and down (576 rows, K 1536).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <span>
#include <vector>

#include "engine/quantize_math.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {
namespace {

constexpr int64_t kTokens = 512;
constexpr int kThreads = 2;

std::vector<float> normal(int64_t rows, int64_t cols, float stddev, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> m(static_cast<size_t>(rows * cols));
  for (float& v : m) v = dist(rng);
  return m;
}

// Inputs with a few large channels, like a transformer's activations.
std::vector<float> inputs(int64_t k, uint32_t seed) {
  auto x = normal(kTokens, k, 1.0f, seed);
  for (int64_t c = 7; c < k; c += 97) {
    for (int64_t t = 0; t < kTokens; ++t) x[t * k + c] = x[t * k + c] * 4.0f + 10.0f;
  }
  return x;
}

GptqParams gptq_params() {
  GptqParams p;
  p.group_size = 64;
  p.desc_act = true;
  return p;
}

AwqParams awq_params() {
  AwqParams p;
  p.group_size = 64;
  return p;
}

// ‖X (W − Ŵ)ᵀ‖²_F in double.
double output_error(const std::vector<float>& x, int64_t k, const std::vector<float>& w,
                    const QuantizedLinear& q, int64_t n) {
  const std::vector<float> d = dequantize_linear(q);
  double total = 0.0;
  std::vector<double> e(static_cast<size_t>(k));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) e[c] = static_cast<double>(w[r * k + c]) - d[r * k + c];
    for (int64_t t = 0; t < kTokens; ++t) {
      double s = 0.0;
      for (int64_t c = 0; c < k; ++c) s += x[t * k + c] * e[c];
      total += s * s;
    }
  }
  return total;
}

struct Layer {
  int64_t n, k;
  std::vector<float> w, x;
  GptqHessian h;
  Layer(int64_t n_, int64_t k_) : n(n_), k(k_), w(normal(n_, k_, 0.02f, 11)), x(inputs(k_, 12)), h(k_) {
    if (!h.add_batch(x, kTokens).ok()) std::abort();
  }
};

Layer& layer(int64_t n) {
  static Layer up(1536, 576), down(576, 1536);
  return n == 1536 ? up : down;
}

struct AwqGroup {
  int64_t k;
  std::vector<int64_t> rows;
  std::vector<std::vector<float>> w;
  std::vector<float> x;
  std::vector<std::span<const float>> spans() const { return {w.begin(), w.end()}; }
};

AwqGroup awq_group(int64_t k, std::vector<int64_t> rows) {
  AwqGroup g{k, rows, {}, inputs(k, 21)};
  for (size_t i = 0; i < rows.size(); ++i) g.w.push_back(normal(rows[i], k, 0.02f, 30 + i));
  return g;
}

const AwqGroup& group(int64_t rows) {
  static const AwqGroup qkv = awq_group(576, {576, 192, 192});
  static const AwqGroup gate_up = awq_group(576, {1536, 1536});
  static const AwqGroup down = awq_group(1536, {576});
  return rows == 960 ? qkv : rows == 3072 ? gate_up : down;
}

ThreadPool& pool() {
  static ThreadPool p(kThreads);
  return p;
}

void BM_Rtn(benchmark::State& state) {
  Layer& l = layer(state.range(0));
  for (auto _ : state) {
    auto q = quantize_rtn(l.w, l.n, l.k, gptq_params());
    benchmark::DoNotOptimize(q);
  }
}

void BM_Gptq(benchmark::State& state) {
  Layer& l = layer(state.range(0));
  for (auto _ : state) {
    auto q = quantize_gptq(l.w, l.n, l.k, l.h, gptq_params(), &pool());
    benchmark::DoNotOptimize(q);
  }
}

void BM_AwqScaleSearch(benchmark::State& state) {
  const AwqGroup& g = group(state.range(0));
  const auto spans = g.spans();
  for (auto _ : state) {
    auto r = awq_search_scales(spans, g.rows, g.k, g.x, kTokens, awq_params(), &pool());
    benchmark::DoNotOptimize(r);
  }
}

BENCHMARK(BM_Rtn)->Args({1536, 576})->Args({576, 1536})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Gptq)->Args({1536, 576})->Args({576, 1536})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AwqScaleSearch)->Arg(960)->Arg(3072)->Arg(576)->Unit(benchmark::kMillisecond)->UseRealTime();

bool check() {
  bool ok = true;
  for (auto [n, k] : {std::pair<int64_t, int64_t>{1536, 576}, {576, 1536}}) {
    Layer& l = layer(n);
    auto rtn = quantize_rtn(l.w, n, k, gptq_params());
    auto gptq = quantize_gptq(l.w, n, k, l.h, gptq_params(), &pool());
    if (!rtn.ok() || !gptq.ok()) {
      std::fprintf(stderr, "check: quantizing %lldx%lld failed\n", static_cast<long long>(n),
                   static_cast<long long>(k));
      return false;
    }
    const double ratio = std::sqrt(output_error(l.x, k, l.w, gptq->layer, n) /
                                   output_error(l.x, k, l.w, *rtn, n));
    std::printf("check %lldx%lld: GPTQ/RTN output error %.3f\n", static_cast<long long>(n),
                static_cast<long long>(k), ratio);
    ok = ok && ratio < 1.0;
  }
  for (int64_t rows : {960, 3072, 576}) {
    const AwqGroup& g = group(rows);
    auto r = awq_search_scales(g.spans(), g.rows, g.k, g.x, kTokens, awq_params(), &pool());
    if (!r.ok()) return false;
    std::printf("check AWQ group of %lld rows: best alpha %.2f, loss %.3g vs RTN %.3g\n",
                static_cast<long long>(rows), r->alpha, r->loss, r->losses.front());
    ok = ok && r->loss <= r->losses.front();
  }
  return ok;
}

}  // namespace
}  // namespace qgate

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (!qgate::check()) {
    std::fprintf(stderr, "quantize_bench: a check failed; nothing timed\n");
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
