// Serving GPTQ/AWQ layers on the CPU: the canonical unpacked layer is repacked once at load time
// into GGML Q4_1 blocks, so the int4 checkpoints run on the same AVX2 integer kernels as GGUF.
//
// Why Q4_1: a GPTQ/AWQ group shares one scale s and zero z, so w = s * (q - z) = s * q + m with
// m = -s * z — exactly Q4_1's y = d * q + m once every block of 32 consecutive inputs lies in one
// group (group_size a multiple of 32). d = s is exact (files store s as fp16); m is rounded to
// fp16, an error of at most 2^-11 * |m| (under 1% of one quantization step for 4-bit zeros).
//
// Act-order checkpoints (g_idx not k / group_size) are served by permuting the input columns so
// that each group's columns are consecutive (a stable sort by g_idx); the forward pass gathers the
// activations through the same permutation before the matmul.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/quant_formats.h"
#include "kernels/status.h"

namespace qgate {

struct RepackedLinear {
  int64_t rows = 0;  // N
  int64_t cols = 0;  // K
  std::vector<uint8_t> q4_1;        // rows * (cols / 32) BlockQ4_1
  std::vector<int32_t> input_perm;  // empty: identity; else x'[i] = x[input_perm[i]]
};

// Unsupported (naming the reason) for 8-bit layers or groups that blocks of 32 cannot follow.
Result<RepackedLinear> repack_to_q4_1(const QuantizedLinear& layer);

}  // namespace qgate
