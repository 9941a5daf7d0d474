// Round-to-nearest quantization and the helpers GPTQ and AWQ share. The group-parameter rules are
// AutoGPTQ's (auto_gptq/quantization/quantizer.py, Quantizer.find_params with perchannel=True):
// the range always spans 0, an all-zero group gets [-1, 1], sym fixes the zero at (maxq+1)/2.
#include "engine/quantize_math.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/cpu/half.h"
#include "kernels/cpu/thread_pool.h"

namespace qgate {

namespace quantize_internal {

int64_t group_width(const QuantParams& params, int64_t k) {
  return (params.group_size < 0 || params.group_size >= k) ? k : params.group_size;
}

Status check_weights(const char* who, std::span<const float> w, int64_t n, int64_t k,
                     const QuantParams& params) {
  const std::string name(who);
  if (params.bits != 4 && params.bits != 8) {
    return make_error(ErrorCode::kInvalidArgument,
                      name + ": bits = " + std::to_string(params.bits) + ", expected 4 or 8");
  }
  if (params.group_size == 0 || params.group_size < -1) {
    return make_error(ErrorCode::kInvalidArgument,
                      name + ": group_size = " + std::to_string(params.group_size) +
                          ", expected -1 (per channel) or a positive column count");
  }
  // 2^31 keeps n * k inside int64 and matches QuantizedLinear::validate.
  constexpr int64_t kMaxDim = int64_t{1} << 31;
  if (n <= 0 || k <= 0 || n > kMaxDim || k > kMaxDim) {
    return make_error(ErrorCode::kInvalidArgument, name + ": shape [" + std::to_string(n) + ", " +
                                                       std::to_string(k) + "] must be positive");
  }
  if (static_cast<int64_t>(w.size()) != n * k) {
    return make_error(ErrorCode::kInvalidArgument,
                      name + ": weight has " + std::to_string(w.size()) + " elements, expected " +
                          std::to_string(n) + " x " + std::to_string(k));
  }
  for (size_t i = 0; i < w.size(); ++i) {
    if (!std::isfinite(w[i])) {
      return make_error(ErrorCode::kInvalidArgument,
                        name + ": weight[" + std::to_string(static_cast<int64_t>(i) / k) + "][" +
                            std::to_string(static_cast<int64_t>(i) % k) + "] is not finite");
    }
  }
  return Status::Ok();
}

void parallel_for(ThreadPool* pool, int64_t n, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (pool == nullptr || pool->num_threads() <= 1 || n <= grain) {
    fn(0, n);
    return;
  }
  pool->parallel_for(n, grain, fn);
}

QuantizedLinear make_layer(int64_t n, int64_t k, const QuantParams& params) {
  QuantizedLinear layer;
  layer.in_features = k;
  layer.out_features = n;
  layer.bits = params.bits;
  layer.group_size = group_width(params, k);
  const int64_t groups = layer.num_groups();
  layer.q.assign(static_cast<size_t>(n * k), 0);
  layer.scales.assign(static_cast<size_t>(groups * n), 0.0f);
  layer.zeros.assign(static_cast<size_t>(groups * n), 0);
  layer.g_idx.resize(static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c) layer.g_idx[c] = static_cast<int32_t>(c / layer.group_size);
  return layer;
}

// Eight independent accumulators: the compiler keeps them in one vector register, which it may
// not do for a single running sum without -ffast-math (that would reorder the additions).
double dot(const double* a, const double* b, int64_t len) {
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  double tail = 0.0;
  for (; i < len; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

float dot(const float* a, const float* b, int64_t len) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float tail = 0.0f;
  for (; i < len; ++i) tail += a[i] * b[i];
  float sum = 0.0f;
  for (int j = 0; j < 16; ++j) sum += acc[j];
  return sum + tail;
}

}  // namespace quantize_internal

namespace {

using quantize_internal::check_weights;
using quantize_internal::group_width;
using quantize_internal::make_layer;

// Shared body of quantize_rtn and quantize_rtn_clipped.
Result<QuantizedLinear> rtn(const char* who, std::span<const float> w, int64_t n, int64_t k,
                            bool clipped, std::span<const float> clip, const QuantParams& params) {
  QGATE_TRY_STATUS(check_weights(who, w, n, k, params));
  QuantizedLinear layer = make_layer(n, k, params);
  const int64_t gw = layer.group_size;
  const int64_t groups = layer.num_groups();
  if (clipped) {
    if (static_cast<int64_t>(clip.size()) != n * groups) {
      return make_error(ErrorCode::kInvalidArgument, std::string(who) + ": clip has " +
                                                         std::to_string(clip.size()) +
                                                         " values, expected [" + std::to_string(n) +
                                                         "][" + std::to_string(groups) + "]");
    }
    for (size_t i = 0; i < clip.size(); ++i) {
      if (!(clip[i] >= 0.0f) || !std::isfinite(clip[i])) {
        return make_error(
            ErrorCode::kInvalidArgument,
            std::string(who) + ": clip[" + std::to_string(i) + "] must be finite and >= 0");
      }
    }
  }
  const int maxq = (1 << params.bits) - 1;
  std::vector<float> seg(static_cast<size_t>(gw));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = g * gw, len = std::min(gw, k - c0);
      const float* src = w.data() + r * k + c0;
      if (!clipped) {
        std::copy(src, src + len, seg.begin());
      } else {
        const float c = clip[r * groups + g];
        for (int64_t j = 0; j < len; ++j) seg[j] = std::clamp(src[j], -c, c);
      }
      auto p = find_group_params(std::span<const float>(seg.data(), len), params.bits, params.sym);
      if (!p.ok()) {
        return make_error(p.error().code(), std::string(who) + ": row " + std::to_string(r) +
                                                ", group " + std::to_string(g) + ": " +
                                                p.error().message());
      }
      layer.scales[g * n + r] = p->scale;
      layer.zeros[g * n + r] = p->zero;
      uint8_t* q = layer.q.data() + r * k + c0;
      for (int64_t j = 0; j < len; ++j) q[j] = quantize_value(seg[j], *p, maxq);
    }
  }
  return layer;
}

}  // namespace

