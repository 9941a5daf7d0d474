// GPTQ / AWQ checkpoint layouts. Sources of the facts (read, not copied):
// - AutoGPTQ auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py: buffer shapes (qweight
//   [K // 32 * bits, N], qzeros [ceil(K / g), N // 32 * bits], scales [ceil(K / g), N],
//   g_idx [K] = i // g), pack() shifting value j of a word by bits * j, forward() unpacking with
//   the same shifts. Older revisions stored zeros - 1 there and added 1 back in forward().
// - AutoGPTQ auto_gptq/modeling/_utils.py and GPTQModel gptqmodel/utils/model.py:
//   convert_gptq_v1_to_v2_format / v2_to_v1 add / subtract 0x11111111 (4-bit) or 0x01010101
//   (8-bit) to each whole qzeros word. GPTQModel kernels declare in/out features divisible by 32.
// - AutoAWQ awq/modules/linear/gemm.py (WQLinear_GEMM: asserts K % g == 0 and N % 8 == 0, packs
//   column 8c + [0,2,4,6,1,3,5,7][i] into nibble i, zeros as is) and awq/utils/packing_utils.py
//   (AWQ_REVERSE_ORDER [0,4,1,5,2,6,3,7], dequantize_gemm: (q - z) * s).
#include "engine/quant_formats.h"

#include <simdjson.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <utility>

#include "kernels/cpu/half.h"

namespace qgate {

static_assert(std::endian::native == std::endian::little, "packed words are read little-endian");

namespace {

// Any real layer is far below this; the cap keeps every size product inside int64.
constexpr int64_t kMaxDim = int64_t{1} << 31;
// AWQ GEMM nibble i of a word holds column 8c + kAwqOrder[i]; column j sits in nibble
// kAwqReverse[j].
constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};
constexpr int kAwqReverse[8] = {0, 4, 1, 5, 2, 6, 3, 7};

Error fail(ErrorCode code, std::string_view who, const std::string& msg) {
  return make_error(code, std::string(who) + ": " + msg);
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}


// The v1 offset: 1 in every packed field of a word.
uint32_t v1_offset(int bits) { return bits == 4 ? 0x11111111u : 0x01010101u; }

// Checks one view against its expected dtype(s) and shape; the message names the tensor.
Status check_view(std::string_view who, const char* name, const QuantTensorView& v,
                  std::initializer_list<SafetensorsDType> dtypes,
                  const std::vector<int64_t>& expected) {
  if (std::find(dtypes.begin(), dtypes.end(), v.dtype) == dtypes.end()) {
    std::string want;
    for (auto d : dtypes)
      want += std::string(want.empty() ? "" : " or ") + safetensors_dtype_name(d);
    return fail(
        ErrorCode::kInvalidFormat, who,
        std::string(name) + " has dtype " + safetensors_dtype_name(v.dtype) + ", expected " + want);
  }
  if (v.shape != expected) {
    return fail(ErrorCode::kInvalidFormat, who,
                std::string(name) + " has shape " + shape_str(v.shape) + ", expected " +
                    shape_str(expected));
  }
  // Checked: shapes from a hostile header may multiply past int64 before any byte is read.
  int64_t n = static_cast<int64_t>(safetensors_dtype_size(v.dtype));
  for (int64_t d : expected) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) {
      return fail(ErrorCode::kInvalidFormat, who,
                  std::string(name) + " shape " + shape_str(expected) + " is too large");
    }
  }
  if (static_cast<uint64_t>(n) != v.bytes.size()) {
    return fail(ErrorCode::kInvalidFormat, who,
                std::string(name) + " holds " + std::to_string(v.bytes.size()) + " bytes, shape " +
                    shape_str(expected) + " needs " + std::to_string(n));
  }
  return Status::Ok();
}

