// How a loaded LlamaModel's weight matrices are laid out on a GPU, decided and converted on the
// host (always built, so CI tests the conversions without a GPU; the CUDA forward pass uploads
// the results).
//
// - 4-bit matrices (GGUF Q4_0/Q4_1, and GPTQ/AWQ checkpoints, which the loader repacks to Q4_1
//   blocks with the act-order permutation beside them) become the W4A16 layout. Q4_1 blocks hold
//   one (d, m) per 32 columns; a GPTQ/AWQ group of 64 or 128 columns repeats the same (d, m) in
//   each of its blocks, so the largest group size whose blocks all agree is recovered exactly and
//   the kernels read one (scale, min) per real group, not per block.
// - Everything else (F32, F16, BF16, Q8_0) becomes fp16 for cuBLASLt (BF16/F32 rounded to fp16;
//   Q8_0 dequantized, so it costs 2 bytes per weight on the GPU instead of 1.06).
//
// Threading: pure functions.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "kernels/status.h"
#include "kernels/w4a16_layout.h"

namespace qgate {

enum class GpuWeightFormat { kF16, kW4A16 };
GpuWeightFormat gpu_weight_format(DType t);

// The largest of 128, 64, 32 such that within every group of that many columns all 32-blocks of
// a row carry the same (d, m) bits (Q4_0: d). w must be Q4_0 or Q4_1.
int64_t infer_int4_group_size(const WeightView& w);

// Q4_0/Q4_1 -> W4A16 with the inferred group size. InvalidArgument for other types.
Result<W4A16Weights> w4a16_from_ggml(const WeightView& w);

// Any readable type -> fp16 bits, row-major [rows][cols].
std::vector<uint16_t> fp16_from_weight(const WeightView& w);

// Bytes the matrix occupies on the GPU in its gpu_weight_format (exact, padding included: for
// 4-bit matrices the group size is inferred, which reads the block headers once).
uint64_t gpu_weight_bytes(const WeightView& w);

}  // namespace qgate
