// Exports a model as an HF-style FP16 checkpoint directory — the baseline variant that
// `qgate quantize --method fp16` produces — readable by transformers (LlamaForCausalLM /
// Qwen2ForCausalLM) and by qgate's own HF loader:
//
//   config.json             architecture and hyper-parameters, torch_dtype "float16"
//   model.safetensors       every weight dequantized to fp16 under HF names, metadata format "pt"
//   tokenizer.json          byte-level BPE (see tokenizer_json.h)
//   tokenizer_config.json   special tokens by text, chat template, add_bos_token
//   generation_config.json  bos id and the ids that end generation
//
// The source is a GGUF file or another HF-style directory (whose tensors are converted to fp16 and
// whose tokenizer files are copied). From GGUF, Llama's Q/K rows are un-permuted back to HF's
// rotate-half layout: llama.cpp's converter stores HF row h·d + p·d/2 + i at GGUF row h·d + 2i + p.
//
// The directory appears atomically: it is built in a temporary sibling (`out_dir.tmp-XXXXXX`),
// every file fsynced, then renamed into place, so a crash or error leaves either no directory or
// the previous one, never a half-written checkpoint. Memory: the fp16 weights are held in memory
// until written (2 bytes per parameter).
//
// Threading: one call works alone on its output; concurrent exports to the same out_dir race to
// the final rename and only one wins (the loser fails, its temporary removed).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "kernels/status.h"

namespace qgate {

class GgufFile;

struct HfExportOptions {
  // Replace an existing out_dir (a directory only; the old one is removed after the swap).
  bool overwrite = false;
};

// Called after each tensor is converted, with its HF name: done of total.
using ExportProgress = std::function<void(std::string_view tensor, size_t done, size_t total)>;

// Picks the source format like load_model: a directory is HF-style, a regular file GGUF.
// kInvalidArgument when out_dir exists and overwrite is off, is not a directory, or contains the
// source; kUnsupported for a tensor type, tensor or tokenizer with no HF FP16 equivalent; kIo
// (naming the path and the OS reason) when the directory cannot be written.
Status export_hf_fp16(const std::string& src_path, const std::string& out_dir,
                      const HfExportOptions& options = {}, const ExportProgress& progress = {});

// The same from a GGUF already open (without the check that out_dir does not hold its file).
Status export_hf_fp16_from_gguf(const GgufFile& gguf, const std::string& out_dir,
                                const HfExportOptions& options = {},
                                const ExportProgress& progress = {});

}  // namespace qgate
