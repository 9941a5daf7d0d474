// `qgate plan`: the GPU memory each configured variant needs (weights in their GPU layout, the KV
// cache for its worker budget, workspace) and whether the variants fit their devices, computed
// from the config and the model files without touching a GPU; or against a GPU of a given size
// (--gpu-memory) to size a deployment before there is one.
#pragma once

#include <CLI/CLI.hpp>

namespace qgate {

void add_plan_command(CLI::App& app, int& exit_code);

}  // namespace qgate