// Rank-2 I32 check used to learn the dimensions before the full shape is known.
Result<std::pair<int64_t, int64_t>> dims2(std::string_view who, const char* name,
                                          const QuantTensorView& v) {
  if (v.dtype != SafetensorsDType::kI32) {
    return fail(
        ErrorCode::kInvalidFormat, who,
        std::string(name) + " has dtype " + safetensors_dtype_name(v.dtype) + ", expected I32");
  }
  if (v.shape.size() != 2 || v.shape[0] <= 0 || v.shape[1] <= 0 || v.shape[0] > kMaxDim ||
      v.shape[1] > kMaxDim) {
    return fail(ErrorCode::kInvalidFormat, who,
                std::string(name) + " has shape " + shape_str(v.shape) +
                    ", expected two positive dimensions");
  }
  return std::pair{v.shape[0], v.shape[1]};
}

uint32_t word_at(const QuantTensorView& v, int64_t i) {
  uint32_t w;
  std::memcpy(&w, v.bytes.data() + i * 4, 4);
  return w;
}

float scale_at(const QuantTensorView& v, int64_t i) {
  switch (v.dtype) {
    case SafetensorsDType::kF32: {
      float f;
      std::memcpy(&f, v.bytes.data() + i * 4, 4);
      return f;
    }
    case SafetensorsDType::kBF16: {
      uint16_t h;
      std::memcpy(&h, v.bytes.data() + i * 2, 2);
      return bf16_to_fp32(h);
    }
    default: {
      uint16_t h;
      std::memcpy(&h, v.bytes.data() + i * 2, 2);
      return fp16_to_fp32(h);
    }
  }
}

// Reads scales [G][N] from a checked view, refusing non-finite values.
Result<std::vector<float>> read_scales(std::string_view who, const QuantTensorView& v,
                                       int64_t groups, int64_t n_out) {
  std::vector<float> out(static_cast<size_t>(groups * n_out));
  for (int64_t i = 0; i < groups * n_out; ++i) {
    out[i] = scale_at(v, i);
    if (!std::isfinite(out[i])) {
      return fail(ErrorCode::kInvalidFormat, who,
                  "scales[" + std::to_string(i / n_out) + "][" + std::to_string(i % n_out) +
                      "] is not finite");
    }
  }
  return out;
}

Result<std::vector<uint16_t>> scales_to_fp16(std::string_view who, const std::vector<float>& s,
                                             int64_t n_out) {
  std::vector<uint16_t> out(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    out[i] = fp32_to_fp16(s[i]);
    if (fp16_to_fp32(out[i]) != s[i]) {
      return fail(ErrorCode::kInvalidArgument, who,
                  "scales[" + std::to_string(i / n_out) + "][" + std::to_string(i % n_out) +
                      "] = " + std::to_string(s[i]) +
                      " is not an fp16 value; round scales to fp16 before computing q");
    }
  }
  return out;
}

}  // namespace

// --- QuantizedLinear ----------------------------------------------------------------------------

int64_t QuantizedLinear::num_groups() const {
  return group_size > 0 ? (in_features + group_size - 1) / group_size : 0;
}

float QuantizedLinear::dequant(int64_t n, int64_t k) const {
  const int64_t g = g_idx[k];
  const size_t gi = static_cast<size_t>(g * out_features + n);
  return scales[gi] * (static_cast<float>(q[n * in_features + k]) - static_cast<float>(zeros[gi]));
}

bool QuantizedLinear::has_trivial_g_idx() const {
  if (group_size <= 0) return false;
  for (int64_t k = 0; k < static_cast<int64_t>(g_idx.size()); ++k) {
    if (g_idx[k] != k / group_size) return false;
  }
  return true;
}

