// The host sampler on SmolLM2's 49152-token vocabulary: what the worker spends per sequence after
// each forward pass, serially on its thread (32 streams on a GPU mean 32 of these per step).
//
// main() first checks each mode against a naive reference on the same logits (greedy: the lowest
// id among the largest; top-k / top-p draws: the drawn id is inside the set a full sort keeps) and
// aborts on a mismatch. Logits: normal(0, 2.5) with 20 tokens lifted to 8..16, roughly the spread
// of SmolLM2's next-token logits; one row in 64 also carries NaN and -inf entries.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "engine/sampler.h"

namespace qgate {
namespace {

constexpr int64_t kVocab = 49152;
constexpr int kRows = 64;  // distinct logit rows, cycled through so no row stays in L1

std::vector<std::vector<float>> logit_rows() {
  std::mt19937 rng(7);
  std::normal_distribution<float> noise(0.0f, 2.5f);
  std::uniform_int_distribution<int64_t> id(0, kVocab - 1);
  std::vector<std::vector<float>> rows(kRows, std::vector<float>(kVocab));
  for (int r = 0; r < kRows; ++r) {
    for (float& v : rows[r]) v = noise(rng);
    for (int i = 0; i < 20; ++i) rows[r][static_cast<size_t>(id(rng))] = 8.0f + 0.4f * i;
    if (r == 0) {
      rows[r][3] = std::numeric_limits<float>::quiet_NaN();
      rows[r][5] = -std::numeric_limits<float>::infinity();
    }
  }
  return rows;
}

int32_t naive_argmax(const std::vector<float>& l) {
  int32_t best = -1;
  for (size_t i = 0; i < l.size(); ++i) {
    if (std::isnan(l[i])) continue;
    if (best < 0 || l[i] > l[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  }
  return best < 0 ? 0 : best;
}

// Ids a full sort keeps under top-k (k > 0) or top-p (p < 1) at temperature t.
std::vector<int32_t> naive_kept(const std::vector<float>& l, int32_t k, float p, float t) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < l.size(); ++i) {
    if (l[i] > -std::numeric_limits<float>::infinity()) ids.push_back(static_cast<int32_t>(i));
  }
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  if (k > 0) ids.resize(std::min(ids.size(), static_cast<size_t>(k)));
  if (p < 1.0f) {
    double total = 0;
    for (int32_t i : ids) total += std::exp((l[i] - l[ids[0]]) / t);
    double mass = 0;
    size_t keep = 0;
    while (keep < ids.size() && mass < p * total) mass += std::exp((l[ids[keep++]] - l[ids[0]]) / t);
    // A margin for rounding at the cut: the sampler's own sums run in another order.
    ids.resize(std::min(ids.size(), keep + 2));
  }
  return ids;
}

SamplingParams mode(const char* name) {
  SamplingParams p;
  p.seed = 1;
  const std::string n = name;
  if (n == "greedy") p.temperature = 0.0f;
  if (n == "top_k40") {
    p.temperature = 0.7f;
    p.top_k = 40;
  }
  if (n == "top_p0.9") {
    p.temperature = 0.7f;
    p.top_p = 0.9f;
  }
  if (n == "full") p.temperature = 1.0f;
  return p;
}

const char* const kModes[] = {"greedy", "top_k40", "top_p0.9", "full"};

bool check(const std::vector<std::vector<float>>& rows) {
  for (const char* m : kModes) {
    const SamplingParams p = mode(m);
    Sampler s(p, {});
    for (int r = 0; r < kRows; ++r) {
      std::vector<float> l = rows[static_cast<size_t>(r)];
      const int32_t got = s.sample(l);
      bool ok = true;
      if (p.temperature == 0.0f) {
        ok = got == naive_argmax(l);
      } else if (p.top_k > 0 || p.top_p < 1.0f) {
        const auto kept = naive_kept(l, p.top_k, p.top_p, p.temperature);
        ok = std::find(kept.begin(), kept.end(), got) != kept.end();
      } else {
        ok = got >= 0 && got < kVocab && std::isfinite(l[static_cast<size_t>(got)]);
      }
      if (!ok) {
        std::fprintf(stderr, "sampler_bench: %s row %d drew %d, outside the reference\n", m, r, got);
        return false;
      }
    }
  }
  return true;
}

void BM_Sample(benchmark::State& state, const char* m) {
  static const auto rows = logit_rows();
  Sampler s(mode(m), {});
  std::vector<std::vector<float>> work = rows;
  size_t r = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(s.sample(work[r]));
    r = (r + 1) % work.size();
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK_CAPTURE(BM_Sample, greedy, "greedy")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Sample, top_k40, "top_k40")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Sample, top_p0_9, "top_p0.9")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Sample, full, "full")->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace qgate

int main(int argc, char** argv) {
  if (!qgate::check(qgate::logit_rows())) return 1;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
