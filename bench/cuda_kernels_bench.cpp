// W4A16 matmul against cuBLASLt FP16 on the Llama 7B and 70B projection shapes (docs/GPU.md).
//
// A plain main, not Google Benchmark: every number here is device time read from CUDA events
// around CUDA-graph replays, its median over many replays, and each row is compared with the FP16
// row of the same shape (speedup) and with the copy bandwidth measured at start (% of ceiling);
// Google Benchmark's host-clock iteration loop and per-benchmark isolation fit neither.
//
// Method:
//  1. Ceiling: a 1 GiB device-to-device copy, bytes read + bytes written over the median time.
//  2. Per shape (N x K, group 128): random 4-bit weights with random per-group scale/min (never
//     zeros), packed once (pack_w4a16), and their dequantized fp16 copy (w4a16_dequant rounded to
//     fp16) as the FP16 baseline's weights, so both paths compute the same function. "AWQ" runs the
//     packed matrix on x; "GPTQ act-order" gathers x's columns through a random permutation
//     (gather_columns) and then runs the matmul, both timed together.
//  3. Checks before timing: cuBLASLt on the dequantized weights against a double host product on
//     sampled columns; the W4A16 output (poisoned with NaN first) against cuBLASLt on independent
//     weights: AWQ against the dequantized matrix, GPTQ against the matrix with its columns put
//     back in checkpoint order (so the gather is checked too). A failed check skips the timing,
//     prints FAIL and makes the exit status 1.
//  4. Timing: enough copies of the weights that together they exceed 3x the L2 (each call reads
//     weights no earlier call left in cache); one CUDA graph holds >= 24 calls rotating over the
//     copies (no host launch gaps, as in graph-captured decode); the per-call time is the median
//     of `--replays` replays after two warm-up replays. An op that cannot be captured is launched
//     straight onto the stream instead ("stream" in the timing column).
// GB/s counts the weight bytes one call must read: packed weights + scale/min for W4A16, fp16
// weights for cuBLASLt (io_bytes in the CSV adds activations, outputs and the gather).
//
// Usage: qgate_cuda_kernels_bench [--out PATH.csv] [--json PATH] [--models 7b,70b]
//                                 [--m 1,2,4,...] [--replays N] [--quick]
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "kernels/cpu/half.h"
#include "kernels/cuda/cublaslt_gemm.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/w4a16.h"
#include "kernels/w4a16_layout.h"

namespace qgate::cuda {
namespace {

constexpr int64_t kGroup = 128;
constexpr int64_t kMaxM = 128;
constexpr int kMinCallsPerGraph = 24;
constexpr double kCublasVsHostBound = 2e-3;  // fp16 output rounding (2^-11) dominates
constexpr double kW4VsCublasBound = 5e-3;    // two fp16-rounded outputs, different sum orders

struct Shape {
  const char* model;
  int64_t n, k;
};
// Each model's o/down/gate/up projections and its stacked q|k|v (12288, 10240 rows), plus the
// stacked gate|up the engine runs for 7B (22016 = 2 x 11008).
const Shape kShapes[] = {
    {"7b", 4096, 4096},  {"7b", 11008, 4096},  {"7b", 4096, 11008},  {"7b", 12288, 4096},
    {"7b", 22016, 4096}, {"70b", 8192, 8192},  {"70b", 28672, 8192}, {"70b", 8192, 28672},
    {"70b", 10240, 8192},
};

struct Options {
  std::string csv, json;
  std::vector<std::string> models{"7b", "70b"};
  std::vector<int64_t> ms{1, 2, 4, 8, 16, 32, 64, 128};
  int replays = 31;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const size_t end = comma == std::string::npos ? s.size() : comma;
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// Every row of a table: one (shape, m, variant, kernel).
struct Row {
  std::string model, variant, kernel, status = "ok";
  std::string auto_kernel;  // what kAuto ran, for the "auto" rows
  int64_t n = 0, k = 0, m = 0;
  double us = 0, us_min = 0, us_max = 0, weight_bytes = 0, io_bytes = 0, gbps = 0, pct_copy = 0,
         speedup = 0, err = 0;
  int calls_per_graph = 0;
  std::string timing;  // "graph" (replayed CUDA graph) or "stream" (the op would not capture)
  bool timed = false;
};

// Splits [0, n) over the host's cores (the 70B matrices are 235 M weights).
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t threads = std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, 32);
  const int64_t chunk = (n + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    pool.emplace_back(fn, begin, std::min(n, begin + chunk));
  }
  for (auto& t : pool) t.join();
}

// splitmix64: a fast, seedable stream per row, so rows can be generated in parallel.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }  // [0, 1)
};