Status QuantizedLinear::validate() const {
  constexpr std::string_view who = "quantized linear";
  if (bits != 4 && bits != 8) {
    return fail(ErrorCode::kInvalidArgument, who,
                "bits = " + std::to_string(bits) + ", expected 4 or 8");
  }
  if (in_features <= 0 || out_features <= 0 || in_features > kMaxDim || out_features > kMaxDim) {
    return fail(ErrorCode::kInvalidArgument, who,
                "in_features = " + std::to_string(in_features) +
                    ", out_features = " + std::to_string(out_features) + " must be in [1, 2^31]");
  }
  if (group_size < 1 || group_size > in_features) {
    return fail(ErrorCode::kInvalidArgument, who,
                "group_size = " + std::to_string(group_size) +
                    " must be in [1, in_features = " + std::to_string(in_features) + "]");
  }
  const int64_t groups = num_groups();
  auto size_check = [&](const char* name, size_t have, int64_t want) -> Status {
    if (have != static_cast<size_t>(want)) {
      return fail(ErrorCode::kInvalidArgument, who,
                  std::string(name) + " has " + std::to_string(have) + " elements, expected " +
                      std::to_string(want));
    }
    return Status::Ok();
  };
  QGATE_TRY_STATUS(size_check("q", q.size(), out_features * in_features));
  QGATE_TRY_STATUS(size_check("scales", scales.size(), groups * out_features));
  QGATE_TRY_STATUS(size_check("zeros", zeros.size(), groups * out_features));
  QGATE_TRY_STATUS(size_check("g_idx", g_idx.size(), in_features));
  const int maxq = (1 << bits) - 1;
  for (size_t i = 0; i < q.size(); ++i) {
    if (q[i] > maxq) {
      return fail(ErrorCode::kInvalidArgument, who,
                  "q[" + std::to_string(i / in_features) + "][" + std::to_string(i % in_features) +
                      "] = " + std::to_string(q[i]) + " exceeds " + std::to_string(maxq));
    }
  }
  for (size_t i = 0; i < zeros.size(); ++i) {
    if (zeros[i] > maxq) {
      return fail(ErrorCode::kInvalidArgument, who,
                  "zeros[" + std::to_string(i / out_features) + "][" +
                      std::to_string(i % out_features) + "] = " + std::to_string(zeros[i]) +
                      " exceeds " + std::to_string(maxq));
    }
    if (!std::isfinite(scales[i])) {
      return fail(ErrorCode::kInvalidArgument, who,
                  "scales[" + std::to_string(i / out_features) + "][" +
                      std::to_string(i % out_features) + "] is not finite");
    }
  }
  for (size_t k = 0; k < g_idx.size(); ++k) {
    if (g_idx[k] < 0 || g_idx[k] >= groups) {
      return fail(ErrorCode::kInvalidArgument, who,
                  "g_idx[" + std::to_string(k) + "] = " + std::to_string(g_idx[k]) +
                      " is outside [0, " + std::to_string(groups) + ")");
    }
  }
  return Status::Ok();
}

const char* gptq_checkpoint_format_name(GptqCheckpointFormat f) {
  return f == GptqCheckpointFormat::kGptq ? "gptq" : "gptq_v2";
}

// --- views --------------------------------------------------------------------------------------

QuantTensorView quant_tensor_view(const SafetensorsTensor& t) {
  return {t.dtype, t.shape, {t.data, static_cast<size_t>(t.nbytes)}};
}

QuantTensorView quant_tensor_view(std::span<const int32_t> v, std::vector<int64_t> shape) {
  return {SafetensorsDType::kI32, std::move(shape), std::as_bytes(v)};
}

QuantTensorView fp16_tensor_view(std::span<const uint16_t> fp16_bits, std::vector<int64_t> shape) {
  return {SafetensorsDType::kF16, std::move(shape), std::as_bytes(fp16_bits)};
}

GptqTensorViews GptqTensors::views() const {
  return {quant_tensor_view(qweight, qweight_shape), quant_tensor_view(qzeros, qzeros_shape),
          fp16_tensor_view(scales, scales_shape), quant_tensor_view(g_idx, g_idx_shape)};
}

AwqTensorViews AwqTensors::views() const {
  return {quant_tensor_view(qweight, qweight_shape), quant_tensor_view(qzeros, qzeros_shape),
          fp16_tensor_view(scales, scales_shape)};
}

