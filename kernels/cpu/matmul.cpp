// matmul(): validates the view, quantizes the activations once per call into the scratch buffer
// (so every weight row reuses them), then splits output rows over the pool. The per-thread work
// is the register-tiled kernel in matmul_avx2.cpp, or the scalar vec_dot_ref where the build has
// no AVX2.
#include "kernels/cpu/matmul.h"

#include <algorithm>
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
  if (w == DType::kQ4_1 && m > 1) {
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
  QGATE_TRY_STATUS(validate(w, x, m, y));
  if (m == 0) return Status::Ok();

  const int64_t w_row_bytes = *dtype_row_bytes(w.type, w.cols);
  const uint8_t* act = reinterpret_cast<const uint8_t*>(x);
  int64_t act_row_bytes = w.cols * static_cast<int64_t>(sizeof(float));
  const float* s_by_block = nullptr;

  if (is_quantized(w.type)) {
    const ActLayout l = act_layout(w.type, w.cols, m);
    uint8_t* buf = aligned_scratch(scratch, l.total);
    if (m * w.cols >= kMinParallelQuantElems) {
      pool.parallel_for(m, 1, [&](int64_t t0, int64_t t1) {
        quantize_rows(w.type, x, w.cols, m, l, buf, t0, t1);
      });
    } else {
      quantize_rows(w.type, x, w.cols, m, l, buf, 0, m);
    }
    act = buf;
    act_row_bytes = l.row_bytes;
    s_by_block = reinterpret_cast<const float*>(buf + l.s_offset);
  }

  const bool simd = cpu_avx2::available();
  cpu_avx2::GemmProblem p;
  p.type = w.type;
  p.w = static_cast<const uint8_t*>(w.data);
  p.w_row_bytes = w_row_bytes;
  p.cols = w.cols;
  p.act = act;
  p.act_row_bytes = act_row_bytes;
  p.s_by_block = s_by_block;
  p.m = m;
  p.y = y;
  p.ldy = w.rows;

  auto run_rows = [&](int64_t r0, int64_t r1) {
    if (simd) {
      cpu_avx2::gemm_rows(p, r0, r1);
      return;
    }
    for (int64_t t = 0; t < m; ++t) {
      for (int64_t r = r0; r < r1; ++r) {
        y[t * w.rows + r] = vec_dot_ref(w.type, p.w + r * w_row_bytes, act + t * act_row_bytes, w.cols);
      }
    }
  };

  const int64_t groups = (w.rows + kRowAlign - 1) / kRowAlign;
  const int64_t work_per_group = kRowAlign * w.cols * m;
  const int64_t grain = std::max<int64_t>(1, kMinParallelWork / std::max<int64_t>(1, work_per_group));
  pool.parallel_for(groups, grain, [&](int64_t g0, int64_t g1) {
    run_rows(g0 * kRowAlign, std::min(w.rows, g1 * kRowAlign));
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
