// `qgate quantize`: turns a GGUF file or an HF-style directory into a GPTQ- or AWQ-format
// checkpoint directory (or an FP16 one), running the model layer by layer on calibration text.
//
// Pipeline (quantize_pipeline.cpp):
// 1. The source is first exported as an FP16 HF directory (hf_export.h) into a temporary sibling
//    of the output; that export does GGUF dequantization and the Q/K un-permutation, and writes
//    config.json and the tokenizer files the output keeps. The weights are then read back as fp32
//    in HF layout. (For a Q4_1 GGUF this rounds each dequantized weight d·q + m to fp16 once —
//    a relative error of 2⁻¹¹, far below the 4-bit quantization error.)
// 2. Calibration (gptq, awq): the calib file is tokenized without special tokens and
//    calib_samples windows of calib_seqlen tokens are drawn at offsets from a seeded
//    std::mt19937_64 (offset = draw % (tokens - seqlen + 1): explicit arithmetic, so the windows
//    are the same on every standard library). Defaults 64 × 256 tokens keep SmolLM2-135M at
//    about 100 s (GPTQ) and 4–5 min (AWQ) on 2 threads, under 1 GB of memory; AutoGPTQ/AutoAWQ
//    use 128 × 512 (or 2048) on a GPU.
// 3. Decoder layers run in order over all calibration tokens at once. Each linear is quantized
//    from the inputs it sees *after* the earlier linears (of this and earlier layers) were
//    replaced by their quantized-dequantized weights, so quantization error propagates the way
//    it will at inference (GPTQ "true sequential"). AWQ searches scales per scaling group on the
//    layer's inputs, folds 1/s into the preceding norm or up_proj rows, searches clipping (not for
//    q/k, as AutoAWQ), then quantizes; the layer is then re-run quantized for the next one.
// 4. The output directory is written in a temporary sibling and renamed into place.
//
// Threading: quantize_model uses its own ThreadPool of options.threads; one call per output dir.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/status.h"

namespace qgate {

enum class QuantizeMethod { kFp16, kRtn, kGptq, kAwq };
const char* quantize_method_name(QuantizeMethod m);
Result<QuantizeMethod> parse_quantize_method(std::string_view name);

struct QuantizeOptions {
  std::string input;   // GGUF file or HF directory
  std::string output;  // directory to create
  QuantizeMethod method = QuantizeMethod::kGptq;
  int bits = 4;
  int64_t group_size = 128;  // -1: per channel
  bool sym = false;
  bool desc_act = false;   // GPTQ only
  double damp = 0.01;      // GPTQ only
  int awq_grid = 20;       // AWQ: grid points of the scale and clip searches (tests use fewer)
  std::string calib_file;  // gptq/awq: required (the CLI defaults to models/corpus/calib.txt)
  int64_t calib_samples = 64;
  int64_t calib_seqlen = 256;
  uint64_t seed = 0;
  int threads = 2;
  bool overwrite = false;
};

struct QuantizeReport {
  double seconds = 0.0;
  int64_t calib_tokens = 0;  // tokens in the calib file
  std::string calib_sha256;
};

// Progress: one line of text per step (e.g. "layer 3/30 done (q,k,v,o,gate,up,down) 1.2s").
using QuantizeProgress = std::function<void(std::string_view line)>;

// Checks the options against each other and against the model (AWQ group size must divide every
// input dimension it is applied to; pack formats need K, N multiples of 32) before any work.
Status check_quantize_options(const QuantizeOptions& options);

Result<QuantizeReport> quantize_model(const QuantizeOptions& options,
                                      const QuantizeProgress& progress = {});

// Calibration windows: samples × seqlen tokens, concatenated (exposed for tests).
Result<std::vector<int32_t>> draw_calibration_windows(const std::vector<int32_t>& tokens,
                                                      int64_t samples, int64_t seqlen,
                                                      uint64_t seed);

// Lowercase hex SHA-256 of bytes (FIPS 180-4), for recording the calibration file.
std::string sha256_hex(std::string_view bytes);

}  // namespace qgate