// --- GPTQ ---------------------------------------------------------------------------------------

Result<GptqTensors> pack_gptq(const QuantizedLinear& layer, GptqCheckpointFormat format) {
  constexpr std::string_view who = "gptq pack";
  QGATE_TRY_STATUS(layer.validate());
  const int64_t K = layer.in_features, N = layer.out_features, G = layer.num_groups();
  // AutoGPTQ allocates qweight as K // 32 * bits rows and qzeros as N // 32 * bits columns:
  // anything not a multiple of 32 would silently lose columns there.
  if (K % 32 != 0 || N % 32 != 0) {
    return fail(ErrorCode::kUnsupported, who,
                "in_features " + std::to_string(K) + " and out_features " + std::to_string(N) +
                    " must be multiples of 32 (AutoGPTQ sizes qweight K // 32 * bits and qzeros "
                    "N // 32 * bits)");
  }
  const int bits = layer.bits;
  const int per = 32 / bits;
  GptqTensors out;
  out.qweight_shape = {K / per, N};
  out.qweight.assign(static_cast<size_t>(K / per * N), 0);
  for (int64_t n = 0; n < N; ++n) {
    const uint8_t* row = layer.q.data() + n * K;
    for (int64_t r = 0; r < K / per; ++r) {
      uint32_t w = 0;
      for (int j = 0; j < per; ++j) w |= static_cast<uint32_t>(row[r * per + j]) << (bits * j);
      out.qweight[r * N + n] = static_cast<int32_t>(w);
    }
  }
  out.qzeros_shape = {G, N / per};
  out.qzeros.assign(static_cast<size_t>(G * (N / per)), 0);
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t c = 0; c < N / per; ++c) {
      uint32_t w = 0;
      for (int j = 0; j < per; ++j) {
        w |= static_cast<uint32_t>(layer.zeros[g * N + c * per + j]) << (bits * j);
      }
      // v1: the whole word minus 1-per-field, wrapping mod 2^32 as torch's int32 arithmetic does.
      if (format == GptqCheckpointFormat::kGptq) w -= v1_offset(bits);
      out.qzeros[g * (N / per) + c] = static_cast<int32_t>(w);
    }
  }
  out.scales_shape = {G, N};
  QGATE_ASSIGN_OR_RETURN(out.scales, scales_to_fp16(who, layer.scales, N));
  out.g_idx_shape = {K};
  out.g_idx = layer.g_idx;
  return out;
}

