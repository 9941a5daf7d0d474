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
// - Matrices that multiply the same input (q, k and v; gate and up) are stacked into one matrix
//   when they can be: rows in order, so each output row is [part 0 | part 1 | ...] and one
//   launch (and one act-order gather) replaces two or three. At batch 1 a SmolLM2 step is
//   launch-bound, not bandwidth-bound, so launches are what counts there.
//
// Threading: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/llama_model.h"
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

// The parts stacked row-wise into one W4A16 matrix (Q4_0 and Q4_1 may mix). Its group size is the
// smallest of the parts' inferred ones: 128, 64 and 32 divide each other, so every part's blocks
// agree within it and nothing is lost. InvalidArgument for no parts, a part that is not 4-bit or
// column counts that differ.
Result<W4A16Weights> w4a16_from_ggml(std::span<const WeightView> parts);

// Any readable type -> fp16 bits, row-major [rows][cols].
std::vector<uint16_t> fp16_from_weight(const WeightView& w);

// Bytes the matrix occupies on the GPU in its gpu_weight_format (exact, padding included: for
// 4-bit matrices the group size is inferred, which reads the block headers once).
uint64_t gpu_weight_bytes(const WeightView& w);

// Bytes of the parts stacked into one matrix (the stacked 4-bit form pads its rows once and uses
// the common group size); the parts must satisfy gpu_can_stack.
uint64_t gpu_weight_bytes(std::span<const WeightView> parts);

// Whether the parts (layers multiplying the same input) run as one stacked matmul on the GPU:
// the same GPU format and column count, the same act-order permutation (none, or equal
// contents) and a bias on all of them or on none.
bool gpu_can_stack(std::span<const LinearLayer* const> parts);

// The matmuls the GPU runs for `parts`, in order: all of them stacked when gpu_can_stack, else
// each alone. Shared by the CUDA forward pass and the memory plan, so the two agree.
std::vector<std::vector<const LinearLayer*>> gpu_matmul_groups(
    std::span<const LinearLayer* const> parts);

}  // namespace qgate
