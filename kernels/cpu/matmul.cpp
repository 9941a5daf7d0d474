// matmul() and matmul_shared_input(): validate the views, quantize the activations once per call
// into the scratch buffer (so every weight row of every matrix reuses them), then split the output
// rows of all the matrices over the pool in one dispatch. The per-thread work
// is the register-tiled kernel in matmul_avx2.cpp, or the scalar vec_dot_ref where the build has
// no AVX2.
#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "kernels/cpu/half.h"
#include "kernels/cpu/matmul_avx2.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {
namespace {

// Row ranges handed to threads are multiples of this, so no tile straddles two threads.
constexpr int64_t kRowAlign = 4;
// Below this many multiply-adds a call runs on one thread: waking a second one costs more.
constexpr int64_t kMinParallelWork = 1 << 15;
// Quantizing a few rows is cheaper than a dispatch; beyond this many elements it is split too.
constexpr int64_t kMinParallelQuantElems = 1 << 15;
// matmul_shared_input keeps its per-matrix state on the stack (q/k/v is the most a layer has).
constexpr size_t kMaxSharedInputTargets = 8;

bool is_quantized(DType t) { return t == DType::kQ4_0 || t == DType::kQ4_1 || t == DType::kQ8_0; }
bool is_float(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }

Status validate(const WeightView& w, const float* x, int64_t m, const float* y) {
  if (!is_quantized(w.type) && !is_float(w.type)) {
    return make_error(ErrorCode::kUnsupported,
                      std::string("matmul: weight type ") + dtype_name(w.type) + " is not supported");
  }
  if (w.rows <= 0 || w.cols <= 0) {
    return make_error(ErrorCode::kInvalidArgument,
                      "matmul: weight shape " + std::to_string(w.rows) + "x" + std::to_string(w.cols) +
                          " must be positive");
  }
  if (w.cols % dtype_block_elems(w.type) != 0) {
    return make_error(ErrorCode::kInvalidArgument,
                      "matmul: cols " + std::to_string(w.cols) + " is not a multiple of the " +
                          dtype_name(w.type) + " block size " +
                          std::to_string(dtype_block_elems(w.type)));
  }
  if (m < 0) return make_error(ErrorCode::kInvalidArgument, "matmul: negative token count");
  if (m > 0 && (w.data == nullptr || x == nullptr || y == nullptr)) {
    return make_error(ErrorCode::kInvalidArgument, "matmul: null weight, input or output pointer");
  }
  return Status::Ok();
}

// Scratch layout for quantized weights: m rows of activation blocks, then (Q4_1, m > 1) the s
// values transposed to [block][token] at a 32-byte aligned offset.
struct ActLayout {
  int64_t row_bytes = 0;
  int64_t s_offset = 0;
  int64_t total = 0;
};

ActLayout act_layout(DType w, int64_t cols, int64_t m) {
  ActLayout l;
  l.row_bytes = *dtype_row_bytes(activation_dtype_for(w), cols);
  l.s_offset = (m * l.row_bytes + 31) / 32 * 32;
  l.total = l.s_offset;
  if (activation_dtype_for(w) == DType::kQ8_1 && m > 1) {
    l.total += cols / kQuantBlock * m * static_cast<int64_t>(sizeof(float));
  }
  return l;
}

uint8_t* aligned_scratch(MatmulScratch& scratch, int64_t bytes) {
  // +32 so the start can be moved to a 32-byte boundary; grows only, never shrinks.
  const auto need = static_cast<size_t>(bytes + 32);
  if (scratch.act.size() < need) scratch.act.resize(need);
  auto addr = reinterpret_cast<uintptr_t>(scratch.act.data());
  return scratch.act.data() + ((32 - addr % 32) % 32);
}

void quantize_rows(DType w, const float* x, int64_t cols, int64_t m, const ActLayout& l,
                   uint8_t* act, int64_t t0, int64_t t1) {
  const int64_t nb = cols / kQuantBlock;
  for (int64_t t = t0; t < t1; ++t) {
    uint8_t* row = act + t * l.row_bytes;
    if (activation_dtype_for(w) == DType::kQ8_1) {
      auto* blocks = reinterpret_cast<BlockQ8_1*>(row);
      quantize_row_q8_1(x + t * cols, blocks, cols);
      if (m > 1) {
        auto* s = reinterpret_cast<float*>(act + l.s_offset);
        for (int64_t b = 0; b < nb; ++b) s[b * m + t] = blocks[b].s;
      }
    } else {
      quantize_row_q8_0(x + t * cols, reinterpret_cast<BlockQ8_0*>(row), cols);
    }
  }
}

}  // namespace

Status matmul(const WeightView& w, const float* x, int64_t m, float* y, ThreadPool& pool,
              MatmulScratch& scratch) {
  const MatmulTarget target{w, y};
  return matmul_shared_input({&target, 1}, x, m, pool, scratch);
}