Result<GroupQuant> find_group_params(std::span<const float> w, int bits, bool sym) {
  const int maxq = (1 << bits) - 1;
  float lo = 0.0f, hi = 0.0f;
  for (float v : w) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (sym) {
    hi = std::max(-lo, hi);
    lo = -hi;
  }
  if (lo == 0.0f && hi == 0.0f) {
    lo = -1.0f;
    hi = 1.0f;
  }
  const float exact = (hi - lo) / static_cast<float>(maxq);
  // Round up, not to nearest: a scale rounded down by up to 2^-11 would make the range need
  // maxq·(1 + 2^-11) steps, and for 8 bits the group's extreme value would be clamped by up to
  // 0.12 of a step beyond the usual half step. One step larger by at most 2^-11 costs nothing.
  const uint16_t bits16 = fp32_to_fp16(exact);
  float scale = fp16_to_fp32(bits16);
  if (scale < exact) scale = fp16_to_fp32(static_cast<uint16_t>(bits16 + 1));
  if (!std::isfinite(scale)) {
    return make_error(ErrorCode::kOutOfRange,
                      "scale " + std::to_string(exact) + " exceeds the fp16 range");
  }
  // Below fp16's smallest subnormal the group is numerically zero anyway; a zero scale would
  // make the division below produce NaN.
  if (scale == 0.0f) scale = fp16_to_fp32(1);
  GroupQuant p;
  p.scale = scale;
  if (sym) {
    p.zero = static_cast<uint8_t>((maxq + 1) / 2);
  } else {
    const float z = std::nearbyint(-lo / scale);
    p.zero = static_cast<uint8_t>(std::clamp(z, 0.0f, static_cast<float>(maxq)));
  }
  return p;
}

uint8_t quantize_value(float w, GroupQuant p, int maxq) {
  // nearbyint rounds half to even in the default mode, as torch.round does.
  const float q = std::nearbyint(w / p.scale) + static_cast<float>(p.zero);
  return static_cast<uint8_t>(std::clamp(q, 0.0f, static_cast<float>(maxq)));
}

std::vector<float> dequantize_linear(const QuantizedLinear& layer) {
  const int64_t n = layer.out_features, k = layer.in_features;
  std::vector<float> w(static_cast<size_t>(n * k));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) w[r * k + c] = layer.dequant(r, c);
  }
  return w;
}

Result<QuantizedLinear> quantize_rtn(std::span<const float> w, int64_t n, int64_t k,
                                     const QuantParams& params) {
  return rtn("quantize_rtn", w, n, k, false, {}, params);
}

Result<QuantizedLinear> quantize_rtn_clipped(std::span<const float> w, int64_t n, int64_t k,
                                             std::span<const float> clip,
                                             const QuantParams& params) {
  return rtn("quantize_rtn_clipped", w, n, k, true, clip, params);
}

}  // namespace qgate