// Setup failures (allocation, packing) end the run: there is nothing to measure without them.
template <typename R>
void check_ok(const R& r, const char* what) {
  if (r.ok()) return;
  std::fprintf(stderr, "qgate_cuda_kernels_bench: %s: %s\n", what, r.error().to_string().c_str());
  std::exit(2);
}
template <typename T>
T check_result(Result<T> r, const char* what) {
  check_ok(r, what);
  return std::move(r).value();
}

DeviceBuffer upload(const void* host, size_t bytes, const char* what) {
  return check_result(DeviceBuffer::upload(host, bytes, what), what);
}

DeviceBuffer device_copy(const DeviceBuffer& src, const char* what) {
  DeviceBuffer d = check_result(DeviceBuffer::allocate(src.bytes(), what), what);
  CUDA_CHECK(cudaMemcpy(d.get(), src.get(), src.bytes(), cudaMemcpyDeviceToDevice));
  return d;
}

std::vector<float> download_half(const void* dev, int64_t count) {
  std::vector<uint16_t> h(static_cast<size_t>(count));
  CUDA_CHECK(cudaMemcpy(h.data(), dev, h.size() * 2, cudaMemcpyDeviceToHost));
  std::vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = fp16_to_fp32(h[i]);
  return f;
}

// ‖got − ref‖ / ‖ref‖ over the first `count` elements; NaN (poison left unwritten) gives +inf.
double normalized_error(const std::vector<float>& got, const std::vector<float>& ref,
                        int64_t count) {
  double d2 = 0, r2 = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    d2 += (static_cast<double>(got[i]) - ref[i]) * (static_cast<double>(got[i]) - ref[i]);
    r2 += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(d2 / std::max(r2, 1e-300));
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Timing {
  double median_us = 0, min_us = 0, max_us = 0;
  int calls = 0;
  bool graph = false;
};

// Per-call device time of op(copy) (Method 4): `calls` calls rotating over the copies, captured in
// one CUDA graph and replayed. If the op cannot be captured (a launcher that synchronizes, say),
// the same calls go straight onto the stream between the events instead, and the row says so.
Result<Timing> time_op(cudaStream_t stream, int copies, int replays,
                       const std::function<Status(int)>& op) {
  Timing t;
  t.calls = copies * ((kMinCallsPerGraph + copies - 1) / copies);
  cudaGraphExec_t exec = nullptr;
  if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed) == cudaSuccess) {
    Status captured = Status::Ok();
    for (int i = 0; i < t.calls && captured.ok(); ++i) captured = op(i % copies);
    cudaGraph_t graph = nullptr;
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    if (captured.ok() && end == cudaSuccess &&
        cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
      exec = nullptr;
    }
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
  cudaGetLastError();  // a refused capture leaves its error behind
  t.graph = exec != nullptr;
  auto launch_all = [&]() -> Status {
    if (t.graph) return cuda_status(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
    for (int i = 0; i < t.calls; ++i) QGATE_TRY_STATUS(op(i % copies));
    return Status::Ok();
  };
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> per_call;
  Status st = Status::Ok();
  for (int r = -2; r < replays && st.ok(); ++r) {  // two warm-up rounds
    CUDA_CHECK(cudaEventRecord(start, stream));
    st = launch_all();
    CUDA_CHECK(cudaEventRecord(stop, stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (r >= 0) per_call.push_back(ms * 1000.0 / t.calls);
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  if (exec != nullptr) CUDA_CHECK(cudaGraphExecDestroy(exec));
  QGATE_TRY_STATUS(st);
  t.median_us = median(per_call);
  t.min_us = *std::min_element(per_call.begin(), per_call.end());
  t.max_us = *std::max_element(per_call.begin(), per_call.end());
  return t;
}

// The copy ceiling (Method 1) in GB/s: 1 GiB copied (and so 2 GiB moved) per call.
double copy_bandwidth_gbps(cudaStream_t stream, int replays) {
  const size_t bytes = size_t{1} << 30;
  DeviceBuffer src = check_result(DeviceBuffer::allocate(bytes, "copy src"), "copy src");
  DeviceBuffer dst = check_result(DeviceBuffer::allocate(bytes, "copy dst"), "copy dst");
  CUDA_CHECK(cudaMemset(src.get(), 0x5A, bytes));
  const Timing t = check_result(
      time_op(stream, 1, replays,
              [&](int) {
                return cuda_status(
                    cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, stream),
                    "cudaMemcpyAsync");
              }),
      "copy ceiling");
  return 2.0 * static_cast<double>(bytes) / (t.median_us * 1e-6) / 1e9;
}

// Host data of one shape. Wdeq[n][k] are the packed weights as the kernels dequantize them,
// rounded to fp16; perm is the act-order permutation: gathered column i is x's column perm[i].
struct HostShape {
  W4A16Weights packed;
  std::vector<uint16_t> wdeq, x;
  std::vector<float> xf;
  std::vector<int32_t> perm;
};

HostShape make_host_shape(int64_t n, int64_t k, uint64_t seed) {
  const int64_t groups = (k + kGroup - 1) / kGroup;
  std::vector<uint8_t> q(static_cast<size_t>(n * k));
  std::vector<float> scale(static_cast<size_t>(n * groups)), mins(scale.size());
  parallel_for(n, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      Rng rng{seed * 1000003u + static_cast<uint64_t>(r)};
      for (int64_t c = 0; c < k; ++c) q[r * k + c] = static_cast<uint8_t>(rng.next() & 15);
      // Magnitudes of real 4-bit checkpoints (weights ~N(0, 0.02)): scale ~0.004..0.012 and an
      // asymmetric zero point 4..11, min = -scale * zero.
      for (int64_t g = 0; g < groups; ++g) {
        const float s = 0.004f + 0.008f * rng.uniform();
        scale[r * groups + g] = s;
        mins[r * groups + g] = -s * static_cast<float>(4 + rng.next() % 8);
      }
    }
  });
  HostShape h;
  const Int4Matrix m{n, k, kGroup, q.data(), scale.data(), mins.data()};
  h.packed = check_result(pack_w4a16(m), "pack_w4a16");
  h.wdeq.resize(static_cast<size_t>(n * k));
  parallel_for(n, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = 0; c < k; ++c)
        h.wdeq[r * k + c] = fp32_to_fp16(w4a16_dequant(h.packed, r, c));
    }
  });
  Rng rng{seed ^ 0xA5A5A5A5ull};
  h.x.resize(static_cast<size_t>(kMaxM * k));
  h.xf.resize(h.x.size());
  for (size_t i = 0; i < h.x.size(); ++i) {
    h.x[i] = fp32_to_fp16(2.0f * rng.uniform() - 1.0f);
    h.xf[i] = fp16_to_fp32(h.x[i]);
  }
  h.perm.resize(static_cast<size_t>(k));
  std::iota(h.perm.begin(), h.perm.end(), 0);
  for (int64_t i = k - 1; i > 0; --i) std::swap(h.perm[i], h.perm[rng.next() % (i + 1)]);
  return h;
}