Status matmul_shared_input(std::span<const MatmulTarget> targets, const float* x, int64_t m,
                           ThreadPool& pool, MatmulScratch& scratch) {
  if (targets.empty()) return make_error(ErrorCode::kInvalidArgument, "matmul: no weight matrix");
  if (targets.size() > kMaxSharedInputTargets) {
    return make_error(ErrorCode::kInvalidArgument, "matmul: at most " +
                                                       std::to_string(kMaxSharedInputTargets) +
                                                       " matrices may share an input");
  }
  const WeightView& first = targets.front().w;
  const DType format = activation_dtype_for(first.type);
  bool one_format = true;
  for (const MatmulTarget& t : targets) {
    QGATE_TRY_STATUS(validate(t.w, x, m, t.y));
    if (t.w.cols != first.cols) {
      return make_error(ErrorCode::kInvalidArgument,
                        "matmul: matrices that share an input must have the same cols (" +
                            std::to_string(first.cols) + " and " + std::to_string(t.w.cols) + ")");
    }
    one_format = one_format && activation_dtype_for(t.w.type) == format;
  }
  if (m == 0) return Status::Ok();
  if (!one_format) {
    for (const MatmulTarget& t : targets) {
      QGATE_TRY_STATUS(matmul_shared_input({&t, 1}, x, m, pool, scratch));
    }
    return Status::Ok();
  }

  const int64_t cols = first.cols;
  const uint8_t* act = reinterpret_cast<const uint8_t*>(x);
  int64_t act_row_bytes = cols * static_cast<int64_t>(sizeof(float));
  const float* s_by_block = nullptr;
  if (is_quantized(first.type)) {
    const ActLayout l = act_layout(first.type, cols, m);
    uint8_t* buf = aligned_scratch(scratch, l.total);
    if (m * cols >= kMinParallelQuantElems) {
      pool.parallel_for(m, 1, [&](int64_t t0, int64_t t1) {
        quantize_rows(first.type, x, cols, m, l, buf, t0, t1);
      });
    } else {
      quantize_rows(first.type, x, cols, m, l, buf, 0, m);
    }
    act = buf;
    act_row_bytes = l.row_bytes;
    s_by_block = reinterpret_cast<const float*>(buf + l.s_offset);
  }

  // Matrix i owns row groups [group_end[i - 1], group_end[i]) of the one dispatch.
  std::array<cpu_avx2::GemmProblem, kMaxSharedInputTargets> problems;
  std::array<int64_t, kMaxSharedInputTargets> group_end{};
  int64_t groups = 0;
  for (size_t i = 0; i < targets.size(); ++i) {
    const WeightView& w = targets[i].w;
    cpu_avx2::GemmProblem& p = problems[i];
    p.type = w.type;
    p.w = static_cast<const uint8_t*>(w.data);
    p.w_row_bytes = *dtype_row_bytes(w.type, w.cols);
    p.cols = cols;
    p.act = act;
    p.act_row_bytes = act_row_bytes;
    p.s_by_block = s_by_block;
    p.m = m;
    p.y = targets[i].y;
    p.ldy = w.rows;
    groups += (w.rows + kRowAlign - 1) / kRowAlign;
    group_end[i] = groups;
  }

  const bool simd = cpu_avx2::available();
  auto run_rows = [&](const cpu_avx2::GemmProblem& p, int64_t r0, int64_t r1) {
    if (simd) {
      cpu_avx2::gemm_rows(p, r0, r1);
      return;
    }
    for (int64_t t = 0; t < m; ++t) {
      for (int64_t r = r0; r < r1; ++r) {
        p.y[t * p.ldy + r] =
            vec_dot_ref(p.type, p.w + r * p.w_row_bytes, act + t * act_row_bytes, cols);
      }
    }
  };

  const int64_t work_per_group = kRowAlign * cols * m;
  const int64_t grain = std::max<int64_t>(1, kMinParallelWork / std::max<int64_t>(1, work_per_group));
  pool.parallel_for(groups, grain, [&](int64_t g0, int64_t g1) {
    int64_t begin = 0;
    for (size_t i = 0; i < targets.size() && begin < g1; ++i) {
      const int64_t end = group_end[i];
      const int64_t lo = std::max(g0, begin);
      const int64_t hi = std::min(g1, end);
      if (lo < hi) {
        run_rows(problems[i], (lo - begin) * kRowAlign,
                 std::min(targets[i].w.rows, (hi - begin) * kRowAlign));
      }
      begin = end;
    }
  });
  return Status::Ok();
}

void matmul_ref(const WeightView& w, const float* x, int64_t m, float* y) {
  const int64_t row_bytes = *dtype_row_bytes(w.type, w.cols);
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    dequantize_row(w.type, static_cast<const uint8_t*>(w.data) + r * row_bytes, row.data(), w.cols);
    for (int64_t t = 0; t < m; ++t) {
      double acc = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) acc += static_cast<double>(row[c]) * x[t * w.cols + c];
      y[t * w.rows + r] = static_cast<float>(acc);
    }
  }
}

}  // namespace qgate
