// LlamaModel::synthetic: random weights of any Llama shape, for benchmarks.
#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "engine/llama_model.h"
#include "kernels/cpu/half.h"

namespace qgate {

namespace {

// splitmix64: fast, seekable (every row gets its own stream), good enough for benchmark weights.
uint64_t next(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Uniform in [-1, 1).
float uniform(uint64_t& s) {
  return static_cast<float>(static_cast<int64_t>(next(s) >> 40) - (int64_t{1} << 23)) /
         static_cast<float>(int64_t{1} << 23);
}

// Runs f(row) for rows [0, rows) on every core.
template <typename F>
void parallel_rows(int64_t rows, F f) {
  const int64_t threads =
      std::max<int64_t>(1, std::min<int64_t>(rows, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int64_t t = 0; t < threads; ++t) {
    pool.emplace_back([=] {
      for (int64_t r = t; r < rows; r += threads) f(r);
    });
  }
  for (auto& th : pool) th.join();
}

}  // namespace

Result<LlamaModel> LlamaModel::synthetic(const LlamaConfig& config, DType matrix_type,
                                         int64_t group_size, uint64_t seed,
                                         std::optional<DType> v_and_up_type) {
  QGATE_TRY_STATUS(config.validate());
  const DType v_up = v_and_up_type.value_or(matrix_type);
  for (const DType t : {matrix_type, v_up}) {
    if (t != DType::kF16 && t != DType::kQ4_1) {
      return make_error(ErrorCode::kInvalidArgument,
                        "synthetic model: matrices must be F16 or Q4_1");
    }
  }
  if ((matrix_type == DType::kQ4_1 || v_up == DType::kQ4_1) &&
      (group_size < kQuantBlock || group_size % kQuantBlock != 0)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "synthetic model: group_size must be a positive multiple of 32");
  }
  LlamaModel m;
  m.config_ = config;
  const LlamaConfig& c = m.config_;
  uint64_t stream = seed;

  // Uniform weights of standard deviation ~1/sqrt(cols) keep each projection's output at the
  // scale of its input.
  auto matrix = [&](DType type, int64_t rows, int64_t cols) -> Result<WeightView> {
    const std::optional<int64_t> row_bytes = dtype_row_bytes(type, cols);
    if (!row_bytes) {
      return make_error(ErrorCode::kInvalidArgument,
                        "synthetic model: " + std::to_string(cols) + " columns are not whole "
                                                                      "blocks of 32");
    }
    auto bytes = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(*row_bytes * rows));
    const float amp = 1.7f / std::sqrt(static_cast<float>(cols));
    const uint64_t base = next(stream);
    uint8_t* data = bytes->data();
    parallel_rows(rows, [&, data, base](int64_t r) {
      uint64_t s = base ^ (static_cast<uint64_t>(r) * 0xd1b54a32d192ed03ULL);
      uint8_t* row = data + r * *row_bytes;
      if (type == DType::kF16) {
        auto* h = reinterpret_cast<uint16_t*>(row);
        for (int64_t i = 0; i < cols; ++i) h[i] = fp32_to_fp16(amp * uniform(s));
        return;
      }
      auto* blocks = reinterpret_cast<BlockQ4_1*>(row);
      uint16_t d = 0, mn = 0;
      for (int64_t b = 0; b < cols / kQuantBlock; ++b) {
        if ((b * kQuantBlock) % group_size == 0) {
          // q in 0..15 times d plus m spans [-amp, amp].
          d = fp32_to_fp16(2.0f * amp / 15.0f * (0.75f + 0.25f * std::abs(uniform(s))));
          mn = fp32_to_fp16(-7.5f * fp16_to_fp32(d));
        }
        blocks[b].d = d;
        blocks[b].m = mn;
        for (auto& q : blocks[b].qs) q = static_cast<uint8_t>(next(s));
      }
    });
    m.owned_repacked_.push_back(bytes);
    m.weight_bytes_ += bytes->size();
    return WeightView{type, rows, cols, bytes->data()};
  };
  auto norm = [&](int64_t n) {
    auto v = std::make_shared<std::vector<float>>(static_cast<size_t>(n));
    for (auto& x : *v) x = 1.0f + 0.1f * uniform(stream);
    m.owned_.push_back(v);
    m.weight_bytes_ += static_cast<uint64_t>(n) * 4;
    return v->data();
  };

  QGATE_ASSIGN_OR_RETURN(m.embedding_, matrix(DType::kF16, c.vocab_size, c.hidden_size));
  QGATE_ASSIGN_OR_RETURN(m.lm_head_, matrix(matrix_type, c.vocab_size, c.hidden_size));
  m.output_norm_ = norm(c.hidden_size);
  m.layers_.resize(static_cast<size_t>(c.num_layers));
  for (LlamaLayer& l : m.layers_) {
    l.attn_norm = norm(c.hidden_size);
    l.ffn_norm = norm(c.hidden_size);
    QGATE_ASSIGN_OR_RETURN(l.q.weight, matrix(matrix_type, c.q_dim(), c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.k.weight, matrix(matrix_type, c.kv_dim(), c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.v.weight, matrix(v_up, c.kv_dim(), c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.o.weight, matrix(matrix_type, c.hidden_size, c.q_dim()));
    QGATE_ASSIGN_OR_RETURN(l.gate.weight, matrix(matrix_type, c.intermediate_size, c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.up.weight, matrix(v_up, c.intermediate_size, c.hidden_size));
    QGATE_ASSIGN_OR_RETURN(l.down.weight, matrix(matrix_type, c.hidden_size, c.intermediate_size));
  }
  return m;
}

}  // namespace qgate