// Normalized error of y (kMaxM x n, from cuBLASLt on weights w) against a double host product on
// 32 sampled output columns, all rows.
double check_against_host(const std::vector<float>& y, const std::vector<uint16_t>& w,
                          const std::vector<float>& xf, int64_t n, int64_t k) {
  double d2 = 0, r2 = 0;
  for (int s = 0; s < 32; ++s) {
    const int64_t col = s == 31 ? n - 1 : (s * 2654435761ll) % n;
    std::vector<double> wr(static_cast<size_t>(k));
    for (int64_t c = 0; c < k; ++c) wr[c] = fp16_to_fp32(w[col * k + c]);
    for (int64_t r = 0; r < kMaxM; ++r) {
      double acc = 0;
      for (int64_t c = 0; c < k; ++c) acc += xf[r * k + c] * wr[c];
      const double got = y[r * n + col];
      if (!std::isfinite(got)) return INFINITY;
      d2 += (got - acc) * (got - acc);
      r2 += acc * acc;
    }
  }
  return std::sqrt(d2 / std::max(r2, 1e-300));
}

int copies_for(uint64_t bytes, uint64_t l2) {
  return static_cast<int>(std::clamp<uint64_t>((3 * l2 + bytes - 1) / bytes, 2, 64));
}

bool bench_shape(const Shape& shape, const Options& opt, CublasLtGemm& gemm, cudaStream_t stream,
                 double copy_gbps, uint64_t l2, std::vector<Row>& rows) {
  const int64_t n = shape.n, k = shape.k;
  std::printf("-- %s %lld x %lld: preparing weights\n", shape.model, static_cast<long long>(n),
              static_cast<long long>(k));
  std::fflush(stdout);
  const HostShape h = make_host_shape(n, k, static_cast<uint64_t>(n * 31 + k));
  bool all_ok = true;

  // Device copies for rotation (Method 4).
  const uint64_t w4_bytes = h.packed.bytes();
  const uint64_t f16_bytes = static_cast<uint64_t>(n * k * 2);
  const int w4_copies = copies_for(w4_bytes, l2), f16_copies = copies_for(f16_bytes, l2);
  std::vector<DeviceBuffer> qw, sm, wf;
  qw.push_back(upload(h.packed.qweight.data(), h.packed.qweight.size() * 4, "qweight"));
  sm.push_back(upload(h.packed.scale_min.data(), h.packed.scale_min.size() * 2, "scale_min"));
  wf.push_back(upload(h.wdeq.data(), f16_bytes, "fp16 weights"));
  for (int i = 1; i < w4_copies; ++i) {
    qw.push_back(device_copy(qw[0], "qweight copy"));
    sm.push_back(device_copy(sm[0], "scale_min copy"));
  }
  for (int i = 1; i < f16_copies; ++i) wf.push_back(device_copy(wf[0], "fp16 copy"));
  std::vector<W4A16DeviceWeights> dw;
  for (int i = 0; i < w4_copies; ++i) {
    dw.push_back({n, k, kGroup, qw[i].as<uint32_t>(), sm[i].as<__half2>()});
  }
  DeviceBuffer x = upload(h.x.data(), h.x.size() * 2, "x");
  DeviceBuffer perm = upload(h.perm.data(), h.perm.size() * 4, "perm");
  auto alloc = [](size_t bytes, const char* what) {
    return check_result(DeviceBuffer::allocate(bytes, what), what);
  };
  DeviceBuffer xg = alloc(h.x.size() * 2, "gathered x");
  DeviceBuffer y = alloc(static_cast<size_t>(kMaxM * n * 2), "y");

  // References for all kMaxM rows (rows are independent, so the first m rows serve every m).
  auto cublas_ref = [&](const DeviceBuffer& w, const std::vector<uint16_t>& w_host,
                        const char* name) {
    CUDA_CHECK(cudaMemset(y.get(), 0xFF, y.bytes()));
    check_ok(
        gemm.matmul(w.get(), GemmType::kF16, x.get(), kMaxM, n, k, y.get(), GemmType::kF16, stream),
        name);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    std::vector<float> out = download_half(y.get(), kMaxM * n);
    const double err = check_against_host(out, w_host, h.xf, n, k);
    std::printf("   check %-28s vs double host product: %.2e %s\n", name, err,
                err < kCublasVsHostBound ? "ok" : "FAIL");
    if (!(err < kCublasVsHostBound)) all_ok = false;
    return out;
  };
  const std::vector<float> ref_awq = cublas_ref(wf[0], h.wdeq, "cuBLASLt(dequantized W)");
  std::vector<float> ref_gptq;
  {
    // Checkpoint-order weights: gathered column i is column perm[i] of the original.
    std::vector<uint16_t> w_orig(h.wdeq.size());
    parallel_for(n, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t i = 0; i < k; ++i) w_orig[r * k + h.perm[i]] = h.wdeq[r * k + i];
      }
    });
    DeviceBuffer d_orig = upload(w_orig.data(), f16_bytes, "checkpoint-order weights");
    ref_gptq = cublas_ref(d_orig, w_orig, "cuBLASLt(checkpoint order)");
  }

  for (const int64_t m : opt.ms) {
    double fp16_us = 0;
    // Each row is logged as it is measured: a run cut short still leaves its numbers.
    auto finish = [&](const Row& row) {
      std::printf("   m=%-3lld %-5s %-12s %10.2f us %7.0f GB/s %4.0f%% %5.2fx err %.1e %s %s\n",
                  static_cast<long long>(m), row.variant.c_str(), row.kernel.c_str(), row.us,
                  row.gbps, row.pct_copy, row.speedup, row.err, row.timing.c_str(),
                  row.status.c_str());
      std::fflush(stdout);
      rows.push_back(row);
    };
    auto run_variant = [&](const std::string& variant, W4A16Kernel kern) {
      Row row;
      row.model = shape.model;
      row.variant = variant;
      row.n = n;
      row.k = k;
      row.m = m;
      const bool fp16 = variant == "fp16";
      const bool gptq = variant == "gptq";
      row.kernel = fp16 ? "cublaslt" : w4a16_kernel_name(kern);
      if (!fp16 && kern == W4A16Kernel::kAuto)
        row.auto_kernel = w4a16_kernel_name(w4a16_auto_kernel(m));
      row.weight_bytes = static_cast<double>(fp16 ? f16_bytes : w4_bytes);
      row.io_bytes = row.weight_bytes + 2.0 * m * (k + n) + (gptq ? 4.0 * m * k + 4.0 * k : 0.0);
      std::function<Status(int)> op = [&, fp16, gptq, kern](int i) -> Status {
        if (fp16) {
          return gemm.matmul(wf[i].get(), GemmType::kF16, x.get(), m, n, k, y.get(), GemmType::kF16,
                             stream);
        }
        const __half* xin = x.as<__half>();
        if (gptq) {
          QGATE_TRY_STATUS(
              gather_columns(x.as<__half>(), perm.as<int32_t>(), m, k, xg.as<__half>(), stream));
          xin = xg.as<__half>();
        }
        return w4a16_matmul(dw[i], xin, m, y.as<__half>(), stream, kern);
      };
      // Check (Method 3) on poisoned output.
      CUDA_CHECK(cudaMemset(y.get(), 0xFF, y.bytes()));
      const Status first = op(0);
      CUDA_CHECK(cudaStreamSynchronize(stream));
      if (!first.ok()) {
        // A forced kernel may refuse an m it was not built for; that is a result, not a failure.
        // cuBLASLt or kAuto refusing a shape is.
        const bool forced = !fp16 && kern != W4A16Kernel::kAuto;
        row.status = (forced ? "refused: " : "ERROR: ") + first.error().to_string();
        if (!forced) all_ok = false;
        return finish(row);
      }
      row.err = normalized_error(download_half(y.get(), m * n), gptq ? ref_gptq : ref_awq, m * n);
      const double bound = fp16 ? kCublasVsHostBound : kW4VsCublasBound;
      if (!(row.err < bound)) {
        row.status = "FAIL: error " + std::to_string(row.err);
        all_ok = false;
        return finish(row);
      }
      auto t = time_op(stream, fp16 ? f16_copies : w4_copies, opt.replays, op);
      if (!t.ok()) {
        row.status = "timing failed: " + t.error().to_string();
        all_ok = false;
        return finish(row);
      }
      row.timed = true;
      row.us = t->median_us;
      row.us_min = t->min_us;
      row.us_max = t->max_us;
      row.calls_per_graph = t->calls;
      row.timing = t->graph ? "graph" : "stream";
      row.gbps = row.weight_bytes / (row.us * 1e-6) / 1e9;
      row.pct_copy = 100.0 * row.gbps / copy_gbps;
      if (fp16) fp16_us = row.us;
      row.speedup = fp16_us > 0 ? fp16_us / row.us : 0.0;
      finish(row);
    };
    run_variant("fp16", W4A16Kernel::kAuto);
    for (const char* variant : {"awq", "gptq"}) {
      for (W4A16Kernel kern : {W4A16Kernel::kAuto, W4A16Kernel::kGemv, W4A16Kernel::kTensorCore}) {
        run_variant(variant, kern);
      }
    }
  }
  return all_ok;
}

