// `qgate quantize`: writes a GPTQ/AWQ (or RTN in the GPTQ layout, or FP16) HF checkpoint
// directory from a GGUF file or an HF directory (engine/quantize_pipeline.h).
#pragma once

#include <CLI/CLI.hpp>

namespace qgate {

void add_quantize_command(CLI::App& app, int& exit_code);

}  // namespace qgate