Result<QuantizedLinear> unpack_gptq(const GptqTensorViews& t, int bits, int64_t group_size,
                                    GptqCheckpointFormat format) {
  constexpr std::string_view who = "gptq";
  if (bits != 4 && bits != 8) {
    return fail(ErrorCode::kUnsupported, who,
                "bits = " + std::to_string(bits) + ", qgate reads 4 and 8");
  }
  if (group_size != -1 && group_size <= 0) {
    return fail(ErrorCode::kInvalidArgument, who,
                "group_size = " + std::to_string(group_size) + ", expected -1 or a positive value");
  }
  const int per = 32 / bits;
  QGATE_ASSIGN_OR_RETURN(auto qw_dims, dims2(who, "qweight", t.qweight));
  const int64_t N = qw_dims.second;
  const bool has_g_idx = !t.g_idx.shape.empty() || !t.g_idx.bytes.empty();
  int64_t K = qw_dims.first * per;
  if (has_g_idx) {
    if (t.g_idx.shape.size() != 1 || t.g_idx.shape[0] <= 0 || t.g_idx.shape[0] > kMaxDim) {
      return fail(ErrorCode::kInvalidFormat, who,
                  "g_idx has shape " + shape_str(t.g_idx.shape) + ", expected [in_features]");
    }
    K = t.g_idx.shape[0];
  }
  if (K % 32 != 0 || N % 32 != 0) {
    return fail(ErrorCode::kUnsupported, who,
                "in_features " + std::to_string(K) + " and out_features " + std::to_string(N) +
                    " (qweight " + shape_str(t.qweight.shape) +
                    ") must be multiples of 32 in the GPTQ layout");
  }
  QGATE_TRY_STATUS(check_view(who, "qweight", t.qweight, {SafetensorsDType::kI32}, {K / per, N}));
  const int64_t g = group_size == -1 ? K : std::min(group_size, K);
  const int64_t G = (K + g - 1) / g;
  QGATE_TRY_STATUS(check_view(who, "qzeros", t.qzeros, {SafetensorsDType::kI32}, {G, N / per}));
  QGATE_TRY_STATUS(check_view(
      who, "scales", t.scales,
      {SafetensorsDType::kF16, SafetensorsDType::kBF16, SafetensorsDType::kF32}, {G, N}));
  QuantizedLinear out;
  out.in_features = K;
  out.out_features = N;
  out.bits = bits;
  out.group_size = g;
  out.g_idx.resize(static_cast<size_t>(K));
  if (has_g_idx) {
    QGATE_TRY_STATUS(check_view(who, "g_idx", t.g_idx, {SafetensorsDType::kI32}, {K}));
    for (int64_t k = 0; k < K; ++k) {
      const auto v = static_cast<int32_t>(word_at(t.g_idx, k));
      if (v < 0 || v >= G) {
        return fail(ErrorCode::kInvalidFormat, who,
                    "g_idx[" + std::to_string(k) + "] = " + std::to_string(v) + " is outside [0, " +
                        std::to_string(G) + ")");
      }
      out.g_idx[k] = v;
    }
  } else {
    for (int64_t k = 0; k < K; ++k) out.g_idx[k] = static_cast<int32_t>(k / g);
  }
  const uint32_t mask = (1u << bits) - 1;
  out.q.resize(static_cast<size_t>(N * K));
  for (int64_t r = 0; r < K / per; ++r) {
    for (int64_t n = 0; n < N; ++n) {
      const uint32_t w = word_at(t.qweight, r * N + n);
      for (int j = 0; j < per; ++j)
        out.q[n * K + r * per + j] = static_cast<uint8_t>((w >> (bits * j)) & mask);
    }
  }
  out.zeros.resize(static_cast<size_t>(G * N));
  for (int64_t gi = 0; gi < G; ++gi) {
    for (int64_t c = 0; c < N / per; ++c) {
      uint32_t w = word_at(t.qzeros, gi * (N / per) + c);
      if (format == GptqCheckpointFormat::kGptq) w += v1_offset(bits);
      for (int j = 0; j < per; ++j)
        out.zeros[gi * N + c * per + j] = static_cast<uint8_t>((w >> (bits * j)) & mask);
    }
  }
  QGATE_ASSIGN_OR_RETURN(out.scales, read_scales(who, t.scales, G, N));
  QGATE_TRY_STATUS(out.validate());
  return out;
}

// --- AWQ ----------------------------------------------------------------------------------------