const Row* find_row(const std::vector<Row>& rows, int64_t n, int64_t k, int64_t m,
                    const std::string& variant, const std::string& kernel) {
  for (const Row& r : rows) {
    if (r.n == n && r.k == k && r.m == m && r.variant == variant && r.kernel == kernel) return &r;
  }
  return nullptr;
}

std::string cell(const Row* r, bool with_bw) {
  char buf[64];
  if (r == nullptr) return "-";
  if (!r->timed) return r->status.substr(0, r->status.find(':'));
  if (with_bw) {
    std::snprintf(buf, sizeof buf, "%8.1f %5.2fx %3.0f%%", r->us, r->speedup, r->pct_copy);
  } else {
    std::snprintf(buf, sizeof buf, "%8.1f %5.2fx", r->us, r->speedup);
  }
  return buf;
}

void print_table(const std::vector<Row>& rows, const Options& opt, double copy_gbps) {
  const std::string autok = w4a16_kernel_name(W4A16Kernel::kAuto);
  const std::string gemv = w4a16_kernel_name(W4A16Kernel::kGemv);
  const std::string tc = w4a16_kernel_name(W4A16Kernel::kTensorCore);
  std::printf(
      "\nper call, us (median of graph replays); x = speedup vs cuBLASLt FP16; %% = of %.0f GB/s "
      "copy\n",
      copy_gbps);
  std::printf("%13s %4s | %-15s | %-24s | %-15s | %-15s | %-15s\n", "N x K", "M", "fp16 us   %bw",
              "AWQ auto  us  x  %bw", "GPTQ auto us x", "AWQ gemv us x", "AWQ tc us x");
  for (const Shape& s : kShapes) {
    for (const int64_t m : opt.ms) {
      const Row* f = find_row(rows, s.n, s.k, m, "fp16", "cublaslt");
      if (f == nullptr) continue;
      char fp16_cell[32] = "-";
      if (f->timed) std::snprintf(fp16_cell, sizeof fp16_cell, "%8.1f %4.0f%%", f->us, f->pct_copy);
      char nk[32];
      std::snprintf(nk, sizeof nk, "%lldx%lld", static_cast<long long>(s.n),
                    static_cast<long long>(s.k));
      std::printf("%13s %4lld | %-15s | %-24s | %-15s | %-15s | %-15s\n", nk,
                  static_cast<long long>(m), f->timed ? fp16_cell : f->status.c_str(),
                  cell(find_row(rows, s.n, s.k, m, "awq", autok), true).c_str(),
                  cell(find_row(rows, s.n, s.k, m, "gptq", autok), false).c_str(),
                  cell(find_row(rows, s.n, s.k, m, "awq", gemv), false).c_str(),
                  cell(find_row(rows, s.n, s.k, m, "awq", tc), false).c_str());
    }
  }
  // The targets, read off the table.
  auto target = [&](const char* what, const Row* r, bool pass) {
    std::printf("target %-58s %s\n", what,
                r == nullptr || !r->timed ? "n/a"
                : pass                    ? "MET"
                                          : "MISSED");
  };
  const Row* r1 = find_row(rows, 28672, 8192, 1, "awq", autok);
  if (r1 != nullptr) {
    target("28672x8192 M=1 W4A16 >= 3.3x FP16", r1, r1->speedup >= 3.3);
    target("28672x8192 M=1 W4A16 >= 80% of copy bandwidth", r1, r1->pct_copy >= 80.0);
  }
  const Row* r16 = find_row(rows, 28672, 8192, 16, "awq", autok);
  if (r16 != nullptr) target("28672x8192 M=16 W4A16 >= 2.5x FP16", r16, r16->speedup >= 2.5);
  int slower = 0, counted = 0;
  for (const Row& r : rows) {
    if (r.timed && r.kernel == autok && r.m <= 64 && r.variant != "fp16") {
      ++counted;
      if (r.speedup < 1.0) ++slower;
    }
  }
  std::printf("target %-58s %s (%d of %d rows slower)\n",
              "W4A16 auto never slower than FP16 up to M=64",
              counted == 0  ? "n/a"
              : slower == 0 ? "MET"
                            : "MISSED",
              slower, counted);
}

