// Checkpoint formats of quantized linear layers: the GPTQ (AutoGPTQ / GPTQModel) and AWQ
// (AutoAWQ "GEMM") tensor layouts, a canonical unpacked form both convert to and from, and the
// parser of their quantization configs. This is about bits in files, not about how the quantized
// values were chosen (that is the quantizers' business).
//
// Facts, checked against the reference code (see docs in the .cpp for the details):
// - GPTQ: qweight int32 [K*bits/32, N] packed along K (word r of column n holds input rows
//   r*32/bits .. +32/bits-1, lowest bits first); qzeros int32 [G, N*bits/32] packed along N the
//   same way; scales fp16 [G, N]; g_idx int32 [K]; G = ceil(K / group_size), so the last group may
//   be partial. AutoGPTQ sizes qweight as K // 32 * bits, so K and N must be multiples of 32
//   (GPTQModel states the same: in/out features divisible by 32).
// - GPTQ v1 ("gptq") stores zero-1, v2 ("gptq_v2") the true zero. AutoGPTQ and GPTQModel convert
//   between them by adding/subtracting 0x11111111 (8-bit: 0x01010101) to each whole int32 word, so
//   a true zero of 0 becomes 15 in its nibble and borrows 1 from the next nibble up. That
//   whole-word arithmetic is exact in both directions, and it is what we implement; older kernels
//   that read (nibble + 1) per nibble disagree on words that carried a borrow (GPTQModel measured
//   up to ~13% of asymmetric words), which is why asymmetric checkpoints should be written as
//   gptq_v2.
// - AWQ GEMM: qweight int32 [K, N/8] packed along N, qzeros int32 [K/g, N/8], scales fp16 [K/g, N];
//   inside a word, nibble i holds column 8c + {0,2,4,6,1,3,5,7}[i]; zeros are stored as is;
//   4-bit only; K % g == 0 and N % 8 == 0.
//
// Threading: everything here is a pure function of its arguments.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/safetensors.h"
#include "kernels/status.h"

namespace qgate {

// One quantized linear layer y = x W^T in canonical, unpacked form. W[n][k] = dequant(n, k).
struct QuantizedLinear {
  int64_t in_features = 0;   // K
  int64_t out_features = 0;  // N
  int bits = 4;              // 4 or 8
  int64_t group_size = 0;    // columns per group along K; == K for per-channel (-1 in configs)
  std::vector<uint8_t> q;    // [N][K] quantized values in [0, 2^bits - 1]
  // [num_groups][N]. Files store fp16; this holds exactly the fp16 value (packers refuse values
  // fp16 cannot represent, because q was computed against the rounded scale).
  std::vector<float> scales;
  std::vector<uint8_t> zeros;  // [num_groups][N] true zero points in [0, 2^bits - 1]
  std::vector<int32_t> g_idx;  // [K] group of input column k (k / group_size without act-order)

  int64_t num_groups() const;  // ceil(K / group_size)
  float dequant(int64_t n,
                int64_t k) const;  // scales[g][n] * (q[n][k] - zeros[g][n]), g = g_idx[k]
  // Sizes, value ranges, finite scales, g_idx values < num_groups. Names the first offender.
  Status validate() const;
  // True when g_idx[k] == k / group_size for every k (no act-order permutation).
  bool has_trivial_g_idx() const;
};

enum class GptqCheckpointFormat {
  kGptq,    // v1, "gptq": qzeros hold zero - 1 (whole-word arithmetic, see above)
  kGptqV2,  // "gptq_v2": qzeros hold the true zero
};
const char* gptq_checkpoint_format_name(GptqCheckpointFormat f);

// A read-only view of one tensor as it lies in a file (or in memory). The bytes need no
// alignment: values are read with memcpy, so views straight into a mapped safetensors file work.
struct QuantTensorView {
  SafetensorsDType dtype = SafetensorsDType::kI32;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;
};
QuantTensorView quant_tensor_view(const SafetensorsTensor& t);
QuantTensorView quant_tensor_view(std::span<const int32_t> v, std::vector<int64_t> shape);
QuantTensorView fp16_tensor_view(std::span<const uint16_t> fp16_bits, std::vector<int64_t> shape);

struct GptqTensorViews {
  QuantTensorView qweight;  // I32 [K*bits/32, N]
  QuantTensorView qzeros;   // I32 [G, N*bits/32]
  QuantTensorView scales;   // F16 [G, N] (BF16 and F32 are accepted too)
  QuantTensorView g_idx;    // I32 [K]; empty bytes and shape = absent → k / group_size
};

struct AwqTensorViews {
  QuantTensorView qweight;  // I32 [K, N/8]
  QuantTensorView qzeros;   // I32 [K/g, N/8]
  QuantTensorView scales;   // F16 [K/g, N] (BF16 and F32 are accepted too)
};

// Packed tensors ready for a safetensors file (names: <prefix>.qweight, .qzeros, .scales, .g_idx).
struct GptqTensors {
  std::vector<int32_t> qweight;
  std::vector<int64_t> qweight_shape;
  std::vector<int32_t> qzeros;
  std::vector<int64_t> qzeros_shape;
  std::vector<uint16_t> scales;  // fp16 bits
  std::vector<int64_t> scales_shape;
  std::vector<int32_t> g_idx;
  std::vector<int64_t> g_idx_shape;
  GptqTensorViews views() const;
};

struct AwqTensors {
  std::vector<int32_t> qweight;
  std::vector<int64_t> qweight_shape;
  std::vector<int32_t> qzeros;
  std::vector<int64_t> qzeros_shape;
  std::vector<uint16_t> scales;  // fp16 bits
  std::vector<int64_t> scales_shape;
  AwqTensorViews views() const;
};

// Errors: kInvalidArgument when the layer breaks its own invariants, kUnsupported when it is
// valid but the format cannot hold it (shape multiples, bits, act-order for AWQ).
Result<GptqTensors> pack_gptq(const QuantizedLinear& layer, GptqCheckpointFormat format);
Result<AwqTensors> pack_awq(const QuantizedLinear& layer);

// The tensors come from untrusted files: every dtype, shape and value is checked and an error
// names the tensor with its expected and actual shape. group_size is the config value (-1 means
// per channel).
Result<QuantizedLinear> unpack_gptq(const GptqTensorViews& t, int bits, int64_t group_size,
                                    GptqCheckpointFormat format);
Result<QuantizedLinear> unpack_awq(const AwqTensorViews& t, int64_t group_size);

// --- quantization configs ---------------------------------------------------------------------

enum class QuantMethod { kGptq, kAwq };
const char* quant_method_name(QuantMethod m);

struct QuantConfig {
  QuantMethod method = QuantMethod::kGptq;
  int bits = 4;
  int64_t group_size = -1;  // as written in the config: -1 = per channel
  bool desc_act = false;    // informational: g_idx in the file is what unpacking uses
  bool sym = true;
  GptqCheckpointFormat checkpoint_format = GptqCheckpointFormat::kGptq;  // GPTQ only
  bool zero_point = true;                                                // AWQ only
  bool lm_head = false;  // GPTQModel: the lm_head is quantized too
  std::vector<std::string> modules_to_not_convert;
};

// config.json text: reads its "quantization_config" object (kNotFound when there is none, which
// means an unquantized model).
Result<QuantConfig> parse_quant_config(std::string_view config_json_text);
// quantize_config.json (AutoGPTQ / GPTQModel) or quant_config.json (AutoAWQ) text: the whole
// document is the config. Without "quant_method", a "version" field means AWQ, else GPTQ.
Result<QuantConfig> parse_quantize_config_file(std::string_view text);

}  // namespace qgate
