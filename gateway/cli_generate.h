// `qgate generate` and `qgate chat`: run the engine directly from the command line.
#pragma once

#include <CLI/CLI.hpp>

namespace qgate {

// Adds the subcommands to app; each runs when selected and reports its exit code through
// `exit_code`.
void add_generate_commands(CLI::App& app, int& exit_code);

// The model path used when --model is not given: $QGATE_MODEL, else the cached default model
// under $QGATE_MODEL_DIR (default ./models).
std::string default_model_path();

}  // namespace qgate