// One row as (name, value, is_string) fields; the CSV and the JSON are written from this list.
using Field = std::tuple<const char*, std::string, bool>;
std::vector<Field> fields(const Row& r) {
  auto num = [](double v, const char* fmt) {
    char buf[32];
    std::snprintf(buf, sizeof buf, fmt, v);
    return std::string(buf);
  };
  std::string status = r.status;
  for (char& c : status) c = (c == '"' || c == ',' || c == '\\') ? ';' : c;
  return {{"model", r.model, true},
          {"n", std::to_string(r.n), false},
          {"k", std::to_string(r.k), false},
          {"m", std::to_string(r.m), false},
          {"variant", r.variant, true},
          {"kernel", r.kernel, true},
          {"auto_kernel", r.auto_kernel, true},
          {"status", status, true},
          {"us_median", num(r.us, "%.3f"), false},
          {"us_min", num(r.us_min, "%.3f"), false},
          {"us_max", num(r.us_max, "%.3f"), false},
          {"calls_per_graph", std::to_string(r.calls_per_graph), false},
          {"timing", r.timing, true},
          {"weight_bytes", num(r.weight_bytes, "%.0f"), false},
          {"io_bytes", num(r.io_bytes, "%.0f"), false},
          {"gbps", num(r.gbps, "%.1f"), false},
          {"pct_copy", num(r.pct_copy, "%.1f"), false},
          {"speedup_vs_fp16", num(r.speedup, "%.3f"), false},
          {"norm_err", num(r.err, "%.3e"), false}};
}