Result<AwqTensors> pack_awq(const QuantizedLinear& layer) {
  constexpr std::string_view who = "awq pack";
  QGATE_TRY_STATUS(layer.validate());
  const int64_t K = layer.in_features, N = layer.out_features, g = layer.group_size;
  if (layer.bits != 4) {
    return fail(ErrorCode::kUnsupported, who,
                "bits = " + std::to_string(layer.bits) + ": AWQ GEMM checkpoints are 4-bit only");
  }
  if (K % g != 0) {
    return fail(ErrorCode::kUnsupported, who,
                "in_features " + std::to_string(K) + " is not a multiple of group_size " +
                    std::to_string(g) +
                    ": AWQ GEMM has no partial groups (pick a group size that divides it)");
  }
  if (N % 8 != 0) {
    return fail(ErrorCode::kUnsupported, who,
                "out_features " + std::to_string(N) + " is not a multiple of 8");
  }
  if (!layer.has_trivial_g_idx()) {
    return fail(ErrorCode::kUnsupported, who,
                "g_idx is permuted (act-order): AWQ GEMM has no g_idx tensor to hold it");
  }
  const int64_t G = K / g, C = N / 8;
  AwqTensors out;
  out.qweight_shape = {K, C};
  out.qweight.resize(static_cast<size_t>(K * C));
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t c = 0; c < C; ++c) {
      uint32_t w = 0;
      for (int i = 0; i < 8; ++i) {
        w |= static_cast<uint32_t>(layer.q[(c * 8 + kAwqOrder[i]) * K + k]) << (4 * i);
      }
      out.qweight[k * C + c] = static_cast<int32_t>(w);
    }
  }
  out.qzeros_shape = {G, C};
  out.qzeros.resize(static_cast<size_t>(G * C));
  for (int64_t gi = 0; gi < G; ++gi) {
    for (int64_t c = 0; c < C; ++c) {
      uint32_t w = 0;
      for (int i = 0; i < 8; ++i) {
        w |= static_cast<uint32_t>(layer.zeros[gi * N + c * 8 + kAwqOrder[i]]) << (4 * i);
      }
      out.qzeros[gi * C + c] = static_cast<int32_t>(w);
    }
  }
  out.scales_shape = {G, N};
  QGATE_ASSIGN_OR_RETURN(out.scales, scales_to_fp16(who, layer.scales, N));
  return out;
}

Result<QuantizedLinear> unpack_awq(const AwqTensorViews& t, int64_t group_size) {
  constexpr std::string_view who = "awq";
  if (group_size != -1 && group_size <= 0) {
    return fail(ErrorCode::kInvalidArgument, who,
                "group_size = " + std::to_string(group_size) + ", expected -1 or a positive value");
  }
  QGATE_ASSIGN_OR_RETURN(auto qw_dims, dims2(who, "qweight", t.qweight));
  const int64_t K = qw_dims.first, C = qw_dims.second, N = C * 8;
  const int64_t g = group_size == -1 ? K : group_size;
  if (K % g != 0) {
    return fail(ErrorCode::kUnsupported, who,
                "in_features " + std::to_string(K) + " (qweight " + shape_str(t.qweight.shape) +
                    ") is not a multiple of group_size " + std::to_string(g));
  }
  const int64_t G = K / g;
  QGATE_TRY_STATUS(check_view(who, "qweight", t.qweight, {SafetensorsDType::kI32}, {K, C}));
  QGATE_TRY_STATUS(check_view(who, "qzeros", t.qzeros, {SafetensorsDType::kI32}, {G, C}));
  QGATE_TRY_STATUS(check_view(
      who, "scales", t.scales,
      {SafetensorsDType::kF16, SafetensorsDType::kBF16, SafetensorsDType::kF32}, {G, N}));
  QuantizedLinear out;
  out.in_features = K;
  out.out_features = N;
  out.bits = 4;
  out.group_size = g;
  out.g_idx.resize(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) out.g_idx[k] = static_cast<int32_t>(k / g);
  out.q.resize(static_cast<size_t>(N * K));
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t c = 0; c < C; ++c) {
      const uint32_t w = word_at(t.qweight, k * C + c);
      for (int j = 0; j < 8; ++j) out.q[(c * 8 + j) * K + k] = (w >> (4 * kAwqReverse[j])) & 15u;
    }
  }
  out.zeros.resize(static_cast<size_t>(G * N));
  for (int64_t gi = 0; gi < G; ++gi) {
    for (int64_t c = 0; c < C; ++c) {
      const uint32_t w = word_at(t.qzeros, gi * C + c);
      for (int j = 0; j < 8; ++j) out.zeros[gi * N + c * 8 + j] = (w >> (4 * kAwqReverse[j])) & 15u;
    }
  }
  QGATE_ASSIGN_OR_RETURN(out.scales, read_scales(who, t.scales, G, N));
  QGATE_TRY_STATUS(out.validate());
  return out;
}

}  // namespace qgate