void write_files(const std::vector<Row>& rows, const Options& opt, const cudaDeviceProp& prop,
                 double copy_gbps) {
  for (const bool json : {false, true}) {
    const std::string& path = json ? opt.json : opt.csv;
    if (path.empty()) continue;
    FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      continue;
    }
    if (json) {
      std::fprintf(f,
                   "{\"device\": \"%s\", \"sm_count\": %d, \"l2_bytes\": %d, \"copy_gbps\": "
                   "%.1f,\n \"rows\": [\n",
                   prop.name, prop.multiProcessorCount, prop.l2CacheSize, copy_gbps);
    } else {
      std::fprintf(f, "device,copy_gbps");
      for (const Field& fl : fields(Row{})) std::fprintf(f, ",%s", std::get<0>(fl));
      std::fprintf(f, "\n");
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      if (json) {
        std::fprintf(f, "  {");
        const char* sep = "";
        for (const auto& [name, value, quoted] : fields(rows[i])) {
          std::fprintf(f, quoted ? "%s\"%s\": \"%s\"" : "%s\"%s\": %s", sep, name, value.c_str());
          sep = ", ";
        }
        std::fprintf(f, "}%s\n", i + 1 < rows.size() ? "," : "");
      } else {
        std::fprintf(f, "\"%s\",%.1f", prop.name, copy_gbps);
        for (const Field& fl : fields(rows[i])) std::fprintf(f, ",%s", std::get<1>(fl).c_str());
        std::fprintf(f, "\n");
      }
    }
    if (json) std::fprintf(f, "]}\n");
    std::fclose(f);
    std::printf("wrote %s\n", path.c_str());
  }
}

int run(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--out" || a == "--csv") {
      opt.csv = value();
    } else if (a == "--json") {
      opt.json = value();
    } else if (a == "--models") {
      opt.models = split(value());
    } else if (a == "--m") {
      opt.ms.clear();
      for (const std::string& s : split(value())) {
        const long long m = std::atoll(s.c_str());
        if (m < 1 || m > kMaxM) {
          std::fprintf(stderr, "--m values must be in 1..%lld\n", static_cast<long long>(kMaxM));
          return 2;
        }
        opt.ms.push_back(m);
      }
    } else if (a == "--replays") {
      opt.replays = std::max(3, std::atoi(value().c_str()));
    } else if (a == "--quick") {
      opt.models = {"7b"};
      opt.ms = {1, 16, 64};
      opt.replays = 11;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--out PATH.csv] [--json PATH] [--models 7b,70b] [--m 1,2,4] "
                   "[--replays N] [--quick]\n",
                   argv[0]);
      return a == "--help" ? 0 : 2;
    }
  }
  if (!device_available()) {
    std::fprintf(stderr, "qgate_cuda_kernels_bench: no CUDA device\n");
    return 2;
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const double copy_gbps = copy_bandwidth_gbps(stream, opt.replays);
  std::printf("device %s: %d SMs, L2 %d MB, %.1f GB memory; measured copy %.0f GB/s (read+write)\n",
              prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20,
              static_cast<double>(prop.totalGlobalMem) / 1e9, copy_gbps);
  std::unique_ptr<CublasLtGemm> gemm = check_result(CublasLtGemm::create(), "CublasLtGemm::create");

  std::vector<Row> rows;
  bool all_ok = true;
  for (const Shape& s : kShapes) {
    if (std::find(opt.models.begin(), opt.models.end(), s.model) == opt.models.end()) continue;
    all_ok &= bench_shape(s, opt, *gemm, stream, copy_gbps, static_cast<uint64_t>(prop.l2CacheSize),
                          rows);
  }
  write_files(rows, opt, prop, copy_gbps);
  print_table(rows, opt, copy_gbps);
  CUDA_CHECK(cudaStreamDestroy(stream));
  std::printf("%s\n", all_ok ? "all checks passed" : "SOME CHECKS FAILED");
  return all_ok ? 0 : 1;
}

}  // namespace
}  // namespace qgate::cuda

int main(int argc, char** argv) { return qgate::cuda::run(argc, argv); }
